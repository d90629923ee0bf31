//! Signs that a message was sent automatically (RFC 3834), read from the top-level header
//! only: a person forwarding a bounce is not automatic because the attachment is.

use super::headers::address_in;
use super::{AutoSign, ReturnPath};

/// What the sign checks need from the top-level header.
pub(crate) struct TopHeader<'a> {
    /// `(name, unfolded value)` in header order.
    pub fields: &'a [(String, String)],
    pub return_path: &'a ReturnPath,
    /// Top-level Content-Type as `type/subtype`, lower-cased.
    pub content_type: Option<&'a str>,
}

fn normalized_localpart(local: &str) -> String {
    local.chars().filter(|c| !matches!(c, '-' | '_' | '.')).flat_map(char::to_lowercase).collect()
}

/// Local parts of senders that are software and never read replies: the mail system itself
/// (RFC 5321 §4.5.5 MAILER-DAEMON) and declared no-reply addresses.
///
/// `postmaster@`, `abuse@`, `hostmaster@`, `noc@` are *not* here: RFC 5321 §4.5.1 and
/// RFC 2142 make them mailboxes that people read, and they are exactly the people who write
/// to a delist desk with a forwarded NDR and a cover note.
fn is_role_localpart(local: &str) -> bool {
    let n = normalized_localpart(local);
    n == "mailerdaemon" || n.starts_with("noreply") || n.starts_with("donotreply") || n == "noreplies"
}

/// Subjects written by MTAs for bounces and by auto-responders for absence notices, as they
/// begin (lower-case). A person forwarding one adds `Fwd:`/`TR:`/`WG:`..., so it no longer
/// begins this way.
const AUTOMATIC_SUBJECTS: &[&str] = &[
    "undeliverable:",
    "undelivered mail returned to sender",
    "mail delivery failed",
    "delivery status notification",
    "returned mail:",
    "mail system error",
    "failure notice",
    "delivery failure",
    "message delivery failure",
    "non remis",
    "unzustellbar",
    "nicht zustellbar",
    "non recapitabile",
    "automatic reply:",
    "auto reply:",
    "autoreply:",
    "auto-reply:",
    "out of office",
    "abwesenheitsnotiz",
    "réponse automatique",
    "risposta automatica",
    "自動応答",
    "配信不能",
];

fn automatic_subject(subject: &str) -> bool {
    let s = subject.trim_start().to_lowercase();
    AUTOMATIC_SUBJECTS.iter().any(|p| s.starts_with(p))
}

/// `From: <>` or `From: MAILER-DAEMON <>`: a null author address, which only automatic
/// senders write.
fn null_author(value: &str) -> bool {
    let v = value.trim();
    v.ends_with("<>") || v == "<>"
}

fn first_token(v: &str) -> String {
    // Drop comments and parameters: `auto-replied; owner-email="x"`, `bulk (junk)`.
    v.split([';', '(', ' ', '\t', ',']).find(|t| !t.is_empty()).unwrap_or("").to_ascii_lowercase()
}

/// Every automatic-message sign in the header, in header order.
///
/// When a person redirected the message (Resent-From from a non-role address, RFC 5322
/// §3.6.6), the fields of the original message describe that original, not this submission:
/// only the envelope (`Return-Path: <>`), list headers and spam verdicts are counted then.
pub(crate) fn signs(top: &TopHeader<'_>) -> Vec<AutoSign> {
    let redirected_by_person = top.fields.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("resent-from")
            && address_in(v).is_some_and(|a| !is_role_localpart(a.split('@').next().unwrap_or("")))
    });
    let mut out = Vec::new();
    for (name, value) in top.fields {
        let lname = name.to_ascii_lowercase();
        let original_only = |s: AutoSign| if redirected_by_person { None } else { Some(s) };
        let sign = match lname.as_str() {
            // RFC 3834 §5: anything but "no" means automatic.
            "auto-submitted" => {
                let t = first_token(value);
                (t != "no" && !t.is_empty()).then_some(AutoSign::AutoSubmitted(t)).and_then(original_only)
            }
            "precedence" => {
                let t = first_token(value);
                matches!(t.as_str(), "bulk" | "junk" | "list").then(|| AutoSign::Precedence(t)).and_then(original_only)
            }
            n if n.starts_with("list-") => Some(AutoSign::ListHeader(name.clone())),
            "from" | "sender" if null_author(value) => {
                Some(AutoSign::RoleSender(value.trim().to_string())).and_then(original_only)
            }
            "from" | "sender" => address_in(value)
                .filter(|a| is_role_localpart(a.rsplit_once('@').map_or(*a, |(l, _)| l)))
                .map(|a| AutoSign::RoleSender(a.to_string()))
                .and_then(original_only),
            "subject" if automatic_subject(value) => {
                Some(AutoSign::AutomaticSubject(clip(value.trim(), 80).to_string())).and_then(original_only)
            }
            // Apple's vacation responder (iCloud) marks its replies only this way.
            "x-apple-action" if value.trim().eq_ignore_ascii_case("vacation") => {
                Some(AutoSign::AutoreplyHeader(format!("{name}: {}", value.trim()))).and_then(original_only)
            }
            "x-autoreply" | "x-autorespond" | "x-autoresponder" | "x-autogenerated" | "x-mail-autoreply"
            | "x-autoreply-from" => {
                let v = value.trim();
                (!v.eq_ignore_ascii_case("no") && !v.eq_ignore_ascii_case("false"))
                    .then(|| AutoSign::AutoreplyHeader(format!("{name}: {v}")))
                    .and_then(original_only)
            }
            // Exchange marks its own automatic mail this way; Outlook can set it on personal
            // mail too, so only the values that name automatic replies count.
            "x-auto-response-suppress" => {
                let v = value.to_ascii_lowercase();
                ["all", "oof", "autoreply"]
                    .iter()
                    .any(|k| v.split([',', ' ', ';']).any(|t| t == *k))
                    .then(|| AutoSign::AutoreplyHeader(format!("{name}: {}", value.trim())))
                    .and_then(original_only)
            }
            // A mailbox rule (Exchange) or a Sieve `redirect` (Pigeonhole) passed the message
            // on without a person looking at it.
            "x-ms-exchange-inbox-rules-loop" | "x-sieve-redirected-from" => {
                Some(AutoSign::AutoForward(format!("{name}: {}", clip(value.trim(), 80))))
            }
            "x-spam-flag" => first_token(value).eq("yes").then(|| AutoSign::SpamVerdict(format!("{name}: {}", value.trim()))),
            "x-spam-status" => first_token(value).eq("yes").then(|| AutoSign::SpamVerdict(format!("{name}: {}", clip(value.trim(), 60)))),
            _ => None,
        };
        if let Some(s) = sign {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    if *top.return_path == ReturnPath::Null {
        out.push(AutoSign::NullReturnPath);
    }
    if top.content_type == Some("multipart/report") && !redirected_by_person {
        out.push(AutoSign::DeliveryReport);
    }
    out
}

fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Is this address a role sender (MAILER-DAEMON, no-reply)?
pub(crate) fn is_role_address(addr: &str) -> bool {
    is_role_localpart(addr.rsplit_once('@').map_or(addr, |(l, _)| l))
}

/// Could a delivery report come from this address? MAILER-DAEMON, and `postmaster`, which
/// Exchange and some appliances use as the author of their NDRs. Used only to recognise
/// bounces of our own replies, never to call a message automatic.
pub(crate) fn may_send_reports(addr: &str) -> bool {
    let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
    is_role_address(addr) || normalized_localpart(local) == "postmaster"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fields: &[(&str, &str)], rp: ReturnPath, ct: Option<&str>) -> Vec<AutoSign> {
        let f: Vec<(String, String)> = fields.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        signs(&TopHeader { fields: &f, return_path: &rp, content_type: ct })
    }

    #[test]
    fn person_mail_has_no_signs() {
        assert!(run(&[("From", "Alice <alice@example.com>"), ("Auto-Submitted", "no"), ("Precedence", "first-class")], ReturnPath::Address("alice@example.com".into()), Some("text/plain")).is_empty());
    }

    #[test]
    fn each_rfc3834_sign() {
        let s = run(
            &[
                ("Auto-Submitted", "auto-replied; owner=\"x\""),
                ("Precedence", "bulk"),
                ("List-Unsubscribe", "<mailto:u@example.org>"),
                ("From", "Mail Delivery System <MAILER-DAEMON@example.net>"),
                ("X-Autoreply", "yes"),
                ("X-Auto-Response-Suppress", "DR, OOF"),
                ("X-Spam-Flag", "YES"),
                ("X-Spam-Status", "Yes, score=9.1"),
            ],
            ReturnPath::Null,
            Some("multipart/report"),
        );
        assert_eq!(
            s,
            vec![
                AutoSign::AutoSubmitted("auto-replied".into()),
                AutoSign::Precedence("bulk".into()),
                AutoSign::ListHeader("List-Unsubscribe".into()),
                AutoSign::RoleSender("MAILER-DAEMON@example.net".into()),
                AutoSign::AutoreplyHeader("X-Autoreply: yes".into()),
                AutoSign::AutoreplyHeader("X-Auto-Response-Suppress: DR, OOF".into()),
                AutoSign::SpamVerdict("X-Spam-Flag: YES".into()),
                AutoSign::SpamVerdict("X-Spam-Status: Yes, score=9.1".into()),
                AutoSign::NullReturnPath,
                AutoSign::DeliveryReport,
            ]
        );
    }

    #[test]
    fn role_senders() {
        for a in ["no-reply@example.com", "NoReply@example.com", "do_not_reply@example.com", "MAILER-DAEMON@example.com", "noreply+x@example.com"] {
            assert!(is_role_address(a), "{a}");
        }
        // People read these (RFC 2142): a forwarded NDR from them is a request.
        for a in ["postmaster@example.com", "abuse@example.com", "hostmaster@example.com", "noc@example.com"] {
            assert!(!is_role_address(a), "{a}");
        }
        assert!(may_send_reports("postmaster@example.com") && may_send_reports("mailer-daemon@example.com"));
        assert!(!is_role_address("replies@example.com"));
        assert!(!is_role_address("nora@example.com"));
    }

    #[test]
    fn bounce_and_absence_subjects_unless_a_person_forwarded_them() {
        for subj in ["Undeliverable: report", "Mail delivery failed", "Automatic reply: hello", "Returned mail: see transcript"] {
            let s = run(&[("Subject", subj)], ReturnPath::Absent, None);
            assert!(matches!(s.as_slice(), [AutoSign::AutomaticSubject(_)]), "{subj}: {s:?}");
        }
        for subj in ["FW: Undeliverable: report", "Fwd: Mail delivery failed", "Re: out of office", "Delisting request"] {
            assert!(run(&[("Subject", subj)], ReturnPath::Absent, None).is_empty(), "{subj}");
        }
    }

    #[test]
    fn null_author_and_apple_vacation() {
        let s = run(&[("From", "MAILER-DAEMON <>")], ReturnPath::Absent, None);
        assert_eq!(s, vec![AutoSign::RoleSender("MAILER-DAEMON <>".into())]);
        let s = run(&[("X-Apple-Action", "VACATION")], ReturnPath::Absent, None);
        assert_eq!(s, vec![AutoSign::AutoreplyHeader("X-Apple-Action: VACATION".into())]);
    }

    #[test]
    fn mailbox_rules_and_sieve_redirects_are_forwards() {
        let s = run(&[("X-MS-Exchange-Inbox-Rules-Loop", "ops@example.com"), ("From", "Ops <postmaster@example.com>")], ReturnPath::Absent, None);
        assert_eq!(s, vec![AutoSign::AutoForward("X-MS-Exchange-Inbox-Rules-Loop: ops@example.com".into())]);
        let s = run(&[("X-Sieve-Redirected-From", "ops@example.com")], ReturnPath::Absent, None);
        assert!(matches!(s.as_slice(), [AutoSign::AutoForward(_)]));
    }

    #[test]
    fn spam_status_no_and_suppress_dr_only_are_not_signs() {
        assert!(run(&[("X-Spam-Status", "No, score=0.1"), ("X-Auto-Response-Suppress", "DR"), ("X-Spam-Flag", "NO")], ReturnPath::Absent, None).is_empty());
    }

    #[test]
    fn redirect_by_a_person_ignores_the_original_fields() {
        let s = run(
            &[("Resent-From", "Alice <alice@example.com>"), ("From", "MAILER-DAEMON@example.net"), ("Auto-Submitted", "auto-replied")],
            ReturnPath::Address("alice@example.com".into()),
            Some("multipart/report"),
        );
        assert!(s.is_empty(), "{s:?}");
        let s = run(&[("Resent-From", "MAILER-DAEMON@example.org"), ("Auto-Submitted", "auto-replied")], ReturnPath::Absent, None);
        assert_eq!(s, vec![AutoSign::AutoSubmitted("auto-replied".into())]);
    }
}
