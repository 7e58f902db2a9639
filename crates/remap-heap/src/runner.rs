//! Runs a workload on a heap with real mutator threads, and collection cycles between them.
//!
//! ```no_run
//! use remap_heap::collector::{CycleOptions, StopTheWorld};
//! use remap_heap::runner::{Session, SessionConfig};
//! use remap_heap::workload::trees::Trees;
//!
//! let config = SessionConfig { heap_bytes: 16 << 20, ..SessionConfig::default() };
//! let session = Session::<Trees>::start(&config, remap::Region::new(config.heap_bytes)?)?;
//! session.wait_full(std::time::Duration::from_secs(30));
//! let report = session.cycle(&mut StopTheWorld, CycleOptions::default())?;
//! assert!(report.verified.is_ok());
//! assert!(session.finish().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::collector::{collect, Backend, CycleError, CycleOptions, CycleReport};
use crate::heap::{Heap, HeapMemory};
use crate::shape::ShapeTable;
use crate::workload::{NewWorkload, Rng, WorkloadError};

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The heap's size in bytes (the region must be this long).
    pub heap_bytes: usize,
    /// The fraction of the heap the live structure takes when the heap is full.
    pub live_ratio: f64,
    /// Mutator threads.
    pub mutators: usize,
    /// The seed of every mutator's generator.
    pub seed: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heap_bytes: 64 << 20,
            live_ratio: 0.5,
            mutators: 2,
            seed: 42,
        }
    }
}

/// A heap with a workload's mutator threads running on it.
#[derive(Debug)]
pub struct Session<W: NewWorkload> {
    heap: Heap,
    workload: Arc<W>,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<WorkloadError>>>,
    threads: Vec<JoinHandle<()>>,
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A mutator could not build its part of the live structure.
    #[error(transparent)]
    Setup(#[from] WorkloadError),
    /// A mutator thread panicked while building its part of the live structure (the number
    /// is how many mutators had finished theirs).
    #[error("a mutator panicked while building its part of the live structure ({0} had finished theirs)")]
    SetupPanicked(usize),
}

/// Where the mutators wait for each other after building their live parts: every one arrives,
/// or one fails (an error or a panic) and the others stop waiting. A `Barrier` would leave them
/// waiting for ever for a mutator that panicked.
#[derive(Debug)]
struct StartGate {
    mutators: usize,
    /// (arrived, failed)
    state: Mutex<(usize, bool)>,
    cv: std::sync::Condvar,
}

impl StartGate {
    fn new(mutators: usize) -> Self {
        StartGate {
            mutators,
            state: Mutex::new((0, false)),
            cv: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arrives and waits for the others: `true` when all arrived, `false` when one failed.
    fn arrive(&self) -> bool {
        let mut st = self.lock();
        st.0 += 1;
        self.cv.notify_all();
        while st.0 < self.mutators && !st.1 {
            st = self
                .cv
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !st.1
    }

    fn fail(&self) {
        self.lock().1 = true;
        self.cv.notify_all();
    }
}

/// Fails the gate when dropped armed: a mutator thread that unwinds out of its set-up.
struct FailOnUnwind<'a>(&'a StartGate, bool);

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.fail();
        }
    }
}

impl<W: NewWorkload> Session<W> {
    /// Builds the heap in `region`, registers the mutators, lets each build its part of the live
    /// structure and start running.
    ///
    /// # Errors
    ///
    /// [`SessionError::Setup`] if the live structure does not fit.
    pub fn start(
        config: &SessionConfig,
        memory: impl Into<HeapMemory>,
    ) -> Result<Session<W>, SessionError> {
        let memory = memory.into();
        let mutators = config.mutators.max(1);
        let heap_words = memory.region().len() / 8;
        // Headroom for fillers and the last allocation buffers.
        let live_words = (heap_words as f64 * config.live_ratio * 0.97) as usize / mutators;
        let mut shapes = ShapeTable::new();
        let workload = Arc::new(W::new(&mut shapes, live_words));
        let heap = Heap::new(memory, shapes);
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let (setup_tx, setup_rx) = std::sync::mpsc::channel();
        // No mutator makes garbage before every mutator has built its live part: otherwise a
        // fast one could fill the heap while another is still building.
        let gate = Arc::new(StartGate::new(mutators));
        for i in 0..mutators {
            let mut m = heap.mutator(workload.roots());
            let (workload, stop, ready, errors, setup_tx) = (
                Arc::clone(&workload),
                Arc::clone(&stop),
                Arc::clone(&ready),
                Arc::clone(&errors),
                setup_tx.clone(),
            );
            let gate = Arc::clone(&gate);
            let seed = crate::object::mix(config.seed ^ (i as u64) << 32);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("mutator-{i}"))
                    .spawn(move || {
                        m.bind_to_current_thread();
                        let mut rng = Rng::new(seed);
                        let mut armed = FailOnUnwind(&gate, true);
                        let mut st = match workload.setup(&mut m, &mut rng) {
                            Ok(st) => st,
                            Err(e) => {
                                let _ = setup_tx.send(Err(e));
                                return; // `armed` fails the gate
                            }
                        };
                        armed.1 = false;
                        drop(armed);
                        let _ = setup_tx.send(Ok(()));
                        drop(setup_tx);
                        if !gate.arrive() {
                            return;
                        }
                        ready.fetch_add(1, Ordering::AcqRel);
                        while !stop.load(Ordering::Acquire) {
                            m.safepoint();
                            if let Err(e) = workload.step(&mut m, &mut st, &mut rng) {
                                tracing::error!(%e, "mutator {i} stops");
                                errors.lock().unwrap().push(e);
                                return;
                            }
                            m.op_done();
                        }
                    })
                    .expect("spawning a mutator thread"),
            );
        }
        drop(setup_tx);
        let session = Session {
            heap,
            workload,
            stop,
            ready,
            errors,
            threads,
        };
        // Every mutator sends one result, or drops its sender unwinding (a panic): fewer
        // results than mutators means one panicked.
        let mut ok = 0;
        for r in setup_rx.iter().take(mutators) {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    session.finish();
                    return Err(SessionError::Setup(e));
                }
            }
        }
        if ok < mutators {
            session.finish();
            return Err(SessionError::SetupPanicked(ok));
        }
        Ok(session)
    }

    /// The heap.
    pub fn heap(&self) -> &Heap {
        &self.heap
    }

    /// The workload.
    pub fn workload(&self) -> &W {
        &self.workload
    }

    /// Waits until the mutators filled the heap (or `timeout`); returns whether it is full.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.heap.is_full() {
            if Instant::now() > deadline || self.failed() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Whether a mutator found something wrong.
    pub fn failed(&self) -> bool {
        !self.errors.lock().unwrap().is_empty()
    }

    /// Runs one collection cycle with `backend` while the mutators run.
    ///
    /// # Errors
    ///
    /// The backend's failure.
    pub fn cycle<B: Backend>(
        &self,
        backend: &mut B,
        opts: CycleOptions,
    ) -> Result<CycleReport<B::Stats>, CycleError<B::Error>> {
        collect(&self.heap, backend, opts)
    }

    /// Stops the mutators and returns what they found wrong.
    pub fn finish(self) -> Vec<WorkloadError> {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            let _ = t.join();
        }
        let _ = self.ready.load(Ordering::Acquire);
        std::mem::take(&mut *self.errors.lock().unwrap())
    }
}
