//! `delistd`: parse flags, call the command, map its outcome to an exit code.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use delistd::cli::{inspect, Exit};
use delistd::config::{Config, DEFAULT_CONFIG_PATH};
use delistd::decide::{decide, Context};
use delistd::extract::{extract, ExtractOptions};

#[derive(Parser)]
#[command(
    name = "delistd",
    version,
    about = "Answers the delist mailbox: reads 5.7.511 delisting requests, opens cases with a 48-hour SLA, replies from templates.",
    long_about = "delistd reads the delist mailbox (IMAP or Maildir), finds the NDR line, the enhanced status code and \
the banned IP in whatever the sender sent, opens a case in SQLite with a 48-hour SLA (or threads a follow-up into its \
case), and replies from templates in the sender's language. Other codes get the portal (5.7.606-649) or support \
(5.7.700-750) redirection. Automatic mail (RFC 3834) is never answered.\n\n\
Exit codes: 0 ok; 1 failure; 2 or 64 bad usage; 3 not found; 66 input unreadable; 75 server unreachable (try later); \
78 invalid configuration.",
    after_help = "Start with `delistd demo` (no mail server needed), or `delistd inspect message.eml`."
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` for log shippers. Under systemd, text
    /// lines carry no timestamp (journald adds one).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read messages from files and print the evidence and the decision, with no config and no database.
    Inspect {
        /// Raw RFC 5322 messages (.eml); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per file, one per line.
        #[arg(long)]
        json: bool,
        /// Also print the reply that would be sent.
        #[arg(long)]
        reply: bool,
        /// Parse at most this many bytes of each message.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        max_bytes: usize,
    },
    /// Validate the configuration file and print what it says; exit 78 with every problem and its line otherwise.
    CheckConfig {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn init_logs(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DELISTD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else if under_journald {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let exit = match cli.command {
        Command::Inspect { files, json, reply, max_bytes } => run_inspect(&files, json, reply, max_bytes),
        Command::CheckConfig { config } => check_config(&config),
    };
    exit.into()
}

fn run_inspect(files: &[PathBuf], json: bool, show_reply: bool, max_bytes: usize) -> Exit {
    let opts = ExtractOptions { max_bytes };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut exit = Exit::Ok;
    for (i, path) in files.iter().enumerate() {
        let name = path.display().to_string();
        let raw = if name == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).map(|_| buf)
        } else {
            read_capped(path, max_bytes)
        };
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                eprintln!("delistd: {name}: {e}");
                exit = Exit::NoInput;
                continue;
            }
        };
        let ev = extract(&raw, &opts);
        let d = decide(&ev, &Context::default());
        let summary = inspect::Summary::new(&name, &ev, &d);
        let written = if json {
            serde_json::to_string(&summary).map_err(std::io::Error::other).and_then(|s| writeln!(out, "{s}"))
        } else {
            if i > 0 {
                let _ = writeln!(out);
            }
            inspect::write_human(&mut out, &summary, &ev, &d)
        };
        if written.is_err() {
            // Standard output closed (e.g. piped into `head`): stop quietly.
            return exit;
        }
        if show_reply {
            match inspect::preview_reply(&ev, &d) {
                Some(Ok(text)) => {
                    let _ = writeln!(out, "{text}");
                }
                Some(Err(e)) => {
                    eprintln!("delistd: {name}: reply: {e}");
                    exit = Exit::Failure;
                }
                None if !json => {
                    let _ = writeln!(out, "  (no reply would be sent)");
                }
                None => {}
            }
        }
    }
    exit
}

/// Read at most `max` bytes: a huge file is never loaded whole.
fn read_capped(path: &std::path::Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    // One byte more than the cap so extraction can tell that the input was cut.
    f.take(max as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

fn check_config(path: &std::path::Path) -> Exit {
    match Config::load(path) {
        Ok(c) => {
            println!("{}: ok", path.display());
            println!("{c:#?}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("delistd: {e}");
            Exit::Config
        }
    }
}
