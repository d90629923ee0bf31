//! A Postfix `cidr:` table (cidr_table(5)) as a blocklist: the very file a provider's MTA
//! already uses with `check_client_access cidr:/etc/postfix/banned_senders.cidr`.
//!
//! ```text
//! # comment
//! 203.0.113.0/24      REJECT 5.7.511 Access denied, banned sender
//! 198.51.100.7        REJECT 5.7.511 listed by abuse desk, ticket 4711
//! 2001:db8:bad::/48   REJECT 5.7.511 Access denied
//! [2001:db8:1::]/64   REJECT ...     (brackets around IPv6: Postfix 3.2+)
//! !192.0.2.0/24       DUNNO          (negation: matches what is NOT in the range)
//! ```
//!
//! The first line that matches wins, as in Postfix; its right-hand side is the reason. A
//! line starting with white space continues the one before. Whatever Postfix accepts as a
//! result counts as a listing except `DUNNO`, `OK` and a number (Postfix's "permit" and
//! "no decision"): a line `198.51.100.0/24 OK` in the middle of a file whitelists, and
//! an IP matched by it is not listed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// A mistake in the file, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct CidrError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    net: IpAddr,
    prefix: u8,
    negated: bool,
    result: String,
    line: usize,
}

/// A parsed table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrTable {
    rules: Vec<Rule>,
}

/// What the table says of one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrMatch {
    /// A rule with a rejecting result matched: the right-hand side and the line.
    Listed { reason: String, line: usize },
    /// No rule matched, or the first that did permits (`OK`, `DUNNO`, a number).
    NotListed,
}

fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6((bits & mask).into())
        }
    }
}

fn parse_pattern(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
    let ip: IpAddr =
        addr.parse().map_err(|_| format!("{text:?} is not an IP address or network (write e.g. 203.0.113.0/24)"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("{p:?} is not a prefix length for {addr} (0 to {max})")),
        },
    };
    // Postfix refuses "non-null host address bits" too: 203.0.113.7/24 is almost always a
    // typo for .0/24 or for /32, and guessing which would list the wrong addresses.
    if masked(ip, prefix) != ip {
        return Err(format!(
            "{text}: the address has bits set beyond /{prefix} (write {}/{prefix})",
            masked(ip, prefix)
        ));
    }
    Ok((ip, prefix))
}

impl CidrTable {
    /// Parse the text of a table; `path` names it in errors. Every bad line is reported.
    pub fn parse(text: &str, path: &str) -> Result<CidrTable, Vec<CidrError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        // Logical lines: a line starting with white space continues the previous one.
        let mut logical: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                if let Some((_, prev)) = logical.last_mut() {
                    prev.push(' ');
                    prev.push_str(trimmed);
                    continue;
                }
            }
            logical.push((i + 1, trimmed.to_string()));
        }
        for (line, text) in logical {
            let err = |message: String| CidrError { path: path.to_string(), line, message };
            let (pattern, result) = match text.split_once(char::is_whitespace) {
                Some((p, r)) => (p, r.trim()),
                None => (text.as_str(), ""),
            };
            if pattern.eq_ignore_ascii_case("if") || pattern.eq_ignore_ascii_case("endif") {
                errors.push(err("if/endif blocks are not supported here; write one line per network".into()));
                continue;
            }
            if result.is_empty() {
                errors.push(err(format!(
                    "{pattern:?} has no result (write e.g. \"{pattern} REJECT 5.7.511 banned sender\")"
                )));
                continue;
            }
            let (negated, pattern) = match pattern.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, pattern),
            };
            match parse_pattern(pattern) {
                Ok((net, prefix)) => rules.push(Rule { net, prefix, negated, result: result.to_string(), line }),
                Err(m) => errors.push(err(m)),
            }
        }
        if errors.is_empty() {
            Ok(CidrTable { rules })
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that matches `ip` decides, as in Postfix.
    pub fn lookup(&self, ip: IpAddr) -> CidrMatch {
        // An IPv4-mapped IPv6 client is the IPv4 address for the MTA too.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        for r in &self.rules {
            let inside = r.net.is_ipv4() == ip.is_ipv4() && masked(ip, r.prefix) == r.net;
            if inside != r.negated {
                return if permits(&r.result) {
                    CidrMatch::NotListed
                } else {
                    CidrMatch::Listed { reason: r.result.clone(), line: r.line }
                };
            }
        }
        CidrMatch::NotListed
    }
}

/// Postfix access(5) results that let the client through or make no decision.
fn permits(result: &str) -> bool {
    let word = result.split_whitespace().next().unwrap_or("");
    word.eq_ignore_ascii_case("OK") || word.eq_ignore_ascii_case("DUNNO") || word.chars().all(|c| c.is_ascii_digit())
}

/// The table on disk, read again when the file changes (its modification time or size).
///
/// A file that fails to load at start is an error; one that turns bad later keeps the last
/// good table in use (the MTA's postmap would refuse it too) and the problem is logged once
/// per change.
#[derive(Debug)]
pub struct CidrFile {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    table: CidrTable,
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

fn load(path: &Path) -> Result<CidrTable, Vec<CidrError>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![CidrError { path: shown.clone(), line: 0, message: format!("cannot read: {e}") }])?;
    CidrTable::parse(&text, &shown)
}

impl CidrFile {
    pub fn open(path: &Path) -> Result<CidrFile, Vec<CidrError>> {
        let st = stamp(path).ok();
        let table = load(path)?;
        Ok(CidrFile { path: path.to_path_buf(), state: Mutex::new(Loaded { stamp: st, table }) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Look `ip` up in the current table, reloading it first if the file changed.
    pub fn lookup(&self, ip: IpAddr) -> CidrMatch {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path).ok();
        if now != s.stamp {
            s.stamp = now;
            match load(&self.path) {
                Ok(t) => {
                    tracing::info!(file = %self.path.display(), rules = t.len(), "CIDR blocklist reloaded");
                    s.table = t;
                }
                Err(errors) => {
                    for e in &errors {
                        tracing::error!(error = %e, "CIDR blocklist not reloaded; the previous table stays in use");
                    }
                }
            }
        }
        s.table.lookup(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const TABLE: &str = "# banned senders\n\
        203.0.113.0/24      REJECT 5.7.511 Access denied, banned sender\n\
        198.51.100.7        REJECT 5.7.511 abuse desk,\n\
        \tticket 4711\n\
        \n\
        198.51.100.0/24     OK\n\
        198.51.100.0/23     REJECT wider range\n\
        2001:db8:bad::/48   REJECT 5.7.511 v6 range\n\
        [2001:db8:1::]/64   REJECT bracketed\n";

    #[test]
    fn the_first_matching_line_decides_and_gives_the_reason() {
        let t = CidrTable::parse(TABLE, "t.cidr").unwrap();
        assert_eq!(t.len(), 6);
        assert_eq!(
            t.lookup(ip("203.0.113.77")),
            CidrMatch::Listed { reason: "REJECT 5.7.511 Access denied, banned sender".into(), line: 2 }
        );
        // A continuation line belongs to the line above.
        assert_eq!(
            t.lookup(ip("198.51.100.7")),
            CidrMatch::Listed { reason: "REJECT 5.7.511 abuse desk, ticket 4711".into(), line: 3 }
        );
        // OK before the wider REJECT: permitted.
        assert_eq!(t.lookup(ip("198.51.100.8")), CidrMatch::NotListed);
        assert!(matches!(t.lookup(ip("198.51.101.8")), CidrMatch::Listed { line: 7, .. }));
        assert!(matches!(t.lookup(ip("2001:db8:bad:1::5")), CidrMatch::Listed { line: 8, .. }));
        assert!(matches!(t.lookup(ip("2001:db8:1::9")), CidrMatch::Listed { line: 9, .. }));
        assert_eq!(t.lookup(ip("2001:db8:2::9")), CidrMatch::NotListed);
        assert_eq!(t.lookup(ip("192.0.2.1")), CidrMatch::NotListed);
        // IPv4-mapped IPv6 is looked up as IPv4.
        assert!(matches!(t.lookup(ip("::ffff:203.0.113.1")), CidrMatch::Listed { line: 2, .. }));
    }

    #[test]
    fn negation_matches_what_is_outside() {
        let t = CidrTable::parse("!192.0.2.0/24 REJECT not ours\n", "t").unwrap();
        assert!(matches!(t.lookup(ip("203.0.113.1")), CidrMatch::Listed { .. }));
        assert_eq!(t.lookup(ip("192.0.2.9")), CidrMatch::NotListed);
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let errs = CidrTable::parse("# ok\n203.0.113.0/24 REJECT\n203.0.113.7/24 REJECT x\n300.1.1.1 REJECT\n10.0.0.0/33 REJECT\n192.0.2.1\nif 10.0.0.0/8\n", "bad.cidr").unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7], "{errs:?}");
        assert!(errs[0].to_string().starts_with("bad.cidr:3: "), "{}", errs[0]);
        assert!(errs[0].message.contains("203.0.113.0/24"), "{}", errs[0]);
    }

    #[test]
    fn the_file_is_reloaded_when_it_changes_and_a_bad_edit_keeps_the_last_good_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("banned.cidr");
        std::fs::write(&path, "203.0.113.0/24 REJECT first\n").unwrap();
        let f = CidrFile::open(&path).unwrap();
        assert!(matches!(f.lookup(ip("203.0.113.5")), CidrMatch::Listed { .. }));
        // A different size is a change even within the file system's time resolution.
        std::fs::write(&path, "# emptied\n198.51.100.0/24 REJECT second\n").unwrap();
        assert_eq!(f.lookup(ip("203.0.113.5")), CidrMatch::NotListed);
        assert!(matches!(f.lookup(ip("198.51.100.5")), CidrMatch::Listed { .. }));
        std::fs::write(&path, "nonsense here\n").unwrap();
        assert!(matches!(f.lookup(ip("198.51.100.5")), CidrMatch::Listed { .. }), "last good table kept");
        assert!(CidrFile::open(&path).unwrap_err()[0].line == 1);
    }
}
