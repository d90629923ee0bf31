//! The daemon's blocklist task, while cases are open:
//! * every `recheck_interval` (jittered by ±10 %, so that several desks do not query the
//!   list in step; rate-limited to [`LOOKUPS_PER_SECOND`]), each open case's IP is looked up
//!   again; one that is on no source any more is resolved as delisted by `blocklist`, with
//!   the `delisted` reply a staff resolve would queue (`auto_resolve = false` turns this off);
//! * cases marked for `auto_delist_first` get their `delist_command` run; success resolves
//!   them the same way, a failure stays open for staff with the output in the history.
//!
//! Self-contained: it takes the shared store, the blocklist, the reply settings, a stop
//! signal and the outbox's wake-up, and holds the store's lock only for short queries,
//! never across a lookup or a command.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{watch, Notify};

use super::command::{self, DELIST_COMMAND_TIMEOUT};
use super::{Blocklist, Listing};
use crate::cases::{CaseRow, ListingRecord, NewReply, Resolution, Resolve, StoreError, BLOCKLIST_ACTOR};
use crate::config::BlocklistConfig;
use crate::cases::{lock, SharedStore};
use crate::decide::ReplyKind;
use crate::reply::Builder;
use crate::types::CaseRef;

/// Lookups per second during a re-check pass, at most.
pub const LOOKUPS_PER_SECOND: u32 = 20;
/// How often the task looks for first-request delist commands to run.
const AUTO_DELIST_POLL: Duration = Duration::from_secs(1);
/// Open cases read per query during a pass.
const PAGE: u32 = 200;

/// The reply a staff resolve with `--reply delisted` queues, built the same way.
pub fn delisted_reply(
    store: &crate::cases::Store,
    r: CaseRef,
    builder: &Builder,
    now: Timestamp,
) -> Result<Option<NewReply>, String> {
    let Some(d) = store.case_detail(r).map_err(|e| e.to_string())? else { return Ok(None) };
    crate::desk::resolution_reply(&d, ReplyKind::Delisted, None, builder, BLOCKLIST_ACTOR, now)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A ± `fraction` jitter of `d`, from the process's random hash keys (no RNG dependency
/// for a number that only has to differ between desks and passes).
fn jittered(d: Duration, fraction: f64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let unit = (h.finish() % 10_000) as f64 / 10_000.0; // [0, 1)
    d.mul_f64(1.0 + fraction * (2.0 * unit - 1.0))
}

/// Resolve one case as delisted by the blocklist link, with the `delisted` reply. A case
/// that is no longer open (staff were quicker) is left alone.
fn resolve_delisted(
    store: &SharedStore,
    r: CaseRef,
    note: String,
    settings: &Builder,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let mut s = lock(store);
    let reply = match delisted_reply(&s, r, settings, now) {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(case = %r, error = %e, "delisted reply not composed; resolving without it");
            None
        }
    };
    let res = Resolve { actor: BLOCKLIST_ACTOR.into(), note: Some(note), resolution: Resolution::Delisted, reply };
    match s.resolve(r, &res, now) {
        Ok(_) => Ok(true),
        Err(StoreError::WrongState { .. } | StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One pass over the open cases. Returns how many were resolved.
pub async fn recheck_open_cases(
    store: &SharedStore,
    blocklist: &Blocklist,
    settings: &Builder,
    stop: &watch::Receiver<bool>,
    wake_outbox: &Notify,
) -> Result<u32, StoreError> {
    let mut after = 0i64;
    let mut resolved = 0u32;
    let pause = Duration::from_secs(1) / LOOKUPS_PER_SECOND;
    loop {
        let page: Vec<CaseRow> = lock(store).open_cases_to_recheck(after, PAGE)?;
        if page.is_empty() {
            return Ok(resolved);
        }
        for case in page {
            after = case.case_ref.0;
            if *stop.borrow() {
                return Ok(resolved);
            }
            let Some(ip) = case.ip_addr() else { continue };
            let listing = blocklist.check_counted(ip).await;
            let now = Timestamp::now();
            match listing {
                Listing::NotListed => {
                    let note = format!(
                        "{ip} is no longer listed on any source ({}); resolved by itself",
                        blocklist.describe()
                    );
                    if resolve_delisted(store, case.case_ref, note, settings, now)? {
                        resolved += 1;
                        wake_outbox.notify_one();
                        tracing::info!(case = %case.case_ref, ip = %ip, "IP left the blocklist; case resolved as delisted");
                    }
                }
                Listing::Listed { source, since, reason } => {
                    lock(store).refresh_listing(
                        case.case_ref,
                        ListingRecord { source: &source, reason: reason.as_deref(), since },
                        now,
                    )?;
                }
                Listing::Unknown { why } => {
                    tracing::debug!(case = %case.case_ref, ip = %ip, why = %why, "re-check gave no answer; trying next time");
                }
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// Run `delist_command` for the cases marked by intake (auto_delist_first).
pub async fn run_auto_delists(
    store: &SharedStore,
    argv: &[String],
    settings: &Builder,
    wake_outbox: &Notify,
) -> Result<(), StoreError> {
    let pending = lock(store).auto_delist_pending()?;
    for case in pending {
        let ip = case.ip.clone().unwrap_or_default();
        let (argv, r) = (argv.to_vec(), case.case_ref.to_string());
        let ip_arg = ip.clone();
        let run = tokio::task::spawn_blocking(move || command::run(&argv, &ip_arg, &r, DELIST_COMMAND_TIMEOUT))
            .await
            .map_err(|e| StoreError::Invalid(format!("delist_command task: {e}")))?;
        let now = Timestamp::now();
        lock(store).auto_delist_done(case.case_ref, &format!("auto_delist_first: {}", run.summary()), now)?;
        if run.succeeded() {
            let note = format!("delist_command took {ip} off the list (auto_delist_first: first request for this IP)");
            if resolve_delisted(store, case.case_ref, note, settings, now)? {
                wake_outbox.notify_one();
            }
            tracing::info!(case = %case.case_ref, ip = %ip, "first request honoured: delist_command succeeded, case resolved");
        } else {
            tracing::warn!(case = %case.case_ref, ip = %ip, result = %run.summary(), "delist_command failed; the case stays open for staff");
        }
    }
    Ok(())
}

/// The task. Ends when `stop` turns true.
pub async fn run(
    store: SharedStore,
    blocklist: Arc<Blocklist>,
    cfg: BlocklistConfig,
    settings: Arc<Builder>,
    wake_outbox: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // The first pass comes soon after start (cases may have left the list while we were
    // down), the later ones every interval.
    let mut next_pass = tokio::time::Instant::now() + jittered(cfg.recheck_interval / 10, 0.5);
    let mut tick = tokio::time::interval(AUTO_DELIST_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let (true, Some(argv)) = (cfg.auto_delist_first, &cfg.delist_command) {
            if let Err(e) = run_auto_delists(&store, argv, &settings, &wake_outbox).await {
                tracing::error!(error = %e, "auto_delist_first failed; trying again");
            }
        }
        if cfg.auto_resolve && tokio::time::Instant::now() >= next_pass {
            match recheck_open_cases(&store, &blocklist, &settings, &stop, &wake_outbox).await {
                Ok(n) => tracing::debug!(resolved = n, "blocklist re-check of open cases done"),
                Err(e) => tracing::error!(error = %e, "blocklist re-check failed; trying again next interval"),
            }
            next_pass = tokio::time::Instant::now() + jittered(cfg.recheck_interval, 0.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_fraction() {
        let d = Duration::from_secs(600);
        for _ in 0..200 {
            let j = jittered(d, 0.1);
            assert!(j >= Duration::from_secs(540) && j <= Duration::from_secs(660), "{j:?}");
        }
    }
}
