//! One writing instance per database.
//!
//! `run` and `reprocess` hold an exclusive `flock(2)` on `<database>.lock`, beside the
//! database, for as long as they run. A second one finds it taken and stops at once with
//! [`INSTANCE_LOCKED_EXIT`], naming the holder's PID (written into the file by the holder).
//! Two daemons on one database and one mailbox would each take the same messages and send
//! the same replies; the database's own locking only serialises their transactions.
//!
//! An advisory lock on a separate file, not on the database: SQLite's own locks on the
//! database file are POSIX locks that a second `flock` would not see, and a lock on the
//! database file itself would be released by SQLite closing any descriptor of it. The kernel
//! drops a `flock` when the process dies (kill -9 included), so a stale lock cannot outlive
//! its holder. Staff commands (`cases ...`) do not take it: they are short transactions that
//! SQLite already serialises with the daemon's.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Exit code of a `run` or `reprocess` that found another instance on its database
/// (sysexits' EX_CANTCREAT: the lock could not be created). Listed in the unit's
/// `RestartPreventExitStatus=`: restarting would only meet the other instance again.
pub const INSTANCE_LOCKED_EXIT: u8 = 73;

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "another delistd (PID {pid}) is already using the database {database} (lock {lock}); \
         stop it first, or use `delistd cases` for staff work, which does not need the lock"
    )]
    Held { database: String, lock: String, pid: String },
    #[error("cannot take the instance lock {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `<database>.lock`.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    database.with_file_name(name)
}

/// Take the lock for `database`, or fail at once naming the holder.
pub fn acquire(database: &Path) -> Result<InstanceLock, InstanceError> {
    let path = lock_path(database);
    let io = |source| InstanceError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Not truncated on open: the holder's PID must stay readable for the one refused.
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(InstanceError::Held {
                database: database.display().to_string(),
                lock: path.display().to_string(),
                pid: if pid.is_empty() { "unknown".into() } else { pid.to_string() },
            });
        }
        return Err(io(err));
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    tracing::debug!(lock = %path.display(), "instance lock taken");
    Ok(InstanceLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.sqlite");
        let first = acquire(&db).unwrap();
        assert_eq!(first.path(), dir.path().join("d.sqlite.lock"));
        let e = acquire(&db).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&format!("PID {}", std::process::id())), "{text}");
        drop(first);
        acquire(&db).unwrap();
    }
}
