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
//! * [`reply`]    templates → reply text; the one reply builder every reply goes through
//!   (the pipeline, staff actions, `inspect`); the outbox sender (SMTP).
//! * [`cases`]    the SQLite store: schema and migrations, messages, cases, history, outbox, SLA.
//! * [`pipeline`] one message through extract → decide → store, as one transaction.
//! * [`blocklist`] the provider's list itself (DNSBL zones, a Postfix CIDR file): is an IP
//!   listed, where and why; the re-check of open cases; the optional `delist_command`.
//! * [`enrich`]   the async step between extract and record: blocklist lookups, never under
//!   the store lock.
//! * [`intake`]   where messages come from: IMAP (TLS, IDLE, UIDs) and Maildir.
//! * [`daemon`]   the long-running loop, shutdown, sd_notify.
//! * [`escalation`] staff warnings before and when a case misses its SLA, the daily digest.
//! * [`metrics`]  Prometheus counters and gauges, `/metrics`, `/healthz`, `/readyz`. A leaf:
//!   pure modules never import it.
//! * [`net`]      TCP + TLS (rustls) connections and backoff, shared by IMAP and SMTP.
//! * [`oauth`]    OAuth2 logins (XOAUTH2, OAUTHBEARER) with tokens from the operator's command.
//! * [`redact`]   secrets (tokens) masked in every log line, whatever library printed it.
//! * [`demo`]     the embedded example Maildir behind `delistd demo`.
//! * [`config`]   the TOML file, validated once with line-precise errors.
//! * [`redact`]   keeps passwords out of every log line, the protocol libraries' included.
//! * [`desk`]     the case service for staff: views, actions and their rules, accounts.
//! * [`web`]      the web desk over [`desk`]: login, sessions, CSRF, board, case page, JSON API.
//! * [`cli`]      the commands of the binary (`inspect`, `run`, `cases ...`).
//! * [`types`]    small domain values shared by every step (status codes, case references, languages).

pub mod blocklist;
pub mod cases;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod escalation;
pub mod enrich;
pub mod desk;
pub mod extract;
pub mod intake;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod pipeline;
pub mod redact;
pub mod reply;
pub mod types;
pub mod web;
