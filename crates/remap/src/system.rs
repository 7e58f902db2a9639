//! What this machine offers for moving memory: kernel, CPU, page size, THP mode, swap.
//!
//! Benchmarks record it with every result and `remap probe` prints it; both read it here so the
//! two always describe a machine the same way.
//!
//! ```
//! let machine = remap::system::Machine::read();
//! assert!(machine.page_size.is_power_of_two());
//! println!("{} on {} ({} cores)", machine.kernel_release, machine.cpu_model, machine.cores);
//! ```

use std::fmt;
use std::fs;

use crate::inspect::{self, InspectError};
use crate::pattern;
use crate::region::{Region, RegionError, Thp, HUGE_PAGE_SIZE};

/// The system-wide transparent huge page mode (`/sys/kernel/mm/transparent_hugepage/enabled`).
///
/// With the `serde` feature it serializes as the kernel spells it (`"madvise"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "lowercase")
)]
pub enum ThpMode {
    /// Every eligible anonymous mapping gets THPs.
    Always,
    /// Only mappings advised with `MADV_HUGEPAGE` (remap's `Thp::Huge`) get THPs.
    Madvise,
    /// No THPs.
    Never,
    /// The kernel has no THP support, or the file could not be read.
    Unavailable,
}

impl ThpMode {
    /// Reads the current mode.
    pub fn read() -> Self {
        fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .map(|text| Self::parse(&text))
            .unwrap_or(ThpMode::Unavailable)
    }

    /// Parses the file's text, where the selected mode is in brackets: `always [madvise] never`.
    pub fn parse(text: &str) -> Self {
        if text.contains("[always]") {
            ThpMode::Always
        } else if text.contains("[madvise]") {
            ThpMode::Madvise
        } else if text.contains("[never]") {
            ThpMode::Never
        } else {
            ThpMode::Unavailable
        }
    }

    /// The mode's name as the kernel spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ThpMode::Always => "always",
            ThpMode::Madvise => "madvise",
            ThpMode::Never => "never",
            ThpMode::Unavailable => "unavailable",
        }
    }

    /// Whether a `MADV_HUGEPAGE` region can get THPs.
    pub fn usable(&self) -> bool {
        matches!(self, ThpMode::Always | ThpMode::Madvise)
    }
}

impl fmt::Display for ThpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A description of this machine, read from `uname(2)` and `/proc`.
///
/// This is the one description every report carries (probe, bench and the other subcommands).
/// With the `serde` feature it serializes with these field names, except `thp` as `thp_mode`
/// and `mem_total` as `mem_total_bytes`:
/// `{"kernel_release":"6.18.44","arch":"x86_64","cpu_model":"...","cores":2,"page_size":4096,
/// "thp_mode":"madvise","swap_active":true,"mem_total_bytes":25769803776,
/// "cpu_idle":"haltpoll, governor haltpoll, guest_halt_poll_ns=0"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Machine {
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -m`.
    pub arch: String,
    /// The CPU's model name from `/proc/cpuinfo` (or "unknown").
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// The base page size in bytes.
    pub page_size: usize,
    /// The THP mode.
    #[cfg_attr(feature = "serde", serde(rename = "thp_mode"))]
    pub thp: ThpMode,
    /// Whether any swap area is active.
    pub swap_active: bool,
    /// Total memory in bytes (from `/proc/meminfo`, 0 if unreadable).
    #[cfg_attr(feature = "serde", serde(rename = "mem_total_bytes"))]
    pub mem_total: u64,
    /// How an idle CPU waits ([`cpu_idle`]): the cpuidle driver and governor, and under a KVM
    /// guest's `haltpoll` governor how long it polls before it halts. It decides what waking a thread on
    /// an idle CPU costs, which is most of a handler thread's fault latency on a VM.
    pub cpu_idle: String,
}

impl Machine {
    /// Reads the description; fields that cannot be read get placeholder values, never errors.
    pub fn read() -> Self {
        let uname = rustix::system::uname();
        Self {
            kernel_release: uname.release().to_string_lossy().into_owned(),
            arch: uname.machine().to_string_lossy().into_owned(),
            cpu_model: cpu_model().unwrap_or_else(|| "unknown".to_owned()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            page_size: rustix::param::page_size(),
            thp: ThpMode::read(),
            swap_active: swap_active(),
            mem_total: mem_total().unwrap_or(0),
            cpu_idle: cpu_idle(),
        }
    }
}

/// How an idle CPU waits: the cpuidle driver (`/sys/devices/system/cpu/cpuidle/current_driver`,
/// "none" when there is none), its governor, and under the `haltpoll` governor, a KVM guest's,
/// that governor's `guest_halt_poll_ns`: `haltpoll, governor haltpoll, guest_halt_poll_ns=0`.
/// With polling off (0) an idle vCPU halts at once, and waking a thread there is a wake-up of
/// the vCPU by its host: on the 2-vCPU guest of `docs/performance.md` a handler-thread fault
/// served from the other vCPU took 60-70 us p50 that way, and 7 us with 200 us of polling.
///
/// ```
/// let idle = remap::system::cpu_idle();
/// assert!(!idle.is_empty());
/// ```
pub fn cpu_idle() -> String {
    let read = |path: &str| {
        fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
    if driver.is_empty() {
        return "none".to_owned();
    }
    // `current_governor` is writable (and absent on older kernels), `_ro` its read-only twin.
    let mut governor = read("/sys/devices/system/cpu/cpuidle/current_governor");
    if governor.is_empty() {
        governor = read("/sys/devices/system/cpu/cpuidle/current_governor_ro");
    }
    let mut idle = driver;
    if !governor.is_empty() {
        idle.push_str(&format!(", governor {governor}"));
    }
    // The poll limit is the haltpoll governor's parameter; under another governor it does nothing.
    let poll = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    if governor == "haltpoll" && !poll.is_empty() {
        idle.push_str(&format!(", guest_halt_poll_ns={poll}"));
    }
    idle
}

/// The `n`-th CPU (wrapping) of those the calling thread may run on (its affinity mask), or
/// `None` when the mask cannot be read: the CPU that
/// [`FaultServerBuilder::pin_cpus`](crate::server::FaultServerBuilder::pin_cpus) gives handler
/// thread `n`, so that a caller can pin its own threads beside them.
///
/// ```
/// let first = remap::system::allowed_cpu(0).expect("the thread may run somewhere");
/// // Every index wraps onto an allowed CPU.
/// assert!(remap::system::allowed_cpu(usize::MAX).is_some());
/// # let _ = first;
/// ```
pub fn allowed_cpu(n: usize) -> Option<usize> {
    use rustix::thread::{sched_getaffinity, CpuSet};
    let allowed = sched_getaffinity(None).ok()?;
    let count = (0..CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c)).count();
    if count == 0 {
        return None;
    }
    (0..CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .nth(n % count)
}

fn cpu_model() -> Option<String> {
    let text = fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
}

fn mem_total() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether `/proc/swaps` lists any active swap area.
pub fn swap_active() -> bool {
    fs::read_to_string("/proc/swaps").is_ok_and(|text| text.lines().count() > 1)
}

/// Why an end-to-end move check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No userfaultfd could be created.
    #[error(transparent)]
    Create(#[from] uffd::CreateError),
    /// Mapping a region failed.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// Registering the destination failed.
    #[error(transparent)]
    Register(#[from] uffd::ControlError),
    /// The move itself failed.
    #[error("UFFDIO_MOVE: {0}")]
    Move(#[from] uffd::RangeError),
    /// Reading page state failed.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The source was not backed by a THP to begin with (no huge page could be allocated).
    #[error("the source region did not get a transparent huge page")]
    NoThp,
    /// The moved bytes differ from what the source held.
    #[error("contents differ after the move at offset {offset:#x}")]
    Corrupted {
        /// The first differing offset in the destination.
        offset: usize,
    },
}

/// The ioctls the kernel offers on a registered private anonymous range (`uffdio_register.ioctls`
/// of a throw-away MISSING registration): on Linux 6.8+ this includes `MOVE`.
///
/// # Errors
///
/// A [`CheckError`] when no fd, region or registration can be made.
pub fn range_ioctls() -> Result<uffd::Ioctls, CheckError> {
    let page = rustix::param::page_size();
    let uffd = uffd::Uffd::new()?;
    let region = Region::new(page)?;
    Ok(region
        .all_pages()
        .register(&uffd, uffd::RegisterMode::MISSING)?)
}

/// Moves one page between two fresh regions and verifies that its contents arrived and that the
/// source reads zero afterwards.
///
/// # Errors
///
/// A [`CheckError`] naming the step that failed.
pub fn check_page_move() -> Result<(), CheckError> {
    let page = rustix::param::page_size();
    let uffd = uffd::Uffd::new()?;
    let src = Region::builder(page)
        .thp(Thp::NoHuge)
        .populate(true)
        .build()?;
    let dst = Region::builder(page).thp(Thp::NoHuge).build()?;
    dst.all_pages()
        .register(&uffd, uffd::RegisterMode::MISSING)?;
    pattern::fill(&src, 0x5eed);
    dst.all_pages()
        .move_from(&uffd, src.all_pages(), uffd::MoveFlags::empty())?;
    pattern::verify_page(&dst, 0, 0x5eed, 0)
        .map_err(|m| CheckError::Corrupted { offset: m.offset })?;
    if src.read_u64(0) != 0 {
        return Err(CheckError::Corrupted { offset: 0 });
    }
    Ok(())
}

/// Moves an aligned 2 MiB transparent huge page into a fresh aligned region and verifies its
/// contents. Returns whether it arrived whole (PMD-mapped) rather than split into pages.
///
/// # Errors
///
/// [`CheckError::NoThp`] when the source got no THP, otherwise the step that failed.
pub fn check_thp_move() -> Result<bool, CheckError> {
    let uffd = uffd::Uffd::new()?;
    let build = || {
        Region::builder(HUGE_PAGE_SIZE)
            .huge_aligned(true)
            .thp(Thp::Huge)
    };
    let src = build().populate(true).build()?;
    let dst = build().build()?;
    pattern::fill(&src, 0x7a9);
    if !inspect::is_thp_mapped(src.addr())? {
        return Err(CheckError::NoThp);
    }
    dst.all_pages()
        .register(&uffd, uffd::RegisterMode::MISSING)?;
    dst.all_pages()
        .move_from(&uffd, src.all_pages(), uffd::MoveFlags::empty())?;
    let whole = inspect::is_thp_mapped(dst.addr())?;
    pattern::verify(&dst, 0x7a9).map_err(|m| CheckError::Corrupted { offset: m.offset })?;
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_thp_mode() {
        assert_eq!(ThpMode::parse("always [madvise] never\n"), ThpMode::Madvise);
        assert_eq!(ThpMode::parse("[always] madvise never\n"), ThpMode::Always);
        assert_eq!(ThpMode::parse("always madvise [never]\n"), ThpMode::Never);
        assert_eq!(ThpMode::parse(""), ThpMode::Unavailable);
    }

    #[test]
    fn reads_this_machine() {
        let machine = Machine::read();
        assert!(!machine.kernel_release.is_empty());
        assert!(machine.cores >= 1);
        assert_eq!(machine.page_size, rustix::param::page_size());
        assert!(machine.mem_total > 0);
    }

    #[test]
    fn cpu_idle_names_the_driver_the_governor_and_the_haltpoll_limit() {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let idle = cpu_idle();
        let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
        if driver.is_empty() {
            assert_eq!(idle, "none");
            return;
        }
        assert!(
            idle.starts_with(&driver),
            "{idle} does not start with {driver}"
        );
        let governor = read("/sys/devices/system/cpu/cpuidle/current_governor_ro");
        if !governor.is_empty() {
            assert!(idle.contains(&format!("governor {governor}")), "{idle}");
        }
        let poll = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
        assert_eq!(
            idle.contains("guest_halt_poll_ns="),
            governor == "haltpoll" && !poll.is_empty(),
            "{idle}"
        );
        if governor == "haltpoll" && !poll.is_empty() {
            assert!(
                idle.ends_with(&format!("guest_halt_poll_ns={poll}")),
                "{idle}"
            );
        }
        assert_eq!(Machine::read().cpu_idle, idle);
    }

    #[test]
    fn allowed_cpu_walks_the_affinity_mask_and_wraps() {
        use rustix::thread::{sched_getaffinity, CpuSet};
        let mask = sched_getaffinity(None).expect("affinity mask");
        let allowed: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| mask.is_set(c)).collect();
        for (i, &cpu) in allowed.iter().enumerate() {
            assert_eq!(allowed_cpu(i), Some(cpu));
            assert_eq!(allowed_cpu(i + allowed.len()), Some(cpu), "wraps");
        }
    }

    #[test]
    fn end_to_end_checks_move_real_pages() {
        let Ok(caps) = uffd::Capabilities::probe() else {
            return test_support::skip("end_to_end_checks_move_real_pages", "userfaultfd");
        };
        if !caps.supports_move() {
            return test_support::skip("end_to_end_checks_move_real_pages", "UFFDIO_MOVE");
        }
        check_page_move().expect("a page moves");
        if ThpMode::read().usable() {
            assert!(
                check_thp_move().expect("a THP moves"),
                "the THP arrived split"
            );
        } else {
            test_support::skip("end_to_end_checks_move_real_pages (THP part)", "THP");
        }
    }
}
