//! `delistd check-config`: validate the file, then check what `run` would trip over
//! (templates, links, the database directory, password files), and print a summary an
//! operator can read. With `--connect`, log in to IMAP and SMTP too (no mail is sent).
//!
//! The summary is a list of sections, each written by one small function below
//! (`intake`, `smtp`, `store`, ...): a new config section adds one function and one line
//! in [`summarise`].

use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Exit;
use crate::config::{Config, ConfigError, Intake, Secret, SecretOrigin, Secrets, Security};
use crate::reply::render::Templates;

/// What `check-config` was asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Do not read the passwords (`--no-secrets`): check a config before its credentials exist.
    pub no_secrets: bool,
    /// Log in to the IMAP and SMTP servers (`--connect`).
    pub connect: bool,
}

/// The summary being written, and what was found wrong on the way.
#[derive(Debug, Default)]
pub struct Summary {
    sections: Vec<(&'static str, Vec<String>)>,
    /// `run` would fail on these: exit 78.
    pub problems: Vec<String>,
    /// `run` would work, but an operator should look (a password file others can read).
    pub warnings: Vec<String>,
}

impl Summary {
    /// Start a section; the lines that follow belong to it.
    pub fn section(&mut self, title: &'static str) -> &mut Vec<String> {
        self.sections.push((title, Vec::new()));
        let last = self.sections.len() - 1;
        &mut self.sections[last].1
    }

    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let width = self.sections.iter().map(|(t, _)| t.len()).max().unwrap_or(0) + 2;
        for (title, lines) in &self.sections {
            for (i, line) in lines.iter().enumerate() {
                let head = if i == 0 { *title } else { "" };
                writeln!(out, "{head:width$}{line}")?;
            }
        }
        Ok(())
    }
}

/// Run the check. The summary goes to `out`, problems to `err`.
pub fn run(path: &Path, opts: CheckOptions, out: &mut impl Write, err: &mut impl Write) -> Exit {
    let secrets = if opts.no_secrets { Secrets::Skip } else { Secrets::Read };
    let cfg = match Config::load_with(path, secrets) {
        Ok(c) => c,
        Err(e @ ConfigError::Read { .. }) => {
            let _ = writeln!(err, "delistd: {e}");
            return Exit::NoInput;
        }
        Err(e) => {
            let _ = writeln!(err, "delistd: {e}");
            if opts.no_secrets {
                let _ = writeln!(err, "(passwords were not read: --no-secrets)");
            }
            return Exit::Config;
        }
    };
    let mut s = summarise(&cfg, opts);
    let mut exit = Exit::Ok;
    if opts.connect && s.problems.is_empty() {
        exit = connect(&cfg, &mut s);
    }
    let verdict = if !s.problems.is_empty() {
        "NOT ready: `delistd run` would fail"
    } else if exit != Exit::Ok {
        "valid, but a server check failed"
    } else {
        "valid"
    };
    let _ = writeln!(out, "{}: {verdict}\n", path.display());
    let _ = s.write(out);
    for w in &s.warnings {
        let _ = writeln!(err, "warning: {w}");
    }
    for p in &s.problems {
        let _ = writeln!(err, "problem: {p}");
    }
    if !s.problems.is_empty() {
        return Exit::Config;
    }
    exit
}

/// Every section of the summary, in the order data flows through the daemon.
pub fn summarise(c: &Config, opts: CheckOptions) -> Summary {
    let mut s = Summary::default();
    intake(c, &mut s);
    smtp(c, &mut s);
    store(c, &mut s);
    replies(c, &mut s);
    templates(c, &mut s);
    retention(c, &mut s);
    limits(c, &mut s);
    sender_auth(c, &mut s);
    blocklist(c, &mut s);
    escalation(c, &mut s);
    metrics(c, &mut s);
    web(c, &mut s);
    secrets(c, opts, &mut s);
    s
}

fn web(c: &Config, s: &mut Summary) {
    let lines = s.section("Web desk");
    let Some(w) = &c.web else {
        lines.push("not served by `run` (no [web]); `delistd web` serves it alone".into());
        return;
    };
    let scheme = if w.tls_cert.is_some() { "https" } else { "http" };
    lines.push(format!("{scheme}://{}/ served by `delistd run`", w.listen));
    if let Some(u) = &w.public_url {
        lines.push(format!("staff reach it at {u}"));
    }
    lines.push(match &w.proxy_user_header {
        Some(h) => format!("proxy mode: staff name from {h} on connections from {}", w.trusted_proxies.join(", ")),
        None => "login with a staff account (delistd staff add)".into(),
    });
}

/// An OAuth2 login: the mechanism and the token command (never a token).
fn oauth_line(o: &crate::config::OAuth) -> String {
    let mech = match o.mechanism {
        crate::config::OAuthMechanism::Xoauth2 => "XOAUTH2",
        crate::config::OAuthMechanism::Oauthbearer => "OAUTHBEARER",
    };
    format!(
        "OAuth2 {mech}, token from {:?} (used {} unless it says expires_in)",
        o.token_command.join(" "),
        human(o.token_lifetime)
    )
}

fn sender_auth(c: &Config, s: &mut Summary) {
    let lines = s.section("Sender auth");
    lines.push(match &c.auth.trusted_authserv_id {
        Some(id) => format!(
            "Authentication-Results from {id:?} are believed; a request whose SPF, DKIM and DMARC all fail gets its case but no automatic reply"
        ),
        None => "not checked ([auth] trusted_authserv_id is not set): every request is answered, even one whose sender may be forged".into(),
    });
}

fn blocklist(c: &Config, s: &mut Summary) {
    let lines = s.section("Blocklist");
    let Some(b) = &c.blocklist else {
        lines.push("not configured: nothing is looked up, every complete request waits for staff".into());
        return;
    };
    if !b.dnsbl_zones.is_empty() {
        let servers = if b.nameservers.is_empty() {
            "the system resolver".to_string()
        } else {
            b.nameservers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        lines.push(format!("DNSBL zones {} via {servers}, timeout {}", b.dnsbl_zones.join(", "), human(b.timeout)));
    }
    if let Some(f) = &b.cidr_file {
        lines.push(format!("CIDR table {} (read again when it changes)", f.display()));
    }
    lines.push(if b.auto_resolve {
        format!("open cases re-checked every {}; resolved as delisted when their IP leaves the list", human(b.recheck_interval))
    } else {
        "open cases are not re-checked (auto_resolve = false)".into()
    });
    match &b.delist_command {
        Some(argv) => lines.push(format!(
            "delist command {:?}{}",
            argv.join(" "),
            if b.auto_delist_first { ", run at once for an IP's first request" } else { "" }
        )),
        None => lines.push("no delist command".into()),
    }
}

fn escalation(c: &Config, s: &mut Summary) {
    let lines = s.section("Escalation");
    let Some(e) = &c.escalation else {
        lines.push("not configured: staff get no warning mail".into());
        return;
    };
    lines.push(format!("warnings to {}", e.notify.join(", ")));
    lines.push(format!("due soon {} before the deadline, then overdue; digest daily at {}", human(e.warn_before), e.digest_at));
    if let Some((from, to)) = &e.quiet_hours {
        lines.push(format!("quiet from {from} to {to}"));
    }
}

fn metrics(c: &Config, s: &mut Summary) {
    let lines = s.section("Metrics");
    lines.push(match &c.metrics {
        Some(m) => format!("http://{}/metrics, /healthz, /readyz (no login)", m.listen),
        None => "not served (no [metrics] listen)".into(),
    });
}

fn security(sec: Security, tls_name: &str, ca: Option<&Path>) -> String {
    let ca = match ca {
        Some(p) => format!("CA file {} and the system's", p.display()),
        None => "the system's and the public CAs".into(),
    };
    match sec {
        Security::Tls => format!("implicit TLS, certificate for {tls_name:?} from {ca}"),
        Security::Starttls => format!("STARTTLS required, certificate for {tls_name:?} from {ca}"),
        Security::Plain => "no TLS (plain; loopback only)".into(),
    }
}

fn intake(c: &Config, s: &mut Summary) {
    let lines = s.section("Intake");
    match &c.intake {
        Intake::Imap(i) => {
            lines.push(format!("IMAP {}:{}, {}", i.host, i.port, security(i.security, &i.tls_name, i.ca_file.as_deref())));
            match &i.oauth {
                Some(o) => lines.push(format!("login {}, {}", i.user, oauth_line(o))),
                None => lines.push(format!("login {}, password {}", i.user, secret_source(&i.password))),
            }
            lines.push(format!(
                "reads {:?}; handled mail to {:?}, mail it could not handle to {:?}",
                i.mailbox, i.processed_folder, i.quarantine_folder
            ));
            lines.push(if i.idle {
                format!("new mail: IDLE when the server offers it (re-checked every {}), else polled", human(i.poll_interval))
            } else {
                format!("new mail: polled every {} (IDLE off)", human(i.poll_interval))
            });
        }
        Intake::Maildir(m) => {
            lines.push(format!("Maildir {}, polled every {}", m.path.display(), human(m.poll_interval)));
            if !m.path.join("new").is_dir() {
                s.problems.push(format!("maildir.path: {} has no new/ folder (not a Maildir, or not readable)", m.path.display()));
            }
        }
    }
}

fn smtp(c: &Config, s: &mut Summary) {
    let lines = s.section("Replies out");
    match (&c.smtp, &c.reply_dir) {
        (Some(m), dir) => {
            lines.push(format!("SMTP {}:{}, {}", m.host, m.port, security(m.security, &m.tls_name, m.ca_file.as_deref())));
            lines.push(match (&m.auth, &m.oauth) {
                (_, Some((user, o))) => format!("AUTH as {user}, {}", oauth_line(o)),
                (Some((user, pw)), None) => format!("AUTH as {user}, password {}", secret_source(pw)),
                (None, None) => "no AUTH (a relay that trusts this host)".into(),
            });
            lines.push(format!("{} connection(s) at once; empty envelope sender (RFC 3834 §4)", m.connections));
            if let Some(d) = dir {
                lines.push(format!("(reply_dir {} is ignored while a host is set)", d.display()));
            }
        }
        (None, Some(d)) => {
            lines.push(format!("written as .eml files to {} (nothing is sent)", d.display()));
            check_writable_dir("smtp.reply_dir", d, true, s);
        }
        (None, None) => lines.push("nowhere (no [smtp] host, no reply_dir)".into()),
    }
}

fn store(c: &Config, s: &mut Summary) {
    let db = &c.store.database;
    let lines = s.section("Database");
    lines.push(format!("{}{}", db.display(), if db.exists() { "" } else { " (created on first run)" }));
    lines.push(format!("SLA: staff answer within {} hours", c.store.sla.as_secs() / 3600));
    match db.parent() {
        // The shipped unit's StateDirectory=delistd: systemd creates it, owned by the
        // service's user, when the service starts (the Debian package creates it too).
        Some(dir) if dir == Path::new(STATE_DIRECTORY) && !dir.exists() => {
            s.warnings.push(format!("store.database: {STATE_DIRECTORY} does not exist yet; systemd creates it (StateDirectory=delistd) when the service starts"));
        }
        Some(dir) if !dir.as_os_str().is_empty() => check_writable_dir("store.database", dir, false, s),
        _ => {}
    }
    if db.is_dir() {
        s.problems.push(format!("store.database: {} is a directory; name the database file in it", db.display()));
    }
}

/// Where the shipped unit keeps its state (`StateDirectory=delistd`).
const STATE_DIRECTORY: &str = "/var/lib/delistd";

fn replies(c: &Config, s: &mut Summary) {
    let r = &c.replies;
    let lines = s.section("Replies");
    lines.push(format!("From: {}; Message-IDs <…@{}>", r.from, r.message_id_domain));
    lines.push(format!("portal link {}; support link {}", r.portal_url, r.support_url));
    lines.push(format!("at most {} automatic replies to one address per 24 hours", r.max_per_recipient_per_day));
}

fn templates(c: &Config, s: &mut Summary) {
    let embedded = Templates::embedded();
    let total = embedded.count();
    let mut lines = Vec::new();
    match &c.replies.templates_dir {
        None => lines.push(format!("built in ({total}: every reply kind in every language)")),
        Some(dir) => {
            let (good, errors) = Templates::check_dir(dir);
            lines.push(format!("{}: {} file(s) override the built-in ones", dir.display(), good.len() + errors.len()));
            for p in &good {
                lines.push(format!("  {}", p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
            }
            for e in errors {
                s.problems.push(format!("replies.templates_dir: {e}"));
            }
        }
    }
    // Every kind × language is compiled and rendered, with sample values and with none,
    // by the loader (`Templates::build`): reaching here with no problem means all rendered.
    let failed = s.problems.iter().any(|p| p.starts_with("replies.templates_dir"));
    lines.push(if failed {
        "rendering with sample values: FAILED (see the problems below)".into()
    } else {
        format!("all {total} rendered with sample values: ok")
    });
    s.section("Templates").extend(lines);
}

fn retention(c: &Config, s: &mut Summary) {
    let r = c.retention;
    let lines = s.section("Retention");
    lines.push(format!("raw messages dropped {} days after their case closed (evidence and history kept)", r.raw_days));
    lines.push(match r.case_days {
        Some(d) => format!("closed cases deleted {d} days after closing, with their messages and replies"),
        None => "closed cases kept (case_days not set)".into(),
    });
}

fn limits(c: &Config, s: &mut Summary) {
    s.section("Limits").push(format!("messages read up to {} bytes ({} MiB)", c.max_message_bytes, c.max_message_bytes / (1024 * 1024)));
}

/// Each password: where it comes from, whether it is there, and who can read it.
fn secrets(c: &Config, opts: CheckOptions, s: &mut Summary) {
    let mut found: Vec<(&str, &Secret)> = Vec::new();
    if let Intake::Imap(i) = &c.intake {
        found.push(("imap", &i.password));
    }
    if let Some((_, pw)) = c.smtp.as_ref().and_then(|m| m.auth.as_ref()) {
        found.push(("smtp", pw));
    }
    let mut lines = Vec::new();
    if found.is_empty() {
        lines.push("none needed".into());
    }
    for (section, secret) in found {
        let (what, path) = match secret.origin.as_deref() {
            Some(SecretOrigin::File(p)) => (format!("file {}", p.display()), Some(p.clone())),
            Some(SecretOrigin::Credential(name)) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
                (format!("systemd credential {name:?}"), dir.map(|d| d.join(name)))
            }
            None => (secret.source.clone(), None),
        };
        let state = match &path {
            None => "present only inside the service ($CREDENTIALS_DIRECTORY not set here; LoadCredential= in the unit)".to_string(),
            Some(p) => match std::fs::metadata(p) {
                Ok(m) => {
                    let mode = m.permissions().mode();
                    if mode & 0o077 != 0 {
                        s.warnings.push(format!(
                            "{section}: {} is readable by {} (mode {:o}): chmod 600 it",
                            p.display(),
                            if mode & 0o007 != 0 { "everyone" } else { "its group" },
                            mode & 0o777
                        ));
                    }
                    if secret.is_read() { "present, read".into() } else { "present (not read: --no-secrets)".into() }
                }
                Err(_) if opts.no_secrets => "absent (allowed with --no-secrets)".into(),
                Err(e) => {
                    s.problems.push(format!("{section}: {}: {e}", p.display()));
                    "absent".into()
                }
            },
        };
        lines.push(format!("{section}: {what}: {state}"));
    }
    s.section("Secrets").extend(lines);
}

fn secret_source(secret: &Secret) -> String {
    match secret.origin.as_deref() {
        Some(SecretOrigin::File(p)) => format!("from file {}", p.display()),
        Some(SecretOrigin::Credential(n)) => format!("from systemd credential {n:?}"),
        None => format!("from {}", secret.source),
    }
}

/// The folder exists, is a folder, and this user can create a file in it (tried, then
/// removed: permission bits do not tell about ACLs, read-only mounts or root).
fn check_writable_dir(key: &str, dir: &Path, may_create: bool, s: &mut Summary) {
    if !dir.exists() {
        if !may_create {
            s.problems.push(format!("{key}: directory {} does not exist (create it, owned by the service's user)", dir.display()));
        }
        return;
    }
    if !dir.is_dir() {
        s.problems.push(format!("{key}: {} is not a directory", dir.display()));
        return;
    }
    let probe = dir.join(format!(".delistd-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => s.problems.push(format!("{key}: cannot write in {}: {e}", dir.display())),
    }
}

/// `30s`, `5 min`, `2 h`, `100 ms`: what a person writes.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs % 60 == 0 && secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

// ---- --connect --------------------------------------------------------------------------

/// Log in to each server the config names, reporting each step. Nothing is sent, no
/// message is touched (the IMAP login creates the two folders if they are missing, as `run` does).
fn connect(c: &Config, s: &mut Summary) -> Exit {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            s.problems.push(format!("cannot start the runtime: {e}"));
            return Exit::Failure;
        }
    };
    let mut exit = Exit::Ok;
    let mut lines = Vec::new();
    if let Intake::Imap(i) = &c.intake {
        let step = match i.security {
            Security::Tls => "TCP, TLS handshake, greeting, LOGIN, LIST, SELECT",
            Security::Starttls => "TCP, greeting, STARTTLS, TLS handshake, LOGIN, LIST, SELECT",
            Security::Plain => "TCP, greeting, LOGIN, LIST, SELECT",
        };
        let result = rt.block_on(async {
            let mut src = crate::intake::imap::ImapSource::new(i.clone(), c.max_message_bytes)?;
            src.connect().await?;
            let info = (src.uidvalidity(), src.supports_idle());
            let waiting = src.pending().await.map(|p| p.len());
            src.logout().await;
            Ok::<_, crate::intake::imap::ImapError>((info, waiting))
        });
        match result {
            Ok(((uidvalidity, idle), waiting)) => {
                lines.push(format!("IMAP {}:{}: {step}: ok", i.host, i.port));
                lines.push(format!(
                    "  {:?} selected (UIDVALIDITY {uidvalidity}), {}; IDLE {}",
                    i.mailbox,
                    waiting.map_or_else(|e| format!("search failed: {e}"), |n| format!("{n} message(s) waiting")),
                    if idle { "in use" } else { "not used" }
                ));
            }
            Err(e) => {
                lines.push(format!("IMAP {}:{}: FAILED: {e}", i.host, i.port));
                exit = match e {
                    crate::intake::imap::ImapError::Login { .. } => Exit::NoPerm,
                    _ => Exit::TempFail,
                };
            }
        }
    }
    if let Some(m) = &c.smtp {
        let step = match (m.security, m.auth.is_some()) {
            (Security::Tls, true) => "TCP, TLS handshake, greeting, EHLO, AUTH",
            (Security::Tls, false) => "TCP, TLS handshake, greeting, EHLO",
            (Security::Starttls, true) => "TCP, greeting, EHLO, STARTTLS, EHLO, AUTH",
            (Security::Starttls, false) => "TCP, greeting, EHLO, STARTTLS, EHLO",
            (Security::Plain, true) => "TCP, greeting, EHLO, AUTH",
            (Security::Plain, false) => "TCP, greeting, EHLO",
        };
        let result = rt.block_on(async {
            let conn = crate::reply::send::SmtpConnector::new(m.clone())?.connect().await?;
            conn.quit().await;
            Ok::<_, crate::reply::send::SendError>(())
        });
        match result {
            Ok(()) => lines.push(format!("SMTP {}:{}: {step}, QUIT: ok (no mail sent)", m.host, m.port)),
            Err(e) => {
                lines.push(format!("SMTP {}:{}: FAILED: {e}", m.host, m.port));
                if exit == Exit::Ok {
                    let refused = e.is_permanent()
                        || matches!(e, crate::reply::send::SendError::Login(_) | crate::reply::send::SendError::TokenRefused(_));
                    exit = if refused { Exit::NoPerm } else { Exit::TempFail };
                }
            }
        }
    }
    if let Some(b) = &c.blocklist {
        // The daemon's own start-up check: the RFC 5782 test entries of every zone, the CIDR file.
        match rt.block_on(crate::blocklist::Blocklist::start(b)) {
            Ok(list) => lines.push(format!("blocklist: ok ({})", list.describe())),
            Err(e) if e.is_temporary() => {
                // It may answer later: `run` would exit 75 and systemd try again.
                lines.push(format!("blocklist: FAILED for now: {e}"));
                s.warnings.push(format!("blocklist: {e}"));
                if exit == Exit::Ok {
                    exit = Exit::TempFail;
                }
            }
            Err(e) => {
                // A zone that answers wrongly will not get better: `run` refuses it (exit 78).
                lines.push(format!("blocklist: FAILED: {e}"));
                s.problems.push(format!("blocklist: {e}"));
            }
        }
    }
    if lines.is_empty() {
        lines.push("no server to connect to".into());
    }
    s.section("Connect").extend(lines);
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str, opts: CheckOptions) -> (Exit, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delistd.toml");
        std::fs::write(&path, src).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let exit = run(&path, opts, &mut out, &mut err);
        (exit, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn the_example_config_passes_without_secrets_and_says_what_it_does() {
        let src = include_str!("../../examples/delistd.toml").replace("/var/lib/delistd/", "");
        let (exit, out, err) = check(&src, CheckOptions { no_secrets: true, connect: false });
        assert_eq!(exit, Exit::Ok, "{out}\n{err}");
        let all = format!("all {} rendered", crate::decide::ReplyKind::ALL.len() * crate::types::Lang::ALL.len());
        for want in ["IMAP imap.example.net:993, implicit TLS", "IDLE", "STARTTLS required", "48 hours", "\"Processed\"", "systemd credential \"imap-password\"", &all] {
            assert!(out.contains(want), "{want:?} missing from:\n{out}");
        }
        assert!(!out.contains("172800"), "{out}");
    }

    #[test]
    fn bad_url_missing_database_dir_and_open_password_file_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = format!(
            "[imap]\nhost = \"imap.example.net\"\nuser = \"d\"\npassword_file = {pw:?}\n[smtp]\nreply_dir = \"out\"\n\
             [store]\ndatabase = \"/nonexistent/dir/db.sqlite\"\n[replies]\nfrom = \"d@example.net\"\nportal_url = \"sender dot office\"\n"
        );
        let (exit, _, err) = check(&src, CheckOptions::default());
        assert_eq!(exit, Exit::Config, "{err}");
        assert!(err.contains("portal_url"), "{err}");
        let src = src.replace("portal_url = \"sender dot office\"\n", "");
        let (exit, _, err) = check(&src, CheckOptions::default());
        assert_eq!(exit, Exit::Config, "{err}");
        assert!(err.contains("/nonexistent/dir does not exist"), "{err}");
        assert!(err.contains("readable by everyone"), "{err}");
    }

    #[test]
    fn a_misspelt_or_broken_template_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("templates");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("acknowledge.en.txt"), "Subject: hi\n\nDear {{ sendr_name }}\n").unwrap();
        std::fs::write(t.join("acknowlege.fr.txt"), "Subject: hi\n\nBonjour\n").unwrap();
        let src = format!(
            "[intake]\nsource = \"maildir\"\n[maildir]\npath = {:?}\n[smtp]\nreply_dir = \"out\"\n[store]\ndatabase = \"db.sqlite\"\n\
             [replies]\nfrom = \"d@example.net\"\ntemplates_dir = {t:?}\n",
            dir.path()
        );
        std::fs::create_dir(dir.path().join("new")).unwrap();
        let (exit, _, err) = check(&src, CheckOptions::default());
        assert_eq!(exit, Exit::Config, "{err}");
        assert!(err.contains("acknowlege.fr.txt is not a known template"), "{err}");
        assert!(err.contains("acknowledge.en.txt"), "{err}");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(60)), "60 s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(7200)), "2 h");
        assert_eq!(human(Duration::from_millis(100)), "100 ms");
    }
}
