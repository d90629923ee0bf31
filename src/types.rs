//! Small domain values shared by every step of the pipeline.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. `5.7.511`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl StatusCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        StatusCode { class, subject, detail }
    }

    /// `5.7.511`: banned sender, the only code this mailbox opens cases for.
    pub const BANNED_SENDER: StatusCode = StatusCode::new(5, 7, 511);

    /// True when this is `5.7.<lo..=hi>`.
    pub fn is_5_7_in(&self, lo: u16, hi: u16) -> bool {
        self.class == 5 && self.subject == 7 && (lo..=hi).contains(&self.detail)
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Error parsing a [`StatusCode`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an enhanced status code (class.subject.detail): {0:?}")]
pub struct BadStatusCode(pub String);

impl FromStr for StatusCode {
    type Err = BadStatusCode;
    /// RFC 3463 §2: class is 2, 4 or 5; subject 1–3 digits; detail 1–3 digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadStatusCode(s.to_string());
        let mut it = s.trim().split('.');
        let (c, sub, det) = match (it.next(), it.next(), it.next(), it.next()) {
            (Some(c), Some(sub), Some(det), None) => (c, sub, det),
            _ => return Err(bad()),
        };
        let digits = |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        if c.len() != 1 || !digits(sub) || !digits(det) {
            return Err(bad());
        }
        let class: u8 = c.parse().map_err(|_| bad())?;
        if !matches!(class, 2 | 4 | 5) {
            return Err(bad());
        }
        Ok(StatusCode {
            class,
            subject: sub.parse().map_err(|_| bad())?,
            detail: det.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for StatusCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A case reference, `DL-000042`. Stable and never reused: it is the row id of the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CaseRef(pub i64);

impl fmt::Display for CaseRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DL-{:06}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a case reference (expected DL-000123): {0:?}")]
pub struct BadCaseRef(pub String);

impl FromStr for CaseRef {
    type Err = BadCaseRef;
    /// Accepts `DL-000123`, `dl-123`, `[DL-000123]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches('[').trim_end_matches(']');
        let digits = t
            .strip_prefix("DL-")
            .or_else(|| t.strip_prefix("dl-"))
            .or_else(|| t.strip_prefix("Dl-"))
            .or_else(|| t.strip_prefix("dL-"))
            .ok_or_else(|| BadCaseRef(s.to_string()))?;
        if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadCaseRef(s.to_string()));
        }
        match digits.parse::<i64>() {
            Ok(n) if n > 0 => Ok(CaseRef(n)),
            _ => Err(BadCaseRef(s.to_string())),
        }
    }
}

impl Serialize for CaseRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Languages replies are written in. The request's language picks one; English otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Fr,
    It,
    Ja,
    De,
    Es,
    Pt,
    Nl,
    /// Chinese, written in simplified characters.
    Zh,
}

impl Lang {
    pub const ALL: [Lang; 9] =
        [Lang::En, Lang::Fr, Lang::It, Lang::Ja, Lang::De, Lang::Es, Lang::Pt, Lang::Nl, Lang::Zh];

    /// ISO 639-1 code.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
            Lang::It => "it",
            Lang::Ja => "ja",
            Lang::De => "de",
            Lang::Es => "es",
            Lang::Pt => "pt",
            Lang::Nl => "nl",
            Lang::Zh => "zh",
        }
    }

    /// From an ISO 639-1 code or a language tag (`fr-CA`, `ja_JP`); `None` if unsupported.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        Lang::ALL.into_iter().find(|l| l.code() == primary)
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_parses_rfc3463_forms() {
        assert_eq!("5.7.511".parse(), Ok(StatusCode::new(5, 7, 511)));
        assert_eq!("4.4.1".parse(), Ok(StatusCode::new(4, 4, 1)));
        assert!("5.7.5111".parse::<StatusCode>().is_err());
        assert!("3.7.1".parse::<StatusCode>().is_err());
        assert!("5.7".parse::<StatusCode>().is_err());
        assert!("5.7.1.2".parse::<StatusCode>().is_err());
        assert_eq!(StatusCode::new(5, 7, 511).to_string(), "5.7.511");
    }

    #[test]
    fn status_code_ranges_match_by_number() {
        assert!(StatusCode::new(5, 7, 606).is_5_7_in(606, 649));
        assert!(StatusCode::new(5, 7, 649).is_5_7_in(606, 649));
        assert!(!StatusCode::new(5, 7, 650).is_5_7_in(606, 649));
        assert!(!StatusCode::new(4, 7, 610).is_5_7_in(606, 649));
    }

    #[test]
    fn case_ref_round_trips() {
        assert_eq!(CaseRef(42).to_string(), "DL-000042");
        assert_eq!("DL-000042".parse(), Ok(CaseRef(42)));
        assert_eq!("[dl-42]".parse(), Ok(CaseRef(42)));
        assert_eq!(CaseRef(1234567).to_string(), "DL-1234567");
        assert!("DL-".parse::<CaseRef>().is_err());
        assert!("DL-0".parse::<CaseRef>().is_err());
        assert!("XX-1".parse::<CaseRef>().is_err());
    }

    #[test]
    fn lang_from_tags() {
        assert_eq!(Lang::from_tag("fr-CA"), Some(Lang::Fr));
        assert_eq!(Lang::from_tag("ja_JP"), Some(Lang::Ja));
        assert_eq!(Lang::from_tag("DE"), Some(Lang::De));
        assert_eq!(Lang::from_tag("es-MX"), Some(Lang::Es));
        assert_eq!(Lang::from_tag("pt_BR"), Some(Lang::Pt));
        assert_eq!(Lang::from_tag("zh-Hans-CN"), Some(Lang::Zh));
        assert_eq!(Lang::from_tag("ko"), None);
    }
}
