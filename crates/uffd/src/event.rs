//! Events read from a userfaultfd, decoded.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::{sys, PagefaultFlags};

/// A page fault waiting to be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pagefault {
    /// The faulting address: page-aligned unless `EXACT_ADDRESS` was enabled.
    pub address: u64,
    /// What kind of fault.
    pub flags: PagefaultFlags,
    /// The faulting thread's id, when `THREAD_ID` was enabled.
    pub thread_id: Option<u32>,
}

/// One decoded `struct uffd_msg`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A thread faulted on a registered range and waits for it to be resolved.
    Pagefault(Pagefault),
    /// The process forked; the child's userfaultfd (wrap it with
    /// [`Uffd::from_fork`](crate::Uffd::from_fork)).
    Fork {
        /// The child's userfaultfd, now owned by the reader.
        uffd: ForkedUffd,
    },
    /// `mremap` moved part of a registered range.
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Length moved.
        len: u64,
    },
    /// `MADV_DONTNEED` / `MADV_REMOVE` dropped `[start, end)`: it reads as missing again.
    Remove {
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
    },
    /// `munmap` removed `[start, end)`.
    Unmap {
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
    },
    /// An event code this crate does not know.
    Unknown {
        /// The raw `uffd_msg`.
        msg: sys::uffd_msg,
    },
}

impl Event {
    /// Decodes one message; `fork_fd` is the fd claimed for it when it is a fork message.
    fn decode(msg: &sys::uffd_msg, fork_fd: Option<OwnedFd>, thread_id: bool) -> Self {
        let arg = msg.arg;
        match msg.event {
            sys::UFFD_EVENT_PAGEFAULT => Event::Pagefault(Pagefault {
                flags: PagefaultFlags::from_bits_retain(arg[0]),
                address: arg[1],
                // `feat.ptid` is the low half of the third word (little- or big-endian alike,
                // since we read it as the u32 at offset 24).
                thread_id: thread_id.then(|| ptid(&arg)),
            }),
            sys::UFFD_EVENT_FORK => match fork_fd {
                Some(fd) => Event::Fork {
                    uffd: ForkedUffd { fd },
                },
                None => Event::Unknown { msg: *msg },
            },
            sys::UFFD_EVENT_REMAP => Event::Remap {
                from: arg[0],
                to: arg[1],
                len: arg[2],
            },
            sys::UFFD_EVENT_REMOVE => Event::Remove {
                start: arg[0],
                end: arg[1],
            },
            sys::UFFD_EVENT_UNMAP => Event::Unmap {
                start: arg[0],
                end: arg[1],
            },
            _ => Event::Unknown { msg: *msg },
        }
    }
}

/// The child's userfaultfd, as delivered by a `UFFD_EVENT_FORK` event.
///
/// Only [`Uffd::read_events`](crate::Uffd::read_events) makes one, from a fork message the kernel
/// wrote to a real userfaultfd and whose fd it installed in this process's table. That is what
/// lets [`Uffd::from_fork`](crate::Uffd::from_fork) be safe: no other fd can become a [`Uffd`]
/// that way, so no forged fork message can make this process own an fd number it does not.
/// Messages loaded with [`EventBuffer::load`] never make one.
///
/// It owns the fd (closed on drop) and gives it up with `OwnedFd::from`.
///
/// [`Uffd`]: crate::Uffd
#[derive(Debug)]
pub struct ForkedUffd {
    fd: OwnedFd,
}

impl AsFd for ForkedUffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<ForkedUffd> for OwnedFd {
    fn from(forked: ForkedUffd) -> OwnedFd {
        forked.fd
    }
}

/// The u32 stored first in a union word, whatever the byte order.
fn first_u32(word: u64) -> u32 {
    let bytes = word.to_ne_bytes();
    u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn ptid(arg: &[u64; 3]) -> u32 {
    first_u32(arg[2])
}

/// A reusable buffer for reading many events with one `read(2)`.
///
/// [`Uffd::read_events`](crate::Uffd::read_events) fills it; [`EventBuffer::next_event`] (or the
/// iterator from [`EventBuffer::drain`]) decodes each message exactly once.
///
/// ```no_run
/// let uffd = uffd::Uffd::new()?;
/// let mut events = uffd::EventBuffer::new(64);
/// uffd.read_events(&mut events)?;
/// for event in events.drain() {
///     if let uffd::Event::Pagefault(fault) = event {
///         println!("fault at {:#x}", fault.address);
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct EventBuffer {
    msgs: Vec<sys::uffd_msg>,
    fork_fds: Vec<Option<OwnedFd>>,
    len: usize,
    pos: usize,
    pub(crate) thread_id: bool,
}

impl EventBuffer {
    /// A buffer for up to `capacity` events per read (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            msgs: vec![sys::uffd_msg::default(); capacity.max(1)],
            fork_fds: std::iter::repeat_with(|| None)
                .take(capacity.max(1))
                .collect(),
            len: 0,
            pos: 0,
            thread_id: false,
        }
    }

    /// How many events one read can return.
    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Events read and not yet taken.
    pub fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// Takes the next event.
    pub fn next_event(&mut self) -> Option<Event> {
        if self.pos == self.len {
            return None;
        }
        let fork_fd = self.fork_fds[self.pos].take();
        let event = Event::decode(&self.msgs[self.pos], fork_fd, self.thread_id);
        self.pos += 1;
        Some(event)
    }

    /// Takes every remaining event, in the order the kernel queued them.
    pub fn drain(&mut self) -> Drain<'_> {
        Drain { buf: self }
    }

    /// Drops the remaining events, closing the fds of untaken fork events.
    pub(crate) fn discard(&mut self) {
        self.fork_fds.iter_mut().for_each(|fd| *fd = None);
        self.len = 0;
        self.pos = 0;
    }

    pub(crate) fn storage(&mut self) -> (&mut [sys::uffd_msg], &mut [Option<OwnedFd>]) {
        (&mut self.msgs, &mut self.fork_fds)
    }

    pub(crate) fn filled(&mut self, n: usize) {
        self.len = n;
        self.pos = 0;
    }

    /// Loads raw messages as if read from the kernel (for decoding tests and benchmarks).
    ///
    /// Fork messages loaded this way carry no fd and decode as [`Event::Unknown`].
    pub fn load(&mut self, msgs: &[sys::uffd_msg], thread_id: bool) {
        self.discard();
        let n = msgs.len().min(self.msgs.len());
        self.msgs[..n].copy_from_slice(&msgs[..n]);
        self.thread_id = thread_id;
        self.filled(n);
    }
}

/// Iterator over the remaining events of an [`EventBuffer`].
#[derive(Debug)]
pub struct Drain<'a> {
    buf: &'a mut EventBuffer,
}

impl Iterator for Drain<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.buf.next_event()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.buf.remaining();
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests;
