//! The web desk: a staff front end over [`crate::desk`], served by `delistd web` (standalone
//! over a database) with the same code `delistd run` would serve from a `[web]` section.
//!
//! * [`auth`]   who is asking: session cookie or trusted proxy header; CSRF; login throttle.
//! * [`pages`]  the server-rendered pages (minijinja, HTML auto-escaped) and the JSON API.
//!
//! Security, in one place: sessions are random tokens of which only a hash is stored; the
//! cookie is HttpOnly, SameSite=Strict, and Secure behind TLS or an https public URL; every
//! POST carries the session's CSRF token; failed logins are throttled per name and per
//! address; the Content-Security-Policy allows no script at all and only the stylesheet
//! this binary serves; message content is always text, escaped, never HTML.

pub mod auth;
pub mod pages;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::cases::{Store, StoreError, StoreOptions};
use crate::config::{Config, WebConfig};
use crate::desk::{DeskError, IpMatch};

/// The Content-Security-Policy of every response: nothing runs, nothing comes from outside.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("no database at {} (check --db)", .0.display())]
    NoDatabase(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// This user may not open the database (not in its group).
    #[error(transparent)]
    Access(crate::cases::access::AccessError),
}

impl WebError {
    /// Exit codes: 78 for a refused configuration (as a bad config), 77 for a database this
    /// user may not open, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            WebError::Refused(_) => 78,
            WebError::Access(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// How the desk is served (from `[web]`, with `--listen` on top).
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Cookies get `Secure` (an https public URL, or TLS).
    pub secure_cookies: bool,
    pub proxy_user_header: Option<String>,
    pub trusted_proxies: Vec<IpMatch>,
    /// The reply builder made from the config (staff replies, questions, resolutions with a
    /// reply); `None`: replies are off.
    pub replies: Option<Arc<crate::reply::Builder>>,
    /// Serve HTTPS with this certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Settings {
    pub fn from_config(
        web: Option<&WebConfig>,
        replies: Option<Arc<crate::reply::Builder>>,
        listen: Option<SocketAddr>,
    ) -> Result<Settings, WebError> {
        let listen = listen.or(web.map(|w| w.listen)).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let proxy_user_header = web.and_then(|w| w.proxy_user_header.clone());
        let tls = web.and_then(|w| Some((w.tls_cert.clone()?, w.tls_key.clone()?)));
        if !listen.ip().is_loopback() && proxy_user_header.is_none() && tls.is_none() {
            return Err(WebError::Refused(format!(
                "{listen} is reachable from other machines: passwords and sessions would cross the network \
                 in clear; listen on 127.0.0.1, or set [web] tls_cert and tls_key, or configure proxy mode \
                 ([web] proxy_user_header, trusted_proxies)"
            )));
        }
        let trusted_proxies = web
            .map(|w| w.trusted_proxies.iter().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default();
        let secure_cookies =
            tls.is_some() || web.and_then(|w| w.public_url.as_deref()).is_some_and(|u| u.starts_with("https://"));
        Ok(Settings { listen, secure_cookies, proxy_user_header, trusted_proxies, replies, tls })
    }
}

/// What every handler shares.
pub struct AppState {
    pub store: Mutex<Store>,
    pub settings: Settings,
    pub throttle: auth::Throttle,
    /// Random per process: CSRF tokens of proxy-mode users are derived from it.
    pub secret: [u8; 32],
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// Run `f` on the store off the async threads (SQLite blocks).
    pub async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Store) -> Result<T, DeskError> + Send + 'static,
    ) -> Result<T, DeskError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut store = me.store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut store)
        })
        .await
        .map_err(|e| DeskError::Invalid(format!("internal: {e}")))?
    }
}

/// The router of the desk.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(pages::board))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/cases/{case}", get(pages::case_page))
        .route("/cases/{case}/act", post(pages::act))
        .route("/bulk", post(pages::bulk))
        .route("/cases/{case}/messages/{id}/raw", get(pages::raw_message))
        .route("/api/cases", get(pages::api_cases))
        .route("/api/cases/{case}", get(pages::api_case))
        .route("/static/desk.css", get(pages::css))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Serve the desk until SIGINT/SIGTERM.
pub async fn serve(db: &Path, settings: Settings, sla: jiff::SignedDuration) -> Result<(), WebError> {
    serve_until(db, settings, sla, shutdown(), true).await
}

/// The desk as a task of `delistd run` when the config has a `[web]` section (a no-op
/// otherwise): serves until the daemon's stop signal. A failure is logged; the daemon's
/// mail work goes on without the desk.
pub async fn daemon_task(cfg: Config, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(web) = cfg.web.clone() else { return };
    let sla = jiff::SignedDuration::from_secs(cfg.store.sla.as_secs() as i64);
    let builder = match crate::reply::Builder::from_config(&cfg.replies, cfg.store.sla) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            tracing::error!(error = %e, "web desk not started: replies.templates_dir");
            return;
        }
    };
    let settings = match Settings::from_config(Some(&web), Some(builder), None) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "web desk not started");
            return;
        }
    };
    let stopped = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = serve_until(&cfg.store.database, settings, sla, stopped, false).await {
        tracing::error!(error = %e, "web desk stopped");
    }
}

async fn serve_until(
    db: &Path,
    settings: Settings,
    sla: jiff::SignedDuration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    print: bool,
) -> Result<(), WebError> {
    match crate::cases::access::check(db) {
        Err(crate::cases::access::AccessError::Missing(_)) => return Err(WebError::NoDatabase(db.to_path_buf())),
        Err(e) => return Err(WebError::Access(e)),
        Ok(()) => {}
    }
    let store = Store::open(db, StoreOptions { sla, ..StoreOptions::default() })?;
    // Read before binding: a bad certificate is a configuration error, reported at once.
    let acceptor = match &settings.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listen = settings.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| WebError::Listen { addr: listen, source })?;
    let local = listener.local_addr()?;
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let state = Arc::new(AppState { store: Mutex::new(store), settings, throttle: auth::Throttle::default(), secret });
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    tracing::info!(listen = %local, db = %db.display(), "web desk listening on {scheme}://{local}/");
    if print {
        // Printed for scripts and tests that ask for port 0.
        println!("delistd web: listening on {scheme}://{local}/");
    }
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    match acceptor {
        Some(acceptor) => {
            use axum::serve::ListenerExt as _;
            // tap_io: axum gives the peer address (ConnectInfo) for a tapped listener.
            let listener = tls::TlsListener::new(listener, acceptor)?.tap_io(|_| {});
            axum::serve(listener, app).with_graceful_shutdown(stop).await?;
        }
        None => axum::serve(listener, app).with_graceful_shutdown(stop).await?,
    }
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// `delistd web --db PATH --listen ADDR`, with the config's `[web]` and reply settings when
/// a config was read.
pub async fn serve_standalone(db: &Path, cfg: Option<&Config>, listen: Option<SocketAddr>) -> Result<(), WebError> {
    let builder = match cfg {
        Some(c) => Some(Arc::new(
            crate::reply::Builder::from_config(&c.replies, c.store.sla)
                .map_err(|e| WebError::Refused(format!("replies.templates_dir: {e}")))?,
        )),
        None => None,
    };
    let settings = Settings::from_config(cfg.and_then(|c| c.web.as_ref()), builder, listen)?;
    let sla = cfg
        .map(|c| jiff::SignedDuration::from_secs(c.store.sla.as_secs() as i64))
        .unwrap_or(jiff::SignedDuration::from_hours(48));
    serve(db, settings, sla).await
}

/// A plain error page or JSON error, by status.
pub fn error_response(status: StatusCode, message: &str, json: bool) -> Response {
    if json {
        let body = serde_json::json!({ "error": message }).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        let body = pages::render("error.html", minijinja::context! { status => status.as_u16(), message => message })
            .unwrap_or_else(|_| message.to_string());
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
    }
}

/// Map a desk error to a response: rules refused → 409, viewers → 403, unknown case → 404,
/// bad input → 400; anything else is logged and shown as 500 without details.
pub fn desk_error(e: DeskError, json: bool) -> Response {
    let (status, msg) = match &e {
        DeskError::Store(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, e.to_string()),
        DeskError::Store(StoreError::WrongState { .. } | StoreError::AnotherActive { .. }) | DeskError::Refused(_) | DeskError::RepliesOff => {
            (StatusCode::CONFLICT, e.to_string())
        }
        DeskError::Forbidden(_) => (StatusCode::FORBIDDEN, e.to_string()),
        DeskError::Invalid(_) => (StatusCode::BAD_REQUEST, e.to_string()),
        // The case's sender address cannot be written to (it came from a stranger's mail):
        // the staff member must see why, not an internal error.
        DeskError::Build(crate::reply::BuildError::Compose(_)) => (StatusCode::CONFLICT, e.to_string()),
        _ => {
            tracing::error!(error = %e, "web desk");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error (see the log)".to_string())
        }
    };
    error_response(status, &msg, json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    const BASE: &str = "[intake]\nsource = \"maildir\"\n\n[maildir]\npath = \"/tmp/m\"\n\n[smtp]\nreply_dir = \"/tmp/r\"\n\n\
                        [replies]\nfrom = \"Delist desk <delist@provider.example>\"\n\n";

    fn parse(web: &str) -> Result<Config, Vec<(Option<usize>, String, String)>> {
        match Config::parse(&format!("{BASE}{web}"), Path::new("/etc/delistd/delistd.toml")) {
            Ok(c) => Ok(c),
            Err(ConfigError::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| (p.line, p.key, p.message)).collect())
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn web_section_defaults_to_loopback_and_keeps_its_keys() {
        let c = parse("[web]\n").unwrap();
        let w = c.web.unwrap();
        assert_eq!(w.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(parse("").unwrap().web.is_none());
        let c = parse(
            "[web]\nlisten = \"0.0.0.0:8443\"\npublic_url = \"https://desk.example\"\n\
             proxy_user_header = \"X-Forwarded-User\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let w = c.web.unwrap();
        assert_eq!(w.trusted_proxies, ["10.0.0.0/8", "::1"]);
        let s = Settings::from_config(Some(&w), None, None).unwrap();
        assert!(s.secure_cookies, "an https public URL makes cookies Secure");
        assert!(s.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn an_exposed_address_without_tls_or_proxy_is_refused_with_its_line() {
        let p = parse("[web]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].0, p[0].1.as_str()), (Some(14), "web.listen"), "{p:?}");
        assert!(p[0].2.contains("reachable from other machines"), "{p:?}");
        let p = parse("[web]\nproxy_user_header = \"X-User\"\ntls_key = \"k.pem\"\ntrusted_proxies = [\"nope\"]\n").unwrap_err();
        let keys: Vec<&str> = p.iter().map(|x| x.1.as_str()).collect();
        assert_eq!(keys, ["web.tls_cert", "web.trusted_proxies"], "{p:?}");
        let p = parse("[web]\nproxy_user_header = \"X-User\"\n").unwrap_err();
        assert!(p[0].2.contains("needs trusted_proxies"), "{p:?}");
        // --listen on the command line is held to the same rule.
        let e = Settings::from_config(None, None, Some(SocketAddr::from(([192, 0, 2, 1], 80)))).unwrap_err();
        assert_eq!(e.exit_code(), 78);
    }
}
