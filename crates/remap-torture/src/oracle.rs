//! Judging one MOVE through the MOVE oracle (`remap-oracle`), for the running kernel's version.
//!
//! The run builds the oracle's abstract state of the two ranges from what it knows (each page a
//! hole, a zero page, a present or swapped tagged page) and asks whether the observed result is
//! one the oracle allows. Where the run is unsure of a page's exclusivity (a fork since it was
//! written, a KSM twin, a large folio, a swapped THP page: `PageCase::may_busy`), it asks again
//! with that page shared; where events may be pending, again with an event pending. What the
//! oracle does not model (ENOMEM under the memory limit, KSM, migration, large swap-cache
//! folios) stays with the rules of [`crate::allowed`]: the caller falls back to them when
//! [`judge`] returns `None`.

use remap_oracle::{
    pmd_base, Behaviour, Caller, Environment, Errno, Folio, KernelVersion, Op, Outcome, Page,
    Present, Space, Vma, PAGE_SIZE,
};
use uffd::RangeError;

use crate::allowed::PageCase;

/// The oracle's behaviour row for the running kernel, if it has one.
pub(crate) fn behaviour() -> Option<&'static Behaviour> {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    Behaviour::for_version(KernelVersion::parse(&release)?)
}

/// The observed result in the oracle's encoding.
fn observed(result: &Result<usize, RangeError>, len: usize) -> Outcome {
    match result {
        Ok(_) => Outcome::done(len as u64),
        Err(RangeError::Partial { done }) => Outcome::partial(*done as u64),
        // EAGAIN without progress: the kernel writes -EAGAIN (6.15+).
        Err(e) => match Errno::from_raw(e.errno().raw_os_error()) {
            Some(errno) => Outcome::failed(errno),
            None => Outcome::AnyError,
        },
    }
}

/// One page as the run knows it before the MOVE: `Some(swapped)` when populated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    /// The source holds the zero page (the huge zero page moved in).
    pub(crate) src_zero: bool,
    /// The source page is swapped out.
    pub(crate) src_swapped: bool,
}

#[allow(clippy::too_many_arguments)]
fn space(
    dst: u64,
    src: u64,
    cases: &[PageCase],
    known: &[Known],
    shared_at: Option<usize>,
    pending: bool,
) -> Space {
    let len = cases.len() as u64 * PAGE_SIZE;
    let mut s = Vma::anon(src, len);
    let mut d = Vma::anon(dst, len).registered(1, true, false);
    for (i, (c, k)) in cases.iter().zip(known).enumerate() {
        let exclusive = shared_at != Some(i);
        if c.src_occupied {
            s.pages[i] = if k.src_zero {
                Page::Zero
            } else if k.src_swapped {
                Page::Swapped {
                    tag: i as u64 + 1,
                    exclusive,
                    shared: false,
                }
            } else {
                Page::Present(Present {
                    tag: i as u64 + 1,
                    frame: i as u64 + 1,
                    exclusive,
                    shared: false,
                    folio: Folio::Small,
                })
            };
        }
        if c.dst_occupied {
            d.pages[i] = Page::Present(Present {
                tag: 1_000_000 + i as u64,
                frame: 1_000_000 + i as u64,
                exclusive: true,
                shared: false,
                folio: Folio::Small,
            });
        }
    }
    let mut space = Space::new(Environment::default(), vec![s, d]);
    // Every PMD of both ranges has a PTE table: the run's pages are PTE-mapped (a PMD-mapped
    // THP moves the same way, whole or split), and its holes were populated once.
    for i in 0..cases.len() as u64 {
        space.tables.insert(pmd_base(src + i * PAGE_SIZE));
        space.tables.insert(pmd_base(dst + i * PAGE_SIZE));
    }
    if pending {
        space.pending_events.insert(1, 1);
    }
    space
}

/// The oracle's verdict on a MOVE of `cases` from `src` to `dst` with `mode` that gave
/// `result`: `Some(Ok)` allowed, `Some(Err)` not allowed (with what the oracle allows), `None`
/// when the oracle cannot say (not modelled, or no row for this kernel).
#[allow(clippy::too_many_arguments)]
pub(crate) fn judge(
    b: &Behaviour,
    dst: u64,
    src: u64,
    mode: u64,
    cases: &[PageCase],
    known: &[Known],
    events_possible: bool,
    result: &Result<usize, RangeError>,
) -> Option<Result<(), String>> {
    let len = cases.len() as u64 * PAGE_SIZE;
    let op = Op::Move {
        uffd: 1,
        dst,
        src,
        len,
        mode,
        caller: Caller::Owner,
    };
    let seen = observed(result, cases.len() * crate::sys::page_size());
    let done = usize::try_from(seen.bytes_done() / PAGE_SIZE).unwrap_or(usize::MAX);
    let mut variants = vec![(None, false)];
    if done < cases.len() && cases[done].may_busy {
        variants.push((Some(done), false));
    }
    if events_possible {
        variants.push((None, true));
    }
    let mut allowed = Vec::new();
    for (shared_at, pending) in variants {
        let prediction = space(dst, src, cases, known, shared_at, pending)
            .predict(&op, b)
            .ok()?;
        if prediction.allows(&seen) {
            return Some(Ok(()));
        }
        allowed.extend(prediction.outcomes());
    }
    Some(Err(format!(
        "the oracle ({}) allows only {allowed:?}, not {seen:?}",
        b.name
    )))
}
