//! Set-up errors keep what the system said: the io::Error (with its errno) as the source; the
//! run's cgroup holds the regions' pages and nothing of the harness.

use std::error::Error as _;

use super::*;
use crate::TortureError;

#[test]
fn a_failed_read_keeps_the_io_error_and_its_errno() {
    let e = read("/nonexistent/remap-torture").unwrap_err();
    let MachineError::File { path, source, .. } = &e else {
        panic!("expected a file error, got {e:?}");
    };
    assert_eq!(path, Path::new("/nonexistent/remap-torture"));
    assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
    assert!(e.source().is_some(), "the io::Error is the source");
    let chain = error_chain(&e);
    assert!(
        chain.starts_with("reading /nonexistent/remap-torture: "),
        "{chain}"
    );
    assert!(chain.contains("os error 2"), "{chain}");
}

#[test]
fn a_machine_error_in_a_torture_error_is_its_source_with_what_was_not_restored() {
    let e = TortureError::Machine {
        source: write("/nonexistent/remap-torture", "1").unwrap_err(),
        not_restored: vec!["removing /x: busy".into()],
    };
    let source = e.source().expect("the machine error is the source");
    assert!(
        source.to_string().starts_with("writing \"1\" to"),
        "{source}"
    );
    let io = source.source().expect("and the io::Error its source");
    assert!(io.to_string().contains("os error 2"), "{io}");
    assert!(e.to_string().contains("removing /x: busy"), "{e}");
}

#[test]
fn a_failed_helper_program_says_how_it_ended() {
    let e = run(&mut Command::new("false")).unwrap_err();
    assert!(
        matches!(e, MachineError::Command { ref status, .. } if !status.success()),
        "{e:?}"
    );
    let e = run(&mut Command::new("/nonexistent/remap-torture-helper")).unwrap_err();
    let MachineError::Spawn { source, .. } = &e else {
        panic!("expected a spawn error, got {e:?}");
    };
    assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
}

/// The whole process in a limited cgroup with `oom_kill_disable` is what killed about one
/// `remap torture` run in ten with SIGSEGV (a harness thread's swapped-out rseq area could not be
/// charged back in, `docs/findings/memcg-oom-disabled-rseq-sigsegv.md`), or hung it (the main
/// thread waiting on the cgroup after the OOM guard stopped). Only the pages placed in the
/// regions may be charged to it; the process lives outside it before, during and after.
#[test]
fn only_the_placed_pages_are_charged_to_the_cgroup_and_the_process_stays_outside() {
    test_support::require!(test_support::Need::Root);
    if !Path::new(MEMCG_V1).join("memory.limit_in_bytes").exists() {
        test_support::skip(
            "only_the_placed_pages_are_charged_to_the_cgroup_and_the_process_stays_outside",
            "the cgroup v1 memory controller",
        );
        return;
    }
    // Moves the whole process between cgroups: alone in a process of its own.
    if test_support::child::run_in_child(Duration::from_secs(120)) {
        return;
    }
    const MIB: usize = 1 << 20;
    let mut guard = MachineGuard::apply(&Wanted {
        cgroup_limit: Some(256 << 20),
        ksm: false,
        swap: false,
    })
    .unwrap_or_else(|failed| panic!("applying: {}", error_chain(&failed.1)));
    let dir = guard.cgroup().expect("a cgroup").to_path_buf();
    let home = own_memcg().expect("the process's memory cgroup");
    assert_ne!(home, dir, "apply put the process in the run's cgroup");
    let usage = || cgroup_value(&dir, "memory.usage_in_bytes").expect("usage");
    let touch = |map: &crate::sys::Mapping| {
        for page in 0..map.pages() {
            map.write_word(page, 0, 1);
        }
    };
    let regions = crate::sys::Mapping::new(16 * MIB).expect("a region");
    let before = usage();
    let inside = guard
        .charged_to_cgroup(|| {
            touch(&regions);
            own_memcg().expect("the memory cgroup while placing")
        })
        .expect("placing in the cgroup");
    assert_eq!(inside, dir, "placing runs in the run's cgroup");
    assert_eq!(own_memcg().expect("memcg"), home, "back home after placing");
    let placed = usage();
    assert!(
        placed >= before + (16 * MIB) as u64,
        "the placed pages are charged to the cgroup: {before} -> {placed} bytes"
    );
    // What the harness faults in afterwards is charged at home.
    let harness = crate::sys::Mapping::new(16 * MIB).expect("harness memory");
    touch(&harness);
    let later = usage();
    assert!(
        later < placed + (4 * MIB) as u64,
        "memory touched after placing is charged to the cgroup: {placed} -> {later} bytes"
    );
    drop((regions, harness));
    assert_eq!(guard.restore(), Vec::<String>::new());
}
