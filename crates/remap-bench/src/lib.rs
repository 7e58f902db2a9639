//! The `remap bench` harness: what zero-copy moving buys on this kernel, side by side.
//!
//! It moves N bytes from one region to another by every method ([`Method`]: `UFFDIO_MOVE` through
//! the bare ioctl and through remap's mover, `UFFDIO_COPY` plus `MADV_DONTNEED`, `memcpy` into
//! prefaulted and into fresh memory, `mremap`, and the peer crate `userfaultfd`), at chunk sizes
//! from one page to the whole range, with transparent huge pages off and on, and once more with a
//! second thread of the process spinning on the other CPU (remote TLB shootdowns). It then
//! measures fault service ([`FaultMethod`]): mutator threads touching every page of a registered
//! region while handler threads resolve the faults, and the mover's cost per call over the bare
//! ioctl, the two alternating call by call (per-call medians). Every figure is the median of
//! several repetitions after a warm-up, with its spread; the repetitions of a section run in
//! rounds, one of each figure per round, so the figures a ratio compares run side by side;
//! ratios are computed within the run; and every repetition is verified (a wrong byte fails the
//! figure).
//!
//! ```no_run
//! let config = remap_bench::BenchConfig::quick();
//! let report = remap_bench::run(&config, &indicatif::ProgressBar::hidden())?;
//! report.write_table(&mut std::io::stdout())?;
//! remap_bench::chart::write_chart(&report, std::path::Path::new("target/remap-bench.svg"))?;
//! assert!(report.all_verified());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Unsafe code
//!
//! Everything goes through [`remap::region::Region`]; the raw baselines (the bare ioctls,
//! `memcpy` between regions, `mremap`) live in the private module `raw`, the only one allowed
//! `unsafe`.

#![deny(unsafe_code)]

mod around;
mod bulk;
pub mod chart;
mod compaction;
mod fault;
mod overhead;
mod raw;
mod report;
mod rounds;
mod stats;

use std::collections::HashMap;
use std::time::Instant;

use indicatif::ProgressBar;
use remap::region::{Region, HUGE_PAGE_SIZE};

pub use around::{AroundMeasurement, AroundSource, Touch};
pub use compaction::{CompactionConfig, CompactionMeasurement};
pub use overhead::OverheadMeasurement;
/// The machine every report describes: the project's one reader of `uname`, `/proc` and `/sys`.
pub use remap::system::Machine;
pub use report::{
    ConfigRecord, FaultMeasurement, FaultMethod, Measurement, Method, Record, Report, Skipped,
    Summary,
};
pub use stats::Spread;

/// The progress-bar crate, re-exported so that callers name the same [`ProgressBar`] type.
pub use indicatif;

/// A progress bar for [`run`]: drawn on stderr when `visible`, hidden otherwise (`docs/style.md` R15:
/// only when stderr is a terminal and `--json` is off; the caller decides).
///
/// ```
/// let bar = remap_bench::progress_bar(false);
/// assert!(bar.is_hidden());
/// ```
pub fn progress_bar(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The chunk sizes below the whole range: 4 KiB, 64 KiB, 2 MiB, 64 MiB.
pub const CHUNKS: [usize; 4] = [4 * KIB, 64 * KIB, 2 * MIB, 64 * MIB];

/// What to measure and how often.
///
/// ```
/// let c = remap_bench::BenchConfig::quick();
/// assert_eq!(*c.chunks().last().unwrap(), c.size);
/// ```
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Bytes moved per bulk repetition (a multiple of 2 MiB).
    pub size: usize,
    /// Measured repetitions per figure.
    pub reps: u32,
    /// Unmeasured warm-up repetitions before them.
    pub warmup: u32,
    /// Bulk methods.
    pub methods: Vec<Method>,
    /// Fault-service methods.
    pub fault_methods: Vec<FaultMethod>,
    /// Measured repetitions per fault-service figure (each one records a latency per page).
    pub fault_reps: u32,
    /// Bytes faulted in per fault repetition.
    pub fault_size: usize,
    /// `(handler threads, mutator threads)` pairs for fault service.
    pub fault_threads: Vec<(u32, u32)>,
    /// Fault-around sources (one handler, one mutator, `fault_around_size` bytes, sequential
    /// and random first touches), each measured at every window of `fault_around_windows`.
    pub fault_around: Vec<AroundSource>,
    /// Bytes faulted in per fault-around repetition.
    pub fault_around_size: usize,
    /// Fault-around windows in pages (1: off, the baseline of the ratios).
    pub fault_around_windows: Vec<u32>,
    /// Whether to repeat the bulk moves with a second thread spinning on the other CPU, at the
    /// chunk sizes of [`BenchConfig::interference_chunks`].
    pub interference: bool,
    /// Whether to measure THP-backed regions too.
    pub thp: bool,
    /// Whether this is the `--quick` preset (recorded in the report).
    pub quick: bool,
    /// The compaction section (a small heap compacted by MOVE, MOVE page by page and COPY side
    /// by side), or `None` to leave it out.
    pub compaction: Option<CompactionConfig>,
    /// Seed of the verification pattern.
    pub seed: u64,
    /// Test hook: flip a byte of the destination after every repetition of this bulk method,
    /// before it is verified, so that the figure fails verification (`remap bench
    /// --inject-corruption METHOD`, hidden). `None` outside tests of the harness itself.
    #[doc(hidden)]
    pub corrupt: Option<Method>,
}

impl BenchConfig {
    /// The default run: 128 MiB, 5 repetitions after 1 warm-up (7 for fault service, 2048
    /// faults each, and fault-around: a handler row's latency depends on where the scheduler put
    /// its threads, which changes from one repetition to the next, so it needs more of them);
    /// about two minutes on 2 idle cores.
    pub fn standard() -> BenchConfig {
        BenchConfig {
            size: 128 * MIB,
            reps: 5,
            fault_reps: 7,
            warmup: 1,
            methods: Method::ALL.to_vec(),
            fault_methods: FaultMethod::ALL.to_vec(),
            fault_size: 8 * MIB,
            fault_threads: vec![(1, 1), (1, 2), (2, 1), (2, 2)],
            fault_around: AroundSource::ALL.to_vec(),
            fault_around_size: 8 * MIB,
            fault_around_windows: vec![1, 16],
            interference: true,
            thp: true,
            quick: false,
            compaction: Some(CompactionConfig::standard()),
            seed: 42,
            corrupt: None,
        }
    }

    /// The `--quick` preset: 8 MiB, 3 repetitions after 1 warm-up; 3 fault-service repetitions
    /// of 1024 faults each (4 MiB), so that p99.9 is not just the slowest fault; well under 20
    /// seconds. It leaves out the waiting variants of `server-copy` (`server-copy-spin`,
    /// `-pin`, `-spin-pin`); name them with `--only` to measure them.
    ///
    /// ```
    /// let c = remap_bench::BenchConfig::quick();
    /// assert!(c.fault_size / 4096 >= 1000, "p99.9 needs at least 1000 faults");
    /// ```
    pub fn quick() -> BenchConfig {
        BenchConfig {
            size: 8 * MIB,
            reps: 3,
            fault_reps: 3,
            fault_size: 4 * MIB,
            fault_methods: FaultMethod::ALL
                .into_iter()
                .filter(|m| {
                    !matches!(
                        m,
                        FaultMethod::ServerCopySpin
                            | FaultMethod::ServerCopyPin
                            | FaultMethod::ServerCopySpinPin
                            | FaultMethod::ServerCopyColocated
                    )
                })
                .collect(),
            fault_around_size: MIB,
            quick: true,
            // The section drives whole compaction cycles: only when asked for (`--only
            // compaction`), so that the quick run stays a run of bare ioctls.
            compaction: None,
            ..BenchConfig::standard()
        }
    }

    /// The chunk sizes measured: those of [`CHUNKS`] smaller than `size`, then `size` itself.
    pub fn chunks(&self) -> Vec<usize> {
        let mut v: Vec<usize> = CHUNKS.into_iter().filter(|&c| c < self.size).collect();
        v.push(self.size);
        v
    }

    /// The chunk sizes of the interference pass: those of [`BenchConfig::chunks`] below 64 MiB,
    /// then the whole range. A second thread costs one remote TLB flush per call, so what it does
    /// to a method shows at small chunks; at 64 MiB a run is two calls, which the whole range
    /// (one call) already shows.
    ///
    /// ```
    /// let c = remap_bench::BenchConfig::standard();
    /// assert_eq!(c.interference_chunks(), [4096, 65536, 2 << 20, 128 << 20]);
    /// ```
    pub fn interference_chunks(&self) -> Vec<usize> {
        let mut v: Vec<usize> = CHUNKS
            .into_iter()
            .filter(|&c| c < self.size && c < 64 * MIB)
            .collect();
        v.push(self.size);
        v
    }
}

/// Why a run could not be done at all. Every variant means the run could not do its job (the
/// CLI's exit status 2); a failed verification is not an error but a figure marked failed
/// ([`Report::all_verified`], exit status 1), so the two cannot be confused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// No userfaultfd can be created here (each path tried, with its errno and fix).
    #[error("cannot benchmark here: no userfaultfd")]
    NoUserfaultfd(#[source] uffd::CreateError),
    /// The kernel does not offer `UFFDIO_MOVE`.
    #[error("cannot benchmark here: the kernel does not offer UFFDIO_MOVE (UFFD_FEATURE_MOVE, Linux 6.8+)")]
    NoMove,
    /// `size` is not a positive multiple of 2 MiB.
    #[error("bad settings: size {size} is not a positive multiple of 2 MiB")]
    Size {
        /// The size asked for, in bytes.
        size: usize,
    },
    /// `fault_size` is not a positive multiple of the page size.
    #[error(
        "bad settings: fault size {size} is not a positive multiple of the page size ({page_size})"
    )]
    FaultSize {
        /// The size asked for, in bytes.
        size: usize,
        /// The page size.
        page_size: usize,
    },
    /// Zero repetitions were asked for.
    #[error("bad settings: reps must be at least 1")]
    NoReps,
    /// Mapping the shared source template failed.
    #[error("setting up: mapping the source template")]
    Template(#[source] remap::region::RegionError),
    /// Creating the peer crate's userfaultfd failed.
    #[cfg(feature = "peer")]
    #[error("setting up: the peer crate's userfaultfd")]
    Peer(#[source] userfaultfd::Error),
}

/// Whether `method` can run in this build; `Err` says why not.
///
/// ```
/// assert!(remap_bench::method_available(remap_bench::Method::MoveRaw).is_ok());
/// ```
pub fn method_available(method: Method) -> Result<(), String> {
    match method {
        Method::PeerCopy if !cfg!(feature = "peer") => Err(no_peer()),
        _ => Ok(()),
    }
}

/// Whether fault-service `method` can run in this build; `Err` says why not.
pub fn fault_method_available(method: FaultMethod) -> Result<(), String> {
    match method {
        FaultMethod::RawLoop
        | FaultMethod::RawMoveLoop
        | FaultMethod::ServerZero
        | FaultMethod::ServerCopy
        | FaultMethod::ServerMove
        | FaultMethod::ServerFn
        | FaultMethod::ServerSigbus
        | FaultMethod::ServerCopySpin
        | FaultMethod::ServerCopyPin
        | FaultMethod::ServerCopySpinPin
        | FaultMethod::ServerCopyColocated => Ok(()),
        FaultMethod::PeerLoop if cfg!(feature = "peer") => Ok(()),
        FaultMethod::PeerLoop => Err(no_peer()),
    }
}

fn no_peer() -> String {
    "built without the `peer` feature (scripts/bench.sh builds it; needs libclang)".into()
}

/// The flags of every `move-raw` ioctl: none. Without `DONTWAKE` each move wakes the waiters on
/// the range it moved (there are none in the bench, so this costs a range lookup, no ioctl);
/// without `ALLOW_SRC_HOLES` a hole is an error (the sources are fully populated).
const RAW_MOVE_FLAGS: uffd::MoveFlags = uffd::MoveFlags::empty();

/// The options of `move-mover`, chosen so that it issues exactly the ioctls of `move-raw`:
/// [`Wake::Kernel`](remap::mover::Wake::Kernel) moves without `DONTWAKE` and issues no
/// `UFFDIO_WAKE` (the default `Wake::PerRange` would move with `DONTWAKE` and add one
/// `UFFDIO_WAKE` per call), and [`HolePolicy::Error`](remap::mover::HolePolicy::Error) without
/// hole counting passes no `ALLOW_SRC_HOLES` and reads no pagemap: the flags of
/// [`RAW_MOVE_FLAGS`]. What remains between the two is the wrapper.
fn bench_mover_options() -> remap::mover::MoveOptions {
    use remap::mover::{BusyPolicy, HolePolicy, MoveOptions, Wake};
    MoveOptions::default()
        .wake(Wake::Kernel)
        .holes(HolePolicy::Error)
        .count_holes(false)
        .busy(BusyPolicy::Error)
}

/// The `move-mover` mover on `uffd`, with [`bench_mover_options`].
fn bench_mover(uffd: uffd::Uffd) -> remap::mover::Mover {
    remap::mover::Mover::new(uffd).with_options(bench_mover_options())
}

/// One bulk figure to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Job {
    method: Method,
    chunk: usize,
    thp: bool,
    interference: bool,
}

/// Runs the benchmark described by `config`, advancing `progress` once per repetition.
///
/// Verification failures do not stop the run: they are recorded in the figure
/// ([`Measurement::verified`]) and counted in [`Summary::failures`].
///
/// # Errors
///
/// [`BenchError::NoUserfaultfd`] or [`BenchError::NoMove`] when userfaultfd or `UFFDIO_MOVE`
/// cannot be used; [`BenchError::Size`], [`BenchError::FaultSize`] or [`BenchError::NoReps`] for
/// settings that make no sense; [`BenchError::Template`] when the shared set-up fails.
pub fn run(config: &BenchConfig, progress: &ProgressBar) -> Result<Report, BenchError> {
    let started = Instant::now();
    if config.size == 0 || config.size % HUGE_PAGE_SIZE != 0 {
        return Err(BenchError::Size { size: config.size });
    }
    if config.reps == 0 || config.fault_reps == 0 {
        return Err(BenchError::NoReps);
    }
    let page_size = rustix::param::page_size();
    if !config.fault_around.is_empty()
        && (config.fault_around_size == 0 || config.fault_around_size % page_size != 0)
    {
        return Err(BenchError::FaultSize {
            size: config.fault_around_size,
            page_size,
        });
    }
    if config.fault_size == 0 || config.fault_size % page_size != 0 {
        return Err(BenchError::FaultSize {
            size: config.fault_size,
            page_size,
        });
    }
    let caps = uffd::Capabilities::probe().map_err(BenchError::NoUserfaultfd)?;
    if !caps.supports_move() {
        return Err(BenchError::NoMove);
    }
    let machine = Machine::read();
    let uffd = uffd::Uffd::new().map_err(BenchError::NoUserfaultfd)?;
    let mover = bench_mover(uffd::Uffd::new().map_err(BenchError::NoUserfaultfd)?);
    let template = Region::builder(HUGE_PAGE_SIZE)
        .populate(true)
        .build()
        .map_err(BenchError::Template)?;
    remap::pattern::fill(&template, config.seed);
    #[cfg(feature = "peer")]
    let peer = if config.methods.contains(&Method::PeerCopy) {
        Some(
            userfaultfd::UffdBuilder::new()
                .close_on_exec(true)
                .user_mode_only(true)
                .create()
                .map_err(BenchError::Peer)?,
        )
    } else {
        None
    };
    let ctx = bulk::BulkCtx {
        uffd: &uffd,
        mover: &mover,
        template: &template,
        seed: config.seed,
        #[cfg(feature = "peer")]
        peer: peer.as_ref(),
    };

    let mut skipped = Vec::new();
    let mut methods = Vec::new();
    for &m in &config.methods {
        match method_available(m) {
            Ok(()) => methods.push(m),
            Err(reason) => skipped.push(Skipped {
                method: m.name().into(),
                reason,
            }),
        }
    }
    let mut fault_methods = Vec::new();
    for &m in &config.fault_methods {
        match fault_method_available(m) {
            Ok(()) => fault_methods.push(m),
            Err(reason) => skipped.push(Skipped {
                method: m.name().into(),
                reason,
            }),
        }
    }
    let mut thp_modes = vec![false];
    if config.thp && machine.thp.usable() {
        thp_modes.push(true);
    } else if config.thp {
        skipped.push(Skipped {
            method: "THP on".into(),
            reason: format!("transparent huge pages are {}", machine.thp),
        });
    }
    let interference = config.interference && machine.cores >= 2;
    if config.interference && !interference {
        skipped.push(Skipped {
            method: "interference".into(),
            reason: "needs a second CPU".into(),
        });
    }
    let chunks = config.chunks();
    let mut jobs = Vec::new();
    for &thp in &thp_modes {
        for &chunk in &chunks {
            for &method in &methods {
                jobs.push(Job {
                    method,
                    chunk,
                    thp,
                    interference: false,
                });
            }
        }
    }
    if interference {
        for chunk in config.interference_chunks() {
            for &method in &methods {
                if matches!(
                    method,
                    Method::MoveRaw | Method::MoveMover | Method::Copy | Method::MemcpyPrefaulted
                ) {
                    jobs.push(Job {
                        method,
                        chunk,
                        thp: false,
                        interference: true,
                    });
                }
            }
        }
    }
    // The mover's overhead call by call (P1), at one page and at 2 MiB, wherever both the raw
    // ioctl and the mover are measured (and the size holds at least one chunk for each).
    let mut overhead_jobs = Vec::new();
    if methods.contains(&Method::MoveRaw) && methods.contains(&Method::MoveMover) {
        for &thp in &thp_modes {
            for chunk in [page_size, HUGE_PAGE_SIZE] {
                if 2 * chunk <= config.size {
                    overhead_jobs.push((chunk, thp));
                }
            }
        }
    }
    let fault_jobs: usize = fault_methods
        .iter()
        .map(|&m| fault_threads(m, &config.fault_threads).len())
        .sum();
    let around_jobs =
        config.fault_around.len() * Touch::ALL.len() * config.fault_around_windows.len();
    progress.set_length(
        (jobs.len() + overhead_jobs.len()) as u64 * u64::from(config.warmup + config.reps)
            + (fault_jobs + around_jobs) as u64 * u64::from(config.warmup + config.fault_reps),
    );

    // Each section in rounds (see `rounds`): the methods a ratio compares run side by side.
    let rounds = |reps: u32| config.warmup + reps;
    let mut tick = |label: String| {
        progress.set_message(label);
        progress.inc(1);
    };
    let mut bulk_series: Vec<_> = jobs
        .iter()
        .map(|&job| BulkSeries::new(&ctx, config, job))
        .collect();
    rounds::interleave(&mut bulk_series, rounds(config.reps), &mut tick);
    let mut measurements: Vec<_> = bulk_series.into_iter().map(BulkSeries::finish).collect();
    add_ratios(&mut measurements);
    let mut overhead_series: Vec<_> = overhead_jobs
        .iter()
        .map(|&(chunk, thp)| {
            overhead::OverheadSeries::new(
                &ctx,
                config.size,
                chunk,
                thp,
                (config.warmup, config.reps),
            )
        })
        .collect();
    rounds::interleave(&mut overhead_series, rounds(config.reps), &mut tick);
    let mover_overhead: Vec<_> = overhead_series
        .into_iter()
        .map(overhead::OverheadSeries::finish)
        .collect();

    let mut fault_series = Vec::new();
    for &method in &fault_methods {
        for (handlers, mutators) in fault_threads(method, &config.fault_threads) {
            fault_series.push(FaultSeries::new(config, method, handlers, mutators));
        }
    }
    rounds::interleave(&mut fault_series, rounds(config.fault_reps), &mut tick);
    let mut faults: Vec<_> = fault_series.into_iter().map(FaultSeries::finish).collect();

    let mut around_series = Vec::new();
    for &source in &config.fault_around {
        for touch in Touch::ALL {
            for &window in &config.fault_around_windows {
                around_series.push(around::AroundSeries::new(
                    source,
                    touch,
                    window,
                    config.fault_around_size,
                    (config.warmup, config.fault_reps),
                    config.seed,
                ));
            }
        }
    }
    rounds::interleave(&mut around_series, rounds(config.fault_reps), &mut tick);
    let mut fault_around: Vec<_> = around_series
        .into_iter()
        .map(around::AroundSeries::finish)
        .collect();
    around::add_ratios(&mut fault_around);
    let mut compaction = Vec::new();
    if let Some(c) = &config.compaction {
        progress.set_message("compaction");
        match compaction::measure(c, config.seed, &|msg| {
            progress.set_message(format!("compaction: {msg}"));
        }) {
            Ok(figures) => compaction = figures,
            Err(reason) => skipped.push(Skipped {
                method: "compaction".into(),
                reason,
            }),
        }
    }
    progress.finish_and_clear();
    add_sigbus_ratios(&mut faults);

    let failures = measurements.iter().filter(|m| !m.verified).count()
        + faults.iter().filter(|f| !f.verified).count()
        + compaction.iter().filter(|c| !c.verified).count()
        + fault_around.iter().filter(|f| !f.verified).count()
        + mover_overhead.iter().filter(|f| !f.verified).count();
    let summary = Summary {
        measurements: measurements.len(),
        faults: faults.len(),
        fault_around: fault_around.len(),
        mover_overhead: mover_overhead.len(),
        failures,
        skipped,
        seed: config.seed,
        elapsed_total: started.elapsed().as_secs_f64(),
    };
    let config_record = ConfigRecord {
        machine,
        size_bytes: config.size as u64,
        reps: config.reps,
        fault_reps: config.fault_reps,
        warmup: config.warmup,
        chunks: chunks.iter().map(|&c| c as u64).collect(),
        methods: config.methods.clone(),
        fault_methods: config.fault_methods.clone(),
        fault_size_bytes: config.fault_size as u64,
        fault_around: config.fault_around.clone(),
        fault_around_windows: config.fault_around_windows.clone(),
        fault_around_size_bytes: config.fault_around_size as u64,
        quick: config.quick,
        peer_built: cfg!(feature = "peer"),
        seed: config.seed,
    };
    Ok(Report {
        config: config_record,
        measurements,
        mover_overhead,
        faults,
        compaction,
        fault_around,
        summary,
    })
}

/// The repetitions of one bulk figure (see [`rounds`]).
struct BulkSeries<'a> {
    ctx: &'a bulk::BulkCtx<'a>,
    config: &'a BenchConfig,
    job: Job,
    times: Vec<f64>,
    thp_fractions: Vec<f64>,
    ioctls: Option<u64>,
    error: Option<String>,
}

impl<'a> BulkSeries<'a> {
    /// The figure of `job`, no repetition run yet.
    fn new(ctx: &'a bulk::BulkCtx<'a>, config: &'a BenchConfig, job: Job) -> Self {
        BulkSeries {
            ctx,
            config,
            job,
            times: Vec::new(),
            thp_fractions: Vec::new(),
            ioctls: None,
            error: None,
        }
    }

    /// The figure, from the recorded repetitions (ratios filled in later, by `add_ratios`).
    fn finish(self) -> Measurement {
        let (config, job) = (self.config, self.job);
        let pages = (config.size / 4096) as f64;
        let time = Spread::of_or_nan(&self.times);
        Measurement {
            method: job.method,
            chunk_bytes: job.chunk as u64,
            whole_range: job.chunk == config.size,
            thp: job.thp,
            interference: job.interference,
            bytes: config.size as u64,
            reps: config.reps,
            time_ns: time,
            gb_per_s: config.size as f64 / time.median,
            ns_per_page: time.map(|t| t / pages),
            source_thp_fraction: Spread::of(&self.thp_fractions).map_or(0.0, |s| s.median),
            ioctls: self.ioctls,
            vs_raw: None,
            vs_memcpy: None,
            vs_copy: None,
            verified: self.error.is_none(),
            error: self.error,
        }
    }
}

impl rounds::Series for BulkSeries<'_> {
    fn repetition(&mut self, rep: u32) {
        if self.error.is_some() {
            return;
        }
        let (config, job) = (self.config, self.job);
        match bulk::run_rep(
            self.ctx,
            job.method,
            config.size,
            job.chunk,
            job.thp,
            job.interference,
            config.corrupt == Some(job.method),
        ) {
            Ok(out) => {
                if let Err(e) = out.verify {
                    tracing::error!(%e, "verification failed");
                    self.error = Some(e);
                } else if rep >= config.warmup {
                    self.times.push(out.elapsed.as_nanos() as f64);
                    self.thp_fractions.push(out.source_thp_fraction);
                    self.ioctls = out.ioctls;
                }
            }
            Err(e) => {
                tracing::error!(%e, "repetition failed");
                self.error = Some(e);
            }
        }
    }

    fn label(&self) -> String {
        let job = self.job;
        format!(
            "{} {} thp {}{}",
            job.method,
            report::human_bytes(job.chunk as u64),
            if job.thp { "on" } else { "off" },
            if job.interference { " +spin" } else { "" }
        )
    }
}

/// Fills in each fault figure's p50 over `server-sigbus`'s with the same mutator count (the
/// target of adaptive waiting: a handler thread within 2x of the faulting thread serving itself).
fn add_sigbus_ratios(faults: &mut [FaultMeasurement]) {
    let sigbus: HashMap<u32, f64> = faults
        .iter()
        .filter(|f| f.method == FaultMethod::ServerSigbus && f.verified)
        .map(|f| (f.mutators, f.p50_ns.median))
        .collect();
    for f in faults.iter_mut().filter(|f| f.verified) {
        f.vs_sigbus_p50 = sigbus
            .get(&f.mutators)
            .filter(|b| **b > 0.0)
            .map(|b| f.p50_ns.median / b);
    }
}

/// Fills in the ratios to `move-raw`, `memcpy-prefaulted` and `copy` at equal settings.
fn add_ratios(measurements: &mut [Measurement]) {
    let mut base: HashMap<(Method, u64, bool, bool), f64> = HashMap::new();
    for m in measurements.iter().filter(|m| m.verified) {
        base.insert(
            (m.method, m.chunk_bytes, m.thp, m.interference),
            m.time_ns.median,
        );
    }
    for m in measurements.iter_mut().filter(|m| m.verified) {
        let r = |b: Method| {
            base.get(&(b, m.chunk_bytes, m.thp, m.interference))
                .map(|t| m.time_ns.median / t)
        };
        m.vs_raw = r(Method::MoveRaw);
        m.vs_memcpy = r(Method::MemcpyPrefaulted);
        m.vs_copy = r(Method::Copy);
    }
}

/// The `(handlers, mutators)` pairs measured for `method`: SIGBUS mode has no handler threads
/// (the faulting thread resolves), so it gets `(0, m)` once per mutator count.
fn fault_threads(method: FaultMethod, pairs: &[(u32, u32)]) -> Vec<(u32, u32)> {
    if method != FaultMethod::ServerSigbus {
        return pairs.to_vec();
    }
    let mut v: Vec<(u32, u32)> = pairs.iter().map(|&(_, m)| (0, m)).collect();
    v.dedup();
    v.sort_unstable();
    v.dedup();
    v
}

/// The median of per-repetition counts, 0 when there are none.
fn median_count(counts: &[u64]) -> u64 {
    let mut v = counts.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The repetitions of one fault-service figure (see [`rounds`]).
struct FaultSeries<'a> {
    config: &'a BenchConfig,
    method: FaultMethod,
    handlers: u32,
    mutators: u32,
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    fps: Vec<f64>,
    cpu: Vec<f64>,
    taken: Vec<u64>,
    pages: u64,
    error: Option<String>,
}

impl<'a> FaultSeries<'a> {
    /// The figure of `method` with `handlers` and `mutators`, no repetition run yet.
    fn new(config: &'a BenchConfig, method: FaultMethod, handlers: u32, mutators: u32) -> Self {
        FaultSeries {
            config,
            method,
            handlers,
            mutators,
            p50: vec![],
            p99: vec![],
            p999: vec![],
            fps: vec![],
            cpu: vec![],
            taken: vec![],
            pages: 0,
            error: None,
        }
    }

    /// The figure, from the recorded repetitions (the SIGBUS ratio filled in later).
    fn finish(self) -> FaultMeasurement {
        FaultMeasurement {
            method: self.method,
            handlers: self.handlers,
            mutators: self.mutators,
            pages: self.pages,
            faults: median_count(&self.taken),
            reps: self.config.fault_reps,
            p50_ns: Spread::of_or_nan(&self.p50),
            p99_ns: Spread::of_or_nan(&self.p99),
            p999_ns: Spread::of_or_nan(&self.p999),
            faults_per_s: Spread::of_or_nan(&self.fps),
            handler_cpu_ns_per_fault: Spread::of_or_nan(&self.cpu),
            vs_sigbus_p50: None,
            verified: self.error.is_none(),
            error: self.error,
        }
    }
}

impl rounds::Series for FaultSeries<'_> {
    fn repetition(&mut self, rep: u32) {
        if self.error.is_some() {
            return;
        }
        match fault::run_rep(
            self.method,
            self.config.fault_size,
            self.handlers as usize,
            self.mutators as usize,
            self.config.seed,
        ) {
            Ok(out) => {
                if let Err(e) = out.verify {
                    tracing::error!(%e, "fault verification failed");
                    self.error = Some(e);
                } else if rep >= self.config.warmup {
                    self.pages = out.pages;
                    self.taken.push(out.faults);
                    self.p50.push(out.latency.value_at_quantile(0.5) as f64);
                    self.p99.push(out.latency.value_at_quantile(0.99) as f64);
                    self.p999.push(out.latency.value_at_quantile(0.999) as f64);
                    // Faults taken over the mutators' own window, first touch to last completed
                    // touch (see `fault::mutate`).
                    self.fps.push(out.faults as f64 / out.wall.as_secs_f64());
                    self.cpu
                        .push(out.handler_cpu.as_nanos() as f64 / out.faults.max(1) as f64);
                }
            }
            Err(e) => {
                tracing::error!(%e, "fault repetition failed");
                self.error = Some(e);
            }
        }
    }

    fn label(&self) -> String {
        format!("{} {}h/{}m", self.method, self.handlers, self.mutators)
    }
}

#[cfg(test)]
mod tests {
    use remap::mover::{BusyPolicy, HolePolicy, Wake};

    /// `move-mover` must run with the flags of `move-raw`: no DONTWAKE (so no separate wake), no
    /// ALLOW_SRC_HOLES, no pagemap reads. (The ioctl count is checked against the real kernel in
    /// `tests/methods.rs`.)
    #[test]
    fn the_bench_mover_is_configured_like_the_raw_loop() {
        let o = super::bench_mover_options();
        assert_eq!(o.wake, Wake::Kernel);
        assert_eq!(o.holes, HolePolicy::Error);
        assert!(!o.count_holes);
        assert_eq!(o.busy, BusyPolicy::Error);
        assert!(super::RAW_MOVE_FLAGS.is_empty());
    }
}
