//! Escalation: staff hear of a case before it misses its SLA, and again when it has, and
//! get a daily digest, by mail, through the outbox.
//!
//! * Two stages per case: *due soon* once `due_at - warn_before` has passed, *overdue* once
//!   `due_at` has. Each is written in the case's history in the transaction that queues its
//!   mail ([`crate::cases::Tx::record_stage`]), so it goes out once per case whatever
//!   crashes; a reopened case has a new SLA clock and gets its stages again.
//! * The digest, once per local day from `digest_at`: overdue cases, cases due today, cases
//!   that need attention, cases awaiting information for too long. An empty digest is not
//!   sent (the day is still marked done).
//! * During `quiet_hours` nothing is queued; what is due then goes out when they end.
//! * Mails go to the `notify` addresses, and a case's warnings also to the e-mail of the staff
//!   account it is assigned to (staff, never a sender), through the outbox
//!   with its retries, with a Message-ID derived from what they are about (the same stage
//!   of the same clock always has the same one), and never count in a sender's reply limit.
//!
//! [`Escalator::pass`] is one pass at a given instant: the daemon runs it every minute on
//! its clock ([`run`]), `delistd escalate --once` runs it once, the tests on theirs.

pub mod mail;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp, Zoned};
use tokio::sync::{watch, Notify};

use crate::cases::monitor::{Stage, StaffMail};
use crate::cases::sla::short_duration;
use crate::cases::{CaseRow, Store, StoreError};
use crate::config::{Config, Escalation};
use crate::reply::render::one_line;
use mail::{case_context, digest_context, CaseLine, MailError, StaffTemplates};

/// The instant the daemon's checks run at: `Timestamp::now` in the daemon, a controlled
/// clock in tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// How often the daemon looks.
pub const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EscalationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("time: {0}")]
    Time(#[from] jiff::Error),
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Passed {
    /// Inside the quiet hours: nothing was looked at.
    pub quiet: bool,
    /// (case, stage) warned in this pass.
    pub warned: Vec<(String, &'static str)>,
    /// The local day whose digest was queued, with its number of cases.
    pub digest: Option<(String, usize)>,
    /// The local day whose digest was due but empty (recorded, not sent).
    pub empty_digest: Option<String>,
    /// Mails queued.
    pub mails: usize,
}

/// The escalation settings and templates, made once from the config.
pub struct Escalator {
    cfg: Escalation,
    from: String,
    domain: String,
    sla_hours: u32,
    templates: StaffTemplates,
    /// The web desk's address for staff (`[web] public_url`): case lines link to it.
    desk_url: Option<String>,
}

impl Escalator {
    /// `None` when the config has no `[escalation]`.
    pub fn new(cfg: &Config) -> Result<Option<Escalator>, EscalationError> {
        let Some(e) = &cfg.escalation else { return Ok(None) };
        let dir = cfg.replies.templates_dir.as_ref().map(|d| d.join("staff"));
        Ok(Some(Escalator {
            templates: StaffTemplates::load(e.language, dir.as_deref())?,
            cfg: e.clone(),
            from: cfg.replies.from.clone(),
            domain: cfg.replies.message_id_domain.clone(),
            sla_hours: (cfg.store.sla.as_secs() / 3600) as u32,
            desk_url: cfg.web.as_ref().and_then(|w| w.public_url.as_deref()).map(|u| u.trim_end_matches('/').to_string()),
        }))
    }

    fn warn_before(&self) -> SignedDuration {
        SignedDuration::try_from(self.cfg.warn_before).unwrap_or(SignedDuration::from_hours(6))
    }

    /// Inside the quiet hours at `now` (local time in `[start, end)`, across midnight when
    /// `end <= start`).
    pub fn is_quiet(&self, now: Timestamp) -> bool {
        let Some((start, end)) = self.cfg.quiet_hours else { return false };
        let t = now.to_zoned(self.cfg.timezone.clone()).time();
        if start < end {
            start <= t && t < end
        } else {
            t >= start || t < end
        }
    }

    fn local(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.cfg.timezone.clone())
    }

    fn line(&self, c: &CaseRow, now: Timestamp) -> CaseLine {
        let (left, over) = match c.due_at {
            Some(due) if due > now => (Some(short_duration(due.duration_since(now))), None),
            Some(due) => (None, Some(short_duration(now.duration_since(due)))),
            None => (None, None),
        };
        CaseLine {
            case_ref: c.case_ref.to_string(),
            ip: c.ip.as_deref().map_or_else(|| "-".to_string(), |ip| one_line(ip, 64)),
            sender: one_line(&c.sender, 120),
            assignee: c.assignee.as_deref().map(|a| one_line(a, 80)),
            due_at: c.due_at.map(|d| self.local(d).strftime("%Y-%m-%d %H:%M %Z").to_string()),
            left,
            over,
            waiting: short_duration(now.duration_since(c.opened_at)),
            link: self.desk_url.as_ref().map(|u| format!("{u}/cases/{}", c.case_ref)),
        }
    }

    /// One mail per `notify` address, and one to `assignee_email` (the staff account the
    /// case is assigned to) unless it is one of them; `id` is the Message-ID's stable left part.
    fn mails(
        &self,
        kind: &'static str,
        id: &str,
        subject: &str,
        body: &str,
        assignee_email: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<StaffMail>, MailError> {
        let domain = if self.domain.is_empty() { "delistd.invalid" } else { &self.domain };
        let mut to: Vec<(String, String)> =
            self.cfg.notify.iter().enumerate().map(|(n, a)| (a.clone(), format!("{id}.{n}@{domain}"))).collect();
        if let Some(a) = assignee_email.filter(|a| !self.cfg.notify.iter().any(|n| n.eq_ignore_ascii_case(a))) {
            to.push((a.to_string(), format!("{id}.assignee@{domain}")));
        }
        let mut out = Vec::new();
        for (recipient, message_id) in to {
            let raw = mail::compose(&self.from, &recipient, &message_id, now, self.templates.lang(), subject, body)?;
            out.push(StaffMail { recipient, message_id, subject: subject.to_string(), raw, kind });
        }
        Ok(out)
    }

    /// One pass at `now`: warn for the stages crossed, queue the digest if its time has
    /// come. Each case's stage is one transaction of its own.
    pub fn pass(&self, store: &mut Store, now: Timestamp) -> Result<Passed, EscalationError> {
        let mut passed = Passed::default();
        if self.is_quiet(now) {
            passed.quiet = true;
            return Ok(passed);
        }
        for (case, stage) in store.stages_due(now, self.warn_before())? {
            let kind = stage.name();
            let line = self.line(&case, now);
            let (subject, body) = self.templates.render(kind, &case_context(&line, self.sla_hours))?;
            let start = case.sla_started_at.map_or(0, |t| t.as_second());
            // The assignee's own address, when their staff account has one (issue 11's accounts).
            let assignee_email = match case.assignee.as_deref() {
                Some(name) => store.staff_email(name)?,
                None => None,
            };
            let mails =
                self.mails(kind, &format!("{kind}.{}.{start}", case.case_ref), &subject, &body, assignee_email.as_deref(), now)?;
            let tx = store.transaction()?;
            match tx.record_stage(case.case_ref, stage, &mails, now) {
                Ok(()) => tx.commit()?,
                // Another pass (`escalate --once` beside the daemon) got there first.
                Err(StoreError::Duplicate(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            crate::metrics::escalation_queued(match stage {
                Stage::DueSoon => "due_soon",
                Stage::Overdue => "overdue",
            });
            for m in &mails {
                crate::metrics::reply_queued(m.kind);
            }
            let to: Vec<&str> = mails.iter().map(|m| m.recipient.as_str()).collect();
            tracing::info!(case = %case.case_ref, stage = kind, to = %to.join(","), "staff warned");
            passed.mails += mails.len();
            passed.warned.push((case.case_ref.to_string(), kind));
        }
        self.digest(store, now, &mut passed)?;
        Ok(passed)
    }

    fn digest(&self, store: &mut Store, now: Timestamp, passed: &mut Passed) -> Result<(), EscalationError> {
        let local = self.local(now);
        if local.time() < self.cfg.digest_at {
            return Ok(());
        }
        let day = local.date().to_string();
        if store.digest_done(&day)? {
            return Ok(());
        }
        let end_of_day = local.date().tomorrow()?.to_zoned(self.cfg.timezone.clone())?.timestamp();
        let awaiting_after = SignedDuration::try_from(self.cfg.awaiting_info_after).unwrap_or(SignedDuration::from_hours(72));
        let cases = store.digest_cases(now, end_of_day, awaiting_after)?;
        let lines = |v: &[CaseRow]| v.iter().map(|c| self.line(c, now)).collect::<Vec<_>>();
        let mails = if cases.is_empty() {
            Vec::new()
        } else {
            let ctx = digest_context(
                &day,
                &lines(&cases.overdue),
                &lines(&cases.due_today),
                &lines(&cases.needs_attention),
                &lines(&cases.awaiting_info),
                &short_duration(awaiting_after),
            );
            let (subject, body) = self.templates.render("escalation_digest", &ctx)?;
            self.mails("escalation_digest", &format!("escalation_digest.{day}"), &subject, &body, None, now)?
        };
        let tx = store.transaction()?;
        match tx.record_digest(&day, cases.len(), &mails, now) {
            Ok(()) => tx.commit()?,
            Err(StoreError::Duplicate(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if mails.is_empty() {
            tracing::info!(day = %day, "digest: nothing to report; not sent");
            passed.empty_digest = Some(day);
        } else {
            crate::metrics::escalation_queued("digest");
            for m in &mails {
                crate::metrics::reply_queued(m.kind);
            }
            tracing::info!(day = %day, cases = cases.len(), to = %self.cfg.notify.join(","), "digest queued");
            passed.mails += mails.len();
            passed.digest = Some((day, cases.len()));
        }
        Ok(())
    }
}

/// The daemon's escalation loop: a pass at start and every [`INTERVAL`] on `clock`, until
/// `stop`. The store is the daemon's shared connection, held for the pass only (on the
/// blocking pool); the outbox is woken when mail was queued. A failed pass is logged and
/// tried again at the next interval.
pub async fn run(
    escalator: Escalator,
    store: Arc<Mutex<Store>>,
    wake_outbox: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    clock: Clock,
    beat: Beat,
) {
    let escalator = Arc::new(escalator);
    loop {
        beat();
        if *stop.borrow() {
            return;
        }
        let (e, s, now) = (escalator.clone(), store.clone(), clock());
        let done = tokio::task::spawn_blocking(move || {
            let mut guard = s.lock().unwrap_or_else(|p| p.into_inner());
            e.pass(&mut guard, now)
        })
        .await;
        match done {
            Ok(Ok(p)) => {
                tracing::debug!(mails = p.mails, quiet = p.quiet, "escalation pass done");
                if p.mails > 0 {
                    wake_outbox.notify_one();
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "escalation pass failed; trying again in a minute"),
            Err(e) => tracing::error!(error = %e, "escalation pass panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The loop's liveness signal (the daemon's heartbeat for it): called at each pass and wait.
pub type Beat = Box<dyn Fn() + Send + Sync>;

/// [`run`] on the wall clock, when the config has `[escalation]`: the daemon supervises it.
pub fn task(
    cfg: &Config,
    store: Arc<Mutex<Store>>,
    wake_outbox: Arc<Notify>,
    stop: watch::Receiver<bool>,
    beat: Beat,
) -> Result<Option<impl std::future::Future<Output = ()> + Send + 'static>, EscalationError> {
    let Some(e) = Escalator::new(cfg)? else { return Ok(None) };
    let clock: Clock = Arc::new(Timestamp::now);
    Ok(Some(run(e, store, wake_outbox, stop, clock, beat)))
}
