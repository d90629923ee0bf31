//! OAuth 2.0 logins for mailboxes that take no password (Exchange Online, Google Workspace):
//! a token from the operator's command ([`token`]), sent with SASL `XOAUTH2` or
//! `OAUTHBEARER` ([`sasl`]) by IMAP intake and the SMTP outbox alike.

pub mod sasl;
pub mod token;

pub use token::{Token, TokenError, TokenSource};
