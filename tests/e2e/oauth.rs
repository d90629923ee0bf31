//! A delist mailbox that takes only OAuth2 (issue 15): the stack's `o-*` mailboxes have no
//! password; Dovecot's oauth2 passdb checks JWTs signed with the stack's key, for IMAP and,
//! through Dovecot SASL, for Postfix's SMTP AUTH. The token command is a script this file
//! writes: it mints real tokens with that key, and can be told (by files in its state
//! folder) to fail, to hand out an expired token first, or to mint short-lived ones. It
//! keeps every token it printed, so the daemon's log can be searched for them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// The token command: `tok STATE PROTO USER`. Files in STATE, per PROTO (imap, smtp):
/// `PROTO.fail` (fail with an Entra-like message on stderr), `PROTO.first-expired` (the
/// first token has already expired), `PROTO.life` (seconds a token is valid, default 3600),
/// `PROTO.json` (print JSON with `expires_in`). Each call adds a line to `PROTO.calls` and
/// the token to `tokens`.
const TOKEN_COMMAND: &str = r#"#!/usr/bin/env python3
import base64, hashlib, hmac, json, os, sys, time
state, proto, user = sys.argv[1], sys.argv[2], sys.argv[3]
def f(name):
    return os.path.join(state, proto + "." + name)
with open(f("calls"), "a") as c:
    c.write("call\n")
calls = sum(1 for _ in open(f("calls")))
if os.path.exists(f("fail")):
    sys.stderr.write("AADSTS7000215: Invalid client secret provided (test token command)\n")
    sys.exit(2)
key = base64.b64decode(open(os.path.join(state, "key")).read().strip())
life = int(open(f("life")).read()) if os.path.exists(f("life")) else 3600
now = int(time.time())
exp = now - 60 if (calls == 1 and os.path.exists(f("first-expired"))) else now + life
b64 = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=")
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": user, "email": user, "iat": now - 120, "exp": exp}).encode())
sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
token = (head + b"." + body + b"." + sig).decode()
with open(os.path.join(state, "tokens"), "a") as t:
    t.write(token + "\n")
if os.path.exists(f("json")):
    print(json.dumps({"token_type": "Bearer", "expires_in": life, "access_token": token}))
else:
    print(token)
"#;

/// A daemon reading an OAuth-only mailbox and sending with SMTP AUTH by token.
struct Desk {
    d: Delistd,
    state: PathBuf,
}

impl Desk {
    /// `mechanism`: the `auth` value for both servers.
    fn new(test: &str, mechanism: &str) -> Desk {
        let st = stack();
        let key = std::env::var("DELISTD_TEST_OAUTH2_KEY").ok().filter(|k| !k.is_empty()).unwrap_or_else(|| {
            panic!("DELISTD_TEST_OAUTH2_KEY is empty: the stack was started with DELISTD_STACK_OAUTH2=no (restart it without)")
        });
        let mut d = Delistd::new(test);
        // The same unique name, as an OAuth-only mailbox.
        let user = format!("o-{}", d.delist.address.trim_start_matches("t-"));
        d.delist = Account { address: user.clone(), password: String::new() };
        let state = d.root.join("token-state");
        fs::create_dir_all(&state).unwrap();
        fs::write(state.join("key"), &key).unwrap();
        let script = d.root.join("delist-token");
        fs::write(&script, TOKEN_COMMAND).unwrap();
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let command = |proto: &str| format!("[{:?}, {:?}, {proto:?}, {user:?}]", script.display().to_string(), state.display().to_string());
        let config = format!(
            "# Written by tests/e2e/oauth.rs: an OAuth-only mailbox.\n\
             [intake]\nsource = \"imap\"\n\n\
             [imap]\nhost = \"localhost\"\nport = {}\nsecurity = \"tls\"\nca_file = {:?}\nuser = {user:?}\n\
             auth = {mechanism:?}\ntoken_command = {}\ntoken_lifetime = \"1h\"\npoll_interval = \"5s\"\n\n\
             [smtp]\nhost = \"localhost\"\nport = {}\nsecurity = \"tls\"\nca_file = {:?}\nuser = {user:?}\n\
             auth = {mechanism:?}\ntoken_command = {}\nconnections = 1\n\n\
             [store]\ndatabase = \"delistd.sqlite\"\n\n\
             [replies]\nfrom = \"Delist desk <{user}>\"\nportal_url = {PORTAL_URL:?}\nsupport_url = {SUPPORT_URL:?}\n\
             max_per_recipient_per_day = 20\n",
            st.imaps_port,
            st.ca_file,
            command("imap"),
            st.smtps_port,
            st.ca_file,
            command("smtp"),
        );
        fs::write(&d.config, config).unwrap();
        Desk { d, state }
    }

    /// Set (or with `None`, remove) a switch of the token command.
    fn set(&self, proto: &str, name: &str, value: Option<&str>) {
        let p = self.state.join(format!("{proto}.{name}"));
        match value {
            Some(v) => fs::write(p, v).unwrap(),
            None => {
                let _ = fs::remove_file(p);
            }
        }
    }

    /// How often the command ran for `proto`.
    fn calls(&self, proto: &str) -> usize {
        read(&self.state.join(format!("{proto}.calls"))).lines().count()
    }

    fn tokens(&self) -> Vec<String> {
        read(&self.state.join("tokens")).lines().map(str::to_string).collect()
    }

    /// A delisting request from `sender` to the OAuth-only mailbox.
    fn request(&self, sender: &Account, ip: &str, n: u32) {
        let body = format!(
            "Hello,\n\nour mail is refused:\n\n550 5.7.511 Access denied, banned sender[{ip}]. To request removal from this list, \
             forward this message to delist@example.test.\n\nPlease remove us.\n"
        );
        let msg = text_message(
            &format!("Sender <{}>", sender.address),
            &self.d.delist.address,
            &format!("Delisting request {n}"),
            &format!("oauth-{n}-{}", sender.address),
            &[],
            &body,
        );
        send_mail(&sender.address, &self.d.delist.address, &msg);
    }

    /// Replies in the outbox by state, e.g. `[("sent", 2)]`, and the attempts they took.
    fn outbox(&self) -> Vec<Vec<String>> {
        self.d.rows("SELECT state, attempts, coalesce(last_error, '') FROM outbox ORDER BY id")
    }

    /// Fails if a token, or the SASL message carrying it, is anywhere in `log`.
    fn assert_no_token_in(&self, log: &str) {
        let tokens = self.tokens();
        assert!(!tokens.is_empty(), "the token command never ran");
        let user = &self.d.delist.address;
        for t in &tokens {
            let forms = [
                t.clone(),
                b64(format!("user={user}\x01auth=Bearer {t}\x01\x01").as_bytes()),
                b64(format!("n,a={user},\x01auth=Bearer {t}\x01\x01").as_bytes()),
            ];
            for f in forms {
                if let Some(at) = log.find(&f) {
                    let line = log[..at].rsplit('\n').next().unwrap_or("");
                    panic!("a token is in the daemon's log, on the line starting {line:?}");
                }
            }
        }
    }
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() { A[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// Waits until `log` shows `needle` at least `n` times.
fn wait_for_log_count(s: &mut Serving, needle: &str, n: usize, within: Duration) {
    let start = Instant::now();
    while s.log_text().matches(needle).count() < n {
        s.assert_running();
        assert!(start.elapsed() < within, "delistd did not log {needle:?} {n} times within {within:?}:\n{}", s.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_of(path: &str) -> String {
    read(Path::new(&std::env::var(path).unwrap_or_default()))
}

/// Request → reply with one mechanism, at trace level: the login is the mechanism asked
/// for on both servers, and no token reaches the log.
fn round_trip(test: &str, mechanism: &str, sasl_name: &str) {
    let desk = Desk::new(test, mechanism);
    let sender = desk.d.account("sender");
    desk.request(&sender, "203.0.113.15", 1);
    let mut daemon = desk.d.serve_env(&[("DELISTD_LOG", "trace")]);
    let replies = wait_for_mail(&sender, "INBOX", 1);
    assert!(subject(&replies[0]).contains("DL-"), "{}", summary(&replies));
    wait_until(PATIENCE, || format!("{:?}", desk.outbox()), || desk.outbox().iter().any(|r| r[0] == "sent"));
    daemon.assert_running();
    let log = daemon.terminate();
    assert_eq!(desk.outbox(), vec![vec!["sent".to_string(), "1".into(), String::new()]], "sent at the first attempt");
    assert_eq!(desk.d.count("SELECT count(*) FROM cases"), 1);
    assert_eq!((desk.calls("imap"), desk.calls("smtp")), (1, 1), "one token each, cached");
    // The servers saw the mechanism (Dovecot's login line; Postfix's sasl_method).
    let user = &desk.d.delist.address;
    let dovecot = log_of("DELISTD_TEST_DOVECOT_LOG");
    assert!(dovecot.lines().any(|l| l.contains(&format!("user=<{user}>, method={sasl_name}"))), "Dovecot logged no {sasl_name} login for {user}");
    let postfix = log_of("DELISTD_TEST_POSTFIX_LOG");
    assert!(
        postfix.lines().any(|l| l.contains(&format!("sasl_method={sasl_name}, sasl_username={user}"))),
        "Postfix logged no {sasl_name} AUTH for {user}"
    );
    // Trace level shows the IMAP exchange, with the AUTHENTICATE answer masked.
    assert!(log.contains("AUTHENTICATE"), "no trace of the IMAP exchange in the log");
    assert!(log.contains(delistd::redact::MASK), "nothing was masked: was the AUTHENTICATE answer logged at all?");
    desk.assert_no_token_in(&log);
    let one = wait_for_mail(&sender, "INBOX", 1);
    assert_eq!(one.len(), 1, "{}", summary(&one));
}

#[test]
fn xoauth2_request_and_reply() {
    round_trip("oauth-x", "xoauth2", "XOAUTH2");
}

#[test]
fn oauthbearer_request_and_reply() {
    round_trip("oauth-b", "oauthbearer", "OAUTHBEARER");
}

/// An expired token is refused on both servers; the command runs again and the daemon goes
/// on. A session whose token has expired server-side is ended (doveadm kick, as a server
/// would end it), and the reconnect's cached token is refused: fetched again at once, the
/// session resumes. Every request is answered once.
#[test]
fn an_expired_token_is_fetched_again_and_nothing_is_lost_or_sent_twice() {
    let desk = Desk::new("oauth-exp", "xoauth2");
    desk.set("imap", "first-expired", Some("1"));
    desk.set("smtp", "first-expired", Some("1"));
    // Valid for 20 s at the server (Dovecot delays a login by up to 15 s after failed ones
    // from the same address, which other tests make); the daemon believes token_lifetime (1 h).
    desk.set("imap", "life", Some("20"));
    let sender = desk.d.account("sender");
    desk.request(&sender, "203.0.113.21", 1);
    let mut daemon = desk.d.serve();
    let first = wait_for_mail(&sender, "INBOX", 1);
    assert_eq!(first.len(), 1, "{}", summary(&first));
    wait_until(PATIENCE, || format!("{:?}", desk.outbox()), || desk.outbox().iter().any(|r| r[0] == "sent"));
    assert_eq!(desk.calls("smtp"), 2, "the refused SMTP token was not replaced:\n{}", daemon.log_text());
    assert!(desk.calls("imap") >= 2, "the refused IMAP token was not replaced:\n{}", daemon.log_text());

    // Let the session's token expire at the server, then end the session.
    std::thread::sleep(Duration::from_secs(21));
    let imap_calls = desk.calls("imap");
    let kick = Command::new("doveadm")
        .arg("-c")
        .arg(std::env::var("DELISTD_TEST_DOVECOT_CONF").expect("DELISTD_TEST_DOVECOT_CONF"))
        .args(["kick", &desk.d.delist.address])
        .output()
        .unwrap();
    assert!(kick.status.success(), "doveadm kick: {}", String::from_utf8_lossy(&kick.stderr));
    daemon.wait_for_log("IMAP refused the cached token; trying a fresh one", PATIENCE);
    wait_until(PATIENCE, || daemon.log_text(), || desk.calls("imap") > imap_calls);

    desk.request(&sender, "203.0.113.22", 2);
    wait_until(PATIENCE, || format!("{:?}", desk.outbox()), || desk.outbox().iter().filter(|r| r[0] == "sent").count() == 2);
    let log = daemon.terminate();
    let replies = wait_for_mail(&sender, "INBOX", 2);
    std::thread::sleep(Duration::from_secs(1));
    let replies_now = wait_for_mail(&sender, "INBOX", 2);
    assert_eq!(replies_now.len(), 2, "a reply was sent twice:\n{}", summary(&replies));
    assert_eq!(desk.d.count("SELECT count(*) FROM cases"), 2, "{log}");
    assert_eq!(desk.d.count("SELECT count(*) FROM messages"), 2, "{log}");
    let outbox = desk.outbox();
    assert!(outbox.iter().all(|r| r[0] == "sent" && r[1] == "1"), "replies were retried or failed: {outbox:?}");
    desk.assert_no_token_in(&log);
}

/// A token command that fails: intake and outbox back off with the command's stderr in the
/// log, no reply is failed or counted as attempted, and all goes on once the command works.
/// Tokens with `expires_in` (JSON) are renewed before they expire, and the IDLE session
/// with them.
#[test]
fn a_failing_token_command_backs_off_and_fails_no_reply() {
    let desk = Desk::new("oauth-fail", "oauthbearer");
    desk.set("imap", "fail", Some("1"));
    desk.set("smtp", "fail", Some("1"));
    let sender = desk.d.account("sender");
    desk.request(&sender, "203.0.113.31", 1);
    let mut daemon = desk.d.serve();
    wait_for_log_count(&mut daemon, "IMAP unavailable", 2, PATIENCE);
    let log = daemon.log_text();
    let line = log.lines().find(|l| l.contains("IMAP unavailable")).unwrap_or_default();
    assert!(line.contains("token command") && line.contains("AADSTS7000215") && line.contains("retry_in_s"), "{line}");

    // The command works again for IMAP, and hands out tokens valid for 20 s, with expires_in.
    desk.set("imap", "life", Some("20"));
    desk.set("imap", "json", Some("1"));
    desk.set("imap", "fail", None);
    wait_until(PATIENCE, || daemon.log_text(), || desk.d.try_count("SELECT count(*) FROM outbox").unwrap_or(0) == 1);
    wait_for_log_count(&mut daemon, "SMTP server unusable (connection, TLS, greeting or login); replies stay queued", 2, PATIENCE);
    let line = daemon.log_text().lines().find(|l| l.contains("SMTP server unusable")).unwrap_or_default().to_string();
    assert!(line.contains("AADSTS7000215"), "{line}");
    // Not charged (0 attempts), but staff see why it waits (issue 9: the server's failure is
    // noted on the waiting replies).
    let rows = desk.outbox();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0][0].as_str(), rows[0][1].as_str()), ("queued", "0"), "the reply was charged for the login: {rows:?}");
    assert!(rows[0][2].contains("token command") && !rows[0][2].contains("eyJ"), "{rows:?}");

    // SMTP works again, with tokens of 20 s too: a connection is not used past its token.
    desk.set("smtp", "life", Some("20"));
    desk.set("smtp", "json", Some("1"));
    let smtp_calls = desk.calls("smtp");
    desk.set("smtp", "fail", None);
    let replies = wait_for_mail(&sender, "INBOX", 1);
    wait_until(PATIENCE, || format!("{:?}", desk.outbox()), || desk.outbox().iter().any(|r| r[0] == "sent"));
    assert_eq!(desk.outbox(), vec![vec!["sent".to_string(), "1".into(), String::new()]], "sent at the first attempt");

    // Idle for longer than a token lives: the session is renewed with a new token each
    // time, before the server could end it, and still answers.
    let calls = desk.calls("imap");
    wait_for_log_count(&mut daemon, "IMAP token due for renewal; logging in again", 2, Duration::from_secs(90));
    wait_until(PATIENCE, || format!("no new token for the renewed sessions:\n{}", daemon.log_text()), || desk.calls("imap") >= calls + 2);
    desk.request(&sender, "203.0.113.32", 2);
    wait_until(PATIENCE, || format!("{:?}", desk.outbox()), || desk.outbox().iter().filter(|r| r[0] == "sent").count() == 2);
    let log = daemon.terminate();
    assert!(!log.contains("IMAP connection lost"), "a session outlived its token:\n{log}");
    assert!(desk.calls("smtp") >= smtp_calls + 2, "the second reply went out on the first reply's expired login:\n{log}");
    // A reply charged for a failure says "SMTP failed, will retry" (SendError::Transient).
    assert!(!log.contains("SMTP failed, will retry"), "a reply paid for an expired login:\n{log}");
    let all = wait_for_mail(&sender, "INBOX", 2);
    assert_eq!(all.len(), 2, "{}", summary(&all));
    assert_eq!(replies.len(), 1);
    desk.assert_no_token_in(&log);
}

/// `check-config` names the line of a token command that cannot run, and says why; the
/// example script of the README passes. (No server needed.)
#[test]
fn check_config_checks_the_token_command() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("delistd.toml");
    let not_executable = dir.path().join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/delist-token");
    let write = |imap_cmd: &Path, smtp_cmd: &str| {
        let text = format!(
            "[imap]\nhost = \"outlook.office365.com\"\nuser = \"delist@example.net\"\nauth = \"xoauth2\"\n\
             token_command = [{:?}, \"imap\"]\n\n[smtp]\nhost = \"smtp.office365.com\"\nuser = \"delist@example.net\"\n\
             auth = \"oauthbearer\"\ntoken_command = [{smtp_cmd:?}, \"smtp\"]\n\n[replies]\nfrom = \"delist@example.net\"\n",
            imap_cmd.display().to_string()
        );
        fs::write(&config, text).unwrap();
    };
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_delistd")).arg("check-config").arg("--config").arg(&config).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };

    write(Path::new("/nonexistent/delist-token"), "no-such-delist-token");
    let (code, err) = check();
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("line 5: imap.token_command: /nonexistent/delist-token: No such file"), "{err}");
    assert!(err.contains("line 11: smtp.token_command: \"no-such-delist-token\" is not an executable in $PATH"), "{err}");

    write(&not_executable, "sh");
    let (code, err) = check();
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("is not executable (chmod +x it)"), "{err}");

    write(&example, "sh");
    let (code, err) = check();
    assert_eq!(code, Some(0), "the example token command does not pass check-config: {err}");
}
