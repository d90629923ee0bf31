//! Keeping the database for years: `backup`, `restore` and `purge`.

use std::io::Write;
use std::path::Path;

use crate::cases::backup::{self, BackupError};
use crate::cases::{Store, StoreOptions};
use crate::cli::Exit;
use crate::config::Retention;

fn backup_exit(e: &BackupError) -> Exit {
    match e {
        BackupError::Missing(_) => Exit::NoInput,
        BackupError::Exists(_) => Exit::Usage,
        // sysexits EX_TEMPFAIL: stop the daemon and try again.
        BackupError::InUse(_) => Exit::TempFail,
        _ => Exit::Failure,
    }
}

/// `delistd backup FILE`: a consistent copy of the live database, checked, and what it holds.
pub fn run_backup(db: &Path, dest: &Path, out: &mut impl Write, err: &mut impl Write) -> Exit {
    match backup::backup(db, dest) {
        Ok(c) => {
            let _ = writeln!(out, "backup of {} written to {} and checked (integrity ok):\n{c}", db.display(), dest.display());
            Exit::Ok
        }
        Err(e) => {
            let _ = writeln!(err, "delistd: backup failed: {e}");
            backup_exit(&e)
        }
    }
}

/// `delistd restore FILE`: put a backup in place of the database, the daemon stopped.
pub fn run_restore(from: &Path, db: &Path, send_queued: bool, out: &mut impl Write, err: &mut impl Write) -> Exit {
    match backup::restore(from, db, send_queued, jiff::Timestamp::now()) {
        Ok(r) => {
            let _ = writeln!(out, "{} restored from {} (integrity ok):\n{}", db.display(), from.display(), r.contents);
            if !r.held.is_empty() {
                let _ = writeln!(
                    out,
                    "\n{} reply(ies) the backup still had queued are held, not sent: they may have gone out after \
                     the backup was taken (each case's history says so). Check with the sender if needed:",
                    r.held.len()
                );
                for (id, to, case) in &r.held {
                    let _ = writeln!(out, "  reply {id} to {to}{}", case.as_deref().map(|c| format!(" ({c})")).unwrap_or_default());
                }
            }
            let _ = writeln!(
                out,
                "\nMessages recorded after the backup are not in it. Over IMAP they were already moved out of the \
                 mailbox; find them in the processed folder and move them back to be read again (their Message-IDs \
                 and contents make a second reading safe)."
            );
            Exit::Ok
        }
        Err(e) => {
            let _ = writeln!(err, "delistd: restore refused: {e}");
            backup_exit(&e)
        }
    }
}

/// `delistd purge [--dry-run]`: apply `[retention]` now.
pub fn run_purge(db: &Path, retention: &Retention, dry_run: bool, out: &mut impl Write, err: &mut impl Write) -> Exit {
    let mut store = match Store::open(db, StoreOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "delistd: {}: {e}", db.display());
            return Exit::Failure;
        }
    };
    let before = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    let policy = format!(
        "raw messages older than {} days on closed cases; {}",
        retention.raw_days,
        retention.case_days.map_or("closed cases kept".to_string(), |d| format!("cases closed more than {d} days ago"))
    );
    match store.purge(retention, jiff::Timestamp::now(), dry_run) {
        Ok(rep) if dry_run => {
            let _ = writeln!(out, "would purge ({policy}):\n  {rep}");
            Exit::Ok
        }
        Ok(rep) => {
            let after = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
            let _ = writeln!(out, "purged ({policy}):\n  {rep}\n  database {before} -> {after} bytes");
            Exit::Ok
        }
        Err(e) => {
            let _ = writeln!(err, "delistd: purge failed: {e}");
            Exit::Failure
        }
    }
}
