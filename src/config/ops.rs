//! The operations sections of the file: `[metrics]` (the Prometheus and health listener) and
//! `[escalation]` (warnings to staff before and when a case misses its SLA).
//!
//! Kept apart from `config.rs` so that the sections other features add do not meet here;
//! validated with the same [`Check`], so every problem still comes with its line.

use std::net::SocketAddr;
use std::time::Duration;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::Check;
use crate::types::Lang;

/// `[metrics]`: where `delistd run` serves `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub listen: SocketAddr,
}

/// `[escalation]`: warnings mailed to staff before a case is due and when it is overdue, and
/// a daily digest.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// Team addresses that get every warning and the digest.
    pub notify: Vec<String>,
    /// The *due soon* warning goes out this long before `due_at`.
    pub warn_before: Duration,
    /// Local time of the daily digest.
    pub digest_at: Time,
    /// Local times between which nothing is sent (held until the end): `(start, end)`,
    /// crossing midnight when `end <= start`.
    pub quiet_hours: Option<(Time, Time)>,
    /// Language of the staff mails (English where a template is missing).
    pub language: Lang,
    /// The time zone `digest_at` and `quiet_hours` are read in.
    pub timezone: TimeZone,
    /// The digest lists cases awaiting information for longer than this.
    pub awaiting_info_after: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEscalation {
    notify: Option<Vec<String>>,
    warn_before: Option<String>,
    digest_at: Option<String>,
    quiet_hours: Option<String>,
    language: Option<String>,
    timezone: Option<String>,
    awaiting_info_after: Option<String>,
}

/// `HH:MM` (or `HH:MM:SS`), 24-hour.
fn parse_time(s: &str) -> Option<Time> {
    s.trim().parse::<Time>().ok()
}

impl Check<'_> {
    pub(super) fn metrics(&mut self, raw: &Option<RawMetrics>) -> Option<Metrics> {
        let raw = raw.as_ref()?;
        let listen = self.required("metrics.listen", &raw.listen)?;
        match listen.parse::<SocketAddr>() {
            Ok(listen) => Some(Metrics { listen }),
            Err(_) => {
                self.problem("metrics.listen", format!("{listen:?} is not an address and port (write e.g. \"127.0.0.1:9154\")"));
                None
            }
        }
    }

    pub(super) fn escalation(&mut self, raw: &Option<RawEscalation>) -> Option<Escalation> {
        let raw = raw.as_ref()?;
        let notify = raw.notify.clone().unwrap_or_default();
        if notify.is_empty() {
            self.problem("escalation.notify", "is required: the staff addresses that get the warnings (e.g. [\"delist-team@example.net\"])");
        }
        for a in &notify {
            if a.parse::<lettre::message::Mailbox>().is_err() || a.contains(['\r', '\n']) {
                self.problem("escalation.notify", format!("{a:?} is not a mailbox (write \"delist-team@example.net\")"));
            }
        }
        let warn_before = self.duration("escalation.warn_before", &raw.warn_before, Duration::from_secs(6 * 3600));
        let awaiting_info_after =
            self.duration("escalation.awaiting_info_after", &raw.awaiting_info_after, Duration::from_secs(72 * 3600));
        let digest_at = match &raw.digest_at {
            None => Time::constant(8, 0, 0, 0),
            Some(s) => parse_time(s).unwrap_or_else(|| {
                self.problem("escalation.digest_at", format!("{s:?} is not a time of day (write e.g. \"08:00\")"));
                Time::midnight()
            }),
        };
        let quiet_hours = match &raw.quiet_hours {
            None => None,
            Some(s) => {
                let parsed = s.split_once('-').and_then(|(a, b)| Some((parse_time(a)?, parse_time(b)?)));
                match parsed {
                    Some((a, b)) if a != b => Some((a, b)),
                    _ => {
                        self.problem(
                            "escalation.quiet_hours",
                            format!("{s:?} is not a period of the day (write e.g. \"22:00-07:00\")"),
                        );
                        None
                    }
                }
            }
        };
        let language = match &raw.language {
            None => Lang::En,
            Some(code) => Lang::from_tag(code).unwrap_or_else(|| {
                let known: Vec<&str> = Lang::ALL.iter().map(|l| l.code()).collect();
                self.problem("escalation.language", format!("{code:?} is not a language of ours ({})", known.join(", ")));
                Lang::En
            }),
        };
        let timezone = match &raw.timezone {
            None => TimeZone::system(),
            Some(name) => TimeZone::get(name).unwrap_or_else(|e| {
                self.problem("escalation.timezone", format!("{name:?} is not a time zone ({e}); write e.g. \"Europe/Paris\" or \"UTC\""));
                TimeZone::UTC
            }),
        };
        Some(Escalation { notify, warn_before, digest_at, quiet_hours, language, timezone, awaiting_info_after })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError, Secrets};

    const BASE: &str = "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"mail\"\n[smtp]\nreply_dir = \"out\"\n[replies]\nfrom = \"d@example.net\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse_with(&format!("{BASE}{extra}"), Path::new("/srv/x.toml"), Secrets::Skip)
    }

    #[test]
    fn metrics_and_escalation_load_with_defaults() {
        let c = parse("[metrics]\nlisten = \"127.0.0.1:9154\"\n[escalation]\nnotify = [\"team@example.net\"]\ntimezone = \"UTC\"\n").unwrap();
        assert_eq!(c.metrics.unwrap().listen.port(), 9154);
        let e = c.escalation.unwrap();
        assert_eq!(e.warn_before, std::time::Duration::from_secs(6 * 3600));
        assert_eq!(e.digest_at, jiff::civil::time(8, 0, 0, 0));
        assert!(e.quiet_hours.is_none());
        let none = parse("").unwrap();
        assert!(none.metrics.is_none() && none.escalation.is_none());
    }

    #[test]
    fn bad_values_are_reported_with_their_lines() {
        let extra = "[metrics]\nlisten = \"localhost\"\n[escalation]\nnotify = [\"not an address\"]\nwarn_before = \"soon\"\ndigest_at = \"25:00\"\nquiet_hours = \"22:00\"\nlanguage = \"xx\"\n";
        let Err(ConfigError::Invalid { problems, .. }) = parse(extra) else { panic!("expected problems") };
        let keys: Vec<(&str, Option<usize>)> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        for (key, line) in [
            ("metrics.listen", 10),
            ("escalation.notify", 12),
            ("escalation.warn_before", 13),
            ("escalation.digest_at", 14),
            ("escalation.quiet_hours", 15),
            ("escalation.language", 16),
        ] {
            assert!(keys.contains(&(key, Some(line))), "{key} at {line}: {keys:?}");
        }
    }

    #[test]
    fn quiet_hours_may_cross_midnight() {
        let c = parse("[escalation]\nnotify = [\"t@example.net\"]\nquiet_hours = \"22:00-07:30\"\ntimezone = \"UTC\"\n").unwrap();
        let (a, b) = c.escalation.unwrap().quiet_hours.unwrap();
        assert_eq!((a, b), (jiff::civil::time(22, 0, 0, 0), jiff::civil::time(7, 30, 0, 0)));
    }
}
