//! A rendered reply → the RFC 5322 message we send, as bytes.
//!
//! Pure apart from [`new_message_id`], which reads the clock and a random seed. Every
//! header value that came from the request (the recipient, the thread's Message-IDs) is
//! checked here: a bad address is a typed error, a malformed Message-ID is dropped from
//! the thread headers, and nothing can add a header line.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use lettre::address::AddressError;
use lettre::message::header::{ContentTransferEncoding, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, SinglePart};
use lettre::Message;

use super::render::{one_line, RenderedReply, MAX_SUBJECT_CHARS};
use crate::types::{CaseRef, Lang};

/// Everything about a reply except its text.
#[derive(Debug, Clone)]
pub struct ReplyEnvelope<'a> {
    /// Our address, e.g. `Delist desk <delist@example.test>` (from the configuration).
    pub from: &'a str,
    /// The request's Return-Path address (RFC 3834 §4), else its From.
    pub to: &'a str,
    /// Fixed when the reply is queued, without `<>`: see [`new_message_id`].
    pub message_id: &'a str,
    /// The request's Message-ID, without `<>`.
    pub in_reply_to: Option<&'a str>,
    /// The request's References followed by its Message-ID, without `<>`.
    pub references: &'a [String],
    pub date: jiff::Timestamp,
    pub language: Lang,
    /// An automatic reply (RFC 3834 §5: `Auto-Submitted: auto-replied`, and Exchange's
    /// `X-Auto-Response-Suppress`). `false` for a message a staff member wrote: it is a
    /// person's mail, and the sender's out-of-office or bounce coming back is welcome (it
    /// is attached to the case as an automatic message, never answered).
    pub automatic: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// Our own address in the configuration is wrong.
    #[error("bad From address {value:?}: {source}")]
    BadFrom { value: String, source: AddressError },
    /// The address to answer (taken from the request) is not one we can write to.
    #[error("bad recipient address {value:?}: {source}")]
    BadTo { value: String, source: AddressError },
    #[error("bad Message-ID {0:?} (expected left@right, no angle brackets)")]
    BadMessageId(String),
    #[error("cannot build the reply: {0}")]
    Build(#[from] lettre::error::Error),
}

/// At most this many Message-IDs in `References:`. RFC 5322 §3.6.4 wants the parent's
/// References plus its Message-ID; a hostile or very long thread is cut in the middle,
/// keeping the first (the thread's root) and the most recent ones, as RFC 5537 §3.4.4
/// does for netnews.
pub const MAX_REFERENCES: usize = 10;
/// Longest Message-ID we repeat. RFC 5322 sets no limit, but a header line may not
/// exceed 998 octets (§2.1.1) and real IDs are well under 250.
const MAX_MSG_ID_LEN: usize = 250;

/// A Message-ID for a reply: `DL-000042.<unique>@domain` when it belongs to a case (the
/// extraction recognises our replies by the `DL-<digits>.` prefix in In-Reply-To and
/// References), `delistd.<unique>@domain` otherwise.
pub fn new_message_id(case: Option<CaseRef>, domain: &str) -> String {
    let domain: String = domain
        .trim()
        .trim_matches('.')
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect();
    let domain = if domain.is_empty() { "delistd.invalid".to_string() } else { domain.to_ascii_lowercase() };
    let left = match case {
        Some(c) => c.to_string(),
        None => "delistd".to_string(),
    };
    format!("{left}.{}@{domain}", unique_token())
}

/// Time in microseconds plus 64 random bits: unique across restarts, processes and
/// replies queued in the same microsecond. The random bits come from the standard
/// library's randomly keyed hasher, mixed with a process-wide counter.
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u128(micros);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("{micros:x}.{:016x}", h.finish())
}

/// RFC 5322 §3.6.4 `msg-id` without its brackets: `id-left "@" id-right`, where both sides
/// are dot-atom text and the right side may also be a `[...]` literal. Anything else
/// (spaces, brackets, controls, non-ASCII) could not be written back safely.
fn is_msg_id(id: &str) -> bool {
    fn atext(c: u8) -> bool {
        c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
    }
    fn dot_atom(s: &str) -> bool {
        !s.is_empty() && s.split('.').all(|a| !a.is_empty() && a.bytes().all(atext))
    }
    if id.is_empty() || id.len() > MAX_MSG_ID_LEN {
        return false;
    }
    let Some((left, right)) = id.rsplit_once('@') else { return false };
    let literal = right.len() > 2
        && right.starts_with('[')
        && right.ends_with(']')
        && right[1..right.len() - 1].bytes().all(|c| c.is_ascii_graphic() && !matches!(c, b'[' | b']' | b'\\'));
    dot_atom(left) && (dot_atom(right) || literal)
}

/// The References to send: valid IDs only, each once, the parent's ID last, at most
/// [`MAX_REFERENCES`] (the first and the most recent).
fn thread_references(given: &[String], parent: Option<&str>) -> Vec<String> {
    let mut refs: Vec<String> = Vec::new();
    for id in given.iter().map(|s| s.trim()).chain(parent) {
        if is_msg_id(id) {
            // A later occurrence wins, so the parent ends up last.
            refs.retain(|r| r != id);
            refs.push(id.to_string());
        }
    }
    if refs.len() > MAX_REFERENCES {
        let tail = refs.split_off(refs.len() - (MAX_REFERENCES - 1));
        refs.truncate(1);
        refs.extend(tail);
    }
    refs
}

/// An address from the configuration or the request. lettre's parser stops at the end of
/// the first mailbox and ignores what follows, so trailing text and control characters
/// are refused here first: `a@b.example\r\nBcc: c@d.example` is not an address.
fn mailbox(value: &str) -> Result<Mailbox, AddressError> {
    let v = value.trim();
    if v.is_empty() || v.chars().any(char::is_control) {
        return Err(AddressError::InvalidInput);
    }
    let mbox: Mailbox = v.parse()?;
    // The address must be all of it, or all of what is inside `<...>` at the end.
    let addr = mbox.email.to_string();
    let complete = v.eq_ignore_ascii_case(&addr)
        || v.strip_suffix('>')
            .and_then(|s| s.rsplit_once('<'))
            .is_some_and(|(_, inner)| inner.trim().eq_ignore_ascii_case(&addr));
    if !complete {
        return Err(AddressError::InvalidInput);
    }
    Ok(mbox)
}

/// text/plain; charset=utf-8 with 7bit, quoted-printable or base64, whichever lettre finds
/// best for the text, and CRLF line ends. lettre ends the part with a CRLF of its own: a
/// line-based body (7bit, quoted-printable) leaves its last line break to it, else the
/// reader sees an extra blank line; base64 keeps it inside the encoding.
fn body(text: &str) -> Body {
    let encoded = Body::new(text.to_string());
    match encoded.encoding() {
        ContentTransferEncoding::Base64 => encoded,
        _ => Body::new(text.trim_end_matches(['\r', '\n']).to_string()),
    }
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// The reply as RFC 5322 bytes (CRLF line ends), ready for SMTP.
pub fn compose(env: &ReplyEnvelope, reply: &RenderedReply) -> Result<Vec<u8>, ComposeError> {
    // Errors quote the offending value on one short line: it may come from a stranger and
    // ends up in logs.
    let from = mailbox(env.from).map_err(|source| ComposeError::BadFrom { value: one_line(env.from, 120), source })?;
    let to = mailbox(env.to).map_err(|source| ComposeError::BadTo { value: one_line(env.to, 120), source })?;
    if !is_msg_id(env.message_id) {
        return Err(ComposeError::BadMessageId(one_line(env.message_id, 120)));
    }
    let parent = env.in_reply_to.map(str::trim).filter(|id| is_msg_id(id));
    let references = thread_references(env.references, parent);

    // The renderer already made the subject one clean line; this holds for replies that
    // were rendered elsewhere or stored and read back.
    let subject = one_line(&reply.subject, MAX_SUBJECT_CHARS);

    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date(SystemTime::from(env.date))
        .message_id(Some(format!("<{}>", env.message_id)));
    if let Some(id) = parent {
        builder = builder.in_reply_to(format!("<{id}>"));
    }
    if !references.is_empty() {
        let list: Vec<String> = references.iter().map(|id| format!("<{id}>")).collect();
        builder = builder.references(list.join(" "));
    }
    if env.automatic {
        builder = builder
            // RFC 3834 §5: mark the reply as automatic so that well-behaved responders do not
            // answer it, and so that nobody mistakes it for a person's reply.
            .raw_header(raw_header("Auto-Submitted", "auto-replied".into()))
            // Exchange and Outlook honour this and send no out-of-office or delivery receipts
            // back to the delist desk.
            .raw_header(raw_header("X-Auto-Response-Suppress", "All".into()));
    }
    let message = builder
        .raw_header(raw_header("Content-Language", env.language.code().into()))
        .singlepart(SinglePart::plain(body(&reply.body)))?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{HeaderValue as PHeader, MessageParser, MimeHeaders};

    fn date() -> jiff::Timestamp {
        "2031-05-06T07:08:09Z".parse().unwrap()
    }

    fn reply() -> RenderedReply {
        RenderedReply {
            subject: "[DL-000042] Delisting request received".into(),
            body: "Hello,\n\nWe have opened DL-000042 for 203.0.113.7.\n".into(),
        }
    }

    fn envelope<'a>(refs: &'a [String]) -> ReplyEnvelope<'a> {
        ReplyEnvelope {
            from: "Delist desk <delist@example.test>",
            to: "postmaster@sender.example",
            message_id: "DL-000042.abc123@example.test",
            in_reply_to: Some("CAF=req1@mail.sender.example"),
            references: refs,
            date: date(),
            language: Lang::En,
            automatic: true,
        }
    }

    fn id_list(v: &PHeader) -> Vec<String> {
        match v {
            PHeader::Text(t) => vec![t.to_string()],
            PHeader::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
            PHeader::Empty => vec![],
            other => panic!("unexpected {other:?}"),
        }
    }

    fn header_names(raw: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(raw);
        let head = text.split("\r\n\r\n").next().unwrap().to_string();
        head.split("\r\n")
            .filter(|l| !l.starts_with([' ', '\t']))
            .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn every_header_round_trips_through_a_parser() {
        let refs = vec!["root@a.example".to_string(), "CAF=req1@mail.sender.example".to_string()];
        let raw = compose(&envelope(&refs), &reply()).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("\r\n\r\n") && !text.replace("\r\n", "").contains('\n'), "CRLF only");

        let m = MessageParser::default().parse(&raw).unwrap();
        let from = m.from().unwrap().first().unwrap();
        assert_eq!((from.name(), from.address()), (Some("Delist desk"), Some("delist@example.test")));
        assert_eq!(m.to().unwrap().first().unwrap().address(), Some("postmaster@sender.example"));
        assert_eq!(m.subject(), Some("[DL-000042] Delisting request received"));
        assert_eq!(m.date().unwrap().to_timestamp(), date().as_second());
        assert_eq!(m.message_id(), Some("DL-000042.abc123@example.test"));
        assert_eq!(id_list(m.in_reply_to()), ["CAF=req1@mail.sender.example"]);
        assert_eq!(id_list(m.references()), ["root@a.example", "CAF=req1@mail.sender.example"]);
        assert_eq!(m.header_raw("Auto-Submitted").map(str::trim), Some("auto-replied"));
        assert_eq!(m.header_raw("X-Auto-Response-Suppress").map(str::trim), Some("All"));
        assert_eq!(m.header_raw("Content-Language").map(str::trim), Some("en"));
        assert_eq!(m.header_raw("MIME-Version").map(str::trim), Some("1.0"));
        let ct = m.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype(), ct.attribute("charset")), ("text", Some("plain"), Some("utf-8")));
        assert_eq!(m.body_text(0).unwrap().replace("\r\n", "\n"), reply().body);
    }

    #[test]
    fn non_ascii_subjects_and_bodies_round_trip() {
        let cases = [
            (
                Lang::Ja,
                "[DL-000042] リスト解除のご依頼を受け付けました",
                "ご担当者様\n\nご依頼をいただきありがとうございます。\n",
                "base64",
            ),
            (
                Lang::Fr,
                "[DL-000042] Demande de retrait de la liste de blocage bien reçue",
                "Bonjour,\n\nNous avons bien reçu votre demande.\n",
                "quoted-printable",
            ),
        ];
        for (lang, subject, body, cte) in cases {
            let r = RenderedReply { subject: subject.into(), body: body.repeat(3) };
            let env = ReplyEnvelope { language: lang, ..envelope(&[]) };
            let raw = compose(&env, &r).unwrap();
            assert!(raw.is_ascii(), "{lang}: headers RFC 2047-encoded, body transfer-encoded");
            assert!(String::from_utf8_lossy(&raw).contains("=?utf-8?"), "{lang}: encoded-word subject");
            let m = MessageParser::default().parse(&raw).unwrap();
            assert_eq!(m.subject(), Some(subject), "{lang}");
            assert_eq!(m.body_text(0).unwrap().replace("\r\n", "\n"), r.body, "{lang}");
            assert_eq!(m.header_raw("Content-Language").map(str::trim), Some(lang.code()));
            assert_eq!(m.header_raw("Content-Transfer-Encoding").map(str::trim), Some(cte));
        }
    }

    /// Renderer and composer together, for every reply, with values from a hostile message.
    #[test]
    fn every_rendered_reply_composes_into_a_clean_message() {
        use crate::decide::ReplyKind;
        use crate::reply::{render, ReplyVars};
        let vars = ReplyVars {
            case_refs: vec!["DL-000042".into()],
            ips: vec!["203.0.113.7\r\nBcc: victim@example.com".into()],
            sender_name: Some("Eve\r\nBcc: victim@example.com\r\n\r\n".into()),
            status_code: Some("5.7.511\0".into()),
            sla_hours: 48,
            ..ReplyVars::default()
        };
        let expected = [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "in-reply-to",
            "references",
            "auto-submitted",
            "x-auto-response-suppress",
            "content-language",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
        ];
        for kind in ReplyKind::ALL {
            for lang in Lang::ALL {
                let r = render(kind, lang, &vars).unwrap();
                let raw = compose(&ReplyEnvelope { language: lang, ..envelope(&[]) }, &r).unwrap();
                let mut names = header_names(&raw);
                names.sort();
                let mut want = expected.to_vec();
                want.sort();
                assert_eq!(names, want, "{kind:?} {lang}");
                let m = MessageParser::default().parse(&raw).unwrap();
                assert_eq!(m.subject(), Some(r.subject.as_str()), "{kind:?} {lang}");
                assert_eq!(m.body_text(0).unwrap().replace("\r\n", "\n"), r.body, "{kind:?} {lang}");
            }
        }
    }

    #[test]
    fn without_a_parent_there_are_no_thread_headers() {
        let env = ReplyEnvelope { in_reply_to: None, ..envelope(&[]) };
        let names = header_names(&compose(&env, &reply()).unwrap());
        assert!(!names.iter().any(|n| n == "in-reply-to" || n == "references"), "{names:?}");
        // The parent alone makes a one-entry References (RFC 5322 §3.6.4).
        let m_raw = compose(&envelope(&[]), &reply()).unwrap();
        let m = MessageParser::default().parse(&m_raw).unwrap();
        assert_eq!(id_list(m.references()), ["CAF=req1@mail.sender.example"]);
    }

    #[test]
    fn a_hostile_subject_cannot_add_a_header() {
        let r = RenderedReply { subject: "Hi\r\nBcc: victim@example.com\r\n\r\nbody".into(), body: reply().body };
        let raw = compose(&envelope(&[]), &r).unwrap();
        let names = header_names(&raw);
        assert!(!names.iter().any(|n| n == "bcc"), "{names:?}");
        let m = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(m.subject(), Some("Hi Bcc: victim@example.com body"));
        assert!(m.header("Bcc").is_none());
        assert_eq!(m.body_text(0).unwrap().replace("\r\n", "\n"), reply().body);
    }

    #[test]
    fn bad_addresses_are_typed_errors() {
        for to in [
            "victim@example.com\r\nBcc: other@example.com",
            "victim@example.com\nBcc: other@example.com",
            "victim@example.com, other@example.com",
            "victim@example.com junk",
            "not an address",
            "",
            "a@b\0.example",
            "<>",
        ] {
            let env = ReplyEnvelope { to, ..envelope(&[]) };
            match compose(&env, &reply()) {
                Err(ComposeError::BadTo { value, .. }) => assert!(!value.contains(['\r', '\n']), "{value:?}"),
                other => panic!("{to:?}: {other:?}"),
            }
        }
        let env = ReplyEnvelope { from: "Delist desk", ..envelope(&[]) };
        assert!(matches!(compose(&env, &reply()), Err(ComposeError::BadFrom { .. })));
        for id in ["", "no-at-sign", "<DL-1.x@example.test>", "a b@example.test", "DL-1.x@exa\r\nmple.test"] {
            let env = ReplyEnvelope { message_id: id, ..envelope(&[]) };
            assert!(matches!(compose(&env, &reply()), Err(ComposeError::BadMessageId(_))), "{id:?}");
        }
        // Display names and bracketed forms are fine.
        let env = ReplyEnvelope { to: "Jane Doe <jane@sender.example>", ..envelope(&[]) };
        assert!(compose(&env, &reply()).is_ok());
    }

    #[test]
    fn hostile_thread_ids_are_dropped_and_capped() {
        let mut refs: Vec<String> = (0..5000).map(|i| format!("r{i}@a.example")).collect();
        refs.push("x\r\nBcc: victim@example.com".into());
        refs.push("<bracketed@a.example>".into());
        refs.push(format!("{}@a.example", "x".repeat(10_000)));
        refs.push("r3@a.example".into()); // a repeat
        let env = ReplyEnvelope { in_reply_to: Some("parent@a.example\r\nX-Evil: 1"), ..envelope(&refs) };
        let raw = compose(&env, &reply()).unwrap();
        assert!(raw.len() < 4_000, "{} bytes", raw.len());
        let names = header_names(&raw);
        assert!(!names.iter().any(|n| n == "bcc" || n == "x-evil" || n == "in-reply-to"), "{names:?}");
        let m = MessageParser::default().parse(&raw).unwrap();
        let got = id_list(m.references());
        assert_eq!(got.len(), MAX_REFERENCES);
        assert_eq!(got[0], "r0@a.example", "the thread root is kept");
        assert_eq!(got.last().map(String::as_str), Some("r3@a.example"), "the latest is kept, once");
        assert_eq!(got[1], "r4992@a.example");
    }

    #[test]
    fn thread_references_put_the_parent_last() {
        let given = vec!["a@x".to_string(), "p@x".to_string(), "b@x".to_string()];
        assert_eq!(thread_references(&given, Some("p@x")), ["a@x", "b@x", "p@x"]);
        assert_eq!(thread_references(&[], None), Vec::<String>::new());
    }

    #[test]
    fn msg_ids_follow_rfc5322() {
        for ok in ["a@b", "DL-000042.1a2b.ff@example.test", "CAF=x+y/z@mail.gmail.com", "a.b@[192.0.2.1]"] {
            assert!(is_msg_id(ok), "{ok}");
        }
        for bad in ["", "a", "@b", "a@", "a..b@c", "a b@c", "<a@b>", "a@b\r\n", "é@b", "a@[b[c]"] {
            assert!(!is_msg_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn new_message_ids_are_recognisable_and_unique() {
        let id = new_message_id(Some(CaseRef(42)), "Example.TEST");
        assert!(id.starts_with("DL-000042.") && id.ends_with("@example.test"), "{id}");
        assert!(is_msg_id(&id), "{id}");
        let other = new_message_id(None, " bad domain\r\n ");
        assert!(other.starts_with("delistd.") && other.ends_with("@baddomain"), "{other}");
        assert!(new_message_id(None, "").ends_with("@delistd.invalid"));
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| new_message_id(None, "x.test")).collect();
        assert_eq!(many.len(), 10_000);
    }
}
