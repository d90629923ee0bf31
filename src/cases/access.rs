//! Who may open the database file, and how a new one is made so that its group may too.
//!
//! The package runs the daemon as `delistd` in group `delistd-staff`, in `/var/lib/delistd`
//! (setgid, 2770) with `UMask=0007`, so that members of the group can use the staff commands
//! without root. Two things stand in the way, and both are handled here:
//!
//! * SQLite creates a new database file with mode 0644 minus the umask (its compiled-in
//!   `SQLITE_DEFAULT_FILE_PERMISSIONS`), so under `UMask=0007` the group gets read but not
//!   write, and a WAL database cannot even be read without writing its `-shm` file. The file
//!   is therefore created here first, with 0666 minus the umask, as any other program's files
//!   are: the umask alone decides. SQLite then gives its `-wal` and `-shm` files the mode of
//!   the database file (`unixOpen` copies it), whichever side creates them, and the setgid
//!   directory gives them its group.
//! * A user outside the group cannot even see the file (`stat` fails in a 2770 directory):
//!   without care that reads as "no database here". [`check`] names the real problem and
//!   the fix, and callers exit with 77 (`EX_NOPERM`, sysexits.h).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The exit code of a command refused access to the database (`EX_NOPERM`).
pub const EXIT_NO_PERMISSION: u8 = 77;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Nothing at that path (callers say so in their own words, with their option's name).
    #[error("no database at {}", .0.display())]
    Missing(PathBuf),
    #[error("{0}")]
    Denied(String),
}

impl AccessError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AccessError::Missing(_) => 1,
            AccessError::Denied(_) => EXIT_NO_PERMISSION,
        }
    }
}

/// Create `db` if it does not exist, empty, with mode 0666 minus the process's umask
/// (SQLite takes an empty file as a new database). An existing file is left as it is.
pub fn create_file(db: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o666).open(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether this process may use the existing database `db`: read and write the file, and
/// create files beside it (SQLite's `-wal` and `-shm`). A refusal names the user, the file's
/// owner, group and mode, and the fix.
pub fn check(db: &Path) -> Result<(), AccessError> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(db) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A directory we may not search also answers "not found" on some systems; if
            // the directory itself is there but closed to us, that is the problem to name.
            return match std::fs::metadata(&dir) {
                Ok(_) if !may(&dir, libc::X_OK) => Err(denied(db, &dir)),
                _ => Err(AccessError::Missing(db.to_path_buf())),
            };
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(denied(db, &closed_ancestor(&dir))),
        Err(e) => return Err(AccessError::Denied(format!("{}: {e}", db.display()))),
    }
    if !may(db, libc::R_OK | libc::W_OK) {
        return Err(denied(db, db));
    }
    if !may(&dir, libc::W_OK | libc::X_OK) {
        return Err(denied(db, &dir));
    }
    Ok(())
}

/// The directory that shuts us out of `dir`: the nearest one we can see but not search
/// (e.g. `/var/lib/delistd`, 2770, for a database in a folder below it).
fn closed_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|p| std::fs::metadata(p).is_ok() && !may(p, libc::X_OK))
        .unwrap_or(dir)
        .to_path_buf()
}

/// access(2): may the real user (we are never setuid) do `mode` on `path`?
fn may(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// The refusal for `db`, describing `what` (the file, or the directory that shuts us out).
fn denied(db: &Path, what: &Path) -> AccessError {
    // SAFETY: getuid(2) cannot fail and touches no memory of ours.
    let uid = unsafe { libc::getuid() };
    let me = name_of("/etc/passwd", uid).unwrap_or_else(|| uid.to_string());
    let Ok(m) = std::fs::metadata(what) else {
        return AccessError::Denied(format!("{}: permission denied for user {me}", db.display()));
    };
    let owner = name_of("/etc/passwd", m.uid()).unwrap_or_else(|| m.uid().to_string());
    let group = name_of("/etc/group", m.gid()).unwrap_or_else(|| m.gid().to_string());
    let kind = if m.is_dir() { "directory" } else { "file" };
    let mode = m.permissions().mode() & 0o7777;
    let fix = if mode & 0o060 == 0o060 {
        format!("ask an administrator to add you to the group {group} (adduser {me} {group}), then log in again")
    } else {
        // The group itself may not write: a database made before the group was meant to
        // (e.g. by an older delistd, whose files were 0640).
        format!("the group {group} may not write it either: an administrator can run chmod g+rw {}", what.display())
    };
    AccessError::Denied(format!(
        "{}: permission denied for user {me}: the staff commands read and write the database, and the {kind} {} \
         is owner {owner}, group {group}, mode {mode:04o}; {fix}",
        db.display(),
        what.display(),
    ))
}

/// The name of `id` in an /etc/passwd or /etc/group style file (name:x:id:...).
fn name_of(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == id).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's umask, as Linux shows it (reading it with umask(2) would change it
    /// for every test thread meanwhile).
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).expect("Umask in /proc/self/status");
        u32::from_str_radix(line.trim(), 8).unwrap()
    }

    #[test]
    fn a_new_file_follows_the_umask_not_sqlites_0644() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.sqlite");
        create_file(&db).unwrap();
        let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
        // Under the unit's UMask=0007 that is 0660: the group may write, as it may not
        // with SQLite's own 0644.
        assert_eq!(mode, 0o666 & !umask(), "{mode:o}");
        // An existing file is kept as it is.
        std::fs::write(&db, b"x").unwrap();
        create_file(&db).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"x");
    }

    #[test]
    fn a_missing_database_is_missing_and_an_existing_one_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.sqlite");
        assert!(matches!(check(&db), Err(AccessError::Missing(_))));
        std::fs::write(&db, b"").unwrap();
        check(&db).unwrap();
    }

    #[test]
    fn names_come_from_the_system_files() {
        assert_eq!(name_of("/etc/passwd", 0).as_deref(), Some("root"));
        assert_eq!(name_of("/etc/group", 0).as_deref(), Some("root"));
        assert_eq!(name_of("/etc/passwd", 4_000_000_000), None);
    }
}
