//! A key-value cache: per mutator, a hash table of segments (62 bucket references each), chains of
//! entries (key, version) each pointing at a value whose payload is a function of key and
//! version. Random reads check the payload; updates allocate a new value (or rewrite it in place
//! during compaction); evictions unlink an entry and insert a new key.

use crate::heap::{AllocError, Mutator, ObjRef};
use crate::object::mix;
use crate::shape::{DataWords, Shape, ShapeId, ShapeTable};
use crate::workload::{corrupt, NewWorkload, Rng, Workload, WorkloadError};

const NAME: &str = "kv";
const BUCKETS_PER_SEGMENT: usize = 62;
/// Average words per key: entry (6) plus value (header, payload of 4..32 words).
const WORDS_PER_KEY: usize = 6 + 2 + 18;

/// The cache workload.
#[derive(Debug)]
pub struct Cache {
    segment: ShapeId,
    entry: ShapeId,
    value: ShapeId,
    keys: usize,
    segments: usize,
}

/// A mutator's keys (plain numbers, outside the heap).
#[derive(Debug)]
pub struct CacheState {
    keys: Vec<u64>,
    next_key: u64,
    /// Lookups that found their key.
    pub hits: u64,
}

fn payload_len(key: u64) -> usize {
    4 + (mix(key ^ 0x5a5a) % 29) as usize
}

fn payload(key: u64, version: u64, i: usize) -> u64 {
    mix(key.rotate_left(17) ^ version.wrapping_mul(0x9e37_79b9) ^ (i as u64) << 56)
}

impl NewWorkload for Cache {
    fn new(shapes: &mut ShapeTable, live_words: usize) -> Self {
        let segment = shapes.next_id();
        let entry = ShapeId(segment.0 + 1);
        let value = ShapeId(segment.0 + 2);
        shapes.add(Shape {
            name: "kv-segment",
            refs: vec![Some(entry); BUCKETS_PER_SEGMENT],
            data: DataWords::Fixed(0),
        });
        shapes.add(Shape {
            name: "kv-entry",
            refs: vec![Some(entry), Some(value)],
            data: DataWords::Fixed(2),
        });
        shapes.add(Shape {
            name: "kv-value",
            refs: vec![],
            data: DataWords::AtLeast(1),
        });
        let keys = (live_words / (WORDS_PER_KEY + 1)).max(16);
        let segments = (keys / 2).div_ceil(BUCKETS_PER_SEGMENT).max(1);
        Cache {
            segment,
            entry,
            value,
            keys,
            segments,
        }
    }
}

impl Cache {
    fn bucket(&self, key: u64) -> (usize, usize) {
        let b = (mix(key) % (self.segments * BUCKETS_PER_SEGMENT) as u64) as usize;
        (b / BUCKETS_PER_SEGMENT, b % BUCKETS_PER_SEGMENT)
    }

    fn new_value(&self, m: &mut Mutator, key: u64, version: u64) -> Result<ObjRef, AllocError> {
        let n = payload_len(key);
        let v = m.alloc(self.value, n)?;
        for i in 0..n {
            m.write_data(v, i, payload(key, version, i));
        }
        Ok(v)
    }

    fn insert(&self, m: &mut Mutator, key: u64) -> Result<(), AllocError> {
        let value = self.new_value(m, key, 0)?;
        let e = m.alloc(self.entry, 2)?;
        m.write_data(e, 0, key);
        m.write_ref(e, 1, Some(value));
        let (s, b) = self.bucket(key);
        let seg = m.root(s).expect("segments are set up first");
        let head = m.read_ref(seg, b);
        m.write_ref(e, 0, head);
        m.write_ref(seg, b, Some(e));
        Ok(())
    }

    /// The entry of `key` and its predecessor in the chain (None: the bucket head).
    fn lookup(&self, m: &Mutator, key: u64) -> Result<(ObjRef, Option<ObjRef>), WorkloadError> {
        let (s, b) = self.bucket(key);
        let seg = crate::workload::some(NAME, m.root(s), "segment")?;
        let mut prev = None;
        let mut cur = m.read_ref(seg, b);
        let mut steps = 0;
        while let Some(e) = cur {
            if m.shape(e) != self.entry {
                return Err(corrupt(
                    NAME,
                    format!(
                        "chain of bucket {s}/{b} reaches a non-entry at {:#x}",
                        e.word()
                    ),
                ));
            }
            if m.read_data(e, 0) == key {
                return Ok((e, prev));
            }
            steps += 1;
            if steps > 1 << 20 {
                return Err(corrupt(NAME, format!("chain of bucket {s}/{b} loops")));
            }
            prev = Some(e);
            cur = m.read_ref(e, 0);
        }
        Err(corrupt(NAME, format!("key {key} lost from bucket {s}/{b}")))
    }

    fn get(&self, m: &Mutator, key: u64, st: &mut CacheState) -> Result<ObjRef, WorkloadError> {
        let (e, _) = self.lookup(m, key)?;
        let version = m.read_data(e, 1);
        let v = crate::workload::some(NAME, m.read_ref(e, 1), "value")?;
        let n = payload_len(key);
        if m.shape(v) != self.value || m.data_len(v) < n {
            return Err(corrupt(
                NAME,
                format!("value of key {key} has the wrong shape or size"),
            ));
        }
        for i in 0..n {
            let got = m.read_data(v, i);
            if got != payload(key, version, i) {
                return Err(corrupt(
                    NAME,
                    format!(
                        "key {key} version {version}: payload word {i} is {got:#x}, expected {:#x}",
                        payload(key, version, i)
                    ),
                ));
            }
        }
        st.hits += 1;
        Ok(e)
    }
}

impl Workload for Cache {
    type State = CacheState;

    fn name(&self) -> &'static str {
        NAME
    }

    fn roots(&self) -> usize {
        self.segments
    }

    fn setup(&self, m: &mut Mutator, rng: &mut Rng) -> Result<CacheState, WorkloadError> {
        let err = |source| WorkloadError::Setup {
            workload: NAME,
            source,
        };
        for s in 0..self.segments {
            let seg = m.alloc(self.segment, 0).map_err(err)?;
            m.set_root(s, Some(seg));
        }
        let base = rng.next_u64() >> 16;
        let mut st = CacheState {
            keys: Vec::with_capacity(self.keys),
            next_key: base,
            hits: 0,
        };
        for _ in 0..self.keys {
            let k = st.next_key;
            st.next_key += 1;
            self.insert(m, k).map_err(err)?;
            st.keys.push(k);
        }
        Ok(st)
    }

    fn step(
        &self,
        m: &mut Mutator,
        st: &mut CacheState,
        rng: &mut Rng,
    ) -> Result<(), WorkloadError> {
        let i = rng.below(st.keys.len());
        let key = st.keys[i];
        match rng.below(8) {
            0..=3 => {
                self.get(m, key, st)?;
            }
            4 | 5 => {
                // Update: a new value, or the same one rewritten in place during compaction.
                let e = self.get(m, key, st)?;
                let version = m.read_data(e, 1) + 1;
                match self.new_value(m, key, version) {
                    Ok(v) => m.write_ref(e, 1, Some(v)),
                    Err(_) => {
                        let v = crate::workload::some(NAME, m.read_ref(e, 1), "value")?;
                        for w in 0..payload_len(key) {
                            m.write_data(v, w, payload(key, version, w));
                        }
                    }
                }
                m.write_data(e, 1, version);
            }
            _ => {
                // Evict and insert a new key, when allocation is open.
                let new_key = st.next_key;
                let value = match self.new_value(m, new_key, 0) {
                    Ok(v) => v,
                    Err(_) => {
                        self.get(m, key, st)?;
                        return Ok(());
                    }
                };
                let (e, prev) = self.lookup(m, key)?;
                let next = m.read_ref(e, 0);
                match prev {
                    Some(p) => m.write_ref(p, 0, next),
                    None => {
                        let (s, b) = self.bucket(key);
                        let seg = crate::workload::some(NAME, m.root(s), "segment")?;
                        m.write_ref(seg, b, next);
                    }
                }
                st.keys.swap_remove(i);
                let ne = match m.alloc(self.entry, 2) {
                    Ok(ne) => ne,
                    // Out of room between the two allocations: the key stays evicted.
                    Err(_) => return Ok(()),
                };
                m.write_data(ne, 0, new_key);
                m.write_ref(ne, 1, Some(value));
                let (s, b) = self.bucket(new_key);
                let seg = crate::workload::some(NAME, m.root(s), "segment")?;
                let head = m.read_ref(seg, b);
                m.write_ref(ne, 0, head);
                m.write_ref(seg, b, Some(ne));
                st.next_key += 1;
                st.keys.push(new_key);
            }
        }
        Ok(())
    }
}
