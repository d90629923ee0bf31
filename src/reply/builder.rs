//! The one reply builder: every message delistd writes to a sender is made here, whoever
//! asked for it (the pipeline's automatic replies, a staff resolution, a staff reply or
//! question, the blocklist link, `inspect --reply`).
//!
//! It is made once from the configuration: the templates (embedded, with the
//! `templates_dir` overrides), our From, the Message-ID domain, the portal and support
//! URLs and the SLA. Given a kind, a language, the template values and the thread
//! (recipient, case, In-Reply-To, References) it renders and composes the exact RFC 5322
//! bytes and returns what the outbox needs.

use std::path::Path;

use jiff::Timestamp;
use serde_json::Value as Json;

use super::compose::{compose, new_message_id, ComposeError, ReplyEnvelope};
use super::render::{RenderError, RenderedReply, ReplyVars, Templates};
use crate::cases::{CaseDetail, MessageId, NewReply};
use crate::decide::{Decision, ReplyKind};
use crate::extract::Evidence;
use crate::types::{CaseRef, Lang};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("rendering the reply: {0}")]
    Render(#[from] RenderError),
    #[error("composing the reply: {0}")]
    Compose(#[from] ComposeError),
}

/// Where a reply goes in its thread.
#[derive(Debug, Clone, Copy)]
pub struct Thread<'a> {
    /// The recipient (the request's Return-Path, else its From; a case's sender).
    pub to: &'a str,
    /// The case it belongs to: names the Message-ID (`DL-000042.<unique>@domain`).
    pub case: Option<CaseRef>,
    /// Message-ID answered, without `<>`.
    pub in_reply_to: Option<&'a str>,
    /// The answered message's References (its Message-ID is added last by the composer).
    pub references: &'a [String],
}

/// A reply made: its Message-ID, subject, body and the whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub kind: ReplyKind,
    pub message_id: String,
    pub subject: String,
    pub body: String,
    /// The whole RFC 5322 message (CRLF line ends).
    pub raw: Vec<u8>,
    pub recipient: String,
}

impl Built {
    /// The outbox row for it, answering `caused_by`, queued by `actor`.
    pub fn into_new_reply(self, case: Option<CaseRef>, caused_by: Option<MessageId>, actor: &str) -> NewReply {
        NewReply {
            case,
            caused_by,
            recipient: self.recipient,
            message_id: self.message_id,
            subject: self.subject,
            raw: self.raw,
            actor: actor.to_string(),
            kind: Some(self.kind),
        }
    }
}

/// The reply settings of the configuration (`[replies]` and the SLA).
#[derive(Debug, Clone)]
pub struct Settings {
    pub from: String,
    pub message_id_domain: String,
    pub portal_url: String,
    pub support_url: String,
    pub sla_hours: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            from: "Delist desk <delist@delistd.invalid>".into(),
            message_id_domain: "delistd.invalid".into(),
            sla_hours: 48,
            portal_url: "https://sender.office.com/".into(),
            support_url: "https://admin.microsoft.com/#/support".into(),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Builder {
    templates: Templates,
    settings: Settings,
}

impl Builder {
    pub fn new(templates: Templates, settings: Settings) -> Builder {
        Builder { templates, settings }
    }

    /// From the configuration: the embedded templates with `templates_dir`'s overrides.
    pub fn from_config(replies: &crate::config::Replies, sla: std::time::Duration) -> Result<Builder, RenderError> {
        Ok(Builder::new(load_templates(replies.templates_dir.as_deref())?, settings_of(replies, sla)))
    }

    /// The embedded templates with default settings (`inspect`, which has no config).
    pub fn embedded() -> Builder {
        Builder::new(Templates::embedded(), Settings::default())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// The values every reply shares (URLs, SLA); the rest left empty.
    pub fn base_vars(&self) -> ReplyVars {
        ReplyVars {
            sla_hours: self.settings.sla_hours,
            portal_url: self.settings.portal_url.clone(),
            support_url: self.settings.support_url.clone(),
            ..ReplyVars::default()
        }
    }

    /// The values a reply to an incoming request sees.
    pub fn request_vars(&self, ev: &Evidence, d: &Decision, case_refs: &[String], due: Option<Timestamp>) -> ReplyVars {
        ReplyVars {
            case_refs: case_refs.to_vec(),
            ips: d.banned_ips.iter().map(|ip| ip.to_string()).collect(),
            status_code: d.status_code.map(|c| c.to_string()),
            ndr_line: ev.ndr_line().map(|l| l.text.clone()),
            missing: d.missing.clone(),
            original_subject: ev.headers.subject.clone(),
            // A redirected message is greeted as the person who redirected it, never as the
            // author of the bounce it carries ("Mail Delivery System").
            sender_name: if ev.headers.resent_from.is_some() {
                ev.headers.resent_from_name.clone()
            } else {
                ev.headers.from_name.clone()
            },
            portal_ips: d.portal_ips.iter().map(|ip| ip.to_string()).collect(),
            due,
            ..self.base_vars()
        }
    }

    /// The values a reply on a recorded case sees (staff replies, resolutions): the case's
    /// IP, code and deadline, the opening message's subject and sender name.
    pub fn case_vars(&self, d: &CaseDetail) -> ReplyVars {
        let c = &d.case;
        let opening = c.opened_by.and_then(|id| d.messages.iter().find(|m| m.id == id));
        let sender_name = opening
            .and_then(|m| m.evidence.as_deref())
            .and_then(|e| serde_json::from_str::<Json>(e).ok())
            .and_then(|v| v["headers"]["from_name"].as_str().map(str::to_string));
        ReplyVars {
            case_refs: vec![c.case_ref.to_string()],
            ips: c.ip.iter().cloned().collect(),
            status_code: c.status_code.clone(),
            ndr_line: c.ndr_line.clone(),
            original_subject: opening.and_then(|m| m.subject.clone()),
            sender_name,
            due: c.due_at,
            ..self.base_vars()
        }
    }

    pub fn render(&self, kind: ReplyKind, lang: Lang, vars: &ReplyVars) -> Result<RenderedReply, RenderError> {
        self.templates.render(kind, lang, vars)
    }

    /// Compose rendered text into the message for `thread`. Automatic kinds carry
    /// `Auto-Submitted` (RFC 3834 §5); a person's reply does not (see [`ReplyKind::is_automatic`]).
    pub fn compose(
        &self,
        kind: ReplyKind,
        lang: Lang,
        rendered: RenderedReply,
        thread: &Thread<'_>,
        now: Timestamp,
    ) -> Result<Built, ComposeError> {
        let message_id = new_message_id(thread.case, &self.settings.message_id_domain);
        let envelope = ReplyEnvelope {
            from: &self.settings.from,
            to: thread.to,
            message_id: &message_id,
            in_reply_to: thread.in_reply_to,
            references: thread.references,
            date: now,
            language: lang,
            automatic: kind.is_automatic(),
        };
        let raw = compose(&envelope, &rendered)?;
        Ok(Built { kind, message_id, subject: rendered.subject, body: rendered.body, raw, recipient: thread.to.to_string() })
    }

    /// Render and compose.
    pub fn build(
        &self,
        kind: ReplyKind,
        lang: Lang,
        vars: &ReplyVars,
        thread: &Thread<'_>,
        now: Timestamp,
    ) -> Result<Built, BuildError> {
        let rendered = self.render(kind, lang, vars)?;
        Ok(self.compose(kind, lang, rendered, thread, now)?)
    }

    /// A reply on a recorded case: to its sender, in its language, answering the latest
    /// message of its thread (so the sender's client threads it there), with that
    /// message's References. `staff_text` fills `staff_note`.
    pub fn for_case(
        &self,
        d: &CaseDetail,
        kind: ReplyKind,
        staff_text: Option<String>,
        now: Timestamp,
    ) -> Result<(Built, Option<MessageId>), BuildError> {
        let c = &d.case;
        let answered = d.messages.iter().rev().find(|m| m.message_id.is_some());
        let references = answered.map(|m| references_of(m.evidence.as_deref())).unwrap_or_default();
        let vars = ReplyVars { staff_note: staff_text, ..self.case_vars(d) };
        let thread = Thread {
            to: &c.sender,
            case: Some(c.case_ref),
            in_reply_to: answered.and_then(|m| m.message_id.as_deref()),
            references: &references,
        };
        Ok((self.build(kind, c.lang(), &vars, &thread, now)?, answered.map(|m| m.id)))
    }
}

/// The References of a recorded message, from its stored evidence.
fn references_of(evidence: Option<&str>) -> Vec<String> {
    evidence
        .and_then(|e| serde_json::from_str::<Json>(e).ok())
        .and_then(|v| {
            v["headers"]["references"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
        })
        .unwrap_or_default()
}

fn load_templates(dir: Option<&Path>) -> Result<Templates, RenderError> {
    match dir {
        Some(dir) => Templates::from_dir(dir),
        None => Ok(Templates::embedded()),
    }
}

fn settings_of(r: &crate::config::Replies, sla: std::time::Duration) -> Settings {
    Settings {
        from: r.from.clone(),
        message_id_domain: r.message_id_domain.clone(),
        portal_url: r.portal_url.clone(),
        support_url: r.support_url.clone(),
        sla_hours: u32::try_from(sla.as_secs() / 3600).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn t() -> Timestamp {
        "2031-05-06T07:08:09Z".parse().unwrap()
    }

    fn builder() -> Builder {
        Builder::new(
            Templates::embedded(),
            Settings { from: "Delist desk <delist@example.test>".into(), message_id_domain: "example.test".into(), ..Settings::default() },
        )
    }

    fn thread<'a>(refs: &'a [String]) -> Thread<'a> {
        Thread { to: "postmaster@sender.example", case: Some(CaseRef(42)), in_reply_to: Some("req1@sender.example"), references: refs }
    }

    #[test]
    fn automatic_replies_say_so_and_staff_replies_do_not() {
        let b = builder();
        let vars = ReplyVars { case_refs: vec!["DL-000042".into()], staff_note: Some("Hello there.".into()), ..b.base_vars() };
        for kind in ReplyKind::ALL {
            let built = b.build(kind, Lang::En, &vars, &thread(&[]), t()).unwrap();
            let m = MessageParser::default().parse(&built.raw).unwrap();
            let auto = m.header_raw("Auto-Submitted").map(str::trim);
            if kind.is_automatic() {
                assert_eq!(auto, Some("auto-replied"), "{kind:?}");
            } else {
                assert_eq!(auto, None, "{kind:?}: a person's message is not automatic (RFC 3834 §5)");
                assert!(m.header_raw("X-Auto-Response-Suppress").is_none(), "{kind:?}");
            }
            assert!(built.message_id.starts_with("DL-000042."), "{}", built.message_id);
            assert!(built.message_id.ends_with("@example.test"), "{}", built.message_id);
            assert_eq!(m.in_reply_to().as_text(), Some("req1@sender.example"));
            assert_eq!(built.recipient, "postmaster@sender.example");
        }
    }

    #[test]
    fn the_settings_reach_the_template() {
        let b = Builder::new(
            Templates::embedded(),
            Settings { portal_url: "https://portal.test/x".into(), sla_hours: 24, ..Settings::default() },
        );
        let vars = ReplyVars { status_code: Some("5.7.612".into()), ..b.base_vars() };
        let r = b.render(ReplyKind::RedirectPortal, Lang::En, &vars).unwrap();
        assert!(r.body.contains("https://portal.test/x"), "{}", r.body);
        assert_eq!(b.base_vars().sla_hours, 24);
    }

    #[test]
    fn an_override_directory_is_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("staff_reply.en.txt"), "Subject: Ours\n\nCustom {{ case_tag }}: {{ staff_note }}\n").unwrap();
        let cfg = crate::config::Replies {
            from: "d@example.test".into(),
            message_id_domain: "example.test".into(),
            portal_url: "https://p.test/".into(),
            support_url: "https://s.test/".into(),
            max_per_recipient_per_day: 5,
            max_per_domain_per_hour: 30,
            templates_dir: Some(dir.path().to_path_buf()),
        };
        let b = Builder::from_config(&cfg, std::time::Duration::from_secs(48 * 3600)).unwrap();
        let vars = ReplyVars { case_refs: vec!["DL-000042".into()], staff_note: Some("hi".into()), ..b.base_vars() };
        let built = b.build(ReplyKind::StaffReply, Lang::En, &vars, &thread(&[]), t()).unwrap();
        assert_eq!(built.subject, "[DL-000042] Ours");
        assert_eq!(built.body, "Custom DL-000042: hi\n");
    }
}
