//! Who is asking. A handler that needs a staff member takes [`Staff`] as an argument, so an
//! unauthenticated handler cannot be written by accident. A staff member is known by the
//! session cookie, the trusted proxy's header, or (for GETs of the JSON API only) an API
//! token ([`crate::desk::tokens`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

use super::Shared;
use crate::cases::{sha256_hex, StoreError};
use crate::desk::{accounts, tokens, Actor, DeskError, Role};

/// The session cookie's name.
pub const COOKIE: &str = "delistd_session";
/// How long a session lasts (a working day and some).
pub const SESSION_HOURS: i64 = 12;
/// Failed logins allowed per name and per address within [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The authenticated staff member of a request.
#[derive(Debug, Clone)]
pub struct Staff {
    pub actor: Actor,
    /// The token every state-changing form must echo.
    pub csrf: String,
    /// Signed in with a session (not through the proxy): can log out.
    pub session: bool,
}

/// Refusal of an unauthenticated request: pages go to the login form, the API says 401.
pub struct NotSignedIn {
    api: bool,
    /// An API token was presented and is nobody's (wrong, revoked, or its account removed).
    bad_token: bool,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        if self.bad_token {
            // RFC 6750 §3: the scheme, and why this token was refused.
            let mut r = super::error_response(
                StatusCode::UNAUTHORIZED,
                "the API token is not valid (wrong, revoked, or its account was removed); make a new one with `delistd staff token NAME`",
                true,
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"delistd\", error=\"invalid_token\""),
            );
            r
        } else if self.api {
            let mut r = super::error_response(
                StatusCode::UNAUTHORIZED,
                "sign in first (POST /login), or send an API token (Authorization: Bearer ...)",
                true,
            );
            // RFC 9110 §15.5.2: a 401 names the scheme that would be accepted.
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"delistd\""));
            r
        } else {
            Redirect::to("/login").into_response()
        }
    }
}

/// The API token of a request: `Authorization: Bearer <token>` (RFC 6750 §2.1), only on a
/// GET of the JSON API. Anywhere else the header is not looked at, so a token can never
/// load a page or post an action.
fn bearer(parts: &Parts) -> Option<String> {
    if parts.method != Method::GET || !parts.uri.path().starts_with("/api/") {
        return None;
    }
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

impl FromRequestParts<Shared> for Staff {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Staff, NotSignedIn> {
        let api = parts.uri.path().starts_with("/api/");
        if let Some(token) = bearer(parts) {
            let found = state.with_store(move |s| tokens::actor_of(s, &token)).await;
            return match found {
                // A random CSRF token nobody is told: a token never passes a CSRF check.
                Ok(Some(actor)) => Ok(Staff { actor, csrf: random_token(), session: false }),
                Ok(None) => {
                    tracing::warn!("API request with an unknown token; refused");
                    Err(NotSignedIn { api, bad_token: true })
                }
                Err(e) => {
                    tracing::error!(error = %e, "checking an API token");
                    Err(NotSignedIn { api, bad_token: true })
                }
            };
        }
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        // Proxy mode: the header counts only on a connection from a trusted proxy; from
        // anyone else it is ignored (a client could send it to claim any name).
        if let (Some(h), Some(peer)) = (&state.settings.proxy_user_header, peer) {
            if state.settings.trusted_proxies.iter().any(|m| m.contains(peer)) {
                if let Some(name) = parts.headers.get(h.as_str()).and_then(|v| v.to_str().ok()).map(str::trim) {
                    let name = name.to_string();
                    let n = name.clone();
                    let role = state.with_store(move |s| accounts::role_of(s, &n)).await.ok().flatten();
                    if let Some(role) = role {
                        let csrf = proxy_csrf(&state.secret, &name);
                        return Ok(Staff { actor: Actor { name, role }, csrf, session: false });
                    }
                    tracing::warn!(user = %name, "proxy user has no staff account; refused");
                    return Err(NotSignedIn { api, bad_token: false });
                }
            }
        }
        let Some(token) = cookie(parts, COOKIE) else { return Err(NotSignedIn { api, bad_token: false }) };
        let hash = sha256_hex(token.as_bytes());
        let now = Timestamp::now().as_second();
        let found = state
            .with_store(move |s| {
                s.connection()
                    .query_row(
                        "SELECT w.staff, st.role, w.csrf FROM web_sessions w JOIN staff st ON st.name = w.staff \
                         WHERE w.token_sha256 = ?1 AND w.expires_at > ?2",
                        params![hash, now],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
                    )
                    .optional()
                    .map_err(|e| DeskError::Store(StoreError::from(e)))
            })
            .await
            .ok()
            .flatten();
        match found {
            Some((name, role, csrf)) => Ok(Staff {
                actor: Actor { name, role: role.parse().unwrap_or(Role::Viewer) },
                csrf,
                session: true,
            }),
            None => Err(NotSignedIn { api, bad_token: false }),
        }
    }
}

/// A cookie's value from the request.
pub fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';').find_map(|kv| {
            let (k, val) = kv.trim().split_once('=')?;
            (k == name).then(|| val.to_string())
        })
    })
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn proxy_csrf(secret: &[u8; 32], name: &str) -> String {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(b"csrf:");
    h.update(name.as_bytes());
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

/// Compare without an early exit, so timing does not reveal how much of a token matched.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Open a session for `name`: the cookie value (the token) and the CSRF token.
pub fn open_session(s: &crate::cases::Store, name: &str, now: Timestamp) -> Result<String, DeskError> {
    let token = random_token();
    let csrf = random_token();
    let c = s.connection();
    c.execute("DELETE FROM web_sessions WHERE expires_at <= ?1", [now.as_second()]).map_err(StoreError::from)?;
    c.execute(
        "INSERT INTO web_sessions (token_sha256, staff, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![sha256_hex(token.as_bytes()), name, csrf, now.as_second(), now.as_second() + SESSION_HOURS * 3600],
    )
    .map_err(StoreError::from)?;
    Ok(token)
}

pub fn close_session(s: &crate::cases::Store, token: &str) -> Result<(), DeskError> {
    s.connection()
        .execute("DELETE FROM web_sessions WHERE token_sha256 = ?1", [sha256_hex(token.as_bytes())])
        .map_err(StoreError::from)?;
    Ok(())
}

/// The address a request comes from, for the login throttle and the log. Behind one of
/// `trusted` (a reverse proxy), the peer is the proxy: the client is the rightmost entry of
/// `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the address it
/// was reached from, so entries to the left of it were written by the client and prove
/// nothing). From any other peer the header is ignored.
pub fn client_addr(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[crate::desk::IpMatch]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|m| m.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return ip,
            // Garbage where a proxy should have written an address: stop at the proxy.
            Err(_) => break,
        }
    }
    peer
}

/// Failed logins, per name and per address, in a sliding window.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Throttle {
    fn keys(name: &str, peer: Option<IpAddr>) -> [String; 2] {
        [format!("user:{name}"), format!("addr:{}", peer.map(|p| p.to_string()).unwrap_or_default())]
    }

    /// Whether a login for `name` from `peer` must wait.
    pub fn blocked(&self, name: &str, peer: Option<IpAddr>, now: Instant) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(name, peer).iter().any(|k| {
            let v = f.entry(k.clone()).or_default();
            v.retain(|t| now.duration_since(*t) < WINDOW);
            v.len() >= MAX_FAILURES
        })
    }

    pub fn failed(&self, name: &str, peer: Option<IpAddr>, now: Instant) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() > 100_000 {
            // Bounded memory under a spray of names: forget the oldest picture entirely.
            f.clear();
        }
        for k in Self::keys(name, peer) {
            f.entry(k).or_default().push(now);
        }
    }

    pub fn succeeded(&self, name: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&format!("user:{name}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_blocks_after_the_failures_and_forgets_after_the_window() {
        let t = Throttle::default();
        let now = Instant::now();
        let ip: Option<IpAddr> = "192.0.2.1".parse().ok();
        for _ in 0..MAX_FAILURES {
            assert!(!t.blocked("ann", ip, now));
            t.failed("ann", ip, now);
        }
        assert!(t.blocked("ann", ip, now));
        assert!(t.blocked("bob", ip, now), "the address is blocked for every name");
        assert!(t.blocked("ann", "192.0.2.2".parse().ok(), now), "the name is blocked from every address");
        assert!(!t.blocked("ann", ip, now + WINDOW + Duration::from_secs(1)));
    }

    #[test]
    fn the_client_behind_a_trusted_proxy_is_the_rightmost_untrusted_forwarded_address() {
        use axum::http::{HeaderMap, HeaderValue};
        let trusted: Vec<crate::desk::IpMatch> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut h = HeaderMap::new();
        // The client claimed 192.0.2.66; the outer proxy saw 198.51.100.7; an inner proxy 10.1.1.1.
        h.append("x-forwarded-for", HeaderValue::from_static("192.0.2.66, 198.51.100.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        assert_eq!(client_addr(ip("127.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(client_addr(ip("203.0.113.9"), &h, &trusted), ip("203.0.113.9"), "an untrusted peer's header is ignored");
        assert_eq!(client_addr(ip("127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1, not-an-address"));
        assert_eq!(client_addr(ip("127.0.0.1"), &bad, &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd") && !same_token("abc", "ab"));
        assert_eq!(random_token().len(), 64);
    }
}
