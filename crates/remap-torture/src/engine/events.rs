//! The uffd event reader: remove and remap events counted, stray page faults resolved and reported.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use uffd::{Event, EventBuffer};

use crate::report::ViolationKind;
use crate::sys;

use super::Shared;

/// Reads the uffd's events until told to stop: counts remove / remap events (which block their
/// producer until read) and resolves page faults nobody should have taken with a zero page, so
/// the faulting thread does not hang, reporting each.
pub(crate) fn event_reader(sh: &Shared) {
    use std::os::fd::AsFd;
    let mut buf = EventBuffer::new(64);
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    while !sh.stop_events.load(Ordering::SeqCst) {
        let fd = sh.uffd.as_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        if rustix::event::poll(&mut fds, Some(&timeout)).unwrap_or(0) == 0 {
            continue;
        }
        match sh.uffd.read_events(&mut buf) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                sh.violation(
                    ViolationKind::Harness,
                    "events",
                    format!("reading events: {e}"),
                    vec![],
                );
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        for event in buf.drain() {
            remap::counters::bump(&sh.stats.events);
            match event {
                Event::Pagefault(pf) => {
                    *counts.entry("pagefault").or_default() += 1;
                    sh.violation(
                        ViolationKind::UnexpectedFault,
                        "events",
                        format!(
                            "a thread faulted on {:#x} ({:?}), a page the run believed present",
                            pf.address, pf.flags
                        ),
                        vec![usize::try_from(pf.address).unwrap_or(usize::MAX)],
                    );
                    let _ = sys::zero_page_at(&sh.uffd, pf.address);
                }
                Event::Remove { .. } => *counts.entry("remove").or_default() += 1,
                Event::Remap { .. } => *counts.entry("remap").or_default() += 1,
                Event::Unmap { .. } => *counts.entry("unmap").or_default() += 1,
                _ => *counts.entry("other").or_default() += 1,
            }
        }
    }
    tracing::debug!(?counts, "event reader done");
}
