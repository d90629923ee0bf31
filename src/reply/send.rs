//! Handing a composed reply to the next hop: SMTP with lettre, or a folder of `.eml` files.
//!
//! Automatic replies go out with an empty envelope sender (`MAIL FROM:<>`, RFC 3834 §4), so
//! that a bounce of our reply can never come back to a responder and start a loop.
//!
//! lettre's own transport never sets TCP_NODELAY, which costs ~40 ms of delayed-ACK stall per
//! message on one connection; we open the socket ourselves (see [`crate::net`]) and hand it to
//! lettre's connection type, keeping its SMTP state machine, STARTTLS and AUTH.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Address;
use tokio_rustls::rustls::ClientConfig;

use crate::config::{Security, Smtp};
use crate::net::{self, MaybeTls, NetError};
use crate::oauth::{sasl, TokenError, TokenSource};

const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Net(#[from] NetError),
    /// The server refused for good (5xx): retrying will not help.
    #[error("SMTP refused permanently: {0}")]
    Permanent(String),
    /// Try again later (4xx, connection lost, timeout).
    #[error("SMTP failed, will retry: {0}")]
    Transient(String),
    /// The server refused our credentials (AUTH). About the server and the config, never
    /// about a reply: the outbox keeps replies queued and tries again with backoff.
    #[error("SMTP login refused: {0} (check [smtp] user and password_file)")]
    Login(String),
    #[error("recipient {0:?} is not a valid address")]
    BadRecipient(String),
    #[error("writing {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    /// No token for SMTP AUTH: about the server, never about the reply (the outbox leaves
    /// replies queued and backs off).
    #[error("SMTP AUTH: {0}")]
    Token(#[from] TokenError),
    /// The server refused our token (after one fresh try): the login's fault, not the reply's.
    #[error("{0}")]
    TokenRefused(String),
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent(_) | SendError::BadRecipient(_))
    }

    /// No reply could have been sent, whichever: the outbox keeps them all queued, counts no
    /// attempt against them, and backs off.
    pub fn is_login_failure(&self) -> bool {
        matches!(self, SendError::Token(_) | SendError::TokenRefused(_))
    }

    /// The class of failure, for the metrics: a short fixed name.
    pub fn class(&self) -> &'static str {
        match self {
            SendError::Net(_) => "network",
            SendError::Permanent(_) => "permanent",
            SendError::Transient(_) => "transient",
            SendError::BadRecipient(_) => "bad_recipient",
            SendError::File { .. } => "file",
            SendError::Login(_) => "login",
            SendError::Token(_) | SendError::TokenRefused(_) => "token",
        }
    }
}

fn classify(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Permanent(e.to_string())
    } else {
        SendError::Transient(e.to_string())
    }
}

/// Opens SMTP connections as the config says.
pub struct SmtpConnector {
    cfg: Smtp,
    tls: Arc<ClientConfig>,
    ca_pem: Option<Vec<u8>>,
    hello: ClientId,
    /// The user and the tokens of an OAuth2 login (`auth = "xoauth2" | "oauthbearer"`).
    oauth: Option<Box<(String, TokenSource)>>,
}

/// One open SMTP connection; reused for many messages.
pub struct SmtpConn {
    inner: AsyncSmtpConnection,
    /// OAuth2: when its token is due for renewal. The connection is not used past it: a
    /// server may end a session whose token expired, and the reply in flight would pay.
    until: Option<std::time::Instant>,
}

impl SmtpConnector {
    pub fn new(cfg: Smtp) -> Result<SmtpConnector, SendError> {
        let tls = net::tls_config(cfg.ca_file.as_deref())?;
        let ca_pem = match &cfg.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|source| SendError::File { path: p.clone(), source })?),
            None => None,
        };
        let hello = ClientId::Domain(
            std::env::var("DELISTD_HELO").ok().unwrap_or_else(hostname_or_localhost),
        );
        let oauth = cfg.oauth.clone().map(|(user, o)| Box::new((user, TokenSource::new("smtp", o))));
        Ok(SmtpConnector { cfg, tls, ca_pem, hello, oauth })
    }

    fn tls_parameters(&self) -> Result<TlsParameters, SendError> {
        let mut b = TlsParameters::builder(self.cfg.tls_name.clone());
        if let Some(pem) = &self.ca_pem {
            let cert = Certificate::from_pem(pem).map_err(|e| SendError::Transient(format!("CA file: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls().map_err(|e| SendError::Transient(format!("TLS setup: {e}")))
    }

    pub async fn connect(&self) -> Result<SmtpConn, SendError> {
        let c = &self.cfg;
        let tcp = net::connect_tcp(&c.host, c.port, TIMEOUT).await?;
        let stream = match c.security {
            Security::Tls => MaybeTls::Tls(Box::new(net::tls_wrap(self.tls.clone(), &c.tls_name, tcp, TIMEOUT).await?)),
            _ => MaybeTls::Plain(tcp),
        };
        let mut inner = tokio::time::timeout(TIMEOUT, AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello))
            .await
            .map_err(|_| SendError::Transient("no SMTP greeting".into()))?
            .map_err(classify)?;
        if c.security == Security::Starttls {
            if !inner.can_starttls() {
                return Err(SendError::Transient("server does not offer STARTTLS; refusing to send in clear".into()));
            }
            inner.starttls(self.tls_parameters()?, &self.hello).await.map_err(classify)?;
        }
        let mut until = None;
        if let Some(oauth) = &self.oauth {
            let (user, tokens) = &**oauth;
            until = Some(self.oauth_auth(&mut inner, user, tokens).await?);
        } else if let Some((user, password)) = &c.auth {
            let creds = Credentials::new(user.clone(), password.expose().to_string());
            inner
                .auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                .await
                .map_err(|e| SendError::Login(format!("as {user}: {e}")))?;
        }
        Ok(SmtpConn { inner, until })
    }

    /// SMTP AUTH with a token (RFC 4954), by hand: lettre knows XOAUTH2 but not OAUTHBEARER,
    /// and would not show the error challenge. A refused token from the cache is given up
    /// and AUTH tried once more with a fresh one. A refusal is transient: a later token (or
    /// the fixed command) may be accepted, and the replies must wait for it, not fail.
    /// Returns when the token used is due for renewal.
    async fn oauth_auth(&self, inner: &mut AsyncSmtpConnection, user: &str, tokens: &TokenSource) -> Result<std::time::Instant, SendError> {
        // What the server offers: lettre keeps no OAUTHBEARER in its view of the EHLO answer,
        // so ask again (RFC 5321 §4.1.4 allows a repeated EHLO; it changes no state here).
        let ehlo = tokio::time::timeout(TIMEOUT, inner.command(lettre::transport::smtp::commands::Ehlo::new(self.hello.clone())))
            .await
            .map_err(|_| SendError::Transient("EHLO timed out".into()))?
            .map_err(classify)?;
        let offered = sasl::oauth_mechanisms(
            ehlo.message()
                .filter_map(|line| line.strip_prefix("AUTH ").or_else(|| line.strip_prefix("AUTH=")))
                .flat_map(str::split_whitespace),
        );
        let mechanism = sasl::choose(tokens.mechanism(), &offered);
        if mechanism != tokens.mechanism() {
            tracing::info!(configured = tokens.mechanism().name(), using = mechanism.name(), "SMTP server does not offer the configured mechanism");
        }
        let mut retried = false;
        loop {
            let from_cache = tokens.cached_at(std::time::Instant::now()).is_some();
            let token = tokens.token().await?;
            let first = Line(format!("AUTH {} {}", mechanism.name(), mechanism.initial_response_base64(user, token.value.expose())));
            let answer = tokio::time::timeout(TIMEOUT, inner.command(first))
                .await
                .map_err(|_| SendError::Transient("SMTP AUTH timed out".into()))?;
            let refused = match answer {
                Ok(r) if r.has_code(235) => {
                    tracing::debug!(mechanism = mechanism.name(), user, "SMTP authenticated with a token");
                    return Ok(token.renew_at);
                }
                // The error challenge (RFC 7628 §3.2.2): acknowledge it, then the server fails AUTH.
                Ok(r) if r.has_code(334) => {
                    let said = sasl::describe_base64_error(&r.message().collect::<Vec<_>>().join(""));
                    let last = tokio::time::timeout(TIMEOUT, inner.command(Line(sasl::base64(mechanism.acknowledge_error())))).await;
                    match last {
                        Ok(Err(e)) => format!("{e}; server said: {said}"),
                        Ok(Ok(r)) => format!("{} after the error challenge; server said: {said}", r.code()),
                        Err(_) => return Err(SendError::Transient("SMTP AUTH timed out".into())),
                    }
                }
                Ok(r) => format!("unexpected answer {} {}", r.code(), r.message().collect::<Vec<_>>().join(" ")),
                // 4xx/5xx: the server said no; anything else is the connection.
                Err(e) if e.status().is_some() => e.to_string(),
                Err(e) => return Err(SendError::Transient(e.to_string())),
            };
            tokens.invalidate(&token);
            if from_cache && !retried {
                tracing::warn!(mechanism = mechanism.name(), reason = %refused, "SMTP refused the cached token; trying a fresh one");
                retried = true;
                continue;
            }
            return Err(SendError::TokenRefused(format!("SMTP AUTH {} as {user} refused: {refused}", mechanism.name())));
        }
    }
}

/// One command line as written (lettre's `command` takes anything displayable).
struct Line(String);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for MaybeTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            MaybeTls::Plain(s) => s.peer_addr(),
            MaybeTls::Tls(s) => s.get_ref().0.peer_addr(),
        }
    }
}

fn hostname_or_localhost() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .unwrap_or_else(|| "localhost".into())
}

impl SmtpConn {
    /// Send one message with a null envelope sender to `to`.
    pub async fn send(&mut self, to: &str, raw: &[u8]) -> Result<(), SendError> {
        let rcpt: Address = to.parse().map_err(|_| SendError::BadRecipient(to.to_string()))?;
        let envelope = Envelope::new(None, vec![rcpt]).map_err(|_| SendError::BadRecipient(to.to_string()))?;
        tokio::time::timeout(TIMEOUT, self.inner.send(&envelope, raw))
            .await
            .map_err(|_| SendError::Transient("SMTP timed out".into()))?
            .map_err(classify)?;
        Ok(())
    }

    /// Not to be used again: broken, or (OAuth2) its token is due for renewal.
    pub fn is_broken(&self) -> bool {
        self.inner.has_broken() || self.until.is_some_and(|u| std::time::Instant::now() >= u)
    }

    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.quit()).await;
    }
}

/// Writes replies as `.eml` files (the embedded demo, dry runs). The file appears whole or
/// not at all: written under a temporary name, then renamed.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    pub fn new(dir: &Path) -> Result<FileSink, SendError> {
        std::fs::create_dir_all(dir).map_err(|source| SendError::File { path: dir.to_path_buf(), source })?;
        Ok(FileSink { dir: dir.to_path_buf() })
    }

    /// `name` is a Message-ID; only its safe characters make the file name.
    pub fn write(&self, name: &str, to: &str, raw: &[u8]) -> Result<PathBuf, SendError> {
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).collect();
        let path = self.dir.join(format!("{safe}.eml"));
        let tmp = self.dir.join(format!(".{safe}.tmp"));
        // Envelope recipient first, as an MTA would record it (RFC 5321 §4.4 has Return-Path;
        // Delivered-To is the common convention for the recipient).
        let mut bytes = format!("Delivered-To: {to}\r\nReturn-Path: <>\r\n").into_bytes();
        bytes.extend_from_slice(raw);
        let err = |source| SendError::File { path: path.clone(), source };
        std::fs::write(&tmp, &bytes).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(|source| SendError::File { path: path.clone(), source })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_names_files_safely() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(dir.path()).unwrap();
        let p = sink.write("DL-000001.x/../y@example.net", "a@example.org", b"Subject: x\r\n\r\nbody").unwrap();
        assert_eq!(p.parent(), Some(dir.path()));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("Delivered-To: a@example.org\r\nReturn-Path: <>\r\nSubject: x"));
    }

    #[tokio::test]
    async fn unreachable_smtp_server_is_transient() {
        let cfg = Smtp {
            host: "127.0.0.1".into(),
            port: 1,
            security: Security::Plain,
            tls_name: "localhost".into(),
            ca_file: None,
            auth: None,
            oauth: None,
            connections: 1,
        };
        let e = SmtpConnector::new(cfg).unwrap().connect().await.err().unwrap();
        assert!(!e.is_permanent(), "{e}");
    }
}
