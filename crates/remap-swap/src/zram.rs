//! One zram swap device: find a free one (loading the driver or hot-adding a device as needed),
//! size it, `mkswap` and `swapon` it; and the reverse. The callers in `lib.rs` hold the set-up
//! lock around every call here.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{SwapError, LOCK_PATH};

/// Size of the zram swap device.
pub(crate) const DISKSIZE: &str = "1G";

/// The device recorded in the set-up lock file (`zram<N>`), if any.
pub(crate) fn recorded(lock: &mut File) -> Result<Option<String>, SwapError> {
    let mut text = String::new();
    lock.seek(SeekFrom::Start(0))
        .and_then(|_| lock.read_to_string(&mut text))
        .map_err(SwapError::file("reading", LOCK_PATH))?;
    let name = text.trim();
    Ok(is_zram_name(name).then(|| name.to_owned()))
}

/// Records `device` (or nothing) in the set-up lock file.
pub(crate) fn record(lock: &mut File, device: Option<&str>) -> Result<(), SwapError> {
    lock.set_len(0)
        .and_then(|()| lock.seek(SeekFrom::Start(0)))
        .and_then(|_| lock.write_all(device.unwrap_or("").as_bytes()))
        .map_err(SwapError::file("writing", LOCK_PATH))
}

/// Sets up a zram swap device on a free one (no disksize: nobody's), recorded in `lock` before
/// it is sized, so a holder killed half-way leaves it for the undoing side to find; returns its
/// name. A device recorded by a set-up that never reached `swapon` is not reused: it may be
/// someone else's by now, and resetting it would destroy their data.
pub(crate) fn set_up(lock: &mut File) -> Result<String, SwapError> {
    let device = free_device()?;
    record(lock, Some(&device))?;
    write_attr(&device, "disksize", DISKSIZE)?;
    let node = dev_node(&device)?;
    run(Command::new("mkswap").arg(&node))?;
    run(Command::new("swapon").args(["-p", "100"]).arg(&node))?;
    if is_swap(&device) {
        Ok(device)
    } else {
        Err(SwapError::NotListed { device })
    }
}

/// Undoes [`set_up`] of `device`: `swapoff` (which brings what was swapped out back in) and a
/// reset, which frees the device's memory.
pub(crate) fn tear_down(device: &str) -> Result<(), SwapError> {
    run(Command::new("swapoff").arg(Path::new("/dev").join(device)))?;
    write_attr(device, "reset", "1")
}

/// Whether `/proc/swaps` lists `/dev/<device>`.
pub(crate) fn is_swap(device: &str) -> bool {
    let node = format!("/dev/{device}");
    fs::read_to_string("/proc/swaps").is_ok_and(|text| {
        text.lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(node.as_str()))
    })
}

fn is_zram_name(name: &str) -> bool {
    name.strip_prefix("zram")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Finds an unused zram device, loading the driver or hot-adding a device as needed.
fn free_device() -> Result<String, SwapError> {
    let control = Path::new("/sys/class/zram-control");
    if !control.exists() && !Path::new("/sys/block/zram0").exists() {
        run(Command::new("modprobe").arg("zram")).map_err(|e| SwapError::NoZram {
            why: "no zram driver, and loading the module failed".into(),
            source: Some(Box::new(e)),
        })?;
    }
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .map_err(SwapError::file("listing", "/sys/block"))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| is_zram_name(name))
        .collect();
    names.sort();
    for name in names {
        // A device with a disksize is in use (as swap, or by someone else): leave it.
        if read_attr(&name, "initstate")?.trim() == "0" {
            return Ok(name);
        }
    }
    let hot_add = control.join("hot_add");
    let id = fs::read_to_string(&hot_add).map_err(|e| SwapError::NoZram {
        why: "no free zram device, and none could be added".into(),
        source: Some(Box::new(SwapError::file("reading", hot_add.clone())(e))),
    })?;
    Ok(format!("zram{}", id.trim()))
}

fn attr_path(device: &str, attr: &str) -> PathBuf {
    Path::new("/sys/block").join(device).join(attr)
}

fn read_attr(device: &str, attr: &str) -> Result<String, SwapError> {
    let path = attr_path(device, attr);
    fs::read_to_string(&path).map_err(SwapError::file("reading", path))
}

fn write_attr(device: &str, attr: &str, value: &str) -> Result<(), SwapError> {
    let path = attr_path(device, attr);
    fs::write(&path, value).map_err(SwapError::file(format!("writing {value:?} to"), path))
}

/// `/dev/<device>`, created from `/sys/block/<device>/dev` if devtmpfs or udev did not.
fn dev_node(device: &str) -> Result<PathBuf, SwapError> {
    let node = Path::new("/dev").join(device);
    if node.exists() {
        return Ok(node);
    }
    let numbers = read_attr(device, "dev")?;
    let parsed = numbers
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let Some((major, minor)) = parsed else {
        return Err(SwapError::NoZram {
            why: format!("unexpected /sys/block/{device}/dev {numbers:?}"),
            source: None,
        });
    };
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    )
    .map_err(|e| SwapError::file("creating", &node)(e.into()))?;
    Ok(node)
}

/// Runs a set-up command; an error names the command and carries its stderr.
fn run(cmd: &mut Command) -> Result<(), SwapError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SwapError::NoCommand {
            command: command.clone(),
        },
        _ => SwapError::Spawn {
            command: command.clone(),
            source: e,
        },
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SwapError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_set_up_command_says_how_it_ended() {
        let e = run(&mut Command::new("false")).unwrap_err();
        assert!(
            matches!(e, SwapError::Command { ref status, .. } if !status.success()),
            "{e:?}"
        );
        let e = run(&mut Command::new("/nonexistent/remap-swap-helper")).unwrap_err();
        assert!(matches!(e, SwapError::NoCommand { .. }), "{e:?}");
        assert!(e.to_string().contains("install util-linux"), "{e}");
    }

    #[test]
    fn only_zram_device_names_are_taken_from_the_record() {
        assert!(is_zram_name("zram0") && is_zram_name("zram12"));
        for name in ["", "zram", "zram1a", "sda", "/dev/zram0", "zram0\n"] {
            assert!(!is_zram_name(name), "{name:?}");
        }
    }
}
