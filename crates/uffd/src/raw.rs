//! The raw ABI: the few `uffd_msg` and range-ioctl items a caller outside this crate needs
//! undecoded.
//!
//! [`Uffd`](crate::Uffd) decodes every ioctl's result into `Ok(len)` or a
//! [`RangeError`](crate::RangeError), and that is what programs should use. Two kinds of caller
//! need what it decodes away, and this module gives them exactly that and no more:
//!
//! - a conformance checker (`remap-conform`) and kernel-pinning tests, which must see an ioctl's
//!   result field exactly as the kernel left it (written, or still holding the caller's
//!   sentinel): [`api`], [`copy`], [`zeropage`], [`move_`] and their argument structs;
//! - decoding tests and benchmarks, which feed [`EventBuffer::load`](crate::EventBuffer::load)
//!   hand-made messages ([`uffd_msg`], [`UFFD_EVENT_PAGEFAULT`]); `uffd_msg` is also what
//!   [`Event::Unknown`](crate::Event::Unknown) carries.
//!
//! The definitions live in the crate's private `sys` module (the only place that calls into the
//! kernel), where unit tests pin every struct's layout and every request number to the kernel's
//! header; the registration, wake, write-protect, CONTINUE and POISON ABI stays there, since
//! nobody outside needs it raw.
//!
//! ```
//! use uffd::raw;
//!
//! let uffd = uffd::Uffd::new()?;
//! // A second UFFDIO_API on one fd is refused: the raw call shows the errno itself.
//! let mut api = raw::uffdio_api { api: raw::UFFD_API, ..Default::default() };
//! assert_eq!(raw::api(&uffd, &mut api), Err(uffd::Errno::INVAL));
//! # Ok::<(), uffd::CreateError>(())
//! ```

pub use crate::sys::{
    api, copy, move_, uffd_msg, uffdio_api, uffdio_copy, uffdio_move, uffdio_range,
    uffdio_zeropage, zeropage, UFFD_API, UFFD_EVENT_PAGEFAULT,
};
