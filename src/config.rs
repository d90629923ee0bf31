//! The TOML configuration file, loaded and validated once, with line-precise errors.
//!
//! Every problem found is reported (not just the first), each with the key and the line it
//! stands on, so an operator fixes the file in one pass. Secrets are never in the file:
//! passwords come from a file or a systemd credential, and `Debug` never prints them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod ops;
pub use ops::{Escalation, Metrics};

/// Where `run` and the staff commands look when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/delistd/delistd.toml";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub intake: Intake,
    pub smtp: Option<Smtp>,
    /// Replies are written as `.eml` files here instead of being sent (the embedded demo, dry runs).
    pub reply_dir: Option<PathBuf>,
    pub store: StoreConfig,
    pub replies: Replies,
    pub max_message_bytes: usize,
    /// The web desk (`[web]`); `delistd run` serves it when present.
    pub web: Option<WebConfig>,
    /// How long raw messages and closed cases are kept (`[retention]`).
    pub retention: Retention,
    pub auth: Auth,
    /// `[metrics]`: the Prometheus and health listener of `delistd run`; none when absent.
    pub metrics: Option<Metrics>,
    /// `[escalation]`: warnings to staff before and when a case misses its SLA.
    pub escalation: Option<Escalation>,
    /// `[blocklist]`: the provider's list itself (DNSBL zones and/or a CIDR file). `None`
    /// when the section is absent: no lookups, every complete request waits for staff.
    pub blocklist: Option<BlocklistConfig>,
}

/// `[web]`: where and how the staff desk is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: std::net::SocketAddr,
    /// The address staff use (behind a proxy, the proxy's), for links and cookie security.
    pub public_url: Option<String>,
    /// Serve HTTPS with this certificate chain and key (PEM).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Proxy mode: the staff name is taken from this header (e.g. `X-Forwarded-User`), and
    /// only on connections from `trusted_proxies`.
    pub proxy_user_header: Option<String>,
    /// Addresses or CIDR blocks of the proxies trusted to set `proxy_user_header`.
    pub trusted_proxies: Vec<String>,
}

/// `[blocklist]`: where the provider's list is and what delistd does with it.
#[derive(Debug, Clone)]
pub struct BlocklistConfig {
    /// RFC 5782 zones, e.g. `bl.example.net`.
    pub dnsbl_zones: Vec<String>,
    /// Name servers to ask (`host:port`); empty: the system resolver.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Longest wait for one lookup.
    pub timeout: Duration,
    /// A Postfix `cidr:` table.
    pub cidr_file: Option<PathBuf>,
    /// How often open cases' IPs are looked up again.
    pub recheck_interval: Duration,
    /// Resolve an open case by itself when its IP is on no source any more.
    pub auto_resolve: bool,
    /// Run when staff resolve a case as delisted; `{ip}` and `{case}` are replaced.
    pub delist_command: Option<Vec<String>>,
    /// Run `delist_command` at once for an IP that never had a case before.
    pub auto_delist_first: bool,
}

impl Default for BlocklistConfig {
    fn default() -> Self {
        BlocklistConfig {
            dnsbl_zones: Vec::new(),
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            cidr_file: None,
            recheck_interval: Duration::from_secs(600),
            auto_resolve: true,
            delist_command: None,
            auto_delist_first: false,
        }
    }
}

/// Whose word we take on sender authentication (`[auth]`).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The authserv-id our own border MTA writes in `Authentication-Results:` (RFC 8601
    /// §2.5). Only its fields are read; when they say SPF, DKIM and DMARC all failed, the
    /// request gets its case but no automatic reply (the sender address may be forged).
    /// `None`: every sender is answered.
    pub trusted_authserv_id: Option<String>,
}

/// `[retention]`: what is dropped from the database, and when. Raw messages are the
/// senders' personal data; the evidence, metadata and history are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Drop the raw bytes of messages this many days after their case closed (or after
    /// they were received, for a message that opened no case).
    pub raw_days: u32,
    /// Delete closed cases, with their messages, events and replies, this many days after
    /// they closed. `None`: kept forever (the default).
    pub case_days: Option<u32>,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention { raw_days: 90, case_days: None }
    }
}

// One per process, built once: the size of the IMAP variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per run: boxing would buy nothing
pub enum Intake {
    Imap(Imap),
    Maildir(MaildirSource),
}

#[derive(Debug, Clone)]
pub struct MaildirSource {
    pub path: PathBuf,
    pub poll_interval: Duration,
}

/// How a TCP connection to a mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS from the first byte (IMAPS 993, SMTPS 465; RFC 8314).
    Tls,
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    Starttls,
    /// No TLS at all. Only for loopback tests; must be asked for explicitly.
    Plain,
}

#[derive(Clone)]
pub struct Imap {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Name the certificate must carry (defaults to `host`).
    pub tls_name: String,
    pub ca_file: Option<PathBuf>,
    pub user: String,
    pub password: Secret,
    pub mailbox: String,
    pub processed_folder: String,
    pub quarantine_folder: String,
    /// Use IDLE when the server offers it (RFC 2177).
    pub idle: bool,
    /// Polling interval when IDLE is not offered, and the longest IDLE before a re-check.
    pub poll_interval: Duration,
    /// `auth = "xoauth2" | "oauthbearer"`: log in with a token instead of `password`
    /// (which is then empty).
    pub oauth: Option<OAuth>,
}

impl fmt::Debug for Imap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("mailbox", &self.mailbox)
            .field("oauth", &self.oauth)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls_name: String,
    pub ca_file: Option<PathBuf>,
    /// `None`: no AUTH (a relay that trusts our address).
    pub auth: Option<(String, Secret)>,
    /// `auth = "xoauth2" | "oauthbearer"`: AUTH as this user with a token (then `auth` is `None`).
    pub oauth: Option<(String, OAuth)>,
    /// Parallel connections used by the outbox.
    pub connections: usize,
}

/// The SASL mechanism of an OAuth 2.0 login (`auth = ...` under `[imap]` or `[smtp]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthMechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    Xoauth2,
    /// `OAUTHBEARER`, RFC 7628.
    Oauthbearer,
}

/// An OAuth 2.0 login: the token comes from an operator's command (the convention of
/// mbsync's `PassCmd` and msmtp's `passwordeval`); delistd speaks no provider's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth {
    pub mechanism: OAuthMechanism,
    /// argv, run without a shell; its stdout is the token, or JSON with `access_token`.
    pub token_command: Vec<String>,
    /// How long a token is used when the command does not say (`expires_in`).
    pub token_lifetime: Duration,
}

/// A password: where it came from and its value. `Debug` shows only the source.
#[derive(Clone)]
pub struct Secret {
    pub source: String,
    value: String,
    /// Where the config says to find it (for `check-config`); `None` when built in code.
    /// Boxed: a `Secret` sits in every IMAP and SMTP setting, which are moved around whole.
    pub origin: Option<Box<SecretOrigin>>,
}

/// Where a password is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// `password_file`: a file on this host.
    File(PathBuf),
    /// `password_credential`: `$CREDENTIALS_DIRECTORY/NAME`, put there by systemd.
    Credential(String),
}

impl Secret {
    pub fn new(source: impl Into<String>, value: impl Into<String>) -> Secret {
        Secret { source: source.into(), value: value.into(), origin: None }
    }
    /// Whether a value was read (false when the config was loaded with [`Secrets::Skip`]).
    pub fn is_read(&self) -> bool {
        !self.value.is_empty()
    }
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(from {}, redacted)", self.source)
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub database: PathBuf,
    pub sla: Duration,
}

#[derive(Debug, Clone)]
pub struct Replies {
    /// `From:` of every reply, e.g. `Delist desk <delist@example.net>`.
    pub from: String,
    /// Right-hand side of the Message-IDs we mint.
    pub message_id_domain: String,
    pub portal_url: String,
    pub support_url: String,
    /// At most this many automatic replies to one recipient in 24 hours (loop guard). The
    /// recipient is the mailbox, case-folded, without a `+tag`.
    pub max_per_recipient_per_day: u32,
    /// At most this many automatic replies to one domain in an hour (forged requests
    /// naming many addresses of one victim domain).
    pub max_per_domain_per_hour: u32,
    pub templates_dir: Option<PathBuf>,
}

/// One problem in the file: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<ConfigProblem> },
}

// ---- the file as written -------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    intake: Option<RawIntake>,
    imap: Option<RawImap>,
    maildir: Option<RawMaildir>,
    smtp: Option<RawSmtp>,
    store: Option<RawStore>,
    replies: Option<RawReplies>,
    limits: Option<RawLimits>,
    metrics: Option<ops::RawMetrics>,
    escalation: Option<ops::RawEscalation>,
    blocklist: Option<RawBlocklist>,
    auth: Option<RawAuth>,
    retention: Option<RawRetention>,
    web: Option<RawWeb>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlocklist {
    dnsbl_zones: Option<Vec<String>>,
    nameservers: Option<Vec<String>>,
    timeout: Option<String>,
    cidr_file: Option<PathBuf>,
    recheck_interval: Option<String>,
    auto_resolve: Option<bool>,
    delist_command: Option<Vec<String>>,
    auto_delist_first: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    trusted_authserv_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    raw_days: Option<u32>,
    case_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntake {
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImap {
    host: Option<String>,
    port: Option<u16>,
    security: Option<Security>,
    tls_name: Option<String>,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_credential: Option<String>,
    mailbox: Option<String>,
    processed_folder: Option<String>,
    quarantine_folder: Option<String>,
    idle: Option<bool>,
    poll_interval: Option<String>,
    auth: Option<String>,
    token_command: Option<Vec<String>>,
    token_lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaildir {
    path: Option<PathBuf>,
    poll_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: Option<String>,
    port: Option<u16>,
    security: Option<Security>,
    tls_name: Option<String>,
    ca_file: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_credential: Option<String>,
    connections: Option<usize>,
    /// Write replies as files here instead of sending them.
    reply_dir: Option<PathBuf>,
    auth: Option<String>,
    token_command: Option<Vec<String>>,
    token_lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    database: Option<PathBuf>,
    sla_hours: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplies {
    from: Option<String>,
    message_id_domain: Option<String>,
    portal_url: Option<String>,
    support_url: Option<String>,
    max_per_recipient_per_day: Option<u32>,
    max_per_domain_per_hour: Option<u32>,
    templates_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    listen: Option<String>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    proxy_user_header: Option<String>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<usize>,
}

/// The line a dotted key (`imap.port`, `imap`) stands on, found by reading the file as an
/// operator would: `[section]` headers, then `key =` lines.
fn line_of(src: &str, key: &str) -> Option<usize> {
    let (section, field) = match key.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (key, None),
    };
    let mut current = String::new();
    for (i, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix('[') {
            current = rest.trim_end_matches(']').trim().to_string();
            if field.is_none() && current == section {
                return Some(i + 1);
            }
            continue;
        }
        if let Some(f) = field {
            if current == section {
                if let Some((k, _)) = line.split_once('=') {
                    if k.trim().trim_matches('"') == f {
                        return Some(i + 1);
                    }
                }
            }
        }
    }
    None
}

fn line_at_offset(src: &str, offset: usize) -> usize {
    src.get(..offset.min(src.len())).map_or(1, |s| s.bytes().filter(|&b| b == b'\n').count() + 1)
}

/// Read the file into its sections, gathering every type error rather than the first.
///
/// A TOML syntax error stops the parser (what follows cannot be read reliably), so that is
/// one problem. A value of the wrong type or an unknown key does not: it is reported, its
/// line is blanked (line numbers stay the same) and the file is read again, so one pass
/// reports them all. What was blanked comes back as its default and is not re-reported.
fn parse_raw(src: &str) -> (Option<RawFile>, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    if let Err(e) = toml::from_str::<toml::Table>(src) {
        let line = e.span().map(|s| line_at_offset(src, s.start));
        let message = format!("not valid TOML: {}", e.message().trim_end());
        problems.push(ConfigProblem { line, key: "(syntax)".into(), message });
        return (None, problems);
    }
    let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
    // Each round blanks at least one line, so this ends; the bound is a second guard.
    for _ in 0..=lines.len() {
        let text = lines.join("\n");
        let e = match toml::from_str::<RawFile>(&text) {
            Ok(raw) => return (Some(raw), problems),
            Err(e) => e,
        };
        let Some(line) = e.span().map(|s| line_at_offset(&text, s.start)) else {
            problems.push(ConfigProblem { line: None, key: "(file)".into(), message: e.message().trim_end().to_string() });
            return (None, problems);
        };
        let (key, header) = key_at_line(&text, line);
        let message = in_words(&key, e.message().trim_end());
        problems.push(ConfigProblem { line: Some(line), key, message });
        // Blank the line; a section header that is refused as a whole goes with its keys.
        let last = if header {
            (line..lines.len()).find(|&i| lines[i].trim_start().starts_with('[')).unwrap_or(lines.len())
        } else {
            line
        };
        for l in lines.iter_mut().take(last).skip(line - 1) {
            l.clear();
        }
        if toml::from_str::<toml::Table>(&lines.join("\n")).is_err() {
            // A value spanning several lines: what is left cannot be read, stop here.
            return (None, problems);
        }
    }
    (None, problems)
}

/// The dotted key written on a line (`imap.port`), and whether the line is a `[section]`
/// header (then the key is the section's name).
fn key_at_line(src: &str, line: usize) -> (String, bool) {
    let mut section = String::new();
    for (i, raw) in src.lines().enumerate() {
        let t = raw.trim();
        if let Some(rest) = t.strip_prefix('[') {
            section = rest.trim_end_matches(']').trim().to_string();
            if i + 1 == line {
                return (section, true);
            }
            continue;
        }
        if i + 1 == line {
            let k = t.split_once('=').map_or(t, |(k, _)| k).trim().trim_matches('"');
            return (if section.is_empty() { k.to_string() } else { format!("{section}.{k}") }, false);
        }
    }
    (section, false)
}

/// What a key takes, in words an operator reads without knowing Rust.
fn expected_form(key: &str) -> Option<&'static str> {
    let field = key.rsplit('.').next().unwrap_or(key);
    Some(match field {
        "port" => "a port number from 1 to 65535",
        "sla_hours" => "a whole number of hours (1 to 8760)",
        "raw_days" | "case_days" => "a whole number of days",
        "poll_interval" => "a duration in quotes, like \"30s\", \"5m\" or \"1h\"",
        "connections" => "a whole number of connections (1 to 64)",
        "max_message_bytes" => "a whole number of bytes (65536 to 1073741824)",
        "max_per_recipient_per_day" => "a whole number of replies (1 or more)",
        "idle" => "true or false",
        "security" => "one of \"tls\", \"starttls\" or \"plain\"",
        "database" | "path" | "ca_file" | "password_file" | "templates_dir" | "reply_dir" => "a file path in quotes",
        "host" | "tls_name" | "user" | "mailbox" | "processed_folder" | "quarantine_folder" | "from"
        | "message_id_domain" | "portal_url" | "support_url" | "password_credential" | "source" => "text in quotes",
        _ => return None,
    })
}

/// A serde/TOML message (`invalid type: string "x", expected u16`) said in words, with the
/// form the key takes.
fn in_words(key: &str, message: &str) -> String {
    let list = |s: &str| s.replace('`', "").replace(" or ", ", ");
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (name, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let what = if key.contains('.') { "key" } else { "section" };
        let known = expected.trim_start_matches("one of ");
        return if known.is_empty() {
            format!("unknown {what} {}", name.replace('`', "\""))
        } else {
            format!("unknown {what} {} (known here: {})", name.replace('`', "\""), list(known))
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (name, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!("{} is not {}", name.replace('`', "\""), list(expected.trim_start_matches("one of ")).replace(", ", " or "));
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("{} is required here", rest.replace('`', ""));
    }
    let form = expected_form(key).map(str::to_string).or_else(|| {
        let ty = message.rsplit_once("expected ")?.1;
        Some(
            match ty {
                "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" => "a whole number",
                "a boolean" => "true or false",
                "a string" => "text in quotes",
                other => other,
            }
            .to_string(),
        )
    });
    let found = |rest: &str| rest.split_once(", expected").map_or(rest, |(f, _)| f).replace('`', "").to_string();
    let form = form.unwrap_or_else(|| "another kind of value".into());
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return format!("found {}; expected {form}", found(rest));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        return format!("{} is not {form}", found(rest));
    }
    format!("{message} (expected {form})")
}

/// Collects problems while the raw file is turned into a [`Config`].
struct Check<'a> {
    src: &'a str,
    problems: Vec<ConfigProblem>,
    secrets: Secrets,
}

/// Whether passwords are read while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// The daemon: every password must be readable.
    Read,
    /// Staff commands: they only need the database; the credentials of the service are
    /// not theirs to read (and `$CREDENTIALS_DIRECTORY` exists only inside the service).
    Skip,
}

impl Check<'_> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        // A key whose value was already refused for its type comes back as a default: do not
        // report it a second time as missing or out of range.
        if self.problems.iter().any(|p| p.key == key) {
            return;
        }
        let line = line_of(self.src, key).or_else(|| key.split_once('.').and_then(|(s, _)| line_of(self.src, s)));
        self.problems.push(ConfigProblem { line, key: key.to_string(), message: message.into() });
    }

    fn required<T: Clone>(&mut self, key: &str, v: &Option<T>) -> Option<T> {
        if v.is_none() {
            self.problem(key, "is required");
        }
        v.clone()
    }

    fn duration(&mut self, key: &str, v: &Option<String>, default: Duration) -> Duration {
        let Some(text) = v else { return default };
        match text.parse::<jiff::SignedDuration>() {
            Ok(d) if d.is_positive() => d.unsigned_abs(),
            Ok(_) => {
                self.problem(key, format!("{text:?} must be longer than zero"));
                default
            }
            Err(_) => {
                self.problem(key, format!("{text:?} is not a duration (write e.g. \"30s\", \"5m\", \"1h\")"));
                default
            }
        }
    }

    /// A password from a file or a systemd credential (`$CREDENTIALS_DIRECTORY/NAME`).
    fn secret(&mut self, section: &str, file: &Option<PathBuf>, credential: &Option<String>) -> Option<Secret> {
        if self.secrets == Secrets::Skip {
            let origin = match (file, credential) {
                (Some(p), _) => Some(SecretOrigin::File(p.clone())),
                (None, Some(n)) => Some(SecretOrigin::Credential(n.clone())),
                (None, None) => None,
            };
            return Some(Secret { origin: origin.map(Box::new), ..Secret::new("(not read)", "") });
        }
        let (source, path) = match (file, credential) {
            (Some(_), Some(_)) => {
                self.problem(&format!("{section}.password_file"), "give password_file or password_credential, not both");
                return None;
            }
            (Some(p), None) => (format!("file {}", p.display()), p.clone()),
            (None, Some(name)) => {
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    self.problem(
                        &format!("{section}.password_credential"),
                        format!("credential {name:?} named but $CREDENTIALS_DIRECTORY is not set (LoadCredential= in the unit)"),
                    );
                    return None;
                };
                (format!("credential {name}"), Path::new(&dir).join(name))
            }
            (None, None) => {
                self.problem(&format!("{section}.password_file"), "is required (or password_credential)");
                return None;
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let value = s.trim_end_matches(['\n', '\r']).to_string();
                if value.is_empty() {
                    self.problem(&format!("{section}.password_file"), format!("{source} is empty"));
                    return None;
                }
                let origin = match credential {
                    Some(n) if file.is_none() => SecretOrigin::Credential(n.clone()),
                    _ => SecretOrigin::File(path.clone()),
                };
                Some(Secret { origin: Some(Box::new(origin)), ..Secret::new(source, value) })
            }
            Err(e) => {
                let key = if file.is_some() { "password_file" } else { "password_credential" };
                self.problem(&format!("{section}.{key}"), format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// `auth`, `token_command`, `token_lifetime` of `section`: `None` for a password login.
    /// The command's program must exist and be executable (when secrets are read: the
    /// staff commands never run it).
    fn oauth(&mut self, section: &str, auth: &Option<String>, command: &Option<Vec<String>>, lifetime: &Option<String>, base: &Path) -> Option<OAuth> {
        let mechanism = match auth.as_deref() {
            None | Some("password") => None,
            Some("xoauth2") => Some(OAuthMechanism::Xoauth2),
            Some("oauthbearer") => Some(OAuthMechanism::Oauthbearer),
            Some(other) => {
                self.problem(&format!("{section}.auth"), format!("{other:?} is not a login method (\"password\", \"xoauth2\" or \"oauthbearer\")"));
                return None;
            }
        };
        let Some(mechanism) = mechanism else {
            for (key, given) in [("token_command", command.is_some()), ("token_lifetime", lifetime.is_some())] {
                if given {
                    self.problem(&format!("{section}.{key}"), "only used with auth = \"xoauth2\" or \"oauthbearer\"");
                }
            }
            return None;
        };
        let token_lifetime = self.duration(&format!("{section}.token_lifetime"), lifetime, Duration::from_secs(50 * 60));
        let key = format!("{section}.token_command");
        let mut argv = match command {
            None => {
                self.problem(&key, "is required with an OAuth2 login (e.g. [\"/usr/local/bin/delist-token\", \"imap\"])");
                return None;
            }
            Some(argv) if argv.first().is_none_or(|p| p.trim().is_empty()) => {
                self.problem(&key, "names no program (write e.g. [\"/usr/local/bin/delist-token\", \"imap\"])");
                return None;
            }
            Some(argv) => argv.clone(),
        };
        // A relative path is taken from the config file's folder, like every other path.
        if argv[0].contains('/') && !Path::new(&argv[0]).is_absolute() {
            argv[0] = base.join(&argv[0]).display().to_string();
        }
        if self.secrets == Secrets::Read {
            if let Err(why) = find_program(&argv[0]) {
                self.problem(&key, why);
            }
        }
        Some(OAuth { mechanism, token_command: argv, token_lifetime })
    }

    /// A link put in replies: an absolute http(s) URL, or senders get a dead link.
    fn url(&mut self, key: &str, value: &str) {
        if let Err(why) = check_url(value) {
            self.problem(key, format!("{value:?} {why} (write e.g. \"https://sender.office.com/\")"));
        }
    }

    fn port(&mut self, key: &str, port: Option<u16>) {
        if port == Some(0) {
            self.problem(key, "0 is not a port (a port is 1-65535)");
        }
    }

    fn security(&mut self, key: &str, host: &str, security: Security) {
        if security == Security::Plain && !is_loopback_host(host) {
            self.problem(key, format!("\"plain\" sends the password in clear; only allowed to a loopback host, not {host:?}"));
        }
    }
}

/// Where `program` is, as `execvp` would find it: a path as given, else the first match in
/// `$PATH`. The error says what is wrong and how to fix it.
pub fn find_program(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if program.contains('/') {
        let p = Path::new(program);
        return match std::fs::metadata(p) {
            Err(e) => Err(format!("{program}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("{program} is not a file")),
            Ok(_) if !runnable(p) => Err(format!("{program} is not executable (chmod +x it)")),
            Ok(_) => Ok(p.to_path_buf()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| runnable(p))
        .ok_or_else(|| format!("{program:?} is not an executable in $PATH (give its full path)"))
}

/// Why `value` is not an absolute http(s) URL with a host, if it is not.
pub fn check_url(value: &str) -> Result<(), &'static str> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or("is not a web address (it must start with https://)")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let name = host.strip_prefix('[').map_or_else(|| host.split(':').next().unwrap_or_default(), |h| h.split(']').next().unwrap_or_default());
    if name.is_empty() {
        return Err("has no host name");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains spaces");
    }
    if !(name.contains('.') || name.contains(':') || name == "localhost") {
        return Err("has no domain in its host name");
    }
    Ok(())
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

impl Config {
    /// Read and validate the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Secrets::Read)
    }

    pub fn load_with(path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse_with(&src, path, secrets)
    }

    /// Validate `src` as if read from `path` (relative paths in it are taken relative to the
    /// file's folder, so a config and its data can travel together).
    pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(src, path, Secrets::Read)
    }

    pub fn parse_with(src: &str, path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid { path: path.to_path_buf(), problems };
        let (raw, type_problems) = parse_raw(src);
        let Some(raw) = raw else { return Err(invalid(type_problems)) };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rel = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let mut c = Check { src, problems: type_problems, secrets };

        let source = raw.intake.as_ref().map(|i| i.source.as_str()).unwrap_or("imap");
        let intake = match source {
            "imap" => {
                match &raw.imap {
                    None => {
                        c.problem("imap", "section [imap] is required when intake.source = \"imap\"");
                        None
                    }
                    Some(i) => {
                        let host = c.required("imap.host", &i.host).unwrap_or_default();
                        c.port("imap.port", i.port);
                        let security = i.security.unwrap_or(Security::Tls);
                        c.security("imap.security", &host, security);
                        let port = i.port.unwrap_or(match security {
                            Security::Tls => 993,
                            _ => 143,
                        });
                        let user = c.required("imap.user", &i.user).unwrap_or_default();
                        let oauth = c.oauth("imap", &i.auth, &i.token_command, &i.token_lifetime, &base);
                        let password = match &oauth {
                            None => c.secret("imap", &i.password_file.as_deref().map(rel), &i.password_credential),
                            Some(_) => {
                                if i.password_file.is_some() || i.password_credential.is_some() {
                                    c.problem("imap.password_file", "not used with an OAuth2 login (auth); remove it");
                                }
                                Some(Secret::new("(OAuth2: no password)", ""))
                            }
                        };
                        let ca_file = i.ca_file.as_deref().map(rel);
                        if let Some(ca) = &ca_file {
                            if !ca.is_file() {
                                c.problem("imap.ca_file", format!("{} is not a readable file", ca.display()));
                            }
                        }
                        let poll_interval = c.duration("imap.poll_interval", &i.poll_interval, Duration::from_secs(60));
                        let mailbox = i.mailbox.clone().unwrap_or_else(|| "INBOX".into());
                        let processed = i.processed_folder.clone().unwrap_or_else(|| "Processed".into());
                        let quarantine = i.quarantine_folder.clone().unwrap_or_else(|| "Quarantine".into());
                        if processed == mailbox || quarantine == mailbox || processed == quarantine {
                            c.problem("imap.processed_folder", "mailbox, processed_folder and quarantine_folder must differ");
                        }
                        password.map(|password| {
                            Intake::Imap(Imap {
                                tls_name: i.tls_name.clone().unwrap_or_else(|| host.clone()),
                                host,
                                port,
                                security,
                                ca_file,
                                user,
                                password,
                                mailbox,
                                processed_folder: processed,
                                quarantine_folder: quarantine,
                                idle: i.idle.unwrap_or(true),
                                poll_interval,
                                oauth,
                            })
                        })
                    }
                }
            }
            "maildir" => match &raw.maildir {
                None => {
                    c.problem("maildir", "section [maildir] is required when intake.source = \"maildir\"");
                    None
                }
                Some(m) => {
                    let p = c.required("maildir.path", &m.path).map(|p| rel(&p));
                    let poll_interval = c.duration("maildir.poll_interval", &m.poll_interval, Duration::from_secs(10));
                    p.map(|path| Intake::Maildir(MaildirSource { path, poll_interval }))
                }
            },
            other => {
                c.problem("intake.source", format!("{other:?} is not a source (\"imap\" or \"maildir\")"));
                None
            }
        };

        let mut reply_dir = None;
        let smtp = match &raw.smtp {
            None => {
                c.problem("smtp", "section [smtp] is required (host, or reply_dir to write replies as files)");
                None
            }
            Some(s) if s.reply_dir.is_some() && s.host.is_none() => {
                reply_dir = s.reply_dir.as_deref().map(rel);
                None
            }
            Some(s) => {
                reply_dir = s.reply_dir.as_deref().map(rel);
                let host = c.required("smtp.host", &s.host).unwrap_or_default();
                c.port("smtp.port", s.port);
                let security = s.security.unwrap_or(Security::Starttls);
                c.security("smtp.security", &host, security);
                let port = s.port.unwrap_or(match security {
                    Security::Tls => 465,
                    _ => 587,
                });
                let oauth = c.oauth("smtp", &s.auth, &s.token_command, &s.token_lifetime, &base);
                let auth = match (&s.user, &oauth) {
                    (Some(u), None) => c.secret("smtp", &s.password_file.as_deref().map(rel), &s.password_credential).map(|p| (u.clone(), p)),
                    (_, Some(_)) => {
                        if s.password_file.is_some() || s.password_credential.is_some() {
                            c.problem("smtp.password_file", "not used with an OAuth2 login (auth); remove it");
                        }
                        None
                    }
                    (None, None) => None,
                };
                let oauth = match (oauth, &s.user) {
                    (Some(o), Some(u)) => Some((u.clone(), o)),
                    (Some(_), None) => {
                        c.problem("smtp.user", "is required with an OAuth2 login (auth)");
                        None
                    }
                    (None, _) => None,
                };
                let connections = s.connections.unwrap_or(4);
                if !(1..=64).contains(&connections) {
                    c.problem("smtp.connections", format!("{connections} is out of range (1 to 64)"));
                }
                Some(Smtp {
                    tls_name: s.tls_name.clone().unwrap_or_else(|| host.clone()),
                    host,
                    port,
                    security,
                    ca_file: s.ca_file.as_deref().map(rel),
                    auth,
                    oauth,
                    connections: connections.clamp(1, 64),
                })
            }
        };

        let store = raw.store.as_ref();
        let database = store
            .and_then(|s| s.database.as_deref())
            .map(rel)
            .unwrap_or_else(|| PathBuf::from("/var/lib/delistd/delistd.sqlite"));
        let sla_hours = store.and_then(|s| s.sla_hours).unwrap_or(48);
        if sla_hours == 0 || sla_hours > 24 * 365 {
            c.problem("store.sla_hours", format!("{sla_hours} is out of range (1 to 8760)"));
        }

        let r = raw.replies.as_ref();
        let from = r.and_then(|r| r.from.clone());
        let from = c.required("replies.from", &from).unwrap_or_default();
        if !from.is_empty() && from.parse::<lettre::message::Mailbox>().is_err() {
            c.problem("replies.from", format!("{from:?} is not a mailbox (write \"Delist desk <delist@example.net>\")"));
        }
        let domain = r
            .and_then(|r| r.message_id_domain.clone())
            .or_else(|| from.rsplit_once('@').map(|(_, d)| d.trim_end_matches('>').to_string()))
            .unwrap_or_default();
        let replies = Replies {
            from,
            message_id_domain: domain,
            portal_url: r.and_then(|r| r.portal_url.clone()).unwrap_or_else(|| "https://sender.office.com/".into()),
            support_url: r
                .and_then(|r| r.support_url.clone())
                .unwrap_or_else(|| "https://admin.microsoft.com/#/support".into()),
            max_per_recipient_per_day: r.and_then(|r| r.max_per_recipient_per_day).unwrap_or(5),
            max_per_domain_per_hour: r.and_then(|r| r.max_per_domain_per_hour).unwrap_or(30),
            templates_dir: r.and_then(|r| r.templates_dir.as_deref()).map(rel),
        };
        c.url("replies.portal_url", &replies.portal_url);
        c.url("replies.support_url", &replies.support_url);
        if replies.max_per_recipient_per_day == 0 {
            c.problem("replies.max_per_recipient_per_day", "0 would never answer anyone; use 1 or more");
        }
        if replies.max_per_domain_per_hour == 0 {
            c.problem("replies.max_per_domain_per_hour", "0 would never answer anyone; use 1 or more");
        }
        let trusted = raw.auth.as_ref().and_then(|a| a.trusted_authserv_id.as_deref()).map(str::trim);
        if let Some(id) = trusted {
            // RFC 8601 §2.5: a domain name, no spaces, no `;`.
            if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == ';' || c == '(') {
                c.problem("auth.trusted_authserv_id", format!("{id:?} is not an authserv-id (write the host name your MX puts first in Authentication-Results, e.g. \"mx.example.net\")"));
            }
        }
        let auth = Auth { trusted_authserv_id: trusted.filter(|s| !s.is_empty()).map(str::to_string) };

        let max_message_bytes = raw.limits.as_ref().and_then(|l| l.max_message_bytes).unwrap_or(10 * 1024 * 1024);
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&max_message_bytes) {
            c.problem("limits.max_message_bytes", format!("{max_message_bytes} is out of range (64 KiB to 1 GiB)"));
        }

        let metrics = c.metrics(&raw.metrics);
        let escalation = c.escalation(&raw.escalation);
        let blocklist = raw.blocklist.as_ref().map(|b| blocklist(&mut c, b, &rel));

        let ret = raw.retention.as_ref();
        let retention = Retention {
            raw_days: ret.and_then(|r| r.raw_days).unwrap_or(Retention::default().raw_days),
            case_days: ret.and_then(|r| r.case_days),
        };
        if retention.raw_days > 36500 {
            c.problem("retention.raw_days", format!("{} is out of range (0 to 36500 days)", retention.raw_days));
        }
        if retention.case_days == Some(0) {
            c.problem("retention.case_days", "0 would delete a case the moment it closes; use 1 or more days, or leave case_days out to keep cases");
        }

        let web = raw.web.as_ref().map(|w| {
            let listen = w.listen.as_deref().unwrap_or("127.0.0.1:8080");
            let addr = listen.parse::<std::net::SocketAddr>().unwrap_or_else(|_| {
                c.problem("web.listen", format!("{listen:?} is not an address and port (write \"127.0.0.1:8080\")"));
                std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
            });
            if w.tls_cert.is_some() != w.tls_key.is_some() {
                c.problem("web.tls_cert", "tls_cert and tls_key go together: give both, or neither");
            }
            let proxies = w.trusted_proxies.clone().unwrap_or_default();
            for p in &proxies {
                if p.parse::<crate::desk::IpMatch>().is_err() {
                    c.problem("web.trusted_proxies", format!("{p:?} is not an IP address or CIDR block"));
                }
            }
            if w.proxy_user_header.is_some() && proxies.is_empty() {
                c.problem(
                    "web.proxy_user_header",
                    "proxy mode needs trusted_proxies: the addresses allowed to set the header (e.g. [\"127.0.0.1\"])",
                );
            }
            if !addr.ip().is_loopback() && w.tls_cert.is_none() && w.proxy_user_header.is_none() {
                c.problem(
                    "web.listen",
                    format!(
                        "{addr} is reachable from other machines: passwords and sessions would cross the network \
                         in clear; listen on 127.0.0.1, or set tls_cert and tls_key, or proxy_user_header"
                    ),
                );
            }
            WebConfig {
                listen: addr,
                public_url: w.public_url.clone(),
                tls_cert: w.tls_cert.as_deref().map(rel),
                tls_key: w.tls_key.as_deref().map(rel),
                proxy_user_header: w.proxy_user_header.clone(),
                trusted_proxies: proxies,
            }
        });

        let problems = c.problems;
        match intake {
            Some(intake) if problems.is_empty() => Ok(Config {
                path: path.to_path_buf(),
                intake,
                smtp,
                reply_dir,
                store: StoreConfig { database, sla: Duration::from_secs(u64::from(sla_hours) * 3600) },
                replies,
                max_message_bytes,
                metrics,
                escalation,
                blocklist,
                auth,
                retention,
                web,
            }),
            _ => Err(invalid(problems)),
        }
    }
}

/// A name server as written: `127.0.0.1:5353`, `[::1]:5353`, or an address alone (port 53).
fn nameserver(text: &str) -> Option<std::net::SocketAddr> {
    text.parse::<std::net::SocketAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(|ip| std::net::SocketAddr::new(ip, 53)))
}

fn blocklist(c: &mut Check<'_>, b: &RawBlocklist, rel: &dyn Fn(&Path) -> PathBuf) -> BlocklistConfig {
    let d = BlocklistConfig::default();
    let mut zones = Vec::new();
    for z in b.dnsbl_zones.iter().flatten() {
        let zone = z.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if zone.is_empty() || !zone.contains('.') || !zone.split('.').all(label_ok) {
            c.problem("blocklist.dnsbl_zones", format!("{z:?} is not a DNS zone name (write e.g. \"bl.example.net\")"));
        } else {
            zones.push(zone);
        }
    }
    let mut nameservers = Vec::new();
    for n in b.nameservers.iter().flatten() {
        match nameserver(n.trim()) {
            Some(a) => nameservers.push(a),
            None => c.problem(
                "blocklist.nameservers",
                format!("{n:?} is not an address with a port (write \"127.0.0.1:53\" or \"[::1]:5353\"; names are not resolved)"),
            ),
        }
    }
    let timeout = c.duration("blocklist.timeout", &b.timeout, d.timeout);
    if timeout > Duration::from_secs(30) {
        c.problem("blocklist.timeout", "longer than 30s would hold up intake; use a few seconds");
    }
    let cidr_file = b.cidr_file.as_deref().map(rel);
    if let Some(p) = &cidr_file {
        if !p.is_file() {
            c.problem("blocklist.cidr_file", format!("{} is not a readable file", p.display()));
        }
    }
    if zones.is_empty() && cidr_file.is_none() {
        c.problem("blocklist", "names no source: give dnsbl_zones, cidr_file, or both (or remove the section)");
    }
    let recheck_interval = c.duration("blocklist.recheck_interval", &b.recheck_interval, d.recheck_interval);
    if recheck_interval < Duration::from_secs(10) {
        c.problem("blocklist.recheck_interval", "shorter than 10s would hammer the list; use minutes");
    }
    let delist_command = match &b.delist_command {
        None => None,
        Some(argv) if argv.is_empty() || argv[0].trim().is_empty() => {
            c.problem("blocklist.delist_command", "is empty; give the program and its arguments, e.g. [\"/usr/local/sbin/delist-ip\", \"{ip}\", \"{case}\"]");
            None
        }
        Some(argv) => {
            if !Path::new(&argv[0]).is_absolute() {
                c.problem("blocklist.delist_command", format!("{:?} must be an absolute path (it is run without a shell or $PATH)", argv[0]));
            }
            Some(argv.clone())
        }
    };
    let auto_delist_first = b.auto_delist_first.unwrap_or(d.auto_delist_first);
    if auto_delist_first && delist_command.is_none() {
        c.problem("blocklist.auto_delist_first", "needs delist_command: there is nothing to run");
    }
    BlocklistConfig {
        dnsbl_zones: zones,
        nameservers,
        timeout,
        cidr_file,
        recheck_interval,
        auto_resolve: b.auto_resolve.unwrap_or(d.auto_resolve),
        delist_command,
        auto_delist_first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn the_blocklist_section_reads_every_key_and_names_bad_lines() {
        let base = "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"m\"\n[smtp]\nreply_dir = \"o\"\n[replies]\nfrom = \"d@example.net\"\n";
        let src = format!("{base}[blocklist]\ndnsbl_zones = [\"BL.example.net.\"]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\ntimeout = \"1s\"\nrecheck_interval = \"5m\"\nauto_resolve = false\ndelist_command = [\"/usr/local/sbin/delist-ip\", \"{{ip}}\", \"{{case}}\"]\nauto_delist_first = true\n");
        let c = Config::parse(&src, Path::new("/tmp/x.toml")).unwrap();
        let b = c.blocklist.unwrap();
        assert_eq!(b.dnsbl_zones, vec!["bl.example.net".to_string()]);
        assert_eq!(b.nameservers, vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!((b.timeout, b.recheck_interval, b.auto_resolve, b.auto_delist_first), (Duration::from_secs(1), Duration::from_secs(300), false, true));
        assert_eq!(b.delist_command.unwrap()[1], "{ip}");
        assert!(Config::parse(base, Path::new("/tmp/x.toml")).unwrap().blocklist.is_none());

        let bad = format!("{base}[blocklist]\ndnsbl_zones = [\"not a zone\"]\nnameservers = [\"dns.example\"]\ndelist_command = [\"delist-ip\"]\ncidr_file = \"/nonexistent.cidr\"\n");
        let p = problems(&bad);
        let keys: Vec<(&str, Option<usize>)> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert!(keys.contains(&("blocklist.dnsbl_zones", Some(10))), "{keys:?}");
        assert!(keys.contains(&("blocklist.nameservers", Some(11))), "{keys:?}");
        assert!(keys.contains(&("blocklist.delist_command", Some(12))), "{keys:?}");
        assert!(keys.contains(&("blocklist.cidr_file", Some(13))), "{keys:?}");
        let p = problems(&format!("{base}[blocklist]\nauto_delist_first = true\n"));
        assert!(p.iter().any(|p| p.key == "blocklist"), "{p:?}");
        assert!(p.iter().any(|p| p.key == "blocklist.auto_delist_first"), "{p:?}");
    }

    fn problems(src: &str) -> Vec<ConfigProblem> {
        match Config::parse(src, Path::new("/tmp/x.toml")) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Ok(_) => panic!("expected problems"),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn password_file() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "s3cret").unwrap();
        f
    }

    #[test]
    fn syntax_error_names_its_line() {
        let p = problems("[imap]\nhost = \"x\"\nport = = 3\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(3), "{p:?}");
    }

    #[test]
    fn every_type_error_is_reported_in_words_with_its_line() {
        let src = "[imap]\nhost = \"x.example.net\"\nport = \"imaps\"\nidle = \"yes\"\n\n[store]\nsla_hours = \"two days\"\ndatabse = \"a\"\n[smtp]\nport = 70000\nsecurity = \"ssl\"\n";
        let p = problems(src);
        let got: Vec<(Option<usize>, &str, &str)> = p.iter().map(|p| (p.line, p.key.as_str(), p.message.as_str())).collect();
        let has = |line: usize, key: &str, words: &str| {
            assert!(
                got.iter().any(|(l, k, m)| *l == Some(line) && *k == key && m.contains(words)),
                "no {key} at line {line} saying {words:?} in {got:#?}"
            )
        };
        has(3, "imap.port", "a port number from 1 to 65535");
        has(4, "imap.idle", "true or false");
        has(7, "store.sla_hours", "a whole number of hours");
        has(8, "store.databse", "unknown key \"databse\"");
        has(10, "smtp.port", "70000 is not a port number");
        has(11, "smtp.security", "\"ssl\" is not tls or starttls or plain");
        assert!(got.iter().all(|(_, _, m)| !m.contains("u16") && !m.contains("u32")), "{got:#?}");
        // A refused value is not reported again as missing.
        assert_eq!(got.iter().filter(|(_, k, _)| *k == "imap.port").count(), 1);
    }

    #[test]
    fn links_in_replies_must_be_web_addresses() {
        assert!(check_url("https://sender.office.com/").is_ok());
        assert!(check_url("http://localhost:8080/x").is_ok());
        assert!(check_url("sender dot office").is_err());
        assert!(check_url("https://sender dot office").is_err());
        assert!(check_url("https:///path").is_err());
    }

    #[test]
    fn unknown_key_names_its_line() {
        let p = problems("[imap]\nhost = \"x\"\n\n[store]\ndatabse = \"a\"\n");
        assert_eq!(p[0].line, Some(5), "{p:?}");
        assert!(p[0].message.contains("databse"), "{p:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_with_key_and_line() {
        let pw = password_file();
        let src = format!(
            "[intake]\nsource = \"imap\"\n\n[imap]\nhost = \"imap.example.net\"\nsecurity = \"plain\"\nuser = \"d\"\npassword_file = {:?}\npoll_interval = \"soon\"\n\n[smtp]\nreply_dir = \"out\"\n\n[store]\nsla_hours = 0\n",
            pw.path()
        );
        let p = problems(&src);
        let keys: Vec<(&str, Option<usize>)> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert!(keys.contains(&("imap.security", Some(6))), "{keys:?}");
        assert!(keys.contains(&("imap.poll_interval", Some(9))), "{keys:?}");
        assert!(keys.contains(&("store.sla_hours", Some(15))), "{keys:?}");
        assert!(keys.iter().any(|(k, _)| *k == "replies.from"), "{keys:?}");
    }

    #[test]
    fn valid_file_loads_and_debug_redacts_the_password() {
        let pw = password_file();
        let src = format!(
            "[imap]\nhost = \"imap.example.net\"\nuser = \"delist\"\npassword_file = {:?}\n\n[smtp]\nhost = \"smtp.example.net\"\n\n[replies]\nfrom = \"Delist desk <delist@example.net>\"\n",
            pw.path()
        );
        let c = Config::parse(&src, Path::new("/etc/delistd/delistd.toml")).unwrap();
        let Intake::Imap(i) = &c.intake else { panic!() };
        assert_eq!((i.port, i.security), (993, Security::Tls));
        assert_eq!(i.password.expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.replies.message_id_domain, "example.net");
        assert_eq!(c.store.sla, Duration::from_secs(48 * 3600));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let src = "[intake]\nsource = \"maildir\"\n[maildir]\npath = \"mail\"\n[smtp]\nreply_dir = \"out\"\n[store]\ndatabase = \"db.sqlite\"\n[replies]\nfrom = \"d@example.net\"\n";
        let c = Config::parse(src, Path::new("/srv/demo/delistd.toml")).unwrap();
        assert_eq!(c.store.database, PathBuf::from("/srv/demo/db.sqlite"));
        assert_eq!(c.reply_dir, Some(PathBuf::from("/srv/demo/out")));
        let Intake::Maildir(m) = c.intake else { panic!() };
        assert_eq!(m.path, PathBuf::from("/srv/demo/mail"));
    }

    #[test]
    fn an_oauth2_login_needs_a_runnable_token_command_and_no_password() {
        let src = "[imap]\nhost = \"outlook.office365.com\"\nuser = \"delist@example.net\"\nauth = \"xoauth2\"\n\
                   token_command = [\"/bin/echo\", \"imap\"]\n\n[smtp]\nhost = \"smtp.office365.com\"\nuser = \"delist@example.net\"\n\
                   auth = \"oauthbearer\"\ntoken_command = [\"echo\", \"smtp\"]\ntoken_lifetime = \"30m\"\n\n[replies]\nfrom = \"d@example.net\"\n";
        let c = Config::parse(src, Path::new("/etc/delistd/delistd.toml")).unwrap();
        let Intake::Imap(i) = &c.intake else { panic!() };
        let o = i.oauth.as_ref().unwrap();
        assert_eq!((o.mechanism, o.token_lifetime), (OAuthMechanism::Xoauth2, Duration::from_secs(50 * 60)));
        assert_eq!(o.token_command, vec!["/bin/echo", "imap"]);
        let s = c.smtp.as_ref().unwrap();
        let (user, o) = s.oauth.as_ref().unwrap();
        assert_eq!((user.as_str(), o.mechanism, o.token_lifetime), ("delist@example.net", OAuthMechanism::Oauthbearer, Duration::from_secs(1800)));
        assert!(s.auth.is_none());

        let pw = password_file();
        let bad = format!(
            "[imap]\nhost = \"h\"\nuser = \"u\"\nauth = \"oauth\"\n\n[smtp]\nhost = \"h\"\nauth = \"xoauth2\"\n\
             token_command = [\"/nonexistent/delist-token\"]\npassword_file = {:?}\n\n[replies]\nfrom = \"d@example.net\"\n",
            pw.path()
        );
        let p = problems(&bad);
        let keys: Vec<(&str, Option<usize>)> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert!(keys.contains(&("imap.auth", Some(4))), "{p:?}");
        assert!(keys.contains(&("smtp.token_command", Some(9))), "{p:?}");
        assert!(keys.contains(&("smtp.password_file", Some(10))), "{p:?}");
        assert!(keys.iter().any(|(k, _)| *k == "smtp.user"), "{p:?}");

        let p = problems(&format!(
            "[imap]\nhost = \"h\"\nuser = \"u\"\npassword_file = {:?}\ntoken_lifetime = \"1h\"\n\n[smtp]\nreply_dir = \"o\"\n\
             [replies]\nfrom = \"d@example.net\"\n[maildir]\n\n[intake]\nsource = \"imap\"\n",
            pw.path()
        ));
        assert!(p.iter().any(|p| p.key == "imap.token_lifetime" && p.message.contains("only used")), "{p:?}");
        let p = problems("[imap]\nhost = \"h\"\nuser = \"u\"\nauth = \"xoauth2\"\n[smtp]\nreply_dir = \"o\"\n[replies]\nfrom = \"d@example.net\"\n");
        assert!(p.iter().any(|p| p.key == "imap.token_command" && p.message.contains("required")), "{p:?}");
        let not_exec = tempfile::NamedTempFile::new().unwrap();
        assert!(find_program(not_exec.path().to_str().unwrap()).unwrap_err().contains("not executable"));
        assert!(find_program("sh").is_ok());
        assert!(find_program("no-such-program-delistd").unwrap_err().contains("$PATH"));
    }

    #[test]
    fn the_example_config_is_valid() {
        let src = include_str!("../examples/delistd.toml");
        let c = Config::parse_with(src, Path::new("/etc/delistd/delistd.toml"), Secrets::Skip).unwrap();
        assert!(matches!(c.intake, Intake::Imap(_)));
        assert_eq!(c.smtp.as_ref().map(|s| s.connections), Some(4));
        // With secrets read, the credential it names must exist: outside systemd it does not.
        assert!(Config::parse(src, Path::new("/etc/delistd/delistd.toml")).is_err());
    }

    #[test]
    fn the_example_blocklist_section_is_valid_once_uncommented() {
        let src = include_str!("../examples/delistd.toml");
        let start = src.find("# [blocklist]").expect("the example documents [blocklist]");
        let mut text = src[..start].to_string();
        for line in src[start..].lines() {
            // Uncomment the keys (not the prose); the CIDR file does not exist here.
            match line.strip_prefix("# ") {
                Some(l) if (l.starts_with('[') || l.contains(" = ")) && !l.starts_with("cidr_file") => text.push_str(l),
                _ => text.push_str(line),
            }
            text.push('\n');
        }
        let c = Config::parse_with(&text, Path::new("/etc/delistd/delistd.toml"), Secrets::Skip).unwrap();
        let b = c.blocklist.expect("uncommented, the section is read");
        assert_eq!(b.dnsbl_zones, vec!["bl.example.net".to_string()]);
        assert_eq!((b.timeout, b.recheck_interval, b.auto_resolve, b.auto_delist_first), (Duration::from_secs(2), Duration::from_secs(600), true, false));
        assert_eq!(b.delist_command.map(|a| a.len()), Some(3));
    }
}
