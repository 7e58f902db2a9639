//! Minimal reproducer: `UFFDIO_MOVE` racing migration moves one page more than it reports.
//!
//! One thread MOVEs a batch of tagged 4 KiB pages back and forth between two registered regions
//! while another writes `1` to `/proc/sys/vm/compact_memory` in a loop. Around every MOVE the
//! mover reads pagemap for both ranges and the tag of every page, so it knows exactly which pages
//! moved, and compares that with what the ioctl reported. See
//! `docs/findings/move-undercounts-a-moved-page.md`.
//!
//! The test passes on a kernel with the undercount (it prints each one) and asserts what the
//! library relies on after every MOVE: nothing is lost (every page is at exactly one of its source
//! or destination, with its tag), the moved pages are a prefix of the request, and the kernel never
//! counts more than it moved. `REMAP_EXPECT_MOVE_UNDERCOUNT=1` is the replay mode: the test then
//! fails unless it saw at least one undercount.
//!
//! Knobs for measuring: `REMAP_MOVE_UNDERCOUNT_SECS` (default 10, 60 in the replay mode), `REMAP_MOVE_UNDERCOUNT_PAGES`
//! (batch size, default 32), `REMAP_MOVE_UNDERCOUNT_ALL=1` (keep going after the first hit, to
//! measure the hit rate), `REMAP_MOVE_UNDERCOUNT_NO_COMPACT=1` (the control: no migration),
//! `REMAP_MOVE_UNDERCOUNT_FRESH` (new regions, so new frames, every that many rounds; default 1,
//! 0 never).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remap::inspect::{PageState, Pagemap};
use remap::Region;
use test_support::{require, Need};
use uffd::{Features, MoveFlags, RangeError, RegisterMode, Uffd};

/// The tag in the first word of page `index`: unique within the run, never zero.
fn tag(index: usize) -> u64 {
    0x7265_6d61_7000_0000 | index as u64
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// Not absent: present, or a swap/migration entry (pagemap shows a migration entry as swapped).
fn occupied(state: PageState) -> bool {
    !matches!(state, PageState::Absent)
}

fn pfn(state: PageState) -> Option<u64> {
    match state {
        PageState::Present { pfn, .. } => pfn,
        _ => None,
    }
}

/// One MOVE whose kernel count was below what the page tables show moved.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Undercount {
    /// How many MOVEs ran before it.
    after_moves: u64,
    /// Since the start.
    at: Duration,
    /// Pages requested.
    requested: usize,
    /// The ioctl's result.
    result: Result<usize, RangeError>,
    /// Pages the kernel counted.
    reported: usize,
    /// Pages that really moved.
    moved: usize,
    /// The source states of the requested pages before the MOVE: `P` present, `S` a swap or
    /// migration entry, `-` absent; the uncounted pages are in brackets.
    before: String,
    /// For each uncounted page: `m` changed frame during the MOVE (migration hit it), `=` kept
    /// its frame, `?` no frame to compare (an entry, not a page, before or after).
    migrated: String,
}

struct Pair {
    a: Region,
    b: Region,
    pages: usize,
    page: usize,
}

impl Pair {
    fn side(&self, on_a: bool) -> &Region {
        if on_a {
            &self.a
        } else {
            &self.b
        }
    }
}

/// Two registered regions of `pages` pages, every page tagged and in `a`.
///
/// Fresh regions get fresh frames: after a compaction the free pages are where the migration
/// scanner emptied them, so new pages are where the next compaction migrates from.
fn new_pair(uffd: &Uffd, pages: usize, page: usize) -> Pair {
    let pair = Pair {
        a: Region::builder(pages * page).build().expect("region a"),
        b: Region::builder(pages * page).build().expect("region b"),
        pages,
        page,
    };
    // Tag before registering: a write to a missing page of a registered range would wait for a
    // fault handler this test does not run.
    for index in 0..pages {
        pair.a.write_u64(index * page, tag(index));
    }
    for r in [&pair.a, &pair.b] {
        r.all_pages()
            .register(uffd, RegisterMode::MISSING)
            .expect("register");
    }
    pair
}

/// Checks that every page is at exactly one of its two places, with its tag; returns how many
/// pages of `[first, pages)` are at `to` (which must be a prefix).
fn check_and_count(
    pair: &Pair,
    pagemap: &Pagemap,
    first: usize,
    from_a: bool,
    context: &str,
) -> usize {
    let from = pair.side(from_a);
    let to = pair.side(!from_a);
    let n = pair.pages - first;
    let src = pagemap.states(from.page_addr(first), n).expect("pagemap");
    let dst = pagemap.states(to.page_addr(first), n).expect("pagemap");
    let mut moved = 0;
    for j in 0..n {
        let index = first + j;
        let (s, d) = (occupied(src[j]), occupied(dst[j]));
        assert!(
            s != d,
            "{context}: page {index} is at {} (source {:?}, destination {:?}): lost or doubled",
            if s { "both places" } else { "neither place" },
            src[j],
            dst[j]
        );
        let (region, state) = if d { (to, dst[j]) } else { (from, src[j]) };
        let word = region.read_u64(index * pair.page);
        assert_eq!(
            word,
            tag(index),
            "{context}: page {index} ({state:?}) lost its tag"
        );
        if d {
            assert_eq!(
                moved, j,
                "{context}: the moved pages are not a prefix (page {index} moved, an earlier one did not)"
            );
            moved += 1;
        }
    }
    moved
}

#[test]
fn move_racing_migration_counts_every_moved_page() {
    require!(Need::Move, Need::Root);
    let expect = env_flag("REMAP_EXPECT_MOVE_UNDERCOUNT");
    let keep_going = env_flag("REMAP_MOVE_UNDERCOUNT_ALL");
    let compact = !env_flag("REMAP_MOVE_UNDERCOUNT_NO_COMPACT");
    // The first hit takes 2-25 s on the machine of the finding: the replay mode waits longer for it.
    let duration = Duration::from_secs(env_number(
        "REMAP_MOVE_UNDERCOUNT_SECS",
        if expect { 60 } else { 10 },
    ));
    let pages = usize::try_from(env_number("REMAP_MOVE_UNDERCOUNT_PAGES", 32)).expect("pages");
    let fresh_every = env_number("REMAP_MOVE_UNDERCOUNT_FRESH", 1);
    let page = rustix::param::page_size();

    let uffd = Uffd::builder()
        .features(Features::MOVE)
        .create()
        .expect("userfaultfd");
    let mut pair = new_pair(&uffd, pages, page);
    let pagemap = Pagemap::open().expect("pagemap");

    let stop = Arc::new(AtomicBool::new(false));
    let compactions = Arc::new(AtomicU64::new(0));
    let compactor = compact.then(|| {
        let (stop, compactions) = (Arc::clone(&stop), Arc::clone(&compactions));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::fs::write("/proc/sys/vm/compact_memory", "1").expect("compact_memory");
                compactions.fetch_add(1, Ordering::Relaxed);
            }
        })
    });

    let start = Instant::now();
    let mut moves = 0u64;
    let mut migrated_pages = 0u64;
    let mut results = std::collections::BTreeMap::<String, u64>::new();
    let mut undercounts = Vec::new();
    let mut from_a = true;
    let mut rounds = 0u64;
    'run: while start.elapsed() < duration {
        rounds += 1;
        if fresh_every > 0 && rounds % fresh_every == 0 {
            check_and_count(&pair, &pagemap, 0, from_a, "before refreshing");
            pair = new_pair(&uffd, pages, page);
            from_a = true;
        }
        // Move every page from one side to the other, following the kernel's count where it is
        // right and the page tables where it is not.
        let mut first = 0;
        let mut stuck = 0;
        while first < pages {
            let (from, to) = (pair.side(from_a), pair.side(!from_a));
            let n = pages - first;
            let before = pagemap.states(from.page_addr(first), n).expect("pagemap");
            // SAFETY: both ranges are this test's own registered mappings, of `n` pages from
            // `first`; no Rust reference points into them (all access is through Region's word
            // accessors, on this thread).
            let result = unsafe {
                uffd.move_pages(
                    to.as_ptr().wrapping_add(first * page),
                    from.as_ptr().wrapping_add(first * page),
                    n * page,
                    MoveFlags::empty(),
                )
            };
            moves += 1;
            let reported = match result {
                Ok(len) => len,
                Err(e) => e.done(),
            } / page;
            let key = match result {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{e:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            };
            *results.entry(key).or_default() += 1;
            let context = format!("MOVE {moves} of pages {first}..{pages} -> {result:?}");
            let moved = check_and_count(&pair, &pagemap, first, from_a, &context);
            let after = pagemap.states(to.page_addr(first), moved).expect("pagemap");
            migrated_pages += before
                .iter()
                .zip(&after)
                .filter(|(b, a)| pfn(**b).is_some() && pfn(**a).is_some() && pfn(**b) != pfn(**a))
                .count() as u64;
            assert!(
                moved >= reported,
                "{context}: the kernel counted {reported} pages but only {moved} moved"
            );
            if moved > reported {
                let hit = Undercount {
                    after_moves: moves,
                    at: start.elapsed(),
                    requested: n,
                    result,
                    reported,
                    moved,
                    before: before
                        .iter()
                        .enumerate()
                        .map(|(j, st)| {
                            let c = match st {
                                PageState::Present { .. } => "P",
                                PageState::Swapped => "S",
                                PageState::Absent => "-",
                            };
                            match j {
                                _ if j == reported && j + 1 == moved => format!("[{c}]"),
                                _ if j == reported => format!("[{c}"),
                                _ if j + 1 == moved => format!("{c}]"),
                                _ => c.to_owned(),
                            }
                        })
                        .collect(),
                    migrated: (reported..moved)
                        .map(|j| match (pfn(before[j]), pfn(after[j])) {
                            (Some(b), Some(a)) if b != a => 'm',
                            (Some(_), Some(_)) => '=',
                            _ => '?',
                        })
                        .collect(),
                };
                eprintln!("undercount: {hit:?}");
                undercounts.push(hit);
                if !keep_going {
                    break 'run;
                }
            }
            if moved == 0 {
                // No progress: EAGAIN or EBUSY while a page is being migrated. Anything else, or
                // no progress for long, is a failure of this test's set-up.
                assert!(
                    matches!(
                        result,
                        Err(RangeError::EventsPending { .. } | RangeError::Busy { .. })
                    ),
                    "{context}: no progress"
                );
                stuck += 1;
                assert!(stuck < 100_000, "{context}: no progress 100000 times");
                std::thread::yield_now();
            } else {
                stuck = 0;
            }
            first += moved;
        }
        from_a = !from_a;
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(c) = compactor {
        c.join().expect("compactor thread");
    }
    // Whatever happened, every page is where the bookkeeping says, with its tag.
    check_and_count(&pair, &pagemap, 0, from_a, "at the end");

    eprintln!(
        "move_undercount: {} undercounts in {moves} MOVEs of up to {pages} pages over {elapsed:?} \
         ({} compactions, {migrated_pages} pages changed frame during a MOVE); results {results:?}; \
         first hit {:?}",
        undercounts.len(),
        compactions.load(Ordering::Relaxed),
        undercounts.first().map(|u| u.at),
    );
    if expect {
        assert!(
            !undercounts.is_empty(),
            "REMAP_EXPECT_MOVE_UNDERCOUNT=1 but no MOVE moved more than it reported in {moves} MOVEs"
        );
    }
}
