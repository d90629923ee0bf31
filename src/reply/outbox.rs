//! The outbox loop: sends the replies that intake transactions queued, retrying with
//! backoff while the server is down.
//!
//! A reply row holds the exact bytes to send (its Message-ID was fixed when it was queued),
//! so a retry after a crash sends the same message. The only window for a duplicate is a
//! kill between the server's 250 and our `mark_sent` commit; it cannot be closed from the
//! client side of SMTP, and the same Message-ID lets the recipient's client fold the two.
//! Each reply is marked as soon as its own answer is in, so that window holds at most one
//! reply per connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::send::{FileSink, SendError, SmtpConn, SmtpConnector};
use crate::cases::{with_store, OutboxRow, SharedStore, StoreError};

/// How long a reply is retried before it is given up (and staff see it as failed).
const GIVE_UP_AFTER_ATTEMPTS: u32 = 25;
/// Replies taken from the table per round.
const ROUND: u32 = 256;

#[allow(clippy::large_enum_variant)] // one per run: boxing would buy nothing
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

/// What one round did.
#[derive(Debug, Default)]
struct Round {
    sent: u64,
    failed: u64,
    /// Some reply failed for now and waits for a retry.
    transient: bool,
    /// The server could not be used at all (first such error).
    server_down: Option<SendError>,
}

pub struct Outbox {
    transport: Transport,
    connections: usize,
}

/// The longest a reply waits between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// Delay before attempt `n + 1` after `n` failures: 30 s doubling, at most an hour.
pub fn retry_delay(attempts: u32) -> Duration {
    let exp = attempts.min(7);
    Duration::from_secs(30u64 << exp).min(MAX_RETRY_DELAY)
}

/// The longest the loop stays without telling its heartbeat it is alive while it waits.
const BEAT_EVERY: Duration = Duration::from_secs(5);

/// Wait `d` (or until stopped, or woken), telling `beat` every few seconds that this is a
/// healthy idle, not a stuck loop.
async fn pause(d: Duration, wake: Option<&Notify>, stop: &mut watch::Receiver<bool>, beat: &(dyn Fn() + Send + Sync)) {
    let until = tokio::time::Instant::now() + d;
    loop {
        beat();
        let now = tokio::time::Instant::now();
        if now >= until || *stop.borrow() {
            return;
        }
        let slice = (until - now).min(BEAT_EVERY);
        let woken = async {
            match wake {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(slice) => {}
            _ = woken => return,
            _ = stop.changed() => return,
        }
    }
}

/// Record the outcome of one attempt, right after the server answered for it. Returns what
/// to count.
///
/// Why not once the round is over: a round may hold hundreds of replies, and a crash
/// before its end would leave every reply the server already accepted unmarked, to be sent
/// again on restart (the kill -9 test saw 22 duplicates in 2 kills that way). Marking each
/// one at once keeps the window for a duplicate to the one reply in flight per connection.
///
/// Not synced to disk on its own (see `Store::without_sync`): the next synced commit (of
/// intake) or checkpoint takes it along. A power cut before that forgets the mark and the
/// reply is sent again after the restart, with the same Message-ID; a kill of the daemon
/// loses nothing.
///
/// The server's answer is the one thing that cannot be asked again, so a busy database does
/// not lose it: the mark is retried with backoff until it is written (a reply accepted but
/// left `queued` would be sent a second time). A reply that another process marked in the
/// meantime is left as it is.
async fn record(
    store: &SharedStore,
    row: &OutboxRow,
    result: Result<(), SendError>,
    beat: &(dyn Fn() + Send + Sync),
) -> Result<Round, StoreError> {
    let mut backoff = crate::net::Backoff::new(Duration::from_secs(16));
    let mut never = watch::channel(false).1;
    loop {
        let now = jiff::Timestamp::now();
        let recorded = with_store(store, |store| store.without_sync(|store| record_now(store, row, &result, now)));
        match recorded {
            Ok(r) => return Ok(r),
            Err(StoreError::ReplyState { id, state }) => {
                tracing::warn!(reply = %row.message_id, outbox_id = %id, state, "reply changed by another process; left as it is");
                return Ok(Round::default());
            }
            Err(e) if e.is_transient() => {
                let wait = backoff.step();
                tracing::error!(
                    reply = %row.message_id, to = %row.recipient, error = %e, retry_in_s = wait.as_secs(),
                    outcome = if result.is_ok() { "sent" } else { "not sent" },
                    "cannot record the reply's outcome (database busy); keeping it and retrying"
                );
                pause(wait, None, &mut never, beat).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn record_now(
    store: &mut crate::cases::Store,
    row: &OutboxRow,
    result: &Result<(), SendError>,
    now: jiff::Timestamp,
) -> Result<Round, StoreError> {
    match result {
        Ok(()) => {
            store.mark_sent(row.id, now)?;
            let since_queued = now.duration_since(row.queued_at).unsigned_abs();
            crate::metrics::reply_sent(row.kind.as_deref(), row.caused_by.is_some(), since_queued);
            tracing::info!(reply = %row.message_id, to = %row.recipient, "reply sent");
            Ok(Round { sent: 1, ..Round::default() })
        }
        Err(e) if e.is_permanent() || row.attempts + 1 >= GIVE_UP_AFTER_ATTEMPTS => {
            store.mark_failed(row.id, &e.to_string(), now)?;
            crate::metrics::send_failure(e.class());
            crate::metrics::reply_failed(row.kind.as_deref());
            tracing::warn!(reply = %row.message_id, to = %row.recipient, error = %e, "reply given up");
            Ok(Round { failed: 1, ..Round::default() })
        }
        Err(e) => {
            let delay = retry_delay(row.attempts);
            let next = now + jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::from_secs(30));
            store.mark_retry(row.id, &e.to_string(), next)?;
            crate::metrics::send_failure(e.class());
            tracing::warn!(reply = %row.message_id, error = %e, retry_in_s = delay.as_secs(), "reply not sent; will retry");
            Ok(Round { transient: true, ..Round::default() })
        }
    }
}

impl Outbox {
    pub fn new(transport: Transport, connections: usize) -> Outbox {
        Outbox { transport, connections: connections.max(1) }
    }

    /// Send until stopped. With `once`, return when intake is done and nothing is due.
    ///
    /// `store` is the daemon's one database connection, shared with intake (see
    /// [`SharedStore`]); it is held only for the queries, never while a reply is on the wire.
    /// `beat` is called whenever the loop made progress or waits in good health (the
    /// daemon's watchdog listens to it).
    ///
    /// Returns only on stop, or with an error the loop cannot get past (a damaged or vanished
    /// database): a busy database and an unreachable server are waited out here.
    pub async fn run(
        self,
        store: SharedStore,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
        intake_done: Arc<AtomicBool>,
        once: bool,
        beat: &(dyn Fn() + Send + Sync),
    ) -> Result<OutboxStats, StoreError> {
        let mut stats = OutboxStats::default();
        let mut conns: Vec<Option<SmtpConn>> = (0..self.connections).map(|_| None).collect();
        let mut backoff = crate::net::Backoff::new(Duration::from_secs(64));
        loop {
            beat();
            if *stop.borrow() {
                break;
            }
            let finished_intake = intake_done.load(Ordering::SeqCst);
            let now = jiff::Timestamp::now();
            let due = with_store(&store, |store| {
                store.check_file()?;
                store.clamp_retry_targets(now, MAX_RETRY_DELAY)?;
                store.due_replies(now, ROUND)
            });
            let due = match due {
                Ok(d) => d,
                // `run --once` reports it (exit 75) rather than wait for the lock's holder.
                Err(e) if e.is_transient() && !once => {
                    let wait = backoff.step();
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "outbox: database busy; replies wait");
                    pause(wait, None, &mut stop, beat).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if due.is_empty() {
                // In once mode, replies waiting for a later retry are left for the next run.
                if once && finished_intake {
                    break;
                }
                pause(Duration::from_secs(15), Some(&wake), &mut stop, beat).await;
                continue;
            }
            let round = self.send_round(&store, &due, &mut conns, beat).await?;
            stats.sent += round.sent;
            stats.failed += round.failed;
            if round.transient || round.server_down.is_some() {
                let wait = backoff.step();
                if let Some(e) = &round.server_down {
                    tracing::error!(
                        error = %e, retry_in_s = wait.as_secs(),
                        "SMTP server unusable (connection, TLS, greeting or login); replies stay queued, will retry"
                    );
                    let ids: Vec<_> = due.iter().map(|r| r.id).collect();
                    let noted = with_store(&store, |s| s.without_sync(|s| s.note_server_error(&ids, &e.to_string())));
                    if let Err(e) = noted {
                        tracing::debug!(error = %e, "could not note the server error on the replies");
                    }
                }
                if once && finished_intake {
                    break;
                }
                pause(wait, None, &mut stop, beat).await;
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
    /// recording each reply's outcome as soon as the server has answered for it. A worker
    /// that cannot get a usable connection (the server is down, refuses TLS or our login)
    /// stops: that is about the server, not the reply, and the reply is not charged an attempt.
    async fn send_round(
        &self,
        store: &SharedStore,
        due: &[OutboxRow],
        conns: &mut [Option<SmtpConn>],
        beat: &(dyn Fn() + Send + Sync),
    ) -> Result<Round, StoreError> {
        let mut total = Round::default();
        let mut add = |r: Round| {
            total.sent += r.sent;
            total.failed += r.failed;
            total.transient |= r.transient;
            if total.server_down.is_none() {
                total.server_down = r.server_down;
            }
        };
        match &self.transport {
            Transport::Files(sink) => {
                for row in due {
                    let written = sink.write(&row.message_id, &row.recipient, &row.raw).map(|_| ());
                    add(record(store, row, written, beat).await?);
                    beat();
                }
            }
            Transport::Smtp(connector) => {
                let n = conns.len().min(due.len()).max(1);
                let work = conns.iter_mut().take(n).enumerate().map(|(w, slot)| async move {
                    let mut mine = Round::default();
                    for row in due.iter().skip(w).step_by(n) {
                        let attempt = match send_one(connector, slot, row).await {
                            Ok(()) => Ok(()),
                            Err(Failure::Reply(e)) => Err(e),
                            Err(Failure::Server(e)) => {
                                mine.server_down = Some(e);
                                break;
                            }
                        };
                        let r = record(store, row, attempt, beat).await?;
                        beat();
                        mine.sent += r.sent;
                        mine.failed += r.failed;
                        mine.transient |= r.transient;
                    }
                    Ok::<Round, StoreError>(mine)
                });
                for r in futures::future::join_all(work).await {
                    add(r?);
                }
            }
        }
        Ok(total)
    }
}

/// Why a reply was not sent.
enum Failure {
    /// Connecting, TLS, the greeting or AUTH failed: the server is at fault, not the reply.
    Server(SendError),
    /// The server answered for this reply (a per-message or per-recipient refusal, or the
    /// connection broke while it was on the wire).
    Reply(SendError),
}

/// Send one reply on the connection in `slot`, opening (or re-opening) it as needed.
async fn send_one(connector: &SmtpConnector, slot: &mut Option<SmtpConn>, row: &OutboxRow) -> Result<(), Failure> {
    if slot.as_ref().is_some_and(|c| c.is_broken()) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(connector.connect().await.map_err(Failure::Server)?);
    }
    let Some(conn) = slot.as_mut() else { return Err(Failure::Server(SendError::Transient("no connection".into()))) };
    let r = conn.send(&row.recipient, &row.raw).await;
    if matches!(r, Err(SendError::Transient(_))) {
        // The connection may be in any state now; start the next message on a fresh one.
        *slot = None;
    }
    r.map_err(Failure::Reply)
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
