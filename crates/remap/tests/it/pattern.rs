//! Pattern fixtures the server tests share: a source image, an `FnSource` fill and a move pool
//! whose page `i` holds the pattern (`remap::pattern`) of logical page `i`. Each test file passes
//! its own seed, so a page one file's sources serve never matches another file's pattern.

use remap::pattern::pattern_word;
use remap::region::Region;
use remap::server::MovePool;

/// The page size.
pub(crate) fn page() -> usize {
    rustix::param::page_size()
}

/// An image of `pages` pages whose page `i` holds the pattern of logical page `i`.
pub(crate) fn pattern_image(seed: u64, pages: usize) -> Vec<u8> {
    let mut image = Vec::with_capacity(pages * page());
    for p in 0..pages {
        for w in 0..page() / 8 {
            image.extend_from_slice(&pattern_word(seed, p as u64, w as u64).to_ne_bytes());
        }
    }
    image
}

/// Fills `buf`, the page at byte `offset` of a region, with the pattern of its logical page.
pub(crate) fn fill_pattern(seed: u64, offset: usize, buf: &mut [u8]) {
    let p = (offset / page()) as u64;
    for (w, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(seed, p, w as u64).to_ne_bytes());
    }
}

/// A pool of the pages of `region`, page `i` filled with the pattern of logical page `i`.
pub(crate) fn pattern_pool(seed: u64, region: Region) -> MovePool {
    remap::pattern::fill(&region, seed);
    MovePool::from_region(region).unwrap()
}
