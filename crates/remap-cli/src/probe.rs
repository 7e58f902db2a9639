//! `remap probe`: what this machine offers, and whether UFFDIO_MOVE works end to end.
//!
//! With `--json`, one record in the envelope: `{"type":"probe","data":{"machine":{...},
//! "euid":0,...,"move_works":true,...}}`, where `machine` is [`remap::system::Machine`].

use std::io::Write;

use remap::system::Machine;
use serde::Serialize;
use uffd::{Capabilities, CreatePath, Features, Ioctls};

use crate::output::write_json_line;
use crate::{Outcome, Output};

/// Options of `remap probe`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProbeArgs {
    /// Skip the end-to-end moves: trust `UFFD_FEATURE_MOVE` without moving pages.
    #[arg(long)]
    no_move: bool,
}

/// Everything `remap probe` reports; `--json` prints it as one `probe` record.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    euid: u32,
    /// `vm.unprivileged_userfaultfd`, when readable.
    unprivileged_userfaultfd: Option<u32>,
    /// Each creation path, and why it failed where it did.
    paths: Vec<PathResult>,
    /// The features the kernel reports, by name (empty when no fd could be made).
    features: Vec<Flag>,
    features_bits: u64,
    /// The ioctls on the fd itself.
    api_ioctls: Vec<Flag>,
    /// The ioctls on a registered private anonymous range (where MOVE is advertised).
    range_ioctls: Vec<Flag>,
    /// The end-to-end check, when run.
    move_check: Option<MoveCheck>,
    /// Whether MOVE is usable here, and if not, why.
    move_works: bool,
    /// Whether `move_works` rests on real moves (false with `--no-move`: on the feature bit alone).
    move_checked: bool,
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct PathResult {
    path: String,
    ok: bool,
    errno: Option<String>,
    fix: Option<String>,
}

#[derive(Debug, Serialize)]
struct Flag {
    name: &'static str,
    yes: bool,
}

/// The outcome of moving real pages.
#[derive(Debug, Serialize)]
struct MoveCheck {
    /// A 4 KiB page moved and its contents arrived.
    page_moved: bool,
    page_error: Option<String>,
    /// An aligned 2 MiB THP moved and its contents arrived.
    thp_moved: Option<bool>,
    /// The THP arrived as a THP (a whole-PMD move), rather than split into pages.
    thp_whole: Option<bool>,
    thp_error: Option<String>,
}

const PATHS: [CreatePath; 4] = [
    CreatePath::Syscall {
        user_mode_only: true,
    },
    CreatePath::Syscall {
        user_mode_only: false,
    },
    CreatePath::Device {
        user_mode_only: true,
    },
    CreatePath::Device {
        user_mode_only: false,
    },
];

/// Runs `remap probe`.
pub(crate) fn run(args: &ProbeArgs, out: Output) -> anyhow::Result<Outcome> {
    let caps = Capabilities::probe();
    let report = probe(args, caps);
    let mut stdout = std::io::stdout().lock();
    if out.json {
        write_json_line(&mut stdout, "probe", &report)?;
    } else {
        render(&mut stdout, &report)?;
    }
    stdout.flush()?;
    Ok(outcome(&report))
}

/// Clean when MOVE works; could not run (exit 2) with the reason when userfaultfd or MOVE is
/// unavailable.
fn outcome(report: &Report) -> Outcome {
    match &report.reason {
        None => Outcome::Clean,
        Some(reason) => Outcome::CannotRun(format!("UFFDIO_MOVE is not usable here: {reason}")),
    }
}

/// Builds the report from `caps`, the capability probe (an argument so the unavailable case can
/// be tested without breaking the machine).
fn probe(args: &ProbeArgs, caps: Result<Capabilities, uffd::CreateError>) -> Report {
    let machine = Machine::read();
    let paths = PATHS
        .iter()
        .map(|&path| match uffd::try_path(path) {
            Ok(()) => PathResult {
                path: path.to_string(),
                ok: true,
                errno: None,
                fix: None,
            },
            Err(errno) => {
                let attempt = uffd::Attempt { path, errno };
                PathResult {
                    path: path.to_string(),
                    ok: false,
                    errno: Some(errno.to_string()),
                    fix: Some(attempt.fix().to_owned()),
                }
            }
        })
        .collect();

    let (features, api_ioctls) = match &caps {
        Ok(caps) => (caps.features(), caps.ioctls()),
        Err(_) => (Features::empty(), Ioctls::empty()),
    };

    let range_ioctls = match &caps {
        Ok(_) => remap::system::range_ioctls().unwrap_or_else(|err| {
            tracing::warn!(%err, "registering a throw-away range failed");
            Ioctls::empty()
        }),
        Err(_) => Ioctls::empty(),
    };

    let mut reason = None;
    let mut move_check = None;
    match &caps {
        Err(err) => reason = Some(format!("no userfaultfd: {err}")),
        Ok(caps) if !caps.supports_move() => {
            reason = Some(
                "the kernel does not report UFFD_FEATURE_MOVE (UFFDIO_MOVE needs Linux 6.8)".into(),
            );
        }
        Ok(_) if args.no_move => {}
        Ok(_) => {
            let check = check_move(machine.thp.usable());
            if !check.page_moved {
                reason = Some(format!(
                    "moving a page failed: {}",
                    check.page_error.as_deref().unwrap_or("unknown error")
                ));
            }
            move_check = Some(check);
        }
    }

    Report {
        machine,
        euid: rustix::process::geteuid().as_raw(),
        unprivileged_userfaultfd: std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd")
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        paths,
        features: Features::all()
            .iter_names()
            .map(|(name, bit)| Flag {
                name,
                yes: features.contains(bit),
            })
            .collect(),
        features_bits: features.bits(),
        api_ioctls: flags(api_ioctls),
        range_ioctls: flags(range_ioctls),
        move_works: reason.is_none(),
        move_checked: move_check.is_some(),
        move_check,
        reason,
    }
}

fn flags(ioctls: Ioctls) -> Vec<Flag> {
    Ioctls::all()
        .iter_names()
        .map(|(name, bit)| Flag {
            name,
            yes: ioctls.contains(bit),
        })
        .collect()
}

/// Moves a 4 KiB page and an aligned 2 MiB THP between regions remap owns, verifying contents.
fn check_move(thp_usable: bool) -> MoveCheck {
    let (page_moved, page_error) = match remap::system::check_page_move() {
        Ok(()) => (true, None),
        Err(err) => (false, Some(err.to_string())),
    };
    let (thp_moved, thp_whole, thp_error) = if thp_usable {
        match remap::system::check_thp_move() {
            Ok(whole) => (Some(true), Some(whole), None),
            Err(err) => (Some(false), None, Some(err.to_string())),
        }
    } else {
        (None, None, Some("THP is not enabled (mode never)".into()))
    };
    MoveCheck {
        page_moved,
        page_error,
        thp_moved,
        thp_whole,
        thp_error,
    }
}

fn yes_no(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "no"
    }
}

fn render(w: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let m = &r.machine;
    writeln!(w, "kernel        {} ({})", m.kernel_release, m.arch)?;
    writeln!(w, "cpu           {} ({} cores)", m.cpu_model, m.cores)?;
    writeln!(w, "page size     {} bytes", m.page_size)?;
    writeln!(w, "THP mode      {}", m.thp)?;
    writeln!(w, "swap active   {}", yes_no(m.swap_active))?;
    writeln!(w, "cpu idle      {}", m.cpu_idle)?;
    let sysctl = r
        .unprivileged_userfaultfd
        .map_or_else(|| "unreadable".to_owned(), |v| v.to_string());
    writeln!(
        w,
        "euid          {} (vm.unprivileged_userfaultfd = {sysctl})",
        r.euid
    )?;
    writeln!(w)?;
    writeln!(w, "creating a userfaultfd:")?;
    for p in &r.paths {
        match (&p.errno, &p.fix) {
            (Some(errno), Some(fix)) => writeln!(w, "  {:<44} no: {errno} ({fix})", p.path)?,
            _ => writeln!(w, "  {:<44} yes", p.path)?,
        }
    }
    writeln!(w)?;
    writeln!(w, "features (UFFDIO_API = {:#x}):", r.features_bits)?;
    for f in &r.features {
        writeln!(w, "  {:<20} {}", f.name, yes_no(f.yes))?;
    }
    writeln!(w)?;
    writeln!(w, "ioctls:               on the fd  on an anonymous range")?;
    for (fd, range) in r.api_ioctls.iter().zip(&r.range_ioctls) {
        writeln!(
            w,
            "  {:<20} {:<10} {}",
            fd.name,
            yes_no(fd.yes),
            yes_no(range.yes)
        )?;
    }
    writeln!(w)?;
    match &r.move_check {
        None => writeln!(
            w,
            "end-to-end MOVE: not run (--no-move: judged by the feature bit)"
        )?,
        Some(c) => {
            match &c.page_error {
                None => writeln!(w, "move a 4 KiB page     yes")?,
                Some(e) => writeln!(w, "move a 4 KiB page     no: {e}")?,
            }
            match (c.thp_moved, c.thp_whole, &c.thp_error) {
                (Some(true), Some(true), _) => {
                    writeln!(w, "move a 2 MiB THP      yes, as a whole PMD")?
                }
                (Some(true), _, _) => {
                    writeln!(w, "move a 2 MiB THP      yes, but split into pages")?
                }
                (_, _, Some(e)) => writeln!(w, "move a 2 MiB THP      no: {e}")?,
                _ => writeln!(w, "move a 2 MiB THP      not run")?,
            }
        }
    }
    match &r.reason {
        None => writeln!(w, "\nUFFDIO_MOVE works on this machine"),
        Some(reason) => writeln!(w, "\nUFFDIO_MOVE is not usable: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_userfaultfd_means_exit_2_with_the_reason() {
        let caps = Err(uffd::CreateError::Unavailable {
            attempts: vec![uffd::Attempt {
                path: CreatePath::Syscall {
                    user_mode_only: true,
                },
                errno: uffd::Errno::NOSYS,
            }],
        });
        let report = probe(&ProbeArgs { no_move: false }, caps);
        assert!(!report.move_works);
        assert!(!report.move_checked);
        assert_eq!(outcome(&report).exit_status(), 2);
        let reason = report.reason.expect("a reason");
        assert!(reason.contains("no userfaultfd"), "{reason}");
        assert!(reason.contains("CONFIG_USERFAULTFD"), "{reason}");
        assert!(report.features.iter().all(|f| !f.yes));
    }

    #[test]
    fn move_feature_missing_means_exit_2() {
        let Ok(real) = Capabilities::probe() else {
            return test_support::skip("move_feature_missing_means_exit_2", "userfaultfd");
        };
        // A kernel without MOVE is emulated by reporting the real kernel's other features only.
        let caps = Ok(real.without(Features::MOVE));
        let report = probe(&ProbeArgs { no_move: false }, caps);
        assert_eq!(outcome(&report).exit_status(), 2);
        assert!(report
            .reason
            .is_some_and(|r| r.contains("UFFD_FEATURE_MOVE")));
    }
}
