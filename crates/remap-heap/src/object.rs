//! The object layout in heap words.
//!
//! ```text
//! word 0   header: shape id (low 32 bits) | size in words, header included (high 32 bits)
//! word 1   identity: a number unique to the object for the run, never changed (the checksum
//!          names objects by it, so it does not depend on where an object lives)
//! word 2.. the reference fields (a word index into the heap, 0 = null), then the data words
//! ```
//!
//! References are word indices from the start of the heap region, not addresses: the heap's range
//! stays where it is across a compaction (the engine moves pages into it), so a reference written
//! by the compactor is final. Word indices below [`RESERVED_WORDS`] never hold objects, which
//! makes 0 free to mean null.

use crate::shape::ShapeId;

/// Header words before the fields.
pub const HEADER_WORDS: usize = 2;

/// Heap words at the start of the region that never hold objects (so that 0 is null).
pub const RESERVED_WORDS: usize = 8;

/// The largest object, in words (header included): objects span at most a few pages, so a fill
/// reads a bounded number of from-space pages.
pub const MAX_OBJECT_WORDS: usize = 4096;

/// Packs a header word.
#[inline]
pub fn header(shape: ShapeId, size_words: usize) -> u64 {
    debug_assert!(size_words <= MAX_OBJECT_WORDS);
    u64::from(shape.0) | ((size_words as u64) << 32)
}

/// The shape id of a header word.
#[inline]
pub fn header_shape(h: u64) -> ShapeId {
    ShapeId((h & 0xffff_ffff) as u32)
}

/// The size in words of a header word.
#[inline]
pub fn header_size(h: u64) -> usize {
    (h >> 32) as usize
}

/// A 64-bit mixer (splitmix64's finaliser): the checksum and the self-checking payloads use it.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The checksum contribution of field `field` of the object with identity `id` holding `value`
/// (for a reference field: the identity of the referent, 0 for null).
#[inline]
pub fn field_term(id: u64, field: usize, value: u64) -> u64 {
    mix(id.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ mix((field as u64) << 48 ^ value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = header(ShapeId(7), 4096);
        assert_eq!(header_shape(h), ShapeId(7));
        assert_eq!(header_size(h), 4096);
    }

    #[test]
    fn field_terms_depend_on_every_input() {
        let t = field_term(1, 2, 3);
        assert_ne!(t, field_term(2, 2, 3));
        assert_ne!(t, field_term(1, 3, 3));
        assert_ne!(t, field_term(1, 2, 4));
    }
}
