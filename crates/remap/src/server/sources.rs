//! The simple built-in page sources.

use std::fmt;

use super::fault_around::MAX_WINDOW;
use super::{Fault, PageSource, Resolution};

/// Resolves every fault with the shared zero page (`UFFDIO_ZEROPAGE`).
///
/// ```
/// use remap::region::Region;
/// use remap::server::{FaultServer, ZeroSource};
///
/// let server = FaultServer::builder(Region::new(4096)?, ZeroSource).start()?;
/// assert_eq!(server.region().read_u64(0), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ZeroSource;

impl PageSource for ZeroSource {
    fn resolve<'a>(&'a self, _fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        Resolution::Zero
    }
}

/// Resolves the fault at offset `off` by copying `image[off..off + page]` (`UFFDIO_COPY`); a
/// partial last page is padded with zeros, and pages beyond the end of the image read as zero.
///
/// The padding is done once, when the source is built (the image is extended to a whole number
/// of pages), so resolving never copies or allocates: that keeps the source usable in SIGBUS mode.
///
/// ```
/// use remap::region::Region;
/// use remap::server::{CopySource, FaultServer};
///
/// let server = FaultServer::builder(Region::new(4096)?, CopySource::new(vec![9; 4096])).start()?;
/// assert_eq!(server.region().read_u8(100), 9);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CopySource {
    /// The image, zero-padded to a multiple of the page size.
    padded: Vec<u8>,
    /// The image's own length.
    len: usize,
    /// The fault-around window in pages (1: off).
    window: usize,
}

impl CopySource {
    /// A source copying from `image` (byte `i` of the image is byte `i` of the region).
    ///
    /// ```
    /// let source = remap::server::CopySource::new(vec![0; 8192]);
    /// assert_eq!(source.image().len(), 8192);
    /// ```
    pub fn new(mut image: Vec<u8>) -> Self {
        let len = image.len();
        image.resize(len.next_multiple_of(rustix::param::page_size()), 0);
        Self {
            padded: image,
            len,
            window: 1,
        }
    }

    /// Fault-around: copy up to `pages` pages per fault (clamped to 1..=64; default 1, off),
    /// from the faulting page on, in one `UFFDIO_COPY`, never past the end of the image (pages
    /// beyond it still read as zero, one fault each); see
    /// [fault-around](PageSource#fault-around).
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{CopySource, FaultServer};
    ///
    /// let source = CopySource::new(vec![7; 8 * 4096]).fault_around(16);
    /// let server = FaultServer::builder(Region::new(8 * 4096)?, source).start()?;
    /// assert_eq!(server.region().read_u8(0), 7); // one fault copies all 8 pages
    /// assert_eq!(server.region().read_u8(7 * 4096), 7);
    /// assert_eq!((server.stats().faults, server.stats().pages_around), (1, 7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fault_around(mut self, pages: usize) -> Self {
        self.window = pages.clamp(1, MAX_WINDOW);
        self
    }

    /// The image, as given to [`new`](Self::new).
    ///
    /// ```
    /// assert!(remap::server::CopySource::default().image().is_empty());
    /// let source = remap::server::CopySource::new(vec![1; 100]);
    /// assert_eq!(source.image(), &[1; 100][..]);
    /// ```
    pub fn image(&self) -> &[u8] {
        &self.padded[..self.len]
    }
}

impl PageSource for CopySource {
    fn resolve<'a>(&'a self, fault: &Fault, _page: &'a mut [u8]) -> Resolution<'a> {
        match fault
            .offset
            .checked_add(fault.len)
            .and_then(|end| self.padded.get(fault.offset..end))
        {
            Some(bytes) => Resolution::Copy(bytes),
            None => Resolution::Zero,
        }
    }

    fn fault_around(&self) -> usize {
        self.window
    }

    /// Copies up to `pages` pages of the image from the faulting one on (fewer where the image
    /// ends); beyond the image, the zero page.
    fn resolve_around<'a>(
        &'a self,
        fault: &Fault,
        pages: usize,
        _page: &'a mut [u8],
    ) -> Resolution<'a> {
        let have = self.padded.len().saturating_sub(fault.offset) / fault.len.max(1);
        let run = pages.min(self.window).min(have);
        match fault
            .offset
            .checked_add(run * fault.len)
            .and_then(|end| self.padded.get(fault.offset..end))
        {
            Some(bytes) if run > 0 => Resolution::Copy(bytes),
            _ => Resolution::Zero,
        }
    }
}

/// Resolves each fault by calling a closure that fills the page, then copying it in
/// (`UFFDIO_COPY`). The closure gets the page's offset in the region and a buffer of one page,
/// zeroed before each call. With [`fault_around`](Self::fault_around) it is called once for each
/// page of the window (which may then find some of them present already and copy fewer).
///
/// ```
/// use remap::region::Region;
/// use remap::server::{FaultServer, FnSource};
///
/// let source = FnSource::new(|offset, page: &mut [u8]| page.fill((offset / 4096) as u8 + 1));
/// let server = FaultServer::builder(Region::new(2 * 4096)?, source).start()?;
/// assert_eq!(server.region().read_u8(4096), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FnSource<F> {
    fill: F,
    /// The fault-around window in pages (1: off).
    window: usize,
}

impl<F> FnSource<F>
where
    F: Fn(usize, &mut [u8]) + Send + Sync + 'static,
{
    /// A source calling `fill(offset, page)`.
    ///
    /// ```
    /// let _source = remap::server::FnSource::new(|_offset, page: &mut [u8]| page.fill(1));
    /// ```
    pub fn new(fill: F) -> Self {
        Self { fill, window: 1 }
    }

    /// Fault-around: fill and copy up to `pages` pages per fault (clamped to 1..=64; default 1,
    /// off), from the faulting page on, in one `UFFDIO_COPY`; see
    /// [fault-around](PageSource#fault-around).
    ///
    /// ```
    /// use remap::region::Region;
    /// use remap::server::{FaultServer, FnSource};
    ///
    /// let source = FnSource::new(|offset, page: &mut [u8]| page.fill((offset / 4096) as u8))
    ///     .fault_around(4);
    /// let server = FaultServer::builder(Region::new(4 * 4096)?, source).start()?;
    /// assert_eq!(server.region().read_u8(0), 0); // one fault fills pages 0..4
    /// assert_eq!(server.region().read_u8(3 * 4096), 3);
    /// assert_eq!(server.stats().faults, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fault_around(mut self, pages: usize) -> Self {
        self.window = pages.clamp(1, MAX_WINDOW);
        self
    }
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}

impl<F> PageSource for FnSource<F>
where
    F: Fn(usize, &mut [u8]) + Send + Sync + 'static,
{
    fn resolve<'a>(&'a self, fault: &Fault, page: &'a mut [u8]) -> Resolution<'a> {
        let len = fault.len.min(page.len());
        let page = &mut page[..len];
        page.fill(0);
        (self.fill)(fault.offset, page);
        Resolution::Copy(page)
    }

    fn fault_around(&self) -> usize {
        self.window
    }

    /// Fills up to `pages` pages (as many as the scratch buffer holds), one call of the closure
    /// each, and copies them in with one ioctl.
    fn resolve_around<'a>(
        &'a self,
        fault: &Fault,
        pages: usize,
        page: &'a mut [u8],
    ) -> Resolution<'a> {
        let ps = fault.len.max(1);
        let run = pages.min(self.window).min(page.len() / ps).max(1);
        let len = (run * ps).min(page.len());
        let buf = &mut page[..len];
        buf.fill(0);
        for (i, one) in buf.chunks_exact_mut(ps).enumerate() {
            (self.fill)(fault.offset + i * ps, one);
        }
        Resolution::Copy(buf)
    }
}
