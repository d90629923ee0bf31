//! Secrets kept out of the logs, whatever prints them.
//!
//! delistd never logs a credential itself, but the protocol libraries under it do at trace
//! level: async-imap logs every command it writes, so `AUTHENTICATE` answers carrying an
//! OAuth2 token (base64) would reach the journal of anyone who ran `DELISTD_LOG=trace`.
//! Filtering those crates out would also hide what trace level is for. Instead, every secret
//! that delistd hands to a library is [`register`]ed here, in each form it goes on the wire,
//! and the log writer ([`Redacted`]) replaces it before a line leaves the process.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced with.
pub const MASK: &str = "[redacted]";

/// Secrets remembered at once: tokens are renewed about hourly, so this spans days while
/// keeping the scan of each log line short.
const KEEP: usize = 64;

/// Shorter strings are not masked: they would blank out ordinary words (and no token or
/// encoded SASL answer is this short).
const MIN_LEN: usize = 8;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn secrets() -> MutexGuard<'static, Vec<String>> {
    SECRETS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Mask `secret` in every log line from now on.
pub fn register(secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    let mut s = secrets();
    if s.iter().any(|known| known == secret) {
        return;
    }
    if s.len() >= KEEP {
        s.remove(0);
    }
    s.push(secret.to_string());
}

/// `text` with every registered secret masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let s = secrets();
    if !s.iter().any(|secret| text.contains(secret.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    // Longest first, so a secret that contains another (a SASL answer holding the token)
    // is masked whole.
    let mut by_len: Vec<&String> = s.iter().collect();
    by_len.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    for secret in by_len {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// A [`MakeWriter`] whose writers mask registered secrets: `fmt().with_writer(Redacted(stderr))`.
pub struct Redacted<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacted<M> {
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
    fn registered_secrets_are_masked_longest_first() {
        register("tok-1234567890");
        register("dXNlcj1hAWF1dGg9QmVhcmVyIHRvay0xMjM0NTY3ODkwAQE=");
        assert_eq!(redact("token tok-1234567890 here"), "token [redacted] here");
        assert_eq!(redact("encode: dXNlcj1hAWF1dGg9QmVhcmVyIHRvay0xMjM0NTY3ODkwAQE="), "encode: [redacted]");
        assert!(matches!(redact("nothing secret"), Cow::Borrowed(_)));
        // Too short to mask safely.
        register("abc");
        assert_eq!(redact("abc"), "abc");
    }

    #[test]
    fn the_writer_masks_what_it_was_given_in_pieces() {
        register("piece-one-piece-two");
        let mut out = Vec::new();
        {
            let mut w = RedactingWriter { inner: &mut out, buf: Vec::new() };
            w.write_all(b"a piece-one-").unwrap();
            w.write_all(b"piece-two b\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "a [redacted] b\n");
    }
}
