//! Set-up errors keep what the system said: the io::Error (with its errno) as the source.

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
