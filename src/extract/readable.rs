//! A message's decoded text for staff to read: the text parts as text, HTML parts converted
//! to text (never rendered), attachments listed by name. Bounded, so a hostile message
//! cannot make a case page huge.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// At most this much text per message is shown.
const MAX_TEXT: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText {
    pub text: String,
    pub attachments: Vec<String>,
}

/// Decode `raw`: the first text body (HTML converted when there is no plain text), and the
/// names of the attachments.
pub fn decode(raw: &[u8]) -> MessageText {
    // The store decodes every message it records (for search), hostile ones too, with the
    // extractor's defences (extract::mime): bare CRs made CRLF, no more structure lines than
    // the parser can take in bounded time (it builds every part first: a million parts
    // would cost minutes), and a parser panic caught (fuzzing found some).
    let normalized;
    let raw = if super::mime::has_bare_cr(raw) {
        normalized = super::mime::normalize_cr(raw);
        normalized.as_slice()
    } else {
        raw
    };
    let parse_input = &raw[..super::mime::structure_cut(raw).unwrap_or(raw.len())];
    match std::panic::catch_unwind(|| decode_parsed(parse_input)) {
        Ok(t) => t,
        // Show the bytes as text, which is what they are to a person.
        Err(_) => MessageText { text: clip(String::from_utf8_lossy(raw).into_owned()), attachments: Vec::new() },
    }
}

fn decode_parsed(raw: &[u8]) -> MessageText {
    let Some(msg) = MessageParser::default().parse(raw) else {
        // Not MIME we can read: show the bytes as text, which is what they are to a person.
        return MessageText { text: clip(String::from_utf8_lossy(raw).into_owned()), attachments: Vec::new() };
    };
    let text = if let Some(t) = msg.body_text(0).filter(|_| !msg.text_body.is_empty()) {
        t.into_owned()
    } else if let Some(h) = msg.body_html(0) {
        crate::extract::html::to_text(&h)
    } else {
        String::new()
    };
    let mut text = text;
    // mail-parser synthesises text from an HTML-only body; make sure no markup survives.
    if msg.text_body.iter().all(|i| msg.html_body.contains(i)) && !msg.html_body.is_empty() {
        if let Some(h) = msg.body_html(0) {
            text = crate::extract::html::to_text(&h);
        }
    }
    let attachments = msg
        .attachments()
        .map(|a| {
            a.attachment_name().map(str::to_string).unwrap_or_else(|| match &a.body {
                PartType::Message(_) => "message/rfc822".into(),
                _ => a
                    .content_type()
                    .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("?")))
                    .unwrap_or_else(|| "attachment".into()),
            })
        })
        .collect();
    MessageText { text: clip(text), attachments }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("\n[… cut: the rest is in the raw message]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bodies_become_text_without_markup() {
        let raw = b"From: a@example.com\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n\
            <p>Please <b>delist</b> 203.0.113.7</p><script>alert(1)</script>";
        let t = decode(raw);
        assert!(t.text.contains("Please delist 203.0.113.7"), "{:?}", t.text);
        assert!(!t.text.contains('<') && !t.text.contains("alert"), "{:?}", t.text);
    }

    #[test]
    fn a_million_parts_decode_in_bounded_time() {
        let mut raw = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for i in 0..1_000_000 {
            raw.extend_from_slice(format!("--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"--b--\r\n");
        let start = std::time::Instant::now();
        let t = decode(&raw);
        assert!(t.text.contains("part 0"), "{:?}", &t.text[..t.text.len().min(100)]);
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
    }

    #[test]
    fn the_fuzzers_finds_do_not_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let raw = std::fs::read(&path).unwrap();
                let t = decode(&raw);
                assert!(t.text.len() <= MAX_TEXT + 100, "{}", path.display());
                n += 1;
            }
        }
        assert!(n > 0, "no regression inputs in {}", dir.display());
    }

    #[test]
    fn plain_text_and_attachments() {
        let raw = b"From: a@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
            hello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=ndr.pdf\r\n\r\n\
            xx\r\n--b--\r\n";
        let t = decode(raw);
        assert_eq!(t.text.trim(), "hello");
        assert_eq!(t.attachments, ["ndr.pdf"]);
    }
}
