//! `/metrics`, `/healthz` and `/readyz` of a daemon draining real mail: every scrape passes
//! `promtool check metrics`, the counters agree with the database once the drain is done,
//! and `/healthz` fails once a loop stops (the `DELISTD_TEST_STALL_FILE` hook).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over plain HTTP/1.1: (status, body); `None` while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked answer to {path}: {head}");
    Some((status, body.to_string()))
}

/// `promtool check metrics` on one scrape: the format is valid and the names follow
/// Prometheus' conventions.
fn promtool_check(scrape: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, scripts/install-test-deps.sh)");
    child.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- the scrape:\n{scrape}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of a scrape: `name{labels}` → value.
fn samples(scrape: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sum(s: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_agree_with_the_database_and_health_follows_the_loops() {
    let d = Delistd::new("metrics");
    let port = free_port();
    let mut cfg = read(&d.config);
    cfg.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&d.config, cfg).unwrap();

    // Seven requests: five to acknowledge (two for the same IP), one without its IP, one
    // automatic reply that gets no answer.
    let mut smtp = SmtpClient::connect();
    let mut senders = Vec::new();
    for i in 0..7 {
        let s = d.account(&format!("s{i}"));
        let (subject, extra, body): (&str, &[(&str, &str)], String) = match i {
            5 => ("please delist", &[], "Our mail is rejected with 5.7.511, please remove us.\n".into()),
            6 => ("Automatic reply: away", &[("Auto-Submitted", "auto-replied")], "Out of office.\n".into()),
            _ => (
                "delist request",
                &[],
                format!("Hello,\n\n550 5.7.511 Access denied, banned sender[203.0.113.{}]. Please remove us.\n", 10 + i.min(3)),
            ),
        };
        let m = text_message(&s.address, &d.delist.address, subject, &format!("metrics-{i}@senders.example.test"), extra, &body);
        smtp.send(&s.address, &d.delist.address, &m);
        senders.push(s);
    }
    smtp.quit();
    let mut inbox = ImapReader::login(&d.delist);
    wait_for_count_in(&mut inbox, "INBOX", 7, PATIENCE);

    let stall = d.root.join("stall-intake");
    let mut serving = d.serve_with(&[
        ("DELISTD_TEST_STALL_FILE", stall.as_os_str()),
        // A loop silent for 20 s fails the health check (as under a 20 s systemd watchdog).
        ("WATCHDOG_USEC", std::ffi::OsStr::new("20000000")),
    ]);

    // Scrape while it drains; every scrape must be valid.
    let start = Instant::now();
    let mut scrapes = 0;
    let last = loop {
        serving.assert_running();
        assert!(start.elapsed() < PATIENCE, "the drain did not finish:\n{}", serving.log_text());
        if let Some((status, body)) = http_get(port, "/metrics") {
            assert_eq!(status, 200, "{body}");
            promtool_check(&body);
            scrapes += 1;
            let s = samples(&body);
            if sum(&s, "delistd_messages_total", &[]) >= 7.0 && sum(&s, "delistd_replies_total", &["state=\"sent\""]) >= 6.0 {
                break body;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(scrapes >= 1);
    let s = samples(&last);

    // The counters agree with the database.
    for outcome in ["processed", "ignored", "quarantined"] {
        let db = d.count(&format!("SELECT count(*) FROM messages WHERE outcome = '{outcome}'"));
        assert_eq!(sum(&s, "delistd_messages_total", &[&format!("outcome=\"{outcome}\"")]), db as f64, "{outcome}:\n{last}");
    }
    for action in ["acknowledge", "missing_info", "ignore"] {
        let db = d.count(&format!("SELECT count(*) FROM messages WHERE action = '{action}'"));
        assert_eq!(sum(&s, "delistd_messages_total", &[&format!("action=\"{action}\"")]), db as f64, "{action}:\n{last}");
    }
    assert_eq!(d.count("SELECT count(*) FROM messages WHERE action = 'acknowledge'"), 5);
    for row in d.rows("SELECT kind, count(*) FROM outbox GROUP BY kind") {
        let (kind, n) = (&row[0], &row[1]);
        let labels = [format!("kind=\"{kind}\""), "state=\"queued\"".to_string()];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(sum(&s, "delistd_replies_total", &labels), n.parse::<f64>().unwrap(), "{kind}:\n{last}");
    }
    let sent = d.count("SELECT count(*) FROM outbox WHERE state = 'sent'");
    assert_eq!(sent, 6, "five acknowledgements (one per request) and one missing-info reply");
    assert_eq!(sum(&s, "delistd_replies_total", &["state=\"sent\""]), sent as f64, "{last}");
    assert_eq!(sum(&s, "delistd_intake_to_reply_accepted_seconds_count", &[]), sent as f64, "{last}");
    assert_eq!(sum(&s, "delistd_message_handling_seconds_count", &[]), 7.0, "{last}");
    for row in d.rows("SELECT state, count(*) FROM cases GROUP BY state") {
        let (state, n) = (&row[0], &row[1]);
        assert_eq!(sum(&s, "delistd_cases", &[&format!("state=\"{state}\"")]), n.parse::<f64>().unwrap(), "{state}:\n{last}");
    }
    assert_eq!(sum(&s, "delistd_cases", &["state=\"open\""]), 4.0, "two requests for one IP share a case");
    assert_eq!(sum(&s, "delistd_outbox_queued", &[]), 0.0);
    assert!(sum(&s, "delistd_last_mailbox_check_timestamp_seconds", &[]) > 1.0e9);
    assert_eq!(sum(&s, "delistd_build_info", &[]), 1.0);
    // No label names an address, an IP or a case.
    for bad in ["@", "203.0.113", "DL-"] {
        assert!(!last.lines().any(|l| !l.starts_with('#') && l.contains(bad)), "{bad} in a label:\n{last}");
    }

    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));

    // Stop the intake loop: /healthz must turn 503 and name it (within two poll intervals
    // and 10 s: 20 s with the tests' 5 s interval).
    std::fs::write(&stall, b"").unwrap();
    serving.wait_for_log("stalled by the test hook", PATIENCE);
    let stalled_at = Instant::now();
    let (status, body) = loop {
        let r = http_get(port, "/healthz").expect("the listener answers while a loop is stalled");
        if r.0 != 200 {
            break r;
        }
        assert!(stalled_at.elapsed() < Duration::from_secs(40), "/healthz still 200 after {:?}", stalled_at.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("intake: silent for"), "{body}");
    // The other loops still beat; the scrape still works.
    assert!(!body.contains("outbox"), "{body}");
    assert_eq!(http_get(port, "/metrics").map(|r| r.0), Some(200));
    // And it recovers when the loop moves again.
    std::fs::remove_file(&stall).unwrap();
    wait_until(PATIENCE, || "healthz never recovered".into(), || http_get(port, "/healthz").map(|r| r.0) == Some(200));
    serving.terminate();
}
