//! The heap: objects in a [`Region`], bump allocated through per-thread buffers, reached only
//! through word accessors; mutators with their root sets; the safepoint that stops them.
//!
//! # Access without a read barrier
//!
//! Mutators hold [`ObjRef`]s, word indices into the heap region. A collection cycle stops every
//! mutator at a safepoint, rewrites their roots to the objects' new addresses and bumps the
//! heap's epoch before it lets them go: from then on every reference a mutator holds or loads is
//! a to-space address, final for the cycle. The to-space pages are filled by the engine; a
//! mutator touching one that is not published yet faults, and the fault publishes it (by a
//! handler thread or in the mutator's own SIGBUS handler). So the accessors are plain relaxed
//! word loads and stores; the page fault is the barrier. An [`ObjRef`] carries the epoch it was
//! loaded in, and every accessor checks it: a reference kept in a local across a safepoint (it
//! would point at the old address) panics instead of reading the wrong object.
//!
//! # Who may write what
//!
//! Any mutator may read any object. Writes are the workload's business; the checksum accounting
//! ([`crate::verify`]) needs each field to have one writer at a time, so the workloads partition
//! the objects among their mutators.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use remap::Region;
use remap_compact::Engine;

use crate::mark::SourceWords;
use crate::object::{
    field_term, header, header_shape, header_size, HEADER_WORDS, MAX_OBJECT_WORDS, RESERVED_WORDS,
};
use crate::shape::{DataWords, Shape, ShapeId, ShapeTable, FILLER};

/// Words a mutator claims from the shared bump pointer at a time (64 KiB).
const TLAB_WORDS: usize = 8192;

/// A reference to an object: its word index in the heap, and the epoch it is valid in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjRef {
    word: u64,
    epoch: u32,
}

impl ObjRef {
    /// The object's word index in the heap.
    pub fn word(self) -> u64 {
        self.word
    }
}

/// Why an allocation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The heap is full: time for a collection.
    #[error("the heap is full")]
    Full,
    /// A compaction is in progress; allocation reopens when the cycle ends.
    #[error("a compaction is in progress")]
    Compacting,
    /// The object would be larger than [`MAX_OBJECT_WORDS`] or the shape is unknown.
    #[error("no object of {shape} with {data} data words")]
    BadSize {
        /// The shape.
        shape: ShapeId,
        /// The data words asked for.
        data: usize,
    },
}

/// One interval in which a mutator made no progress of its own: parked at a safepoint, or
/// stalled in one fault on a page not yet published (serving it itself in its SIGBUS handler,
/// or waiting for a handler thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Start, in nanoseconds since the heap was created.
    pub start_ns: u64,
    /// Length in nanoseconds.
    pub len_ns: u64,
    /// Whether this was a safepoint park (else a fault).
    pub parked: bool,
}

/// What the collector sees of one mutator.
#[derive(Debug)]
pub(crate) struct MutatorShared {
    pub(crate) roots: Box<[AtomicU64]>,
    /// The wrapping sum of checksum changes this mutator's writes made since the last reset.
    pub(crate) delta: AtomicU64,
    pub(crate) stalls: Mutex<Vec<Stall>>,
    pub(crate) ops: AtomicU64,
    pub(crate) live: AtomicBool,
    /// The kernel id of the thread running the mutator (0 until it is bound), which is how the
    /// engine's fault stalls are told apart per mutator.
    pub(crate) thread: AtomicU32,
}

#[derive(Debug, Default)]
struct SafepointState {
    parked: usize,
    registered: usize,
}

#[derive(Debug)]
pub(crate) struct HeapInner {
    pub(crate) memory: HeapMemory,
    pub(crate) words: usize,
    /// The shared bump pointer (a word index): everything below is objects or fillers.
    pub(crate) top: AtomicUsize,
    /// Allocation stops at this word (a collection is due).
    pub(crate) limit: AtomicUsize,
    pub(crate) alloc_open: AtomicBool,
    pub(crate) next_id: AtomicU64,
    pub(crate) epoch: AtomicU32,
    pub(crate) shapes: Arc<ShapeTable>,
    pub(crate) mutators: Mutex<Vec<Arc<MutatorShared>>>,
    stop: AtomicBool,
    state: Mutex<SafepointState>,
    cv: Condvar,
    pub(crate) created: Instant,
}

/// Where a heap's words live: a plain region (compacted only by the stop-the-world backend), or
/// the region of a `remap-compact` [`Engine`] (which owns it, and compacts it while mutators run).
#[derive(Debug)]
pub enum HeapMemory {
    /// A region of our own.
    Region(Region),
    /// An engine's heap region.
    Engine(Engine),
}

impl HeapMemory {
    /// The region.
    #[inline]
    pub fn region(&self) -> &Region {
        match self {
            HeapMemory::Region(r) => r,
            HeapMemory::Engine(e) => e.heap(),
        }
    }

    /// The engine, if there is one.
    pub fn engine(&self) -> Option<&Engine> {
        match self {
            HeapMemory::Region(_) => None,
            HeapMemory::Engine(e) => Some(e),
        }
    }
}

impl From<Region> for HeapMemory {
    fn from(r: Region) -> Self {
        HeapMemory::Region(r)
    }
}

impl From<Engine> for HeapMemory {
    fn from(e: Engine) -> Self {
        HeapMemory::Engine(e)
    }
}

/// An object heap in one [`Region`]: create it, register mutators, collect.
#[derive(Debug, Clone)]
pub struct Heap {
    pub(crate) inner: Arc<HeapInner>,
}

impl SourceWords for Region {
    #[inline]
    fn read_word(&self, word: usize) -> u64 {
        self.read_u64(word * 8)
    }
}

impl Heap {
    /// A heap in `region` with the object shapes `shapes`.
    ///
    /// ```
    /// use remap_heap::{heap::Heap, shape::*};
    ///
    /// let mut shapes = ShapeTable::new();
    /// let cell = shapes.add(Shape { name: "cell", refs: vec![], data: DataWords::Fixed(2) });
    /// let heap = Heap::new(remap::Region::new(1 << 20)?, shapes);
    /// let mut m = heap.mutator(1);
    /// let obj = m.alloc(cell, 2).unwrap();
    /// m.write_data(obj, 1, 42);
    /// m.set_root(0, Some(obj));
    /// assert_eq!(m.read_data(m.root(0).unwrap(), 1), 42);
    /// # Ok::<(), remap::region::RegionError>(())
    /// ```
    pub fn new(memory: impl Into<HeapMemory>, shapes: ShapeTable) -> Heap {
        let memory = memory.into();
        let words = memory.region().len() / 8;
        Heap {
            inner: Arc::new(HeapInner {
                memory,
                words,
                top: AtomicUsize::new(RESERVED_WORDS),
                limit: AtomicUsize::new(words),
                alloc_open: AtomicBool::new(true),
                next_id: AtomicU64::new(1),
                epoch: AtomicU32::new(0),
                shapes: Arc::new(shapes),
                mutators: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
                state: Mutex::new(SafepointState::default()),
                cv: Condvar::new(),
                created: Instant::now(),
            }),
        }
    }

    /// The heap's region (to-space during a cycle).
    #[inline]
    pub fn region(&self) -> &Region {
        self.inner.memory.region()
    }

    /// The engine compacting the heap, if any.
    pub fn engine(&self) -> Option<&Engine> {
        self.inner.memory.engine()
    }

    /// The shape table.
    pub fn shapes(&self) -> &Arc<ShapeTable> {
        &self.inner.shapes
    }

    /// The heap's size in words.
    pub fn words(&self) -> usize {
        self.inner.words
    }

    /// The allocation top in words: everything below is objects and fillers.
    pub fn top(&self) -> usize {
        self.inner.top.load(Ordering::Acquire)
    }

    /// Stops allocation at word `limit` (a collection is due when it is reached).
    pub fn set_limit(&self, limit: usize) {
        self.inner
            .limit
            .store(limit.min(self.inner.words), Ordering::Release);
    }

    /// Whether allocation has reached the limit (or failed for lack of room).
    pub fn is_full(&self) -> bool {
        self.top() + TLAB_WORDS > self.inner.limit.load(Ordering::Acquire)
    }

    /// The time since the heap was created (the clock of [`Stall`]s).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.inner.created.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Registers a mutator with `roots` root slots.
    pub fn mutator(&self, roots: usize) -> Mutator {
        let shared = Arc::new(MutatorShared {
            roots: (0..roots).map(|_| AtomicU64::new(0)).collect(),
            delta: AtomicU64::new(0),
            stalls: Mutex::new(Vec::new()),
            ops: AtomicU64::new(0),
            live: AtomicBool::new(true),
            thread: AtomicU32::new(0),
        });
        self.inner
            .mutators
            .lock()
            .unwrap()
            .push(Arc::clone(&shared));
        self.lock_state().registered += 1;
        Mutator {
            heap: self.clone(),
            shared,
            epoch: self.inner.epoch.load(Ordering::Acquire),
            tlab: 0..0,
            local_stalls: Vec::new(),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, SafepointState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every registered mutator at its next safepoint; they stay parked until the guard
    /// drops. Returns how long it took them all to arrive.
    pub fn stop_the_world(&self) -> (StopTheWorld<'_>, Duration) {
        let started = Instant::now();
        self.inner.stop.store(true, Ordering::SeqCst);
        let mut st = self.lock_state();
        while st.parked < st.registered {
            st = self.inner.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        drop(st);
        (StopTheWorld { heap: self }, started.elapsed())
    }

    /// The roots of every registered mutator (mutators must be stopped).
    pub(crate) fn roots(&self) -> Vec<u64> {
        let ms = self.inner.mutators.lock().unwrap();
        ms.iter()
            .filter(|m| m.live.load(Ordering::Acquire))
            .flat_map(|m| m.roots.iter().map(|r| r.load(Ordering::Acquire)))
            .collect()
    }

    /// Rewrites every root through `forward` (mutators must be stopped).
    pub(crate) fn forward_roots(&self, forward: impl Fn(u64) -> u64) {
        let ms = self.inner.mutators.lock().unwrap();
        for m in ms.iter() {
            for r in m.roots.iter() {
                let v = r.load(Ordering::Acquire);
                if v != 0 {
                    r.store(forward(v), Ordering::Release);
                }
            }
        }
    }

    /// The wrapping sum of the checksum changes of every mutator's writes since the last reset;
    /// resets them (mutators must be stopped).
    pub(crate) fn take_deltas(&self) -> u64 {
        let ms = self.inner.mutators.lock().unwrap();
        ms.iter().fold(0u64, |acc, m| {
            acc.wrapping_add(m.delta.swap(0, Ordering::AcqRel))
        })
    }

    /// Every live mutator's safepoint parks since the last call (mutators must be stopped), one
    /// list each, with the mutator's thread id (0 if unbound).
    pub(crate) fn take_stalls(&self) -> Vec<(u32, Vec<Stall>)> {
        let ms = self.inner.mutators.lock().unwrap();
        ms.iter()
            .filter(|m| m.live.load(Ordering::Acquire))
            .map(|m| {
                (
                    m.thread.load(Ordering::Acquire),
                    std::mem::take(&mut *m.stalls.lock().unwrap()),
                )
            })
            .collect()
    }

    /// `t` on the heap's clock (nanoseconds since the heap was created; 0 before).
    pub(crate) fn clock_ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.inner.created).as_nanos())
            .unwrap_or(u64::MAX)
    }

    /// Operations completed by all mutators so far.
    pub fn ops(&self) -> u64 {
        let ms = self.inner.mutators.lock().unwrap();
        ms.iter().map(|m| m.ops.load(Ordering::Relaxed)).sum()
    }

    /// The number of live mutators.
    pub fn mutator_count(&self) -> usize {
        self.lock_state().registered
    }
}

/// Mutators are parked while this lives; dropping it lets them go.
#[derive(Debug)]
pub struct StopTheWorld<'h> {
    heap: &'h Heap,
}

impl Drop for StopTheWorld<'_> {
    fn drop(&mut self) {
        self.heap.inner.stop.store(false, Ordering::SeqCst);
        let _st = self.heap.lock_state();
        self.heap.inner.cv.notify_all();
    }
}

/// A mutator thread's handle: its root set, its allocation buffer, its accessors.
///
/// Between two calls of [`safepoint`](Self::safepoint) the mutator may keep [`ObjRef`]s in
/// locals; across one it must keep them in its roots (a collection may move everything).
#[derive(Debug)]
pub struct Mutator {
    heap: Heap,
    shared: Arc<MutatorShared>,
    epoch: u32,
    tlab: std::ops::Range<usize>,
    local_stalls: Vec<Stall>,
}

impl Drop for Mutator {
    fn drop(&mut self) {
        self.retire_tlab();
        self.flush_stalls();
        self.shared.live.store(false, Ordering::Release);
        for r in self.shared.roots.iter() {
            r.store(0, Ordering::Release);
        }
        let mut st = self.heap.lock_state();
        st.registered -= 1;
        self.heap.inner.cv.notify_all();
    }
}

impl Mutator {
    /// The heap.
    pub fn heap(&self) -> &Heap {
        &self.heap
    }

    #[inline]
    fn region(&self) -> &Region {
        self.heap.inner.memory.region()
    }

    #[inline]
    fn load(&self, word: usize) -> u64 {
        self.region().read_u64(word * 8)
    }

    #[inline]
    fn store(&self, word: usize, v: u64) {
        self.region().write_u64(word * 8, v)
    }

    /// Parks here if a collection asked for it; returns whether it parked (then every local
    /// [`ObjRef`] is stale: reload from the roots).
    #[inline]
    pub fn safepoint(&mut self) -> bool {
        if !self.heap.inner.stop.load(Ordering::Acquire) {
            return false;
        }
        self.park();
        true
    }

    #[cold]
    fn park(&mut self) {
        let start = self.heap.now_ns();
        self.retire_tlab();
        self.flush_stalls();
        let inner = &self.heap.inner;
        let mut st = self.heap.lock_state();
        st.parked += 1;
        inner.cv.notify_all();
        while inner.stop.load(Ordering::SeqCst) {
            st = inner.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.parked -= 1;
        drop(st);
        self.epoch = inner.epoch.load(Ordering::Acquire);
        let end = self.heap.now_ns();
        self.local_stalls.push(Stall {
            start_ns: start,
            len_ns: end - start,
            parked: true,
        });
    }

    /// Counts one operation of the workload.
    #[inline]
    pub fn op_done(&mut self) {
        self.shared.ops.fetch_add(1, Ordering::Relaxed);
    }

    /// Binds the mutator to the calling thread (call it on the thread that runs it): the
    /// engine reports fault stalls by kernel thread id, and this is how the heap knows which
    /// are this mutator's (for minimum mutator utilisation).
    pub fn bind_to_current_thread(&mut self) {
        let tid = rustix::thread::gettid()
            .as_raw_nonzero()
            .get()
            .unsigned_abs();
        self.shared.thread.store(tid, Ordering::Release);
    }

    fn flush_stalls(&mut self) {
        if !self.local_stalls.is_empty() {
            let mut s = self.shared.stalls.lock().unwrap();
            s.append(&mut self.local_stalls);
        }
    }

    /// Fills the unused rest of the allocation buffer with a filler object, so the heap stays
    /// walkable.
    fn retire_tlab(&mut self) {
        let tlab = std::mem::replace(&mut self.tlab, 0..0);
        if tlab.is_empty() {
            return;
        }
        let mut at = tlab.start;
        while at < tlab.end {
            let n = (tlab.end - at).min(MAX_OBJECT_WORDS);
            self.store(at, header(FILLER, n));
            self.store(at + 1, 0);
            at += n;
        }
    }

    #[inline]
    fn check(&self, obj: ObjRef) -> usize {
        assert_eq!(
            obj.epoch, self.epoch,
            "object reference {:#x} kept across a safepoint",
            obj.word
        );
        obj.word as usize
    }

    #[inline]
    fn make(&self, word: u64) -> Option<ObjRef> {
        (word != 0).then_some(ObjRef {
            word,
            epoch: self.epoch,
        })
    }

    fn shape_of_header(&self, h: u64) -> &Shape {
        let id = header_shape(h);
        self.heap
            .inner
            .shapes
            .get(id)
            .unwrap_or_else(|| panic!("corrupt header {h:#x}: no {id}"))
    }

    /// Allocates an object of `shape` with `data` data words; references null, data zero.
    ///
    /// # Errors
    ///
    /// [`AllocError::Full`] when the heap reached its limit (collect, then retry),
    /// [`AllocError::Compacting`] during a compaction.
    pub fn alloc(&mut self, shape: ShapeId, data: usize) -> Result<ObjRef, AllocError> {
        let inner = &self.heap.inner;
        let s = inner
            .shapes
            .get(shape)
            .ok_or(AllocError::BadSize { shape, data })?;
        let size = s.size_for(data);
        if !s.allows_size(size) || shape == FILLER {
            return Err(AllocError::BadSize { shape, data });
        }
        if !inner.alloc_open.load(Ordering::Acquire) {
            return Err(AllocError::Compacting);
        }
        if self.tlab.len() < size {
            self.refill_tlab(size)?;
        }
        let at = self.tlab.start;
        self.tlab.start += size;
        let id = self.heap.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.store(at, header(shape, size));
        self.store(at + 1, id);
        for w in at + HEADER_WORDS..at + size {
            self.store(w, 0);
        }
        Ok(ObjRef {
            word: at as u64,
            epoch: self.epoch,
        })
    }

    #[cold]
    fn refill_tlab(&mut self, size: usize) -> Result<(), AllocError> {
        self.retire_tlab();
        let inner = &self.heap.inner;
        {
            let limit = inner.limit.load(Ordering::Acquire);
            let want = TLAB_WORDS.max(size);
            let mut top = inner.top.load(Ordering::Acquire);
            loop {
                if top + want > limit {
                    return Err(AllocError::Full);
                }
                match inner.top.compare_exchange_weak(
                    top,
                    top + want,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(t) => top = t,
                }
            }
            self.tlab = top..top + want;
        }
        Ok(())
    }

    /// Root slot `i`.
    pub fn root(&self, i: usize) -> Option<ObjRef> {
        self.make(self.shared.roots[i].load(Ordering::Acquire))
    }

    /// Sets root slot `i`.
    pub fn set_root(&mut self, i: usize, obj: Option<ObjRef>) {
        let w = obj.map_or(0, |o| {
            self.check(o);
            o.word
        });
        self.shared.roots[i].store(w, Ordering::Release);
    }

    /// The number of root slots.
    pub fn root_count(&self) -> usize {
        self.shared.roots.len()
    }

    /// The object's shape.
    pub fn shape(&self, obj: ObjRef) -> ShapeId {
        header_shape(self.load(self.check(obj)))
    }

    /// The object's identity (unique for the run).
    pub fn id(&self, obj: ObjRef) -> u64 {
        self.load(self.check(obj) + 1)
    }

    /// The number of data words of the object.
    pub fn data_len(&self, obj: ObjRef) -> usize {
        let h = self.load(self.check(obj));
        let s = self.shape_of_header(h);
        match s.data {
            DataWords::Fixed(n) => n as usize,
            DataWords::AtLeast(_) => header_size(h) - HEADER_WORDS - s.ref_count(),
        }
    }

    /// Field `f` (0-based, after the header) of `obj`, with its bounds checked against the
    /// header; returns the word index and whether it is a reference.
    #[inline]
    fn field(&self, obj: ObjRef, f: usize, want_ref: bool) -> usize {
        let w = self.check(obj);
        let h = self.load(w);
        let s = self.shape_of_header(h);
        let refs = s.ref_count();
        if want_ref {
            assert!(
                f < refs,
                "reference field {f} of a {} ({refs} refs)",
                s.name
            );
        } else {
            assert!(
                HEADER_WORDS + refs + f < header_size(h),
                "data word {f} of a {} of {} words",
                s.name,
                header_size(h)
            );
        }
        w + HEADER_WORDS + if want_ref { f } else { refs + f }
    }

    /// Reference field `f` of `obj`.
    pub fn read_ref(&self, obj: ObjRef, f: usize) -> Option<ObjRef> {
        let at = self.field(obj, f, true);
        self.make(self.load(at))
    }

    /// Sets reference field `f` of `obj` (accounting the checksum change).
    pub fn write_ref(&mut self, obj: ObjRef, f: usize, target: Option<ObjRef>) {
        let at = self.field(obj, f, true);
        let id = self.load(at - HEADER_WORDS - f + 1);
        let old = self.load(at);
        let old_id = if old == 0 {
            0
        } else {
            self.load(old as usize + 1)
        };
        let (new, new_id) = match target {
            Some(t) => (t.word, self.load(self.check(t) + 1)),
            None => (0, 0),
        };
        self.store(at, new);
        self.account(field_term(id, f, new_id).wrapping_sub(field_term(id, f, old_id)));
    }

    /// Data word `i` of `obj`.
    pub fn read_data(&self, obj: ObjRef, i: usize) -> u64 {
        self.load(self.field(obj, i, false))
    }

    /// Sets data word `i` of `obj` (accounting the checksum change).
    pub fn write_data(&mut self, obj: ObjRef, i: usize, v: u64) {
        let at = self.field(obj, i, false);
        let w = obj.word as usize;
        let id = self.load(w + 1);
        let refs = at - w - HEADER_WORDS - i;
        let old = self.load(at);
        self.store(at, v);
        self.account(field_term(id, refs + i, v).wrapping_sub(field_term(id, refs + i, old)));
    }

    #[inline]
    fn account(&self, d: u64) {
        let a = &self.shared.delta;
        a.store(a.load(Ordering::Relaxed).wrapping_add(d), Ordering::Relaxed);
    }
}
