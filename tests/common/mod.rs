//! Helpers for the tests that run against the real mail stack of `scripts/mailstack.sh`
//! (Dovecot for IMAP and LMTP, Postfix for SMTP): where the stack is, a small SMTP client
//! that hands messages to Postfix, an IMAP reader for mailboxes, the `delistd` binary run
//! as a subprocess on a config written for the test, and its database.
//!
//! Every test takes mailboxes of its own (`t-<test>-<run>-<role>@example.test`, which
//! Dovecot creates on first use), so tests run in parallel and a rerun against the same
//! stack never sees the mail of an earlier run.
//!
//! The helpers are synchronous (the IMAP reader drives async-imap on a runtime of its own),
//! so a test reads top to bottom: send, run the daemon, read the mailboxes, read the database.

#![allow(dead_code)] // each test binary uses its own part of this

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_imap::Session;
use futures::TryStreamExt;
use mail_parser::MessageParser;
use serde_json::Value;

use delistd::net::{self, MaybeTls};

/// How long a test waits for mail to arrive or for the daemon to get somewhere. Generous:
/// on a loaded 2-core machine Postfix → LMTP takes a few seconds for a burst of messages.
pub const PATIENCE: Duration = Duration::from_secs(30);

// -- the stack --------------------------------------------------------------------------------

/// Where the test mail stack listens, from the `DELISTD_TEST_*` variables that
/// `scripts/test.sh` exports (see `$DELISTD_STACK_DIR/env`).
#[derive(Debug)]
pub struct Stack {
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub smtps_port: u16,
    pub ca_file: PathBuf,
    pub scratch_password: String,
    pub stack_dir: PathBuf,
    /// `scripts/mailstack.sh`, for fault injection.
    pub mailstack: PathBuf,
}

/// The stack, or a failed test that says how to get one. Never a skip: a test that cannot
/// reach its servers has not passed.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let mut missing = Vec::new();
        let mut var = |name: &str| match std::env::var(name) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                missing.push(name.to_string());
                String::new()
            }
        };
        let ports = [
            var("DELISTD_TEST_IMAP_PORT"),
            var("DELISTD_TEST_IMAPS_PORT"),
            var("DELISTD_TEST_SMTP_PORT"),
            var("DELISTD_TEST_SMTPS_PORT"),
        ];
        let ca_file = var("DELISTD_TEST_CA_FILE");
        let scratch_password = var("DELISTD_TEST_SCRATCH_PASSWORD");
        let stack_dir = var("DELISTD_TEST_STACK_DIR");
        let mailstack = var("DELISTD_TEST_MAILSTACK");
        if !missing.is_empty() {
            panic!(
                "{} not set: these tests run against the real Dovecot and Postfix of scripts/mailstack.sh.\n\
                 Run them with `bash scripts/test.sh`, or start a stack and export its variables:\n  \
                 DELISTD_STACK_DIR=/tmp/stack bash scripts/mailstack.sh start\n  \
                 set -a; . /tmp/stack/env; set +a",
                missing.join(", ")
            );
        }
        let port = |i: usize| -> u16 {
            ports[i].parse().unwrap_or_else(|_| panic!("DELISTD_TEST_*_PORT {:?} is not a port number", ports[i]))
        };
        Stack {
            imap_port: port(0),
            imaps_port: port(1),
            smtp_port: port(2),
            smtps_port: port(3),
            ca_file: ca_file.into(),
            scratch_password,
            stack_dir: stack_dir.into(),
            mailstack: mailstack.into(),
        }
    })
}

/// `scripts/mailstack.sh <command>` on the tests' stack (restart-dovecot, stop-postfix, ...).
pub fn mailstack(command: &str) {
    let st = stack();
    let out = Command::new("bash")
        .arg(&st.mailstack)
        .arg(command)
        .env("DELISTD_STACK_DIR", &st.stack_dir)
        .output()
        .unwrap_or_else(|e| panic!("running {} {command}: {e}", st.mailstack.display()));
    assert!(
        out.status.success(),
        "mailstack.sh {command} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// -- mailboxes --------------------------------------------------------------------------------

/// A mailbox on the stack and its password.
#[derive(Debug, Clone)]
pub struct Account {
    pub address: String,
    pub password: String,
}

/// Different for every run of a test binary, so that reruns get fresh mailboxes.
fn run_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        format!("{:x}{:x}", std::process::id(), secs & 0xfffff)
    })
}

impl Account {
    /// `t-<test>-<run>-<role>@example.test`: a scratch mailbox nobody else uses.
    pub fn scratch(test: &str, role: &str) -> Account {
        Account {
            address: format!("t-{test}-{}-{role}@example.test", run_token()),
            password: stack().scratch_password.clone(),
        }
    }
}

// -- SMTP: handing mail to Postfix ------------------------------------------------------------

/// Just enough SMTP (RFC 5321) to hand messages to the stack's Postfix on its plain port,
/// with any envelope sender, including the null one of a bounce. Every reply is checked;
/// a refusal fails the test with the server's words.
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpClient {
    pub fn connect() -> SmtpClient {
        let port = stack().smtp_port;
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("SMTP connect to 127.0.0.1:{port}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = SmtpClient { reader: BufReader::new(s.try_clone().unwrap()), writer: s };
        c.expect(220, "greeting");
        c.command("EHLO tests.example.test", 250);
        c
    }

    fn read_reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap_or_else(|e| panic!("reading an SMTP reply: {e} (so far {text:?})"));
            assert!(n > 0, "the SMTP server closed the connection (so far {text:?})");
            text.push_str(&line);
            // RFC 5321 §4.2.1: "250-" continues, "250 " ends a reply.
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        let code = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, text.trim_end().to_string())
    }

    fn expect(&mut self, want: u16, during: &str) -> String {
        let (code, text) = self.read_reply();
        assert_eq!(code, want, "SMTP {during}: expected {want}, got {text:?}");
        text
    }

    fn command(&mut self, line: &str, want: u16) -> String {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.expect(want, line)
    }

    /// One message; `mail_from` empty is the null sender `<>`.
    pub fn send(&mut self, mail_from: &str, rcpt_to: &str, message: &[u8]) {
        self.command(&format!("MAIL FROM:<{mail_from}>"), 250);
        self.command(&format!("RCPT TO:<{rcpt_to}>"), 250);
        self.command("DATA", 354);
        self.writer.write_all(&smtp_data(message)).unwrap();
        self.command(".", 250);
    }

    pub fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n");
        let _ = self.read_reply();
    }
}

/// Send one message in a session of its own.
pub fn send_mail(mail_from: &str, rcpt_to: &str, message: &[u8]) {
    let mut c = SmtpClient::connect();
    c.send(mail_from, rcpt_to, message);
    c.quit();
}

/// The message as DATA: CRLF line ends, and a dot doubled at the start of a line
/// (RFC 5321 §4.5.2), so the message cannot end the transmission early.
fn smtp_data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40);
    let body = message.strip_suffix(b"\n").unwrap_or(message);
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A plain-text UTF-8 message. `extra` headers come before MIME-Version.
pub fn text_message(from: &str, to: &str, subject: &str, message_id: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\nTo: {to}\nSubject: {subject}\nDate: {}\nMessage-ID: <{message_id}>\n",
        jiff::Timestamp::now().strftime("%a, %d %b %Y %H:%M:%S +0000")
    );
    for (name, value) in extra {
        m.push_str(&format!("{name}: {value}\n"));
    }
    m.push_str("MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n");
    m.push_str(body);
    m.into_bytes()
}

// -- IMAP: reading mailboxes ------------------------------------------------------------------

/// An IMAPS session (verified against the test CA) for reading a mailbox, driven on a
/// runtime of its own so that tests stay synchronous.
pub struct ImapReader {
    rt: tokio::runtime::Runtime,
    session: Session<MaybeTls>,
    account: Account,
}

impl ImapReader {
    pub fn login(account: &Account) -> ImapReader {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let session = rt
            .block_on(Self::open(account))
            .unwrap_or_else(|e| panic!("IMAP login as {} on 127.0.0.1:{}: {e}", account.address, stack().imaps_port));
        ImapReader { rt, session, account: account.clone() }
    }

    async fn open(account: &Account) -> Result<Session<MaybeTls>, String> {
        let st = stack();
        let t = Duration::from_secs(10);
        let tls = net::tls_config(Some(&st.ca_file)).map_err(|e| e.to_string())?;
        let tcp = net::connect_tcp("localhost", st.imaps_port, t).await.map_err(|e| e.to_string())?;
        let tls = net::tls_wrap(tls, "localhost", tcp, t).await.map_err(|e| e.to_string())?;
        let mut client = async_imap::Client::new(MaybeTls::Tls(Box::new(tls)));
        client.read_response().await.map_err(|e| format!("greeting: {e}"))?;
        client.login(&account.address, &account.password).await.map_err(|(e, _)| e.to_string())
    }

    /// Every message in `folder`, oldest first; none if the folder does not exist.
    pub fn messages(&mut self, folder: &str) -> Vec<Vec<u8>> {
        let (session, who) = (&mut self.session, &self.account.address);
        self.rt.block_on(async {
            match session.examine(folder).await {
                Ok(m) if m.exists == 0 => return Vec::new(),
                Ok(_) => {}
                Err(async_imap::error::Error::No(_)) => return Vec::new(),
                Err(e) => panic!("IMAP EXAMINE {folder} as {who}: {e}"),
            }
            let fetches = session.uid_fetch("1:*", "(UID BODY.PEEK[])").await.unwrap_or_else(|e| panic!("IMAP FETCH as {who}: {e}"));
            let mut got: Vec<_> = fetches.try_collect().await.unwrap_or_else(|e| panic!("IMAP FETCH as {who}: {e}"));
            while session.unsolicited_responses.try_recv().is_ok() {}
            got.sort_by_key(|f| f.uid);
            got.iter().map(|f| f.body().unwrap_or_default().to_vec()).collect()
        })
    }

    /// Move every message of `from` into `to` (UID MOVE, RFC 6851): what an operator does to
    /// have the daemon read filed mail again. Returns how many were moved.
    pub fn move_all(&mut self, from: &str, to: &str) -> u32 {
        let (session, who) = (&mut self.session, &self.account.address);
        self.rt.block_on(async {
            let n = match session.select(from).await {
                Ok(m) => m.exists,
                Err(async_imap::error::Error::No(_)) => 0,
                Err(e) => panic!("IMAP SELECT {from} as {who}: {e}"),
            };
            if n > 0 {
                session.uid_mv("1:*", to).await.unwrap_or_else(|e| panic!("IMAP UID MOVE {from} -> {to} as {who}: {e}"));
            }
            session.close().await.unwrap_or_else(|e| panic!("IMAP CLOSE as {who}: {e}"));
            while session.unsolicited_responses.try_recv().is_ok() {}
            n
        })
    }

    /// Messages in `folder` (0 if it does not exist), by STATUS: cheap enough to poll.
    pub fn count(&mut self, folder: &str) -> u32 {
        let (session, who) = (&mut self.session, &self.account.address);
        self.rt.block_on(async {
            let n = match session.status(folder, "(MESSAGES)").await {
                Ok(m) => m.exists,
                Err(async_imap::error::Error::No(_)) => 0,
                Err(e) => panic!("IMAP STATUS {folder} as {who}: {e}"),
            };
            while session.unsolicited_responses.try_recv().is_ok() {}
            n
        })
    }
}

/// Waits (at most [`PATIENCE`]) until `folder` holds `n` messages or more, and returns
/// them all; fails listing what did arrive.
pub fn wait_for_mail(account: &Account, folder: &str, n: usize) -> Vec<Vec<u8>> {
    let mut r = ImapReader::login(account);
    wait_for_count_in(&mut r, folder, n, PATIENCE);
    r.messages(folder)
}

/// Waits until `folder` holds `n` messages or more; fails with a summary of what arrived.
pub fn wait_for_count_in(r: &mut ImapReader, folder: &str, n: usize, within: Duration) {
    let start = Instant::now();
    loop {
        let got = r.count(folder) as usize;
        if got >= n {
            return;
        }
        if start.elapsed() > within {
            let msgs = r.messages(folder);
            panic!(
                "{} {folder}: {} of {n} expected message(s) arrived within {within:?}:\n{}",
                r.account.address,
                msgs.len(),
                summary(&msgs)
            );
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// One line per message (Subject, From, Message-ID), for failure messages.
pub fn summary(msgs: &[Vec<u8>]) -> String {
    msgs.iter()
        .map(|m| {
            format!(
                "  - {:?} from {:?} id {:?}",
                subject(m),
                header(m, "From").unwrap_or_default(),
                header(m, "Message-ID").unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// -- reading messages -------------------------------------------------------------------------

/// Every value of header `name` as written (unfolded, trimmed, not decoded).
pub fn headers(raw: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("").split("\n\n").next().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        out.extend(current.take());
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case(name) {
                current = Some(v.trim().to_string());
            }
        }
    }
    out.extend(current);
    out
}

/// The first value of header `name` as written.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    headers(raw, name).into_iter().next()
}

/// The decoded Subject.
pub fn subject(raw: &[u8]) -> String {
    MessageParser::default().parse(raw).and_then(|m| m.subject().map(str::to_string)).unwrap_or_default()
}

/// The decoded text of the first text part.
pub fn body_text(raw: &[u8]) -> String {
    MessageParser::default().parse(raw).and_then(|m| m.body_text(0).map(|t| t.into_owned())).unwrap_or_default()
}

// -- the daemon -------------------------------------------------------------------------------

/// How the daemon's config is written.
#[derive(Debug, Clone)]
pub struct Options {
    /// `tls` (IMAPS port) or `starttls` (plain IMAP port).
    pub imap_security: &'static str,
    /// Trust the test CA (else only the public roots: the handshake must fail).
    pub imap_ca_file: bool,
    /// The IMAP password written to the password file; `None`: the right one.
    pub imap_password: Option<String>,
    /// `starttls` on the SMTP port, or `tls` (implicit, with AUTH) on the SMTPS port.
    pub smtp_security: &'static str,
    pub max_message_bytes: Option<usize>,
    pub max_per_recipient_per_day: u32,
    /// `smtp.connections`: replies in flight at once.
    pub smtp_connections: usize,
    /// `imap.poll_interval`: the longest IDLE before the daemon looks again by itself.
    pub poll_interval: &'static str,
    /// `replies.max_per_domain_per_hour`: every test sender shares the stack's domain.
    pub max_per_domain_per_hour: u32,
    /// `auth.trusted_authserv_id`: whose Authentication-Results the daemon believes.
    pub trusted_authserv_id: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            imap_security: "tls",
            imap_ca_file: true,
            imap_password: None,
            smtp_security: "starttls",
            max_message_bytes: None,
            max_per_recipient_per_day: 20,
            smtp_connections: 2,
            poll_interval: "5s",
            max_per_domain_per_hour: 100_000,
            trusted_authserv_id: None,
        }
    }
}

/// Portal and support links set in every test config, so tests see the config in replies.
pub const PORTAL_URL: &str = "https://portal.example.test/delist";
pub const SUPPORT_URL: &str = "https://support.example.test/tenant";

/// The `delistd` binary set up for one test: a temporary directory with its config, the
/// password file and the database, reading a delist mailbox of its own.
pub struct Delistd {
    dir: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
    /// The mailbox the daemon reads (and the From of its replies).
    pub delist: Account,
    test: String,
    runs: AtomicUsize,
}

/// What a finished `delistd` command left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Delistd {
    pub fn new(test: &str) -> Delistd {
        Delistd::with(test, Options::default())
    }

    pub fn with(test: &str, o: Options) -> Delistd {
        let st = stack();
        let dir = tempfile::Builder::new().prefix(&format!("delistd-{test}-")).tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let delist = Account::scratch(test, "delist");
        let password = o.imap_password.clone().unwrap_or_else(|| delist.password.clone());
        fs::write(root.join("imap-password"), format!("{password}\n")).unwrap();
        fs::write(root.join("smtp-password"), format!("{}\n", delist.password)).unwrap();
        let imap_port = if o.imap_security == "tls" { st.imaps_port } else { st.imap_port };
        let imap_ca = if o.imap_ca_file { format!("ca_file = {:?}\n", st.ca_file) } else { String::new() };
        let smtp = match o.smtp_security {
            "tls" => format!(
                "port = {}\nsecurity = \"tls\"\nuser = {:?}\npassword_file = \"smtp-password\"\n",
                st.smtps_port, delist.address
            ),
            _ => format!("port = {}\nsecurity = \"starttls\"\n", st.smtp_port),
        };
        let limits = o.max_message_bytes.map(|n| format!("\n[limits]\nmax_message_bytes = {n}\n")).unwrap_or_default();
        let config = format!(
            "# Written by tests/common for the test {test:?}.\n\
             [intake]\nsource = \"imap\"\n\n\
             [imap]\nhost = \"localhost\"\nport = {imap_port}\nsecurity = {:?}\n{imap_ca}\
             user = {:?}\npassword_file = \"imap-password\"\npoll_interval = {:?}\n\n\
             [smtp]\nhost = \"localhost\"\n{smtp}ca_file = {:?}\nconnections = {}\n\n\
             [store]\ndatabase = \"delistd.sqlite\"\n\n\
             [replies]\nfrom = \"Delist desk <{}>\"\nportal_url = {PORTAL_URL:?}\nsupport_url = {SUPPORT_URL:?}\n\
             max_per_recipient_per_day = {}\nmax_per_domain_per_hour = {}\n{limits}{auth}",
            o.imap_security, delist.address, o.poll_interval, st.ca_file, o.smtp_connections, delist.address, o.max_per_recipient_per_day,
            o.max_per_domain_per_hour,
            auth = o.trusted_authserv_id.map(|id| format!("\n[auth]\ntrusted_authserv_id = {id:?}\n")).unwrap_or_default(),
        );
        let config_path = root.join("delistd.toml");
        fs::write(&config_path, config).unwrap();
        Delistd {
            db: root.join("delistd.sqlite"),
            config: config_path,
            root,
            dir: Some(dir),
            delist,
            test: test.to_string(),
            runs: AtomicUsize::new(0),
        }
    }

    /// A scratch mailbox of this test (a sender, usually).
    pub fn account(&self, role: &str) -> Account {
        Account::scratch(&self.test, role)
    }

    /// `delistd ARGS` with a clean environment for it and uncoloured logs.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_delistd"));
        c.current_dir(&self.root)
            .env_remove("DELISTD_CONFIG")
            .env_remove("DELISTD_DB")
            .env_remove("NOTIFY_SOCKET")
            .env("DELISTD_LOG", "info,delistd=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    fn log_file(&self, what: &str) -> PathBuf {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        self.root.join(format!("{n:02}-{what}.log"))
    }

    /// `delistd run --once`, bounded to 60 s.
    pub fn run_once(&self) -> Finished {
        let log = self.log_file("once");
        let out = self.log_file("once-stdout");
        let mut child = self
            .command()
            .args(["run", "--once", "--config"])
            .arg(&self.config)
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("delistd run --once did not finish within 60 s:\n{}", fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Finished {
            status,
            stdout: fs::read_to_string(&out).unwrap_or_default(),
            stderr: fs::read_to_string(&log).unwrap_or_default(),
        }
    }

    /// `delistd run --once`, which must succeed.
    pub fn run_once_ok(&self) -> Finished {
        let f = self.run_once();
        assert!(f.status.success(), "delistd run --once failed ({}):\n{}", f.status, f.stderr);
        f
    }

    /// `delistd run` (serve mode) in the background.
    pub fn serve(&self) -> Serving {
        self.serve_with(&[])
    }

    /// `delistd run` in the background with more environment variables (test hooks).
    pub fn serve_with(&self, env: &[(&str, &std::ffi::OsStr)]) -> Serving {
        let log = self.log_file("serve");
        let child = self
            .command()
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Serving { child: Some(child), log }
    }

    /// `delistd run` (serve mode) in the background, with these environment variables added
    /// (e.g. `DELISTD_LOG=trace`).
    pub fn serve_env(&self, env: &[(&str, &str)]) -> Serving {
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))).collect();
        self.serve_with(&env)
    }

    /// A staff command: `delistd cases --config .. --db .. ARGS`, which must succeed.
    pub fn cases_cmd(&self, args: &[&str]) -> String {
        let out = self.command().arg("cases").arg("--config").arg(&self.config).arg("--db").arg(&self.db).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "delistd cases {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every case, as `cases list --json` gives them.
    pub fn cases(&self) -> Vec<Value> {
        let out = self.cases_cmd(&["list", "--state", "all", "--limit", "0", "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cases list --json: {e}:\n{out}"))
    }

    /// One case with its history, messages and replies (`cases show --json`).
    pub fn show(&self, case_ref: &str) -> Value {
        let out = self.cases_cmd(&["show", case_ref, "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cases show --json: {e}:\n{out}"))
    }

    /// The database, for questions the CLI does not answer. Safe beside a running daemon
    /// (WAL); never written by tests.
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.db.display()));
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// A single integer from the database (`SELECT count(*) ...`).
    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Like [`Delistd::count`], but `None` while the database or its tables do not exist
    /// yet (the daemon creates them when it starts).
    pub fn try_count(&self, sql: &str) -> Option<i64> {
        if !self.db.exists() {
            return None;
        }
        self.db().query_row(sql, [], |r| r.get(0)).ok()
    }

    /// Rows of text columns, for assertions and failure messages.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let db = self.db();
        let mut st = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => "NULL".to_string(),
                            rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                            rusqlite::types::ValueRef::Real(v) => v.to_string(),
                            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                                String::from_utf8_lossy(t).into_owned()
                            }
                        })
                    })
                    .collect::<Result<Vec<String>, rusqlite::Error>>()
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.map(|r| r.unwrap()).collect()
    }
}

impl Drop for Delistd {
    /// A failed test keeps its directory (config, database, daemon logs) and says where.
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test {:?} failed: its config, database and daemon logs are kept in {}", self.test, dir.keep().display());
            }
        }
    }
}

/// A `delistd run` in serve mode. Dropping it kills the process if it still runs.
pub struct Serving {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Serving {
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Fails if the daemon exited.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Some(s) = c.try_wait().unwrap() {
                panic!("delistd exited early ({s}):\n{}", self.log_text());
            }
        }
    }

    /// Waits (at most `within`) until the log has `needle`.
    pub fn wait_for_log(&mut self, needle: &str, within: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            self.assert_running();
            assert!(start.elapsed() < within, "delistd did not log {needle:?} within {within:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; the daemon must exit with 0 within 5 s. Returns its log.
    pub fn terminate(mut self) -> String {
        let mut child = self.child.take().unwrap();
        if let Some(s) = child.try_wait().unwrap() {
            panic!("delistd had already exited ({s}) before SIGTERM:\n{}", self.log_text());
        }
        let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -TERM {} failed", child.id());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("delistd did not exit within 5 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        assert!(status.success(), "delistd exited with {status} after SIGTERM:\n{log}");
        log
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
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

/// Polls `done` until it holds (at most `within`); fails with `what()` otherwise.
pub fn wait_until(within: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > within {
            panic!("waited {within:?} in vain: {}", what());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The text of a file, or nothing.
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}
