//! Creation paths, capabilities, fd flags, and the unprivileged path.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustix::io::FdFlags;
use test_support::mem::{pattern_word, Mapping};
use test_support::{require, Need};
use uffd::{
    Capabilities, CreateError, CreateOrder, CreatePath, Errno, EventBuffer, Features, MoveFlags,
    Uffd,
};

use crate::{
    assert_nothing_lost, check_child_output, filled, move_pages, page, registered, FaultServer,
};

/// A MOVE of two pages through `uffd` works and loses nothing.
#[track_caller]
fn assert_moves(uffd: &Uffd, seed: u64) {
    let (src, dst) = (filled(2, seed), registered(uffd, 2));
    let moved = move_pages(
        uffd,
        dst.as_ptr(),
        src.as_ptr(),
        2 * page(),
        MoveFlags::empty(),
    );
    assert_eq!(moved, Ok(2 * page()));
    assert_nothing_lost(&src, &dst, 2, seed, 2 * page());
}

#[test]
fn default_builder_creates_user_mode_only_fd() {
    require!(Need::Move);
    let uffd = Uffd::new().unwrap();
    assert_eq!(
        uffd.path(),
        CreatePath::Syscall {
            user_mode_only: true
        }
    );
    assert!(uffd.supports_move());
    assert_moves(&uffd, 600);
}

#[test]
fn device_only_works_as_root() {
    require!(Need::Move, Need::Root);
    let uffd = Uffd::builder()
        .order(CreateOrder::DeviceOnly)
        .create()
        .unwrap();
    assert_eq!(
        uffd.path(),
        CreatePath::Device {
            user_mode_only: true
        }
    );
    assert!(rustix::io::fcntl_getfd(&uffd)
        .unwrap()
        .contains(FdFlags::CLOEXEC));
    assert_moves(&uffd, 610);
}

/// `read(2)` from a pipe into the first 8 bytes of a registered missing page: a kernel-mode fault.
fn pipe_read_into(dst: &Mapping, value: u64) -> Result<usize, Errno> {
    let (r, w) = rustix::pipe::pipe().unwrap();
    rustix::io::write(&w, &value.to_ne_bytes()).unwrap();
    // SAFETY: `dst` is our own mapping of at least 8 bytes, written only by the kernel here and
    // read only through volatile loads; no Rust reference points into it.
    let n = unsafe { libc::read(std::os::fd::AsRawFd::as_raw_fd(&r), dst.as_ptr().cast(), 8) };
    usize::try_from(n).map_err(|_| {
        Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap())
    })
}

#[test]
fn kernel_faults_are_handled_as_root_and_refused_user_mode_only() {
    require!(Need::Move, Need::Root);
    // User-mode-only: the kernel-mode access fails at once with EFAULT instead of waiting.
    let umo = Uffd::new().unwrap();
    let dst = registered(&umo, 1);
    assert_eq!(pipe_read_into(&dst, 7), Err(Errno::FAULT));

    // With kernel faults, the same read waits for the fault to be resolved.
    let uffd = Arc::new(crate::polled_uffd(Uffd::builder().kernel_faults(true)));
    assert_eq!(
        uffd.path(),
        CreatePath::Syscall {
            user_mode_only: false
        }
    );
    let src = filled(1, 620);
    let dst = registered(&uffd, 1);
    let (src_addr, dst_addr) = (src.addr(), dst.addr());
    let server = FaultServer::spawn(uffd.clone(), move |uffd, _| {
        let moved = move_pages(
            uffd,
            dst_addr as *mut u8,
            src_addr as *mut u8,
            page(),
            MoveFlags::empty(),
        );
        assert_eq!(moved, Ok(page()));
    });
    assert_eq!(pipe_read_into(&dst, 0xfeed), Ok(8));
    assert_eq!(server.finish(), 1, "the kernel-mode fault was not reported");
    assert_eq!(dst.read_u64(0), 0xfeed);
    assert_eq!(
        dst.read_u64(8),
        pattern_word(620, 1),
        "the moved page is not under the read"
    );
}

#[test]
fn unknown_feature_is_missing_features_naming_it() {
    require!(Need::Uffd);
    let unknown = Features::from_bits_retain(1 << 40);
    let err = Uffd::builder().features(unknown).create().unwrap_err();
    match &err {
        CreateError::MissingFeatures {
            requested,
            missing,
            supported,
        } => {
            assert_eq!(*requested, unknown);
            assert_eq!(*missing, unknown);
            assert!(!supported.contains(unknown));
        }
        other => panic!("expected MissingFeatures, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("0x10000000000"),
        "the error does not name the bit: {text}"
    );
}

#[test]
fn probe_reports_move() {
    require!(Need::Move);
    let caps = Capabilities::probe().unwrap();
    assert!(caps.supports_move());
    assert!(caps.features().contains(Features::MOVE));
    // The probe spends its own fd: a fresh fd negotiates afterwards as usual.
    assert!(Uffd::new()
        .unwrap()
        .supported_features()
        .contains(Features::MOVE));
}

#[test]
fn fd_is_cloexec() {
    require!(Need::Uffd);
    let uffd = Uffd::new().unwrap();
    assert!(rustix::io::fcntl_getfd(&uffd)
        .unwrap()
        .contains(FdFlags::CLOEXEC));
}

#[test]
fn nonblocking_read_without_events_returns_zero() {
    require!(Need::Uffd);
    let uffd = Uffd::builder().non_blocking(true).create().unwrap();
    let flags = rustix::fs::fcntl_getfl(&uffd).unwrap();
    assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
    let mut buf = EventBuffer::new(8);
    assert_eq!(uffd.read_events(&mut buf), Ok(0));
    assert_eq!(buf.remaining(), 0);
}

/// The uid and gid the unprivileged child runs as (`nobody`).
const NOBODY: u32 = 65534;

#[test]
fn unprivileged_user_gets_user_mode_only_and_moves() {
    if test_support::child::is_child() {
        return unprivileged_child();
    }
    require!(Need::Move, Need::Root);
    // The test binary may sit under directories `nobody` cannot traverse: run a copy.
    let dir = std::env::temp_dir().join(format!("uffd-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("it");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = test_support::test_name("?");
    let out = test_support::child::output_within(
        Command::new(&exe)
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(test_support::child::CHILD_ENV, &name)
            .current_dir(&dir)
            .uid(NOBODY)
            .gid(NOBODY),
        Duration::from_secs(120),
    );
    let _ = std::fs::remove_dir_all(&dir);
    check_child_output(&name, &out);
}

/// The body run as `nobody`.
fn unprivileged_child() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        NOBODY,
        "not running as nobody"
    );
    // User-mode-only needs no privilege.
    let uffd = Uffd::new().expect("user-mode-only userfaultfd as nobody");
    assert_eq!(
        uffd.path(),
        CreatePath::Syscall {
            user_mode_only: true
        }
    );

    let sysctl = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").unwrap();
    let device_open = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")
        .is_ok();
    let kernel = Uffd::builder().kernel_faults(true).create();
    if sysctl.trim() == "0" && !device_open {
        match kernel {
            Err(CreateError::Unavailable { attempts }) => {
                let seen: Vec<(CreatePath, Errno)> =
                    attempts.iter().map(|a| (a.path, a.errno)).collect();
                assert_eq!(
                    seen,
                    [
                        (
                            CreatePath::Syscall {
                                user_mode_only: false
                            },
                            Errno::PERM
                        ),
                        (
                            CreatePath::Device {
                                user_mode_only: false
                            },
                            Errno::ACCESS
                        ),
                    ]
                );
                let text = CreateError::Unavailable { attempts }.to_string();
                assert!(
                    text.contains("vm.unprivileged_userfaultfd"),
                    "no fix named: {text}"
                );
            }
            other => panic!("kernel faults as nobody: expected Unavailable, got {other:?}"),
        }
    } else {
        eprintln!(
            "note: vm.unprivileged_userfaultfd={} or /dev/userfaultfd open to nobody",
            sysctl.trim()
        );
        assert!(kernel.is_ok());
    }
    assert_moves(&uffd, 630);
}
