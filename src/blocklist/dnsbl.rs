//! DNSBL zones (RFC 5782) looked up with hickory-resolver on tokio.
//!
//! The resolver's own cache (a small LRU) keeps answers for their TTL, negative answers for
//! the SOA minimum (RFC 2308), so a burst of requests for one IP costs one query per zone.
//! Each lookup is bounded by the configured timeout, and a zone that does not answer in time
//! is `Unknown`, never "not listed".

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use super::rfc5782::{self, Answer};

/// What one zone says of one IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneAnswer {
    /// Listed: the return codes (127.0.0.x) and the TXT reason when the zone gives one.
    Listed {
        codes: Vec<std::net::Ipv4Addr>,
        reason: Option<String>,
    },
    NotListed,
    /// Timeout, SERVFAIL, refused, or an answer outside 127.0.0.0/8.
    Unknown(String),
}

/// A zone that failed the RFC 5782 §5 test entries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DNSBL zone {zone} fails the RFC 5782 test entries: {problem}")]
pub struct ZoneTestError {
    pub zone: String,
    pub problem: String,
    /// The zone did not answer (timeout, SERVFAIL): perhaps only for now, unlike a wrong answer.
    pub unreachable: bool,
}

pub struct Dnsbl {
    resolver: TokioResolver,
    zones: Vec<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Dnsbl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnsbl").field("zones", &self.zones).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Entries in the resolver's cache: a few hundred IPs × zones is plenty for a desk.
const CACHE_ENTRIES: usize = 1024;

impl Dnsbl {
    /// A resolver asking `nameservers` (UDP, TCP for truncated answers), or the system's
    /// (`/etc/resolv.conf`) when the list is empty.
    pub fn new(zones: Vec<String>, nameservers: &[SocketAddr], timeout: Duration) -> Result<Dnsbl, ResolveError> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let mut config = ResolverConfig::new();
            for ns in nameservers {
                config.add_name_server(NameServerConfig::new(*ns, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*ns, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        // One try per server within the timeout: a DNSBL that does not answer is reported
        // as unknown, rather than retried until the request has waited far too long.
        opts.attempts = 1;
        opts.cache_size = CACHE_ENTRIES;
        // The list's names are never in /etc/hosts, and a name is never a search-list guess.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        Ok(Dnsbl { resolver: builder.build(), zones, timeout })
    }

    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// Ask one zone about one IP, within the timeout.
    pub async fn query(&self, zone: &str, ip: IpAddr) -> ZoneAnswer {
        let name = rfc5782::query_name(ip, zone);
        let a = match tokio::time::timeout(self.timeout, self.resolver.ipv4_lookup(name.as_str())).await {
            Err(_) => return ZoneAnswer::Unknown(format!("{zone}: no answer within {:?}", self.timeout)),
            Ok(Ok(l)) => l.iter().map(|a| a.0).collect::<Vec<_>>(),
            Ok(Err(e)) => match negative(&e) {
                Some(()) => Vec::new(),
                None => return ZoneAnswer::Unknown(format!("{zone}: {e}")),
            },
        };
        match rfc5782::interpret(&a) {
            Answer::NotListed => ZoneAnswer::NotListed,
            Answer::Bogus(records) => {
                ZoneAnswer::Unknown(format!("{zone}: answer {records:?} is outside 127.0.0.0/8 (RFC 5782 §2.1)"))
            }
            Answer::Listed(codes) => {
                // The reason is a courtesy: a listing without a TXT record is still a listing.
                let reason = match tokio::time::timeout(self.timeout, self.resolver.txt_lookup(name.as_str())).await {
                    Ok(Ok(txt)) => txt.iter().find_map(|t| {
                        rfc5782::reason_text(&t.txt_data().iter().map(|b| b.to_vec()).collect::<Vec<_>>())
                    }),
                    _ => None,
                };
                ZoneAnswer::Listed { codes, reason }
            }
        }
    }

    /// RFC 5782 §5: 127.0.0.2 and ::FFFF:7F00:2 must be listed, 127.0.0.1 must not. A zone
    /// failing this is misconfigured, misspelt, or not a DNSBL at all; using it would answer
    /// senders wrongly, so it is refused.
    pub async fn self_test(&self) -> Result<(), Vec<ZoneTestError>> {
        let mut problems = Vec::new();
        for zone in &self.zones {
            let fail = |problem: String| ZoneTestError { zone: zone.clone(), problem, unreachable: false };
            let gone = |problem: String| ZoneTestError { zone: zone.clone(), problem, unreachable: true };
            for ip in rfc5782::MUST_BE_LISTED {
                match self.query(zone, ip).await {
                    ZoneAnswer::Listed { .. } => {}
                    ZoneAnswer::NotListed => problems.push(fail(format!("{ip} must be listed and is not"))),
                    ZoneAnswer::Unknown(why) => problems.push(gone(format!("{ip} could not be looked up: {why}"))),
                }
            }
            match self.query(zone, rfc5782::MUST_NOT_BE_LISTED).await {
                ZoneAnswer::NotListed => {}
                ZoneAnswer::Listed { .. } => problems.push(fail(format!(
                    "{} must not be listed and is (the zone would list every address)",
                    rfc5782::MUST_NOT_BE_LISTED
                ))),
                ZoneAnswer::Unknown(why) => {
                    problems.push(gone(format!("{} could not be looked up: {why}", rfc5782::MUST_NOT_BE_LISTED)))
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// `Some` when the error is a plain "no such name" (NXDOMAIN) or "no A record" (NOERROR,
/// empty): both mean not listed. SERVFAIL, REFUSED, timeouts are not answers.
fn negative(e: &ResolveError) -> Option<()> {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. })
            if *response_code == ResponseCode::NXDomain || *response_code == ResponseCode::NoError =>
        {
            Some(())
        }
        _ => None,
    }
}
