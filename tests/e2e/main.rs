//! delistd against the real mail stack of `scripts/mailstack.sh`: requests go in by SMTP to
//! Postfix, which delivers them over LMTP to the delist mailbox in Dovecot; the real binary
//! reads them over IMAP, records them, and sends its replies by SMTP back through Postfix to
//! the senders' mailboxes, where the tests read them over IMAP. Nothing is mocked.
//!
//! These tests share the stack with each other (they run in parallel, each with mailboxes
//! of its own) but never stop or restart a server: that is `tests/faults.rs`, run after
//! them. Run with `bash scripts/test.sh`, or see `tests/common/mod.rs` for a stack of your own.

#[path = "../common/mod.rs"]
mod common;
#[path = "../dnsbl/mod.rs"]
mod dnsbl;

mod backlog;
mod backup;
mod check;
mod blocklist;
mod bounces;
mod crash;
mod escalation;
mod flow;
mod hostile;
mod supervision;
mod oauth;
mod metrics;
mod standby;
mod threads;
mod tls;
