//! Walk the MIME tree → text pieces to scan, each with where it was found.
//!
//! Every part is visited: text and HTML bodies, nested `message/rfc822` (and `.eml` files sent
//! as `application/octet-stream`), `message/delivery-status` (RFC 3464) and
//! `text/rfc822-headers` (RFC 6522). When the structure cannot be trusted (parse failure,
//! wrong boundary, broken encoding, bare CR line ends, a panic in the parser) the raw text is
//! scanned as well. Depth and part count are bounded so hostile input stays cheap.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::LazyLock;

use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::headers::{self, Top};
use super::{html, PartKind};

/// Deepest nesting of multiparts and attached messages we follow.
const MAX_DEPTH: usize = 20;
/// Most MIME parts we look at in one message.
const MAX_PARTS: usize = 2000;
/// Most structure lines (boundary delimiters, Content-Type fields) handed to the parser: it
/// builds every part before we can bound anything, so input past this point is only read
/// as raw text. Also bounds the depth of nested messages the parser builds (and drops).
const MAX_STRUCTURE_LINES: usize = 2000;

/// One parser for every message: MIME fields (needed to read bodies) and the few fields we
/// read as structured values; everything else, Received included, is skipped unparsed.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_content_type(HeaderName::ContentType)
        .header_content_type(HeaderName::ContentDisposition)
        .header_text(HeaderName::ContentTransferEncoding)
        .header_text(HeaderName::Subject)
        .header_date(HeaderName::Date)
        .header_address(HeaderName::From)
        .header_address(HeaderName::Sender)
        .header_address(HeaderName::ReplyTo)
        .header_address(HeaderName::ResentFrom)
        // Skipped fields keep their offsets: headers::raw_value reads them from the bytes.
        .default_header_ignore()
});

/// A text to scan and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub kind: PartKind,
    pub text: String,
    /// `format=flowed` (RFC 3676): trailing spaces are soft line breaks.
    pub flowed: bool,
}

/// The headers of an attached or quoted original message (for bounces of our replies).
#[derive(Debug, Clone, Default)]
pub(crate) struct Original {
    pub message_id: Option<String>,
    pub subject: Option<String>,
}

/// Everything the walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub top: Top,
    pub pieces: Vec<Piece>,
    pub originals: Vec<Original>,
    /// The MIME structure could not be trusted; the raw text was added as a piece.
    pub broken: bool,
    /// Some parts were skipped because of the depth or part-count bound.
    pub limited: bool,
}

/// Parse and walk a message. Never panics: a panic inside the parser is caught and the
/// message is then read from its raw text.
pub(crate) fn walk(input: &[u8]) -> Walk {
    // Bare CR line ends confuse header and boundary parsing; read them as line breaks.
    let normalized;
    let mut bare_cr = false;
    let bytes = if has_bare_cr(input) {
        bare_cr = true;
        normalized = normalize_cr(input);
        normalized.as_slice()
    } else {
        input
    };

    let cut = structure_cut(bytes);
    let parse_input = &bytes[..cut.unwrap_or(bytes.len())];
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let msg = PARSER.parse(parse_input)?;
        let mut w = Walker { out: Walk { top: headers::read(&msg), ..Walk::default() }, parts_seen: 0 };
        w.out.broken |= declared_multipart_not_found(&msg);
        w.walk_part(&msg, 0, 0, false);
        Some(w.out)
    }));
    let mut walk = match parsed {
        Ok(Some(w)) => w,
        Ok(None) => Walk { broken: true, ..Walk::default() },
        Err(_) => {
            // Last line of defence: keep at least the header, for the auto-reply checks.
            let top = catch_unwind(AssertUnwindSafe(|| {
                PARSER.parse_headers(bytes).map(|m| headers::read(&m))
            }));
            Walk { top: top.ok().flatten().unwrap_or_default(), broken: true, ..Walk::default() }
        }
    };
    walk.broken |= bare_cr || cut.is_some();
    walk.limited |= cut.is_some();
    if walk.broken {
        walk.pieces.push(Piece { kind: PartKind::RawFallback, text: raw_text(bytes), flowed: false });
    }
    walk
}

/// Where to stop parsing: the start of the line holding structure line number
/// `MAX_STRUCTURE_LINES + 1`, or `None` when the message has fewer.
pub(super) fn structure_cut(b: &[u8]) -> Option<usize> {
    // Fewer lines than the limit: nothing to cut (one fast count instead of a line walk).
    if memchr::memchr_iter(b'\n', b).count() < MAX_STRUCTURE_LINES {
        return None;
    }
    let mut count = 0usize;
    let mut start = 0usize;
    loop {
        let line = &b[start..];
        let structural = line.starts_with(b"--")
            || line.get(..13).is_some_and(|h| h.eq_ignore_ascii_case(b"content-type:"));
        if structural {
            count += 1;
            if count > MAX_STRUCTURE_LINES {
                return Some(start);
            }
        }
        match memchr::memchr(b'\n', line) {
            Some(i) => start += i + 1,
            None => return None,
        }
    }
}

pub(super) fn has_bare_cr(b: &[u8]) -> bool {
    memchr::memchr_iter(b'\r', b).any(|i| b.get(i + 1) != Some(&b'\n'))
}

pub(super) fn normalize_cr(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'\r' && b.get(i + 1) != Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
        } else {
            out.push(c);
        }
    }
    out
}

/// The top-level header says multipart, but the parser found no parts: wrong boundary.
fn declared_multipart_not_found(msg: &Message<'_>) -> bool {
    let Some(root) = msg.parts.first() else { return true };
    let declared = root.content_type().is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"));
    declared && !matches!(root.body, PartType::Multipart(_))
}

fn ctype(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(ct) => (ct.ctype().to_ascii_lowercase(), ct.subtype().unwrap_or("").to_ascii_lowercase()),
        None => ("text".into(), "plain".into()),
    }
}

fn is_flowed(part: &MessagePart<'_>) -> bool {
    part.content_type().and_then(|ct| ct.attribute("format")).is_some_and(|f| f.eq_ignore_ascii_case("flowed"))
}

fn is_eml_name(part: &MessagePart<'_>) -> bool {
    part.attachment_name().is_some_and(|n| {
        let n = n.trim().trim_matches('"').to_ascii_lowercase();
        n.ends_with(".eml") || n.ends_with(".msg.txt")
    })
}

struct Walker {
    out: Walk,
    parts_seen: usize,
}

impl Walker {
    fn push(&mut self, kind: PartKind, text: String, flowed: bool) {
        if !text.trim().is_empty() {
            self.out.pieces.push(Piece { kind, text, flowed });
        }
    }

    fn note_original(&mut self, msg: &Message<'_>) {
        let (message_id, subject) = headers::id_and_subject(msg);
        if message_id.is_some() || subject.is_some() {
            self.out.originals.push(Original { message_id, subject });
        }
    }

    fn walk_part(&mut self, msg: &Message<'_>, id: usize, depth: usize, attached: bool) {
        if depth > MAX_DEPTH || self.parts_seen >= MAX_PARTS {
            self.out.limited = true;
            return;
        }
        self.parts_seen += 1;
        let Some(part) = msg.parts.get(id) else { return };
        if part.is_encoding_problem {
            self.out.broken = true;
        }
        let kind = if attached { PartKind::AttachedMessage } else { PartKind::Body };
        let (t, sub) = ctype(part);
        match &part.body {
            PartType::Multipart(ids) => {
                // Children come after their parent; anything else would be a loop.
                let mut children: Vec<usize> = ids.iter().map(|&i| i as usize).filter(|&i| i > id).collect();
                if sub == "alternative" {
                    children = choose_alternative(msg, children);
                }
                for c in children {
                    // In a report (RFC 6522) the returned message is context, not evidence:
                    // its headers identify it (bounces of our replies), its text is not read.
                    if sub == "report" && msg.parts.get(c).is_some_and(|p| matches!(p.body, PartType::Message(_))) {
                        if let Some(PartType::Message(m)) = msg.parts.get(c).map(|p| &p.body) {
                            self.note_original(m);
                        }
                        continue;
                    }
                    self.walk_part(msg, c, depth + 1, attached);
                }
            }
            PartType::Text(text) => match (t.as_str(), sub.as_str()) {
                // No charset, or one that cannot be right: read the bytes ourselves (a BOM, a
                // legacy CJK encoding, 8-bit bytes under a us-ascii label).
                _ if needs_redecoding(part, text) => {
                    let decoded = body_bytes(msg, part).map(|b| decode_unlabelled(&b));
                    let kind = if t == "message" { PartKind::AttachedMessage } else { kind };
                    self.push(kind, decoded.unwrap_or_else(|| text.to_string()), false)
                }
                (_, "rfc822-headers") => self.headers_text(text.as_bytes()),
                ("message", "delivery-status" | "global-delivery-status") => {
                    self.push(PartKind::DeliveryStatus, text.to_string(), false)
                }
                // A message/* part the parser could not take apart arrives as text.
                ("message", _) => self.push(PartKind::AttachedMessage, text.to_string(), false),
                _ => self.push(kind, text.to_string(), is_flowed(part)),
            },
            PartType::Html(h) => self.push(kind, html::to_text(h), false),
            PartType::Binary(b) | PartType::InlineBinary(b) => match (t.as_str(), sub.as_str()) {
                ("message", "delivery-status" | "global-delivery-status") => {
                    self.push(PartKind::DeliveryStatus, String::from_utf8_lossy(b).into_owned(), false)
                }
                (_, "rfc822-headers") => self.headers_text(b),
                ("message", "rfc822" | "global") => self.nested_bytes(b, depth + 1),
                _ if is_eml_name(part) => self.nested_bytes(b, depth + 1),
                // A text file sent as application/octet-stream (Notepad's UTF-16 `.txt`).
                _ if is_text_name(part) || bom(b).is_some() => {
                    if let Some(text) = bom(b).map(|_| decode_unlabelled(b)).or_else(|| std::str::from_utf8(b).ok().map(str::to_string)) {
                        self.push(PartKind::Body, text, false)
                    }
                }
                _ => {}
            },
            PartType::Message(m) => {
                self.note_original(m);
                self.walk_part(m, 0, depth + 1, true);
            }
        }
    }

    /// An attached message we must parse ourselves (`.eml` as octet-stream).
    fn nested_bytes(&mut self, b: &[u8], depth: usize) {
        if depth > MAX_DEPTH {
            self.out.limited = true;
            return;
        }
        if let Some(m) = PARSER.parse(b) {
            self.note_original(&m);
            self.walk_part(&m, 0, depth, true);
        }
    }

    /// `text/rfc822-headers`: the header of the original message, never scanned for IPs.
    fn headers_text(&mut self, b: &[u8]) {
        if let Some(m) = PARSER.parse_headers(b) {
            self.note_original(&m);
        }
    }
}

fn is_text_name(part: &MessagePart<'_>) -> bool {
    part.attachment_name().is_some_and(|n| {
        let n = n.trim().trim_matches('"').to_ascii_lowercase();
        n.ends_with(".txt") || n.ends_with(".log")
    })
}

/// The part's body after its transfer encoding, before any charset decoding.
fn body_bytes(msg: &Message<'_>, part: &MessagePart<'_>) -> Option<Vec<u8>> {
    let raw = msg.raw_message.as_ref().get(part.offset_body as usize..part.offset_end as usize)?;
    match part.encoding {
        mail_parser::Encoding::Base64 => mail_parser::decoders::base64::base64_decode(raw),
        mail_parser::Encoding::QuotedPrintable => mail_parser::decoders::quoted_printable::quoted_printable_decode(raw),
        mail_parser::Encoding::None => Some(raw.to_vec()),
    }
}

/// Should the parser's text be read again from the bytes? When no charset is declared and
/// the parser had to guess (replacement characters, NULs of UTF-16), or when the label is
/// us-ascii but the parser found more than ASCII. Cheap: looks at the decoded text only.
fn needs_redecoding(part: &MessagePart<'_>, text: &str) -> bool {
    let charset = part.content_type().and_then(|ct| ct.attribute("charset")).map(str::to_ascii_lowercase);
    let unlabelled = matches!(charset.as_deref(), None | Some("us-ascii") | Some("ascii") | Some("utf-8") | Some("utf8"));
    // `is_ascii` and `memchr` are vectorised: most parts are ASCII text and cost two fast
    // passes; only non-ASCII text is searched for replacement characters.
    unlabelled
        && (memchr::memchr(0, text.as_bytes()).is_some()
            || (!text.is_ascii() && (text.starts_with('\u{FEFF}') || text.contains('\u{FFFD}'))))
}

/// A byte-order mark and the encoding it announces (Unicode §23.8).
fn bom(b: &[u8]) -> Option<&'static str> {
    match b {
        [0xFF, 0xFE, 0, 0, ..] => Some("utf-32le"),
        [0, 0, 0xFE, 0xFF, ..] => Some("utf-32be"),
        [0xFF, 0xFE, ..] => Some("utf-16le"),
        [0xFE, 0xFF, ..] => Some("utf-16be"),
        [0xEF, 0xBB, 0xBF, ..] => Some("utf-8"),
        _ => None,
    }
}

/// Text whose charset nobody declared (or declared wrong): a BOM decides; else UTF-8 when
/// it is valid; else the first legacy encoding that decodes it without error, CJK ones
/// first when most of the text is 8-bit (GB18030 covers GB2312/GBK), else Windows-1252.
pub(crate) fn decode_unlabelled(b: &[u8]) -> String {
    let utf32 = |b: &[u8], be: bool| -> String {
        b.chunks_exact(4)
            .filter_map(|c| {
                let n = if be { u32::from_be_bytes([c[0], c[1], c[2], c[3]]) } else { u32::from_le_bytes([c[0], c[1], c[2], c[3]]) };
                char::from_u32(n)
            })
            .collect()
    };
    match bom(b) {
        Some("utf-32le") => return utf32(&b[4..], false),
        Some("utf-32be") => return utf32(&b[4..], true),
        Some("utf-16le") => return encoding_rs::UTF_16LE.decode_without_bom_handling(&b[2..]).0.into_owned(),
        Some("utf-16be") => return encoding_rs::UTF_16BE.decode_without_bom_handling(&b[2..]).0.into_owned(),
        Some(_) => return String::from_utf8_lossy(&b[3..]).into_owned(),
        None => {}
    }
    if let Ok(s) = std::str::from_utf8(b) {
        return s.to_string();
    }
    // Double-byte CJK encodings write each character as two 8-bit bytes in a row; Latin-1
    // text has its 8-bit letters alone between ASCII ones.
    let (mut paired, mut alone) = (0usize, 0usize);
    let mut i = 0;
    while i < b.len().min(64 * 1024) {
        if b[i] >= 0x80 {
            // (GBK and Big5 trail bytes may also be ASCII letters: those count as alone,
            // which only errs towards Windows-1252 on very short texts.)
            if b.get(i + 1).is_some_and(|n| *n >= 0x80) {
                paired += 1;
                i += 2;
                continue;
            }
            alone += 1;
        }
        i += 1;
    }
    if paired > alone {
        for enc in [encoding_rs::GB18030, encoding_rs::BIG5, encoding_rs::EUC_KR, encoding_rs::SHIFT_JIS] {
            let (text, had_errors) = enc.decode_without_bom_handling(b);
            if !had_errors {
                return text.into_owned();
            }
        }
    }
    encoding_rs::WINDOWS_1252.decode_without_bom_handling(b).0.into_owned()
}

/// In multipart/alternative the parts say the same thing: read the plain text when it has
/// any, else everything (HTML-only mail).
fn choose_alternative(msg: &Message<'_>, children: Vec<usize>) -> Vec<usize> {
    let plain_has_text = children.iter().any(|&c| {
        msg.parts.get(c).is_some_and(|p| matches!(&p.body, PartType::Text(t) if !t.trim().is_empty()) && ctype(p).1 == "plain")
    });
    if !plain_has_text {
        return children;
    }
    children
        .into_iter()
        .filter(|&c| msg.parts.get(c).is_some_and(|p| matches!(&p.body, PartType::Text(_)) && ctype(p).1 == "plain"))
        .collect()
}

/// The raw message as text for the fallback scan: the body after the top-level header,
/// soft line breaks of quoted-printable removed, decoded with the declared charset when the
/// bytes are not UTF-8.
fn raw_text(bytes: &[u8]) -> String {
    let body_start = find(bytes, b"\r\n\r\n").map(|i| i + 4).or_else(|| find(bytes, b"\n\n").map(|i| i + 2)).unwrap_or(0);
    let body = &bytes[body_start..];
    let lower_head: Vec<u8> = bytes.iter().take(64 * 1024).map(u8::to_ascii_lowercase).collect();
    let body = if find(&lower_head, b"quoted-printable").is_some() || find(body, b"=\n").is_some() {
        std::borrow::Cow::Owned(qp_lenient(body))
    } else {
        std::borrow::Cow::Borrowed(body)
    };
    if let Ok(s) = std::str::from_utf8(&body) {
        return s.to_string();
    }
    let label = find(&lower_head, b"charset=").map(|i| {
        let rest = &lower_head[i + 8..];
        let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
        rest.iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b'_').copied().collect::<Vec<u8>>()
    });
    let enc = label
        .and_then(|l| encoding_rs::Encoding::for_label(&l))
        .or_else(|| find(&body, b"\x1b$B").map(|_| encoding_rs::ISO_2022_JP))
        .unwrap_or(encoding_rs::WINDOWS_1252);
    enc.decode(&body).0.into_owned()
}

/// Quoted-printable decoding that never fails: soft breaks removed, `=XX` decoded, anything
/// else kept as is (RFC 2045 §6.7 asks decoders to be robust).
fn qp_lenient(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while i < b.len() {
        if b[i] == b'=' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&h), Some(&l)) => {
                    if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                        out.push(h * 16 + l);
                        i += 3;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(w: &Walk) -> Vec<PartKind> {
        w.pieces.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn single_text_part_is_body() {
        let w = walk(b"From: a@example.com\r\nSubject: x\r\n\r\nhello\r\n");
        assert_eq!(kinds(&w), vec![PartKind::Body]);
        assert!(!w.broken);
    }

    #[test]
    fn returned_message_of_a_report_is_not_read() {
        let raw = b"Content-Type: multipart/report; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <DL-000009.a@d.example>\r\n\r\nquoted 550 5.7.511 text\r\n--b--\r\n";
        let w = walk(raw);
        assert_eq!(w.pieces.iter().map(|p| p.text.trim()).collect::<Vec<_>>(), vec!["failed"]);
        assert_eq!(w.originals[0].message_id.as_deref(), Some("DL-000009.a@d.example"));
    }

    #[test]
    fn report_parts_are_told_apart() {
        let raw = b"From: MAILER-DAEMON@example.com\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a.example\r\n\r\nStatus: 5.7.511\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <DL-000009.a@d.example>\r\nSubject: [DL-000009] re\r\n--b--\r\n";
        let w = walk(raw);
        assert_eq!(kinds(&w), vec![PartKind::Body, PartKind::DeliveryStatus]);
        assert_eq!(w.originals.len(), 1);
        assert_eq!(w.originals[0].message_id.as_deref(), Some("DL-000009.a@d.example"));
        assert_eq!(w.top.content_type.as_deref(), Some("multipart/report"));
    }

    #[test]
    fn attached_message_and_eml_file() {
        let inner = "From: x@example.net\r\nMessage-ID: <i@example.net>\r\n\r\ninner text\r\n";
        let raw = format!(
            "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--b\r\nContent-Type: application/octet-stream; name=\"ndr.eml\"\r\nContent-Transfer-Encoding: base64\r\n\r\nRnJvbTogeUBleGFtcGxlLm5ldA0KDQplbWwgdGV4dA0K\r\n--b--\r\n"
        );
        let w = walk(raw.as_bytes());
        let texts: Vec<(PartKind, &str)> = w.pieces.iter().map(|p| (p.kind, p.text.trim())).collect();
        assert_eq!(
            texts,
            vec![(PartKind::Body, "see attached"), (PartKind::AttachedMessage, "inner text"), (PartKind::AttachedMessage, "eml text")]
        );
    }

    #[test]
    fn alternative_prefers_plain_and_html_only_is_read() {
        let raw = b"Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b--\r\n";
        let w = walk(raw);
        assert_eq!(w.pieces.len(), 1);
        assert_eq!(w.pieces[0].text.trim(), "plain");
        let w = walk(b"Content-Type: text/html\r\n\r\n<td>a</td><td>b</td>");
        assert_eq!(w.pieces[0].text, "a b");
    }

    #[test]
    fn wrong_boundary_and_bare_cr_fall_back_to_raw() {
        let w = walk(b"Content-Type: multipart/mixed; boundary=\"nope\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n");
        assert!(w.broken);
        assert_eq!(w.pieces.last().map(|p| p.kind), Some(PartKind::RawFallback));
        let w = walk(b"Subject: a\rFrom: b@example.com\r\rbody\r");
        assert!(w.broken);
        assert_eq!(w.top.facts.subject.as_deref(), Some("a"));
    }

    #[test]
    fn lenient_qp_and_legacy_charsets_in_raw_text() {
        assert_eq!(qp_lenient(b"203.0.=\r\n113.7 =3D =ZZ"), b"203.0.113.7 = =ZZ");
        let t = raw_text(b"Content-Type: text/plain; charset=iso-8859-1\n\nadresse IP d'exp\xe9diteur");
        assert_eq!(t, "adresse IP d'expéditeur");
    }

    #[test]
    fn parser_input_stops_after_too_many_structure_lines() {
        let raw = format!("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{}--b--\r\n", "--b\r\n\r\nx\r\n".repeat(5000));
        let cut = structure_cut(raw.as_bytes()).unwrap();
        assert_eq!(raw[..cut].matches("--b\r\n").count(), MAX_STRUCTURE_LINES - 1);
        let w = walk(raw.as_bytes());
        assert!(w.limited && w.broken);
        assert_eq!(structure_cut(b"Subject: x\r\n\r\n-- \r\nsig"), None);
    }

    #[test]
    fn unlabelled_text_is_decoded_by_its_bom_or_its_bytes() {
        let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain("IP 203.0.113.7".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(decode_unlabelled(&utf16), "IP 203.0.113.7");
        let utf32: Vec<u8> = [0, 0, 0xFE, 0xFF].into_iter().chain("IP 地址".chars().flat_map(|c| (c as u32).to_be_bytes())).collect();
        assert_eq!(decode_unlabelled(&utf32), "IP 地址");
        let (gbk, _, _) = encoding_rs::GBK.encode("我们的服务器被封锁了，请帮忙解除");
        assert_eq!(decode_unlabelled(&gbk), "我们的服务器被封锁了，请帮忙解除");
        assert_eq!(decode_unlabelled(b"adresse IP d'exp\xe9diteur"), "adresse IP d'expéditeur");
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        let mut raw = String::new();
        for i in 0..1000 {
            raw.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
        }
        raw.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
        let w = walk(raw.as_bytes());
        assert!(w.limited || w.broken);
    }
}
