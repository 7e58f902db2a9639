//! Set-up errors keep what the system said: the io::Error (with its errno) as the source; the
//! run's cgroup holds the regions' pages and what the process faults in while its main thread is
//! there, nothing the harness faulted in before.

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
fn only_the_rseq_tunable_set_to_zero_turns_rseq_off() {
    assert!(rseq_off_in("glibc.pthread.rseq=0"));
    assert!(rseq_off_in("glibc.malloc.check=3:glibc.pthread.rseq=0"));
    assert!(!rseq_off_in(""));
    assert!(!rseq_off_in("glibc.pthread.rseq=1"));
    assert!(!rseq_off_in("glibc.pthread.rseq=00:glibc.malloc.check=0"));
}

const MIB: usize = 1 << 20;

/// A run's cgroup, KSM and swap are the machine's: one guard at a time (a second `apply` would
/// see the first as another run). Held by the parent while its child runs the test.
fn one_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MACHINE.lock().unwrap_or_else(|p| p.into_inner())
}

fn has_memcg_v1(test: &str) -> bool {
    let there = Path::new(MEMCG_V1).join("memory.limit_in_bytes").exists();
    if !there {
        test_support::skip(test, "the cgroup v1 memory controller");
    }
    there
}

/// The set-up of the cgroup tests: in a child of its own (they move threads between cgroups),
/// one at a time, a guard with a 256 MiB run cgroup applied. Returns the lock, the guard, the
/// cgroup's directory and the process's own memory cgroup; `None` where the test is skipped (no
/// cgroup v1 memory controller) or this is the parent, whose child ran the test.
fn in_a_run_cgroup(
    test: &str,
) -> Option<(
    std::sync::MutexGuard<'static, ()>,
    MachineGuard,
    PathBuf,
    PathBuf,
)> {
    if !has_memcg_v1(test) {
        return None;
    }
    let one_run = one_run_at_a_time();
    if test_support::child::run_in_child(Duration::from_secs(120)) {
        return None;
    }
    let guard = MachineGuard::apply(&Wanted {
        cgroup_limit: Some(256 << 20),
        ksm: false,
        swap: false,
    })
    .unwrap_or_else(|failed| panic!("applying: {}", error_chain(&failed.1)));
    let dir = guard.cgroup().expect("a cgroup").to_path_buf();
    let home = own_memcg().expect("the process's memory cgroup");
    Some((one_run, guard, dir, home))
}

fn touch(map: &crate::sys::Mapping) {
    for page in 0..map.pages() {
        map.write_word(page, 0, 1);
    }
}

/// The memory cgroup (v1) of the calling thread, from `/proc/thread-self/cgroup`.
fn thread_memcg() -> PathBuf {
    let text = read("/proc/thread-self/cgroup").expect("/proc/thread-self/cgroup");
    text.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| Path::new(MEMCG_V1).join(path.trim_start_matches('/')))
        })
        .expect("a memory controller line")
}

/// During a run the kernel copies the regions' pages (copy-on-write after a fork or a KSM merge,
/// THP collapse) into new pages, charged to the cgroup of the mm's owner; with the process
/// outside the cgroup they went home and the cgroup drained within seconds (no reclaim
/// pressure left). With the main thread alone in the cgroup, a page any thread faults in is
/// charged to the cgroup, what was charged before stays where it was (the other threads' stacks
/// and control blocks), the other threads stay home, and leaving ends it; the OOM guard takes the
/// limit off when it stops.
#[test]
fn the_main_thread_alone_in_the_cgroup_charges_what_any_thread_faults_in_to_it() {
    test_support::require!(test_support::Need::Root);
    let Some((_one_run, mut guard, dir, home)) = in_a_run_cgroup(
        "the_main_thread_alone_in_the_cgroup_charges_what_any_thread_faults_in_to_it",
    ) else {
        return;
    };
    let usage = || cgroup_value(&dir, "memory.usage_in_bytes").expect("usage");
    // A harness thread, started (its stack and control block faulted in) before the main thread
    // enters, that maps and touches memory when asked.
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (tell, told) = std::sync::mpsc::channel::<(PathBuf, crate::sys::Mapping)>();
    let worker = std::thread::spawn(move || {
        for () in asked {
            let map = crate::sys::Mapping::new(16 * MIB).expect("a mapping");
            touch(&map);
            tell.send((thread_memcg(), map))
                .expect("the main thread waits");
        }
    });
    let early = crate::sys::Mapping::new(16 * MIB).expect("early memory");
    touch(&early);
    let before = usage();

    let owner = guard.mm_owner();
    owner.enter().expect("entering the cgroup");
    // `/proc/self/cgroup` is the main thread's; this test runs on a thread of its own.
    assert_eq!(
        own_memcg().expect("memcg"),
        dir,
        "the main thread is in the run's cgroup"
    );
    assert_eq!(thread_memcg(), home, "the test's thread stays home");
    let entered = usage();
    assert!(
        entered < before + MIB as u64,
        "entering moved charges of memory touched before into the cgroup: {before} -> {entered} bytes"
    );
    ask.send(()).expect("the worker runs");
    let (worker_memcg, inside) = told.recv().expect("the worker's mapping");
    assert_eq!(
        worker_memcg, home,
        "the other threads stay in the process's own cgroup"
    );
    let charged = usage();
    // Up to a charge batch per CPU (64 pages, `MEMCG_CHARGE_BATCH`) can have been precharged to
    // the cgroup's per-CPU stock before `entered` was read, and the worker's first faults take
    // pages from it without raising the usage again (seen: 16 MiB less 6 pages, `entered`
    // exactly one batch): so 1 MiB of slack, as the other checks here have.
    assert!(
        charged + MIB as u64 >= entered + (16 * MIB) as u64,
        "a page another thread faults in while the main thread is in the cgroup is charged to it: {entered} -> {charged} bytes"
    );
    touch(&early);
    assert!(
        usage() < charged + MIB as u64,
        "memory charged at home before entering stays at home"
    );

    // A fork happens with the main thread at home: what is faulted in meanwhile is charged there.
    let (in_home, at_home) = owner
        .at_home(|| {
            ask.send(()).expect("the worker runs");
            (
                own_memcg().expect("memcg"),
                told.recv().expect("the worker's mapping").1,
            )
        })
        .expect("moving home and back");
    assert_eq!(in_home, home, "at_home runs with the main thread home");
    assert_eq!(
        own_memcg().expect("memcg"),
        dir,
        "and puts it back in the cgroup"
    );
    let after_home = usage();
    assert!(
        after_home < charged + (4 * MIB) as u64,
        "memory faulted in at_home is charged to the cgroup: {charged} -> {after_home} bytes"
    );

    owner.leave().expect("leaving the cgroup");
    assert_eq!(
        own_memcg().expect("memcg"),
        home,
        "the main thread is back home"
    );
    ask.send(()).expect("the worker runs");
    let (_, outside) = told.recv().expect("the worker's mapping");
    let after = usage();
    assert!(
        after < charged + (4 * MIB) as u64,
        "memory faulted in after leaving is charged to the cgroup: {charged} -> {after} bytes"
    );
    drop(ask);
    worker.join().expect("the worker");

    let stop = std::sync::atomic::AtomicBool::new(true);
    assert_eq!(oom_guard(&dir, &stop), 0, "no OOM to rescue");
    let limit = cgroup_value(&dir, "memory.limit_in_bytes").expect("limit");
    assert!(
        limit > 1 << 60,
        "the stopped OOM guard takes the limit off: {limit} bytes"
    );
    drop((early, inside, at_home, outside));
    assert_eq!(guard.restore(), Vec::<String>::new());
}

/// The whole process in a limited cgroup with `oom_kill_disable` is what killed about one
/// `remap torture` run in ten with SIGSEGV (a harness thread's swapped-out rseq area could not be
/// charged back in, `docs/findings/memcg-oom-disabled-rseq-sigsegv.md`), or hung it (the main
/// thread waiting on the cgroup after the OOM guard stopped). Only the pages placed in the
/// regions may be charged to it; the process lives outside it before, during and after.
#[test]
fn only_the_placed_pages_are_charged_to_the_cgroup_and_the_process_stays_outside() {
    test_support::require!(test_support::Need::Root);
    let Some((_one_run, mut guard, dir, home)) = in_a_run_cgroup(
        "only_the_placed_pages_are_charged_to_the_cgroup_and_the_process_stays_outside",
    ) else {
        return;
    };
    assert_ne!(home, dir, "apply put the process in the run's cgroup");
    let usage = || cgroup_value(&dir, "memory.usage_in_bytes").expect("usage");
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
    // 1 MiB of slack for pages served from a per-CPU charge stock precharged before `before`
    // (see the test above).
    assert!(
        placed + MIB as u64 >= before + (16 * MIB) as u64,
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
