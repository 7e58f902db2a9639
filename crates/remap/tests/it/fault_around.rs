//! Fault-around (a run of pages resolved per fault, in one ioctl) against the real kernel: the
//! window's boundaries (region end, pages already present, what the source has), THP regions,
//! concurrency, SIGBUS mode, and that every page reads the right content afterwards. Each
//! scenario runs in a child process with a timeout: a fault left unresolved would hang.

use std::collections::HashSet;

use remap::inspect::{Pagemap, PM_PRESENT};
use remap::pattern::pattern_word;
use remap::region::{Region, Thp, HUGE_PAGE_SIZE};
use remap::server::{
    CopySource, FaultServer, FnSource, MovePool, PageSource, ServerStats, SigbusServer,
};
use test_support::{require, Need};

use crate::child::{self, Outcome, Scenario};
use crate::pattern::{fill_pattern, page, pattern_image, pattern_pool};

const SEED: u64 = 0xa20d;
const DISPATCHER: &str = "fault_around::child_scenarios";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "region-end",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    Scenario {
        name: "present-neighbour",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    Scenario {
        name: "source-holes",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    Scenario {
        name: "thp",
        outcome: Outcome::Pass,
        needs: &[Need::Move, Need::Thp],
    },
    Scenario {
        name: "concurrent",
        outcome: Outcome::Pass,
        needs: &[Need::Move],
    },
    Scenario {
        name: "sigbus",
        outcome: Outcome::Pass,
        needs: &[Need::Move, Need::Feature(uffd::Features::SIGBUS)],
    },
];

/// The three sources that have fault-around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Copy,
    Fn,
    Move,
}

const KINDS: [Kind; 3] = [Kind::Copy, Kind::Fn, Kind::Move];

/// A pool of `pages` pages (THP-backed or not), slot `i` holding the pattern of logical page `i`.
fn pool(pages: usize, thp: bool) -> MovePool {
    let region = if thp {
        Region::builder(pages * page())
            .thp(Thp::Huge)
            .huge_aligned(true)
            .build()
    } else {
        Region::builder(pages * page()).thp(Thp::NoHuge).build()
    }
    .unwrap();
    pattern_pool(SEED, region)
}

/// Whether page `i` of `region` is present, from pagemap (reading it would fault).
fn present(region: &Region, i: usize) -> bool {
    let entry = Pagemap::open().unwrap().entry(region.page_addr(i)).unwrap();
    entry & PM_PRESENT != 0
}

/// The logical page whose pattern page `i` of `region` holds (of `0..logical`), checked word
/// by word; panics if it holds none.
fn logical_page(region: &Region, i: usize, logical: usize) -> usize {
    let first = region.read_u64(i * page());
    let q = (0..logical)
        .find(|&q| pattern_word(SEED, q as u64, 0) == first)
        .unwrap_or_else(|| panic!("page {i} holds no pattern page (word 0 {first:#x})"));
    remap::pattern::verify_page(region, i, SEED, q as u64)
        .unwrap_or_else(|m| panic!("page {i}: {m}"));
    q
}

/// Checks that the pages `pages` of `region` hold what `kind` serves: pattern page `i` at page
/// `i` for a copying source, for a pool some pattern page, each at most once.
fn check_content(kind: Kind, region: &Region, pages: std::ops::Range<usize>, logical: usize) {
    let mut seen = HashSet::new();
    for i in pages {
        let q = logical_page(region, i, logical);
        match kind {
            Kind::Copy | Kind::Fn => assert_eq!(q, i, "{kind:?}: page {i} holds page {q}"),
            Kind::Move => assert!(seen.insert(q), "pool page {q} served twice (at page {i})"),
        }
    }
}

/// The stats once `want` holds of them, or after 10 s whatever they are: a run's count is
/// corrected just after its ioctl woke the faulting thread, so a thread that reads them right
/// after its touch may see the run's first guess for a moment.
fn stats_when(stats: &dyn Fn() -> ServerStats, want: impl Fn(&ServerStats) -> bool) -> ServerStats {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = stats();
        if want(&s) || std::time::Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn served_pages(stats: &ServerStats) -> u64 {
    stats.served() + stats.pages_around
}

/// Runs `body` with a server of `kind` over `region`, with a window of `window` pages and a
/// source of `source_pages` pattern pages.
fn with_server(
    kind: Kind,
    region: Region,
    source_pages: usize,
    window: usize,
    threads: usize,
    body: impl FnOnce(&Region, &dyn Fn() -> ServerStats),
) {
    fn run<S: PageSource>(
        server: FaultServer<S>,
        body: impl FnOnce(&Region, &dyn Fn() -> ServerStats),
    ) {
        body(server.region(), &|| server.stats());
        server.stop().unwrap();
    }
    match kind {
        Kind::Copy => {
            let source = CopySource::new(pattern_image(SEED, source_pages)).fault_around(window);
            run(
                FaultServer::builder(region, source)
                    .threads(threads)
                    .start()
                    .unwrap(),
                body,
            );
        }
        Kind::Fn => {
            let source =
                FnSource::new(|offset, buf| fill_pattern(SEED, offset, buf)).fault_around(window);
            run(
                FaultServer::builder(region, source)
                    .threads(threads)
                    .start()
                    .unwrap(),
                body,
            );
        }
        Kind::Move => {
            let source = pool(source_pages, false).fault_around(window);
            run(
                FaultServer::builder(region, source)
                    .threads(threads)
                    .start()
                    .unwrap(),
                body,
            );
        }
    }
}

/// The window is clipped at the end of the region, and a run stops at a page already present.
fn region_end_child() {
    for kind in KINDS {
        let region = Region::builder(20 * page())
            .thp(Thp::NoHuge)
            .build()
            .unwrap();
        with_server(kind, region, 64, 16, 1, |region, stats| {
            let _ = region.read_u64(0);
            let s = stats_when(stats, |s| {
                (s.faults, s.served(), s.pages_around) == (1, 1, 15)
            });
            assert_eq!(
                (s.faults, s.served(), s.pages_around),
                (1, 1, 15),
                "{kind:?}"
            );
            assert!((0..16).all(|i| present(region, i)) && !present(region, 16));
            // From page 17: clipped at the region's end after 3 pages.
            let _ = region.read_u64(17 * page());
            let s = stats_when(stats, |s| (s.faults, s.pages_around) == (2, 17));
            assert_eq!((s.faults, s.pages_around), (2, 17), "{kind:?}: {s}");
            // Page 16: its window runs into page 17, present: one page.
            let _ = region.read_u64(16 * page());
            let s = stats_when(stats, |s| {
                (s.faults, s.served(), s.pages_around) == (3, 3, 17)
            });
            assert_eq!(
                (s.faults, s.served(), s.pages_around),
                (3, 3, 17),
                "{kind:?}"
            );
            assert_eq!(s.errors + s.races + s.fallbacks, 0, "{kind:?}: {s}");
            check_content(kind, region, 0..20, 64);
        });
    }
}

/// A page already present inside the window (written before the region was served) is never
/// overwritten: the run stops before it, and the pages after it fault on their own.
fn present_neighbour_child() {
    const MARK: u64 = 0xabad_cafe_0000_0005;
    for kind in KINDS {
        let region = Region::builder(32 * page())
            .thp(Thp::NoHuge)
            .build()
            .unwrap();
        for w in 0..page() / 8 {
            region.write_u64(5 * page() + w * 8, MARK + w as u64);
        }
        with_server(kind, region, 64, 16, 1, |region, stats| {
            let _ = region.read_u64(0);
            let s = stats_when(stats, |s| {
                (s.faults, s.served(), s.pages_around) == (1, 1, 4)
            });
            assert_eq!(
                (s.faults, s.served(), s.pages_around),
                (1, 1, 4),
                "{kind:?}: {s}"
            );
            assert!(
                (6..16).all(|i| !present(region, i)),
                "{kind:?}: past page 5"
            );
            // Page 7: its own run, past page 5, to the window's end.
            let _ = region.read_u64(7 * page());
            // Page 6: one page, stopped by page 7.
            let _ = region.read_u64(6 * page());
            for i in (0..32).filter(|&i| i != 5) {
                let _ = region.read_u64(i * page());
            }
            let s = stats_when(stats, |s| served_pages(s) == 31);
            assert_eq!(served_pages(&s), 31, "{kind:?}: every page but 5 once: {s}");
            assert_eq!(s.errors + s.races + s.fallbacks, 0, "{kind:?}: {s}");
            for w in 0..page() / 8 {
                assert_eq!(
                    region.read_u64(5 * page() + w * 8),
                    MARK + w as u64,
                    "{kind:?}"
                );
            }
            check_content(kind, region, 0..5, 64);
            check_content(kind, region, 6..32, 64);
        });
    }
}

/// What the source has bounds the run: a pool with fewer pages than the window, a pool whose
/// free slots are not contiguous, a copy image shorter than the region.
fn source_holes_child() {
    // A pool of 5 pages, a window of 16: one run of 5, then the zero page.
    let region = Region::builder(32 * page())
        .thp(Thp::NoHuge)
        .build()
        .unwrap();
    let server = FaultServer::builder(region, pool(5, false).fault_around(16))
        .start()
        .unwrap();
    let region = server.region();
    let _ = region.read_u64(0);
    let s = stats_when(&|| server.stats(), |s| {
        (s.faults, s.served_move, s.pages_around) == (1, 1, 4)
    });
    assert_eq!((s.faults, s.served_move, s.pages_around), (1, 1, 4), "{s}");
    assert_eq!(server.source().available(), 0);
    assert!(!present(region, 5));
    assert_eq!(
        region.read_u64(5 * page()),
        0,
        "an empty pool serves the zero page"
    );
    assert_eq!(server.stats().served_zero, 1);
    check_content(Kind::Move, region, 0..5, 5);
    // Give pages 1 and 3 back (to slots 0 and 1, the empty ones found first), then touch page
    // 1: a lease of the two contiguous free slots, whose MOVE stops at page 2 (present) after
    // one page; the other page is free again, and serves page 3.
    server.source().give_back(region, page()).unwrap();
    server.source().give_back(region, 3 * page()).unwrap();
    assert_eq!(server.source().available(), 2);
    assert!(!present(region, 1) && !present(region, 3));
    let _ = region.read_u64(page());
    let s = stats_when(&|| server.stats(), |s| {
        (s.faults, s.served_move, s.pages_around) == (3, 2, 4)
    });
    assert_eq!((s.faults, s.served_move, s.pages_around), (3, 2, 4), "{s}");
    assert!(!present(region, 3), "the run stopped at page 2");
    assert_eq!(
        server.source().available(),
        1,
        "its second page is free again"
    );
    let _ = region.read_u64(3 * page());
    assert_eq!(server.source().available(), 0);
    let s = server.stats();
    assert_eq!(s.errors + s.races, 0, "{s}");
    check_content(Kind::Move, region, 0..5, 5);
    drop(server.stop().unwrap());

    // A copy image of 10.5 pages, a region of 32: one run of 11 (the last half-page padded with
    // zeros), then zero pages one fault each.
    let mut image = pattern_image(SEED, 11);
    image.truncate(10 * page() + page() / 2);
    let region = Region::builder(32 * page())
        .thp(Thp::NoHuge)
        .build()
        .unwrap();
    let server = FaultServer::builder(region, CopySource::new(image).fault_around(16))
        .start()
        .unwrap();
    let region = server.region();
    let _ = region.read_u64(0);
    let s = stats_when(&|| server.stats(), |s| {
        (s.faults, s.served_copy, s.pages_around) == (1, 1, 10)
    });
    assert_eq!((s.faults, s.served_copy, s.pages_around), (1, 1, 10), "{s}");
    assert!(!present(region, 11));
    check_content(Kind::Copy, region, 0..10, 11);
    assert_eq!(
        region.read_u64(10 * page()),
        pattern_word(SEED, 10, 0),
        "the image's last half page"
    );
    assert_eq!(region.read_u64(10 * page() + page() / 2), 0, "zero-padded");
    for i in 11..32 {
        assert_eq!(
            region.read_u64(i * page() + 8),
            0,
            "page {i} beyond the image"
        );
    }
    let s = stats_when(&|| server.stats(), |s| {
        (s.faults, s.served_zero, s.pages_around) == (22, 21, 10)
    });
    assert_eq!(
        (s.faults, s.served_zero, s.pages_around),
        (22, 21, 10),
        "{s}"
    );
    drop(server.stop().unwrap());
}

/// A THP-advised, huge-aligned served region, and a pool backed by a THP: runs move or copy
/// into it (and out of the huge page) and every page reads right.
fn thp_child() {
    let pages = HUGE_PAGE_SIZE / page() * 2;
    let thp_region = || {
        Region::builder(2 * HUGE_PAGE_SIZE)
            .thp(Thp::Huge)
            .huge_aligned(true)
            .build()
            .unwrap()
    };
    for kind in KINDS {
        let body = |region: &Region, stats: &dyn Fn() -> ServerStats| {
            for i in 0..pages {
                let _ = region.read_u64(i * page());
            }
            let s = stats_when(stats, |s| served_pages(s) == pages as u64);
            assert_eq!(served_pages(&s), pages as u64, "{kind:?}: {s}");
            assert_eq!(s.faults, pages.div_ceil(16) as u64, "{kind:?}: {s}");
            assert_eq!(s.errors + s.races + s.fallbacks, 0, "{kind:?}: {s}");
            check_content(kind, region, 0..pages, pages);
        };
        if kind == Kind::Move {
            let pool = pool(pages, true);
            let server = FaultServer::builder(thp_region(), pool.fault_around(16))
                .start()
                .unwrap();
            body(server.region(), &|| server.stats());
            server.stop().unwrap();
        } else {
            with_server(kind, thp_region(), pages, 16, 1, body);
        }
    }
}

/// Two mutators touch every page, one in ascending order and one in a scattered order, served
/// by two handler threads: every page is served exactly once (runs, races and all) and holds
/// the right content.
fn concurrent_child() {
    let pages = 1024;
    // The pool's spare pages: a window per handler. A fault that finds every free page leased
    // waits for them, but at most 100 ms, and then (a handler preempted that long on a loaded
    // machine) answers a zero page, as documented; that is not what this counts.
    let spare = 2 * 16;
    for kind in KINDS {
        for round in 0..4 {
            let region = Region::builder(pages * page())
                .thp(Thp::NoHuge)
                .build()
                .unwrap();
            let logical = if kind == Kind::Move {
                pages + spare
            } else {
                pages
            };
            with_server(kind, region, logical, 16, 2, |region, stats| {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        for i in 0..pages {
                            let _ = region.read_u64(i * page());
                        }
                    });
                    s.spawn(|| {
                        for k in 0..pages {
                            let _ = region.read_u64((k * 389 + round * 7) % pages * page());
                        }
                    });
                });
                let s = stats_when(stats, |s| served_pages(s) == pages as u64);
                assert_eq!(
                    served_pages(&s),
                    pages as u64,
                    "{kind:?} round {round}: {s}"
                );
                assert_eq!(s.errors + s.fallbacks, 0, "{kind:?} round {round}: {s}");
                assert!(
                    s.faults < pages as u64,
                    "{kind:?}: fault-around saved no fault: {s}"
                );
                // Every source has a page for every fault: a zero page means the pool called
                // itself empty while it had pages.
                assert_eq!(s.served_zero, 0, "{kind:?} round {round}: {s}");
                check_content(kind, region, 0..pages, logical);
            });
        }
    }
}

/// SIGBUS mode: the faulting thread resolves a whole run in its signal handler.
fn sigbus_child() {
    let pages = 256;
    let region = Region::builder(pages * page())
        .thp(Thp::NoHuge)
        .build()
        .unwrap();
    let server = SigbusServer::start(
        region,
        CopySource::new(pattern_image(SEED, pages)).fault_around(16),
    )
    .unwrap();
    for i in 0..pages {
        let _ = server.region().read_u64(i * page());
    }
    let s = stats_when(&|| server.stats(), |s| {
        (s.faults, s.pages_around) == (16, 240)
    });
    assert_eq!((s.faults, s.pages_around), (16, 240), "{s}");
    check_content(Kind::Copy, server.region(), 0..pages, pages);
    drop(server.stop());

    let region = Region::builder(pages * page())
        .thp(Thp::NoHuge)
        .build()
        .unwrap();
    let server = SigbusServer::start(region, pool(pages, false).fault_around(16)).unwrap();
    for i in 0..pages {
        let _ = server.region().read_u64(i * page());
    }
    let s = stats_when(&|| server.stats(), |s| {
        (s.faults, s.served_move, s.pages_around) == (16, 16, 240)
    });
    assert_eq!(
        (s.faults, s.served_move, s.pages_around),
        (16, 16, 240),
        "{s}"
    );
    assert_eq!(server.source().available(), 0);
    check_content(Kind::Move, server.region(), 0..pages, pages);
    drop(server.stop());
}

#[track_caller]
fn run_child(scenario: &str) {
    child::expect_listed(DISPATCHER, SCENARIOS, scenario, Outcome::Pass);
}

#[test]
fn fault_around_window_is_clipped_at_the_region_end() {
    require!(Need::Move);
    run_child("region-end");
}

#[test]
fn fault_around_never_overwrites_a_present_page_in_the_window() {
    require!(Need::Move);
    run_child("present-neighbour");
}

#[test]
fn fault_around_is_bounded_by_what_the_source_has() {
    require!(Need::Move);
    run_child("source-holes");
}

#[test]
fn fault_around_into_and_out_of_thp_regions_serves_every_page_right() {
    require!(Need::Move, Need::Thp);
    run_child("thp");
}

#[test]
fn fault_around_under_concurrent_touches_serves_every_page_exactly_once() {
    require!(Need::Move);
    run_child("concurrent");
}

#[test]
fn fault_around_in_sigbus_mode_resolves_runs_in_the_signal_handler() {
    require!(Need::Move, Need::Feature(uffd::Features::SIGBUS));
    run_child("sigbus");
}

/// The body of the child processes above; run by hand (`--ignored`) it replays every scenario.
#[test]
#[ignore = "the body of child processes: run by the tests that spawn them"]
fn child_scenarios() {
    let Some(scenario) = child::scenario() else {
        child::run_table(DISPATCHER, SCENARIOS);
        return;
    };
    match scenario.as_str() {
        "region-end" => region_end_child(),
        "present-neighbour" => present_neighbour_child(),
        "source-holes" => source_holes_child(),
        "thp" => thp_child(),
        "concurrent" => concurrent_child(),
        "sigbus" => sigbus_child(),
        other => panic!("unknown scenario {other}"),
    }
}
