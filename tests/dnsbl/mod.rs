//! The real DNSBL of `scripts/dnsbl.sh` (rbldnsd on loopback), for the blocklist tests:
//! where it listens, and entries listed and removed by rewriting its test data files.
//! Shared by `tests/blocklist.rs` and `tests/e2e`; never a skip when it is missing.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

pub struct Dnsbl {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The list under test (passes the RFC 5782 test entries).
    pub zone: String,
    /// A list that fails them.
    pub bad_zone: String,
    dir: PathBuf,
}

pub fn dnsbl() -> &'static Dnsbl {
    static D: OnceLock<Dnsbl> = OnceLock::new();
    D.get_or_init(|| {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        match (
            var("DELISTD_TEST_DNSBL_ADDR"),
            var("DELISTD_TEST_DNSBL_ZONE"),
            var("DELISTD_TEST_DNSBL_BAD_ZONE"),
            var("DELISTD_TEST_DNSBL_DIR"),
        ) {
            (Some(addr), Some(zone), Some(bad_zone), Some(dir)) => Dnsbl { addr, zone, bad_zone, dir: dir.into() },
            _ => panic!(
                "DELISTD_TEST_DNSBL_* not set: these tests run against the real rbldnsd of scripts/dnsbl.sh.\n\
                 Run them with `bash scripts/test.sh`, or start one and export its variables:\n  \
                 DELISTD_DNSBL_DIR=/tmp/dnsbl bash scripts/dnsbl.sh start\n  set -a; . /tmp/dnsbl/env; set +a"
            ),
        }
    })
}

/// The test data files are rewritten by one test at a time.
static EDIT: Mutex<()> = Mutex::new(());

impl Dnsbl {
    fn file(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(if ip.is_ipv4() { "tests.ip4" } else { "tests.ip6" })
    }

    /// Rewrite the data file of `ip`'s family. rbldnsd notices a change by the file's
    /// modification time in whole seconds, so the new file gets one at least a second after
    /// the old one's: two edits within a second are both seen.
    fn edit(&self, ip: IpAddr, f: impl FnOnce(&mut Vec<String>)) {
        let _g = EDIT.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.file(ip);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
        f(&mut lines);
        let before = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let stamp = secs(SystemTime::now()).max(secs(before) + 1);
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
        let file = std::fs::File::options().write(true).open(&tmp).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(stamp)).unwrap();
        drop(file);
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// List `ip` with this TXT reason (A record 127.0.0.2).
    pub fn list(&self, ip: &str, reason: &str) {
        let ip: IpAddr = ip.parse().unwrap();
        self.edit(ip, |lines| {
            lines.retain(|l| l.split_whitespace().next() != Some(&ip.to_string()));
            lines.push(format!("{ip} :127.0.0.2:{reason}"));
        });
    }

    /// Take `ip` off the list.
    pub fn unlist(&self, ip: &str) {
        let ip: IpAddr = ip.parse().unwrap();
        self.edit(ip, |lines| lines.retain(|l| l.split_whitespace().next() != Some(&ip.to_string())));
    }

    /// The `[blocklist]` lines for a daemon config using this list.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "\n[blocklist]\ndnsbl_zones = [{:?}]\nnameservers = [{:?}]\ntimeout = \"2s\"\n{extra}",
            self.zone, self.addr
        )
    }

    /// Wait until rbldnsd answers `ip` as `listed` (it reloads within about a second).
    pub fn wait_until(&self, ip: &str, listed: bool) {
        let cfg = delistd::config::BlocklistConfig {
            dnsbl_zones: vec![self.zone.clone()],
            nameservers: vec![self.addr.parse().unwrap()],
            timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let b = delistd::blocklist::Blocklist::unchecked(&cfg).unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let l = rt.block_on(b.check(ip));
            if matches!(l, delistd::blocklist::Listing::Listed { .. }) == listed
                && !matches!(l, delistd::blocklist::Listing::Unknown { .. })
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "rbldnsd still answers {l:?} for {ip} after 15 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
