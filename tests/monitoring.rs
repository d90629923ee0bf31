//! The example alert rules in `monitoring/` pass promtool's own checks and unit tests, as an
//! operator would load them. promtool comes from the Debian package `prometheus`
//! (`scripts/install-test-deps.sh`); without it these tests fail, they are never skipped.

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    let out = Command::new("promtool").args(args).current_dir(&dir).output().unwrap_or_else(|e| {
        panic!("running promtool: {e}\npromtool comes with the Debian package prometheus: run scripts/install-test-deps.sh as root")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed ({}):\n{text}", out.status);
    text
}

#[test]
fn the_alert_rules_are_valid() {
    let out = promtool(&["check", "rules", "delistd-rules.yml"]);
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let out = promtool(&["test", "rules", "delistd-rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_rule_named_in_the_issue_is_there() {
    let rules = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/delistd-rules.yml")).unwrap();
    for (alert, metric) in [
        ("DelistdCasesOverdue", "delistd_cases_overdue"),
        ("DelistdOutboxStuck", "delistd_outbox_oldest_queued_age_seconds"),
        ("DelistdMailboxUnreachable", "delistd_last_mailbox_check_timestamp_seconds"),
        ("DelistdDown", "up{job=\"delistd\"}"),
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert} missing");
        assert!(rules.contains(metric), "{metric} missing");
    }
    // Each metric a rule reads is one delistd exports.
    let exported = delistd::metrics::render(None, jiff::Timestamp::now());
    for metric in ["delistd_last_mailbox_check_timestamp_seconds", "process_start_time_seconds"] {
        assert!(exported.contains(&format!("# TYPE {metric} gauge")), "{metric} not exported");
    }
}
