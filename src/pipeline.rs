//! One message through extract → decide → store, committed as one transaction.
//!
//! Exactly one outcome per message, whatever crashes:
//! * before anything is done, the message is looked up by its source key (mailbox,
//!   UIDVALIDITY, UID or Maildir name) and by the SHA-256 of its bytes: if it is recorded,
//!   it is only filed away again (the crash came between commit and filing);
//! * the message row, its case(s), their history and the queued reply are written in one
//!   SQLite transaction: a crash before `COMMIT` leaves nothing, after it leaves everything;
//! * the same message delivered twice (same Message-ID, sender, redirect and evidence,
//!   different bytes, e.g. another Received: line) is recorded as a duplicate and handled
//!   once; a Message-ID alone proves nothing (small MTAs reuse them, a bounce is resent by
//!   several people).

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use jiff::{SignedDuration, Timestamp};

use crate::cases::{
    sha256_hex, MessageId, CaseState, EventKind, MessageSource, NewCase, NewEvent, NewMessage,
    Outcome, RawMessage, Store, StoreError, StoreOptions, DAEMON_ACTOR,
};
use crate::config::Config;
use crate::decide::{decide, Action, Context, Decision, Referenced, ReferencedCase};
use crate::extract::{extract, Evidence, ExtractOptions, ReturnPath};
use crate::intake::{Disposition, Fetched, SourceKey};
use crate::reply::{BuildError, Builder, Thread};
use crate::types::CaseRef;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("templates: {0}")]
    Templates(#[from] crate::reply::RenderError),
    /// Asked to do what would repeat an action (reprocessing a handled message without --force).
    #[error("{0}")]
    Refused(String),
}

/// Where an automatic reply goes: the Return-Path (RFC 3834 §4), else the person who
/// redirected the message (Resent-From, RFC 5322 §3.6.6), else From.
pub fn reply_recipient(ev: &Evidence) -> Option<&str> {
    match &ev.headers.return_path {
        ReturnPath::Address(a) => Some(a.as_str()),
        ReturnPath::Null => None,
        ReturnPath::Absent => ev.headers.resent_from.as_deref().or(ev.headers.from.as_deref()),
    }
}

/// What makes two deliveries with one Message-ID the same message: author, redirect,
/// status code and banned IPs (lower-cased where case does not matter).
fn identity(ev: &Evidence) -> serde_json::Value {
    let lower = |s: &Option<String>| s.as_deref().map(str::to_ascii_lowercase);
    let mut ips: Vec<String> = ev.valid_ips().iter().map(IpAddr::to_string).collect();
    ips.sort();
    serde_json::json!({
        "from": lower(&ev.headers.from),
        "resent_from": lower(&ev.headers.resent_from),
        "resent_message_id": ev.headers.resent_message_id,
        "code": ev.status_code.map(|c| c.to_string()),
        "ips": ips,
    })
}

/// [`identity`] of a recorded message, from its stored evidence JSON.
fn identity_of_recorded(v: &serde_json::Value) -> serde_json::Value {
    let h = &v["headers"];
    let lower = |k: &str| h[k].as_str().map(str::to_ascii_lowercase);
    let mut ips: Vec<String> = v["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| f["problem"].is_null())
                .filter_map(|f| f["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    serde_json::json!({
        "from": lower("from"),
        "resent_from": lower("resent_from"),
        "resent_message_id": h["resent_message_id"].as_str(),
        "code": v["status_code"].as_str(),
        "ips": ips,
    })
}

/// The message being recorded: its bytes, their hash, and its row when it is recorded
/// already (reprocess).
struct Taken<'a> {
    fetched: &'a Fetched,
    sha: &'a str,
    existing: Option<MessageId>,
    /// `existing` was handled before (not quarantined): it may have a case and a reply
    /// already, which must not be made twice.
    handled_before: bool,
}

/// The result of taking one message through.
#[derive(Debug, Clone)]
pub struct Processed {
    pub disposition: Disposition,
    /// It was recorded before (a restart after a crash); nothing new was written.
    pub already_recorded: bool,
    pub queued_reply: bool,
    pub action: Option<Action>,
    pub cases: Vec<CaseRef>,
}

impl Processed {
    /// What became of the message, as the metrics count it: `already_recorded`,
    /// `quarantined`, `ignored` or `processed` (the `messages.outcome` written).
    pub fn outcome(&self) -> &'static str {
        if self.already_recorded {
            "already_recorded"
        } else if self.disposition == Disposition::Quarantine {
            Outcome::Quarantined.as_str()
        } else if self.action == Some(Action::Ignore) {
            Outcome::Ignored.as_str()
        } else {
            Outcome::Processed.as_str()
        }
    }
}

/// A message extracted ahead of its transaction (outside the store lock), so the async
/// enrich step can look at its evidence: the hash of its bytes, and the evidence or why
/// extraction failed.
pub struct Prepared {
    sha: String,
    ev: Result<Evidence, String>,
}

impl Prepared {
    pub fn evidence(&self) -> Option<&Evidence> {
        self.ev.as_ref().ok()
    }
}

pub struct Pipeline {
    /// The provider's list (None: not configured); see [`crate::enrich`].
    blocklist: Option<std::sync::Arc<crate::blocklist::Blocklist>>,
    auto_delist_first: bool,
    extract: ExtractOptions,
    /// Every reply is made by this one builder (shared with staff actions and the
    /// blocklist link).
    builder: std::sync::Arc<Builder>,
    max_per_day: u32,
    /// At most this many automatic replies to one domain per hour.
    max_per_domain_per_hour: u32,
    trusted_authserv_id: Option<String>,
    store: StoreOptions,
}

fn source_of(key: &SourceKey) -> MessageSource {
    match key {
        SourceKey::Imap { mailbox, uidvalidity, uid } => {
            MessageSource::Imap { mailbox: mailbox.clone(), uidvalidity: *uidvalidity, uid: *uid }
        }
        SourceKey::Maildir { dir, unique } => MessageSource::Maildir { path: format!("{dir}/{unique}") },
        SourceKey::File { path } => MessageSource::File { path: path.clone() },
    }
}

fn disposition_of(outcome: &str) -> Disposition {
    if outcome == Outcome::Quarantined.as_str() {
        Disposition::Quarantine
    } else {
        Disposition::Processed
    }
}

impl Pipeline {
    pub fn new(cfg: &Config) -> Result<Pipeline, PipelineError> {
        let builder = Builder::from_config(&cfg.replies, cfg.store.sla)?;
        Ok(Pipeline {
            blocklist: None,
            auto_delist_first: false,
            extract: ExtractOptions { max_bytes: cfg.max_message_bytes },
            builder: std::sync::Arc::new(builder),
            max_per_day: cfg.replies.max_per_recipient_per_day,
            max_per_domain_per_hour: cfg.replies.max_per_domain_per_hour,
            trusted_authserv_id: cfg.auth.trusted_authserv_id.clone(),
            store: StoreOptions {
                sla: SignedDuration::from_secs(cfg.store.sla.as_secs() as i64),
                ..StoreOptions::default()
            },
        })
    }

    /// Look requests' IPs up on this blocklist before recording them (the daemon sets it
    /// once the list has passed its start-up check).
    pub fn set_blocklist(&mut self, blocklist: std::sync::Arc<crate::blocklist::Blocklist>, auto_delist_first: bool) {
        self.blocklist = Some(blocklist);
        self.auto_delist_first = auto_delist_first;
    }

    /// The reply builder, for the other parts of the daemon that write to senders.
    pub fn builder(&self) -> std::sync::Arc<Builder> {
        std::sync::Arc::clone(&self.builder)
    }

    pub fn has_blocklist(&self) -> bool {
        self.blocklist.is_some()
    }

    /// Extract a message ahead of its transaction. Extraction is written never to panic; if
    /// it does anyway, the message is kept aside with the reason rather than taking the
    /// daemon down.
    pub fn prepare(&self, f: &Fetched) -> Prepared {
        let ev = catch_unwind(AssertUnwindSafe(|| with_source_size(extract(&f.raw, &self.extract), f))).map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into())
        });
        Prepared { sha: sha256_hex(&f.raw), ev }
    }

    /// The async step between extract and record: blocklist lookups for the message's IPs.
    /// Never call it with the store locked.
    pub async fn enrich(&self, p: &Prepared) -> crate::enrich::Enrichment {
        crate::enrich::enrich(self.blocklist.as_deref(), self.auto_delist_first, p.evidence()).await
    }

    pub fn store_options(&self) -> StoreOptions {
        self.store.clone()
    }

    /// If this source key is recorded, where the message belongs.
    pub fn recorded_disposition(&self, store: &Store, key: &SourceKey) -> Result<Option<Disposition>, StoreError> {
        let row = match key {
            SourceKey::Imap { mailbox, uidvalidity, uid } => store.find_message_by_source(mailbox, *uidvalidity, *uid)?,
            _ => None,
        };
        Ok(row.map(|r| disposition_of(&r.outcome)))
    }

    /// Take one message through extract → decide → one transaction.
    ///
    /// The look-ups (already recorded? a duplicate? the open case for the IP? the rate limit?)
    /// run inside that transaction, under the write lock: another writer (a second process,
    /// a staff command) cannot change their answer before the commit, so a message can never
    /// fail on `UNIQUE messages.sha256` nor open a second case. Inside a [`Store::batch`] the
    /// batch is that transaction.
    pub fn process(&self, store: &mut Store, f: &Fetched, now: Timestamp) -> Result<Processed, PipelineError> {
        let prepared = self.prepare(f);
        self.process_enriched(store, f, prepared, &crate::enrich::Enrichment::default(), now)
    }

    /// [`Pipeline::process`] with the message extracted and enriched beforehand (the lookups
    /// done outside the store lock).
    pub fn process_enriched(
        &self,
        store: &mut Store,
        f: &Fetched,
        prepared: Prepared,
        enrichment: &crate::enrich::Enrichment,
        now: Timestamp,
    ) -> Result<Processed, PipelineError> {
        if !store.connection().is_autocommit() {
            return self.process_in(store, f, prepared, enrichment, now);
        }
        let mut batch = store.batch()?;
        let done = self.process_in(&mut batch, f, prepared, enrichment, now)?;
        batch.commit()?;
        Ok(done)
    }

    fn process_in(
        &self,
        store: &mut Store,
        f: &Fetched,
        prepared: Prepared,
        enrichment: &crate::enrich::Enrichment,
        now: Timestamp,
    ) -> Result<Processed, PipelineError> {
        let Prepared { sha, ev } = prepared;
        let seen = match self.recorded_disposition(store, &f.key)? {
            Some(d) => Some(d),
            None => store.find_message_by_sha256(&sha)?.map(|r| disposition_of(&r.outcome)),
        };
        if let Some(disposition) = seen {
            tracing::info!(source = %f.key, "already recorded; filing it again");
            return Ok(Processed { disposition, already_recorded: true, queued_reply: false, action: None, cases: vec![] });
        }

        let ev = match ev {
            Ok(ev) => ev,
            Err(why) => return self.quarantine(store, f, &sha, &format!("extraction failed: {why}"), now),
        };

        if let Some(first) = self.duplicate_of(store, &ev)? {
            return self.record_duplicate(store, f, &sha, &ev, first, now);
        }

        let d = self.decide_with_store(store, &ev)?;
        self.record(store, Taken { fetched: f, sha: &sha, existing: None, handled_before: false }, &ev, &d, enrichment, now)
    }

    fn decide_with_store(&self, store: &Store, ev: &Evidence) -> Result<Decision, StoreError> {
        let referenced = match ev.case_ref {
            None => Referenced::NotLooked,
            Some(r) => match store.case(r)? {
                Some(c) => Referenced::Found(ReferencedCase {
                    case_ref: r,
                    awaiting_info: c.state == CaseState::AwaitingInfo,
                    status_code: c.status(),
                    ip: c.ip_addr(),
                    asked: c.state == CaseState::AwaitingInfo && c.ip.is_some(),
                    closed: !c.state.is_active() && c.ip.is_some(),
                }),
                None => Referenced::Unknown,
            },
        };
        Ok(decide(ev, &Context { referenced, trusted_authserv_id: self.trusted_authserv_id.clone() }))
    }

    /// Run a recorded message (a quarantined one, usually) through again, updating its record
    /// in place: `delistd reprocess`. Its place in the source does not change.
    ///
    /// Only a quarantined message, unless `force`: a handled one would be answered again.
    /// With `force`, its record is updated, but no reply is queued if one was queued for it
    /// before, and no case is opened where it opened one, or where its IP has one in any state.
    ///
    /// One transaction, look-ups included, so a daemon (or another staff command) cannot
    /// change their answer before the commit.
    pub fn reprocess(&self, store: &mut Store, id: MessageId, now: Timestamp, force: bool) -> Result<Processed, PipelineError> {
        let mut batch = store.batch()?;
        let done = self.reprocess_in(&mut batch, id, now, force)?;
        batch.commit()?;
        Ok(done)
    }

    fn reprocess_in(&self, store: &mut Store, id: MessageId, now: Timestamp, force: bool) -> Result<Processed, PipelineError> {
        let row = store.message(id)?.ok_or_else(|| StoreError::Invalid(format!("no message {}", id.0)))?;
        let handled_before = row.outcome != Outcome::Quarantined.as_str();
        if handled_before && !force {
            return Err(PipelineError::Refused(format!(
                "message {} was handled already ({}), not quarantined; `delistd reprocess --force {}` runs it \
                 again without a second reply or case",
                id.0, row.outcome, id.0
            )));
        }
        let raw = store
            .message_raw(id)?
            .ok_or_else(|| StoreError::Invalid(format!("message {} has no stored copy to reprocess", id.0)))?;
        let key = match &row.source {
            MessageSource::Imap { mailbox, uidvalidity, uid } => {
                SourceKey::Imap { mailbox: mailbox.clone(), uidvalidity: *uidvalidity, uid: *uid }
            }
            MessageSource::Maildir { path } | MessageSource::File { path } => SourceKey::File { path: path.clone() },
        };
        let f = Fetched { key, size: row.size, raw };
        // The same guarded extraction as intake (see `prepare`).
        let Prepared { sha, ev } = self.prepare(&f);
        let ev = match ev {
            Ok(ev) => ev,
            Err(_) => {
                let tx = store.transaction()?;
                tx.set_outcome(id, Outcome::Quarantined, Some("extraction failed again on reprocess"))?;
                tx.commit()?;
                return Ok(Processed { disposition: Disposition::Quarantine, already_recorded: false, queued_reply: false, action: None, cases: vec![] });
            }
        };
        let d = self.decide_with_store(store, &ev)?;
        self.record(store, Taken { fetched: &f, sha: &sha, existing: Some(id), handled_before }, &ev, &d, &crate::enrich::Enrichment::default(), now)
    }

    /// A message already recorded that is this same message: same Message-ID, same author,
    /// same redirect (Resent-From, Resent-Message-ID) and the same evidence (code and IPs).
    /// The same bounce resent by a second person, or two bounces from a small MTA that
    /// numbers its Message-IDs by spool inode (`<4@host>` for different people and IPs),
    /// are different messages and each is handled. (Same source key or same bytes are
    /// caught before extraction.)
    fn duplicate_of(&self, store: &Store, ev: &Evidence) -> Result<Option<crate::cases::MessageRow>, StoreError> {
        let Some(mid) = &ev.headers.message_id else { return Ok(None) };
        let row = store.find_message_by_message_id(mid)?;
        let mine = identity(ev);
        Ok(row.filter(|r| {
            r.evidence
                .as_deref()
                .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
                .is_some_and(|v| identity_of_recorded(&v) == mine)
        }))
    }

    fn new_message<'a>(&self, f: &'a Fetched, sha: &str, ev: Option<&Evidence>, now: Timestamp) -> NewMessage<'a> {
        NewMessage {
            source: source_of(&f.key),
            message_id: ev.and_then(|e| e.headers.message_id.clone()),
            sender: ev.and_then(|e| e.headers.from.clone()),
            subject: ev.and_then(|e| e.headers.subject.clone()),
            received_at: now,
            size: f.size,
            sha256: sha.to_string(),
            raw: RawMessage::Blob(&f.raw),
            evidence: ev.and_then(|e| serde_json::to_string(e).ok()),
            decision: None,
            action: None,
            outcome: Outcome::Processed,
            error: None,
        }
    }

    fn quarantine(&self, store: &mut Store, f: &Fetched, sha: &str, why: &str, now: Timestamp) -> Result<Processed, PipelineError> {
        let mut m = self.new_message(f, sha, None, now);
        m.outcome = Outcome::Quarantined;
        m.error = Some(why.to_string());
        let tx = store.transaction()?;
        tx.insert_message(&m)?;
        tx.commit()?;
        tracing::warn!(source = %f.key, error = why, outcome = "quarantined", "message kept aside");
        Ok(Processed { disposition: Disposition::Quarantine, already_recorded: false, queued_reply: false, action: None, cases: vec![] })
    }

    fn record_duplicate(
        &self,
        store: &mut Store,
        f: &Fetched,
        sha: &str,
        ev: &Evidence,
        first: crate::cases::MessageRow,
        now: Timestamp,
    ) -> Result<Processed, PipelineError> {
        let mut m = self.new_message(f, sha, Some(ev), now);
        m.outcome = Outcome::Ignored;
        m.error = Some(format!("duplicate of message {} (same Message-ID, sender, redirect and evidence)", first.id.0));
        let tx = store.transaction()?;
        tx.insert_message(&m)?;
        tx.commit()?;
        tracing::info!(source = %f.key, duplicate_of = first.id.0, outcome = "ignored", "same message delivered twice");
        Ok(Processed { disposition: Disposition::Processed, already_recorded: false, queued_reply: false, action: Some(Action::Ignore), cases: vec![] })
    }

    /// The one transaction: message, case(s), history, queued reply.
    fn record(
        &self,
        store: &mut Store,
        taken: Taken<'_>,
        ev: &Evidence,
        d: &Decision,
        enr: &crate::enrich::Enrichment,
        now: Timestamp,
    ) -> Result<Processed, PipelineError> {
        let Taken { fetched: f, sha, existing, handled_before } = taken;
        let sender = reply_recipient(ev).or(ev.headers.from.as_deref()).unwrap_or("").to_string();
        // Look-ups first (the transaction below is the only write).
        let mut existing_for_ip: Vec<(IpAddr, Option<crate::cases::CaseRow>)> = Vec::new();
        if d.action == Action::Acknowledge || (d.action == Action::FollowUp && d.reply == Some(crate::decide::ReplyKind::Acknowledge)) {
            for ip in &d.banned_ips {
                let case = match store.open_case_for_ip(*ip)? {
                    // Run again by force: a case the IP had, closed since, is still the answer
                    // to this same request; a second one would be a second case for it.
                    None if handled_before => store.latest_case_for_ip(*ip)?,
                    c => c,
                };
                existing_for_ip.push((*ip, case));
            }
        }
        // The case(s) this message opened when it was handled before, to use again.
        let opened_before = match (existing, handled_before) {
            (Some(id), true) => store.cases_opened_by(id)?,
            _ => Vec::new(),
        };
        let answered_before = match (existing, handled_before) {
            (Some(id), true) => store.replies_caused_by(id)? > 0,
            _ => false,
        };
        // auto_delist_first honours the first request of an IP only: which IPs never had a case.
        let mut first_ever: Vec<IpAddr> = Vec::new();
        if enr.auto_delist_first {
            for (ip, _) in &existing_for_ip {
                if !store.ip_had_case(*ip)? {
                    first_ever.push(*ip);
                }
            }
        }
        // Cases closed at once because their IP is on no source of the blocklist.
        let mut not_listed: Vec<CaseRef> = Vec::new();
        let listing = |tx: &crate::cases::Tx<'_>, case: CaseRef, ip: IpAddr, not_listed: &mut Vec<CaseRef>| {
            apply_listing(tx, case, ip, enr, first_ever.contains(&ip), now).map(|closed| {
                if closed {
                    not_listed.push(case);
                }
            })
        };
        let recipient = reply_recipient(ev).map(str::to_string);
        let suppressed = match (&d.reply, &recipient) {
            (None, _) => None,
            (Some(_), _) if answered_before => Some("answered already (message run again)".to_string()),
            (Some(_), None) => Some("no address to reply to (null or missing Return-Path and From)".to_string()),
            (Some(_), Some(to)) if self.is_ourselves(to) => Some(format!("{to} is our own address")),
            (Some(_), Some(to)) => {
                // Counted on the real mailbox (no `victim+1@`, `Victim@` variants each with an
                // allowance of their own) and on its domain, so a forged batch cannot use
                // the desk to flood one target.
                let n = store.replies_to_mailbox_since(
                    to,
                    now - SignedDuration::from_hours(24),
                    now - SignedDuration::from_hours(1),
                    now,
                )?;
                let mailbox = crate::cases::mailbox_key(to);
                if n.mailbox >= self.max_per_day {
                    Some(format!("{} replies to {mailbox} in 24 h already (limit {})", n.mailbox, self.max_per_day))
                } else if n.domain >= self.max_per_domain_per_hour {
                    let domain = mailbox.rsplit_once('@').map_or("", |(_, d)| d).to_string();
                    Some(format!("{} replies to {domain} in the last hour already (limit {})", n.domain, self.max_per_domain_per_hour))
                } else {
                    None
                }
            }
        };

        let mut m = self.new_message(f, sha, Some(ev), now);
        m.decision = serde_json::to_string(d).ok();
        m.action = Some(d.action);
        m.outcome = if d.action == Action::Ignore { Outcome::Ignored } else { Outcome::Processed };

        let tx = store.transaction()?;
        let msg = match existing {
            Some(id) => {
                tx.rerecord_message(id, &m)?;
                id
            }
            None => tx.insert_message(&m)?,
        };
        let event = |case: CaseRef, kind: EventKind, text: String| NewEvent {
            case,
            kind,
            actor: DAEMON_ACTOR.to_string(),
            text: Some(text),
            message: Some(msg),
            outbox: None,
            at: now,
        };
        let ndr = ev.ndr_line().map(|l| l.text.clone());
        let new_case = |ip: Option<IpAddr>, awaiting: bool| NewCase {
            ip,
            status_code: d.status_code,
            ndr_line: ndr.clone(),
            sender: sender.clone(),
            language: ev.language,
            opened_by: Some(msg),
            awaiting_info: awaiting,
        };

        let mut cases: Vec<CaseRef> = Vec::new();
        // A closed case written on whose IP has another active case (see FollowUp below).
        let mut reopened_elsewhere = false;
        match d.action {
            Action::Acknowledge => {
                for (ip, existing) in &existing_for_ip {
                    match existing {
                        Some(c) => {
                            tx.add_event(&event(c.case_ref, EventKind::Message, format!("new request for {ip}, already open")))?;
                            cases.push(c.case_ref);
                        }
                        None => {
                            let c = tx.open_case(&new_case(Some(*ip), false), now)?;
                            listing(&tx, c, *ip, &mut not_listed)?;
                            cases.push(c);
                        }
                    }
                }
            }
            Action::FollowUp => {
                if let Some(r) = d.case_ref {
                    tx.add_event(&event(r, EventKind::Message, d.reason.clone()))?;
                    cases.push(r);
                    let case = tx.case(r)?;
                    let awaiting = case.as_ref().is_some_and(|c| c.state == CaseState::AwaitingInfo);
                    // The thread (issue 11): a person's message, not an automatic one (RFC
                    // 3834), on a case staff must look at again. Delivery reports of our
                    // replies are `Ignore`, never here.
                    if let Some(c) = case.as_ref().filter(|_| !ev.is_automatic()) {
                        match c.state {
                            // Answer to a staff question: open, the clock given back, marked.
                            CaseState::AwaitingInfo if c.ip.is_some() => {
                                tx.resume_answered(r, Some(msg), now)?;
                            }
                            CaseState::Open => tx.mark_needs_attention(r)?,
                            // Written again on a closed case: open with a fresh SLA, marked; the
                            // `reopened` reply (decide) says so, unless a guard suppresses it.
                            CaseState::Resolved | CaseState::Rejected if c.ip.is_some() => {
                                // Unless a newer request for the IP opened a case since: the
                                // work is there (one IP, one active case), so that case is
                                // marked and this one stays closed, with no "reopened" reply.
                                match c.ip_addr().map(|ip| tx.open_case_for_ip(ip)).transpose()?.flatten() {
                                    Some(other) => {
                                        let o = other.case_ref;
                                        tx.mark_needs_attention(o)?;
                                        tx.add_event(&event(o, EventKind::Message, format!("the sender wrote on {r} ({}); {o} is the active case for its IP", c.state)))?;
                                        tx.add_event(&event(r, EventKind::Note, format!("not reopened: {o} is already {} for its IP", other.state)))?;
                                        cases.push(o);
                                        reopened_elsewhere = true;
                                    }
                                    None => tx.reopen_by_sender(r, Some(msg), now)?,
                                }
                            }
                            // Closed with no IP: nothing to reopen; staff see it marked.
                            CaseState::Resolved | CaseState::Rejected => tx.mark_needs_attention(r)?,
                            CaseState::AwaitingInfo => {}
                        }
                    }
                    if awaiting && d.reply == Some(crate::decide::ReplyKind::Acknowledge) {
                        if let (Some(code), Some(ip)) = (d.status_code, d.banned_ips.first()) {
                            tx.complete_case(r, code, *ip, ndr.as_deref(), Some(msg), now)?;
                            listing(&tx, r, *ip, &mut not_listed)?;
                        }
                        // Further IPs in the same follow-up get cases of their own.
                        for (ip, existing) in existing_for_ip.iter().skip(1) {
                            match existing {
                                Some(c) => cases.push(c.case_ref),
                                None => {
                                    let c = tx.open_case(&new_case(Some(*ip), false), now)?;
                                    listing(&tx, c, *ip, &mut not_listed)?;
                                    cases.push(c);
                                }
                            }
                        }
                    }
                }
            }
            Action::MissingInfo => match opened_before.first() {
                Some(r) => {
                    tx.add_event(&event(*r, EventKind::Message, "message run again".into()))?;
                    cases.push(*r);
                }
                None => cases.push(tx.open_case(&new_case(None, true), now)?),
            },
            Action::RedirectPortal | Action::TenantSupport => {}
            Action::Ignore => {
                if let Some(r) = d.case_ref {
                    if tx.case(r)?.is_some() {
                        tx.add_event(&event(r, EventKind::Message, d.reason.clone()))?;
                        cases.push(r);
                    }
                }
            }
        }

        // Cases opened without a reply say so: nobody has told the sender.
        if let Some(why) = &d.unanswered {
            for r in &cases {
                tx.add_event(&event(*r, EventKind::Note, why.clone()))?;
            }
        }

        // The reply's cases and their IPs (parallel lists, as in the acknowledgement). Cases
        // closed as not listed are answered with `not_listed` when nothing else is left open;
        // otherwise the acknowledgement names only the cases that stay open.
        let mut reply_kind = d.reply;
        if reopened_elsewhere && reply_kind == Some(crate::decide::ReplyKind::Reopened) {
            // Nothing was reopened; the active case was acknowledged when it opened.
            reply_kind = None;
        }
        let mut reply_cases: Vec<(CaseRef, Option<IpAddr>)> =
            cases.iter().enumerate().map(|(i, c)| (*c, d.banned_ips.get(i).copied())).collect();
        if !not_listed.is_empty() && d.reply == Some(crate::decide::ReplyKind::Acknowledge) {
            let (closed, open): (Vec<_>, Vec<_>) = reply_cases.into_iter().partition(|(c, _)| not_listed.contains(c));
            if open.is_empty() {
                reply_kind = Some(crate::decide::ReplyKind::NotListed);
                reply_cases = closed;
            } else {
                reply_cases = open;
            }
        }
        let mut queued = false;
        let mut queued_kind = None;
        if let (Some(kind), Some(to), None) = (reply_kind, &recipient, &suppressed) {
            let cases: Vec<CaseRef> = reply_cases.iter().map(|(c, _)| *c).collect();
            let due = match cases.first() {
                Some(r) => tx.case(*r)?.and_then(|c| c.due_at),
                None => None,
            };
            let refs: Vec<String> = cases.iter().map(CaseRef::to_string).collect();
            let mut vars = self.builder.request_vars(ev, d, &refs, due);
            if reply_cases.len() != d.banned_ips.len() || kind == crate::decide::ReplyKind::NotListed {
                vars.ips = reply_cases.iter().filter_map(|(_, ip)| ip.map(|i| i.to_string())).collect();
            }
            let thread = Thread {
                to,
                case: cases.first().copied(),
                in_reply_to: ev.headers.message_id.as_deref(),
                references: &ev.headers.references,
            };
            match self.builder.build(kind, ev.language, &vars, &thread, now) {
                Ok(built) => {
                    tx.queue_reply(&built.into_new_reply(cases.first().copied(), Some(msg), DAEMON_ACTOR), now)?;
                    queued = true;
                    queued_kind = Some(kind);
                }
                Err(BuildError::Render(e)) => return Err(e.into()),
                Err(BuildError::Compose(e)) => {
                    // A sender address we cannot write a reply to: recorded, not retried.
                    tx.set_outcome(msg, m.outcome, Some(&format!("reply not composed: {e}")))?;
                }
            }
        } else if let Some(why) = &suppressed {
            tx.set_outcome(msg, m.outcome, Some(&format!("reply suppressed: {why}")))?;
            // Staff see it on the case: the sender was not told.
            for r in &cases {
                tx.add_event(&event(*r, EventKind::Note, format!("automatic reply suppressed: {why}")))?;
            }
        }
        tx.commit()?;
        if let Some(kind) = queued_kind {
            crate::metrics::reply_queued(kind.name());
        }

        tracing::info!(
            source = %f.key,
            message_id = ev.headers.message_id.as_deref().unwrap_or("-"),
            from = ev.headers.from.as_deref().unwrap_or("-"),
            action = %d.action,
            code = d.status_code.map(|c| c.to_string()).as_deref().unwrap_or("-"),
            ips = %d.banned_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","),
            cases = %cases.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
            reply = if queued { "queued" } else if suppressed.is_some() { "suppressed" } else { "none" },
            not_listed = not_listed.len(),
            suppressed = suppressed.as_deref().or(d.unanswered.as_deref()).unwrap_or("-"),
            outcome = m.outcome.as_str(),
            reason = %d.reason,
            "message handled"
        );
        Ok(Processed { disposition: Disposition::Processed, already_recorded: false, queued_reply: queued, action: Some(d.action), cases })
    }

    fn is_ourselves(&self, to: &str) -> bool {
        let from = &self.builder.settings().from;
        let ours = from.rsplit_once('<').map(|(_, a)| a.trim_end_matches('>')).unwrap_or(from);
        ours.trim().eq_ignore_ascii_case(to.trim())
    }
}

/// Record what the blocklist said of a case's IP, on the case just opened or completed.
/// Returns true when the case was closed because the IP is on no source.
fn apply_listing(
    tx: &crate::cases::Tx<'_>,
    case: CaseRef,
    ip: IpAddr,
    enr: &crate::enrich::Enrichment,
    first_ever: bool,
    now: Timestamp,
) -> Result<bool, StoreError> {
    use crate::blocklist::Listing;
    match enr.listings.get(&ip) {
        None => Ok(false),
        Some(Listing::Listed { source, since, reason }) => {
            tx.record_listing(
                case,
                crate::cases::ListingRecord { source, reason: reason.as_deref(), since: *since },
                now,
            )?;
            tx.blocklist_note(case, format!("{ip} is listed on {source}: {}", reason.as_deref().unwrap_or("(no reason given)")), now)?;
            if first_ever {
                tx.mark_auto_delist(case)?;
                tx.blocklist_note(case, format!("first request ever for {ip}: delist_command will run (auto_delist_first)"), now)?;
            }
            Ok(false)
        }
        Some(Listing::NotListed) => {
            tx.resolve_not_listed(case, &enr.sources, now)?;
            Ok(true)
        }
        Some(Listing::Unknown { why }) => {
            tx.blocklist_note(case, format!("blocklist lookup for {ip} gave no answer ({why}); left for staff as usual"), now)?;
            Ok(false)
        }
    }
}

/// The evidence of a message as the source had it: a message larger than the cap was read
/// only up to the cap (the reader stops there), so `extract`, which sees exactly the cap,
/// cannot tell by itself; the size the source reports can.
fn with_source_size(mut ev: Evidence, f: &Fetched) -> Evidence {
    if f.size > f.raw.len() as u64 {
        ev.truncated = true;
        ev.size = ev.size.max(usize::try_from(f.size).unwrap_or(usize::MAX));
    }
    ev
}
