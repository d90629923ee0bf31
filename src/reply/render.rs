//! Template → reply text. One file per reply kind and language in `templates/`, holding
//! the subject and the body; embedded in the binary, and replaceable file by file from a
//! directory given at start-up (see `templates/README.md` for the format).
//!
//! Pure: no I/O except [`Templates::from_dir`], which reads the override directory once.
//!
//! Header safety lives here. Every string that reaches a template is cleaned first: no
//! control characters (CR and LF would start a new header line, RFC 5322 §2.2), no
//! Unicode bidi or line-separator characters (text that displays differently from what it
//! is), bounded length. The subject is then rendered from the first line only, collapsed
//! to one line and capped, so nothing taken from a message can add or break a header.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use minijinja::{context, AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::decide::{Missing, ReplyKind};
use crate::extract::IpProblem;
use crate::types::{Lang, StatusCode};

/// Everything a template may use. Values from the message are plain text here; the
/// renderer makes sure none of them can add or break a header line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplyVars {
    /// Case references (`DL-000042`), one per banned IP.
    pub case_refs: Vec<String>,
    pub ips: Vec<String>,
    pub status_code: Option<String>,
    pub ndr_line: Option<String>,
    pub missing: Vec<Missing>,
    /// The subject of the request being answered.
    pub original_subject: Option<String>,
    pub sender_name: Option<String>,
    pub sla_hours: u32,
    /// When staff will have answered by. Written as the reply's language writes dates, in
    /// UTC with the zone named (`2 December 2026, 13:20 UTC`, `2026年12月2日 13:20（UTC）`).
    #[serde(skip)]
    pub due: Option<jiff::Timestamp>,
    /// The deadline as text, when there is no [`ReplyVars::due`] (overrides, tests); the
    /// templates see `due_at`, made from `due` when it is set.
    pub due_at: Option<String>,
    pub portal_url: String,
    pub support_url: String,
    /// A note from staff (resolution replies).
    pub staff_note: Option<String>,
    /// IPs of the same request rejected with a portal code (5.7.606–649): the
    /// acknowledgement points to the portal for them.
    pub portal_ips: Vec<String>,
}

/// A rendered reply: one header-safe subject line and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedReply {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no template {kind}.{lang}")]
    Missing { kind: &'static str, lang: Lang },
    /// A syntax error (at load) or a rendering error such as an undefined variable. The
    /// source's message ends with `(in <file>:<line>)`.
    #[error("template {name}: {source}")]
    Template { name: String, source: minijinja::Error },
    #[error("template {name} has no `Subject:` line before the first blank line")]
    NoSubject { name: String },
    #[error("cannot read template {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A `.txt` file in the override directory that is no template we know: most likely a
    /// misspelt name, which would otherwise be ignored without a word.
    #[error("{} is not a known template (expected <kind>.<lang>.txt, e.g. acknowledge.fr.txt)", path.display())]
    UnknownFile { path: PathBuf },
}

/// Longest subject we send, in characters, tag included. RFC 5322 §2.1.1 asks for lines
/// under 78 characters; a folded subject may be longer, but not without bound.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Cap on a one-line value from the message (an NDR line is about 250 characters).
const MAX_VALUE_CHARS: usize = 500;
/// A display name is a greeting, not a place to carry a text of the sender's choosing.
const MAX_NAME_CHARS: usize = 80;
/// Staff notes may be several paragraphs.
const MAX_NOTE_CHARS: usize = 4000;

// ---------------------------------------------------------------------------------------
// The embedded set

/// `(file name, source)` for one kind in the languages listed, compiled into the binary.
macro_rules! embedded {
    ($kind:literal: $($lang:literal),+ $(,)?) => {
        &[$(
            (concat!($kind, ".", $lang, ".txt"), include_str!(concat!("../../templates/", $kind, ".", $lang, ".txt"))),
        )+]
    };
}

/// Every embedded template. A kind may lack a language: that language is then answered
/// in English (see [`Templates::build`]).
const EMBEDDED: &[&[(&str, &str)]] = &[
    embedded!("acknowledge": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("missing_info": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("redirect_portal": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("tenant_support": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("delisted": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("rejected": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("not_listed": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("reopened": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("staff_reply": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
    embedded!("staff_question": "en", "fr", "it", "ja", "de", "es", "pt", "nl", "zh"),
];

fn file_name(kind: ReplyKind, lang: Lang) -> String {
    format!("{}.{}.txt", kind.name(), lang.code())
}

fn embedded_source(file: &str) -> Option<&'static str> {
    EMBEDDED.iter().flat_map(|k| k.iter()).find(|(name, _)| *name == file).map(|(_, src)| *src)
}

// ---------------------------------------------------------------------------------------
// Templates

/// A complete, validated set of templates: every kind in every language.
#[derive(Debug)]
pub struct Templates {
    /// Line 1 of each file (the `Subject:` line), under the file's name.
    subjects: Environment<'static>,
    /// The body of each file, under the same name, padded so that line numbers in errors
    /// are the file's own.
    bodies: Environment<'static>,
    /// (kind, lang) → the name the template is registered under: the file name for the
    /// embedded set, the full path for an override.
    names: HashMap<(ReplyKind, Lang), String>,
    overrides: Vec<PathBuf>,
}

impl Templates {
    /// The templates compiled into the binary.
    pub fn embedded() -> Templates {
        // The embedded files are fixed at build time and every one is compiled and
        // rendered by this module's tests: an error here is a broken build, not input.
        Self::build(&HashMap::new()).unwrap_or_else(|e| panic!("embedded templates are broken: {e}"))
    }

    /// The embedded set with the files found in `dir` in place of their embedded
    /// counterparts. Files not present fall back to the embedded ones. Every template is
    /// compiled and test-rendered now, so a syntax error or a misspelt variable stops the
    /// start-up with the file and line rather than a reply later.
    pub fn from_dir(dir: &Path) -> Result<Templates, RenderError> {
        let io = |source| RenderError::Io { path: dir.to_path_buf(), source };
        let mut found = HashMap::new();
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
        entries.sort();
        for path in entries {
            if path.extension().and_then(|e| e.to_str()) != Some("txt") {
                continue; // README.md, editor backups, ...
            }
            let key = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
                ReplyKind::ALL.into_iter().flat_map(|k| Lang::ALL.map(|l| (k, l))).find(|&(k, l)| file_name(k, l) == n)
            });
            let Some(key) = key else {
                return Err(RenderError::UnknownFile { path });
            };
            let text =
                std::fs::read_to_string(&path).map_err(|source| RenderError::Io { path: path.clone(), source })?;
            found.insert(key, (path, text));
        }
        Self::build(&found)
    }

    /// Every problem of an override directory, not only the first (for `check-config`):
    /// each file is compiled and rendered with sample values on its own, the embedded set
    /// standing in for the rest. Returns the good override files and the errors.
    pub fn check_dir(dir: &Path) -> (Vec<PathBuf>, Vec<RenderError>) {
        let (mut good, mut errors) = (Vec::new(), Vec::new());
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(source) => return (good, vec![RenderError::Io { path: dir.to_path_buf(), source }]),
        };
        entries.sort();
        for path in entries {
            if path.extension().and_then(|e| e.to_str()) != Some("txt") {
                continue;
            }
            let key = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
                ReplyKind::ALL.into_iter().flat_map(|k| Lang::ALL.map(|l| (k, l))).find(|&(k, l)| file_name(k, l) == n)
            });
            let Some(key) = key else {
                errors.push(RenderError::UnknownFile { path });
                continue;
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(source) => {
                    errors.push(RenderError::Io { path, source });
                    continue;
                }
            };
            match Self::build(&HashMap::from([(key, (path.clone(), text))])) {
                Ok(_) => good.push(path),
                Err(e) => errors.push(e),
            }
        }
        (good, errors)
    }

    /// How many templates a set holds (every kind in every language).
    pub fn count(&self) -> usize {
        self.names.len()
    }

    /// The override files in use, in file-name order (empty for the embedded set).
    pub fn overrides(&self) -> &[PathBuf] {
        &self.overrides
    }

    fn build(overrides: &HashMap<(ReplyKind, Lang), (PathBuf, String)>) -> Result<Templates, RenderError> {
        let mut t = Templates {
            subjects: new_env(),
            bodies: new_env(),
            names: HashMap::new(),
            overrides: overrides.values().map(|(p, _)| p.clone()).collect(),
        };
        t.overrides.sort();
        for kind in ReplyKind::ALL {
            for lang in Lang::ALL {
                let file = file_name(kind, lang);
                let (name, source) = match overrides.get(&(kind, lang)) {
                    Some((path, text)) => (path.display().to_string(), text.clone()),
                    None => match embedded_source(&file) {
                        Some(src) => (file, src.to_string()),
                        // A kind not translated into this language: answered in English
                        // (registered under the English file's name, compiled once).
                        None if lang != Lang::En => {
                            if let Some(en) = t.names.get(&(kind, Lang::En)).cloned() {
                                t.names.insert((kind, lang), en);
                            }
                            continue;
                        }
                        None => return Err(RenderError::Missing { kind: kind.name(), lang }),
                    },
                };
                let (subject, body) = split_file(&name, &source)?;
                let tpl_err = |source| RenderError::Template { name: name.clone(), source };
                t.subjects.add_template_owned(name.clone(), subject).map_err(tpl_err)?;
                t.bodies.add_template_owned(name.clone(), body).map_err(tpl_err)?;
                t.names.insert((kind, lang), name);
            }
        }
        // Strict undefined only fails when a line is reached: render every template with
        // everything set and with nothing set, so both sides of each `if` are exercised.
        for vars in [sample_vars(), ReplyVars::default()] {
            for kind in ReplyKind::ALL {
                for lang in Lang::ALL {
                    t.render(kind, lang, &vars)?;
                }
            }
        }
        Ok(t)
    }

    /// Render one reply. Values in `vars` are cleaned before they reach the template.
    pub fn render(&self, kind: ReplyKind, lang: Lang, vars: &ReplyVars) -> Result<RenderedReply, RenderError> {
        let name = self.names.get(&(kind, lang)).ok_or(RenderError::Missing { kind: kind.name(), lang })?;
        let tpl_err = |source| RenderError::Template { name: name.clone(), source };
        let ctx = template_context(vars, lang);

        let subject_line = self.subjects.get_template(name).and_then(|t| t.render(&ctx)).map_err(tpl_err)?;
        let subject_text = subject_line.trim_start().get("Subject:".len()..).unwrap_or_default();
        let mut subject = one_line(subject_text, MAX_SUBJECT_CHARS);
        // The case tag is what threads the sender's answer back to the case (extraction
        // looks for `[DL-…]` in the subject): the renderer adds it rather than trusting
        // every translation and override to remember it.
        // The portal and tenant replies concern no case of ours (they say so): no tag.
        let about_a_case = !matches!(kind, ReplyKind::RedirectPortal | ReplyKind::TenantSupport);
        if let Some(first) = vars.case_refs.first().filter(|_| about_a_case) {
            let tag = format!("[{}]", one_line(first, 40));
            if !subject.contains(&tag) {
                subject = one_line(&format!("{tag} {subject}"), MAX_SUBJECT_CHARS);
            }
        }

        let body = self.bodies.get_template(name).and_then(|t| t.render(&ctx)).map_err(tpl_err)?;
        Ok(RenderedReply { subject, body: tidy_body(&body) })
    }
}

/// Render one reply from the embedded templates.
pub fn render(kind: ReplyKind, lang: Lang, vars: &ReplyVars) -> Result<RenderedReply, RenderError> {
    static EMBEDDED_SET: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
    EMBEDDED_SET.get_or_init(Templates::embedded).render(kind, lang, vars)
}

/// The template environment of every mail delistd writes (replies here, staff mails in
/// `escalation`): plain text, and a typo in a template fails rather than printing nothing.
pub(crate) fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    // A typo in a template must fail the tests and the load check, not print nothing.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Block tags on their own line leave no trace in the output; a tag that ends a line
    // of text is written `+%}` to keep that line's newline.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env
}

/// Split a template file into its subject line and its body. The body keeps two empty
/// lines in place of the subject and the blank line, so minijinja reports the file's own
/// line numbers.
fn split_file(name: &str, source: &str) -> Result<(String, String), RenderError> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source).replace("\r\n", "\n");
    let no_subject = || RenderError::NoSubject { name: name.to_string() };
    let (first, rest) = source.split_once('\n').ok_or_else(no_subject)?;
    let (second, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let has_subject =
        first.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("subject:") && !first[8..].trim().is_empty());
    if !has_subject || !second.trim().is_empty() {
        return Err(no_subject());
    }
    Ok((first.trim_start().to_string(), format!("\n\n{body}")))
}

/// Body as sent: the padding gone, no trailing spaces, no runs of blank lines left by
/// conditional blocks, one final newline.
pub(crate) fn tidy_body(rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len());
    let mut blank_run = true; // drops leading blank lines
    for line in rendered.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            if !blank_run {
                out.push('\n');
            }
            blank_run = true;
        } else {
            out.push_str(line);
            out.push('\n');
            blank_run = false;
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

// ---------------------------------------------------------------------------------------
// Cleaning values

/// Characters that must not reach a reply whatever the field: C0/C1 controls, and Unicode
/// format characters that change how text displays (bidi embeddings, overrides and
/// isolates, as in CVE-2021-42574) or act as line breaks in some clients (U+2028/2029).
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' | '\u{FEFF}'
        )
}

/// One line of text: line breaks, tabs and runs of whitespace become one space, other
/// hidden characters go, at most `max_chars` characters (cut on a char boundary, `…`
/// marking the cut).
pub fn one_line(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    let mut count = 0;
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = count > 0;
            continue;
        }
        if is_hidden(c) {
            continue;
        }
        let needed = if space { 2 } else { 1 };
        if count + needed > max_chars {
            // Room for the ellipsis: drop characters until it fits.
            while count + 1 > max_chars {
                out.pop();
                count -= 1;
            }
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Several lines of text: line breaks normalised to `\n`, tabs to spaces, every other
/// hidden character removed, at most `max_chars` characters.
fn multi_line(s: &str, max_chars: usize) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    for (n, c) in s.chars().filter(|&c| c == '\n' || c == '\t' || !is_hidden(c)).enumerate() {
        if n >= max_chars {
            out.push('…');
            break;
        }
        out.push(if c == '\t' { ' ' } else { c });
    }
    out
}

/// Does a display name read as a person's or an organisation's name? Letters (any script),
/// spaces and the marks names use (`.`, `'`, `-`, `,`), at most 64 characters, no digits
/// runs, no URL, no `@`. Anything else could carry a message of a stranger's choosing into
/// our reply (backscatter spam): the reply then greets neutrally.
pub fn looks_like_a_name(name: &str) -> bool {
    let n = name.trim();
    let chars = n.chars().count();
    (1..=64).contains(&chars)
        && n.chars().any(char::is_alphabetic)
        && n.chars().all(|c| c.is_alphabetic() || c == ' ' || matches!(c, '.' | '\'' | '’' | '-' | ',' | '(' | ')' | '&') || is_name_mark(c))
        && n.split_whitespace().count() <= 8
        && !n.to_ascii_lowercase().contains("www.")
}

/// Combining marks (Hindi, Thai… names) and the middle dot of Japanese/Chinese names.
fn is_name_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{0900}'..='\u{0DFF}' | '\u{0E00}'..='\u{0E7F}' | '・' | '·')
}

/// The rejection as a reply may quote it: up to the enhanced status code and the bracketed
/// address (`550 5.7.511 Access denied, banned sender[203.0.113.7]`), nothing after. The
/// rest of an "NDR line" is text anyone can write into a forged request; staff still see
/// all of it. With no bracket, or a URL or address before it, only the codes are kept.
pub fn rejection_head(line: &str) -> String {
    let codes_end = {
        let mut words = line.split(' ');
        let first = words.next().unwrap_or("");
        let mut end = first.len();
        if first.len() == 3 && first.bytes().all(|b| b.is_ascii_digit()) {
            if let Some(second) = words.next() {
                end += 1 + second.len();
            }
        }
        end
    };
    let head = line.find(']').map(|i| &line[..=i]).filter(|h| {
        let l = h.to_ascii_lowercase();
        h.chars().count() <= 160 && !l.contains("://") && !l.contains("www.") && !l.contains('@')
    });
    head.unwrap_or(&line[..codes_end.min(line.len())]).to_string()
}

fn clean_opt(v: &Option<String>, max: usize) -> Option<String> {
    v.as_deref().map(|s| one_line(s, max)).filter(|s| !s.is_empty())
}

fn clean_missing(m: &Missing) -> Missing {
    match m {
        Missing::InvalidIp { text, problem } => Missing::InvalidIp { text: one_line(text, 64), problem: *problem },
        other => other.clone(),
    }
}

/// The vars with every string cleaned; the only multi-line field is the staff note.
fn clean(vars: &ReplyVars) -> ReplyVars {
    let list = |v: &[String]| v.iter().map(|s| one_line(s, 64)).collect::<Vec<_>>();
    ReplyVars {
        case_refs: list(&vars.case_refs),
        ips: list(&vars.ips),
        status_code: clean_opt(&vars.status_code, 32),
        ndr_line: clean_opt(&vars.ndr_line, MAX_VALUE_CHARS).map(|l| rejection_head(&l)),
        missing: vars.missing.iter().map(clean_missing).collect(),
        original_subject: clean_opt(&vars.original_subject, MAX_SUBJECT_CHARS),
        sender_name: clean_opt(&vars.sender_name, MAX_NAME_CHARS).filter(|n| looks_like_a_name(n)),
        sla_hours: vars.sla_hours,
        due: vars.due,
        due_at: clean_opt(&vars.due_at, 64),
        portal_url: one_line(&vars.portal_url, MAX_VALUE_CHARS),
        support_url: one_line(&vars.support_url, MAX_VALUE_CHARS),
        portal_ips: list(&vars.portal_ips),
        staff_note: vars
            .staff_note
            .as_deref()
            .map(|s| multi_line(s, MAX_NOTE_CHARS).trim().to_string())
            .filter(|s| !s.is_empty()),
    }
}

/// One case of the request as templates list it.
#[derive(Serialize)]
struct CaseLine {
    case_ref: String,
    ip: Option<String>,
}

/// The template context: the cleaned vars, plus
/// * `cases`: `{case_ref, ip}` pairs (case refs and IPs are parallel, one case per IP),
/// * `case_tag`: the first case ref or none,
/// * `lang`: the reply's language code.
fn template_context(vars: &ReplyVars, lang: Lang) -> Value {
    let mut vars = clean(vars);
    if let Some(t) = vars.due {
        vars.due_at = Some(local_date(t, lang));
    }
    let cases: Vec<CaseLine> = vars
        .case_refs
        .iter()
        .enumerate()
        .map(|(i, r)| CaseLine { case_ref: r.clone(), ip: vars.ips.get(i).cloned() })
        .collect();
    context! {
        cases => cases,
        case_tag => vars.case_refs.first().cloned(),
        lang => lang.code(),
        ..Value::from_serialize(&vars)
    }
}

/// A point in time as `lang` writes a date and time, in UTC, with the zone named. UTC: we do
/// not know the sender's zone, and a deadline in an unnamed zone is a wrong deadline.
pub fn local_date(t: jiff::Timestamp, lang: Lang) -> String {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    let (d, m, y) = (z.day(), z.month() as usize, z.year());
    let hm = format!("{:02}:{:02}", z.hour(), z.minute());
    let month = |names: [&'static str; 12]| names[(m + 11) % 12];
    match lang {
        Lang::En => format!("{d} {} {y}, {hm} UTC", month(["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"])),
        Lang::Fr => format!("{d} {} {y} à {:02} h {:02} UTC", month(["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"]), z.hour(), z.minute()),
        Lang::It => format!("{d} {} {y} alle {hm} UTC", month(["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre", "ottobre", "novembre", "dicembre"])),
        Lang::De => format!("{d}. {} {y}, {hm} Uhr UTC", month(["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"])),
        Lang::Es => format!("{d} de {} de {y}, {hm} UTC", month(["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre"])),
        Lang::Pt => format!("{d} de {} de {y}, {hm} UTC", month(["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro", "novembro", "dezembro"])),
        Lang::Nl => format!("{d} {} {y} om {hm} uur UTC", month(["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september", "oktober", "november", "december"])),
        Lang::Ja | Lang::Zh => format!("{y}年{m}月{d}日 {hm}（UTC）"),
    }
}

/// Columns a line takes in a fixed-width font: East Asian wide and full-width characters
/// take two (UAX #11, the ranges our templates use).
pub fn display_width(line: &str) -> usize {
    line.chars()
        .map(|c| match c {
            '\u{1100}'..='\u{115F}' | '\u{2E80}'..='\u{A4CF}' | '\u{AC00}'..='\u{D7A3}' | '\u{F900}'..='\u{FAFF}'
            | '\u{FE30}'..='\u{FE4F}' | '\u{FF00}'..='\u{FF60}' | '\u{FFE0}'..='\u{FFE6}' => 2,
            _ => 1,
        })
        .sum()
}

/// Every [`IpProblem`], so that the load check renders each one's phrase in every language
/// (the test `every_ip_problem_is_listed` keeps this list complete).
const ALL_IP_PROBLEMS: [IpProblem; 9] = [
    IpProblem::Malformed,
    IpProblem::Private,
    IpProblem::Loopback,
    IpProblem::LinkLocal,
    IpProblem::SharedAddressSpace,
    IpProblem::Multicast,
    IpProblem::Unspecified,
    IpProblem::Broadcast,
    IpProblem::Reserved,
];

/// Vars with every field set and every kind of `Missing`: what the load check renders.
fn sample_vars() -> ReplyVars {
    let mut missing = vec![Missing::StatusCode, Missing::WrongCode { code: StatusCode::new(5, 7, 1) }, Missing::Ip];
    missing.extend(ALL_IP_PROBLEMS.map(|problem| Missing::InvalidIp { text: "192.0.2.300".into(), problem }));
    ReplyVars {
        case_refs: vec!["DL-000001".into(), "DL-000002".into()],
        ips: vec!["203.0.113.7".into(), "2001:db8::7".into()],
        status_code: Some("5.7.511".into()),
        ndr_line: Some("550 5.7.511 Access denied, banned sender[203.0.113.7].".into()),
        missing,
        original_subject: Some("Delisting request".into()),
        sender_name: Some("Sample Sender".into()),
        sla_hours: 48,
        due: Some(jiff::Timestamp::from_second(1_735_812_000).unwrap_or_default()),
        due_at: None,
        portal_url: "https://portal.example/".into(),
        support_url: "https://support.example/".into(),
        staff_note: Some("First line.\nSecond line.".into()),
        portal_ips: vec!["198.51.100.9".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rich() -> ReplyVars {
        ReplyVars {
            case_refs: vec!["DL-000042".into(), "DL-000043".into()],
            ips: vec!["203.0.113.7".into(), "198.51.100.4".into()],
            status_code: Some("5.7.511".into()),
            ndr_line: Some("550 5.7.511 Access denied, banned sender[203.0.113.7].".into()),
            missing: vec![Missing::Ip],
            original_subject: Some("Please delist us".into()),
            sender_name: Some("Jane Postmaster".into()),
            sla_hours: 48,
            due: Some("2031-05-06T07:08:00Z".parse().unwrap()),
            due_at: None,
            portal_url: "https://delist.example.test/portal".into(),
            support_url: "https://support.example.test/".into(),
            staff_note: Some("Traffic looks clean since Monday.\nThanks for fixing the relay.".into()),
            portal_ips: Vec::new(),
        }
    }

    fn all() -> impl Iterator<Item = (ReplyKind, Lang)> {
        ReplyKind::ALL.into_iter().flat_map(|k| Lang::ALL.map(|l| (k, l)))
    }

    #[test]
    fn every_kind_and_language_is_embedded_and_renders() {
        assert_eq!(EMBEDDED.len(), ReplyKind::ALL.len());
        for (kind, lang) in all() {
            assert!(embedded_source(&file_name(kind, lang)).is_some(), "{kind:?} {lang}");
            for vars in [rich(), sample_vars(), ReplyVars::default()] {
                let r = render(kind, lang, &vars).unwrap_or_else(|e| panic!("{kind:?} {lang}: {e}"));
                assert!(!r.subject.is_empty() && !r.body.trim().is_empty(), "{kind:?} {lang}");
                assert!(!r.body.contains("{{") && !r.body.contains("{%"), "{kind:?} {lang}: {}", r.body);
            }
        }
    }

    #[test]
    fn every_ip_problem_is_listed() {
        // Exhaustive: a new IpProblem variant fails to compile here until it is listed.
        let listed = |p: IpProblem| match p {
            IpProblem::Malformed
            | IpProblem::Private
            | IpProblem::Loopback
            | IpProblem::LinkLocal
            | IpProblem::SharedAddressSpace
            | IpProblem::Multicast
            | IpProblem::Unspecified
            | IpProblem::Broadcast
            | IpProblem::Reserved => ALL_IP_PROBLEMS.contains(&p),
        };
        assert!(ALL_IP_PROBLEMS.into_iter().all(listed));
    }

    #[test]
    fn subject_carries_the_first_case_tag_once() {
        for (kind, lang) in all() {
            let r = render(kind, lang, &rich()).unwrap();
            if matches!(kind, ReplyKind::RedirectPortal | ReplyKind::TenantSupport) {
                assert!(!r.subject.contains("DL-"), "{kind:?} {lang}: no case, no tag: {}", r.subject);
                continue;
            }
            assert!(r.subject.starts_with("[DL-000042] "), "{kind:?} {lang}: {}", r.subject);
            assert_eq!(r.subject.matches("DL-0000").count(), 1, "{}", r.subject);
            let r = render(kind, lang, &ReplyVars::default()).unwrap();
            assert!(!r.subject.contains('['), "{kind:?} {lang}: {}", r.subject);
        }
    }

    // --- header safety ---------------------------------------------------------------

    const INJECT: &str = "x\r\nBcc: victim@example.com";

    fn hostile() -> ReplyVars {
        let big = "A".repeat(10 * 1024);
        ReplyVars {
            case_refs: vec![format!("DL-000042{INJECT}"), "DL-000043".into()],
            ips: vec![format!("203.0.113.7{INJECT}"), "\u{202E}4.001.15.891\u{202C}".into()],
            status_code: Some("5.7.511\0\r\nX-Evil: 1".into()),
            ndr_line: Some(format!("550 5.7.511 {big}\r\n\r\nBcc: victim@example.com")),
            missing: vec![
                Missing::InvalidIp { text: format!("10.0.0.1{INJECT}"), problem: IpProblem::Private },
                Missing::Ip,
            ],
            original_subject: Some(format!("{INJECT}{big}")),
            sender_name: Some(format!("Eve\u{2028}Bcc: victim@example.com\u{202E}{big}")),
            sla_hours: 48,
            due: None,
            due_at: Some(format!("tomorrow{INJECT}")),
            portal_url: format!("https://portal.example/{INJECT}"),
            support_url: "https://support.example/\n\nBcc: x@y\0".to_string(),
            staff_note: Some(format!("Fine.\r\nSecond line\0 with NUL\u{202E}and RLO.\r{big}")),
            portal_ips: vec![format!("198.51.100.9{INJECT}")],
        }
    }

    fn assert_clean_line(s: &str, what: &str) {
        assert!(!s.chars().any(is_hidden), "{what}: hidden character in {s:?}");
        assert!(!s.contains('\n') && !s.contains('\r'), "{what}: line break in {s:?}");
    }

    #[test]
    fn hostile_values_cannot_break_the_subject_or_the_body() {
        for (kind, lang) in all() {
            let what = format!("{kind:?} {lang}");
            let r = render(kind, lang, &hostile()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_clean_line(&r.subject, &what);
            assert!(r.subject.chars().count() <= MAX_SUBJECT_CHARS, "{what}: {}", r.subject.len());
            if !matches!(kind, ReplyKind::RedirectPortal | ReplyKind::TenantSupport) {
                assert!(r.subject.starts_with("[DL-000042x Bcc: victim@example.com] "), "{what}: {}", r.subject);
            }
            assert!(!r.subject.contains("  "), "{what}: whitespace not collapsed");
            for line in r.body.lines() {
                assert!(!line.chars().any(|c| c != '\n' && is_hidden(c)), "{what}: hidden character in {line:?}");
                let head = line.trim_start().to_ascii_lowercase();
                assert!(!head.starts_with("bcc:") && !head.starts_with("x-evil:"), "{what}: injected line {line:?}");
            }
            // A 10 kB value is cut, not carried whole into the reply.
            assert!(r.body.len() < 12_000, "{what}: body of {} bytes", r.body.len());
        }
    }

    #[test]
    fn only_name_like_display_names_are_greeted() {
        for ok in ["Jane Postmaster", "Jean-Luc O'Neil", "山田 太郎", "Müller, Anna", "NOC team"] {
            assert!(looks_like_a_name(ok), "{ok}");
        }
        for bad in ["Buy now at https://spam.example", "win@prize.example", "Call 555 1234", "www.example.com", "", &"A".repeat(65), "a b c d e f g h i"] {
            assert!(!looks_like_a_name(bad), "{bad}");
        }
        let v = ReplyVars { sender_name: Some("Cheap pills: spam.example".into()), ..rich() };
        let body = render(ReplyKind::Acknowledge, Lang::En, &v).unwrap().body;
        assert!(!body.contains("pills"), "{body}");
    }

    #[test]
    fn the_rejection_is_quoted_up_to_its_bracketed_ip() {
        assert_eq!(
            rejection_head("550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal see https://x.example"),
            "550 5.7.511 Access denied, banned sender[203.0.113.7]"
        );
        assert_eq!(rejection_head("550 5.7.511 visit https://spam.example now [203.0.113.7]"), "550 5.7.511");
        assert_eq!(rejection_head("5.7.511 no bracket here"), "5.7.511");
        let v = ReplyVars { ndr_line: Some("550 5.7.511 banned sender[203.0.113.7]. BUY PILLS".into()), ..rich() };
        for lang in Lang::ALL {
            for kind in ReplyKind::ALL {
                let body = render(kind, lang, &v).unwrap().body;
                assert!(!body.contains("PILLS"), "{kind:?} {lang}");
            }
        }
    }

    #[test]
    fn one_line_collapses_and_caps_on_a_char_boundary() {
        assert_eq!(one_line("  a \r\n\t b\u{3000}c  ", 100), "a b c");
        assert_eq!(one_line("a\0b\u{202E}c\u{2066}d\u{FEFF}", 100), "abcd");
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
        // Multi-byte characters: counted and cut as characters, never mid-byte.
        let ja = "リスト解除のご依頼を受け付けました";
        let cut = one_line(ja, 5);
        assert_eq!(cut, "リスト解…");
        assert_eq!(one_line(&"é".repeat(500), MAX_SUBJECT_CHARS).chars().count(), MAX_SUBJECT_CHARS);
        assert_eq!(multi_line("a\r\nb\rc\0d\te", 100), "a\nb\ncd e");
        assert_eq!(multi_line("abcdef", 3), "abc…");
    }

    #[test]
    fn the_subject_keeps_an_explicit_tag_and_stays_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("delisted.en.txt"),
            "Subject: Re: [{{ case_tag }}] {{ staff_note }}\n\nBody {{ ips|join(\", \") }}\n",
        )
        .unwrap();
        let t = Templates::from_dir(dir.path()).unwrap();
        let r = t.render(ReplyKind::Delisted, Lang::En, &rich()).unwrap();
        // The tag is already there: not added twice; the multi-line note is folded.
        assert_eq!(r.subject, "Re: [DL-000042] Traffic looks clean since Monday. Thanks for fixing the relay.");
        assert_eq!(r.body, "Body 203.0.113.7, 198.51.100.4\n");
    }

    // --- override directory ------------------------------------------------------------

    #[test]
    fn override_directory_replaces_only_the_files_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acknowledge.fr.txt"), "Subject: Reçu\r\n\r\nDossier {{ case_tag }}.\r\n")
            .unwrap();
        std::fs::write(dir.path().join("README.md"), "not a template").unwrap();
        let t = Templates::from_dir(dir.path()).unwrap();
        assert_eq!(t.overrides(), [dir.path().join("acknowledge.fr.txt")]);
        let r = t.render(ReplyKind::Acknowledge, Lang::Fr, &rich()).unwrap();
        assert_eq!(r, RenderedReply { subject: "[DL-000042] Reçu".into(), body: "Dossier DL-000042.\n".into() });
        // Everything else is the embedded text.
        for (kind, lang) in all().filter(|&k| k != (ReplyKind::Acknowledge, Lang::Fr)) {
            assert_eq!(t.render(kind, lang, &rich()).unwrap(), render(kind, lang, &rich()).unwrap());
        }
        assert!(Templates::embedded().overrides().is_empty());
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing_info.ja.txt");
        std::fs::write(&path, "Subject: x\n\nline 3\nline 4 {% if %}\n").unwrap();
        let err = Templates::from_dir(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, RenderError::Template { .. }), "{msg}");
        assert!(msg.contains(&format!("{}:4", path.display())), "{msg}");

        // In the subject line too.
        std::fs::write(&path, "Subject: {{ oops\n\nbody\n").unwrap();
        let msg = Templates::from_dir(dir.path()).unwrap_err().to_string();
        assert!(msg.contains(&format!("{}:1", path.display())), "{msg}");
    }

    #[test]
    fn a_misspelt_variable_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejected.de.txt");
        // Only reached when a staff note is given: the rich test render finds it.
        std::fs::write(&path, "Subject: x\n\n{% if staff_note %}\n{{ staf_note }}\n{% endif %}\n").unwrap();
        let msg = Templates::from_dir(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("undefined") && msg.contains(&format!("{}:4", path.display())), "{msg}");
    }

    #[test]
    fn malformed_override_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acknowlege.en.txt"), "Subject: x\n\nbody\n").unwrap();
        assert!(matches!(Templates::from_dir(dir.path()), Err(RenderError::UnknownFile { .. })));

        for bad in ["no subject here\n\nbody\n", "Subject: x\nno blank line\n", "Subject:   \n\nbody\n", "Subject: x"] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("acknowledge.en.txt"), bad).unwrap();
            assert!(matches!(Templates::from_dir(dir.path()), Err(RenderError::NoSubject { .. })), "{bad:?}");
        }

        let missing = dir.path().join("does-not-exist");
        assert!(matches!(Templates::from_dir(&missing), Err(RenderError::Io { .. })));
    }

    // --- translations ------------------------------------------------------------------

    /// Every translation must show the values its kind is about.
    #[test]
    fn every_translation_prints_the_values_of_its_kind() {
        let vars = rich();
        for (kind, lang) in all() {
            let mut v = vars.clone();
            let due_text = local_date("2031-05-06T07:08:00Z".parse().unwrap(), lang);
            let required: Vec<&str> = match kind {
                ReplyKind::Acknowledge => vec![
                    "DL-000042",
                    "DL-000043",
                    "203.0.113.7",
                    "198.51.100.4",
                    "48",
                    &due_text,
                    "5.7.511",
                ],
                ReplyKind::MissingInfo => {
                    v.missing = vec![
                        Missing::StatusCode,
                        Missing::WrongCode { code: StatusCode::new(5, 7, 1) },
                        Missing::InvalidIp { text: "10.9.8.7".into(), problem: IpProblem::Private },
                    ];
                    vec![
                        "5.7.1",
                        "10.9.8.7",
                        "5.7.511",
                        "550 5.7.511 Access denied, banned sender[a.b.c.d]",
                        "[DL-000042]",
                    ]
                }
                ReplyKind::RedirectPortal => {
                    v.status_code = Some("5.7.612".into());
                    vec!["5.7.612", "https://delist.example.test/portal", "24", "203.0.113.7", "Delist IP"]
                }
                ReplyKind::TenantSupport => {
                    v.status_code = Some("5.7.705".into());
                    vec!["5.7.705", "https://support.example.test/", "5.7.750"]
                }
                ReplyKind::NotListed => vec!["DL-000042", "203.0.113.7", "198.51.100.4", "550 5.7.511", "[DL-000042]"],
                ReplyKind::Delisted | ReplyKind::Rejected => {
                    vec![
                        "DL-000042",
                        "203.0.113.7",
                        "Traffic looks clean since Monday.",
                        "  Thanks for fixing the relay.",
                    ]
                }
                ReplyKind::Reopened => vec!["DL-000042", "203.0.113.7", "48", &due_text, "[DL-000042]"],
                // The staff text exactly as written, each line on its own line.
                ReplyKind::StaffReply | ReplyKind::StaffQuestion => vec![
                    "DL-000042",
                    "[DL-000042]",
                    "\nTraffic looks clean since Monday.\nThanks for fixing the relay.\n",
                ],
            };
            let r = render(kind, lang, &v).unwrap();
            for want in required {
                assert!(r.body.contains(want), "{kind:?} {lang} lacks {want:?}:\n{}", r.body);
            }
            if let Some(name) = &v.sender_name {
                assert!(r.body.contains(name.as_str()), "{kind:?} {lang} greets nobody");
            }
            // Not left untranslated: the body differs from the English one.
            if lang != Lang::En {
                assert_ne!(r.body, render(kind, Lang::En, &v).unwrap().body, "{kind:?} {lang} is English");
                assert_ne!(r.subject, render(kind, Lang::En, &v).unwrap().subject, "{kind:?} {lang} subject");
            }
        }
    }

    /// Every kind in every language, with realistic values and with none: lines fit in 78
    /// columns (RFC 5322 §2.1.1; CJK characters take two), no template syntax is left, and
    /// the subject and the body agree (the case tag in the subject is named in the body).
    #[test]
    fn every_reply_fits_78_columns_and_agrees_with_its_subject() {
        let mut problems = Vec::new();
        for (kind, lang) in all() {
            for (which, vars) in [("rich", rich()), ("sample", sample_vars()), ("empty", ReplyVars::default())] {
                let r = render(kind, lang, &vars).unwrap();
                for line in r.body.lines() {
                    if display_width(line) > 78 {
                        problems.push(format!("{kind:?} {lang} {which}: {} columns: {line}", display_width(line)));
                    }
                }
                for t in ["{{", "}}", "{%", "%}", "{#"] {
                    if r.body.contains(t) || r.subject.contains(t) {
                        problems.push(format!("{kind:?} {lang} {which}: template syntax {t} left"));
                    }
                }
                if let Some(tag) = vars.case_refs.first().filter(|t| r.subject.contains(t.as_str())) {
                    if !r.body.contains(tag.as_str()) {
                        problems.push(format!("{kind:?} {lang} {which}: subject names {tag}, body does not"));
                    }
                }
                if display_width(&r.subject) > 78 {
                    problems.push(format!("{kind:?} {lang} {which}: subject of {} columns", display_width(&r.subject)));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn dates_are_written_the_way_each_language_writes_them() {
        let t: jiff::Timestamp = "2026-12-02T13:20:00Z".parse().unwrap();
        let want = [
            (Lang::En, "2 December 2026, 13:20 UTC"),
            (Lang::Fr, "2 décembre 2026 à 13 h 20 UTC"),
            (Lang::It, "2 dicembre 2026 alle 13:20 UTC"),
            (Lang::De, "2. Dezember 2026, 13:20 Uhr UTC"),
            (Lang::Es, "2 de diciembre de 2026, 13:20 UTC"),
            (Lang::Pt, "2 de dezembro de 2026, 13:20 UTC"),
            (Lang::Nl, "2 december 2026 om 13:20 uur UTC"),
            (Lang::Ja, "2026年12月2日 13:20（UTC）"),
            (Lang::Zh, "2026年12月2日 13:20（UTC）"),
        ];
        for (lang, w) in want {
            assert_eq!(local_date(t, lang), w);
            let v = ReplyVars { due: Some(t), ..rich() };
            assert!(render(ReplyKind::Acknowledge, lang, &v).unwrap().body.contains(w), "{lang}");
        }
    }

    /// Each IP problem reads differently in each language (no copy-pasted phrase).
    #[test]
    fn every_ip_problem_has_its_own_phrase() {
        for lang in Lang::ALL {
            let mut seen = std::collections::HashSet::new();
            for problem in ALL_IP_PROBLEMS {
                let v = ReplyVars {
                    missing: vec![Missing::InvalidIp { text: "192.0.2.1".into(), problem }],
                    ..ReplyVars::default()
                };
                // The item names the address, then says what is wrong with it.
                let body = render(ReplyKind::MissingInfo, lang, &v).unwrap().body;
                assert!(body.contains("192.0.2.1"), "{lang} {problem:?}");
                assert!(seen.insert(body.clone()), "{lang} {problem:?}: same text as another problem");
            }
        }
    }

    /// The reply says exactly what is missing: nothing more.
    #[test]
    fn missing_info_lists_only_what_is_missing() {
        for lang in Lang::ALL {
            let only_ip = ReplyVars { missing: vec![Missing::Ip], ..ReplyVars::default() };
            let both = ReplyVars { missing: vec![Missing::StatusCode, Missing::Ip], ..ReplyVars::default() };
            let items = |v: &ReplyVars| {
                render(ReplyKind::MissingInfo, lang, v).unwrap().body.lines().filter(|l| l.starts_with("- ")).count()
            };
            assert_eq!((items(&only_ip), items(&both)), (1, 2), "{lang}");
        }
    }
}
