//! Staff messages to the sender: a free reply and a question (issue 11), with a preview of
//! the exact message before it is queued.
//!
//! Rules, here and nowhere else:
//! * only an agent writes; an empty text is refused, and so is a text longer than the
//!   templates carry ([`MAX_TEXT_CHARS`]), rather than cut without a word;
//! * a question needs an active case: a closed case is reopened first (asking moves the
//!   case to awaiting_info, which a closed case cannot go back to without a decision);
//! * a reply may go to a closed case: staff may have to answer a thank-you or explain a
//!   rejection after the fact, and the case stays closed (a reply is not a decision);
//! * the message is a person's: no `Auto-Submitted` (RFC 3834 §5 is for automatic
//!   responses), threaded to the sender's latest message, in the case's language, framed by
//!   the `staff_reply` / `staff_question` template's greeting and signature.

use jiff::Timestamp;
use serde::Serialize;

use super::{may_act, Actor, Desk, DeskError};
use crate::cases::{CaseDetail, MessageId, StaffMessage, StoreError};
use crate::decide::ReplyKind;
use crate::reply::{Builder, Built};
use crate::types::CaseRef;

/// Longest staff text, in characters: the renderer keeps at most this much of `staff_note`.
pub const MAX_TEXT_CHARS: usize = 4000;

/// The exact message `reply`/`ask` would queue (or did).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessagePreview {
    #[serde(rename = "case")]
    pub case_ref: String,
    /// `reply` or `ask`.
    pub action: &'static str,
    pub to: String,
    pub subject: String,
    /// The headers that matter to the reader: From, To, Subject, In-Reply-To, References,
    /// Content-Language (as they will be sent, RFC 2047 words decoded).
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The state the case will be in.
    pub state_after: &'static str,
    /// The queued message's outbox id (`None` for a preview).
    pub outbox: Option<i64>,
}

impl Desk<'_> {
    /// What [`Desk::reply`] would queue, without queuing it.
    pub fn preview_reply(&self, actor: &Actor, r: CaseRef, text: &str, builder: &Builder, now: Timestamp) -> Result<MessagePreview, DeskError> {
        let (d, built, _) = self.prepare(actor, r, StaffMessage::Reply, text, builder, now)?;
        Ok(preview(&d, StaffMessage::Reply, &built, None))
    }

    /// What [`Desk::ask`] would queue, without queuing it.
    pub fn preview_ask(&self, actor: &Actor, r: CaseRef, text: &str, builder: &Builder, now: Timestamp) -> Result<MessagePreview, DeskError> {
        let (d, built, _) = self.prepare(actor, r, StaffMessage::Ask, text, builder, now)?;
        Ok(preview(&d, StaffMessage::Ask, &built, None))
    }

    /// Write to the sender: queued in the outbox, in the history under the actor's name.
    pub fn reply(&mut self, actor: &Actor, r: CaseRef, text: &str, builder: &Builder, now: Timestamp) -> Result<MessagePreview, DeskError> {
        self.send(actor, r, StaffMessage::Reply, text, builder, now)
    }

    /// Ask the sender for information: queued like a reply, and the case waits for the
    /// answer (awaiting_info, SLA clock paused with its remaining time kept).
    pub fn ask(&mut self, actor: &Actor, r: CaseRef, text: &str, builder: &Builder, now: Timestamp) -> Result<MessagePreview, DeskError> {
        self.send(actor, r, StaffMessage::Ask, text, builder, now)
    }

    fn send(
        &mut self,
        actor: &Actor,
        r: CaseRef,
        what: StaffMessage,
        text: &str,
        builder: &Builder,
        now: Timestamp,
    ) -> Result<MessagePreview, DeskError> {
        let (d, built, answered) = self.prepare(actor, r, what, text, builder, now)?;
        let row = built.clone().into_new_reply(Some(r), answered, &actor.name);
        let id = self.store.staff_message(r, what, &actor.name, text.trim(), &row, now)?;
        Ok(preview(&d, what, &built, Some(id.0)))
    }

    /// The rules, then the message built exactly as it will be sent.
    fn prepare(
        &self,
        actor: &Actor,
        r: CaseRef,
        what: StaffMessage,
        text: &str,
        builder: &Builder,
        now: Timestamp,
    ) -> Result<(CaseDetail, Built, Option<MessageId>), DeskError> {
        may_act(actor)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(DeskError::Invalid("the text is empty: write what the sender should read".into()));
        }
        let n = text.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(DeskError::Invalid(format!(
                "the text has {n} characters; at most {MAX_TEXT_CHARS} fit in one message: shorten it or split it in two"
            )));
        }
        let d = self.detail(r)?;
        if what == StaffMessage::Ask && !d.case.state.is_active() {
            return Err(DeskError::Store(StoreError::WrongState { case: r, state: d.case.state, action: "ask (reopen it first)" }));
        }
        let kind = match what {
            StaffMessage::Reply => ReplyKind::StaffReply,
            StaffMessage::Ask => ReplyKind::StaffQuestion,
        };
        let (built, answered) = builder.for_case(&d, kind, Some(text.to_string()), now)?;
        Ok((d, built, answered))
    }
}

fn preview(d: &CaseDetail, what: StaffMessage, built: &Built, outbox: Option<i64>) -> MessagePreview {
    let parsed = mail_parser::MessageParser::default().parse(&built.raw);
    let mut headers = Vec::new();
    if let Some(m) = &parsed {
        // Not Date and Message-ID: they are minted again when the message is queued.
        for name in ["From", "To", "Subject", "In-Reply-To", "References", "Content-Language"] {
            if let Some(v) = m.header_raw(name) {
                let v = match name {
                    // Decoded, as the sender's client shows them.
                    "Subject" => built.subject.clone(),
                    _ => v.split_whitespace().collect::<Vec<_>>().join(" "),
                };
                headers.push((name.to_string(), v));
            }
        }
    }
    let state_after = match (what, d.case.state) {
        (StaffMessage::Ask, _) => "awaiting_info",
        (StaffMessage::Reply, s) => s.as_str(),
    };
    MessagePreview {
        case_ref: d.case.case_ref.to_string(),
        action: match what {
            StaffMessage::Reply => "reply",
            StaffMessage::Ask => "ask",
        },
        to: built.recipient.clone(),
        subject: built.subject.clone(),
        headers,
        body: built.body.clone(),
        state_after,
        outbox,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::store::tests::{imap_message, new_case, t};
    use crate::cases::{CaseState, Outcome, Store, StoreOptions};
    use crate::desk::Role;
    use mail_parser::MessageParser;

    /// A case opened by a French request whose Message-ID is `req1@sender.example`.
    fn case(s: &mut Store, now: Timestamp) -> CaseRef {
        let raw = b"Subject: delist\r\n\r\n550 5.7.511 banned sender[203.0.113.7]\r\n";
        let tx = s.transaction().unwrap();
        let mut m = imap_message(1, raw, now);
        m.message_id = Some("req1@sender.example".into());
        let m = tx.insert_message(&m).unwrap();
        let c = tx.open_case(&new_case("203.0.113.7", Some(m)), now).unwrap();
        tx.set_outcome(m, Outcome::Processed, None).unwrap();
        tx.commit().unwrap();
        c
    }

    fn setup() -> (Store, CaseRef, Timestamp) {
        let mut s = Store::open_in_memory(StoreOptions::default()).unwrap();
        let t0 = t("2025-03-01T10:00:00Z");
        let c = case(&mut s, t0);
        (s, c, t0)
    }

    #[test]
    fn a_staff_reply_is_a_persons_threaded_message_in_the_case_language() {
        let (mut s, c, t0) = setup();
        let b = Builder::embedded();
        let bob = Actor::agent("bob");
        let now = t0 + jiff::SignedDuration::from_hours(1);
        let p = Desk::new(&mut s).reply(&bob, c, "Nous avons vérifié.\nMerci.", &b, now).unwrap();
        assert_eq!(p.state_after, "open");
        let d = s.case_detail(c).unwrap().unwrap();
        let row = d.replies.iter().find(|r| Some(r.id.0) == p.outbox).expect("queued");
        assert_eq!(row.kind.as_deref(), Some("staff_reply"));
        assert!(row.subject.starts_with("[DL-000001] "), "{}", row.subject);
        let m = MessageParser::default().parse(&row.raw).unwrap();
        assert!(m.header_raw("Auto-Submitted").is_none(), "a person's reply is not automatic (RFC 3834 §5)");
        assert_eq!(m.in_reply_to().as_text(), Some("req1@sender.example"));
        assert_eq!(m.header_raw("Content-Language").map(str::trim), Some("fr"));
        let body = m.body_text(0).unwrap().replace("\r\n", "\n");
        assert!(body.starts_with("Bonjour"), "greeting in the case's language: {body}");
        assert!(body.contains("\nNous avons vérifié.\nMerci.\n"), "{body}");
        assert!(body.contains("Cordialement"), "signature: {body}");
        assert_eq!(body, p.body.replace("\r\n", "\n"), "the preview is the message");
        // In the history under the actor's name, with the text; first response recorded.
        let e = d.events.iter().find(|e| e.kind == "staff_reply").unwrap();
        assert_eq!((e.actor.as_str(), e.text.as_deref()), ("bob", Some("Nous avons vérifié.\nMerci.")));
        assert_eq!(d.case.first_response_at, Some(now));
    }

    #[test]
    fn the_rules_of_writing_to_the_sender() {
        let (mut s, c, t0) = setup();
        let b = Builder::embedded();
        let bob = Actor::agent("bob");
        let viewer = Actor { name: "vic".into(), role: Role::Viewer };
        let mut desk = Desk::new(&mut s);
        assert!(matches!(desk.reply(&viewer, c, "hi", &b, t0), Err(DeskError::Forbidden(_))));
        assert!(matches!(desk.ask(&viewer, c, "hi", &b, t0), Err(DeskError::Forbidden(_))));
        for empty in ["", "  \n\t "] {
            assert!(matches!(desk.reply(&bob, c, empty, &b, t0), Err(DeskError::Invalid(_))));
            assert!(matches!(desk.ask(&bob, c, empty, &b, t0), Err(DeskError::Invalid(_))));
        }
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        assert!(matches!(desk.reply(&bob, c, &long, &b, t0), Err(DeskError::Invalid(_))));
        // A preview queues nothing and changes nothing.
        let p = desk.preview_ask(&bob, c, "Which host?", &b, t0).unwrap();
        assert_eq!((p.action, p.state_after, p.outbox), ("ask", "awaiting_info", None));
        assert!(p.headers.iter().any(|(k, v)| k == "In-Reply-To" && v == "<req1@sender.example>"), "{:?}", p.headers);
        assert!(desk.detail(c).unwrap().replies.is_empty());
        assert_eq!(desk.detail(c).unwrap().case.state, CaseState::Open);
        // Asking pauses the case; a closed case cannot be asked, but can be written to.
        desk.ask(&bob, c, "Which host?", &b, t0).unwrap();
        assert_eq!(desk.detail(c).unwrap().case.state, CaseState::AwaitingInfo);
        let how = crate::desk::ResolveRequest {
            resolution: crate::cases::Resolution::Rejected,
            note: None,
            reply: false,
            note_for_sender: None,
            replies: None,
        };
        desk.resolve(&bob, c, how, t0).unwrap();
        let e = desk.ask(&bob, c, "Anything else?", &b, t0).unwrap_err();
        assert!(e.to_string().contains("reopen it first"), "{e}");
        let p = desk.reply(&bob, c, "It stays rejected.", &b, t0).unwrap();
        assert_eq!(p.state_after, "rejected");
        assert_eq!(desk.detail(c).unwrap().case.state, CaseState::Rejected);
    }

    #[test]
    fn any_staff_action_clears_the_attention_mark() {
        let (mut s, c, t0) = setup();
        let b = Builder::embedded();
        let bob = Actor::agent("bob");
        let mark = |s: &mut Store| {
            let tx = s.transaction().unwrap();
            tx.mark_needs_attention(c).unwrap();
            tx.commit().unwrap();
        };
        let marked = |s: &mut Store| s.case(c).unwrap().unwrap().needs_attention;
        type Act = fn(&mut Desk<'_>, &Actor, CaseRef, &Builder, Timestamp);
        let acts: [(&str, Act); 4] = [
            ("reply", |d, a, c, b, t| drop(d.reply(a, c, "hi", b, t).unwrap())),
            ("note", |d, a, c, _, t| d.note(a, c, "seen", t).unwrap()),
            ("assign", |d, a, c, _, t| d.assign(a, c, Some("carol"), t).unwrap()),
            ("ask", |d, a, c, b, t| drop(d.ask(a, c, "Which host?", b, t).unwrap())),
        ];
        for (name, act) in acts {
            mark(&mut s);
            assert!(marked(&mut s));
            let q = crate::desk::Query { attention: true, ..Default::default() };
            let listed = Desk::new(&mut s).list(&q, t0).unwrap();
            assert_eq!(listed.cases.len(), 1, "{name}");
            assert!(listed.cases[0].needs_attention);
            assert_eq!(Desk::new(&mut s).counts(t0).unwrap().needs_attention, 1);
            act(&mut Desk::new(&mut s), &bob, c, &b, t0);
            assert!(!marked(&mut s), "{name} clears the mark");
            assert_eq!(Desk::new(&mut s).counts(t0).unwrap().needs_attention, 0);
        }
    }
}
