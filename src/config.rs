//! The TOML configuration file, loaded and validated once, with line-precise errors.
//!
//! Every problem found is reported (not just the first), each with the key and the line it
//! stands on, so an operator fixes the file in one pass. Secrets are never in the file:
//! passwords come from a file or a systemd credential, and `Debug` never prints them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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

#[derive(Debug, Clone)]
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
    /// Parallel connections used by the outbox.
    pub connections: usize,
}

/// A password: where it came from and its value. `Debug` shows only the source.
#[derive(Clone)]
pub struct Secret {
    pub source: String,
    value: String,
}

impl Secret {
    pub fn new(source: impl Into<String>, value: impl Into<String>) -> Secret {
        Secret { source: source.into(), value: value.into() }
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
    /// At most this many automatic replies to one recipient in 24 hours (loop guard).
    pub max_per_recipient_per_day: u32,
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
    web: Option<RawWeb>,
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
            return Some(Secret::new("(not read)", ""));
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
                Some(Secret::new(source, value))
            }
            Err(e) => {
                let key = if file.is_some() { "password_file" } else { "password_credential" };
                self.problem(&format!("{section}.{key}"), format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn security(&mut self, key: &str, host: &str, security: Security) {
        if security == Security::Plain && !is_loopback_host(host) {
            self.problem(key, format!("\"plain\" sends the password in clear; only allowed to a loopback host, not {host:?}"));
        }
    }
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
        let raw: RawFile = match toml::from_str(src) {
            Ok(r) => r,
            Err(e) => {
                let line = e.span().map(|s| line_at_offset(src, s.start));
                let message = e.message().to_string();
                return Err(invalid(vec![ConfigProblem { line, key: "(syntax)".into(), message }]));
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rel = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let mut c = Check { src, problems: Vec::new(), secrets };

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
                        let security = i.security.unwrap_or(Security::Tls);
                        c.security("imap.security", &host, security);
                        let port = i.port.unwrap_or(match security {
                            Security::Tls => 993,
                            _ => 143,
                        });
                        let user = c.required("imap.user", &i.user).unwrap_or_default();
                        let password = c.secret("imap", &i.password_file.as_deref().map(rel), &i.password_credential);
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
                let security = s.security.unwrap_or(Security::Starttls);
                c.security("smtp.security", &host, security);
                let port = s.port.unwrap_or(match security {
                    Security::Tls => 465,
                    _ => 587,
                });
                let auth = match &s.user {
                    Some(u) => c.secret("smtp", &s.password_file.as_deref().map(rel), &s.password_credential).map(|p| (u.clone(), p)),
                    None => None,
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
            templates_dir: r.and_then(|r| r.templates_dir.as_deref()).map(rel),
        };
        if replies.max_per_recipient_per_day == 0 {
            c.problem("replies.max_per_recipient_per_day", "0 would never answer anyone; use 1 or more");
        }

        let max_message_bytes = raw.limits.as_ref().and_then(|l| l.max_message_bytes).unwrap_or(10 * 1024 * 1024);
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&max_message_bytes) {
            c.problem("limits.max_message_bytes", format!("{max_message_bytes} is out of range (64 KiB to 1 GiB)"));
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
                web,
            }),
            _ => Err(invalid(problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

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
    fn the_example_config_is_valid() {
        let src = include_str!("../examples/delistd.toml");
        let c = Config::parse_with(src, Path::new("/etc/delistd/delistd.toml"), Secrets::Skip).unwrap();
        assert!(matches!(c.intake, Intake::Imap(_)));
        assert_eq!(c.smtp.as_ref().map(|s| s.connections), Some(4));
        // With secrets read, the credential it names must exist: outside systemd it does not.
        assert!(Config::parse(src, Path::new("/etc/delistd/delistd.toml")).is_err());
    }
}
