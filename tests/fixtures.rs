//! Golden tests: every `tests/fixtures/NAME.eml` is extracted and decided (with no store, as
//! `delistd inspect` does), and the result is compared with `NAME.expected.json`: the
//! `Summary` of `src/cli/inspect.rs` without `file` and `reason`.
//!
//! On a mismatch the actual result is written to `NAME.actual.json` (git-ignored) and the
//! test fails listing every mismatching file with the fields that differ.
//! `DELISTD_BLESS=1 cargo test --test fixtures` rewrites the expected files instead. Every
//! expected file must then be checked by hand: it states what a careful human reads in the
//! message, not what the code happens to output.
//!
//! A fixture may set its own size cap with an `X-Fixture-Max-Bytes: N` header line (to test
//! truncation without a 10 MiB file).

use std::path::{Path, PathBuf};

use delistd::cli::inspect::Summary;
use delistd::decide::{decide, Context};
use delistd::extract::{extract, ExtractOptions};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn max_bytes(raw: &[u8]) -> Option<usize> {
    let head = &raw[..raw.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("X-Fixture-Max-Bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn actual(path: &Path) -> Value {
    let raw = std::fs::read(path).expect("readable fixture");
    let opts = match max_bytes(&raw) {
        Some(n) => ExtractOptions { max_bytes: n },
        None => ExtractOptions::default(),
    };
    let ev = extract(&raw, &opts);
    if raw.len() > opts.max_bytes {
        assert!(ev.truncated, "{}: larger than its cap but not marked truncated", path.display());
    }
    let d = decide(&ev, &Context::default());
    let mut v = serde_json::to_value(Summary::new("", &ev, &d)).expect("summary serializes");
    if let Value::Object(m) = &mut v {
        m.remove("file");
        m.remove("reason");
    }
    v
}

/// One line per differing field: `field: expected X, got Y`.
fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let e = expected.as_object().unwrap_or(&empty);
    let a = actual.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = e.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (e.get(k).unwrap_or(&Value::Null), a.get(k).unwrap_or(&Value::Null));
            (x != y).then(|| format!("    {k}:\n      expected {x}\n      got      {y}"))
        })
        .collect()
}

#[test]
fn every_fixture_matches_its_expected_summary() {
    let dir = fixtures_dir();
    let mut emls: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    emls.sort();
    assert!(emls.len() >= 40, "expected at least 40 fixtures, found {}", emls.len());

    let bless = std::env::var_os("DELISTD_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for eml in &emls {
        let name = eml.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let expected_path = eml.with_file_name(format!("{name}.expected.json"));
        let actual_path = eml.with_file_name(format!("{name}.actual.json"));
        let got = actual(eml);
        let pretty = serde_json::to_string_pretty(&got).expect("json") + "\n";
        if bless {
            std::fs::write(&expected_path, &pretty).expect("write expected");
            let _ = std::fs::remove_file(&actual_path);
            continue;
        }
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(s) => serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: bad JSON: {e}", expected_path.display())),
            Err(_) => {
                std::fs::write(&actual_path, &pretty).expect("write actual");
                failures.push(format!("{name}: no {name}.expected.json (actual written to {name}.actual.json)"));
                continue;
            }
        };
        if expected == got {
            let _ = std::fs::remove_file(&actual_path);
        } else {
            std::fs::write(&actual_path, &pretty).expect("write actual");
            failures.push(format!("{name}:\n{}", diff(&expected, &got).join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ (actual results written as NAME.actual.json):\n{}",
        failures.len(),
        emls.len(),
        failures.join("\n")
    );
}
