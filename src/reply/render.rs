//! Template → reply text. One file per reply kind and language in `templates/`, holding
//! the subject and the body; embedded in the binary.

use serde::Serialize;

use crate::decide::{Missing, ReplyKind};
use crate::types::Lang;

/// Everything a template may use. Values from the message are plain text here; the
/// renderer makes sure none of them can add or break a header line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplyVars {
    /// Case references (`DL-000042`), one per banned IP.
    pub case_refs: Vec<String>,
    pub ips: Vec<String>,
    pub status_code: Option<String>,
    pub ndr_line: Option<String>,
    pub missing: Vec<Missing>,
    /// The subject of the request being answered.
    pub original_subject: Option<String>,
    pub sender_name: Option<String>,
    pub sla_hours: u32,
    /// When staff will have answered by, as shown to the sender (UTC, RFC 3339-like).
    pub due_at: Option<String>,
    pub portal_url: String,
    pub support_url: String,
    /// A note from staff (resolution replies).
    pub staff_note: Option<String>,
}

/// A rendered reply: one header-safe subject line and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedReply {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no template {kind}.{lang}")]
    Missing { kind: &'static str, lang: Lang },
    #[error("template {name}: {source}")]
    Template { name: String, source: minijinja::Error },
    #[error("template {name} has no `Subject:` line before the first blank line")]
    NoSubject { name: String },
}

pub fn render(kind: ReplyKind, lang: Lang, vars: &ReplyVars) -> Result<RenderedReply, RenderError> {
    let _ = (kind, lang, vars);
    todo!("being written")
}
