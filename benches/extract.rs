//! Extraction throughput over the sisimai corpus: `cargo bench --bench extract`.
//!
//! `cargo bench --bench extract -- [--seconds N] [--corpus DIR]` prints files/s and MB/s.
//! `cargo bench --bench extract -- --dump FILE...` prints each file's evidence as JSON (one
//! line per file), with the decision summary, for looking at what extraction sees.
//! `--codes` prints `path<TAB>status code` for every corpus file (the agreement script reads it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use delistd::cli::inspect::Summary;
use delistd::decide::{decide, Context};
use delistd::extract::{extract, ExtractOptions};

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

/// CPU seconds this process has used (user + system), from /proc/self/stat. The machine is
/// shared, so CPU time compares fairly with Sisimai where wall time would not.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let opts = ExtractOptions::default();
    if args.first().map(String::as_str) == Some("--dump") {
        for f in &args[1..] {
            let raw = std::fs::read(f).unwrap_or_default();
            let ev = extract(&raw, &opts);
            let d = decide(&ev, &Context::default());
            let summary = Summary::new(f, &ev, &d);
            println!("{}", serde_json::json!({ "summary": summary, "evidence": ev }));
        }
        return;
    }
    let mut seconds = 5.0f64;
    let mut dir = corpus_dir();
    let mut codes = false;
    let mut parse_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(seconds),
            "--corpus" => dir = it.next().map(PathBuf::from).unwrap_or(dir),
            "--codes" => codes = true,
            // mail-parser alone, configured as extraction configures it: the floor under
            // extraction's cost.
            "--parse-only" => parse_only = true,
            _ => {}
        }
    }
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    if paths.is_empty() {
        eprintln!("no .eml files under {}", dir.display());
        std::process::exit(1);
    }
    let data: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap_or_default()).collect();
    if codes {
        for (p, raw) in paths.iter().zip(&data) {
            let ev = extract(raw, &opts);
            let code = ev.status_code.map(|c| c.to_string()).unwrap_or_default();
            if std::env::var_os("DELISTD_BENCH_VERBOSE").is_some() {
                let lines: Vec<&str> = ev.ndr_lines.iter().map(|n| n.text.as_str()).collect();
                println!("{}\t{}\t{:?}\t{:?}", p.display(), code, lines, ev.ips);
            } else {
                println!("{}\t{}", p.display(), code);
            }
        }
        return;
    }
    let bytes: usize = data.iter().map(Vec::len).sum();
    let parser = mail_parser::MessageParser::new()
        .header_content_type(mail_parser::HeaderName::ContentType)
        .header_content_type(mail_parser::HeaderName::ContentDisposition)
        .header_text(mail_parser::HeaderName::ContentTransferEncoding)
        .header_text(mail_parser::HeaderName::Subject)
        .header_date(mail_parser::HeaderName::Date)
        .header_address(mail_parser::HeaderName::From)
        .default_header_ignore();
    let run = |raw: &[u8]| -> usize {
        if parse_only {
            parser.parse(raw).map_or(0, |m| m.parts.len())
        } else {
            extract(raw, &opts).ndr_lines.len()
        }
    };
    // Warm up once, then run whole passes until the time is up.
    let mut sink = 0usize;
    for raw in &data {
        sink += run(raw);
    }
    let budget = Duration::from_secs_f64(seconds);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut passes = 0usize;
    while start.elapsed() < budget || passes == 0 {
        for raw in &data {
            sink += run(raw);
        }
        passes += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => secs,
    };
    let n = (passes * data.len()) as f64;
    println!(
        "{}: {} files ({:.1} MB) x {passes} passes in {secs:.2}s wall, {cpu:.2}s CPU: {:.0} files/s, {:.1} MB/s wall; {:.0} files/s per CPU second (checksum {sink})",
        if parse_only { "mail-parser parse only" } else { "delistd extract" },
        data.len(),
        bytes as f64 / 1e6,
        n / secs,
        (passes * bytes) as f64 / 1e6 / secs,
        n / cpu
    );
}
