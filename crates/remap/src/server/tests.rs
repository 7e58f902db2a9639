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
    counters.served(&Resolution::Zero);
    counters.served(&Resolution::Copy(&[]));
    counters.served(&Resolution::Leave);
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
