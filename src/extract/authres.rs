//! `Authentication-Results:` header fields (RFC 8601) of the top-level header, parsed; which
//! of them to believe is decided later, from the configured authserv-id (`decide.rs`).
//!
//! RFC 8601 §5: a receiver believes only the fields written by its own border MTAs,
//! recognised by their authserv-id, and those MTAs remove any field a sender forged with
//! that id; every other field is ignored. We keep each field's authserv-id so that `decide`
//! can apply exactly that rule.

use serde::Serialize;

/// Most fields kept (a hostile message can carry thousands).
const MAX_FIELDS: usize = 8;
/// Most results kept per field.
const MAX_RESULTS: usize = 16;

/// One `Authentication-Results:` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthResults {
    /// Who wrote it (RFC 8601 §2.5), lower-cased.
    pub authserv_id: String,
    pub results: Vec<MethodResult>,
}

/// One `method=result` with the properties we read (RFC 8601 §2.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MethodResult {
    /// `spf`, `dkim`, `dmarc`, ... lower-cased, without a `/version`.
    pub method: String,
    /// `pass`, `fail`, `softfail`, `none`, ... lower-cased.
    pub result: String,
    /// The domain the result is about: `smtp.mailfrom` (its domain part) for SPF,
    /// `header.d` (or the domain of `header.i`) for DKIM, `header.from` for DMARC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Remove RFC 5322 comments (`(...)`, nested) from a header value.
fn strip_comments(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut depth = 0usize;
    let mut escaped = false;
    let mut quoted = false;
    for c in v.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn domain_of(v: &str) -> String {
    let v = v.trim().trim_matches('"').trim_matches(|c| c == '<' || c == '>');
    v.rsplit_once('@').map_or(v, |(_, d)| d).trim_end_matches('.').to_ascii_lowercase()
}

/// Parse one field's value; `None` when it has no authserv-id.
pub(crate) fn parse(value: &str) -> Option<AuthResults> {
    let v = strip_comments(value);
    let mut parts = v.split(';');
    let head = parts.next()?.trim();
    // `authserv-id [version]`
    let authserv_id = head.split_whitespace().next()?.to_ascii_lowercase();
    let mut results = Vec::new();
    for part in parts.take(MAX_RESULTS) {
        let mut tokens = part.split_whitespace();
        let Some((method, result)) = tokens.next().and_then(|t| t.split_once('=')) else { continue };
        let method = method.split('/').next().unwrap_or(method).to_ascii_lowercase();
        let result = result.trim_matches('"').to_ascii_lowercase();
        let mut domain = None;
        for t in tokens {
            let Some((prop, val)) = t.split_once('=') else { continue };
            let prop = prop.to_ascii_lowercase();
            let d = match (method.as_str(), prop.as_str()) {
                ("spf", "smtp.mailfrom") | ("dkim", "header.d") | ("dkim", "header.i") | ("dmarc", "header.from") => {
                    Some(domain_of(val))
                }
                _ => None,
            };
            // `header.d` wins over `header.i`, whichever comes first.
            if d.is_some() && (domain.is_none() || prop == "header.d") {
                domain = d;
            }
        }
        results.push(MethodResult { method, result, domain });
    }
    Some(AuthResults { authserv_id, results })
}

/// Every field of the top-level header, in header order.
pub(crate) fn read(fields: &[(String, String)]) -> Vec<AuthResults> {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authentication-results"))
        .filter_map(|(_, v)| parse(v))
        .take(MAX_FIELDS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8601_examples_and_real_fields() {
        let a = parse("mx.example.net; spf=pass smtp.mailfrom=ops@Example.COM; dkim=pass (2048-bit key) header.d=example.com header.i=@mail.example.com; dmarc=pass (p=reject) header.from=example.com").unwrap();
        assert_eq!(a.authserv_id, "mx.example.net");
        let r: Vec<(&str, &str, Option<&str>)> = a.results.iter().map(|m| (m.method.as_str(), m.result.as_str(), m.domain.as_deref())).collect();
        assert_eq!(r, vec![("spf", "pass", Some("example.com")), ("dkim", "pass", Some("example.com")), ("dmarc", "pass", Some("example.com"))]);
        // RFC 8601 Appendix B.2: nothing was checked.
        let a = parse("example.org 1; none").unwrap();
        assert_eq!((a.authserv_id.as_str(), a.results.len()), ("example.org", 0));
        // Comments with `;` and `=` inside are no results.
        let a = parse("mx.example.net (a; b=c); spf=fail (sender IP is 203.0.113.5; x=y) smtp.mailfrom=forged.example").unwrap();
        assert_eq!(a.results.len(), 1);
        assert_eq!(a.results[0].domain.as_deref(), Some("forged.example"));
        assert!(parse("").is_none());
    }
}
