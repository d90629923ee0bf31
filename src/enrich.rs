//! The pipeline's async step between extract and record: what the record needs from outside
//! delistd (today: the blocklist), looked up before the message's transaction and never
//! while the store is locked. Lookups of one message run concurrently and are bounded
//! by the blocklist's timeout, so a list that does not answer delays a request by at most
//! that much, and the request is then handled as before (noted on its case).

use std::net::IpAddr;

use crate::blocklist::{Blocklist, Listings};
use crate::decide::{decide, Context, Referenced};
use crate::extract::Evidence;
use crate::types::StatusCode;

/// What was looked up for one message.
#[derive(Debug, Clone, Default)]
pub struct Enrichment {
    /// The listing of each IP of a complete 5.7.511 request; empty when nothing was looked
    /// up (no blocklist configured, or not such a request).
    pub listings: Listings,
    /// The sources asked, for the history (`bl.example.net, cidr:/etc/...`).
    pub sources: String,
    /// `auto_delist_first` is on: a listed IP that never had a case gets `delist_command`.
    pub auto_delist_first: bool,
}

/// The IPs worth looking up: those of a complete 5.7.511 request (the decision table's
/// banned IPs), decided here without the store, as the store's facts only matter for
/// follow-ups, whose IPs are the same.
pub fn ips_to_look_up(ev: &Evidence) -> Vec<IpAddr> {
    let d = decide(ev, &Context { referenced: Referenced::NotLooked });
    if d.status_code == Some(StatusCode::BANNED_SENDER) && d.missing.is_empty() {
        d.banned_ips
    } else {
        Vec::new()
    }
}

/// Look up the IPs of one message's evidence.
pub async fn enrich(blocklist: Option<&Blocklist>, auto_delist_first: bool, ev: Option<&Evidence>) -> Enrichment {
    let (Some(b), Some(ev)) = (blocklist, ev) else { return Enrichment::default() };
    let ips = ips_to_look_up(ev);
    if ips.is_empty() {
        return Enrichment::default();
    }
    let started = std::time::Instant::now();
    let listings = b.check_all(&ips).await;
    // One line per message: what the lookups added before its transaction could start
    // (scripts/bench-backlog.sh --dnsbl reads elapsed_us).
    let results: Vec<String> = listings.iter().map(|(ip, l)| format!("{ip}={}", l.result())).collect();
    tracing::debug!(ips = %results.join(","), elapsed_us = started.elapsed().as_micros() as u64, "blocklist lookups");
    Enrichment { listings, sources: b.describe(), auto_delist_first }
}
