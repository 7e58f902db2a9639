//! Pattern fill and verification: test and bench tooling for checking that pages arrived intact.
//!
//! Every word of a page filled as *logical page* `n` for a seed is [`pattern_word`]`(seed, n,
//! word)`, so a page can be verified wherever it ends up (in another region after a move, at
//! another index after a compaction) by naming `n` again. No pattern word is zero, so a page
//! replaced by a zero page never verifies.
//!
//! These are free functions over [`Region`]'s word accessors, not part of what a region is.
//!
//! ```
//! use remap::pattern;
//! use remap::region::Region;
//!
//! let region = Region::new(4 * 4096)?;
//! pattern::fill(&region, 7);
//! assert_eq!(pattern::verify(&region, 7), Ok(()));
//! assert!(pattern::verify(&region, 8).is_err());
//! # Ok::<(), remap::region::RegionError>(())
//! ```

use crate::region::Region;

/// A pattern word that did not match in [`verify`] or [`verify_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pattern mismatch at offset {offset:#x}: expected {expected:#018x}, found {found:#018x}")]
pub struct Mismatch {
    /// Byte offset of the word from the start of the region.
    pub offset: usize,
    /// The word the pattern expects there.
    pub expected: u64,
    /// The word read.
    pub found: u64,
}

/// The pattern word number `word_no` of logical page `page_no` for `seed`.
///
/// The word depends only on its three arguments, so a page filled as logical page `n` can be
/// verified wherever it ends up (for example in another region after a move) by passing `n` again
/// (see [`verify_page`]). The low bit is always set, so no pattern word is zero and a page
/// replaced by a zero page never verifies.
///
/// ```
/// use remap::pattern::pattern_word;
///
/// assert_eq!(pattern_word(1, 2, 3), pattern_word(1, 2, 3));
/// assert_ne!(pattern_word(1, 2, 3), pattern_word(1, 3, 3));
/// assert_ne!(pattern_word(0, 0, 0), 0);
/// ```
pub fn pattern_word(seed: u64, page_no: u64, word_no: u64) -> u64 {
    // splitmix64 finaliser over a combination of the three inputs.
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(page_no.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(word_no.wrapping_mul(0x94d0_49bb_1331_11eb))
        .wrapping_add(0x2545_f491_4f6c_dd1d);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// Fills page `index` of `region` with the pattern of logical page `page_no` for `seed`.
///
/// ```
/// let region = remap::region::Region::new(2 * 4096)?;
/// remap::pattern::fill_page(&region, 1, 3, 9);
/// assert_eq!(remap::pattern::verify_page(&region, 1, 3, 9), Ok(()));
/// # Ok::<(), remap::region::RegionError>(())
/// ```
///
/// # Panics
///
/// If `index >= region.pages()`.
#[track_caller]
pub fn fill_page(region: &Region, index: usize, seed: u64, page_no: u64) {
    let base = region.page_addr(index) - region.addr();
    for word in 0..region.page_size() / 8 {
        region.write_u64(base + word * 8, pattern_word(seed, page_no, word as u64));
    }
}

/// Fills every page `i` of `region` with the pattern of logical page `i` for `seed`.
///
/// ```
/// let region = remap::region::Region::new(4096)?;
/// remap::pattern::fill(&region, 1);
/// assert_eq!(region.read_u64(0), remap::pattern::pattern_word(1, 0, 0));
/// # Ok::<(), remap::region::RegionError>(())
/// ```
pub fn fill(region: &Region, seed: u64) {
    for index in 0..region.pages() {
        fill_page(region, index, seed, index as u64);
    }
}

/// Checks that page `index` of `region` holds the pattern of logical page `source_page_no` for
/// `seed`, for example a page filled as page `source_page_no` of another region and then moved
/// here.
///
/// ```
/// use remap::pattern;
/// use remap::region::Region;
///
/// let src = Region::new(2 * 4096)?;
/// let dst = Region::new(4096)?;
/// pattern::fill(&src, 42);
/// // Stand-in for a move: copy src's page 1 into dst's page 0.
/// let mut page = vec![0u8; 4096];
/// src.copy_out(4096, &mut page);
/// dst.copy_in(0, &page);
/// assert_eq!(pattern::verify_page(&dst, 0, 42, 1), Ok(()));
/// assert!(pattern::verify_page(&dst, 0, 42, 0).is_err());
/// # Ok::<(), remap::region::RegionError>(())
/// ```
///
/// # Errors
///
/// The first [`Mismatch`] found.
///
/// # Panics
///
/// If `index >= region.pages()`.
#[track_caller]
pub fn verify_page(
    region: &Region,
    index: usize,
    seed: u64,
    source_page_no: u64,
) -> Result<(), Mismatch> {
    let base = region.page_addr(index) - region.addr();
    for word in 0..region.page_size() / 8 {
        let offset = base + word * 8;
        let expected = pattern_word(seed, source_page_no, word as u64);
        let found = region.read_u64(offset);
        if found != expected {
            return Err(Mismatch {
                offset,
                expected,
                found,
            });
        }
    }
    Ok(())
}

/// Checks that every page `i` of `region` holds the pattern of logical page `i` for `seed`, as
/// written by [`fill`].
///
/// # Errors
///
/// The first [`Mismatch`] found, in address order.
pub fn verify(region: &Region, seed: u64) -> Result<(), Mismatch> {
    (0..region.pages()).try_for_each(|index| verify_page(region, index, seed, index as u64))
}
