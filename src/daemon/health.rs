//! Liveness: is every long-running loop of the daemon still getting somewhere?
//!
//! Each loop [`Health::register`]s a [`Heartbeat`] with the longest silence it may keep, and
//! calls [`Heartbeat::beat`] whenever it made progress or waits in good health (an IDLE, a
//! poll interval, a backoff). [`Health::check`] names the loops that have been silent longer
//! than that, or that ended. The daemon sends `WATCHDOG=1` only while `check` is `Ok`
//! (sd_notify(3)), so systemd restarts a daemon with a stuck loop even though its process and
//! its other loops are fine. The same check can back a health endpoint.
//!
//! Times are monotonic (`tokio::time::Instant`): a wall clock that jumps is not silence.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Loop {
    name: &'static str,
    max_silence: Duration,
    last: Instant,
    ended: bool,
}

/// The liveness of the daemon's loops. Cheap to clone; every clone sees the same loops.
#[derive(Debug, Clone, Default)]
pub struct Health {
    loops: Arc<Mutex<Vec<Loop>>>,
}

/// One loop's side of [`Health`]. Dropping it (the loop ended) makes `check` fail while the
/// daemon still runs: a loop that is gone is not doing its job.
#[derive(Debug)]
pub struct Heartbeat {
    loops: Arc<Mutex<Vec<Loop>>>,
    index: usize,
}

fn locked(loops: &Mutex<Vec<Loop>>) -> std::sync::MutexGuard<'_, Vec<Loop>> {
    // Nothing is left half-updated by a panic here (plain field stores).
    loops.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// A loop called `name` that may stay silent for at most `max_silence`. It counts as
    /// having beaten now.
    pub fn register(&self, name: &'static str, max_silence: Duration) -> Heartbeat {
        let mut loops = locked(&self.loops);
        loops.push(Loop { name, max_silence, last: Instant::now(), ended: false });
        Heartbeat { loops: self.loops.clone(), index: loops.len() - 1 }
    }

    /// `Ok` when every loop beat within its limit at `now`; otherwise what is wrong, one line
    /// per loop (`"outbox: silent for 95 s (limit 60 s)"`, `"intake: ended"`).
    pub fn check(&self, now: Instant) -> Result<(), Vec<String>> {
        let loops = locked(&self.loops);
        let bad: Vec<String> = loops
            .iter()
            .filter_map(|l| {
                if l.ended {
                    return Some(format!("{}: ended", l.name));
                }
                let silent = now.saturating_duration_since(l.last);
                (silent > l.max_silence).then(|| {
                    format!("{}: silent for {} s (limit {} s)", l.name, silent.as_secs(), l.max_silence.as_secs())
                })
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }
}

impl Heartbeat {
    /// Progress, or a healthy idle.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// A beat at a given instant (tests drive the clock this way).
    pub fn beat_at(&self, now: Instant) {
        if let Some(l) = locked(&self.loops).get_mut(self.index) {
            l.last = l.last.max(now);
        }
    }

    /// `beat` as a plain callback, for loops outside the daemon module (the outbox).
    pub fn as_fn(&self) -> impl Fn() + Send + Sync + '_ {
        move || self.beat()
    }

    /// Runs `fut` (a wait that is healthy however long it takes, such as IDLE), beating every
    /// `every` meanwhile. If the task stops being polled, the beats stop too.
    pub async fn idle<F: std::future::Future>(&self, every: Duration, fut: F) -> F::Output {
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                out = &mut fut => {
                    self.beat();
                    return out;
                }
                _ = tick.tick() => self.beat(),
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(l) = locked(&self.loops).get_mut(self.index) {
            l.ended = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_loop_is_named_until_it_beats_again() {
        let health = Health::new();
        let intake = health.register("intake", Duration::from_secs(60));
        let outbox = health.register("outbox", Duration::from_secs(30));
        let t0 = Instant::now();
        intake.beat_at(t0);
        outbox.beat_at(t0);
        assert_eq!(health.check(t0), Ok(()));

        let t1 = t0 + Duration::from_secs(31);
        intake.beat_at(t1);
        assert_eq!(health.check(t1), Err(vec!["outbox: silent for 31 s (limit 30 s)".to_string()]));
        outbox.beat_at(t1);
        assert_eq!(health.check(t1), Ok(()));

        let t2 = t1 + Duration::from_secs(61);
        assert_eq!(health.check(t2).unwrap_err().len(), 2);
        intake.beat_at(t2);
        outbox.beat_at(t2);
        assert_eq!(health.check(t2), Ok(()));

        // An earlier instant (checks racing beats) is not silence, and does not undo a beat.
        assert_eq!(health.check(t2 - Duration::from_secs(5)), Ok(()));
        outbox.beat_at(t0);
        assert_eq!(health.check(t2 + Duration::from_secs(30)), Ok(()));
    }

    #[test]
    fn an_ended_loop_fails_the_check() {
        let health = Health::new();
        let hb = health.register("outbox", Duration::from_secs(30));
        drop(hb);
        assert_eq!(health.check(Instant::now()), Err(vec!["outbox: ended".to_string()]));
    }

    #[tokio::test]
    async fn a_healthy_wait_keeps_beating_however_long_it_is() {
        let health = Health::new();
        let hb = health.register("intake", Duration::from_millis(100));
        let watcher = health.clone();
        let waited = hb.idle(Duration::from_millis(20), async {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                assert_eq!(watcher.check(Instant::now()), Ok(()));
            }
            "done"
        });
        assert_eq!(waited.await, "done");
        // Without the idle wrapper, the same wait is silence.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(health.check(Instant::now()).is_err());
    }
}
