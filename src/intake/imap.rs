//! The delist mailbox over IMAP (RFC 3501): TLS or STARTTLS, UIDs and UIDVALIDITY, IDLE
//! (RFC 2177) where offered and polling otherwise, MOVE (RFC 6851) or COPY + EXPUNGE.
//!
//! This type only speaks IMAP; what to do with a message is the daemon's business. Every
//! command runs under a timeout, so a dead connection surfaces as an error the daemon
//! answers by reconnecting with backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use async_imap::Session;
use futures::TryStreamExt;
use tokio_rustls::rustls::ClientConfig;

use super::{Disposition, Fetched, SourceKey};
use crate::config::{Imap, Security};
use crate::net::{self, MaybeTls, NetError};
use crate::oauth::{sasl, TokenError, TokenSource};

/// How long one IMAP command may take before the connection is declared dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("IMAP {during}: {source}")]
    Protocol { during: &'static str, source: async_imap::error::Error },
    #[error("IMAP {during}: no answer in {} s", COMMAND_TIMEOUT.as_secs())]
    Timeout { during: &'static str },
    #[error("IMAP login as {user} refused: {reason}")]
    Login { user: String, reason: String },
    #[error("IMAP server does not offer STARTTLS, and security = \"starttls\" forbids going on in clear")]
    NoStarttls,
    #[error("IMAP server sent no UIDVALIDITY for {0}")]
    NoUidValidity(String),
    #[error("not connected")]
    NotConnected,
    /// No token to log in with: a temporary failure, like an unreachable server.
    #[error("IMAP login: {0}")]
    Token(#[from] TokenError),
}

type ImapSession = Session<MaybeTls>;

/// What woke [`ImapSource::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    /// The server announced a change (IDLE), or the poll interval passed.
    Check,
    /// The shutdown signal fired.
    Shutdown,
}

/// Size of a waiting message, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub uid: u32,
    pub size: u32,
}

pub struct ImapSource {
    cfg: Imap,
    tls: Arc<ClientConfig>,
    max_bytes: usize,
    session: Option<ImapSession>,
    uidvalidity: u32,
    can_idle: bool,
    can_move: bool,
    can_uidplus: bool,
    /// The server announced new mail (EXISTS, RECENT) in the answer to some other command
    /// since the last [`ImapSource::pending`]. It will not announce it again: IDLE now would
    /// sleep on a waiting message until the poll interval.
    new_mail: bool,
    /// Tokens for an OAuth2 login (`auth = "xoauth2" | "oauthbearer"`).
    tokens: Option<TokenSource>,
    /// When the session's token is due for renewal: a session is not kept past it, so that
    /// a server which ends sessions when their token expires (Exchange Online does) never
    /// finds one to end, and a long IDLE logs in again with a fresh token.
    session_until: Option<Instant>,
}

async fn timed<T, E>(
    during: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError>
where
    E: Into<async_imap::error::Error>,
{
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ImapError::Protocol { during, source: e.into() }),
        Err(_) => Err(ImapError::Timeout { during }),
    }
}

impl ImapSource {
    pub fn new(cfg: Imap, max_bytes: usize) -> Result<ImapSource, ImapError> {
        let tls = net::tls_config(cfg.ca_file.as_deref())?;
        let tokens = cfg.oauth.clone().map(|o| TokenSource::new("imap", o));
        Ok(ImapSource {
            cfg,
            tls,
            max_bytes,
            session: None,
            uidvalidity: 0,
            can_idle: false,
            can_move: false,
            can_uidplus: false,
            new_mail: false,
            tokens,
            session_until: None,
        })
    }

    pub fn mailbox(&self) -> &str {
        &self.cfg.mailbox
    }

    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    pub fn supports_idle(&self) -> bool {
        self.can_idle
    }

    /// Connect, log in, make sure the folders exist and select the mailbox.
    pub async fn connect(&mut self) -> Result<(), ImapError> {
        self.session = None;
        let c = &self.cfg;
        let tcp = net::connect_tcp(&c.host, c.port, CONNECT_TIMEOUT).await?;
        let stream = match c.security {
            Security::Tls => MaybeTls::Tls(Box::new(net::tls_wrap(self.tls.clone(), &c.tls_name, tcp, CONNECT_TIMEOUT).await?)),
            Security::Starttls | Security::Plain => MaybeTls::Plain(tcp),
        };
        let mut client = async_imap::Client::new(stream);
        // The server greeting (RFC 3501 §7.1).
        let greeting = tokio::time::timeout(CONNECT_TIMEOUT, client.read_response()).await;
        if !matches!(greeting, Ok(Ok(Some(_)))) {
            return Err(ImapError::Timeout { during: "greeting" });
        }
        if c.security == Security::Starttls {
            // RFC 3501 §6.2.1; the server's answer to STARTTLS must be OK or we stop here.
            if timed("STARTTLS", client.run_command_and_check_ok("STARTTLS", None)).await.is_err() {
                return Err(ImapError::NoStarttls);
            }
            let MaybeTls::Plain(tcp) = client.into_inner() else { return Err(ImapError::NoStarttls) };
            let tls = net::tls_wrap(self.tls.clone(), &c.tls_name, tcp, CONNECT_TIMEOUT).await?;
            client = async_imap::Client::new(MaybeTls::Tls(Box::new(tls)));
        }
        self.session_until = None;
        let mut session = if self.tokens.is_some() {
            self.oauth_login(client).await?
        } else {
            let login = tokio::time::timeout(COMMAND_TIMEOUT, client.login(&c.user, c.password.expose())).await;
            match login {
                Ok(Ok(s)) => s,
                Ok(Err((e, _))) => return Err(ImapError::Login { user: c.user.clone(), reason: e.to_string() }),
                Err(_) => return Err(ImapError::Timeout { during: "LOGIN" }),
            }
        };
        let c = &self.cfg;
        let caps = timed("CAPABILITY", session.capabilities()).await?;
        self.can_idle = c.idle && caps.has_str("IDLE");
        self.can_move = caps.has_str("MOVE");
        self.can_uidplus = caps.has_str("UIDPLUS");

        let existing: Vec<String> = {
            let list = timed("LIST", session.list(Some(""), Some("*"))).await?;
            timed("LIST", list.map_ok(|n| n.name().to_string()).try_collect::<Vec<_>>()).await?
        };
        for folder in [&c.processed_folder, &c.quarantine_folder] {
            if !existing.iter().any(|n| n == folder) {
                timed("CREATE", session.create(folder)).await?;
            }
        }
        let mbox = timed("SELECT", session.select(&c.mailbox)).await?;
        self.uidvalidity = mbox.uid_validity.ok_or_else(|| ImapError::NoUidValidity(c.mailbox.clone()))?;
        Self::drain_unsolicited(&mut session);
        tracing::info!(
            host = %c.host, mailbox = %c.mailbox, uidvalidity = self.uidvalidity,
            idle = self.can_idle, r#move = self.can_move, "IMAP connected"
        );
        self.session = Some(session);
        Ok(())
    }

    /// `AUTHENTICATE` with a token (RFC 3501 §6.2.2). A refused token that came from the
    /// cache is given up and the login tried once more, at once, with a fresh one from the
    /// command: an expired or revoked token costs one round trip, not a backoff.
    async fn oauth_login(&mut self, mut client: async_imap::Client<MaybeTls>) -> Result<ImapSession, ImapError> {
        let Some(tokens) = self.tokens.as_ref() else { return Err(ImapError::NotConnected) };
        let user = self.cfg.user.clone();
        let offered = sasl::oauth_mechanisms(auth_mechanisms(&mut client).await?.iter().map(String::as_str));
        let mechanism = sasl::choose(tokens.mechanism(), &offered);
        if mechanism != tokens.mechanism() {
            tracing::info!(configured = tokens.mechanism().name(), using = mechanism.name(), "IMAP server does not offer the configured mechanism");
        }
        let mut retried = false;
        loop {
            let from_cache = tokens.cached_at(Instant::now()).is_some();
            let token = tokens.token().await?;
            let failure = Arc::new(Mutex::new(None));
            let login = SaslLogin {
                first: Some(mechanism.initial_response(&user, token.value.expose())),
                acknowledge: mechanism.acknowledge_error(),
                failure: failure.clone(),
            };
            let refused = match tokio::time::timeout(COMMAND_TIMEOUT, client.authenticate(mechanism.name(), login)).await {
                Ok(Ok(session)) => {
                    self.session_until = Some(token.renew_at);
                    tracing::debug!(mechanism = mechanism.name(), user = %user, "IMAP logged in with a token");
                    return Ok(session);
                }
                Ok(Err((e @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)), c))) => {
                    client = c;
                    e
                }
                Ok(Err((e, _))) => return Err(ImapError::Protocol { during: "AUTHENTICATE", source: e }),
                Err(_) => return Err(ImapError::Timeout { during: "AUTHENTICATE" }),
            };
            let said = failure.lock().unwrap_or_else(|p| p.into_inner()).take().map(|c| sasl::describe_error(&c));
            let said = said.unwrap_or_else(|| "(no details)".into());
            tokens.invalidate(&token);
            if from_cache && !retried {
                tracing::warn!(mechanism = mechanism.name(), server_said = %said, "IMAP refused the cached token; trying a fresh one");
                retried = true;
                continue;
            }
            return Err(ImapError::Login { user, reason: format!("{} refused: {refused}; server said: {said}", mechanism.name()) });
        }
    }

    /// The session's token is due for renewal: log out and connect again.
    pub fn needs_new_login(&self) -> bool {
        self.session.is_some() && self.session_until.is_some_and(|u| Instant::now() >= u)
    }

    /// async-imap queues unsolicited responses in a bounded channel that blocks the session
    /// when full; we learn what changed by searching, so they are dropped, but whether one
    /// announced new mail is kept (see `new_mail`).
    fn drain_unsolicited(session: &mut ImapSession) -> bool {
        let mut new_mail = false;
        while let Ok(r) = session.unsolicited_responses.try_recv() {
            new_mail |= announces_mail(&r);
        }
        new_mail
    }

    fn session(&mut self) -> Result<&mut ImapSession, ImapError> {
        self.session.as_mut().ok_or(ImapError::NotConnected)
    }

    /// Drop the connection (after an error), so the next call reconnects.
    pub fn disconnect(&mut self) {
        self.session = None;
    }

    pub async fn logout(&mut self) {
        if let Some(mut s) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.logout()).await;
        }
    }

    /// Every message waiting in the mailbox, oldest UID first, with its size.
    pub async fn pending(&mut self) -> Result<Vec<Pending>, ImapError> {
        // What arrives from now on is either found by this search or announced again.
        self.new_mail = false;
        let session = self.session()?;
        let mut uids: Vec<u32> = timed("UID SEARCH", session.uid_search("UNDELETED")).await?.into_iter().collect();
        uids.sort_unstable();
        let mut out = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(500) {
            let set = chunk.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            let fetches = timed("UID FETCH sizes", session.uid_fetch(set, "(UID RFC822.SIZE)")).await?;
            let mut got = timed("UID FETCH sizes", fetches.try_collect::<Vec<_>>()).await?;
            got.sort_by_key(|f| f.uid);
            out.extend(got.iter().filter_map(|f| Some(Pending { uid: f.uid?, size: f.size.unwrap_or(0) })));
        }
        let announced = Self::drain_unsolicited(session);
        self.new_mail |= announced;
        Ok(out)
    }

    /// Fetch these messages (at most the extraction cap of each), in UID order. A message
    /// expunged meanwhile by someone else is simply absent from the answer.
    pub async fn fetch(&mut self, batch: &[Pending]) -> Result<Vec<Fetched>, ImapError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let cap = self.max_bytes;
        let (mailbox, uidvalidity) = (self.cfg.mailbox.clone(), self.uidvalidity);
        let session = self.session()?;
        let set = batch.iter().map(|p| p.uid.to_string()).collect::<Vec<_>>().join(",");
        // BODY.PEEK leaves \Seen alone; <0.cap> is a partial fetch (RFC 3501 §6.4.5) so a
        // huge message is never read whole.
        let query = format!("(UID RFC822.SIZE BODY.PEEK[]<0.{cap}>)");
        let fetches = timed("UID FETCH", session.uid_fetch(set, query)).await?;
        let got = timed("UID FETCH", fetches.try_collect::<Vec<_>>()).await?;
        let announced = Self::drain_unsolicited(session);
        self.new_mail |= announced;
        let mut out: Vec<Fetched> = got
            .iter()
            .filter_map(|f| {
                let uid = f.uid?;
                let raw = f.body().unwrap_or_default();
                Some(Fetched {
                    key: SourceKey::Imap { mailbox: mailbox.clone(), uidvalidity, uid },
                    raw: raw[..raw.len().min(cap)].to_vec(),
                    size: u64::from(f.size.unwrap_or(raw.len() as u32)),
                })
            })
            .collect();
        out.sort_by_key(|f| match f.key {
            SourceKey::Imap { uid, .. } => uid,
            _ => 0,
        });
        Ok(out)
    }

    /// Move messages to the processed or quarantine folder. Only called once their outcome
    /// is committed: a crash before this leaves them in the mailbox, recorded.
    pub async fn file(&mut self, uids: &[u32], d: Disposition) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        // async-imap quotes mailbox names itself (RFC 3501 §4.3).
        let folder = match d {
            Disposition::Processed => self.cfg.processed_folder.clone(),
            Disposition::Quarantine => self.cfg.quarantine_folder.clone(),
        };
        let (can_move, can_uidplus) = (self.can_move, self.can_uidplus);
        let session = self.session()?;
        let set = uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        if can_move {
            timed("UID MOVE", session.uid_mv(&set, &folder)).await?;
        } else {
            // RFC 6851 §3.3: the same effect without MOVE.
            timed("UID COPY", session.uid_copy(&set, &folder)).await?;
            let flagged = timed("UID STORE", session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)")).await?;
            timed("UID STORE", flagged.try_collect::<Vec<_>>()).await?;
            if can_uidplus {
                let gone = timed("UID EXPUNGE", session.uid_expunge(&set)).await?;
                timed("UID EXPUNGE", gone.try_collect::<Vec<_>>()).await?;
            } else {
                let gone = timed("EXPUNGE", session.expunge()).await?;
                timed("EXPUNGE", gone.try_collect::<Vec<_>>()).await?;
            }
        }
        let announced = Self::drain_unsolicited(session);
        self.new_mail |= announced;
        Ok(())
    }

    /// Wait for something to do: IDLE until the server speaks (or `max` passes), else sleep
    /// `max`. Returns early on shutdown.
    pub async fn wait(&mut self, max: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Result<Woke, ImapError> {
        if self.new_mail {
            return Ok(Woke::Check);
        }
        // Never past the session's token: the caller logs in again when woken.
        let max = match self.session_until {
            Some(until) => max.min(until.saturating_duration_since(Instant::now())),
            None => max,
        };
        if max.is_zero() {
            return Ok(Woke::Check);
        }
        if !self.can_idle {
            return Ok(tokio::select! {
                _ = tokio::time::sleep(max) => Woke::Check,
                _ = shutdown.changed() => Woke::Shutdown,
            });
        }
        let session = self.session.take().ok_or(ImapError::NotConnected)?;
        // async-imap files what comes before the server's "+ idling" as unsolicited; mail
        // announced there would not be announced again while idling.
        let before_idling = session.unsolicited_responses.clone();
        let mut idle = session.idle();
        timed("IDLE", idle.init()).await?;
        let mut announced = false;
        while let Ok(r) = before_idling.try_recv() {
            announced |= announces_mail(&r);
        }
        let woke = if announced {
            Woke::Check
        } else {
            // RFC 2177 §3: re-issue IDLE at least every 29 minutes.
            let (wait, stop) = idle.wait_with_timeout(max.min(Duration::from_secs(29 * 60)));
            let woke = tokio::select! {
                r = wait => match r {
                    Ok(IdleResponse::NewData(_)) | Ok(IdleResponse::Timeout) | Ok(IdleResponse::ManualInterrupt) => Woke::Check,
                    Err(e) => return Err(ImapError::Protocol { during: "IDLE", source: e }),
                },
                _ = shutdown.changed() => Woke::Shutdown,
            };
            drop(stop);
            woke
        };
        let mut session = timed("DONE", idle.done()).await?;
        Self::drain_unsolicited(&mut session);
        self.session = Some(session);
        Ok(woke)
    }
}

/// The SASL mechanisms the server offers before login (`AUTH=` capabilities, RFC 3501 §6.1.1).
async fn auth_mechanisms(client: &mut async_imap::Client<MaybeTls>) -> Result<Vec<String>, ImapError> {
    use async_imap::imap_proto::{Capability, Response};
    use async_imap::types::UnsolicitedResponse;
    // The untagged CAPABILITY answer comes back on the channel for what a command did not ask.
    let (tx, rx) = async_channel::bounded(16);
    timed("CAPABILITY", client.run_command_and_check_ok("CAPABILITY", Some(tx))).await?;
    let mut out = Vec::new();
    while let Ok(r) = rx.try_recv() {
        if let UnsolicitedResponse::Other(data) = r {
            if let Response::Capabilities(caps) = data.parsed() {
                out.extend(caps.iter().filter_map(|c| match c {
                    Capability::Auth(m) => Some(m.to_string()),
                    _ => None,
                }));
            }
        }
    }
    Ok(out)
}

/// Answers the server's challenges of one `AUTHENTICATE`: the initial response to the first,
/// and to an error challenge (RFC 7628 §3.2.2), the acknowledgement, keeping the error.
struct SaslLogin {
    first: Option<Vec<u8>>,
    acknowledge: &'static [u8],
    failure: Arc<Mutex<Option<Vec<u8>>>>,
}

impl async_imap::Authenticator for SaslLogin {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        match self.first.take() {
            Some(first) => first,
            None => {
                *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(challenge.to_vec());
                self.acknowledge.to_vec()
            }
        }
    }
}

/// An untagged response that says the mailbox grew (RFC 3501 §7.3.1, §7.3.2).
fn announces_mail(r: &UnsolicitedResponse) -> bool {
    matches!(r, UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_))
}
