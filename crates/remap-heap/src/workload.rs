//! Mutator workloads: each builds a live object graph of a given size, then runs operations that
//! allocate (making garbage) when allocation is open, and otherwise read, write and follow
//! references (during compaction). Each checks what it reads: an object whose contents do not
//! match what the workload wrote is a [`WorkloadError`].
//!
//! Each mutator owns its part of the graph (its own trees, table, or graph) and writes only
//! there; that is what the checksum accounting of [`crate::verify`] needs.

use crate::heap::{AllocError, Mutator, ObjRef};
use crate::shape::ShapeTable;

pub mod graph;
pub mod kv;
pub mod trees;

/// A small, fast, seeded generator (splitmix64): workloads are reproducible from the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::object::mix(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What a workload found wrong in what it read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// An object read back different from what was written.
    #[error("{workload}: {what}")]
    Corrupt {
        /// The workload.
        workload: &'static str,
        /// What was wrong.
        what: String,
    },
    /// The live structure does not fit the heap.
    #[error("{workload}: the live structure does not fit the heap ({0})", .source)]
    Setup {
        /// The workload.
        workload: &'static str,
        /// The allocation failure.
        source: AllocError,
    },
}

/// One workload: its shapes, per-mutator state and operations.
pub trait Workload: Send + Sync + 'static {
    /// The state a mutator keeps outside the heap (counts, key lists; never an [`ObjRef`]).
    type State: Send;

    /// The workload's name.
    fn name(&self) -> &'static str;

    /// Root slots each mutator needs.
    fn roots(&self) -> usize;

    /// Builds this mutator's part of the live graph (about the live words the workload was
    /// created for) and stores it in its roots.
    ///
    /// # Errors
    ///
    /// [`WorkloadError::Setup`] when the heap is too small.
    fn setup(&self, m: &mut Mutator, rng: &mut Rng) -> Result<Self::State, WorkloadError>;

    /// One operation: allocating if the heap allows, else reading and writing in place.
    ///
    /// # Errors
    ///
    /// [`WorkloadError::Corrupt`] when something read back wrong.
    fn step(
        &self,
        m: &mut Mutator,
        st: &mut Self::State,
        rng: &mut Rng,
    ) -> Result<(), WorkloadError>;
}

/// The workloads by name (the `--workload` of `remap compact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// [`trees::Trees`].
    Trees,
    /// [`kv::Cache`].
    Kv,
    /// [`graph::Graph`].
    Graph,
}

impl WorkloadKind {
    /// Every workload.
    pub const ALL: [WorkloadKind; 3] = [WorkloadKind::Trees, WorkloadKind::Kv, WorkloadKind::Graph];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Trees => "trees",
            WorkloadKind::Kv => "kv",
            WorkloadKind::Graph => "graph",
        }
    }
}

/// Shapes plus a workload sized for `live_words` per mutator.
pub(crate) fn corrupt(workload: &'static str, what: String) -> WorkloadError {
    WorkloadError::Corrupt { workload, what }
}

/// The object in `r`, or a corruption error naming `what`.
pub(crate) fn some(
    workload: &'static str,
    r: Option<ObjRef>,
    what: &str,
) -> Result<ObjRef, WorkloadError> {
    r.ok_or_else(|| corrupt(workload, format!("null {what}")))
}

/// A registered-shapes constructor, so the runner can build any workload the same way.
pub trait NewWorkload: Workload + Sized {
    /// Registers the workload's shapes in `shapes` and sizes it for `live_words` per mutator.
    fn new(shapes: &mut ShapeTable, live_words: usize) -> Self;
}
