//! The typed views the desk returns. The CLI's `--json` and the web's `/api/...` serialise
//! these same structs, so the two cannot drift apart. Times are RFC 3339 UTC.

use jiff::Timestamp;
use serde::Serialize;

use super::text::MessageText;
use crate::cases::{CaseDetail, CaseRow, CaseState, SlaStatus};

/// One case in a list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseSummary {
    #[serde(rename = "ref")]
    pub case_ref: String,
    pub state: &'static str,
    pub ip: Option<String>,
    pub status_code: Option<String>,
    pub sender: String,
    pub language: String,
    pub assignee: Option<String>,
    pub opened_at: String,
    pub due_at: Option<String>,
    pub first_response_at: Option<String>,
    pub resolved_at: Option<String>,
    /// Seconds until due (negative: overdue), for open cases.
    pub seconds_left: Option<i64>,
    /// "in 5h12m", "overdue by 3h12m", "met", "missed", "-".
    pub sla: String,
    pub ndr_line: Option<String>,
    /// How a closed case was closed: delisted, not_listed, rejected.
    pub resolution: Option<String>,
    /// Where the blocklist lists the IP (a DNSBL zone, `cidr:<path>`), and why.
    pub listing_source: Option<String>,
    pub listing_reason: Option<String>,
    pub listing_since: Option<String>,
    pub listing_checked_at: Option<String>,
    /// A person wrote since the last staff action.
    pub needs_attention: bool,
}

impl CaseSummary {
    pub fn new(c: &CaseRow, now: Timestamp) -> CaseSummary {
        CaseSummary {
            case_ref: c.case_ref.to_string(),
            state: c.state.as_str(),
            ip: c.ip.clone(),
            status_code: c.status_code.clone(),
            sender: c.sender.clone(),
            language: c.language.clone(),
            assignee: c.assignee.clone(),
            opened_at: c.opened_at.to_string(),
            due_at: c.due_at.map(|t| t.to_string()),
            first_response_at: c.first_response_at.map(|t| t.to_string()),
            resolved_at: c.resolved_at.map(|t| t.to_string()),
            seconds_left: c.due_at.filter(|_| c.state == CaseState::Open).map(|d| d.as_second() - now.as_second()),
            sla: SlaStatus::of(c, now).describe(),
            ndr_line: c.ndr_line.clone(),
            resolution: c.resolution.clone(),
            listing_source: c.listing.as_ref().map(|l| l.source.clone()),
            listing_reason: c.listing.as_ref().and_then(|l| l.reason.clone()),
            listing_since: c.listing.as_ref().and_then(|l| l.since).map(|t| t.to_string()),
            listing_checked_at: c.listing.as_ref().and_then(|l| l.checked_at).map(|t| t.to_string()),
            needs_attention: c.needs_attention,
        }
    }

    /// How urgent, for colours: `overdue`, `due-soon` (within 6 h), `ok` or `closed`.
    pub fn urgency(&self) -> &'static str {
        match self.seconds_left {
            Some(s) if s < 0 => "overdue",
            Some(s) if s < 6 * 3600 => "due-soon",
            Some(_) => "ok",
            None if self.state == "awaiting_info" => "waiting",
            None => "closed",
        }
    }
}

/// A page of cases with the cursor of the next one (keyset pagination).
#[derive(Debug, Clone, Serialize)]
pub struct CasePage {
    pub cases: Vec<CaseSummary>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// One entry of a case's history.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub text: Option<String>,
    pub message: Option<i64>,
    pub reply: Option<i64>,
}

/// One message of a case's thread.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub id: i64,
    pub received_at: String,
    pub source: crate::cases::MessageSource,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub action: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub evidence: Option<serde_json::Value>,
    pub decision: Option<serde_json::Value>,
    /// The decoded text (HTML converted to text); `None` when the raw bytes are not kept.
    pub text: Option<String>,
    /// Attachment file names (or types), listed, never opened.
    pub attachments: Vec<String>,
}

/// One reply queued for the case.
#[derive(Debug, Clone, Serialize)]
pub struct ReplyView {
    pub id: i64,
    pub state: String,
    pub recipient: String,
    pub message_id: String,
    pub subject: String,
    pub attempts: u32,
    pub queued_at: String,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
}

/// A case with its history, thread and replies.
#[derive(Debug, Clone, Serialize)]
pub struct CaseView {
    pub case: CaseSummary,
    pub events: Vec<EventView>,
    pub messages: Vec<MessageView>,
    pub replies: Vec<ReplyView>,
}

impl CaseView {
    /// `texts` holds the decoded text of each message, by position in `d.messages`.
    pub fn new(d: &CaseDetail, texts: Vec<Option<MessageText>>, now: Timestamp) -> CaseView {
        let parse = |s: &Option<String>| s.as_deref().and_then(|t| serde_json::from_str(t).ok());
        let mut texts = texts.into_iter();
        CaseView {
            case: CaseSummary::new(&d.case, now),
            events: d
                .events
                .iter()
                .map(|e| EventView {
                    at: e.at.to_string(),
                    kind: e.kind.clone(),
                    actor: e.actor.clone(),
                    text: e.text.clone(),
                    message: e.message.map(|m| m.0),
                    reply: e.outbox.map(|o| o.0),
                })
                .collect(),
            messages: d
                .messages
                .iter()
                .map(|m| {
                    let t = texts.next().flatten();
                    MessageView {
                        id: m.id.0,
                        received_at: m.received_at.to_string(),
                        source: m.source.clone(),
                        message_id: m.message_id.clone(),
                        sender: m.sender.clone(),
                        subject: m.subject.clone(),
                        size: m.size,
                        sha256: m.sha256.clone(),
                        action: m.action.clone(),
                        outcome: m.outcome.clone(),
                        error: m.error.clone(),
                        evidence: parse(&m.evidence),
                        decision: parse(&m.decision),
                        attachments: t.as_ref().map(|t| t.attachments.clone()).unwrap_or_default(),
                        text: t.map(|t| t.text),
                    }
                })
                .collect(),
            replies: d
                .replies
                .iter()
                .map(|r| ReplyView {
                    id: r.id.0,
                    state: r.state.to_string(),
                    recipient: r.recipient.clone(),
                    message_id: r.message_id.clone(),
                    subject: r.subject.clone(),
                    attempts: r.attempts,
                    queued_at: r.queued_at.to_string(),
                    sent_at: r.sent_at.map(|t| t.to_string()),
                    last_error: r.last_error.clone(),
                })
                .collect(),
        }
    }
}

/// The board's counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub overdue: u64,
    pub due_soon: u64,
    pub open: u64,
    pub awaiting_info: u64,
    pub resolved_today: u64,
    /// Cases a person wrote on since the last staff action.
    pub needs_attention: u64,
}
