//! Hostile messages through the whole pipeline (extract → decide → one SQLite transaction),
//! each ending with a recorded outcome in bounded time and memory.
//!
//! Every case runs against a real store in a temporary directory, built from the demo's
//! configuration (10 MiB cap), through `Pipeline::process`, as the daemon does. The inputs
//! are made in memory; the 200 MB one is also read through the Maildir intake, which reads
//! no more than the cap. Files under `tests/regressions/` (inputs that once crashed the
//! fuzzer, `scripts/fuzz.sh`) go through the same path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use delistd::cases::{sha256_hex, Store};
use delistd::config::Config;
use delistd::demo::{self, DemoPaths};
use delistd::intake::maildir::Maildir;
use delistd::intake::{Fetched, SourceKey};
use delistd::pipeline::Pipeline;

/// Generous bounds: a release build does each case in well under a second.
const MAX_TIME: Duration = Duration::from_secs(20);
const MAX_PEAK_RSS_KB: u64 = 1_500_000;

struct Desk {
    _dir: tempfile::TempDir,
    cfg: Config,
    pipeline: Pipeline,
    store: Store,
}

fn desk() -> Desk {
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo::config(&DemoPaths::new(dir.path()));
    let pipeline = Pipeline::new(&cfg).unwrap();
    let store = Store::open(&cfg.store.database, pipeline.store_options()).unwrap();
    Desk { _dir: dir, cfg, pipeline, store }
}

/// The process's peak resident set so far (VmHWM), in kB.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

impl Desk {
    /// Take `f` through the pipeline; assert it ends recorded, in time, within memory.
    fn take(&mut self, name: &str, f: &Fetched) {
        let t0 = Instant::now();
        let done = self.pipeline.process(&mut self.store, f, jiff::Timestamp::now());
        let took = t0.elapsed();
        let done = done.unwrap_or_else(|e| panic!("{name}: the pipeline failed: {e}"));
        assert!(!done.already_recorded, "{name}");
        assert!(took < MAX_TIME, "{name}: {took:?}");
        let row = self
            .store
            .find_message_by_sha256(&sha256_hex(&f.raw))
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no record"));
        // Quarantined would mean extraction panicked (the pipeline catches it): it must not.
        assert!(["processed", "ignored"].contains(&row.outcome.as_str()), "{name}: {} {:?}", row.outcome, row.error);
        let rss = peak_rss_kb();
        assert!(rss < MAX_PEAK_RSS_KB, "{name}: peak RSS {rss} kB");
        eprintln!("{name}: {} bytes, {:?}, {took:.2?}, outcome {}, peak RSS {} MB", f.raw.len(), done.action, row.outcome, rss / 1024);
    }

    fn take_bytes(&mut self, name: &str, raw: Vec<u8>) {
        let f = Fetched { key: SourceKey::File { path: format!("/hostile/{name}") }, size: raw.len() as u64, raw };
        self.take(name, &f)
    }
}

const HEAD: &str = "From: Mallory <mallory@example.com>\r\nTo: delist@provider.example\r\nSubject: delist\r\n\
                    Message-ID: <hostile@example.com>\r\nMIME-Version: 1.0\r\n";
const NDR: &str = "550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal from this list, \
                   forward this message to delist@provider.example.";

#[test]
fn mime_nested_a_thousand_deep() {
    let mut d = desk();
    let depth = 1000;
    let mut m = format!("{HEAD}Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 1..depth {
        m.push_str(&format!("--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n", i - 1));
    }
    m.push_str(&format!("--b{}\r\nContent-Type: text/plain\r\n\r\n{NDR}\r\n", depth - 1));
    for i in (0..depth).rev() {
        m.push_str(&format!("--b{i}--\r\n"));
    }
    d.take_bytes("nested-1000", m.into_bytes());

    // The same depth with message/rfc822 wrappers, each a message of its own.
    let mut m = String::new();
    for _ in 0..depth {
        m.push_str("From: a@example.com\r\nSubject: fwd\r\nContent-Type: message/rfc822\r\n\r\n");
    }
    m.push_str(&format!("Subject: inner\r\n\r\n{NDR}\r\n"));
    d.take_bytes("rfc822-1000", format!("{HEAD}{m}").into_bytes());
}

#[test]
fn a_200_mb_message_is_read_only_up_to_the_cap() {
    let mut d = desk();
    let cap = d.cfg.max_message_bytes;
    let size: u64 = 200 * 1000 * 1000;

    // Through the Maildir intake: a 200 MB file (sparse after its first bytes) is read to
    // the cap, never whole.
    let root = d._dir.path().join("big-maildir");
    let md = Maildir::open(&root).unwrap();
    let path = root.join("new/1700000000.M1P1.big");
    let mut start = format!("{HEAD}Content-Type: text/plain\r\n\r\n{NDR}\r\n").into_bytes();
    while start.len() < 64 * 1024 {
        start.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
    }
    std::fs::write(&path, &start).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(size).unwrap();
    let entry = md.pending().unwrap().pop().unwrap();
    let f = md.read(&entry, cap).unwrap();
    assert_eq!((f.raw.len(), f.size), (cap, size));
    d.take("200MB-maildir", &f);

    // And `extract` handed the whole 200 MB in memory parses only the cap.
    let mut raw = start.clone();
    let line = format!("more text, and once in a while an address 198.51.100.{} ...\r\n", 9);
    while raw.len() < size as usize {
        raw.extend_from_slice(line.as_bytes());
    }
    let t0 = Instant::now();
    let ev = delistd::extract::extract(&raw, &delistd::extract::ExtractOptions::default());
    assert!(t0.elapsed() < MAX_TIME, "{:?}", t0.elapsed());
    assert!(ev.truncated && ev.size == raw.len());
    assert_eq!(ev.valid_ips().first().map(|ip| ip.to_string()).as_deref(), Some("203.0.113.7"));
    drop(raw);
    assert!(peak_rss_kb() < MAX_PEAK_RSS_KB);
}

#[test]
fn a_multipart_of_a_million_parts() {
    let mut d = desk();
    let mut m = format!("{HEAD}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\r\n{NDR}\r\n").into_bytes();
    for _ in 0..1_000_000 {
        m.extend_from_slice(b"--b\r\n\r\nx\r\n");
    }
    m.extend_from_slice(b"--b--\r\n");
    assert!(m.len() <= d.cfg.max_message_bytes, "{} bytes: the parts must all fit under the cap", m.len());
    d.take_bytes("million-parts", m);
}

#[test]
fn ten_thousand_ips_in_one_body() {
    let mut d = desk();
    let mut m = format!("{HEAD}Content-Type: text/plain\r\n\r\n").into_bytes();
    for i in 0..10_000u32 {
        let ip = format!("2001:db8::{:x}", i + 1);
        let line = match i % 3 {
            0 => format!("550 5.7.511 Access denied, banned sender[{ip}]. To request removal, forward this.\r\n"),
            1 => format!("our IP is {ip}\r\n"),
            _ => format!("198.51.{}.{} and {ip}\r\n", i % 256, i / 256),
        };
        m.extend_from_slice(line.as_bytes());
    }
    d.take_bytes("10000-ips", m);
    // Extraction keeps a bounded number of candidates: one message cannot open thousands of cases.
    let cases: i64 = d.store.connection().query_row("SELECT count(*) FROM cases", [], |r| r.get(0)).unwrap();
    assert!((1..=100).contains(&cases), "{cases} cases opened");
}

#[test]
fn a_header_line_of_one_megabyte() {
    let mut d = desk();
    let long = "a".repeat(1 << 20);
    let m = format!(
        "From: Mallory <mallory@example.com>\r\nSubject: {long}\r\nX-Long: {long}\r\nMessage-ID: <{long}@example.com>\r\n\
         To: delist@provider.example\r\nContent-Type: text/plain; charset=\"{long}\"\r\n\r\n{NDR}\r\n"
    );
    d.take_bytes("1MB-header", m.into_bytes());
    // Folded over thousands of lines as well.
    let folded = "word\r\n ".repeat(200_000);
    let m = format!("From: m@example.com\r\nSubject: {folded}end\r\n\r\n{NDR}\r\n");
    d.take_bytes("1MB-folded-header", m.into_bytes());
}

#[test]
fn nul_bytes() {
    let mut d = desk();
    let m = format!("{HEAD}Content-Type: text/plain\r\n\r\n{NDR}\r\n").into_bytes();
    // NULs between every byte, in a header value, and a body of nothing else.
    let every: Vec<u8> = m.iter().flat_map(|&b| [b, 0]).collect();
    d.take_bytes("nul-everywhere", every);
    let mut header = b"From: mal\0lory@example.com\r\nSubject: del\0ist\r\nMessage-ID: <a\0b@example.com>\r\n\r\n".to_vec();
    header.extend_from_slice(NDR.as_bytes());
    d.take_bytes("nul-in-headers", header);
    d.take_bytes("only-nul", vec![0; 1 << 20]);
}

#[test]
fn invalid_utf8_in_headers() {
    let mut d = desk();
    let mut m = Vec::new();
    m.extend_from_slice(b"From: \xff\xfe M\xe9lanie <m\xe9lanie@exampl\xe9.com>\r\n");
    m.extend_from_slice(b"Return-Path: <\xc3\x28@example.com>\r\n");
    m.extend_from_slice(b"Subject: =?utf-8?b?/w==?= \xed\xa0\x80 demande \xe0 retirer\r\n");
    m.extend_from_slice(b"Message-ID: <\xf0\x28\x8c\xbc@example.com>\r\n");
    m.extend_from_slice(b"Content-Type: text/plain; charset=\"\xff\"\r\nContent-Language: \xfe\r\n\r\n");
    m.extend_from_slice(NDR.as_bytes());
    m.extend_from_slice(b"\r\n\xc0\xaf\xe0\x80\xaf\r\n");
    d.take_bytes("invalid-utf8", m);
}

/// Inputs the fuzzer once crashed on (`scripts/fuzz.sh` files them here).
#[test]
fn fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.') && n != "README.md"));
    files.sort();
    let mut d = desk();
    for p in &files {
        let raw = std::fs::read(p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        d.take_bytes(&name, raw);
    }
}
