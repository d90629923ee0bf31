//! A sender who answers our "missing information" reply quotes it. The example NDR line in
//! that reply must never be read back as their banned IP: the case would be completed with
//! an address nobody asked about.

use delistd::decide::{Missing, ReplyKind};
use delistd::extract::{extract, ExtractOptions};
use delistd::reply::{render, ReplyVars};
use delistd::types::Lang;

#[test]
fn quoting_our_missing_info_reply_supplies_no_ip() {
    for lang in Lang::ALL {
        let vars = ReplyVars {
            case_refs: vec!["DL-000004".into()],
            status_code: Some("5.7.511".into()),
            missing: vec![Missing::Ip],
            sla_hours: 48,
            portal_url: "https://portal.example/".into(),
            support_url: "https://support.example/".into(),
            ..ReplyVars::default()
        };
        let reply = render(ReplyKind::MissingInfo, lang, &vars).unwrap();
        let quoted: String = reply.body.lines().map(|l| format!("> {l}\r\n")).collect();
        for body in [quoted.clone(), reply.body.replace('\n', "\r\n")] {
            let msg = format!(
                "From: a@example.org\r\nTo: delist@example.test\r\nSubject: Re: {}\r\nMessage-ID: <q@example.org>\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nI do not know which IP it is.\r\n\r\n{body}",
                reply.subject
            );
            let ev = extract(msg.as_bytes(), &ExtractOptions::default());
            assert!(ev.valid_ips().is_empty(), "{lang}: our own example read as an IP: {:?}", ev.ips);
        }
    }
}
