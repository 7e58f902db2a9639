//! Swap for tests: use active swap, or set up zram swap when running as root.
//!
//! Tests of swapped-out pages (`MADV_PAGEOUT`, then a move or a fault) need active swap. CI
//! machines rarely have any, so as root [`ensure_swap`] creates a compressed RAM disk (zram),
//! formats it with `mkswap` and enables it with `swapon`. The set-up is idempotent and safe
//! to run from many test processes at once (nextest runs each test in its own process): it holds
//! an exclusive `flock` on [`LOCK_PATH`] and re-checks `/proc/swaps` under the lock.
//!
//! Needs the zram driver (built in, or the `zram` module and `modprobe`) and `mkswap` and
//! `swapon` (Debian/Ubuntu package `util-linux`; `modprobe` is in `kmod`).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lock file that serialises zram set-up across processes. It also records which zram device
/// the set-up claimed, so a set-up interrupted half-way is redone on the same device.
pub const LOCK_PATH: &str = "/run/remap-zram.lock";

/// Size of the zram swap device set up by [`ensure_swap`].
pub const ZRAM_DISKSIZE: &str = "1G";

/// Whether some swap area is active (`/proc/swaps` lists at least one).
pub fn swap_active() -> bool {
    fs::read_to_string("/proc/swaps")
        .is_ok_and(|text| text.lines().skip(1).any(|l| !l.trim().is_empty()))
}

/// Makes sure swap is active.
///
/// `Ok` at once if `/proc/swaps` lists a swap area. Otherwise, as root, sets up a
/// [`ZRAM_DISKSIZE`] zram swap device with priority 100 (see the [module docs](self)).
///
/// # Errors
///
/// A message saying what is missing: not root, no zram driver, a missing tool, or the failing
/// step and its output.
pub fn ensure_swap() -> Result<(), String> {
    if swap_active() {
        return Ok(());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("no active swap, and setting up zram swap needs root".into());
    }
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(LOCK_PATH)
        .map_err(|e| format!("opening {LOCK_PATH}: {e}"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("locking {LOCK_PATH}: {e}"))?;
    // Another process may have finished the set-up while we waited for the lock.
    if swap_active() {
        return Ok(());
    }
    let mut claimed = String::new();
    lock.read_to_string(&mut claimed)
        .map_err(|e| format!("reading {LOCK_PATH}: {e}"))?;
    let device = match claimed.trim() {
        name if is_zram_name(name) && Path::new("/sys/block").join(name).exists() => {
            // Our own earlier, interrupted set-up: start that device afresh.
            write_attr(name, "reset", "1")?;
            name.to_owned()
        }
        _ => {
            let name = free_zram_device()?;
            lock.set_len(0)
                .and_then(|()| lock.seek(SeekFrom::Start(0)))
                .and_then(|_| lock.write_all(name.as_bytes()))
                .map_err(|e| format!("writing {LOCK_PATH}: {e}"))?;
            name
        }
    };
    write_attr(&device, "disksize", ZRAM_DISKSIZE)?;
    let dev = dev_node(&device)?;
    run(Command::new("mkswap").arg(&dev))?;
    run(Command::new("swapon").args(["-p", "100"]).arg(&dev))?;
    if swap_active() {
        Ok(())
    } else {
        Err(format!(
            "swapon {} succeeded but /proc/swaps lists nothing",
            dev.display()
        ))
    }
    // The flock is released when `lock` is closed.
}

fn is_zram_name(name: &str) -> bool {
    name.strip_prefix("zram")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Finds an unused zram device, loading the driver or hot-adding a device as needed.
fn free_zram_device() -> Result<String, String> {
    let control = Path::new("/sys/class/zram-control");
    if !control.exists() && !Path::new("/sys/block/zram0").exists() {
        run(Command::new("modprobe").arg("zram"))
            .map_err(|e| format!("zram module not available: {e}"))?;
    }
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .map_err(|e| format!("listing /sys/block: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| is_zram_name(name))
        .collect();
    names.sort();
    for name in names {
        // A device with a disksize is in use (by us as swap, or by someone else): leave it.
        if read_attr(&name, "initstate")?.trim() == "0" {
            return Ok(name);
        }
    }
    let hot_add = control.join("hot_add");
    let id = fs::read_to_string(&hot_add).map_err(|e| {
        format!(
            "zram module not available: no free zram device and {}: {e}",
            hot_add.display()
        )
    })?;
    Ok(format!("zram{}", id.trim()))
}

fn attr_path(device: &str, attr: &str) -> PathBuf {
    Path::new("/sys/block").join(device).join(attr)
}

fn read_attr(device: &str, attr: &str) -> Result<String, String> {
    let path = attr_path(device, attr);
    fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn write_attr(device: &str, attr: &str, value: &str) -> Result<(), String> {
    let path = attr_path(device, attr);
    fs::write(&path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// `/dev/<device>`, created from `/sys/block/<device>/dev` if devtmpfs/udev did not.
fn dev_node(device: &str) -> Result<PathBuf, String> {
    let node = Path::new("/dev").join(device);
    if node.exists() {
        return Ok(node);
    }
    let numbers = read_attr(device, "dev")?;
    let (major, minor) = numbers
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("unexpected /sys/block/{device}/dev {numbers:?}"))?;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    )
    .map_err(|e| format!("creating {}: {e}", node.display()))?;
    Ok(node)
}

/// Runs a set-up command; an error names the command and carries its stderr.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "{shown}: command not found (install util-linux for mkswap/swapon, kmod for modprobe)"
        ),
        _ => format!("{shown}: {e}"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
