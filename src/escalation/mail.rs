//! The staff mails of escalation: templates (`templates/staff/<kind>.<lang>.txt`, the same
//! format as the replies: a `Subject:` line, a blank line, the body) and the RFC 5322
//! message around them.
//!
//! These mails go to our own staff, never to a sender, and are marked
//! `Auto-Submitted: auto-generated` (RFC 3834 §5: automatic, not a reply to anything), so
//! that staff's own responders stay quiet.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use lettre::message::header::{ContentTransferEncoding, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, SinglePart};
use lettre::Message;
use minijinja::Environment;
use serde::Serialize;

use crate::reply::render::{new_env, one_line, MAX_SUBJECT_CHARS};
use crate::types::Lang;

/// The staff mail kinds, as template names and `outbox.kind`.
pub const KINDS: [&str; 3] = ["escalation_due_soon", "escalation_overdue", "escalation_digest"];

macro_rules! embedded {
    ($($kind:literal),*) => {
        &[$(
            (concat!($kind, ".en.txt"), include_str!(concat!("../../templates/staff/", $kind, ".en.txt"))),
            (concat!($kind, ".fr.txt"), include_str!(concat!("../../templates/staff/", $kind, ".fr.txt"))),
            (concat!($kind, ".it.txt"), include_str!(concat!("../../templates/staff/", $kind, ".it.txt"))),
            (concat!($kind, ".ja.txt"), include_str!(concat!("../../templates/staff/", $kind, ".ja.txt"))),
            (concat!($kind, ".de.txt"), include_str!(concat!("../../templates/staff/", $kind, ".de.txt"))),
        )*]
    };
}

const EMBEDDED: &[(&str, &str)] = embedded!("escalation_due_soon", "escalation_overdue", "escalation_digest");

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("staff template {name}: {source}")]
    Template { name: String, source: minijinja::Error },
    #[error("staff template {name} has no `Subject:` line before the first blank line")]
    NoSubject { name: String },
    #[error("cannot read staff template {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("no staff template {0}")]
    Missing(String),
    #[error("staff mail to {to:?}: {why}")]
    Address { to: String, why: String },
    #[error("building the staff mail: {0}")]
    Build(#[from] lettre::error::Error),
}

/// One case as a staff mail shows it. Text values are cleaned to one line.
#[derive(Debug, Clone, Serialize)]
pub struct CaseLine {
    pub case_ref: String,
    pub ip: String,
    pub sender: String,
    pub assignee: Option<String>,
    /// Local due time, `2030-01-02 18:00 CET`; none without an SLA clock.
    pub due_at: Option<String>,
    /// Time left before the due time (`5h59m`), when not yet due.
    pub left: Option<String>,
    /// Time past the due time, when overdue.
    pub over: Option<String>,
    /// Time since the case was opened (awaiting information).
    pub waiting: String,
    /// The case page, when a desk with a public URL is configured.
    pub link: Option<String>,
}

/// The templates in the configured staff language, English where one is missing.
#[derive(Debug)]
pub struct StaffTemplates {
    env: Environment<'static>,
    lang: Lang,
}

/// The template file for `kind` in `lang`: an override in `dir` first, then the embedded
/// one, then the embedded English one.
fn source(kind: &str, lang: Lang, dir: Option<&Path>) -> Result<(String, String), MailError> {
    for code in [lang.code(), "en"] {
        let file = format!("{kind}.{code}.txt");
        if let Some(dir) = dir {
            let path = dir.join(&file);
            if path.is_file() {
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| MailError::Io { path: path.display().to_string(), source })?;
                return Ok((path.display().to_string(), text));
            }
        }
        if let Some((_, src)) = EMBEDDED.iter().find(|(name, _)| *name == file) {
            return Ok((file, src.to_string()));
        }
    }
    Err(MailError::Missing(format!("{kind}.{}", lang.code())))
}

impl StaffTemplates {
    /// Load and test-render every staff template in `lang` (overrides from `dir`, e.g.
    /// `<templates_dir>/staff`), so a broken one stops the start with its file and line.
    pub fn load(lang: Lang, dir: Option<&Path>) -> Result<StaffTemplates, MailError> {
        let mut env = new_env();
        for kind in KINDS {
            let (name, text) = source(kind, lang, dir)?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text).replace("\r\n", "\n");
            let (first, rest) = text.split_once('\n').ok_or_else(|| MailError::NoSubject { name: name.clone() })?;
            let (blank, body) = rest.split_once('\n').unwrap_or((rest, ""));
            let subject = first.trim_start().strip_prefix("Subject:").filter(|s| !s.trim().is_empty());
            let Some(subject) = subject.filter(|_| blank.trim().is_empty()) else {
                return Err(MailError::NoSubject { name });
            };
            let err = |source| MailError::Template { name: name.clone(), source };
            env.add_template_owned(format!("{kind}.subject"), subject.to_string()).map_err(err)?;
            // Two empty lines for the subject and the blank line: errors keep the file's lines.
            env.add_template_owned(format!("{kind}.body"), format!("\n\n{body}")).map_err(err)?;
        }
        let t = StaffTemplates { env, lang };
        t.self_test()?;
        Ok(t)
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// Render `kind` with `ctx`: (subject, body).
    pub fn render(&self, kind: &str, ctx: &minijinja::Value) -> Result<(String, String), MailError> {
        let err = |source| MailError::Template { name: kind.to_string(), source };
        let subject = self.env.get_template(&format!("{kind}.subject")).and_then(|t| t.render(ctx)).map_err(err)?;
        let body = self.env.get_template(&format!("{kind}.body")).and_then(|t| t.render(ctx)).map_err(err)?;
        Ok((one_line(&subject, MAX_SUBJECT_CHARS), crate::reply::render::tidy_body(&body)))
    }

    /// Strict undefined fails only on the lines reached: render with every value set and
    /// with the optional ones unset.
    fn self_test(&self) -> Result<(), MailError> {
        let full = CaseLine {
            case_ref: "DL-000001".into(),
            ip: "192.0.2.1".into(),
            sender: "postmaster@example.com".into(),
            assignee: Some("alice".into()),
            due_at: Some("2030-01-01 10:00 UTC".into()),
            left: Some("1h".into()),
            over: Some("1h".into()),
            waiting: "3d".into(),
            link: Some("https://desk.example/cases/DL-000001".into()),
        };
        let bare = CaseLine { assignee: None, due_at: None, left: None, over: None, link: None, ..full.clone() };
        for c in [&full, &bare] {
            for kind in &KINDS[..2] {
                self.render(kind, &case_context(c, 48))?;
            }
            let lists = vec![c.clone()];
            self.render(KINDS[2], &digest_context("2030-01-01", &lists, &lists, &lists, &lists, "3d"))?;
        }
        self.render(KINDS[2], &digest_context("2030-01-01", &[], &[], &[], &[], "3d"))?;
        Ok(())
    }
}

/// What a stage warning's template sees.
pub fn case_context(c: &CaseLine, sla_hours: u32) -> minijinja::Value {
    minijinja::context! {
        case_ref => c.case_ref, ip => c.ip, sender => c.sender, assignee => c.assignee,
        due_at => c.due_at, left => c.left, over => c.over, waiting => c.waiting, link => c.link,
        sla_hours => sla_hours,
    }
}

/// What the digest's template sees.
pub fn digest_context(
    day: &str,
    overdue: &[CaseLine],
    due_today: &[CaseLine],
    needs_attention: &[CaseLine],
    awaiting_info: &[CaseLine],
    awaiting_after: &str,
) -> minijinja::Value {
    minijinja::context! {
        day => day,
        total => overdue.len() + due_today.len() + needs_attention.len() + awaiting_info.len(),
        overdue => overdue, due_today => due_today, needs_attention => needs_attention,
        awaiting_info => awaiting_info, awaiting_after => awaiting_after,
    }
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// The staff mail as RFC 5322 bytes (CRLF line ends).
pub fn compose(
    from: &str,
    to: &str,
    message_id: &str,
    date: jiff::Timestamp,
    lang: Lang,
    subject: &str,
    body: &str,
) -> Result<Vec<u8>, MailError> {
    let addr = |v: &str| -> Result<Mailbox, MailError> {
        if v.chars().any(char::is_control) {
            return Err(MailError::Address { to: v.to_string(), why: "control characters".into() });
        }
        v.trim().parse().map_err(|e: lettre::address::AddressError| MailError::Address { to: v.to_string(), why: e.to_string() })
    };
    let text = Body::new(body.to_string());
    let text = match text.encoding() {
        ContentTransferEncoding::Base64 => text,
        _ => Body::new(body.trim_end_matches(['\r', '\n']).to_string()),
    };
    let message = Message::builder()
        .from(addr(from)?)
        .to(addr(to)?)
        .subject(one_line(subject, MAX_SUBJECT_CHARS))
        .date(SystemTime::from(date))
        .message_id(Some(format!("<{message_id}>")))
        // RFC 3834 §5: generated by a process, not a reply to anything.
        .raw_header(raw_header("Auto-Submitted", "auto-generated".into()))
        .raw_header(raw_header("X-Auto-Response-Suppress", "All".into()))
        .raw_header(raw_header("Content-Language", lang.code().into()))
        .singlepart(SinglePart::plain(text))?;
    Ok(message.formatted())
}

/// Every embedded template, for the tests: (file name, text).
pub fn embedded() -> HashMap<&'static str, &'static str> {
    EMBEDDED.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_loads_and_lines_fit_78_columns() {
        for lang in Lang::ALL {
            StaffTemplates::load(lang, None).unwrap_or_else(|e| panic!("{lang}: {e}"));
        }
        // Rendered with typical values, every line of prose fits 78 columns (wide
        // characters count twice); the one-line-per-case lists may run longer.
        let c = CaseLine {
            case_ref: "DL-000042".into(),
            ip: "203.0.113.200".into(),
            sender: "postmaster@mail.example.com".into(),
            assignee: Some("alice".into()),
            due_at: Some("2030-01-02 18:00 CET".into()),
            left: Some("5h59m".into()),
            over: Some("12h30m".into()),
            waiting: "3d4h".into(),
            link: None,
        };
        for lang in Lang::ALL {
            let t = StaffTemplates::load(lang, None).unwrap();
            let l = vec![c.clone()];
            let mut bodies = vec![];
            for kind in &KINDS[..2] {
                bodies.push(t.render(kind, &case_context(&c, 48)).unwrap().1);
            }
            bodies.push(t.render(KINDS[2], &digest_context("2030-01-02", &l, &l, &l, &l, "3d")).unwrap().1);
            for body in bodies {
                for line in body.lines().filter(|l| !l.starts_with("  DL-")) {
                    let cols: usize = line.chars().map(|ch| if ch as u32 > 0x2E80 { 2 } else { 1 }).sum();
                    assert!(cols <= 78, "{lang}: {cols} columns: {line:?}");
                }
            }
        }
    }

    #[test]
    fn a_missing_language_falls_back_to_english_and_overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("escalation_overdue.de.txt"), "Subject: ÜBERFÄLLIG {{ case_ref }}\n\nx {{ ip }}\n").unwrap();
        let t = StaffTemplates::load(Lang::De, Some(dir.path())).unwrap();
        let c = CaseLine {
            case_ref: "DL-000007".into(),
            ip: "192.0.2.7".into(),
            sender: "a@example.com".into(),
            assignee: None,
            due_at: None,
            left: None,
            over: Some("2h".into()),
            waiting: "1d".into(),
            link: None,
        };
        let (subject, body) = t.render("escalation_overdue", &case_context(&c, 48)).unwrap();
        assert_eq!((subject.as_str(), body.as_str()), ("ÜBERFÄLLIG DL-000007", "x 192.0.2.7\n"));
        // A broken override stops the load with its name.
        std::fs::write(dir.path().join("escalation_digest.de.txt"), "Subject: x\n\n{{ nonsense }}\n").unwrap();
        let e = StaffTemplates::load(Lang::De, Some(dir.path())).unwrap_err();
        assert!(e.to_string().contains("escalation_digest"), "{e}");
        assert!(source("escalation_digest", Lang::Ja, None).unwrap().0.ends_with(".ja.txt"));
    }

    #[test]
    fn the_mail_is_marked_auto_generated() {
        let raw = compose(
            "Delist desk <delist@example.net>",
            "team@example.net",
            "escalation.overdue.DL-000007.1.0@example.net",
            "2030-01-01T00:00:00Z".parse().unwrap(),
            Lang::En,
            "[DL-000007] OVERDUE",
            "body\n",
        )
        .unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("Auto-Submitted: auto-generated\r\n"), "{text}");
        assert!(text.contains("Message-ID: <escalation.overdue.DL-000007.1.0@example.net>\r\n"), "{text}");
        assert!(compose("d@example.net", "x@y\r\nBcc: z@w", "a@b", jiff::Timestamp::now(), Lang::En, "s", "b").is_err());
    }
}
