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
//! Two rules sit on top of the table. A message from a mail-system address (`postmaster@`)
//! with none of the desk's codes is a report, not a request: not answered. And when the
//! configured MX says the sender is not authenticated ([`authentication`], RFC 8601), the
//! case opens as the table says but no automatic reply goes out ([`Decision::unanswered`]):
//! its Return-Path may belong to a stranger.
//!
//! Pure: what the store knows about a referenced case, and whose Authentication-Results to
//! believe, come in through [`Context`].

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::extract::{AutoSign, Evidence, IpProblem, IpSource};
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
    /// A person wrote again on a resolved or rejected case: it is open again.
    Reopened,
    /// Free text from a staff member, framed by a greeting and a signature (not automatic).
    StaffReply,
    /// A staff member's question to the sender; the case waits for the answer (not automatic).
    StaffQuestion,
}

impl ReplyKind {
    pub const ALL: [ReplyKind; 10] = [
        ReplyKind::Acknowledge,
        ReplyKind::MissingInfo,
        ReplyKind::RedirectPortal,
        ReplyKind::TenantSupport,
        ReplyKind::Delisted,
        ReplyKind::Rejected,
        ReplyKind::NotListed,
        ReplyKind::Reopened,
        ReplyKind::StaffReply,
        ReplyKind::StaffQuestion,
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
            ReplyKind::Reopened => "reopened",
            ReplyKind::StaffReply => "staff_reply",
            ReplyKind::StaffQuestion => "staff_question",
        }
    }

    /// Sent by the machine, so marked `Auto-Submitted: auto-replied` (RFC 3834 §5). Staff
    /// replies and questions are written by a person and are not; resolution replies are
    /// templates sent on a staff action and stay marked as they always were.
    pub fn is_automatic(self) -> bool {
        !matches!(self, ReplyKind::StaffReply | ReplyKind::StaffQuestion)
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
    /// Waiting for the answer to a staff question (awaiting_info with its IP): the answer
    /// goes to staff, who will write; no automatic reply.
    pub asked: bool,
    /// Resolved or rejected: a person writing again reopens it (the `reopened` reply).
    pub closed: bool,
}

/// What the decision may know beyond the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub referenced: Referenced,
    /// The authserv-id of our own border MTA (`[auth] trusted_authserv_id`): only its
    /// `Authentication-Results:` fields are believed (RFC 8601 §5). `None`: no check.
    pub trusted_authserv_id: Option<String>,
}

impl Default for Context {
    fn default() -> Self {
        Context { referenced: Referenced::NotLooked, trusted_authserv_id: None }
    }
}

/// What our own MX says about who sent the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// No trusted authserv-id is configured: everyone is answered, as before.
    NotChecked,
    /// No field of ours, or one that checked nothing: nothing to go on.
    Unknown,
    /// SPF for the Return-Path domain, or DKIM or DMARC for the From domain, passed.
    Passed(String),
    /// All of them failed (or were absent among results that did not pass): the Return-Path
    /// and From may be forged, and a reply could go to a stranger (backscatter).
    Failed(String),
}

fn domain_of(addr: Option<&str>) -> Option<String> {
    addr.and_then(|a| a.rsplit_once('@')).map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
}

/// Read our MX's verdict (the topmost field with our authserv-id: the MX prepends it).
pub fn authentication(ev: &Evidence, trusted: Option<&str>) -> Authentication {
    let Some(id) = trusted.map(str::to_ascii_lowercase) else { return Authentication::NotChecked };
    let Some(field) = ev.auth_results.iter().find(|a| a.authserv_id == id) else { return Authentication::Unknown };
    if field.results.is_empty() {
        return Authentication::Unknown;
    }
    let rp = match &ev.headers.return_path {
        crate::extract::ReturnPath::Address(a) => domain_of(Some(a)),
        _ => None,
    };
    let from = domain_of(ev.headers.from.as_deref());
    // Relaxed alignment (RFC 7489 §3.1): the same domain or a parent of it.
    let aligned = |d: &Option<String>, with: &Option<String>| match (d, with) {
        (None, _) => true,
        (Some(d), Some(w)) => w == d || w.ends_with(&format!(".{d}")),
        (Some(_), None) => false,
    };
    let mut seen = Vec::new();
    for r in &field.results {
        let counts = match r.method.as_str() {
            "spf" => aligned(&r.domain, &rp),
            "dkim" | "dmarc" => aligned(&r.domain, &from),
            _ => continue,
        };
        let text = format!("{}={}", r.method, r.result);
        if r.result == "pass" && counts {
            return Authentication::Passed(text);
        }
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    if seen.is_empty() {
        Authentication::Unknown
    } else {
        Authentication::Failed(seen.join(", "))
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
    /// IPs rejected with a portal code (5.7.606–649) in a message that also carries 5.7.511
    /// rejections: the acknowledgement points to the portal for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub portal_ips: Vec<IpAddr>,
    /// Cases are opened but no automatic reply goes out, and why: staff see it on the case,
    /// since nobody has told the sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<String>,
}

fn is_portal(code: StatusCode) -> bool {
    code.is_5_7_in(606, 649)
}

fn is_tenant(code: StatusCode) -> bool {
    code.is_5_7_in(700, 750)
}

/// The codes this desk knows: 5.7.511, the portal range and tenant blocks.
fn is_provider_code(code: StatusCode) -> bool {
    code == StatusCode::BANNED_SENDER || is_portal(code) || is_tenant(code)
}

/// What a request with this code and these IPs lacks; empty when it is complete.
fn missing_for(ev: &Evidence, code: Option<StatusCode>, ips: &[IpAddr]) -> Vec<Missing> {
    let mut missing = Vec::new();
    match code {
        None => missing.push(Missing::StatusCode),
        Some(c) if c != StatusCode::BANNED_SENDER => missing.push(Missing::WrongCode { code: c }),
        Some(_) => {}
    }
    // A rejection with another code (`550 5.7.1 … [198.51.100.10]`) is the problem to
    // explain; asking for an IP on top would say we found none when the sender gave one.
    let wrong_code = matches!(missing.first(), Some(Missing::WrongCode { .. }));
    if ips.is_empty() && !wrong_code {
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

/// Valid public banned IPs grouped by the code of the rejection that names them (an IP with
/// no code of its own takes the message's code).
#[derive(Debug, Default)]
struct ByCode {
    banned: Vec<IpAddr>,
    /// The 5.7.511 IPs that a rejection phrase names (not only the sender's prose).
    banned_by_rejection: Vec<IpAddr>,
    portal: Vec<IpAddr>,
    /// The first code other than 5.7.511 that names a valid IP.
    first_other: Option<StatusCode>,
}

fn by_code(ev: &Evidence) -> ByCode {
    let mut g = ByCode::default();
    for f in &ev.ips {
        let (Some(ip), None) = (f.ip, f.problem) else { continue };
        let code = f.code.or(ev.status_code);
        let push = |v: &mut Vec<IpAddr>| {
            if !v.contains(&ip) {
                v.push(ip)
            }
        };
        match code {
            Some(c) if c == StatusCode::BANNED_SENDER => {
                push(&mut g.banned);
                if f.source == IpSource::Rejection {
                    push(&mut g.banned_by_rejection);
                }
            }
            Some(c) => {
                if is_portal(c) {
                    push(&mut g.portal);
                }
                g.first_other.get_or_insert(c);
            }
            None => {}
        }
    }
    g
}

/// Signs of an absence notice, a list post or a spam verdict: such a message may mention a
/// request (it quotes one, it discusses one) without being one.
fn not_a_forward(sign: &AutoSign) -> bool {
    const ABSENCE: &[&str] = &["automatic reply", "auto reply", "autoreply", "auto-reply", "out of office", "abwesenheit", "réponse automatique", "risposta automatica", "自動応答"];
    match sign {
        AutoSign::AutoreplyHeader(_) | AutoSign::ListHeader(_) | AutoSign::Precedence(_) | AutoSign::SpamVerdict(_) => true,
        AutoSign::AutomaticSubject(s) => {
            let s = s.to_lowercase();
            ABSENCE.iter().any(|a| s.starts_with(a))
        }
        _ => false,
    }
}

/// Apply the decision table; then, when our MX says the sender is not authenticated,
/// keep the case but send no automatic reply: the Return-Path may be a forged victim's.
pub fn decide(ev: &Evidence, ctx: &Context) -> Decision {
    let mut d = decide_table(ev, ctx);
    if d.reply.is_some() {
        if let Authentication::Failed(why) = authentication(ev, ctx.trusted_authserv_id.as_deref()) {
            let id = ctx.trusted_authserv_id.as_deref().unwrap_or("");
            d.reply = None;
            d.reason.push_str(&format!("; not answered: sender not authenticated ({why} per {id})"));
            d.unanswered = Some(format!(
                "no automatic reply: {id} found the sender unauthenticated ({why}); the Return-Path may be forged (RFC 8601)"
            ));
        }
    }
    d
}

fn decide_table(ev: &Evidence, ctx: &Context) -> Decision {
    let groups = by_code(ev);
    // The 5.7.511 IPs when the message has any; else every valid IP, judged on its code.
    let (ips, code) = if groups.banned.is_empty() {
        let code = match ev.status_code {
            // A 5.7.511 named only in passing while every valid IP is rejected with another code.
            Some(c) if c == StatusCode::BANNED_SENDER && groups.first_other.is_some() => groups.first_other,
            c => c,
        };
        (ev.valid_ips(), code)
    } else {
        (groups.banned.clone(), Some(StatusCode::BANNED_SENDER))
    };
    let automatic = ev.is_automatic();
    let mut d = Decision {
        action: Action::Ignore,
        reply: None,
        reason: String::new(),
        missing: Vec::new(),
        status_code: code,
        banned_ips: ips.clone(),
        case_ref: None,
        portal_ips: Vec::new(),
        unanswered: None,
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
                // Without a store we cannot tell whether the case was waiting; take the
                // message alone: it completes a request when it is complete by itself.
                let awaiting = case.map(|c| c.awaiting_info).unwrap_or(true);
                // Answering our question for the IP, the sender's new text may give it
                // with no "our IP is" phrase at all.
                let given: Vec<IpAddr> = if ips.is_empty() && awaiting { ev.own_ips.clone() } else { ips.clone() };
                let combined_ips: Vec<IpAddr> =
                    if given.is_empty() { case.and_then(|c| c.ip).into_iter().collect() } else { given };
                let missing = missing_for(ev, combined_code, &combined_ips);
                d.action = Action::FollowUp;
                d.case_ref = Some(r);
                d.status_code = combined_code;
                d.banned_ips = combined_ips.clone();
                if automatic {
                    d.reason = format!("automatic message about {r}; attached, not answered (RFC 3834)");
                } else if case.is_some_and(|c| c.asked) {
                    // Staff asked; staff read the answer and write back themselves.
                    d.reason = format!("answer to the staff question on {r}; back to open for staff, no automatic reply");
                } else if case.is_some_and(|c| c.closed) {
                    d.reply = Some(ReplyKind::Reopened);
                    d.reason = format!("a person wrote again on {r}, which was closed: reopened with a fresh SLA");
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
                } else if case.is_some() {
                    d.reason = format!("follow-up to {r}; attached and marked for staff attention, no reply needed");
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
        // Only a forwarded rejection is kept: a mailbox rule, a Sieve redirect, or the
        // sender's own bounce sent on unchanged, whose NDR names the IP. An auto-reply, a
        // list post or a message that merely mentions a code and an IP is not a request
        // (see tests/fixtures/ignore-*.eml).
        let forwarded = !ev.auto_signs.iter().any(not_a_forward);
        let complete = forwarded && !groups.banned_by_rejection.is_empty();
        if complete {
            let ips = groups.banned_by_rejection.clone();
            let signs: Vec<String> = ev.auto_signs.iter().map(|s| format!("{s:?}")).collect();
            d.action = Action::Acknowledge;
            d.status_code = Some(StatusCode::BANNED_SENDER);
            d.banned_ips = ips.clone();
            d.reason = format!(
                "automatic message carrying a complete 5.7.511 request for {}; case opened, not answered (RFC 3834){unknown_ref}",
                list_ips(&ips)
            );
            d.unanswered = Some(format!(
                "opened from an automatic message ({}); no automatic reply was sent (RFC 3834), so nobody has told the sender",
                signs.join(", ")
            ));
        } else {
            let signs: Vec<String> = ev.auto_signs.iter().map(|s| format!("{s:?}")).collect();
            d.reason = format!("automatic message ({}); not answered (RFC 3834){unknown_ref}", signs.join(", "));
        }
        return d;
    }

    // postmaster@ is a person at work when it brings a rejection of ours; without one, a
    // message from it is most likely its mail system's own report (Exchange, InterScan,
    // IMail write their bounces as postmaster@ with no automatic header): no reply.
    let provider_code = code.into_iter().chain(ev.other_codes.iter().copied()).any(is_provider_code);
    if ev.from_mail_system_address() && !provider_code {
        d.reason = format!("from a mail-system address with no delisting status code: a report, not a request; not answered{unknown_ref}");
        return d;
    }

    if !groups.banned.is_empty() {
        d.action = Action::Acknowledge;
        d.reply = Some(ReplyKind::Acknowledge);
        d.portal_ips = groups.portal.clone();
        let portal = if groups.portal.is_empty() {
            String::new()
        } else {
            format!("; the portal handles {}", list_ips(&groups.portal))
        };
        d.reason = format!("5.7.511 request for {}{portal}{unknown_ref}", list_ips(&ips));
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
    use crate::extract::IpFinding;

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
                    IpFinding { text: t.to_string(), ip, source: IpSource::Rejection, problem, code: None }
                })
                .collect(),
            ..Evidence::default()
        }
    }

    fn found(awaiting: bool, code: Option<&str>, ip: Option<&str>) -> Context {
        Context {
            trusted_authserv_id: None,
            referenced: Referenced::Found(ReferencedCase {
                case_ref: CaseRef(7),
                awaiting_info: awaiting,
                status_code: code.map(|c| c.parse().unwrap()),
                ip: ip.map(|i| i.parse().unwrap()),
                asked: false,
                closed: false,
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

        assert!(d.unanswered.is_some());

        // The sender's own bounce, redirected to us unchanged: a case, no reply.
        let mut e = ev(Some("5.7.511"), &["203.0.113.7"]);
        e.auto_signs.extend([AutoSign::AutoSubmitted("auto-replied".into()), AutoSign::NullReturnPath, AutoSign::DeliveryReport]);
        let d = decide(&e, &Context::default());
        assert_eq!((d.action, d.reply), (Action::Acknowledge, None));

        // An out-of-office reply or a list post that mentions a complete request is not one.
        for sign in [AutoSign::AutoreplyHeader("X-Autoreply: yes".into()), AutoSign::ListHeader("List-Id".into())] {
            let mut e = ev(Some("5.7.511"), &["203.0.113.7"]);
            e.auto_signs.push(sign);
            let d = decide(&e, &Context::default());
            assert_eq!((d.action, d.reply), (Action::Ignore, None));
        }
        // Nor is an automatic message whose IP only the prose states.
        let mut e = ev(Some("5.7.511"), &["203.0.113.7"]);
        e.ips[0].source = IpSource::Stated;
        e.auto_signs.push(AutoSign::AutoSubmitted("auto-replied".into()));
        assert_eq!(decide(&e, &Context::default()).action, Action::Ignore);
    }

    #[test]
    fn several_rejections_are_judged_one_by_one() {
        let mut e = ev(Some("5.7.606"), &["198.51.100.4", "203.0.113.7"]);
        e.ips[0].code = Some(StatusCode::new(5, 7, 606));
        e.ips[1].code = Some(StatusCode::BANNED_SENDER);
        let d = decide(&e, &Context::default());
        assert_eq!((d.action, d.reply), (Action::Acknowledge, Some(ReplyKind::Acknowledge)));
        assert_eq!(d.banned_ips, vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.portal_ips, vec!["198.51.100.4".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.status_code, Some(StatusCode::BANNED_SENDER));
        // Only portal rejections: the portal, even when 5.7.511 is mentioned in passing.
        let mut e = ev(Some("5.7.511"), &["198.51.100.4"]);
        e.ips[0].code = Some(StatusCode::new(5, 7, 606));
        assert_eq!(decide(&e, &Context::default()).action, Action::RedirectPortal);
    }

    fn signed(results: &[(&str, &str, Option<&str>)], by: &str) -> Evidence {
        let mut e = ev(Some("5.7.511"), &["203.0.113.7"]);
        e.headers.from = Some("ops@example.com".into());
        e.headers.return_path = crate::extract::ReturnPath::Address("bounce@mail.example.com".into());
        e.auth_results.push(crate::extract::AuthResults {
            authserv_id: by.into(),
            results: results
                .iter()
                .map(|(m, r, d)| crate::extract::MethodResult { method: m.to_string(), result: r.to_string(), domain: d.map(str::to_string) })
                .collect(),
        });
        e
    }

    #[test]
    fn unauthenticated_senders_get_a_case_but_no_reply() {
        let ours = Context { trusted_authserv_id: Some("mx.delist.example".into()), ..Context::default() };
        let forged = signed(&[("spf", "fail", Some("mail.example.com")), ("dkim", "none", None), ("dmarc", "fail", Some("example.com"))], "mx.delist.example");
        let d = decide(&forged, &ours);
        assert_eq!((d.action, d.reply), (Action::Acknowledge, None));
        assert!(d.unanswered.as_deref().is_some_and(|u| u.contains("spf=fail")), "{d:?}");
        // One aligned pass is enough.
        let ok = signed(&[("spf", "fail", Some("mail.example.com")), ("dkim", "pass", Some("example.com"))], "mx.delist.example");
        assert_eq!(decide(&ok, &ours).reply, Some(ReplyKind::Acknowledge));
        // A DKIM pass for someone else's domain proves nothing about From.
        let other = signed(&[("dkim", "pass", Some("attacker.example")), ("spf", "softfail", None)], "mx.delist.example");
        assert_eq!(decide(&other, &ours).reply, None);
        // Fields written by anyone else are ignored (RFC 8601 §5), as is everything when
        // no authserv-id is trusted.
        let foreign = signed(&[("spf", "fail", None)], "mx.attacker.example");
        assert_eq!(decide(&foreign, &ours).reply, Some(ReplyKind::Acknowledge));
        assert_eq!(decide(&forged, &Context::default()).reply, Some(ReplyKind::Acknowledge));
    }

    #[test]
    fn another_code_does_not_ask_for_an_ip() {
        let d = decide(&ev(Some("5.7.1"), &[]), &Context::default());
        assert_eq!(d.missing, vec![Missing::WrongCode { code: StatusCode::new(5, 7, 1) }]);
    }

    #[test]
    fn follow_up_to_our_question_takes_any_ip_in_the_new_text() {
        let mut e = ev(None, &[]);
        e.case_ref = Some(CaseRef(7));
        e.own_ips = vec!["203.0.113.9".parse().unwrap()];
        let d = decide(&e, &found(true, Some("5.7.511"), None));
        assert_eq!((d.action, d.reply), (Action::FollowUp, Some(ReplyKind::Acknowledge)));
        assert_eq!(d.banned_ips, e.own_ips);
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
        let d = decide(&e, &Context { referenced: Referenced::Unknown, ..Context::default() });
        assert_eq!(d.action, Action::Acknowledge);
        assert!(d.reason.contains("DL-000099"));
    }

    /// Issue 11: a person writing on a closed case reopens it with the `reopened` reply; an
    /// answer to a staff question goes to staff without an automatic reply; an automatic
    /// message changes nothing.
    #[test]
    fn threads_reopen_closed_cases_and_leave_answers_to_staff() {
        let ctx = |asked: bool, closed: bool| Context {
            trusted_authserv_id: None,
            referenced: Referenced::Found(ReferencedCase {
                case_ref: CaseRef(7),
                awaiting_info: asked,
                status_code: Some(StatusCode::BANNED_SENDER),
                ip: Some("203.0.113.7".parse().unwrap()),
                asked,
                closed,
            }),
        };
        let person = Evidence { case_ref: Some(CaseRef(7)), ..ev(None, &[]) };
        let d = decide(&person, &ctx(false, true));
        assert_eq!((d.action, d.reply), (Action::FollowUp, Some(ReplyKind::Reopened)), "{}", d.reason);
        assert_eq!(d.banned_ips, ["203.0.113.7".parse::<IpAddr>().unwrap()], "the reply names the case's IP");
        let d = decide(&person, &ctx(true, false));
        assert_eq!((d.action, d.reply), (Action::FollowUp, None), "{}", d.reason);
        let d = decide(&person, &ctx(false, false));
        assert_eq!((d.action, d.reply), (Action::FollowUp, None), "open case: {}", d.reason);
        let auto = Evidence { auto_signs: vec![AutoSign::AutoreplyHeader("auto-replied".into())], ..person.clone() };
        assert!(auto.is_automatic());
        assert_eq!(decide(&auto, &ctx(false, true)).reply, None, "RFC 3834: no reply to an automatic message");
    }
}
