//! [`Engine`] (one per heap) and [`Cycle`] (one compaction, from flip to finish).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use remap::{Region, Thp};
use uffd::{Features, RegisterMode, Uffd};

use crate::compactor::{Compactor, SignalSafeCompactor};
use crate::config::{EngineBuilder, EngineConfig, FlipMethod, Publication};
use crate::cycle::{Shared, SharedParts};
use crate::error::CompactError;
use crate::handler::Handlers;
use crate::raw::{self, Mapping, SigbusRegistration};
use crate::stats::{thread_cpu_time, CycleStats};

/// A compaction engine for one heap: owns the heap's [`Region`] (the to-space the program keeps
/// using) and runs compaction cycles on it, one at a time, as often as the runtime likes.
///
/// See the [crate docs](crate) for the protocol and a complete example.
#[derive(Debug)]
pub struct Engine {
    heap: Arc<Region>,
    config: EngineConfig,
    staging: Arc<Mapping>,
    fault_bufs: Arc<Mapping>,
    running: AtomicBool,
    stopped: AtomicBool,
    cycles: AtomicU64,
    /// The from-space of a failed cycle, kept mapped (its pages are the only copy of what was
    /// not published) for as long as the engine lives.
    kept: std::sync::Mutex<Vec<Arc<Mapping>>>,
}

impl Engine {
    /// A builder for an engine over `heap` (with the defaults of [`EngineConfig`]).
    pub fn builder(heap: Region) -> EngineBuilder {
        EngineBuilder::new(heap)
    }

    /// An engine over `heap` with the default configuration.
    ///
    /// # Errors
    ///
    /// As [`EngineBuilder::build`].
    pub fn new(heap: Region) -> Result<Self, CompactError> {
        Self::builder(heap).build()
    }

    pub(crate) fn from_builder(builder: EngineBuilder) -> Result<Self, CompactError> {
        let EngineBuilder { region, config } = builder;
        let needs_move = config.publication != Publication::Copy || config.flip == FlipMethod::Move;
        let probe = Uffd::new()?;
        if needs_move && !probe.supports_move() {
            return Err(CompactError::NoMove);
        }
        let page = region.page_size();
        let staging = Mapping::new(config.batch_pages * page, region.addr(), region.thp(), true)?;
        let fault_bufs = Mapping::new(config.fault_buffers * page, 0, Thp::NoHuge, true)?;
        Ok(Engine {
            heap: Arc::new(region),
            config,
            staging: Arc::new(staging),
            fault_bufs: Arc::new(fault_bufs),
            running: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            cycles: AtomicU64::new(0),
            kept: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The heap: read and write it from any thread, during a cycle too (a first touch of a page
    /// not yet published faults and is resolved by the engine).
    pub fn heap(&self) -> &Region {
        &self.heap
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Cycles started so far.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// Gives the heap back.
    ///
    /// # Errors
    ///
    /// [`CompactError::CycleRunning`] (with the engine dropped) if a [`Cycle`] was leaked with
    /// `mem::forget`, so its threads may still use the heap: it is then leaked too.
    pub fn into_region(self) -> Result<Region, CompactError> {
        Arc::try_unwrap(self.heap).map_err(|heap| {
            std::mem::forget(heap);
            CompactError::CycleRunning
        })
    }

    /// Starts a cycle with **handler threads** serving mutator faults: the flip. Call it with the
    /// mutators stopped; when it returns they may run again (the heap reads as before: each first
    /// touch of a page faults and gets the page's compacted contents), and the runtime calls
    /// [`Cycle::compact`] on the thread that should do the compaction.
    ///
    /// What happens, in order: the plan is checked and each from-space page's readers counted
    /// ([`CycleStats::setup`]); the cycle's userfaultfd is created and its handler threads
    /// started; then the flip proper ([`CycleStats::flip_pause`]): the heap is registered for
    /// MISSING faults and emptied into a fresh from-space ([`FlipMethod`]).
    ///
    /// # Errors
    ///
    /// [`CompactError::CycleRunning`] if a cycle is running, [`CompactError::Stopped`] after a
    /// failed cycle, [`CompactError::Plan`] for a plan that does not fit the heap, and the
    /// errors of creating the userfaultfd, registering, mapping and flipping. On error nothing
    /// changed: the heap holds its contents, unregistered.
    pub fn flip<C: Compactor>(&self, compactor: Arc<C>) -> Result<Cycle<'_, C>, CompactError> {
        self.start(compactor, None)
    }

    /// Starts a cycle in **SIGBUS mode**: a mutator that touches a page not yet published gets
    /// SIGBUS and, in its signal handler, fills and publishes the page itself (ART's way; no
    /// handler thread, no wake-up). So the compactor must be a [`SignalSafeCompactor`].
    ///
    /// No userfaultfd events are enabled in this mode (nothing reads them): do not `munmap` or
    /// `mremap` the heap during the cycle; `MADV_DONTNEED` is fine.
    ///
    /// # Errors
    ///
    /// As [`flip`](Self::flip), plus [`CompactError::Sigbus`] if the handler cannot be installed
    /// or every SIGBUS slot (8 per process) is taken.
    pub fn flip_sigbus<C: SignalSafeCompactor>(
        &self,
        compactor: Arc<C>,
    ) -> Result<Cycle<'_, C>, CompactError> {
        self.start(compactor, Some(register_sigbus::<C>))
    }

    /// Runs a whole cycle with nothing else running: [`flip`](Self::flip), then
    /// [`compact`](Cycle::compact).
    ///
    /// # Errors
    ///
    /// As [`flip`](Self::flip) and [`compact`](Cycle::compact).
    pub fn run<C: Compactor>(&self, compactor: Arc<C>) -> Result<CycleStats, CompactError> {
        self.flip(compactor)?.compact()
    }

    fn start<C: Compactor>(
        &self,
        compactor: Arc<C>,
        sigbus: Option<SigbusStarter<C>>,
    ) -> Result<Cycle<'_, C>, CompactError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(CompactError::Stopped);
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(CompactError::CycleRunning);
        }
        let started = self.start_inner(compactor, sigbus);
        if started.is_err() {
            self.running.store(false, Ordering::Release);
        }
        started
    }

    fn start_inner<C: Compactor>(
        &self,
        compactor: Arc<C>,
        sigbus: Option<SigbusStarter<C>>,
    ) -> Result<Cycle<'_, C>, CompactError> {
        let begin = Instant::now();
        let tlb_before = if self.config.count_tlb {
            tlb_shootdowns()
        } else {
            None
        };
        let heap = &self.heap;
        let from = Mapping::new(heap.len(), heap.addr(), heap.thp(), heap.dontfork())?;
        // THREAD_ID: each fault event names its thread, so that stalls are known per mutator.
        let features = if sigbus.is_some() {
            Features::SIGBUS
        } else {
            Features::EVENT_REMOVE | Features::THREAD_ID
        };
        let uffd = create_uffd(features)?;
        let shared = Arc::new(Shared::new(SharedParts {
            compactor,
            uffd,
            heap: Arc::clone(heap),
            from: Arc::new(from),
            staging: Arc::clone(&self.staging),
            fault_bufs: Arc::clone(&self.fault_bufs),
            publication: self.config.publication,
            batch: self.config.batch_pages,
            fault_buffers: self.config.fault_buffers,
            reserve: self.config.reserve_pages,
            release_chunk: self.config.release_chunk,
        })?);
        let (handlers, sigbus) = match sigbus {
            Some(register) => (None, Some(register(&shared)?)),
            None => (
                Some(Handlers::start(&shared, self.config.handler_threads)?),
                None,
            ),
        };
        let setup = begin.elapsed();

        // The flip proper: register first, so no page is ever neither here nor there.
        let pause = Instant::now();
        heap.all_pages()
            .register(&shared.uffd, RegisterMode::MISSING)?;
        if let Err(e) = self.empty_heap(&shared) {
            let _ = heap.all_pages().unregister(&shared.uffd);
            return Err(e);
        }
        let flip_pause = pause.elapsed();
        let cycle = self.cycles.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(cycle, pages = shared.pages, ?flip_pause, ?setup, "flipped");
        Ok(Cycle {
            engine: self,
            shared,
            handlers,
            sigbus,
            begin,
            setup,
            flip_pause,
            tlb_before,
            cycle,
            done: false,
            compactor_time: crate::stats::CompactorTime::default(),
        })
    }

    /// Moves the heap's contents to from-space, by the configured [`FlipMethod`].
    fn empty_heap<C: Compactor>(&self, shared: &Shared<C>) -> Result<(), CompactError> {
        let heap = &self.heap;
        match self.config.flip {
            FlipMethod::Mremap => raw::flip_mremap(heap, &shared.from),
            FlipMethod::Move => {
                let from = &shared.from;
                let from_ptr = from.addr() as *mut u8;
                shared
                    .uffd
                    .register(from_ptr, from.len(), RegisterMode::MISSING)?;
                let moved = raw::move_out_all(&shared.uffd, from, heap);
                let _ = shared.uffd.unregister(from_ptr, from.len());
                if moved.is_err() {
                    // Nothing lost: move what already left back into the (registered) heap, the
                    // whole range, since the kernel may have moved more than it counted.
                    let back = raw::move_back(&shared.uffd, heap, from, heap.len());
                    if let Err(e) = back {
                        tracing::error!(error = %e, "moving the heap back after a failed MOVE flip");
                        self.kept
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(Arc::clone(&shared.from));
                    }
                }
                moved.map(drop).map_err(|error| CompactError::Publish {
                    op: crate::error::PublishOp::Move,
                    page: error.done() / heap.page_size(),
                    pages: heap.pages(),
                    error,
                })
            }
        }
    }
}

type SigbusStarter<C> = fn(&Arc<Shared<C>>) -> Result<SigbusRegistration, CompactError>;

fn register_sigbus<C: SignalSafeCompactor>(
    shared: &Arc<Shared<C>>,
) -> Result<SigbusRegistration, CompactError> {
    let target: Arc<dyn raw::SigbusTarget> = Arc::clone(shared) as Arc<dyn raw::SigbusTarget>;
    raw::register_sigbus(
        shared.heap.addr(),
        shared.heap.addr() + shared.heap.len(),
        target,
    )
}

/// The cycle's userfaultfd: non-blocking; kernel-mode faults too where permitted (so a system
/// call that touches an unpublished page waits for it instead of failing with EFAULT).
fn create_uffd(features: Features) -> Result<Uffd, CompactError> {
    let builder = Uffd::builder().non_blocking(true).features(features);
    match builder.kernel_faults(true).create() {
        Ok(uffd) => Ok(uffd),
        Err(_) => Ok(builder.kernel_faults(false).create()?),
    }
}

/// One compaction cycle, from the flip ([`Engine::flip`]) to its end ([`Cycle::compact`]).
///
/// While it lives, mutators use the heap as usual ([`Engine::heap`]). Dropping it without
/// calling `compact` compacts anyway (a cycle cannot be abandoned: its pages live in from-space
/// until published) and logs any error.
#[derive(Debug)]
pub struct Cycle<'e, C: Compactor> {
    engine: &'e Engine,
    shared: Arc<Shared<C>>,
    handlers: Option<Handlers>,
    sigbus: Option<SigbusRegistration>,
    begin: Instant,
    setup: Duration,
    flip_pause: Duration,
    tlb_before: Option<u64>,
    cycle: u64,
    done: bool,
    compactor_time: crate::stats::CompactorTime,
}

impl<C: Compactor> Cycle<'_, C> {
    /// The cycle's shared state, for the engine's own unit tests.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared<C>> {
        &self.shared
    }

    /// The compactor this cycle fills pages with.
    pub fn compactor(&self) -> &C {
        &self.shared.compactor
    }

    /// The heap (the same as [`Engine::heap`]).
    pub fn heap(&self) -> &Region {
        &self.shared.heap
    }

    /// How long the flip proper took (mutators must have been stopped for it).
    pub fn flip_pause(&self) -> Duration {
        self.flip_pause
    }

    /// To-space pages published so far (a snapshot; counts every page's state word).
    pub fn pages_mapped(&self) -> usize {
        self.shared.mapped()
    }

    /// Runs the compaction thread on the calling thread until the cycle is finished: every page
    /// filled (by this thread, or by mutators' faults) and published, the heap unregistered (it
    /// is ordinary memory again), handler threads stopped, from-space given back. Returns the
    /// cycle's statistics.
    ///
    /// # Errors
    ///
    /// [`CompactError::Publish`] if a publication failed for good (the COPY fallback failed
    /// too): the heap is unregistered (mutators waiting on unpublished pages wake to zero-fill),
    /// from-space stays mapped, and the engine refuses further cycles
    /// ([`CompactError::Stopped`]). [`CompactError::Handler`] if a handler thread failed.
    pub fn compact(mut self) -> Result<CycleStats, CompactError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<CycleStats, CompactError> {
        self.done = true;
        let shared = &self.shared;
        let wall = Instant::now();
        let cpu = thread_cpu_time();
        let faults_before = thread_minor_faults();
        let mut time = crate::stats::CompactorTime::default();
        let ok = shared.compact(&mut time);
        if ok {
            let mut clock = crate::stats::PhaseClock::start();
            shared.release_surplus();
            clock.lap(&mut time.release);
        }
        let compaction_cpu = thread_cpu_time().saturating_sub(cpu);
        let compaction_wall = wall.elapsed();
        time.minor_faults = thread_minor_faults()
            .zip(faults_before)
            .map(|(after, before)| after.saturating_sub(before));
        self.compactor_time = time;

        // Every page is mapped (or the cycle failed): the heap is ordinary memory again.
        shared.finished.store(true, Ordering::Release);
        let unregistered = shared
            .uffd
            .unregister(shared.heap.as_ptr(), shared.heap.len());
        let handler_error = self.handlers.take().and_then(Handlers::stop);
        drop(self.sigbus.take());
        // Buffers the fallbacks left populated, and the Copy publication's buffers, go back.
        let _ = self.shared.staging.dontneed(0, self.shared.staging.len());
        let _ = self
            .shared
            .fault_bufs
            .dontneed(0, self.shared.fault_bufs.len());
        if let Some(error) = shared.failure.error() {
            self.engine
                .kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Arc::clone(&shared.from));
            self.engine.stopped.store(true, Ordering::Release);
            self.engine.running.store(false, Ordering::Release);
            tracing::error!(%error, "compaction cycle failed");
            return Err(error);
        }
        self.engine.running.store(false, Ordering::Release);
        unregistered?;
        if let Some(error) = handler_error {
            return Err(error);
        }
        let tlb_after = if self.tlb_before.is_some() {
            tlb_shootdowns()
        } else {
            None
        };
        Ok(self.stats(compaction_wall, compaction_cpu, tlb_after))
    }

    fn stats(
        &self,
        compaction_wall: Duration,
        compaction_cpu: Duration,
        tlb_after: Option<u64>,
    ) -> CycleStats {
        let c = self.shared.counters.snapshot();
        // 1 ns to one hour, 3 significant figures; a longer stall saturates.
        let mut stall_ns = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("valid histogram bounds");
        let mut fault_spans = Vec::new();
        for (start, ns, thread) in self.shared.stall_samples() {
            stall_ns.saturating_record(ns.max(1));
            fault_spans.push(crate::stats::FaultSpan {
                start: self.shared.began + Duration::from_nanos(start),
                len: Duration::from_nanos(ns),
                thread: (thread != 0).then_some(thread),
            });
        }
        CycleStats {
            cycle: self.cycle,
            publication: self.shared.publication,
            flip_method: self.engine.config.flip,
            sigbus: self.was_sigbus(),
            pages: self.shared.pages,
            flip_pause: self.flip_pause,
            setup: self.setup,
            compaction_wall,
            compaction_cpu,
            cycle_wall: self.begin.elapsed(),
            by_compactor: c.by_compactor,
            by_handlers: c.by_handlers,
            by_mutators: c.by_mutators,
            published_move: c.published_move,
            published_copy: c.published_copy,
            busy_fallbacks: c.busy_fallbacks,
            error_fallbacks: c.error_fallbacks,
            zero_pages: c.zero_pages,
            ioctls: c.ioctls,
            runs: c.runs,
            pmd_runs: c.pmd_runs,
            recycled_buffers: c.recycled_buffers,
            fresh_buffers: c.fresh_buffers,
            races: c.races,
            misreported_moves: c.misreported_moves,
            eagain_retries: c.eagain_retries,
            events: c.events,
            faults: c.faults,
            released_bytes: c.released_bytes,
            release_calls: c.release_calls,
            stall_ns,
            fault_spans,
            compactor_time: self.compactor_time,
            tlb_shootdowns: self
                .tlb_before
                .zip(tlb_after)
                .map(|(a, b)| b.saturating_sub(a)),
        }
    }

    fn was_sigbus(&self) -> bool {
        self.shared.uffd.features().contains(Features::SIGBUS)
    }
}

impl<C: Compactor> Drop for Cycle<'_, C> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(error) = self.finish() {
                tracing::error!(%error, "compaction cycle dropped without compact() failed");
            }
        }
    }
}

/// This thread's minor page faults so far (field 10 of `/proc/thread-self/stat`), when readable.
fn thread_minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

/// The sum over CPUs of the `TLB` line of `/proc/interrupts` (x86: "TLB shootdowns").
pub(crate) fn tlb_shootdowns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("TLB:"))?;
    let counts = line.trim_start().trim_start_matches("TLB:");
    Some(
        counts
            .split_whitespace()
            .map_while(|w| w.parse::<u64>().ok())
            .sum(),
    )
}
