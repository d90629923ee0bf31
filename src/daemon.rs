//! The long-running service: the intake loop and the outbox loop, shutdown, sd_notify.
//!
//! Two tasks share nothing but the database connection and a wake-up signal:
//! * intake takes each waiting message through the [`Pipeline`] (one transaction per
//!   message; over IMAP, the messages of one fetch are committed together), then files it
//!   away in the source;
//! * the outbox sends what the transactions queued.
//!
//! SIGTERM stops both after the message in hand; nothing half-done is left that a restart
//! would not finish (see `pipeline` for why).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::cases::Store;
use crate::config::{Config, Intake};
use crate::intake::imap::{ImapSource, Pending, Woke};
use crate::intake::maildir::Maildir;
use crate::intake::{Disposition, Fetched, SourceKey};
use crate::net::Backoff;
use crate::pipeline::{Pipeline, PipelineError};
use crate::reply::outbox::{Outbox, Transport};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Store(#[from] crate::cases::StoreError),
    #[error(transparent)]
    Maildir(#[from] crate::intake::maildir::MaildirError),
    #[error(transparent)]
    Imap(#[from] crate::intake::imap::ImapError),
    #[error(transparent)]
    Send(#[from] crate::reply::send::SendError),
    #[error("{0}")]
    Task(String),
}

/// The daemon's one connection to the database, shared by intake and outbox.
///
/// Two connections writing the same file in turn cost more than they save: SQLite makes the
/// one that finds the write lock taken sleep (1 ms, then 2, 5, 10 ms …) instead of waking it
/// when the lock is free, and each commit empties the other connection's page cache. A mutex
/// wakes the waiter at once, and one cache stays warm. Nobody holds it across an `.await`
/// (a `MutexGuard` cannot cross one in a spawned task), so it is held for queries only.
pub type SharedStore = Arc<Mutex<Store>>;

/// Lock the shared store. A panic while it was held cannot have left a transaction half
/// done (an uncommitted one is rolled back when dropped), so a poisoned lock is still usable.
pub fn lock(store: &SharedStore) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve until SIGTERM.
    Serve,
    /// Drain what is waiting, send what is queued, exit (cron jobs, the demo, tests).
    Once,
}

/// Best-effort sd_notify: outside systemd, or if the socket is gone, nothing happens.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Counts of what one run did (printed by `run --once` and the demo).
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    pub processed: u64,
    pub quarantined: u64,
    pub already_recorded: u64,
    pub sent: u64,
    pub send_failed: u64,
}

pub async fn run(cfg: Config, mode: Mode) -> Result<RunStats, DaemonError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let wake_outbox = Arc::new(Notify::new());
    let pipeline = Arc::new(Pipeline::new(&cfg)?);

    // Opened (and migrated) up front so a bad database stops us before READY.
    let store: SharedStore = Arc::new(Mutex::new(Store::open(&cfg.store.database, pipeline.store_options())?));

    if mode == Mode::Serve {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; finishing the message in hand");
            notify(&[sd_notify::NotifyState::Stopping]);
            let _ = stop_tx.send(true);
        });
        // The web desk, when the config has a [web] section (see web::daemon_task).
        tokio::spawn(crate::web::daemon_task(cfg.clone(), stop_rx.clone()));
        if let Some(period) = watchdog_period() {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            });
        }
    }

    let transport = match (&cfg.smtp, &cfg.reply_dir) {
        (Some(smtp), _) => Transport::smtp(smtp.clone())?,
        (None, Some(dir)) => Transport::files(dir)?,
        (None, None) => return Err(DaemonError::Task("no way to send replies: [smtp] host or reply_dir".into())),
    };
    let outbox = Outbox::new(transport, cfg_connections(&cfg));

    let intake_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outbox_task = {
        let (store, wake, stop, done) = (store.clone(), wake_outbox.clone(), stop_rx.clone(), intake_done.clone());
        tokio::spawn(async move { outbox.run(store, wake, stop, done, mode == Mode::Once).await })
    };

    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("reading the delist mailbox")]);
    let mut stats = match &cfg.intake {
        Intake::Maildir(m) => {
            maildir_loop(&cfg, &store, &pipeline, &m.path, m.poll_interval, mode, stop_rx.clone(), &wake_outbox).await
        }
        Intake::Imap(_) => imap_loop(&cfg, &store, &pipeline, mode, stop_rx.clone(), &wake_outbox).await,
    }?;
    intake_done.store(true, std::sync::atomic::Ordering::SeqCst);
    wake_outbox.notify_one();
    let sent = outbox_task.await.map_err(|e| DaemonError::Task(e.to_string()))??;
    stats.sent = sent.sent;
    stats.send_failed = sent.failed;
    Ok(stats)
}

fn cfg_connections(cfg: &Config) -> usize {
    cfg.smtp.as_ref().map_or(1, |s| s.connections)
}

fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(Duration::from_micros(usec / 2))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn maildir_loop(
    cfg: &Config,
    store: &SharedStore,
    pipeline: &Pipeline,
    root: &std::path::Path,
    poll: Duration,
    mode: Mode,
    mut stop: watch::Receiver<bool>,
    wake_outbox: &Notify,
) -> Result<RunStats, DaemonError> {
    let md = Maildir::open(root)?;
    let mut stats = RunStats::default();
    loop {
        for entry in md.pending()? {
            if *stop.borrow() {
                return Ok(stats);
            }
            let fetched = md.read(&entry, cfg.max_message_bytes)?;
            let done = pipeline.process(&mut lock(store), &fetched, jiff::Timestamp::now())?;
            stats.count(&done);
            if done.queued_reply {
                wake_outbox.notify_one();
            }
            md.file(&entry, done.disposition)?;
        }
        if mode == Mode::Once {
            return Ok(stats);
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return Ok(stats),
        }
    }
}

impl RunStats {
    fn add(&mut self, other: &RunStats) {
        self.processed += other.processed;
        self.quarantined += other.quarantined;
        self.already_recorded += other.already_recorded;
        self.sent += other.sent;
        self.send_failed += other.send_failed;
    }

    fn count(&mut self, done: &crate::pipeline::Processed) {
        if done.already_recorded {
            self.already_recorded += 1;
        } else if done.disposition == Disposition::Quarantine {
            self.quarantined += 1;
        } else {
            self.processed += 1;
        }
    }
}

/// Messages fetched in one round trip: bounded in count and bytes so memory stays flat
/// however large the backlog.
const BATCH_MESSAGES: usize = 32;
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

fn batches(pending: &[Pending], cap: usize) -> Vec<&[Pending]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, p) in pending.iter().enumerate() {
        let size = u64::from(p.size).min(cap as u64);
        if i > start && (i - start >= BATCH_MESSAGES || bytes + size > BATCH_BYTES) {
            out.push(&pending[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < pending.len() {
        out.push(&pending[start..]);
    }
    out
}

async fn imap_loop(
    cfg: &Config,
    store: &SharedStore,
    pipeline: &Arc<Pipeline>,
    mode: Mode,
    mut stop: watch::Receiver<bool>,
    wake_outbox: &Notify,
) -> Result<RunStats, DaemonError> {
    let Intake::Imap(icfg) = &cfg.intake else { return Err(DaemonError::Task("not an IMAP config".into())) };
    let mut src = ImapSource::new(icfg.clone(), cfg.max_message_bytes)?;
    let mut stats = RunStats::default();
    let mut backoff = Backoff::new(Duration::from_secs(64));
    loop {
        if *stop.borrow() {
            break;
        }
        if !src.is_connected() {
            if let Err(e) = src.connect().await {
                if mode == Mode::Once {
                    return Err(e.into());
                }
                let wait = backoff.step();
                tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "IMAP unavailable");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = stop.changed() => break,
                }
            }
            backoff.reset();
        }
        match drain_imap(&mut src, store, pipeline, &mut stats, &stop, wake_outbox, cfg.max_message_bytes).await {
            Ok(()) => {}
            Err(DaemonError::Imap(e)) => {
                tracing::warn!(error = %e, "IMAP connection lost; reconnecting");
                src.disconnect();
                if mode == Mode::Once {
                    return Err(e.into());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        if mode == Mode::Once || *stop.borrow() {
            break;
        }
        match src.wait(icfg.poll_interval, &mut stop).await {
            Ok(Woke::Check) => {}
            Ok(Woke::Shutdown) => break,
            Err(e) => {
                tracing::warn!(error = %e, "IMAP IDLE failed; reconnecting");
                src.disconnect();
            }
        }
    }
    src.logout().await;
    Ok(stats)
}

/// One fetch's worth of messages: what to fetch, and what is already known to be filed where
/// (index 0: Processed, 1: Quarantine).
#[derive(Default)]
struct Plan {
    to_fetch: Vec<Pending>,
    filed: [Vec<u32>; 2],
}

/// What recording a batch did.
#[derive(Default)]
struct Recorded {
    filed: [Vec<u32>; 2],
    stats: RunStats,
    queued_reply: bool,
}

/// Take every waiting message through the pipeline, then file it away.
///
/// Pipelined: while a thread of the blocking pool records one fetched batch (extract,
/// decide, one transaction), the IMAP connection files the batch before it away and fetches
/// the one after it. A batch is filed only once its transaction has committed; whatever
/// happens on the connection, the batch in hand is waited for before returning.
async fn drain_imap(
    src: &mut ImapSource,
    store: &SharedStore,
    pipeline: &Arc<Pipeline>,
    stats: &mut RunStats,
    stop: &watch::Receiver<bool>,
    wake_outbox: &Notify,
    cap: usize,
) -> Result<(), DaemonError> {
    let pending = src.pending().await?;
    if pending.is_empty() {
        return Ok(());
    }
    tracing::debug!(waiting = pending.len(), "messages waiting");
    let (mailbox, uidvalidity) = (src.mailbox().to_string(), src.uidvalidity());
    // Messages already recorded (a crash came between commit and MOVE) are filed without
    // being fetched again.
    let mut plans: Vec<Plan> = Vec::new();
    {
        let guard = lock(store);
        for batch in batches(&pending, cap) {
            let mut plan = Plan::default();
            for p in batch {
                let key = SourceKey::Imap { mailbox: mailbox.clone(), uidvalidity, uid: p.uid };
                match pipeline.recorded_disposition(&guard, &key)? {
                    Some(d) => {
                        stats.already_recorded += 1;
                        plan.filed[(d == Disposition::Quarantine) as usize].push(p.uid);
                    }
                    None => plan.to_fetch.push(*p),
                }
            }
            plans.push(plan);
        }
    }

    let mut fetched = src.fetch(&plans[0].to_fetch).await?;
    // Committed, not yet filed.
    let mut unfiled: Option<[Vec<u32>; 2]> = None;
    for i in 0..plans.len() {
        if *stop.borrow() {
            break;
        }
        let job = {
            let (store, pipeline, batch) = (store.clone(), pipeline.clone(), std::mem::take(&mut fetched));
            tokio::task::spawn_blocking(move || record_batch(&store, &pipeline, &batch))
        };
        let on_the_wire = async {
            if let Some(done) = unfiled.take() {
                src.file(&done[0], Disposition::Processed).await?;
                src.file(&done[1], Disposition::Quarantine).await?;
            }
            match plans.get(i + 1) {
                Some(next) if !*stop.borrow() => src.fetch(&next.to_fetch).await,
                _ => Ok(Vec::new()),
            }
        }
        .await;
        let recorded = job.await.map_err(|e| DaemonError::Task(format!("recording a batch: {e}")))??;
        stats.add(&recorded.stats);
        if recorded.queued_reply {
            wake_outbox.notify_one();
        }
        let mut done = std::mem::take(&mut plans[i].filed);
        for (all, new) in done.iter_mut().zip(recorded.filed) {
            all.extend(new);
        }
        unfiled = Some(done);
        fetched = on_the_wire?;
    }
    if let Some(done) = unfiled {
        src.file(&done[0], Disposition::Processed).await?;
        src.file(&done[1], Disposition::Quarantine).await?;
    }
    Ok(())
}

/// Record one fetched batch in one transaction (each message still all or nothing, see
/// `Store::batch`). The store stays locked until the commit: the outbox must not see, let
/// alone send, a reply whose request is not committed yet.
fn record_batch(store: &SharedStore, pipeline: &Pipeline, fetched: &[Fetched]) -> Result<Recorded, DaemonError> {
    let mut out = Recorded::default();
    if fetched.is_empty() {
        return Ok(out);
    }
    let mut guard = lock(store);
    let mut batch = guard.batch()?;
    for f in fetched {
        let SourceKey::Imap { uid, .. } = f.key else { continue };
        let done = pipeline.process(&mut batch, f, jiff::Timestamp::now())?;
        out.stats.count(&done);
        out.queued_reply |= done.queued_reply;
        out.filed[(done.disposition == Disposition::Quarantine) as usize].push(uid);
    }
    batch.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_in_count_and_bytes() {
        let many: Vec<Pending> = (1..=70).map(|uid| Pending { uid, size: 1000 }).collect();
        let b = batches(&many, 10 << 20);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![32, 32, 6]);

        let big: Vec<Pending> = (1..=5).map(|uid| Pending { uid, size: 9 << 20 }).collect();
        let b = batches(&big, 10 << 20);
        assert!(b.iter().all(|b| b.len() == 1), "{:?}", b.iter().map(|b| b.len()).collect::<Vec<_>>());

        // A message larger than the cap counts as the cap: it is fetched partially.
        let huge: Vec<Pending> = (1..=3).map(|uid| Pending { uid, size: 200 << 20 }).collect();
        assert_eq!(batches(&huge, 4 << 20).len(), 1);
        assert!(batches(&[], 1).is_empty());
    }
}
