//! The load and fault helper behind `scripts/bench-backlog.sh`, `scripts/bench-latency.sh` and
//! `scripts/crash-loop.sh`, run against the real test mail stack (`scripts/mailstack.sh`; its
//! `DELISTD_TEST_*` variables must be in the environment).
//!
//! * `fill`: varied delisting requests (acknowledgements in five languages and forms,
//!   missing information, portal, tenant, automatic mail), put into a mailbox with IMAP
//!   APPEND over one connection, and a manifest of what was put there.
//! * `pump`: the mail stack's own limit: the same IMAP and SMTP client code as the daemon
//!   (`ImapSource`, `SmtpConnector`), fetching, sending a fixed reply and moving each
//!   message, with no parsing and no database.
//! * `wait`: count replies as Dovecot wrote them to the senders' Maildirs, until all are there.
//! * `latency`: one request at a time into a mailbox a serving daemon watches; time each until
//!   its reply is accepted by Postfix (the daemon's log) and until it is on disk.
//! * `check`: after a run: every request has one outcome, no case twice, every reply
//!   delivered (and which ones twice).
//! * `config`, `samples`: a daemon configuration for a scratch mailbox; one request of each kind.
//!
//! Every mailbox is a scratch one (`t-<tag>-...@example.test`), so runs never see each other.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};

use delistd::config::{Imap, Secret, Security, Smtp};
use delistd::intake::imap::ImapSource;
use delistd::intake::{Disposition, SourceKey};
use delistd::reply::send::{SmtpConn, SmtpConnector};

#[derive(Parser)]
#[command(about = "Load and fault helper for delistd's benchmark scripts")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// APPEND `count` varied requests from `senders` scratch senders into the INBOX of `user`.
    Fill {
        #[arg(long)]
        user: String,
        #[arg(long)]
        tag: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 20)]
        senders: usize,
        /// Where to write the manifest (one line per request, in APPEND order).
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Drain the INBOX of `user` raw: fetch, send a fixed reply, move; print messages/s.
    Pump {
        #[arg(long)]
        user: String,
        #[arg(long)]
        tag: String,
        #[arg(long)]
        manifest: PathBuf,
        /// Parallel SMTP connections (the daemon's `smtp.connections`).
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Wait until `expect` replies are in the tag's senders' Maildirs; print the time since `since_ns`.
    Wait {
        #[arg(long)]
        tag: String,
        #[arg(long)]
        expect: usize,
        /// Start of the measurement, nanoseconds since the epoch (`date +%s%N`).
        #[arg(long)]
        since_ns: u128,
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// Send `count` requests one at a time into the INBOX of `user` (a serving daemon reads it).
    Latency {
        #[arg(long)]
        user: String,
        #[arg(long)]
        tag: String,
        #[arg(long)]
        count: usize,
        /// The daemon's JSON log (its "reply sent" lines time Postfix's acceptance).
        #[arg(long)]
        daemon_log: PathBuf,
        /// Pause after each reply before the next request, so that it finds the daemon waiting
        /// (back in IDLE) rather than still finishing the previous one: this many ms plus a
        /// random 0-100 ms, so that requests do not fall in step with a polling daemon.
        #[arg(long, default_value_t = 50)]
        gap_ms: u64,
    },
    /// Check a drained run: mailboxes, database and delivered replies against the manifest.
    Check {
        #[arg(long)]
        user: String,
        #[arg(long)]
        tag: String,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        db: PathBuf,
    },
    /// Write a daemon configuration reading the INBOX of `user` over IMAP (IDLE) and sending by
    /// SMTP, both in plain TCP on loopback; the password file goes beside it.
    Config {
        #[arg(long)]
        user: String,
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Poll the mailbox at this interval instead of using IDLE (e.g. "100ms").
        #[arg(long)]
        poll: Option<String>,
    },
    /// Write one request of each kind as .eml files (for `delistd inspect`, fuzz seeds).
    Samples {
        #[arg(long)]
        dir: PathBuf,
    },
}

// ---- the stack --------------------------------------------------------------------------

struct Stack {
    imap_port: u16,
    smtp_port: u16,
    mail_dir: PathBuf,
    scratch_password: String,
}

impl Stack {
    fn from_env() -> Result<Stack> {
        let var = |k: &str| std::env::var(k).with_context(|| format!("{k} is not set: source the mail stack's env file"));
        Ok(Stack {
            imap_port: var("DELISTD_TEST_IMAP_PORT")?.parse()?,
            smtp_port: var("DELISTD_TEST_SMTP_PORT")?.parse()?,
            mail_dir: PathBuf::from(var("DELISTD_TEST_MAIL_DIR")?),
            scratch_password: var("DELISTD_TEST_SCRATCH_PASSWORD")?,
        })
    }

    /// Dovecot's Maildir of a user (`home=MAIL_DIR/%d/%n`, `mail_location = maildir:~/Maildir`).
    fn maildir(&self, address: &str) -> PathBuf {
        let (local, domain) = address.split_once('@').unwrap_or((address, ""));
        self.mail_dir.join(domain).join(local).join("Maildir")
    }

    fn imap(&self, user: &str) -> Imap {
        Imap {
            host: "127.0.0.1".into(),
            port: self.imap_port,
            security: Security::Plain,
            tls_name: "localhost".into(),
            ca_file: None,
            user: user.into(),
            password: Secret::new("bench", self.scratch_password.clone()),
            mailbox: "INBOX".into(),
            processed_folder: "Processed".into(),
            quarantine_folder: "Quarantine".into(),
            idle: false,
            poll_interval: Duration::from_secs(60),
            oauth: None,
        }
    }

    fn smtp(&self, connections: usize) -> Smtp {
        Smtp {
            host: "127.0.0.1".into(),
            port: self.smtp_port,
            security: Security::Plain,
            tls_name: "localhost".into(),
            ca_file: None,
            auth: None,
            oauth: None,
            connections,
        }
    }

    async fn login(&self, user: &str) -> Result<async_imap::Session<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.imap_port)).await?;
        tcp.set_nodelay(true)?;
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.context("IMAP greeting")?;
        client.login(user, &self.scratch_password).await.map_err(|(e, _)| anyhow!("IMAP login {user}: {e}"))
    }
}

fn sender(tag: &str, k: usize) -> String {
    format!("t-{tag}-s{k}@example.test")
}

/// Files in `new/` and `cur/` of a Maildir (0 while Dovecot has not created it yet).
fn count_files(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|sub| std::fs::read_dir(maildir.join(sub)).map(|d| d.filter(|e| e.is_ok()).count()).unwrap_or(0))
        .sum()
}

fn files_in(maildir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(d) = std::fs::read_dir(maildir.join(sub)) {
            out.extend(d.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    out
}

/// The first line of a header's value in the first 16 KiB of a stored message (the headers
/// looked at here are never folded by Postfix or Dovecot).
fn header(path: &Path, name: &str) -> Option<String> {
    let raw = std::fs::read(path).ok()?;
    let head = &raw[..raw.len().min(16 * 1024)];
    let text = String::from_utf8_lossy(head);
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) {
                return Some(v.trim().trim_matches(['<', '>']).to_string());
            }
        }
    }
    None
}

// ---- the requests -----------------------------------------------------------------------

/// What a request is, and what the daemon should do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ack,
    MissingInfo,
    Portal,
    Tenant,
    Automatic,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ack => "acknowledge",
            Kind::MissingInfo => "missing_info",
            Kind::Portal => "redirect_portal",
            Kind::Tenant => "tenant_support",
            Kind::Automatic => "ignore",
        }
    }
    fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "acknowledge" => Kind::Ack,
            "missing_info" => Kind::MissingInfo,
            "redirect_portal" => Kind::Portal,
            "tenant_support" => Kind::Tenant,
            "ignore" => Kind::Automatic,
            _ => bail!("unknown kind {s:?}"),
        })
    }
    fn replies(self) -> bool {
        self != Kind::Automatic
    }
    fn opens_case(self) -> bool {
        matches!(self, Kind::Ack | Kind::MissingInfo)
    }
}

/// One line of the manifest.
struct Entry {
    kind: Kind,
    sender: String,
    message_id: String,
    ip: String,
}

fn read_manifest(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 4 {
                bail!("bad manifest line {l:?}");
            }
            Ok(Entry { kind: Kind::parse(f[0])?, sender: f[1].into(), message_id: f[2].into(), ip: f[3].into() })
        })
        .collect()
}

/// A distinct, valid banned IP for request `i`: the three RFC 5737 ranges first, then RFC 3849.
fn ip_for(i: usize) -> String {
    let nets = ["192.0.2", "198.51.100", "203.0.113"];
    if i < 3 * 254 {
        format!("{}.{}", nets[i % 3], i / 3 + 1)
    } else {
        format!("2001:db8:{:x}::{:x}", i >> 16, (i & 0xffff) + 1)
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (n, c) in data.chunks(3).enumerate() {
        if n > 0 && n % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[(v >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const NDR_511: &str = "550 5.7.511 Access denied, banned sender[{IP}]. To request removal from this list, forward this message to delist@example.test.";

/// Request number `i` of a run: the kind cycles through twenty variants so that any window of
/// the backlog has the same mix (14 acknowledgements, 2 missing information, 2 portal,
/// 2 tenant; of the 20, 2 are automatic mail and get no reply).
fn request(i: usize, tag: &str, senders: usize) -> (Entry, Vec<u8>) {
    let from = sender(tag, i % senders);
    let ip = ip_for(i);
    let mid = format!("req-{i}.{tag}@bench.example.test");
    let ndr = NDR_511.replace("{IP}", &ip);
    let date = "Mon, 23 Nov 2026 08:00:00 +0000";
    let head = |subject: &str, extra: &str, ctype: &str| {
        format!(
            "Return-Path: <{from}>\r\nFrom: Bench Sender {n} <{from}>\r\nTo: delist@example.test\r\nSubject: {subject}\r\n\
             Date: {date}\r\nMessage-ID: <{mid}>\r\nMIME-Version: 1.0\r\n{extra}Content-Type: {ctype}\r\n",
            n = i % senders
        )
    };
    let plain = "text/plain; charset=utf-8";
    let (kind, ip_used, text): (Kind, bool, String) = match i % 20 {
        0 => (Kind::Ack, true, format!("{}\r\nHello,\r\n\r\nOur server is rejected:\r\n\r\n<bob@customer.example>: host mx1.example.test[198.51.100.25] said:\r\n    {ndr}\r\n    (in reply to RCPT TO command)\r\n\r\nWe fixed a compromised account. Please remove us.\r\n\r\nAlice\r\n", head("Delisting request", "", plain))),
        1 => (Kind::Ack, true, format!("{}Content-Transfer-Encoding: 8bit\r\n\r\nBonjour,\r\n\r\nNos messages sont refusés depuis hier. Voici le message d'erreur complet :\r\n\r\n{ndr}\r\n\r\nMerci de bien vouloir nous retirer de la liste.\r\n\r\nCordialement,\r\nJérôme\r\n", head("Demande de retrait de la liste", "", plain))),
        2 => (Kind::Ack, true, format!("{}\r\nGuten Tag,\r\n\r\nunsere E-Mails werden mit folgender Fehlermeldung abgewiesen:\r\n\r\n{ndr}\r\n\r\nBitte entsperren Sie unsere IP-Adresse. Vielen Dank!\r\n\r\nMit freundlichen Grüßen\r\nPetra\r\n", head("Bitte um Entsperrung unserer IP", "", plain))),
        3 => (Kind::Ack, true, format!("{}\r\nBuongiorno,\r\n\r\ni nostri messaggi vengono rifiutati con questo errore:\r\n\r\n{ndr}\r\n\r\nPotete rimuoverci dalla lista? Grazie.\r\n\r\nCordiali saluti,\r\nMarco\r\n", head("Richiesta di rimozione dalla lista", "", plain))),
        4 => {
            let body = format!("ご担当者様\r\n\r\n弊社のメールサーバーからの送信が拒否されています。\r\nエラーメッセージは以下のとおりです。\r\n\r\n{ndr}\r\n\r\nブロックの解除をお願いいたします。\r\n\r\n山田\r\n");
            (Kind::Ack, true, format!("{}Content-Transfer-Encoding: base64\r\n\r\n{}\r\n", head("=?utf-8?b?44OW44Ot44OD44Kv6Kej6Zmk44Gu44GK6aGY44GE?=", "", plain), base64(body.as_bytes())))
        }
        5 => (Kind::Ack, true, format!("{}\r\nPlease see the NDR below.\r\n\r\n-----Original Message-----\r\nFrom: Microsoft Outlook <postmaster@example.test>\r\nSubject: Undeliverable: quarterly report\r\n\r\nDelivery has failed to these recipients or groups:\r\n\r\ncarol@customer.example\r\nYour message couldn't be delivered.\r\n\r\nDiagnostic information for administrators:\r\n\r\nGenerating server: relay1.example.test\r\n\r\ncarol@customer.example\r\nRemote Server returned '{ndr}'\r\n", head("FW: Undeliverable: quarterly report", "", plain))),
        6 => {
            let html = format!("<html><body><p>Hello,</p><p>our mail bounces:</p><blockquote>{ndr}</blockquote><p>Please delist us.</p></body></html>");
            (Kind::Ack, true, format!("{}Content-Transfer-Encoding: base64\r\n\r\n{}\r\n", head("delist please", "", "text/html; charset=utf-8"), base64(html.as_bytes())))
        }
        7 => (Kind::Ack, true, format!("{}\r\n--alt{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi, we get {ndr}\r\nThanks.\r\n--alt{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi, we get {ndr}</p><p>Thanks.</p>\r\n--alt{i}--\r\n", head("Blocked", "", &format!("multipart/alternative; boundary=\"alt{i}\"")))),
        8 => (Kind::Ack, true, format!("{}\r\n--mix{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe bounce is attached. Our IP is {ip}.\r\n--mix{i}\r\nContent-Type: message/rfc822\r\n\r\nFrom: MAILER-DAEMON@relay.example.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nThis is the mail system at host relay.example.test.\r\n\r\n<dave@customer.example>: host mx.example.test[198.51.100.9] said: {ndr}\r\n--mix{i}--\r\n", head("Fwd: Undelivered Mail Returned to Sender", "", &format!("multipart/mixed; boundary=\"mix{i}\"")))),
        9..=13 => (Kind::Ack, true, format!("{}\r\nOur server gets: {ndr}\r\nPlease delist.\r\n", head("please delist", "", plain))),
        14 => (Kind::MissingInfo, false, format!("{}\r\nHello, since yesterday our mail is rejected with 5.7.511. Can you remove us from the list?\r\n", head("blocked", "", plain))),
        15 => (Kind::MissingInfo, false, format!("{}\r\nHi, we are blocked, please unblock us. Thanks.\r\n", head("unblock", "", plain))),
        16 => (Kind::Portal, true, format!("{}\r\nWe get: 550 5.7.606 Access denied, banned sending IP [{ip}]. To request removal from this list please visit https://sender.office.com/ and follow the directions.\r\n", head("blocked IP", "", plain))),
        17 => (Kind::Tenant, false, format!("{}\r\nEvery message bounces with:\r\n\r\nRemote Server returned '550 5.7.705 Access denied, tenant has exceeded threshold'\r\n\r\nCan you unblock us?\r\n", head("All our users blocked", "", plain))),
        18 => (Kind::Automatic, false, format!("{}Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n\r\nI am out of the office until December 1st.\r\n", head("Automatic reply: Out of office", "", plain))),
        _ => {
            let t = format!(
                "Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@relay.example.test>\r\nTo: delist@example.test\r\n\
                 Subject: Undelivered Mail Returned to Sender\r\nDate: {date}\r\nMessage-ID: <{mid}>\r\nAuto-Submitted: auto-replied\r\n\
                 MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"dsn{i}\"\r\n\r\n\
                 --dsn{i}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
                 --dsn{i}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.test\r\n\r\n\
                 Final-Recipient: rfc822; nobody@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n--dsn{i}--\r\n"
            );
            (Kind::Automatic, false, t)
        }
    };
    let entry = Entry { kind, sender: from, message_id: mid, ip: if ip_used && kind == Kind::Ack { ip } else { "-".into() } };
    (entry, text.into_bytes())
}

// ---- fill -------------------------------------------------------------------------------

async fn fill(stack: &Stack, user: &str, tag: &str, count: usize, senders: usize, manifest: &Path) -> Result<()> {
    let mut session = stack.login(user).await?;
    let mut list = String::new();
    let mut replies = 0;
    let mut bytes = 0usize;
    let t0 = Instant::now();
    for i in 0..count {
        let (e, raw) = request(i, tag, senders);
        session.append("INBOX", None, None, &raw).await.with_context(|| format!("APPEND request {i}"))?;
        bytes += raw.len();
        replies += usize::from(e.kind.replies());
        let _ = writeln!(list, "{}\t{}\t{}\t{}", e.kind.as_str(), e.sender, e.message_id, e.ip);
    }
    let secs = t0.elapsed().as_secs_f64();
    session.logout().await?;
    std::fs::write(manifest, list)?;
    eprintln!(
        "fill: {count} requests ({:.1} MB) into {user} by IMAP APPEND on one connection in {secs:.1} s ({:.0}/s); {replies} replies due",
        bytes as f64 / 1e6,
        count as f64 / secs
    );
    println!("{replies}");
    Ok(())
}

// ---- pump -------------------------------------------------------------------------------

/// A fixed reply (about the size of the daemon's acknowledgement), only To and Message-ID vary.
fn fixed_reply(to: &str, n: u32, tag: &str) -> Vec<u8> {
    let mut body = String::new();
    for _ in 0..14 {
        body.push_str("We received your request to remove the IP address from the block list and opened a case.\r\n");
    }
    format!(
        "From: Delist desk <t-{tag}-desk@example.test>\r\nTo: {to}\r\nSubject: Re: your delisting request\r\n\
         Date: Mon, 23 Nov 2026 08:00:01 +0000\r\nMessage-ID: <pump-{n}.{tag}@bench.example.test>\r\n\
         Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
    .into_bytes()
}

async fn pump(stack: &Stack, user: &str, tag: &str, manifest: &Path, connections: usize) -> Result<()> {
    let entries = read_manifest(manifest)?;
    let t0 = Instant::now();
    let mut src = ImapSource::new(stack.imap(user), 10 << 20)?;
    src.connect().await?;
    let pending = src.pending().await?;
    let connector = Arc::new(SmtpConnector::new(stack.smtp(connections))?);

    // SMTP workers take (uid, recipient) jobs and report each uid once its reply is accepted.
    let (job_tx, job_rx) = tokio::sync::mpsc::channel::<(u32, String)>(256);
    let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let mut workers = Vec::new();
    for _ in 0..connections.max(1) {
        let (rx, tx, connector, tag) = (job_rx.clone(), done_tx.clone(), connector.clone(), tag.to_string());
        workers.push(tokio::spawn(async move {
            let mut conn: Option<SmtpConn> = None;
            loop {
                let job = rx.lock().await.recv().await;
                let Some((uid, to)) = job else { break };
                if conn.as_ref().is_none_or(|c| c.is_broken()) {
                    conn = Some(connector.connect().await?);
                }
                let c = conn.as_mut().ok_or_else(|| anyhow!("no SMTP connection"))?;
                c.send(&to, &fixed_reply(&to, uid, &tag)).await?;
                let _ = tx.send(uid);
            }
            if let Some(c) = conn {
                c.quit().await;
            }
            anyhow::Ok(())
        }));
    }

    // The UIDs of a fresh mailbox are 1, 2, ... in APPEND order: the manifest says, without
    // reading the message, who gets a reply.
    let mut fetched_total = 0usize;
    let mut filed_total = 0usize;
    let mut done = Vec::new();
    for batch in pending.chunks(32) {
        for f in src.fetch(batch).await? {
            let SourceKey::Imap { uid, .. } = f.key else { continue };
            fetched_total += 1;
            let e = entries.get(uid as usize - 1).ok_or_else(|| anyhow!("uid {uid} not in the manifest"))?;
            if e.kind.replies() {
                job_tx.send((uid, e.sender.clone())).await?;
            } else {
                done_tx.send(uid)?;
            }
        }
        while let Ok(uid) = done_rx.try_recv() {
            done.push(uid);
        }
        filed_total += done.len();
        src.file(&done, Disposition::Processed).await?;
        done.clear();
    }
    drop(job_tx);
    drop(done_tx);
    while filed_total + done.len() < fetched_total {
        match done_rx.recv().await {
            Some(uid) => done.push(uid),
            None => break,
        }
    }
    for w in workers {
        w.await??;
    }
    while let Ok(uid) = done_rx.try_recv() {
        done.push(uid);
    }
    filed_total += done.len();
    src.file(&done, Disposition::Processed).await?;
    src.logout().await;
    let sent_at = t0.elapsed().as_secs_f64();
    let expect = entries.iter().filter(|e| e.kind.replies()).count();
    let delivered_at = wait_delivered(stack, tag, expect, t0, Duration::from_secs(600))?;
    eprintln!("pump: {filed_total} messages moved, {expect} replies sent in {sent_at:.2} s, all delivered at {delivered_at:.2} s");
    println!("{delivered_at:.3}");
    Ok(())
}

// ---- wait -------------------------------------------------------------------------------

/// The tag's senders' Maildirs (there are at most as many senders as `fill` used).
fn sender_maildirs(stack: &Stack, tag: &str) -> Vec<PathBuf> {
    let base = stack.mail_dir.join("example.test");
    let prefix = format!("t-{tag}-s");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&base)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path().join("Maildir"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Poll the senders' Maildirs until `expect` replies are there; seconds since `t0`.
fn wait_delivered(stack: &Stack, tag: &str, expect: usize, t0: Instant, timeout: Duration) -> Result<f64> {
    loop {
        let n: usize = sender_maildirs(stack, tag).iter().map(|m| count_files(m)).sum();
        if n >= expect {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > timeout {
            bail!("only {n} of {expect} replies delivered after {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn wait(stack: &Stack, tag: &str, expect: usize, since_ns: u128, timeout: Duration) -> Result<()> {
    let already = Duration::from_nanos((now_ns().saturating_sub(since_ns)) as u64);
    let t0 = Instant::now().checked_sub(already).unwrap_or_else(Instant::now);
    let secs = wait_delivered(stack, tag, expect, t0, timeout)?;
    println!("{secs:.3}");
    Ok(())
}

// ---- latency ----------------------------------------------------------------------------

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// From the daemon's JSON log: "reply sent" lines (reply Message-ID → when), and when it
/// started each drain of the mailbox ("messages waiting", a debug line of `delistd::daemon`),
/// in ns since the epoch.
fn daemon_marks(log: &Path) -> Result<(HashMap<String, u128>, Vec<u128>)> {
    let text = std::fs::read_to_string(log)?;
    let mut sent = HashMap::new();
    let mut woke = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(ts) = v["timestamp"].as_str() else { continue };
        let t = ts.parse::<jiff::Timestamp>()?.as_nanosecond() as u128;
        if v["fields"]["message"] == "messages waiting" {
            woke.push(t);
        } else if let ("reply sent", Some(id)) = (v["fields"]["message"].as_str().unwrap_or(""), v["fields"]["reply"].as_str()) {
            sent.insert(id.trim_matches(['<', '>']).to_string(), t);
        }
    }
    woke.sort_unstable();
    Ok((sent, woke))
}

fn summary(label: &str, v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{label} p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(v, 50.0),
        percentile(v, 90.0),
        percentile(v, 99.0),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

async fn latency(stack: &Stack, user: &str, tag: &str, count: usize, daemon_log: &Path, gap: Duration) -> Result<()> {
    let mut session = stack.login(user).await?;
    let to = sender(tag, 0);
    let inbox = stack.maildir(&to);
    // request id → (APPEND done, reply file seen), ns since the epoch
    let mut marks: Vec<(String, u128, u128)> = Vec::with_capacity(count);
    let mut rng = (now_ns() as u64) | 1;
    for i in 0..count {
        // Acknowledgements only (one sender), each with its own IP so each opens a case.
        let (e, raw) = request((i / 14) * 20 + i % 14, tag, 1);
        let before = files_in(&inbox).len();
        session.append("INBOX", None, None, &raw).await?;
        let appended = now_ns();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if files_in(&inbox).len() > before {
                break;
            }
            if Instant::now() > deadline {
                bail!("no reply to request {i} ({}) within 30 s", e.message_id);
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        marks.push((e.message_id, appended, now_ns()));
        // xorshift64: a jitter, not a secret.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(gap + Duration::from_millis(rng % 101)).await;
    }
    session.logout().await?;

    // Which reply answered which request: its In-Reply-To.
    let mut reply_of: HashMap<String, String> = HashMap::new();
    for f in files_in(&inbox) {
        if let (Some(irt), Some(mid)) = (header(&f, "In-Reply-To"), header(&f, "Message-ID")) {
            reply_of.insert(irt, mid);
        }
    }
    // The daemon flushes its log line by line; give it a moment for the last one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, woke) = daemon_marks(daemon_log)?;
    let ms = |a: u128, b: u128| b.saturating_sub(a) as f64 / 1e6;
    let (mut accepted, mut delivered, mut noticed, mut handled) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (req, appended, seen) in &marks {
        delivered.push(ms(*appended, *seen));
        let Some(t) = reply_of.get(req).and_then(|m| sent.get(m)) else { continue };
        accepted.push(ms(*appended, *t));
        // The daemon's first look at the mailbox after the request was in it.
        if let Some(w) = woke.iter().find(|w| **w >= *appended && **w <= *t) {
            noticed.push(ms(*appended, *w));
            handled.push(ms(*w, *t));
        }
    }
    println!("latency: {count} requests one at a time, from the end of each APPEND into the delist mailbox");
    let n_accepted = accepted.len();
    println!("  {}", summary("reply accepted by Postfix:", &mut accepted));
    println!("  {}", summary("reply in the sender's Maildir:", &mut delivered));
    if !noticed.is_empty() {
        println!("  of which:");
        println!("    {}", summary("until the daemon looks (IDLE wake-up or poll):", &mut noticed));
        println!("    {}", summary("daemon, from that look to the reply accepted:", &mut handled));
    }
    if n_accepted != count {
        bail!("only {n_accepted} of {count} replies found in the daemon's log");
    }
    let p50 = percentile(&accepted, 50.0);
    println!("  target p50 < 250 ms (reply accepted): {}", if p50 < 250.0 { "ok" } else { "MISSED" });
    Ok(())
}

// ---- check ------------------------------------------------------------------------------

fn check(stack: &Stack, user: &str, tag: &str, manifest: &Path, db: &Path) -> Result<bool> {
    let entries = read_manifest(manifest)?;
    let n = entries.len();
    let desk = stack.maildir(user);
    let inbox = count_files(&desk);
    let processed = count_files(&desk.join(".Processed"));
    let quarantine = count_files(&desk.join(".Quarantine"));

    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let rows = |sql: &str| -> Result<Vec<(String, i64)>> {
        let mut st = conn.prepare(sql)?;
        let r = st.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?)))?;
        Ok(r.collect::<Result<_, _>>()?)
    };
    let scalar = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };

    // Requests: one messages row each.
    let recorded: HashMap<String, i64> =
        rows("SELECT message_id, count(*) FROM messages GROUP BY message_id")?.into_iter().collect();
    let lost: Vec<&str> =
        entries.iter().filter(|e| !recorded.contains_key(&e.message_id)).map(|e| e.message_id.as_str()).collect();
    let twice: Vec<(String, i64)> = recorded.iter().filter(|(_, c)| **c > 1).map(|(m, c)| (m.clone(), *c)).collect();
    let rows_total = scalar("SELECT count(*) FROM messages")?;
    let quarantined = scalar("SELECT count(*) FROM messages WHERE outcome = 'quarantined'")?;
    // Outcomes agree with what each request is.
    let actions: HashMap<String, String> =
        conn.prepare("SELECT message_id, coalesce(action, '') FROM messages")?
            .query_map([], |r| Ok((r.get::<_, Option<String>>(0)?.unwrap_or_default(), r.get(1)?)))?
            .collect::<Result<_, _>>()?;
    let wrong: Vec<String> = entries
        .iter()
        .filter(|e| actions.get(&e.message_id).is_some_and(|a| a != e.kind.as_str()))
        .map(|e| format!("{} ({} expected, {} recorded)", e.message_id, e.kind.as_str(), actions[&e.message_id]))
        .collect();

    // Cases: one per request that opens one, never two for one IP or one message.
    let cases = scalar("SELECT count(*) FROM cases")?;
    let want_cases = entries.iter().filter(|e| e.kind.opens_case()).count() as i64;
    let double_ip = rows("SELECT ip, count(*) FROM cases WHERE ip IS NOT NULL GROUP BY ip HAVING count(*) > 1")?;
    let double_msg = rows(
        "SELECT m.message_id, count(*) FROM cases c JOIN messages m ON m.id = c.opened_by GROUP BY c.opened_by HAVING count(*) > 1",
    )?;

    // Replies: all sent; each delivered once.
    let outbox_states = rows("SELECT state, count(*) FROM outbox GROUP BY state")?;
    let want_replies = entries.iter().filter(|e| e.kind.replies()).count();
    let mut queued_ids = BTreeMap::new();
    {
        let mut st = conn.prepare("SELECT message_id, state FROM outbox")?;
        for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (m, s) = r?;
            queued_ids.insert(m, s);
        }
    }
    let mut delivered: HashMap<String, usize> = HashMap::new();
    let mut unreadable = 0;
    for dir in sender_maildirs(stack, tag) {
        for f in files_in(&dir) {
            match header(&f, "Message-ID") {
                Some(m) => *delivered.entry(m).or_default() += 1,
                None => unreadable += 1,
            }
        }
    }
    let undelivered: Vec<&String> = queued_ids.keys().filter(|m| !delivered.contains_key(*m)).collect();
    let mut dup_replies: Vec<(&String, usize)> = delivered.iter().filter(|(_, c)| **c > 1).map(|(m, c)| (m, *c)).collect();
    dup_replies.sort();
    let strays = delivered.keys().filter(|m| !queued_ids.contains_key(*m)).count();

    println!("check: {n} requests");
    println!("  mailbox:  INBOX {inbox}, Processed {processed}, Quarantine {quarantine}");
    println!("  messages: {rows_total} rows, {} requests without one (lost), {} with more than one, {quarantined} quarantined, {} with an unexpected action", lost.len(), twice.len(), wrong.len());
    println!("  cases:    {cases} (expected {want_cases}), {} IPs with two cases, {} requests that opened two", double_ip.len(), double_msg.len());
    println!("  outbox:   {} (expected {want_replies}): {}", queued_ids.len(), outbox_states.iter().map(|(s, c)| format!("{s} {c}")).collect::<Vec<_>>().join(", "));
    println!("  replies:  {} distinct delivered, {} not delivered, {} delivered twice or more, {strays} unknown, {unreadable} unreadable", delivered.len(), undelivered.len(), dup_replies.len());
    for (m, c) in &dup_replies {
        println!("    delivered {c}x: <{m}>");
    }
    for m in lost.iter().take(10) {
        println!("    lost: <{m}>");
    }
    for w in wrong.iter().take(10) {
        println!("    unexpected action: {w}");
    }
    for m in undelivered.iter().take(10) {
        println!("    not delivered: <{m}> ({})", queued_ids[*m]);
    }
    let lost_any = !lost.is_empty() || inbox != 0 || processed != n || quarantine != 0 || rows_total != n as i64;
    let doubles = !twice.is_empty() || !double_ip.is_empty() || !double_msg.is_empty() || cases != want_cases;
    let replies_ok = undelivered.is_empty() && queued_ids.len() == want_replies && strays == 0;
    let ok = !lost_any && !doubles && replies_ok && wrong.is_empty();
    println!(
        "  result:   {} lost, {} double cases, {} replies undelivered, {} replies delivered twice: {}",
        lost.len() + (n - processed.min(n)),
        double_ip.len() + double_msg.len() + twice.len(),
        undelivered.len() + want_replies.saturating_sub(queued_ids.len()),
        dup_replies.len(),
        if ok { "OK" } else { "FAILED" }
    );
    Ok(ok)
}

fn write_config(stack: &Stack, user: &str, db: &Path, out: &Path, connections: usize, poll: Option<&str>) -> Result<()> {
    let password = out.with_extension("password");
    std::fs::write(&password, format!("{}\n", stack.scratch_password))?;
    let toml = format!(
        "# Written by examples/bench_mail.rs for the benchmark scripts.\n\
         [intake]\nsource = \"imap\"\n\n\
         [imap]\nhost = \"127.0.0.1\"\nport = {imap}\nsecurity = \"plain\"\nuser = \"{user}\"\npassword_file = \"{pw}\"\n\
         mailbox = \"INBOX\"\nidle = {idle}\npoll_interval = \"{interval}\"\n\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"plain\"\nconnections = {connections}\n\n\
         [store]\ndatabase = \"{db}\"\n\n\
         [replies]\nfrom = \"Delist desk <{user}>\"\nmessage_id_domain = \"bench.example.test\"\n\
         # Thousands of replies go to twenty senders: the loop guard must not stop them.\n\
         max_per_recipient_per_day = 1000000\nmax_per_domain_per_hour = 1000000\n",
        imap = stack.imap_port,
        smtp = stack.smtp_port,
        pw = password.display(),
        db = db.display(),
        idle = poll.is_none(),
        interval = poll.unwrap_or("60s"),
    );
    std::fs::write(out, toml)?;
    Ok(())
}

fn samples(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..20 {
        let (e, raw) = request(1000 + i, "sample", 3);
        std::fs::write(dir.join(format!("{:02}-{}.eml", i, e.kind.as_str())), raw)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_mail: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run = || -> Result<bool> {
        if let Cmd::Samples { dir } = &cli.cmd {
            samples(dir)?;
            return Ok(true);
        }
        let stack = Stack::from_env()?;
        match &cli.cmd {
            Cmd::Fill { user, tag, count, senders, manifest } => rt.block_on(fill(&stack, user, tag, *count, *senders, manifest))?,
            Cmd::Pump { user, tag, manifest, connections } => rt.block_on(pump(&stack, user, tag, manifest, *connections))?,
            Cmd::Wait { tag, expect, since_ns, timeout_s } => wait(&stack, tag, *expect, *since_ns, Duration::from_secs(*timeout_s))?,
            Cmd::Latency { user, tag, count, daemon_log, gap_ms } => {
                rt.block_on(latency(&stack, user, tag, *count, daemon_log, Duration::from_millis(*gap_ms)))?
            }
            Cmd::Check { user, tag, manifest, db } => return check(&stack, user, tag, manifest, db),
            Cmd::Config { user, db, out, connections, poll } => {
                write_config(&stack, user, db, out, *connections, poll.as_deref())?
            }
            Cmd::Samples { .. } => {}
        }
        Ok(true)
    };
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench_mail: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
