//! The hand-written cases ([`Special`]): what a program cannot say (an event queued by another
//! thread, a forked caller, a user-mode-only fd, a second `UFFDIO_API`, a file mapping). Their
//! raw ioctls and stores act on windows of their own, after the oracle said the access neither
//! faults nor blocks (`unsafe` is allowed here for those calls only).

#![allow(unsafe_code)]

use std::os::fd::AsFd;
use std::time::Duration;

use remap_oracle::{Behaviour, Caller, Errno, Op, Outcome, Space, Vma, VmaKind, BEHAVIOUR_TABLE};
use uffd::{Features, RegisterMode, Uffd};

use crate::exec::Harness;
use crate::program::OURS;
use crate::sys::{self, Window};
use crate::{ConformError, Machine};

use super::{CaseResult, Special, P, PAGE};

/// Judges a hand-written case's one outcome under every row: `predict(row)` gives the allowed
/// outcomes.
fn judge(
    m: &Machine,
    kernel: Outcome,
    result: &mut CaseResult,
    predict: impl Fn(&'static Behaviour) -> Vec<Outcome>,
) {
    result.kernel = Some(kernel.to_string());
    result.expected = predict(m.behaviour)
        .iter()
        .map(ToString::to_string)
        .collect();
    result.rows = BEHAVIOUR_TABLE
        .iter()
        .filter(|b| predict(b).iter().any(|o| kernel.agrees_with(o)))
        .map(|b| b.name)
        .collect();
    let agree = result.rows.contains(&m.behaviour.name);
    result.agree = Some(agree);
    if !agree {
        result.detail = Some(format!(
            "kernel {kernel}, oracle allows [{}]",
            result.expected.join(", ")
        ));
    }
}

fn raw_outcome(rc: Result<(), rustix::io::Errno>, field: i64) -> Outcome {
    let field = if field == sys::UNTOUCHED {
        remap_oracle::Field::Untouched
    } else {
        remap_oracle::Field::Value(field)
    };
    Outcome::Ioctl {
        errno: rc
            .err()
            .map(|e| Errno::from_raw(e.raw_os_error()).unwrap_or(Errno::Perm)),
        field,
    }
}

/// A window with a 1-page source at slot 0 (written with `tag`) and a 2·`pages`-page destination
/// at slot 1; returns the window, src and dst addresses.
fn small_pair(pages: usize) -> Result<(Window, usize, usize), ConformError> {
    let page = PAGE;
    let w = Window::reserve(8 << 20).map_err(ConformError::Setup)?;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    w.map(1 << 20, pages * page, rw, false)
        .map_err(ConformError::Setup)?;
    w.map(4 << 20, 2 * pages * page, rw, false)
        .map_err(ConformError::Setup)?;
    let (src, dst) = (w.base() + (1 << 20), w.base() + (4 << 20));
    for i in 0..pages {
        // SAFETY: a present-or-none private page of our window, not registered: a plain fault.
        unsafe { sys::write_u64(src + i * page, 0x77 + i as u64) };
    }
    Ok((w, src, dst))
}

fn oracle_pair(src: usize, dst: usize, pages: u64, reg: bool) -> Space {
    let mut d = Vma::anon(dst as u64, 2 * pages * P);
    if reg {
        d = d.registered(OURS, true, false);
    }
    let mut s = Space::new(
        Default::default(),
        vec![Vma::anon(src as u64, pages * P), d],
    );
    for i in 0..pages {
        s = s
            .predict(
                &Op::WriteTouch {
                    addr: src as u64 + i * P,
                    tag: 0x77 + i,
                },
                Behaviour::newest(),
            )
            .expect("modelled")
            .alternatives
            .pop()
            .expect("an alternative")
            .after;
    }
    s
}

fn predict_outcomes(space: &Space, op: &Op, b: &Behaviour) -> Vec<Outcome> {
    space
        .predict(op, b)
        .map(|p| p.outcomes())
        .unwrap_or_default()
}

pub(super) fn run_special(
    h: &Harness,
    m: &Machine,
    s: Special,
    result: &mut CaseResult,
) -> Result<(), ConformError> {
    let page = PAGE;
    match s {
        Special::PendingEvents => {
            let uffd = Uffd::builder()
                .features(Features::EVENT_REMOVE)
                .non_blocking(true)
                .create()?;
            let pages = 4;
            let (_w, src, dst) = small_pair(pages)?;
            uffd.register(dst as *mut u8, 2 * pages * page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            let kernel = std::thread::scope(|scope| {
                // MADV_DONTNEED of the registered upper half queues a REMOVE event and blocks
                // until it is read.
                let upper = dst + pages * page;
                let remover = scope.spawn(move || sys::madvise(upper, pages * page, 4));
                let mut fds = [rustix::event::PollFd::new(
                    &uffd,
                    rustix::event::PollFlags::IN,
                )];
                let ts = rustix::event::Timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                };
                let ready = rustix::event::poll(&mut fds, Some(&ts)).unwrap_or(0) > 0;
                // SAFETY: both ranges are in our window.
                let (rc, f) = unsafe { sys::raw_move(uffd.as_fd(), dst, src, pages * page, 0) };
                let mut buf = uffd::EventBuffer::new(4);
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !remover.is_finished() && std::time::Instant::now() < deadline {
                    let _ = uffd.read_events(&mut buf);
                    buf.drain().for_each(drop);
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = remover.join();
                ready.then(|| raw_outcome(rc, f))
            });
            let Some(kernel) = kernel else {
                result.skipped = Some("no REMOVE event was queued within 5 s".into());
                return Ok(());
            };
            let space = oracle_pair(src, dst, pages as u64, true)
                .predict(&Op::QueueEvent { uffd: OURS }, Behaviour::newest())
                .expect("modelled")
                .alternatives
                .remove(0)
                .after;
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: pages as u64 * P,
                mode: 0,
                caller: Caller::Owner,
            };
            judge(m, kernel, result, |b| predict_outcomes(&space, &op, b));
        }
        Special::ForkedChildCaller => {
            let (_w, src, dst) = small_pair(1)?;
            h.ours()
                .register(dst as *mut u8, 2 * page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            // SAFETY: both ranges are in our window; this process is single-threaded here.
            let (rc, f) = unsafe { sys::move_in_child(h.ours(), dst, src, page) }
                .map_err(ConformError::Setup)?;
            let space = oracle_pair(src, dst, 1, true);
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: P,
                mode: 0,
                caller: Caller::ForkedChild,
            };
            judge(m, raw_outcome(rc, f), result, |b| {
                predict_outcomes(&space, &op, b)
            });
            let _ = h.ours().unregister(dst as *mut u8, 2 * page);
        }
        Special::UserModeOnly => {
            let uffd = Uffd::builder().features(Features::MOVE).create()?;
            let (_w, src, dst) = small_pair(1)?;
            uffd.register(dst as *mut u8, 2 * page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            // SAFETY: both ranges are in our window.
            let (rc, f) = unsafe { sys::raw_move(uffd.as_fd(), dst, src, page, 0) };
            let space = oracle_pair(src, dst, 1, true);
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: P,
                mode: 0,
                caller: Caller::Owner,
            };
            judge(m, raw_outcome(rc, f), result, |b| {
                predict_outcomes(&space, &op, b)
            });
        }
        Special::SecondApi => {
            // Not a MOVE rule: `docs/move-contract.md` section 1.4, which the oracle does not model.
            let kernel = Outcome::Call(
                sys::second_api(h.ours())
                    .err()
                    .map(|e| Errno::from_raw(e.raw_os_error()).unwrap_or(Errno::Perm)),
            );
            judge(m, kernel, result, |_| {
                vec![Outcome::Call(Some(Errno::Inval))]
            });
        }
        Special::PrivateFileSrc => {
            let path = std::env::temp_dir().join(format!("remap-conform-{}", std::process::id()));
            std::fs::write(&path, vec![0u8; page]).map_err(ConformError::Setup)?;
            let file = std::fs::File::open(&path).map_err(ConformError::Setup);
            let _ = std::fs::remove_file(&path);
            let file = file?;
            let w = Window::reserve(8 << 20).map_err(ConformError::Setup)?;
            w.map_file(1 << 20, page, &file)
                .map_err(ConformError::Setup)?;
            w.map(4 << 20, page, libc::PROT_READ | libc::PROT_WRITE, false)
                .map_err(ConformError::Setup)?;
            let (src, dst) = (w.base() + (1 << 20), w.base() + (4 << 20));
            h.ours()
                .register(dst as *mut u8, page, RegisterMode::MISSING)
                .map_err(ConformError::Register)?;
            // SAFETY: both ranges are in our window.
            let (rc, f) = unsafe { sys::raw_move(h.ours(), dst, src, page, 0) };
            let space = Space::new(
                Default::default(),
                vec![
                    Vma::anon(src as u64, P).kind(VmaKind::PrivateFile),
                    Vma::anon(dst as u64, P).registered(OURS, true, false),
                ],
            );
            let op = Op::Move {
                uffd: OURS,
                dst: dst as u64,
                src: src as u64,
                len: P,
                mode: 0,
                caller: Caller::Owner,
            };
            judge(m, raw_outcome(rc, f), result, |b| {
                predict_outcomes(&space, &op, b)
            });
            let _ = h.ours().unregister(dst as *mut u8, page);
        }
    }
    Ok(())
}
