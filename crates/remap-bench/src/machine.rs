//! What machine a run was measured on: the serializable form of
//! [`remap::system::Machine`], which is the project's one reader of `uname`, `/proc` and `/sys`.

use remap::system::ThpMode;
use serde::Serialize;

/// The machine description carried by every report (style.md R11: kernel, page size and THP mode
/// go with every result). Built from [`remap::system::Machine::read`], so `remap bench` and
/// `remap probe` describe a machine the same way; this type only fixes the JSON field names.
///
/// ```
/// let m = remap_bench::Machine::detect();
/// assert!(m.page_size >= 4096);
/// assert!(m.cores >= 1);
/// assert_eq!(m.kernel, remap::system::Machine::read().kernel_release);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// `uname -m`.
    pub arch: String,
    /// The first `model name` of `/proc/cpuinfo` (or `unknown`).
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// The base page size in bytes.
    pub page_size: usize,
    /// The transparent huge page mode as the kernel spells it (`always`, `madvise`, `never`), or
    /// `unavailable`.
    pub thp_mode: String,
    /// Whether any swap area is active.
    pub swap_on: bool,
    /// Total memory in bytes (0 if unreadable).
    pub mem_total_bytes: u64,
    #[serde(skip)]
    thp: ThpMode,
}

impl Machine {
    /// Reads the description ([`remap::system::Machine::read`]); unreadable parts get placeholder
    /// values, never errors.
    pub fn detect() -> Machine {
        Machine::from(remap::system::Machine::read())
    }

    /// Whether `MADV_HUGEPAGE` regions can get transparent huge pages here.
    ///
    /// ```
    /// let m = remap_bench::Machine::detect();
    /// assert_eq!(m.thp_available(), m.thp_mode == "always" || m.thp_mode == "madvise");
    /// ```
    pub fn thp_available(&self) -> bool {
        self.thp.usable()
    }
}

impl From<remap::system::Machine> for Machine {
    fn from(m: remap::system::Machine) -> Machine {
        Machine {
            kernel: m.kernel_release,
            arch: m.arch,
            cpu_model: m.cpu_model,
            cores: m.cores,
            page_size: m.page_size,
            thp_mode: m.thp.as_str().to_owned(),
            swap_on: m.swap_active,
            mem_total_bytes: m.mem_total,
            thp: m.thp,
        }
    }
}
