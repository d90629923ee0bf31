//! NDR lines and RFC 3463 enhanced status codes.
//!
//! An *NDR line* is an SMTP reply as a server wrote it: a basic reply code, then an enhanced
//! status code of the same class, then text (`550 5.7.511 Access denied, banned sender[...]`),
//! or the Diagnostic-Code of a delivery-status part (RFC 3464 §2.3.6). Any other enhanced code
//! in text is a *loose* code: one the sender typed, or one mentioned in passing.
//!
//! Codes written as ranges in the provider's documents (`5.7.606-649`) are read as their first
//! number (`5.7.606`): that is the code a server would send, and it falls in the same range.

use std::sync::LazyLock;

use regex::Regex;

use super::{NdrLine, PartKind};
use crate::types::StatusCode;

/// The longest NDR line we keep, in bytes; the provider's lines are about 250.
const MAX_NDR_TEXT: usize = 1000;
/// Most replies and loose codes read from one line (hostile input can repeat them endlessly).
const MAX_PER_LINE: usize = 64;

/// `550 5.7.511`, `550-5.7.1`, `550 #5.7.511`, `5.7.606-649`.
static NDR_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u:\b)([245])([0-9]{2})([ -])#?([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:-([0-9]{1,3}))?").expect("static regex")
});

static CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u:\b)([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:-[0-9]{1,3})?").expect("static regex"));

/// Postfix's own note after the remote reply.
static POSTFIX_NOTE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\s*\(in reply to [^()]{1,60}\)\s*\.?\s*$").expect("static regex"));

/// Cheap test before any regex: does the text hold `2.`, `4.` or `5.` followed by a digit?
pub(crate) fn may_hold_code(s: &str) -> bool {
    s.as_bytes().windows(3).any(|w| matches!(w[0], b'2' | b'4' | b'5') && w[1] == b'.' && w[2].is_ascii_digit())
}

/// Is the match at `range` a code on its own, not part of an IP address or version number?
fn stands_alone(s: &str, start: usize, end: usize) -> bool {
    let b = s.as_bytes();
    if start > 0 && b[start - 1] == b'.' {
        return false;
    }
    match b.get(end) {
        Some(c) if c.is_ascii_digit() => false,
        Some(b'.') => !b.get(end + 1).is_some_and(u8::is_ascii_digit),
        _ => true,
    }
}

/// Parse `5.7.511` / `5.7.606-649` (first number) from the start of `s`.
pub(crate) fn parse_code(s: &str) -> Option<StatusCode> {
    let m = CODE.find(s)?;
    if m.start() != 0 || !stands_alone(s, m.start(), m.end()) {
        return None;
    }
    code_in(m.as_str())
}

/// `5.7.511` or `5.7.606-649` (a CODE match) → the code, reading a range as its first number.
fn code_in(m: &str) -> Option<StatusCode> {
    let mut it = m.split(['.', '-']);
    let class: u8 = it.next()?.parse().ok()?;
    let subject: u16 = it.next()?.parse().ok()?;
    let detail: u16 = it.next()?.parse().ok()?;
    Some(StatusCode::new(class, subject, detail))
}

/// One reply found in a line: where it starts and its codes.
struct Start {
    at: usize,
    /// Where the text after the codes begins.
    after_codes: usize,
    reply: u16,
    hyphen: bool,
    code: StatusCode,
}

fn starts(line: &str) -> Vec<Start> {
    let mut v = Vec::new();
    // `find` keeps the regex on its DFA; the match (`550-5.7.1`, `550 #5.7.606-649`) is
    // simple enough to take apart by hand.
    for m in NDR_START.find_iter(line) {
        if v.len() >= MAX_PER_LINE {
            break;
        }
        if !stands_alone(line, m.start(), m.end()) {
            continue;
        }
        let t = m.as_str();
        let (Ok(reply), Some(sep)) = (t[..3].parse::<u16>(), t.as_bytes().get(3)) else { continue };
        let code_text = t[4..].trim_start_matches('#');
        // RFC 3463 §2: the enhanced code's class repeats the reply code's first digit.
        if code_text.as_bytes().first() != t.as_bytes().first() {
            continue;
        }
        let Some(code) = code_in(code_text) else { continue };
        v.push(Start { at: m.start(), after_codes: m.end(), reply, hyphen: *sep == b'-', code });
    }
    v
}

/// Cut `s` to at most `max` bytes on a char boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Tidy the end of an NDR line: the quote Exchange wraps it in, Postfix's "(in reply to RCPT TO
/// command)", a trailing `>` of `<... smtp;550 ...>`.
fn tidy(text: &str) -> String {
    let mut t = text.trim();
    // A line that began inside a parenthesis (Sendmail's `(reason: 550 ...)`) ends with it.
    let mut depth = 0i32;
    for (i, c) in t.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                t = t[..i].trim_end();
                break;
            }
            ')' => depth -= 1,
            _ => {}
        }
    }
    // Exchange 2007 ends its lines with `##` and the recipient.
    if let Some(i) = t.find(" ##") {
        t = t[..i].trim_end();
    }
    loop {
        let before = t;
        t = t.trim_end_matches(['\'', '"', '’', '”', '“', '»', '«', '」']).trim_end();
        if t.ends_with('>') && !t.contains('<') {
            t = t[..t.len() - 1].trim_end();
        }
        if let Some(m) = t.ends_with([')', '.']).then(|| POSTFIX_NOTE.find(t)).flatten() {
            t = t[..m.start()].trim_end();
        }
        if t == before {
            break;
        }
    }
    clip(t, MAX_NDR_TEXT).trim_end().to_string()
}

/// What one logical line holds.
#[derive(Debug, Default)]
pub(crate) struct LineScan {
    pub ndr: Vec<NdrLine>,
    /// Enhanced codes outside NDR lines (typed or mentioned).
    pub loose: Vec<StatusCode>,
    /// Enhanced codes mentioned inside NDR line text (e.g. "(ex. 5.7.511 Access denied)").
    pub inner: Vec<StatusCode>,
    /// Byte offset where the first NDR line starts, if any.
    pub first_ndr_at: Option<usize>,
    /// Every NDR head and loose code with its byte offset, in line order: a rejection phrase
    /// takes the code written before it on the line.
    pub codes_at: Vec<(usize, StatusCode)>,
}

/// Scan one logical (already unwrapped and folded) line.
pub(crate) fn scan_line(line: &str, kind: PartKind) -> LineScan {
    let mut out = LineScan::default();
    if !may_hold_code(line) {
        return out;
    }
    let st = starts(line);
    // Group multi-line continuations (`550-5.7.1 a 550-5.7.1 b 550 5.7.1 c`) with their head.
    let mut spans: Vec<(usize, usize)> = Vec::new(); // (head index, end byte)
    let mut i = 0;
    while i < st.len() {
        let head = i;
        let mut j = i + 1;
        let mut prev = i;
        // A hyphen on either side marks a continuation (RFC 5321 §4.2.1); the head may have
        // lost its hyphen when the wrapped lines were joined.
        while j < st.len() && (st[prev].hyphen || st[j].hyphen) && st[j].reply == st[head].reply && st[j].code == st[head].code {
            prev = j;
            j += 1;
        }
        let end = st.get(j).map_or(line.len(), |s| s.at);
        spans.push((head, end));
        // Remember the continuations so their prefixes can be dropped.
        i = j;
    }
    let mut covered: Vec<(usize, usize)> = Vec::new();
    for (si, &(head, end)) in spans.iter().enumerate() {
        let h = &st[head];
        let next_head = spans.get(si + 1).map_or(st.len(), |s| s.0);
        // Text of the head, then each continuation without its repeated prefix.
        let mut text = String::new();
        let mut cursor = h.at;
        for c in &st[head + 1..next_head] {
            text.push_str(&line[cursor..c.at]);
            cursor = c.after_codes;
        }
        text.push_str(&line[cursor..end]);
        // A multi-line head keeps its hyphen out of the joined text: `550 5.7.1 ...`.
        let text = if h.hyphen && next_head > head + 1 {
            let codes_end = h.after_codes - h.at;
            format!("{} {}{}", h.reply, &line[h.at + 4..h.after_codes], &text[codes_end.min(text.len())..])
        } else {
            text
        };
        let text = tidy(&super::text::fold_ws(&text));
        if out.first_ndr_at.is_none() {
            out.first_ndr_at = Some(h.at);
        }
        covered.push((h.at, end));
        out.codes_at.push((h.at, h.code));
        out.ndr.push(NdrLine { text, reply_code: Some(h.reply), status_code: h.code, found_in: kind });
    }
    // Loose codes: every code that is not the head code of an NDR line. Starts and spans are
    // in line order, so one forward pass over each tells heads and insides apart.
    let (mut si, mut ci) = (0, 0);
    for m in CODE.find_iter(line) {
        if out.loose.len() + out.inner.len() >= MAX_PER_LINE {
            break;
        }
        if !stands_alone(line, m.start(), m.end()) {
            continue;
        }
        let Some(code) = code_in(m.as_str()) else { continue };
        while si < st.len() && st[si].after_codes < m.end() {
            si += 1;
        }
        if st.get(si).is_some_and(|s| s.at < m.start() && m.end() <= s.after_codes) {
            continue; // the code of a reply
        }
        while ci < covered.len() && covered[ci].1 <= m.start() {
            ci += 1;
        }
        if covered.get(ci).is_some_and(|&(a, b)| a <= m.start() && m.start() < b) {
            out.inner.push(code);
        } else if code.subject <= 7 {
            // RFC 3463 defines subjects 0–7; anything else in prose is a version number.
            out.loose.push(code);
            out.codes_at.push((m.start(), code));
        }
    }
    out.codes_at.sort_by_key(|(at, _)| *at);
    out
}

/// The code a rejection phrase at byte `at` belongs to: the last code written before it on
/// the line, else the first after it.
pub(crate) fn code_for(codes_at: &[(usize, StatusCode)], at: usize) -> Option<StatusCode> {
    codes_at.iter().rev().find(|(p, _)| *p <= at).or(codes_at.first()).map(|(_, c)| *c)
}

/// Fields of one message/delivery-status part (RFC 3464 §2): the Status of each recipient,
/// and its Diagnostic-Code as an NDR line.
#[derive(Debug, Default)]
pub(crate) struct DsScan {
    pub ndr: Vec<NdrLine>,
    pub statuses: Vec<StatusCode>,
    pub inner: Vec<StatusCode>,
}

pub(crate) fn scan_delivery_status(text: &str) -> DsScan {
    let mut out = DsScan::default();
    // Per-recipient blocks are separated by blank lines; fields may be folded (RFC 5322 §2.2.3).
    for block in blocks(text) {
        let mut status: Option<StatusCode> = None;
        let mut diags: Vec<String> = Vec::new();
        for (name, value) in block {
            if name.eq_ignore_ascii_case("status") {
                if let Some(code) = parse_code(value.trim_start()) {
                    status.get_or_insert(code);
                    out.statuses.push(code);
                }
            } else if name.eq_ignore_ascii_case("diagnostic-code") {
                // `smtp; 550 5.7.511 ...`: drop the diagnostic type (RFC 3464 §2.3.6).
                let v = value.split_once(';').map_or(value.as_str(), |(_, v)| v);
                diags.push(super::text::fold_ws(v));
            }
        }
        for d in diags {
            let scan = scan_line(&d, PartKind::DeliveryStatus);
            out.inner.extend(scan.inner);
            if !scan.ndr.is_empty() {
                out.inner.extend(scan.loose);
                out.ndr.extend(scan.ndr);
                continue;
            }
            // No basic reply code: the line starts at its enhanced code, or it is the text
            // the Status field describes.
            if let Some(m) = CODE.find_iter(&d).find(|m| stands_alone(&d, m.start(), m.end())) {
                if let Some(code) = parse_code(&d[m.start()..]) {
                    out.ndr.push(NdrLine { text: tidy(&d[m.start()..]), reply_code: None, status_code: code, found_in: PartKind::DeliveryStatus });
                    continue;
                }
            }
            if let (Some(code), false) = (status, d.is_empty()) {
                let reply = d.get(..3).and_then(|r| r.parse::<u16>().ok()).filter(|r| (200..600).contains(r) && d.as_bytes().get(3).is_none_or(|b| *b == b' ' || *b == b'-'));
                out.ndr.push(NdrLine { text: tidy(&d), reply_code: reply, status_code: code, found_in: PartKind::DeliveryStatus });
            }
        }
    }
    out
}

/// Split a delivery-status body into blocks of unfolded `(name, value)` fields, keeping only
/// the fields we read (Status, Diagnostic-Code).
fn blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    let mut keep_folding = false;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            keep_folding = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let (true, Some((_, v))) = (keep_folding, cur.last_mut()) {
                if v.len() < 16 * 1024 {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        keep_folding = false;
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("status") || name.eq_ignore_ascii_case("diagnostic-code") {
                cur.push((name.to_string(), value.trim().to_string()));
                keep_folding = true;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(line: &str) -> Vec<String> {
        scan_line(line, PartKind::Body).ndr.into_iter().map(|n| n.text).collect()
    }

    #[test]
    fn ndr_line_starts_at_the_reply_code() {
        let s = scan_line("<u@example.net>: host mx.example.net[198.51.100.9] said: 550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal (in reply to RCPT TO command)", PartKind::Body);
        assert_eq!(s.ndr.len(), 1);
        assert_eq!(s.ndr[0].text, "550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal");
        assert_eq!(s.ndr[0].reply_code, Some(550));
        assert_eq!(s.ndr[0].status_code, StatusCode::BANNED_SENDER);
        assert!(s.loose.is_empty());
    }

    #[test]
    fn exchange_quotes_are_trimmed() {
        assert_eq!(
            texts("Remote Server returned '550 5.7.511 Access denied, banned sender[203.0.113.7]. [AM5EUR02FT012.eop-EUR02.prod.protection.outlook.com]'"),
            vec!["550 5.7.511 Access denied, banned sender[203.0.113.7]. [AM5EUR02FT012.eop-EUR02.prod.protection.outlook.com]"]
        );
    }

    #[test]
    fn sendmail_and_exchange_2007_decorations_are_trimmed() {
        assert_eq!(texts("(reason: 550 5.1.1 <u@example.org>... User Unknown) (expanded from: <b@example.org>)"), vec!["550 5.1.1 <u@example.org>... User Unknown"]);
        assert_eq!(texts("#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##rfc822;u@example.org"), vec!["550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"]);
        assert_eq!(texts("550 5.7.1 (a) b"), vec!["550 5.7.1 (a) b"]);
    }

    #[test]
    fn ranges_read_as_their_first_number() {
        let s = scan_line("550 5.7.606-649 Access denied, banned sending IP [203.0.113.7]", PartKind::Body);
        assert_eq!(s.ndr[0].status_code, StatusCode::new(5, 7, 606));
        assert_eq!(s.ndr[0].text, "550 5.7.606-649 Access denied, banned sending IP [203.0.113.7]");
        assert_eq!(parse_code("5.7.606-649"), Some(StatusCode::new(5, 7, 606)));
    }

    #[test]
    fn class_must_match_reply_code_and_ips_are_not_codes() {
        assert!(texts("550 4.7.1 odd").is_empty());
        let s = scan_line("sent from 203.0.113.7 and 5.7.1.2 and Postfix 3.5.17, code 5.7.511", PartKind::Body);
        assert!(s.ndr.is_empty());
        assert_eq!(s.loose, vec![StatusCode::BANNED_SENDER]);
        assert!(scan_line("version 2.10.5", PartKind::Body).loose.is_empty());
    }

    #[test]
    fn two_replies_on_one_line_are_two_ndr_lines() {
        assert_eq!(texts("<<< 550 5.7.511 banned 554 5.0.0 Service unavailable"), vec!["550 5.7.511 banned", "554 5.0.0 Service unavailable"]);
    }

    #[test]
    fn multiline_reply_on_one_line_is_one_ndr_line() {
        assert_eq!(
            texts("smtp; 550-5.7.1 [203.0.113.7] The IP is not 550-5.7.1 authorized to send 550 5.7.1 directly."),
            vec!["550 5.7.1 [203.0.113.7] The IP is not authorized to send directly."]
        );
    }

    #[test]
    fn codes_inside_an_ndr_line_are_inner() {
        let s = scan_line("550 5.7.606-649 Access denied, banned sending IP [x] (ex. 5.7.511 Access denied)", PartKind::Body);
        assert_eq!(s.inner, vec![StatusCode::BANNED_SENDER]);
        assert!(s.loose.is_empty());
    }

    #[test]
    fn delivery_status_fields() {
        let ds = "Reporting-MTA: dns; mail.example.com\n\nFinal-Recipient: rfc822; u@example.net\nAction: failed\nStatus: 5.7.511\nRemote-MTA: dns; mx.example.net [198.51.100.9]\nDiagnostic-Code: smtp; 550 5.7.511 Access denied, banned\n sender[203.0.113.7]. To request removal\n\nFinal-Recipient: rfc822; v@example.net\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 User unknown\n\nFinal-Recipient: rfc822; w@example.net\nStatus: 4.4.1\nDiagnostic-Code: X-Postfix; 4.4.1 connect timed out\n";
        let s = scan_delivery_status(ds);
        assert_eq!(s.statuses, vec![StatusCode::BANNED_SENDER, StatusCode::new(5, 1, 1), StatusCode::new(4, 4, 1)]);
        let t: Vec<(&str, Option<u16>)> = s.ndr.iter().map(|n| (n.text.as_str(), n.reply_code)).collect();
        assert_eq!(
            t,
            vec![
                ("550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal", Some(550)),
                ("550 User unknown", Some(550)),
                ("4.4.1 connect timed out", None)
            ]
        );
        assert_eq!(s.ndr[1].status_code, StatusCode::new(5, 1, 1));
    }
}
