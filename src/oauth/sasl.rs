//! The SASL messages of an OAuth 2.0 login, the same for IMAP `AUTHENTICATE` and SMTP `AUTH`.
//!
//! * `XOAUTH2` (Google, Microsoft): `user=` user `^A` `auth=Bearer ` token `^A^A`.
//! * `OAUTHBEARER` (RFC 7628 §3.1): a GS2 header naming the user (`n,a=user,`), then
//!   `^A` `auth=Bearer ` token `^A^A`.
//!
//! A refused token is answered with a challenge holding a JSON error (RFC 7628 §3.2.2; Google
//! and Microsoft do the same for XOAUTH2), which the client must acknowledge before the
//! server sends its final "no": an empty response for XOAUTH2, `^A` for OAUTHBEARER
//! (§3.2.3). The JSON says why (`invalid_token`, `insufficient_scope`, ...), so it is
//! decoded for the log; it never holds the token.

use base64::Engine as _;

use crate::config::OAuthMechanism;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl OAuthMechanism {
    /// The SASL name (RFC 4422), as servers advertise it.
    pub fn name(self) -> &'static str {
        match self {
            OAuthMechanism::Xoauth2 => "XOAUTH2",
            OAuthMechanism::Oauthbearer => "OAUTHBEARER",
        }
    }

    fn from_name(name: &str) -> Option<OAuthMechanism> {
        match name.to_ascii_uppercase().as_str() {
            "XOAUTH2" => Some(OAuthMechanism::Xoauth2),
            "OAUTHBEARER" => Some(OAuthMechanism::Oauthbearer),
            _ => None,
        }
    }

    /// The client's first (and only) message. Registered with [`crate::redact`] in its
    /// base64 form, the one protocol libraries log.
    pub fn initial_response(self, user: &str, token: &str) -> Vec<u8> {
        let msg = match self {
            OAuthMechanism::Xoauth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
            // RFC 7628 §3.1: gs2-header "n,a=" saslname "," (RFC 5801 escaping of the name).
            OAuthMechanism::Oauthbearer => {
                format!("n,a={},\x01auth=Bearer {token}\x01\x01", user.replace('=', "=3D").replace(',', "=2C"))
            }
        };
        crate::redact::register(&B64.encode(msg.as_bytes()), None);
        msg.into_bytes()
    }

    /// [`OAuthMechanism::initial_response`] in base64, as SMTP `AUTH` sends it (RFC 4954).
    pub fn initial_response_base64(self, user: &str, token: &str) -> String {
        B64.encode(self.initial_response(user, token))
    }

    /// The client's answer to the server's error challenge, after which the server fails
    /// the exchange.
    pub fn acknowledge_error(self) -> &'static [u8] {
        match self {
            OAuthMechanism::Xoauth2 => b"",
            OAuthMechanism::Oauthbearer => b"\x01",
        }
    }
}

/// The OAuth mechanisms among `advertised` SASL names, in the server's order.
pub fn oauth_mechanisms<'a>(advertised: impl IntoIterator<Item = &'a str>) -> Vec<OAuthMechanism> {
    let mut out = Vec::new();
    for m in advertised.into_iter().filter_map(OAuthMechanism::from_name) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// The mechanism to log in with: the configured one if the server offers it, else the first
/// OAuth mechanism it does offer (an operator who wrote `xoauth2` for a server that only has
/// `OAUTHBEARER` still wants the mailbox read), else the configured one, which the server
/// will then refuse in its own words.
pub fn choose(configured: OAuthMechanism, advertised: &[OAuthMechanism]) -> OAuthMechanism {
    if advertised.contains(&configured) {
        configured
    } else {
        advertised.first().copied().unwrap_or(configured)
    }
}

/// The error challenge of a refused login, for the log: `status=invalid_token scope=mail`, or
/// the text itself if it is not JSON.
pub fn describe_error(challenge: &[u8]) -> String {
    let text = String::from_utf8_lossy(challenge);
    let text = text.trim();
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
        // "status" first: it is the reason; the rest in key order.
        Ok(fields) if !fields.is_empty() => {
            let status = fields.get_key_value("status");
            status
                .into_iter()
                .chain(fields.iter().filter(|(k, _)| k.as_str() != "status"))
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
        _ if text.is_empty() => "(no details)".into(),
        _ => text.chars().take(300).collect(),
    }
}

/// An SMTP `334` challenge (base64, RFC 4954 §4) decoded and described.
pub fn describe_base64_error(challenge: &str) -> String {
    match B64.decode(challenge.trim()) {
        Ok(bytes) => describe_error(&bytes),
        Err(_) => describe_error(challenge.as_bytes()),
    }
}

/// `data` in base64, as an SMTP AUTH continuation line carries it.
pub fn base64(data: &[u8]) -> String {
    B64.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_responses_follow_the_formats() {
        let x = OAuthMechanism::Xoauth2.initial_response("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
        assert_eq!(x, b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01");
        // RFC 7628 §4.1, without the optional host and port.
        let o = OAuthMechanism::Oauthbearer.initial_response("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
        assert_eq!(o, b"n,a=user@example.com,\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01");
        let odd = OAuthMechanism::Oauthbearer.initial_response("a,b=c", "tok");
        assert!(odd.starts_with(b"n,a=a=2Cb=3Dc,\x01"));
        // The encoded form is masked in logs.
        let b64 = OAuthMechanism::Xoauth2.initial_response_base64("someuser@example.com", "ya29.secret-token-value");
        assert_eq!(crate::redact::redact(&format!("encode: {b64:?}")), "encode: \"[REDACTED]\"");
    }

    #[test]
    fn the_configured_mechanism_wins_when_offered() {
        use OAuthMechanism::*;
        let both = oauth_mechanisms(["PLAIN", "LOGIN", "oauthbearer", "XOAUTH2"]);
        assert_eq!(both, vec![Oauthbearer, Xoauth2]);
        assert_eq!(choose(Xoauth2, &both), Xoauth2);
        assert_eq!(choose(Xoauth2, &[Oauthbearer]), Oauthbearer);
        assert_eq!(choose(Oauthbearer, &[]), Oauthbearer);
    }

    #[test]
    fn error_challenges_are_described() {
        // RFC 7628 §3.2.2 and Dovecot's XOAUTH2 form.
        assert_eq!(
            describe_error(br#"{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}"#),
            "status=invalid_token openid-configuration=https://example.com/.well-known/openid-configuration scope=example_scope"
        );
        assert_eq!(describe_base64_error("eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0="), "status=401 schemes=bearer scope=mail");
        assert_eq!(describe_error(b""), "(no details)");
        assert_eq!(describe_error(b"go away"), "go away");
    }
}
