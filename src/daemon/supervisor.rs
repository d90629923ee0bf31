//! Supervision: the daemon's tasks run side by side; the first that cannot go on stops them
//! all, and the daemon exits non-zero at once so that systemd restarts it.
//!
//! A task handles what is transient itself (a busy database, a server away: retried with
//! backoff, logged with what it affects) and returns an error only for what a retry in the
//! same process cannot fix (the database damaged or gone, a task that panicked). Waiting
//! on would leave a daemon that looks alive and does nothing; exiting lets systemd's
//! `Restart=on-failure` and its start limits decide, and the journal says why.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::DaemonError;

/// How long the other tasks get to finish what they hold (the reply on the wire) once one
/// has failed or a stop was asked for, before they are cut off.
const GRACE: Duration = Duration::from_secs(10);

/// What a task returns when it ends well.
pub(super) enum Done {
    Intake(super::RunStats),
    Outbox(crate::reply::outbox::OutboxStats),
    /// A helper (watchdog, database watch, signals).
    Helper,
}

pub(super) struct Supervisor {
    tasks: JoinSet<(&'static str, Result<Done, DaemonError>)>,
    stop: watch::Sender<bool>,
}

impl Supervisor {
    pub fn new(stop: watch::Sender<bool>) -> Supervisor {
        Supervisor { tasks: JoinSet::new(), stop }
    }

    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<Done, DaemonError>> + Send + 'static,
    ) {
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Wait for every task. `on_done` hears each one that ends well (and may ask the others
    /// to stop by returning `true`). The first failure stops the others and is returned.
    pub async fn wait(mut self, mut on_done: impl FnMut(&'static str, Done) -> bool) -> Result<(), DaemonError> {
        while let Some(joined) = self.tasks.join_next().await {
            let (name, result) = match joined {
                Ok(r) => r,
                Err(e) => ("a task", Err(DaemonError::Task(format!("panicked or was cancelled: {e}")))),
            };
            match result {
                Ok(done) => {
                    if on_done(name, done) {
                        let _ = self.stop.send(true);
                    }
                }
                Err(e) => {
                    tracing::error!(task = name, error = %e, "task cannot go on; stopping delistd");
                    super::shutdown::notify(&[
                        sd_notify::NotifyState::Stopping,
                        sd_notify::NotifyState::Status(&format!("{name} failed: {e}")),
                    ]);
                    let _ = self.stop.send(true);
                    let rest = async { while self.tasks.join_next().await.is_some() {} };
                    if tokio::time::timeout(GRACE, rest).await.is_err() {
                        tracing::warn!("tasks still busy {} s after the failure; cutting them off", GRACE.as_secs());
                        self.tasks.abort_all();
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
