//! The commands of the `delistd` binary. `main.rs` parses flags and calls these; each
//! returns an [`Exit`] whose code means something to scripts and to systemd.

pub mod bulk;
pub mod cases;
pub mod check;
pub mod escalate;
pub mod inspect;
pub mod maint;
pub mod outbox;
pub mod reply;
pub mod staff;

use std::process::ExitCode;

/// Exit codes, from sysexits(3) where one fits, so that shell scripts and systemd's
/// `RestartPreventExitStatus=` can tell a bad config from a passing outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A code chosen by a sub-command (the staff commands document their own).
    Code(u8),
    /// Done, nothing wrong.
    Ok,
    /// Something failed that a retry will not fix by itself (see the message).
    Failure,
    /// What was asked for does not exist (a case reference, a message id).
    NotFound,
    /// Wrong flags or arguments (clap also uses 2 for these).
    Usage,
    /// Input could not be read (a file given to `inspect`).
    NoInput,
    /// A server could not be reached; worth trying again later.
    TempFail,
    /// The server refused our credentials.
    NoPerm,
    /// The configuration file is invalid.
    Config,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Code(c) => c,
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::NotFound => 3,
            Exit::Usage => 64,
            Exit::NoInput => 66,
            Exit::TempFail => 75,
            Exit::NoPerm => 77,
            Exit::Config => 78,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}
