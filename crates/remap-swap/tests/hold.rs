//! Swap holds against the real machine: set-up when none is active, sharing between holds and
//! between processes, the last release undoing it, and the clean-up after a holder that was
//! killed. Needs root and the zram driver, a machine whose own swap is off, and the machine's swap
//! to itself: no other remap process may hold swap meanwhile (the test must see remap's set-up
//! come and go), which `cargo test` gives it (one test binary at a time), a runner that runs
//! binaries side by side does not. One test: its steps share the machine's swap.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use remap_swap::{swap_active, undo_if_unused, SwapHold};

/// The child's mode: acquire, say so, wait for stdin to close (or be killed).
const CHILD_ENV: &str = "REMAP_SWAP_TEST_CHILD";

fn skip(what: &str) {
    assert!(
        std::env::var("UFFD_TESTS_REQUIRED").as_deref() != Ok("1"),
        "needs {what}, and UFFD_TESTS_REQUIRED=1 forbids skipping"
    );
    eprintln!("skipping holds_share_one_set_up_and_the_last_release_undoes_it: needs {what}");
}

#[test]
fn holds_share_one_set_up_and_the_last_release_undoes_it() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let hold = SwapHold::acquire().unwrap();
        println!("held {:?}", hold.set_up());
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return;
    }
    if !rustix::process::geteuid().is_root() {
        return skip("root");
    }
    // A set-up of ours left by an earlier run goes first; what stays is the machine's own.
    let _ = undo_if_unused();
    if swap_active() {
        return skip("a machine without swap of its own");
    }

    // Two holds in this process: the first sets up, the second shares it.
    let first = match SwapHold::acquire() {
        Ok(hold) => hold,
        Err(e) => return skip(&format!("zram swap ({e})")),
    };
    let device = first
        .set_up()
        .expect("nothing was active: the first hold sets up")
        .to_owned();
    assert!(swap_active());
    let second = SwapHold::acquire().unwrap();
    assert_eq!(
        second.set_up(),
        None,
        "the second hold shares the first's set-up"
    );
    assert_eq!(first.release().unwrap(), None, "another hold is left");
    assert!(swap_active());
    assert_eq!(
        second.release().unwrap(),
        Some(device.clone()),
        "the last one undoes it"
    );
    assert!(!swap_active(), "/proc/swaps still lists a swap area");

    // A hold in another process keeps it on; that process killed, the clean-up undoes it.
    let mine = SwapHold::acquire().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "holds_share_one_set_up_and_the_last_release_undoes_it",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !said.starts_with("held") {
        said.clear();
        assert!(
            out.read_line(&mut said).unwrap() > 0,
            "the child ended before it held swap"
        );
    }
    assert_eq!(said.trim(), "held None", "the child shares our set-up");
    assert_eq!(mine.release().unwrap(), None, "the child still holds swap");
    assert!(swap_active());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(swap_active(), "a killed holder undoes nothing itself");
    assert_eq!(
        undo_if_unused().unwrap(),
        Some(device),
        "the clean-up undoes the set-up left"
    );
    assert!(!swap_active());
    assert_eq!(undo_if_unused().unwrap(), None, "nothing is left to undo");

    // A hold of swap that is there sets nothing up, and keeps a set-up on as any hold does.
    assert!(SwapHold::if_active().is_none(), "no swap, nothing to hold");
    let setter = SwapHold::acquire().unwrap();
    let device = setter.set_up().expect("sets up again").to_owned();
    let user = SwapHold::if_active().expect("swap is active");
    assert_eq!(user.set_up(), None);
    assert_eq!(
        setter.release().unwrap(),
        None,
        "the if_active hold still holds swap"
    );
    assert!(swap_active());
    assert_eq!(
        user.release().unwrap(),
        Some(device),
        "the last hold undoes the set-up"
    );
    assert!(!swap_active());
}
