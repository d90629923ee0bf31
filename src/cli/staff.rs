//! `delistd staff ...`: the accounts of the web desk.
//!
//! Passwords are read from standard input (`--password-stdin`), never from the command
//! line, where `ps` and shell history would show them; only an argon2id hash is stored.
//!
//! Exit codes: 0 done; 1 database error; 2 usage (bad name, short password, no such
//! account); 4 refused (the account exists); 77 this user may not open the database (not a
//! member of its group, e.g. `delistd-staff`).

use std::io::{self, BufRead, Write};
use std::path::Path;

use jiff::Timestamp;

use crate::cases::{Store, StoreOptions};
use crate::desk::{accounts, tokens, DeskError, Role};

#[derive(Debug, clap::Subcommand)]
pub enum StaffCmd {
    /// Give someone an account (the password is read from standard input).
    Add {
        /// The name they log in with and that the history records.
        name: String,
        /// Their e-mail address (for the account list; nothing is sent to it).
        #[arg(long)]
        email: Option<String>,
        /// agent: reads and acts; viewer: reads only.
        #[arg(long, default_value = "agent", value_parser = ["agent", "viewer"])]
        role: String,
        /// Read the password from the first line of standard input (required: a password
        /// on the command line would be visible to every user of the machine).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// The accounts, their e-mail and role.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (read from standard input); ends the account's web sessions.
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Remove an account, its sessions and its API token (its name stays in the history).
    Remove { name: String },
    /// Make a new API token for an account (replacing its old one) and print it, once.
    ///
    /// The token reads the JSON API (/api/cases, /api/cases/{ref}) as that account, sent as
    /// `Authorization: Bearer <token>`; never the pages, never an action. Only its hash is
    /// stored: keep the printed token somewhere safe, or make a new one.
    Token {
        /// The staff account the token reads as.
        name: String,
        /// Take the account's token away instead.
        #[arg(long)]
        revoke: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error("no database at {} (check --db)", .0.display())]
    NoDatabase(std::path::PathBuf),
    #[error(transparent)]
    Desk(#[from] DeskError),
    #[error("reading the password from standard input: {0}")]
    Io(#[from] io::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Access(crate::cases::access::AccessError),
}

impl StaffError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StaffError::Desk(DeskError::Invalid(_)) => 2,
            StaffError::Desk(DeskError::Refused(_)) => 4,
            StaffError::Access(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// The first line of `input`, without its line end.
fn read_password(input: &mut dyn BufRead) -> Result<String, StaffError> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        return Err(DeskError::Invalid("no password on standard input".into()).into());
    }
    Ok(p)
}

pub fn run(cmd: StaffCmd, db: &Path, now: Timestamp, input: &mut dyn BufRead, out: &mut dyn Write) -> Result<(), StaffError> {
    match crate::cases::access::check(db) {
        Err(crate::cases::access::AccessError::Missing(_)) => return Err(StaffError::NoDatabase(db.to_path_buf())),
        Err(e) => return Err(StaffError::Access(e)),
        Ok(()) => {}
    }
    let store = Store::open(db, StoreOptions::default()).map_err(DeskError::from)?;
    match cmd {
        StaffCmd::Add { name, email, role, password_stdin: _ } => {
            let role: Role = role.parse().map_err(DeskError::Invalid)?;
            let password = read_password(input)?;
            let a = accounts::add(&store, &name, email.as_deref(), role, &password, now)?;
            writeln!(out, "staff {} added ({})", a.name, a.role.as_str())?;
        }
        StaffCmd::List { json } => {
            let list = accounts::list(&store)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &list)?;
                writeln!(out)?;
            } else if list.is_empty() {
                writeln!(out, "no staff accounts (add one with: delistd staff add NAME --password-stdin)")?;
            } else {
                writeln!(out, "{:<20} {:<7} {:<9} EMAIL", "NAME", "ROLE", "API TOKEN")?;
                for a in list {
                    let token = if a.api_token { "yes" } else { "-" };
                    writeln!(out, "{:<20} {:<7} {:<9} {}", a.name, a.role.as_str(), token, a.email.as_deref().unwrap_or("-"))?;
                }
            }
        }
        StaffCmd::Passwd { name, password_stdin: _ } => {
            let password = read_password(input)?;
            accounts::passwd(&store, &name, &password)?;
            writeln!(out, "password of {name} changed; their web sessions are closed")?;
        }
        StaffCmd::Remove { name } => {
            accounts::remove(&store, &name)?;
            writeln!(out, "staff {name} removed")?;
        }
        StaffCmd::Token { name, revoke: true } => {
            if tokens::revoke(&store, &name)? {
                writeln!(out, "the API token of {name} is revoked")?;
            } else if accounts::role_of(&store, &name)?.is_none() {
                return Err(DeskError::Invalid(format!("no staff member {name}")).into());
            } else {
                writeln!(out, "{name} had no API token")?;
            }
        }
        StaffCmd::Token { name, revoke: false } => {
            let token = tokens::issue(&store, &name, now)?;
            // The token alone on stdout, for `TOKEN=$(delistd staff token ann)`; the rest on stderr.
            writeln!(out, "{token}")?;
            eprintln!(
                "API token of {name} (shown once; any earlier one no longer works). Use it as:\n  \
                 curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080/api/cases"
            );
        }
    }
    Ok(())
}
