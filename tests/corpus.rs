//! Extraction over the real bounces of the sisimai set-of-emails corpus (836 messages from
//! about 100 mail servers, BSD-2, see its SOURCE.txt): no panic, bounded time per file, and
//! every status code we report is written in the file (we never invent one).
//!
//! The corpus lives beside the crate at `../shared/corpus/sisimai` (CI has it at the same
//! place; a worktree nested deeper finds it in the nearest ancestor). A missing corpus fails the test: skipping would turn it green for nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use delistd::extract::{extract, ExtractOptions};
use delistd::decide::{decide, Context};

/// Generous: a debug build on a busy 2-core machine; release runs ~1000× faster.
const PER_FILE: Duration = Duration::from_secs(2);

/// `../shared/corpus/sisimai` from the crate root; from a git worktree nested deeper
/// (`/work/wt/NAME`), the nearest ancestor that has `shared/corpus/sisimai`.
fn corpus_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .skip(1)
        .map(|a| a.join("shared/corpus/sisimai"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| root.join("../shared/corpus/sisimai"))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "eml") {
            out.push(p);
        }
    }
}

/// The file's text: its raw bytes, then every part decoded (base64 and quoted-printable hide
/// codes from a byte search: `5.1.=\n1`), nested messages included.
fn file_text(raw: &[u8]) -> Vec<u8> {
    fn parts(m: &mail_parser::Message<'_>, out: &mut Vec<u8>, depth: usize) {
        for p in &m.parts {
            out.extend_from_slice(p.contents());
            out.push(b'\n');
            if let (Some(nested), true) = (p.message(), depth < 8) {
                parts(nested, out, depth + 1);
            }
        }
    }
    let mut out = raw.to_vec();
    // The `mac/` copies end lines with a bare CR; read them with LF line ends.
    let lf: Vec<u8> = raw
        .iter()
        .enumerate()
        .map(|(i, &b)| if b == b'\r' && raw.get(i + 1) != Some(&b'\n') { b'\n' } else { b })
        .collect();
    if let Some(m) = mail_parser::MessageParser::default().parse(&lf) {
        parts(&m, &mut out, 0);
    }
    out
}

/// The code as written (`5.7.606` is also found in its range form `5.7.606-649`).
fn written_in(text: &[u8], code: &str) -> bool {
    let needle = code.as_bytes();
    text.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_corpus_file_extracts_quickly_without_inventing_codes() {
    let dir = corpus_dir();
    assert!(dir.is_dir(), "corpus missing at {} (expected beside the crate)", dir.display());
    let mut all = Vec::new();
    files(&dir, &mut all);
    assert!(all.len() > 800, "expected the ~836 corpus messages, found {}", all.len());

    let opts = ExtractOptions::default();
    let mut problems = Vec::new();
    let mut with_code = 0;
    for path in &all {
        let raw = std::fs::read(path).expect("readable corpus file");
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| extract(&raw, &opts));
        let took = start.elapsed();
        let name = path.strip_prefix(&dir).unwrap_or(path).display().to_string();
        let ev = match result {
            Ok(ev) => ev,
            Err(_) => {
                problems.push(format!("{name}: panicked"));
                continue;
            }
        };
        if took > PER_FILE {
            problems.push(format!("{name}: took {took:?}"));
        }
        let text = file_text(&raw);
        let reported = ev.status_code.iter().chain(&ev.other_codes).chain(ev.ndr_lines.iter().map(|n| &n.status_code));
        for code in reported {
            let s = code.to_string();
            if !written_in(&text, &s) {
                problems.push(format!("{name}: reports {s}, which the file does not contain"));
            }
        }
        with_code += usize::from(ev.status_code.is_some());
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
    // A sanity floor: most bounces carry an enhanced status code somewhere.
    assert!(with_code * 2 > all.len(), "only {with_code} of {} files gave a status code", all.len());
}

/// Real bounces, auto-replies and feedback reports are what a delist mailbox receives most of;
/// answering them is how responders loop (RFC 3834 §2). Nearly all must be recognised as
/// automatic. The few that are not (plain-text bounces with no automatic header at all) get
/// at most one reply a day per address from the loop guard.
#[test]
fn almost_no_real_bounce_would_be_answered() {
    let dir = corpus_dir();
    let mut all = Vec::new();
    files(&dir, &mut all);
    // `maildir/not/` holds messages that are *not* bounces: answering them is right.
    let bounces: Vec<&PathBuf> = all.iter().filter(|p| !p.to_string_lossy().contains("/maildir/not/")).collect();
    assert!(bounces.len() > 800, "corpus at {} has only {} bounces", dir.display(), bounces.len());
    let answered: Vec<String> = bounces
        .iter()
        .filter_map(|p| {
            let raw = std::fs::read(p).ok()?;
            let ev = extract(&raw, &ExtractOptions::default());
            let d = decide(&ev, &Context::default());
            d.reply.map(|_| format!("{}: {}", p.display(), d.reason))
        })
        .collect();
    assert!(answered.len() <= 8, "{} real bounces would be answered:\n{}", answered.len(), answered.join("\n"));
}
