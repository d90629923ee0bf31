//! The commands of the `delistd` binary. `main.rs` parses flags and calls these; each
//! returns an [`Exit`] whose code means something to scripts and to systemd.

pub mod cases;
pub mod inspect;

use std::process::ExitCode;

/// Exit codes, from sysexits(3) where one fits, so that shell scripts and systemd's
/// `RestartPreventExitStatus=` can tell a bad config from a passing outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, nothing wrong.
    Ok = 0,
    /// Something failed that a retry will not fix by itself (see the message).
    Failure = 1,
    /// What was asked for does not exist (a case reference, a message id).
    NotFound = 3,
    /// Wrong flags or arguments (clap also uses 2 for these).
    Usage = 64,
    /// Input could not be read (a file given to `inspect`).
    NoInput = 66,
    /// A server could not be reached; worth trying again later.
    TempFail = 75,
    /// The configuration file is invalid.
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}
