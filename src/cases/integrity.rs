//! Is the database the file we think it is, and is it whole?
//!
//! * At start, [`Store::open_checked`] runs `PRAGMA quick_check` on an existing file before
//!   anything is written to it (migrations included), and says loudly when it creates a new
//!   one: an empty database where a full one was expected means every message in the mailbox
//!   is answered again.
//! * While running, [`Store::check_file`] compares the device and inode at the path with those
//!   of the file opened. An `rm` or a restore of the file by another program leaves SQLite
//!   writing into an unlinked inode that nobody will ever read; the daemon must stop instead.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rusqlite::Connection;

use super::{Store, StoreError, StoreOptions};

/// Device and inode number of a file: what names it, whatever its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of_path(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId { dev: m.dev(), ino: m.ino() })
    }

    /// The file behind a connection (`None` in memory). Taken right after opening: the window
    /// in which another program could swap the file before this `stat` is not worth a
    /// file descriptor SQLite does not hand out.
    pub(crate) fn of_connection(conn: &Connection) -> Option<FileId> {
        let path = conn.path().filter(|p| !p.is_empty())?;
        FileId::of_path(Path::new(path)).ok()
    }
}

/// How many problems `quick_check` may report before it stops: one is enough to refuse the file,
/// and it keeps the check from listing a whole damaged table.
const QUICK_CHECK_LIMIT: u32 = 1;

/// `PRAGMA quick_check` (SQLite, "PRAGMA quick_check"): the page structure and the records, in
/// O(N) and without the index cross-checks of `integrity_check`.
pub fn quick_check(conn: &Connection) -> Result<(), String> {
    let sql = format!("PRAGMA quick_check({QUICK_CHECK_LIMIT})");
    let mut st = conn.prepare(&sql).map_err(|e| e.to_string())?;
    let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    for r in rows {
        problems.push(r.map_err(|e| e.to_string())?);
    }
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        [] => Err("quick_check returned nothing".into()),
        p => Err(format!("quick_check: {}", p.join("; "))),
    }
}

impl Store {
    /// Open the database of a long-running or writing command (`run`, `reprocess`): an
    /// existing file must pass `quick_check` before it is migrated or written; a new one is
    /// announced at warn level with its path.
    pub fn open_checked(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        let existed = std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false);
        let shown = path.display().to_string();
        let corrupt = |detail: String| StoreError::Corrupt { path: shown.clone(), detail };
        // A new file is made group-writable under the umask, not 0644 (see access.rs);
        // where we cannot create it, neither can SQLite, which says why.
        let _ = super::access::create_file(path);
        let conn = Connection::open(path).map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => corrupt(e.to_string()),
            _ => StoreError::Sqlite(e),
        })?;
        if existed {
            // Before `configure`: switching to WAL already writes to the file.
            conn.busy_timeout(opts.busy_timeout)?;
            quick_check(&conn).map_err(corrupt)?;
        } else {
            tracing::warn!(
                database = %shown,
                "creating a NEW, EMPTY database: if one was expected here, stop delistd now and restore it, \
                 or every message still in the mailbox is answered as new"
            );
        }
        drop(conn);
        let store = Store::open(path, opts).map_err(|e| match e {
            StoreError::Sqlite(ref s)
                if matches!(
                    s.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
                ) =>
            {
                corrupt(s.to_string())
            }
            e => e,
        })?;
        Ok(store)
    }

    /// Is the file at the store's path still the one it opened? `Ok` for an in-memory store.
    pub fn check_file(&self) -> Result<(), StoreError> {
        self.file_watch().map_or(Ok(()), |w| w.check())
    }

    /// What [`Store::check_file`] compares, to check without holding the store.
    pub fn file_watch(&self) -> Option<FileWatch> {
        let path = self.conn.path().filter(|p| !p.is_empty())?;
        Some(FileWatch { path: path.into(), opened: self.file? })
    }
}

/// The path of an open database and the file it named when opened.
#[derive(Debug, Clone)]
pub struct FileWatch {
    path: std::path::PathBuf,
    opened: FileId,
}

impl FileWatch {
    pub fn check(&self) -> Result<(), StoreError> {
        let what = match FileId::of_path(&self.path) {
            Ok(now) if now == self.opened => return Ok(()),
            Ok(_) => "was replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "was deleted",
            // Cannot tell (permissions changed?): say so rather than guess.
            Err(_) => "can no longer be looked at",
        };
        Err(StoreError::FileChanged { path: self.path.display().to_string(), what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sqlite");
        let store = Store::open_checked(&path, StoreOptions::default()).unwrap();
        store.check_file().unwrap();

        std::fs::rename(&path, dir.path().join("moved.sqlite")).unwrap();
        assert!(matches!(store.check_file(), Err(StoreError::FileChanged { what: "was deleted", .. })));

        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            store.check_file(),
            Err(StoreError::FileChanged { what: "was replaced by another file", .. })
        ));
    }

    #[test]
    fn a_damaged_file_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sqlite");
        {
            let s = Store::open(&path, StoreOptions::default()).unwrap();
            // Enough rows for several pages, then checkpointed into the main file.
            s.conn
                .execute_batch(
                    "CREATE TABLE filler(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000)
                     INSERT INTO filler SELECT randomblob(200) FROM n; PRAGMA wal_checkpoint(TRUNCATE);",
                )
                .unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        assert!(bytes.len() > 8 * page, "{}", bytes.len());
        for b in &mut bytes[5 * page..5 * page + 64] {
            *b = 0xA5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = Store::open_checked(&path, StoreOptions::default()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("d.sqlite"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written to a damaged file");
    }
}
