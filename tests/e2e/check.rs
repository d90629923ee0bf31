//! `delistd check-config --connect` against the real servers: each step reported, nothing
//! sent, and a refused login is exit 77.

use crate::common::*;

#[test]
fn check_config_connect_logs_in_to_both_servers_and_sends_nothing() {
    let d = Delistd::with("checkconnect", Options { smtp_security: "tls", ..Options::default() });
    let out = d.command().args(["check-config", "--connect", "--config"]).arg(&d.config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config --connect failed ({}):\n{stdout}\n{stderr}", out.status);
    for want in ["TLS handshake, greeting, LOGIN, LIST, SELECT: ok", "\"INBOX\" selected (UIDVALIDITY", "AUTH, QUIT: ok (no mail sent)"] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    // Nothing was sent: the daemon's own mailbox (From of the replies) got nothing, and no
    // database was made.
    assert!(!d.db.exists(), "check-config made a database");
    let mut inbox = ImapReader::login(&d.delist);
    assert_eq!(inbox.count("INBOX"), 0);

    let wrong = Delistd::with("checkconnect-pw", Options { imap_password: Some("not-the-password".into()), ..Options::default() });
    let out = wrong.command().args(["check-config", "--connect", "--config"]).arg(&wrong.config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(77), "a refused login:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("IMAP localhost:") && stdout.contains("FAILED"), "{stdout}");
}
