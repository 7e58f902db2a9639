//! Serve a region lazily from a file, the way a VMM restores a snapshot: the guest's memory is
//! mapped empty, and each page is read from the snapshot file on its first touch.
//!
//! The program writes a snapshot file of N MiB (default 64; `cargo run --release -p remap
//! --example lazy_restore -- 256` for more), starts a [`FaultServer`] whose source reads the
//! faulting page from the file with `pread(2)` into the handler thread's scratch page and
//! answers `Resolution::Copy` (one `UFFDIO_COPY`, which also wakes the faulting thread), then
//! touches every page from two "vCPU" threads in a scattered order, checks every byte, and
//! prints the faults served and the time they took. It removes the file when done.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use remap::region::Region;
use remap::server::{Fault, FaultServer, PageSource, Resolution};

/// The byte at `offset` of the snapshot: anything that differs from page to page and within a
/// page, so a page served from the wrong place is caught.
fn snapshot_byte(offset: usize) -> u8 {
    let page = offset / 4096;
    (page.wrapping_mul(31) ^ (offset % 4096).wrapping_mul(7)).to_le_bytes()[0]
}

/// Pages come from the snapshot file, read on demand.
struct SnapshotFile {
    file: File,
}

impl PageSource for SnapshotFile {
    fn resolve<'a>(&'a self, fault: &Fault, page: &'a mut [u8]) -> Resolution<'a> {
        // `page` is the handler thread's own scratch page: fill it from the file, then copy it
        // into place. A read error leaves the fault to the server's fallback (a zero page).
        match self.file.read_exact_at(page, fault.offset as u64) {
            Ok(()) => Resolution::Copy(page),
            Err(_) => Resolution::Zero,
        }
    }
}

/// A permutation of `0..n` that jumps around (a stride coprime with `n`), like a guest that
/// touches its memory in no particular order.
fn scattered(n: usize) -> impl Iterator<Item = usize> {
    let stride = (1..n)
        .rev()
        .find(|s| gcd(*s, n) == 1 && *s > n / 3)
        .unwrap_or(1);
    (0..n).map(move |i| (i * stride) % n)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = std::env::args().nth(1).map_or(Ok(64), |a| a.parse())?;
    let page = uffd::page_size();
    let len = mib << 20;
    let pages = len / page;

    // 1. The snapshot, as a VMM would have saved it.
    let path = std::env::temp_dir().join(format!("remap-snapshot-{}.bin", std::process::id()));
    let started = Instant::now();
    {
        let mut out = BufWriter::new(File::create(&path)?);
        let mut buf = vec![0u8; page];
        for p in 0..pages {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = snapshot_byte(p * page + i);
            }
            out.write_all(&buf)?;
        }
        out.flush()?;
    }
    println!("wrote a {mib} MiB snapshot in {:.1?}", started.elapsed());
    let file = File::open(&path)?;
    // The file stays open (the source holds it); its name can go now.
    std::fs::remove_file(&path)?;

    // 2. Guest memory, empty, served from the file by two handler threads.
    let server = FaultServer::builder(Region::new(len)?, SnapshotFile { file })
        .threads(2)
        .start()?;

    // 3. Two vCPUs touch every page once, in a scattered order, and check it.
    let started = Instant::now();
    let region = server.region();
    std::thread::scope(|s| {
        for vcpu in 0..2 {
            s.spawn(move || {
                let mut buf = vec![0u8; page];
                for p in scattered(pages).filter(|p| p % 2 == vcpu) {
                    region.copy_out(p * page, &mut buf); // the first touch faults
                    for (i, &b) in buf.iter().enumerate() {
                        assert_eq!(b, snapshot_byte(p * page + i), "page {p} byte {i}");
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let stats = server.stats();
    println!(
        "restored {pages} pages: {} faults served by copy, {} races, {} errors, in {elapsed:.1?} \
         ({:.0} faults/s, {:.1} us per page including the check)",
        stats.served_copy,
        stats.races,
        stats.errors,
        stats.served_copy as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / pages as f64,
    );
    assert_eq!(stats.served_copy, pages as u64, "every page faulted once");
    assert_eq!(stats.errors, 0);

    // 4. Restored: the region is ordinary memory from now on.
    let region = server.stop()?;
    region.write_u8(0, 1);
    Ok(())
}
