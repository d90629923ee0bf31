//! References to our cases: a `[DL-000042]` tag in a subject, or one of our Message-IDs,
//! which look like `<DL-000042.{anything}@{any domain}>`.

use std::sync::LazyLock;

use regex::Regex;

use crate::types::CaseRef;

static SUBJECT_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\[\s*(DL-\d{1,12})\s*\]").expect("static regex"));

/// One of our Message-IDs anywhere in text (angle brackets required, so prose does not match).
static OUR_ID_IN_TEXT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)<(DL-\d{1,12})\.[^<>\s@]*@[^<>\s@]+>").expect("static regex"));

/// A case reference as our replies write it in their text and subject (`DL-000042`).
static CASE_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?-u:\b)DL-\d{6,12}(?-u:\b)").expect("static regex"));

/// The first of our cases this text names the way our replies do (quoted text that does is
/// a quote of our reply).
pub(crate) fn case_in_text(text: &str) -> Option<CaseRef> {
    memchr::memmem::find(text.as_bytes(), b"DL-")?;
    CASE_IN_TEXT.find(text).and_then(|m| m.as_str().parse().ok())
}

/// Is this Message-ID one of ours (`DL-000042.…@…` for a case, `delistd.…@…` otherwise)?
pub(crate) fn is_our_message_id(id: &str) -> bool {
    let id = id.trim().trim_start_matches('<');
    from_message_id(id).is_some() || id.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("delistd."))
}

/// The case a subject names with a `[DL-…]` tag.
pub(crate) fn from_subject(subject: &str) -> Option<CaseRef> {
    SUBJECT_TAG.captures_iter(subject).find_map(|c| c.get(1)?.as_str().parse().ok())
}

/// The case one of our Message-IDs (without angle brackets) belongs to.
pub(crate) fn from_message_id(id: &str) -> Option<CaseRef> {
    let (local, domain) = id.trim().trim_start_matches('<').trim_end_matches('>').rsplit_once('@')?;
    if domain.is_empty() {
        return None;
    }
    let (tag, _rest) = local.split_once('.')?;
    if tag.len() < 4 || !tag[..3].eq_ignore_ascii_case("DL-") {
        return None;
    }
    tag.parse().ok()
}

/// The case named by a message's own thread fields: the subject tag first, then
/// In-Reply-To, then References from the newest (last) back.
pub(crate) fn case_ref(subject: Option<&str>, in_reply_to: &[String], references: &[String]) -> Option<CaseRef> {
    subject
        .and_then(from_subject)
        .or_else(|| in_reply_to.iter().find_map(|i| from_message_id(i)))
        .or_else(|| references.iter().rev().find_map(|i| from_message_id(i)))
}

/// The first of our Message-IDs written anywhere in text (a quoted original).
pub(crate) fn our_id_in_text(text: &str) -> Option<CaseRef> {
    OUR_ID_IN_TEXT.captures_iter(text).find_map(|c| c.get(1)?.as_str().parse().ok())
}

/// Message-IDs in a header value, without angle brackets, in order. Tolerates missing brackets.
pub(crate) fn message_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(l) = rest.find('<') {
        let Some(r) = rest[l..].find('>') else { break };
        let id = rest[l + 1..l + r].trim();
        if !id.is_empty() && !id.contains(char::is_whitespace) {
            out.push(id.to_string());
        }
        rest = &rest[l + r + 1..];
        if out.len() >= 100 {
            return out;
        }
    }
    if out.is_empty() {
        out.extend(value.split_whitespace().filter(|t| t.contains('@')).take(100).map(str::to_string));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tags() {
        assert_eq!(from_subject("Re: [DL-000042] Delisting request"), Some(CaseRef(42)));
        assert_eq!(from_subject("Re: [ dl-7 ]"), Some(CaseRef(7)));
        assert_eq!(from_subject("DL-000042 without brackets"), None);
        assert_eq!(from_subject("[DL-000000]"), None);
    }

    #[test]
    fn our_message_ids() {
        assert_eq!(from_message_id("DL-000042.1700000000.ack@delist.example.net"), Some(CaseRef(42)));
        assert_eq!(from_message_id("<DL-000042.x@example.org>"), Some(CaseRef(42)));
        assert_eq!(from_message_id("DL-000042@example.org"), None);
        assert_eq!(from_message_id("CAF00@mail.example.com"), None);
        assert_eq!(our_id_in_text("Message-ID: <DL-000009.abc@delist.example.net>\n"), Some(CaseRef(9)));
    }

    #[test]
    fn our_text_and_ids() {
        assert_eq!(case_in_text("> Your case: DL-000042 (203.0.113.7)"), Some(CaseRef(42)));
        assert_eq!(case_in_text("DL-42 or XDL-000042x"), None);
        assert!(is_our_message_id("delistd.18f.abc@delist.example.net"));
        assert!(is_our_message_id("DL-000042.18f.abc@delist.example.net"));
        assert!(!is_our_message_id("CAF00@mail.example.com"));
    }

    #[test]
    fn thread_fields_in_order() {
        let irt = vec!["x@example.com".to_string()];
        let refs = vec!["DL-000001.a@d.example".to_string(), "DL-000002.b@d.example".to_string()];
        assert_eq!(case_ref(None, &irt, &refs), Some(CaseRef(2)));
        assert_eq!(case_ref(Some("[DL-000003]"), &irt, &refs), Some(CaseRef(3)));
    }

    #[test]
    fn message_id_lists() {
        assert_eq!(message_ids(" <a@b> <c@d>\r\n <e@f>"), vec!["a@b", "c@d", "e@f"]);
        assert_eq!(message_ids("a@b"), vec!["a@b"]);
        assert!(message_ids("").is_empty());
    }
}
