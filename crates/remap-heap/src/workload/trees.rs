//! Binary trees in the style of the classic GC benchmark: long-lived perfect trees per mutator,
//! short-lived temporary trees that become garbage at once, and subtrees of the long-lived trees
//! replaced by new ones (so survivors end up interleaved with garbage).

use crate::heap::{AllocError, Mutator, ObjRef};
use crate::object::mix;
use crate::shape::{DataWords, Shape, ShapeId, ShapeTable};
use crate::workload::{corrupt, NewWorkload, Rng, Workload, WorkloadError};

const NAME: &str = "trees";
/// Nodes: left, right, then a value and `mix(value)`.
const NODE_WORDS: usize = 6;
/// The depth of the subtrees replaced and of the temporary trees.
const SUB: u32 = 4;

/// The binary-trees workload.
#[derive(Debug)]
pub struct Trees {
    node: ShapeId,
    depth: u32,
    trees: usize,
}

/// A mutator's state: nothing but counters.
#[derive(Debug, Default)]
pub struct TreesState {
    /// Nodes checked.
    pub checked: u64,
}

impl NewWorkload for Trees {
    fn new(shapes: &mut ShapeTable, live_words: usize) -> Self {
        let node = shapes.next_id();
        shapes.add(Shape {
            name: "tree-node",
            refs: vec![Some(node), Some(node)],
            data: DataWords::Fixed(2),
        });
        let words = |d: u32| ((1usize << (d + 1)) - 1) * NODE_WORDS;
        let mut depth = 12;
        while depth > SUB + 1 && words(depth) * 4 > live_words {
            depth -= 1;
        }
        let trees = (live_words / words(depth)).max(1);
        Trees { node, depth, trees }
    }
}

impl Trees {
    fn build(&self, m: &mut Mutator, depth: u32, rng: &mut Rng) -> Result<ObjRef, AllocError> {
        let n = m.alloc(self.node, 2)?;
        let v = rng.next_u64();
        m.write_data(n, 0, v);
        m.write_data(n, 1, mix(v));
        if depth > 0 {
            let l = self.build(m, depth - 1, rng)?;
            let r = self.build(m, depth - 1, rng)?;
            m.write_ref(n, 0, Some(l));
            m.write_ref(n, 1, Some(r));
        }
        Ok(n)
    }

    fn check(&self, m: &Mutator, n: ObjRef, st: &mut TreesState) -> Result<(), WorkloadError> {
        st.checked += 1;
        if m.shape(n) != self.node {
            return Err(corrupt(
                NAME,
                format!("object {:#x} is not a tree node", n.word()),
            ));
        }
        let (v, h) = (m.read_data(n, 0), m.read_data(n, 1));
        if h != mix(v) {
            return Err(corrupt(
                NAME,
                format!(
                    "node {:#x} (id {}): value {v:#x} with check {h:#x}",
                    n.word(),
                    m.id(n)
                ),
            ));
        }
        Ok(())
    }

    /// Sums a temporary tree, checking every node.
    fn walk(&self, m: &Mutator, n: ObjRef, st: &mut TreesState) -> Result<usize, WorkloadError> {
        self.check(m, n, st)?;
        let mut count = 1;
        for f in 0..2 {
            if let Some(c) = m.read_ref(n, f) {
                count += self.walk(m, c, st)?;
            }
        }
        Ok(count)
    }

    /// Walks a random path from the root of tree `t` down `levels` levels, checking each node.
    fn descend(
        &self,
        m: &Mutator,
        t: usize,
        levels: u32,
        rng: &mut Rng,
        st: &mut TreesState,
    ) -> Result<ObjRef, WorkloadError> {
        let mut n = crate::workload::some(NAME, m.root(t), "tree root")?;
        self.check(m, n, st)?;
        for level in 0..levels {
            n = crate::workload::some(
                NAME,
                m.read_ref(n, rng.below(2)),
                &format!("child at level {level}"),
            )?;
            self.check(m, n, st)?;
        }
        Ok(n)
    }

    fn in_place(
        &self,
        m: &mut Mutator,
        st: &mut TreesState,
        rng: &mut Rng,
    ) -> Result<(), WorkloadError> {
        let t = rng.below(self.trees);
        let leaf = self.descend(m, t, self.depth, rng, st)?;
        match rng.below(4) {
            0 | 1 => {
                let v = rng.next_u64();
                m.write_data(leaf, 0, v);
                m.write_data(leaf, 1, mix(v));
            }
            2 => {
                // Swap the children of a node on a random path (the tree stays perfect).
                let n = self.descend(m, t, rng.below(self.depth as usize) as u32, rng, st)?;
                let (l, r) = (m.read_ref(n, 0), m.read_ref(n, 1));
                m.write_ref(n, 0, r);
                m.write_ref(n, 1, l);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Workload for Trees {
    type State = TreesState;

    fn name(&self) -> &'static str {
        NAME
    }

    fn roots(&self) -> usize {
        self.trees
    }

    fn setup(&self, m: &mut Mutator, rng: &mut Rng) -> Result<TreesState, WorkloadError> {
        for t in 0..self.trees {
            let root = self
                .build(m, self.depth, rng)
                .map_err(|source| WorkloadError::Setup {
                    workload: NAME,
                    source,
                })?;
            m.set_root(t, Some(root));
        }
        Ok(TreesState::default())
    }

    fn step(
        &self,
        m: &mut Mutator,
        st: &mut TreesState,
        rng: &mut Rng,
    ) -> Result<(), WorkloadError> {
        if rng.below(2) == 0 {
            // A temporary tree: built, walked, dropped.
            match self.build(m, SUB + 1, rng) {
                Ok(tmp) => {
                    let n = self.walk(m, tmp, st)?;
                    if n != (1 << (SUB + 2)) - 1 {
                        return Err(corrupt(NAME, format!("temporary tree has {n} nodes")));
                    }
                    return Ok(());
                }
                Err(_) => return self.in_place(m, st, rng),
            }
        }
        // Replace a subtree of depth SUB of a long-lived tree.
        let t = rng.below(self.trees);
        let parent = self.descend(m, t, self.depth - SUB - 1, rng, st)?;
        match self.build(m, SUB, rng) {
            Ok(sub) => {
                m.write_ref(parent, rng.below(2), Some(sub));
                Ok(())
            }
            Err(_) => self.in_place(m, st, rng),
        }
    }
}
