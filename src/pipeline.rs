//! One message through extract → decide → store, committed as one transaction.

use crate::decide::Decision;
use crate::extract::Evidence;
use crate::reply::ReplyVars;

/// What replies need from the configuration.
#[derive(Debug, Clone)]
pub struct ReplySettings {
    pub sla_hours: u32,
    pub portal_url: String,
    pub support_url: String,
}

impl Default for ReplySettings {
    fn default() -> Self {
        ReplySettings {
            sla_hours: 48,
            portal_url: "https://sender.office.com/".into(),
            support_url: "https://admin.microsoft.com/#/support".into(),
        }
    }
}

/// The values a reply template sees for this request.
pub fn reply_vars(
    ev: &Evidence,
    d: &Decision,
    case_refs: &[String],
    due_at: Option<jiff::Timestamp>,
    settings: &ReplySettings,
) -> ReplyVars {
    ReplyVars {
        case_refs: case_refs.to_vec(),
        ips: d.banned_ips.iter().map(|ip| ip.to_string()).collect(),
        status_code: d.status_code.map(|c| c.to_string()),
        ndr_line: ev.ndr_line().map(|l| l.text.clone()),
        missing: d.missing.clone(),
        original_subject: ev.headers.subject.clone(),
        sender_name: ev.headers.from_name.clone(),
        sla_hours: settings.sla_hours,
        due_at: due_at.map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()),
        portal_url: settings.portal_url.clone(),
        support_url: settings.support_url.clone(),
        staff_note: None,
    }
}
