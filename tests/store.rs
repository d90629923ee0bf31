//! The case store on real SQLite files, and the staff CLI over it (`cli::cases::run` with a
//! buffer for stdout). Time is a parameter everywhere: no test sleeps or reads the clock.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rusqlite::Connection;
use serde_json::Value;

use delistd::cases::schema;
use delistd::cases::{
    sha256_hex, CaseState, MessageSource, NewCase, NewMessage, NewReply, Outcome, RawMessage, Store, StoreError,
    StoreOptions, DAEMON_ACTOR,
};
use delistd::cli::cases::{run, CasesCmd, CasesError, Env};
use delistd::decide::Action;
use delistd::reply::Builder;
use delistd::types::{CaseRef, Lang, StatusCode};

// -- helpers ----------------------------------------------------------------------------------

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("delistd.sqlite")
}

fn open(path: &Path) -> Store {
    Store::open(path, StoreOptions::default()).unwrap()
}

/// One request taken in the way the pipeline does it: message, case and acknowledgement in
/// one transaction.
fn take_in(store: &mut Store, uid: u32, ip: &str, sender: &str, now: Timestamp) -> CaseRef {
    let raw = format!(
        "From: {sender}\r\nMessage-ID: <req{uid}@example.com>\r\nSubject: delist {ip}\r\n\r\n\
         550 5.7.511 Access denied, banned sender[{ip}]\r\n"
    );
    let evidence = format!(
        r#"{{"status_code":"5.7.511","ips":[{{"text":"{ip}","source":"rejection","problem":null}}],
            "ndr_lines":[{{"text":"550 5.7.511 Access denied, banned sender[{ip}]","found_in":"body"}}],
            "language":"en","auto_signs":[],"headers":{{"from_name":"Alice Example"}}}}"#
    );
    let tx = store.transaction().unwrap();
    let m = tx
        .insert_message(&NewMessage {
            source: MessageSource::Imap { mailbox: "INBOX".into(), uidvalidity: 1, uid },
            message_id: Some(format!("req{uid}@example.com")),
            sender: Some(sender.into()),
            subject: Some(format!("delist {ip}")),
            received_at: now,
            size: raw.len() as u64,
            sha256: sha256_hex(raw.as_bytes()),
            raw: RawMessage::Blob(raw.as_bytes()),
            evidence: Some(evidence),
            decision: Some(r#"{"action":"acknowledge","reason":"5.7.511 request"}"#.into()),
            action: Some(Action::Acknowledge),
            outcome: Outcome::Received,
            error: None,
        })
        .unwrap();
    let ipa: IpAddr = ip.parse().unwrap();
    let c = tx
        .open_case(
            &NewCase {
                ip: Some(ipa),
                status_code: Some(StatusCode::BANNED_SENDER),
                ndr_line: Some(format!("550 5.7.511 Access denied, banned sender[{ip}]")),
                sender: sender.into(),
                language: Lang::De,
                opened_by: Some(m),
                awaiting_info: false,
            },
            now,
        )
        .unwrap();
    tx.queue_reply(
        &NewReply {
            case: Some(c),
            caused_by: Some(m),
            recipient: sender.into(),
            message_id: format!("{c}.ack@delist.example"),
            subject: format!("[{c}] received"),
            raw: b"Subject: ack\r\n\r\nok\r\n".to_vec(),
            actor: DAEMON_ACTOR.into(),
            kind: None,
        },
        now,
    )
    .unwrap();
    tx.set_outcome(m, Outcome::Processed, None).unwrap();
    tx.commit().unwrap();
    c
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: CasesCmd,
}

fn parse(args: &[&str]) -> CasesCmd {
    Cli::try_parse_from(std::iter::once("cases").chain(args.iter().copied())).unwrap().cmd
}

/// What clap says of bad arguments.
fn parse_err(args: &[&str]) -> String {
    match Cli::try_parse_from(std::iter::once("cases").chain(args.iter().copied())) {
        Ok(_) => panic!("{args:?} parsed"),
        Err(e) => e.to_string(),
    }
}

fn env(now: Timestamp) -> Env<'static> {
    Env { now, tz: TimeZone::fixed(jiff::tz::offset(1)), store: StoreOptions::default(), replies: None, delist_command: None }
}

/// Run a command; its output, or its error.
fn cli(db: &Path, env: &Env<'_>, args: &[&str]) -> Result<String, CasesError> {
    let mut out = Vec::new();
    run(parse(args), db, env, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn ok(db: &Path, now: Timestamp, args: &[&str]) -> String {
    cli(db, &env(now), args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn refs_in_table(out: &str) -> Vec<String> {
    out.lines().skip(1).filter(|l| l.starts_with("DL-")).map(|l| l[..9].to_string()).collect()
}

fn json_refs(out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(out).unwrap();
    v.as_array().unwrap().iter().map(|c| c["ref"].as_str().unwrap().to_string()).collect()
}

/// The reply builder as the config makes it, with `templates_dir` overriding the German
/// resolution templates: staff resolutions must use the overrides (issue 11), so every reply
/// these tests see comes from these two files.
fn builder() -> &'static Builder {
    static B: std::sync::OnceLock<Builder> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for kind in ["delisted", "rejected"] {
            std::fs::write(
                dir.path().join(format!("{kind}.de.txt")),
                format!(
                    "Subject: {kind} (de)\n\nDear {{{{ sender_name }}}},\n{kind} for {{{{ ips|join(\", \") }}}}.\n\
                     {{{{ staff_note or \"\" }}}}\n"
                ),
            )
            .unwrap();
        }
        let replies = delistd::config::Replies {
            from: "Delist Desk <delist@delist.example>".into(),
            message_id_domain: "delist.example".into(),
            portal_url: "https://portal.example".into(),
            support_url: "https://support.example".into(),
            max_per_recipient_per_day: 5,
            max_per_domain_per_hour: 30,
            templates_dir: Some(dir.path().to_path_buf()),
        };
        // The templates are read once, here: the directory may go afterwards.
        Builder::from_config(&replies, std::time::Duration::from_secs(48 * 3600)).unwrap()
    })
}

fn env_with_replies(now: Timestamp) -> Env<'static> {
    Env { replies: Some(builder()), ..env(now) }
}

fn schema_dump(path: &Path) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut st = c.prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name").unwrap();
    st.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

fn user_version(path: &Path) -> i64 {
    Connection::open(path).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

// -- schema and migrations ----------------------------------------------------------------------

#[test]
fn migrating_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let mut s = open(&db);
    take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t("2025-03-01T10:00:00Z"));
    drop(s);
    let before = schema_dump(&db);
    assert!(before.iter().any(|s| s.contains("CREATE TABLE cases")));
    let s = open(&db);
    assert_eq!(s.schema_version().unwrap(), schema::supported_version().unwrap());
    assert_eq!(schema_dump(&db), before);
    assert!(s.case(CaseRef(1)).unwrap().is_some(), "data kept");
    let mode: String = s.connection().pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = s.connection().pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
    assert_eq!(fk, 1);
}

#[test]
fn an_empty_version_0_database_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    // What `sqlite3 file 'VACUUM'` leaves: a valid database with no tables, user_version 0.
    Connection::open(&db).unwrap().execute_batch("VACUUM").unwrap();
    assert_eq!(user_version(&db), 0);
    let mut s = open(&db);
    assert_eq!(s.schema_version().unwrap(), schema::supported_version().unwrap());
    take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t("2025-03-01T10:00:00Z"));
}

/// The last release wrote schema version 2. A populated version 2 database (a message, an
/// open case, a sent reply) must open under this binary: every later migration applied in
/// one go, the rows kept, and the new columns at their defaults.
#[test]
fn a_populated_version_2_database_is_upgraded_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    {
        let mut c = Connection::open(&db).unwrap();
        let all = schema::migrations().unwrap();
        schema::migrate(&mut c, &all[..2]).unwrap();
        assert_eq!(user_version(&db), 2);
        c.execute_batch(
            "INSERT INTO messages (id, source_kind, mailbox, uidvalidity, uid, message_id, sender, subject, \
                received_at, size, sha256, raw, action, outcome) \
             VALUES (1, 'imap', 'INBOX', 7, 1, '<m1@example.com>', 'alice@example.com', 'delist', \
                1740823200, 20, 'aa', X'3535302035', 'acknowledge', 'processed'); \
             INSERT INTO cases (id, ip, status_code, sender, language, state, opened_at, sla_started_at, due_at, opened_by) \
             VALUES (1, '203.0.113.7', '5.7.511', 'alice@example.com', 'en', 'open', 1740823200, 1740823200, 1740996000, 1); \
             INSERT INTO outbox (id, case_id, caused_by, recipient, message_id, subject, raw, state, attempts, \
                queued_at, next_attempt_at, sent_at) \
             VALUES (1, 1, 1, 'alice@example.com', '<r1@example.net>', 'ack', X'00', 'sent', 1, \
                1740823200, 1740823200, 1740823201);",
        )
        .unwrap();
    }
    let s = open(&db);
    assert_eq!(s.schema_version().unwrap(), schema::supported_version().unwrap());
    let c = s.case(CaseRef(1)).unwrap().expect("the case survives the upgrade");
    assert_eq!((c.ip.as_deref(), c.state), (Some("203.0.113.7"), delistd::cases::CaseState::Open));
    assert!(c.resolution.is_none() && c.listing.is_none(), "new columns at their defaults");
    let (kind, to_staff): (Option<String>, i64) =
        s.connection().query_row("SELECT kind, to_staff FROM outbox WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((kind, to_staff), (None, 0));
    let purged: Option<i64> = s.connection().query_row("SELECT raw_purged_at FROM messages WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(purged, None);
    let fk: Vec<String> = s.connection().prepare("PRAGMA foreign_key_check").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert!(fk.is_empty(), "{fk:?}");
    // Version 9's code step: the stored message is in the search index (subject and text),
    // and the case has its IP key, so the board's search and CIDR filters find it.
    let mut s = s;
    let desk = delistd::desk::Desk::new(&mut s);
    let now = jiff::Timestamp::from_second(1740823300).unwrap();
    let found = |q: delistd::desk::Query| -> Vec<String> {
        desk.list(&q, now).unwrap().cases.into_iter().map(|c| c.case_ref).collect()
    };
    assert_eq!(found(delistd::desk::Query { text: Some("delist".into()), ..Default::default() }), ["DL-000001"]);
    assert_eq!(found(delistd::desk::Query { ip: "203.0.113.0/24".parse().ok(), ..Default::default() }), ["DL-000001"]);
    assert!(found(delistd::desk::Query { ip: "203.0.114.0/24".parse().ok(), ..Default::default() }).is_empty());
}

#[test]
fn a_half_made_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    // Someone ran the start of schema.sql by hand: a messages table, still at version 0.
    Connection::open(&db).unwrap().execute_batch("CREATE TABLE messages (id INTEGER PRIMARY KEY);").unwrap();
    let err = Store::open(&db, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Migration { version: 1, .. }), "{err}");
    assert_eq!(user_version(&db), 0);
    assert_eq!(schema_dump(&db), ["CREATE TABLE messages (id INTEGER PRIMARY KEY)"], "nothing half-applied");
}

#[test]
fn a_database_from_a_newer_delistd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    drop(open(&db));
    let supported = schema::supported_version().unwrap();
    Connection::open(&db).unwrap().pragma_update(None, "user_version", supported + 1).unwrap();
    let err = Store::open(&db, StoreOptions::default()).unwrap_err();
    match err {
        StoreError::TooNew { found, supported: s } => assert_eq!((found, s), (supported + 1, supported)),
        other => panic!("expected TooNew, got {other}"),
    }
    // The CLI says so and exits 1.
    let e = cli(&db, &env(t("2025-03-01T10:00:00Z")), &["list"]).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("newer than this delistd supports"), "{e}");
    assert_eq!(user_version(&db), i64::from(supported + 1), "left as it was");
}

#[test]
fn staff_commands_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.sqlite");
    let e = cli(&db, &env(t("2025-03-01T10:00:00Z")), &["list"]).unwrap_err();
    assert!(matches!(e, CasesError::NoDatabase(_)));
    assert!(!db.exists());
}

// -- the one-transaction rule, dedupe ------------------------------------------------------------

#[test]
fn a_transaction_that_fails_half_way_leaves_nothing_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let mut s = open(&db);
    let now = t("2025-03-01T10:00:00Z");
    let result: Result<(), StoreError> = (|| {
        let tx = s.transaction()?;
        let m = tx.insert_message(&NewMessage {
            source: MessageSource::File { path: "/tmp/req.eml".into() },
            message_id: None,
            sender: Some("alice@example.com".into()),
            subject: None,
            received_at: now,
            size: 3,
            sha256: sha256_hex(b"abc"),
            raw: RawMessage::Path("/tmp/req.eml"),
            evidence: None,
            decision: None,
            action: None,
            outcome: Outcome::Received,
            error: None,
        })?;
        let c = tx.open_case(
            &NewCase {
                ip: Some("203.0.113.7".parse().unwrap()),
                status_code: Some(StatusCode::BANNED_SENDER),
                ndr_line: None,
                sender: "alice@example.com".into(),
                language: Lang::En,
                opened_by: Some(m),
                awaiting_info: false,
            },
            now,
        )?;
        // Evidence that is not JSON breaks a CHECK constraint: the pipeline fails here.
        tx.insert_message(&NewMessage {
            evidence: Some("{not json".into()),
            sha256: sha256_hex(b"abcd"),
            source: MessageSource::File { path: "/tmp/other.eml".into() },
            message_id: None,
            sender: None,
            subject: None,
            received_at: now,
            size: 4,
            raw: RawMessage::NotKept,
            decision: None,
            action: None,
            outcome: Outcome::Received,
            error: None,
        })?;
        let _ = c;
        tx.commit()
    })();
    assert!(result.is_err());
    drop(s);
    let s = open(&db);
    let n: i64 = s
        .connection()
        .query_row(
            "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM cases) + (SELECT count(*) FROM events)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    assert!(s.find_message_by_sha256(&sha256_hex(b"abc")).unwrap().is_none(), "can be handled again");
}

#[test]
fn a_restarted_daemon_finds_what_it_already_handled() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let mut s = open(&db);
    let c = take_in(&mut s, 9, "203.0.113.7", "alice@example.com", t("2025-03-01T10:00:00Z"));
    drop(s); // "crash"
    let s = open(&db);
    let m = s.find_message_by_source("INBOX", 1, 9).unwrap().expect("UID known");
    assert_eq!(m.outcome, "processed");
    assert_eq!(s.find_message_by_sha256(&m.sha256).unwrap().map(|r| r.id), Some(m.id));
    assert_eq!(s.find_message_by_message_id("<req9@example.com>").unwrap().map(|r| r.id), Some(m.id));
    assert_eq!(s.open_case_for_ip("203.0.113.7".parse().unwrap()).unwrap().map(|c| c.case_ref), Some(c));
    assert!(s.find_message_by_source("INBOX", 1, 10).unwrap().is_none());
}

// -- a writer and a reader at once ---------------------------------------------------------------

#[test]
fn the_cli_reads_while_the_daemon_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    drop(open(&db));
    const N: u32 = 150;
    let t0 = t("2025-03-01T10:00:00Z");
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut s = open(&db);
            for i in 0..N {
                let now = t0 + SignedDuration::from_secs(i64::from(i));
                take_in(&mut s, i + 1, &format!("198.51.100.{}", i % 250 + 1), "w@example.com", now);
                if i % 10 == 0 {
                    s.note(CaseRef(i64::from(i) + 1), "staff", "looking", now).unwrap();
                }
            }
        })
    };
    let reader = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut seen = 0usize;
            let mut rounds = 0;
            while seen < N as usize {
                let now = t("2025-03-02T10:00:00Z");
                let out = ok(&db, now, &["list", "--json", "--limit", "0"]);
                let n = json_refs(&out).len();
                assert!(n >= seen, "a reader never sees rows disappear ({n} < {seen})");
                seen = n;
                ok(&db, now, &["stats"]);
                rounds += 1;
                assert!(rounds < 100_000, "writer stalled");
            }
            rounds
        })
    };
    writer.join().expect("writer failed");
    let rounds = reader.join().expect("reader failed");
    assert!(rounds >= 1);
    let s = open(&db);
    let n: i64 = s.connection().query_row("SELECT count(*) FROM cases", [], |r| r.get(0)).unwrap();
    assert_eq!(n, i64::from(N));
}

// -- SLA with a controllable clock ---------------------------------------------------------------

/// Three open cases opened 50 h, 44 h and 1 h before `now`, one awaiting info, one resolved.
fn sla_fixture(db: &Path) -> Timestamp {
    let now = t("2025-03-10T12:00:00Z");
    let mut s = open(db);
    take_in(&mut s, 1, "203.0.113.1", "a@example.com", now - SignedDuration::from_hours(50)); // overdue by 2h
    take_in(&mut s, 2, "203.0.113.2", "b@example.com", now - SignedDuration::from_hours(44)); // due in 4h
    take_in(&mut s, 3, "203.0.113.3", "c@example.com", now - SignedDuration::from_hours(1)); // due in 47h
    let tx = s.transaction().unwrap();
    tx.open_case(
        &NewCase {
            ip: None,
            status_code: None,
            ndr_line: None,
            sender: "d@example.com".into(),
            language: Lang::Fr,
            opened_by: None,
            awaiting_info: true,
        },
        now - SignedDuration::from_hours(100),
    )
    .unwrap();
    tx.commit().unwrap();
    let c5 = take_in(&mut s, 5, "203.0.113.5", "e@example.com", now - SignedDuration::from_hours(30));
    s.resolve(
        c5,
        &delistd::cases::Resolve {
            actor: "bob".into(),
            note: None,
            resolution: delistd::cases::Resolution::Delisted,
            reply: None,
        },
        now - SignedDuration::from_hours(20),
    )
    .unwrap();
    now
}

#[test]
fn list_orders_by_urgency_and_shows_time_left() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let now = sla_fixture(&db);
    let out = ok(&db, now, &["list"]);
    assert_eq!(refs_in_table(&out), ["DL-000001", "DL-000002", "DL-000003", "DL-000004"], "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("REF"), "{out}");
    assert!(lines[1].contains("overdue by 2h00m"), "{out}");
    assert!(lines[2].contains("in 4h00m"), "{out}");
    assert!(lines[3].contains("in 1d23h"), "{out}");
    assert!(lines[4].contains("waiting") && lines[4].ends_with("-"), "{out}");
    // Issue 11: the default table fits an 80-column terminal.
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    // --wide has every column; opened time in the staff's zone (UTC+1 here): 2025-03-08 10:00 UTC.
    let wide = ok(&db, now, &["list", "--wide"]);
    let wl: Vec<&str> = wide.lines().collect();
    assert!(wl[1].contains("2025-03-08 11:00") && wl[4].contains("awaiting_info"), "{wide}");

    // The clock moves on: 5 h later the second case is overdue too.
    let later = now + SignedDuration::from_hours(5);
    assert_eq!(refs_in_table(&ok(&db, later, &["list", "--overdue"])), ["DL-000001", "DL-000002"]);
    assert_eq!(refs_in_table(&ok(&db, now, &["list", "--overdue"])), ["DL-000001"]);
    assert_eq!(refs_in_table(&ok(&db, now, &["list", "--due-within", "6h"])), ["DL-000002"]);
    assert_eq!(refs_in_table(&ok(&db, now, &["list", "--due-within", "6h", "--overdue"])), ["DL-000001", "DL-000002"]);
    assert_eq!(ok(&db, now, &["list", "--due-within", "1h"]), "no cases\n");

    // Issue 11: a case the sender wrote on is marked `!` and found with --attention, within
    // 80 columns; a staff note clears it.
    let mut s = open(&db);
    let tx = s.transaction().unwrap();
    tx.mark_needs_attention(CaseRef(2)).unwrap();
    tx.commit().unwrap();
    drop(s);
    let out = ok(&db, now, &["list"]);
    let marked: Vec<&str> = out.lines().skip(1).filter(|l| l.split_whitespace().nth(1) == Some("!")).collect();
    assert_eq!(marked.len(), 1, "{out}");
    assert!(marked[0].starts_with("DL-000002"), "{out}");
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    assert_eq!(refs_in_table(&ok(&db, now, &["list", "--attention"])), ["DL-000002"]);
    let v: Value = serde_json::from_str(&ok(&db, now, &["list", "--attention", "--json"])).unwrap();
    assert_eq!(v[0]["needs_attention"], true);
    ok(&db, now, &["note", "DL-000002", "called them", "--by", "bob"]);
    assert_eq!(ok(&db, now, &["list", "--attention"]), "no cases\n");
}

#[test]
fn stats_count_now_and_measure_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let now = sla_fixture(&db);
    let mut s = open(&db);
    // DL-000001 got a note 3 h after its clock started, then is resolved late (50 h).
    s.note(CaseRef(1), "bob", "checking", now - SignedDuration::from_hours(47)).unwrap();
    let out = ok(&db, now, &["stats", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["open"], 3);
    assert_eq!(v["awaiting_info"], 1);
    assert_eq!(v["overdue"], 1);
    assert_eq!(v["due_soon"], 1);
    assert_eq!(v["window_cases"], 4);
    // Decided: DL-000005 (resolved in 10 h: met) and DL-000001 (past due: missed).
    assert_eq!((v["sla_decided"].as_u64(), v["sla_met"].as_u64()), (Some(2), Some(1)));
    assert_eq!(v["sla_met_pct"], 50.0);
    // First responses: DL-000005 at 10 h (its resolution), DL-000001 at 3 h.
    assert_eq!(v["first_response"]["count"], 2);
    assert_eq!(v["first_response"]["median_secs"], 3 * 3600);
    assert_eq!(v["first_response"]["p95_secs"], 10 * 3600);
    assert_eq!(v["resolution"]["median_secs"], 10 * 3600);

    s.resolve(
        CaseRef(1),
        &delistd::cases::Resolve {
            actor: "bob".into(),
            note: None,
            resolution: delistd::cases::Resolution::Rejected,
            reply: None,
        },
        now,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&ok(&db, now, &["stats", "--json"])).unwrap();
    assert_eq!((v["overdue"].as_u64(), v["sla_met"].as_u64(), v["sla_decided"].as_u64()), (Some(0), Some(1), Some(2)));
    // A window that starts after every clock: nothing measured.
    let v: Value = serde_json::from_str(&ok(&db, now, &["stats", "--json", "--since", "30m"])).unwrap();
    assert_eq!((v["window_cases"].as_u64(), v["sla_met_pct"].is_null()), (Some(0), true));
    let text = ok(&db, now, &["stats"]);
    assert!(text.contains("SLA met:         50.0% (1 of 2 decided)"), "{text}");
}

// -- list filters and formats --------------------------------------------------------------------

#[test]
fn list_filters_combine() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T00:00:00Z");
    let mut s = open(&db);
    for i in 0..12u32 {
        let ip = if i % 3 == 0 { "192.0.2.10".to_string() } else { format!("192.0.2.{}", 100 + i) };
        let sender = if i % 2 == 0 { "Even@Example.com" } else { "odd@example.com" };
        take_in(&mut s, i + 1, &ip, sender, t0 + SignedDuration::from_hours(i64::from(i)));
    }
    let res = |actor: &str| delistd::cases::Resolve {
        actor: actor.into(),
        note: None,
        resolution: delistd::cases::Resolution::Delisted,
        reply: None,
    };
    s.resolve(CaseRef(1), &res("bob"), t0 + SignedDuration::from_hours(20)).unwrap();
    s.resolve(CaseRef(4), &res("bob"), t0 + SignedDuration::from_hours(20)).unwrap();
    let now = t0 + SignedDuration::from_hours(24);

    // --ip shows every state of that IP, newest first.
    let out = ok(&db, now, &["list", "--ip", "192.0.2.10", "--json"]);
    assert_eq!(json_refs(&out), ["DL-000010", "DL-000007", "DL-000004", "DL-000001"]);
    let out = ok(&db, now, &["list", "--ip", "192.0.2.10", "--state", "open", "--json"]);
    assert_eq!(json_refs(&out), ["DL-000007", "DL-000010"], "open ones by due time");
    // --sender is case-insensitive.
    let out = ok(&db, now, &["list", "--sender", "even@example.COM", "--state", "resolved", "--json"]);
    assert_eq!(json_refs(&out), ["DL-000001"]);
    assert_eq!(json_refs(&ok(&db, now, &["list", "--sender", "even@example.com", "--json"])).len(), 6);
    // --since: opened at or after 09:00 UTC (10:00 in the staff's zone).
    let out = ok(&db, now, &["list", "--state", "all", "--since", "2025-03-01T09:00:00Z", "--json"]);
    assert_eq!(json_refs(&out), ["DL-000012", "DL-000011", "DL-000010"]);
    let out = ok(&db, now, &["list", "--state", "closed", "--json"]);
    assert_eq!(json_refs(&out), ["DL-000004", "DL-000001"]);

    // Paging: --limit, --offset, and a hint that there is more.
    let page1 = ok(&db, now, &["list", "--limit", "4"]);
    assert_eq!(refs_in_table(&page1), ["DL-000002", "DL-000003", "DL-000005", "DL-000006"]);
    assert!(page1.contains("next page with --offset 4"), "{page1}");
    let page3 = ok(&db, now, &["list", "--limit", "4", "--offset", "8"]);
    assert_eq!(refs_in_table(&page3), ["DL-000011", "DL-000012"]);
    assert!(!page3.contains("next page"));

    // CSV for scripts: a header and one line per case, UTC times.
    let csv_out = ok(&db, now, &["list", "--csv", "--ip", "192.0.2.10"]);
    let mut r = csv::Reader::from_reader(csv_out.as_bytes());
    let headers = r.headers().unwrap().clone();
    assert_eq!(&headers[0], "ref");
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4);
    let opened = headers.iter().position(|h| h == "opened_at").unwrap();
    assert_eq!(&rows[3][opened], "2025-03-01T00:00:00Z");
    let json: Value =
        serde_json::from_str(&ok(&db, now, &["list", "--ip", "192.0.2.10", "--state", "open", "--json"])).unwrap();
    // DL-000007 opened at 06:00, due 48 h later; now is 24:00: 30 h left.
    assert_eq!(json[0]["seconds_left"], 30 * 3600);
}

// -- staff actions -------------------------------------------------------------------------------

#[test]
fn staff_actions_leave_history_and_set_first_response() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    let c = take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t0);
    drop(s);
    let at = |h: i64| t0 + SignedDuration::from_hours(h);

    assert_eq!(ok(&db, at(2), &["assign", "DL-000001", "carol", "--by", "bob"]), "DL-000001 assigned to carol\n");
    ok(&db, at(3), &["note", "dl-1", "asked the abuse team", "--by", "carol"]);
    let out = ok(&db, at(5), &["resolve", "DL-000001", "--note", "delisted in the portal", "--by", "carol"]);
    assert_eq!(out, "DL-000001 resolved; no reply sent\n");

    let s = open(&db);
    let case = s.case(c).unwrap().unwrap();
    assert_eq!(case.state, CaseState::Resolved);
    assert_eq!(case.first_response_at, Some(at(2)), "the first staff action, not the automatic ack");
    assert_eq!(case.resolved_at, Some(at(5)));
    assert_eq!(case.assignee.as_deref(), Some("carol"));

    // Resolving twice is refused (exit 4); an unknown case is exit 3.
    let e = cli(&db, &env(at(6)), &["resolve", "DL-000001", "--note", "again"]).unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    let e = cli(&db, &env(at(6)), &["note", "DL-000099", "x"]).unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert_eq!(e.to_string(), "no case DL-000099");
    let e = cli(&db, &env(at(6)), &["reopen", "DL-000099"]).unwrap_err();
    assert_eq!(e.exit_code(), 3);

    // Reopened: open again, with a fresh clock.
    let out = ok(&db, at(30), &["reopen", "DL-000001", "--note", "sender says still blocked", "--by", "bob"]);
    assert!(out.starts_with("DL-000001 reopened; due 2025-03-04 17:00"), "{out}");
    let case = s.case(c).unwrap().unwrap();
    assert_eq!((case.state, case.resolved_at, case.due_at), (CaseState::Open, None, Some(at(30 + 48))));
    let e = cli(&db, &env(at(31)), &["reopen", "DL-000001"]).unwrap_err();
    assert_eq!(e.exit_code(), 4);
    ok(&db, at(31), &["assign", "DL-000001", "--clear", "--by", "bob"]);
    assert_eq!(s.case(c).unwrap().unwrap().assignee, None);

    let history: Vec<(String, String, Option<String>)> =
        s.case_detail(c).unwrap().unwrap().events.into_iter().map(|e| (e.kind, e.actor, e.text)).collect();
    let kinds: Vec<&str> = history.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(kinds, ["opened", "reply_queued", "assigned", "note", "resolved", "reopened", "assigned"]);
    assert_eq!(history[3], ("note".into(), "carol".into(), Some("asked the abuse team".into())));
    assert_eq!(history[5].2.as_deref(), Some("was resolved; sender says still blocked"));
}

#[test]
fn resolve_with_a_reply_queues_it_in_the_case_language() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    let c = take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t0);
    let c2 = take_in(&mut s, 2, "203.0.113.8", "alice@example.com", t0);
    drop(s);
    let now = t0 + SignedDuration::from_hours(4);

    // Without a composer configured, --reply is refused and nothing changes.
    let e = cli(&db, &env(now), &["resolve", "DL-000001", "--note", "n", "--reply", "delisted"]).unwrap_err();
    assert!(matches!(e, CasesError::Desk(delistd::desk::DeskError::RepliesOff)));
    assert_eq!(open(&db).case(c).unwrap().unwrap().state, CaseState::Open);

    let env = env_with_replies(now);
    let out = cli(
        &db,
        &env,
        &[
            "resolve",
            "DL-000001",
            "--note",
            "ok in portal",
            "--reply",
            "delisted",
            "--reply-note",
            "Sorry!",
            "--by",
            "bob",
        ],
    )
    .unwrap();
    assert_eq!(out, "DL-000001 resolved; reply #3 queued\n");
    let out = cli(&db, &env, &["resolve", "DL-000002", "--note", "spam source", "--reply", "rejected", "--by", "bob"])
        .unwrap();
    assert!(out.starts_with("DL-000002 rejected; reply #"), "{out}");

    let s = open(&db);
    assert_eq!(s.case(c2).unwrap().unwrap().state, CaseState::Rejected);
    let d = s.case_detail(c).unwrap().unwrap();
    let reply = d.replies.iter().find(|r| r.subject.contains("delisted")).expect("queued");
    // From the templates_dir override, not the built-in German text.
    assert_eq!(reply.subject, "[DL-000001] delisted (de)");
    assert_eq!(reply.recipient, "alice@example.com");
    assert_eq!(reply.caused_by, d.case.opened_by);
    // A real message, threaded to the request.
    let parsed = mail_parser::MessageParser::default().parse(&reply.raw).unwrap();
    assert_eq!(parsed.in_reply_to().as_text(), Some("req1@example.com"));
    assert_eq!(parsed.message_id(), Some(reply.message_id.as_str()));
    let body = parsed.body_text(0).unwrap();
    assert!(body.contains("Dear Alice Example") && body.contains("Sorry!"), "{body}");
    assert!(!body.contains("ok in portal"), "the internal note is never sent");
    // The reply is due now for the sender loop, and in the history as the staff member's.
    assert!(s.due_replies(now, 10).unwrap().iter().any(|r| r.id == reply.id));
    let ev: Vec<(String, String)> = d.events.iter().map(|e| (e.kind.clone(), e.actor.clone())).collect();
    assert!(ev.contains(&("reply_queued".into(), "bob".into())), "{ev:?}");
    assert_eq!(ev.last(), Some(&("resolved".into(), "bob".into())));
    // Resolving a closed case with a reply is refused before composing anything.
    let e = cli(&db, &env, &["resolve", "DL-000001", "--note", "n", "--reply", "delisted"]).unwrap_err();
    assert_eq!(e.exit_code(), 4);
}

/// Issue 11: `cases list --assignee` shows one person's cases.
#[test]
fn list_by_assignee() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    for i in 1..=3 {
        take_in(&mut s, i, &format!("203.0.113.{i}"), "alice@example.com", t0);
    }
    drop(s);
    ok(&db, t0, &["assign", "DL-000002", "carol", "--by", "bob"]);
    assert_eq!(json_refs(&ok(&db, t0, &["list", "--assignee", "carol", "--json"])), ["DL-000002"]);
    assert!(json_refs(&ok(&db, t0, &["list", "--assignee", "bob", "--json"])).is_empty());
}

/// Issue 11: `cases list --ip` takes a CIDR block, `--sender` a part of the address or
/// domain, `--search` words of the messages; each searches every state by default, and
/// `--limit`/`--offset` page through the desk's keyset pages.
#[test]
fn list_by_cidr_sender_substring_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    take_in(&mut s, 1, "203.0.113.7", "alice@Example.com", t0);
    take_in(&mut s, 2, "203.0.113.200", "bob@relay.example.org", t0);
    take_in(&mut s, 3, "2001:db8:1::25", "carol@mail.test", t0);
    drop(s);
    ok(&db, t0, &["resolve", "DL-000001", "--note", "done", "--by", "bob"]);
    let refs = |args: &[&str]| json_refs(&ok(&db, t0, &[&["list", "--json"][..], args].concat()));
    assert_eq!(refs(&["--ip", "203.0.113.0/25"]), ["DL-000001"], "a resolved case too");
    assert_eq!(refs(&["--ip", "203.0.113.0/24"]), ["DL-000002", "DL-000001"]);
    assert_eq!(refs(&["--ip", "2001:db8::/32"]), ["DL-000003"]);
    assert_eq!(refs(&["--ip", "203.0.113.200"]), ["DL-000002"]);
    assert_eq!(refs(&["--sender", "EXAMPLE"]), ["DL-000002", "DL-000001"], "address and domain, any case");
    assert_eq!(refs(&["--sender", "relay.example"]), ["DL-000002"]);
    assert_eq!(refs(&["--search", "\"banned sender\" 2001*"]), ["DL-000003"]);
    assert_eq!(refs(&["--search", "203.0.113.7"]), ["DL-000001"]);
    assert_eq!(refs(&["--search", "banned", "--state", "active"]), ["DL-000002", "DL-000003"]);
    assert_eq!(refs(&["--search", "banned", "--limit", "1", "--offset", "1"]), ["DL-000002"]);
    let table = ok(&db, t0, &["list", "--search", "banned", "--limit", "2"]);
    assert!(table.contains("next page with --offset 2"), "{table}");
    let e = cli(&db, &env(t0), &["list", "--search", "\"unclosed"]).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("quote"), "{e}");
    assert!(parse_err(&["list", "--ip", "203.0.113.0/33"]).contains("CIDR block"));
}

/// Issue 11: the README's `--reject --reply rejected` works, `--reject --reply delisted` is a
/// usage error, and a case without an IP cannot be resolved as delisted.
#[test]
fn resolve_rules_of_the_desk_hold_in_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t0);
    let tx = s.transaction().unwrap();
    let no_ip = tx
        .open_case(
            &delistd::cases::NewCase {
                ip: None,
                status_code: None,
                ndr_line: None,
                sender: "carl@example.it".into(),
                language: delistd::types::Lang::It,
                opened_by: None,
                awaiting_info: true,
            },
            t0,
        )
        .unwrap();
    tx.commit().unwrap();
    drop(s);
    let env = env_with_replies(t0);
    let out = cli(&db, &env, &["resolve", "DL-000001", "--note", "spam", "--reject", "--reply", "rejected", "--by", "bob"])
        .unwrap();
    assert!(out.starts_with("DL-000001 rejected; reply #"), "{out}");
    let e = cli(&db, &env, &["resolve", &no_ip.to_string(), "--note", "n", "--reject", "--reply", "delisted"]).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    for args in [&["--reply", "delisted"][..], &[]] {
        let mut a = vec!["resolve", "DL-000002", "--note", "n"];
        a.extend_from_slice(args);
        let e = cli(&db, &env, &a).unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(e.to_string().contains("no banned IP"), "{e}");
    }
    assert_eq!(open(&db).case(no_ip).unwrap().unwrap().state, CaseState::AwaitingInfo);
    assert!(open(&db).case_detail(no_ip).unwrap().unwrap().replies.is_empty(), "no \"indirizzo IP -\" reply");
}

// -- show and export -----------------------------------------------------------------------------

#[test]
fn show_gives_evidence_history_messages_and_replies() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    let c = take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t0);
    let id = s.due_replies(t0, 1).unwrap()[0].id;
    s.mark_sent(id, t0 + SignedDuration::from_secs(30)).unwrap();
    s.note(c, "bob", "line one\nline two", t0 + SignedDuration::from_hours(1)).unwrap();
    drop(s);
    let now = t0 + SignedDuration::from_hours(2);
    let out = ok(&db, now, &["show", "DL-000001"]);
    for want in [
        "DL-000001  open  in 1d22h",
        "NDR line:       550 5.7.511 Access denied, banned sender[203.0.113.7]",
        "Opened:         2025-03-01 11:00:00 +01",
        "status code: 5.7.511",
        "IPs: 203.0.113.7 (rejection)",
        "decision: acknowledge: 5.7.511 request",
        "opened       delistd    request for 203.0.113.7 [message #1]",
        "reply_sent   delistd     [message #1] [reply #1]",
        "note         bob        line one line two",
        "<req1@example.com>  processed",
        "sent 2025-03-01 11:00  to alice@example.com  \"[DL-000001] received\"  attempts 1",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let v: Value = serde_json::from_str(&ok(&db, now, &["show", "DL-000001", "--json"])).unwrap();
    assert_eq!(v["case"]["ref"], "DL-000001");
    assert_eq!(v["messages"][0]["evidence"]["status_code"], "5.7.511");
    assert_eq!(v["replies"][0]["state"], "sent");
    assert_eq!(v["events"].as_array().unwrap().len(), 4);
    assert_eq!(cli(&db, &env(now), &["show", "DL-000002"]).unwrap_err().exit_code(), 3);
}

#[test]
fn export_streams_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    for i in 0..25u32 {
        take_in(
            &mut s,
            i + 1,
            &format!("198.51.100.{}", i + 1),
            "x@example.com",
            t0 + SignedDuration::from_mins(i64::from(i)),
        );
    }
    drop(s);
    let now = t0 + SignedDuration::from_hours(1);
    let json_out = ok(&db, now, &["export", "--format", "json"]);
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 25);
    assert_eq!(json_out.lines().count(), 27, "one case per line between the brackets");
    let csv_out = ok(&db, now, &["export", "--format", "csv", "--since", "2025-03-01T10:20:00Z"]);
    assert_eq!(csv::Reader::from_reader(csv_out.as_bytes()).records().count(), 5);
    let empty = ok(&db, now, &["export", "--format", "json", "--state", "rejected"]);
    assert_eq!(serde_json::from_str::<Value>(&empty).unwrap(), serde_json::json!([]));
}

// -- retention ------------------------------------------------------------------------------------

#[test]
fn show_says_when_the_raw_message_was_purged() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t0);
    drop(s);
    ok(&db, t0 + SignedDuration::from_hours(3), &["resolve", "DL-000001", "--note", "done"]);
    let retention = delistd::config::Retention { raw_days: 30, case_days: None };
    let mut s = open(&db);
    let early = s.purge(&retention, t0 + SignedDuration::from_hours(24 * 20), false).unwrap();
    assert!(early.is_empty(), "{early:?}");
    let purged_at = t("2025-04-10T08:00:00Z");
    let rep = s.purge(&retention, purged_at, false).unwrap();
    assert_eq!(rep.raw_messages, 1);
    drop(s);
    let out = ok(&db, purged_at, &["show", "DL-000001"]);
    assert!(out.contains("raw message purged on 2025-04-10 09:00:00 +01 (retention)"), "{out}");
    assert!(out.contains("status code: 5.7.511"), "the evidence stays:\n{out}");
}

// -- cases reply / cases ask (issue 11), through the real binary --------------------------------

/// `delistd cases ARGS` with a config that has replies, `stdin` piped in (not a terminal:
/// the text is read from it, no editor).
fn cases_bin(dir: &Path, db: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let cfg = dir.join("delistd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[intake]\nsource = \"maildir\"\n\n[maildir]\npath = \"{}\"\n\n[smtp]\nreply_dir = \"{}\"\n\n\
             [replies]\nfrom = \"Delist desk <delist@provider.example>\"\nmessage_id_domain = \"provider.example\"\n",
            dir.join("maildir").display(),
            dir.join("replies").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_delistd"))
        .arg("cases")
        .arg("--config")
        .arg(&cfg)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("DELISTD_STAFF")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Issue 11: `cases reply` and `cases ask` take the text from standard input, `--preview`
/// prints the exact message and queues nothing, an empty text sends nothing (exit 2), and a
/// closed case cannot be asked (exit 4).
#[test]
fn cases_reply_and_ask_from_stdin_with_preview() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    let t0 = t("2025-03-01T10:00:00Z");
    let mut s = open(&db);
    let c = take_in(&mut s, 1, "203.0.113.7", "alice@example.com", t0);
    drop(s);
    let replies = |db: &Path| open(db).case_detail(c).unwrap().unwrap().replies;
    let before = replies(&db).len();
    let text = "Wir haben Ihren Server geprüft.\nBitte senden Sie uns die Logs.";

    let out = cases_bin(dir.path(), &db, &["reply", "DL-000001", "--preview"], text);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in ["Subject: [DL-000001] ", "In-Reply-To: <req1@example.com>", "Guten Tag Alice Example,", text, "Mit freundlichen Grüßen", "(preview: nothing queued"] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    assert_eq!(replies(&db).len(), before, "a preview queues nothing");

    let out = cases_bin(dir.path(), &db, &["reply", "DL-000001", "--json"], text);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["action"].as_str(), v["case"].as_str(), v["state_after"].as_str()), (Some("reply"), Some("DL-000001"), Some("open")));
    let id = v["outbox"].as_i64().expect("queued");
    let rows = replies(&db);
    let row = rows.iter().find(|r| r.id.0 == id).unwrap();
    assert_eq!(row.kind.as_deref(), Some("staff_reply"));
    let parsed = mail_parser::MessageParser::default().parse(&row.raw).unwrap();
    assert!(parsed.header_raw("Auto-Submitted").is_none(), "written by a person (RFC 3834 §5)");
    assert!(parsed.body_text(0).unwrap().replace("\r\n", "\n").contains(text));
    let d = open(&db).case_detail(c).unwrap().unwrap();
    let e = d.events.iter().find(|e| e.kind == "staff_reply").unwrap();
    assert_eq!(e.text.as_deref(), Some(text));
    assert_ne!(e.actor, DAEMON_ACTOR, "under the staff member's name");

    // Empty (or only blanks): nothing sent, exit 2, a message that says so.
    let n = replies(&db).len();
    for empty in ["", "  \n \n"] {
        let out = cases_bin(dir.path(), &db, &["ask", "DL-000001"], empty);
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(replies(&db).len(), n);

    let out = cases_bin(dir.path(), &db, &["ask", "DL-000001"], "Welcher Host sendet von dieser IP?");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the case is awaiting_info"));
    let row = open(&db).case(c).unwrap().unwrap();
    assert_eq!((row.state, row.due_at.is_none(), row.sla_remaining.is_some()), (CaseState::AwaitingInfo, true, true));
    // Staff see the paused clock (the case was opened in 2025: it was long overdue).
    let shown = ok(&db, t0, &["show", "DL-000001"]);
    assert!(shown.contains("Clock:          paused, overdue by "), "{shown}");
    let v: Value = serde_json::from_str(&ok(&db, t0, &["show", "DL-000001", "--json"])).unwrap();
    assert!(v["case"]["paused_seconds_left"].as_i64().is_some_and(|s| s < 0), "{v}");

    // A closed case: asked is refused (reopen first), nothing queued.
    ok(&db, t0, &["resolve", "DL-000001", "--note", "done", "--by", "bob"]);
    let n = replies(&db).len();
    let out = cases_bin(dir.path(), &db, &["ask", "DL-000001"], "Noch etwas?");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reopen"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(replies(&db).len(), n);
    // No such case: exit 3 before any text is read.
    let out = cases_bin(dir.path(), &db, &["reply", "DL-000099"], "hi");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 11: `cases bulk` is the board's bulk form from the command line (the same
/// `Desk::bulk`): cases from arguments and standard input, each its own transaction, every
/// outcome printed, exit 4 when some were refused, and a malformed reference does nothing.
#[test]
fn cases_bulk_assigns_and_resolves_many_and_names_the_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(&dir);
    sla_fixture(&db); // DL-1..3 open, DL-4 awaiting info (no IP), DL-5 resolved
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let state = |r: i64| -> (String, Option<String>) {
        open(&db).connection().query_row("SELECT state, assignee FROM cases WHERE id = ?1", [r], |x| Ok((x.get(0)?, x.get(1)?))).unwrap()
    };

    let out = cases_bin(dir.path(), &db, &["bulk", "assign", "--to", "carol", "--by", "bob", "DL-000001", "-"], "DL-000002\n dl-1 \n");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text(&out), "DL-000001: assigned to carol\nDL-000002: assigned to carol\n");
    assert_eq!(state(2), ("open".into(), Some("carol".into())));
    let who: String = open(&db)
        .connection()
        .query_row("SELECT actor FROM events WHERE case_id = 2 AND kind = 'assigned'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(who, "bob");

    // DL-000004 has no IP (not "delisted"), DL-000005 is closed already: both refused, the
    // others done, exit 4.
    let args = ["bulk", "resolve", "--note", "cleared in the weekly sweep", "--by", "bob", "--json", "DL-000003", "DL-000004", "DL-000005"];
    let out = cases_bin(dir.path(), &db, &args, "");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(v[0], serde_json::json!({"case": "DL-000003", "error": null}));
    assert!(v[1]["error"].as_str().unwrap().contains("no banned IP"), "{v}");
    assert!(v[2]["error"].as_str().unwrap().contains("resolved"), "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 3 cases refused"));
    assert_eq!(state(3).0, "resolved");
    assert_eq!(state(4).0, "awaiting_info");

    // A malformed reference: a usage error before anything is done.
    let out = cases_bin(dir.path(), &db, &["bulk", "reject", "--note", "x", "DL-000001", "42"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"42\" is not a case reference"));
    assert_eq!(state(1).0, "open");
}
