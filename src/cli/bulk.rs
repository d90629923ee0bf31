//! `delistd cases bulk assign|resolve|reject CASE...`: one action on many cases, the board's
//! bulk form from the command line. Both call [`Desk::bulk`], so the rules and the outcome of
//! each case are the same: each case is its own transaction, and a refused case (already
//! closed, no IP for "delisted") does not stop the others.
//!
//! Cases come as arguments, or `-` reads them from standard input (any whitespace between
//! them), so a filtered listing can feed it:
//! `delistd cases list --sender shop.example --json | jq -r '.[].ref' | delistd cases bulk assign --to ann -`.

use std::io::{self, Read, Write};

use super::cases::{actor, CasesError, Env};
use crate::cases::{Resolution, Store};
use crate::desk::{Bulk, BulkOutcome, Desk};
use crate::types::CaseRef;

#[derive(Debug, clap::Subcommand)]
pub enum BulkCmd {
    /// Give the cases to someone (--to NAME), or to nobody (--clear).
    Assign {
        /// Who takes them.
        #[arg(long, value_name = "NAME", required_unless_present = "clear")]
        to: Option<String>,
        /// Assign them to nobody.
        #[arg(long, conflicts_with = "to")]
        clear: bool,
        #[command(flatten)]
        common: BulkCommon,
    },
    /// Close the cases as delisted, without a reply (replies are written case by case).
    Resolve {
        /// Internal note for each case's history (never sent).
        #[arg(long)]
        note: String,
        #[command(flatten)]
        common: BulkCommon,
    },
    /// Close the cases as rejected, without a reply.
    Reject {
        /// Internal note for each case's history (never sent).
        #[arg(long)]
        note: String,
        #[command(flatten)]
        common: BulkCommon,
    },
}

#[derive(Debug, clap::Args)]
pub struct BulkCommon {
    /// Case references (at most 500); `-` reads them from standard input.
    #[arg(required = true, value_name = "CASE")]
    pub cases: Vec<String>,
    /// Each case's outcome as JSON: [{"case": "DL-000001", "error": null}, ...].
    #[arg(long)]
    pub json: bool,
    /// Who does it; only root may name someone (default: the Unix user, or $SUDO_USER under sudo).
    #[arg(long, env = "DELISTD_STAFF")]
    pub by: Option<String>,
}

/// Run it. Every case done: `Ok`; some refused: [`CasesError::SomeRefused`] (exit 4) after
/// every outcome is printed, so a script sees which.
pub fn run(cmd: BulkCmd, store: &mut Store, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    let (action, common) = match cmd {
        BulkCmd::Assign { to, clear, common } => (Bulk::Assign(if clear { None } else { to }), common),
        BulkCmd::Resolve { note, common } => (Bulk::Resolve { resolution: Resolution::Delisted, note: Some(note) }, common),
        BulkCmd::Reject { note, common } => (Bulk::Resolve { resolution: Resolution::Rejected, note: Some(note) }, common),
    };
    let refs = case_refs(&common.cases, &mut io::stdin().lock())?;
    let who = actor(common.by)?;
    let outcomes = Desk::new(store).bulk(&who, &refs, &action, env.now)?;
    if common.json {
        serde_json::to_writer_pretty(&mut *out, &outcomes)?;
        writeln!(out)?;
    } else {
        let done = describe(&action);
        for o in &outcomes {
            match &o.error {
                None => writeln!(out, "{}: {done}", o.case)?,
                Some(e) => writeln!(out, "{}: refused: {e}", o.case)?,
            }
        }
    }
    refused(&outcomes)
}

fn describe(action: &Bulk) -> String {
    match action {
        Bulk::Assign(Some(who)) => format!("assigned to {who}"),
        Bulk::Assign(None) => "assigned to nobody".into(),
        Bulk::Resolve { resolution: Resolution::Delisted, .. } => "resolved (delisted)".into(),
        Bulk::Resolve { resolution: Resolution::Rejected, .. } => "rejected".into(),
    }
}

fn refused(outcomes: &[BulkOutcome]) -> Result<(), CasesError> {
    let n = outcomes.iter().filter(|o| o.error.is_some()).count();
    match n {
        0 => Ok(()),
        n => Err(CasesError::SomeRefused { refused: n, of: outcomes.len() }),
    }
}

/// The case references: the arguments, with `-` standing for those on `stdin`. A reference
/// that is not one is a usage error before anything is done; a case named twice counts once.
fn case_refs(args: &[String], stdin: &mut dyn Read) -> Result<Vec<CaseRef>, CasesError> {
    let mut words: Vec<String> = Vec::new();
    for a in args {
        if a == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| CasesError::Usage(format!("reading case references from standard input: {e}")))?;
            words.extend(text.split_whitespace().map(str::to_string));
        } else {
            words.push(a.clone());
        }
    }
    let mut refs: Vec<CaseRef> = Vec::with_capacity(words.len());
    for w in &words {
        let r: CaseRef = w
            .parse()
            .map_err(|_| CasesError::Usage(format!("{w:?} is not a case reference (expected e.g. DL-000042); nothing was done")))?;
        if !refs.contains(&r) {
            refs.push(r);
        }
    }
    if refs.is_empty() {
        return Err(CasesError::Usage("no case references (standard input was empty); nothing was done".into()));
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::cases::EXIT_REFUSED;

    fn refs(args: &[&str], stdin: &str) -> Result<Vec<String>, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        case_refs(&args, &mut stdin.as_bytes()).map(|v| v.iter().map(|r| r.to_string()).collect()).map_err(|e| e.to_string())
    }

    #[test]
    fn references_come_from_arguments_and_standard_input_once_each() {
        assert_eq!(refs(&["DL-000002", "-"], "dl-1\n  DL-000002\t[DL-000003]\n").unwrap(), ["DL-000002", "DL-000001", "DL-000003"]);
        assert!(refs(&["-"], " \n").unwrap_err().contains("standard input was empty"));
        let bad = refs(&["DL-000001", "42"], "").unwrap_err();
        assert!(bad.contains("\"42\" is not a case reference") && bad.contains("nothing was done"), "{bad}");
    }

    #[test]
    fn some_refused_is_an_error_that_counts_them() {
        let ok = BulkOutcome { case: "DL-000001".into(), error: None };
        let no = BulkOutcome { case: "DL-000002".into(), error: Some("closed".into()) };
        assert!(refused(std::slice::from_ref(&ok)).is_ok());
        let e = refused(&[ok, no]).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_REFUSED);
        assert_eq!(e.to_string(), "1 of 2 cases refused (see above)");
    }
}
