//! A graph traversal: per mutator, nodes (a label that is a function of the node's identity, a
//! visit counter) each with an edge list of four references to other nodes. Traversals follow
//! random edges, check every label and count visits; rewiring replaces a node's edge list by a
//! new one (the old becomes garbage), or rewrites it in place during compaction; traversals that
//! allocate record their path in a scratch object that is dropped at once.

use crate::heap::{Mutator, ObjRef};
use crate::object::mix;
use crate::shape::{DataWords, Shape, ShapeId, ShapeTable};
use crate::workload::{corrupt, some, NewWorkload, Rng, Workload, WorkloadError};

const NAME: &str = "graph";
const SLOTS_PER_SEGMENT: usize = 62;
const DEGREE: usize = 4;
const STEPS: usize = 16;
/// Words per node: the node (6) and its edge list (6), plus a share of a segment.
const WORDS_PER_NODE: usize = 13;

/// The graph workload.
#[derive(Debug)]
pub struct Graph {
    segment: ShapeId,
    node: ShapeId,
    edges: ShapeId,
    scratch: ShapeId,
    nodes: usize,
}

/// A mutator's counters.
#[derive(Debug, Default)]
pub struct GraphState {
    /// Nodes visited.
    pub visited: u64,
}

impl NewWorkload for Graph {
    fn new(shapes: &mut ShapeTable, live_words: usize) -> Self {
        let segment = shapes.next_id();
        let node = ShapeId(segment.0 + 1);
        let edges = ShapeId(segment.0 + 2);
        shapes.add(Shape {
            name: "graph-segment",
            refs: vec![Some(node); SLOTS_PER_SEGMENT],
            data: DataWords::Fixed(0),
        });
        shapes.add(Shape {
            name: "graph-node",
            refs: vec![Some(edges)],
            data: DataWords::Fixed(2),
        });
        shapes.add(Shape {
            name: "graph-edges",
            refs: vec![Some(node); DEGREE],
            data: DataWords::Fixed(0),
        });
        let scratch = shapes.add(Shape {
            name: "graph-scratch",
            refs: vec![],
            data: DataWords::AtLeast(0),
        });
        Graph {
            segment,
            node,
            edges,
            scratch,
            nodes: (live_words / WORDS_PER_NODE).max(8),
        }
    }
}

impl Graph {
    fn segments(&self) -> usize {
        self.nodes.div_ceil(SLOTS_PER_SEGMENT)
    }

    fn slot(&self, m: &Mutator, i: usize) -> Result<ObjRef, WorkloadError> {
        let seg = some(NAME, m.root(i / SLOTS_PER_SEGMENT), "segment")?;
        some(NAME, m.read_ref(seg, i % SLOTS_PER_SEGMENT), "node slot")
    }

    fn check(&self, m: &Mutator, n: ObjRef) -> Result<ObjRef, WorkloadError> {
        if m.shape(n) != self.node {
            return Err(corrupt(
                NAME,
                format!("edge reaches a non-node at {:#x}", n.word()),
            ));
        }
        let label = m.read_data(n, 0);
        if label != mix(m.id(n)) {
            return Err(corrupt(
                NAME,
                format!("node {:#x} (id {}) has label {label:#x}", n.word(), m.id(n)),
            ));
        }
        let e = some(NAME, m.read_ref(n, 0), "edge list")?;
        if m.shape(e) != self.edges {
            return Err(corrupt(
                NAME,
                format!("node {:#x} has a non-edge-list", n.word()),
            ));
        }
        Ok(e)
    }

    /// Follows `STEPS` random edges from a random node; returns the identities visited.
    fn traverse(
        &self,
        m: &mut Mutator,
        rng: &mut Rng,
        st: &mut GraphState,
        path: &mut [u64; STEPS],
    ) -> Result<ObjRef, WorkloadError> {
        let mut n = self.slot(m, rng.below(self.nodes))?;
        for p in path.iter_mut() {
            let e = self.check(m, n)?;
            *p = m.id(n);
            let visits = m.read_data(n, 1);
            m.write_data(n, 1, visits + 1);
            st.visited += 1;
            n = some(NAME, m.read_ref(e, rng.below(DEGREE)), "edge")?;
        }
        Ok(n)
    }
}

impl Workload for Graph {
    type State = GraphState;

    fn name(&self) -> &'static str {
        NAME
    }

    fn roots(&self) -> usize {
        self.segments()
    }

    fn setup(&self, m: &mut Mutator, rng: &mut Rng) -> Result<GraphState, WorkloadError> {
        let err = |source| WorkloadError::Setup {
            workload: NAME,
            source,
        };
        for s in 0..self.segments() {
            let seg = m.alloc(self.segment, 0).map_err(err)?;
            m.set_root(s, Some(seg));
        }
        for i in 0..self.nodes {
            let n = m.alloc(self.node, 2).map_err(err)?;
            let label = mix(m.id(n));
            m.write_data(n, 0, label);
            let e = m.alloc(self.edges, 0).map_err(err)?;
            m.write_ref(n, 0, Some(e));
            let seg = m.root(i / SLOTS_PER_SEGMENT).expect("set above");
            m.write_ref(seg, i % SLOTS_PER_SEGMENT, Some(n));
        }
        for i in 0..self.nodes {
            let n = self.slot(m, i)?;
            let e = self.check(m, n)?;
            for d in 0..DEGREE {
                let t = self.slot(m, rng.below(self.nodes))?;
                m.write_ref(e, d, Some(t));
            }
        }
        Ok(GraphState::default())
    }

    fn step(
        &self,
        m: &mut Mutator,
        st: &mut GraphState,
        rng: &mut Rng,
    ) -> Result<(), WorkloadError> {
        let mut path = [0u64; STEPS];
        if rng.below(2) == 0 {
            self.traverse(m, rng, st, &mut path)?;
            if let Ok(s) = m.alloc(self.scratch, STEPS) {
                for (i, id) in path.iter().enumerate() {
                    m.write_data(s, i, *id);
                }
            }
            return Ok(());
        }
        // Rewire one edge of a random node: a new edge list when allocation is open.
        let n = self.slot(m, rng.below(self.nodes))?;
        let old = self.check(m, n)?;
        let target = self.slot(m, rng.below(self.nodes))?;
        let d = rng.below(DEGREE);
        match m.alloc(self.edges, 0) {
            Ok(new) => {
                for k in 0..DEGREE {
                    let t = if k == d {
                        Some(target)
                    } else {
                        m.read_ref(old, k)
                    };
                    m.write_ref(new, k, t);
                }
                m.write_ref(n, 0, Some(new));
            }
            Err(_) => m.write_ref(old, d, Some(target)),
        }
        Ok(())
    }
}
