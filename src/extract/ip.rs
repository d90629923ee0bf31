//! Candidate banned IPs: the address a rejection names (`banned sender[IP]`) and the address
//! a sender states as theirs in prose ("our IP is ..."), each classified.
//!
//! Never from Received headers, quoted header blocks, or the remote server's own address
//! (`host mx.example.net[198.51.100.9] said:`): only the phrases below name the banned IP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;

use super::{IpFinding, IpProblem, IpSource};

/// The rejection phrases of the provider's NDRs (English and the localized forms of its
/// documents), followed by the bracketed address. The bracket content is captured loosely so
/// that placeholders (`[xxx.xxx.xxx.xxx]`) and bad addresses are reported as malformed.
static REJECTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?:banned\s*sender|banned\s*sending\s*ip(?:\s*address)?|blocked\s*sending\s*ip",
        r"|exp[ée]diteur\s*interdit|adresse\s*_?ip_?\s*d['’]\s*envoi\s*interdite",
        r"|mittente\s*escluso|vietato\s*l['’]\s*invio\s*di\s*ip",
        r"|禁止送信者|gesperrter\s*absender|gesperrte\s*sende[\s-]*ip(?:[\s-]*adresse)?)",
        r"\s*[\[［]([^\]］\[［]{0,80})[\]］]",
        // Japanese word order: "IP [203.0.113.7] の送信が禁止"
        r"|(?i:(?-u:\b)ip)\s*[\[［]([^\]］\[［]{0,80})[\]］]\s*の送信が禁止",
    ))
    .expect("static regex")
});

/// Words after which a sender names their own address. Case-insensitive; "IP" must be a word
/// of its own (not `X-Originating-IP:`, not `client-ip=`).
static STATED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // CJK: no word boundaries ("IP地址：", "IPアドレス", "IP 주소", "我们的服务器").
        r"(?i)(?:ip|ＩＰ)\s*(?:アドレス|地址|位址|주소)|我们的服务器|我司服务器|우리\s*서버",
        r"|(?:^|[^\w\-=.])(?:",
        // "IP", "IPv4", "IP address", and the hyphenated or spaced forms of other languages:
        // IP-Adresse (de), IP-adres (nl), IP-adress (sv), IP adresi/adresimiz (tr),
        // IP-адрес (ru), each with an optional plural.
        r"ip(?:v[46])?(?:[\s\-]?(?:address(?:es)?|adresse[ns]?|addr|adres(?:sen|i|imiz|y)?|adress(?:en|er)?|адрес(?:а|ом)?))?s?",
        // "adresse IP" (fr), "indirizzo IP" (it), "dirección IP" (es), "endereço IP" (pt),
        // "adres IP" (pl), "адрес IP" (ru)
        r"|adresses?\s+ip|indirizz[oi]\s+ip|direcci[óo]n(?:es)?\s+ip|endere[çc]os?\s+ip|adres(?:y)?\s+ip|адрес\s+ip",
        r"|(?:our|my|the)\s+(?:mail\s+)?server|notre\s+serveur|nostro\s+server|unser(?:em|en)?\s+(?:mail)?server",
        r"|nuestro\s+servidor|nosso\s+servidor|onze\s+(?:mail)?server|nasz\s+serwer|наш\s+(?:почтовый\s+)?сервер",
        r"|sunucumuz|v[åa]r\s+(?:e-?post)?server",
        r"|delist(?:ing)?|unblock|d[ée]bloquer|sbloccare|entsperren",
        r")(?:[^\w\-.]|$)"
    ))
    .expect("static regex")
});

/// What may sit between two listed IPs: "203.0.113.7, 203.0.113.8 and 203.0.113.9".
static LIST_SEP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^\s*(?:、|・|と)\s*",
        r"|(?i)^\s*(?:[,;/&]|(?-u:\b)(?:and|et|e|und|or|ou|o|oder)(?-u:\b))?",
        r"\s*(?:(?-u:\b)(?:and|et|e|und)(?-u:\b))?\s*"
    ))
    .expect("static regex")
});

/// How far after a keyword the address may start, in bytes.
const STATED_WINDOW: usize = 48;

/// Classify an address; `None` means usable as a banned IP.
///
/// Special-purpose ranges follow the IANA IPv4/IPv6 Special-Purpose Address Registries
/// (RFC 6890 and successors). Documentation ranges (RFC 5737, RFC 3849, RFC 9637) are
/// accepted on purpose so that examples and tests can use them.
pub(crate) fn classify(ip: IpAddr) -> Option<IpProblem> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<IpProblem> {
    let o = ip.octets();
    let in_net = |net: [u8; 4], bits: u32| {
        let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
        (u32::from(ip) & mask) == (u32::from_be_bytes(net) & mask)
    };
    if in_net([192, 0, 2, 0], 24) || in_net([198, 51, 100, 0], 24) || in_net([203, 0, 113, 0], 24) {
        return None; // RFC 5737 documentation
    }
    if ip.is_unspecified() {
        Some(IpProblem::Unspecified)
    } else if ip.is_broadcast() {
        Some(IpProblem::Broadcast)
    } else if ip.is_loopback() {
        Some(IpProblem::Loopback)
    } else if ip.is_private() {
        Some(IpProblem::Private)
    } else if ip.is_link_local() {
        Some(IpProblem::LinkLocal)
    } else if in_net([100, 64, 0, 0], 10) {
        Some(IpProblem::SharedAddressSpace) // RFC 6598
    } else if ip.is_multicast() {
        Some(IpProblem::Multicast)
    } else if o[0] == 0
        || o[0] >= 240 // RFC 1112 reserved
        || in_net([192, 0, 0, 0], 24) // RFC 6890 IETF protocol assignments
        || in_net([198, 18, 0, 0], 15) // RFC 2544 benchmarking
        || in_net([192, 88, 99, 0], 24) // RFC 7526 deprecated 6to4 relay anycast
    {
        Some(IpProblem::Reserved)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<IpProblem> {
    let s = ip.segments();
    if s[0] == 0x2001 && s[1] == 0x0db8 || (s[0] & 0xfff0) == 0x3ff0 {
        return None; // RFC 3849 and RFC 9637 documentation
    }
    if ip.is_unspecified() {
        Some(IpProblem::Unspecified)
    } else if ip.is_loopback() {
        Some(IpProblem::Loopback)
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some(IpProblem::Private) // RFC 4193 unique local
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some(IpProblem::LinkLocal)
    } else if ip.is_multicast() {
        Some(IpProblem::Multicast)
    } else if (s[0] & 0xe000) != 0x2000 // outside global unicast 2000::/3
        || (s[0] == 0x2001 && s[1] < 0x0200) // RFC 2928 IETF protocol assignments (Teredo, ORCHID...)
        || s[0] == 0x2002 // RFC 3056 6to4
    {
        Some(IpProblem::Reserved)
    } else {
        None
    }
}

/// Parse an address as written (`203.0.113.7`, `2001:DB8::1`, `IPv6:2001:db8::1`), in its
/// canonical form (IPv4-mapped IPv6 becomes the IPv4 address it maps).
pub(crate) fn parse(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = strip_ci_prefix(t, "ipv6:").unwrap_or(t);
    // With a port: `[2001:db8::1]:25` (RFC 3986 §3.2.2 brackets), `203.0.113.7:25`.
    if let Some((inner, port)) = t.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        if is_port(port) {
            return parse(inner);
        }
    }
    if let Some((v4, port)) = t.split_once(':').filter(|(a, p)| !p.contains(':') && a.contains('.')) {
        return if is_port(port) { v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4) } else { None };
    }
    let t = t.split('%').next().unwrap_or(t); // zone index
    if t.contains(':') {
        t.parse::<Ipv6Addr>().ok().map(|v6| IpAddr::V6(v6).to_canonical())
    } else {
        t.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

fn is_port(p: &str) -> bool {
    (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
}

fn strip_ci_prefix<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn finding(text: &str, source: IpSource) -> IpFinding {
    let ip = parse(text);
    let problem = match ip {
        Some(ip) => classify(ip),
        None => Some(IpProblem::Malformed),
    };
    IpFinding { text: text.to_string(), ip, source, problem, code: None }
}

/// Words every rejection phrase contains: a cheap test for a whole piece of text before the
/// phrase regex runs on its lines.
static REJECTION_HINT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)banned|blocked|interdit|escluso|vietato|禁止|gesperrt").expect("static regex")
});

/// Could this text hold a rejection phrase at all?
pub(crate) fn may_hold_rejection(text: &str) -> bool {
    REJECTION_HINT.is_match(text)
}

/// Cheap test before the prose scan: a digit-dot-digit or hex-colon-hex shape somewhere.
pub(crate) fn may_hold_ip(s: &str) -> bool {
    s.as_bytes().windows(3).any(|w| {
        (w[1] == b'.' && w[0].is_ascii_digit() && w[2].is_ascii_digit())
            || (w[1] == b':' && w[0].is_ascii_hexdigit() && (w[2].is_ascii_hexdigit() || w[2] == b':'))
    })
}

/// IPs named by a rejection phrase in a (folded) line, each with the byte offset of its
/// phrase; true when the line has such a phrase. The bracket content is taken whole, without
/// the spaces an MTA may have wrapped into it.
pub(crate) fn rejection_ips(line: &str, out: &mut Vec<(usize, IpFinding)>) -> bool {
    let mut any = false;
    for caps in REJECTION.captures_iter(line) {
        any = true;
        let Some(m) = caps.get(1).or_else(|| caps.get(2)) else { continue };
        let compact: String = m.as_str().chars().filter(|c| !c.is_whitespace()).collect();
        let text = if compact.is_empty() { "[]".to_string() } else { compact };
        let at = caps.get(0).map_or(0, |m| m.start());
        out.push((at, finding(&text, IpSource::Rejection)));
    }
    any
}

/// An IP-looking token at `s[start..]`: returns (token, end). IPv4 needs four dotted
/// numbers (each up to three digits, so `203.0.113.300` is caught as malformed); IPv6 needs
/// at least two colons and must parse.
fn ip_token(s: &str, start: usize) -> Option<(&str, usize)> {
    let bytes = s.as_bytes();
    if start > 0 {
        let p = bytes[start - 1];
        // A colon right before is part of an IPv6 address (`2001:db8::`) unless it ends a
        // label (`IP地址:203.0.113.7`, `IP:203.0.113.7`).
        let label_colon = p == b':' && start >= 2 && !(bytes[start - 2].is_ascii_hexdigit() || bytes[start - 2] == b':');
        if p.is_ascii_alphanumeric() || p == b'.' || (p == b':' && !label_colon) || p == b'_' {
            return None;
        }
    }
    let mut tok_start = start;
    if strip_ci_prefix(&s[start..], "ipv6:").is_some() {
        tok_start = start + 5;
    }
    let mut end = tok_start;
    while end < bytes.len() && (bytes[end].is_ascii_hexdigit() || bytes[end] == b'.' || bytes[end] == b':') {
        end += 1;
    }
    // Sentence punctuation after the address is not part of it.
    while end > tok_start && (bytes[end - 1] == b'.' || (bytes[end - 1] == b':' && bytes.get(end.wrapping_sub(2)) != Some(&b':'))) {
        end -= 1;
    }
    if end == tok_start || bytes.get(end).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
        return None;
    }
    let tok = &s[tok_start..end];
    let colons = tok.bytes().filter(|b| *b == b':').count();
    if colons >= 2 {
        tok.parse::<Ipv6Addr>().ok()?;
        return Some((&s[start..end], end));
    }
    let tok = if colons == 1 {
        // `203.0.113.7:25`: the address, without its port.
        match tok.split_once(':') {
            Some((a, p)) if is_port(p) && a.contains('.') => &tok[..a.len()],
            _ => return None,
        }
    } else {
        tok
    };
    if colons <= 1 {
        let parts: Vec<&str> = tok.split('.').collect();
        if parts.len() == 4 && parts.iter().all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())) {
            return Some((tok, end));
        }
    }
    None
}

/// First IP token starting in `s[from..to]`.
fn next_ip_token(s: &str, from: usize, to: usize) -> Option<(usize, &str, usize)> {
    let to = to.min(s.len());
    let mut i = from;
    while i < to {
        let b = s.as_bytes();
        // `::ffff:203.0.113.9` starts with its colons.
        let colons = b[i] == b':' && b.get(i + 1) == Some(&b':');
        if s.is_char_boundary(i) && (b[i].is_ascii_hexdigit() || colons || strip_ci_prefix(&s[i..], "ipv6:").is_some()) {
            if let Some((tok, end)) = ip_token(s, i) {
                return Some((i, tok, end));
            }
        }
        i += 1;
    }
    None
}

/// Every address-shaped token in a line (at most 32), whatever the words around it: in a
/// follow-up to our missing-information reply, the sender's new text answers our question.
pub(crate) fn any_ips(line: &str, out: &mut Vec<IpFinding>) {
    if !may_hold_ip(line) {
        return;
    }
    let mut pos = 0;
    for _ in 0..32 {
        let Some((_, tok, end)) = next_ip_token(line, pos, line.len()) else { break };
        out.push(finding(tok, IpSource::Stated));
        pos = end;
    }
}

/// IPs a sender states in prose: after a keyword ("our IP is", "notre IP :", "IPアドレス"),
/// the first address within a short distance, and any further ones listed right after it.
pub(crate) fn stated_ips(line: &str, out: &mut Vec<IpFinding>) {
    if !may_hold_ip(line) {
        return;
    }
    let mut pos = 0;
    while let Some(m) = STATED.find_at(line, pos) {
        pos = m.end().max(pos + 1);
        while pos < line.len() && !line.is_char_boundary(pos) {
            pos += 1;
        }
        let kw_end = m.end();
        let mut limit = kw_end + STATED_WINDOW;
        while limit < line.len() && !line.is_char_boundary(limit) {
            limit += 1;
        }
        let Some((_, tok, mut end)) = next_ip_token(line, kw_end.saturating_sub(1), limit) else { continue };
        out.push(finding(tok, IpSource::Stated));
        // "..., 203.0.113.8 and 203.0.113.9"
        for _ in 0..32 {
            let Some(sep) = LIST_SEP.find(&line[end..]) else { break };
            let at = end + sep.end();
            match ip_token(line, at) {
                Some((tok, e)) if at < line.len() => {
                    out.push(finding(tok, IpSource::Stated));
                    end = e;
                }
                _ => break,
            }
        }
        pos = pos.max(end);
        if pos >= line.len() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rej(line: &str) -> Vec<(String, Option<IpProblem>)> {
        let mut v = Vec::new();
        rejection_ips(line, &mut v);
        v.into_iter().map(|(_, f)| (f.text, f.problem)).collect()
    }

    fn stated(line: &str) -> Vec<String> {
        let mut v = Vec::new();
        stated_ips(line, &mut v);
        v.into_iter().map(|f| f.ip.map_or(f.text, |i| i.to_string())).collect()
    }

    #[test]
    fn classification_follows_the_special_purpose_registries() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("203.0.113.7"), None);
        assert_eq!(c("198.51.100.1"), None);
        assert_eq!(c("192.0.2.1"), None);
        assert_eq!(c("8.8.8.8"), None);
        assert_eq!(c("10.1.2.3"), Some(IpProblem::Private));
        assert_eq!(c("172.16.0.1"), Some(IpProblem::Private));
        assert_eq!(c("192.168.1.1"), Some(IpProblem::Private));
        assert_eq!(c("127.0.0.1"), Some(IpProblem::Loopback));
        assert_eq!(c("169.254.3.4"), Some(IpProblem::LinkLocal));
        assert_eq!(c("100.64.0.1"), Some(IpProblem::SharedAddressSpace));
        assert_eq!(c("100.128.0.1"), None);
        assert_eq!(c("224.0.0.1"), Some(IpProblem::Multicast));
        assert_eq!(c("0.0.0.0"), Some(IpProblem::Unspecified));
        assert_eq!(c("255.255.255.255"), Some(IpProblem::Broadcast));
        assert_eq!(c("0.1.2.3"), Some(IpProblem::Reserved));
        assert_eq!(c("240.0.0.1"), Some(IpProblem::Reserved));
        assert_eq!(c("192.0.0.8"), Some(IpProblem::Reserved));
        assert_eq!(c("198.19.1.1"), Some(IpProblem::Reserved));
        assert_eq!(c("2001:db8::1"), None);
        assert_eq!(c("2a00:1450::1"), None);
        assert_eq!(c("::"), Some(IpProblem::Unspecified));
        assert_eq!(c("::1"), Some(IpProblem::Loopback));
        assert_eq!(c("fd00::1"), Some(IpProblem::Private));
        assert_eq!(c("fe80::1"), Some(IpProblem::LinkLocal));
        assert_eq!(c("ff02::1"), Some(IpProblem::Multicast));
        assert_eq!(c("::ffff:10.0.0.1"), Some(IpProblem::Private));
        assert_eq!(c("2002::1"), Some(IpProblem::Reserved));
        assert_eq!(c("4000::1"), Some(IpProblem::Reserved));
    }

    #[test]
    fn parse_is_canonical() {
        assert_eq!(parse("IPv6:2001:DB8:0:0::1").unwrap().to_string(), "2001:db8::1");
        assert_eq!(parse("::ffff:203.0.113.7").unwrap().to_string(), "203.0.113.7");
        assert_eq!(parse("203.0.113.300"), None);
        assert_eq!(parse("203.0.113.07"), None);
        assert_eq!(parse("203.0.113.7:25").unwrap().to_string(), "203.0.113.7");
        assert_eq!(parse("[2001:db8::1]:25").unwrap().to_string(), "2001:db8::1");
        assert_eq!(parse("203.0.113.7:abc"), None);
    }

    #[test]
    fn rejection_phrases_in_every_form() {
        assert_eq!(rej("550 5.7.511 Access denied, banned sender[203.0.113.7]. To"), vec![("203.0.113.7".into(), None)]);
        assert_eq!(rej("Access denied, BANNED SENDER [ 203.0.113.8 ]"), vec![("203.0.113.8".into(), None)]);
        assert_eq!(rej("banned sending IP [198.51.100.3]"), vec![("198.51.100.3".into(), None)]);
        assert_eq!(rej("Accès refusé, expéditeur interdit[192.0.2.4]."), vec![("192.0.2.4".into(), None)]);
        assert_eq!(rej("Accesso negato, mittente escluso[192.0.2.5]."), vec![("192.0.2.5".into(), None)]);
        assert_eq!(rej("アクセス拒否、禁止送信者[192.0.2.6]。"), vec![("192.0.2.6".into(), None)]);
        assert_eq!(rej("IP [192.0.2.9] の送信が禁止されました"), vec![("192.0.2.9".into(), None)]);
        assert_eq!(rej("banned sender[IPv6:2001:DB8::5]"), vec![("IPv6:2001:DB8::5".into(), None)]);
        assert_eq!(rej("banned sender[203.0.113. 7]")[0].0, "203.0.113.7");
        assert_eq!(rej("banned sender[203.0.113.300]"), vec![("203.0.113.300".into(), Some(IpProblem::Malformed))]);
        assert_eq!(rej("banned sender[xxx.xxx.xxx.xxx]"), vec![("xxx.xxx.xxx.xxx".into(), Some(IpProblem::Malformed))]);
        assert_eq!(rej("banned sender[10.0.0.1]"), vec![("10.0.0.1".into(), Some(IpProblem::Private))]);
        // The remote server's own address is not named by a rejection phrase.
        assert!(rej("host mx.example.net[198.51.100.9] said: 550 5.7.1 no").is_empty());
    }

    #[test]
    fn stated_ips_in_prose() {
        assert_eq!(stated("Our IP is 203.0.113.7, thanks"), vec!["203.0.113.7"]);
        assert_eq!(stated("notre IP : 203.0.113.7."), vec!["203.0.113.7"]);
        assert_eq!(stated("IP: 203.0.113.7"), vec!["203.0.113.7"]);
        assert_eq!(stated("unsere IP-Adresse lautet 192.0.2.10"), vec!["192.0.2.10"]);
        assert_eq!(stated("il nostro indirizzo IP è 192.0.2.11"), vec!["192.0.2.11"]);
        assert_eq!(stated("当社のIPアドレスは192.0.2.12です"), vec!["192.0.2.12"]);
        assert_eq!(stated("our IPs are 203.0.113.7, 203.0.113.8 and 203.0.113.9."), vec!["203.0.113.7", "203.0.113.8", "203.0.113.9"]);
        assert_eq!(stated("our IPv6 address is 2001:DB8::25"), vec!["2001:db8::25"]);
        assert_eq!(stated("IP: 203.0.113.300"), vec!["203.0.113.300"]);
        assert_eq!(stated("please delist 198.51.100.20"), vec!["198.51.100.20"]);
        assert_eq!(stated("our IP is 203.0.113.7:25."), vec!["203.0.113.7"]);
        // More languages, hyphenated and spaced forms.
        assert_eq!(stated("Nuestra dirección IP es 203.0.113.21."), vec!["203.0.113.21"]);
        assert_eq!(stated("O nosso endereço IP: 203.0.113.22"), vec!["203.0.113.22"]);
        assert_eq!(stated("Ons IP-adres is 203.0.113.23"), vec!["203.0.113.23"]);
        assert_eq!(stated("我们的IP地址:203.0.113.24"), vec!["203.0.113.24"]);
        assert_eq!(stated("저희 IP 주소는 203.0.113.25 입니다"), vec!["203.0.113.25"]);
        assert_eq!(stated("Nasz adres IP to 203.0.113.26"), vec!["203.0.113.26"]);
        assert_eq!(stated("Наш IP-адрес: 203.0.113.27"), vec!["203.0.113.27"]);
        assert_eq!(stated("IP adresimiz 203.0.113.28"), vec!["203.0.113.28"]);
        assert_eq!(stated("Vår IP-adress är 203.0.113.29"), vec!["203.0.113.29"]);
        assert_eq!(stated("onze mailserver 203.0.113.30 wordt geweigerd"), vec!["203.0.113.30"]);
        assert_eq!(stated("our IP is ::ffff:203.0.113.9)"), vec!["203.0.113.9"]);
    }

    #[test]
    fn stated_ignores_header_like_and_far_numbers() {
        assert!(stated("X-Originating-IP: [10.0.0.5]").is_empty());
        assert!(stated("client-ip=203.0.113.5;").is_empty());
        assert!(stated("we use the IP protocol everywhere and then, much much much later on, 203.0.113.5").is_empty());
        assert!(stated("host mx.example.net[198.51.100.9] said").is_empty());
        assert!(stated("IP version 1.2.3").is_empty());
    }
}
