//! The `[metrics]` listener as `delistd run` starts it: bound before the daemon reports
//! READY (a port already taken stops the start with that error), with a database
//! connection of its own for the scrape, so a scrape never waits on the daemon's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::serve::{Endpoints, Probe};
use crate::cases::{Store, StoreOptions};
use crate::config::{Config, Intake};

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("[metrics] listen = \"{addr}\": cannot listen: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("[metrics]: opening the database for the scrape: {0}")]
    Store(#[from] crate::cases::StoreError),
}

/// How long the mailbox may go unread before `/readyz` fails: two poll intervals and a
/// minute (an IMAP IDLE wakes at least once per poll interval, and a drain takes time).
pub fn mailbox_patience(cfg: &Config) -> Duration {
    let poll = match &cfg.intake {
        Intake::Imap(i) => i.poll_interval,
        Intake::Maildir(m) => m.poll_interval,
    };
    poll * 2 + Duration::from_secs(60)
}

/// The readiness check: the database answers and the mailbox was reached recently.
pub fn readiness(store: Arc<Mutex<Store>>, patience: Duration) -> Probe {
    Arc::new(move || {
        let mut why = Vec::new();
        if let Err(e) = store.lock().unwrap_or_else(|p| p.into_inner()).ping() {
            why.push(format!("database: {e}"));
        }
        match super::last_mailbox_check() {
            None => why.push("mailbox: not reached yet".into()),
            Some(t) => {
                let ago = Timestamp::now().duration_since(t);
                if ago > SignedDuration::try_from(patience).unwrap_or(SignedDuration::MAX) {
                    why.push(format!("mailbox: last reached {} s ago (allowed {} s)", ago.as_secs(), patience.as_secs()));
                }
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    })
}

/// Bind `[metrics] listen` and serve until `stop`. `None` when the section is absent.
/// `health` answers `/healthz` (the daemon's liveness check, `daemon::health::Health`);
/// readiness is built here from the database and the last mailbox check.
pub async fn start(
    cfg: &Config,
    store_options: StoreOptions,
    health: Probe,
    stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ListenerError> {
    let Some(m) = &cfg.metrics else { return Ok(None) };
    super::mark_start();
    let listener =
        tokio::net::TcpListener::bind(m.listen).await.map_err(|source| ListenerError::Bind { addr: m.listen, source })?;
    if !m.listen.ip().is_loopback() {
        tracing::warn!(listen = %m.listen, "metrics and health are served without login beyond loopback");
    }
    let store = Arc::new(Mutex::new(Store::open(&cfg.store.database, store_options)?));
    let due_soon = cfg.escalation.as_ref().map_or(Duration::from_secs(6 * 3600), |e| e.warn_before);
    let due_soon = SignedDuration::try_from(due_soon).unwrap_or(SignedDuration::from_hours(6));
    let scrape_store = store.clone();
    let endpoints = Endpoints {
        scrape: Arc::new(move || {
            let now = Timestamp::now();
            let gauges = scrape_store.lock().unwrap_or_else(|p| p.into_inner()).gauges(now, due_soon);
            if let Err(e) = &gauges {
                tracing::warn!(error = %e, "metrics: the database did not answer");
            }
            super::render(gauges.ok().as_ref(), now)
        }),
        health,
        ready: readiness(store, mailbox_patience(cfg)),
    };
    tracing::info!(listen = %m.listen, "serving /metrics, /healthz and /readyz");
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = super::serve::serve(listener, endpoints, stop).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    })))
}
