//! Handlers: the login form, the board, the case page, staff actions, the JSON API.
//! Pages are rendered from the templates beside this file with HTML auto-escaping, so every
//! value from a message (subject, body, sender) is text in the page, never markup.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use minijinja::{context, Environment};

use super::auth::{self, Staff};
use super::{desk_error, error_response, Shared};
use crate::cases::{CaseState, Resolution};
use crate::desk::{accounts, Desk, DeskError, Query, ResolveRequest};
use crate::types::CaseRef;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Names end in .html: minijinja escapes every value for HTML.
    for (name, src) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("board.html", include_str!("templates/board.html")),
        ("case.html", include_str!("templates/case.html")),
        ("error.html", include_str!("templates/error.html")),
        ("bulk.html", include_str!("templates/bulk.html")),
        ("message_preview.html", include_str!("templates/message_preview.html")),
    ] {
        if let Err(e) = env.add_template(name, src) {
            tracing::error!(template = name, error = %e, "web template does not parse");
        }
    }
    env
});

pub fn render(name: &str, ctx: minijinja::Value) -> Result<String, minijinja::Error> {
    TEMPLATES.get_template(name)?.render(ctx)
}

fn html(body: Result<String, minijinja::Error>) -> Response {
    match body {
        Ok(b) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], b).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error (see the log)", false)
        }
    }
}

fn json_body<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec_pretty(v) {
        Ok(mut b) => {
            b.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], b).into_response()
        }
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), true),
    }
}

/// Form or query fields, decoded.
fn fields(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw).into_owned().collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")],
        include_str!("static/desk.css"),
    )
        .into_response()
}

// -- login / logout ----------------------------------------------------------------------------

pub async fn login_page() -> Response {
    html(render("login.html", context! { error => None::<String> }))
}

pub async fn login(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Behind a trusted reverse proxy, throttle the client, not the proxy everyone shares.
    let client = auth::client_addr(peer.ip(), &headers, &st.settings.trusted_proxies);
    let f = fields(&body);
    let name = field(&f, "username").unwrap_or("").trim().to_string();
    let password = field(&f, "password").unwrap_or("").to_string();
    let now = Instant::now();
    if st.throttle.blocked(&name, Some(client), now) {
        tracing::warn!(user = %name, client = %client, "login throttled");
        let page = render("login.html", context! { error => "Too many failed attempts: wait 15 minutes." });
        let mut r = html(page);
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("900"));
        return r;
    }
    let n = name.clone();
    let verified = st
        .with_store(move |s| {
            let role = accounts::verify(s, &n, &password)?;
            match role {
                Some(_) => auth::open_session(s, &n, Timestamp::now()).map(Some),
                None => Ok(None),
            }
        })
        .await;
    match verified {
        Ok(Some(token)) => {
            st.throttle.succeeded(&name);
            tracing::info!(user = %name, client = %client, "signed in");
            let secure = if st.settings.secure_cookies { "; Secure" } else { "" };
            let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", auth::COOKIE, auth::SESSION_HOURS * 3600);
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(None) => {
            st.throttle.failed(&name, Some(client), now);
            tracing::warn!(user = %name, client = %client, "failed login");
            let mut r = html(render("login.html", context! { error => "Wrong name or password." }));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
        Err(e) => desk_error(e, false),
    }
}

pub async fn logout(State(st): State<Shared>, staff: Staff, headers: HeaderMap, body: Bytes) -> Response {
    let f = fields(&body);
    if !auth::same_token(field(&f, "csrf").unwrap_or(""), &staff.csrf) {
        return error_response(StatusCode::FORBIDDEN, "missing or wrong CSRF token: reload the page and try again", false);
    }
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(&format!("{}=", auth::COOKIE)).map(str::to_string));
    if let Some(t) = token {
        if let Err(e) = st.with_store(move |s| auth::close_session(s, &t)).await {
            return desk_error(e, false);
        }
    }
    let mut r = Redirect::to("/login").into_response();
    let clear = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", auth::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// -- the board ---------------------------------------------------------------------------------

/// The board's filters from a query string: `state` (repeatable or comma-separated; `all`),
/// `assignee` (`mine` for oneself), `ip` (address or CIDR), `sender` (substring), `q`
/// (full-text search of subjects and message texts), `after`, `limit`.
fn query_of(raw: Option<&str>, me: &str) -> Result<(Query, Vec<(String, String)>), DeskError> {
    let f = fields(raw.unwrap_or("").as_bytes());
    let mut q = Query::default();
    for (k, v) in &f {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "state" => {
                for s in v.split(',') {
                    match s {
                        "all" => q.states.extend(CaseState::ALL.iter().copied()),
                        "active" => q.states.extend([CaseState::Open, CaseState::AwaitingInfo]),
                        "closed" => q.states.extend([CaseState::Resolved, CaseState::Rejected]),
                        s => q.states.push(s.parse().map_err(DeskError::Invalid)?),
                    }
                }
            }
            "assignee" => q.assignee = Some(if v == "mine" { me.to_string() } else { v.to_string() }),
            "ip" => q.ip = Some(v.parse().map_err(DeskError::Invalid)?),
            "sender" => q.sender = Some(v.to_string()),
            "q" => q.text = Some(v.to_string()),
            "after" => q.after = Some(v.to_string()),
            "limit" => q.limit = Some(v.parse().map_err(|_| DeskError::Invalid(format!("limit {v:?} is not a number")))?),
            "attention" => q.attention = !matches!(v, "0" | "no" | "false"),
            _ => {}
        }
    }
    q.states.dedup();
    Ok((q, f))
}

pub async fn board(State(st): State<Shared>, staff: Staff, RawQuery(raw): RawQuery) -> Response {
    let (q, f) = match query_of(raw.as_deref(), &staff.actor.name) {
        Ok(x) => x,
        Err(e) => return desk_error(e, false),
    };
    let now = Timestamp::now();
    let res = st.with_store(move |s| {
        let desk = Desk::new(s);
        Ok((desk.counts(now)?, desk.list(&q, now)?))
    });
    let (counts, page) = match res.await {
        Ok(x) => x,
        Err(e) => return desk_error(e, false),
    };
    // The next page's link keeps the filters.
    let next = page.next.as_ref().map(|n| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in f.iter().filter(|(k, _)| k != "after") {
            s.append_pair(k, v);
        }
        s.append_pair("after", n);
        format!("/?{}", s.finish())
    });
    let rows: Vec<minijinja::Value> = page
        .cases
        .iter()
        .map(|c| context! { c => minijinja::Value::from_serialize(c), urgency => c.urgency() })
        .collect();
    html(render(
        "board.html",
        context! {
            me => staff.actor.name, role => staff.actor.role.as_str(), csrf => staff.csrf, can_logout => staff.session,
            counts => minijinja::Value::from_serialize(&counts), rows => rows, next => next,
            can_act => staff.actor.role == crate::desk::Role::Agent,
            f_state => field(&f, "state"), f_assignee => field(&f, "assignee"), f_ip => field(&f, "ip"),
            f_sender => field(&f, "sender"), f_q => field(&f, "q"),
            f_attention => field(&f, "attention").is_some_and(|v| !matches!(v.trim(), "" | "0" | "no" | "false")),
        },
    ))
}

// -- the case page -----------------------------------------------------------------------------

fn case_ref(s: &str, json: bool) -> Result<CaseRef, Box<Response>> {
    s.parse().map_err(|_| Box::new(error_response(StatusCode::NOT_FOUND, &format!("no case {s:?}"), json)))
}

pub async fn case_page(State(st): State<Shared>, staff: Staff, Path(case): Path<String>) -> Response {
    let r = match case_ref(&case, false) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let now = Timestamp::now();
    let view = match st.with_store(move |s| Desk::new(s).case(r, now)).await {
        Ok(v) => v,
        Err(e) => return desk_error(e, false),
    };
    let urgency = view.case.urgency();
    html(render(
        "case.html",
        context! {
            me => staff.actor.name, role => staff.actor.role.as_str(), csrf => staff.csrf, can_logout => staff.session,
            v => minijinja::Value::from_serialize(&view), urgency => urgency,
            can_act => staff.actor.role == crate::desk::Role::Agent,
            active => view.case.state == "open" || view.case.state == "awaiting_info",
            replies_on => st.settings.replies.is_some(),
        },
    ))
}

/// One staff action from the case page's forms: field `action` is `note`, `assign`,
/// `resolve`, `reject`, `reopen`, `reply` or `ask`; `csrf` must be the session's token.
/// `reply` and `ask` (field `text`) queue only with the `send` button; otherwise (the
/// `preview` button) they answer with the exact message and a form to confirm it.
pub async fn act(State(st): State<Shared>, staff: Staff, Path(case): Path<String>, body: Bytes) -> Response {
    let f = fields(&body);
    if !auth::same_token(field(&f, "csrf").unwrap_or(""), &staff.csrf) {
        return error_response(StatusCode::FORBIDDEN, "missing or wrong CSRF token: reload the page and try again", false);
    }
    let r = match case_ref(&case, false) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let action = field(&f, "action").unwrap_or("").to_string();
    if action == "reply" || action == "ask" {
        return message(st, staff, r, &action, &f).await;
    }
    let text = field(&f, "text").unwrap_or("").trim().to_string();
    let reply = field(&f, "reply") == Some("yes");
    let for_sender = field(&f, "note_for_sender").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let who = field(&f, "assignee").map(str::to_string);
    let actor = staff.actor.clone();
    let replies_cfg = st.settings.replies.clone();
    let now = Timestamp::now();
    let res = st
        .with_store(move |s| {
            let mut desk = Desk::new(s);
            match action.as_str() {
                "note" => desk.note(&actor, r, &text, now),
                "assign" => desk.assign(&actor, r, who.as_deref(), now),
                "reopen" => desk.reopen(&actor, r, Some(text.as_str()).filter(|t| !t.is_empty()), now).map(|_| ()),
                "resolve" | "reject" => {
                    let how = ResolveRequest {
                        resolution: if action == "reject" { Resolution::Rejected } else { Resolution::Delisted },
                        note: Some(text.clone()).filter(|t| !t.is_empty()),
                        reply,
                        note_for_sender: for_sender,
                        replies: replies_cfg.as_deref(),
                    };
                    desk.resolve(&actor, r, how, now).map(|_| ())
                }
                other => Err(DeskError::Invalid(format!("unknown action {other:?}"))),
            }
        })
        .await;
    match res {
        Ok(()) => Redirect::to(&format!("/cases/{r}")).into_response(),
        Err(e) => desk_error(e, false),
    }
}

/// A staff reply or question from the case page: previewed (the exact message, with a form
/// to send it or change it), or, with `send`, queued.
async fn message(st: Shared, staff: Staff, r: CaseRef, action: &str, f: &[(String, String)]) -> Response {
    let Some(builder) = st.settings.replies.clone() else {
        return desk_error(DeskError::RepliesOff, false);
    };
    let text = field(f, "text").unwrap_or("").to_string();
    let send = field(f, "send").is_some();
    let ask = action == "ask";
    let actor = staff.actor.clone();
    let now = Timestamp::now();
    let body = text.clone();
    let res = st
        .with_store(move |s| {
            let mut desk = Desk::new(s);
            match (ask, send) {
                (false, false) => desk.preview_reply(&actor, r, &body, &builder, now),
                (true, false) => desk.preview_ask(&actor, r, &body, &builder, now),
                (false, true) => desk.reply(&actor, r, &body, &builder, now),
                (true, true) => desk.ask(&actor, r, &body, &builder, now),
            }
        })
        .await;
    match res {
        Ok(_) if send => Redirect::to(&format!("/cases/{r}")).into_response(),
        Ok(p) => html(render(
            "message_preview.html",
            context! {
                me => staff.actor.name, role => staff.actor.role.as_str(), csrf => staff.csrf, can_logout => staff.session,
                p => minijinja::Value::from_serialize(&p), text => text, action => action,
            },
        )),
        Err(e) => desk_error(e, false),
    }
}

/// The board's bulk form: fields `case` (repeated), `action` (`assign`, `resolve`, `reject`),
/// `assignee`, `text` (note for the history), `csrf`. Answers with the outcome per case.
pub async fn bulk(State(st): State<Shared>, staff: Staff, body: Bytes) -> Response {
    let f = fields(&body);
    if !auth::same_token(field(&f, "csrf").unwrap_or(""), &staff.csrf) {
        return error_response(StatusCode::FORBIDDEN, "missing or wrong CSRF token: reload the page and try again", false);
    }
    let mut refs = Vec::new();
    for (k, v) in &f {
        if k == "case" {
            match v.parse::<CaseRef>() {
                Ok(r) => refs.push(r),
                Err(_) => return error_response(StatusCode::BAD_REQUEST, &format!("no case {v:?}"), false),
            }
        }
    }
    if refs.is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "no case selected", false);
    }
    let note = field(&f, "text").map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
    let action = match field(&f, "action") {
        Some("assign") => crate::desk::Bulk::Assign(field(&f, "assignee").map(str::to_string)),
        Some("resolve") => crate::desk::Bulk::Resolve { resolution: Resolution::Delisted, note },
        Some("reject") => crate::desk::Bulk::Resolve { resolution: Resolution::Rejected, note },
        other => return error_response(StatusCode::BAD_REQUEST, &format!("unknown action {other:?}"), false),
    };
    let actor = staff.actor.clone();
    let now = Timestamp::now();
    match st.with_store(move |s| Desk::new(s).bulk(&actor, &refs, &action, now)).await {
        Ok(outcomes) => html(render(
            "bulk.html",
            context! {
                me => staff.actor.name, role => staff.actor.role.as_str(), csrf => staff.csrf, can_logout => staff.session,
                outcomes => minijinja::Value::from_serialize(&outcomes),
            },
        )),
        Err(e) => desk_error(e, false),
    }
}

pub async fn raw_message(State(st): State<Shared>, _staff: Staff, Path((case, id)): Path<(String, i64)>) -> Response {
    let r = match case_ref(&case, false) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match st.with_store(move |s| Desk::new(s).raw_message(r, id)).await {
        Ok(Some(raw)) => (
            [
                // Never shown inline: a browser must not render a hostile message as HTML.
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{r}-message-{id}.eml\"")),
            ],
            raw,
        )
            .into_response(),
        Ok(None) => error_response(StatusCode::NOT_FOUND, "no such message in this case (or its bytes are not kept)", false),
        Err(e) => desk_error(e, false),
    }
}

// -- JSON API: the same views as the CLI's --json -----------------------------------------------

/// `GET /api/cases`: the cases of the board's filters, as `cases list --json` prints them;
/// the next page's URL, if any, in a `Link: <...>; rel="next"` header.
pub async fn api_cases(State(st): State<Shared>, staff: Staff, RawQuery(raw): RawQuery) -> Response {
    let (q, f) = match query_of(raw.as_deref(), &staff.actor.name) {
        Ok(x) => x,
        Err(e) => return desk_error(e, true),
    };
    let now = Timestamp::now();
    let page = match st.with_store(move |s| Desk::new(s).list(&q, now)).await {
        Ok(p) => p,
        Err(e) => return desk_error(e, true),
    };
    let mut r = json_body(&page.cases);
    if let Some(n) = &page.next {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in f.iter().filter(|(k, _)| k != "after") {
            s.append_pair(k, v);
        }
        s.append_pair("after", n);
        if let Ok(v) = HeaderValue::from_str(&format!("</api/cases?{}>; rel=\"next\"", s.finish())) {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    r
}

/// `GET /api/cases/{ref}`: as `cases show --json` prints it.
pub async fn api_case(State(st): State<Shared>, _staff: Staff, Path(case): Path<String>) -> Response {
    let r = match case_ref(&case, true) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let now = Timestamp::now();
    match st.with_store(move |s| Desk::new(s).case(r, now)).await {
        Ok(v) => json_body(&v),
        Err(e) => desk_error(e, true),
    }
}
