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

use delistd::cases::search::ip_key;
use delistd::cases::{CaseFilter, CaseState, Store, StoreOptions};
use delistd::desk::{Desk, Query};
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
    /// Fill the database and stop (fill under `nice`, then time without it: a niced process
    /// on a busy machine measures the other processes).
    #[arg(long)]
    fill_only: bool,
    /// Timed runs per desk call (the web board and case page), for the median and p95.
    #[arg(long, default_value_t = 40)]
    desk_runs: usize,
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
             received_at, size, sha256, raw, evidence, decision, action, outcome) \
             VALUES (?1, 'imap', 'INBOX', 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'processed')",
        )?;
        // The search index, filled as the store does: the subject and the decoded text.
        let mut fts = tx.prepare("INSERT INTO message_search (rowid, subject, body) VALUES (?1, ?2, ?3)")?;
        let mut case = tx.prepare(
            "INSERT INTO cases (id, ip, status_code, ndr_line, sender, language, state, opened_at, sla_started_at, \
             due_at, first_response_at, resolved_at, assignee, opened_by, ip_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?1, ?14)",
        )?;
        let mut senders = tx.prepare("INSERT INTO case_senders (rowid, sender) VALUES (?1, ?2)")?;
        let words = Words::new();
        let mut seen_senders = std::collections::HashSet::new();
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
            let subject = format!("Delist request for {ip}");
            let raw = words.request(&mut rng, i, &sender, &subject, &ip, &ndr, lang, s);
            msg.execute(params![
                i,
                format!("req{i}@example{}.com", s % 97),
                sender,
                subject,
                opened,
                raw.len() as i64,
                format!("{:016x}{:016x}{:016x}{:016x}", i, rng.next(), rng.next(), rng.next()),
                raw,
                evidence,
                r#"{"action":"acknowledge","reason":"5.7.511 request"}"#,
                "acknowledge",
            ])?;
            fts.execute(params![i, subject, delistd::extract::readable::decode(&raw).text])?;
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
                (!awaiting).then(|| ip_key(ip.parse().expect("the bench's IPs parse"))),
            ])?;
            // One row per sender, at its oldest case (as the store keeps it).
            if seen_senders.insert(s) {
                senders.execute(params![i, sender])?;
            }
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

/// What senders write, made up but shaped like the real thing: a greeting and a plea in the
/// case's language, the NDR line, who they are (one of 20,000 companies, so a company name
/// is in ~50 requests), and 30–120 words of prose drawn from a 5,000-word vocabulary with a
/// Zipf-like skew (a few words are everywhere, most are rare), as people write. About a
/// third is sent as HTML only, as many webmail clients do.
struct Words {
    vocabulary: Vec<String>,
}

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ten", "sor", "va", "ri", "dan", "el", "mo", "pra", "zu", "fen", "gal", "ti", "nor", "bre", "qui",
    "ast", "ol", "mer", "sin", "do", "ra", "vel", "cor", "pi", "lum", "hes", "ta", "gri", "on",
];

impl Words {
    fn new() -> Words {
        let mut rng = Rng(7);
        let vocabulary = (0..5000)
            .map(|_| (0..2 + rng.below(3)).map(|_| SYLLABLES[rng.below(32) as usize]).collect::<String>())
            .collect();
        Words { vocabulary }
    }

    /// A word, small ranks much more often (a rough Zipf: the cube of a uniform).
    fn word(&self, rng: &mut Rng) -> &str {
        let u = rng.below(1 << 20) as f64 / f64::from(1u32 << 20);
        &self.vocabulary[((u * u * u) * self.vocabulary.len() as f64) as usize]
    }

    /// Company `k` of 20,000: two vocabulary words and a legal form.
    fn company(&self, k: u64) -> String {
        let mut rng = Rng(k.wrapping_mul(0x9E37));
        let cap = |w: &str| w[..1].to_uppercase() + &w[1..];
        let a = cap(&self.vocabulary[rng.below(5000) as usize]);
        let b = cap(&self.vocabulary[rng.below(5000) as usize]);
        format!("{a}{b} {}", ["GmbH", "Ltd", "S.r.l.", "SARL", "KK", "Inc."][(k % 6) as usize])
    }

    #[allow(clippy::too_many_arguments)]
    fn request(&self, rng: &mut Rng, i: i64, sender: &str, subject: &str, ip: &str, ndr: &str, lang: &str, s: u64) -> Vec<u8> {
        let (hello, plea) = match lang {
            "fr" => ("Bonjour,", "notre adresse IP est bloquée, merci de la retirer de votre liste."),
            "it" => ("Buongiorno,", "il nostro indirizzo IP è bloccato, vi chiediamo di rimuoverlo."),
            "de" => ("Guten Tag,", "unsere IP-Adresse wird blockiert, bitte entfernen Sie sie von der Liste."),
            "ja" => ("お世話になっております。", "弊社のIPアドレスがブロックされています。解除をお願いします。"),
            _ => ("Hello,", "our IP address is blocked by your service, please remove it from your list."),
        };
        let company = self.company(s % 20_000);
        let n = 30 + rng.below(90);
        let prose: Vec<&str> = (0..n).map(|_| self.word(rng)).collect();
        let text = format!(
            "{hello}\n\n{plea}\n\nThe bounce said:\n  {ndr}\n\nWe are {company}; our mail server {ip} sends \
             invoices and order confirmations to your customers. {}.\n\nBest regards,\n{company} postmaster\n",
            prose.join(" ")
        );
        let head = format!(
            "From: {sender}\r\nTo: delist@example.net\r\nSubject: {subject}\r\nMessage-ID: <req{i}@example.com>\r\n\
             MIME-Version: 1.0\r\n"
        );
        let raw = if i % 3 == 0 {
            let html = text.replace('\n', "<br>\n");
            format!("{head}Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>{html}</p></body></html>\r\n")
        } else {
            format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}")
        };
        raw.into_bytes()
    }
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
    if a.fill_only {
        return Ok(());
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
    // (A small database may have no IP with 5 cases: then any IP.)
    let ip: String = store.connection().query_row(
        "SELECT ip FROM cases WHERE ip IS NOT NULL GROUP BY ip ORDER BY count(*) >= 5 DESC LIMIT 1",
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
    time_desk_calls(&a, now, &ip)
}

/// The calls the web desk makes, server-side, on one long-lived connection as `delistd web`
/// holds: a board page is `Desk::list` + `Desk::counts`, a case page `Desk::case`.
fn time_desk_calls(a: &Args, now: Timestamp, ip: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = Store::open(&a.db, StoreOptions::default())?;
    let words = Words::new();
    let company = words.company(12_345);
    let common = words.vocabulary[0].clone();
    let block = {
        let v4: std::net::Ipv4Addr = ip.parse()?;
        let o = v4.octets();
        format!("{}.{}.0.0/16", o[0], o[1])
    };
    let all = CaseState::ALL.to_vec();
    let views: Vec<(String, Query)> = vec![
        ("board: default view".into(), Query::default()),
        ("board: assignee alice, open".into(), Query { assignee: Some("alice".into()), states: vec![CaseState::Open], ..Query::default() }),
        ("board: assignee alice, resolved".into(), Query { assignee: Some("alice".into()), states: vec![CaseState::Resolved], ..Query::default() }),
        (format!("board: CIDR {block}, all states"), Query { ip: block.parse().ok(), states: all.clone(), ..Query::default() }),
        (format!("board: CIDR {block}, active"), Query { ip: block.parse().ok(), ..Query::default() }),
        ("board: sender \"example26.com\", all".into(), Query { sender: Some("example26.com".into()), states: all.clone(), ..Query::default() }),
        ("board: sender \"postmaster123@\", all".into(), Query { sender: Some("postmaster123@".into()), states: all.clone(), ..Query::default() }),
        (format!("board: search \"{company}\", all"), Query { text: Some(format!("\"{company}\"")), states: all.clone(), ..Query::default() }),
        (format!("board: search \"{company}\", active"), Query { text: Some(format!("\"{company}\"")), ..Query::default() }),
        (format!("board: search common word {common:?}, all"), Query { text: Some(common.clone()), states: all.clone(), ..Query::default() }),
        (format!("board: search common word {common:?}, active"), Query { text: Some(common.clone()), ..Query::default() }),
    ];
    {
        let desk = Desk::new(&mut store);
        for (name, q) in &views {
            println!("plan of {name}: {}", desk.explain_list(q, now)?.join(" / "));
        }
    }
    println!("desk calls: {} runs each on one connection, release build; median and p95", a.desk_runs);
    for (name, q) in &views {
        let mut found = 0;
        let ms = time_runs(a.desk_runs, || {
            let desk = Desk::new(&mut store);
            found = desk.list(q, now)?.cases.len();
            desk.counts(now)?;
            Ok(())
        })?;
        report(&format!("{name} (list + counts)"), &ms, &format!("{found} cases"));
    }
    let mut rng = Rng(99);
    let n = a.cases.max(1);
    let mut texts = 0usize;
    let ms = time_runs(a.desk_runs, || {
        let r = delistd::types::CaseRef(1 + rng.below(n) as i64);
        let v = Desk::new(&mut store).case(r, now)?;
        texts += v.messages.iter().filter_map(|m| m.text.as_ref()).count();
        Ok(())
    })?;
    report("case page: Desk::case, a random case", &ms, &format!("{texts} message texts decoded"));
    Ok(())
}

fn time_runs(runs: usize, mut f: impl FnMut() -> Result<(), Box<dyn std::error::Error>>) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// Median and p95 (nearest rank) of sorted timings.
fn report(name: &str, ms: &[f64], what: &str) {
    let p95 = ms[((ms.len() * 95).div_ceil(100)).saturating_sub(1)];
    println!("{name:<62} median {:>7.1} ms  p95 {:>7.1} ms  ({what})", ms[ms.len() / 2], p95);
}
