//! The intake task: every waiting message through the [`Pipeline`], then filed away in its
//! source (Maildir or IMAP).
//!
//! What may go wrong, and what happens then:
//! * the database is busy beyond the busy timeout (another program holds the write lock):
//!   nothing of the message is recorded, it stays where it is, and the loop tries again
//!   after a backoff (logged with the message it affects);
//! * a Maildir file vanishes between listing and reading or filing (Dovecot renames
//!   `new/` → `cur/` when someone opens the mailbox): skipped now, found under its new
//!   name on the next pass (already recorded, it is only filed);
//! * the IMAP connection drops: reconnect with backoff;
//! * the database file is deleted or replaced, or damaged: the task ends with the error,
//!   before it files away anything whose record went into a file nobody will read.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::health::Heartbeat;
use super::{DaemonError, Mode, RunStats};
use crate::cases::{lock, with_store, SharedStore};
use crate::config::{self, Config};
use crate::intake::imap::{ImapSource, Pending, Woke};
use crate::intake::maildir::{Maildir, MaildirError};
use crate::intake::{Disposition, Fetched, SourceKey};
use crate::net::Backoff;
use crate::pipeline::{Pipeline, PipelineError, Processed};

/// How often a loop that waits in good health says so.
pub(super) const BEAT_EVERY: Duration = Duration::from_secs(5);

/// Everything the intake task needs, moved into it.
pub(super) struct Intake {
    pub cfg: Arc<Config>,
    pub store: SharedStore,
    pub pipeline: Arc<Pipeline>,
    pub mode: Mode,
    pub stop: watch::Receiver<bool>,
    pub wake_outbox: Arc<Notify>,
    pub heartbeat: Heartbeat,
    /// The database file as opened (see `Store::file_watch`), checked without the store lock.
    pub file: Option<crate::cases::integrity::FileWatch>,
}

impl Intake {
    pub async fn run(self) -> Result<RunStats, DaemonError> {
        match &self.cfg.intake {
            crate::config::Intake::Maildir(m) => {
                let (path, poll) = (m.path.clone(), m.poll_interval);
                self.maildir_loop(&path, poll).await
            }
            crate::config::Intake::Imap(_) => self.imap_loop().await,
        }
    }

    fn check_file(&self) -> Result<(), crate::cases::StoreError> {
        self.file.as_ref().map_or(Ok(()), |w| w.check())
    }

    /// Wait `d` (a backoff, a poll interval), beating meanwhile; `true` if stopped.
    async fn pause(&mut self, d: Duration) -> bool {
        let stop = &mut self.stop;
        let stopped = self
            .heartbeat
            .idle(BEAT_EVERY, async {
                tokio::select! {
                    _ = tokio::time::sleep(d) => false,
                    _ = stop.changed() => true,
                }
            })
            .await;
        stopped || *self.stop.borrow()
    }

    /// Take one message through the pipeline, in a transaction of its own (look-ups
    /// included, see `Pipeline::process`).
    async fn process_one(&self, fetched: &Fetched) -> Result<Processed, PipelineError> {
        if !self.pipeline.has_blocklist() {
            return with_store(&self.store, |store| self.pipeline.process(store, fetched, jiff::Timestamp::now()));
        }
        // Extract and look up first; lock the store only for the transaction.
        let prepared = self.pipeline.prepare(fetched);
        let enrichment = self.pipeline.enrich(&prepared).await;
        with_store(&self.store, |store| {
            self.pipeline.process_enriched(store, fetched, prepared, &enrichment, jiff::Timestamp::now())
        })
    }

    async fn maildir_loop(mut self, root: &std::path::Path, poll: Duration) -> Result<RunStats, DaemonError> {
        let md = Maildir::open(root)?;
        let mut stats = RunStats::default();
        let mut backoff = Backoff::new(Duration::from_secs(64));
        loop {
            self.heartbeat.beat();
            let mut delay = poll;
            let pending = match md.pending() {
                Ok(p) => p,
                Err(e) => {
                    if self.mode == Mode::Once {
                        return Err(e.into());
                    }
                    delay = backoff.step();
                    tracing::error!(error = %e, retry_in_s = delay.as_secs(), "cannot list the Maildir; trying again");
                    Vec::new()
                }
            };
            let mut busy = false;
            for entry in pending {
                if *self.stop.borrow() {
                    return Ok(stats);
                }
                self.heartbeat.beat();
                let fetched = match md.read(&entry, self.cfg.max_message_bytes) {
                    Ok(f) => f,
                    Err(MaildirError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                        tracing::debug!(file = %entry.path.display(), "gone between listing and reading (renamed by another program?); next pass");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a message; it stays and is tried again");
                        continue;
                    }
                };
                let started = std::time::Instant::now();
                let done = match self.process_one(&fetched).await {
                    Ok(d) => {
                        crate::metrics::message_handled(d.outcome(), d.action.map_or("none", |a| a.as_str()), started.elapsed());
                        d
                    }
                    Err(e) if is_transient(&e) && self.mode == Mode::Serve => {
                        delay = backoff.step();
                        tracing::warn!(
                            source = %fetched.key, error = %e, retry_in_s = delay.as_secs(),
                            "database busy; the message stays in the Maildir and is tried again"
                        );
                        busy = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                // The record must be in the database we will read tomorrow before the
                // message leaves the mailbox.
                self.check_file()?;
                stats.count(&done);
                if done.queued_reply {
                    self.wake_outbox.notify_one();
                }
                match md.file(&entry, done.disposition) {
                    Ok(()) => {}
                    Err(MaildirError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                        tracing::info!(file = %entry.path.display(), "renamed by another program before it was filed; filed on the next pass");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !busy {
                backoff.reset();
                crate::metrics::mailbox_checked();
            }
            if self.mode == Mode::Once {
                return Ok(stats);
            }
            if self.pause(delay).await {
                return Ok(stats);
            }
        }
    }

    async fn imap_loop(mut self) -> Result<RunStats, DaemonError> {
        let cfg = self.cfg.clone();
        let config::Intake::Imap(icfg) = &cfg.intake else {
            return Err(DaemonError::Task("not an IMAP config".into()));
        };
        let mut src = ImapSource::new(icfg.clone(), cfg.max_message_bytes)?;
        let mut stats = RunStats::default();
        let mut backoff = Backoff::new(Duration::from_secs(64));
        loop {
            crate::metrics::serve::test_stall_point().await;
            self.heartbeat.beat();
            if *self.stop.borrow() {
                break;
            }
            if src.needs_new_login() {
                // OAuth2: a session does not outlive its token (see ImapSource::needs_new_login).
                tracing::info!("IMAP token due for renewal; logging in again");
                src.logout().await;
            }
            if !src.is_connected() {
                let connected = self.heartbeat.idle(BEAT_EVERY, src.connect()).await;
                if let Err(e) = connected {
                    if self.mode == Mode::Once {
                        return Err(e.into());
                    }
                    crate::metrics::imap_reconnect();
                    let wait = backoff.step();
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "IMAP unavailable");
                    if self.pause(wait).await {
                        break;
                    }
                    continue;
                }
                backoff.reset();
            }
            let drained = drain_imap(&mut src, &self, &mut stats, cfg.max_message_bytes).await;
            match drained {
                Ok(()) => crate::metrics::mailbox_checked(),
                Err(DaemonError::Imap(e)) => {
                    tracing::warn!(error = %e, "IMAP connection lost; reconnecting");
                    crate::metrics::imap_reconnect();
                    src.disconnect();
                    if self.mode == Mode::Once {
                        return Err(e.into());
                    }
                    continue;
                }
                Err(e) if e.is_transient() && self.mode == Mode::Serve => {
                    let wait = backoff.step();
                    tracing::warn!(
                        error = %e, retry_in_s = wait.as_secs(),
                        "database busy; the messages stay in the mailbox and are tried again"
                    );
                    if self.pause(wait).await {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            if self.mode == Mode::Once || *self.stop.borrow() {
                break;
            }
            let woke = {
                let stop = &mut self.stop;
                self.heartbeat.idle(BEAT_EVERY, src.wait(icfg.poll_interval, stop)).await
            };
            match woke {
                Ok(Woke::Check) => {}
                Ok(Woke::Shutdown) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "IMAP IDLE failed; reconnecting");
                    crate::metrics::imap_reconnect();
                    src.disconnect();
                }
            }
        }
        src.logout().await;
        Ok(stats)
    }
}

fn is_transient(e: &PipelineError) -> bool {
    matches!(e, PipelineError::Store(s) if s.is_transient())
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
    intake: &Intake,
    stats: &mut RunStats,
    cap: usize,
) -> Result<(), DaemonError> {
    let (store, pipeline, stop, wake_outbox, hb) =
        (&intake.store, &intake.pipeline, &intake.stop, &intake.wake_outbox, &intake.heartbeat);
    let pending = hb.idle(BEAT_EVERY, src.pending()).await?;
    if pending.is_empty() {
        return Ok(());
    }
    tracing::debug!(waiting = pending.len(), "messages waiting");
    let (mailbox, uidvalidity) = (src.mailbox().to_string(), src.uidvalidity());
    // Messages already recorded (a crash came between commit and MOVE) are filed without
    // being fetched again.
    let mut plans: Vec<Plan> = Vec::new();
    with_store(store, |guard| -> Result<(), DaemonError> {
        for batch in batches(&pending, cap) {
            let mut plan = Plan::default();
            for p in batch {
                let key = SourceKey::Imap { mailbox: mailbox.clone(), uidvalidity, uid: p.uid };
                match pipeline.recorded_disposition(guard, &key)? {
                    Some(d) => {
                        stats.already_recorded += 1;
                        plan.filed[(d == Disposition::Quarantine) as usize].push(p.uid);
                    }
                    None => plan.to_fetch.push(*p),
                }
            }
            plans.push(plan);
        }
        Ok(())
    })?;

    let mut fetched = hb.idle(BEAT_EVERY, src.fetch(&plans[0].to_fetch)).await?;
    // Committed, not yet filed.
    let mut unfiled: Option<[Vec<u32>; 2]> = None;
    for i in 0..plans.len() {
        if *stop.borrow() {
            break;
        }
        let job = {
            let (store, pipeline, batch) = (store.clone(), pipeline.clone(), std::mem::take(&mut fetched));
            tokio::spawn(async move {
                // With a blocklist, the batch's lookups run concurrently, off the store lock,
                // while the connection files and fetches; then the batch is recorded as usual.
                let ahead = if pipeline.has_blocklist() {
                    let prepared: Vec<_> = batch.iter().map(|f| pipeline.prepare(f)).collect();
                    let enrichments = futures::future::join_all(prepared.iter().map(|p| pipeline.enrich(p))).await;
                    Some(prepared.into_iter().zip(enrichments).collect())
                } else {
                    None
                };
                tokio::task::spawn_blocking(move || record_batch(&store, &pipeline, &batch, ahead))
                    .await
                    .map_err(|e| DaemonError::Task(format!("recording a batch: {e}")))?
            })
        };
        let on_the_wire = async {
            if let Some(done) = unfiled.take() {
                // Committed into the file we will read tomorrow? Only then may it leave the inbox.
                intake.check_file()?;
                src.file(&done[0], Disposition::Processed).await?;
                src.file(&done[1], Disposition::Quarantine).await?;
            }
            match plans.get(i + 1) {
                Some(next) if !*stop.borrow() => Ok(src.fetch(&next.to_fetch).await?),
                _ => Ok(Vec::new()),
            }
        };
        let on_the_wire: Result<Vec<Fetched>, DaemonError> = hb.idle(BEAT_EVERY, on_the_wire).await;
        let recorded = job.await.map_err(|e| DaemonError::Task(format!("recording a batch: {e}")))??;
        hb.beat();
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
        intake.check_file()?;
        src.file(&done[0], Disposition::Processed).await?;
        src.file(&done[1], Disposition::Quarantine).await?;
    }
    Ok(())
}

/// Record one fetched batch in one transaction (each message still all or nothing, see
/// `Store::batch`). The store stays locked until the commit: the outbox must not see, let
/// alone send, a reply whose request is not committed yet.
fn record_batch(
    store: &SharedStore,
    pipeline: &Pipeline,
    fetched: &[Fetched],
    ahead: Option<Vec<(crate::pipeline::Prepared, crate::enrich::Enrichment)>>,
) -> Result<Recorded, DaemonError> {
    let mut out = Recorded::default();
    if fetched.is_empty() {
        return Ok(out);
    }
    let mut guard = lock(store);
    let mut batch = guard.batch()?;
    let mut ahead = ahead.map(Vec::into_iter);
    for f in fetched {
        let prepared = ahead.as_mut().and_then(Iterator::next);
        let SourceKey::Imap { uid, .. } = f.key else { continue };
        let started = std::time::Instant::now();
        let done = match prepared {
            Some((p, e)) => pipeline.process_enriched(&mut batch, f, p, &e, jiff::Timestamp::now())?,
            None => pipeline.process(&mut batch, f, jiff::Timestamp::now())?,
        };
        crate::metrics::message_handled(done.outcome(), done.action.map_or("none", |a| a.as_str()), started.elapsed());
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
    use crate::intake::imap::Pending;

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
