//! `delistd backup` in the middle of a drain, `delistd restore`, and a restart on the
//! restored copy: everything recorded up to the backup is there, the database is sound, and
//! nothing is answered twice (the messages already filed stay filed; the replies the backup
//! still had queued are held, not sent again).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backlog::{replies_by, send_backlog};
use crate::common::*;

const REQUESTS: usize = 200;
const SENDERS: usize = 4;
/// Take the backup once this many messages are recorded.
const BACKUP_AT: i64 = 30;

fn open(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn ids(c: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut st = c.prepare(sql).unwrap();
    let rows = st.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

#[test]
fn a_backup_taken_mid_drain_restores_and_answers_nothing_twice() {
    let d = Delistd::with("backup", Options { max_per_recipient_per_day: 1000, smtp_connections: 1, ..Options::default() });
    let senders: Vec<Account> = (0..SENDERS).map(|i| d.account(&format!("s{i}"))).collect();
    let mut inbox = send_backlog(&d, &senders, REQUESTS, "bk", |i| format!("198.51.100.{}", 1 + i % 250));

    let recorded = || d.try_count("SELECT count(*) FROM messages").unwrap_or(0);
    let backup = d.root.join("backup.sqlite");
    let serving = d.serve();
    let start = Instant::now();
    while recorded() < BACKUP_AT {
        assert!(start.elapsed() < PATIENCE, "only {} messages recorded:\n{}", recorded(), serving.log_text());
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = d.command().args(["backup", "--config"]).arg(&d.config).arg(&backup).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "backup failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("integrity ok") && stdout.contains("messages"), "{stdout}");

    // A restore over the database the daemon has open is refused, and changes nothing.
    let out = d.command().args(["restore", "--config"]).arg(&d.config).arg(&backup).output().unwrap();
    assert_eq!(out.status.code(), Some(75), "restore while running: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("open in another process"));

    let queued = || d.count("SELECT count(*) FROM outbox WHERE state <> 'sent'");
    wait_until(
        Duration::from_secs(120),
        || format!("{} recorded, {} replies not sent", recorded(), queued()),
        || recorded() >= REQUESTS as i64 && queued() == 0,
    );
    serving.terminate();

    let (in_backup, queued_in_backup) = {
        let b = open(&backup);
        (ids(&b, "SELECT message_id FROM messages ORDER BY 1"), b.query_row("SELECT count(*) FROM outbox WHERE state = 'queued'", [], |r| r.get::<_, i64>(0)).unwrap())
    };
    eprintln!("backup holds {} of {REQUESTS} messages, {queued_in_backup} replies queued", in_backup.len());
    assert!(in_backup.len() as i64 >= BACKUP_AT && in_backup.len() < REQUESTS, "not mid-drain: {}", in_backup.len());

    // Restore with the daemon stopped.
    let out = d.command().args(["restore", "--config"]).arg(&d.config).arg(&backup).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "restore failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let restored = d.db();
    let integrity: String = restored.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(ids(&restored, "SELECT message_id FROM messages ORDER BY 1"), in_backup, "every message of the backup is back");
    assert_eq!(d.count("SELECT count(*) FROM outbox WHERE state = 'queued'"), 0, "queued replies are held");
    drop(restored);

    // The daemon on the restored copy: the mailbox holds nothing new, nothing is sent again.
    let f = d.run_once_ok();
    assert!(f.stdout.is_empty() || !f.stdout.contains("panic"), "{}", f.stderr);
    assert_eq!(d.count("SELECT count(*) FROM messages"), in_backup.len() as i64, "no message read twice");
    assert_eq!(inbox.count("INBOX"), 0);
    assert_eq!(inbox.count("Processed") as usize, REQUESTS, "filed messages stay filed");
    let twice = d.rows("SELECT ip, count(*) FROM cases GROUP BY ip HAVING count(*) > 1");
    assert!(twice.is_empty(), "IPs with two cases: {twice:?}");

    // The senders' mailboxes: every request answered exactly once.
    let delivered = replies_by(&senders, REQUESTS, "In-Reply-To");
    assert_eq!(delivered.len(), REQUESTS, "one reply per request");
    let doubles: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubles.is_empty(), "answered twice: {doubles:?}");
}
