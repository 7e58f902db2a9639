//! Verification of the heap around a cycle: a walk of every object, a traversal of everything
//! reachable, and a checksum that does not depend on where objects live.
//!
//! # The checksum
//!
//! An object contributes `field_term(id, f, v)` for each field `f` after its header, where `v`
//! is the data word, or for a reference the *identity* of the referent (0 for null), plus a term
//! for its header. The heap's checksum is the wrapping sum over a set of objects. Because the
//! sum is over identities, moving objects changes nothing; a wrong byte, a reference to the
//! wrong object or a lost object changes it.
//!
//! Before a cycle (mutators stopped) the sum is taken over the reachable objects, which are
//! exactly the objects marking keeps. During compaction the mutators write; each write adds its
//! own change of the sum to its mutator's running delta ([`crate::heap::Mutator::write_data`]).
//! After the cycle (mutators stopped again) the sum over every object of the compacted heap (the
//! kept objects, some of them unreachable by now) must equal the sum before plus the deltas.
//! Both times, every reference reachable from the roots must point at the first word of an
//! object of the shape its field expects.

use crate::bitmap::Bitmap;
use crate::mark::SourceWords;
use crate::object::{field_term, header_shape, header_size, HEADER_WORDS, RESERVED_WORDS};
use crate::shape::{ShapeTable, FILLER};

/// What verification found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The walk met a word that is not a valid header.
    #[error("heap walk: word {word:#x} holds {header:#x}, not a header of a known shape and size")]
    BadHeader {
        /// The word.
        word: usize,
        /// Its contents.
        header: u64,
    },
    /// A reference that does not point at the first word of an object.
    #[error("dangling reference: field {field} of the object at word {from:#x} (or a root, if 0) points at {target:#x}, not at an object")]
    Dangling {
        /// The object holding the reference (0 for a root).
        from: usize,
        /// The field.
        field: usize,
        /// The reference.
        target: u64,
    },
    /// A reference to an object of the wrong shape.
    #[error("field {field} of the object at word {from:#x} points at a {found} object at {target:#x}, expected {expected}")]
    WrongShape {
        /// The object holding the reference.
        from: usize,
        /// The field.
        field: usize,
        /// The reference.
        target: u64,
        /// The shape the field expects.
        expected: &'static str,
        /// The shape found.
        found: &'static str,
    },
    /// The checksum after the cycle differs from the one before plus the mutators' writes.
    #[error("checksum after the cycle is {found:#018x}, expected {expected:#018x} (before plus the mutators' writes)")]
    Checksum {
        /// Before plus the deltas.
        expected: u64,
        /// What the compacted heap sums to.
        found: u64,
    },
    /// The compacted heap holds a different number of objects than marking kept.
    #[error("the compacted heap holds {found} objects, marking kept {expected}")]
    ObjectCount {
        /// Marked objects.
        expected: usize,
        /// Objects found.
        found: usize,
    },
}

/// The result of [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapCheck {
    /// Objects in the walked range (fillers excluded).
    pub objects: usize,
    /// The checksum over every object of the walked range.
    pub checksum_all: u64,
    /// Objects reachable from the roots.
    pub reachable: usize,
    /// The checksum over the reachable objects.
    pub checksum_reachable: u64,
}

/// The checksum term of the object at `w` (header `h`).
fn object_sum(
    src: &(impl SourceWords + ?Sized),
    shapes: &ShapeTable,
    top: usize,
    w: usize,
    h: u64,
) -> u64 {
    let size = header_size(h);
    let refs = shapes.get(header_shape(h)).map_or(0, |s| s.ref_count());
    let id = src.read_word(w + 1);
    let mut sum = field_term(id, usize::MAX, h);
    for f in 0..size - HEADER_WORDS {
        let v = src.read_word(w + HEADER_WORDS + f);
        let v = if f < refs && v != 0 {
            // A reference outside the heap is reported by the traversal; here it only has to
            // not be read.
            match usize::try_from(v) {
                Ok(t) if t + 1 < top => src.read_word(t + 1),
                _ => u64::MAX,
            }
        } else {
            v
        };
        sum = sum.wrapping_add(field_term(id, f, v));
    }
    sum
}

/// Which checksums [`check`] computes (each costs a pass over the objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sums {
    /// Both.
    Both,
    /// Only the sum over every walked object (after a cycle).
    All,
    /// Only the sum over the reachable objects (before a cycle).
    Reachable,
}

/// Walks every object of `RESERVED_WORDS..top`, then traverses from `roots`, checking every
/// header, every reachable reference and its shape; sums the checksums `sums` asks for (the
/// others are 0).
///
/// # Errors
///
/// The first [`VerifyError`] found.
pub fn check(
    src: &(impl SourceWords + ?Sized),
    shapes: &ShapeTable,
    top: usize,
    roots: &[u64],
    sums: Sums,
) -> Result<HeapCheck, VerifyError> {
    let mut starts = Bitmap::new(top.max(RESERVED_WORDS));
    let mut w = RESERVED_WORDS;
    let (mut objects, mut checksum_all) = (0, 0u64);
    let mut refs_pending: Vec<(usize, usize, u64)> = Vec::new();
    while w < top {
        let h = src.read_word(w);
        let size = header_size(h);
        match shapes.get(header_shape(h)) {
            Some(s) if s.allows_size(size) && w + size <= top => s,
            _ => return Err(VerifyError::BadHeader { word: w, header: h }),
        };
        starts.set(w);
        if header_shape(h) != FILLER {
            objects += 1;
        }
        w += size;
    }
    // The sums need the referents' identities, so they come after every start is known.
    let mut w = if sums == Sums::Reachable {
        top
    } else {
        RESERVED_WORDS
    };
    while w < top {
        let h = src.read_word(w);
        if header_shape(h) != FILLER {
            checksum_all = checksum_all.wrapping_add(object_sum(src, shapes, top, w, h));
        }
        w += header_size(h);
    }
    let mut seen = Bitmap::new(top.max(RESERVED_WORDS));
    let (mut reachable, mut checksum_reachable) = (0, 0u64);
    refs_pending.extend(roots.iter().filter(|&&r| r != 0).map(|&r| (0, 0, r)));
    let is_object = |t: u64| {
        let t = usize::try_from(t).unwrap_or(usize::MAX);
        t < top && starts.get(t) && header_shape(src.read_word(t)) != FILLER
    };
    while let Some((from, field, target)) = refs_pending.pop() {
        if !is_object(target) {
            return Err(VerifyError::Dangling {
                from,
                field,
                target,
            });
        }
        let t = target as usize;
        if from != 0 {
            let fh = src.read_word(from);
            let fs = shapes.get(header_shape(fh)).expect("checked by the walk");
            let th = src.read_word(t);
            if let Some(expected) = fs.refs[field] {
                if header_shape(th) != expected {
                    return Err(VerifyError::WrongShape {
                        from,
                        field,
                        target,
                        expected: shapes.get(expected).map_or("?", |s| s.name),
                        found: shapes.get(header_shape(th)).map_or("?", |s| s.name),
                    });
                }
            }
        }
        if seen.get(t) {
            continue;
        }
        seen.set(t);
        let h = src.read_word(t);
        reachable += 1;
        if sums != Sums::All {
            checksum_reachable =
                checksum_reachable.wrapping_add(object_sum(src, shapes, top, t, h));
        }
        let refs = shapes.get(header_shape(h)).map_or(0, |s| s.ref_count());
        for f in 0..refs {
            let r = src.read_word(t + HEADER_WORDS + f);
            if r != 0 {
                refs_pending.push((t, f, r));
            }
        }
    }
    Ok(HeapCheck {
        objects,
        checksum_all,
        reachable,
        checksum_reachable,
    })
}
