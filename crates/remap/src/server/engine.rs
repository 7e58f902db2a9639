//! [`Engine`]: the one fault-resolution engine under every front-end (handler threads, tokio,
//! SIGBUS mode).
//!
//! It owns the served region, its userfaultfd, the source and the counters, and knows how to
//! resolve one fault: ask the source, carry out its [`Resolution`] in one ioctl that also wakes
//! the faulting thread, tell a race (EEXIST) and pending events (EAGAIN) from a failure, and
//! fall back per the [`FailurePolicy`]. What a front-end does around that differs only where it
//! must: the event readers ([`super::reader`]) drop faults on ranges that are gone, park EAGAIN
//! and log failures; the SIGBUS handler ([`super::sigbus`]) retries EAGAIN in place and never
//! logs. Everything here is async-signal-safe (no allocation, lock, log or panic), since the
//! SIGBUS handler runs it.

use std::any::Any;
use std::sync::atomic::Ordering;

use uffd::{CopyFlags, Features, MoveFlags, RangeError, RegisterMode, Uffd, ZeropageFlags};

use super::{bump, Counters, FailurePolicy, Fault, PageSource, Resolution, ServerError};
use crate::region::{PageRange, Region};

/// Why a resolve could not be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The ioctl failed.
    Kernel(RangeError),
    /// The source's resolution is unusable: a [`Resolution::Copy`] of the wrong length, or a
    /// [`Resolution::Move`] offset outside (or unaligned in) its region.
    Bad,
}

/// What became of one attempt to resolve a fault ([`Engine::attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Resolved (and its thread woken), or left unresolved by the source.
    Done,
    /// Another thread resolved the page first (EEXIST), counted in `races`: the faulting
    /// thread still needs waking (or, in SIGBUS mode, its access retrying).
    Raced,
    /// EAGAIN, counted in `retries`: events are pending; retry after they are read.
    Pending,
    /// Any other failure (not yet counted as an error): the caller falls back.
    Failed {
        /// What failed.
        failure: Failure,
        /// The kind of resolution that failed (for the log).
        kind: &'static str,
    },
}

/// How the engine's userfaultfd is made; see [`Engine::new`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineConfig {
    /// The features to enable (events, `THREAD_ID`, `SIGBUS`).
    pub(crate) features: Features,
    /// Serve kernel-mode faults too.
    pub(crate) kernel_faults: bool,
    /// A non-blocking userfaultfd (for the event readers, which poll it).
    pub(crate) non_blocking: bool,
    /// The fallback after a failed resolve.
    pub(crate) policy: FailurePolicy,
}

/// The features a server with event readers enables: the requested non-cooperative events
/// (default: REMOVE, UNMAP and REMAP, where supported), plus `THREAD_ID` where supported.
pub(crate) fn reader_features(requested: Option<Features>, supported: Features) -> Features {
    requested.unwrap_or(
        (Features::EVENT_REMOVE | Features::EVENT_UNMAP | Features::EVENT_REMAP) & supported,
    ) | (Features::THREAD_ID & supported)
}

/// Checks that `policy` can work with the `supported` features: without `UFFDIO_POISON` (before
/// Linux 6.6) a poisoning fallback would fail with EINVAL, taken for "destination gone", and the
/// fault would never end.
pub(crate) fn check_policy(policy: FailurePolicy, supported: Features) -> Result<(), ServerError> {
    if policy == FailurePolicy::Poison && !supported.contains(Features::POISON) {
        return Err(ServerError::Unsupported {
            what: "FailurePolicy::Poison",
            missing: Features::POISON,
        });
    }
    Ok(())
}

/// The served region, its userfaultfd, the source, the counters and the fallback policy.
#[derive(Debug)]
pub(crate) struct Engine<S> {
    pub(crate) uffd: Uffd,
    pub(crate) region: Region,
    pub(crate) source: S,
    pub(crate) counters: Counters,
    pub(crate) policy: FailurePolicy,
}

impl<S: PageSource> Engine<S> {
    /// Creates the userfaultfd and registers the whole region for MISSING faults.
    pub(crate) fn new(
        region: Region,
        source: S,
        config: EngineConfig,
    ) -> Result<Self, ServerError> {
        let uffd = Uffd::builder()
            .features(config.features)
            .kernel_faults(config.kernel_faults)
            .non_blocking(config.non_blocking)
            .create()?;
        region.all_pages().register(&uffd, RegisterMode::MISSING)?;
        Ok(Self {
            uffd,
            region,
            source,
            counters: Counters::default(),
            policy: config.policy,
        })
    }

    pub(crate) fn page_size(&self) -> usize {
        self.region.page_size()
    }

    /// Asks the source how to resolve `fault` (a run of pages when it has a fault-around
    /// window, see [`super::fault_around`]) and carries that out. `leave_as_zero`: answer
    /// [`Resolution::Leave`] with the zero page (SIGBUS mode, where nothing could resolve it
    /// later). `gone` says whether the page at an offset was unmapped away (a run stops before
    /// it). Counts races and retries; the fault itself is counted by the caller.
    pub(crate) fn attempt(
        &self,
        fault: &Fault,
        scratch: &mut [u8],
        leave_as_zero: bool,
        gone: &dyn Fn(usize) -> bool,
    ) -> Attempt {
        let (kind, outcome) =
            super::fault_around::resolve(self, fault, scratch, leave_as_zero, gone);
        match outcome {
            Ok(()) => Attempt::Done,
            Err(Failure::Kernel(RangeError::Exists { .. })) => {
                bump(&self.counters.races);
                Attempt::Raced
            }
            Err(Failure::Kernel(RangeError::EventsPending { .. })) => {
                bump(&self.counters.retries);
                Attempt::Pending
            }
            Err(failure) => Attempt::Failed { failure, kind },
        }
    }

    /// Carries out `resolution` for the page at `offset`: one ioctl that also wakes the
    /// faulting thread. Counts the serve (taken back on failure) and reports a move to the
    /// source. [`Resolution::Leave`] counts as left and does nothing. Bounds are checked once,
    /// when the [`PageRange`]s are made, never asserted.
    pub(crate) fn apply(&self, offset: usize, resolution: Resolution<'_>) -> Result<(), Failure> {
        let uffd = &self.uffd;
        let page = self.page_size();
        // The faulting page, checked once; every operation below takes it as the destination.
        let dst = self.region.pages_at(offset, page);
        let on_dst = |op: &dyn Fn(PageRange<'_>) -> Result<usize, RangeError>| match dst {
            Some(d) => op(d),
            None => Err(RangeError::Invalid { done: 0 }),
        };
        // Counted first, so a thread woken by the ioctl already sees its fault counted.
        let counter = self.counters.counter(&resolution);
        counter.fetch_add(1, Ordering::Relaxed);
        let result = match resolution {
            Resolution::Leave => return Ok(()),
            Resolution::Zero => {
                on_dst(&|d| d.zero(uffd, ZeropageFlags::empty())).map_err(Failure::Kernel)
            }
            Resolution::Copy(bytes) if bytes.len() == page => {
                on_dst(&|d| d.copy_from_slice(uffd, bytes, CopyFlags::empty()))
                    .map_err(Failure::Kernel)
            }
            Resolution::Copy(_) => Err(Failure::Bad),
            Resolution::Move { from, offset: src } => {
                let result = match from.pages_at(src, page) {
                    Some(s) => on_dst(&|d| d.move_from(uffd, s, MoveFlags::empty()))
                        .map_err(Failure::Kernel),
                    None => Err(Failure::Bad),
                };
                self.source.move_done(src, result.is_ok());
                result
            }
            Resolution::Lease(lease) => {
                let outcome = match lease.region().pages_at(lease.offset(), page) {
                    Some(s) => on_dst(&|d| d.move_from(uffd, s, MoveFlags::empty())),
                    None => Err(RangeError::Invalid { done: 0 }),
                };
                if lease.settle(&outcome) && outcome.is_err() {
                    // The MOVE failed, yet the page left the pool: it is in place (EEXIST from a
                    // MOVE that moved, docs/findings/move-thp-eexist.md). A failed MOVE wakes
                    // nobody, so wake the faulting thread; the fault was served.
                    if let Some(d) = dst {
                        let _ = d.wake(uffd);
                    }
                    Ok(page)
                } else {
                    outcome.map_err(Failure::Kernel)
                }
            }
            Resolution::Poison => on_dst(&|d| d.poison(uffd)).map_err(Failure::Kernel),
        };
        if result.is_err() {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        result.map(drop)
    }

    /// After a failed resolve: counts the error, then resolves the page at `offset` per the
    /// [`FailurePolicy`], counting a success in `fallbacks`. A caller that finds the failure was
    /// none after all (the destination is gone, events are pending) takes the error back with
    /// [`not_an_error`](Self::not_an_error). Returns the error count (this one included), for
    /// rate-limited logging, and the fallback's outcome.
    pub(crate) fn fall_back(&self, offset: usize) -> (u64, Result<(), RangeError>) {
        let page = self.page_size();
        // Both counted first, like a serve, so the woken thread already sees them.
        let errors = self.counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
        bump(&self.counters.fallbacks);
        let result = match (self.region.pages_at(offset, page), self.policy) {
            (None, _) => Err(RangeError::Invalid { done: 0 }),
            (Some(d), FailurePolicy::Zero) => d.zero(&self.uffd, ZeropageFlags::empty()).map(drop),
            (Some(d), FailurePolicy::Poison) => d.poison(&self.uffd).map(drop),
        };
        if result.is_err() {
            self.counters.fallbacks.fetch_sub(1, Ordering::Relaxed);
        }
        (errors, result)
    }

    /// Takes back the error counted by [`fall_back`](Self::fall_back).
    pub(crate) fn not_an_error(&self) {
        self.counters.errors.fetch_sub(1, Ordering::Relaxed);
    }

    /// Registers (`on`) or unregisters `len` bytes of the region at `offset`.
    pub(crate) fn set_registered(
        &self,
        offset: usize,
        len: usize,
        on: bool,
    ) -> Result<(), uffd::ControlError> {
        let Some(range) = self.region.pages_at(offset, len) else {
            panic!(
                "range {offset:#x}+{len:#x} is not a page range inside the region of {:#x} bytes",
                self.region.len()
            );
        };
        if on {
            range.register(&self.uffd, RegisterMode::MISSING).map(drop)
        } else {
            range.unregister(&self.uffd)
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
