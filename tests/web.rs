//! The web desk over HTTP: the real `delistd` binary (`staff add`, `web`) on a real SQLite
//! file, spoken to with a small HTTP/1.1 client over a TCP socket. No mocks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;

use delistd::cases::{
    sha256_hex, MessageSource, NewCase, NewMessage, Outcome, RawMessage, Store, StoreOptions,
};
use delistd::types::{CaseRef, Lang, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_delistd");
const PASSWORD: &str = "correct horse battery";

/// A hostile request: markup and script in the subject, an HTML body with a script, an
/// event handler and a link.
const HOSTILE_SUBJECT: &str = "<script>alert('subject')</script> delist";
const HOSTILE_HTML: &str = "<html><body><p onmouseover=\"alert(1)\">Please delist 203.0.113.66</p>\
    <script>alert('body')</script><img src=\"https://evil.example/x.png\"></body></html>";

fn take_in(store: &mut Store, uid: u32, ip: &str, subject: &str, raw: &str) -> CaseRef {
    let now = Timestamp::now();
    let tx = store.transaction().unwrap();
    let m = tx
        .insert_message(&NewMessage {
            source: MessageSource::Imap { mailbox: "INBOX".into(), uidvalidity: 1, uid },
            message_id: Some(format!("req{uid}@example.com")),
            sender: Some("alice@example.com".into()),
            subject: Some(subject.into()),
            received_at: now,
            size: raw.len() as u64,
            sha256: sha256_hex(raw.as_bytes()),
            raw: RawMessage::Blob(raw.as_bytes()),
            evidence: None,
            decision: None,
            action: None,
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
                ndr_line: Some(format!("550 5.7.511 banned sender[{ip}]")),
                sender: "alice@example.com".into(),
                language: Lang::En,
                opened_by: Some(m),
                awaiting_info: false,
            },
            now,
        )
        .unwrap();
    tx.set_outcome(m, Outcome::Processed, None).unwrap();
    tx.commit().unwrap();
    c
}

/// A database with two cases (the second hostile) and the accounts ann (agent), vera (viewer).
fn fixture(dir: &Path) -> PathBuf {
    let db = dir.join("delistd.sqlite");
    let mut s = Store::open(&db, StoreOptions::default()).unwrap();
    take_in(&mut s, 1, "203.0.113.7", "delist 203.0.113.7", "From: alice@example.com\r\nSubject: delist\r\n\r\n550 5.7.511 banned sender[203.0.113.7]\r\n");
    let hostile = format!(
        "From: alice@example.com\r\nSubject: {HOSTILE_SUBJECT}\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n{HOSTILE_HTML}\r\n"
    );
    take_in(&mut s, 2, "203.0.113.66", HOSTILE_SUBJECT, &hostile);
    drop(s);
    for args in [&["add", "ann", "--email", "ann@example.net", "--password-stdin"][..], &["add", "vera", "--role", "viewer", "--password-stdin"]] {
        let out = staff(&db, args, PASSWORD);
        assert!(out.status.success(), "staff {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    db
}

fn staff(db: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("staff")
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Commands that read no password (list, remove) may have exited already: a broken pipe
    // here is not a failure; their exit status says how they went.
    let _ = child.stdin.take().unwrap().write_all(format!("{stdin}\n").as_bytes());
    child.wait_with_output().unwrap()
}

/// `delistd web` on a free loopback port; killed when dropped.
struct Desk {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn desk(db: &Path, config: Option<&Path>) -> Desk {
    let mut cmd = Command::new(BIN);
    cmd.arg("web").arg("--db").arg(db).arg("--listen").arg("127.0.0.1:0");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    } else {
        cmd.arg("--config").arg("/nonexistent/delistd.toml");
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("://").nth(1).and_then(|s| s.trim().trim_end_matches('/').parse().ok());
    let Some(addr) = addr else {
        // Never leave the server running behind a failed test.
        let _ = child.kill();
        let _ = child.wait();
        panic!("no address in {line:?}");
    };
    Desk { child, addr }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request (Connection: close) and its whole response.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    Resp { status, headers, body: body.to_string() }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Sign in; the `Cookie:` header value of the session.
fn login(d: &Desk, user: &str, password: &str) -> Resp {
    http(d.addr, "POST", "/login", &[], &form(&[("username", user), ("password", password)]))
}

fn session(d: &Desk, user: &str) -> String {
    let r = login(d, user, PASSWORD);
    assert_eq!(r.status, 303, "{}", r.body);
    let c = r.header("set-cookie").expect("a session cookie").to_string();
    c.split(';').next().unwrap().to_string()
}

fn csrf_of(page: &str) -> String {
    let i = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    page[i..i + 64].to_string()
}

fn history(db: &Path, c: &str) -> Vec<(String, String, Option<String>)> {
    let s = Store::open(db, StoreOptions::default()).unwrap();
    let d = s.case_detail(c.parse().unwrap()).unwrap().unwrap();
    d.events.into_iter().map(|e| (e.kind, e.actor, e.text)).collect()
}

#[test]
fn login_sets_a_strict_session_cookie_and_logout_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, None);

    // Not signed in: pages send to the login form, the API says 401.
    assert_eq!(http(d.addr, "GET", "/", &[], "").header("location"), Some("/login"));
    assert_eq!(http(d.addr, "GET", "/api/cases", &[], "").status, 401);
    // A wrong password: 401, no cookie.
    let bad = login(&d, "ann", "wrong password!");
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());

    let r = login(&d, "ann", PASSWORD);
    assert_eq!((r.status, r.header("location")), (303, Some("/")));
    let set = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http on loopback: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let board = http(d.addr, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(board.status, 200);
    assert!(board.body.contains("DL-000001") && board.body.contains("ann (agent)"), "{}", board.body);
    let csp = board.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline") && !csp.contains("script-src"), "{csp}");

    // Logging out needs the CSRF token, then ends the session on the server.
    let no_token = http(d.addr, "POST", "/logout", &[("Cookie", &cookie)], "");
    assert_eq!(no_token.status, 403);
    let out = http(d.addr, "POST", "/logout", &[("Cookie", &cookie)], &form(&[("csrf", &csrf_of(&board.body))]));
    assert_eq!((out.status, out.header("location")), (303, Some("/login")));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The old cookie no longer works even if a client kept it.
    assert_eq!(http(d.addr, "GET", "/", &[("Cookie", &cookie)], "").header("location"), Some("/login"));
}

#[test]
fn failed_logins_are_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, None);
    for _ in 0..5 {
        assert_eq!(login(&d, "ann", "not the password").status, 401);
    }
    // Now even the right password waits.
    let r = login(&d, "ann", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some());
}

#[test]
fn behind_a_trusted_proxy_the_throttle_counts_each_forwarded_client_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let cfg = config(dir.path(), "delistd.toml", "[web]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n");
    let d = desk(&db, Some(&cfg));
    let from = |client: &str, user: &str, password: &str| {
        let body = form(&[("username", user), ("password", password)]);
        http(d.addr, "POST", "/login", &[("X-Forwarded-For", client)], &body).status
    };
    // Someone at one address tries five names: that address is throttled...
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        assert_eq!(from("198.51.100.1", name, "guess"), 401);
    }
    assert_eq!(from("198.51.100.1", "ann", PASSWORD), 429);
    // ...not the colleague behind the same proxy, who signs in.
    assert_eq!(from("198.51.100.2", "ann", PASSWORD), 303);
    // A client's own claim to the left of the proxy's entry is not believed.
    assert_eq!(from("198.51.100.2, 198.51.100.1", "ann", PASSWORD), 429);
}

#[test]
fn a_post_without_the_csrf_token_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, None);
    let cookie = session(&d, "ann");
    let before = history(&db, "DL-000001");
    for body in [form(&[("action", "note"), ("text", "x")]), form(&[("csrf", &"0".repeat(64)), ("action", "note"), ("text", "x")])] {
        let r = http(d.addr, "POST", "/cases/DL-000001/act", &[("Cookie", &cookie)], &body);
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert_eq!(history(&db, "DL-000001"), before);

    // With the token: recorded under the signed-in name.
    let page = http(d.addr, "GET", "/cases/DL-000001", &[("Cookie", &cookie)], "");
    let body = form(&[("csrf", &csrf_of(&page.body)), ("action", "note"), ("text", "called the sender")]);
    let r = http(d.addr, "POST", "/cases/DL-000001/act", &[("Cookie", &cookie)], &body);
    assert_eq!(r.status, 303, "{}", r.body);
    let body = form(&[("csrf", &csrf_of(&page.body)), ("action", "resolve"), ("text", "delisted in the portal")]);
    assert_eq!(http(d.addr, "POST", "/cases/DL-000001/act", &[("Cookie", &cookie)], &body).status, 303);
    let h = history(&db, "DL-000001");
    assert!(h.contains(&("note".into(), "ann".into(), Some("called the sender".into()))), "{h:?}");
    assert_eq!(h.last().map(|e| (e.0.as_str(), e.1.as_str())), Some(("resolved", "ann")));
}

#[test]
fn a_viewer_reads_but_cannot_act() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, None);
    let cookie = session(&d, "vera");
    let page = http(d.addr, "GET", "/cases/DL-000001", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("action\" value=\"note"), "no action forms for a viewer");
    let before = history(&db, "DL-000001");
    // Even a hand-made request with the right token is refused by the desk.
    let body = form(&[("csrf", &csrf_of(&page.body)), ("action", "resolve"), ("text", "x")]);
    let r = http(d.addr, "POST", "/cases/DL-000001/act", &[("Cookie", &cookie)], &body);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("viewer"), "{}", r.body);
    assert_eq!(history(&db, "DL-000001"), before);
}

#[test]
fn the_proxy_header_counts_only_from_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let cfg = |trusted: &str| {
        let web = format!(
            "[web]\nlisten = \"127.0.0.1:0\"\nproxy_user_header = \"X-Forwarded-User\"\ntrusted_proxies = [\"{trusted}\"]\n"
        );
        config(dir.path(), &format!("delistd-{}.toml", trusted.replace('/', "_")), &web)
    };
    // Our test client connects from 127.0.0.1: not the configured proxy.
    let untrusted = desk(&db, Some(&cfg("192.0.2.1")));
    let r = http(untrusted.addr, "GET", "/api/cases", &[("X-Forwarded-User", "ann")], "");
    assert_eq!(r.status, 401, "the header is ignored from an untrusted peer: {}", r.body);
    let r = http(untrusted.addr, "GET", "/", &[("X-Forwarded-User", "ann")], "");
    assert_eq!(r.header("location"), Some("/login"));
    drop(untrusted);

    let trusted = desk(&db, Some(&cfg("127.0.0.0/8")));
    let r = http(trusted.addr, "GET", "/api/cases", &[("X-Forwarded-User", "ann")], "");
    assert_eq!(r.status, 200, "{}", r.body);
    // Only existing accounts: the proxy's word does not create staff.
    let r = http(trusted.addr, "GET", "/api/cases", &[("X-Forwarded-User", "mallory")], "");
    assert_eq!(r.status, 401);
}

#[test]
fn hostile_subject_and_body_are_inert_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, None);
    let cookie = session(&d, "ann");
    let page = http(d.addr, "GET", "/cases/DL-000002", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    let b = &page.body;
    // The desk's own page has no script at all; the message's markup is escaped text.
    assert!(!b.to_lowercase().contains("<script"), "{b}");
    assert!(!b.contains("onmouseover") && !b.contains("<img") && !b.contains("evil.example"), "{b}");
    assert!(b.contains("&lt;script&gt;alert(&#x27;subject&#x27;)&lt;&#x2f;script&gt;"), "the subject, escaped: {b}");
    assert!(b.contains("Please delist 203.0.113.66"), "the HTML body, as text: {b}");
    // The raw message is a download, never rendered.
    let raw = http(d.addr, "GET", "/cases/DL-000002/messages/2/raw", &[("Cookie", &cookie)], "");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-type"), Some("application/octet-stream"));
    assert!(raw.header("content-disposition").unwrap().starts_with("attachment"));
    assert!(raw.body.contains("<script>alert('body')</script>"));
}

#[test]
fn the_api_gives_the_cli_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, None);
    let cookie = session(&d, "ann");
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(BIN).arg("cases").arg("--db").arg(&db).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let api = |path: &str| -> serde_json::Value {
        let r = http(d.addr, "GET", path, &[("Cookie", &cookie)], "");
        assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")), "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    // seconds_left follows the clock between the two calls; everything else must be equal.
    let strip = |mut v: serde_json::Value| {
        fn walk(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    m.remove("seconds_left");
                    m.values_mut().for_each(walk);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
                _ => {}
            }
        }
        walk(&mut v);
        v
    };
    assert_eq!(strip(api("/api/cases/DL-000002")), strip(cli(&["show", "DL-000002", "--json"])));
    assert_eq!(strip(api("/api/cases")), strip(cli(&["list", "--json"])));
    assert_eq!(strip(api("/api/cases?ip=203.0.113.0/26")).as_array().map(Vec::len), Some(1), "CIDR filter");
    // The board's other filters give the same JSON through both front ends too.
    let filters: [(&str, &[&str], usize); 5] = [
        ("state=all&q=please", &["--state", "all", "--search", "please"], 1),
        ("state=all&q=%22banned+sender%22+203*", &["--state", "all", "--search", "\"banned sender\" 203*"], 1),
        ("state=active&ip=203.0.113.0/26", &["--state", "active", "--ip", "203.0.113.0/26"], 1),
        ("state=all&ip=2001:db8::/32", &["--state", "all", "--ip", "2001:db8::/32"], 0),
        ("state=active&sender=EXAMPLE.com", &["--state", "active", "--sender", "EXAMPLE.com"], 2),
    ];
    for (query, args, n) in filters {
        let from_api = strip(api(&format!("/api/cases?{query}")));
        let mut cli_args = vec!["list", "--json"];
        cli_args.extend_from_slice(args);
        assert_eq!(from_api, strip(cli(&cli_args)), "{query}");
        assert_eq!(from_api.as_array().map(Vec::len), Some(n), "{query}: {from_api}");
    }
    // The board has the search box and keeps the search in it.
    let r = http(d.addr, "GET", "/?state=all&q=please", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("name=\"q\" value=\"please\""), "{}", r.body);
    assert!(r.body.contains("DL-000002") && !r.body.contains("DL-000001"), "{}", r.body);
    // A search that is not one is a 400 that says why, not an SQL error.
    let r = http(d.addr, "GET", "/api/cases?q=%22unclosed", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("quote"), "{}", r.body);
    // Keyset pages: a Link header to the next one.
    let r = http(d.addr, "GET", "/api/cases?limit=1", &[("Cookie", &cookie)], "");
    let link = r.header("link").expect("a next link");
    assert!(link.contains("after=") && link.ends_with("rel=\"next\""), "{link}");
}

/// One HTTPS request trusting only `ca` (PEM); the status line and headers.
fn https_head(addr: SocketAddr, ca: &Path, method: &str, path: &str, body: &str) -> String {
    use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

#[test]
fn with_a_certificate_the_desk_speaks_https_and_cookies_are_secure() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/install-test-deps.sh installs it)");
    assert!(ok.success());
    let web = format!("[web]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display());
    let cfg = config(dir.path(), "delistd.toml", &web);
    let d = desk(&db, Some(&cfg));
    let head = https_head(d.addr, &cert, "POST", "/login", &form(&[("username", "ann"), ("password", PASSWORD)]));
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a cookie");
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP on the TLS port gets nowhere.
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 "), "no HTTP answer in clear");
}

#[test]
fn staff_accounts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    // Twice the same name: refused (4), the first account unchanged.
    let again = staff(&db, &["add", "ann", "--password-stdin"], "another long password");
    assert_eq!(again.status.code(), Some(4), "{}", String::from_utf8_lossy(&again.stderr));
    // No password flag: the password is never taken from the command line.
    let no_flag = Command::new(BIN).arg("staff").arg("--db").arg(&db).args(["add", "bob"]).output().unwrap();
    assert_eq!(no_flag.status.code(), Some(2));
    let short = staff(&db, &["passwd", "ann", "--password-stdin"], "short");
    assert_eq!(short.status.code(), Some(2));
    let list = staff(&db, &["list", "--json"], "");
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let rows: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), a["role"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(rows, [("ann".to_string(), "agent".to_string()), ("vera".to_string(), "viewer".to_string())]);

    // A new password ends the old sessions and replaces the old password.
    let d = desk(&db, None);
    let cookie = session(&d, "ann");
    assert!(staff(&db, &["passwd", "ann", "--password-stdin"], "a brand new password").status.success());
    assert_eq!(http(d.addr, "GET", "/", &[("Cookie", &cookie)], "").header("location"), Some("/login"));
    assert_eq!(login(&d, "ann", PASSWORD).status, 401);
    assert_eq!(login(&d, "ann", "a brand new password").status, 303);
    // Removed: cannot sign in.
    assert!(staff(&db, &["remove", "vera"], "").status.success());
    assert_eq!(login(&d, "vera", PASSWORD).status, 401);
}

#[test]
fn bulk_assign_and_reject_from_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, None);
    let cookie = session(&d, "ann");
    let board = http(d.addr, "GET", "/", &[("Cookie", &cookie)], "");
    assert!(board.body.contains("name=\"case\" value=\"DL-000002\""), "{}", board.body);
    let csrf = csrf_of(&board.body);
    let body = form(&[("csrf", &csrf), ("case", "DL-000001"), ("case", "DL-000002"), ("action", "assign"), ("assignee", "ann")]);
    let r = http(d.addr, "POST", "/bulk", &[("Cookie", &cookie)], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let mine = http(d.addr, "GET", "/api/cases?assignee=mine", &[("Cookie", &cookie)], "");
    let v: serde_json::Value = serde_json::from_str(&mine.body).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let body = form(&[("csrf", &csrf), ("case", "DL-000002"), ("action", "reject"), ("text", "spam run")]);
    assert_eq!(http(d.addr, "POST", "/bulk", &[("Cookie", &cookie)], &body).status, 200);
    let h = history(&db, "DL-000002");
    assert_eq!(h.last(), Some(&("rejected".to_string(), "ann".to_string(), Some("spam run".to_string()))), "{h:?}");
    // Without the token: nothing.
    let body = form(&[("case", "DL-000001"), ("action", "reject")]);
    assert_eq!(http(d.addr, "POST", "/bulk", &[("Cookie", &cookie)], &body).status, 403);
    assert_eq!(history(&db, "DL-000001").last().map(|e| e.0.clone()), Some("assigned".to_string()));
}

/// Issue 13 on the desk: the case page shows where the blocklist lists the IP and why. The
/// reason is a DNSBL's TXT record, written by whoever runs the zone: it is escaped like any
/// other outside text.
#[test]
fn the_case_page_shows_the_listing_and_its_reason_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE cases SET listing_source = 'bl.example.net', listing_reason = 'trap hits <b onmouseover=x>' WHERE id = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let d = desk(&db, None);
    let cookie = session(&d, "ann");
    let page = http(d.addr, "GET", "/cases/DL-000001", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("listed on bl.example.net: trap hits &lt;b onmouseover=x&gt;"), "{}", page.body);
    assert!(!page.body.contains("<b onmouseover"), "{}", page.body);
    let other = http(d.addr, "GET", "/cases/DL-000002", &[("Cookie", &cookie)], "");
    assert!(other.body.contains("not looked up"), "{}", other.body);
}

/// A config with replies on (and no `[web]` section: the desk's defaults).
fn replies_config(dir: &Path) -> PathBuf {
    config(dir, "delistd-replies.toml", "")
}

/// A config file `name` in `dir`: a Maildir intake, replies on, then `extra` (a `[web]`
/// section, say).
fn config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "[intake]\nsource = \"maildir\"\n\n[maildir]\npath = \"{}\"\n\n[smtp]\nreply_dir = \"{}\"\n\n\
             [replies]\nfrom = \"Delist desk <delist@provider.example>\"\nmessage_id_domain = \"provider.example\"\n\n{extra}",
            dir.join("maildir").display(),
            dir.join("replies").display()
        ),
    )
    .unwrap();
    p
}

fn replies_of(db: &Path, c: &str) -> Vec<delistd::cases::OutboxRow> {
    let s = Store::open(db, StoreOptions::default()).unwrap();
    s.case_detail(c.parse().unwrap()).unwrap().unwrap().replies
}

/// Issue 11: the case page's reply and ask forms. "Preview" answers with the exact message
/// and queues nothing; "send" queues it under the signed-in name, with no Auto-Submitted;
/// asking moves the case to awaiting_info; no CSRF token, an empty text or a viewer: nothing.
#[test]
fn reply_and_ask_forms_preview_the_exact_message_then_queue_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let d = desk(&db, Some(&replies_config(dir.path())));
    let cookie = session(&d, "ann");
    let page = http(d.addr, "GET", "/cases/DL-000001", &[("Cookie", &cookie)], "");
    for want in ["id=\"reply-form\"", "id=\"ask-form\"", "name=\"preview\"", "name=\"send\""] {
        assert!(page.body.contains(want), "{want} missing from the case page");
    }
    let csrf = csrf_of(&page.body);
    let act = |pairs: &[(&str, &str)]| http(d.addr, "POST", "/cases/DL-000001/act", &[("Cookie", &cookie)], &form(pairs));
    let text = "We checked <b>your</b> server.\nIt looks clean now.";

    // Without the token: refused, nothing queued.
    let r = act(&[("action", "reply"), ("text", text), ("send", "1")]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(replies_of(&db, "DL-000001").is_empty());

    // The preview: the whole message, escaped, and a form to send it; nothing queued.
    let r = act(&[("csrf", &csrf), ("action", "reply"), ("text", text), ("preview", "1")]);
    assert_eq!(r.status, 200, "{}", r.body);
    for want in ["not sent yet", "[DL-000001]", "In-Reply-To", "&lt;req1@example.com&gt;", "Hello,", "We checked &lt;b&gt;your&lt;&#x2f;b&gt; server.", "Kind regards", "id=\"reply-form\""] {
        assert!(r.body.contains(want), "{want:?} missing from the preview:\n{}", r.body);
    }
    assert!(!r.body.contains("<b>your</b>"), "the text is escaped");
    assert!(replies_of(&db, "DL-000001").is_empty(), "a preview queues nothing");

    // Sent: queued as the preview showed it, in the history under ann.
    let r = act(&[("csrf", &csrf), ("action", "reply"), ("text", text), ("send", "1")]);
    assert_eq!((r.status, r.header("location")), (303, Some("/cases/DL-000001")), "{}", r.body);
    let rows = replies_of(&db, "DL-000001");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind.as_deref(), Some("staff_reply"));
    let raw = String::from_utf8_lossy(&rows[0].raw).to_string();
    assert!(!raw.to_ascii_lowercase().contains("auto-submitted"), "{raw}");
    assert!(raw.contains("In-Reply-To: <req1@example.com>"), "{raw}");
    let h = history(&db, "DL-000001");
    assert!(h.contains(&("staff_reply".into(), "ann".into(), Some(text.into()))), "{h:?}");

    // An empty text is refused; asking moves the case to awaiting_info.
    let r = act(&[("csrf", &csrf), ("action", "ask"), ("text", "   "), ("send", "1")]);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = act(&[("csrf", &csrf), ("action", "ask"), ("text", "Which host sends from this IP?"), ("preview", "1")]);
    assert!(r.status == 200 && r.body.contains("id=\"ask-form\"") && r.body.contains("awaiting_info"), "{}", r.body);
    let r = act(&[("csrf", &csrf), ("action", "ask"), ("text", "Which host sends from this IP?"), ("send", "1")]);
    assert_eq!(r.status, 303, "{}", r.body);
    let api = http(d.addr, "GET", "/api/cases/DL-000001", &[("Cookie", &cookie)], "");
    let v: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(v["case"]["state"], "awaiting_info", "{v}");
    assert!(v["case"]["paused"].as_str().is_some_and(|p| p.starts_with("clock paused, ")), "{v}");
    let page = http(d.addr, "GET", "/cases/DL-000001", &[("Cookie", &cookie)], "");
    assert!(page.body.contains("until the sender answers the question"), "{}", page.body);
    assert_eq!(replies_of(&db, "DL-000001").len(), 2);

    // A viewer is refused even with a valid token of their own.
    let vera = session(&d, "vera");
    let vpage = http(d.addr, "GET", "/cases/DL-000002", &[("Cookie", &vera)], "");
    assert!(!vpage.body.contains("id=\"reply-form\""), "no forms for a viewer");
    let r = http(
        d.addr,
        "POST",
        "/cases/DL-000002/act",
        &[("Cookie", &vera)],
        &form(&[("csrf", &csrf_of(&vpage.body)), ("action", "reply"), ("text", "hi"), ("send", "1")]),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(replies_of(&db, "DL-000002").is_empty());
}

/// Issue 11: a case a person wrote on since the last staff action is counted, marked and
/// filtered on the board and in the API.
#[test]
fn the_board_shows_what_needs_attention() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    {
        let mut s = Store::open(&db, StoreOptions::default()).unwrap();
        let tx = s.transaction().unwrap();
        tx.mark_needs_attention(CaseRef(2)).unwrap();
        tx.commit().unwrap();
    }
    let d = desk(&db, None);
    let cookie = session(&d, "ann");
    let board = http(d.addr, "GET", "/", &[("Cookie", &cookie)], "");
    assert!(board.body.contains(">1<span>needs attention</span>"), "{}", board.body);
    assert_eq!(board.body.matches("class=\"attention\"").count(), 1, "one row marked");
    let api = http(d.addr, "GET", "/api/cases?attention=1", &[("Cookie", &cookie)], "");
    let v: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    let refs: Vec<&str> = v.as_array().unwrap().iter().map(|c| c["ref"].as_str().unwrap()).collect();
    assert_eq!(refs, ["DL-000002"], "{v}");
    assert_eq!(v[0]["needs_attention"], true);
    let filtered = http(d.addr, "GET", "/?attention=1", &[("Cookie", &cookie)], "");
    assert!(filtered.body.contains("DL-000002") && !filtered.body.contains("/cases/DL-000001\""), "{}", filtered.body);
}

/// Issue 11: a per-account API token reads the JSON API as its account, and nothing else:
/// not a page, not an action; a wrong, revoked or orphaned token is a 401 naming Bearer.
#[test]
fn an_api_token_reads_the_api_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    let made = staff(&db, &["token", "ann"], "");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("delistd_") && token.len() == 8 + 64, "{token:?}");
    let list = String::from_utf8(staff(&db, &["list"], "").stdout).unwrap();
    let has = |name: &str| list.lines().find(|l| l.starts_with(name)).unwrap_or("").split_whitespace().nth(2).map(str::to_string);
    assert_eq!((has("ann").as_deref(), has("vera").as_deref()), (Some("yes"), Some("-")), "{list}");
    let assigned = Command::new(BIN).args(["cases", "--db"]).arg(&db).args(["assign", "DL-000001", "ann"]).output().unwrap();
    assert!(assigned.status.success(), "{}", String::from_utf8_lossy(&assigned.stderr));
    let d = desk(&db, None);
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];

    // It reads the API, as ann ("mine" is hers).
    let r = http(d.addr, "GET", "/api/cases?assignee=mine", &auth, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let refs: Vec<&str> = v.as_array().unwrap().iter().filter_map(|c| c["ref"].as_str()).collect();
    assert_eq!(refs, ["DL-000001"]);
    let r = http(d.addr, "GET", "/api/cases/DL-000002", &auth, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"ref\": \"DL-000002\""), "{}", r.body);

    // Never a page, never an action: the header is not even looked at there.
    assert_eq!(http(d.addr, "GET", "/", &auth, "").header("location"), Some("/login"));
    let note = form(&[("action", "note"), ("text", "by token"), ("csrf", "")]);
    let r = http(d.addr, "POST", "/cases/DL-000001/act", &auth, &note);
    assert_eq!((r.status, r.header("location")), (303, Some("/login")), "{}", r.body);
    let shown = Command::new(BIN).args(["cases", "--db"]).arg(&db).args(["show", "DL-000001", "--json"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("by token"), "no note was added");

    // A wrong token: 401 with the Bearer challenge.
    let wrong = format!("Bearer delistd_{}", "0".repeat(64));
    let r = http(d.addr, "GET", "/api/cases", &[("Authorization", wrong.as_str())], "");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"delistd\", error=\"invalid_token\""));
    // No credentials at all: 401 naming the scheme.
    let r = http(d.addr, "GET", "/api/cases", &[], "");
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer realm=\"delistd\"")));

    // Revoked: refused at once (the running desk reads the database on each request).
    assert!(staff(&db, &["token", "ann", "--revoke"], "").status.success());
    assert_eq!(http(d.addr, "GET", "/api/cases", &auth, "").status, 401);
    // A new token for a removed account stops working with the account.
    let token = String::from_utf8(staff(&db, &["token", "vera"], "").stdout).unwrap().trim().to_string();
    let bearer = format!("Bearer {token}");
    assert_eq!(http(d.addr, "GET", "/api/cases", &[("Authorization", bearer.as_str())], "").status, 200);
    assert!(staff(&db, &["remove", "vera"], "").status.success());
    assert_eq!(http(d.addr, "GET", "/api/cases", &[("Authorization", bearer.as_str())], "").status, 401);
    // No such account: a usage error that says so.
    let none = staff(&db, &["token", "nobody"], "");
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no staff member nobody"));
}
