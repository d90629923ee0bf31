//! The optional `delist_command`: an argv list run to take an IP off the list, with `{ip}`
//! and `{case}` replaced. Never through a shell, so a value cannot become shell syntax
//! (the IP comes from a stranger's mail; the case reference from us, but the rule is simple).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the command may run before it is killed and counted as failed.
pub const DELIST_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of its output are kept in the case history.
const KEPT_LINES: usize = 5;

/// What a run did, for the history and for staff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRun {
    /// The argv as run.
    pub argv: Vec<String>,
    /// `Some(code)` when it exited; `None` when it could not start, was killed by a signal or
    /// timed out (see `problem`).
    pub exit_code: Option<i32>,
    pub problem: Option<String>,
    /// The first lines of standard output and error, interleaved as read (stdout first).
    pub first_lines: Vec<String>,
}

impl CommandRun {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.problem.is_none()
    }

    /// One paragraph for the case history.
    pub fn summary(&self) -> String {
        let status = match (&self.problem, self.exit_code) {
            (Some(p), _) => p.clone(),
            (None, Some(c)) => format!("exit status {c}"),
            (None, None) => "no exit status".into(),
        };
        let mut s = format!(
            "delist_command {} {}: {status}",
            if self.succeeded() { "succeeded" } else { "FAILED" },
            self.argv.join(" ")
        );
        if !self.first_lines.is_empty() {
            s.push_str("; output: ");
            s.push_str(&self.first_lines.join(" | "));
        }
        s
    }
}

/// The argv with `{ip}` and `{case}` replaced (anywhere in an argument, e.g. `--ip={ip}`).
pub fn expand(template: &[String], ip: &str, case: &str) -> Vec<String> {
    template.iter().map(|a| a.replace("{ip}", ip).replace("{case}", case)).collect()
}

/// Run the command, waiting at most `timeout`. Blocking: call it from a thread (the daemon
/// uses `spawn_blocking`).
pub fn run(template: &[String], ip: &str, case: &str, timeout: Duration) -> CommandRun {
    let argv = expand(template, ip, case);
    let mut out = CommandRun { argv: argv.clone(), exit_code: None, problem: None, first_lines: Vec::new() };
    let Some((program, args)) = argv.split_first() else {
        out.problem = Some("delist_command is empty".into());
        return out;
    };
    let child =
        Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            out.problem = Some(format!("cannot start {program}: {e}"));
            return out;
        }
    };
    // Readers on threads: a command that fills a pipe must not block on us while we wait.
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.by_ref().take(64 * 1024).read_to_end(&mut buf);
                // Drain the rest so the command never blocks on a full pipe.
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            buf
        })
    };
    let so = reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let se = reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                out.problem = Some(format!("killed after {}s (timeout)", timeout.as_secs()));
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                out.problem = Some(format!("waiting for it: {e}"));
                break None;
            }
        }
    };
    if let Some(st) = status {
        out.exit_code = st.code();
        if st.code().is_none() {
            out.problem = Some(format!("ended by a signal ({st})"));
        }
    }
    for bytes in [so.join().unwrap_or_default(), se.join().unwrap_or_default()] {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if out.first_lines.len() < KEPT_LINES {
                out.first_lines.push(line.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn placeholders_are_replaced_inside_arguments_and_nothing_is_a_shell() {
        let t = argv(&["/bin/echo", "--ip={ip}", "{case}", "$(id)"]);
        assert_eq!(
            expand(&t, "203.0.113.7", "DL-000001"),
            argv(&["/bin/echo", "--ip=203.0.113.7", "DL-000001", "$(id)"])
        );
        let r = run(&t, "203.0.113.7", "DL-000001", Duration::from_secs(5));
        assert!(r.succeeded(), "{r:?}");
        assert_eq!(r.first_lines, vec!["--ip=203.0.113.7 DL-000001 $(id)".to_string()]);
    }

    #[test]
    fn failure_timeout_and_a_missing_program_are_reported() {
        let r = run(&argv(&["/bin/sh", "-c", "echo nope >&2; exit 3"]), "x", "y", Duration::from_secs(5));
        assert_eq!((r.exit_code, r.succeeded()), (Some(3), false));
        assert!(
            r.summary().contains("FAILED") && r.summary().contains("exit status 3") && r.summary().contains("nope"),
            "{}",
            r.summary()
        );

        let started = Instant::now();
        let r = run(&argv(&["/bin/sleep", "10"]), "x", "y", Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!r.succeeded() && r.problem.as_deref().is_some_and(|p| p.contains("timeout")), "{r:?}");

        let r = run(&argv(&["/nonexistent/delist-ip", "{ip}"]), "x", "y", Duration::from_secs(1));
        assert!(r.problem.as_deref().is_some_and(|p| p.contains("cannot start")), "{r:?}");
    }
}
