//! Raw message bytes → [`Evidence`]: what the sender gave us, with nothing decided yet.
//!
//! Pure: no I/O, no clock, no configuration beyond [`ExtractOptions`]. Never panics on
//! input and never reads more than `max_bytes` of it.
//!
//! The steps, one module each:
//!
//! * `mime`    walk the MIME tree → text pieces, each with its [`PartKind`]
//! * `text`    pieces → logical lines (MTA wrapping undone, quotes and forwards marked)
//! * `ndr`     NDR lines and RFC 3463 enhanced status codes, delivery-status fields
//! * `ip`      banned-IP candidates and their classification
//! * `scan`    run the scanners over the pieces and rank the findings
//! * `headers` top-level header facts; `auto` RFC 3834 signs; `refs` case references;
//!   `lang` the request's language; `html` HTML as text
//! * [`readable`] a message's decoded text for a person to read (the case page) and for the
//!   store's full-text index
//!
//! Readings chosen where the rules leave room (each explained where it is implemented):
//!
//! * A code written as a range (`5.7.606-649`, as in the provider's documents) is read as its
//!   first number, `5.7.606` (`ndr.rs`).
//! * Best NDR line: the provider's codes (5.7.511, 5.7.606–649, 5.7.700–750) first, then other
//!   5.7.x, then the rest; among equals, a delivery-status Diagnostic-Code, then an attached
//!   report, then the body, quoted text, the subject, the raw fallback (`scan.rs`).
//! * IPs a sender states in prose are kept only when no rejection names a usable IP: the NDR
//!   is the evidence the desk needs, prose beyond it is unverified (`scan.rs`).
//! * IPv4-mapped IPv6 (`::ffff:203.0.113.7`) is the IPv4 address it maps; ULA `fc00::/7` is
//!   `Private` (`ip.rs`).
//! * A message redirected by a person (Resent-From, RFC 5322 §3.6.6) is not automatic because
//!   of the original's Auto-Submitted, From or multipart/report (`auto.rs`).
//! * A report's returned message (the third part of multipart/report) is context: its header
//!   identifies bounces of our replies, its text is not evidence (`mime.rs`).

mod authres;
mod auto;
mod forms;
mod headers;
pub(crate) mod html;
mod ip;
mod lang;
mod mime;
mod ndr;
pub mod readable;
mod refs;
mod scan;
mod text;

use std::net::IpAddr;

use serde::Serialize;

pub use authres::{AuthResults, MethodResult};

use crate::types::{CaseRef, Lang, StatusCode};

/// Limits for one extraction.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Only the first `max_bytes` of a message are parsed; the evidence says so when cut.
    pub max_bytes: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { max_bytes: 10 * 1024 * 1024 }
    }
}

/// Everything found in one message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    /// Size of the raw input in bytes (before any truncation).
    pub size: usize,
    /// The input was larger than `max_bytes` and only its start was parsed.
    pub truncated: bool,
    /// MIME structure could not be trusted (bad boundary, broken encoding, ...) and the raw
    /// text was scanned as well.
    pub mime_fallback: bool,
    /// Facts from the top-level header.
    pub headers: HeaderFacts,
    /// Full NDR lines found, best first (see [`NdrLine`]).
    pub ndr_lines: Vec<NdrLine>,
    /// The status code the request is about: the code of the best NDR line, else a code the
    /// sender typed, else a `Status:` field of a delivery-status part.
    pub status_code: Option<StatusCode>,
    /// Every other distinct enhanced status code seen (for the reason line and staff).
    pub other_codes: Vec<StatusCode>,
    /// Candidate banned IPs, best first; each says where it came from and whether it is usable.
    pub ips: Vec<IpFinding>,
    /// Language of the request (Content-Language, then the text), English when unsure.
    pub language: Lang,
    /// A reference to an existing case: `[DL-000042]` in the subject, or In-Reply-To /
    /// References naming one of our Message-IDs (`<DL-000042.…@…>`).
    pub case_ref: Option<CaseRef>,
    /// RFC 3834 signs that the message was sent automatically. Empty for a person's mail.
    pub auto_signs: Vec<AutoSign>,
    /// This message is a delivery report about one of *our* replies (it names our
    /// Message-ID); the case it belongs to.
    pub bounce_of: Option<CaseRef>,
    /// The message answers one of our replies: its thread fields name one of our
    /// Message-IDs or a case, or what it quotes names one of our cases. What it quotes is
    /// then our own text and was not read as evidence.
    pub replies_to_us: bool,
    /// Valid public addresses anywhere in the sender's own new text (no phrase needed): in
    /// a follow-up to our missing-information reply they answer our question.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub own_ips: Vec<IpAddr>,
    /// `Authentication-Results:` fields of the top-level header (RFC 8601), in order, each
    /// with who wrote it; which to believe is the decision's business.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auth_results: Vec<AuthResults>,
}

impl Evidence {
    /// Valid, public banned IPs in order, without duplicates.
    pub fn valid_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for f in &self.ips {
            if let (Some(ip), None) = (f.ip, &f.problem) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        out
    }

    /// The best NDR line, if any.
    pub fn ndr_line(&self) -> Option<&NdrLine> {
        self.ndr_lines.first()
    }

    pub fn is_automatic(&self) -> bool {
        !self.auto_signs.is_empty()
    }

    /// The author is an address mail systems write their reports as (`postmaster@`,
    /// `MAILER-DAEMON@`). Not by itself a sign of an automatic message: people read
    /// postmaster@ (RFC 5321 §4.5.1) and write to the desk from it.
    pub fn from_mail_system_address(&self) -> bool {
        self.headers.from.as_deref().is_some_and(auto::may_send_reports)
    }
}

/// Facts taken from the top-level header of the message.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderFacts {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    /// From: address (lower-cased domain), and display name.
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub reply_to: Option<String>,
    pub return_path: ReturnPath,
    pub subject: Option<String>,
    /// Date: as RFC 3339 UTC, when it parses.
    pub date: Option<String>,
    /// Message-IDs (no angle brackets), in header order.
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Content-Language, as written.
    pub content_language: Option<String>,
    /// Resent-From when the message was redirected (RFC 5322 §3.6.6).
    pub resent_from: Option<String>,
    /// Display name of Resent-From.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resent_from_name: Option<String>,
    /// Resent-Message-ID of the redirect, without angle brackets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resent_message_id: Option<String>,
}

/// The Return-Path header (RFC 5321 §4.4), which is where automatic replies go (RFC 3834 §4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "address", rename_all = "snake_case")]
pub enum ReturnPath {
    /// No Return-Path header at all (e.g. a file on disk, never delivered).
    #[default]
    Absent,
    /// `Return-Path: <>`: a bounce or other automatic message; never answer it.
    Null,
    Address(String),
}

/// One NDR line as the server wrote it, joined across wrapping and soft line breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NdrLine {
    /// The line, whitespace folded to single spaces.
    pub text: String,
    /// SMTP basic reply code (`550`) when the line has one.
    pub reply_code: Option<u16>,
    pub status_code: StatusCode,
    /// Where it was found.
    pub found_in: PartKind,
}

/// Where in the message a piece of evidence was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    /// The sender's own text (text/plain or HTML as text).
    Body,
    /// A forwarded or attached message (message/rfc822, .eml attachment).
    AttachedMessage,
    /// A message/delivery-status part (RFC 3464): Diagnostic-Code / Status.
    DeliveryStatus,
    /// The subject line.
    Subject,
    /// Raw text scanned because the MIME structure was broken.
    RawFallback,
}

/// A candidate banned IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpFinding {
    /// The text as written (`203.0.113.7`, `xxx.xxx.xxx.xxx`, `2001:DB8::1`).
    pub text: String,
    /// The parsed address, canonical when serialized; `None` when malformed.
    pub ip: Option<IpAddr>,
    pub source: IpSource,
    /// Why it cannot be the answer, when it cannot.
    pub problem: Option<IpProblem>,
    /// The status code of the rejection that names this address, when a rejection does:
    /// a message may carry a 5.7.511 NDR for one IP and a 5.7.606 NDR for another, and each
    /// is judged on its own code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<StatusCode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpSource {
    /// Named by the rejection itself: `banned sender[IP]`, `banned sending IP [IP]`.
    Rejection,
    /// Stated by the sender in prose as theirs ("our IP is ...").
    Stated,
}

/// Why an address is not an acceptable banned IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpProblem {
    Malformed,
    Private,
    Loopback,
    LinkLocal,
    /// 100.64.0.0/10, RFC 6598.
    SharedAddressSpace,
    Multicast,
    Unspecified,
    Broadcast,
    /// Other special-purpose ranges (IANA registries), except documentation ranges, which
    /// are accepted so that examples work.
    Reserved,
}

impl IpProblem {
    pub fn describe(self) -> &'static str {
        match self {
            IpProblem::Malformed => "not a valid IP address",
            IpProblem::Private => "a private address",
            IpProblem::Loopback => "a loopback address",
            IpProblem::LinkLocal => "a link-local address",
            IpProblem::SharedAddressSpace => "a carrier-grade NAT (shared) address",
            IpProblem::Multicast => "a multicast address",
            IpProblem::Unspecified => "the unspecified address",
            IpProblem::Broadcast => "the broadcast address",
            IpProblem::Reserved => "a reserved address",
        }
    }
}

/// One RFC 3834 sign that a message was generated automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "sign", content = "value", rename_all = "snake_case")]
pub enum AutoSign {
    /// `Auto-Submitted:` other than `no` (RFC 3834 §5).
    AutoSubmitted(String),
    /// `Precedence: bulk | junk | list`.
    Precedence(String),
    /// A `List-*` header (RFC 2369 / 2919).
    ListHeader(String),
    /// `Return-Path: <>`.
    NullReturnPath,
    /// MAILER-DAEMON, postmaster, noreply-style sender address.
    RoleSender(String),
    /// X-Autoreply, X-Autorespond, X-Auto-Response-Suppress and the like.
    AutoreplyHeader(String),
    /// A mailbox rule or a Sieve redirect passed the message on
    /// (`X-MS-Exchange-Inbox-Rules-Loop`, `X-Sieve-Redirected-From`).
    AutoForward(String),
    /// An upstream spam verdict (`X-Spam-Flag: YES`, `X-Spam-Status: Yes`).
    SpamVerdict(String),
    /// The message itself is a delivery status notification (multipart/report).
    DeliveryReport,
    /// A subject MTAs and auto-responders write (`Undeliverable:`, `Mail delivery failed`,
    /// `Automatic reply:`), not forwarded or replied to by a person.
    AutomaticSubject(String),
}

/// Extract the evidence from a raw message.
pub fn extract(raw: &[u8], opts: &ExtractOptions) -> Evidence {
    let truncated = raw.len() > opts.max_bytes;
    let input = if truncated { &raw[..opts.max_bytes] } else { raw };

    let walk = mime::walk(input);
    let facts = walk.top.facts.clone();
    let case_ref = refs::case_ref(facts.subject.as_deref(), &facts.in_reply_to, &facts.references);
    let threaded_to_us =
        case_ref.is_some() || facts.in_reply_to.iter().chain(&facts.references).any(|id| refs::is_our_message_id(id));
    let found = scan::scan(&walk.pieces, facts.subject.as_deref(), threaded_to_us);

    let auto_signs = auto::signs(&auto::TopHeader {
        fields: &walk.top.fields,
        return_path: &facts.return_path,
        content_type: walk.top.content_type.as_deref(),
    });
    let language = facts
        .content_language
        .as_deref()
        .and_then(lang::from_content_language)
        .unwrap_or_else(|| lang::detect(&found.own_text));
    let bounce_of = bounce_of(&walk, &facts);

    Evidence {
        size: raw.len(),
        truncated,
        mime_fallback: walk.broken,
        headers: facts,
        ndr_lines: found.ndr_lines,
        status_code: found.status_code,
        other_codes: found.other_codes,
        ips: found.ips,
        language,
        // A reply to ours whose thread fields were lost (a new subject, a client that drops
        // In-Reply-To) still names its case in what it quotes.
        case_ref: case_ref.or(found.quoted_case),
        auto_signs,
        bounce_of,
        replies_to_us: threaded_to_us || found.quoted_case.is_some(),
        own_ips: found.own_ips,
        auth_results: authres::read(&walk.top.fields),
    }
}

/// When this message is a delivery report (multipart/report, or from the null path or a
/// mailer-daemon) about a message of ours, the case that message belongs to: its Message-ID
/// (`<DL-000042.…@…>`) or its `[DL-000042]` subject, in the attached or quoted original.
fn bounce_of(walk: &mime::Walk, facts: &HeaderFacts) -> Option<CaseRef> {
    let report = walk.top.content_type.as_deref() == Some("multipart/report");
    let from_daemon = facts.return_path == ReturnPath::Null || facts.from.as_deref().is_some_and(auto::may_send_reports);
    if !report && !from_daemon {
        return None;
    }
    walk.originals
        .iter()
        .find_map(|o| o.message_id.as_deref().and_then(refs::from_message_id))
        .or_else(|| walk.originals.iter().find_map(|o| o.subject.as_deref().and_then(refs::from_subject)))
        // Reports that quote the original inline instead of attaching it (qmail, some gateways).
        .or_else(|| walk.pieces.iter().find_map(|p| refs::our_id_in_text(&p.text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Debug builds on a shared 2-core machine: generous, yet far below what a quadratic
    /// scan of these inputs would take.
    const BOUND: Duration = Duration::from_secs(10);

    fn timed(raw: &[u8]) -> Evidence {
        let start = Instant::now();
        let ev = extract(raw, &ExtractOptions::default());
        assert!(start.elapsed() < BOUND, "took {:?}", start.elapsed());
        ev
    }

    #[test]
    fn input_over_the_cap_is_cut_and_marked() {
        let raw = b"Subject: x\r\n\r\n550 5.7.511 Access denied, banned sender[203.0.113.7].\r\nOur IP is 198.51.100.9\r\n";
        let ev = extract(raw, &ExtractOptions { max_bytes: 40 });
        assert!(ev.truncated);
        assert_eq!(ev.size, raw.len());
        assert!(ev.ips.is_empty());
        let ev = extract(raw, &ExtractOptions::default());
        assert!(!ev.truncated);
        assert_eq!(ev.valid_ips(), vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn empty_and_garbage_input_give_empty_evidence() {
        for raw in [&b""[..], b"\0\0\0", b"\xff\xfe\xfd", b"\r\r\r", b"--\r\n--"] {
            let ev = timed(raw);
            assert_eq!(ev.status_code, None);
            assert!(ev.ips.is_empty());
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut raw = "Content-Type: message/rfc822\r\n\r\n".repeat(50_000);
        raw.push_str("Subject: x\r\n\r\n550 5.7.511 banned sender[203.0.113.7]\r\n");
        let ev = timed(raw.as_bytes());
        assert!(ev.mime_fallback);
        let mut raw = String::new();
        for i in 0..20_000 {
            raw.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
        }
        timed(raw.as_bytes());
    }

    #[test]
    fn many_parts_ips_and_codes_are_bounded() {
        let raw = format!("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{}--b--\r\n", "--b\r\n\r\nx\r\n".repeat(100_000));
        timed(raw.as_bytes());
        let ips: Vec<String> = (0..10_000).map(|i| format!("banned sender[198.51.{}.{}]", i / 256 % 256, i % 256)).collect();
        let ev = timed(format!("Subject: x\r\n\r\nour IP is 203.0.113.1\r\n{}\r\n", ips.join(" ")).as_bytes());
        assert!(ev.ips.len() <= 32);
        let ev = timed(format!("Subject: x\r\n\r\n{}\r\n", "550 5.7.511 ".repeat(200_000)).as_bytes());
        assert!(ev.ndr_lines.len() <= 32 && ev.other_codes.len() <= 32);
    }

    #[test]
    fn long_headers_nul_bytes_and_invalid_utf8_are_read() {
        let raw = format!("Subject: {}\r\nX-Long: {}\r\n\r\nbody 5.7.511\r\n", "a".repeat(1 << 20), "b ".repeat(1 << 19));
        let ev = timed(raw.as_bytes());
        assert_eq!(ev.status_code, Some(StatusCode::BANNED_SENDER));
        assert!(ev.headers.subject.as_deref().is_some_and(|s| s.chars().count() <= 2000));
        let ev = timed(b"Subject: a\0b\r\nFrom: \xc3(\xa0 <a@example.com>\r\n\r\n\0\xff 550 5.7.511 banned sender[203.0.113.7]\0\r\n");
        assert_eq!(ev.status_code, Some(StatusCode::BANNED_SENDER));
        assert_eq!(ev.valid_ips().len(), 1);
        assert_eq!(ev.headers.from.as_deref(), Some("a@example.com"));
    }

    #[test]
    fn hostile_html_is_linear() {
        let raw = format!("Content-Type: text/html\r\n\r\n{}", "<a".repeat(500_000));
        timed(raw.as_bytes());
    }
}
