//! A SIGBUS-mode server: no handler threads; a thread that touches a missing page gets SIGBUS
//! and resolves its own fault in remap's signal handler, from an async-signal-safe source.
//!
//! The program serves a 32 MiB region from a [`MovePool`] (pages moved in with `UFFDIO_MOVE`,
//! zero-copy; the pool's free list is a table of atomics, so it may run in a signal handler),
//! touches every page from four threads, checks the contents, gives pages back to the pool and
//! touches them again, then stops the server and takes the pool's pages back.
//!
//! `cargo run --release -p remap --example sigbus_server`

use std::time::Instant;

use remap::region::Region;
use remap::server::{CopySource, MovePool, SigbusServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let page = uffd::page_size();
    if !uffd::Capabilities::probe()?
        .features()
        .contains(uffd::Features::SIGBUS)
    {
        println!("this kernel has no UFFD_FEATURE_SIGBUS: nothing to show");
        return Ok(());
    }
    let pages = (32 << 20) / page;

    // Part 1: pages copied from an image (CopySource is signal-safe: it only slices its image).
    let image: Vec<u8> = (0..pages * page)
        .map(|i| (i / page).to_le_bytes()[0])
        .collect();
    let server = SigbusServer::start(Region::new(pages * page)?, CopySource::new(image))?;
    let started = Instant::now();
    let region = server.region();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for p in (t..pages).step_by(4) {
                    // Faults: SIGBUS, resolved by UFFDIO_COPY in this very thread's handler.
                    assert_eq!(region.read_u8(p * page + 17), p.to_le_bytes()[0]);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let stats = server.stats();
    println!(
        "copy: {} SIGBUS faults served in the faulting threads in {elapsed:.1?} ({:.0} faults/s)",
        stats.served_copy,
        stats.faults as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(stats.served_copy, pages as u64);
    drop(server.stop());

    // Part 2: pages moved in from a pool, and given back.
    let uffd = uffd::Uffd::new()?;
    if !uffd.supports_move() {
        println!("no UFFDIO_MOVE (Linux 6.8+): skipping the pool part");
        return Ok(());
    }
    let pool = MovePool::new(pages)?;
    let server = SigbusServer::start(Region::new(pages * page)?, pool)?;
    let region = server.region();
    let started = Instant::now();
    for p in 0..pages {
        region.write_u64(p * page, p as u64); // a pool page moves in, then is written
    }
    let elapsed = started.elapsed();
    println!(
        "move: {} pages moved in from the pool in {elapsed:.1?}; pool has {} left",
        server.stats().served_move,
        server.source().available()
    );
    // Give the first half back (moved out again: the region reads them as missing), and touch
    // them again: each is served from the pool again, zero-copy (one of the pages we gave).
    for p in 0..pages / 2 {
        server.source().give_back(region, p * page)?;
    }
    for p in 0..pages / 2 {
        let _ = region.read_u64(p * page);
    }
    let stats = server.stats();
    println!("after giving half back and touching it again: {stats}");
    assert_eq!(stats.served_move, (pages + pages / 2) as u64);
    assert_eq!(stats.errors, 0);
    let (region, pool) = server.into_parts();
    println!(
        "stopped: region of {} pages is ordinary memory, pool of {} pages returned",
        region.pages(),
        pool.into_region().pages()
    );
    Ok(())
}
