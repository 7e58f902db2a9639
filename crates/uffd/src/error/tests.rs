//! Decoding of failed range ioctls, per `docs/move-contract.md` §2.7.

use super::*;

#[test]
fn eagain_with_progress_is_partial() {
    assert_eq!(
        RangeError::decode(Errno::AGAIN, 12288),
        RangeError::Partial { done: 12288 }
    );
}

#[test]
fn eagain_with_the_field_written_negative_is_events_pending() {
    // 6.15 and later write `move = -EAGAIN` on the early mmap_changing check.
    assert_eq!(
        RangeError::decode(Errno::AGAIN, -11),
        RangeError::EventsPending { done: 0 }
    );
}

#[test]
fn eagain_with_the_field_untouched_is_events_pending() {
    // 6.8 to 6.14 leave `move` untouched on the early check: our pre-set 0 must read as "nothing
    // done", never as progress.
    assert_eq!(
        RangeError::decode(Errno::AGAIN, 0),
        RangeError::EventsPending { done: 0 }
    );
}

#[test]
fn other_errnos_map_to_their_variants_with_nothing_done() {
    let cases = [
        (Errno::EXIST, -17, RangeError::Exists { done: 0 }),
        (Errno::NOENT, -2, RangeError::Missing { done: 0 }),
        (Errno::BUSY, -16, RangeError::Busy { done: 0 }),
        (Errno::INVAL, 0, RangeError::Invalid { done: 0 }),
        (Errno::NOMEM, -12, RangeError::NoMemory { done: 0 }),
        (Errno::FAULT, 0, RangeError::Fault { done: 0 }),
        (Errno::SRCH, 0, RangeError::Exiting { done: 0 }),
        (Errno::INTR, -4, RangeError::Interrupted { done: 0 }),
        (
            Errno::PERM,
            -1,
            RangeError::Other {
                errno: Errno::PERM,
                done: 0,
            },
        ),
    ];
    for (errno, out, expected) in cases {
        let decoded = RangeError::decode(errno, out);
        assert_eq!(decoded, expected);
        assert_eq!(decoded.errno(), errno);
    }
}

#[test]
fn after_accumulates_bytes_done_and_keeps_the_errno() {
    let err = RangeError::Exists { done: 0 }.after(8192).after(4096);
    assert_eq!(err, RangeError::Exists { done: 12288 });
    assert_eq!(err.errno(), Errno::EXIST);
    let partial = RangeError::Partial { done: 4096 }.after(4096);
    assert_eq!(partial, RangeError::Partial { done: 8192 });
}

#[test]
fn create_error_names_every_path_and_its_fix() {
    let err = CreateError::Unavailable {
        attempts: vec![
            Attempt {
                path: CreatePath::Syscall {
                    user_mode_only: false,
                },
                errno: Errno::PERM,
            },
            Attempt {
                path: CreatePath::Device {
                    user_mode_only: false,
                },
                errno: Errno::ACCESS,
            },
        ],
    };
    let text = err.to_string();
    assert!(text.contains("userfaultfd(2)"), "{text}");
    assert!(text.contains("vm.unprivileged_userfaultfd"), "{text}");
    assert!(text.contains("/dev/userfaultfd"), "{text}");
    assert!(text.contains("setfacl"), "{text}");
}
