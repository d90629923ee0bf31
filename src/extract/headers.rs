//! The top-level header of a parsed message → [`HeaderFacts`], plus the raw fields the
//! automatic-message checks read.

use mail_parser::{Address, Header, HeaderName, Message, MimeHeaders};

use super::{refs, HeaderFacts, ReturnPath};

/// Longest header text we keep in [`HeaderFacts`] (subjects and names), in characters.
const MAX_FIELD_CHARS: usize = 2000;

/// What the rest of extraction needs from the top-level header.
#[derive(Debug, Default)]
pub(crate) struct Top {
    /// `(name, unfolded value)` for every field, in order.
    pub fields: Vec<(String, String)>,
    pub facts: HeaderFacts,
    /// `type/subtype`, lower-cased.
    pub content_type: Option<String>,
}

/// Raw value of a header (unfolded, lossily decoded), as written after the colon.
pub(crate) fn raw_value(raw: &[u8], h: &Header<'_>) -> String {
    let bytes = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or_default();
    // Raw 8-bit bytes in a header (RFC 6532 allows UTF-8; older clients write their legacy
    // charset, GBK or Big5, unencoded): read like an unlabelled body.
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => std::borrow::Cow::Owned(super::mime::decode_unlabelled(bytes)),
    };
    let text = text.trim();
    if !text.contains(['\r', '\n']) {
        return text.to_string();
    }
    // RFC 5322 §2.2.3: unfolding removes the CRLF before folding whitespace.
    text.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// Message-ID and Subject of an attached or quoted original: all a bounce check needs.
pub(crate) fn id_and_subject(msg: &Message<'_>) -> (Option<String>, Option<String>) {
    let Some(root) = msg.parts.first() else { return (None, None) };
    let id = root
        .headers
        .iter()
        .find(|h| h.name == HeaderName::MessageId)
        .and_then(|h| refs::message_ids(&raw_value(msg.raw_message.as_ref(), h)).into_iter().next());
    (id, msg.subject().map(|s| clip(s.trim())))
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_FIELD_CHARS) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// `local@Domain.Example` → `local@domain.example` (the local part may be case-sensitive,
/// RFC 5321 §2.4; the domain is not).
fn normalize_address(a: &str) -> String {
    let a = a.trim();
    match a.rsplit_once('@') {
        Some((l, d)) => format!("{l}@{}", d.to_ascii_lowercase()),
        None => a.to_string(),
    }
}

/// The address inside an address field's raw text: `Name <a@b>` or `a@b`.
pub(crate) fn address_in(value: &str) -> Option<&str> {
    let v = value.trim();
    let a = match (v.rfind('<'), v.rfind('>')) {
        (Some(l), Some(r)) if l < r => &v[l + 1..r],
        _ => v.split_whitespace().find(|t| t.contains('@')).unwrap_or(v),
    };
    let a = a.trim();
    (!a.is_empty()).then_some(a)
}

/// First address and display name of an address field; the raw text is read when the
/// parser could not make an address of it (invalid bytes in the display name, for one).
fn first_addr(parsed: Option<&Address<'_>>, raw: Option<&str>) -> (Option<String>, Option<String>) {
    let first = parsed.and_then(|a| a.first());
    let name = first.and_then(|f| f.name()).map(str::trim).filter(|s| !s.is_empty()).map(clip);
    let address = first
        .and_then(|f| f.address())
        .filter(|a| a.contains('@'))
        .or_else(|| raw.and_then(address_in).filter(|a| a.contains('@')))
        .map(|a| clip(&normalize_address(a)));
    (address, name)
}

/// Fields read by [`read`] and by the automatic-message checks (`auto.rs`).
fn is_read(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "message-id", "return-path", "in-reply-to", "references", "content-language", "from", "sender",
        "resent-from", "auto-submitted", "precedence", "subject", "x-apple-action",
        "x-ms-exchange-inbox-rules-loop", "x-sieve-redirected-from", "resent-message-id", "authentication-results",
    ];
    // Resent-* fields mark where a redirect's block ends (see `return_path_of`).
    const PREFIX: &[&str] = &["list-", "x-auto", "x-mail-autoreply", "x-spam-", "resent-"];
    EXACT.iter().any(|e| e.eq_ignore_ascii_case(name))
        || PREFIX.iter().any(|p| name.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)))
}

/// Return-Path as written (RFC 5321 §4.4): `<>` is the null path.
pub(crate) fn return_path(value: &str) -> ReturnPath {
    let v = value.trim();
    if v.is_empty() {
        return ReturnPath::Absent;
    }
    let inner = match (v.find('<'), v.rfind('>')) {
        (Some(l), Some(r)) if l < r => v[l + 1..r].trim(),
        _ => v,
    };
    if inner.is_empty() {
        ReturnPath::Null
    } else {
        ReturnPath::Address(normalize_address(inner))
    }
}

/// The Return-Path of the last delivery: the topmost one (RFC 5321 §4.4: the delivering
/// MTA prepends it). A Return-Path found only *below* a Resent-* block belongs to the
/// original message that a person redirected (RFC 5322 §3.6.6: resent fields are prepended
/// as a block); a bounce resent with mutt's `b` keeps its `Return-Path: <>` there, and it
/// says nothing about who sent this copy.
fn return_path_of(fields: &[(String, String)]) -> ReturnPath {
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("return-path") {
            return return_path(value);
        }
        if name.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("resent-")) {
            return ReturnPath::Absent;
        }
    }
    ReturnPath::Absent
}

/// The value of a top-level field whose raw bytes are not UTF-8, decoded as legacy text;
/// `None` for the usual, valid field (the parser's reading stands).
fn raw_8bit_field(msg: &Message<'_>, name: HeaderName<'_>) -> Option<String> {
    let root = msg.parts.first()?;
    let h = root.headers.iter().find(|h| h.name == name)?;
    let bytes = msg.raw_message.as_ref().get(h.offset_start as usize..h.offset_end as usize)?;
    if std::str::from_utf8(bytes).is_ok() {
        return None;
    }
    Some(clip(raw_value(msg.raw_message.as_ref(), h).trim()))
}

/// Read the top-level header of a parsed message.
pub(crate) fn read(msg: &Message<'_>) -> Top {
    let Some(root) = msg.parts.first() else { return Top::default() };
    let raw = msg.raw_message.as_ref();
    // Only the fields something reads (Received and friends can be dozens per message).
    let fields: Vec<(String, String)> = root
        .headers
        .iter()
        .filter(|h| is_read(h.name.as_str()))
        .map(|h| (h.name.as_str().to_string(), raw_value(raw, h)))
        .collect();
    let field = |name: &str| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());

    let (from, mut from_name) = first_addr(msg.from(), field("from"));
    // A display name written in raw legacy 8-bit bytes: the parser's reading is mojibake.
    if let Some(raw_from) = raw_8bit_field(msg, HeaderName::From) {
        if let Some((name, _)) = raw_from.rsplit_once('<') {
            let name = name.trim().trim_matches('"').trim();
            from_name = (!name.is_empty()).then(|| clip(name));
        }
    }
    let (reply_to, _) = first_addr(msg.reply_to(), field("reply-to"));
    let (resent_from, resent_from_name) = first_addr(msg.resent_from(), field("resent-from"));
    let date = msg.date().filter(|d| d.is_valid()).and_then(|d| {
        jiff::Timestamp::from_second(d.to_timestamp()).ok().map(|t| t.to_string())
    });
    let facts = HeaderFacts {
        message_id: field("message-id").and_then(|v| refs::message_ids(v).into_iter().next()).map(|s| clip(&s)),
        from,
        from_name,
        reply_to,
        return_path: return_path_of(&fields),
        subject: raw_8bit_field(msg, HeaderName::Subject).or_else(|| msg.subject().map(|s| clip(s.trim()))),
        date,
        in_reply_to: field("in-reply-to").map(refs::message_ids).unwrap_or_default(),
        references: field("references").map(refs::message_ids).unwrap_or_default(),
        content_language: field("content-language").map(|s| clip(s.trim())).filter(|s| !s.is_empty()),
        resent_from,
        resent_from_name,
        resent_message_id: field("resent-message-id").and_then(|v| refs::message_ids(v).into_iter().next()).map(|s| clip(&s)),
    };
    let content_type = root.content_type().map(|ct| match ct.subtype() {
        Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
        None => ct.ctype().to_ascii_lowercase(),
    });
    Top { fields, facts, content_type }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    #[test]
    fn facts_from_a_header() {
        let raw = b"Return-Path: <Alice@Example.COM>\r\nMessage-ID: <abc@example.com>\r\nFrom: =?utf-8?q?Al=C3=AFce?= <alice@Example.COM>\r\nReply-To: ops@example.com\r\nSubject: Re: [DL-000042]\r\n delisting\r\nDate: Mon, 1 Jan 2024 10:00:00 +0200\r\nIn-Reply-To: <DL-000042.x@delist.example.net>\r\nReferences: <a@b> <DL-000042.x@delist.example.net>\r\nContent-Language: fr-FR\r\nResent-From: bob@example.org\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n";
        let msg = MessageParser::default().parse(&raw[..]).unwrap();
        let top = read(&msg);
        let f = &top.facts;
        assert_eq!(f.message_id.as_deref(), Some("abc@example.com"));
        assert_eq!(f.from.as_deref(), Some("alice@example.com"));
        assert_eq!(f.from_name.as_deref(), Some("Alïce"));
        assert_eq!(f.reply_to.as_deref(), Some("ops@example.com"));
        assert_eq!(f.return_path, ReturnPath::Address("Alice@example.com".into()));
        assert_eq!(f.subject.as_deref(), Some("Re: [DL-000042] delisting"));
        assert_eq!(f.date.as_deref(), Some("2024-01-01T08:00:00Z"));
        assert_eq!(f.in_reply_to, vec!["DL-000042.x@delist.example.net"]);
        assert_eq!(f.references.len(), 2);
        assert_eq!(f.content_language.as_deref(), Some("fr-FR"));
        assert_eq!(f.resent_from.as_deref(), Some("bob@example.org"));
        assert_eq!(top.content_type.as_deref(), Some("text/plain"));
        assert!(top.fields.iter().any(|(n, v)| n == "Return-Path" && v == "<Alice@Example.COM>"));
        assert!(!top.fields.iter().any(|(n, _)| n == "Date" || n == "Reply-To"), "only fields something reads are kept");
    }

    #[test]
    fn return_path_forms() {
        assert_eq!(return_path("<>"), ReturnPath::Null);
        assert_eq!(return_path(" < > "), ReturnPath::Null);
        assert_eq!(return_path(""), ReturnPath::Absent);
        assert_eq!(return_path("<a@B.example>"), ReturnPath::Address("a@b.example".into()));
    }

    #[test]
    fn only_the_topmost_return_path_counts() {
        let f = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let resent = f(&[("Resent-From", "judy@example.org"), ("Return-Path", "<>"), ("From", "MAILER-DAEMON@x")]);
        assert_eq!(return_path_of(&resent), ReturnPath::Absent);
        let delivered = f(&[("Return-Path", "<judy@example.org>"), ("Resent-From", "judy@example.org"), ("Return-Path", "<>")]);
        assert_eq!(return_path_of(&delivered), ReturnPath::Address("judy@example.org".into()));
        assert_eq!(return_path_of(&f(&[("Return-Path", "<>"), ("Return-Path", "<a@b.example>")])), ReturnPath::Null);
    }

    #[test]
    fn raw_legacy_8bit_fields_are_decoded() {
        let (subj, _, _) = encoding_rs::GBK.encode("解除封锁请求");
        let (name, _, _) = encoding_rs::GBK.encode("张伟");
        let mut raw = b"From: ".to_vec();
        raw.extend_from_slice(&name);
        raw.extend_from_slice(b" <zw@example.cn>\r\nSubject: ");
        raw.extend_from_slice(&subj);
        raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        let msg = MessageParser::default().parse(&raw[..]).unwrap();
        let f = read(&msg).facts;
        assert_eq!(f.subject.as_deref(), Some("解除封锁请求"));
        assert_eq!(f.from_name.as_deref(), Some("张伟"));
        assert_eq!(f.from.as_deref(), Some("zw@example.cn"));
    }

    #[test]
    fn bad_date_is_none() {
        let msg = MessageParser::default().parse(&b"Date: yesterday\r\n\r\nx"[..]).unwrap();
        assert_eq!(read(&msg).facts.date, None);
    }
}
