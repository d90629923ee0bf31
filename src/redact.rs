//! No secret in any log, at any level.
//!
//! delistd's own logs never print a password (the config's `Secret` redacts itself), but the
//! protocol libraries trace what they write: async-imap logs the encoded LOGIN command at
//! trace level (through the `log` crate), lettre logs `AUTH PLAIN <base64>` at debug level.
//! Rather than trust every library version to stay quiet, every log line passes through
//! [`Redacting`] on its way out, which replaces each registered secret, in each form it can
//! take on the wire or in a log (as is, escaped for a quoted string, Debug- or
//! JSON-escaped, base64 alone and in a SASL PLAIN response, RFC 4616), with `[REDACTED]`.
//!
//! tracing-subscriber's fmt layer writes each event with one `write_all` of the whole
//! formatted line, so a secret is never split between two writes.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::RwLock;

use tracing_subscriber::fmt::MakeWriter;

const MASK: &str = "[REDACTED]";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Hide `secret` (a password; `user` its login name, for the SASL PLAIN form) from every
/// log line written from now on.
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
    let mut all = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    for f in forms {
        if !f.is_empty() && !all.contains(&f) {
            all.push(f);
        }
    }
    // Longest first: a form that contains another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `text` with every registered secret masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let all = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    if !all.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in all.iter() {
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

/// A [`MakeWriter`] whose writers mask the registered secrets.
pub struct Redacting<M>(pub M);

pub struct RedactingWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match redact(&text) {
            Cow::Borrowed(_) => self.0.write_all(buf)?,
            Cow::Owned(masked) => self.0.write_all(masked.as_bytes())?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
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
}
