//! `remap probe` end to end: the binary, its exit codes, its JSON, and the unprivileged path.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use test_support::{require, Need};

/// The `data` of the one `probe` record that `remap --json probe` prints.
fn probe_record(stdout: &[u8]) -> serde_json::Value {
    let text = std::str::from_utf8(stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "one JSON Lines record: {text}");
    let mut v: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
    assert_eq!(v["type"], "probe", "the envelope's type: {text}");
    v["data"].take()
}

/// Runs `command`, killed (and the test failed) after two minutes: a probe that hangs is a bug.
fn output(command: &mut Command) -> Output {
    let out = test_support::child::output_within(command, Duration::from_secs(120));
    Output {
        status: out.status.unwrap_or(ExitStatus::from_raw(-1)),
        stdout: out.stdout.into_bytes(),
        stderr: out.stderr.into_bytes(),
    }
}

fn remap(args: &[&str]) -> Output {
    output(Command::new(env!("CARGO_BIN_EXE_remap")).args(args))
}

#[test]
fn probe_reports_that_move_works() {
    require!(Need::Move);
    let out = remap(&["probe"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("UFFDIO_MOVE works on this machine"),
        "{stdout}"
    );
    assert!(stdout.contains("move a 4 KiB page     yes"), "{stdout}");
    assert!(stdout.contains("MOVE                 yes"), "{stdout}");
    // MOVE is not an ioctl of the fd itself but of a registered anonymous range.
    assert!(
        stdout.contains("  MOVE                 no         yes"),
        "{stdout}"
    );
}

#[test]
fn probe_json_is_one_record_with_every_field() {
    require!(Need::Move);
    let out = remap(&["--json", "probe"]);
    assert_eq!(out.status.code(), Some(0));
    let v = probe_record(&out.stdout);
    // The machine is serialized as every other subcommand serializes it.
    for field in [
        "kernel_release",
        "arch",
        "cpu_model",
        "cores",
        "page_size",
        "thp_mode",
        "swap_active",
        "mem_total_bytes",
        "cpu_idle",
    ] {
        assert!(
            v["machine"].get(field).is_some(),
            "missing machine.{field} in {v}"
        );
    }
    for field in [
        "machine",
        "euid",
        "paths",
        "features",
        "api_ioctls",
        "range_ioctls",
        "move_check",
        "move_works",
        "move_checked",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {v}");
    }
    assert_eq!(v["move_works"], true);
    assert_eq!(v["move_checked"], true);
    assert_eq!(v["move_check"]["page_moved"], true);
    let range_move = v["range_ioctls"]
        .as_array()
        .and_then(|flags| flags.iter().find(|f| f["name"] == "MOVE"))
        .expect("MOVE among the range ioctls");
    assert_eq!(range_move["yes"], true);
    let features = v["features"].as_array().expect("features array");
    let move_bit = features
        .iter()
        .find(|f| f["name"] == "MOVE")
        .expect("MOVE listed");
    assert_eq!(move_bit["yes"], true);
    assert_eq!(v["paths"].as_array().map(Vec::len), Some(4));
    if remap::system::ThpMode::read().usable() {
        assert_eq!(v["move_check"]["thp_moved"], true, "{v}");
        assert_eq!(v["move_check"]["thp_whole"], true, "{v}");
    }
}

#[test]
fn probe_without_moves_still_reports_capabilities() {
    require!(Need::Move);
    let out = remap(&["--json", "probe", "--no-move"]);
    assert_eq!(out.status.code(), Some(0));
    let v = probe_record(&out.stdout);
    assert!(v["move_check"].is_null());
    assert_eq!(v["move_checked"], false);
    assert_eq!(
        v["features_bits"].as_u64().map(|b| b & (1 << 16)),
        Some(1 << 16)
    );
}

/// A copy of the binary that an unprivileged user can execute, wherever the checkout lives.
fn world_executable_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("remap-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let exe = dir.join("remap");
    std::fs::copy(env!("CARGO_BIN_EXE_remap"), &exe).expect("copy binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod binary");
    exe
}

/// As an unprivileged user, user-mode-only creation works and MOVE still moves pages; the
/// privileged paths fail with their errno and fix.
#[test]
fn probe_as_nobody_uses_the_user_mode_only_path() {
    require!(Need::Move, Need::Root);
    let exe = world_executable_copy();
    let out = output(
        Command::new(&exe)
            .args(["--json", "probe"])
            .uid(65534)
            .gid(65534),
    );
    let _ = std::fs::remove_dir_all(exe.parent().expect("temp dir"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = probe_record(&out.stdout);
    assert_eq!(v["euid"], 65534);
    assert_eq!(v["move_works"], true, "{v}");
    let paths = v["paths"].as_array().expect("paths");
    let umo = &paths[0];
    assert_eq!(umo["path"], "userfaultfd(2) with UFFD_USER_MODE_ONLY");
    assert_eq!(umo["ok"], true);
    let sysctl =
        std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").unwrap_or_default();
    if sysctl.trim() == "0" {
        let kernel_mode = &paths[1];
        assert_eq!(kernel_mode["path"], "userfaultfd(2)");
        assert_eq!(kernel_mode["ok"], false);
        assert!(kernel_mode["fix"]
            .as_str()
            .is_some_and(|fix| fix.contains("CAP_SYS_PTRACE")));
    }
}
