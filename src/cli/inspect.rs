//! `delistd inspect FILE...`: extraction and decision on files, with no config and no database.

use std::net::IpAddr;

use serde::Serialize;

use crate::decide::{Action, Decision};
use crate::extract::Evidence;

/// The JSON object `inspect --json` prints for one file (one per line).
/// Fixtures in `tests/fixtures/` carry the expected form of it beside each `.eml`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub file: String,
    pub action: Action,
    pub status_code: Option<String>,
    pub ndr_line: Option<String>,
    /// Valid public banned IPs, canonical form.
    pub ips: Vec<String>,
    /// ISO 639-1.
    pub language: String,
    pub case_ref: Option<String>,
    /// Would an automatic reply go out.
    pub reply: bool,
    /// IPs the same message shows rejected with a portal code, beside its 5.7.511 ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub portal_ips: Vec<String>,
    pub reason: String,
}

impl Summary {
    pub fn new(file: &str, ev: &Evidence, d: &Decision) -> Summary {
        Summary {
            file: file.to_string(),
            action: d.action,
            status_code: d.status_code.map(|c| c.to_string()),
            ndr_line: ev.ndr_line().map(|l| l.text.clone()),
            ips: d.banned_ips.iter().map(IpAddr::to_string).collect(),
            language: ev.language.code().to_string(),
            case_ref: d.case_ref.or(ev.case_ref).map(|r| r.to_string()),
            reply: d.reply.is_some(),
            portal_ips: d.portal_ips.iter().map(IpAddr::to_string).collect(),
            reason: d.reason.clone(),
        }
    }
}

/// Print, for people, what was found in one file and what would be done.
pub fn write_human(out: &mut dyn std::io::Write, s: &Summary, ev: &Evidence, d: &Decision) -> std::io::Result<()> {
    let none = "—".to_string();
    writeln!(out, "{}", s.file)?;
    writeln!(out, "  action       {}{}", s.action, if s.reply { " (automatic reply)" } else { " (no reply)" })?;
    writeln!(out, "  status code  {}", s.status_code.as_ref().unwrap_or(&none))?;
    writeln!(out, "  NDR line     {}", s.ndr_line.as_ref().unwrap_or(&none))?;
    let ips = if s.ips.is_empty() { none.clone() } else { s.ips.join(", ") };
    writeln!(out, "  banned IPs   {ips}")?;
    for f in ev.ips.iter().filter(|f| f.problem.is_some()) {
        let why = f.problem.map(|p| p.describe()).unwrap_or("");
        writeln!(out, "  rejected IP  {} ({why})", f.text)?;
    }
    writeln!(out, "  language     {}", s.language)?;
    writeln!(out, "  case         {}", s.case_ref.as_ref().unwrap_or(&none))?;
    if !ev.auto_signs.is_empty() {
        let signs: Vec<String> = ev.auto_signs.iter().map(|a| format!("{a:?}")).collect();
        writeln!(out, "  automatic    {}", signs.join(", "))?;
    }
    if ev.truncated {
        writeln!(out, "  truncated    only the first bytes of {} were read", ev.size)?;
    }
    if !d.missing.is_empty() {
        let m: Vec<String> = d.missing.iter().map(|m| m.describe()).collect();
        writeln!(out, "  missing      {}", m.join("; "))?;
    }
    if !s.portal_ips.is_empty() {
        writeln!(out, "  portal IPs   {} (the acknowledgement points them to the portal)", s.portal_ips.join(", "))?;
    }
    if ev.replies_to_us {
        writeln!(out, "  replies to   one of our replies: what it quotes was not read as evidence")?;
    }
    if let Some(why) = &d.unanswered {
        writeln!(out, "  no reply     {why}")?;
    }
    writeln!(out, "  reason       {}", s.reason)?;
    Ok(())
}

/// The reply `decide` asked for, rendered with placeholder case references (no store here).
pub fn preview_reply(
    ev: &Evidence,
    d: &Decision,
    builder: &crate::reply::Builder,
) -> Option<Result<String, crate::reply::RenderError>> {
    let kind = d.reply?;
    let refs: Vec<String> = match d.case_ref {
        Some(r) => vec![r.to_string()],
        None => (0..d.banned_ips.len().max(1)).map(|_| "DL-??????".to_string()).collect(),
    };
    let vars = builder.request_vars(ev, d, &refs, None);
    Some(builder.render(kind, ev.language, &vars).map(|r| {
        format!("--- reply ({}, {}) ---\nSubject: {}\n\n{}", kind.name(), ev.language, r.subject, r.body)
    }))
}
