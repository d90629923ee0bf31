//! The provider's blocklist itself: is this IP listed, where, and why. An I/O edge, like
//! `intake/`: the rest of delistd sees one call, [`Blocklist::check`], and one answer,
//! [`Listing`].
//!
//! * [`rfc5782`]  DNSBL query names, answer meaning, the §5 test entries. Pure.
//! * [`dnsbl`]    DNSBL zones over DNS (hickory-resolver on tokio, TTL-honouring cache).
//! * [`cidr`]     a Postfix `cidr:` table on disk, reloaded when it changes.
//! * [`command`]  the optional `delist_command` that takes an IP off the list.
//! * [`recheck`]  the daemon task: open cases whose IP left the list are resolved.
//!
//! Lookups happen before a message's transaction and never while the store is locked
//! (see `enrich`).

pub mod cidr;
pub mod command;
pub mod dnsbl;
pub mod recheck;
pub mod rfc5782;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::BlocklistConfig;
use cidr::{CidrError, CidrFile, CidrMatch};
use dnsbl::{Dnsbl, ZoneAnswer, ZoneTestError};

/// What the blocklist says of one IP, all sources together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// On the list: which source (a DNSBL zone, or `cidr:<path>`), since when if the
    /// source says, and why if it says.
    Listed { source: String, since: Option<Timestamp>, reason: Option<String> },
    /// On no configured source.
    NotListed,
    /// At least one source could not answer (timeout, SERVFAIL) and none said "listed".
    Unknown { why: String },
}

impl Listing {
    pub fn result(&self) -> &'static str {
        match self {
            Listing::Listed { .. } => "listed",
            Listing::NotListed => "not_listed",
            Listing::Unknown { .. } => "unknown",
        }
    }
}

/// Why the blocklist could not be set up. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error("blocklist resolver: {0}")]
    Resolver(String),
    #[error("{}", zone_test_text(.0))]
    ZoneTest(Vec<ZoneTestError>),
    #[error("blocklist.cidr_file: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Cidr(Vec<CidrError>),
}

/// One sentence per zone: `DNSBL zone Z fails the RFC 5782 test entries: a; b`.
fn zone_test_text(problems: &[ZoneTestError]) -> String {
    let mut zones: Vec<&str> = problems.iter().map(|p| p.zone.as_str()).collect();
    zones.dedup();
    zones
        .iter()
        .map(|z| {
            let each: Vec<&str> = problems.iter().filter(|p| p.zone == *z).map(|p| p.problem.as_str()).collect();
            format!("DNSBL zone {z} fails the RFC 5782 test entries: {}", each.join("; "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl BlocklistError {
    /// Only unreachable zones: the check may pass later (exit 75, not 78).
    pub fn is_temporary(&self) -> bool {
        matches!(self, BlocklistError::ZoneTest(p) if p.iter().all(|e| e.unreachable))
    }
}

/// The configured sources. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Blocklist {
    dnsbl: Option<Dnsbl>,
    cidr: Option<CidrFile>,
    timeout: Duration,
}

/// Lookups of one request, by IP.
pub type Listings = HashMap<IpAddr, Listing>;

impl Blocklist {
    /// Build the sources and check them: the CIDR file must load, and every DNSBL zone must
    /// pass the RFC 5782 §5 test entries. Called at start-up and by `check-config --connect`.
    pub async fn start(cfg: &BlocklistConfig) -> Result<Arc<Blocklist>, BlocklistError> {
        let b = Blocklist::unchecked(cfg)?;
        if let Some(d) = &b.dnsbl {
            d.self_test().await.map_err(BlocklistError::ZoneTest)?;
            tracing::info!(zones = %d.zones().join(","), "DNSBL zones pass the RFC 5782 test entries");
        }
        Ok(Arc::new(b))
    }

    /// Build the sources without the DNSBL test (tests of a zone that would fail it).
    pub fn unchecked(cfg: &BlocklistConfig) -> Result<Blocklist, BlocklistError> {
        let dnsbl = if cfg.dnsbl_zones.is_empty() {
            None
        } else {
            Some(
                Dnsbl::new(cfg.dnsbl_zones.clone(), &cfg.nameservers, cfg.timeout)
                    .map_err(|e| BlocklistError::Resolver(e.to_string()))?,
            )
        };
        let cidr = match &cfg.cidr_file {
            Some(p) => Some(CidrFile::open(p).map_err(BlocklistError::Cidr)?),
            None => None,
        };
        Ok(Blocklist { dnsbl, cidr, timeout: cfg.timeout })
    }

    /// The sources, for messages: `bl.example.net, cidr:/etc/postfix/banned_senders.cidr`.
    pub fn describe(&self) -> String {
        let mut s: Vec<String> = self.dnsbl.iter().flat_map(|d| d.zones().iter().cloned()).collect();
        if let Some(c) = &self.cidr {
            s.push(format!("cidr:{}", c.path().display()));
        }
        s.join(", ")
    }

    /// Every source asked at once; the first listing (in configuration order: zones, then
    /// the CIDR file) wins. "Not listed" needs every source to say so.
    pub async fn check(&self, ip: IpAddr) -> Listing {
        let mut unknown: Vec<String> = Vec::new();
        if let Some(c) = &self.cidr {
            if let CidrMatch::Listed { reason, line } = c.lookup(ip) {
                // The local file answers without a round trip: no need to wait for DNS.
                return Listing::Listed {
                    source: format!("cidr:{}", c.path().display()),
                    since: None,
                    reason: Some(format!("{reason} (line {line})")),
                };
            }
        }
        if let Some(d) = &self.dnsbl {
            let answers = futures::future::join_all(d.zones().iter().map(|z| d.query(z, ip))).await;
            for (zone, answer) in d.zones().iter().zip(answers) {
                match answer {
                    ZoneAnswer::Listed { codes, reason } => {
                        let reason = reason.or_else(|| {
                            Some(format!(
                                "listed ({})",
                                codes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
                            ))
                        });
                        return Listing::Listed { source: zone.clone(), since: None, reason };
                    }
                    ZoneAnswer::NotListed => {}
                    ZoneAnswer::Unknown(why) => unknown.push(why),
                }
            }
        }
        if unknown.is_empty() {
            Listing::NotListed
        } else {
            Listing::Unknown { why: unknown.join("; ") }
        }
    }

    /// [`Blocklist::check`], counted in the metrics (the re-check loop's way in).
    pub async fn check_counted(&self, ip: IpAddr) -> Listing {
        let started = std::time::Instant::now();
        let l = self.check(ip).await;
        count(&l, started.elapsed());
        l
    }

    /// Look up several IPs concurrently, counted in the metrics. Bounded: whatever has not
    /// answered after twice the timeout (an A query, then a TXT query) is `Unknown`.
    pub async fn check_all(&self, ips: &[IpAddr]) -> Listings {
        let bound = self.timeout * 2 + Duration::from_millis(200);
        let each = ips.iter().map(|ip| async move {
            let started = std::time::Instant::now();
            let l = match tokio::time::timeout(bound, self.check(*ip)).await {
                Ok(l) => l,
                Err(_) => Listing::Unknown { why: format!("no answer within {bound:?}") },
            };
            count(&l, started.elapsed());
            (*ip, l)
        });
        futures::future::join_all(each).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cidr: &std::path::Path) -> BlocklistConfig {
        BlocklistConfig { cidr_file: Some(cidr.to_path_buf()), ..BlocklistConfig::default() }
    }

    #[tokio::test]
    async fn a_cidr_only_blocklist_answers_listed_and_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.cidr");
        std::fs::write(&p, "203.0.113.0/24 REJECT 5.7.511 banned\n").unwrap();
        let b = Blocklist::start(&cfg(&p)).await.unwrap();
        let l = b.check_all(&["203.0.113.9".parse().unwrap(), "192.0.2.1".parse().unwrap()]).await;
        assert_eq!(l[&"192.0.2.1".parse::<IpAddr>().unwrap()], Listing::NotListed);
        match &l[&"203.0.113.9".parse::<IpAddr>().unwrap()] {
            Listing::Listed { source, reason, .. } => {
                assert!(source.starts_with("cidr:") && source.ends_with("b.cidr"), "{source}");
                assert_eq!(reason.as_deref(), Some("REJECT 5.7.511 banned (line 1)"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_bad_cidr_file_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.cidr");
        std::fs::write(&p, "# ok\n203.0.113.0/24\n").unwrap();
        let e = Blocklist::start(&cfg(&p)).await.unwrap_err().to_string();
        assert!(e.contains("b.cidr:2:"), "{e}");
    }
}

/// One lookup in the metrics, labelled by result and the kind of source only: zones and
/// files are few, IPs are not (and never a label).
fn count(l: &Listing, took: Duration) {
    let (result, source) = match l {
        Listing::Listed { source, .. } if source.starts_with("cidr:") => ("listed", "cidr"),
        Listing::Listed { .. } => ("listed", "dnsbl"),
        Listing::NotListed => ("not_listed", "none"),
        Listing::Unknown { .. } => ("unknown", "none"),
    };
    crate::metrics::blocklist_lookup(result, source, took);
}
