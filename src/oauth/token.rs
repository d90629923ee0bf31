//! Access tokens from the operator's command, cached until they expire.
//!
//! The command is an argv list run without a shell (nothing in it is interpreted), with no
//! stdin and a timeout. Its stdout is the token alone, or a JSON object with `access_token`
//! and, optionally, `expires_in` (seconds, RFC 6749 §5.1), as a provider's token endpoint
//! answers, so `curl ... | jq .` works as is. Its stderr is logged when it fails.
//!
//! A failure here is the server's kind of failure, never the message's: the caller backs
//! off and tries again, and no reply is failed because a token could not be had.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{OAuth, Secret};

/// How long the command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of the command's stderr kept for the log.
const STDERR_KEEP: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token command {program} could not start: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("token command {program} did not finish within {} s (killed)", COMMAND_TIMEOUT.as_secs())]
    Timeout { program: String },
    #[error("token command {program} failed ({status}): {stderr}")]
    Failed { program: String, status: String, stderr: String },
    #[error("token command {program} printed no usable token: {reason}")]
    Unusable { program: String, reason: String },
}

/// A token and until when delistd uses it.
#[derive(Clone)]
pub struct Token {
    pub value: Secret,
    /// When to stop using it: its expiry less a margin (see [`renew_at`]).
    pub renew_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("value", &self.value).field("renew_at", &self.renew_at).finish()
    }
}

/// When a token that lives `lifetime` from `fetched` should be replaced: a tenth of its life
/// (at most a minute) early, so that a login started just before the expiry, or a session
/// renewed then, never presents a token the server already considers expired.
pub fn renew_at(fetched: Instant, lifetime: Duration) -> Instant {
    fetched + lifetime - (lifetime / 10).min(Duration::from_secs(60))
}

/// What the command printed, understood.
#[derive(Debug, PartialEq, Eq)]
pub struct Printed {
    pub token: String,
    /// `expires_in`, when the command gave it.
    pub lifetime: Option<Duration>,
}

/// Read the command's stdout: the token alone, or JSON with `access_token` and `expires_in`.
pub fn parse_output(stdout: &[u8]) -> Result<Printed, String> {
    let text = std::str::from_utf8(stdout).map_err(|_| "its output is not UTF-8".to_string())?.trim();
    if text.is_empty() {
        return Err("its output is empty".into());
    }
    let (token, lifetime) = if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("its output looks like JSON but is not: {e}"))?;
        let token = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or("its JSON has no \"access_token\" string")?
            .trim()
            .to_string();
        // A number, or a string of one (some endpoints quote it).
        let lifetime = match v.get("expires_in") {
            None | Some(serde_json::Value::Null) => None,
            Some(e) => {
                let secs = e.as_f64().or_else(|| e.as_str().and_then(|s| s.trim().parse::<f64>().ok()));
                match secs {
                    Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s.min(365.0 * 86400.0))),
                    _ => return Err(format!("its \"expires_in\" ({e}) is not a positive number of seconds")),
                }
            }
        };
        (token, lifetime)
    } else {
        (text.to_string(), None)
    };
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    // A token travels inside a SASL message and an SMTP command line: no spaces, no controls.
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token contains spaces or line breaks (print the token alone, or JSON)".into());
    }
    Ok(Printed { token, lifetime })
}

/// Where tokens for one server come from: the command, and the token in hand.
pub struct TokenSource {
    /// `imap` or `smtp`, for the log.
    server: &'static str,
    cfg: OAuth,
    cached: Mutex<Option<Token>>,
    /// Held while the command runs, so that connections asking at once share one run.
    fetching: tokio::sync::Mutex<()>,
}

impl TokenSource {
    pub fn new(server: &'static str, cfg: OAuth) -> TokenSource {
        TokenSource { server, cfg, cached: Mutex::new(None), fetching: tokio::sync::Mutex::new(()) }
    }

    pub fn mechanism(&self) -> crate::config::OAuthMechanism {
        self.cfg.mechanism
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<Token>> {
        self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token in hand while it is good at `now`.
    pub fn cached_at(&self, now: Instant) -> Option<Token> {
        self.cache().as_ref().filter(|t| now < t.renew_at).cloned()
    }

    /// The server refused `token`: forget it, so that the next [`TokenSource::token`] runs
    /// the command again. (If another connection has already replaced it, the newer token
    /// stays.)
    pub fn invalidate(&self, token: &Token) {
        let mut cache = self.cache();
        if cache.as_ref().is_some_and(|t| t.value.expose() == token.value.expose()) {
            *cache = None;
            tracing::info!(server = self.server, "token refused; the token command will be run again");
        }
    }

    /// A good token: the one in hand, or a fresh one from the command.
    pub async fn token(&self) -> Result<Token, TokenError> {
        if let Some(t) = self.cached_at(Instant::now()) {
            return Ok(t);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(t) = self.cached_at(Instant::now()) {
            return Ok(t);
        }
        let argv = self.cfg.token_command.clone();
        let program = argv.first().cloned().unwrap_or_default();
        let printed = tokio::task::spawn_blocking(move || run(&argv))
            .await
            .map_err(|e| TokenError::Spawn { program: program.clone(), source: std::io::Error::other(e.to_string()) })??;
        let fetched = Instant::now();
        let lifetime = printed.lifetime.unwrap_or(self.cfg.token_lifetime);
        // From here on, no log line can show it (nor the SASL messages made of it, which
        // the mechanism registers).
        crate::redact::register(&printed.token, None);
        let token = Token { value: Secret::new(format!("{} token command", self.server), printed.token), renew_at: renew_at(fetched, lifetime) };
        tracing::debug!(
            server = self.server,
            lifetime_s = lifetime.as_secs(),
            from = if printed.lifetime.is_some() { "expires_in" } else { "token_lifetime" },
            "new token from the token command"
        );
        *self.cache() = Some(token.clone());
        Ok(token)
    }
}

/// Run `argv` (no shell, no stdin) within [`COMMAND_TIMEOUT`]; its stdout, understood.
fn run(argv: &[String]) -> Result<Printed, TokenError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = Command::new(&program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TokenError::Spawn { program: program.clone(), source })?;
    // Read both pipes while it runs: a chatty command would otherwise block on a full pipe.
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.by_ref().take(1 << 20).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < COMMAND_TIMEOUT => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TokenError::Timeout { program });
            }
            Err(source) => return Err(TokenError::Spawn { program, source }),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let mut text = String::from_utf8_lossy(&stderr).trim().to_string();
        if text.len() > STDERR_KEEP {
            let mut cut = STDERR_KEEP;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" …");
        }
        if text.is_empty() {
            text = "(nothing on stderr)".into();
        }
        return Err(TokenError::Failed { program, status: status.to_string(), stderr: text });
    }
    parse_output(&stdout).map_err(|reason| TokenError::Unusable { program, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OAuthMechanism;

    fn source(argv: &[&str], lifetime: Duration) -> TokenSource {
        TokenSource::new(
            "imap",
            OAuth { mechanism: OAuthMechanism::Xoauth2, token_command: argv.iter().map(|s| s.to_string()).collect(), token_lifetime: lifetime },
        )
    }

    #[test]
    fn output_is_a_token_or_json() {
        assert_eq!(parse_output(b"ya29.a0AfH6SM\n").unwrap(), Printed { token: "ya29.a0AfH6SM".into(), lifetime: None });
        let json = br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.x.y"}"#;
        assert_eq!(parse_output(json).unwrap(), Printed { token: "eyJ0eXAi.x.y".into(), lifetime: Some(Duration::from_secs(3599)) });
        let quoted = br#"{"access_token":"abc","expires_in":"120"}"#;
        assert_eq!(parse_output(quoted).unwrap().lifetime, Some(Duration::from_secs(120)));
        for bad in [&b""[..], b"  \n", b"two words", b"{\"expires_in\": 3}", b"{\"access_token\": \"a\", \"expires_in\": -5}", b"{nope"] {
            assert!(parse_output(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_token_is_renewed_a_tenth_of_its_life_early_at_most_a_minute() {
        let t0 = Instant::now();
        assert_eq!(renew_at(t0, Duration::from_secs(3600)), t0 + Duration::from_secs(3540));
        assert_eq!(renew_at(t0, Duration::from_secs(10)), t0 + Duration::from_secs(9));
    }

    #[tokio::test]
    async fn the_token_is_cached_until_renewal_and_fetched_again_after_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = dir.path().join("tok");
        std::fs::write(&script, format!("#!/bin/sh\necho run >> {}\nprintf 'tok-%s' \"$(wc -l < {})\"\n", count.display(), count.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let src = source(&[script.to_str().unwrap()], Duration::from_secs(3000));
        let a = src.token().await.unwrap();
        let b = src.token().await.unwrap();
        assert_eq!(a.value.expose(), b.value.expose());
        assert!(a.value.expose().starts_with("tok-") && a.value.expose().ends_with('1'), "{}", a.value.expose());
        // Past its renewal time it is not handed out again.
        assert!(src.cached_at(a.renew_at + Duration::from_millis(1)).is_none());
        assert!(src.cached_at(a.renew_at - Duration::from_secs(1)).is_some());
        src.invalidate(&b);
        let c = src.token().await.unwrap();
        // A refusal of a token already replaced does not drop the new one.
        src.invalidate(&a);
        assert_eq!(src.token().await.unwrap().value.expose(), c.value.expose());
        assert!(c.value.expose().ends_with('2'), "{}", c.value.expose());
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
    }

    #[tokio::test]
    async fn connections_asking_at_once_share_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = dir.path().join("tok");
        std::fs::write(&script, format!("#!/bin/sh\necho run >> {}\nsleep 0.2\necho tok-shared\n", count.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let src = source(&[script.to_str().unwrap()], Duration::from_secs(3000));
        let got = futures::future::join_all((0..4).map(|_| src.token())).await;
        assert!(got.iter().all(|t| t.as_ref().map(|t| t.value.expose() == "tok-shared").unwrap_or(false)));
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_stderr_and_no_shell_is_involved() {
        let src = source(&["/bin/sh", "-c", "echo 'AADSTS7000215: Invalid client secret' >&2; exit 3"], Duration::from_secs(60));
        let e = src.token().await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, TokenError::Failed { .. }) && text.contains("AADSTS7000215") && text.contains('3'), "{text}");
        let e = source(&["/bin/echo", "two", "words"], Duration::from_secs(60)).token().await.unwrap_err();
        assert!(matches!(e, TokenError::Unusable { .. }), "{e}");
        // The argv is not a shell line: "$HOME" reaches the program as written.
        let src = source(&["/bin/echo", "$HOME"], Duration::from_secs(60));
        assert_eq!(src.token().await.unwrap().value.expose(), "$HOME");
        let e = source(&["/nonexistent/delist-token"], Duration::from_secs(60)).token().await.unwrap_err();
        assert!(matches!(e, TokenError::Spawn { .. }), "{e}");
    }
}
