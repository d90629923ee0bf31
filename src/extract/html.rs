//! HTML → plain text for scanning. Not a renderer: it only has to keep words apart where the
//! layout keeps them apart (`</td><td>` must not glue `5.7.511` to the next cell), keep an
//! NDR paragraph on one line, and drop what is never shown (`<head>`, `<style>`, `<script>`).

/// Tags after which a browser starts a new line.
const BREAK_TAGS: &[&str] = &[
    "br", "p", "div", "tr", "li", "ul", "ol", "table", "tbody", "thead", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "hr", "dl", "dt", "dd", "section", "article", "header", "footer", "title", "center",
    "address", "form", "fieldset",
];

/// Tags that separate words without breaking the line.
const SPACE_TAGS: &[&str] = &["td", "th", "img", "input", "button", "select", "option", "label"];

/// Elements whose content is never displayed.
const HIDDEN: &[&str] = &["head", "style", "script", "template", "title"];

/// Convert HTML to text: block tags become line breaks, cells become spaces, other tags
/// vanish, entities are decoded, and whitespace is collapsed except inside `<pre>`.
///
/// One pass, never backtracking, like a browser's tokenizer: a tag left open runs to the
/// end of the input, so hostile input (`<a<a<a...`) costs linear time.
pub(crate) fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut hidden: Option<&'static str> = None;
    let mut in_pre = 0usize;
    let mut pending_space = false;
    let bytes = html.as_bytes();
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' || !starts_tag(bytes.get(i + 1).copied()) {
            i += 1;
            continue;
        }
        if hidden.is_none() {
            let chunk = decode_entities(&html[text_start..i]);
            push_text(&mut out, &chunk, in_pre > 0, &mut pending_space);
        }
        // Comments end at `-->`; tags at the first `>` outside a quoted attribute value.
        let end = if html[i..].starts_with("<!--") {
            html[i + 4..].find("-->").map_or(bytes.len(), |e| i + 4 + e + 3)
        } else {
            let close = tag_close(&bytes[i + 1..]).map_or(bytes.len(), |e| i + 1 + e + 1);
            let (name, closing) = tag_name(&html[i + 1..close.min(bytes.len()).max(i + 1)]);
            match hidden {
                Some(h) => {
                    if closing && name == h {
                        hidden = None;
                    }
                }
                None => {
                    if let Some(h) = HIDDEN.iter().find(|h| **h == name).filter(|_| !closing) {
                        hidden = Some(h);
                    } else {
                        if name == "pre" {
                            in_pre = if closing { in_pre.saturating_sub(1) } else { in_pre + 1 };
                        }
                        if BREAK_TAGS.contains(&name.as_str()) {
                            newline(&mut out);
                            pending_space = false;
                        } else if SPACE_TAGS.contains(&name.as_str()) {
                            pending_space = true;
                        }
                    }
                }
            }
            close
        };
        i = end;
        text_start = end.min(bytes.len());
    }
    if hidden.is_none() && text_start < bytes.len() {
        let chunk = decode_entities(&html[text_start..]);
        push_text(&mut out, &chunk, in_pre > 0, &mut pending_space);
    }
    out.truncate(out.trim_end().len());
    out
}

fn starts_tag(next: Option<u8>) -> bool {
    next.is_some_and(|b| b.is_ascii_alphabetic() || b == b'/' || b == b'!' || b == b'?')
}

/// Offset of the `>` closing a tag whose body starts at `s`, honouring quoted attributes.
fn tag_close(s: &[u8]) -> Option<usize> {
    let mut quote: Option<u8> = None;
    for (i, &b) in s.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Some(i),
            None => {}
        }
    }
    None
}

fn tag_name(inner: &str) -> (String, bool) {
    let inner = inner.trim_start();
    let (closing, inner) = match inner.strip_prefix('/') {
        Some(r) => (true, r.trim_start()),
        None => (false, inner),
    };
    let name: String = inner.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (name.to_ascii_lowercase(), closing)
}

fn newline(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn push_text(out: &mut String, chunk: &str, pre: bool, pending_space: &mut bool) {
    if pre {
        out.push_str(chunk);
        *pending_space = false;
        return;
    }
    for c in chunk.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            *pending_space = true;
            continue;
        }
        if *pending_space && !out.is_empty() && !out.ends_with('\n') && !out.ends_with(' ') {
            out.push(' ');
        }
        *pending_space = false;
        out.push(if c == '\u{a0}' { ' ' } else { c });
    }
}

/// Decode the character references that matter for scanning; unknown ones stay as written.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let semi = rest[1..].find(';').map(|j| j + 1).filter(|j| *j <= 12);
        let decoded = semi.and_then(|j| {
            let name = &rest[1..j];
            let c = if let Some(num) = name.strip_prefix('#') {
                let n = match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => num.parse::<u32>().ok(),
                };
                n.and_then(char::from_u32)
            } else {
                match name {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    "nbsp" => Some('\u{a0}'),
                    "rsquo" | "lsquo" => Some('\''),
                    "eacute" => Some('é'),
                    "egrave" => Some('è'),
                    "agrave" => Some('à'),
                    "ccedil" => Some('ç'),
                    "uuml" => Some('ü'),
                    "ouml" => Some('ö'),
                    "auml" => Some('ä'),
                    "szlig" => Some('ß'),
                    _ => None,
                }
            };
            c.map(|c| (c, j))
        });
        match decoded {
            Some((c, j)) => {
                out.push(c);
                rest = &rest[j + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_blocks_do_not_glue_tokens() {
        let t = to_text("<table><tr><td>550 5.7.511</td><td>banned sender[203.0.113.7]</td></tr></table><p>Our IP<br>203.0.113.7</p>");
        assert_eq!(t, "550 5.7.511 banned sender[203.0.113.7]\nOur IP\n203.0.113.7");
    }

    #[test]
    fn head_style_script_and_comments_are_dropped() {
        let t = to_text("<html><head><title>x</title><style>p{}</style></head><body><!-- 10.0.0.1 --><script>var a='<p>';</script>Hi &amp; bye&nbsp;now &#x41;&#66;</body></html>");
        assert_eq!(t, "Hi & bye now AB");
    }

    #[test]
    fn source_line_breaks_are_spaces_but_pre_is_kept() {
        assert_eq!(to_text("<p>550 5.7.511 Access\n   denied</p>"), "550 5.7.511 Access denied");
        assert_eq!(to_text("<pre>a\n  b</pre>c"), "a\n  b\nc");
    }

    #[test]
    fn stray_angle_brackets_survive() {
        assert_eq!(to_text("a < b > c &bogus; d"), "a < b > c &bogus; d");
    }
}
