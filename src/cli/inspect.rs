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
            reason: d.reason.clone(),
        }
    }
}
