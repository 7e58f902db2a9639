//! The exhaustive explorer: breadth-first search over interleavings with state hashing and an
//! optional preemption bound. Breadth-first order makes the first trace found for each invariant a
//! shortest one (fewest atomic steps).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::config::{Config, Expect, Expected};
use crate::invariant::{Invariant, Violation};
use crate::state::{thread_name, Role, State};
use crate::step::{blocked_on, initial_state, step, Ctx};
use crate::weak_memory::{weak_memory_check, WeakMemoryReport, DEFAULT_LOOM_PREEMPTIONS};

/// Bounds of one exploration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Bounds {
    /// Preemption bound (a switch away from a thread that could still run); `None` explores every
    /// interleaving of the finite model.
    pub max_preemptions: Option<u8>,
    /// Stop (result marked incomplete) after this many distinct states.
    pub max_states: usize,
    /// loom preemption bound for the weak-memory check of configurations with
    /// [`Config::weak_memory`](crate::Config::weak_memory).
    pub loom_preemptions: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_preemptions: None,
            max_states: 4_000_000,
            loom_preemptions: DEFAULT_LOOM_PREEMPTIONS,
        }
    }
}

/// Which checker, under which memory model, found a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checker {
    /// The exhaustive explorer ([`explore()`]): sequential consistency, shortest traces.
    Explorer,
    /// The loom model ([`weak_memory`](crate::weak_memory)): C11 `Relaxed`/Acquire/Release.
    Loom,
}

impl Checker {
    /// The memory model the checker assumes: `"sc"` or `"wm"` (weak memory).
    pub fn memory_model(self) -> &'static str {
        match self {
            Checker::Explorer => "sc",
            Checker::Loom => "wm",
        }
    }
}

/// One step of a counterexample trace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TraceStep {
    /// 1-based position in the interleaving.
    pub n: usize,
    /// Thread letter (A walker, B mover, C munmap, E mover back, G GUP).
    pub thread: &'static str,
    /// What the thread is.
    pub role: Role,
    /// The step, in kernel terms.
    pub step: String,
    /// Shared state it changed, as `field: old -> new`.
    pub changes: Vec<String>,
}

/// A shortest interleaving that ends in a violation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Trace {
    /// The steps, in order; the last one violates.
    pub steps: Vec<TraceStep>,
    /// What the last step violated.
    pub violations: Vec<Violation>,
    /// The checker that produced the trace (loom traces are a log of one C11 execution: the
    /// values each thread read and wrote, in schedule order; not necessarily shortest).
    pub checker: Checker,
    /// How to reproduce the trace (loom: execution number and replay hint).
    pub note: Option<String>,
}

/// Outcome of one invariant in one configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// No violation in the explored space.
    Holds,
    /// A violation was found.
    Broken,
}

/// Result of one invariant in one configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InvariantResult {
    /// The invariant.
    pub invariant: Invariant,
    /// Its number (1..=9).
    pub number: u8,
    /// Kernel function(s) it checks.
    pub kernel_function: &'static str,
    /// Expected outcome.
    pub expected: Expect,
    /// Actual outcome: broken when any checker found a violation.
    pub actual: Outcome,
    /// Outcome under the SC explorer.
    pub sc: Outcome,
    /// Outcome under loom (weak memory); `None` when loom did not run or does not check this
    /// invariant.
    pub wm: Option<Outcome>,
    /// The checker that found the violation shown in `trace` (the explorer when both did).
    pub found_by: Option<Checker>,
    /// Whether actual matches expected (`NotApplicable` always matches).
    pub matches: bool,
    /// Counterexample when broken: the explorer's shortest trace, else loom's execution log.
    pub trace: Option<Trace>,
}

/// The serde-serializable report of one configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The configuration.
    pub config: Config,
    /// Bounds used.
    pub bounds: Bounds,
    /// Distinct states visited.
    pub states: usize,
    /// Transitions executed.
    pub transitions: usize,
    /// Longest interleaving explored (steps).
    pub max_depth: usize,
    /// Whether the whole bounded space was explored (false when `max_states` cut it short).
    pub complete: bool,
    /// Wall-clock time of the exploration, in milliseconds.
    pub elapsed_ms: u128,
    /// Per invariant, in `docs/rmap-protocol.md` section 4 order.
    pub invariants: Vec<InvariantResult>,
    /// The loom check, for configurations with [`Config::weak_memory`].
    pub weak_memory: Option<WeakMemoryReport>,
    /// Every invariant matches the expected table and the exploration (and the loom check, when
    /// it runs) was complete.
    pub matches_expected: bool,
}

/// Fast non-cryptographic hasher for states (FxHash-style).
#[derive(Default, Clone, Copy, Debug)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

struct Node {
    parent: u32,
    tid: u8,
}

/// Explores every interleaving of `cfg` within `bounds` and returns, per invariant, whether it
/// holds and a shortest counterexample if not.
pub fn explore(cfg: &Config, bounds: &Bounds) -> Exploration {
    let start = Instant::now();
    let init = initial_state(cfg);
    let mut seen: FxMap<State, ()> = FxMap::default();
    let mut nodes: Vec<Node> = vec![Node {
        parent: u32::MAX,
        tid: 0,
    }];
    let mut depth: Vec<u32> = vec![0];
    let mut queue: VecDeque<(State, u32)> = VecDeque::new();
    seen.insert(init.clone(), ());
    queue.push_back((init.clone(), 0));
    let mut found: Vec<(Invariant, u32, u8)> = Vec::new();
    let mut found_bits: u16 = 0;
    let mut deadlock: Option<u32> = None;
    let mut transitions = 0usize;
    let mut complete = true;
    let mut max_depth = 0u32;
    let nthreads = init.threads.len();

    while let Some((st, id)) = queue.pop_front() {
        let d = depth[id as usize];
        max_depth = max_depth.max(d);
        // Successors of every thread that can run.
        let mut succ: Vec<(usize, State, Ctx)> = Vec::with_capacity(nthreads);
        for tid in 0..nthreads {
            let mut s = st.clone();
            let mut ctx = Ctx::default();
            if step(&mut s, tid, cfg, &mut ctx) {
                succ.push((tid, s, ctx));
            }
        }
        if succ.is_empty() {
            if !st.all_done() && deadlock.is_none() {
                deadlock = Some(id);
            }
            continue;
        }
        let last = usize::from(st.last);
        let last_enabled = succ.iter().any(|(t, _, _)| *t == last);
        for (tid, mut s, ctx) in succ {
            transitions += 1;
            let preempt = last_enabled && tid != last;
            let pre = st.preemptions + u8::from(preempt);
            if let Some(max) = bounds.max_preemptions {
                if pre > max {
                    continue;
                }
                s.preemptions = pre;
                s.last = u8::try_from(tid).unwrap_or(u8::MAX);
            } else {
                s.preemptions = 0;
                s.last = u8::MAX;
            }
            let tid8 = u8::try_from(tid).unwrap_or(u8::MAX);
            if !ctx.violations.is_empty() {
                for v in &ctx.violations {
                    if found_bits & v.invariant.bit() == 0 {
                        found_bits |= v.invariant.bit();
                        found.push((v.invariant, id, tid8));
                    }
                }
                // Keep exploring past the violation: later steps may break other invariants
                // (a missed walk after a wrong return, a leaked lock after a wrong unlock).
            }
            if let Entry::Vacant(e) = seen.entry(s) {
                let nid = u32::try_from(nodes.len()).expect("fewer than 2^32 states");
                nodes.push(Node {
                    parent: id,
                    tid: tid8,
                });
                depth.push(d + 1);
                queue.push_back((e.key().clone(), nid));
                e.insert(());
            }
        }
        if seen.len() >= bounds.max_states {
            complete = false;
            break;
        }
    }

    let path = |mut id: u32, last: Option<u8>| -> Vec<usize> {
        let mut tids = Vec::new();
        if let Some(t) = last {
            tids.push(usize::from(t));
        }
        while id != 0 {
            let n = &nodes[id as usize];
            tids.push(usize::from(n.tid));
            id = n.parent;
        }
        tids.reverse();
        tids
    };
    let mut traces: Vec<(Invariant, Trace)> = found
        .iter()
        .map(|&(inv, id, tid)| (inv, replay(cfg, &path(id, Some(tid)), Some(inv))))
        .collect();
    if let Some(id) = deadlock {
        // A reachable deadlock is the stronger evidence for invariant 9: it replaces the trace of
        // a blocking acquisition against the documented order (which it usually follows from).
        let schedule = path(id, None);
        let mut t = replay(cfg, &schedule, Some(Invariant::LockOrderNoDeadlock));
        t.violations = vec![Violation {
            invariant: Invariant::LockOrderNoDeadlock,
            message: deadlock_message(cfg, &schedule),
        }];
        traces.retain(|(inv, _)| *inv != Invariant::LockOrderNoDeadlock);
        traces.push((Invariant::LockOrderNoDeadlock, t));
    }
    traces.sort_by_key(|(inv, _)| *inv);
    Exploration {
        states: seen.len(),
        transitions,
        max_depth: max_depth as usize,
        complete,
        elapsed_ms: start.elapsed().as_millis(),
        traces,
    }
}

/// Describes the deadlocked state reached by `schedule`: what every unfinished thread waits for.
fn deadlock_message(cfg: &Config, schedule: &[usize]) -> String {
    let mut st = initial_state(cfg);
    for &tid in schedule {
        step(&mut st, tid, cfg, &mut Ctx::default());
    }
    let waits: Vec<String> = (0..st.threads.len())
        .filter_map(|t| {
            blocked_on(&st, t, cfg).map(|w| format!("{} waits for {w}", thread_name(st.roles[t])))
        })
        .collect();
    format!(
        "deadlock: no thread can run but not all have finished; {}",
        waits.join("; ")
    )
}

/// Raw result of [`explore`].
#[derive(Clone, Debug)]
pub struct Exploration {
    /// Distinct states.
    pub states: usize,
    /// Transitions executed.
    pub transitions: usize,
    /// Longest interleaving (steps).
    pub max_depth: usize,
    /// The whole bounded space was explored.
    pub complete: bool,
    /// Milliseconds.
    pub elapsed_ms: u128,
    /// Shortest trace per violated invariant, in invariant order.
    pub traces: Vec<(Invariant, Trace)>,
}

impl Exploration {
    /// Invariants found broken.
    pub fn broken(&self) -> Vec<Invariant> {
        self.traces.iter().map(|(i, _)| *i).collect()
    }
}

/// Replays a schedule (a list of thread ids) from the initial state, recording labels and state
/// changes. Keeps only the violations of `keep` on the last step (all if `None`).
pub fn replay(cfg: &Config, schedule: &[usize], keep: Option<Invariant>) -> Trace {
    let mut st = initial_state(cfg);
    let mut steps = Vec::new();
    let mut violations = Vec::new();
    for (n, &tid) in schedule.iter().enumerate() {
        let before = st.describe();
        let mut ctx = Ctx {
            record: true,
            ..Ctx::default()
        };
        let ran = step(&mut st, tid, cfg, &mut ctx);
        debug_assert!(ran, "replayed step must be enabled");
        let after = st.describe();
        let changes = before
            .iter()
            .zip(after.iter())
            .filter(|(b, a)| b.1 != a.1)
            .map(|(b, a)| format!("{}: {} -> {}", b.0, b.1, a.1))
            .collect();
        let role = st.roles[tid];
        steps.push(TraceStep {
            n: n + 1,
            thread: thread_name(role),
            role,
            step: ctx.label,
            changes,
        });
        if n + 1 == schedule.len() {
            violations = ctx
                .violations
                .into_iter()
                .filter(|v| keep.is_none_or(|k| v.invariant == k))
                .collect();
        }
    }
    Trace {
        steps,
        violations,
        checker: Checker::Explorer,
        note: None,
    }
}

/// Runs one expected-table row: explores it and compares with the expectation.
///
/// ```
/// use remap_model::{expected_table, run_config, Bounds};
/// let row = expected_table().into_iter().find(|e| e.config.name == "v1-slow").unwrap();
/// let report = run_config(&row, &Bounds::default());
/// assert!(report.matches_expected);
/// ```
pub fn run_config(row: &Expected, bounds: &Bounds) -> Report {
    let ex = explore(&row.config, bounds);
    let wm = row
        .config
        .weak_memory
        .then(|| weak_memory_check(&row.config, bounds.loom_preemptions));
    let mut all = true;
    let invariants = Invariant::ALL
        .iter()
        .map(|&inv| {
            let sc_trace = ex.traces.iter().find(|(i, _)| *i == inv).map(|(_, t)| t);
            let sc = if sc_trace.is_some() {
                Outcome::Broken
            } else {
                Outcome::Holds
            };
            let wm_trace = wm
                .as_ref()
                .and_then(|w| w.traces.iter().find(|(i, _)| *i == inv).map(|(_, t)| t));
            let wm_outcome = wm.as_ref().filter(|w| w.checked.contains(&inv)).map(|_| {
                if wm_trace.is_some() {
                    Outcome::Broken
                } else {
                    Outcome::Holds
                }
            });
            let (found_by, trace) = match (sc_trace, wm_trace) {
                (Some(t), _) => (Some(Checker::Explorer), Some(t.clone())),
                (None, Some(t)) => (Some(Checker::Loom), Some(t.clone())),
                (None, None) => (None, None),
            };
            let actual = if found_by.is_some() {
                Outcome::Broken
            } else {
                Outcome::Holds
            };
            let expected = row.get(inv);
            let matches = match expected {
                Expect::NotApplicable => true,
                Expect::Holds => actual == Outcome::Holds,
                Expect::Broken => sc == Outcome::Broken,
                Expect::BrokenUnderWeakMemory => {
                    sc == Outcome::Holds && wm_outcome == Some(Outcome::Broken)
                }
            };
            all &= matches;
            InvariantResult {
                invariant: inv,
                number: inv.number(),
                kernel_function: inv.kernel_function(),
                expected,
                actual,
                sc,
                wm: wm_outcome,
                found_by,
                matches,
                trace,
            }
        })
        .collect();
    let wm_complete = wm.as_ref().is_none_or(|w| w.complete);
    Report {
        config: row.config.clone(),
        bounds: *bounds,
        states: ex.states,
        transitions: ex.transitions,
        max_depth: ex.max_depth,
        complete: ex.complete && wm_complete,
        elapsed_ms: ex.elapsed_ms + wm.as_ref().map_or(0, |w| w.elapsed_ms),
        invariants,
        weak_memory: wm,
        matches_expected: all && ex.complete && wm_complete,
    }
}

impl Trace {
    /// Renders the trace as numbered lines (`  3. A  S5 down_read_trylock(root X) -> ok`), each
    /// followed by the state it changed.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        for st in &self.steps {
            let _ = writeln!(s, "  {:>3}. {}  {}", st.n, st.thread, st.step);
            for c in &st.changes {
                let _ = writeln!(s, "          {c}");
            }
        }
        for v in &self.violations {
            let _ = writeln!(s, "  VIOLATED {}: {}", v.invariant, v.message);
        }
        if let Some(n) = &self.note {
            let _ = writeln!(s, "  replay: {n}");
        }
        s
    }
}
