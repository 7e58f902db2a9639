//! Handler threads: read the cycle's userfaultfd and resolve mutator faults through the page
//! protocol ([`Shared::fault`]).
//!
//! Each thread polls the userfaultfd and a stop eventfd, reads events in batches, and resolves
//! faults in the order read. A resolve that gets EAGAIN (a `MADV_DONTNEED` of the heap queued a
//! REMOVE event) reads the pending events itself before retrying, keeping the faults it read for
//! after, so events are always read before a retry and no thread spins on EAGAIN.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use rustix::event::{PollFd, PollFlags};
use uffd::{Event, EventBuffer};

use crate::compactor::{Compactor, Filler};
use crate::cycle::{bump, OnEagain, Shared};
use crate::error::CompactError;

/// Reads events until told to stop; the first error goes into `error`.
pub(crate) fn run<C: Compactor>(
    shared: &Shared<C>,
    stop: &OwnedFd,
    error: &Mutex<Option<CompactError>>,
) {
    let mut events = EventBuffer::new(64);
    let mut queue: VecDeque<(u64, u32)> = VecDeque::new();
    loop {
        if queue.is_empty() {
            let mut fds = [
                PollFd::new(&shared.uffd, PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return fail(error, errno),
            }
            if !fds[1].revents().is_empty() {
                return;
            }
        }
        if let Err(errno) = read(shared, &mut events, &mut queue) {
            return fail(error, errno);
        }
        while let Some((addr, thread)) = queue.pop_front() {
            let mut reader = ReadEvents {
                shared,
                events: &mut events,
                queue: &mut queue,
            };
            #[allow(clippy::cast_possible_truncation)] // a user address fits a usize
            shared.fault(addr as usize, thread, Filler::Handler, true, &mut reader);
        }
    }
}

fn fail(error: &Mutex<Option<CompactError>>, errno: rustix::io::Errno) {
    tracing::error!(%errno, "fault handler thread stops");
    let mut slot = error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_insert(CompactError::Handler { errno });
}

/// Reads whatever events are queued (non-blocking): faults go to `queue`, REMOVEs are counted.
fn read<C: Compactor>(
    shared: &Shared<C>,
    events: &mut EventBuffer,
    queue: &mut VecDeque<(u64, u32)>,
) -> Result<(), rustix::io::Errno> {
    match shared.uffd.read_events(events) {
        Ok(_) => {}
        Err(uffd::ReadError::Read { errno }) if errno == rustix::io::Errno::INTR => return Ok(()),
        Err(uffd::ReadError::Read { errno }) => return Err(errno),
        Err(_) => return Err(rustix::io::Errno::INVAL),
    }
    while let Some(event) = events.next_event() {
        match event {
            Event::Pagefault(pf) => queue.push_back((pf.address, pf.thread_id.unwrap_or(0))),
            Event::Remove { .. } => bump(&shared.counters.events),
            _ => bump(&shared.counters.events),
        }
    }
    Ok(())
}

/// The handler thread's answer to EAGAIN: read the pending events (the REMOVE that causes it),
/// keeping any faults read for later; back off briefly if none were pending (the kernel lowers
/// its `mmap_changing` count a moment after the event is read).
struct ReadEvents<'a, C> {
    shared: &'a Shared<C>,
    events: &'a mut EventBuffer,
    queue: &'a mut VecDeque<(u64, u32)>,
}

impl<C: Compactor> OnEagain for ReadEvents<'_, C> {
    fn wait(&mut self) {
        let before = self
            .shared
            .counters
            .events
            .load(std::sync::atomic::Ordering::Relaxed);
        if read(self.shared, self.events, self.queue).is_err() {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        if self
            .shared
            .counters
            .events
            .load(std::sync::atomic::Ordering::Relaxed)
            == before
        {
            std::thread::sleep(std::time::Duration::from_micros(10));
        }
    }
}

/// The threads of one cycle and their stop eventfd.
#[derive(Debug)]
pub(crate) struct Handlers {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<OwnedFd>,
    pub(crate) error: Arc<Mutex<Option<CompactError>>>,
}

impl Handlers {
    pub(crate) fn start<C: Compactor>(
        shared: &Arc<Shared<C>>,
        n: usize,
    ) -> Result<Self, CompactError> {
        let stop = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|errno| CompactError::Handler { errno })?;
        let mut handlers = Handlers {
            threads: Vec::with_capacity(n),
            stop: Arc::new(stop),
            error: Arc::new(Mutex::new(None)),
        };
        for i in 0..n {
            let (shared, stop, error) = (
                Arc::clone(shared),
                Arc::clone(&handlers.stop),
                Arc::clone(&handlers.error),
            );
            let thread = std::thread::Builder::new()
                .name(format!("compact-fault-{i}"))
                .spawn(move || run(&shared, &stop, &error))
                .map_err(CompactError::Spawn)?;
            handlers.threads.push(thread);
        }
        Ok(handlers)
    }

    /// Stops and joins every thread; the first error a thread hit, if any.
    pub(crate) fn stop(mut self) -> Option<CompactError> {
        self.signal_and_join();
        let mut slot = self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.take()
    }

    fn signal_and_join(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        self.signal_and_join();
    }
}
