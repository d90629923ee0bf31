//! The desk linked to the blocklist itself, end to end: requests go in through Postfix and
//! Dovecot, the daemon looks their IPs up on the real rbldnsd of `scripts/dnsbl.sh`, and
//! its replies come back through Postfix. Each test lists and unlists IPs of its own.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::dnsbl::dnsbl;

fn ndr(ip: &str) -> String {
    format!("550 5.7.511 Access denied, banned sender[{ip}]. To request removal from this list, forward this message to delist@example.test.")
}

/// A complete request from the account `role` about `ip`.
fn request(d: &Delistd, role: &str, ip: &str) -> (Account, String) {
    let from = d.account(role);
    let mid = format!("{role}-{}@senders.example.test", ip.replace([':', '.'], "-"));
    let raw = text_message(
        &format!("Postmaster <{}>", from.address),
        &d.delist.address,
        "Please delist our server",
        &mid,
        &[],
        &format!("Hello,\n\nour mail is rejected with:\n\n    {}\n\nPlease remove us.\n", ndr(ip)),
    );
    send_mail(&from.address, &d.delist.address, &raw);
    (from, mid)
}

fn append_config(d: &Delistd, text: &str) {
    let mut c = read(&d.config);
    c.push_str(text);
    std::fs::write(&d.config, c).unwrap();
}

fn case_of<'a>(cases: &'a [serde_json::Value], ip: &str) -> &'a serde_json::Value {
    cases.iter().find(|c| c["ip"] == ip).unwrap_or_else(|| panic!("no case for {ip}: {cases:#?}"))
}

/// A DNS server in front of rbldnsd that never answers queries about one name (any query
/// whose name contains `drop`) and relays everything else: the RFC 5782 test entries pass,
/// so the daemon starts, and the lookup of that one IP times out as a dead server's would.
fn silent_for(drop: &'static str) -> String {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = front.local_addr().unwrap().to_string();
    let upstream: String = dnsbl().addr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf) else { return };
            let query = buf[..n].to_vec();
            // The question's labels, dotted, for matching.
            let mut name = String::new();
            let mut i = 12;
            while i < query.len() && query[i] != 0 {
                let len = query[i] as usize;
                let end = (i + 1 + len).min(query.len());
                name.push_str(&String::from_utf8_lossy(&query[i + 1..end]));
                name.push('.');
                i = end;
            }
            if name.contains(drop) {
                continue;
            }
            let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
            relay.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            relay.send_to(&query, &upstream).unwrap();
            let mut answer = [0u8; 1500];
            if let Ok(m) = relay.recv(&mut answer) {
                let _ = front.send_to(&answer[..m], client);
            }
        }
    });
    addr
}

/// Like `wait_for_mail`, with room for one retry of the outbox: Postfix answers a reply with
/// `452 4.3.1` now and then while the suite loads the stack, and the outbox retries 30 s later.
fn wait_for_reply(account: &Account, n: usize) -> Vec<Vec<u8>> {
    let mut r = ImapReader::login(account);
    wait_for_count_in(&mut r, "INBOX", n, Duration::from_secs(90));
    r.messages("INBOX")
}

#[test]
fn listed_requests_show_why_and_unlisted_ones_are_answered_at_once() {
    let bl = dnsbl();
    bl.list("198.51.100.131", "Listed: spam trap hits, ticket 4711");
    bl.unlist("198.51.100.132");
    bl.wait_until("198.51.100.131", true);
    bl.wait_until("198.51.100.132", false);
    let d = Delistd::new("bl-intake");
    append_config(&d, &bl.config(""));
    let (listed_from, _) = request(&d, "listed", "198.51.100.131");
    let (unlisted_from, unlisted_mid) = request(&d, "unlisted", "198.51.100.132");
    wait_for_mail(&d.delist, "INBOX", 2);
    let sent = Instant::now();
    d.run_once_ok();

    // Not listed anywhere: a case closed as not_listed, and the answer within seconds.
    let got = wait_for_mail(&unlisted_from, "INBOX", 1);
    assert!(sent.elapsed() < Duration::from_secs(30), "answered after {:?}", sent.elapsed());
    let s = subject(&got[0]);
    assert!(s.contains("IP address not on our block list"), "{s:?}");
    let body = body_text(&got[0]);
    assert!(body.contains("198.51.100.132") && body.contains("550 5.7.511"), "{body}");
    assert_eq!(header(&got[0], "In-Reply-To").as_deref(), Some(format!("<{unlisted_mid}>").as_str()));
    let cases = d.cases();
    let unlisted = case_of(&cases, "198.51.100.132");
    assert_eq!(
        (unlisted["state"].as_str(), unlisted["resolution"].as_str()),
        (Some("resolved"), Some("not_listed")),
        "{unlisted:#}"
    );
    let shown = d.show(unlisted["ref"].as_str().unwrap());
    assert!(
        shown["events"].as_array().unwrap().iter().any(|e| e["actor"] == "blocklist" && e["kind"] == "resolved"),
        "{shown:#}"
    );

    // Listed: open as before, with the source and the TXT reason, in JSON and in `show`.
    let listed = case_of(&cases, "198.51.100.131");
    assert_eq!(listed["state"], "open", "{listed:#}");
    assert_eq!(listed["listing_source"], bl.zone.as_str(), "{listed:#}");
    assert_eq!(listed["listing_reason"], "Listed: spam trap hits, ticket 4711", "{listed:#}");
    let text = d.cases_cmd(&["show", listed["ref"].as_str().unwrap()]);
    assert!(text.contains(&format!("Listed on:      {}: Listed: spam trap hits, ticket 4711", bl.zone)), "{text}");
    let ack = wait_for_mail(&listed_from, "INBOX", 1);
    assert!(subject(&ack[0]).contains("Delisting request received"), "{}", subject(&ack[0]));

    // Stats count the request that needed no staff.
    let stats: serde_json::Value = serde_json::from_str(&d.cases_cmd(&["stats", "--json"])).unwrap();
    assert_eq!(stats["not_listed"], 1, "{stats:#}");
    assert_eq!(stats["open"], 1, "{stats:#}");
}

#[test]
fn a_list_that_does_not_answer_leaves_the_request_to_staff_within_the_timeout() {
    let bl = dnsbl();
    bl.list("198.51.100.133", "Listed");
    let front = silent_for("133.100.51.198");
    let d = Delistd::new("bl-silent");
    append_config(
        &d,
        &format!("\n[blocklist]\ndnsbl_zones = [{:?}]\nnameservers = [{front:?}]\ntimeout = \"1s\"\n", bl.zone),
    );
    let (from, _) = request(&d, "silent", "198.51.100.133");
    wait_for_mail(&d.delist, "INBOX", 1);
    let started = Instant::now();
    d.run_once_ok();
    // Start-up check, one lookup bounded at 2 × 1 s, the SMTP round: well under 15 s.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let cases = d.cases();
    let c = case_of(&cases, "198.51.100.133");
    assert_eq!(c["state"], "open", "{c:#}");
    assert!(c["listing_source"].is_null(), "{c:#}");
    let shown = d.show(c["ref"].as_str().unwrap());
    let noted = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["actor"] == "blocklist" && e["text"].as_str().is_some_and(|t| t.contains("gave no answer")));
    assert!(noted, "{shown:#}");
    let ack = wait_for_mail(&from, "INBOX", 1);
    assert!(subject(&ack[0]).contains("Delisting request received"), "{}", subject(&ack[0]));
}

#[test]
fn a_case_closes_by_itself_when_its_ip_leaves_the_list() {
    let bl = dnsbl();
    bl.list("198.51.100.134", "Listed: botnet C&C contact");
    bl.wait_until("198.51.100.134", true);
    let d = Delistd::new("bl-recheck");
    append_config(&d, &bl.config("recheck_interval = \"10s\"\n"));
    let mut serving = d.serve();
    let (from, _) = request(&d, "recheck", "198.51.100.134");
    let ack = wait_for_mail(&from, "INBOX", 1);
    assert!(subject(&ack[0]).contains("Delisting request received"));
    let open = d.cases();
    let c = case_of(&open, "198.51.100.134");
    assert_eq!(c["state"], "open", "{c:#}");
    let case_ref = c["ref"].as_str().unwrap().to_string();

    bl.unlist("198.51.100.134");
    wait_until(
        Duration::from_secs(40),
        || format!("{:#}\n{}", d.show(&case_ref), serving.log_text()),
        || d.show(&case_ref)["case"]["state"] == "resolved",
    );
    serving.assert_running();
    let shown = d.show(&case_ref);
    assert_eq!(shown["case"]["resolution"], "delisted", "{shown:#}");
    assert!(
        shown["events"].as_array().unwrap().iter().any(|e| e["kind"] == "resolved"
            && e["actor"] == "blocklist"
            && e["text"].as_str().is_some_and(|t| t.contains("no longer listed"))),
        "{shown:#}"
    );
    // The sender gets the same `delisted` reply a staff resolve sends, through Postfix.
    let got = wait_for_reply(&from, 2);
    let s = subject(&got[1]);
    assert!(s.contains(&format!("[{case_ref}]")) && s.contains("IP address removed from the block list"), "{s:?}");
    assert!(body_text(&got[1]).contains("198.51.100.134"));
    serving.terminate();
}

/// A delist command of the test's own: records its arguments, fails for one IP.
fn delist_script(d: &Delistd, fail_ip: &str) -> std::path::PathBuf {
    let path = d.root.join("delist-ip");
    let log = d.root.join("delist-ip.log");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> {log:?}\nif [ \"$1\" = {fail_ip:?} ]; then\n  echo \"upstream API refused $1\" >&2\n  exit 3\nfi\necho \"removed $1 for $2\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn staff_resolve_runs_the_delist_command_and_a_failure_keeps_the_case_open() {
    let bl = dnsbl();
    bl.list("198.51.100.135", "Listed");
    bl.list("198.51.100.136", "Listed");
    bl.wait_until("198.51.100.135", true);
    bl.wait_until("198.51.100.136", true);
    let d = Delistd::new("bl-command");
    let script = delist_script(&d, "198.51.100.136");
    append_config(
        &d,
        &bl.config(&format!("delist_command = [{:?}, \"{{ip}}\", \"{{case}}\"]\n", script.display().to_string())),
    );
    request(&d, "cmd-ok", "198.51.100.135");
    let (fail_from, _) = request(&d, "cmd-fail", "198.51.100.136");
    wait_for_mail(&d.delist, "INBOX", 2);
    d.run_once_ok();
    let cases = d.cases();
    let ok_ref = case_of(&cases, "198.51.100.135")["ref"].as_str().unwrap().to_string();
    let fail_ref = case_of(&cases, "198.51.100.136")["ref"].as_str().unwrap().to_string();

    let out = d.cases_cmd(&["resolve", &ok_ref, "--note", "checked", "--reply", "delisted", "--by", "alice"]);
    assert!(out.contains("resolved"), "{out}");
    assert_eq!(read(&d.root.join("delist-ip.log")).lines().next(), Some(format!("198.51.100.135 {ok_ref}").as_str()));
    let shown = d.show(&ok_ref);
    assert_eq!(shown["case"]["state"], "resolved");
    assert!(
        shown["events"].as_array().unwrap().iter().any(|e| e["text"]
            .as_str()
            .is_some_and(|t| t.contains("delist_command succeeded")
                && t.contains("exit status 0")
                && t.contains(&format!("removed 198.51.100.135 for {ok_ref}")))),
        "{shown:#}"
    );

    // The failing one: exit 5, still open, and `show` says why.
    let out = d
        .command()
        .args(["cases", "--config"])
        .arg(&d.config)
        .args(["--db"])
        .arg(&d.db)
        .args(["resolve", &fail_ref, "--note", "checked", "--reply", "delisted", "--by", "alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stays open") && err.contains("exit status 3"), "{err}");
    assert_eq!(d.show(&fail_ref)["case"]["state"], "open");
    let text = d.cases_cmd(&["show", &fail_ref]);
    assert!(
        text.contains("Delist command: delist_command FAILED") && text.contains("upstream API refused 198.51.100.136"),
        "{text}"
    );
    // No delisted reply went to the sender whose IP is still listed: only the acknowledgement.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ImapReader::login(&fail_from).count("INBOX"), 1);
}

#[test]
fn auto_delist_first_honours_a_first_request_and_leaves_repeats_to_staff() {
    let bl = dnsbl();
    bl.list("198.51.100.137", "Listed");
    bl.list("198.51.100.138", "Listed");
    bl.wait_until("198.51.100.137", true);
    bl.wait_until("198.51.100.138", true);
    let d = Delistd::new("bl-first");
    let script = delist_script(&d, "198.51.100.138");
    append_config(
        &d,
        &bl.config(&format!(
            "recheck_interval = \"10m\"\ndelist_command = [{:?}, \"{{ip}}\", \"{{case}}\"]\nauto_delist_first = true\n",
            script.display().to_string()
        )),
    );
    let mut serving = d.serve();
    let (from, _) = request(&d, "first", "198.51.100.137");
    let (fail_from, _) = request(&d, "first-fail", "198.51.100.138");
    // The first request: acknowledged, then delisted by the command, without staff.
    let got = wait_for_reply(&from, 2);
    assert!(got.iter().any(|m| subject(m).contains("IP address removed from the block list")), "{}", summary(&got));
    let cases = d.cases();
    let c = case_of(&cases, "198.51.100.137");
    assert_eq!((c["state"].as_str(), c["resolution"].as_str()), (Some("resolved"), Some("delisted")), "{c:#}");
    // The command failed for the other: open for staff, the failure in its history.
    let failing = case_of(&cases, "198.51.100.138")["ref"].as_str().unwrap().to_string();
    wait_until(
        Duration::from_secs(20),
        || format!("{:#}", d.show(&failing)),
        || d.cases_cmd(&["show", &failing]).contains("delist_command FAILED"),
    );
    assert_eq!(d.show(&failing)["case"]["state"], "open");
    assert_eq!(ImapReader::login(&fail_from).count("INBOX"), 1);

    // A repeat request for the IP whose first was honoured goes to a person.
    bl.wait_until("198.51.100.137", true);
    let (again_from, _) = request(&d, "again", "198.51.100.137");
    let ack = wait_for_mail(&again_from, "INBOX", 1);
    assert!(subject(&ack[0]).contains("Delisting request received"));
    std::thread::sleep(Duration::from_secs(3));
    let cases = d.cases();
    let repeat: Vec<_> = cases.iter().filter(|c| c["ip"] == "198.51.100.137" && c["state"] == "open").collect();
    assert_eq!(repeat.len(), 1, "{cases:#?}");
    assert_eq!(read(&d.root.join("delist-ip.log")).lines().filter(|l| l.starts_with("198.51.100.137 ")).count(), 1);
    serving.assert_running();
    serving.terminate();
}
