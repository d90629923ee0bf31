//! `delistd outbox ...`: see and requeue the replies waiting, sent or given up.
//!
//! Safe while the daemon runs, like `cases`: one short transaction, no instance lock. A
//! requeued reply keeps its bytes, hence its Message-ID: a recipient who got an earlier
//! copy after all sees the same message again, and the daemon picks it up on its next round
//! (at most 15 s later).
//!
//! Exit codes: 0 done; 1 database error; 2 usage (`--actor` naming someone else, not being
//! root); 3 no such reply; 4 refused (the reply is not `failed`: nothing was requeued);
//! 77 this user may not open the database (not a member of its group).

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use serde_json::json;

use crate::cases::{OutboxId, OutboxRow, OutboxState, Store, StoreError, StoreOptions};

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCmd {
    /// Replies, newest first: state, attempts, recipient, last error.
    List {
        /// Only replies in this state.
        #[arg(long, value_parser = ["queued", "sent", "failed"])]
        state: Option<String>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per reply, in an array.
        #[arg(long)]
        json: bool,
    },
    /// Queue failed replies again, due now, keeping their Message-ID: one by id, or every
    /// failed one with --failed.
    Retry {
        /// The reply's id (first column of `outbox list`).
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<i64>,
        /// Every failed reply.
        #[arg(long)]
        failed: bool,
        /// Who asks, for the case history; only root may name someone (default: the Unix
        /// user, or $SUDO_USER under sudo), as for the `cases` commands' --by.
        #[arg(long, alias = "by", env = "DELISTD_STAFF")]
        actor: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxCliError {
    #[error("no database at {} (check --db)", .0.display())]
    NoDatabase(std::path::PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// This user may not open the database (not in its group): exit 77.
    #[error(transparent)]
    Access(crate::cases::access::AccessError),
    /// Bad usage, e.g. --actor naming someone else without being root: exit 2.
    #[error("{0}")]
    Usage(String),
}

impl OutboxCliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            OutboxCliError::Store(StoreError::ReplyState { .. }) => super::cases::EXIT_REFUSED,
            OutboxCliError::Store(StoreError::Invalid(m)) if m.starts_with("no reply") => super::cases::EXIT_NOT_FOUND,
            OutboxCliError::Access(e) => e.exit_code(),
            OutboxCliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub fn run(cmd: OutboxCmd, db: &Path, now: Timestamp, out: &mut dyn Write) -> Result<(), OutboxCliError> {
    match crate::cases::access::check(db) {
        Err(crate::cases::access::AccessError::Missing(_)) => return Err(OutboxCliError::NoDatabase(db.to_path_buf())),
        Err(e) => return Err(OutboxCliError::Access(e)),
        Ok(()) => {}
    }
    let mut store = Store::open(db, StoreOptions::default())?;
    match cmd {
        OutboxCmd::List { state, limit, json } => {
            let state = state.as_deref().map(|s| s.parse::<OutboxState>()).transpose().map_err(StoreError::Invalid)?;
            let limit = if limit == 0 { u32::MAX } else { limit };
            let rows = store.outbox_rows(state, limit)?;
            if json {
                let v: Vec<_> = rows.iter().map(row_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&v).map_err(std::io::Error::other)?)?;
            } else if rows.is_empty() {
                writeln!(out, "no replies")?;
            } else {
                writeln!(
                    out,
                    "{:>6}  {:<6}  {:>3}  {:<9}  {:<32}  LAST ERROR / SUBJECT",
                    "ID", "STATE", "TRY", "CASE", "TO"
                )?;
                for r in &rows {
                    let case = r.case_ref.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
                    let what = r.last_error.as_deref().unwrap_or(&r.subject);
                    writeln!(
                        out,
                        "{:>6}  {:<6}  {:>3}  {:<9}  {:<32}  {}",
                        r.id.0,
                        r.state.as_str(),
                        r.attempts,
                        case,
                        r.recipient,
                        what
                    )?;
                }
            }
        }
        OutboxCmd::Retry { id, failed: _, actor } => {
            // The history says who really asked: the same rule as every staff command
            // ($USER alone could name anyone).
            let actor = super::cases::actor(actor).map_err(|e| OutboxCliError::Usage(e.to_string()))?.name;
            let ids: Vec<OutboxId> = id.map(OutboxId).into_iter().collect();
            let done = store.requeue_failed(&ids, &actor, now)?;
            if done.is_empty() {
                writeln!(out, "no failed replies")?;
            }
            for id in done {
                let r = store.outbox_row(id)?;
                let (to, mid) = r.map(|r| (r.recipient, r.message_id)).unwrap_or_default();
                writeln!(out, "reply {id} to {to} queued again (Message-ID <{mid}>)")?;
            }
        }
    }
    Ok(())
}

fn row_json(r: &OutboxRow) -> serde_json::Value {
    json!({
        "id": r.id.0,
        "state": r.state.as_str(),
        "case": r.case_ref.map(|c| c.to_string()),
        "recipient": r.recipient,
        "message_id": r.message_id,
        "subject": r.subject,
        "attempts": r.attempts,
        "queued_at": r.queued_at.to_string(),
        "next_attempt_at": r.next_attempt_at.to_string(),
        "sent_at": r.sent_at.map(|t| t.to_string()),
        "last_error": r.last_error,
    })
}
