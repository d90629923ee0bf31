//! The case service for staff: every view and every action the CLI and the web desk offer,
//! with the rules in one place. Front ends parse their input, call this, and print or render
//! what it returns; they hold no rules of their own.
//!
//! * [`views`]  the typed, serialisable views (the JSON of both front ends).
//! * [`text`]   a message's decoded text for reading (HTML as text, never rendered).
//! * [`accounts`] staff accounts: argon2id password hashes, roles.
//! * [`tokens`] per-account API tokens (read the JSON API only).
//!
//! The acting staff member is always passed in explicitly as an [`Actor`]; a viewer is
//! refused every action here, whichever front end asked.

pub mod accounts;
pub mod threads;
pub mod tokens;
/// The decoding lives below the store (which indexes it for search); the desk reads it here.
pub use crate::extract::readable as text;
pub mod views;

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use rusqlite::types::Value;

use crate::cases::{CaseDetail, CaseRow, CaseState, NewReply, Resolution, Resolve, Store, StoreError};
use crate::decide::ReplyKind;
use crate::reply::{BuildError, Builder};
use crate::types::CaseRef;
pub use threads::MessagePreview;
pub use views::{CasePage, CaseSummary, CaseView, Counts};

/// What a staff member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and acts.
    Agent,
    /// Reads only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "agent" => Ok(Role::Agent),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!("unknown role {s:?} (agent or viewer)")),
        }
    }
}

/// Who acts: recorded in the history under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

impl Actor {
    pub fn agent(name: impl Into<String>) -> Actor {
        Actor { name: name.into(), role: Role::Agent }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rules do not allow it (the message says which rule).
    #[error("{0}")]
    Refused(String),
    /// A viewer tried to act.
    #[error("{0} is a viewer: viewers cannot act on cases")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("replies are not configured; resolve without a reply, or give the config (--config) that names the reply settings")]
    RepliesOff,
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// An IP address or a CIDR block (`203.0.113.0/24`), for the IP filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpMatch {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for IpMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<IpMatch, String> {
        let bad = || format!("{s:?}: expected an IP address or a CIDR block like 203.0.113.0/24");
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpMatch { addr, prefix })
    }
}

impl IpMatch {
    pub fn is_single(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// The board's filters. All must hold.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Any of these states; empty: open and awaiting info.
    pub states: Vec<CaseState>,
    /// Assigned to this name.
    pub assignee: Option<String>,
    pub ip: Option<IpMatch>,
    /// Substring of the sender address or domain, without regard to case.
    pub sender: Option<String>,
    /// Full-text search over the subjects and texts of the case's messages: every word must
    /// match (`"a phrase"`, `word*` for a prefix; see [`crate::cases::search::match_expression`]).
    pub text: Option<String>,
    /// Only open cases past their due time (the CLI's `--overdue`).
    pub overdue: bool,
    /// Only open cases due within this long from now; with `overdue`, those too.
    pub due_within: Option<SignedDuration>,
    /// Only cases opened at or after this moment.
    pub since: Option<Timestamp>,
    /// Keyset cursor from the previous page's `next`.
    pub after: Option<String>,
    /// Page size (1..=500; default 50).
    pub limit: Option<u32>,
    /// Only cases a person wrote on since the last staff action.
    pub attention: bool,
}

/// Matching messages from which a text search walks the cases instead of collecting the
/// matches (see `Desk::dense_search`); measured with `scripts/bench-cases.sh`.
const DENSE_HITS: i64 = 2000;

/// Whether case ?2 (opened by message ?3) has a message matching the FTS5 expression ?1: a
/// lookup of one rowid in the index per message.
const CASE_MATCHES: &str = "SELECT EXISTS (SELECT 1 FROM message_search WHERE message_search MATCH ?1 AND rowid = ?3) \
    OR EXISTS (SELECT 1 FROM events e WHERE e.case_id = ?2 AND e.message_ref IS NOT NULL AND e.message_ref IS NOT ?3 \
      AND EXISTS (SELECT 1 FROM message_search WHERE message_search MATCH ?1 AND rowid = e.message_ref))";

/// Which search filters of a query match too much to be collected first.
#[derive(Debug, Clone, Copy, Default)]
struct Dense {
    text: bool,
    sender: bool,
}

/// The FTS5 expression of the query's text search, if it has one.
fn search_expression(q: &Query) -> Result<Option<String>, DeskError> {
    match q.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => crate::cases::search::match_expression(text)
            .map(Some)
            .map_err(|e| DeskError::Invalid(format!("search {text:?}: {e}"))),
        None => Ok(None),
    }
}

/// Where a page ends: the sort key of its last row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// Urgency order: (due_at, id); `None` due times come last.
    Due(Option<i64>, i64),
    /// Newest first: id.
    Id(i64),
}

impl Cursor {
    fn parse(s: &str) -> Result<Cursor, DeskError> {
        let bad = || DeskError::Invalid(format!("bad page cursor {s:?}"));
        let num = |t: &str| t.parse::<i64>().map_err(|_| bad());
        if let Some(rest) = s.strip_prefix("d") {
            let (due, id) = rest.split_once('.').ok_or_else(bad)?;
            let due = if due == "n" { None } else { Some(num(due)?) };
            Ok(Cursor::Due(due, num(id)?))
        } else if let Some(id) = s.strip_prefix("i") {
            Ok(Cursor::Id(num(id)?))
        } else {
            Err(bad())
        }
    }

    fn text(self) -> String {
        match self {
            Cursor::Due(Some(d), id) => format!("d{d}.{id}"),
            Cursor::Due(None, id) => format!("dn.{id}"),
            Cursor::Id(id) => format!("i{id}"),
        }
    }
}

/// The case service over one open store.
pub struct Desk<'s> {
    pub store: &'s mut Store,
}

impl<'s> Desk<'s> {
    pub fn new(store: &'s mut Store) -> Desk<'s> {
        Desk { store }
    }

    /// Cases matching `q`: active ones by urgency (most overdue first), otherwise newest
    /// first; keyset-paginated so page 1000 costs what page 1 does.
    pub fn list(&self, q: &Query, now: Timestamp) -> Result<CasePage, DeskError> {
        let dense = self.dense_search(q)?;
        let (sql, p, by_due, limit) = Self::list_sql(q, now, dense)?;
        let conn = self.store.connection();
        let mut st = conn.prepare_cached(&sql).map_err(StoreError::from)?;
        let mut rows = st.query(rusqlite::params_from_iter(p)).map_err(StoreError::from)?;
        // A common word: the cases come in the listing's order, and each is checked here,
        // as it comes, until the page is full (in SQL the check would run on every row
        // before the urgency sort).
        let expr = if dense.text { search_expression(q)? } else { None };
        let mut check = match &expr {
            Some(_) => Some(conn.prepare_cached(CASE_MATCHES).map_err(StoreError::from)?),
            None => None,
        };
        let mut cases: Vec<CaseRow> = Vec::with_capacity(limit + 1);
        while let Some(r) = rows.next().map_err(StoreError::from)? {
            let c = CaseRow::from_row(r).map_err(StoreError::from)?;
            if let (Some(check), Some(expr)) = (check.as_mut(), &expr) {
                let hit: bool = check
                    .query_row(rusqlite::params![expr, c.case_ref.0, c.opened_by.map(|m| m.0)], |r| r.get(0))
                    .map_err(StoreError::from)?;
                if !hit {
                    continue;
                }
            }
            cases.push(c);
            if cases.len() > limit {
                break;
            }
        }
        let next = if cases.len() > limit {
            cases.truncate(limit);
            cases.last().map(|c| {
                if by_due {
                    Cursor::Due(c.due_at.map(|t| t.as_second()), c.case_ref.0).text()
                } else {
                    Cursor::Id(c.case_ref.0).text()
                }
            })
        } else {
            None
        };
        Ok(CasePage { cases: cases.iter().map(|c| CaseSummary::new(c, now)).collect(), next })
    }

    /// SQLite's plan for [`Desk::list`] of `q` (EXPLAIN QUERY PLAN), one step a line: for
    /// the benchmark and for tests that a filter uses its index.
    pub fn explain_list(&self, q: &Query, now: Timestamp) -> Result<Vec<String>, DeskError> {
        let dense = self.dense_search(q)?;
        let (sql, p, _, _) = Self::list_sql(q, now, dense)?;
        let conn = self.store.connection();
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).map_err(StoreError::from)?;
        let rows = st.query_map(rusqlite::params_from_iter(p), |r| r.get::<_, String>(3)).map_err(StoreError::from)?;
        let mut plan: Vec<String> = rows.collect::<Result<_, _>>().map_err(StoreError::from)?;
        if dense.text {
            plan.push("THEN EACH CASE IN ORDER CHECKED: message_search MATCH, rowid = its messages".into());
        }
        Ok(plan)
    }

    /// Whether the text search of `q` matches so many messages that walking the cases in
    /// the listing's order and asking the index about each one's messages finds a page
    /// sooner than collecting every match (a common word: "delist", "blocked"); the same for
    /// the sender part ("example", ".com").
    fn dense_search(&self, q: &Query) -> Result<Dense, DeskError> {
        let many = |table: &str, expr: Option<String>| -> Result<bool, DeskError> {
            let Some(expr) = expr else { return Ok(false) };
            let sql = format!("SELECT count(*) FROM (SELECT rowid FROM {table} WHERE {table} MATCH ?1 LIMIT ?2)");
            let n: i64 = self
                .store
                .connection()
                .prepare_cached(&sql)
                .and_then(|mut st| st.query_row(rusqlite::params![expr, DENSE_HITS], |r| r.get(0)))
                .map_err(StoreError::from)?;
            Ok(n >= DENSE_HITS)
        };
        let sender = q.sender.as_deref().map(str::trim).and_then(crate::cases::search::substring_expression);
        Ok(Dense { text: many("message_search", search_expression(q)?)?, sender: many("case_senders", sender)? })
    }

    /// The query of [`Desk::list`]: its SQL, parameters, whether it is in urgency order, and
    /// the page size. `dense`: see [`Desk::dense_search`].
    fn list_sql(q: &Query, now: Timestamp, dense: Dense) -> Result<(String, Vec<Value>, bool, usize), DeskError> {
        let states: Vec<CaseState> =
            if q.states.is_empty() { vec![CaseState::Open, CaseState::AwaitingInfo] } else { q.states.clone() };
        let by_due = states.iter().all(|s| s.is_active());
        let limit = q.limit.unwrap_or(50).clamp(1, 500) as usize;
        let mut cond: Vec<String> = Vec::new();
        let mut p: Vec<Value> = Vec::new();
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        // Which index leads, without planner statistics: a small CIDR block (an IPv4 /16 or
        // longer, an IPv6 /48 or longer) is a short range of the IP key index, read first
        // (the unary `+` keeps SQLite off the state index); a wider block is filtered
        // while the state index walks in urgency order.
        // Newest first (closed states: most of the table), the rowid order (or the assignee
        // index, whose entries are in rowid order for one name) is walked and stopped after
        // a page, rather than every closed case collected from the state index and sorted.
        // Active cases are few: the state index leads, and the assignee is a filter.
        let narrow_block = q.ip.is_some_and(|m| !m.is_single() && m.prefix >= if m.addr.is_ipv4() { 16 } else { 48 });
        let state_col = if narrow_block || !by_due { "+state" } else { "state" };
        cond.push(format!("{state_col} IN ({})", list.join(", ")));
        if let Some(a) = &q.assignee {
            p.push(Value::Text(a.clone()));
            let col = if by_due { "+assignee" } else { "assignee" };
            cond.push(format!("{col} = ?{}", p.len()));
        }
        match q.ip {
            Some(ip) if ip.is_single() => {
                p.push(Value::Text(ip.addr.to_string()));
                cond.push(format!("ip = ?{}", p.len()));
            }
            // A block is one range of the sortable key: the index reads only the cases in it.
            Some(ip) => {
                let (lo, hi) = crate::cases::search::ip_key_range(ip.addr, ip.prefix);
                p.push(Value::Blob(lo));
                p.push(Value::Blob(hi));
                let col = if narrow_block { "ip_key" } else { "+ip_key" };
                cond.push(format!("{col} BETWEEN ?{} AND ?{}", p.len() - 1, p.len()));
            }
            None => {}
        }
        if q.overdue || q.due_within.is_some() {
            let t = now.as_second();
            let upper = q.due_within.and_then(|d| now.checked_add(d).ok()).map_or(t, |u| u.as_second());
            cond.push("state = 'open'".into());
            if !q.overdue {
                p.push(Value::Integer(t));
                cond.push(format!("due_at >= ?{}", p.len()));
            }
            p.push(Value::Integer(upper));
            cond.push(format!("due_at < ?{}", p.len()));
        }
        if let Some(since) = q.since {
            p.push(Value::Integer(since.as_second()));
            cond.push(format!("opened_at >= ?{}", p.len()));
        }
        if q.attention {
            cond.push("needs_attention = 1".into());
        }
        // Many matches (dense): `list` checks each case as the listing yields it. Few:
        // collect the cases of the matching messages (the one that opened a case, and every
        // one its history names), then list those.
        if let Some(expr) = search_expression(q)? {
            if !dense.text {
                p.push(Value::Text(expr));
                let n = p.len();
                cond.push(format!(
                    "id IN (WITH hit AS MATERIALIZED (SELECT rowid FROM message_search WHERE message_search MATCH ?{n}) \
                     SELECT case_id FROM events WHERE message_ref IN (SELECT rowid FROM hit) \
                     UNION SELECT id FROM cases WHERE opened_by IN (SELECT rowid FROM hit))"
                ));
            }
        }
        if let Some(s) = q.sender.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            let esc = s.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            p.push(Value::Text(format!("%{esc}%")));
            cond.push(format!("lower(sender) LIKE ?{} ESCAPE '\\'", p.len()));
            // The trigram index finds the senders with that part, cases_by_sender their
            // cases; unless the part is in so many senders that the listing's own order
            // finds a page sooner.
            if let (Some(expr), false) = (crate::cases::search::substring_expression(s), dense.sender) {
                p.push(Value::Text(expr));
                cond.push(format!(
                    "sender IN (SELECT sender FROM cases WHERE id IN \
                     (SELECT rowid FROM case_senders WHERE case_senders MATCH ?{}))",
                    p.len()
                ));
            }
        }
        let after = q.after.as_deref().map(Cursor::parse).transpose()?;
        match (after, by_due) {
            (Some(Cursor::Due(Some(d), id)), true) => {
                p.push(Value::Integer(d));
                let n = p.len();
                p.push(Value::Integer(id));
                cond.push(format!("(due_at IS NULL OR due_at > ?{n} OR (due_at = ?{n} AND id > ?{}))", p.len()));
            }
            (Some(Cursor::Due(None, id)), true) => {
                p.push(Value::Integer(id));
                cond.push(format!("(due_at IS NULL AND id > ?{})", p.len()));
            }
            (Some(Cursor::Id(id)), false) => {
                p.push(Value::Integer(id));
                cond.push(format!("id < ?{}", p.len()));
            }
            (None, _) => {}
            _ => return Err(DeskError::Invalid("the page cursor belongs to another listing".into())),
        }
        let order = if by_due { "due_at IS NULL, due_at, id" } else { "id DESC" };
        let sql = format!(
            "SELECT {} FROM cases WHERE {} ORDER BY {order}{}",
            crate::cases::model::CaseRow::COLUMNS,
            cond.join(" AND "),
            // One more than the page: whether there is a next one. (Checked case by case,
            // the rows are read until the page is full.)
            if dense.text { String::new() } else { format!(" LIMIT {}", limit + 1) }
        );
        Ok((sql, p, by_due, limit))
    }

    /// The board's counts.
    pub fn counts(&self, now: Timestamp) -> Result<Counts, DeskError> {
        let day = now.as_second() - now.as_second().rem_euclid(86_400);
        let conn = self.store.connection();
        let one = |sql: &str, p: &[i64]| -> Result<u64, DeskError> {
            let n: i64 = conn
                .query_row(sql, rusqlite::params_from_iter(p.iter()), |r| r.get(0))
                .map_err(StoreError::from)?;
            Ok(n.max(0) as u64)
        };
        let t = now.as_second();
        Ok(Counts {
            overdue: one("SELECT count(*) FROM cases WHERE state = 'open' AND due_at < ?1", &[t])?,
            due_soon: one(
                "SELECT count(*) FROM cases WHERE state = 'open' AND due_at >= ?1 AND due_at < ?2",
                &[t, t + 6 * 3600],
            )?,
            open: one("SELECT count(*) FROM cases WHERE state = 'open'", &[])?,
            needs_attention: one("SELECT count(*) FROM cases WHERE needs_attention = 1", &[])?,
            awaiting_info: one("SELECT count(*) FROM cases WHERE state = 'awaiting_info'", &[])?,
            resolved_today: one(
                // `+`: today's few from the resolved_at index, not every closed case from the state index.
                "SELECT count(*) FROM cases WHERE +state IN ('resolved', 'rejected') AND resolved_at >= ?1",
                &[day],
            )?,
        })
    }

    /// A case with its thread decoded for reading.
    pub fn case(&self, r: CaseRef, now: Timestamp) -> Result<CaseView, DeskError> {
        let d = self.detail(r)?;
        let texts = d
            .messages
            .iter()
            .map(|m| Ok(self.store.message_raw(m.id)?.map(|raw| text::decode(&raw))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(CaseView::new(&d, texts, now))
    }

    /// The raw bytes of a message of case `r` (for download); `None` if the message is
    /// not part of that case or its bytes are not kept.
    pub fn raw_message(&self, r: CaseRef, message: i64) -> Result<Option<Vec<u8>>, DeskError> {
        let d = self.detail(r)?;
        match d.messages.iter().find(|m| m.id.0 == message) {
            Some(m) => Ok(self.store.message_raw(m.id)?),
            None => Ok(None),
        }
    }

    pub fn detail(&self, r: CaseRef) -> Result<CaseDetail, DeskError> {
        Ok(self.store.case_detail(r)?.ok_or(StoreError::NotFound(r))?)
    }

    /// Close a case as delisted or rejected, with the resolution's reply when asked for.
    ///
    /// Rules: only an agent acts; only an active case is resolved; "delisted" needs a
    /// banned IP (there is nothing to have delisted otherwise); the reply's kind follows
    /// the resolution (a "delisted" reply on a rejected case would tell the sender a lie).
    pub fn resolve(&mut self, actor: &Actor, r: CaseRef, how: ResolveRequest<'_>, now: Timestamp) -> Result<Resolved, DeskError> {
        may_act(actor)?;
        let d = self.detail(r)?;
        if !d.case.state.is_active() {
            return Err(StoreError::WrongState { case: r, state: d.case.state, action: "resolve" }.into());
        }
        if how.resolution == Resolution::Delisted && d.case.ip.is_none() {
            return Err(DeskError::Refused(format!(
                "{r} has no banned IP: it cannot be resolved as delisted; reject it, or ask the sender for the IP"
            )));
        }
        let reply = match (how.reply, how.replies) {
            (false, _) => None,
            (true, None) => return Err(DeskError::RepliesOff),
            (true, Some(replies)) => {
                let kind = match how.resolution {
                    Resolution::Delisted => ReplyKind::Delisted,
                    Resolution::Rejected => ReplyKind::Rejected,
                };
                Some(resolution_reply(&d, kind, how.note_for_sender, replies, &actor.name, now)?)
            }
        };
        let res = Resolve { actor: actor.name.clone(), note: how.note, resolution: how.resolution, reply };
        let outbox = self.store.resolve(r, &res, now)?;
        Ok(Resolved { case: r, state: self.state_of(r)?, reply: outbox.map(|o| o.0) })
    }

    pub fn reopen(&mut self, actor: &Actor, r: CaseRef, note: Option<&str>, now: Timestamp) -> Result<CaseRow, DeskError> {
        may_act(actor)?;
        self.store.reopen(r, &actor.name, note, now)?;
        Ok(self.store.case(r)?.ok_or(StoreError::NotFound(r))?)
    }

    pub fn note(&mut self, actor: &Actor, r: CaseRef, text: &str, now: Timestamp) -> Result<(), DeskError> {
        may_act(actor)?;
        if text.trim().is_empty() {
            return Err(DeskError::Invalid("the note is empty".into()));
        }
        Ok(self.store.note(r, &actor.name, text, now)?)
    }

    pub fn assign(&mut self, actor: &Actor, r: CaseRef, who: Option<&str>, now: Timestamp) -> Result<(), DeskError> {
        may_act(actor)?;
        let who = who.map(str::trim).filter(|w| !w.is_empty());
        Ok(self.store.assign(r, &actor.name, who, now)?)
    }

    /// One action on many cases (the board's bulk assign and resolve). Each case is its own
    /// transaction: one refused case (e.g. already closed, or no IP for "delisted") does
    /// not stop the others; the outcome of each is returned.
    pub fn bulk(&mut self, actor: &Actor, refs: &[CaseRef], action: &Bulk, now: Timestamp) -> Result<Vec<BulkOutcome>, DeskError> {
        may_act(actor)?;
        if refs.len() > 500 {
            return Err(DeskError::Invalid("at most 500 cases at once".into()));
        }
        let mut out = Vec::with_capacity(refs.len());
        for &r in refs {
            let res = match action {
                Bulk::Assign(who) => self.assign(actor, r, who.as_deref(), now),
                Bulk::Resolve { resolution, note } => {
                    let how = ResolveRequest {
                        resolution: *resolution,
                        note: note.clone(),
                        reply: false,
                        note_for_sender: None,
                        replies: None,
                    };
                    self.resolve(actor, r, how, now).map(|_| ())
                }
            };
            out.push(BulkOutcome { case: r.to_string(), error: res.err().map(|e| e.to_string()) });
        }
        Ok(out)
    }

    pub fn stats(&self, since: Timestamp, now: Timestamp, due_soon: SignedDuration) -> Result<crate::cases::Stats, DeskError> {
        Ok(self.store.stats(since, now, due_soon)?)
    }

    fn state_of(&self, r: CaseRef) -> Result<CaseState, DeskError> {
        Ok(self.store.case(r)?.ok_or(StoreError::NotFound(r))?.state)
    }
}

/// A bulk action.
#[derive(Debug, Clone)]
pub enum Bulk {
    Assign(Option<String>),
    /// Resolve without a reply (a reply is written per case).
    Resolve { resolution: Resolution, note: Option<String> },
}

/// What became of one case of a bulk action.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct BulkOutcome {
    pub case: String,
    /// Why it was refused; `None`: done.
    pub error: Option<String>,
}

/// How to resolve a case.
pub struct ResolveRequest<'a> {
    pub resolution: Resolution,
    /// Internal note for the history (never sent).
    pub note: Option<String>,
    /// Queue the resolution's reply to the sender.
    pub reply: bool,
    /// Text for the sender, put into the reply.
    pub note_for_sender: Option<String>,
    /// The reply builder; `None`: replies are not configured.
    pub replies: Option<&'a Builder>,
}

/// What a resolution did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Resolved {
    #[serde(serialize_with = "display")]
    pub case: CaseRef,
    pub state: CaseState,
    /// The queued reply's outbox id.
    pub reply: Option<i64>,
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(crate) fn may_act(actor: &Actor) -> Result<(), DeskError> {
    match actor.role {
        Role::Agent => Ok(()),
        Role::Viewer => Err(DeskError::Forbidden(actor.name.clone())),
    }
}

/// The reply of a staff resolution, in the case's language, answering the case's latest
/// message; also used by the blocklist task when a case resolves by itself.
pub fn resolution_reply(
    d: &CaseDetail,
    kind: ReplyKind,
    note_for_sender: Option<String>,
    builder: &Builder,
    actor: &str,
    now: Timestamp,
) -> Result<NewReply, DeskError> {
    let (built, answered) = builder.for_case(d, kind, note_for_sender, now)?;
    Ok(built.into_new_reply(Some(d.case.case_ref), answered, actor))
}

#[cfg(test)]
mod tests;
