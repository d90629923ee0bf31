//! A Maildir as a source: for a daemon on the mail host itself, and for the embedded demo.
//!
//! Pending messages are the files in `new/` and `cur/`. Once recorded, a message is renamed
//! into the Maildir++ folder `.Processed` or `.Quarantine` (rename(2) is atomic on one file
//! system, so a crash leaves it in exactly one place).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{Disposition, Fetched, SourceKey};

#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error("maildir {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MaildirError + '_ {
    move |source| MaildirError::Io { path: path.to_path_buf(), source }
}

/// One message file waiting in the Maildir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    /// The unique part of the name (before `:2,`), the message's stable key.
    pub unique: String,
}

#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

const SUBDIRS: [&str; 3] = ["new", "cur", "tmp"];

impl Maildir {
    /// Open (creating the folders if needed) the Maildir at `root`.
    pub fn open(root: &Path) -> Result<Maildir, MaildirError> {
        for sub in SUBDIRS {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Maildir { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn folder(&self, d: Disposition) -> PathBuf {
        self.root.join(match d {
            Disposition::Processed => ".Processed",
            Disposition::Quarantine => ".Quarantine",
        })
    }

    /// Messages waiting, oldest name first (Maildir names start with the delivery time).
    pub fn pending(&self) -> Result<Vec<Entry>, MaildirError> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.root.join(sub);
            for item in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let item = item.map_err(io_err(&dir))?;
                let name = item.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !item.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    continue;
                }
                let unique = name.split(":2,").next().unwrap_or(&name).to_string();
                out.push(Entry { path: item.path(), unique });
            }
        }
        out.sort_by(|a, b| a.unique.cmp(&b.unique));
        Ok(out)
    }

    /// Read at most `max_bytes` of the message.
    pub fn read(&self, entry: &Entry, max_bytes: usize) -> Result<Fetched, MaildirError> {
        let f = fs::File::open(&entry.path).map_err(io_err(&entry.path))?;
        let size = f.metadata().map_err(io_err(&entry.path))?.len();
        let mut raw = Vec::with_capacity((size as usize).min(max_bytes));
        f.take(max_bytes as u64).read_to_end(&mut raw).map_err(io_err(&entry.path))?;
        Ok(Fetched {
            key: SourceKey::Maildir { dir: self.root.display().to_string(), unique: entry.unique.clone() },
            raw,
            size,
        })
    }

    /// File the message away once its outcome is recorded.
    pub fn file(&self, entry: &Entry, d: Disposition) -> Result<(), MaildirError> {
        let folder = self.folder(d);
        for sub in SUBDIRS {
            let p = folder.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let name = entry.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = if name.contains(":2,") { name } else { format!("{name}:2,S") };
        let target = folder.join("cur").join(name);
        fs::rename(&entry.path, &target).map_err(io_err(&entry.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_read_and_file_move_messages_once() {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        fs::write(dir.path().join("new/1700000001.A.host"), b"Subject: a\r\n\r\nhello").unwrap();
        fs::write(dir.path().join("cur/1700000000.B.host:2,S"), b"Subject: b\r\n\r\nworld!").unwrap();
        let p = md.pending().unwrap();
        assert_eq!(p.iter().map(|e| e.unique.as_str()).collect::<Vec<_>>(), ["1700000000.B.host", "1700000001.A.host"]);

        let f = md.read(&p[0], 3).unwrap();
        assert_eq!((f.raw.as_slice(), f.size), (&b"Sub"[..], 20));

        md.file(&p[0], Disposition::Processed).unwrap();
        md.file(&p[1], Disposition::Quarantine).unwrap();
        assert!(md.pending().unwrap().is_empty());
        assert!(dir.path().join(".Processed/cur/1700000000.B.host:2,S").is_file());
        assert!(dir.path().join(".Quarantine/cur/1700000001.A.host:2,S").is_file());
    }
}
