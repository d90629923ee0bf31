//! `delistd demo`: the whole pipeline on an embedded default, with no mail server.
//!
//! A bundled Maildir of example requests (the files under `demo/maildir/new/`, compiled in)
//! is the source, a SQLite file is the store, and replies are written as `.eml` files.
//! The same code runs as with IMAP and SMTP; only the two ends differ.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, Intake, MaildirSource, Replies, StoreConfig};

/// The example requests: acknowledgements in five languages and forms, missing information,
/// portal and support redirections, an out-of-office auto-reply.
pub const MESSAGES: &[(&str, &[u8])] = &[
    ("1763900001.M1P1.demo", include_bytes!("../demo/maildir/new/1763900001.M1P1.demo")),
    ("1763900002.M2P1.demo", include_bytes!("../demo/maildir/new/1763900002.M2P1.demo")),
    ("1763900003.M3P1.demo", include_bytes!("../demo/maildir/new/1763900003.M3P1.demo")),
    ("1763900004.M4P1.demo", include_bytes!("../demo/maildir/new/1763900004.M4P1.demo")),
    ("1763900005.M5P1.demo", include_bytes!("../demo/maildir/new/1763900005.M5P1.demo")),
    ("1763900006.M6P1.demo", include_bytes!("../demo/maildir/new/1763900006.M6P1.demo")),
    ("1763900007.M7P1.demo", include_bytes!("../demo/maildir/new/1763900007.M7P1.demo")),
    ("1763900008.M8P1.demo", include_bytes!("../demo/maildir/new/1763900008.M8P1.demo")),
    ("1763900009.M9P1.demo", include_bytes!("../demo/maildir/new/1763900009.M9P1.demo")),
];

/// Where the demo puts its files, under `dir`.
pub struct DemoPaths {
    pub maildir: PathBuf,
    pub database: PathBuf,
    pub replies: PathBuf,
}

impl DemoPaths {
    pub fn new(dir: &Path) -> DemoPaths {
        DemoPaths { maildir: dir.join("maildir"), database: dir.join("delistd.sqlite"), replies: dir.join("replies") }
    }
}

/// Lay out the example Maildir in `dir` (again: a second run starts from the same messages
/// and finds them already recorded).
pub fn prepare(dir: &Path) -> std::io::Result<DemoPaths> {
    let p = DemoPaths::new(dir);
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(p.maildir.join(sub))?;
    }
    for (name, bytes) in MESSAGES {
        std::fs::write(p.maildir.join("new").join(name), bytes)?;
    }
    Ok(p)
}

/// The configuration the demo runs with.
pub fn config(p: &DemoPaths) -> Config {
    Config {
        path: PathBuf::from("(demo)"),
        intake: Intake::Maildir(MaildirSource { path: p.maildir.clone(), poll_interval: Duration::from_secs(10) }),
        smtp: None,
        reply_dir: Some(p.replies.clone()),
        store: StoreConfig { database: p.database.clone(), sla: Duration::from_secs(48 * 3600) },
        replies: Replies {
            from: "Delist desk <delist@provider.example>".into(),
            message_id_domain: "provider.example".into(),
            portal_url: "https://sender.office.com/".into(),
            support_url: "https://admin.microsoft.com/#/support".into(),
            max_per_recipient_per_day: 5,
            max_per_domain_per_hour: 30,
            templates_dir: None,
        },
        max_message_bytes: 10 * 1024 * 1024,
        metrics: None,
        escalation: None,
        blocklist: None,
        auth: Default::default(),
        retention: Default::default(),
        web: None,
    }
}

/// Whether `db` is the database of a demo directory (`DIR/delistd.sqlite` beside the demo's
/// Maildir). Staff commands given only `--db` use the demo's reply settings for it, so that
/// `cases resolve --reply` works on the demo as the demo's printed hints promise.
pub fn config_for_database(db: &Path) -> Option<Config> {
    let dir = db.parent()?;
    let p = DemoPaths::new(dir);
    let is_demo = db.file_name() == p.database.file_name() && p.maildir.join("new").is_dir() && p.replies.is_dir();
    is_demo.then(|| config(&p))
}
