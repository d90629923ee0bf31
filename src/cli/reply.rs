//! `delistd cases reply REF` and `delistd cases ask REF`: write to a case's sender.
//!
//! The text comes from standard input when it is not a terminal (`echo … | delistd cases
//! reply DL-000042`), else from an editor (`$VISUAL`, then `$EDITOR`, then `vi`) on a
//! temporary file that starts with a commented hint (lines starting with `#`, removed
//! before sending). An empty text sends nothing and exits 2. `--preview` (or `--dry-run`)
//! prints the exact message and exits 0 without queuing it. The rules are the desk's
//! ([`crate::desk::threads`]).

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;

use super::cases::{actor, CasesError, Env};
use crate::cases::Store;
use crate::desk::{Desk, DeskError, MessagePreview};
use crate::types::CaseRef;

#[derive(Debug, clap::Args)]
pub struct MessageArgs {
    /// Case reference, e.g. DL-000123.
    pub case: CaseRef,
    /// Print the exact message (subject, thread headers, body) and exit without queuing it.
    #[arg(long, visible_alias = "dry-run")]
    pub preview: bool,
    /// The result (or the preview) as JSON, as the web API gives it.
    #[arg(long)]
    pub json: bool,
    /// Who writes; only root may name someone (default: the Unix user, or $SUDO_USER under sudo).
    #[arg(long, env = "DELISTD_STAFF")]
    pub by: Option<String>,
}

/// Which message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Reply,
    Ask,
}

/// The hint at the top of the editor's file.
fn hint(which: Which, case: CaseRef) -> String {
    let what = match which {
        Which::Reply => format!("Your reply to the sender of {case}."),
        Which::Ask => format!("Your question to the sender of {case}; the case then waits for the answer."),
    };
    format!(
        "\n# {what}\n# Write the text above. The greeting and the signature are added in the case's\n\
         # language. Lines starting with '#' are removed. An empty text sends nothing.\n\
         # Check it first with --preview.\n"
    )
}

/// The text without the editor's comment lines, trimmed.
pub fn strip_hint(text: &str) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    kept.join("\n").trim().to_string()
}

/// The text from standard input, or from the editor when standard input is a terminal.
fn read_text(which: Which, case: CaseRef) -> Result<String, CasesError> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        return Ok(text.trim().to_string());
    }
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".into());
    let path = temp_file(&hint(which, case))?;
    // `$EDITOR` may carry arguments (`code --wait`): run it through the shell, the file
    // name passed as an argument rather than pasted into the command.
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status();
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(CasesError::Usage(format!("the editor ({editor}) exited with {s}: nothing sent"))),
        Err(e) => {
            return Err(CasesError::Usage(format!(
                "cannot start the editor {editor:?}: {e}; set $VISUAL or $EDITOR, or give the text on standard input"
            )))
        }
    }
    Ok(strip_hint(&text?))
}

/// A new private file in the temporary directory holding `content`.
fn temp_file(content: &str) -> Result<PathBuf, CasesError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    for n in 0..100u32 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = dir.join(format!("delistd-message-{}-{nanos}-{n}.txt", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut f) => {
                f.write_all(content.as_bytes())?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(CasesError::Usage(format!("cannot create a temporary file in {}", dir.display())))
}

/// Run `cases reply` / `cases ask`.
pub fn run(which: Which, store: &mut Store, a: MessageArgs, env: &Env<'_>, out: &mut dyn Write) -> Result<(), CasesError> {
    let by = actor(a.by)?;
    let builder = env.replies.ok_or(CasesError::Desk(DeskError::RepliesOff))?;
    // The case first: no editor opened for a case that does not exist.
    Desk::new(store).detail(a.case)?;
    let text = read_text(which, a.case)?;
    if text.is_empty() {
        return Err(CasesError::Usage("the text is empty: nothing sent".into()));
    }
    let mut desk = Desk::new(store);
    let p = match (which, a.preview) {
        (Which::Reply, true) => desk.preview_reply(&by, a.case, &text, builder, env.now)?,
        (Which::Ask, true) => desk.preview_ask(&by, a.case, &text, builder, env.now)?,
        (Which::Reply, false) => desk.reply(&by, a.case, &text, builder, env.now)?,
        (Which::Ask, false) => desk.ask(&by, a.case, &text, builder, env.now)?,
    };
    if a.json {
        serde_json::to_writer_pretty(&mut *out, &p)?;
        writeln!(out)?;
        return Ok(());
    }
    write_message(out, &p)?;
    match p.outbox {
        Some(id) => writeln!(out, "{}: {} #{id} queued; the case is {}", p.case_ref, p.action, p.state_after)?,
        None => writeln!(out, "(preview: nothing queued; the case would be {})", p.state_after)?,
    }
    Ok(())
}

fn write_message(out: &mut dyn Write, p: &MessagePreview) -> io::Result<()> {
    for (k, v) in &p.headers {
        writeln!(out, "{k}: {v}")?;
    }
    writeln!(out)?;
    write!(out, "{}", p.body)?;
    writeln!(out, "---")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_stripped_and_the_text_kept() {
        let case = CaseRef(42);
        let file = format!("Hello,\n# not this\n\n  indented line\n{}", hint(Which::Ask, case));
        assert_eq!(strip_hint(&file), "Hello,\n\n  indented line");
        assert_eq!(strip_hint(&hint(Which::Reply, case)), "", "untouched file: empty, nothing sent");
        assert!(hint(Which::Reply, case).contains("DL-000042"));
    }
}
