//! When to retry the faults that got EAGAIN (events pending): [`RetryClock`], and the room
//! for such parked faults.

use std::time::Duration;

/// The first back-off before retrying faults parked on EAGAIN when no new events were read: the
/// window between an event's read and its producer clearing `mmap_changing` (or between the
/// producer raising it and queueing the event). Doubles per retry up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_micros(10);
/// The longest back-off between EAGAIN retries within one event generation.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(1);

/// When to retry faults parked on EAGAIN: right away after a new event generation (someone read
/// the events that blocked them), else after a back-off that doubles within one generation.
#[derive(Debug)]
pub(crate) struct RetryClock {
    retried_at: u64,
    backoff: Duration,
}

impl RetryClock {
    pub(crate) fn new(generation: u64) -> Self {
        RetryClock {
            retried_at: generation,
            backoff: MIN_BACKOFF,
        }
    }

    /// Whether events were read since the last retry.
    pub(crate) fn new_generation(&self, generation: u64) -> bool {
        generation != self.retried_at
    }

    /// How long to wait before the next retry when no new generation arrives.
    pub(crate) fn backoff(&self) -> Duration {
        self.backoff
    }

    /// Records a retry at `generation`.
    pub(crate) fn retried(&mut self, generation: u64) {
        self.backoff = if generation == self.retried_at {
            (self.backoff * 2).min(MAX_BACKOFF)
        } else {
            MIN_BACKOFF
        };
        self.retried_at = generation;
    }
}

/// Room for faults parked on EAGAIN per handler, allocated up front: beyond it a fault's thread
/// is woken to fault again instead (see `EventReader::park`).
pub(crate) const PARKED_FAULTS: usize = 256;
