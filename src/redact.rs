//! No secret in any log, at any level.
//!
//! delistd's own logs never print a password or a token (the config's `Secret` redacts
//! itself), but the protocol libraries trace what they write: async-imap logs the encoded
//! LOGIN and AUTHENTICATE commands at trace level (through the `log` crate), lettre logs
//! `AUTH PLAIN <base64>` at debug level. Filtering those crates out would also hide what
//! trace level is for, and we cannot trust every library version to stay quiet. Instead,
//! every secret delistd hands to a library is [`register`]ed here, in each form it can take
//! on the wire or in a log (as is, escaped for a quoted string, Debug- or JSON-escaped,
//! base64 alone and in a SASL PLAIN response, RFC 4616), and the log writer
//! ([`Redacting`]) replaces it with [`MASK`] before a line leaves the process.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced with.
pub const MASK: &str = "[REDACTED]";

/// Forms remembered at once. OAuth2 tokens are renewed about hourly and each brings a few
/// forms, so this spans days while keeping the scan of each log line short; the oldest go
/// first (a password, registered at start, is re-registered on each login).
const KEEP: usize = 512;

/// Shorter strings are not masked: they would blank out ordinary words in every line, and no
/// token or encoded SASL answer is this short. (A password this short is refused nowhere,
/// but is then masked in its longer quoted and base64 forms.)
const MIN_LEN: usize = 4;

/// In the order registered (oldest first).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn secrets() -> MutexGuard<'static, Vec<String>> {
    SECRETS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Hide `secret` (a password or token; `user` its login name, for the SASL PLAIN form) from
/// every log line written from now on.
pub fn register(secret: &str, user: Option<&str>) {
    if secret.is_empty() {
        return;
    }
    let mut forms = vec![secret.to_string()];
    // RFC 3501 quoted string (async-imap), then Debug/JSON escaping of that.
    let quoted = secret.replace('\\', "\\\\").replace('"', "\\\"");
    forms.push(quoted.clone());
    forms.push(quoted.escape_debug().to_string());
    forms.push(secret.escape_debug().to_string());
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json.trim_matches('"').to_string());
    }
    forms.push(base64(secret.as_bytes()));
    if let Some(user) = user {
        // RFC 4616: [authzid] NUL authcid NUL passwd.
        forms.push(base64(format!("\0{user}\0{secret}").as_bytes()));
        forms.push(base64(format!("{user}\0{user}\0{secret}").as_bytes()));
    }
    remember(&mut secrets(), forms);
}

/// Add `forms` to the registry `all`, keeping at most [`KEEP`], the oldest forgotten first.
fn remember(all: &mut Vec<String>, forms: Vec<String>) {
    for f in forms {
        if f.len() < MIN_LEN {
            continue;
        }
        // Seen again: move it to the young end so it is not the next to be forgotten.
        all.retain(|known| *known != f);
        all.push(f);
    }
    let excess = all.len().saturating_sub(KEEP);
    all.drain(..excess);
}

/// `text` with every registered secret masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let all = secrets();
    if !all.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    // Longest first: a form that contains another (a SASL answer holding the token) is
    // masked whole.
    let mut by_len: Vec<&String> = all.iter().collect();
    by_len.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in by_len {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A [`MakeWriter`] whose writers mask registered secrets:
/// `fmt().with_writer(Redacting(stderr))`.
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { inner: self.0.make_writer(), buf: Vec::new() }
    }
}

/// Collects one event's output and writes it, masked, when dropped: the formatter makes one
/// writer per event, so a secret split across two `write` calls is still seen whole.
pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let _ = self.inner.write_all(redact(&text).as_bytes());
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_a_secret_is_masked() {
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
        assert_eq!(base64(b"ab"), "YWI=");
        register("s3cr\"et-for-tests", Some("delist@example.test"));
        let lines = [
            "a1 LOGIN \"delist@example.test\" \"s3cr\\\"et-for-tests\"".to_string(),
            format!("{:?}", "a1 LOGIN \"delist@example.test\" \"s3cr\\\"et-for-tests\""),
            format!("Wrote: AUTH PLAIN {}", base64(b"\0delist@example.test\0s3cr\"et-for-tests")),
            serde_json::to_string("s3cr\"et-for-tests").unwrap(),
        ];
        for l in &lines {
            let out = redact(l);
            assert!(
                !out.contains("et-for-tests") && !out.contains(&base64(b"\0delist@example.test\0s3cr\"et-for-tests")),
                "{l} -> {out}"
            );
            assert!(out.contains(MASK), "{out}");
        }
        assert!(matches!(redact("nothing secret here"), Cow::Borrowed(_)));
    }

    #[test]
    fn registered_secrets_are_masked_longest_first() {
        register("tok-1234567890", None);
        register("dXNlcj1hAWF1dGg9QmVhcmVyIHRvay0xMjM0NTY3ODkwAQE=", None);
        assert_eq!(redact("token tok-1234567890 here"), "token [REDACTED] here");
        assert_eq!(redact("encode: dXNlcj1hAWF1dGg9QmVhcmVyIHRvay0xMjM0NTY3ODkwAQE="), "encode: [REDACTED]");
        // Too short to mask safely.
        register("abc", None);
        assert_eq!(redact("abc"), "abc");
    }

    #[test]
    fn the_oldest_forms_are_forgotten_first() {
        // A registry of its own: the global one is shared with the other tests.
        let mut all = Vec::new();
        for i in 0..KEEP + 10 {
            remember(&mut all, vec![format!("rotating-token-{i:05}")]);
        }
        remember(&mut all, vec!["rotating-token-00011".to_string()]);
        assert_eq!(all.len(), KEEP);
        assert!(!all.contains(&"rotating-token-00000".to_string()));
        assert_eq!(all.last().map(String::as_str), Some("rotating-token-00011"));
        assert!(all.contains(&format!("rotating-token-{:05}", KEEP + 9)));
    }

    #[test]
    fn the_writer_masks_what_it_was_given_in_pieces() {
        register("piece-one-piece-two", None);
        let mut out = Vec::new();
        {
            let mut w = RedactingWriter { inner: &mut out, buf: Vec::new() };
            w.write_all(b"a piece-one-").unwrap();
            w.write_all(b"piece-two b\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "a [REDACTED] b\n");
    }
}
