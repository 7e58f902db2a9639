//! The operation log: every operation a thread issues, in a bounded ring per thread, numbered
//! by one global sequence so the rings merge into one history. On a violation the log is
//! written out whole, and shrunk to the operations that touched the pages involved.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Operations kept per thread.
const RING: usize = 1 << 14;

/// One logged operation.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub(crate) seq: u64,
    pub(crate) thread: u16,
    /// `move`, `write`, `pageout`, `cold`, `collapse`, `fork`, `flip`, `dontneed`, ...
    pub(crate) what: &'static str,
    /// Destination (or only) range start.
    pub(crate) dst: usize,
    /// Source range start (0 when none).
    pub(crate) src: usize,
    pub(crate) pages: usize,
    /// Move flags or other detail bits.
    pub(crate) flags: u64,
    /// Pages done, or `-errno`.
    pub(crate) result: i64,
}

impl Op {
    /// Whether the operation touched the page at `addr`.
    pub(crate) fn touches(&self, addr: usize, page_size: usize) -> bool {
        let len = self.pages * page_size;
        (self.dst..self.dst + len).contains(&addr)
            || (self.src != 0 && (self.src..self.src + len).contains(&addr))
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} t{} {} dst={:#x} src={:#x} pages={} flags={:#x} result={}",
            self.seq,
            self.thread,
            self.what,
            self.dst,
            self.src,
            self.pages,
            self.flags,
            self.result
        )
    }
}

/// The rings of all threads.
#[derive(Debug)]
pub(crate) struct OpLog {
    seq: AtomicU64,
    rings: Vec<Mutex<VecDeque<Op>>>,
}

impl OpLog {
    pub(crate) fn new(threads: usize) -> OpLog {
        OpLog {
            seq: AtomicU64::new(0),
            rings: (0..threads).map(|_| Mutex::new(VecDeque::new())).collect(),
        }
    }

    /// Records an operation of `thread`; returns its sequence number.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        thread: usize,
        what: &'static str,
        dst: usize,
        src: usize,
        pages: usize,
        flags: u64,
        result: i64,
    ) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let op = Op {
            seq,
            thread: u16::try_from(thread).unwrap_or(u16::MAX),
            what,
            dst,
            src,
            pages,
            flags,
            result,
        };
        let mut ring = self.rings[thread].lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(op);
        seq
    }

    /// Every kept operation, oldest first.
    pub(crate) fn merged(&self) -> Vec<Op> {
        let mut all: Vec<Op> = self
            .rings
            .iter()
            .flat_map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        all.sort_by_key(|op| op.seq);
        all
    }

    /// The shrunk log for `addrs`: the last `max` operations that touched any of them.
    pub(crate) fn shrink(&self, addrs: &[usize], page_size: usize, max: usize) -> Vec<String> {
        let touching: Vec<Op> = self
            .merged()
            .into_iter()
            .filter(|op| addrs.iter().any(|&a| op.touches(a, page_size)))
            .collect();
        let skip = touching.len().saturating_sub(max);
        touching[skip..].iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::OpLog;

    #[test]
    fn shrink_keeps_only_operations_on_the_pages() {
        let log = OpLog::new(2);
        log.record(0, "move", 0x10000, 0x20000, 4, 0, 4);
        log.record(1, "pageout", 0x50000, 0, 1, 0, 0);
        log.record(1, "move", 0x20000, 0x10000, 1, 0, 1);
        let shrunk = log.shrink(&[0x12000], 4096, 10);
        assert_eq!(shrunk.len(), 1, "{shrunk:?}");
        assert!(shrunk[0].starts_with("#0 t0 move"), "{shrunk:?}");
        let both = log.shrink(&[0x20000], 4096, 10);
        assert_eq!(both.len(), 2, "{both:?}");
    }
}
