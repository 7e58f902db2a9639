//! [`FaultServer`]: handler threads, each polling the userfaultfd and reading events into the
//! shared [`EventReader`], and its builder.

use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use uffd::{EventBuffer, Features};

use super::engine::{check_policy, panic_message, reader_features, EngineConfig};
use super::reader::EventReader;
use super::retry::{RetryClock, PARKED_FAULTS};
use super::{FailurePolicy, PageSource, PanicPolicy, ServerError, ServerStats};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
use crate::region::Region;

/// What the handler threads share besides the reader: the stop signal, the panic policy and
/// the first failure.
#[derive(Debug)]
struct ThreadControl {
    stop: OwnedFd,
    /// Set with the `stop` write, for spinning threads (which do not poll `stop`).
    stopping: AtomicBool,
    policy: PanicPolicy,
    failure: Mutex<Option<ServerError>>,
}

impl ThreadControl {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn signal_stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        // The eventfd counter only grows, so it stays readable and every thread sees the stop.
        if let Err(errno) = rustix::io::write(&self.stop, &1u64.to_ne_bytes()) {
            tracing::error!(%errno, "signalling the fault server to stop");
        }
    }

    fn fail(&self, err: ServerError) {
        let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(err);
        }
    }
}

/// Builds a [`FaultServer`]; see [`FaultServer::builder`].
#[derive(Debug)]
pub struct FaultServerBuilder<S> {
    region: Region,
    source: S,
    threads: usize,
    features: Option<Features>,
    policy: PanicPolicy,
    failure: FailurePolicy,
    kernel_faults: bool,
    events_per_read: Option<usize>,
    capabilities: Option<uffd::Capabilities>,
    spin: Duration,
    pin: bool,
}

impl<S: PageSource> FaultServerBuilder<S> {
    /// Number of handler threads (default 1, at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// The non-cooperative events to enable. Default: `EVENT_REMOVE | EVENT_UNMAP | EVENT_REMAP`,
    /// those the kernel supports. `EVENT_FORK` is opt-in (it needs CAP_SYS_PTRACE);
    /// `THREAD_ID` is added when supported. Asking for a feature the kernel lacks fails
    /// [`start`](Self::start).
    pub fn features(mut self, features: Features) -> Self {
        self.features = Some(features);
        self
    }

    /// What to do when the page source panics (default [`PanicPolicy::Abort`]).
    pub fn on_panic(mut self, policy: PanicPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// What to do when resolving a fault fails (default [`FailurePolicy::Zero`]); see the
    /// [module docs](super#failed-resolves). [`FailurePolicy::Poison`] needs `UFFDIO_POISON`
    /// (Linux 6.6): without it [`start`](Self::start) fails with [`ServerError::Unsupported`].
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// Also serve faults taken by the kernel on the process's behalf, for example a `read(2)`
    /// into the region (default `false`: user-mode faults only, and such a kernel access fails
    /// with EFAULT). Needs CAP_SYS_PTRACE or `vm.unprivileged_userfaultfd=1`, else
    /// [`start`](Self::start) fails with [`ServerError::Create`].
    pub fn kernel_faults(mut self, on: bool) -> Self {
        self.kernel_faults = on;
        self
    }

    /// Events read per `read(2)` by each thread. Default: 64 with one handler thread (one
    /// system call for a burst of faults), 1 with more: a thread that reads several faults at
    /// once serves them one after another while the other threads find nothing to read, which
    /// on this 2-CPU VM halved the faults per second of 2 handlers serving 2 mutators against a
    /// loop reading one event per call.
    pub fn events_per_read(mut self, n: usize) -> Self {
        self.events_per_read = Some(n.max(1));
        self
    }

    /// Adaptive waiting (default off: `Duration::ZERO`): after each batch of events, a handler
    /// thread keeps reading the userfaultfd without blocking for up to `spin` before it parks in
    /// `poll(2)`, starting over whenever a read finds events. A fault that arrives meanwhile is
    /// read at once, without the wake-up of a parked thread (a futex wake, a context switch and,
    /// on a VM, an IPI to another CPU: most of a handler-thread fault's latency). The price is
    /// CPU: each handler thread burns up to `spin` of CPU after its last fault, every time
    /// faults pause; and a spinning thread occupies a CPU that a faulting thread may need.
    ///
    /// Use it when faults come in bursts spaced closer than `spin` and latency matters more
    /// than a CPU (restoring a snapshot, a compactor's publication phase), with fewer handler
    /// threads than CPUs; leave it off when faults are rare (the spin is pure waste then) or
    /// the CPUs are all busy with the faulting threads (the spinner steals their time, and a
    /// [`SigbusServer`](super::SigbusServer) serves with no thread at all). A few tens of
    /// microseconds cover the gap between one fault and the next of a busy mutator. On a VM
    /// that halts idle vCPUs at once it cuts the wait to about a third (the faulting thread's
    /// own vCPU still halts while it waits), and one handler pinned per CPU
    /// ([`pin_cpus`](Self::pin_cpus)) does better; see
    /// [choosing a mode](super#choosing-a-mode-latency-against-cpu). Stopping the server
    /// interrupts a spin at once.
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, ZeroSource};
    ///
    /// let server = FaultServer::builder(Region::new(16 * 4096)?, ZeroSource)
    ///     .spin(std::time::Duration::from_micros(50))
    ///     .start()?;
    /// for p in 0..16 {
    ///     server.region().write_u8(p * 4096, 1);
    /// }
    /// assert_eq!(server.stats().served_zero, 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Pin handler thread `i` to the `i`-th CPU the process may run on (wrapping; default
    /// off). With as many handler threads as CPUs ([`threads`](Self::threads)), each CPU has a
    /// handler of its own that the scheduler never moves, so the thread woken for a fault can
    /// be the one on the faulting CPU and its caches stay warm; with fewer, the pinned CPUs
    /// take all the handling. One handler per CPU pays whether or not the faulting threads are
    /// pinned: on a 2-vCPU guest that halts idle vCPUs at once it served at 5.7-6.4 us p50
    /// where an unpinned handler took 60-70 us whenever it ran on the other CPU (see
    /// [choosing a mode](super#choosing-a-mode-latency-against-cpu)). With fewer handlers than
    /// CPUs it can cost: a pinned thread cannot move away from a CPU that a faulting thread
    /// also wants, nor follow the faulting thread to another. A failure to pin is logged and
    /// the thread runs unpinned.
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, ZeroSource};
    ///
    /// let cpus = std::thread::available_parallelism()?.get();
    /// let server = FaultServer::builder(Region::new(4096)?, ZeroSource)
    ///     .threads(cpus)
    ///     .pin_cpus(true)
    ///     .start()?;
    /// assert_eq!(server.region().read_u8(0), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_cpus(mut self, on: bool) -> Self {
        self.pin = on;
        self
    }

    /// Decide the configuration from these capabilities instead of probing the kernel: the
    /// default features and the checks of [`start`](Self::start) follow them. For exercising,
    /// on a new kernel, what a server does on an older one ([`uffd::Capabilities::without`]).
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, ZeroSource};
    ///
    /// let caps = uffd::Capabilities::probe()?.without(uffd::Features::EVENT_REMAP);
    /// let server = FaultServer::builder(Region::new(4096)?, ZeroSource).capabilities(caps).start()?;
    /// assert!(!server.features().contains(uffd::Features::EVENT_REMAP));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn capabilities(mut self, capabilities: uffd::Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    /// Creates the userfaultfd, registers the region and starts the handler threads.
    ///
    /// # Errors
    ///
    /// [`ServerError::Create`] (no userfaultfd, a missing feature, `EVENT_FORK` without the
    /// privilege), [`ServerError::Unsupported`] ([`FailurePolicy::Poison`] on a kernel without
    /// `UFFDIO_POISON`), [`ServerError::Register`], [`ServerError::Eventfd`], [`ServerError::Spawn`].
    pub fn start(self) -> Result<FaultServer<S>, ServerError> {
        let supported = match self.capabilities {
            Some(caps) => caps,
            None => uffd::Capabilities::probe()?,
        }
        .features();
        check_policy(self.failure, supported)?;
        let wanted = reader_features(self.features, supported);
        let config = EngineConfig {
            features: wanted,
            kernel_faults: self.kernel_faults,
            non_blocking: true,
            policy: self.failure,
        };
        let reader = Arc::new(EventReader::new(
            self.region,
            self.source,
            config,
            self.threads,
        )?);
        let stop = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(ServerError::Eventfd)?;
        let control = Arc::new(ThreadControl {
            stop,
            stopping: AtomicBool::new(false),
            policy: self.policy,
            failure: Mutex::new(None),
        });
        let server = FaultServer {
            reader,
            control,
            threads: Mutex::new(Vec::new()),
        };
        let (ready_tx, ready) = std::sync::mpsc::channel();
        for i in 0..self.threads {
            let reader = Arc::clone(&server.reader);
            let control = Arc::clone(&server.control);
            let cap = self
                .events_per_read
                .unwrap_or(if self.threads > 1 { 1 } else { 64 });
            let ready = ready_tx.clone();
            let waiting = Waiting {
                spin: self.spin,
                pin: self.pin,
            };
            let handle = std::thread::Builder::new()
                .name(format!("remap-fault-{i}"))
                .spawn(move || handler_thread(&reader, &control, i, cap, waiting, ready))
                .map_err(ServerError::Spawn)?;
            lock(&server.threads).push(handle);
        }
        drop(ready_tx);
        // Return only once every handler thread has started and allocated all it needs: a
        // thread's first allocations (the standard library's own, at thread start, included)
        // must not wait for a `fork()` that the caller starts right after this returns, since
        // that fork waits for a handler to read its event (see the fork notes on `PageSource`).
        // A thread that died first just ends the wait early.
        for _ in 0..self.threads {
            if ready.recv().is_err() {
                break;
            }
        }
        tracing::debug!(
            addr = server.reader.region().addr(),
            len = server.reader.region().len(),
            threads = self.threads,
            features = ?wanted,
            "fault server started"
        );
        Ok(server)
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// How one handler thread waits for events; see [`FaultServerBuilder::spin`] and
/// [`FaultServerBuilder::pin_cpus`].
#[derive(Debug, Clone, Copy)]
struct Waiting {
    spin: Duration,
    pin: bool,
}

/// Pins the calling thread to the `n`-th CPU (wrapping) of the process's allowed set.
fn pin_to_cpu(n: usize) {
    use rustix::thread::{sched_setaffinity, CpuSet};
    let Some(cpu) = crate::system::allowed_cpu(n) else {
        return;
    };
    let mut one = CpuSet::new();
    one.set(cpu);
    if let Err(errno) = sched_setaffinity(None, &one) {
        tracing::warn!(%errno, cpu, "pinning a fault handler thread");
    }
}

/// What the loop does after one step.
enum Next {
    /// Go on; `true` when the step read events.
    Go(bool),
    /// The thread ends (stop, failure or panic, already recorded).
    Exit,
}

/// A handler thread's own buffers and retry state.
struct Local {
    buf: EventBuffer,
    scratch: Vec<u8>,
    faults: Vec<uffd::Pagefault>,
    pending: Vec<uffd::Pagefault>,
    clock: RetryClock,
}

impl Local {
    /// One read of events (when `readable`) and the retry of parked faults, with the panic
    /// policy and error reporting around it.
    fn step<S: PageSource>(
        &mut self,
        reader: &EventReader<S>,
        control: &ThreadControl,
        readable: bool,
    ) -> Next {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut n = 0;
            if readable {
                n = reader.batch(
                    &mut self.buf,
                    &mut self.faults,
                    &mut self.pending,
                    &mut self.scratch,
                )?;
            }
            if !self.pending.is_empty() {
                // Once per generation right away; within one, after a doubling back-off (the
                // window around an event's read in which `mmap_changing` is still raised).
                self.clock.retried(reader.generation());
                reader.retry(&mut self.pending, &mut self.scratch);
            }
            Ok(n > 0)
        }));
        match outcome {
            Ok(Ok(read)) => Next::Go(read),
            Ok(Err(errno)) => {
                tracing::error!(%errno, "reading userfaultfd events");
                control.fail(ServerError::Handler { errno });
                Next::Exit
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(%message, "a page source panicked in a fault handler thread");
                match control.policy {
                    PanicPolicy::Abort => std::process::abort(),
                    PanicPolicy::UnregisterAndStop => {
                        reader.unregister();
                        control.fail(ServerError::HandlerPanicked { message });
                        control.signal_stop();
                        Next::Exit
                    }
                }
            }
        }
    }
}

fn handler_thread<S: PageSource>(
    reader: &EventReader<S>,
    control: &ThreadControl,
    me: usize,
    cap: usize,
    waiting: Waiting,
    ready: std::sync::mpsc::Sender<()>,
) {
    if waiting.pin {
        pin_to_cpu(me);
    }
    // Everything the loop needs is allocated here, once, before `start` returns: see the fork
    // notes on `PageSource`.
    let mut local = Local {
        buf: EventBuffer::new(cap),
        scratch: vec![0u8; reader.scratch_len()],
        faults: Vec::with_capacity(cap),
        pending: Vec::with_capacity(PARKED_FAULTS.max(cap)),
        clock: RetryClock::new(reader.generation()),
    };
    let waker = reader.waker(me);
    let _ = ready.send(());
    drop(ready);
    loop {
        // Adaptive waiting: before parking in poll, keep reading (non-blocking) for up to
        // `spin`, starting over whenever a read finds events. Not while faults are parked on
        // EAGAIN: their retry timing is the poll's.
        if !waiting.spin.is_zero() {
            let mut since = Instant::now();
            while local.pending.is_empty() && since.elapsed() < waiting.spin {
                if control.stopping() {
                    return;
                }
                match local.step(reader, control, true) {
                    Next::Exit => return,
                    Next::Go(true) => since = Instant::now(),
                    Next::Go(false) => std::hint::spin_loop(),
                }
            }
        }
        // A thread with faults parked on EAGAIN also waits for its waker (a new event
        // generation). It consumes the wake-up first, then looks at the generation: a bump
        // after this load writes the eventfd again, so the poll below cannot miss it. A thread
        // with nothing parked needs no wake-up but the userfaultfd's: it polls two fds and
        // spends no system call on the eventfd (what a minimal loop does; see `remap bench`).
        let parked = !local.pending.is_empty();
        if parked {
            let _ = rustix::io::read(waker, &mut [0u8; 8]);
        }
        let wait = if !parked {
            None
        } else if local.clock.new_generation(reader.generation()) {
            Some(Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })
        } else {
            Some(timespec(local.clock.backoff()))
        };
        let mut all = [
            PollFd::new(reader.uffd(), PollFlags::IN),
            PollFd::new(&control.stop, PollFlags::IN),
            PollFd::new(waker, PollFlags::IN),
        ];
        let fds = if parked { &mut all[..] } else { &mut all[..2] };
        match rustix::event::poll(fds, wait.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => {
                control.fail(ServerError::Handler { errno });
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        if fds[0]
            .revents()
            .intersects(PollFlags::ERR | PollFlags::NVAL)
        {
            control.fail(ServerError::Handler { errno: Errno::BADF });
            return;
        }
        if let Next::Exit = local.step(reader, control, fds[0].revents().contains(PollFlags::IN)) {
            return;
        }
    }
}

/// Handler threads serving the page faults of a [`Region`] it owns; see the
/// [module docs](super).
///
/// ```
/// use remap::region::Region;
/// use remap::server::{FaultServer, ZeroSource};
///
/// let server = FaultServer::builder(Region::new(8 * 4096)?, ZeroSource).threads(2).start()?;
/// let region = server.region();
/// region.write_u64(0, 7); // faults, served with a zero page, then written
/// assert_eq!(region.read_u64(0), 7);
/// assert_eq!(server.stats().served_zero, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FaultServer<S: PageSource> {
    reader: Arc<EventReader<S>>,
    control: Arc<ThreadControl>,
    /// Emptied by the first [`stop_serving`](FaultServer::stop_serving).
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: PageSource> FaultServer<S> {
    /// Starts building a server for `region` (moved in: the server owns it, so its threads never
    /// outlive the mapping) with pages from `source`.
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, PanicPolicy, ZeroSource};
    ///
    /// let server = FaultServer::builder(Region::new(4096)?, ZeroSource)
    ///     .threads(1)
    ///     .on_panic(PanicPolicy::UnregisterAndStop)
    ///     .start()?;
    /// assert_eq!(server.region().read_u8(0), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(region: Region, source: S) -> FaultServerBuilder<S> {
        FaultServerBuilder {
            region,
            source,
            threads: 1,
            features: None,
            policy: PanicPolicy::Abort,
            failure: FailurePolicy::Zero,
            kernel_faults: false,
            events_per_read: None,
            capabilities: None,
            spin: Duration::ZERO,
            pin: false,
        }
    }

    /// The served region. Touch it only through its accessors (no references into it exist).
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// assert_eq!(server.region().len(), 4096);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn region(&self) -> &Region {
        self.reader.region()
    }

    /// The page source (for example to give pages back to a [`MovePool`](super::MovePool)).
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// let _source: &remap::server::ZeroSource = server.source();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn source(&self) -> &S {
        &self.reader.engine.source
    }

    /// The features enabled on the server's userfaultfd.
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// let _ = server.features().contains(uffd::Features::EVENT_REMOVE);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn features(&self) -> Features {
        self.reader.uffd().features()
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// assert_eq!(server.stats().faults, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> ServerStats {
        self.reader.engine.counters.snapshot()
    }

    /// Whether the server still serves faults (false after a handler failed or panicked).
    ///
    /// ```
    /// # let server = remap::server::FaultServer::builder(
    /// #     remap::region::Region::new(4096)?, remap::server::ZeroSource).start()?;
    /// assert!(server.is_running());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.control
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
            && {
                let threads = lock(&self.threads);
                !threads.is_empty() && threads.iter().all(|t| !t.is_finished())
            }
    }

    /// Stops serving, without giving up the region: stops and joins the handler threads, then
    /// unregisters the region, which wakes every thread still blocked in a fault there (it
    /// retries its access and finds ordinary anonymous memory: a zero page where nothing was
    /// resolved). The region stays borrowed from the server ([`region`](Self::region)), so
    /// threads that borrowed it can finish their accesses; then [`stop`](Self::stop) or
    /// [`into_parts`](Self::into_parts) hands it back (and reports a handler's failure).
    /// Calling it again does nothing.
    ///
    /// This is the way to stop a server while other threads still touch its region: `stop`
    /// consumes the server, so it cannot be called while they borrow it, and the region must
    /// outlive every access to it.
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{Fault, FaultServer, PageSource, Resolution};
    ///
    /// /// Never resolves a fault: whoever touches the region waits until the server stops.
    /// struct Never;
    /// impl PageSource for Never {
    ///     fn resolve<'a>(&'a self, _: &Fault, _: &'a mut [u8]) -> Resolution<'a> {
    ///         Resolution::Leave
    ///     }
    /// }
    ///
    /// let server = FaultServer::builder(Region::new(4096)?, Never).start()?;
    /// std::thread::scope(|s| {
    ///     let region = server.region(); // borrowed by the toucher below
    ///     let toucher = s.spawn(move || region.read_u64(0)); // blocks in the fault
    ///     while server.stats().left == 0 {
    ///         std::thread::yield_now(); // until the fault was read (and left)
    ///     }
    ///     server.stop_serving(); // wakes the toucher: it reads a zero page
    ///     assert_eq!(toucher.join().unwrap(), 0);
    /// });
    /// let region = server.stop()?; // nobody borrows it any more
    /// assert_eq!(region.read_u64(0), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop_serving(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        if threads.is_empty() {
            return;
        }
        self.control.signal_stop();
        for thread in threads {
            if thread.join().is_err() {
                // The loop catches panics; only a panic in the catch path itself gets here.
                self.control.fail(ServerError::HandlerPanicked {
                    message: "handler thread died".to_owned(),
                });
            }
        }
        self.reader.unregister();
        tracing::debug!(stats = %self.stats(), "fault server stopped");
    }

    /// Stops the handler threads, unregisters the region (waking every thread still blocked in a
    /// fault there: it sees a zero page) and returns it, now ordinary memory. To stop while other
    /// threads still borrow the region, call [`stop_serving`](Self::stop_serving) first.
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, ZeroSource};
    ///
    /// let server = FaultServer::builder(Region::new(4096)?, ZeroSource).start()?;
    /// let region = server.stop()?;
    /// region.write_u8(0, 1); // no fault handling any more
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServerError::HandlerPanicked`] if the source panicked under
    /// [`PanicPolicy::UnregisterAndStop`], [`ServerError::Handler`] if a handler thread failed
    /// (the region is unmapped in both cases), [`ServerError::RegionLost`] if part of the region
    /// at its start was unmapped and someone else mapped memory there since (see the
    /// [module docs](super#shutdown): a region cut short before such a hole further in is
    /// returned as `Ok`).
    pub fn stop(self) -> Result<Region, ServerError> {
        self.into_parts().map(|(region, _)| region)
    }

    /// Stops as [`stop`](Self::stop) does and hands back the source too: a [`MovePool`]'s
    /// pages, say, to serve another region or to take back with
    /// [`MovePool::into_region`].
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, MovePool};
    ///
    /// let server = FaultServer::builder(Region::new(4 * 4096)?, MovePool::new(2)?).start()?;
    /// server.region().write_u8(0, 1); // a page moved in from the pool
    /// let (_region, pool) = server.into_parts()?;
    /// assert_eq!(pool.available(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`stop`](Self::stop) (the source is dropped then).
    ///
    /// [`MovePool`]: super::MovePool
    /// [`MovePool::into_region`]: super::MovePool::into_region
    pub fn into_parts(self) -> Result<(Region, S), ServerError> {
        self.stop_serving();
        if let Some(err) = self
            .control
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(err);
        }
        let reader = Arc::clone(&self.reader);
        drop(self);
        match Arc::try_unwrap(reader) {
            Ok(reader) => reader.into_parts(),
            Err(_) => unreachable!("every handler thread was joined"),
        }
    }
}

impl<S: PageSource> Drop for FaultServer<S> {
    fn drop(&mut self) {
        self.stop_serving();
    }
}
