//! The web desk in a real browser: Debian's Chromium, driven over WebDriver by its
//! chromedriver, against the real `delistd` binary (`demo`, `staff add`, `web`) on the demo's
//! SQLite database. A staff member signs in through the form, reads the board, opens a case,
//! reads its thread and evidence, writes a free reply (preview, then send), resolves it with
//! the reply, asks the sender of another case for information (preview, then send); the
//! database then must hold what the pages promised (the outbox rows, with no Auto-Submitted
//! on what a person wrote; the states; the history under the staff name).
//!
//! Screenshots of the board, a case page and the two previews are written to
//! `target/browser/` (the board's is the README's picture of the desk, `docs/desk-board.png`).
//!
//! Needs `chromium` and `chromium-driver` (`scripts/install-test-deps.sh` installs them).
//! Without them the test fails and says so: it is never skipped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rusqlite::{Connection, OptionalExtension};

const BIN: &str = env!("CARGO_BIN_EXE_delistd");
/// Debian's paths; `DELISTD_CHROMIUM` and `DELISTD_CHROMEDRIVER` name others (a developer's
/// machine with another build of the two).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn chromium() -> String {
    std::env::var("DELISTD_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into())
}

fn chromedriver() -> String {
    std::env::var("DELISTD_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into())
}
/// The staff member of the test, and the name the history must record.
const STAFF: &str = "rita";
const PASSWORD: &str = "a browser's long password";
/// How long a page or a process may take to appear (a shared two-core CI machine).
const PATIENCE: Duration = Duration::from_secs(30);

/// A child process, killed when dropped (a failed assertion must not leave servers behind).
struct Proc {
    child: Child,
    what: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// The browser and its driver, or a failure that says how to get them.
fn require_browser() {
    let missing: Vec<String> = [chromium(), chromedriver()].into_iter().filter(|p| !Path::new(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "the real-browser test needs Debian's chromium and chromium-driver, but {} {} missing: \
         run `sudo bash scripts/install-test-deps.sh` (it installs both), then run the test again",
        missing.join(" and "),
        if missing.len() == 1 { "is" } else { "are" }
    );
}

/// Where test artifacts go: `target/browser/`, beside the profile directory of the binary
/// under test (so it follows `CARGO_TARGET_DIR` too).
fn artifacts() -> PathBuf {
    let bin = Path::new(BIN);
    let target = bin.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "delistd {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `delistd web` over `db` on a free loopback port; its log goes to `log`.
fn start_desk(db: &Path, log: &Path) -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["web", "--config", "/nonexistent/delistd.toml", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let desk = Proc { child, what: "delistd web" };
    // The demo database also gets a one-time "demo" account, announced first; the address
    // follows on the line "delistd web: listening on http://ADDR/".
    let mut lines = BufReader::new(stdout).lines();
    let addr = lines.by_ref().map_while(Result::ok).find_map(|l| {
        l.split_once("listening on http://").and_then(|(_, a)| a.trim().trim_end_matches('/').parse().ok())
    });
    let addr = addr.unwrap_or_else(|| {
        panic!("delistd web printed no address; its log:\n{}", std::fs::read_to_string(log).unwrap_or_default())
    });
    (desk, addr)
}

/// chromedriver on a free loopback port, ready to take a session.
fn start_chromedriver(log: &Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (run scripts/install-test-deps.sh)", chromedriver()));
    let mut driver = Proc { child, what: "chromedriver" };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = driver.exited() {
            panic!("{} exited ({status}) before listening; its log:\n{}", driver.what, std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(start.elapsed() < PATIENCE, "chromedriver did not listen on port {port} within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

/// A WebDriver session with headless Chromium. Root in CI: no sandbox; /dev/shm may be
/// small in containers; a profile of its own, so nothing of a previous run is reused.
async fn browser(port: u16, profile: &Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--window-size=1200,680", format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else { unreachable!() };
    // Plain HTTP: chromedriver listens on loopback, so the client needs no TLS at all.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("no WebDriver session with {}: {e}", chromium()))
}

/// Wait until `css` matches an element whose text contains `text`.
async fn wait_for_text(c: &Client, css: &str, text: &str) -> String {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        if let Ok(all) = c.find_all(Locator::Css(css)).await {
            for e in all {
                if let Ok(t) = e.text().await {
                    if t.contains(text) {
                        return t;
                    }
                    seen.push(t);
                }
            }
        }
        if start.elapsed() > PATIENCE {
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            panic!("no {css:?} with {text:?} on {url} within {PATIENCE:?}; seen: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
    let path = artifacts().join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// The numbers in the board's count tiles, by label ("overdue", "open", ...).
async fn board_counts(c: &Client) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for tile in c.find_all(Locator::Css("section.counts a.count")).await.unwrap() {
        let label = tile.find(Locator::Css("span")).await.unwrap().text().await.unwrap();
        let all = tile.text().await.unwrap();
        let n = all.trim().trim_end_matches(label.as_str()).trim();
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("count tile {all:?} has no number"));
        out.push((label, n));
    }
    out
}

fn count(db: &Connection, sql: &str, p: impl rusqlite::Params) -> u64 {
    db.query_row(sql, p, |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// The counts the board must show, computed here from the database with their definitions.
fn expected_counts(db: &Connection) -> Vec<(String, u64)> {
    let now = jiff::Timestamp::now().as_second();
    let day = now - now.rem_euclid(86_400);
    vec![
        ("overdue".into(), count(db, "SELECT count(*) FROM cases WHERE state = 'open' AND due_at < ?1", [now])),
        (
            "due within 6 h".into(),
            count(db, "SELECT count(*) FROM cases WHERE state = 'open' AND due_at >= ?1 AND due_at < ?2", [now, now + 6 * 3600]),
        ),
        ("needs attention".into(), count(db, "SELECT count(*) FROM cases WHERE needs_attention = 1", [])),
        ("open".into(), count(db, "SELECT count(*) FROM cases WHERE state = 'open'", [])),
        ("awaiting info".into(), count(db, "SELECT count(*) FROM cases WHERE state = 'awaiting_info'", [])),
        (
            "closed today".into(),
            count(db, "SELECT count(*) FROM cases WHERE state IN ('resolved', 'rejected') AND resolved_at >= ?1", [day]),
        ),
    ]
}

fn case_ref(id: i64) -> String {
    format!("DL-{id:06}")
}

/// The history of a case: (kind, actor, text).
fn history(db: &Connection, case: i64) -> Vec<(String, String, Option<String>)> {
    let mut st = db.prepare("SELECT kind, actor, text FROM events WHERE case_id = ?1 ORDER BY at, id").unwrap();
    st.query_map([case], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

/// One reply of the outbox, as queued.
struct Queued {
    subject: String,
    state: String,
    raw: String,
}

/// The replies of a case, oldest first.
fn outbox(db: &Connection, case: i64) -> Vec<Queued> {
    let mut st = db.prepare("SELECT subject, state, raw FROM outbox WHERE case_id = ?1 ORDER BY id").unwrap();
    st.query_map([case], |r| {
        Ok(Queued { subject: r.get(0)?, state: r.get(1)?, raw: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(2)?).into_owned() })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// A header of a raw message (unfolded), by name without regard to case.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or(raw);
    let mut found: Option<String> = None;
    let mut in_it = false;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if in_it {
                if let Some(v) = found.as_mut() {
                    v.push_str(line);
                }
            }
            continue;
        }
        in_it = false;
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) && found.is_none() {
                found = Some(v.trim().to_string());
                in_it = true;
            }
        }
    }
    found
}

/// The Message-ID of the newest message of a case from the sender (what a reply answers).
fn latest_message_id(db: &Connection, case: i64) -> String {
    db.query_row(
        "SELECT m.message_id FROM messages m JOIN events e ON e.message_ref = m.id \
         WHERE e.case_id = ?1 AND m.message_id IS NOT NULL ORDER BY m.received_at DESC, m.id DESC LIMIT 1",
        [case],
        |r| r.get(0),
    )
    .unwrap()
}

/// Write `text` in the staff message form `form` (`#reply-form`, `#ask-form`), ask for the
/// preview, check it, send from the preview page; the new outbox row and the preview's Subject.
async fn preview_and_send(c: &Client, db: &Path, case: i64, form: &str, text: &str) -> Queued {
    // A connection per look (a &Connection may not be held across the browser's awaits).
    let outbox = |case| outbox(&Connection::open(db).unwrap(), case);
    let before = outbox(case).len();
    let f = c.find(Locator::Css(form)).await.unwrap();
    f.find(Locator::Css("textarea[name=text]")).await.unwrap().send_keys(text).await.unwrap();
    f.find(Locator::Css("button[name=preview]")).await.unwrap().click().await.unwrap();
    // The preview: the exact message, not sent yet.
    let preview = wait_for_text(c, "section#message-preview", text.lines().next().unwrap()).await;
    assert_eq!(outbox(case).len(), before, "a preview queues nothing");
    let mut subject = None;
    let dts = c.find_all(Locator::Css("section#message-preview dt")).await.unwrap();
    let dds = c.find_all(Locator::Css("section#message-preview dd")).await.unwrap();
    assert_eq!(dts.len(), dds.len());
    for (k, v) in dts.iter().zip(&dds) {
        if k.text().await.unwrap() == "Subject" {
            subject = Some(v.text().await.unwrap());
        }
    }
    let subject = subject.unwrap_or_else(|| panic!("the preview shows no Subject: {preview}"));
    screenshot(c, &format!("{}-preview.png", form.trim_start_matches('#'))).await;
    // The same form on the preview page, prefilled: send it as it is.
    let f = c.find(Locator::Css(form)).await.unwrap();
    let prefilled = f.find(Locator::Css("textarea[name=text]")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(prefilled.as_deref(), Some(text), "the preview keeps the text to send");
    f.find(Locator::Css("button[name=send]")).await.unwrap().click().await.unwrap();
    wait_for_text(c, "table.replies tbody", &subject).await;
    let rows = outbox(case);
    assert_eq!(rows.len(), before + 1, "sending queues exactly one reply");
    let q = rows.into_iter().last().unwrap();
    assert_eq!(q.subject, subject, "the queued reply is the one previewed");
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_member_works_a_case_in_a_real_browser() {
    require_browser();
    let started = Instant::now();
    // A picture of an earlier run's failure would mislead whoever reads this run's.
    let _ = std::fs::remove_file(artifacts().join("failure.png"));
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    run(&["demo", "--dir", demo.to_str().unwrap()], None);
    let db_path = demo.join("delistd.sqlite");
    run(&["staff", "add", STAFF, "--email", "rita@provider.example", "--password-stdin", "--db", db_path.to_str().unwrap()], Some(&format!("{PASSWORD}\n")));

    let (_desk, addr) = start_desk(&db_path, &tmp.path().join("web.log"));
    let (_driver, port) = start_chromedriver(&tmp.path().join("chromedriver.log"));
    let c = browser(port, &tmp.path().join("chromium-profile")).await;
    let result = tokio::spawn(work_the_queue(c.clone(), addr, db_path.clone())).await;
    if let Err(e) = result {
        // What the browser showed, and the two servers' logs (the temporary directory goes
        // with the test), for a failure in CI.
        if let Ok(png) = c.screenshot().await {
            let path = artifacts().join("failure.png");
            if std::fs::write(&path, png).is_ok() {
                eprintln!("the page at the failure: {}", path.display());
            }
        }
        for log in ["web.log", "chromedriver.log"] {
            let text = std::fs::read_to_string(tmp.path().join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- the last lines of {log}:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        let _ = c.close().await;
        std::panic::resume_unwind(e.into_panic());
    }
    // Close the session, so that Chromium goes with the driver.
    let _ = c.close().await;
    println!("browser test: {:.1} s", started.elapsed().as_secs_f64());
}

async fn work_the_queue(c: Client, addr: SocketAddr, db_path: PathBuf) {
    let base = format!("http://{addr}");
    let db = Connection::open(&db_path).unwrap();

    // Not signed in: the board sends the browser to the login form.
    c.goto(&format!("{base}/")).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/login", "not signed in, / must lead to the login form");
    // A wrong password is refused on the page itself.
    c.find(Locator::Css("input[name=username]")).await.unwrap().send_keys(STAFF).await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("not the password").await.unwrap();
    c.find(Locator::Css("form.login button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "p.error", "Wrong name or password").await;
    // The real sign-in.
    let name = c.find(Locator::Css("input[name=username]")).await.unwrap();
    name.clear().await.unwrap();
    name.send_keys(STAFF).await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    c.find(Locator::Css("form.login button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "header.top .who", &format!("{STAFF} (agent)")).await;

    // The board: the demo's active cases, most urgent first, and the counts of the database.
    let active: Vec<i64> = {
        let mut st = db.prepare("SELECT id FROM cases WHERE state IN ('open', 'awaiting_info') ORDER BY id").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert!(active.len() >= 2, "the demo makes several active cases, found {active:?}");
    let mut shown = Vec::new();
    for a in c.find_all(Locator::Css("table.cases tbody a")).await.unwrap() {
        shown.push(a.text().await.unwrap());
    }
    // Most urgent first: by due time, the cases with no clock (awaiting info) last.
    let expected: Vec<String> = {
        let mut st = db
            .prepare("SELECT id FROM cases WHERE state IN ('open', 'awaiting_info') ORDER BY due_at IS NULL, due_at, id")
            .unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(|id| case_ref(id.unwrap())).collect()
    };
    assert_eq!(expected.len(), active.len());
    assert_eq!(shown, expected, "the board lists every active case of the demo once, most urgent first");
    assert_eq!(board_counts(&c).await, expected_counts(&db), "the board's counts are the database's");
    let board_png = screenshot(&c, "board.png").await;

    // Open the first open case that has a banned IP (a "delisted" resolution needs one).
    let (case_id, ip, ndr): (i64, String, Option<String>) = db
        .query_row(
            "SELECT id, ip, ndr_line FROM cases WHERE state = 'open' AND ip IS NOT NULL ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let r = case_ref(case_id);
    c.find(Locator::LinkText(&r)).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "h1", &r).await;
    assert_eq!(c.current_url().await.unwrap().path(), format!("/cases/{r}"));

    // The evidence, as extracted: the IP, the status code, the NDR line.
    let facts = c.find(Locator::Css("dl.facts")).await.unwrap().text().await.unwrap();
    assert!(facts.contains(&ip), "the case page shows the IP {ip}: {facts}");
    if let Some(ndr) = &ndr {
        assert!(facts.contains(ndr.as_str()), "the case page shows the NDR line {ndr:?}: {facts}");
    }
    let code: Option<String> = db.query_row("SELECT status_code FROM cases WHERE id = ?1", [case_id], |r| r.get(0)).unwrap();
    if let Some(code) = code {
        assert!(facts.contains(&code), "the case page shows the status code {code}: {facts}");
    }
    // The thread: each message's decoded text, as text. The text the desk decodes is the
    // reference; its first non-empty lines must be on the page.
    let view = {
        let mut store = delistd::cases::Store::open(&db_path, delistd::cases::StoreOptions::default()).unwrap();
        delistd::desk::Desk::new(&mut store).case(r.parse().unwrap(), jiff::Timestamp::now()).unwrap()
    };
    let bodies = c.find_all(Locator::Css("article.message pre.body")).await.unwrap();
    assert_eq!(bodies.len(), view.messages.len(), "one block of text per message of the thread");
    for (m, shown) in view.messages.iter().zip(&bodies) {
        let shown = shown.text().await.unwrap();
        let text = m.text.as_deref().expect("the demo keeps the raw messages");
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()).take(3) {
            assert!(shown.contains(line), "message {}: {line:?} is not on the page:\n{shown}", m.id);
        }
    }
    let case_png = screenshot(&c, "case.png").await;

    // A free reply, written by a person: previewed, then sent. It answers the sender's latest
    // message, carries the case tag, and has no Auto-Submitted header (RFC 3834 is for
    // automatic replies, which the demo's acknowledgement is: the contrast is checked).
    let ack = outbox(&db, case_id).into_iter().next().expect("the demo acknowledged the request");
    assert!(header(&ack.raw, "Auto-Submitted").is_some(), "the automatic acknowledgement is marked");
    let answered = latest_message_id(&db, case_id);
    let reply_text = "Hello Alice,\nthank you for fixing the account. We are checking the listing now.";
    let free = preview_and_send(&c, &db_path, case_id, "#reply-form", reply_text).await;
    assert_eq!(free.state, "queued");
    assert_eq!(header(&free.raw, "Auto-Submitted"), None, "a person's reply is not automatic:\n{}", free.raw);
    assert_eq!(header(&free.raw, "In-Reply-To").as_deref(), Some(format!("<{answered}>").as_str()), "{}", free.raw);
    assert!(free.subject.contains(&r), "the subject carries the case tag: {}", free.subject);
    assert!(free.raw.contains("We are checking the listing now."), "the staff text is in the reply:\n{}", free.raw);
    let h = history(&db, case_id);
    assert!(
        h.iter().any(|e| e.0 == "staff_reply" && e.1 == STAFF && e.2.as_deref().is_some_and(|t| t.contains("checking the listing"))),
        "the free reply is in the history under {STAFF}: {h:?}"
    );
    assert_eq!(db.query_row("SELECT state FROM cases WHERE id = ?1", [case_id], |r| r.get::<_, String>(0)).unwrap(), "open");
    wait_for_text(&c, "ol.history li", &format!("staff_reply by {STAFF}")).await;

    // Resolve it as delisted, with the reply in the case's language and a line for the sender.
    let replies_before = count(&db, "SELECT count(*) FROM outbox WHERE case_id = ?1", [case_id]);
    let resolve_form = c.find(Locator::XPath("//form[.//button[@value='resolve']]")).await.unwrap();
    resolve_form.find(Locator::Css("input[name=text]")).await.unwrap().send_keys("delisted in the portal").await.unwrap();
    let reply_box = resolve_form.find(Locator::Css("input[name=reply]")).await.unwrap();
    assert!(reply_box.is_selected().await.unwrap(), "the reply is sent unless unticked");
    resolve_form
        .find(Locator::Css("input[name=note_for_sender]"))
        .await
        .unwrap()
        .send_keys("Your address may take an hour to clear everywhere.")
        .await
        .unwrap();
    resolve_form.find(Locator::Css("button[value=resolve]")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "h1 small", "resolved").await;
    wait_for_text(&c, "ol.history li", &format!("resolved by {STAFF}")).await;

    // The database holds what the page said: the case closed, the reply queued, the history.
    let (state, resolution): (String, Option<String>) = db
        .query_row(
            "SELECT c.state, (SELECT text FROM events e WHERE e.case_id = c.id AND e.kind IN ('resolved', 'rejected') \
             ORDER BY e.id DESC LIMIT 1) FROM cases c WHERE c.id = ?1",
            [case_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "resolved");
    assert!(resolution.as_deref().unwrap_or("").contains("delisted in the portal"), "{resolution:?}");
    let reply: Option<(String, String, Vec<u8>)> = db
        .query_row(
            "SELECT recipient, state, raw FROM outbox WHERE case_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET 0",
            [case_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM outbox WHERE case_id = ?1", [case_id]), replies_before + 1, "one reply queued");
    let (recipient, reply_state, raw) = reply.unwrap();
    let sender: String = db.query_row("SELECT sender FROM cases WHERE id = ?1", [case_id], |r| r.get(0)).unwrap();
    assert_eq!((recipient.as_str(), reply_state.as_str()), (sender.as_str(), "queued"));
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains(&ip), "the delisted reply names the IP");
    assert!(raw.contains(&r), "the reply carries the case tag");
    let h = history(&db, case_id);
    let resolved = h.iter().find(|e| e.0 == "resolved").unwrap_or_else(|| panic!("no resolved event: {h:?}"));
    assert_eq!(resolved.1, STAFF, "the history records the signed-in staff member: {h:?}");
    assert!(
        h.iter().any(|e| e.0 == "reply_queued" && e.1 == STAFF),
        "the queued reply is in the history under {STAFF}: {h:?}"
    );
    // The page's list of replies shows the queued one.
    wait_for_text(&c, "table.replies tbody", "queued").await;

    // Ask the sender of another open case for information, from the board: previewed, sent;
    // the case then awaits the answer, its clock paused.
    let (other, other_sender): (i64, String) = db
        .query_row("SELECT id, sender FROM cases WHERE state = 'open' AND id <> ?1 ORDER BY id LIMIT 1", [case_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let other_ref = case_ref(other);
    c.find(Locator::Css("header.top a.brand")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "table.cases", &other_ref).await;
    c.find(Locator::LinkText(&other_ref)).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "h1", &other_ref).await;
    let question = "Could you send us the full bounce you received, with its headers?";
    let asked = preview_and_send(&c, &db_path, other, "#ask-form", question).await;
    assert_eq!(header(&asked.raw, "Auto-Submitted"), None, "a person's question is not automatic:\n{}", asked.raw);
    assert_eq!(header(&asked.raw, "To").map(|t| t.contains(other_sender.as_str())), Some(true), "{}", asked.raw);
    assert!(asked.raw.contains("with its headers?"), "the question is in the message:\n{}", asked.raw);
    wait_for_text(&c, "h1 small", "awaiting_info").await;
    let (state, due): (String, Option<i64>) =
        db.query_row("SELECT state, due_at FROM cases WHERE id = ?1", [other], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((state.as_str(), due), ("awaiting_info", None), "asking pauses the clock");
    let h = history(&db, other);
    assert!(
        h.iter().any(|e| e.0 == "asked" && e.1 == STAFF && e.2.as_deref().is_some_and(|t| t.contains("full bounce"))),
        "the question is in the history under {STAFF}: {h:?}"
    );
    assert!(h.iter().any(|e| e.0 == "reply_queued" && e.1 == STAFF), "{h:?}");

    // Back on the board: the counts follow (one closed today, one more awaiting info).
    c.find(Locator::Css("header.top a.brand")).await.unwrap().click().await.unwrap();
    wait_for_text(&c, "section.counts", "closed today").await;
    let after = expected_counts(&db);
    assert!(after.contains(&("closed today".to_string(), 1)), "{after:?}");
    assert_eq!(board_counts(&c).await, after, "the board's counts are the database's after the actions");
    println!("artifacts: {} {}", board_png.display(), case_png.display());
}
