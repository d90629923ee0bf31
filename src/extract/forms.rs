//! Text → the same text with addresses written the way a parser reads them.
//!
//! People and security tools write addresses in forms no address parser accepts:
//! *defanged* (`203.0.113[.]7`, `203.0.113(.)7`, `203[dot]0[dot]113[dot]7`, a habit of abuse
//! desks so that nothing becomes a link), and in CJK text with *full-width* digits and dots
//! (`２０３．０．１１３．７`), which Unicode compatibility normalization (NFKC, UAX #15) maps
//! to ASCII. Both are undone here, before any scanner runs; text without them is returned
//! as it is, without a copy.

use std::borrow::Cow;

/// Bracketed dots between two digits, case-insensitive `dot`.
const DEFANGED: &[&str] = &["[.]", "(.)", "{.}", "[dot]", "(dot)", "{dot}"];

/// Could the text hold a defanged dot or a full-width form at all? (Byte tests only.)
fn may_need(text: &str) -> bool {
    let b = text.as_bytes();
    // U+FF01..U+FF5E are EF BC 81 .. EF BD 9E in UTF-8.
    // One pass over the opening brackets (rare in mail text), not over every byte.
    memchr::memchr(0xEF, b).is_some()
        || memchr::memchr3_iter(b'[', b'(', b'{', b).any(|i| {
            let next = &b[i + 1..b.len().min(i + 4)];
            next.first() == Some(&b'.') || next.eq_ignore_ascii_case(b"dot")
        })
}

/// NFKC for the full-width ASCII block (U+FF01–U+FF5E → U+0021–U+007E) and the
/// ideographic space: the only compatibility forms an address or a status code is written
/// in.
fn fold_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// The text with full-width forms folded and defanged dots restored between digits.
pub(crate) fn normalize(text: &str) -> Cow<'_, str> {
    if !may_need(text) {
        return Cow::Borrowed(text);
    }
    let folded: String = if text.bytes().any(|b| b == 0xEF) { text.chars().map(fold_width).collect() } else { text.to_string() };
    let b = folded.as_bytes();
    let mut out = String::with_capacity(folded.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if matches!(b[i], b'[' | b'(' | b'{') && i > 0 && b[i - 1].is_ascii_digit() {
            if let Some(d) = DEFANGED.iter().find(|d| b.get(i..i + d.len()).is_some_and(|w| w.eq_ignore_ascii_case(d.as_bytes()))) {
                if b.get(i + d.len()).is_some_and(u8::is_ascii_digit) {
                    out.push_str(&folded[copied..i]);
                    out.push('.');
                    i += d.len();
                    copied = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Owned(folded);
    }
    out.push_str(&folded[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defanged_dots_are_restored_between_digits() {
        assert_eq!(normalize("our IP 203.0.113[.]7 and 198(.)51(.)100(.)9"), "our IP 203.0.113.7 and 198.51.100.9");
        assert_eq!(normalize("203[dot]0[DOT]113{.}7"), "203.0.113.7");
        // Not between digits: left alone.
        assert_eq!(normalize("see [.] and a[.]b and banned sender[203.0.113.7]."), "see [.] and a[.]b and banned sender[203.0.113.7].");
    }

    #[test]
    fn full_width_forms_are_folded() {
        assert_eq!(normalize("ＩＰアドレス：２０３．０．１１３．７"), "IPアドレス:203.0.113.7");
        assert!(matches!(normalize("plain 203.0.113.7"), Cow::Borrowed(_)));
    }
}
