//! Handing a large buffer from one region to another without copying it.
//!
//! A producer fills a 64 MiB buffer; a consumer takes it over. With `UFFDIO_MOVE` the pages
//! change owner by rewriting page tables: nothing is copied, no page is allocated, and with
//! transparent huge pages each aligned 2 MiB moves as one PMD entry. This program moves the
//! buffer with a [`remap::Mover`], checks every word arrived and that the source is empty, and
//! prints what happened next to a `memcpy` of the same size.
//!
//! Run it with `cargo run --release -p remap --example handoff`.

use std::time::{Duration, Instant};

use remap::mover::Mover;
use remap::pattern;
use remap::region::{Region, Thp, HUGE_PAGE_SIZE};
use remap::system::ThpMode;

const LEN: usize = 64 * 1024 * 1024;
const SEED: u64 = 0x4a4d;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uffd = uffd::Uffd::new()?;
    if !uffd.supports_move() {
        println!("skipping the handoff: the kernel has no UFFDIO_MOVE (Linux 6.8+)");
        return Ok(());
    }
    // THP where the machine offers it (`madvise` or `always`), small pages otherwise.
    let thp = if ThpMode::read().usable() {
        Thp::Huge
    } else {
        Thp::Default
    };
    let region = || Region::builder(LEN).huge_aligned(true).thp(thp);

    // The producer's buffer, filled; the consumer's, empty and registered with the mover.
    let producer = region().populate(true).build()?;
    pattern::fill(&producer, SEED);
    let consumer = region().build()?;
    let mover = Mover::new(uffd);
    mover.register(&consumer)?;

    // Which 2 MiB chunks are transparent huge pages before the move (at the producer) and after
    // it (at the consumer): a chunk that is one at both ends moved as one PMD entry. (The mover
    // can count this itself with `MoveOptions::verify_pmd`, at the price of /proc reads around
    // every ioctl; here they stay outside the timed move.)
    let thp_chunks = |region: &Region| -> Vec<bool> {
        (0..LEN)
            .step_by(HUGE_PAGE_SIZE)
            .map(|off| remap::inspect::is_thp_mapped(region.addr() + off).unwrap_or(false))
            .collect()
    };
    let before = thp_chunks(&producer);

    let start = Instant::now();
    let report = mover.move_range(&consumer, 0, &producer, 0, LEN)?;
    let moved_in = start.elapsed();

    let after = thp_chunks(&consumer);
    let whole = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b && **a)
        .count();

    pattern::verify(&consumer, SEED)?;
    let source_empty = (0..LEN)
        .step_by(producer.page_size())
        .all(|off| producer.read_u64(off) == 0);
    assert!(source_empty, "a page is still at the source");

    let memcpy_in = memcpy_time();
    println!(
        "handed {} MiB from one region to another (THP: {thp:?})",
        LEN >> 20
    );
    println!("  bytes moved      {:>12}", report.moved_bytes());
    println!(
        "  whole-PMD bytes  {:>12}  ({whole} of {} 2 MiB chunks were THPs at both ends)",
        whole * HUGE_PAGE_SIZE,
        LEN / HUGE_PAGE_SIZE
    );
    println!(
        "  ioctls           {:>12}  ({} MOVE, {} WAKE)",
        report.ioctls(),
        report.move_ioctls,
        report.wake_ioctls
    );
    println!("  time             {:>12.3?}", moved_in);
    println!(
        "  memcpy           {:>12.3?}  (the same size, into memory already faulted in)",
        memcpy_in
    );
    println!(
        "  ratio            {:>12.1}x  faster than the memcpy",
        memcpy_in.as_secs_f64() / moved_in.as_secs_f64()
    );
    println!("every word arrived; the source is empty");
    Ok(())
}

/// One `memcpy` of `LEN` bytes between two heap buffers whose pages are already faulted in.
fn memcpy_time() -> Duration {
    let from = vec![0x5au8; LEN];
    let mut to = vec![1u8; LEN];
    let start = Instant::now();
    to.copy_from_slice(std::hint::black_box(&from));
    let took = start.elapsed();
    std::hint::black_box(&to);
    took
}
