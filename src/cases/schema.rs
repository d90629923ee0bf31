//! Opening a database: connection pragmas and the migrations of `schema.sql`.
//!
//! `schema.sql` is a list of sections, each starting with a `-- @version N` line. The
//! database's `PRAGMA user_version` is the last section applied. Missing sections are
//! applied together in one IMMEDIATE transaction that also sets `user_version`, so a
//! database is always exactly at one version: a failure half-way leaves it as it was.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The schema, embedded in the binary.
pub const SCHEMA_SQL: &str = include_str!("../../schema.sql");

const VERSION_MARKER: &str = "-- @version ";

/// One section of `schema.sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub sql: &'static str,
}

/// Split a schema text into its migrations. Versions must run 1, 2, 3, … in order:
/// a gap or a repeat is an editing mistake that would otherwise skip or re-run SQL.
pub fn parse_migrations(text: &'static str) -> Result<Vec<Migration>, StoreError> {
    let mut out: Vec<Migration> = Vec::new();
    // (version, byte offset where its SQL starts)
    let mut current: Option<(u32, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.trim_end().strip_prefix(VERSION_MARKER) {
            let version: u32 = rest
                .trim()
                .parse()
                .map_err(|_| StoreError::BadSchema(format!("bad version marker {:?}", line.trim_end())))?;
            if let Some((v, start)) = current.take() {
                out.push(Migration { version: v, sql: &text[start..offset] });
            }
            let expected = out.len() as u32 + 1;
            if version != expected {
                return Err(StoreError::BadSchema(format!("expected version {expected}, found {version}")));
            }
            current = Some((version, offset + line.len()));
        }
        offset += line.len();
    }
    if let Some((v, start)) = current {
        out.push(Migration { version: v, sql: &text[start..] });
    }
    if out.is_empty() {
        return Err(StoreError::BadSchema("no `-- @version 1` section".into()));
    }
    Ok(out)
}

/// The migrations this binary knows.
pub fn migrations() -> Result<Vec<Migration>, StoreError> {
    parse_migrations(SCHEMA_SQL)
}

/// The schema version this binary writes.
pub fn supported_version() -> Result<u32, StoreError> {
    Ok(migrations()?.last().map_or(0, |m| m.version))
}

pub fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    // user_version is a signed 32-bit field; a negative one was not written by us.
    u32::try_from(v).map_err(|_| StoreError::Invalid(format!("user_version {v}: this is not a delistd database")))
}

/// Per-connection settings. Must run outside any transaction (SQLite ignores
/// `foreign_keys` and refuses `journal_mode` changes inside one).
pub fn configure(conn: &mut Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    // Wait for a writer instead of failing at once: the daemon and the staff CLI share the file.
    conn.busy_handler(Some(busy_wait(busy_timeout)))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Retention frees pages; incremental vacuum gives them back to the file system. Takes
    // effect on a new database only (before its first table); `Store::reclaim_space`
    // switches an older one over.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    // WAL: readers (staff, sqlite3 shell) never block the daemon's writes, nor it them.
    // An in-memory database answers "memory", which is fine.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    // FULL: a committed transaction survives a power cut too, because after a commit the
    // daemon may flag the IMAP message as handled; losing the row would lose the request.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Times any connection of this process found the database locked and waited to retry
/// (`delistd_store_busy_retries_total`). Counted here, read by the metrics module, so that
/// the store does not depend on it.
pub static BUSY_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// SQLite's own busy-timeout handler (`sqliteDefaultBusyCallback` in main.c: sleep 1, 2, 5,
/// 10 ... 100 ms between tries until the timeout is spent), which also counts each retry.
fn busy_wait(timeout: Duration) -> impl FnMut(i32) -> bool + Send + 'static {
    const DELAYS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
    const TOTALS: [u64; 12] = [0, 1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228];
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    move |count: i32| {
        let count = usize::try_from(count).unwrap_or(0);
        let (mut delay, prior) = match DELAYS.get(count) {
            Some(d) => (*d, TOTALS[count]),
            None => (100, TOTALS[11] + 100 * (count as u64 - 11)),
        };
        if prior + delay > timeout_ms {
            delay = timeout_ms.saturating_sub(prior);
            if delay == 0 {
                return false;
            }
        }
        BUSY_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(delay));
        true
    }
}

/// Work a migration needs Rust for, run right after its SQL in the same transaction:
/// version 9 decodes each stored message into the search index and computes each case's
/// IP key.
const CODE_STEPS: &[(u32, CodeStep)] = &[(9, super::search::backfill)];

/// A migration's Rust step, given the migration's transaction.
type CodeStep = fn(&Connection) -> Result<(), StoreError>;

/// Bring the database to the last version of `migrations`, in one transaction.
/// Returns the version found before. A database newer than `migrations` is refused.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<u32, StoreError> {
    let supported = migrations.last().map_or(0, |m| m.version);
    let found = user_version(conn)?;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    if found == supported {
        return Ok(found);
    }
    // IMMEDIATE takes the write lock first, so two processes opening an old database at
    // once migrate it once: the second one re-reads the version under the lock.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = user_version(&tx)?;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for m in migrations.iter().filter(|m| m.version > found) {
        tx.execute_batch(m.sql).map_err(|source| StoreError::Migration { version: m.version, source })?;
        if let Some((_, step)) = CODE_STEPS.iter().find(|(v, _)| *v == m.version) {
            step(&tx).map_err(|e| match e {
                StoreError::Sqlite(source) => StoreError::Migration { version: m.version, source },
                e => e,
            })?;
        }
    }
    tx.pragma_update(None, "user_version", supported)?;
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_sql_splits_into_consecutive_versions() {
        let ms = migrations().unwrap();
        assert_eq!(ms[0].version, 1);
        for (i, m) in ms.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(!m.sql.contains(VERSION_MARKER));
        }
        assert!(ms[0].sql.contains("CREATE TABLE cases"));
        // The preamble (comments) is not part of any migration.
        assert!(!ms[0].sql.contains("Rules for whoever edits this file"));
    }

    #[test]
    fn gaps_and_repeats_in_versions_are_refused() {
        assert!(matches!(parse_migrations("-- @version 1\nA;\n-- @version 3\nB;\n"), Err(StoreError::BadSchema(_))));
        assert!(matches!(parse_migrations("-- @version 1\nA;\n-- @version 1\nB;\n"), Err(StoreError::BadSchema(_))));
        assert!(matches!(parse_migrations("-- no sections\n"), Err(StoreError::BadSchema(_))));
        assert!(matches!(parse_migrations("-- @version one\n"), Err(StoreError::BadSchema(_))));
        let ms = parse_migrations("-- head\n-- @version 1\nA;\n-- @version 2\nB;").unwrap();
        assert_eq!(ms, vec![Migration { version: 1, sql: "A;\n" }, Migration { version: 2, sql: "B;" }]);
    }

    const V1: &str = "CREATE TABLE t (a INTEGER);";
    const V2: &str = "ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x';";

    #[test]
    fn migrating_applies_only_missing_versions_and_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap();
        let v1 = [Migration { version: 1, sql: V1 }];
        assert_eq!(migrate(&mut c, &v1).unwrap(), 0);
        c.execute("INSERT INTO t (a) VALUES (7)", []).unwrap();
        assert_eq!(migrate(&mut c, &v1).unwrap(), 1);
        // A later binary adds v2: only v2 runs, data survives.
        let v2 = [Migration { version: 1, sql: V1 }, Migration { version: 2, sql: V2 }];
        assert_eq!(migrate(&mut c, &v2).unwrap(), 1);
        let b: String = c.query_row("SELECT b FROM t WHERE a = 7", [], |r| r.get(0)).unwrap();
        assert_eq!(b, "x");
        assert_eq!(user_version(&c).unwrap(), 2);
        // ... and the older binary now refuses it.
        assert!(matches!(migrate(&mut c, &v1), Err(StoreError::TooNew { found: 2, supported: 1 })));
    }

    #[test]
    fn a_failing_migration_leaves_the_database_as_it_was() {
        let mut c = Connection::open_in_memory().unwrap();
        let ms = [Migration { version: 1, sql: V1 }, Migration { version: 2, sql: "CREATE TABLE u (x); BOGUS;" }];
        let err = migrate(&mut c, &ms).unwrap_err();
        assert!(matches!(err, StoreError::Migration { version: 2, .. }), "{err}");
        assert_eq!(user_version(&c).unwrap(), 0);
        let tables: i64 = c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 0, "v1 was rolled back with v2");
    }
}
