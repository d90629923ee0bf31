//! DNS blocklists as RFC 5782 defines them: the query name for an IP, what an answer means,
//! and the test entries every list must carry. Pure, no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The name to query for `ip` under `zone` (RFC 5782 §2.1 and §2.4), fully qualified.
///
/// IPv4: the four octets reversed (`192.0.2.99` → `99.2.0.192.zone.`). IPv6: the 32 nibbles
/// of the full address, least significant first (`2001:db8::1` → `1.0.0.0…8.b.d.0.1.0.0.2.zone.`).
/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is queried as IPv6: §5 makes
/// `::FFFF:7F00:2` a test entry of its own, so lists do index those names.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 1);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    name.push(char::from(b"0123456789abcdef"[usize::from(nibble)]));
                    name.push('.');
                }
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

/// What the A records of a DNSBL answer say (RFC 5782 §2.1, §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// At least one record in 127.0.0.0/8: listed; the codes are the records found.
    Listed(Vec<Ipv4Addr>),
    /// No record: not listed (NXDOMAIN, or NOERROR with no A record).
    NotListed,
    /// Records, none of them in 127.0.0.0/8: §2.1 allows only that range, so the list is
    /// broken or the name was hijacked (an ISP resolver answering every NXDOMAIN with an
    /// advertising page). Neither "listed" nor "not listed" can be trusted.
    Bogus(Vec<Ipv4Addr>),
}

/// Interpret the A records of an answer.
pub fn interpret(records: &[Ipv4Addr]) -> Answer {
    if records.is_empty() {
        return Answer::NotListed;
    }
    let listed: Vec<Ipv4Addr> = records.iter().copied().filter(|a| a.octets()[0] == 127).collect();
    if listed.is_empty() {
        Answer::Bogus(records.to_vec())
    } else {
        Answer::Listed(listed)
    }
}

/// The test entries every list must answer (RFC 5782 §5): these must be listed ...
pub const MUST_BE_LISTED: [IpAddr; 2] =
    [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 2))];
/// ... and this one must not (a list answering it would list everybody).
pub const MUST_NOT_BE_LISTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// The TXT reason of a listing, as one clean line: the strings of the record joined, control
/// characters dropped (it is shown to staff and kept in the database), capped in length.
pub fn reason_text(strings: &[Vec<u8>]) -> Option<String> {
    let joined: String = strings.iter().map(|s| String::from_utf8_lossy(s)).collect::<Vec<_>>().join("");
    let clean: String = joined.chars().map(|c| if c.is_control() { ' ' } else { c }).take(500).collect();
    let clean = clean.trim().to_string();
    (!clean.is_empty()).then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_query_names_reverse_the_octets() {
        // RFC 5782 §2.1's own example.
        assert_eq!(
            query_name("192.168.42.23".parse().unwrap(), "dnsbl.example.net"),
            "23.42.168.192.dnsbl.example.net."
        );
        assert_eq!(query_name("127.0.0.2".parse().unwrap(), "bl.example.net."), "2.0.0.127.bl.example.net.");
    }

    #[test]
    fn ipv6_query_names_are_32_reversed_nibbles() {
        // RFC 5782 §2.4's own example.
        let name = query_name("2001:db8:1:2:3:4:567:89ab".parse().unwrap(), "ugly.example.com");
        assert_eq!(name, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com.");
        let test = query_name(MUST_BE_LISTED[1], "bl.example.net");
        assert_eq!(test, "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.example.net.");
        assert_eq!(test.matches('.').count(), 32 + 3);
    }

    #[test]
    fn answers_in_127_8_are_listings_others_are_bogus() {
        assert_eq!(interpret(&[]), Answer::NotListed);
        let two = Ipv4Addr::new(127, 0, 0, 2);
        assert_eq!(interpret(&[two]), Answer::Listed(vec![two]));
        let ad = Ipv4Addr::new(198, 51, 100, 80);
        assert_eq!(interpret(&[ad]), Answer::Bogus(vec![ad]));
        assert_eq!(interpret(&[ad, two]), Answer::Listed(vec![two]));
    }

    #[test]
    fn reasons_are_one_clean_line() {
        assert_eq!(
            reason_text(&[b"Listed: spam\r\n".to_vec(), b" trap hit".to_vec()]).as_deref(),
            Some("Listed: spam   trap hit")
        );
        assert_eq!(reason_text(&[b"  ".to_vec()]), None);
        assert_eq!(reason_text(&[]), None);
        assert_eq!(reason_text(&[vec![b'x'; 2000]]).map(|s| s.len()), Some(500));
    }
}
