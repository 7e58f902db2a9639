//! Resident memory of this process, from `/proc/self/status`.

/// Resets the peak (`VmHWM`) to the current resident size (`5` into `/proc/self/clear_refs`);
/// returns whether the kernel took it.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
}

/// The resident size in bytes (`VmRSS`).
pub fn current() -> Option<u64> {
    status_kib("VmRSS:")
}

/// The peak resident size in bytes since the last [`reset_peak`] (`VmHWM`).
pub fn peak() -> Option<u64> {
    status_kib("VmHWM:")
}
