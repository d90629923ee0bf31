//! Evidence → [`Decision`]. The decision table of the delist desk, in one place.
//!
//! | evidence                                        | action            | automatic reply            |
//! |-------------------------------------------------|-------------------|----------------------------|
//! | 5.7.511 and a valid public IP                   | `acknowledge`     | acknowledgement + case ref |
//! | a reference to an existing case                 | `follow_up`       | none, or an acknowledgement when it completes the request |
//! | 5.7.511 without a valid IP; an IP without a code; another code | `missing_info` | what exactly is missing |
//! | 5.7.606 – 5.7.649                               | `redirect_portal` | the self-service portal    |
//! | 5.7.700 – 5.7.749, 5.7.750                      | `tenant_support`  | only support can lift it   |
//! | automatic message (RFC 3834)                    | `ignore`          | none                       |
//!
//! Two exceptions to `ignore`: an auto-forwarded *complete* 5.7.511 request is acknowledged
//! (a case is opened so nothing is lost) but not answered, and a delivery report about one
//! of our own replies is attached to its case.
//!
//! Pure: what the store knows about a referenced case comes in through [`Context`].

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::extract::{AutoSign, Evidence, IpProblem};
use crate::types::{CaseRef, StatusCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Acknowledge,
    FollowUp,
    MissingInfo,
    RedirectPortal,
    TenantSupport,
    Ignore,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::FollowUp => "follow_up",
            Action::MissingInfo => "missing_info",
            Action::RedirectPortal => "redirect_portal",
            Action::TenantSupport => "tenant_support",
            Action::Ignore => "ignore",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which template a reply is rendered from. One file per kind and language in `templates/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Acknowledge,
    MissingInfo,
    RedirectPortal,
    TenantSupport,
    /// Staff resolved the case: the IP was delisted.
    Delisted,
    /// Staff resolved the case: the request was rejected.
    Rejected,
    /// The IP is on no source of the blocklist: nothing to remove, answered at once.
    NotListed,
}

impl ReplyKind {
    pub const ALL: [ReplyKind; 7] = [
        ReplyKind::Acknowledge,
        ReplyKind::MissingInfo,
        ReplyKind::RedirectPortal,
        ReplyKind::TenantSupport,
        ReplyKind::Delisted,
        ReplyKind::Rejected,
        ReplyKind::NotListed,
    ];

    /// The template's file stem: `templates/<name>.<lang>.txt`.
    pub fn name(self) -> &'static str {
        match self {
            ReplyKind::Acknowledge => "acknowledge",
            ReplyKind::MissingInfo => "missing_info",
            ReplyKind::RedirectPortal => "redirect_portal",
            ReplyKind::TenantSupport => "tenant_support",
            ReplyKind::Delisted => "delisted",
            ReplyKind::Rejected => "rejected",
            ReplyKind::NotListed => "not_listed",
        }
    }
}

/// One thing the sender still has to give us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "missing", rename_all = "snake_case")]
pub enum Missing {
    /// No enhanced status code anywhere.
    StatusCode,
    /// A status code this mailbox does not handle (it handles 5.7.511).
    WrongCode { code: StatusCode },
    /// No IP address at all.
    Ip,
    /// An IP was given but cannot be the banned sending IP.
    InvalidIp { text: String, problem: IpProblem },
}

impl Missing {
    /// Short English phrase for logs and `inspect`.
    pub fn describe(&self) -> String {
        match self {
            Missing::StatusCode => "the NDR status code (5.7.511)".into(),
            Missing::WrongCode { code } => format!("a 5.7.511 NDR (got {code})"),
            Missing::Ip => "the banned IP address".into(),
            Missing::InvalidIp { text, problem } => format!("a valid public IP ({text} is {})", problem.describe()),
        }
    }
}

/// What the store knows about the case a message refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referenced {
    /// No store was consulted (`delistd inspect`): take the reference at face value.
    NotLooked,
    /// The reference names no case we have: treat the message as a new request.
    Unknown,
    Found(ReferencedCase),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedCase {
    pub case_ref: CaseRef,
    /// Waiting for the sender to complete the request (a `missing_info` case).
    pub awaiting_info: bool,
    pub status_code: Option<StatusCode>,
    pub ip: Option<IpAddr>,
}

/// What the decision may know beyond the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub referenced: Referenced,
}

impl Default for Context {
    fn default() -> Self {
        Context { referenced: Referenced::NotLooked }
    }
}

/// The outcome of the decision table for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub action: Action,
    /// The automatic reply to send, if any.
    pub reply: Option<ReplyKind>,
    /// One line: why.
    pub reason: String,
    /// What the sender still has to give (for `missing_info`).
    pub missing: Vec<Missing>,
    /// The status code the request is about (evidence, or the referenced case's).
    pub status_code: Option<StatusCode>,
    /// Valid public banned IPs: one case each for `acknowledge`.
    pub banned_ips: Vec<IpAddr>,
    /// The case this message belongs to, when it names one (follow-up, bounce of our reply).
    pub case_ref: Option<CaseRef>,
}

fn is_portal(code: StatusCode) -> bool {
    code.is_5_7_in(606, 649)
}

fn is_tenant(code: StatusCode) -> bool {
    code.is_5_7_in(700, 750)
}

/// What a request with this code and these IPs lacks; empty when it is complete.
fn missing_for(ev: &Evidence, code: Option<StatusCode>, ips: &[IpAddr]) -> Vec<Missing> {
    let mut missing = Vec::new();
    match code {
        None => missing.push(Missing::StatusCode),
        Some(c) if c != StatusCode::BANNED_SENDER => missing.push(Missing::WrongCode { code: c }),
        Some(_) => {}
    }
    if ips.is_empty() {
        // Say why the IPs we saw are no good, rather than "no IP" when there was one.
        let invalid: Vec<Missing> = ev
            .ips
            .iter()
            .filter_map(|f| f.problem.map(|p| Missing::InvalidIp { text: f.text.clone(), problem: p }))
            .collect();
        if invalid.is_empty() {
            missing.push(Missing::Ip);
        } else {
            missing.extend(invalid);
        }
    }
    missing
}

fn list_ips(ips: &[IpAddr]) -> String {
    let mut s = String::new();
    for (i, ip) in ips.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{ip}");
    }
    s
}

fn describe_missing(missing: &[Missing]) -> String {
    missing.iter().map(Missing::describe).collect::<Vec<_>>().join("; ")
}

/// Apply the decision table.
pub fn decide(ev: &Evidence, ctx: &Context) -> Decision {
    let ips = ev.valid_ips();
    let code = ev.status_code;
    let automatic = ev.is_automatic();
    let mut d = Decision {
        action: Action::Ignore,
        reply: None,
        reason: String::new(),
        missing: Vec::new(),
        status_code: code,
        banned_ips: ips.clone(),
        case_ref: None,
    };

    // A delivery report about one of our own replies: attach it, never answer (RFC 3834 §2).
    if let Some(r) = ev.bounce_of {
        d.case_ref = Some(r);
        d.reason = format!("delivery report about our reply on {r}; attached to the case, not answered");
        return d;
    }

    // A message that names one of our cases is a follow-up to it.
    if let Some(r) = ev.case_ref {
        match &ctx.referenced {
            Referenced::Unknown => {
                // Fall through: handled as a new request below; say so in the reason.
            }
            Referenced::NotLooked | Referenced::Found(_) => {
                let case = match &ctx.referenced {
                    Referenced::Found(c) => Some(c),
                    _ => None,
                };
                let combined_code = code.or(case.and_then(|c| c.status_code));
                let combined_ips: Vec<IpAddr> =
                    if ips.is_empty() { case.and_then(|c| c.ip).into_iter().collect() } else { ips.clone() };
                // Without a store we cannot tell whether the case was waiting; take the
                // message alone: it completes a request when it is complete by itself.
                let awaiting = case.map(|c| c.awaiting_info).unwrap_or(true);
                let missing = missing_for(ev, combined_code, &combined_ips);
                d.action = Action::FollowUp;
                d.case_ref = Some(r);
                d.status_code = combined_code;
                d.banned_ips = combined_ips.clone();
                if automatic {
                    d.reason = format!("automatic message about {r}; attached, not answered (RFC 3834)");
                } else if awaiting && missing.is_empty() {
                    d.reply = Some(ReplyKind::Acknowledge);
                    d.reason = format!(
                        "follow-up to {r} completes the request: {} for {}",
                        StatusCode::BANNED_SENDER,
                        list_ips(&combined_ips)
                    );
                } else if awaiting && case.is_some() {
                    d.reply = Some(ReplyKind::MissingInfo);
                    d.reason = format!("follow-up to {r} still lacks {}", describe_missing(&missing));
                    d.missing = missing;
                } else {
                    d.reason = format!("follow-up to {r}; attached, no reply needed");
                }
                return d;
            }
        }
    }

    let unknown_ref = match (&ev.case_ref, &ctx.referenced) {
        (Some(r), Referenced::Unknown) => format!(" (names {r}, which is not a case here)"),
        _ => String::new(),
    };

    if automatic {
        // Only a forwarded request is kept: an auto-reply, a list post or a report that merely
        // mentions a code and an IP is not a request (see tests/fixtures/ignore-*.eml).
        let forwarded = ev.auto_signs.iter().any(|s| matches!(s, AutoSign::AutoSubmitted(v) if v == "auto-forwarded"));
        let complete = forwarded && code == Some(StatusCode::BANNED_SENDER) && !ips.is_empty();
        if complete {
            d.action = Action::Acknowledge;
            d.reason = format!(
                "automatic message carrying a complete 5.7.511 request for {}; case opened, not answered (RFC 3834){unknown_ref}",
                list_ips(&ips)
            );
        } else {
            let signs: Vec<String> = ev.auto_signs.iter().map(|s| format!("{s:?}")).collect();
            d.reason = format!("automatic message ({}); not answered (RFC 3834){unknown_ref}", signs.join(", "));
        }
        return d;
    }

    match code {
        Some(c) if is_portal(c) => {
            d.action = Action::RedirectPortal;
            d.reply = Some(ReplyKind::RedirectPortal);
            d.reason = format!("{c} is a banned sending IP: the self-service delist portal handles it{unknown_ref}");
        }
        Some(c) if is_tenant(c) => {
            d.action = Action::TenantSupport;
            d.reply = Some(ReplyKind::TenantSupport);
            d.reason = format!("{c} is a tenant block: only support can lift it{unknown_ref}");
        }
        _ => {
            let missing = missing_for(ev, code, &ips);
            if missing.is_empty() {
                d.action = Action::Acknowledge;
                d.reply = Some(ReplyKind::Acknowledge);
                d.reason = format!("5.7.511 request for {}{unknown_ref}", list_ips(&ips));
            } else {
                d.action = Action::MissingInfo;
                d.reply = Some(ReplyKind::MissingInfo);
                d.reason = format!("missing {}{unknown_ref}", describe_missing(&missing));
                d.missing = missing;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{IpFinding, IpSource};

    fn ev(code: Option<&str>, ips: &[&str]) -> Evidence {
        Evidence {
            status_code: code.map(|c| c.parse().unwrap()),
            ips: ips
                .iter()
                .map(|t| {
                    let ip: Option<IpAddr> = t.parse().ok();
                    let problem = match ip {
                        None => Some(IpProblem::Malformed),
                        Some(IpAddr::V4(v4)) if v4.is_private() => Some(IpProblem::Private),
                        _ => None,
                    };
                    IpFinding { text: t.to_string(), ip, source: IpSource::Rejection, problem }
                })
                .collect(),
            ..Evidence::default()
        }
    }

    fn found(awaiting: bool, code: Option<&str>, ip: Option<&str>) -> Context {
        Context {
            referenced: Referenced::Found(ReferencedCase {
                case_ref: CaseRef(7),
                awaiting_info: awaiting,
                status_code: code.map(|c| c.parse().unwrap()),
                ip: ip.map(|i| i.parse().unwrap()),
            }),
        }
    }

    #[test]
    fn complete_request_is_acknowledged_with_one_ip_per_case() {
        let d = decide(&ev(Some("5.7.511"), &["203.0.113.7", "198.51.100.4"]), &Context::default());
        assert_eq!(d.action, Action::Acknowledge);
        assert_eq!(d.reply, Some(ReplyKind::Acknowledge));
        assert_eq!(d.banned_ips.len(), 2);
    }

    #[test]
    fn code_without_ip_or_private_ip_is_missing_info() {
        let d = decide(&ev(Some("5.7.511"), &[]), &Context::default());
        assert_eq!((d.action, d.missing.clone()), (Action::MissingInfo, vec![Missing::Ip]));
        let d = decide(&ev(Some("5.7.511"), &["10.1.2.3"]), &Context::default());
        assert_eq!(d.action, Action::MissingInfo);
        assert!(matches!(d.missing[0], Missing::InvalidIp { problem: IpProblem::Private, .. }));
    }

    #[test]
    fn ip_without_code_and_other_codes_are_missing_info() {
        let d = decide(&ev(None, &["203.0.113.7"]), &Context::default());
        assert_eq!(d.missing, vec![Missing::StatusCode]);
        let d = decide(&ev(Some("5.7.1"), &["203.0.113.7"]), &Context::default());
        assert_eq!(d.missing, vec![Missing::WrongCode { code: StatusCode::new(5, 7, 1) }]);
        let d = decide(&ev(None, &[]), &Context::default());
        assert_eq!(d.missing, vec![Missing::StatusCode, Missing::Ip]);
    }

    #[test]
    fn portal_and_tenant_ranges_match_by_number() {
        for c in ["5.7.606", "5.7.620", "5.7.649"] {
            assert_eq!(decide(&ev(Some(c), &["203.0.113.7"]), &Context::default()).action, Action::RedirectPortal, "{c}");
        }
        for c in ["5.7.700", "5.7.705", "5.7.749", "5.7.750"] {
            assert_eq!(decide(&ev(Some(c), &[]), &Context::default()).action, Action::TenantSupport, "{c}");
        }
        for c in ["5.7.605", "5.7.650", "5.7.751"] {
            assert_eq!(decide(&ev(Some(c), &["203.0.113.7"]), &Context::default()).action, Action::MissingInfo, "{c}");
        }
    }

    #[test]
    fn automatic_messages_are_ignored_unless_complete() {
        let mut e = ev(Some("5.7.511"), &[]);
        e.auto_signs.push(AutoSign::AutoSubmitted("auto-replied".into()));
        let d = decide(&e, &Context::default());
        assert_eq!((d.action, d.reply), (Action::Ignore, None));

        let mut e = ev(Some("5.7.511"), &["203.0.113.7"]);
        e.auto_signs.push(AutoSign::AutoSubmitted("auto-forwarded".into()));
        let d = decide(&e, &Context::default());
        assert_eq!((d.action, d.reply), (Action::Acknowledge, None));

        // An out-of-office reply or a list post that mentions a complete request is not one.
        for sign in [AutoSign::AutoSubmitted("auto-replied".into()), AutoSign::ListHeader("List-Id".into())] {
            let mut e = ev(Some("5.7.511"), &["203.0.113.7"]);
            e.auto_signs.push(sign);
            let d = decide(&e, &Context::default());
            assert_eq!((d.action, d.reply), (Action::Ignore, None));
        }
    }

    #[test]
    fn bounce_of_our_reply_attaches_to_its_case() {
        let mut e = ev(Some("5.1.1"), &[]);
        e.bounce_of = Some(CaseRef(9));
        e.auto_signs.push(AutoSign::NullReturnPath);
        let d = decide(&e, &Context::default());
        assert_eq!((d.action, d.reply, d.case_ref), (Action::Ignore, None, Some(CaseRef(9))));
    }

    #[test]
    fn follow_up_that_completes_is_acknowledged() {
        let mut e = ev(None, &["203.0.113.7"]);
        e.case_ref = Some(CaseRef(7));
        let d = decide(&e, &found(true, Some("5.7.511"), None));
        assert_eq!((d.action, d.reply), (Action::FollowUp, Some(ReplyKind::Acknowledge)));
        assert_eq!(d.status_code, Some(StatusCode::BANNED_SENDER));
    }

    #[test]
    fn plain_thank_you_gets_no_reply() {
        let mut e = ev(None, &[]);
        e.case_ref = Some(CaseRef(7));
        let d = decide(&e, &found(false, Some("5.7.511"), Some("203.0.113.7")));
        assert_eq!((d.action, d.reply), (Action::FollowUp, None));
        // Without a store: no reply either.
        let d = decide(&e, &Context::default());
        assert_eq!((d.action, d.reply), (Action::FollowUp, None));
    }

    #[test]
    fn follow_up_still_incomplete_says_what_is_missing() {
        let mut e = ev(None, &[]);
        e.case_ref = Some(CaseRef(7));
        let d = decide(&e, &found(true, Some("5.7.511"), None));
        assert_eq!((d.action, d.reply), (Action::FollowUp, Some(ReplyKind::MissingInfo)));
        assert_eq!(d.missing, vec![Missing::Ip]);
    }

    #[test]
    fn unknown_reference_is_a_new_request() {
        let mut e = ev(Some("5.7.511"), &["203.0.113.7"]);
        e.case_ref = Some(CaseRef(99));
        let d = decide(&e, &Context { referenced: Referenced::Unknown });
        assert_eq!(d.action, Action::Acknowledge);
        assert!(d.reason.contains("DL-000099"));
    }
}
