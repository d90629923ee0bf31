//! Raw bytes → `extract` → `decide`, the pure steps every message goes through before
//! anything is written. Besides "never panics", it checks the promises the rest of the
//! daemon builds on.
#![no_main]

use std::sync::Once;

use delistd::decide::{decide, Action, Context, Referenced, ReferencedCase};
use delistd::extract::{extract, ExtractOptions};
use libfuzzer_sys::fuzz_target;

/// libfuzzer-sys aborts on every panic, even one that is caught. mail-parser has panics of
/// its own on some broken MIME, and `extract` runs it under `catch_unwind` and falls back to
/// scanning the raw text (src/extract/mime.rs), so those are let through to be caught; any
/// other panic, and any that escapes `extract`, still aborts and is a finding.
fn let_contained_panics_unwind() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_mail_parser = info.location().is_some_and(|l| l.file().contains("/mail-parser-"));
            if !in_mail_parser {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_contained_panics_unwind();
    // A small cap as well as the default one, so that cutting a message mid-structure is
    // exercised with inputs of fuzzing size.
    for max_bytes in [ExtractOptions::default().max_bytes, 512] {
        let opts = ExtractOptions { max_bytes };
        let ev = extract(data, &opts);
        assert_eq!(ev.size, data.len());
        assert_eq!(ev.truncated, data.len() > max_bytes);
        // The pipeline stores the evidence as JSON.
        serde_json::to_string(&ev).expect("evidence serializes");

        let mut contexts = vec![Context::default(), Context { referenced: Referenced::Unknown }];
        if let Some(r) = ev.case_ref {
            for awaiting_info in [false, true] {
                contexts.push(Context {
                    referenced: Referenced::Found(ReferencedCase {
                        case_ref: r,
                        awaiting_info,
                        status_code: ev.status_code,
                        ip: ev.valid_ips().first().copied(),
                    }),
                });
            }
        }
        for ctx in &contexts {
            let d = decide(&ev, ctx);
            serde_json::to_string(&d).expect("decision serializes");
            // RFC 3834: never answer automatic mail.
            if ev.is_automatic() {
                assert!(d.reply.is_none(), "reply {:?} to an automatic message: {}", d.reply, d.reason);
            }
            // A case is opened for an IP only when it is a valid public one.
            if d.action == Action::Acknowledge {
                assert!(!d.banned_ips.is_empty(), "acknowledged without an IP: {}", d.reason);
                let valid = ev.valid_ips();
                assert!(d.banned_ips.iter().all(|ip| valid.contains(ip)), "{:?} not among {valid:?}", d.banned_ips);
            }
        }
    }
});
