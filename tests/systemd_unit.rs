//! The shipped systemd unit passes systemd's own checks: `systemd-analyze verify` is silent and
//! `systemd-analyze security` rates its exposure at 1.5 or lower (scripts/check-systemd-unit.sh).
//!
//! systemd-analyze comes from scripts/install-test-deps.sh. Without it these tests fail: a unit
//! nobody checked is exactly what they exist to catch.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MAX_EXPOSURE: f64 = 1.5;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_unit() -> PathBuf {
    repo().join("systemd/delistd.service")
}

/// Runs the check script on `unit`, with cargo's own build of the daemon standing in for
/// /usr/bin/delistd, so that verify checks ExecStart against a real binary.
fn check(unit: &Path) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/check-systemd-unit.sh"))
        .arg(unit)
        .env("DELISTD_BIN", env!("CARGO_BIN_EXE_delistd"))
        .output()
        .expect("bash runs")
}

fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The shipped unit with `edit` applied, written next to nothing else in a fresh directory
/// under the unit's own name (verify derives the unit type from it).
fn edited_unit(edit: impl Fn(&str) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("delistd.service");
    let original = std::fs::read_to_string(shipped_unit()).unwrap();
    std::fs::write(&path, edit(&original)).unwrap();
    (dir, path)
}

#[test]
fn systemd_analyze_is_installed() {
    let out = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        matches!(&out, Ok(o) if o.status.success()),
        "systemd-analyze is missing: run scripts/install-test-deps.sh ({out:?})"
    );
}

#[test]
fn shipped_unit_is_clean_and_sandboxed() {
    let out = check(&shipped_unit());
    let all = text(&out);
    assert!(out.status.success(), "check-systemd-unit.sh failed:\n{all}");
    assert!(all.contains("verify: clean"), "verify did not run:\n{all}");

    let exposure: f64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("exposure: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("no exposure figure in:\n{all}"));
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure} > {MAX_EXPOSURE}:\n{all}");
}

#[test]
fn shipped_unit_has_what_the_daemon_relies_on() {
    let unit = std::fs::read_to_string(shipped_unit()).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/bin/delistd run --config /etc/delistd/delistd.toml",
        // The package's system user (delistd.sysusers) and the staff group.
        "User=delistd",
        "Group=delistd-staff",
        "StateDirectory=delistd",
        "ConfigurationDirectory=delistd",
        "LoadCredential=imap-password:/etc/delistd/imap-password",
        "LoadCredential=smtp-password:/etc/delistd/smtp-password",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "Restart=on-failure",
        // A bad config or refused credentials are not cured by restarting (issue 9).
        "RestartPreventExitStatus=73 77 78 243",
        "StartLimitBurst=5",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "unit lacks `{line}`");
    }
    for key in ["WatchdogSec=", "TimeoutStopSec="] {
        assert!(unit.lines().any(|l| l.starts_with(key)), "unit lacks {key}");
    }
}

/// The unit with the Maildir drop-in (systemd/maildir.conf) folded in stays under the limit.
#[test]
fn maildir_variant_is_clean_and_sandboxed() {
    let dropin = std::fs::read_to_string(repo().join("systemd/maildir.conf")).unwrap();
    let settings: Vec<&str> =
        dropin.lines().filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('[')).collect();
    assert!(settings.iter().any(|l| l.starts_with("ReadWritePaths=")), "{dropin}");
    let (_dir, unit) = edited_unit(|u| {
        u.lines()
            .filter(|l| !settings.iter().any(|s| s.split('=').next() == l.split('=').next()))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("[Install]", &format!("{}\n\n[Install]", settings.join("\n")))
    });
    let out = check(&unit);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
}

// The check must be able to fail: a broken unit and a weakly sandboxed one are both refused.

#[test]
fn a_unit_verify_complains_about_is_refused() {
    let (_dir, unit) = edited_unit(|u| u.replace("Type=notify", "Type=notfy"));
    let out = check(&unit);
    let all = text(&out);
    assert!(!out.status.success(), "a bad Type= passed:\n{all}");
    assert!(all.contains("notfy"), "verify's complaint is not shown:\n{all}");
}

#[test]
fn a_weakly_sandboxed_unit_is_refused() {
    let (_dir, unit) = edited_unit(|u| {
        u.lines()
            .filter(|l| !l.starts_with("Protect") && !l.starts_with("Private"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let out = check(&unit);
    let all = text(&out);
    assert!(!out.status.success(), "a unit without Protect*/Private* passed:\n{all}");
    assert!(all.contains("is above 1.5"), "failure was not about exposure:\n{all}");
}
