//! `delistd reprocess`: a quarantined message is run through again from its stored bytes,
//! and its record is updated in place (one row, one outcome), with its case and reply.

use std::process::Command;

use delistd::cases::{sha256_hex, MessageId, MessageSource, NewMessage, Outcome, RawMessage, Store, StoreOptions};

const REQUEST: &[u8] = b"Return-Path: <ops@shop.example.com>\r\nFrom: Ops <ops@shop.example.com>\r\n\
To: delist@example.test\r\nSubject: please delist\r\nMessage-ID: <rq-1@shop.example.com>\r\n\r\n\
550 5.7.511 Access denied, banned sender[203.0.113.9]. To request removal from this list, forward this message.\r\n";

#[test]
fn a_quarantined_message_is_handled_again_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.sqlite");
    {
        let mut store = Store::open(&db, StoreOptions::default()).unwrap();
        let tx = store.transaction().unwrap();
        tx.insert_message(&NewMessage {
            source: MessageSource::Imap { mailbox: "INBOX".into(), uidvalidity: 7, uid: 42 },
            message_id: None,
            sender: None,
            subject: None,
            received_at: jiff::Timestamp::now(),
            size: REQUEST.len() as u64,
            sha256: sha256_hex(REQUEST),
            raw: RawMessage::Blob(REQUEST),
            evidence: None,
            decision: None,
            action: None,
            outcome: Outcome::Quarantined,
            error: Some("extraction failed: simulated".into()),
        })
        .unwrap();
        tx.commit().unwrap();
    }
    let cfg = dir.path().join("delistd.toml");
    std::fs::write(
        &cfg,
        "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"mail\"\n[smtp]\nreply_dir = \"out\"\n\
         [store]\ndatabase = \"d.sqlite\"\n[replies]\nfrom = \"Delist desk <delist@example.test>\"\n",
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_delistd")).args(["reprocess", "--config"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("[1/1] message 1: acknowledge DL-000001"), "{stdout}");

    let store = Store::open(&db, StoreOptions::default()).unwrap();
    let row = store.message(MessageId(1)).unwrap().unwrap();
    assert_eq!((row.outcome.as_str(), row.action.as_deref()), ("processed", Some("acknowledge")));
    assert_eq!(row.message_id.as_deref(), Some("rq-1@shop.example.com"));
    let case = store.case("DL-000001".parse().unwrap()).unwrap().unwrap();
    assert_eq!(case.ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(store.due_replies(jiff::Timestamp::now(), 10).unwrap().len(), 1, "the acknowledgement is queued");
    assert!(store.quarantined_messages().unwrap().is_empty());

    // Nothing left to do: a second run says so.
    let again = Command::new(env!("CARGO_BIN_EXE_delistd")).args(["reprocess", "--config"]).arg(&cfg).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing quarantined"));
}
