//! Run the line scanners over every piece of a message and rank what they found: which NDR
//! line is *the* line, which code the request is about, which IPs come first.

use super::mime::Piece;
use super::text::{for_each_logical_line, LogicalLine};
use super::{ip, ndr, refs, IpFinding, IpSource, NdrLine, PartKind};
use crate::types::{CaseRef, StatusCode};

/// Most NDR lines, codes and IP findings kept (hostile input can carry thousands).
const MAX_NDR: usize = 32;
const MAX_CODES: usize = 32;
const MAX_IPS: usize = 32;
/// Most of the sender's own text kept for language detection, in bytes (it reads 2 KiB).
const MAX_OWN_TEXT: usize = 4 * 1024;

/// What the scanners found, ranked.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    pub ndr_lines: Vec<NdrLine>,
    pub status_code: Option<StatusCode>,
    pub other_codes: Vec<StatusCode>,
    pub ips: Vec<IpFinding>,
    /// The sender's own words (quotes, forwards and NDR lines removed), for the language.
    pub own_text: String,
    /// Valid public addresses anywhere in the sender's own new text.
    pub own_ips: Vec<std::net::IpAddr>,
    /// The first of our cases the quoted text names: the message quotes our reply.
    pub quoted_case: Option<CaseRef>,
}

/// Where a finding was seen; lower is more trusted. A delivery-status Diagnostic-Code is
/// exactly what the server said; a pasted or attached report next; quoted text, the subject
/// and the raw fallback last.
fn source_rank(kind: PartKind, quoted: bool) -> u8 {
    match (kind, quoted) {
        (PartKind::DeliveryStatus, _) => 0,
        (PartKind::AttachedMessage, _) => 1,
        (PartKind::Body, false) => 2,
        (PartKind::Body, true) => 3,
        (PartKind::Subject, _) => 4,
        (PartKind::RawFallback, _) => 5,
    }
}

/// 5.7.511 (what this desk opens cases for) ranks first, then the provider's other codes
/// (the portal range, tenant blocks), then any other 5.7.x rejection, then the rest.
fn code_rank(c: StatusCode) -> u8 {
    if c == StatusCode::BANNED_SENDER {
        0
    } else if c.is_5_7_in(606, 649) || c.is_5_7_in(700, 750) {
        1
    } else if c.class == 5 && c.subject == 7 {
        2
    } else {
        3
    }
}

/// Header fields whose addresses are transport facts, never a stated banned IP.
fn is_trace_field(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "received", "received-spf", "authentication-results", "dkim-signature", "domainkey-signature", "return-path",
        "message-id", "remote-mta", "reporting-mta", "received-from-mta", "delivered-to", "from", "to", "cc", "bcc",
        "date", "reply-to", "sender", "mime-version", "references", "in-reply-to", "subject", "diagnostic-code",
        "final-recipient", "original-recipient", "action", "status", "thread-topic", "thread-index",
    ];
    const PREFIX: &[&str] = &["x-", "arc-", "list-", "content-", "resent-"];
    EXACT.iter().any(|e| e.eq_ignore_ascii_case(name))
        || PREFIX.iter().any(|p| name.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)))
}

#[derive(Default)]
struct Acc {
    /// (source rank, sequence, line, found in quoted text)
    ndr: Vec<(u8, usize, NdrLine, bool)>,
    typed: Vec<StatusCode>,
    ds_status: Vec<StatusCode>,
    /// (code, found in quoted text)
    mentioned: Vec<(StatusCode, bool)>,
    /// (source rank, sequence, finding, found in quoted text)
    rejection: Vec<(u8, usize, IpFinding, bool)>,
    stated: Vec<IpFinding>,
    /// Any address in the sender's own new text, phrase or not (only in a reply to us,
    /// where it may answer our question; elsewhere a bare number proves nothing).
    bare: Vec<IpFinding>,
    collect_bare: bool,
    own_text: String,
    raw_own_text: String,
    /// The first of our cases that quoted text names: the message quotes our reply.
    quoted_case: Option<CaseRef>,
    seq: usize,
}

impl Acc {
    fn add_ndr(&mut self, rank: u8, line: NdrLine, quoted: bool) {
        if self.ndr.len() < MAX_NDR * 4 {
            self.seq += 1;
            self.ndr.push((rank, self.seq, line, quoted));
        }
    }

    /// Rejection IPs of one line, each with the code written before its phrase; true when
    /// the line has a rejection phrase.
    fn add_rejection(&mut self, rank: u8, text: &str, codes_at: &[(usize, StatusCode)], quoted: bool) -> bool {
        let mut v = Vec::new();
        let any = ip::rejection_ips(text, &mut v);
        for (at, mut f) in v {
            f.code = ndr::code_for(codes_at, at);
            if self.rejection.len() < MAX_IPS * 4 {
                self.seq += 1;
                self.rejection.push((rank, self.seq, f, quoted));
            }
        }
        any
    }

    /// One logical line of a piece; `rejections` says whether the piece may hold a
    /// rejection phrase at all (tested once per piece, it spares most lines the regex).
    fn line(&mut self, kind: PartKind, l: &LogicalLine<'_>, rejections: bool) {
        let rank = source_rank(kind, l.quoted);
        // What the sender quotes or forwards below an "On … wrote:" line or a header block.
        let quoted = kind == PartKind::Body && (l.quoted || !l.own);
        if quoted && self.quoted_case.is_none() {
            self.quoted_case = refs::case_in_text(l.text);
        }
        let s = ndr::scan_line(l.text, kind);
        for n in s.ndr {
            self.add_ndr(rank, n, quoted);
        }
        let own = l.own && matches!(kind, PartKind::Body | PartKind::Subject | PartKind::RawFallback);
        if own && kind != PartKind::RawFallback {
            self.typed.extend(s.loose);
        } else {
            self.mentioned.extend(s.loose.into_iter().map(|c| (c, quoted)));
        }
        self.mentioned.extend(s.inner.into_iter().map(|c| (c, quoted)));
        let has_rejection = rejections && self.add_rejection(rank, l.text, &s.codes_at, quoted);
        let trace = l.field.is_some_and(is_trace_field);
        if own && !trace {
            // Language from the sender's words: what precedes any NDR text on the line (the
            // NDR is the server's text, usually English).
            let words = match s.first_ndr_at {
                Some(at) => &l.text[..at],
                None if has_rejection => "",
                None => l.text,
            };
            // A sender may type their IP after a pasted NDR on the same line; NDR text itself
            // rarely says "IP" before an address that is not the sender's.
            if self.stated.len() < MAX_IPS * 4 {
                ip::stated_ips(l.text, &mut self.stated);
            }
            if self.collect_bare && kind != PartKind::RawFallback && self.bare.len() < MAX_IPS {
                ip::any_ips(l.text, &mut self.bare);
            }
            let buf = if kind == PartKind::RawFallback { &mut self.raw_own_text } else { &mut self.own_text };
            if buf.len() + words.len() < MAX_OWN_TEXT {
                buf.push_str(words);
                buf.push('\n');
            }
        }
    }
}

/// NDR text compared without the multi-line hyphen (`550-5.7.1` and `550 5.7.1` are one reply).
fn dedupe_key(text: &str) -> String {
    let b = text.as_bytes();
    if b.len() > 3 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b'-' {
        format!("{} {}", &text[..3], &text[4..])
    } else {
        text.to_string()
    }
}

fn cap_push<T: PartialEq>(v: &mut Vec<T>, x: T, max: usize) {
    if v.len() < max && !v.contains(&x) {
        v.push(x);
    }
}

/// More addresses than this stated in prose is a pasted list ("please whitelist: …"), not
/// a sender naming its own servers: none of them is taken.
const MAX_CLAIMED: usize = 8;

/// Scan the pieces of a message (in walk order) and its subject. `replies_to_us`: the
/// message answers one of our replies (its thread fields say so); what it quotes is then
/// our own text, never new evidence. Quoted text that names one of our cases means the same.
pub(crate) fn scan(pieces: &[Piece], subject: Option<&str>, replies_to_us: bool) -> Scanned {
    let mut acc = Acc { collect_bare: replies_to_us, ..Acc::default() };
    for p in pieces {
        if p.kind == PartKind::DeliveryStatus {
            let ds = ndr::scan_delivery_status(&p.text);
            for n in ds.ndr {
                acc.add_rejection(0, &n.text, &[(0, n.status_code)], false);
                acc.add_ndr(0, n, false);
            }
            acc.ds_status.extend(ds.statuses);
            acc.mentioned.extend(ds.inner.into_iter().map(|c| (c, false)));
            continue;
        }
        let normalized = super::forms::normalize(&p.text);
        let rejections = ip::may_hold_rejection(&normalized);
        for_each_logical_line(&normalized, p.flowed, |l| acc.line(p.kind, l, rejections));
    }
    if let Some(s) = subject {
        let folded = super::text::fold_ws(&super::forms::normalize(s));
        let l = LogicalLine { text: &folded, quoted: false, own: true, field: None };
        acc.line(PartKind::Subject, &l, true);
    }

    let mut out = Scanned { quoted_case: acc.quoted_case, ..Scanned::default() };
    let drop_quoted = replies_to_us || acc.quoted_case.is_some();
    if drop_quoted {
        acc.ndr.retain(|e| !e.3);
        acc.rejection.retain(|e| !e.3);
        acc.mentioned.retain(|e| !e.1);
    }

    // NDR lines: best code first, then most trusted source, then first seen; the same line
    // seen twice (pasted and in the attachment) is kept once.
    // When one copy is cut short (Sendmail puts only the first line of a multi-line reply in
    // Diagnostic-Code), the longer copy takes the place of the shorter.
    acc.ndr.sort_by_key(|(rank, seq, n, _)| (code_rank(n.status_code), *rank, *seq));
    for (_, _, n, _) in acc.ndr {
        let key = dedupe_key(&n.text);
        let same_code = |k: &NdrLine| k.status_code == n.status_code;
        if out.ndr_lines.iter().any(|k| same_code(k) && dedupe_key(&k.text).contains(key.as_str())) {
            continue;
        }
        if let Some(k) = out.ndr_lines.iter_mut().find(|k| same_code(k) && key.contains(dedupe_key(&k.text).as_str())) {
            *k = n;
        } else if out.ndr_lines.len() < MAX_NDR {
            out.ndr_lines.push(n);
        }
    }

    // The code: the best NDR line's, else one the sender typed, else a delivery-status Status,
    // else one mentioned elsewhere; within each, the provider's codes and 5.7.x first.
    let mentioned: Vec<StatusCode> = acc.mentioned.iter().map(|(c, _)| *c).collect();
    let pick = |v: &[StatusCode]| v.iter().enumerate().min_by_key(|(i, c)| (code_rank(**c), *i)).map(|(_, c)| *c);
    out.status_code = out
        .ndr_lines
        .first()
        .map(|n| n.status_code)
        .or_else(|| pick(&acc.typed))
        .or_else(|| pick(&acc.ds_status))
        .or_else(|| pick(&mentioned));
    let all = out.ndr_lines.iter().map(|n| n.status_code).chain(acc.typed).chain(acc.ds_status).chain(mentioned);
    for c in all {
        if Some(c) != out.status_code {
            cap_push(&mut out.other_codes, c, MAX_CODES);
        }
    }

    // IPs: those a rejection names first (most trusted source first); what the sender states
    // only when no rejection names a usable one, since the NDR is the evidence the desk needs.
    acc.rejection.sort_by_key(|(rank, seq, _, _)| (*rank, *seq));
    let same = |a: &IpFinding, b: &IpFinding| match (a.ip, b.ip) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.text == b.text,
        _ => false,
    };
    for (_, _, f, _) in acc.rejection {
        if out.ips.len() < MAX_IPS && !out.ips.iter().any(|k| same(k, &f)) {
            out.ips.push(f);
        }
    }
    let has_valid_rejection = out.ips.iter().any(|f| f.source == IpSource::Rejection && f.ip.is_some() && f.problem.is_none());
    let mut claimed: Vec<IpFinding> = Vec::new();
    for f in acc.stated {
        if !claimed.iter().any(|k| same(k, &f)) {
            claimed.push(f);
        }
    }
    if !has_valid_rejection && claimed.len() <= MAX_CLAIMED {
        for f in claimed {
            if out.ips.len() < MAX_IPS && !out.ips.iter().any(|k| same(k, &f)) {
                out.ips.push(f);
            }
        }
    }
    for f in acc.bare {
        if let (Some(ip), None) = (f.ip, f.problem) {
            if out.own_ips.len() < MAX_CLAIMED && !out.own_ips.contains(&ip) {
                out.own_ips.push(ip);
            }
        }
    }

    out.own_text = if acc.own_text.trim().is_empty() { acc.raw_own_text } else { acc.own_text };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Piece {
        Piece { kind: PartKind::Body, text: text.into(), flowed: false }
    }

    #[test]
    fn provider_code_line_wins_over_other_codes() {
        let s = scan(&[body("554 5.0.0 Service unavailable\n\n550 5.7.511 Access denied, banned sender[203.0.113.7].\n")], None, false);
        assert_eq!(s.status_code, Some(StatusCode::BANNED_SENDER));
        assert_eq!(s.ndr_lines[0].text, "550 5.7.511 Access denied, banned sender[203.0.113.7].");
        assert_eq!(s.other_codes, vec![StatusCode::new(5, 0, 0)]);
        assert_eq!(s.ips.len(), 1);
    }

    #[test]
    fn longer_copy_of_a_cut_reply_wins() {
        let ds = Piece { kind: PartKind::DeliveryStatus, text: "Status: 5.7.1\nDiagnostic-Code: SMTP; 550-5.7.1 Unauthenticated email\n".into(), flowed: false };
        let s = scan(&[body("<<< 550-5.7.1 Unauthenticated email\n<<< 550 5.7.1 DMARC policy.\n"), ds], None, false);
        assert_eq!(s.ndr_lines.len(), 1);
        assert_eq!(s.ndr_lines[0].text, "550 5.7.1 Unauthenticated email DMARC policy.");
    }

    #[test]
    fn typed_code_then_delivery_status() {
        let s = scan(&[body("We got error 5.7.511, our IP is 203.0.113.7")], None, false);
        assert_eq!(s.status_code, Some(StatusCode::BANNED_SENDER));
        assert!(s.ndr_lines.is_empty());
        assert_eq!(s.ips[0].source, IpSource::Stated);
        let ds = Piece { kind: PartKind::DeliveryStatus, text: "Status: 5.1.1\n".into(), flowed: false };
        let s = scan(&[body("hello"), ds], None, false);
        assert_eq!(s.status_code, Some(StatusCode::new(5, 1, 1)));
    }

    #[test]
    fn stated_ips_only_without_a_valid_rejection_ip() {
        let s = scan(&[body("our IP is 198.51.100.5\n\n550 5.7.511 Access denied, banned sender[203.0.113.7]. x")], None, false);
        assert_eq!(s.ips.iter().map(|f| f.text.as_str()).collect::<Vec<_>>(), vec!["203.0.113.7"]);
        let s = scan(&[body("our IP is 198.51.100.5\n\n550 5.7.511 Access denied, banned sender[xxx.xxx.xxx.xxx]. x")], None, false);
        assert_eq!(s.ips.iter().map(|f| f.text.as_str()).collect::<Vec<_>>(), vec!["xxx.xxx.xxx.xxx", "198.51.100.5"]);
    }

    #[test]
    fn quoted_headers_and_forwarded_text_give_no_stated_ips() {
        let s = scan(&[body("Received: from a (a [203.0.113.50])\nAuthentication-Results: spf=pass (sender IP is 203.0.113.51)\n\n---------- Forwarded message ---------\nour IP is 203.0.113.52\n")], None, false);
        assert!(s.ips.is_empty(), "{:?}", s.ips);
    }

    #[test]
    fn own_text_excludes_the_ndr() {
        let s = scan(&[body("Bonjour, voici l'erreur : 550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal from this list\n\n> quoted\n")], None, false);
        assert_eq!(s.own_text, "Bonjour, voici l'erreur : \n");
    }

    #[test]
    fn subject_counts_as_typed() {
        let s = scan(&[], Some("Delist 5.7.511 IP 203.0.113.7"), false);
        assert_eq!(s.status_code, Some(StatusCode::BANNED_SENDER));
        assert_eq!(s.ips.len(), 1);
    }
}
