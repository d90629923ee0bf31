//! # delistd
//!
//! Answers the *delist mailbox* of a mail provider. A sender whose IP was banned
//! (`550 5.7.511 ... banned sender[IP]`) mails the full NDR line and the IP; delistd
//! reads the request, opens a case with a 48-hour SLA and replies from a template.
//!
//! # Layout
//!
//! Data flows one way, and each module is one step of it:
//!
//! ```text
//! raw bytes ─ extract ─▶ Evidence ─ decide ─▶ Decision ─ pipeline ─▶ one SQLite transaction
//!                                                                   (message + case + queued reply)
//!                                                        outbox ─▶ SMTP
//! ```
//!
//! * [`extract`]  bytes → [`extract::Evidence`]: MIME walk, NDR lines, status codes, IPs,
//!   language, thread references, auto-reply signs. Pure, no I/O.
//! * [`decide`]   evidence (+ what the store knows of a referenced case) → [`decide::Decision`].
//!   The decision table lives here and nowhere else. Pure.
//! * [`reply`]    templates → reply text; the outbox sender (SMTP).
//! * [`cases`]    the SQLite store: schema and migrations, messages, cases, history, outbox, SLA.
//! * [`pipeline`] one message through extract → decide → store, as one transaction.
//! * [`intake`]   where messages come from: IMAP (TLS, IDLE, UIDs) and Maildir.
//! * [`daemon`]   the long-running loop, shutdown, sd_notify.
//! * [`net`]      TCP + TLS (rustls) connections and backoff, shared by IMAP and SMTP.
//! * [`demo`]     the embedded example Maildir behind `delistd demo`.
//! * [`config`]   the TOML file, validated once with line-precise errors.
//! * [`desk`]     the case service for staff: views, actions and their rules, accounts.
//! * [`web`]      the web desk over [`desk`]: login, sessions, CSRF, board, case page, JSON API.
//! * [`cli`]      the commands of the binary (`inspect`, `run`, `cases ...`).
//! * [`types`]    small domain values shared by every step (status codes, case references, languages).

pub mod cases;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod desk;
pub mod extract;
pub mod intake;
pub mod net;
pub mod pipeline;
pub mod reply;
pub mod types;
pub mod web;
