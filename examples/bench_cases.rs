//! Fill a case database with a million cases and their history, then time the staff
//! commands on it through the real CLI code path (`cli::cases::run`). Run it with
//! `scripts/bench-cases.sh` (release build). Not a test: it prints figures.
//!
//! The data: cases opened every ~63 s over two years before a fixed "now"; most resolved
//! within 1–60 h (some late, 10 % rejected), 1 % never resolved (an overdue backlog),
//! 0.5 % still awaiting info; ~200,000 distinct IPs and 50,000 senders. Each case has the
//! message that opened it, an acknowledgement in the outbox, a resolution reply when
//! resolved, and 3–6 history entries.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rusqlite::{params, Connection, Statement};

use delistd::cases::{CaseFilter, CaseState, Store, StoreOptions};
use delistd::cli::cases::{run, CasesCmd, Env};

#[derive(Parser)]
struct Args {
    /// Database to fill (if empty or missing) and time.
    #[arg(long, default_value = "target/bench-cases.sqlite")]
    db: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    cases: u64,
    /// Timed runs per command.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Delete the database first and fill it again.
    #[arg(long)]
    refill: bool,
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: CasesCmd,
}

/// The bench's fixed "now": data and queries are built around it, so a filled database
/// can be timed again later with the same results.
fn bench_now() -> Timestamp {
    Timestamp::from_second(1_748_736_000).unwrap_or(Timestamp::UNIX_EPOCH) // 2025-06-01T00:00:00Z
}

/// SplitMix64: a small deterministic generator, so every fill is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ip_of(k: u64) -> String {
    format!("{}.{}.{}.{}", 11 + (k >> 16) % 150, (k >> 8) & 255, k & 255, 1 + k % 7)
}

fn fill(db: &std::path::Path, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    // Create the schema the normal way, then write with a connection tuned for bulk load.
    drop(Store::open(db, StoreOptions::default())?);
    let mut conn = Connection::open(db)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -262_144)?; // 256 MiB
    let tx = conn.transaction()?;
    let now = bench_now().as_second();
    let span: i64 = 730 * 86_400;
    let sla: i64 = 48 * 3600;
    let mut rng = Rng(42);
    {
        let mut msg = tx.prepare(
            "INSERT INTO messages (id, source_kind, mailbox, uidvalidity, uid, message_id, sender, subject, \
             received_at, size, sha256, raw_path, evidence, decision, action, outcome) \
             VALUES (?1, 'imap', 'INBOX', 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'processed')",
        )?;
        let mut case = tx.prepare(
            "INSERT INTO cases (id, ip, status_code, ndr_line, sender, language, state, opened_at, sla_started_at, \
             due_at, first_response_at, resolved_at, assignee, opened_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?1)",
        )?;
        let mut ev = tx.prepare(
            "INSERT INTO events (case_id, kind, actor, text, message_ref, outbox_ref, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut ob = tx.prepare(
            "INSERT INTO outbox (case_id, caused_by, recipient, message_id, subject, raw, state, attempts, \
             queued_at, next_attempt_at, sent_at) VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
        )?;
        let langs = ["en", "fr", "it", "ja", "de"];
        let staff = ["alice", "bob", "carol", "dave"];
        for i in 1..=n as i64 {
            let opened = now - span + (i * span) / n as i64;
            let ip = ip_of(rng.below(200_000));
            let s = rng.below(50_000);
            let sender = format!("postmaster{s}@example{}.com", s % 97);
            let lang = langs[rng.below(5) as usize];
            let ndr = format!("550 5.7.511 Access denied, banned sender[{ip}]. To request removal from this list, forward this message to delist@example.net");
            let roll = rng.below(1000);
            let awaiting = roll < 5;
            let never = (5..15).contains(&roll);
            let rejected = (15..115).contains(&roll);
            // Resolution delay: mostly 1–40 h, a tail up to 60 h (late).
            let range = if rng.below(10) == 0 { 59 * 3600 } else { 39 * 3600 };
            let delay = 3600 + rng.below(range) as i64;
            let resolved_at = (!awaiting && !never && opened + delay <= now).then_some(opened + delay);
            let first = resolved_at.map(|r| opened + (r - opened) * (20 + rng.below(80) as i64) / 100);
            let state = match (awaiting, resolved_at) {
                (true, _) => "awaiting_info",
                (false, None) => "open",
                (false, Some(_)) if rejected => "rejected",
                (false, Some(_)) => "resolved",
            };
            let (started, due) = if awaiting { (None, None) } else { (Some(opened), Some(opened + sla)) };
            let assignee = first.map(|_| staff[rng.below(4) as usize]);
            let evidence = format!(
                r#"{{"status_code":"5.7.511","ips":[{{"text":"{ip}","source":"rejection","problem":null}}],"language":"{lang}","auto_signs":[],"ndr_lines":[{{"text":"{ndr}","found_in":"body"}}]}}"#
            );
            msg.execute(params![
                i,
                format!("req{i}@example{}.com", s % 97),
                sender,
                format!("Delist request for {ip}"),
                opened,
                1800 + rng.below(4000) as i64,
                format!("{:016x}{:016x}{:016x}{:016x}", i, rng.next(), rng.next(), rng.next()),
                format!("/var/lib/delistd/raw/{i}.eml"),
                evidence,
                r#"{"action":"acknowledge","reason":"5.7.511 request"}"#,
                "acknowledge",
            ])?;
            case.execute(params![
                i,
                (!awaiting).then_some(&ip),
                (!awaiting).then_some("5.7.511"),
                (!awaiting).then_some(&ndr),
                sender,
                lang,
                state,
                opened,
                started,
                due,
                first,
                resolved_at,
                assignee,
            ])?;
            ev.execute(params![i, "opened", "delistd", format!("request for {ip}"), i, None::<i64>, opened])?;
            let r = Reply { case: i, sender: &sender, now };
            r.queue(&mut ob, &mut ev, &tx, if awaiting { "missing_info" } else { "acknowledge" }, opened, "delistd")?;
            if let (Some(r), Some(f), Some(who)) = (resolved_at, first, assignee) {
                if f < r {
                    ev.execute(params![i, "assigned", who, format!("assigned to {who}"), None::<i64>, None::<i64>, f])?;
                }
                let kind = if rejected { "rejected" } else { "delisted" };
                Reply { case: i, sender: &sender, now }.queue(&mut ob, &mut ev, &tx, kind, r, who)?;
                ev.execute(params![
                    i,
                    if rejected { "rejected" } else { "resolved" },
                    who,
                    "done",
                    None::<i64>,
                    None::<i64>,
                    r
                ])?;
            }
            if i % 100_000 == 0 {
                eprintln!("  {i} cases");
            }
        }
    }
    tx.commit()?;
    // No ANALYZE: a database the daemon grew has no planner statistics either, and the
    // queries must be fast without them.
    Ok(())
}

/// One reply of a case in the outbox, with its history entries.
struct Reply<'a> {
    case: i64,
    sender: &'a str,
    now: i64,
}

impl Reply<'_> {
    fn queue(
        &self,
        ob: &mut Statement<'_>,
        ev: &mut Statement<'_>,
        conn: &Connection,
        kind: &str,
        at: i64,
        actor: &str,
    ) -> rusqlite::Result<()> {
        let (i, sender) = (self.case, self.sender);
        let sent = at + 5;
        let sent_ok = sent <= self.now;
        ob.execute(params![
            i,
            sender,
            format!("DL-{i:06}.{kind}.{at}@delist.example.net"),
            format!("[DL-{i:06}] {kind}"),
            format!("From: delist@example.net\r\nTo: {sender}\r\nSubject: [DL-{i:06}] {kind}\r\n\r\nHello.\r\n")
                .into_bytes(),
            if sent_ok { "sent" } else { "queued" },
            i64::from(sent_ok),
            at,
            sent_ok.then_some(sent),
        ])?;
        let o = conn.last_insert_rowid();
        ev.execute(params![i, "reply_queued", actor, kind, i, o, at])?;
        if sent_ok {
            ev.execute(params![i, "reply_sent", "delistd", None::<String>, i, o, sent])?;
        }
        Ok(())
    }
}

fn time_command(
    db: &std::path::Path,
    env: &Env<'_>,
    args: &[&str],
    runs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut ms = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let cmd = Cli::try_parse_from(std::iter::once("cases").chain(args.iter().copied()))?.cmd;
        let mut out = Vec::new();
        let start = Instant::now();
        run(cmd, db, env, &mut out)?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        bytes = out.len();
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{:<40} min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  ({bytes} bytes out)",
        format!("cases {}", args.join(" ")),
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    if a.refill && a.db.exists() {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = a.db.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    let filled = a.db.exists() && {
        let s = Store::open(&a.db, StoreOptions::default())?;
        s.connection().query_row("SELECT count(*) FROM cases", [], |r| r.get::<_, i64>(0))? > 0
    };
    if !filled {
        eprintln!("filling {} with {} cases ...", a.db.display(), a.cases);
        let start = Instant::now();
        fill(&a.db, a.cases)?;
        eprintln!("filled in {:.1} s", start.elapsed().as_secs_f64());
    }
    let now = bench_now();
    let env = Env { now, tz: TimeZone::UTC, store: StoreOptions::default(), replies: None, delist_command: None };
    let store = Store::open(&a.db, StoreOptions::default())?;
    let count = |sql: &str| store.connection().query_row(sql, [], |r| r.get::<_, i64>(0));
    println!(
        "database: {} cases, {} events, {} messages, {} replies; {} open, {} overdue; {:.0} MB",
        count("SELECT count(*) FROM cases")?,
        count("SELECT count(*) FROM events")?,
        count("SELECT count(*) FROM messages")?,
        count("SELECT count(*) FROM outbox")?,
        count("SELECT count(*) FROM cases WHERE state = 'open'")?,
        count(&format!("SELECT count(*) FROM cases WHERE state = 'open' AND due_at < {}", now.as_second()))?,
        std::fs::metadata(&a.db)?.len() as f64 / 1e6,
    );
    // An IP with several cases, and a resolved case with a full history.
    let ip: String = store.connection().query_row(
        "SELECT ip FROM cases WHERE ip IS NOT NULL GROUP BY ip HAVING count(*) >= 5 LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    let show_ref = format!("DL-{:06}", a.cases / 2);
    let plans = [
        ("list --overdue", CaseFilter { overdue: true, ..Default::default() }),
        ("list --ip", CaseFilter { ip: ip.parse().ok(), ..Default::default() }),
        ("list", CaseFilter { states: vec![CaseState::Open, CaseState::AwaitingInfo], ..Default::default() }),
        ("list --state resolved", CaseFilter { states: vec![CaseState::Resolved], ..Default::default() }),
        ("list --sender", CaseFilter { sender: Some("postmaster123@example26.com".into()), ..Default::default() }),
    ];
    for (name, mut f) in plans {
        f.limit = Some(51);
        println!("plan of {name}: {}", store.explain_list(&f, now)?.join(" / "));
    }
    drop(store);
    println!("timings: {} runs each, release build, output to memory", a.runs);
    let ip_args = ["list", "--ip", ip.as_str()];
    let commands: Vec<Vec<&str>> = vec![
        vec!["list", "--overdue"],
        ip_args.to_vec(),
        vec!["show", show_ref.as_str()],
        vec!["stats"],
        vec!["list"],
        vec!["list", "--due-within", "6h"],
        vec!["list", "--state", "resolved"],
        vec!["list", "--sender", "postmaster123@example26.com"],
        vec!["stats", "--since", "90d"],
    ];
    for c in &commands {
        time_command(&a.db, &env, c, a.runs)?;
    }
    Ok(())
}
