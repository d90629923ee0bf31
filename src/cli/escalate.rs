//! `delistd escalate --once`: one escalation pass (stage warnings and the daily digest, see
//! [`crate::escalation`]), then the outbox is run once to send what was queued.
//!
//! For a database no daemon serves (a mailbox read by `run --once` from cron, the daemon on
//! another host). Not beside a running daemon on the same database: the daemon does this
//! itself, and two outboxes could pick up the same queued mail. A stage is still recorded
//! once whoever gets there first.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use super::Exit;
use crate::cases::{Store, StoreOptions};
use crate::config::Config;
use crate::escalation::Escalator;
use crate::reply::outbox::{Outbox, Transport};

pub fn run(config: &Path, now: Timestamp) -> Exit {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Config;
        }
    };
    let escalator = match Escalator::new(&cfg) {
        Ok(Some(e)) => e,
        Ok(None) => {
            eprintln!(
                "delistd: {}: no [escalation] section, so nobody to warn (add one with notify = [\"team@example.net\"])",
                config.display()
            );
            return Exit::Config;
        }
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Config;
        }
    };
    // The daemon's lock: a daemon on this database makes the same passes and sends from the
    // same outbox, and two senders would race for the same rows.
    let _instance = match crate::daemon::instance::acquire(&cfg.store.database) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delistd: {e} (the daemon escalates by itself; `escalate --once` is for a database no daemon serves)");
            return match e {
                crate::daemon::instance::InstanceError::Held { .. } => {
                    Exit::Code(crate::daemon::instance::INSTANCE_LOCKED_EXIT)
                }
                _ => Exit::Failure,
            };
        }
    };
    let opts = StoreOptions { sla: SignedDuration::from_secs(cfg.store.sla.as_secs() as i64), ..StoreOptions::default() };
    let store = match Store::open(&cfg.store.database, opts) {
        Ok(s) => Arc::new(Mutex::new(s)),
        Err(e) => {
            eprintln!("delistd: {}: {e}", cfg.store.database.display());
            return Exit::Failure;
        }
    };
    let passed = {
        let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
        match escalator.pass(&mut guard, now) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("delistd: escalation: {e}");
                return Exit::Failure;
            }
        }
    };
    if passed.quiet {
        println!("quiet hours: nothing sent now, warnings wait for their end");
    }
    for (case, stage) in &passed.warned {
        println!("{case}: {stage}");
    }
    if let Some((day, n)) = &passed.digest {
        println!("digest for {day}: {n} case(s)");
    }
    if let Some(day) = &passed.empty_digest {
        println!("digest for {day}: nothing to report, not sent");
    }

    let transport = match (&cfg.smtp, &cfg.reply_dir) {
        (Some(smtp), _) => Transport::smtp(smtp.clone()),
        (None, Some(dir)) => Transport::files(dir),
        (None, None) => {
            eprintln!("delistd: no way to send mail: [smtp] host or reply_dir");
            return Exit::Config;
        }
    };
    let transport = match transport {
        Ok(t) => t,
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Config;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("delistd: cannot start the runtime: {e}");
            return Exit::Failure;
        }
    };
    let connections = cfg.smtp.as_ref().map_or(1, |s| s.connections);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let outbox = Outbox::new(transport, connections);
    let sent = rt.block_on(outbox.run(
        store.clone(),
        Arc::new(tokio::sync::Notify::new()),
        stop_rx,
        Arc::new(AtomicBool::new(true)),
        true,
        &|| {},
    ));
    match sent {
        Ok(s) => println!("{} mail(s) queued, {} sent, {} given up", passed.mails, s.sent, s.failed),
        Err(e) => {
            eprintln!("delistd: sending: {e}");
            return Exit::TempFail;
        }
    }
    let waiting: i64 = store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .connection()
        .query_row("SELECT count(*) FROM outbox WHERE state = 'queued' AND to_staff = 1", [], |r| r.get(0))
        .unwrap_or(0);
    if waiting > 0 {
        eprintln!("delistd: {waiting} staff mail(s) could not be sent yet; the next run (or the daemon) retries them");
        return Exit::TempFail;
    }
    Exit::Ok
}
