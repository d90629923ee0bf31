//! Counters, gauges and histograms for Prometheus, in its text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), and the listener that
//! serves them with the health probes ([`serve`]).
//!
//! A leaf: the daemon, the pipeline and the outbox call the one-line recorders below; no
//! pure module (extract, decide, render) imports this. Names follow Prometheus' rules: the
//! `delistd_` prefix, `_total` on counters, seconds and unix seconds as units. No label ever
//! holds an IP, an address or a case: every label value comes from a short fixed set
//! (outcomes, actions, reply kinds, states, error classes), so the series stay few.
//!
//! Counters live in this process (they start at zero with it, as Prometheus expects of
//! counters); what the database knows (cases by state, the outbox queue) is read from it at
//! scrape time by [`render`]'s caller.

pub mod listener;
pub mod serve;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

use crate::cases::monitor::Gauges;

/// A counter family with labels.
struct Family(Mutex<BTreeMap<Vec<String>, u64>>);

impl Family {
    const fn new() -> Family {
        Family(Mutex::new(BTreeMap::new()))
    }
    fn inc(&self, labels: &[&str]) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(labels.iter().map(|s| s.to_string()).collect()).or_insert(0) += 1;
    }
    fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A histogram with fixed buckets (upper bounds in seconds).
struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistState>,
}

struct HistState {
    /// Per bucket (not cumulative); the last slot is +Inf.
    counts: [u64; 16],
    sum: f64,
    count: u64,
}

impl Histogram {
    const fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, state: Mutex::new(HistState { counts: [0; 16], sum: 0.0, count: 0 }) }
    }
    fn observe(&self, secs: f64) {
        let i = self.bounds.iter().position(|b| secs <= *b).unwrap_or(self.bounds.len());
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.counts[i.min(15)] += 1;
        s.sum += secs;
        s.count += 1;
    }
}

const HANDLING_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const REPLY_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0];

static MESSAGES: Family = Family::new();
static REPLIES: Family = Family::new();
static SEND_FAILURES: Family = Family::new();
static ESCALATIONS: Family = Family::new();
static LOOKUPS: Family = Family::new();
static LOOKUP_TIME: Histogram = Histogram::new(HANDLING_BUCKETS);
static IMAP_RECONNECTS: AtomicU64 = AtomicU64::new(0);
/// Unix milliseconds; 0: never.
static LAST_MAILBOX_CHECK_MS: AtomicI64 = AtomicI64::new(0);
static LAST_MESSAGE_MS: AtomicI64 = AtomicI64::new(0);
static START_MS: AtomicI64 = AtomicI64::new(0);
static HANDLING: Histogram = Histogram::new(HANDLING_BUCKETS);
static INTAKE_TO_ACCEPTED: Histogram = Histogram::new(REPLY_BUCKETS);

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

// ---- recorders: one line at the point where the thing happens ------------------------------

/// A message went through the pipeline. `outcome`: processed, ignored, quarantined or
/// already_recorded; `action`: the decision's action, `none` when there was no decision.
pub fn message_handled(outcome: &str, action: &str, took: Duration) {
    MESSAGES.inc(&[outcome, action]);
    HANDLING.observe(took.as_secs_f64());
    LAST_MESSAGE_MS.store(now_ms(), Ordering::Relaxed);
}

/// A reply was queued (its transaction committed).
pub fn reply_queued(kind: &str) {
    REPLIES.inc(&[kind, "queued"]);
}

/// The server accepted a reply queued `since_queued` ago. An automatic reply is queued in
/// the transaction that records its request, so for one that answers a message this is the
/// time from intake to acceptance. Staff replies (`delisted`, `rejected`, `staff_reply`,
/// `staff_question`) are queued when staff act, not at intake, and are left out of that
/// histogram (`reopened` is queued at intake and counts).
pub fn reply_sent(kind: Option<&str>, answers_a_message: bool, since_queued: Duration) {
    REPLIES.inc(&[kind.unwrap_or("unknown"), "sent"]);
    if answers_a_message && !matches!(kind, Some("delisted" | "rejected" | "staff_reply" | "staff_question")) {
        INTAKE_TO_ACCEPTED.observe(since_queued.as_secs_f64());
    }
}

/// A reply was given up.
pub fn reply_failed(kind: Option<&str>) {
    REPLIES.inc(&[kind.unwrap_or("unknown"), "failed"]);
}

/// One attempt to hand a reply over failed; `class`: permanent, transient, bad_recipient,
/// network, file.
pub fn send_failure(class: &str) {
    SEND_FAILURES.inc(&[class]);
}

/// One IP looked up on the blocklist. `result`: listed, not_listed or unknown; `source`: the
/// kind of source that answered (`dnsbl`, `cidr`), `none` when none did. Never the IP.
pub fn blocklist_lookup(result: &str, source: &str, took: Duration) {
    LOOKUPS.inc(&[result, source]);
    LOOKUP_TIME.observe(took.as_secs_f64());
}

/// The IMAP connection was lost (or refused) and will be opened again.
pub fn imap_reconnect() {
    IMAP_RECONNECTS.fetch_add(1, Ordering::Relaxed);
}

/// The daemon started (`process_start_time_seconds`, which the alert rules use to give a
/// fresh daemon time to reach its mailbox).
pub fn mark_start() {
    let _ = START_MS.compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
}

/// The mailbox was reached and read to the end (IMAP or Maildir).
pub fn mailbox_checked() {
    LAST_MAILBOX_CHECK_MS.store(now_ms(), Ordering::Relaxed);
}

/// When the mailbox was last read to the end, if ever (readiness).
pub fn last_mailbox_check() -> Option<Timestamp> {
    match LAST_MAILBOX_CHECK_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Timestamp::from_millisecond(ms).ok(),
    }
}

/// An escalation mail was queued: `due_soon`, `overdue` or `digest`.
pub fn escalation_queued(what: &str) {
    ESCALATIONS.inc(&[what]);
}

// ---- the exposition -------------------------------------------------------------------------

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn family(out: &mut String, name: &str, help: &str, labels: &[&str], f: &Family) {
    head(out, name, "counter", help);
    for (values, n) in f.snapshot() {
        let pairs: Vec<String> = labels.iter().zip(&values).map(|(l, v)| format!("{l}=\"{}\"", escape(v))).collect();
        let _ = writeln!(out, "{name}{{{}}} {n}", pairs.join(","));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    head(out, name, "histogram", help);
    let s = h.state.lock().unwrap_or_else(|p| p.into_inner());
    let mut cumulative = 0;
    for (i, bound) in h.bounds.iter().enumerate() {
        cumulative += s.counts[i];
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.count);
    let _ = writeln!(out, "{name}_sum {}", s.sum);
    let _ = writeln!(out, "{name}_count {}", s.count);
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn unix_seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Everything, in the text format. `gauges`: what the database says at `now` (`None` when it
/// could not be read: those series are left out, and `delistd_store_up` says 0).
pub fn render(gauges: Option<&Gauges>, now: Timestamp) -> String {
    let mut out = String::with_capacity(8 * 1024);
    head(&mut out, "delistd_build_info", "gauge", "The running delistd: its version, always 1.");
    let _ = writeln!(out, "delistd_build_info{{version=\"{}\"}} 1", escape(env!("CARGO_PKG_VERSION")));

    family(&mut out, "delistd_messages_total", "Messages taken in, by outcome and the decision's action.", &["outcome", "action"], &MESSAGES);
    family(&mut out, "delistd_replies_total", "Replies and staff mails by kind and state reached (queued, sent, failed).", &["kind", "state"], &REPLIES);
    family(&mut out, "delistd_reply_send_failures_total", "Failed attempts to hand a reply over, by class of failure.", &["class"], &SEND_FAILURES);
    family(&mut out, "delistd_escalations_total", "Escalation mails queued to staff: due_soon, overdue, digest.", &["stage"], &ESCALATIONS);
    family(&mut out, "delistd_blocklist_lookups_total", "IPs looked up on the blocklist, by result and the kind of source that answered.", &["result", "source"], &LOOKUPS);
    histogram(&mut out, "delistd_blocklist_lookup_seconds", "Time to look one IP up on every configured source.", &LOOKUP_TIME);
    head(&mut out, "delistd_imap_reconnects_total", "counter", "Times the IMAP connection was lost or refused and opened again.");
    let _ = writeln!(out, "delistd_imap_reconnects_total {}", IMAP_RECONNECTS.load(Ordering::Relaxed));
    head(&mut out, "delistd_store_busy_retries_total", "counter", "Times the database was locked by another connection and a statement waited to retry.");
    let _ = writeln!(out, "delistd_store_busy_retries_total {}", crate::cases::schema::BUSY_RETRIES.load(Ordering::Relaxed));

    histogram(&mut out, "delistd_message_handling_seconds", "Time to take one message through extraction, decision and its transaction.", &HANDLING);
    histogram(
        &mut out,
        "delistd_intake_to_reply_accepted_seconds",
        "Time from a message's intake to the SMTP server's acceptance of its reply.",
        &INTAKE_TO_ACCEPTED,
    );

    gauge(
        &mut out,
        "delistd_last_mailbox_check_timestamp_seconds",
        "When the mailbox was last reached and read to the end (unix seconds; 0: not yet).",
        unix_seconds(LAST_MAILBOX_CHECK_MS.load(Ordering::Relaxed)),
    );
    gauge(
        &mut out,
        "delistd_last_message_handled_timestamp_seconds",
        "When the last message was handled (unix seconds; 0: none since start).",
        unix_seconds(LAST_MESSAGE_MS.load(Ordering::Relaxed)),
    );

    // The standard name client libraries give it, so that dashboards find it.
    let start = match START_MS.load(Ordering::Relaxed) {
        0 => now.as_millisecond(),
        ms => ms,
    };
    gauge(&mut out, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", unix_seconds(start));
    gauge(&mut out, "delistd_store_up", "Whether the database answered this scrape (1) or not (0).", u8::from(gauges.is_some()));
    if let Some(g) = gauges {
        head(&mut out, "delistd_cases", "gauge", "Cases by state, read from the database at scrape time.");
        for (state, n) in &g.cases_by_state {
            let _ = writeln!(out, "delistd_cases{{state=\"{state}\"}} {n}");
        }
        gauge(&mut out, "delistd_cases_overdue", "Open cases past their due time.", g.overdue);
        gauge(&mut out, "delistd_cases_due_soon", "Open cases due within the escalation's warn_before (6h by default).", g.due_soon);
        gauge(&mut out, "delistd_outbox_queued", "Replies and staff mails waiting to be sent (first attempt or retry).", g.outbox_queued);
        let age = g.oldest_queued_at.map_or(0.0, |t| (now.as_millisecond() - t.as_millisecond()).max(0) as f64 / 1000.0);
        gauge(&mut out, "delistd_outbox_oldest_queued_age_seconds", "Age of the oldest reply waiting to be sent (0: none waiting).", age);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::CaseState;

    #[test]
    fn the_exposition_has_help_type_and_escaped_labels() {
        message_handled("processed", "acknowledge", Duration::from_millis(3));
        reply_queued("acknowledge");
        send_failure("transient");
        blocklist_lookup("listed", "dnsbl", Duration::from_millis(4));
        let g = Gauges {
            cases_by_state: CaseState::ALL.iter().map(|s| (*s, 1)).collect(),
            overdue: 2,
            due_soon: 1,
            outbox_queued: 1,
            oldest_queued_at: Some("2030-01-01T00:00:00Z".parse().unwrap()),
        };
        let text = render(Some(&g), "2030-01-01T00:10:00Z".parse().unwrap());
        for line in [
            "# TYPE delistd_messages_total counter",
            "delistd_replies_total{kind=\"acknowledge\",state=\"queued\"}",
            "delistd_reply_send_failures_total{class=\"transient\"}",
            "delistd_blocklist_lookups_total{result=\"listed\",source=\"dnsbl\"}",
            "delistd_blocklist_lookup_seconds_bucket{le=\"+Inf\"}",
            "delistd_cases{state=\"awaiting_info\"} 1",
            "delistd_cases_overdue 2",
            "delistd_outbox_oldest_queued_age_seconds 600",
            "delistd_message_handling_seconds_bucket{le=\"+Inf\"}",
            "delistd_build_info{version=",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // Every series has its HELP and TYPE before it.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            let base = if text.contains(&format!("# TYPE {name} ")) { name } else { base };
            assert!(text.contains(&format!("# HELP {base} ")), "{name} has no HELP");
        }
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(render(None, Timestamp::now()).contains("delistd_store_up 0"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for s in [0.5, 1.5, 1.7, 9.0] {
            h.observe(s);
        }
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "x", &h);
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_count 4\n"), "{out}");
    }
}
