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
    let d = decide(ev, &Context { referenced: Referenced::NotLooked, ..Context::default() });
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::blocklist::Listing;
    use crate::cases::{CaseFilter, CaseState, Store};
    use crate::config::Config;
    use crate::intake::{Fetched, SourceKey};
    use crate::pipeline::Pipeline;

    fn pipeline() -> Pipeline {
        let src = "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"m\"\n[smtp]\nreply_dir = \"o\"\n[replies]\nfrom = \"Desk <desk@example.net>\"\n";
        Pipeline::new(&Config::parse(src, Path::new("/tmp/x.toml")).unwrap()).unwrap()
    }

    fn request(n: u32, ips: &[&str]) -> Fetched {
        let lines: Vec<String> =
            ips.iter().map(|ip| format!("550 5.7.511 Access denied, banned sender[{ip}].")).collect();
        let raw = format!(
            "From: Postmaster <pm{n}@sender.example>\r\nTo: desk@example.net\r\nSubject: please delist\r\nMessage-ID: <r{n}@sender.example>\r\n\r\nWe get:\r\n\r\n{}\r\n",
            lines.join("\r\n")
        );
        Fetched { key: SourceKey::File { path: format!("r{n}.eml") }, size: raw.len() as u64, raw: raw.into_bytes() }
    }

    fn enrichment(l: &[(&str, Listing)]) -> Enrichment {
        Enrichment {
            listings: l.iter().map(|(ip, l)| (ip.parse().unwrap(), l.clone())).collect(),
            sources: "bl.example.net".into(),
            auto_delist_first: false,
        }
    }

    fn listed() -> Listing {
        Listing::Listed { source: "bl.example.net".into(), since: None, reason: Some("spam trap".into()) }
    }

    #[test]
    fn only_complete_5_7_511_requests_are_looked_up() {
        let p = pipeline();
        let ev = |f: &Fetched| p.prepare(f).evidence().cloned().unwrap();
        assert_eq!(ips_to_look_up(&ev(&request(1, &["203.0.113.7", "198.51.100.4"]))).len(), 2);
        let no_ip = Fetched { raw: b"Subject: x\r\n\r\n550 5.7.511 Access denied.\r\n".to_vec(), ..request(2, &[]) };
        assert!(ips_to_look_up(&ev(&no_ip)).is_empty());
    }

    #[test]
    fn not_listed_everywhere_is_answered_at_once_and_listed_cases_say_why() {
        let p = pipeline();
        let mut s = Store::open_in_memory(p.store_options()).unwrap();
        let now = jiff::Timestamp::now();

        // Not listed: the case is closed as not_listed and the reply says so.
        let f = request(1, &["203.0.113.7"]);
        let done = p
            .process_enriched(&mut s, &f, p.prepare(&f), &enrichment(&[("203.0.113.7", Listing::NotListed)]), now)
            .unwrap();
        assert!(done.queued_reply);
        let c = s.case(done.cases[0]).unwrap().unwrap();
        assert_eq!((c.state, c.resolution.as_deref()), (CaseState::Resolved, Some("not_listed")));
        let replies = s.due_replies(now, 10).unwrap();
        assert!(replies[0].subject.contains("not on our block list"), "{}", replies[0].subject);

        // One listed, one not: the acknowledgement names only the case left open.
        let f = request(2, &["198.51.100.4", "198.51.100.5"]);
        let e = enrichment(&[("198.51.100.4", listed()), ("198.51.100.5", Listing::NotListed)]);
        let done = p.process_enriched(&mut s, &f, p.prepare(&f), &e, now).unwrap();
        assert_eq!(done.cases.len(), 2);
        let open = s.case(done.cases[0]).unwrap().unwrap();
        assert_eq!(open.state, CaseState::Open);
        let l = open.listing.unwrap();
        assert_eq!((l.source.as_str(), l.reason.as_deref()), ("bl.example.net", Some("spam trap")));
        assert_eq!(s.case(done.cases[1]).unwrap().unwrap().resolution.as_deref(), Some("not_listed"));
        let ack = s.due_replies(now, 10).unwrap().pop().unwrap();
        let text = String::from_utf8_lossy(&ack.raw).to_string();
        assert!(ack.subject.contains("Delisting request received"), "{}", ack.subject);
        assert!(
            ack.subject.contains(&done.cases[0].to_string())
                && text.contains("198.51.100.4")
                && !text.contains("198.51.100.5"),
            "{text}"
        );

        // No answer: handled as without a blocklist, noted on the case.
        let f = request(3, &["192.0.2.9"]);
        let e = enrichment(&[("192.0.2.9", Listing::Unknown { why: "bl.example.net: timed out".into() })]);
        let done = p.process_enriched(&mut s, &f, p.prepare(&f), &e, now).unwrap();
        let d = s.case_detail(done.cases[0]).unwrap().unwrap();
        assert_eq!(d.case.state, CaseState::Open);
        assert!(d
            .events
            .iter()
            .any(|e| e.actor == "blocklist" && e.text.as_deref().is_some_and(|t| t.contains("timed out"))));

        let open = s.list_cases(&CaseFilter { states: vec![CaseState::Open], ..Default::default() }, now).unwrap();
        assert_eq!(open.len(), 2);
    }
}
