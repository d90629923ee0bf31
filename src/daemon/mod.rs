//! The long-running service: its tasks, their supervision, shutdown, sd_notify.
//!
//! * [`intake`](self::intake): waiting messages through the [`Pipeline`] (one transaction per
//!   message; over IMAP, the messages of one fetch are committed together), then filed away;
//! * the outbox ([`crate::reply::outbox`]): sends what the transactions queued;
//! * [`supervisor`](self::supervisor): runs them side by side; one that cannot go on stops the
//!   daemon with a non-zero exit;
//! * [`health`]: each loop's heartbeat; `WATCHDOG=1` only while all of them beat;
//! * [`instance`]: one `run` or `reprocess` per database;
//! * `shutdown`: signals and sd_notify.
//!
//! The tasks share nothing but the database connection ([`SharedStore`]) and a wake-up
//! signal. SIGTERM stops them after the message in hand; nothing half-done is left that a
//! restart would not finish (see `pipeline` for why).

pub mod health;
pub mod instance;
mod intake;
mod shutdown;
mod supervisor;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::cases::Store;
use crate::config::Config;
use crate::pipeline::{Pipeline, PipelineError};
use crate::reply::outbox::{Outbox, Transport};

pub use crate::cases::{lock, SharedStore};
use health::Health;
use shutdown::notify;
use supervisor::{Done, Supervisor};

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
    #[error(transparent)]
    Instance(#[from] instance::InstanceError),
    /// The blocklist failed its start-up check (a zone failing the RFC 5782 test entries,
    /// a CIDR file that does not load): a configuration problem.
    #[error(transparent)]
    Blocklist(#[from] crate::blocklist::BlocklistError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::listener::ListenerError),
    #[error(transparent)]
    Escalation(#[from] crate::escalation::EscalationError),
    #[error("{0}")]
    Task(String),
}

impl DaemonError {
    /// Worth trying the same step again later in the same process (a busy database).
    pub fn is_transient(&self) -> bool {
        match self {
            DaemonError::Store(e) => e.is_transient(),
            DaemonError::Pipeline(PipelineError::Store(e)) => e.is_transient(),
            _ => false,
        }
    }
}

/// How the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve until SIGTERM.
    Serve,
    /// Drain what is waiting, send what is queued, exit (cron jobs, the demo, tests).
    Once,
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
        } else if done.disposition == crate::intake::Disposition::Quarantine {
            self.quarantined += 1;
        } else {
            self.processed += 1;
        }
    }
}

/// The longest a loop may stay silent (no progress, no healthy wait) before the watchdog
/// stops vouching for the daemon: systemd's watchdog interval when it set one (a loop
/// silent that long is stuck: every network wait is bounded and beats while it waits),
/// at least [`MIN_SILENCE`].
fn max_silence() -> Duration {
    watchdog_usec().map_or(DEFAULT_SILENCE, |w| w.max(MIN_SILENCE))
}
const DEFAULT_SILENCE: Duration = Duration::from_secs(60);
/// A whole IMAP batch (32 messages) is recorded between two beats.
const MIN_SILENCE: Duration = Duration::from_secs(20);

/// How often the database file is compared with the one opened (see `Store::check_file`).
const FILE_CHECK_EVERY: Duration = Duration::from_secs(5);

pub async fn run(cfg: Config, mode: Mode) -> Result<RunStats, DaemonError> {
    // First: a second instance must not even open the database.
    let _instance = instance::acquire(&cfg.store.database)?;
    let cfg = Arc::new(cfg);
    let (stop_tx, stop_rx) = watch::channel(false);
    let wake_outbox = Arc::new(Notify::new());
    let mut pipeline = Pipeline::new(&cfg)?;
    // Checked before READY: a zone failing the RFC 5782 test entries is refused at start.
    let blocklist = match &cfg.blocklist {
        Some(b) => Some(crate::blocklist::Blocklist::start(b).await?),
        None => None,
    };
    if let (Some(b), Some(bc)) = (&blocklist, &cfg.blocklist) {
        pipeline.set_blocklist(b.clone(), bc.auto_delist_first);
    }
    let pipeline = Arc::new(pipeline);

    // Opened (checked and migrated) up front so a bad database stops us before READY.
    let store = Store::open_checked(&cfg.store.database, pipeline.store_options())?;
    let file = store.file_watch();
    let store: SharedStore = Arc::new(Mutex::new(store));

    let transport = match (&cfg.smtp, &cfg.reply_dir) {
        (Some(smtp), _) => Transport::smtp(smtp.clone())?,
        (None, Some(dir)) => Transport::files(dir)?,
        (None, None) => return Err(DaemonError::Task("no way to send replies: [smtp] host or reply_dir".into())),
    };
    let outbox = Outbox::new(transport, cfg.smtp.as_ref().map_or(1, |s| s.connections));

    let health = Health::new();
    let silence = max_silence();
    let mut tasks = Supervisor::new(stop_tx.clone());

    if mode == Mode::Serve {
        let (stop_tx, mut stopped) = (stop_tx.clone(), stop_rx.clone());
        tasks.spawn("signals", async move {
            tokio::select! {
                _ = shutdown::wait_for_signal() => {
                    tracing::info!("shutdown requested; finishing the message in hand");
                    notify(&[sd_notify::NotifyState::Stopping]);
                    let _ = stop_tx.send(true);
                }
                _ = stopped.changed() => {}
            }
            Ok(Done::Helper)
        });
        if let Some(period) = watchdog_usec().map(|w| w / 2) {
            tasks.spawn("watchdog", watchdog(health.clone(), period, stop_rx.clone()));
        }
    }
    if let Some(file) = file.clone() {
        let mut stopped = stop_rx.clone();
        tasks.spawn("database-watch", async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(FILE_CHECK_EVERY) => file.check()?,
                    _ = stopped.changed() => return Ok(Done::Helper),
                }
                if *stopped.borrow() {
                    return Ok(Done::Helper);
                }
            }
        });
    }

    // [metrics]: bound before READY, so that a port already taken stops the start. /healthz
    // answers from the same loops' heartbeats as the watchdog.
    if mode == Mode::Serve {
        let h = health.clone();
        let probe: crate::metrics::serve::Probe = Arc::new(move || h.check(tokio::time::Instant::now()));
        crate::metrics::listener::start(&cfg, pipeline.store_options(), probe, stop_rx.clone()).await?;
        // [escalation]: warnings to staff, checked every minute on the daemon's clock.
        if cfg.escalation.is_some() {
            let heartbeat = health.register("escalation", silence);
            let beat: crate::escalation::Beat = Box::new(move || heartbeat.beat());
            if let Some(escalation) = crate::escalation::task(&cfg, store.clone(), wake_outbox.clone(), stop_rx.clone(), beat)? {
                tasks.spawn("escalation", async move {
                    escalation.await;
                    Ok(Done::Helper)
                });
            }
        }
    }

    // [blocklist]: open cases whose IP left the list are resolved by themselves.
    if let (Some(b), Some(bc)) = (&blocklist, &cfg.blocklist) {
        let recheck = crate::blocklist::recheck::run(
            store.clone(),
            b.clone(),
            bc.clone(),
            pipeline.builder(),
            wake_outbox.clone(),
            stop_rx.clone(),
        );
        tasks.spawn("blocklist-recheck", async move {
            recheck.await;
            Ok(Done::Helper)
        });
    }

    // [retention]: senders' raw messages dropped once their case is long closed, daily.
    if mode == Mode::Serve {
        let retention = crate::cases::retention::daily(store.clone(), cfg.retention, stop_rx.clone(), jiff::Timestamp::now);
        tasks.spawn("retention", async move {
            retention.await;
            Ok(Done::Helper)
        });
    }

    // [web]: the staff desk, served beside the daemon (see web::daemon_task).
    if mode == Mode::Serve && cfg.web.is_some() {
        let web = crate::web::daemon_task((*cfg).clone(), stop_rx.clone());
        tasks.spawn("web", async move {
            web.await;
            Ok(Done::Helper)
        });
    }

    let intake_done = Arc::new(AtomicBool::new(false));
    {
        let (store, wake, stop, done) = (store.clone(), wake_outbox.clone(), stop_rx.clone(), intake_done.clone());
        let heartbeat = health.register("outbox", silence);
        tasks.spawn("outbox", async move {
            let beat = heartbeat.as_fn();
            Ok(Done::Outbox(outbox.run(store, wake, stop, done, mode == Mode::Once, &beat).await?))
        });
    }
    let intake = intake::Intake {
        cfg: cfg.clone(),
        store: store.clone(),
        pipeline,
        mode,
        stop: stop_rx.clone(),
        wake_outbox: wake_outbox.clone(),
        heartbeat: health.register("intake", silence),
        file,
    };
    tasks.spawn("intake", async move { Ok(Done::Intake(intake.run().await?)) });

    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("reading the delist mailbox")]);
    let mut stats = RunStats::default();
    tasks
        .wait(|name, done| match done {
            Done::Intake(s) => {
                stats.add(&s);
                intake_done.store(true, Ordering::SeqCst);
                wake_outbox.notify_one();
                false
            }
            Done::Outbox(o) => {
                stats.sent = o.sent;
                stats.send_failed = o.failed;
                // Once mode: the outbox ends last; the helpers go with it.
                true
            }
            Done::Helper => {
                tracing::debug!(task = name, "ended");
                false
            }
        })
        .await?;
    Ok(stats)
}

/// `WATCHDOG=1` every `period`, only while every loop beat within its limit; otherwise the
/// loops at fault are logged (once per change) and put in the unit's status.
async fn watchdog(health: Health, period: Duration, mut stop: watch::Receiver<bool>) -> Result<Done, DaemonError> {
    let mut last_problem: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return Ok(Done::Helper),
        }
        match health.check(tokio::time::Instant::now()) {
            Ok(()) => {
                if last_problem.take().is_some() {
                    tracing::info!("every loop is beating again; watchdog resumed");
                    notify(&[sd_notify::NotifyState::Status("reading the delist mailbox")]);
                }
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Err(problems) => {
                if last_problem.as_ref() != Some(&problems) {
                    tracing::error!(
                        loops = %problems.join("; "),
                        "a loop is stuck: withholding WATCHDOG=1 so that systemd restarts delistd"
                    );
                    notify(&[sd_notify::NotifyState::Status(&format!("stuck: {}", problems.join("; ")))]);
                }
                last_problem = Some(problems);
            }
        }
    }
}

fn watchdog_usec() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(Duration::from_micros(usec))
}
