//! The `[metrics]` listener of `delistd run`: `/metrics`, `/healthz` and `/readyz` over
//! HTTP/1.1 (axum on the daemon's tokio runtime).
//!
//! [`router`] is a plain axum `Router`, so a later web front end can merge it into its own
//! instead of opening a second port. What the endpoints answer is injected: the scrape
//! (which reads the database) and the two probes are closures the daemon builds, run on the
//! blocking pool so that a slow database never stalls the runtime.
//!
//! * `/healthz`: 200 while every loop of the daemon has shown progress (or a healthy idle)
//!   within its interval, the same signal as the systemd watchdog; 503 with one line per
//!   stalled loop otherwise.
//! * `/readyz`: 200 while the database answers and the mailbox was reached recently.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

/// A probe: `Ok` when healthy, else the reasons, one per line of the answer.
pub type Probe = Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>;
/// The whole `/metrics` text.
pub type Scrape = Arc<dyn Fn() -> String + Send + Sync>;

/// What the three endpoints answer.
#[derive(Clone)]
pub struct Endpoints {
    pub scrape: Scrape,
    pub health: Probe,
    pub ready: Probe,
}

/// The routes, for [`serve`] or for merging into another router.
pub fn router(e: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(e)
}

/// Serve until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, e: Endpoints, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    axum::serve(listener, router(e))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

async fn metrics(State(e): State<Endpoints>) -> Response {
    match tokio::task::spawn_blocking(move || (e.scrape)()).await {
        // The version of the text format (Prometheus, "Exposition formats").
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics scrape failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n").into_response()
        }
    }
}

async fn probe(p: Probe) -> Response {
    match tokio::task::spawn_blocking(move || p()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", why.join("\n"))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("probe failed: {e}\n")).into_response(),
    }
}

async fn healthz(State(e): State<Endpoints>) -> Response {
    probe(e.health).await
}

async fn readyz(State(e): State<Endpoints>) -> Response {
    probe(e.ready).await
}

/// Test hook: while the file named by `DELISTD_TEST_STALL_FILE` exists, a loop that passes
/// here stops (without beating), as a loop stuck on a dead connection would; the health
/// check must then fail. Costs one `stat` per loop iteration when the variable is set, and
/// nothing when it is not.
pub async fn test_stall_point() {
    let Some(path) = std::env::var_os("DELISTD_TEST_STALL_FILE") else { return };
    let path = std::path::PathBuf::from(path);
    let mut logged = false;
    while path.exists() {
        if !logged {
            tracing::warn!(file = %path.display(), "stalled by the test hook");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
