//! A runtime plugging into remap-compact: a toy heap of fixed-size objects, half of them dead,
//! compacted by sliding while mutator threads keep reading it, for a few cycles, with each
//! publication and fault mode; prints each cycle's statistics.
//!
//! Run: `cargo run --release -p remap-compact --example compact [-- <heap MiB> <mutators>]`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use remap::Region;
use remap_compact::{
    Compactor, CycleStats, Engine, FromSpace, PageBuffer, Publication, SignalSafeCompactor,
};

/// Object size: 64 bytes, the first word holds the object's id.
const OBJECT: usize = 64;

/// Every other object is live; compaction slides the live ones down, keeping their order, so
/// the `n`-th live object moves from heap offset `2 n OBJECT` to `n OBJECT`: to-space page `i`
/// reads from-space pages `2i` and `2i + 1`.
struct Slide {
    page: usize,
    heap_pages: usize,
}

impl Compactor for Slide {
    fn pages(&self) -> usize {
        self.heap_pages / 2
    }

    fn reads(&self, page: usize) -> Range<usize> {
        2 * page..2 * page + 2
    }

    fn fill(&self, page: usize, src: &FromSpace<'_>, dst: &mut PageBuffer<'_>) {
        let per_page = self.page / OBJECT;
        for k in 0..per_page {
            let n = page * per_page + k; // the live object that lands here
            dst.copy_from(k * OBJECT, src, 2 * n * OBJECT, OBJECT);
        }
    }
}

// SAFETY: `reads` is arithmetic and `fill` only calls `PageBuffer::copy_from` within bounds
// (the offsets stay inside `reads(page)` by construction): no allocation, lock or panic.
unsafe impl SignalSafeCompactor for Slide {}

fn summary(label: &str, s: &CycleStats) {
    let stall = |q| s.stall_ns.value_at_quantile(q);
    println!(
        "{label:<22} pages {:>6} | flip {:>9.1?} | compaction wall {:>9.1?} cpu {:>9.1?} | by compactor {:>6} faults {:>5} | \
         move {:>6} copy {:>6} (EBUSY {}) | ioctls {:>6} | recycled {:>6} fresh {:>5} | stall p50 {} ns p99 {} ns | TLB/page {:.3}",
        s.pages,
        s.flip_pause,
        s.compaction_wall,
        s.compaction_cpu,
        s.by_compactor,
        s.by_faults(),
        s.published_move,
        s.published_copy,
        s.busy_fallbacks,
        s.ioctls,
        s.recycled_buffers,
        s.fresh_buffers,
        stall(0.5),
        stall(0.99),
        s.tlb_per_page().unwrap_or(f64::NAN),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let mutators: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    if !uffd::Uffd::new()?.supports_move() {
        eprintln!("this kernel has no UFFDIO_MOVE (Linux 6.8+)");
        return Ok(());
    }
    let page = uffd::page_size();
    let heap_pages = mib * 1024 * 1024 / page;
    for (label, publication, sigbus) in [
        ("move, handler threads", Publication::Move, false),
        ("move, SIGBUS", Publication::Move, true),
        ("move-single, handlers", Publication::MoveSingle, false),
        ("copy, handler threads", Publication::Copy, false),
    ] {
        let heap = Region::builder(heap_pages * page).populate(true).build()?;
        // Object `m` at offset `m OBJECT` holds its id `m`; the odd ones are dead.
        for m in 0..heap.len() / OBJECT {
            heap.write_u64(m * OBJECT, m as u64);
        }
        let engine = Engine::builder(heap).publication(publication).build()?;
        let plan = Arc::new(Slide { page, heap_pages });
        let cycle = if sigbus {
            engine.flip_sigbus(Arc::clone(&plan))?
        } else {
            engine.flip(Arc::clone(&plan))?
        };
        let stop = AtomicBool::new(false);
        let stats = std::thread::scope(|s| {
            for t in 0..mutators {
                let (engine, stop) = (&engine, &stop);
                s.spawn(move || {
                    let live = engine.heap().len() / 2 / OBJECT;
                    let mut n = t * 7919 % live;
                    while !stop.load(Ordering::Relaxed) {
                        // Live object `n` now sits at `n OBJECT` and still holds its old id.
                        let id = engine.heap().read_u64(n * OBJECT);
                        assert_eq!(id, 2 * n as u64, "object {n}");
                        n = (n + 4093) % live;
                    }
                });
            }
            let stats = cycle.compact();
            stop.store(true, Ordering::Relaxed);
            stats
        })?;
        summary(label, &stats);
    }
    Ok(())
}
