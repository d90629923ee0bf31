//! The blocklist lookups against a real DNSBL server: Debian's rbldnsd, started by
//! `scripts/dnsbl.sh` with `ip4set` and `ip6trie` zones that the tests rewrite. The CIDR
//! source reads a real file. Nothing is mocked; a server that does not answer is a real
//! UDP socket that never replies.

mod dnsbl;

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use delistd::blocklist::{Blocklist, BlocklistError, Listing};
use delistd::config::BlocklistConfig;
use dnsbl::dnsbl;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn config(zones: &[&str], nameserver: &str) -> BlocklistConfig {
    BlocklistConfig {
        dnsbl_zones: zones.iter().map(|z| z.to_string()).collect(),
        nameservers: vec![nameserver.parse().unwrap()],
        timeout: Duration::from_secs(1),
        ..Default::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn listed_not_listed_and_the_txt_reason_in_both_families() {
    let d = dnsbl();
    d.list("198.51.100.21", "Listed: spam trap hits since 2026-11-01");
    d.list("2001:db8:21::7", "Listed: IPv6 snowshoe range");
    d.unlist("198.51.100.22");
    d.wait_until("198.51.100.21", true);
    d.wait_until("2001:db8:21::7", true);
    let rt = rt();
    let b =
        rt.block_on(Blocklist::start(&config(&[&d.zone], &d.addr))).expect("the zone passes the RFC 5782 test entries");
    let got = rt.block_on(b.check_all(&[
        ip("198.51.100.21"),
        ip("198.51.100.22"),
        ip("2001:db8:21::7"),
        ip("2001:db8:21::8"),
    ]));
    assert_eq!(
        got[&ip("198.51.100.21")],
        Listing::Listed {
            source: d.zone.clone(),
            since: None,
            reason: Some("Listed: spam trap hits since 2026-11-01".into())
        }
    );
    assert_eq!(got[&ip("198.51.100.22")], Listing::NotListed);
    assert_eq!(
        got[&ip("2001:db8:21::7")],
        Listing::Listed { source: d.zone.clone(), since: None, reason: Some("Listed: IPv6 snowshoe range".into()) }
    );
    assert_eq!(got[&ip("2001:db8:21::8")], Listing::NotListed);

    // Taken off the list: not listed at the next lookup after the TTL (1 s here).
    d.unlist("198.51.100.21");
    d.wait_until("198.51.100.21", false);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(rt.block_on(b.check(ip("198.51.100.21"))), Listing::NotListed);
}

#[test]
fn a_zone_failing_the_rfc5782_test_entries_is_refused_at_start() {
    let d = dnsbl();
    let e = rt().block_on(Blocklist::start(&config(&[&d.zone, &d.bad_zone], &d.addr))).unwrap_err();
    let BlocklistError::ZoneTest(problems) = &e else { panic!("{e}") };
    assert!(!e.is_temporary(), "a wrong answer is a configuration problem: {e}");
    assert!(problems.iter().all(|p| p.zone == d.bad_zone), "{e}");
    let text = e.to_string();
    assert!(text.contains("127.0.0.2 must be listed") && text.contains("127.0.0.1 must not be listed"), "{text}");
    // A zone that does not exist at all fails too (nothing is listed there).
    assert!(rt().block_on(Blocklist::start(&config(&["nothing.delistd.test"], &d.addr))).is_err());
}

#[test]
fn a_server_that_does_not_answer_is_unknown_within_the_timeout() {
    // A real socket that reads queries and never replies.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let d = dnsbl();
    let b = Blocklist::unchecked(&config(&[&d.zone], &addr)).unwrap();
    let started = Instant::now();
    let got = rt().block_on(b.check_all(&[ip("198.51.100.23"), ip("2001:db8:23::1")]));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3500), "took {took:?} with a 1 s timeout");
    for l in got.values() {
        assert!(matches!(l, Listing::Unknown { .. }), "{l:?}");
    }
    // And it is refused at start: the test entries cannot be checked.
    let e = rt().block_on(Blocklist::start(&config(&[&d.zone], &addr))).unwrap_err();
    assert!(e.is_temporary() && e.to_string().contains("could not be looked up"), "{e}");
    drop(silent);
}

#[test]
fn the_cidr_file_answers_with_its_line_and_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banned_senders.cidr");
    std::fs::write(&path, "# provider's MTA table\n203.0.113.0/24   REJECT 5.7.511 Access denied, banned sender\n")
        .unwrap();
    let d = dnsbl();
    let cfg = BlocklistConfig { cidr_file: Some(path.clone()), ..config(&[&d.zone], &d.addr) };
    let rt = rt();
    let b = rt.block_on(Blocklist::start(&cfg)).unwrap();
    d.unlist("192.0.2.24");
    match rt.block_on(b.check(ip("203.0.113.24"))) {
        Listing::Listed { source, reason, .. } => {
            assert_eq!(source, format!("cidr:{}", path.display()));
            assert_eq!(reason.as_deref(), Some("REJECT 5.7.511 Access denied, banned sender (line 2)"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.block_on(b.check(ip("192.0.2.24"))), Listing::NotListed);
    // The MTA's table is edited: the next lookup sees it, without a restart.
    std::fs::write(&path, "192.0.2.0/24 REJECT 5.7.511 moved here\n").unwrap();
    assert_eq!(rt.block_on(b.check(ip("203.0.113.24"))), Listing::NotListed);
    assert!(matches!(rt.block_on(b.check(ip("192.0.2.24"))), Listing::Listed { .. }));
}

#[test]
fn check_config_connect_and_the_daemon_refuse_a_failing_zone() {
    let d = dnsbl();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("mail/new")).unwrap();
    let write = |zones: &str| {
        let path = dir.path().join("delistd.toml");
        std::fs::write(
            &path,
            format!(
                "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"mail\"\n[smtp]\nreply_dir = \"out\"\n\
                 [store]\ndatabase = \"db.sqlite\"\n[replies]\nfrom = \"desk@example.test\"\n\
                 [blocklist]\ndnsbl_zones = [{zones}]\nnameservers = [{:?}]\ntimeout = \"1s\"\n",
                d.addr
            ),
        )
        .unwrap();
        path
    };
    let delistd = |args: &[&str], config: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_delistd"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let good = write(&format!("{:?}", d.zone));
    let out = delistd(&["check-config", "--connect"], &good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("blocklist: ok ({})", d.zone)));

    let bad = write(&format!("{:?}, {:?}", d.zone, d.bad_zone));
    let out = delistd(&["check-config", "--connect"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains(&format!("DNSBL zone {} fails the RFC 5782 test entries", d.bad_zone)), "{err}");
    // Without --connect the file itself is fine: nothing is looked up.
    assert!(delistd(&["check-config"], &bad).status.success());
    // The daemon refuses to start on it, before touching the mailbox.
    let out = delistd(&["run", "--once"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("127.0.0.1 must not be listed"), "{err}");
    assert!(!dir.path().join("out").exists(), "nothing was answered");
}
