//! `delistd cases ...`: the staff commands over the case database.
//!
//! Safe while the daemon runs: the database is in WAL mode, so reading never blocks the
//! daemon; each staff action is one short transaction that waits (busy timeout) for the
//! daemon's write lock rather than failing.
//!
//! Times are stored in UTC and shown in the local time zone (`TZ` is respected); the
//! `--json`/`--csv` outputs for scripts give RFC 3339 UTC.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | error: database (incl. a database from a newer delistd), output, composing a reply |
//! | 2 | usage: bad arguments (clap exits with 2 too) |
//! | 3 | no such case |
//! | 4 | refused: the action does not apply to the case's state (e.g. resolving a resolved case) |
//! | 5 | `resolve` as delisted: the configured `delist_command` failed; the case stays open |
//! | 77 | this user may not open the database (not a member of its group, e.g. `delistd-staff`) |

use clap::ValueEnum as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use crate::cases::access::AccessError;
use crate::cases::sla::{short_duration, Spread};
use crate::cases::{CaseFilter, CaseState, Resolution, SlaStatus, Store, StoreError, StoreOptions};
use crate::desk::{Actor, CaseSummary, CaseView, Desk, DeskError, IpMatch, Query, ResolveRequest};
use crate::reply::{BuildError, Builder};
use crate::types::CaseRef;

/// Exit code: no such case.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: the action does not apply to the case's state.
pub const EXIT_REFUSED: u8 = 4;
/// `resolve` as delisted: `delist_command` failed, the case stays open.
pub const EXIT_DELIST_FAILED: u8 = 5;

#[derive(Debug, clap::Subcommand)]
pub enum CasesCmd {
    /// List cases: open and awaiting ones, most urgent first; with --ip, --sender or --search, every state.
    List(ListArgs),
    /// One case: the request, its evidence, history, messages and replies.
    Show(ShowArgs),
    /// Close a case as delisted (default) or rejected, optionally queueing the reply to the sender.
    Resolve(ResolveArgs),
    /// Put a resolved or rejected case back to open, with a fresh SLA clock.
    Reopen(ReopenArgs),
    /// Add a note to a case's history.
    Note(NoteArgs),
    /// Write to the case's sender (text from stdin, else $VISUAL/$EDITOR); --preview shows it first.
    #[command(long_about = "Write to the case's sender.\n\n\
The text is read from standard input when it is not a terminal (echo TEXT | delistd cases reply \
DL-000042); otherwise an editor opens ($VISUAL, then $EDITOR, then vi) on a file whose lines \
starting with '#' are removed. The greeting and the signature are added in the case's language \
(templates staff_reply.<lang>.txt); the message is threaded to the sender's latest message, carries \
the case tag in its subject and, being a person's mail, no Auto-Submitted header. A closed case \
may be written to and stays closed.\n\n\
--preview (--dry-run) prints the exact message and queues nothing. An empty text sends nothing \
(exit 2); no such case: exit 3; refused (e.g. a viewer): exit 4.")]
    Reply(crate::cli::reply::MessageArgs),
    /// Ask the sender for information: the case waits for the answer, its SLA clock paused.
    #[command(long_about = "Ask the case's sender for information.\n\n\
The text is read as for `cases reply` (standard input, else the editor) and framed by the \
staff_question template in the case's language. The case moves to awaiting_info: its SLA clock \
pauses, keeping the time it had left, and runs again from the sender's answer, which moves the \
case back to open and marks it as needing attention. A closed case cannot be asked: reopen it \
first (exit 4). --preview (--dry-run) prints the exact message and queues nothing; an empty \
text sends nothing (exit 2).")]
    Ask(crate::cli::reply::MessageArgs),
    /// Give a case to someone.
    Assign(AssignArgs),
    /// One action on many cases: assign, resolve or reject them (the board's bulk form).
    #[command(subcommand, long_about = "One action on many cases, as the board's bulk form does.\n\n\
Cases are given as arguments, or `-` reads them from standard input, e.g.\n  \
delistd cases list --sender shop.example --json | jq -r '.[].ref' | delistd cases bulk assign --to ann -\n\n\
Each case is its own transaction: a refused case (already closed, no IP for \"delisted\") does not \
stop the others. Every outcome is printed; exit 0 when all were done, 4 when some were refused, \
2 for a malformed case reference (then nothing is done). Resolve and reject send no reply: \
replies are written case by case (`cases resolve --reply`).")]
    Bulk(crate::cli::bulk::BulkCmd),
    /// Open, overdue, due soon; SLA met and response times over a window.
    Stats(StatsArgs),
    /// Every case (or those opened since), streamed as CSV or JSON.
    Export(ExportArgs),
}

/// Which states `--state` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateArg {
    #[value(name = "awaiting_info")]
    AwaitingInfo,
    Open,
    Resolved,
    Rejected,
    /// awaiting_info and open.
    Active,
    /// resolved and rejected.
    Closed,
    All,
}

impl StateArg {
    fn states(self) -> &'static [CaseState] {
        match self {
            StateArg::AwaitingInfo => &[CaseState::AwaitingInfo],
            StateArg::Open => &[CaseState::Open],
            StateArg::Resolved => &[CaseState::Resolved],
            StateArg::Rejected => &[CaseState::Rejected],
            StateArg::Active => &[CaseState::Open, CaseState::AwaitingInfo],
            StateArg::Closed => &[CaseState::Resolved, CaseState::Rejected],
            StateArg::All => &[],
        }
    }
}

#[derive(Debug, Default, clap::Args)]
pub struct ListArgs {
    /// Only these states (comma-separated). Default: active, or all with --ip/--sender/--search.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub state: Vec<StateArg>,
    /// Only open cases past their due time.
    #[arg(long)]
    pub overdue: bool,
    /// Only open cases due within this long (e.g. 6h, 1d12h); with --overdue, those too.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub due_within: Option<SignedDuration>,
    /// An IP address (203.0.113.7) or a CIDR block (203.0.113.0/24, 2001:db8::/32).
    #[arg(long, value_name = "IP|CIDR")]
    pub ip: Option<IpMatch>,
    /// Part of the sender's address or domain (case does not matter), as on the board.
    #[arg(long, value_name = "TEXT")]
    pub sender: Option<String>,
    /// Words in the subjects and texts of the case's messages (full-text search; every word
    /// must appear; "a phrase" in quotes; word* for words starting so).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only cases assigned to this staff member.
    #[arg(long, conflicts_with = "mine")]
    pub assignee: Option<String>,
    /// Only cases assigned to me (the acting staff member, as for actions).
    #[arg(long)]
    pub mine: bool,
    /// Only cases a person wrote on since the last staff action (marked `!` in the table).
    #[arg(long)]
    pub attention: bool,
    /// Opened since: a duration ago (7d), a local date (2025-03-01) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<Since>,
    /// At most this many cases (0: no limit).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Skip this many first (next page: --offset 50).
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// JSON array, times in UTC.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV with a header line, times in UTC.
    #[arg(long)]
    pub csv: bool,
    /// Every column at full width (by default the table fits 80 columns).
    #[arg(long)]
    pub wide: bool,
}

impl ListArgs {
    /// Every case in every state, no paging (the demo's closing table).
    pub fn everything() -> ListArgs {
        ListArgs { state: StateArg::value_variants().to_vec(), ..ListArgs::default() }
    }
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Case reference, e.g. DL-000123.
    pub case: CaseRef,
    #[arg(long)]
    pub json: bool,
}

/// The reply `cases resolve --reply` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolutionReply {
    /// "Your IP was delisted."
    Delisted,
    /// "Your request was refused."
    Rejected,
}

#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    pub case: CaseRef,
    /// Internal note for the history (never sent to the sender).
    #[arg(long)]
    pub note: String,
    /// Queue this reply to the sender, in the case's language. `rejected` closes the case as rejected.
    #[arg(long, value_enum)]
    pub reply: Option<ResolutionReply>,
    /// Close as rejected (with `--reply rejected`: and tell the sender).
    #[arg(long)]
    pub reject: bool,
    /// Text for the sender, put into the reply.
    #[arg(long, requires = "reply", value_name = "TEXT")]
    pub reply_note: Option<String>,
    /// Who does it; only root may name someone (default: the Unix user, or $SUDO_USER under sudo).
    #[arg(long, env = "DELISTD_STAFF")]
    pub by: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReopenArgs {
    pub case: CaseRef,
    #[arg(long)]
    pub note: Option<String>,
    #[arg(long, env = "DELISTD_STAFF")]
    pub by: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct NoteArgs {
    pub case: CaseRef,
    pub text: String,
    #[arg(long, env = "DELISTD_STAFF")]
    pub by: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct AssignArgs {
    pub case: CaseRef,
    /// Who takes it.
    #[arg(required_unless_present = "clear")]
    pub who: Option<String>,
    /// Assign it to nobody.
    #[arg(long, conflicts_with = "who")]
    pub clear: bool,
    #[arg(long, env = "DELISTD_STAFF")]
    pub by: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Window for the SLA figures: cases whose clock started since (default 30d).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<Since>,
    /// What "due soon" means.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "6h")]
    pub due_soon: SignedDuration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    /// A JSON array, one case per line.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Only cases opened since (a duration ago, a local date or an RFC 3339 time).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<Since>,
    /// Only these states (comma-separated). Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub state: Vec<StateArg>,
}

/// A point in time given on the command line, resolved against the clock when run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(SignedDuration),
    /// Local midnight of this date.
    Date(jiff::civil::Date),
    At(Timestamp),
}

impl FromStr for Since {
    type Err = String;
    fn from_str(s: &str) -> Result<Since, String> {
        if let Ok(d) = parse_duration(s) {
            return Ok(Since::Ago(d));
        }
        if let Ok(d) = s.parse::<jiff::civil::Date>() {
            return Ok(Since::Date(d));
        }
        s.parse::<Timestamp>()
            .map(Since::At)
            .map_err(|_| format!("{s:?}: expected a duration (7d, 12h), a date (2025-03-01) or an RFC 3339 time"))
    }
}

impl Since {
    fn resolve(self, now: Timestamp, tz: &TimeZone) -> Result<Timestamp, CasesError> {
        match self {
            Since::Ago(d) => now.checked_sub(d).map_err(|e| CasesError::Usage(format!("--since: {e}"))),
            Since::Date(d) => {
                d.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| CasesError::Usage(format!("--since: {e}")))
            }
            Since::At(t) => Ok(t),
        }
    }
}

/// `90m`, `6h`, `1d12h`, `2w`: whole numbers with units w, d, h, m, s.
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let bad = || format!("{s:?}: expected a duration like 6h, 90m, 1d12h");
    let mut total: i64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for ch in s.trim().chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit: i64 = match ch {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !any || !digits.is_empty() {
        return Err(bad());
    }
    Ok(SignedDuration::from_secs(total))
}

/// Everything a command needs besides its arguments.
pub struct Env<'a> {
    pub now: Timestamp,
    /// Zone times are shown in; [`TimeZone::system`] respects `TZ`.
    pub tz: TimeZone,
    pub store: StoreOptions,
    /// The reply builder from the config; `None`: replies are refused (no config).
    pub replies: Option<&'a Builder>,
    /// `[blocklist] delist_command`: run before a case is resolved as delisted.
    pub delist_command: Option<Vec<String>>,
}

impl<'a> Env<'a> {
    /// The system time zone, default store options, no replies.
    pub fn new(now: Timestamp) -> Env<'a> {
        Env { now, tz: TimeZone::system(), store: StoreOptions::default(), replies: None, delist_command: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("no database at {} (check --db)", .0.display())]
    NoDatabase(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Desk(DeskError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("writing output: {0}")]
    Io(#[from] io::Error),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{case} stays open: {summary}")]
    DelistCommand { case: CaseRef, summary: String },
    /// `cases bulk`: these many of the cases were refused (each outcome printed): exit 4.
    #[error("{refused} of {of} cases refused (see above)")]
    SomeRefused { refused: usize, of: usize },
    /// This user may not open the database (not in its group): exit 77.
    #[error(transparent)]
    Access(AccessError),
}

impl From<DeskError> for CasesError {
    fn from(e: DeskError) -> CasesError {
        // Store errors keep their own variant, so their exit codes stay as documented.
        match e {
            DeskError::Store(s) => CasesError::Store(s),
            other => CasesError::Desk(other),
        }
    }
}

impl CasesError {
    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            CasesError::Store(StoreError::NotFound(_)) => EXIT_NOT_FOUND,
            CasesError::Store(StoreError::WrongState { .. } | StoreError::AnotherActive { .. }) => EXIT_REFUSED,
            CasesError::Desk(DeskError::Refused(_) | DeskError::Forbidden(_)) => EXIT_REFUSED,
            CasesError::SomeRefused { .. } => EXIT_REFUSED,
            CasesError::Usage(_) | CasesError::Desk(DeskError::Invalid(_)) => 2,
            CasesError::DelistCommand { .. } => EXIT_DELIST_FAILED,
            CasesError::Access(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// Run one `cases` command against the database at `db`, writing to `out`.
/// A closed output pipe (`| head`) ends the command quietly.
pub fn run(cmd: CasesCmd, db: &Path, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    match run_inner(cmd, db, env, out) {
        Err(CasesError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(CasesError::Csv(e)) if is_broken_pipe(&e) => Ok(()),
        Err(CasesError::Json(e)) if e.io_error_kind() == Some(io::ErrorKind::BrokenPipe) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == io::ErrorKind::BrokenPipe)
}

fn run_inner(cmd: CasesCmd, db: &Path, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    // Staff commands never create a database: a wrong --db would silently show nothing.
    // A database there but closed to this user says so, with the group to join.
    match crate::cases::access::check(db) {
        Err(AccessError::Missing(_)) => return Err(CasesError::NoDatabase(db.to_path_buf())),
        Err(e) => return Err(CasesError::Access(e)),
        Ok(()) => {}
    }
    let mut store = Store::open(db, env.store.clone())?;
    match cmd {
        CasesCmd::List(a) => list(&mut store, a, env, out),
        CasesCmd::Show(a) => show(&mut store, a, env, out),
        CasesCmd::Resolve(a) => resolve(&mut store, a, env, out),
        CasesCmd::Reopen(a) => {
            let case = Desk::new(&mut store).reopen(&actor(a.by)?, a.case, a.note.as_deref(), env.now)?;
            let due = case.due_at.map(|d| local(d, &env.tz)).unwrap_or_default();
            writeln!(out, "{} reopened; due {due}", a.case)?;
            Ok(())
        }
        CasesCmd::Note(a) => {
            Desk::new(&mut store).note(&actor(a.by)?, a.case, &a.text, env.now)?;
            writeln!(out, "{}: note added", a.case)?;
            Ok(())
        }
        CasesCmd::Assign(a) => {
            let who = if a.clear { None } else { a.who.as_deref() };
            Desk::new(&mut store).assign(&actor(a.by)?, a.case, who, env.now)?;
            writeln!(out, "{} assigned to {}", a.case, who.unwrap_or("nobody"))?;
            Ok(())
        }
        CasesCmd::Reply(a) => crate::cli::reply::run(crate::cli::reply::Which::Reply, &mut store, a, env, out),
        CasesCmd::Ask(a) => crate::cli::reply::run(crate::cli::reply::Which::Ask, &mut store, a, env, out),
        CasesCmd::Bulk(b) => crate::cli::bulk::run(b, &mut store, env, out),
        CasesCmd::Stats(a) => stats(&store, a, env, out),
        CasesCmd::Export(a) => export(&store, a, env, out),
    }
}

/// The staff member acting. The history must say who really did it, so: the Unix user;
/// under sudo, the user who ran sudo (`SUDO_USER`); `--by` (or `$DELISTD_STAFF`) only for
/// root, who may act for someone (e.g. a script run by an administrator).
pub(crate) fn actor(by: Option<String>) -> Result<Actor, CasesError> {
    let by = by.filter(|s| !s.trim().is_empty());
    let uid = effective_uid();
    let login = login_name(uid);
    match (uid, by) {
        (Some(0), Some(b)) => Ok(Actor::agent(b)),
        (Some(0), None) => Ok(Actor::agent(std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty()).unwrap_or(login))),
        (_, Some(b)) if b != login => Err(CasesError::Usage(format!(
            "--by {b}: only root may act under another name; you are {login} (drop --by and $DELISTD_STAFF)"
        ))),
        _ => Ok(Actor::agent(login)),
    }
}

/// The process's uid, read from `/proc/self` (owned by the process's effective user).
fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The login name of `uid` from /etc/passwd, else `$USER`, else the number.
fn login_name(uid: Option<u32>) -> String {
    let from_passwd = uid.and_then(|uid| {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
        text.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
    });
    from_passwd
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.map(|u| u.to_string()).unwrap_or_else(|| "staff".into()))
}

fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M").to_string()
}

fn local_with_zone(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

// -- list / export ------------------------------------------------------------------------

/// One case for scripts (JSON, CSV): the desk's view, as the web API gives it.
type CaseOut = CaseSummary;

fn states_of(args: &[StateArg]) -> Vec<CaseState> {
    let mut v: Vec<CaseState> = Vec::new();
    for a in args {
        if *a == StateArg::All {
            return Vec::new();
        }
        for s in a.states() {
            if !v.contains(s) {
                v.push(*s);
            }
        }
    }
    v
}

/// `cases list` is the board's list ([`Desk::list`]), so its JSON is the web API's: pages of
/// the desk are walked with their keyset cursor to serve `--offset` and `--limit`.
fn list(store: &mut Store, a: ListArgs, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    let states = if a.state.is_empty() {
        if a.ip.is_some() || a.sender.is_some() || a.search.is_some() {
            CaseState::ALL.to_vec()
        } else {
            StateArg::Active.states().to_vec()
        }
    } else {
        match states_of(&a.state) {
            v if v.is_empty() => CaseState::ALL.to_vec(),
            v => v,
        }
    };
    let mut q = Query {
        states,
        assignee: if a.mine { Some(actor(None)?.name) } else { a.assignee.clone() },
        ip: a.ip,
        sender: a.sender.clone(),
        text: a.search.clone(),
        overdue: a.overdue,
        due_within: a.due_within,
        attention: a.attention,
        since: a.since.map(|s| s.resolve(env.now, &env.tz)).transpose()?,
        ..Query::default()
    };
    let limit = (a.limit > 0).then_some(a.limit as usize);
    let offset = a.offset as usize;
    let mut cases: Vec<CaseSummary> = Vec::new();
    let mut more = false;
    let mut seen = 0usize;
    let desk = Desk::new(store);
    loop {
        // What is still wanted, and one more, to tell people there is a next page.
        let still = limit.map_or(500, |n| (offset + n + 1 - seen).min(500));
        q.limit = Some(still as u32);
        let page = desk.list(&q, env.now)?;
        for c in page.cases {
            seen += 1;
            if seen <= offset {
                continue;
            }
            if limit.is_some_and(|n| cases.len() >= n) {
                more = true;
                break;
            }
            cases.push(c);
        }
        match page.next {
            Some(n) if !more => q.after = Some(n),
            _ => break,
        }
    }
    if a.json {
        serde_json::to_writer_pretty(&mut *out, &cases)?;
        writeln!(out)?;
        return Ok(());
    }
    if a.csv {
        let mut w = csv::Writer::from_writer(&mut *out);
        for c in &cases {
            w.serialize(c)?;
        }
        w.flush()?;
        return Ok(());
    }
    if cases.is_empty() {
        writeln!(out, "no cases")?;
        return Ok(());
    }
    if a.wide {
        let header = ["REF", "!", "STATE", "IP", "SENDER", "OPENED", "DUE", "ASSIGNEE"];
        let rows: Vec<[String; 8]> = cases
            .iter()
            .map(|c| {
                [
                    c.case_ref.clone(),
                    attention_mark(c),
                    c.state.to_string(),
                    c.ip.clone().unwrap_or_else(|| "-".into()),
                    c.sender.clone(),
                    c.opened_at.parse::<Timestamp>().map(|t| local(t, &env.tz)).unwrap_or_else(|_| c.opened_at.clone()),
                    c.sla.clone(),
                    c.assignee.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        write_table(out, &header, &rows)?;
    } else {
        // 80 columns: no opening time (`show` has it), short state names, and the sender,
        // then the IP, shortened with an ellipsis when the row would not fit. `!`: a person
        // wrote since the last staff action.
        let header = ["REF", "!", "STATE", "IP", "SENDER", "DUE", "WHO"];
        let mut rows: Vec<[String; 7]> = cases
            .iter()
            .map(|c| {
                [
                    c.case_ref.clone(),
                    attention_mark(c),
                    match c.state {
                        "awaiting_info" => "waiting".into(),
                        s => s.to_string(),
                    },
                    c.ip.clone().unwrap_or_else(|| "-".into()),
                    one_line(&c.sender),
                    c.sla.clone(),
                    c.assignee.as_deref().map(one_line).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        fit_columns(&header, &mut rows, 80, &[(4, 12), (6, 8), (3, 15)]);
        write_table(out, &header, &rows)?;
    }
    if more {
        writeln!(
            out,
            "(more cases: next page with --offset {}, or raise --limit)",
            u64::from(a.offset) + u64::from(a.limit)
        )?;
    }
    Ok(())
}

/// `!` when a person wrote on the case since the last staff action.
fn attention_mark(c: &CaseSummary) -> String {
    if c.needs_attention { "!" } else { "" }.to_string()
}

/// Shorten columns until a table row fits `max` characters: each `(column, minimum)` in turn
/// gives up what it must, down to its minimum; cut cells end with `…`.
fn fit_columns<const N: usize>(header: &[&str; N], rows: &mut [[String; N]], max: usize, shrink: &[(usize, usize)]) {
    let width = |col: usize, rows: &[[String; N]]| {
        rows.iter().map(|r| r[col].chars().count()).chain([header[col].len()]).max().unwrap_or(0)
    };
    for &(col, min) in shrink {
        let total: usize = (0..N).map(|c| width(c, rows)).sum::<usize>() + 2 * (N - 1);
        if total <= max {
            return;
        }
        let cur = width(col, rows);
        let target = cur.saturating_sub(total - max).max(min);
        if target >= cur {
            continue;
        }
        for r in rows.iter_mut() {
            if r[col].chars().count() > target {
                let cut: String = r[col].chars().take(target.saturating_sub(1)).collect();
                r[col] = format!("{cut}…");
            }
        }
    }
}

fn write_table<const N: usize>(out: &mut dyn Write, header: &[&str; N], rows: &[[String; N]]) -> io::Result<()> {
    let mut width = header.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < N {
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', width[i] - cell.chars().count() + 2));
            } else {
                s.push_str(cell);
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, &mut header.iter().copied())?;
    for r in rows {
        line(out, &mut r.iter().map(String::as_str))?;
    }
    Ok(())
}

fn export(store: &Store, a: ExportArgs, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    let filter = CaseFilter {
        states: states_of(&a.state),
        since: a.since.map(|s| s.resolve(env.now, &env.tz)).transpose()?,
        limit: None,
        ..CaseFilter::default()
    };
    // Streamed: one row at a time from SQLite to the writer, nothing collected.
    let mut out = io::BufWriter::new(out);
    match a.format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            store.for_each_case(&filter, env.now, |c| -> Result<(), CasesError> {
                Ok(w.serialize(CaseOut::new(&c, env.now))?)
            })?;
            w.flush()?;
        }
        ExportFormat::Json => {
            let mut first = true;
            out.write_all(b"[")?;
            store.for_each_case(&filter, env.now, |c| -> Result<(), CasesError> {
                out.write_all(if first { b"\n" } else { b",\n" })?;
                first = false;
                serde_json::to_writer(&mut out, &CaseOut::new(&c, env.now))?;
                Ok(())
            })?;
            out.write_all(b"\n]\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

// -- show -----------------------------------------------------------------------------------

fn show(store: &mut Store, a: ShowArgs, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    let d = store.case_detail(a.case)?.ok_or(StoreError::NotFound(a.case))?;
    if a.json {
        let view: CaseView = Desk::new(store).case(a.case, env.now)?;
        serde_json::to_writer_pretty(&mut *out, &view)?;
        writeln!(out)?;
        return Ok(());
    }
    let c = &d.case;
    let tz = &env.tz;
    let opt = |t: Option<Timestamp>| t.map(|t| local_with_zone(t, tz)).unwrap_or_else(|| "-".into());
    let sla = SlaStatus::of(c, env.now);
    writeln!(out, "{}  {}  {}", c.case_ref, c.state, sla.describe())?;
    writeln!(out, "  IP:             {}", c.ip.as_deref().unwrap_or("-"))?;
    writeln!(out, "  Status code:    {}", c.status_code.as_deref().unwrap_or("-"))?;
    writeln!(out, "  NDR line:       {}", c.ndr_line.as_deref().unwrap_or("-"))?;
    writeln!(out, "  Sender:         {} (replies in {})", c.sender, c.language)?;
    writeln!(out, "  Assignee:       {}", c.assignee.as_deref().unwrap_or("-"))?;
    writeln!(out, "  Opened:         {}", local_with_zone(c.opened_at, tz))?;
    if c.sla_started_at.is_some_and(|s| s != c.opened_at) {
        writeln!(out, "  Clock started:  {}", opt(c.sla_started_at))?;
    }
    writeln!(out, "  Due:            {}", opt(c.due_at))?;
    if let Some(left) = c.sla_remaining.filter(|_| c.state == CaseState::AwaitingInfo) {
        let d = SignedDuration::from_secs(left.abs());
        let what = if left < 0 { format!("overdue by {}", short_duration(d)) } else { format!("{} left", short_duration(d)) };
        writeln!(out, "  Clock:          paused, {what}, until the sender answers the question")?;
    }
    if c.needs_attention {
        writeln!(out, "  Attention:      the sender wrote since the last staff action")?;
    }
    writeln!(out, "  First response: {}", opt(c.first_response_at))?;
    writeln!(out, "  Resolved:       {}", opt(c.resolved_at))?;
    if let Some(r) = &c.resolution {
        writeln!(out, "  Resolution:     {r}")?;
    }
    if let Some(l) = &c.listing {
        writeln!(
            out,
            "  Listed on:      {}: {}{}{}",
            one_line(&l.source),
            one_line(l.reason.as_deref().unwrap_or("(no reason given)")),
            l.since.map(|t| format!(", since {}", local_with_zone(t, tz))).unwrap_or_default(),
            l.checked_at.map(|t| format!(" (looked up {})", local_with_zone(t, tz))).unwrap_or_default(),
        )?;
    }
    // The last run of delist_command: a failure keeps the case open, and staff must see why.
    if let Some(e) = d.events.iter().rev().find(|e| e.text.as_deref().is_some_and(|t| t.contains("delist_command succeeded") || t.contains("delist_command FAILED"))) {
        writeln!(out, "  Delist command: {}", one_line(e.text.as_deref().unwrap_or("")))?;
    }

    if let Some(m) = c.opened_by.and_then(|id| d.messages.iter().find(|m| m.id == id)) {
        writeln!(out, "\nEvidence (message {}):", m.id)?;
        for line in evidence_lines(m.evidence.as_deref(), m.decision.as_deref()) {
            writeln!(out, "  {line}")?;
        }
    }

    writeln!(out, "\nHistory:")?;
    for e in &d.events {
        let mut refs = String::new();
        if let Some(m) = e.message {
            refs.push_str(&format!(" [message {m}]"));
        }
        if let Some(o) = e.outbox {
            refs.push_str(&format!(" [reply {o}]"));
        }
        writeln!(
            out,
            "  {}  {:<12} {:<10} {}{refs}",
            local(e.at, tz),
            e.kind,
            e.actor,
            one_line(e.text.as_deref().unwrap_or(""))
        )?;
    }

    writeln!(out, "\nMessages:")?;
    if d.messages.is_empty() {
        writeln!(out, "  none")?;
    }
    for m in &d.messages {
        writeln!(
            out,
            "  {}  {}  {}  {:?}  <{}>  {}{}",
            m.id,
            local(m.received_at, tz),
            m.sender.as_deref().unwrap_or("-"),
            one_line(m.subject.as_deref().unwrap_or("")),
            m.message_id.as_deref().unwrap_or("-"),
            m.outcome,
            m.error.as_deref().map(|e| format!(" ({})", one_line(e))).unwrap_or_default(),
        )?;
        if !m.has_raw {
            if let Some(t) = store.raw_purged_at(m.id)? {
                writeln!(out, "      raw message purged on {} (retention)", local_with_zone(t, tz))?;
            }
        }
    }

    writeln!(out, "\nReplies:")?;
    if d.replies.is_empty() {
        writeln!(out, "  none")?;
    }
    for r in &d.replies {
        let when = match r.sent_at {
            Some(t) => format!("sent {}", local(t, tz)),
            None => format!("{} {}", r.state, local(r.queued_at, tz)),
        };
        writeln!(
            out,
            "  {}  {when}  to {}  {:?}  attempts {}{}",
            r.id,
            r.recipient,
            one_line(&r.subject),
            r.attempts,
            r.last_error.as_deref().map(|e| format!("  last error: {}", one_line(e))).unwrap_or_default(),
        )?;
    }
    Ok(())
}

/// Text from the database on one line: a hostile subject cannot forge table rows.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A few readable lines from the evidence and decision JSON. Reads it loosely (by field
/// name), so evidence written by another version still shows what it can.
fn evidence_lines(evidence: Option<&str>, decision: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    let ev: Value = evidence.and_then(|e| serde_json::from_str(e).ok()).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().map(one_line);
    if let Some(code) = text(&ev["status_code"]) {
        lines.push(format!("status code: {code}"));
    }
    if let Some(ndr) = ev["ndr_lines"].as_array() {
        for l in ndr.iter().take(3) {
            if let Some(t) = text(&l["text"]) {
                let place = l["found_in"].as_str().unwrap_or("?");
                lines.push(format!("NDR line ({place}): {t}"));
            }
        }
    }
    if let Some(ips) = ev["ips"].as_array() {
        let shown: Vec<String> = ips
            .iter()
            .filter_map(|f| {
                let t = text(&f["text"])?;
                let src = f["source"].as_str().unwrap_or("?");
                Some(match f["problem"].as_str() {
                    Some(p) => format!("{t} ({src}; not usable: {p})"),
                    None => format!("{t} ({src})"),
                })
            })
            .collect();
        if !shown.is_empty() {
            lines.push(format!("IPs: {}", shown.join(", ")));
        }
    }
    if let Some(l) = text(&ev["language"]) {
        lines.push(format!("language: {l}"));
    }
    if let Some(signs) = ev["auto_signs"].as_array().filter(|s| !s.is_empty()) {
        let s: Vec<String> = signs.iter().map(|v| one_line(&v.to_string())).collect();
        lines.push(format!("automatic-message signs: {}", s.join(", ")));
    }
    if ev["truncated"].as_bool() == Some(true) {
        lines.push("message was truncated before extraction".into());
    }
    let dec: Value = decision.and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
    if let Some(action) = text(&dec["action"]) {
        let reason = text(&dec["reason"]).unwrap_or_default();
        lines.push(format!("decision: {action}: {reason}"));
    }
    if lines.is_empty() {
        lines.push("none recorded".into());
    }
    lines
}

// -- resolve --------------------------------------------------------------------------------

fn resolve(store: &mut Store, a: ResolveArgs, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    let by = actor(a.by)?;
    let resolution = match (a.reply, a.reject) {
        (Some(ResolutionReply::Delisted), true) => {
            return Err(CasesError::Usage("--reject with --reply delisted: choose one (--reply rejected to reject and tell the sender)".into()))
        }
        (Some(ResolutionReply::Rejected), _) | (None, true) => Resolution::Rejected,
        _ => Resolution::Delisted,
    };
    let how = ResolveRequest {
        resolution,
        note: Some(a.note),
        reply: a.reply.is_some(),
        note_for_sender: a.reply_note,
        replies: env.replies,
    };
    if resolution == Resolution::Delisted {
        if let Some(argv) = &env.delist_command {
            run_delist_command(store, a.case, argv, &by.name, env.now)?;
        }
    }
    let done = Desk::new(store).resolve(&by, a.case, how, env.now)?;
    match done.reply {
        Some(id) => writeln!(out, "{} {}; reply #{id} queued", a.case, done.state)?,
        None => writeln!(out, "{} {}; no reply sent", a.case, done.state)?,
    }
    Ok(())
}

/// Take the case's IP off the list with `delist_command` before resolving it as delisted.
/// Its exit status and first lines of output go in the history either way; a failure stops
/// the resolve, so the case stays open and the failure is what staff see.
fn run_delist_command(store: &mut Store, r: CaseRef, argv: &[String], by: &str, now: Timestamp) -> Result<(), CasesError> {
    let case = store.case(r)?.ok_or(StoreError::NotFound(r))?;
    if !case.state.is_active() {
        return Err(StoreError::WrongState { case: r, state: case.state, action: "resolve" }.into());
    }
    let Some(ip) = case.ip.as_deref() else { return Ok(()) };
    let run = crate::blocklist::command::run(argv, ip, &r.to_string(), crate::blocklist::command::DELIST_COMMAND_TIMEOUT);
    store.note(r, by, &run.summary(), now)?;
    if run.succeeded() {
        Ok(())
    } else {
        Err(CasesError::DelistCommand { case: r, summary: run.summary() })
    }
}

// -- stats ----------------------------------------------------------------------------------

fn stats(store: &Store, a: StatsArgs, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    let since = a.since.unwrap_or(Since::Ago(SignedDuration::from_hours(30 * 24))).resolve(env.now, &env.tz)?;
    let s = store.stats(since, env.now, a.due_soon)?;
    if a.json {
        let spread = |sp: &Spread| json!({"count": sp.count, "median_secs": sp.median_secs, "p95_secs": sp.p95_secs});
        let v = json!({
            "now": s.now.to_string(), "since": s.since.to_string(),
            "open": s.open, "awaiting_info": s.awaiting_info, "overdue": s.overdue,
            "due_soon": s.due_soon, "due_soon_secs": s.due_soon_secs,
            "window_cases": s.window_cases, "sla_decided": s.sla_decided, "sla_met": s.sla_met,
            "sla_met_pct": s.sla_met_pct,
            "first_response": spread(&s.first_response), "resolution": spread(&s.resolution),
            "not_listed": s.not_listed, "delisted_by_blocklist": s.delisted_by_blocklist,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let secs = |v: Option<i64>| v.map(|s| short_duration(SignedDuration::from_secs(s))).unwrap_or_else(|| "-".into());
    writeln!(out, "Now ({})", local_with_zone(env.now, &env.tz))?;
    writeln!(out, "  open:            {}", s.open)?;
    writeln!(out, "  overdue:         {}", s.overdue)?;
    writeln!(out, "  due in next {}:  {}", short_duration(a.due_soon), s.due_soon)?;
    writeln!(out, "  awaiting info:   {}", s.awaiting_info)?;
    writeln!(out, "Since {} ({} cases with an SLA clock)", local(s.since, &env.tz), s.window_cases)?;
    match s.sla_met_pct {
        Some(p) => writeln!(out, "  SLA met:         {p:.1}% ({} of {} decided)", s.sla_met, s.sla_decided)?,
        None => writeln!(out, "  SLA met:         - (none decided yet)")?,
    }
    writeln!(
        out,
        "  first response:  median {}, p95 {} ({} cases)",
        secs(s.first_response.median_secs),
        secs(s.first_response.p95_secs),
        s.first_response.count
    )?;
    writeln!(
        out,
        "  resolution:      median {}, p95 {} ({} cases)",
        secs(s.resolution.median_secs),
        secs(s.resolution.p95_secs),
        s.resolution.count
    )?;
    if s.not_listed > 0 || s.delisted_by_blocklist > 0 {
        writeln!(out, "  not listed:      {} (answered at once, no staff work)", s.not_listed)?;
        writeln!(out, "  left the list:   {} (resolved by the blocklist link)", s.delisted_by_blocklist)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("6h"), Ok(SignedDuration::from_hours(6)));
        assert_eq!(parse_duration("1d12h"), Ok(SignedDuration::from_hours(36)));
        assert_eq!(parse_duration("90m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("2w"), Ok(SignedDuration::from_hours(14 * 24)));
        for bad in ["", "6", "h", "6x", "1h30", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_takes_durations_dates_and_times() {
        let now: Timestamp = "2025-03-10T12:00:00Z".parse().unwrap();
        let tz = TimeZone::fixed(jiff::tz::offset(1));
        let r = |s: &str| s.parse::<Since>().unwrap().resolve(now, &tz).unwrap().to_string();
        assert_eq!(r("7d"), "2025-03-03T12:00:00Z");
        assert_eq!(r("2025-03-01"), "2025-02-28T23:00:00Z", "local midnight");
        assert_eq!(r("2025-03-01T08:00:00Z"), "2025-03-01T08:00:00Z");
        assert!("yesterday".parse::<Since>().is_err());
    }

    #[test]
    fn one_line_removes_control_characters() {
        assert_eq!(one_line("a\r\nb\tc"), "a  b c");
    }

    #[test]
    fn evidence_lines_read_what_is_there() {
        let ev = r#"{"status_code":"5.7.511","ips":[{"text":"203.0.113.7","source":"rejection","problem":null},
            {"text":"10.0.0.1","source":"stated","problem":"private"}],"language":"fr","auto_signs":[]}"#;
        let lines = evidence_lines(Some(ev), Some(r#"{"action":"acknowledge","reason":"5.7.511 request"}"#));
        assert_eq!(
            lines,
            [
                "status code: 5.7.511",
                "IPs: 203.0.113.7 (rejection), 10.0.0.1 (stated; not usable: private)",
                "language: fr",
                "decision: acknowledge: 5.7.511 request",
            ]
        );
        assert_eq!(evidence_lines(Some("not json"), None), ["none recorded"]);
    }
}
