//! The language of a request: the Content-Language header first, else the sender's own words
//! (Japanese and Chinese by their script, the others by counting common function words).
//! English when unsure.
//!
//! Han characters are shared by Chinese and Japanese; Japanese text nearly always has kana
//! between them (particles, verb endings), so Han text with no kana is read as Chinese.

use std::sync::LazyLock;

use crate::types::Lang;

/// Most text looked at: a request's language shows in its first lines.
const MAX_TEXT: usize = 2 * 1024;

/// Function words frequent in one language and rare in the others we tell apart.
const EN: &[&str] = &[
    "the", "and", "is", "are", "our", "we", "you", "your", "please", "to", "of", "for", "with", "this", "that",
    "have", "has", "from", "not", "be", "been", "it", "was", "were", "would", "could", "thank", "thanks", "hello",
    "hi", "regards", "can", "on", "by", "my", "been", "us", "will", "kindly",
];
const FR: &[&str] = &[
    "le", "les", "des", "du", "et", "est", "sont", "nous", "vous", "notre", "nos", "votre", "pour", "avec", "une",
    "pas", "que", "qui", "dans", "sur", "merci", "bonjour", "cordialement", "adresse", "cette", "mais", "ou", "au",
    "aux", "ne", "je", "être", "été", "serveur", "voici", "depuis", "nôtre", "très", "puis", "bien",
];
const IT: &[&str] = &[
    "il", "lo", "gli", "della", "delle", "dei", "del", "di", "che", "è", "sono", "non", "per", "con", "una", "nostro",
    "nostra", "nostri", "vostro", "grazie", "buongiorno", "cordiali", "saluti", "indirizzo", "questo", "questa",
    "anche", "ma", "nel", "alla", "al", "e", "ci", "siamo", "abbiamo", "stato", "essere", "riceviamo", "errore",
];
const DE: &[&str] = &[
    "der", "die", "das", "und", "ist", "sind", "wir", "sie", "ihr", "unser", "unsere", "unserer", "unseren", "bitte",
    "mit", "für", "von", "nicht", "ein", "eine", "einen", "den", "dem", "zu", "auf", "danke", "hallo", "grüße",
    "freundlichen", "wurde", "werden", "auch", "aber", "oder", "ich", "haben", "wird", "damen", "herren", "seit",
];

const ES: &[&str] = &[
    "el", "los", "las", "del", "y", "nuestro", "nuestra", "nuestros", "nuestras", "gracias", "hola", "saludos",
    "dirección", "por", "para", "con", "está", "están", "favor", "estimados", "hemos", "pero", "muy", "atentamente",
    "correo", "servidor", "bloqueado", "bloqueada", "desde", "ayuda", "su", "lista", "cuando", "también", "enviar",
];
const PT: &[&str] = &[
    "não", "nosso", "nossa", "nossos", "obrigado", "obrigada", "olá", "endereço", "você", "vocês", "os", "do", "da",
    "dos", "das", "em", "uma", "pelo", "pela", "foi", "é", "são", "estão", "também", "seu", "sua", "bloqueio", "para",
    "com", "está", "favor", "atenciosamente", "servidor", "bloqueado", "enviar", "ajuda", "lista", "desde",
];
const NL: &[&str] = &[
    "het", "een", "van", "zijn", "wij", "ons", "onze", "niet", "met", "voor", "dank", "bedankt", "groeten",
    "vriendelijke", "geachte", "graag", "wordt", "worden", "deze", "naar", "bij", "ook", "maar", "uw", "u", "dat",
    "hebben", "heeft", "geblokkeerd", "adres", "verwijderen", "alstublieft", "mvg", "hallo", "goedemiddag", "goedemorgen",
];

/// The languages told apart by words, in score order (bit `i` of a word's set is `BY_WORDS[i]`).
const BY_WORDS: [Lang; 7] = [Lang::En, Lang::Fr, Lang::It, Lang::De, Lang::Es, Lang::Pt, Lang::Nl];

/// Word → bit set of the languages of [`BY_WORDS`] it counts for: an open-addressed table,
/// one hash and usually one comparison per word of text.
const TABLE_SIZE: usize = 1024;
static WORDS: LazyLock<Vec<Option<(&'static str, u8)>>> = LazyLock::new(|| {
    let mut t: Vec<Option<(&'static str, u8)>> = vec![None; TABLE_SIZE];
    for (bit, list) in [EN, FR, IT, DE, ES, PT, NL].iter().enumerate() {
        for w in *list {
            let mut i = slot(w);
            loop {
                match &mut t[i] {
                    Some((x, bits)) if x == w => {
                        *bits |= 1 << bit;
                        break;
                    }
                    Some(_) => i = (i + 1) % TABLE_SIZE,
                    empty @ None => {
                        *empty = Some((w, 1 << bit));
                        break;
                    }
                }
            }
        }
    }
    t
});

fn slot(w: &str) -> usize {
    let h = w.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193)); // FNV-1a
    h as usize % TABLE_SIZE
}

fn word_bits(w: &str) -> u8 {
    let t = &*WORDS;
    let mut i = slot(w);
    loop {
        match t[i] {
            Some((x, bits)) if x == w => return bits,
            Some(_) => i = (i + 1) % TABLE_SIZE,
            None => return 0,
        }
    }
}

/// The best score and the best of the others.
fn lead(score: &[usize; 7]) -> (usize, usize) {
    let (mut top, mut second) = (0, 0);
    for &s in score {
        if s > top {
            second = top;
            top = s;
        } else if s > second {
            second = s;
        }
    }
    (top, second)
}

/// The first supported language of a Content-Language value (`fr-FR`, `de, en`).
pub(crate) fn from_content_language(value: &str) -> Option<Lang> {
    value.split(',').find_map(Lang::from_tag)
}

/// Guess the language of the sender's own text.
pub(crate) fn detect(text: &str) -> Lang {
    let mut cut = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = &text[..cut];
    let mut kana = 0usize;
    let mut han = 0usize;
    // ASCII text has no kana or Han: skip the character walk.
    let chars = if text.is_ascii() { "" } else { text };
    for c in chars.chars() {
        match c {
            '\u{3040}'..='\u{30ff}' => kana += 1,
            '\u{4e00}'..='\u{9fff}' => han += 1,
            _ => {}
        }
    }
    // Kana is only Japanese. Han with (almost) no kana is Chinese: a single stray kana (a
    // quoted name, a katakana brand) does not make a Chinese letter Japanese.
    if kana >= 2 {
        return Lang::Ja;
    }
    if han >= 4 {
        return Lang::Zh;
    }
    let mut score = [0usize; 7];
    let mut lower = String::new();
    let mut ascii_word = [0u8; 12];
    // Words come from prose-like tokens only: base64 or hex runs (a cut attachment, a
    // message-id) are full of short letter runs such as "e", "di", "il".
    let tokens = text
        .split_ascii_whitespace()
        .filter(|t| t.len() <= 40 && t.bytes().filter(u8::is_ascii_digit).count() < 3 && !t.contains(['/', '+', '=']));
    'tokens: for t in tokens {
        let count = |w: &str, score: &mut [usize; 7]| -> bool {
            let bits = word_bits(w);
            if bits == 0 {
                return false;
            }
            for (i, s) in score.iter_mut().enumerate() {
                if bits & (1 << i) != 0 {
                    *s += 1;
                }
            }
            // A clear lead will not be overturned: stop reading.
            let (top, rest) = lead(score);
            top >= 8 && rest * 3 <= top
        };
        if t.is_ascii() {
            // Fast path: words are runs of ASCII letters (and '-'), lower-cased in place.
            for w in t.as_bytes().split(|b| !(b.is_ascii_alphabetic() || *b == b'-')) {
                if w.is_empty() || w.len() > ascii_word.len() {
                    continue;
                }
                let buf = &mut ascii_word[..w.len()];
                for (d, s) in buf.iter_mut().zip(w) {
                    *d = s.to_ascii_lowercase();
                }
                if count(std::str::from_utf8(buf).unwrap_or(""), &mut score) {
                    break 'tokens;
                }
            }
            continue;
        }
        for word in t.split(|c: char| !(c.is_alphabetic() || c == '-')).filter(|w| !w.is_empty() && w.len() <= 20) {
            lower.clear();
            lower.extend(word.chars().flat_map(char::to_lowercase));
            if lower.len() <= 12 && count(&lower, &mut score) {
                break 'tokens;
            }
        }
    }
    let best = (0..BY_WORDS.len()).max_by_key(|&i| (score[i], usize::from(i == 0))).unwrap_or(0);
    let unique = (0..BY_WORDS.len()).all(|i| i == best || score[i] < score[best]);
    if score[best] >= 2 && unique {
        BY_WORDS[best]
    } else {
        Lang::En
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_word_is_found() {
        for (bit, list) in [EN, FR, IT, DE, ES, PT, NL].iter().enumerate() {
            for w in *list {
                assert!(word_bits(w) & (1 << bit) != 0, "{w}");
            }
        }
        assert_eq!(word_bits("zzz"), 0);
    }

    #[test]
    fn content_language_tags() {
        assert_eq!(from_content_language("fr-FR"), Some(Lang::Fr));
        assert_eq!(from_content_language("ko, de-AT"), Some(Lang::De));
        assert_eq!(from_content_language("es"), Some(Lang::Es));
        assert_eq!(from_content_language("ko-KR, nl"), Some(Lang::Nl));
    }

    #[test]
    fn detects_each_language() {
        assert_eq!(detect("Hello, our server is blocked. Please remove the IP from your list."), Lang::En);
        assert_eq!(detect("Bonjour, notre serveur est bloqué depuis hier. Merci de nous débloquer."), Lang::Fr);
        assert_eq!(detect("Buongiorno, il nostro server è bloccato. Grazie per l'aiuto."), Lang::It);
        assert_eq!(detect("Hallo, unser Server ist gesperrt. Bitte entfernen Sie die Sperre."), Lang::De);
        assert_eq!(detect("お世話になっております。送信がブロックされました。"), Lang::Ja);
        assert_eq!(detect("Hola, nuestro servidor está bloqueado. Por favor, ayuda con la lista. Gracias."), Lang::Es);
        assert_eq!(detect("Olá, o nosso servidor foi bloqueado e não conseguimos enviar. Obrigado."), Lang::Pt);
        assert_eq!(detect("Goedemiddag, onze server is geblokkeerd. Kunt u het adres verwijderen? Met vriendelijke groeten"), Lang::Nl);
        assert_eq!(detect("您好，我们的邮件服务器被封锁了，IP地址：203.0.113.7，请帮忙解除。谢谢"), Lang::Zh);
        assert_eq!(detect("我们的服务器被封锁了。请解除。コ"), Lang::Zh);
    }

    #[test]
    fn base64_residue_is_not_a_language() {
        let b64 = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+c3RyZWFtCnic\nK+e/di/il+al+ma/e+di/il/al/ma/ci/e+di/il+al/ma+ci/e+di+il/al+ma+ci+e+di+il+al+ma+ci";
        assert_eq!(detect(&format!("Hello, blocked with:\n{b64}")), Lang::En);
    }

    #[test]
    fn unsure_is_english() {
        assert_eq!(detect(""), Lang::En);
        assert_eq!(detect("203.0.113.7 5.7.511"), Lang::En);
        assert_eq!(detect("Merci"), Lang::En);
    }
}
