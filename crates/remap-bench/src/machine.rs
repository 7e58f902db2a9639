//! What machine a run was measured on.

use serde::Serialize;

/// The machine description carried by every report (style.md R11: kernel, page size and THP mode
/// go with every result).
///
/// ```
/// let m = remap_bench::Machine::detect();
/// assert!(m.page_size >= 4096);
/// assert!(m.cores >= 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// The first `model name` of `/proc/cpuinfo` (or `unknown`).
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// The base page size in bytes.
    pub page_size: usize,
    /// The bracketed word of `/sys/kernel/mm/transparent_hugepage/enabled` (`always`, `madvise`,
    /// `never`), or `unavailable`.
    pub thp_mode: String,
    /// Whether any swap device is active (`/proc/swaps` lists one).
    pub swap_on: bool,
}

impl Machine {
    /// Reads the description from `uname`, `/proc` and `/sys`; unreadable parts say `unknown`.
    pub fn detect() -> Machine {
        let kernel = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let thp_mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .ok()
            .and_then(|s| {
                let start = s.find('[')?;
                let end = s[start..].find(']')?;
                Some(s[start + 1..start + end].to_owned())
            })
            .unwrap_or_else(|| "unavailable".to_owned());
        let swap_on = std::fs::read_to_string("/proc/swaps")
            .map(|s| s.lines().skip(1).any(|l| !l.trim().is_empty()))
            .unwrap_or(false);
        Machine {
            kernel,
            cpu_model,
            cores,
            page_size: rustix::param::page_size(),
            thp_mode,
            swap_on,
        }
    }

    /// Whether `MADV_HUGEPAGE` regions can get transparent huge pages here.
    pub fn thp_available(&self) -> bool {
        self.thp_mode == "always" || self.thp_mode == "madvise"
    }
}
