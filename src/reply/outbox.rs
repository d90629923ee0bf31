//! The outbox loop: sends the replies that intake transactions queued, retrying with
//! backoff while the server is down.
//!
//! A reply row holds the exact bytes to send (its Message-ID was fixed when it was queued),
//! so a retry after a crash sends the same message. The only window for a duplicate is a
//! kill between the server's 250 and our `mark_sent` commit; it cannot be closed from the
//! client side of SMTP, and the same Message-ID lets the recipient's client fold the two.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::send::{FileSink, SendError, SmtpConn, SmtpConnector};
use crate::cases::{OutboxRow, Store, StoreOptions};

/// How long a reply is retried before it is given up (and staff see it as failed).
const GIVE_UP_AFTER_ATTEMPTS: u32 = 25;
/// Replies taken from the table per round.
const ROUND: u32 = 256;

pub enum Transport {
    Smtp(SmtpConnector),
    Files(FileSink),
}

impl Transport {
    pub fn smtp(cfg: crate::config::Smtp) -> Result<Transport, SendError> {
        Ok(Transport::Smtp(SmtpConnector::new(cfg)?))
    }
    pub fn files(dir: &std::path::Path) -> Result<Transport, SendError> {
        Ok(Transport::Files(FileSink::new(dir)?))
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct OutboxStats {
    pub sent: u64,
    pub failed: u64,
}

pub struct Outbox {
    db: PathBuf,
    opts: StoreOptions,
    transport: Transport,
    connections: usize,
}

/// Delay before attempt `n + 1` after `n` failures: 30 s doubling, at most an hour.
pub fn retry_delay(attempts: u32) -> Duration {
    let exp = attempts.min(7);
    Duration::from_secs((30u64 << exp).min(3600))
}

impl Outbox {
    pub fn new(db: PathBuf, opts: StoreOptions, transport: Transport, connections: usize) -> Outbox {
        Outbox { db, opts, transport, connections: connections.max(1) }
    }

    /// Send until stopped. With `once`, return when intake is done and nothing is due.
    pub async fn run(
        self,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
        intake_done: Arc<AtomicBool>,
        once: bool,
    ) -> Result<OutboxStats, crate::daemon::DaemonError> {
        let mut store = Store::open(&self.db, self.opts.clone())?;
        let mut stats = OutboxStats::default();
        let mut conns: Vec<Option<SmtpConn>> = (0..self.connections).map(|_| None).collect();
        let mut backoff = crate::net::Backoff::new(Duration::from_secs(64));
        loop {
            if *stop.borrow() {
                break;
            }
            let finished_intake = intake_done.load(Ordering::SeqCst);
            let now = jiff::Timestamp::now();
            let due = store.due_replies(now, ROUND)?;
            if due.is_empty() {
                // In once mode, replies waiting for a later retry are left for the next run.
                if once && finished_intake {
                    break;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            // Each result is committed as soon as it is known (see `Round`).
            let round = Mutex::new(Round { store: &mut store, stats: &mut stats, transient: false, error: None });
            self.send_round(&due, &mut conns, &round).await;
            let Round { transient, error, .. } = round.into_inner().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = error {
                return Err(e.into());
            }
            if transient {
                if once && finished_intake {
                    break;
                }
                let wait = backoff.step();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            } else {
                backoff.reset();
            }
        }
        for c in conns.into_iter().flatten() {
            c.quit().await;
        }
        Ok(stats)
    }

    /// Send `due` over up to `connections` connections at once, each reused across rounds,
    /// recording each result in `round` as it comes.
    async fn send_round(&self, due: &[OutboxRow], conns: &mut [Option<SmtpConn>], round: &Mutex<Round<'_>>) {
        match &self.transport {
            Transport::Files(sink) => {
                for r in due {
                    if lock(round).error.is_some() {
                        return;
                    }
                    lock(round).record(r, sink.write(&r.message_id, &r.recipient, &r.raw).map(|_| ()));
                }
            }
            Transport::Smtp(connector) => {
                let n = conns.len().min(due.len()).max(1);
                let work = conns.iter_mut().take(n).enumerate().map(|(w, slot)| async move {
                    for row in due.iter().skip(w).step_by(n) {
                        if lock(round).error.is_some() {
                            return;
                        }
                        let result = send_one(connector, slot, row).await;
                        // The workers are polled by one task and the lock is never held
                        // across an await: it is never contended.
                        lock(round).record(row, result);
                    }
                });
                futures::future::join_all(work).await;
            }
        }
    }
}

/// The round's record; a panic while it was held cannot leave it half-written (each
/// store call is its own transaction), so a poisoned lock is used as it is.
fn lock<'m, 'a>(round: &'m Mutex<Round<'a>>) -> MutexGuard<'m, Round<'a>> {
    round.lock().unwrap_or_else(|p| p.into_inner())
}

/// The outcomes of one round, written to the store reply by reply.
///
/// Why not once the round is over: a round may hold hundreds of replies, and a crash
/// before the end would leave every reply already accepted by the server unmarked, to be
/// sent again on restart. Marking each one right after the server's 250 keeps the window
/// for a duplicate to the one reply in flight on each connection.
struct Round<'a> {
    store: &'a mut Store,
    stats: &'a mut OutboxStats,
    /// Some reply failed in a way worth retrying.
    transient: bool,
    /// The store failed: the round stops and the outbox loop returns this.
    error: Option<crate::cases::StoreError>,
}

impl Round<'_> {
    fn record(&mut self, row: &OutboxRow, result: Result<(), SendError>) {
        let now = jiff::Timestamp::now();
        let written = match result {
            Ok(()) => {
                tracing::info!(reply = %row.message_id, to = %row.recipient, "reply sent");
                self.stats.sent += 1;
                self.store.mark_sent(row.id, now)
            }
            Err(e) if e.is_permanent() || row.attempts + 1 >= GIVE_UP_AFTER_ATTEMPTS => {
                tracing::warn!(reply = %row.message_id, to = %row.recipient, error = %e, "reply given up");
                self.stats.failed += 1;
                self.store.mark_failed(row.id, &e.to_string(), now)
            }
            Err(e) => {
                self.transient = true;
                let delay = retry_delay(row.attempts);
                let next = now + jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::from_secs(30));
                tracing::warn!(reply = %row.message_id, error = %e, retry_in_s = delay.as_secs(), "reply not sent; will retry");
                self.store.mark_retry(row.id, &e.to_string(), next)
            }
        };
        if let Err(e) = written {
            self.error.get_or_insert(e);
        }
    }
}

/// Send one reply on the connection in `slot`, opening (or re-opening) it as needed.
async fn send_one(connector: &SmtpConnector, slot: &mut Option<SmtpConn>, row: &OutboxRow) -> Result<(), SendError> {
    if slot.as_ref().is_some_and(|c| c.is_broken()) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(connector.connect().await?);
    }
    let Some(conn) = slot.as_mut() else { return Err(SendError::Transient("no connection".into())) };
    let r = conn.send(&row.recipient, &row.raw).await;
    if matches!(r, Err(SendError::Transient(_))) {
        // The connection may be in any state now; start the next message on a fresh one.
        *slot = None;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_to_an_hour() {
        let d: Vec<u64> = (0..10).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(d, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    }
}
