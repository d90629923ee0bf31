//! Backups of the case database, taken while the daemon runs, and putting one back.
//!
//! A backup is `VACUUM INTO`: one read transaction on the live database, so the copy is
//! the database as of one commit (WAL lets the daemon keep writing meanwhile), compacted,
//! with no `-wal` file beside it. The copy is then opened on its own and checked
//! (`PRAGMA integrity_check`, `foreign_key_check`) before it is given its final name.
//!
//! A restore copies a checked backup into the database file through SQLite's backup API,
//! holding an exclusive lock: it is refused while any other process (the daemon, a staff
//! command, the sqlite3 shell) has the database open. Replies the backup still shows as
//! queued may have gone out after it was taken: they are held (marked failed with a reason)
//! unless asked otherwise, so a restored desk does not answer anyone twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::schema;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} already exists; give a new file name (a backup never overwrites)", .0.display())]
    Exists(PathBuf),
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{}: integrity check failed: {problems}", path.display())]
    Corrupt { path: PathBuf, problems: String },
    #[error("{}: not a delistd database ({why})", path.display())]
    NotDelistd { path: PathBuf, why: String },
    #[error(
        "{} is open in another process (the daemon, a staff command or the sqlite3 shell): \
         stop it first (systemctl stop delistd)",
        .0.display()
    )]
    InUse(PathBuf),
}

/// What a database holds, as printed after a backup or a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Contents {
    pub schema_version: u32,
    pub bytes: u64,
    pub messages: i64,
    /// Messages whose raw bytes are still kept (retention drops them).
    pub raw_kept: i64,
    pub cases: i64,
    pub cases_active: i64,
    pub events: i64,
    pub replies_sent: i64,
    pub replies_queued: i64,
    /// The newest message's `received_at` (unix seconds).
    pub last_received_at: Option<i64>,
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = self
            .last_received_at
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map_or_else(|| "never".to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string());
        writeln!(f, "  schema version   {}", self.schema_version)?;
        writeln!(f, "  size             {} bytes", self.bytes)?;
        writeln!(f, "  messages         {} ({} with their raw bytes)", self.messages, self.raw_kept)?;
        writeln!(f, "  last received    {last}")?;
        writeln!(f, "  cases            {} ({} open or awaiting information)", self.cases, self.cases_active)?;
        writeln!(f, "  history events   {}", self.events)?;
        write!(f, "  replies          {} sent, {} queued", self.replies_sent, self.replies_queued)
    }
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite { path: path.to_path_buf(), source }
}

/// Write a consistent, checked copy of the database at `db` to `dest` (a new file).
pub fn backup(db: &Path, dest: &Path) -> Result<Contents, BackupError> {
    if !db.exists() {
        return Err(BackupError::Missing(db.to_path_buf()));
    }
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    // Written under a temporary name and renamed once checked: a file with the final name
    // is always a complete, checked backup.
    let partial = with_suffix(dest, ".partial");
    let _ = std::fs::remove_file(&partial);
    // The messages are senders' personal data: the copy is the owner's alone, whatever the
    // umask. VACUUM INTO writes into an existing file if it is empty.
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|source| BackupError::Io { path: partial.clone(), source })?;
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(sql(db))?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(sql(db))?;
    let target = partial.to_str().ok_or_else(|| BackupError::Io {
        path: partial.clone(),
        source: std::io::Error::other("the backup path must be valid UTF-8"),
    })?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(sql(db))?;
    drop(conn);
    let contents = match check(&partial) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    // The copy reaches the disk before it takes its name (rename is atomic, not durable).
    std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(|source| BackupError::Io { path: partial.clone(), source })?;
    std::fs::rename(&partial, dest).map_err(|source| BackupError::Io { path: dest.to_path_buf(), source })?;
    Ok(contents)
}

/// Open a database file read-only, check it through and count what it holds.
pub fn check(path: &Path) -> Result<Contents, BackupError> {
    if !path.exists() {
        return Err(BackupError::Missing(path.to_path_buf()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(sql(path))?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(sql(path))?;
    let problems: Vec<String> = {
        let mut st = conn.prepare("PRAGMA integrity_check").map_err(sql(path))?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(sql(path))?;
        rows.collect::<Result<_, _>>().map_err(sql(path))?
    };
    if problems != ["ok"] {
        return Err(BackupError::Corrupt { path: path.to_path_buf(), problems: problems.join("; ") });
    }
    let dangling: i64 =
        conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0)).map_err(sql(path))?;
    if dangling > 0 {
        return Err(BackupError::Corrupt { path: path.to_path_buf(), problems: format!("{dangling} dangling reference(s)") });
    }
    contents(&conn, path)
}

fn contents(conn: &Connection, path: &Path) -> Result<Contents, BackupError> {
    let not_ours = |why: String| BackupError::NotDelistd { path: path.to_path_buf(), why };
    let schema_version = schema::user_version(conn).map_err(|e| not_ours(e.to_string()))?;
    let supported = schema::supported_version().map_err(|e| not_ours(e.to_string()))?;
    if schema_version == 0 {
        return Err(not_ours("schema version 0".into()));
    }
    if schema_version > supported {
        return Err(not_ours(format!("schema version {schema_version}, newer than this delistd's {supported}")));
    }
    let count = |q: &str| conn.query_row(q, [], |r| r.get::<_, i64>(0)).map_err(|e| not_ours(e.to_string()));
    Ok(Contents {
        schema_version,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        messages: count("SELECT count(*) FROM messages")?,
        raw_kept: count("SELECT count(*) FROM messages WHERE raw IS NOT NULL OR raw_path IS NOT NULL")?,
        cases: count("SELECT count(*) FROM cases")?,
        cases_active: count("SELECT count(*) FROM cases WHERE state IN ('open', 'awaiting_info')")?,
        events: count("SELECT count(*) FROM events")?,
        replies_sent: count("SELECT count(*) FROM outbox WHERE state = 'sent'")?,
        replies_queued: count("SELECT count(*) FROM outbox WHERE state = 'queued'")?,
        last_received_at: conn
            .query_row("SELECT max(received_at) FROM messages", [], |r| r.get(0))
            .map_err(|e| not_ours(e.to_string()))?,
    })
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub contents: Contents,
    /// Replies the backup had queued, now held (marked failed) rather than sent again:
    /// `(outbox id, recipient, case reference)`.
    pub held: Vec<(i64, String, Option<String>)>,
}

/// Put the backup at `from` in place of the database at `db` (created if missing). Refused
/// while another process has `db` open. Unless `send_queued`, replies still queued in the
/// backup are held: they may have been sent after the backup was taken.
pub fn restore(from: &Path, db: &Path, send_queued: bool, now: jiff::Timestamp) -> Result<Restored, BackupError> {
    check(from)?;
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(sql(from))?;
    let mut dst = Connection::open(db).map_err(sql(db))?;
    // EXCLUSIVE locking mode before the first access: the lock is taken and kept until
    // this connection closes. Any other connection to a WAL database (even an idle one)
    // makes it fail at once instead of overwriting a database in use.
    dst.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sql(db))?;
    match dst.execute_batch("BEGIN EXCLUSIVE; COMMIT;") {
        Ok(()) => {}
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
            return Err(BackupError::InUse(db.to_path_buf()))
        }
        Err(source) => return Err(BackupError::Sqlite { path: db.to_path_buf(), source }),
    }
    {
        let b = rusqlite::backup::Backup::new(&src, &mut dst).map_err(sql(db))?;
        b.run_to_completion(1024, Duration::ZERO, None).map_err(sql(db))?;
    }
    // The backup file is not in WAL mode; the live database is (schema::configure).
    let _: String = dst.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)).map_err(sql(db))?;
    let mut held = Vec::new();
    if !send_queued {
        let tx = dst.transaction().map_err(sql(db))?;
        {
            let mut st = tx
                .prepare("SELECT id, recipient, case_id FROM outbox WHERE state = 'queued' ORDER BY id")
                .map_err(sql(db))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))
                .map_err(sql(db))?;
            for row in rows {
                let (id, to, case) = row.map_err(sql(db))?;
                held.push((id, to, case.map(|c| crate::types::CaseRef(c).to_string())));
            }
        }
        const WHY: &str = "held at restore from a backup: it may have been sent after the backup was taken";
        tx.execute(
            "UPDATE outbox SET state = 'failed', last_error = ?1 WHERE state = 'queued'",
            [WHY],
        )
        .map_err(sql(db))?;
        tx.execute(
            "INSERT INTO events (case_id, kind, actor, text, outbox_ref, at)
             SELECT case_id, 'reply_failed', ?1, ?2, id, ?3 FROM outbox
             WHERE last_error = ?2 AND case_id IS NOT NULL",
            rusqlite::params![super::DAEMON_ACTOR, WHY, now.as_second()],
        )
        .map_err(sql(db))?;
        tx.commit().map_err(sql(db))?;
    }
    let contents = contents(&dst, db)?;
    Ok(Restored { contents, held })
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{Store, StoreOptions};

    fn db_with_a_message(dir: &Path) -> PathBuf {
        let path = dir.join("live.sqlite");
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        store
            .connection()
            .execute(
                "INSERT INTO messages (source_kind, path, received_at, size, sha256, raw, outcome)
                 VALUES ('file', 'a.eml', 1700000000, 3, 'abc', x'616263', 'processed')",
                [],
            )
            .unwrap();
        path
    }

    #[test]
    fn a_backup_is_checked_counted_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_a_message(dir.path());
        // The daemon's connection stays open, in WAL mode, while the backup is taken.
        let _live = Store::open(&db, StoreOptions::default()).unwrap();
        let dest = dir.path().join("b.sqlite");
        let c = backup(&db, &dest).unwrap();
        assert_eq!((c.messages, c.raw_kept, c.cases), (1, 1, 0));
        assert_eq!(c.last_received_at, Some(1700000000));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!with_suffix(&dest, ".partial").exists());
        assert!(matches!(backup(&db, &dest), Err(BackupError::Exists(_))));
    }

    #[test]
    fn restore_is_refused_while_the_database_is_open_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_a_message(dir.path());
        let dest = dir.path().join("b.sqlite");
        backup(&db, &dest).unwrap();
        let live = Store::open(&db, StoreOptions::default()).unwrap();
        assert!(matches!(restore(&dest, &db, false, jiff::Timestamp::now()), Err(BackupError::InUse(_))));
        drop(live);
        let r = restore(&dest, &dir.path().join("new.sqlite"), false, jiff::Timestamp::now()).unwrap();
        assert_eq!(r.contents.messages, 1);
        // The restored copy opens as a store again (WAL, migrations up to date).
        let s = Store::open(&dir.path().join("new.sqlite"), StoreOptions::default()).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::supported_version().unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "hello, not sqlite at all, but long enough to have a header....................").unwrap();
        assert!(check(&f).is_err());
    }
}
