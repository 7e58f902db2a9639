//! What a run produces: the records, their JSON Lines wire format and the terminal tables.

use std::fmt;
use std::io::{self, Write};

use serde::Serialize;

use crate::around::{self, AroundMeasurement, AroundSource};
use crate::stats::Spread;
use crate::Machine;

/// A way of moving N bytes from one region to another (the bulk table's rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// `UFFDIO_MOVE` through the bare binding, one ioctl per chunk: the floor for any wrapper.
    MoveRaw,
    /// `remap::mover::Mover::move_range`, one call per chunk, configured to issue exactly the
    /// ioctls `move-raw` issues: `MoveOptions::default().wake(Wake::Kernel)` (so each call is one
    /// `UFFDIO_MOVE` without `DONTWAKE`, waking its own range, and no separate `UFFDIO_WAKE`) and
    /// the default `HolePolicy::Error` (no `ALLOW_SRC_HOLES`, like `move-raw`'s empty flags).
    /// The mover's default `Wake::PerRange` would add one `UFFDIO_WAKE` per call, which is a
    /// different workload, not wrapper overhead; with equal ioctls the ratio to `move-raw` is the
    /// cost of the wrapper alone. [`Measurement::ioctls`] shows the two issue the same number.
    MoveMover,
    /// `UFFDIO_COPY` into a registered destination, then `MADV_DONTNEED` of the source chunk.
    Copy,
    /// `memcpy` into a prefaulted destination, then `MADV_DONTNEED` of the source chunk.
    MemcpyPrefaulted,
    /// `memcpy` into fresh memory (first-touch faults timed), then `MADV_DONTNEED` of the source.
    MemcpyFresh,
    /// `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)` of each chunk into a reserved destination.
    Mremap,
    /// The peer crate `userfaultfd` 0.9: its `copy` (`UFFDIO_COPY`), then `MADV_DONTNEED`.
    PeerCopy,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 7] = [
        Method::MoveRaw,
        Method::MoveMover,
        Method::Copy,
        Method::MemcpyPrefaulted,
        Method::MemcpyFresh,
        Method::Mremap,
        Method::PeerCopy,
    ];

    /// The name used on the command line, in JSON and in the chart legend.
    pub fn name(self) -> &'static str {
        match self {
            Method::MoveRaw => "move-raw",
            Method::MoveMover => "move-mover",
            Method::Copy => "copy",
            Method::MemcpyPrefaulted => "memcpy-prefaulted",
            Method::MemcpyFresh => "memcpy-fresh",
            Method::Mremap => "mremap",
            Method::PeerCopy => "peer-copy",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A way of serving the missing-page faults of a registered region (the fault table's rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultMethod {
    /// A minimal loop: `poll`, `read` the events, one `UFFDIO_COPY` per fault.
    RawLoop,
    /// The same loop with one `UFFDIO_MOVE` per fault, from a region of prepared pages (the
    /// page at the fault's offset): the floor for `server-move`.
    RawMoveLoop,
    /// `remap::server::FaultServer` with the zero-page source.
    ServerZero,
    /// `remap::server::FaultServer` with the copy source.
    ServerCopy,
    /// `remap::server::FaultServer` moving pages from a recycled pool.
    ServerMove,
    /// `remap::server::FaultServer` with an `FnSource`: a closure fills each page (a 4 KiB
    /// `memcpy` from one prepared page), then one `UFFDIO_COPY`.
    ServerFn,
    /// `remap::server::FaultServer` in SIGBUS mode (the faulting thread resolves its own fault).
    ServerSigbus,
    /// `server-copy` with adaptive waiting: handler threads spin on non-blocking reads for up to
    /// 100 us before they park in `poll` (`FaultServerBuilder::spin`).
    ServerCopySpin,
    /// `server-copy` with handler thread `i` pinned to CPU `i` (`FaultServerBuilder::pin_cpus`).
    ServerCopyPin,
    /// `server-copy` with adaptive waiting and pinning both on.
    ServerCopySpinPin,
    /// `server-copy` with handler thread `i` pinned to CPU `i` and the mutators pinned too
    /// (mutator `t` on CPU `t`, as a VMM pins its vCPU threads): a fault is served by the
    /// handler on its own CPU (at 1/1 handler and mutator share CPU 0 and no other CPU is
    /// woken; with two handlers the other one is woken too).
    ServerCopyColocated,
    /// The peer crate `userfaultfd` 0.9: `read_event` and `copy` in a loop.
    PeerLoop,
}

impl FaultMethod {
    /// Every fault-service method, in table order.
    pub const ALL: [FaultMethod; 12] = [
        FaultMethod::RawLoop,
        FaultMethod::RawMoveLoop,
        FaultMethod::ServerZero,
        FaultMethod::ServerCopy,
        FaultMethod::ServerMove,
        FaultMethod::ServerFn,
        FaultMethod::ServerSigbus,
        FaultMethod::PeerLoop,
        FaultMethod::ServerCopySpin,
        FaultMethod::ServerCopyPin,
        FaultMethod::ServerCopySpinPin,
        FaultMethod::ServerCopyColocated,
    ];

    /// The name used on the command line, in JSON and in the chart legend.
    pub fn name(self) -> &'static str {
        match self {
            FaultMethod::RawLoop => "raw-loop",
            FaultMethod::RawMoveLoop => "raw-move-loop",
            FaultMethod::ServerZero => "server-zero",
            FaultMethod::ServerCopy => "server-copy",
            FaultMethod::ServerMove => "server-move",
            FaultMethod::ServerFn => "server-fn",
            FaultMethod::ServerSigbus => "server-sigbus",
            FaultMethod::PeerLoop => "peer-loop",
            FaultMethod::ServerCopySpin => "server-copy-spin",
            FaultMethod::ServerCopyPin => "server-copy-pin",
            FaultMethod::ServerCopySpinPin => "server-copy-spin-pin",
            FaultMethod::ServerCopyColocated => "server-copy-colocated",
        }
    }
}

impl fmt::Display for FaultMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The settings of a run, as recorded (the `config` record).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigRecord {
    /// Where it ran.
    pub machine: Machine,
    /// Bytes moved per bulk measurement.
    pub size_bytes: u64,
    /// Measured repetitions per bulk figure.
    pub reps: u32,
    /// Measured repetitions per fault-service figure.
    pub fault_reps: u32,
    /// Unmeasured warm-up repetitions before them.
    pub warmup: u32,
    /// Chunk sizes in bytes (the last one is the whole range).
    pub chunks: Vec<u64>,
    /// Bulk methods asked for.
    pub methods: Vec<Method>,
    /// Fault-service methods asked for.
    pub fault_methods: Vec<FaultMethod>,
    /// Bytes of the region the mutators fault in, per fault measurement.
    pub fault_size_bytes: u64,
    /// Fault-around sources asked for.
    pub fault_around: Vec<AroundSource>,
    /// Fault-around windows measured, in pages.
    pub fault_around_windows: Vec<u32>,
    /// Bytes of the region the mutator faults in, per fault-around measurement.
    pub fault_around_size_bytes: u64,
    /// Whether `--quick` chose the sizes.
    pub quick: bool,
    /// Whether the peer crate is built in (cargo feature `peer`).
    pub peer_built: bool,
    /// The seed of the verification pattern.
    pub seed: u64,
}

/// One bulk figure: a method at a chunk size, THP off or on, with or without a second thread live
/// (the `measurement` record).
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The method.
    pub method: Method,
    /// Bytes per operation (per ioctl, `memcpy`, `mremap`).
    pub chunk_bytes: u64,
    /// Whether the chunk is the whole range (one operation).
    pub whole_range: bool,
    /// Whether the regions were 2 MiB aligned with `MADV_HUGEPAGE` (else `MADV_NOHUGEPAGE`).
    pub thp: bool,
    /// Whether a second thread of the process spun on the other CPU, touching memory.
    pub interference: bool,
    /// Bytes moved per repetition.
    pub bytes: u64,
    /// Measured repetitions.
    pub reps: u32,
    /// Time per repetition, in nanoseconds.
    pub time_ns: Spread,
    /// Throughput (median repetition), in 10^9 bytes per second.
    pub gb_per_s: f64,
    /// Nanoseconds per 4 KiB page, median and spread.
    pub ns_per_page: Spread,
    /// Fraction of the source backed by transparent huge pages before the move (median).
    pub source_thp_fraction: f64,
    /// userfaultfd ioctls issued per repetition (`move-raw`, `move-mover`, `copy`; the last
    /// measured repetition), `None` for methods that issue none.
    pub ioctls: Option<u64>,
    /// Median time divided by `move-raw`'s at the same chunk, THP and interference (same run).
    pub vs_raw: Option<f64>,
    /// Median time divided by `memcpy-prefaulted`'s at the same settings.
    pub vs_memcpy: Option<f64>,
    /// Median time divided by `copy`'s at the same settings.
    pub vs_copy: Option<f64>,
    /// Whether every repetition's destination held the right bytes.
    pub verified: bool,
    /// The first verification failure or error, if any.
    pub error: Option<String>,
}

/// One fault-service figure (the `fault` record).
#[derive(Debug, Clone, Serialize)]
pub struct FaultMeasurement {
    /// How faults were served.
    pub method: FaultMethod,
    /// Handler threads.
    pub handlers: u32,
    /// Mutator threads touching the region.
    pub mutators: u32,
    /// Pages of the region, each touched once per repetition.
    pub pages: u64,
    /// Faults actually taken per repetition (median): page-fault events read by the handlers, or
    /// SIGBUS signals handled. Equal to `pages` when every touch faults exactly once.
    pub faults: u64,
    /// Measured repetitions.
    pub reps: u32,
    /// The 50th percentile latency of each repetition, ns (as seen by the mutator): median and
    /// spread over the repetitions.
    pub p50_ns: Spread,
    /// The 99th percentile latency of each repetition, ns: median and spread.
    pub p99_ns: Spread,
    /// The 99.9th percentile latency of each repetition, ns: median and spread.
    pub p999_ns: Spread,
    /// Faults taken per second of wall time, over the repetitions: faults taken divided by the
    /// time from the earliest first touch to the latest completed touch across all mutators
    /// (each mutator reads the clock itself, so no thread's scheduling delay shortens the window).
    pub faults_per_s: Spread,
    /// CPU time spent outside the mutator threads per fault taken, ns (the handler threads'
    /// CPU: the process's CPU clock over the run minus the mutators' own thread CPU clocks; in
    /// SIGBUS mode the handler runs in the mutators, so this is about zero): median and spread.
    pub handler_cpu_ns_per_fault: Spread,
    /// The median p50 divided by `server-sigbus`'s with the same mutator count in this run
    /// (null when SIGBUS mode was not measured).
    pub vs_sigbus_p50: Option<f64>,
    /// Whether every faulted page held the right bytes.
    pub verified: bool,
    /// The first verification failure or error, if any.
    pub error: Option<String>,
}

/// A method that was asked for but not measured, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The method's name.
    pub method: String,
    /// Why it was not measured.
    pub reason: String,
}

/// The last record of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Bulk figures reported.
    pub measurements: usize,
    /// Fault-service figures reported.
    pub faults: usize,
    /// Fault-around figures reported.
    pub fault_around: usize,
    /// Mover-overhead figures reported.
    pub mover_overhead: usize,
    /// Figures whose verification failed (the exit status is 1 when this is not 0).
    pub failures: usize,
    /// Methods not measured.
    pub skipped: Vec<Skipped>,
    /// The seed of the verification pattern (as in the `config` record), so that the summary
    /// alone says how to reproduce the run.
    pub seed: u64,
    /// Wall-clock seconds for the whole run (a float).
    pub elapsed_total: f64,
}

/// One line of `remap bench --json`: a JSON object `{"type": ..., "data": {...}}` (JSON Lines).
///
/// A run prints, in order: one `config` record ([`ConfigRecord`]: the machine and the settings),
/// one `measurement` record per bulk figure ([`Measurement`]), one `mover-overhead` record per
/// call-by-call comparison of the mover with the raw ioctl ([`crate::OverheadMeasurement`]),
/// one `fault` record per fault-service figure ([`FaultMeasurement`]), one `fault-around`
/// record per fault-around figure ([`AroundMeasurement`]), one `compaction` record per
/// publication mode when that section runs, and one `summary` record ([`Summary`]). Times are
/// nanoseconds, sizes bytes, rates per second, `elapsed_total` seconds (a float); a [`Spread`] is
/// `{median, min, max, q1, q3}` over the measured repetitions (the fault latencies `p50_ns`,
/// `p99_ns` and `p999_ns` are the spread of each repetition's percentile; a `mover-overhead`
/// record's are over every timed call). A figure whose
/// repetitions all failed has `verified: false`, its `error`, and `null` for the figures it could
/// not measure. Ratios (`vs_raw`, `vs_memcpy`, `vs_copy`) are this figure's median time over the baseline's,
/// measured in the same run; `null` where the baseline was not measured.
///
/// A worked example (abridged to one record of each kind):
///
/// ```text
/// {"type":"config","data":{"machine":{"kernel_release":"6.18.0","arch":"x86_64","cpu_model":"AMD EPYC","cores":2,"page_size":4096,"thp_mode":"madvise","swap_active":false,"mem_total_bytes":25769803776,"cpu_idle":"haltpoll, governor haltpoll, guest_halt_poll_ns=0"},"size_bytes":8388608,"reps":3,"fault_reps":3,"warmup":1,"chunks":[4096,65536,2097152,8388608],"methods":["move-raw","move-mover","copy"],"fault_methods":["raw-loop"],"fault_size_bytes":4194304,"fault_around":["around-move"],"fault_around_windows":[1,16],"fault_around_size_bytes":1048576,"quick":true,"peer_built":false,"seed":42}}
/// {"type":"measurement","data":{"method":"move-raw","chunk_bytes":65536,"whole_range":false,"thp":false,"interference":false,"bytes":8388608,"reps":3,"time_ns":{"median":330000.0,"min":320000.0,"max":350000.0,"q1":325000.0,"q3":340000.0},"gb_per_s":25.4,"ns_per_page":{"median":161.1,"min":156.2,"max":170.9,"q1":158.7,"q3":166.0},"source_thp_fraction":0.0,"ioctls":128,"vs_raw":1.0,"vs_memcpy":0.5,"vs_copy":0.15,"verified":true,"error":null}}
/// {"type":"mover-overhead","data":{"chunk_bytes":2097152,"thp":false,"calls":6,"reps":3,"raw_ns_per_call":{"median":18500.0,"min":17000.0,"max":26000.0,"q1":17600.0,"q3":20000.0},"mover_ns_per_call":{"median":18700.0,"min":17100.0,"max":25000.0,"q1":17800.0,"q3":20400.0},"vs_raw":1.011,"verified":true,"error":null}}
/// {"type":"fault","data":{"method":"raw-loop","handlers":1,"mutators":1,"pages":1024,"faults":1024,"reps":3,"p50_ns":{"median":30000.0,"min":29000.0,"max":31000.0,"q1":29500.0,"q3":30500.0},"p99_ns":{"median":60000.0,"min":55000.0,"max":64000.0,"q1":57500.0,"q3":62000.0},"p999_ns":{"median":90000.0,"min":80000.0,"max":120000.0,"q1":85000.0,"q3":105000.0},"faults_per_s":{"median":31000.0,"min":29000.0,"max":33000.0,"q1":30000.0,"q3":32000.0},"verified":true,"error":null}}
/// {"type":"fault-around","data":{"source":"around-move","touch":"sequential","window":16,"pages":1024,"faults":64,"pages_around":960,"reps":3,"p50_ns":{"median":120.0,"min":110.0,"max":130.0,"q1":115.0,"q3":125.0},"ns_per_page":{"median":3000.0,"min":2900.0,"max":3200.0,"q1":2950.0,"q3":3100.0},"faults_per_s":{"median":20800.0,"min":19500.0,"max":21500.0,"q1":20100.0,"q3":21200.0},"pages_per_s":{"median":333000.0,"min":312000.0,"max":344000.0,"q1":322000.0,"q3":339000.0},"vs_one_page":6.2,"verified":true,"error":null}}
/// {"type":"summary","data":{"measurements":40,"faults":4,"fault_around":1,"mover_overhead":2,"failures":0,"skipped":[{"method":"peer-copy","reason":"built without the `peer` feature"}],"seed":42,"elapsed_total":12.5}}
/// ```
///
/// ```
/// use remap_bench::{Record, Skipped, Summary};
///
/// let summary = Summary {
///     measurements: 0,
///     faults: 0,
///     fault_around: 0,
///     mover_overhead: 0,
///     failures: 0,
///     skipped: vec![],
///     seed: 42,
///     elapsed_total: 1.5,
/// };
/// let line = serde_json::to_string(&Record::Summary(&summary))?;
/// assert_eq!(
///     line,
///     r#"{"type":"summary","data":{"measurements":0,"faults":0,"fault_around":0,"mover_overhead":0,"failures":0,"skipped":[],"seed":42,"elapsed_total":1.5}}"#
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum Record<'a> {
    /// The machine and settings; first.
    Config(&'a ConfigRecord),
    /// One bulk figure.
    Measurement(&'a Measurement),
    /// One call-by-call comparison of the mover with the raw ioctl.
    #[serde(rename = "mover-overhead")]
    MoverOverhead(&'a crate::overhead::OverheadMeasurement),
    /// One fault-service figure.
    Fault(&'a FaultMeasurement),
    /// One publication mode of the compaction section.
    Compaction(&'a crate::compaction::CompactionMeasurement),
    /// One fault-around figure.
    #[serde(rename = "fault-around")]
    FaultAround(&'a AroundMeasurement),
    /// Counts and elapsed time; last.
    Summary(&'a Summary),
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The settings and the machine.
    pub config: ConfigRecord,
    /// Bulk figures.
    pub measurements: Vec<Measurement>,
    /// Call-by-call comparisons of the mover with the raw ioctl (empty unless both `move-raw`
    /// and `move-mover` were measured).
    pub mover_overhead: Vec<crate::overhead::OverheadMeasurement>,
    /// Fault-service figures.
    pub faults: Vec<FaultMeasurement>,
    /// The compaction section, one figure per publication mode (empty when not selected).
    pub compaction: Vec<crate::compaction::CompactionMeasurement>,
    /// Fault-around figures.
    pub fault_around: Vec<AroundMeasurement>,
    /// Counts.
    pub summary: Summary,
}

impl Report {
    /// The records in wire order: config, measurements, mover overhead, faults, fault-around,
    /// compaction, summary.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        std::iter::once(Record::Config(&self.config))
            .chain(self.measurements.iter().map(Record::Measurement))
            .chain(self.mover_overhead.iter().map(Record::MoverOverhead))
            .chain(self.faults.iter().map(Record::Fault))
            .chain(self.fault_around.iter().map(Record::FaultAround))
            .chain(self.compaction.iter().map(Record::Compaction))
            .chain(std::iter::once(Record::Summary(&self.summary)))
    }

    /// Writes the JSON Lines of [`Record`], one record per line.
    ///
    /// # Errors
    ///
    /// Any I/O error of `w`.
    pub fn write_json(&self, w: &mut impl Write) -> io::Result<()> {
        for record in self.records() {
            serde_json::to_writer(&mut *w, &record)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Whether every measured figure verified.
    pub fn all_verified(&self) -> bool {
        self.summary.failures == 0
    }

    /// Writes the human tables: machine, bulk figures, the mover's overhead call by call,
    /// fault-service and fault-around figures, compaction, skipped methods.
    ///
    /// # Errors
    ///
    /// Any I/O error of `w`.
    pub fn write_table(&self, w: &mut impl Write) -> io::Result<()> {
        let m = &self.config.machine;
        writeln!(
            w,
            "machine: Linux {} {}, {}, {} cores, {} B pages, THP {}, swap {}, cpuidle {}",
            m.kernel_release,
            m.arch,
            m.cpu_model,
            m.cores,
            m.page_size,
            m.thp,
            if m.swap_active { "on" } else { "off" },
            m.cpu_idle
        )?;
        writeln!(
            w,
            "bulk: {} per run, median of {} reps after {} warm-up (spread: min..max ns/page); \
             ratios are time / baseline time in this run (<1 = faster)",
            human_bytes(self.config.size_bytes),
            self.config.reps,
            self.config.warmup
        )?;
        writeln!(
            w,
            "move-mover: Mover with wake=Kernel, holes=Error: one UFFDIO_MOVE per chunk without \
             DONTWAKE, the ioctls and flags of move-raw (ioctls column); its default \
             wake=PerRange would add a UFFDIO_WAKE per call"
        )?;
        writeln!(
            w,
            "{:<18} {:>4} {:>5} {:>7} {:>9} {:>10} {:>21} {:>6} {:>8} {:>8} {:>8} {:>4}",
            "method",
            "thp",
            "spin",
            "chunk",
            "GB/s",
            "ns/page",
            "spread ns/page",
            "ioctls",
            "x raw",
            "x memcpy",
            "x copy",
            "ok"
        )?;
        for r in &self.measurements {
            writeln!(
                w,
                "{:<18} {:>4} {:>5} {:>7} {:>9.2} {:>10.1} {:>21} {:>6} {:>8} {:>8} {:>8} {:>4}",
                r.method.name(),
                if r.thp { "on" } else { "off" },
                if r.interference { "yes" } else { "no" },
                if r.whole_range {
                    format!("all {}", human_bytes(r.chunk_bytes))
                } else {
                    human_bytes(r.chunk_bytes)
                },
                r.gb_per_s,
                r.ns_per_page.median,
                format!("{:.1}..{:.1}", r.ns_per_page.min, r.ns_per_page.max),
                r.ioctls.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ratio(r.vs_raw),
                ratio(r.vs_memcpy),
                ratio(r.vs_copy),
                if r.verified { "ok" } else { "FAIL" }
            )?;
        }
        writeln!(w)?;
        crate::overhead::write_table(&self.mover_overhead, w)?;
        self.write_fault_table(w)?;
        around::write_table(
            &self.fault_around,
            self.config.fault_around_size_bytes,
            self.config.fault_reps,
            w,
        )?;
        self.write_compaction_table(w)?;
        for s in &self.summary.skipped {
            writeln!(w, "not measured: {}: {}", s.method, s.reason)?;
        }
        for r in self.measurements.iter().filter_map(|r| r.error.as_ref()) {
            writeln!(w, "failure: {r}")?;
        }
        for r in self.faults.iter().filter_map(|r| r.error.as_ref()) {
            writeln!(w, "failure: {r}")?;
        }
        for r in self.fault_around.iter().filter_map(|r| r.error.as_ref()) {
            writeln!(w, "failure: {r}")?;
        }
        writeln!(
            w,
            "{} bulk figures, {} fault figures, {} fault-around figures, {} failures, {:.1} s",
            self.summary.measurements,
            self.summary.faults,
            self.summary.fault_around,
            self.summary.failures,
            self.summary.elapsed_total
        )?;
        w.flush()
    }

    /// The compaction section of [`Report::write_table`], when it ran.
    fn write_compaction_table(&self, w: &mut impl Write) -> io::Result<()> {
        let Some(first) = self.compaction.first() else {
            return Ok(());
        };
        writeln!(
            w,
            "\ncompaction (remap compact): a {} key-value heap, {:.1} MiB live, {} mutator(s) \
             live, modes interleaved; compaction-thread CPU time, ratios to COPY's in the same \
             repetition and to a memcpy of the live bytes in the same cycle; median (min..max) \
             of {} reps",
            human_bytes(first.heap_bytes),
            first.live_bytes as f64 / f64::from(1 << 20),
            first.mutators,
            first.reps
        )?;
        writeln!(
            w,
            "{:<12} {:>22} {:>19} {:>19} {:>19} {:>17} {:>10} {:>8} {:>4}",
            "mode",
            "CPU ms",
            "CPU / COPY",
            "wall / COPY",
            "CPU / floor",
            "CPU ns/page",
            "compactor",
            "TLB/page",
            "ok"
        )?;
        let r = |s: &Option<remap_heap::bench::Spread>| {
            s.map_or_else(
                || "-".to_owned(),
                |s| format!("{:.2} ({:.2}..{:.2})", s.median, s.min, s.max),
            )
        };
        for c in &self.compaction {
            writeln!(
                w,
                "{:<12} {:>22} {:>19} {:>19} {:>19} {:>17} {:>9.0}% {:>8} {:>4}",
                c.mode,
                format!(
                    "{:.1} ({:.1}..{:.1})",
                    c.compaction_cpu_ms.median, c.compaction_cpu_ms.min, c.compaction_cpu_ms.max
                ),
                r(&c.vs_copy_cpu),
                r(&c.vs_copy_wall),
                r(&Some(c.vs_floor_cpu)),
                format!(
                    "{:.0} ({:.0}..{:.0})",
                    c.cpu_ns_per_page.median, c.cpu_ns_per_page.min, c.cpu_ns_per_page.max
                ),
                c.compactor_share * 100.0,
                c.tlb_per_page
                    .map_or_else(|| "-".to_owned(), |t| format!("{t:.2}")),
                if c.verified { "ok" } else { "FAIL" }
            )?;
        }
        Ok(())
    }

    /// The fault-service section of [`Report::write_table`]: a header and one row per figure, or
    /// one line saying that no fault-service method was selected.
    fn write_fault_table(&self, w: &mut impl Write) -> io::Result<()> {
        if self.faults.is_empty() {
            return writeln!(w, "fault service: no fault-service method selected");
        }
        writeln!(
            w,
            "fault service: every page of a {} region ({} pages) touched once by the mutators; \
             latency seen by the mutator per touch; faults = faults taken per run; faults/s = \
             faults taken / wall time from the first touch to the last completed touch across \
             all mutators; median of {} reps, with their (min..max)",
            human_bytes(self.config.fault_size_bytes),
            self.config.fault_size_bytes / self.config.machine.page_size as u64,
            self.config.fault_reps
        )?;
        writeln!(
            w,
            "{:<20} {:>8} {:>8} {:>7} {:>19} {:>19} {:>19} {:>12} {:>19} {:>12} {:>10} {:>4}",
            "method",
            "handlers",
            "mutators",
            "faults",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "faults/s",
            "spread faults/s",
            "cpu/fault us",
            "p50/sigbus",
            "ok"
        )?;
        for f in &self.faults {
            writeln!(
                w,
                "{:<20} {:>8} {:>8} {:>7} {:>19} {:>19} {:>19} {:>12.0} {:>19} {:>12} {:>10} {:>4}",
                f.method.name(),
                f.handlers,
                f.mutators,
                f.faults,
                micros(&f.p50_ns),
                micros(&f.p99_ns),
                micros(&f.p999_ns),
                f.faults_per_s.median,
                format!("{:.0}..{:.0}", f.faults_per_s.min, f.faults_per_s.max),
                micros(&f.handler_cpu_ns_per_fault),
                f.vs_sigbus_p50
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x")),
                if f.verified { "ok" } else { "FAIL" }
            )?;
        }
        Ok(())
    }
}

/// A latency spread in microseconds, compactly: the median, then the min..max range of the
/// repetitions (latency spreads are skewed, so not a symmetric `±`): `31.2 (29..140)`.
fn micros(ns: &Spread) -> String {
    let short = |us: f64| {
        if us >= 10.0 {
            format!("{us:.0}")
        } else {
            format!("{us:.1}")
        }
    };
    format!(
        "{:.1} ({}..{})",
        ns.median / 1e3,
        short(ns.min / 1e3),
        short(ns.max / 1e3)
    )
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"))
}

/// `4K`, `64K`, `2M`, `128M`, ... (binary units).
pub(crate) fn human_bytes(b: u64) -> String {
    const K: u64 = 1024;
    if b >= K * K * K && b % (K * K * K) == 0 {
        format!("{}G", b / (K * K * K))
    } else if b >= K * K && b % (K * K) == 0 {
        format!("{}M", b / (K * K))
    } else if b >= K && b % K == 0 {
        format!("{}K", b / K)
    } else {
        format!("{b}B")
    }
}
