//! Plain text → logical lines: undo the line wrapping that MTAs and mail clients add, strip
//! quote markers, and tell the sender's own words apart from what they quote or forward.
//!
//! Every scanner works on logical lines, so an NDR line wrapped by Postfix, a multi-line SMTP
//! reply, or a paragraph wrapped at 72 columns is seen as the one line it was written as.

use std::sync::LazyLock;

use regex::Regex;

/// Longest logical line we build; longer runs are cut into several lines (bounds the work of
/// every scanner on hostile input such as one 1 MB line).
const MAX_LOGICAL: usize = 8 * 1024;

/// A line as the writer meant it, whitespace folded to single spaces. Borrowed: the
/// scanners look at each line once, so line text is built in one reused buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogicalLine<'a> {
    pub text: &'a str,
    /// Written behind `>` quote markers.
    pub quoted: bool,
    /// The sender's own words: not quoted and before any forward/reply marker.
    pub own: bool,
    /// The field name, as written, when the line reads like a header field (`Received: ...`).
    pub field: Option<&'a str>,
}

/// Collapse every run of whitespace (and control characters such as NUL) into one space and trim.
pub(crate) fn fold_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_folded(&mut out, s);
    out
}

/// Append `s` to `out` with whitespace folded, one space between `out`'s text and `s`'s.
/// Works on runs of ordinary bytes, decoding characters only around non-ASCII bytes.
fn push_folded(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let mut pending = !out.is_empty();
    let mut run = 0; // start of the current run of text to copy
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let (is_space, len) = if c < 0x80 {
            // A single space between two words stays inside the run being copied.
            let lone_space = c == b' ' && i > run && b.get(i + 1).is_some_and(|n| *n > b' ' && *n != 0x7f);
            (!lone_space && (c <= b' ' || c == 0x7f), 1)
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            (ch.is_whitespace() || ch.is_control(), ch.len_utf8())
        };
        if is_space {
            if run < i {
                if pending && !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&s[run..i]);
                pending = false;
            }
            pending = pending || !out.is_empty();
            run = i + len;
        }
        i += len;
    }
    if run < b.len() {
        if pending && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&s[run..]);
    }
}

/// One physical line, quote markers removed.
struct Phys<'a> {
    /// The text after the indentation.
    body: &'a str,
    indent: usize,
    quoted: bool,
}

impl Phys<'_> {
    /// Width in characters including indentation (the wrap heuristic needs it).
    fn width(&self) -> usize {
        self.indent + if self.body.is_ascii() { self.body.len() } else { self.body.chars().count() }
    }
}

fn physical(line: &str) -> Phys<'_> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut rest = line;
    let mut quoted = false;
    // `> > text`: any number of markers, each optionally followed by one space.
    loop {
        let t = rest.trim_start_matches([' ', '\t']);
        if let Some(r) = t.strip_prefix('>') {
            quoted = true;
            rest = r.strip_prefix(' ').unwrap_or(r);
        } else {
            break;
        }
    }
    let body = rest.trim_start_matches([' ', '\t', '\u{a0}', '\u{3000}']);
    let indent = rest.len() - body.len();
    Phys { body: body.trim_end_matches(['\r', '\n']), indent, quoted }
}

/// `Name: value` with a header-syntax name (RFC 5322 §2.2: printable, no spaces).
fn field_name(body: &str) -> Option<&str> {
    // A field name is short: look for the colon in the first 61 bytes only.
    let b = body.as_bytes();
    let colon = memchr::memchr(b':', &b[..b.len().min(61)])?;
    let name = &body[..colon];
    if name.is_empty() || name.len() > 60 {
        return None;
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    // `https://...` is a URL, not a field.
    match body[colon + 1..].chars().next() {
        None | Some(' ') | Some('\t') => Some(name),
        _ => None,
    }
}

static LABEL: LazyLock<Regex> = LazyLock::new(|| {
    // `Remote system: ...`, `Diagnostic code: ...`: a short label of up to three words.
    Regex::new(r"^[A-Za-z][A-Za-z-]*(?: [A-Za-z][A-Za-z-]*){0,2}: ").expect("static regex")
});

/// Does an indented line start a labelled item rather than continue the previous one?
fn is_label(body: &str) -> bool {
    body.len() < 400 && body.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) && body.contains(": ") && LABEL.is_match(body)
}

static REPLY_START: LazyLock<Regex> = LazyLock::new(|| {
    // A line that starts a new SMTP reply: `550 5.7.1 ...`, `550-5.7.1 ...`, `<<< 550 ...`.
    Regex::new(r"^(?:<<<\s*)?([245][0-9][0-9])([ -])(?:#?([245]\.[0-9]{1,3}\.[0-9]{1,3})\s)?").expect("static regex")
});

static MID_REPLY: LazyLock<Regex> = LazyLock::new(|| {
    // A hyphenated reply anywhere in a line: `... said: 550-5.7.26 `.
    Regex::new(r"(?-u:\b)([245][0-9][0-9])-(?:#?([245]\.[0-9]{1,3}\.[0-9]{1,3})\s)?").expect("static regex")
});

static FORWARD_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^(?:",
        // ---------- Forwarded message ---------, -----Original Message-----, and translations
        r"[-_=*]{2,}\s*(?:forwarded message|original message|message transf[ée]r[ée]|message d['’]origine|",
        r"messaggio inoltrato|messaggio originale|weitergeleitete nachricht|urspr[üu]ngliche nachricht|",
        r"転送メッセージ|元のメッセージ|転送されたメッセージ)",
        r"|_{10,}\s*$",
        r"|begin forwarded message|d[ée]but du message (?:r[ée]exp[ée]di[ée]|transf[ée]r[ée])|inizio messaggio inoltrato",
        r"|anfang der weitergeleiteten nachricht",
        r")"
    ))
    .expect("static regex")
});

static WROTE_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    // "On Mon, ... Alice <a@example.com> wrote:" and its translations.
    Regex::new(r"(?i)(?:(?-u:\b)wrote|a [ée]crit|ha scritto|schrieb|書きました|のメッセージ)\s*[:：]?\s*$").expect("static regex")
});

static HEADER_BLOCK_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:from|de|da|von|差出人)\s?[:：]").expect("static regex"));

static HEADER_BLOCK_NEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:sent|date|to|subject|envoy[ée]|objet|[àa]|inviato|data|oggetto|gesendet|datum|an|betreff|送信日時|宛先|件名)\s?[:：]")
        .expect("static regex")
});

/// Does this line start what the sender forwards or quotes (so their own words end here)?
fn is_forward_marker(line: &Phys<'_>, ahead: &std::collections::VecDeque<Phys<'_>>) -> bool {
    let body = line.body;
    // Byte tests first: most lines cannot be markers, and regexes cost more than a glance.
    let first = body.as_bytes().first().copied().unwrap_or(b' ').to_ascii_lowercase();
    if matches!(first, b'-' | b'_' | b'=' | b'*' | b'b' | b'd' | b'i' | b'a' | 0xe8) && FORWARD_MARKER.is_match(body) {
        return true;
    }
    // "... wrote:" lines are short; a long line ending in "wrote:" is prose.
    if body.len() < 300
        && (body.ends_with([':', '：', 'e', 'E', 'ジ', 't', 'T', 'b', 'B', 'o', 'O']))
        && WROTE_MARKER.is_match(body)
        && (body.contains('@') || body.bytes().any(|c| c.is_ascii_digit()))
    {
        return true;
    }
    // An Outlook-style "From: / Sent: / To: / Subject:" block.
    if matches!(first, b'f' | b'd' | b'v' | 0xe5) && HEADER_BLOCK_START.is_match(body) {
        return ahead.iter().take(3).any(|l| HEADER_BLOCK_NEXT.is_match(l.body));
    }
    false
}

fn first_word_width(body: &str) -> usize {
    body.split_whitespace().next().map_or(0, |w| w.chars().count())
}

/// Multi-line SMTP replies (RFC 5321 §4.2.1): `550-5.7.1 text` continued by `550 5.7.1 text`.
/// The head may sit mid-line (`Remote host said: 550-5.7.26 ...`, qmail). Returns the length
/// of the repeated prefix to drop from `next` and the head to un-hyphenate, when `next`
/// continues `prev`.
fn multiline_continuation(prev: &str, next: &str) -> Option<(usize, String)> {
    // Byte test first: `550-`, `550 ` or `<<< 550-` (a Sendmail transcript).
    let b = next.strip_prefix("<<<").map_or(next, str::trim_start).as_bytes();
    if b.len() < 4 || !(b[3] == b'-' || b[3] == b' ') || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = REPLY_START.captures(next)?;
    let reply = n.get(1)?.as_str();
    let p = MID_REPLY.captures_iter(prev).filter(|c| c.get(1).is_some_and(|r| r.as_str() == reply)).last()?;
    let same_code = match (p.get(2), n.get(3)) {
        (Some(a), Some(b)) => a.as_str() == b.as_str(),
        (None, None) => true,
        _ => false,
    };
    if !same_code {
        return None;
    }
    let head = p.get(0)?.as_str().trim_end().to_string();
    Some((n.get(0)?.end(), head))
}

/// A multi-line reply joined into one line reads as one reply: `550-5.7.1` → `550 5.7.1`.
fn unhyphen_head(buf: &mut String, head: &str) {
    if let Some(at) = buf.find(head) {
        buf.replace_range(at + 3..at + 4, " ");
    }
}

/// Should physical line `next` be joined to the logical line that `prev` ends?
fn continues(prev: &Phys<'_>, next: &Phys<'_>, next_ends_paragraph: bool, flowed: bool) -> bool {
    if next.body.is_empty() || prev.body.is_empty() || prev.quoted != next.quoted {
        return false;
    }
    if next.body.starts_with(|c: char| c.is_ascii_digit() || c == '<') && REPLY_START.is_match(next.body) {
        return false; // a new reply starts (multi-line replies are handled by the caller)
    }
    let next_is_field = field_name(next.body).is_some();
    // RFC 3676 §4.2: in format=flowed text a line ending in a space is soft-broken.
    if flowed && prev.body.ends_with(' ') && prev.body != "-- " {
        return true;
    }
    // Indented continuation: Postfix and Exim indent wrapped lines; header folding too
    // (RFC 5322 §2.2.3).
    // A labelled item (`Remote system: ...`) starts a new line, unless the line before
    // announced it with a colon.
    if next.indent > 0
        && next.indent >= prev.indent
        && !next_is_field
        && (prev.body.ends_with(':') || !is_label(next.body))
    {
        return true;
    }
    // Greedy wrapping at a usual width (72–80 columns): the line is full, and the next word
    // would not have fit on it.
    let marker = next.body.starts_with(['-', '*', '•', '>']) || is_numbered_item(next.body);
    if next.indent == 0
        && !next_is_field
        && !marker
        && (40..=80).contains(&prev.width())
        && prev.width() + 1 + first_word_width(next.body) > 72
        && !prev.body.ends_with(':')
        && !is_closing_line(prev, next, next_ends_paragraph)
    {
        return true;
    }
    false
}

/// `1. text`, `2) text`: an item of a numbered list starts a line of its own.
fn is_numbered_item(body: &str) -> bool {
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    (1..=3).contains(&digits) && matches!(body.as_bytes().get(digits..digits + 2), Some([b'.' | b')', b' ']))
}

/// A short last line after a finished sentence ("Thanks", "Regards, Alice") is a line of its
/// own even when the sentence before it filled the line.
fn is_closing_line(prev: &Phys<'_>, next: &Phys<'_>, next_ends_paragraph: bool) -> bool {
    next_ends_paragraph
        && prev.body.ends_with(['.', '!', '?'])
        && next.body.chars().count() < 25
        && next.body.chars().next().is_some_and(char::is_uppercase)
}

/// Split text into logical lines. `flowed` is true for `format=flowed` parts.
/// Owned copy of a logical line, for tests.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedLine {
    pub text: String,
    pub quoted: bool,
    pub own: bool,
    pub field: Option<String>,
}

#[cfg(test)]
pub(crate) fn logical_lines(text: &str, flowed: bool) -> Vec<OwnedLine> {
    let mut out = Vec::new();
    for_each_logical_line(text, flowed, |l| {
        out.push(OwnedLine { text: l.text.to_string(), quoted: l.quoted, own: l.own, field: l.field.map(str::to_string) })
    });
    out
}

/// Split text into logical lines, handing each to `f` as soon as it is complete: memory
/// stays bounded by one line and a few lines of look-ahead, whatever the size of the text.
pub(crate) fn for_each_logical_line<'t>(text: &'t str, flowed: bool, mut f: impl FnMut(&LogicalLine<'_>)) {
    let mut lines = split_lines(text);
    // The current line, the one before it, and up to three after it (forward markers look
    // ahead for an Outlook header block).
    let mut ahead: std::collections::VecDeque<Phys<'t>> = lines.by_ref().take(4).collect();
    let mut prev: Option<Phys<'t>> = None;
    let mut own_region = true;
    // The logical line being built: folded text, quoted, field name, own.
    let mut buf = String::new();
    // A physical line lent as the whole logical line, while nothing has been joined to it.
    let mut lent: Option<&'t str> = None;
    let mut cur: Option<(bool, Option<&'t str>, bool)> = None;
    while let Some(line) = ahead.pop_front() {
        if let Some(next) = lines.next() {
            ahead.push_back(next);
        }
        if own_region && !line.quoted && is_forward_marker(&line, &ahead) {
            own_region = false;
        }
        let joined = match (&cur, &prev) {
            (Some(_), Some(prev)) if buf.len() < MAX_LOGICAL => {
                let mut take_lent = |buf: &mut String| {
                    if let Some(l) = lent.take() {
                        buf.push_str(l);
                    }
                };
                if let Some((skip, head)) = multiline_continuation(prev.body, line.body).filter(|_| prev.quoted == line.quoted) {
                    take_lent(&mut buf);
                    unhyphen_head(&mut buf, &head);
                    push_folded(&mut buf, line.body.get(skip..).unwrap_or(""));
                    true
                } else if continues(prev, &line, ahead.front().is_none_or(|n| n.body.is_empty()), flowed) {
                    take_lent(&mut buf);
                    push_folded(&mut buf, line.body);
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if !joined {
            emit_line(&buf, lent.take(), cur.take(), &mut f);
            buf.clear();
            if !line.body.is_empty() {
                // Most lines stand alone and are already folded: lend them as they are and
                // copy into the buffer only when a continuation is joined.
                if is_folded(line.body) {
                    lent = Some(line.body);
                } else {
                    push_folded(&mut buf, line.body);
                }
                cur = Some((line.quoted, field_name(line.body), own_region && !line.quoted));
            }
        }
        prev = Some(line);
    }
    emit_line(&buf, lent, cur, &mut f);
}

/// Hand a finished logical line to the scanner: the lent physical line, or the buffer.
fn emit_line(buf: &str, lent: Option<&str>, cur: Option<(bool, Option<&str>, bool)>, f: &mut dyn FnMut(&LogicalLine<'_>)) {
    if let Some((quoted, field, own)) = cur {
        let text = lent.unwrap_or(buf);
        if !text.is_empty() {
            f(&LogicalLine { text, quoted, own, field });
        }
    }
}

/// Already folded: printable ASCII words separated by single spaces, nothing to trim.
fn is_folded(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0] != b' '
        && b[b.len() - 1] != b' '
        && b.iter().zip(b.iter().skip(1)).all(|(&c, &n)| (c > b' ' && c < 0x7f) || (c == b' ' && n != b' '))
        && b[b.len() - 1] < 0x7f
}

/// CRLF, LF and a bare CR (old Mac mail, broken gateways) are each one line break.
fn split_lines(text: &str) -> impl Iterator<Item = Phys<'_>> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start > bytes.len() {
            return None;
        }
        let rest = &bytes[start..];
        match memchr::memchr2(b'\r', b'\n', rest) {
            Some(i) => {
                let line = &text[start..start + i];
                let crlf = rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n');
                start += i + 1 + usize::from(crlf);
                Some(physical(line))
            }
            None => {
                let line = &text[start..];
                start = bytes.len() + 1;
                (!line.is_empty()).then(|| physical(line))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        logical_lines(s, false).into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn folds_whitespace_and_controls() {
        assert_eq!(fold_ws("  a \t b\r\n c\0d  "), "a b c d");
        assert!(is_folded("a b c") && !is_folded("a  b") && !is_folded("a\tb") && !is_folded("a ") && !is_folded("é"));
    }

    #[test]
    fn postfix_indented_wrapping_is_joined() {
        let s = "<u@example.net>: host mx.example.net[198.51.100.9] said: 550\n    5.7.511 Access denied, banned sender[203.0.113.7]. To request\n    removal (in reply to RCPT TO command)\n\nnext";
        assert_eq!(
            texts(s),
            vec![
                "<u@example.net>: host mx.example.net[198.51.100.9] said: 550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal (in reply to RCPT TO command)",
                "next"
            ]
        );
    }

    #[test]
    fn client_wrapping_at_72_is_joined_but_short_lines_are_not() {
        let s = "550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal\nfrom this list, forward this message to delist@messaging.microsoft.com.\nThanks";
        let t = texts(s);
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t[0].ends_with("delist@messaging.microsoft.com."));
        assert_eq!(texts("Hello,\nour IP is 203.0.113.7\nRegards"), vec!["Hello,", "our IP is 203.0.113.7", "Regards"]);
    }

    #[test]
    fn numbered_items_are_not_wrapping() {
        assert_eq!(
            texts("1. Why do I get 550 5.7.511 Access denied, banned sender[203.0.113.7]?\n2. IPv6 reverse DNS."),
            vec!["1. Why do I get 550 5.7.511 Access denied, banned sender[203.0.113.7]?", "2. IPv6 reverse DNS."]
        );
    }

    #[test]
    fn multiline_smtp_reply_drops_repeated_prefix() {
        let s = "550-5.7.1 [203.0.113.7] The IP you are using to send mail is not authorized\n550-5.7.1 to send email directly to our servers.\n550 5.7.1 Please use a relay.";
        assert_eq!(
            texts(s),
            vec!["550 5.7.1 [203.0.113.7] The IP you are using to send mail is not authorized to send email directly to our servers. Please use a relay."]
        );
        let s = "Remote host said: 550-5.7.26 Unauthenticated email\n550-5.7.26 DMARC policy. Please\n550 5.7.26  see https://example.com/x";
        assert_eq!(texts(s), vec!["Remote host said: 550 5.7.26 Unauthenticated email DMARC policy. Please see https://example.com/x"]);
        let s = "<<< 550-5.7.1 Unauthenticated email is not accepted due to domain's\n<<< 550 5.7.1 DMARC policy.\n554 5.0.0 Service unavailable";
        assert_eq!(texts(s), vec!["<<< 550 5.7.1 Unauthenticated email is not accepted due to domain's DMARC policy.", "554 5.0.0 Service unavailable"]);
    }

    #[test]
    fn quoted_and_forwarded_text_is_not_own() {
        let s = "Bonjour,\nnotre IP : 203.0.113.7\n\n> quoted line\n\n---------- Forwarded message ---------\nFrom: Mail Delivery Subsystem\nbody";
        let l = logical_lines(s, false);
        let own: Vec<&str> = l.iter().filter(|l| l.own).map(|l| l.text.as_str()).collect();
        assert_eq!(own, vec!["Bonjour,", "notre IP : 203.0.113.7"]);
        assert!(l.iter().any(|l| l.quoted && l.text == "quoted line"));
    }

    #[test]
    fn header_fields_and_folding_are_recognised() {
        let l = logical_lines("Received: from a.example (a.example\n [203.0.113.50]) by b\nhttps://x.example/ y", false);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].field.as_deref(), Some("Received"));
        assert!(l[0].text.contains("[203.0.113.50]"));
        assert_eq!(l[1].field, None);
    }

    #[test]
    fn crlf_and_bare_cr_are_line_breaks() {
        assert_eq!(texts("a\r\n\r\nb\rc"), vec!["a", "b", "c"]);
    }

    #[test]
    fn flowed_soft_breaks_are_joined() {
        let l = logical_lines("our IP is \n203.0.113.7\n", true);
        assert_eq!(l[0].text, "our IP is 203.0.113.7");
    }
}
