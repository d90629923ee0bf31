//! The daemon under ordinary faults, with real processes and files (issue 9): a second
//! instance on the same database, a `sqlite3` process holding the write lock past the busy
//! timeout, Maildir files renamed under the reader, the database deleted or replaced while
//! serving, a damaged database at start, `reprocess` of a handled message, a message cut at
//! the cap, and the watchdog over a real `NOTIFY_SOCKET`.
//!
//! These use a Maildir and replies written as files, so they need no mail server; the SMTP
//! and IMAP sides are in `tests/e2e/supervision.rs`.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(40);

/// A daemon set-up: a Maildir in, replies as `.eml` files out, a database, a config.
struct Desk {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    db: PathBuf,
    runs: usize,
}

impl Desk {
    fn new(extra: &str) -> Desk {
        let dir = tempfile::Builder::new().prefix("delistd-supervision-").tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(root.join("mail").join(sub)).unwrap();
        }
        let config = root.join("delistd.toml");
        fs::write(
            &config,
            format!(
                "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"mail\"\npoll_interval = \"300ms\"\n\
                 [smtp]\nreply_dir = \"out\"\n[store]\ndatabase = \"d.sqlite\"\n\
                 [replies]\nfrom = \"Delist desk <delist@example.test>\"\nmax_per_recipient_per_day = 10000\n{extra}"
            ),
        )
        .unwrap();
        Desk { db: root.join("d.sqlite"), config, root, _dir: dir, runs: 0 }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_delistd"));
        c.current_dir(&self.root)
            .env_remove("DELISTD_CONFIG")
            .env_remove("DELISTD_DB")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env("DELISTD_LOG", "info,delistd=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).arg("--config").arg(&self.config).output().unwrap()
    }

    fn serve_with(&mut self, f: impl FnOnce(&mut Command)) -> Serving {
        self.runs += 1;
        let log = self.root.join(format!("serve-{}.log", self.runs));
        let mut c = self.command();
        c.args(["run", "--config"]).arg(&self.config).stdout(Stdio::null()).stderr(fs::File::create(&log).unwrap());
        f(&mut c);
        Serving { child: Some(c.spawn().unwrap()), log }
    }

    fn serve(&mut self) -> Serving {
        self.serve_with(|_| {})
    }

    /// A delisting request from sender `n` for 203.0.113.`n % 250`, delivered into `sub`
    /// (`new` or `cur`) under a Maildir name of its own.
    fn deliver(&self, n: u32, sub: &str) -> PathBuf {
        let name = format!("17000{n:05}.M{n}P1.host{}", if sub == "cur" { ":2,S" } else { "" });
        let path = self.root.join("mail").join(sub).join(name);
        fs::write(&path, request(n)).unwrap();
        path
    }

    fn count(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.busy_timeout(Duration::from_secs(20)).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn try_count(&self, sql: &str) -> Option<i64> {
        if !self.db.exists() {
            return None;
        }
        let c = rusqlite::Connection::open(&self.db).ok()?;
        c.busy_timeout(Duration::from_secs(20)).ok()?;
        c.query_row(sql, [], |r| r.get(0)).ok()
    }

    fn files_in(&self, dir: &str) -> usize {
        fs::read_dir(self.root.join(dir))
            .map(|d| d.filter_map(Result::ok).filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count())
            .unwrap_or(0)
    }

    fn waiting(&self) -> usize {
        self.files_in("mail/new") + self.files_in("mail/cur")
    }
}

fn request(n: u32) -> Vec<u8> {
    format!(
        "Return-Path: <ops{n}@shop{n}.example.com>\r\nFrom: Ops {n} <ops{n}@shop{n}.example.com>\r\n\
         To: delist@example.test\r\nSubject: please delist {n}\r\nMessage-ID: <rq-{n}@shop.example.com>\r\n\
         Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n\
         Hello,\r\n\r\nwe get: 550 5.7.511 Access denied, banned sender[203.0.113.{}]. To request removal \
         from this list, forward this message.\r\n",
        1 + n % 250
    )
    .into_bytes()
}

struct Serving {
    child: Option<Child>,
    log: PathBuf,
}

impl Serving {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }
    fn assert_running(&mut self) {
        if let Some(s) = self.exited() {
            panic!("delistd exited ({s}):\n{}", self.log_text());
        }
    }
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(start.elapsed() < within, "delistd still runs after {within:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }
    fn terminate(mut self) -> String {
        self.signal("TERM");
        let s = self.wait_exit(Duration::from_secs(15));
        let log = self.log_text();
        assert!(s.success(), "delistd exited with {s} after SIGTERM:\n{log}");
        log
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(within: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "waited {within:?} in vain: {}", what());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every request recorded once, one case per IP, one reply sent per request, and no reply
/// written twice (the "reply sent" log lines of every run, by Message-ID).
fn assert_exactly_once(d: &Desk, requests: i64, logs: &[String]) {
    assert_eq!(d.count("SELECT count(*) FROM messages"), requests, "messages recorded");
    assert_eq!(d.count("SELECT count(*) FROM (SELECT sha256 FROM messages GROUP BY sha256 HAVING count(*) > 1)"), 0);
    assert_eq!(
        d.count("SELECT count(*) FROM (SELECT ip FROM cases GROUP BY ip HAVING count(*) > 1)"),
        0,
        "double cases"
    );
    assert_eq!(d.count("SELECT count(*) FROM outbox WHERE state = 'sent'"), requests, "replies sent");
    let mut sent: Vec<String> = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("reply sent"))
        .filter_map(|l| l.split("reply=").nth(1).and_then(|r| r.split_whitespace().next()).map(str::to_string))
        .collect();
    let all = sent.len();
    sent.sort();
    sent.dedup();
    assert_eq!((all, sent.len() as i64), (sent.len(), requests), "a reply was sent twice");
}

#[test]
fn a_second_instance_on_the_same_database_is_refused_and_nothing_is_done_twice() {
    let mut d = Desk::new("");
    for n in 0..60 {
        d.deliver(n, "new");
    }
    let first = d.serve();
    wait_until(PATIENCE, || first.log_text(), || first.log_text().contains("instance lock taken"));

    // A second daemon, a `run --once` by hand and a `reprocess`: refused at once, naming the
    // holder, with the documented exit code.
    let mut second = d.serve();
    let s = second.wait_exit(Duration::from_secs(10));
    assert_eq!(s.code(), Some(73), "{}", second.log_text());
    assert!(second.log_text().contains(&format!("PID {}", first.pid())), "{}", second.log_text());
    for args in [&["run", "--once"][..], &["reprocess"][..]] {
        let out = d.run(args);
        assert_eq!(out.status.code(), Some(73), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(&format!("PID {}", first.pid())), "{}", text(&out));
    }
    // Staff commands are not blocked.
    let out = d.command().args(["cases", "--db"]).arg(&d.db).args(["list", "--state", "all"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    wait_until(
        PATIENCE,
        || first.log_text(),
        || d.try_count("SELECT count(*) FROM outbox WHERE state = 'sent'") == Some(60),
    );
    let log = first.terminate();
    assert_exactly_once(&d, 60, &[log, second.log_text()]);
    assert_eq!(d.files_in("mail/.Processed/cur"), 60);

    // Once the holder is gone, the lock is free again.
    let out = d.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A `sqlite3` process holds the write lock for 12 s (the busy timeout is 5 s) while
/// messages arrive and replies are due: the daemon waits it out and loses nothing.
#[test]
fn a_write_lock_held_past_the_busy_timeout_is_waited_out() {
    let mut d = Desk::new("");
    for n in 0..10 {
        d.deliver(n, "new");
    }
    let mut serving = d.serve();
    wait_until(
        PATIENCE,
        || serving.log_text(),
        || d.try_count("SELECT count(*) FROM outbox WHERE state = 'sent'") == Some(10),
    );

    let mut holder = Command::new("sqlite3")
        .arg(&d.db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 (scripts/install-test-deps.sh installs it)");
    {
        use std::io::Write;
        let stdin = holder.stdin.as_mut().unwrap();
        stdin.write_all(b"BEGIN IMMEDIATE;\nUPDATE cases SET state = state;\nSELECT 'locked';\n").unwrap();
        stdin.flush().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    for n in 10..30 {
        d.deliver(n, "new");
    }
    std::thread::sleep(Duration::from_secs(12));
    serving.assert_running();
    assert!(serving.log_text().contains("database busy"), "{}", serving.log_text());
    assert!(d.waiting() > 0, "nothing can have been filed while the lock was held");
    {
        use std::io::Write;
        let mut stdin = holder.stdin.take().unwrap();
        stdin.write_all(b"COMMIT;\n.quit\n").unwrap();
    }
    assert!(holder.wait().unwrap().success());

    wait_until(
        Duration::from_secs(90),
        || serving.log_text(),
        || d.try_count("SELECT count(*) FROM outbox WHERE state = 'sent'") == Some(30) && d.waiting() == 0,
    );
    let log = serving.terminate();
    assert_exactly_once(&d, 30, &[log]);
}

/// Another program (Dovecot, when someone opens the mailbox) renames files from `new/` to
/// `cur/` while the daemon drains: nothing fails, everything is read once, and mail that
/// was in `cur/` from the start is read too.
#[test]
fn maildir_files_renamed_during_a_drain_are_read_once() {
    let mut d = Desk::new("");
    for n in 0..20 {
        d.deliver(n, "cur");
    }
    for n in 20..300 {
        d.deliver(n, "new");
    }
    let new = d.root.join("mail/new");
    let cur = d.root.join("mail/cur");
    let mover = std::thread::spawn(move || {
        let start = Instant::now();
        let mut moved = 0;
        while start.elapsed() < Duration::from_secs(20) {
            let Ok(entries) = fs::read_dir(&new) else { break };
            let names: Vec<_> = entries.filter_map(Result::ok).map(|e| e.file_name()).collect();
            if names.is_empty() {
                break;
            }
            for name in names.iter().rev().take(3) {
                let mut target = name.clone();
                target.push(":2,S");
                if fs::rename(new.join(name), cur.join(target)).is_ok() {
                    moved += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        moved
    });
    let mut serving = d.serve();
    let moved = mover.join().unwrap();
    wait_until(
        PATIENCE,
        || serving.log_text(),
        || d.try_count("SELECT count(*) FROM outbox WHERE state = 'sent'") == Some(300) && d.waiting() == 0,
    );
    serving.assert_running();
    let log = serving.terminate();
    assert!(moved > 0, "the mover renamed nothing");
    assert_exactly_once(&d, 300, &[log]);
    assert_eq!(d.files_in("mail/.Processed/cur"), 300);
}

/// `rm` of the database while serving: the daemon stops with an error naming it, and files
/// nothing away whose record went into the deleted file; after a restart on a new database,
/// what was not filed is handled.
#[test]
fn a_deleted_database_stops_the_daemon_before_anything_is_filed_into_it() {
    let mut d = Desk::new("");
    for n in 0..5 {
        d.deliver(n, "new");
    }
    let mut serving = d.serve();
    wait_until(PATIENCE, || serving.log_text(), || d.files_in("mail/.Processed/cur") == 5);
    for f in ["d.sqlite", "d.sqlite-wal", "d.sqlite-shm"] {
        let _ = fs::remove_file(d.root.join(f));
    }
    for n in 5..10 {
        d.deliver(n, "new");
    }
    let s = serving.wait_exit(Duration::from_secs(20));
    let log = serving.log_text();
    assert!(!s.success(), "{log}");
    assert!(log.contains("was deleted"), "{log}");
    assert!(log.contains("d.sqlite"), "{log}");
    assert_eq!(d.files_in("mail/.Processed/cur"), 5, "filed after the database was gone:\n{log}");

    // A restart creates a new database (loudly) and handles the 5 that were left.
    let out = d.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("creating a NEW, EMPTY database"), "{}", text(&out));
    assert_eq!(d.count("SELECT count(*) FROM messages"), 5);
    assert_eq!(d.files_in("mail/.Processed/cur"), 10);
}

/// A backup restored over the database (by rename) while serving: the daemon notices the
/// file is no longer its own and stops.
#[test]
fn a_database_replaced_while_serving_stops_the_daemon() {
    let mut d = Desk::new("");
    d.deliver(1, "new");
    let mut serving = d.serve();
    wait_until(PATIENCE, || serving.log_text(), || d.files_in("mail/.Processed/cur") == 1);
    let backup = d.root.join("backup.sqlite");
    {
        let c = rusqlite::Connection::open(&d.db).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute("VACUUM INTO ?1", [backup.to_str().unwrap()]).unwrap();
    }
    fs::rename(&backup, &d.db).unwrap();
    let s = serving.wait_exit(Duration::from_secs(20));
    assert!(!s.success());
    assert!(serving.log_text().contains("was replaced by another file"), "{}", serving.log_text());
}

/// A damaged database at start is refused with its path, and not written to.
#[test]
fn a_damaged_database_is_refused_at_start() {
    let d = Desk::new("");
    {
        let c = rusqlite::Connection::open(&d.db).unwrap();
        c.execute_batch(
            "CREATE TABLE filler(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000)
             INSERT INTO filler SELECT randomblob(300) FROM n;",
        )
        .unwrap();
    }
    let mut bytes = fs::read(&d.db).unwrap();
    let page = 4096;
    for b in &mut bytes[6 * page..6 * page + 100] {
        *b = 0x5A;
    }
    fs::write(&d.db, &bytes).unwrap();
    d.deliver(1, "new");
    let out = d.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is damaged"), "{}", text(&out));
    assert!(text(&out).contains("d.sqlite"), "{}", text(&out));
    assert_eq!(fs::read(&d.db).unwrap(), bytes, "the damaged file was written to");
    assert_eq!(d.waiting(), 1, "the message stays in the mailbox");
}

/// `reprocess` of a handled message is refused; with `--force` it runs again, even after
/// the case was resolved, without a second reply or a second case.
#[test]
fn reprocess_refuses_handled_messages_and_force_never_repeats() {
    let d = Desk::new("");
    d.deliver(7, "new");
    let out = d.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.count("SELECT count(*) FROM outbox"), 1);

    let out = d.run(&["reprocess", "1"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("handled already"), "{}", text(&out));

    let resolve = d
        .command()
        .args(["cases", "--config"])
        .arg(&d.config)
        .args(["resolve", "DL-000001", "--note", "delisted"])
        .output()
        .unwrap();
    assert!(resolve.status.success(), "{}", text(&resolve));
    for _ in 0..2 {
        let out = d.run(&["reprocess", "--force", "1"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("acknowledge DL-000001"), "{}", text(&out));
    }
    assert_eq!(d.count("SELECT count(*) FROM cases"), 1, "a second case was opened");
    assert_eq!(d.count("SELECT count(*) FROM outbox"), 1, "a second reply was queued");
    assert_eq!(d.count("SELECT count(*) FROM messages"), 1);
}

/// A message larger than the cap is stored cut, and flagged as cut where staff look.
#[test]
fn a_message_over_the_cap_is_flagged_as_cut() {
    let d = Desk::new("[limits]\nmax_message_bytes = 65536\n");
    let mut big = request(3);
    big.extend(std::iter::repeat_n(b"padding line of a very long forwarded message\r\n".to_vec(), 4000).flatten());
    let path = d.root.join("mail/new/1700099999.M1P1.big");
    fs::write(&path, &big).unwrap();
    let out = d.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let stored = d.count("SELECT length(raw) FROM messages");
    assert_eq!(stored, 65536);
    let show = d.command().args(["cases", "--db"]).arg(&d.db).args(["show", "DL-000001"]).output().unwrap();
    assert!(text(&show).contains("truncated"), "{}", text(&show));
    let json = d.command().args(["cases", "--db"]).arg(&d.db).args(["show", "DL-000001", "--json"]).output().unwrap();
    assert!(String::from_utf8_lossy(&json.stdout).contains("\"truncated\": true"), "{}", text(&json));

    let copy = d.root.join("big.eml");
    fs::write(&copy, &big).unwrap();
    let inspect = d.command().args(["inspect", "--max-bytes", "65536"]).arg(&copy).output().unwrap();
    assert!(text(&inspect).contains("truncated"), "{}", text(&inspect));
}

/// Under systemd: READY=1, then WATCHDOG=1 while the loops beat, also across a SIGSTOP longer
/// than the watchdog interval (on SIGCONT the loops beat again), and serving goes on.
#[test]
fn the_watchdog_is_fed_while_the_loops_beat() {
    use std::os::unix::net::UnixDatagram;
    let mut d = Desk::new("");
    let sock_path = d.root.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let sp = sock_path.clone();
    let serving = d.serve_with(move |c| {
        c.env("NOTIFY_SOCKET", &sp).env("WATCHDOG_USEC", "1000000");
    });
    let mut seen = String::new();
    let read_for = |d: Duration| {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        let mut got = String::new();
        while start.elapsed() < d {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
                got.push('\n');
            }
        }
        got
    };
    seen.push_str(&read_for(Duration::from_secs(3)));
    assert!(seen.contains("READY=1"), "{seen}");
    assert!(seen.matches("WATCHDOG=1").count() >= 3, "{seen}");

    serving.signal("STOP");
    std::thread::sleep(Duration::from_secs(3));
    serving.signal("CONT");
    d.deliver(1, "new");
    let after = read_for(Duration::from_secs(3));
    assert!(after.matches("WATCHDOG=1").count() >= 2, "{after}");
    wait_until(PATIENCE, || serving.log_text(), || d.files_in("mail/.Processed/cur") == 1);
    serving.terminate();
}
