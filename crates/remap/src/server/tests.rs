//! Unit tests for the server's bookkeeping.

use super::*;

#[test]
fn stats_served_sums_page_kinds() {
    let stats = ServerStats {
        served_zero: 1,
        served_copy: 2,
        served_move: 3,
        poisoned: 4,
        ..ServerStats::default()
    };
    assert_eq!(stats.served(), 6);
    assert!(stats.to_string().contains("copy 2"));
}

#[test]
fn counters_count_by_resolution_kind() {
    let counters = Counters::default();
    for resolution in [Resolution::Zero, Resolution::Copy(&[]), Resolution::Leave] {
        bump(counters.counter(&resolution));
    }
    let stats = counters.snapshot();
    assert_eq!(
        (stats.served_zero, stats.served_copy, stats.left),
        (1, 1, 1)
    );
}

#[test]
fn copy_source_slices_its_image_and_zero_fills_beyond() {
    let source = CopySource::new(
        (0..8192usize)
            .map(|i| u8::try_from(i / 4096 + 1).unwrap())
            .collect(),
    );
    let fault = |offset| Fault {
        offset,
        address: offset,
        len: 4096,
        write: false,
        thread_id: None,
    };
    let mut scratch = [];
    assert!(matches!(source.resolve(&fault(4096), &mut scratch), Resolution::Copy(b) if b[0] == 2));
    assert!(matches!(
        source.resolve(&fault(8192), &mut scratch),
        Resolution::Zero
    ));
}

#[test]
fn copy_source_pads_a_partial_last_page() {
    let page = rustix::param::page_size();
    let source = CopySource::new(vec![7; page + 100]);
    assert_eq!(source.image().len(), page + 100);
    let fault = Fault {
        offset: page,
        address: page,
        len: page,
        write: false,
        thread_id: None,
    };
    let mut scratch = [];
    let resolution = source.resolve(&fault, &mut scratch);
    match resolution {
        Resolution::Copy(bytes) => {
            assert_eq!(bytes.len(), page);
            assert!(bytes[..100].iter().all(|&b| b == 7));
            assert!(bytes[100..].iter().all(|&b| b == 0));
        }
        other => panic!("expected a padded copy, got {other:?}"),
    }
}

#[test]
fn give_back_waits_for_a_slot_in_flight_instead_of_reporting_full() {
    use test_support::{require, Need};
    require!(Need::Move);
    let page = rustix::param::page_size();
    let pool = MovePool::new(1).unwrap();
    // A handler is moving the only page out: its slot is in flight (as between `resolve` and
    // `move_done`).
    let lease = match pool.resolve(
        &Fault {
            offset: 0,
            address: 0,
            len: page,
            write: false,
            thread_id: None,
        },
        &mut [],
    ) {
        Resolution::Lease(lease) => lease,
        other => panic!("the pool has a page, got {other:?}"),
    };
    let offset = lease.offset();
    let from = crate::region::Region::new(page).unwrap();
    from.write_u64(0, 42);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            // The page leaves (as a MOVE out would take it), and the lease settles: empty.
            pool.region.madvise_dontneed(offset..offset + page).unwrap();
            drop(lease);
        });
        // Blocks until the slot settles, then moves our page in.
        pool.give_back(&from, 0).unwrap();
    });
    assert_eq!(pool.available(), 1);
}

/// A pool of one page shared by two threads that lease it and hand it back, over and over:
/// neither is ever told the pool is empty. The race this pins: a claimer's scan passes the slot
/// while the other holds it, and the other hands it back before the claimer checks for slots in
/// flight; the pool then has a free page and none in flight, and used to answer "empty" (a zero
/// page served from a pool with pages, seen as a zero page in the fault-around concurrency test).
#[test]
fn a_page_handed_back_while_another_thread_looks_is_found_not_reported_empty() {
    use test_support::{require, Need};
    require!(Need::Move);
    const ROUNDS: usize = 20_000;
    let page = rustix::param::page_size();
    let pool = MovePool::new(1).unwrap();
    let fault = Fault {
        offset: 0,
        address: 0,
        len: page,
        write: false,
        thread_id: None,
    };
    let empties: usize = std::thread::scope(|s| {
        let lessees: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut empties = 0;
                    for _ in 0..ROUNDS {
                        match pool.resolve(&fault, &mut []) {
                            // Dropped unsettled: the page is still there, so it is free again.
                            Resolution::Lease(lease) => drop(lease),
                            _ => empties += 1,
                        }
                    }
                    empties
                })
            })
            .collect();
        lessees.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(
        empties,
        0,
        "answered empty {empties} times of {}",
        2 * ROUNDS
    );
    assert_eq!(pool.available(), 1);
}

#[test]
fn retry_clock_doubles_within_a_generation_and_resets_on_a_new_one() {
    use super::retry::{RetryClock, MAX_BACKOFF, MIN_BACKOFF};
    let mut clock = RetryClock::new(7);
    assert!(!clock.new_generation(7));
    assert!(clock.new_generation(8));
    assert_eq!(clock.backoff(), MIN_BACKOFF);
    clock.retried(7);
    assert_eq!(clock.backoff(), MIN_BACKOFF * 2);
    for _ in 0..20 {
        clock.retried(7);
    }
    assert_eq!(clock.backoff(), MAX_BACKOFF);
    clock.retried(8);
    assert_eq!(clock.backoff(), MIN_BACKOFF);
    assert!(!clock.new_generation(8));
}
