//! Where messages come from: an IMAP mailbox (TLS, IDLE, UIDs) or a Maildir.
