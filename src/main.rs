//! `delistd`: parse flags, call the command, map its outcome to an exit code.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use delistd::cli::cases::CasesCmd;
use delistd::cli::{inspect, Exit};
use delistd::config::{Config, DEFAULT_CONFIG_PATH};
use delistd::daemon::{self, Mode};
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
Exit codes: 0 ok; 1 failure; 2 or 64 bad usage; 3 not found; 4 refused by the case's state; 66 input unreadable; \
73 another delistd holds the database (run, reprocess); 75 server unreachable (try later); 77 login refused, or (cases, staff, outbox, web) the database is closed to this user: not in its group; \
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
    #[command(long_about = "Validate the configuration file, then check what `run` would trip over: every reply \
template in every language rendered with sample values, the portal and support links, the database directory \
(exists, writable), the password files (present; a file readable by group or others is a warning). On success, \
print a summary: intake and folders, IDLE or polling, TLS and CA, SMTP and its AUTH, the SLA, templates, \
retention, and where each secret comes from.\n\n\
Exit codes: 0 valid; 78 invalid (every problem listed with its line, key and the expected form); 66 file \
unreadable; with --connect, 75 a server unreachable and 77 login refused.")]
    CheckConfig {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Do not read the passwords: check a config before its credentials exist (e.g. on a
        /// freshly installed package, or outside the systemd service that provides them).
        #[arg(long, conflicts_with = "connect")]
        no_secrets: bool,
        /// Also log in to the IMAP and SMTP servers (TLS, STARTTLS, LOGIN/AUTH, an OAuth2 token
        /// from its command) and report each step; with a [blocklist], every DNSBL zone must pass
        /// the RFC 5782 test entries and the CIDR file must load, as at the daemon's start. No
        /// mail is sent or moved; the two IMAP folders are created if missing.
        #[arg(long)]
        connect: bool,
    },
    /// Run the daemon: read the mailbox, record outcomes, send replies (Type=notify under systemd).
    Run {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Drain what is waiting, send what is queued, and exit (instead of serving until SIGTERM).
        #[arg(long)]
        once: bool,
    },
    /// Run the whole pipeline on bundled example requests, with no mail server: a Maildir in,
    /// a SQLite file, replies written as .eml files; ends with the table of cases opened.
    Demo {
        /// Where to put the Maildir, the database and the replies.
        #[arg(long, default_value = "demo-out")]
        dir: PathBuf,
    },
    /// Run recorded messages through extraction and the decision again (quarantined ones by
    /// default), updating their record; replies due are queued for the daemon to send.
    Reprocess {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Database to use instead of the one the config names.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Message ids (see `cases show`); without any, every quarantined message.
        ids: Vec<i64>,
        /// Also run messages that were handled already. Their record is updated, but no
        /// second reply is queued for what was answered, and no second case is opened for an
        /// IP that has one (open or closed).
        #[arg(long)]
        force: bool,
    },
    /// See the replies (queued, sent, failed) and queue failed ones again (safe while the daemon runs).
    Outbox {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The database, instead of the one named in the config.
        #[arg(long, global = true, env = "DELISTD_DB")]
        db: Option<PathBuf>,
        #[command(subcommand)]
        command: delistd::cli::outbox::OutboxCmd,
    },
    /// Warn staff of cases due soon or overdue and send the daily digest when due, once, then
    /// send those mails ([escalation] in the config). `delistd run` does this every minute by
    /// itself; this is for a systemd timer on a host where the daemon does not run.
    /// Exit 0 when everything queued was sent, 75 when some mail waits for a retry.
    Escalate {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// One pass, then exit (required: the continuous checks run inside `delistd run`).
        #[arg(long, required = true)]
        once: bool,
    },
    /// Staff commands over the case database (safe while the daemon runs).
    Cases {
        /// The config file, for the database path and the reply settings.
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The database, instead of the one named in the config.
        #[arg(long, global = true, env = "DELISTD_DB")]
        db: Option<PathBuf>,
        #[command(subcommand)]
        command: CasesCmd,
    },
    /// Write a consistent, checked copy of the database to FILE (safe while the daemon runs).
    #[command(long_about = "Write a consistent copy of the live database to FILE while the daemon runs \
(SQLite VACUUM INTO: the database as of one commit, compacted), check it (integrity and references) \
and print what it holds. FILE must not exist. Exit codes: 0 done; 1 failed; 64 FILE exists; 66 no database.")]
    Backup {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The database, instead of the one named in the config.
        #[arg(long, env = "DELISTD_DB")]
        db: Option<PathBuf>,
        /// Where to write the backup (a new file).
        file: PathBuf,
    },
    /// Put a backup in place of the database (stop the daemon first).
    #[command(long_about = "Check the backup FILE, then copy it in place of the database. Refused (exit 75) \
while any other process has the database open: stop the daemon first (systemctl stop delistd). Replies \
the backup still shows as queued may have been sent after it was taken: they are held (marked failed, \
with the reason in the case history) unless --send-queued. Exit codes: 0 done; 1 failed; 66 no backup; \
75 database in use.")]
    Restore {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The database to replace, instead of the one named in the config.
        #[arg(long, env = "DELISTD_DB")]
        db: Option<PathBuf>,
        /// Send the replies the backup still had queued (risking a second copy to their senders).
        #[arg(long)]
        send_queued: bool,
        /// The backup to restore.
        file: PathBuf,
    },
    /// Apply [retention] now: drop old raw messages and, with case_days, old closed cases.
    #[command(long_about = "Apply the [retention] section now, as the daemon does daily: drop the raw bytes \
of messages whose cases closed more than raw_days ago (default 90; the evidence, metadata and history \
stay), and with case_days, delete cases closed longer ago with their messages, events and replies. \
Freed space is given back to the file system (incremental vacuum).")]
    Purge {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The database, instead of the one named in the config (retention defaults then apply).
        #[arg(long, env = "DELISTD_DB")]
        db: Option<PathBuf>,
        /// Show what would go, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the man pages and the bash, zsh and fish completions into DIR (for packagers).
    #[command(hide = true)]
    GenerateAssets {
        /// Gets man/delistd.1 (and one page per command), completions/delistd.bash, _delistd, delistd.fish.
        dir: PathBuf,
    },
    /// Accounts of the web desk: add, list, passwd, remove, token (passwords from standard input).
    Staff {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The database, instead of the one named in the config.
        #[arg(long, global = true, env = "DELISTD_DB")]
        db: Option<PathBuf>,
        #[command(subcommand)]
        command: delistd::cli::staff::StaffCmd,
    },
    /// Serve the web desk over a database (see also the [web] section of the config).
    Web {
        #[arg(long, short, env = "DELISTD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The database, instead of the one named in the config.
        #[arg(long, env = "DELISTD_DB")]
        db: Option<PathBuf>,
        /// Address to listen on (default: [web] listen, else 127.0.0.1:8080). A non-loopback
        /// address needs TLS or proxy mode in the [web] section.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

fn init_logs(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DELISTD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colour codes only for a person at a terminal: a log file or a pipe gets plain text.
    // NO_COLOR (https://no-color.org): set and not empty turns colour off.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Every line passes the redactor: the protocol libraries trace their wire (see `redact`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(delistd::redact::Redacting(std::io::stderr))
        .with_ansi(colour);
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
    // A panic caught by the pipeline (a message quarantined) is logged as one line, not a
    // backtrace across the journal.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(at = %at, "panic: {}", info.payload().downcast_ref::<&str>().copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)"));
    }));
    let exit = match cli.command {
        Command::Inspect { files, json, reply, max_bytes } => run_inspect(&files, json, reply, max_bytes),
        Command::CheckConfig { config, no_secrets, connect } => delistd::cli::check::run(
            &config,
            delistd::cli::check::CheckOptions { no_secrets, connect },
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Command::Run { config, once } => run_daemon(&config, once),
        Command::Demo { dir } => run_demo(&dir),
        Command::Reprocess { config, db, ids, force } => reprocess(&config, db, &ids, force),
        Command::Outbox { config, db, command } => outbox(&config, db, command),
        Command::Cases { config, db, command } => cases(&config, db, command),
        Command::Escalate { config, once: _ } => delistd::cli::escalate::run(&config, jiff::Timestamp::now()),
        Command::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => Exit::Ok,
            Err(e) => {
                eprintln!("delistd: {}: {e}", dir.display());
                Exit::Failure
            }
        },
        Command::Backup { config, db, file } => match staff_db(&config, db) {
            Ok((db, _)) => delistd::cli::maint::run_backup(&db, &file, &mut std::io::stdout(), &mut std::io::stderr()),
            Err(e) => e,
        },
        Command::Restore { config, db, send_queued, file } => match staff_db(&config, db) {
            Ok((db, _)) => {
                delistd::cli::maint::run_restore(&file, &db, send_queued, &mut std::io::stdout(), &mut std::io::stderr())
            }
            Err(e) => e,
        },
        Command::Purge { config, db, dry_run } => match staff_db(&config, db) {
            Ok((db, cfg)) => {
                let retention = cfg.map(|c| c.retention).unwrap_or_default();
                delistd::cli::maint::run_purge(&db, &retention, dry_run, &mut std::io::stdout(), &mut std::io::stderr())
            }
            Err(e) => e,
        },
        Command::Staff { config, db, command } => staff(&config, db, command),
        Command::Web { config, db, listen } => web(&config, db, listen),
    };
    exit.into()
}

fn run_inspect(files: &[PathBuf], json: bool, show_reply: bool, max_bytes: usize) -> Exit {
    let opts = ExtractOptions { max_bytes };
    // No config here: the embedded templates and default settings, through the one builder.
    let builder = delistd::reply::Builder::embedded();
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
            match inspect::preview_reply(&ev, &d, &builder) {
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

/// Man pages and completions from the clap definitions, so they never drift from `--help`.
fn generate_assets(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = Cli::command();
    // delistd.1, and delistd-run.1, delistd-cases.1, delistd-cases-list.1, ...
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "delistd", &completions)?;
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

fn run_daemon(path: &std::path::Path, once: bool) -> Exit {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Config;
        }
    };
    if let delistd::config::Intake::Imap(i) = &cfg.intake {
        delistd::redact::register(i.password.expose(), Some(&i.user));
    }
    if let Some((user, password)) = cfg.smtp.as_ref().and_then(|s| s.auth.as_ref()) {
        delistd::redact::register(password.expose(), Some(user));
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("delistd: cannot start the runtime: {e}");
            return Exit::Failure;
        }
    };
    let mode = if once { Mode::Once } else { Mode::Serve };
    match rt.block_on(daemon::run(cfg, mode)) {
        Ok(stats) => {
            tracing::info!(
                processed = stats.processed, quarantined = stats.quarantined,
                already_recorded = stats.already_recorded, sent = stats.sent, send_failed = stats.send_failed,
                "stopped"
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("delistd: {e}");
            match e {
                // Retrying will not fix refused credentials: say so, so a timer unit or a
                // script does not loop on it.
                daemon::DaemonError::Imap(delistd::intake::imap::ImapError::Login { .. }) => Exit::NoPerm,
                daemon::DaemonError::Instance(daemon::instance::InstanceError::Held { .. }) => {
                    Exit::Code(daemon::instance::INSTANCE_LOCKED_EXIT)
                }
                daemon::DaemonError::Imap(_) | daemon::DaemonError::Send(_) => Exit::TempFail,
                // A zone that does not answer may answer later; one that answers wrongly will not.
                daemon::DaemonError::Blocklist(b) if b.is_temporary() => Exit::TempFail,
                daemon::DaemonError::Blocklist(_) => Exit::Config,
                // `run --once` meeting a database locked beyond the busy timeout.
                ref e if e.is_transient() => Exit::TempFail,
                _ => Exit::Failure,
            }
        }
    }
}

fn run_demo(dir: &std::path::Path) -> Exit {
    let paths = match delistd::demo::prepare(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("delistd: cannot prepare {}: {e}", dir.display());
            return Exit::Failure;
        }
    };
    let cfg = delistd::demo::config(&paths);
    println!(
        "delistd demo: {} example requests in {}, database {}, replies in {}",
        delistd::demo::MESSAGES.len(),
        paths.maildir.join("new").display(),
        paths.database.display(),
        paths.replies.display()
    );
    let stats = match runtime().map_err(|e| e.to_string()).and_then(|rt| rt.block_on(daemon::run(cfg, Mode::Once)).map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Failure;
        }
    };
    println!(
        "\nprocessed {} message(s) ({} already recorded from an earlier run), {} reply(ies) written\n",
        stats.processed, stats.already_recorded, stats.sent
    );
    let list = delistd::cli::cases::CasesCmd::List(delistd::cli::cases::ListArgs::everything());
    let env = delistd::cli::cases::Env::new(jiff::Timestamp::now());
    let stdout = std::io::stdout();
    if let Err(e) = delistd::cli::cases::run(list, &paths.database, &env, &mut stdout.lock()) {
        eprintln!("delistd: {e}");
        return Exit::Failure;
    }
    println!("\nTry: delistd cases --db {} show DL-000001", paths.database.display());
    println!("The web desk: delistd web --db {} (then open http://127.0.0.1:8080/)", paths.database.display());
    Exit::Ok
}

/// The database to use: `--db`, else the one the config names (read without its secrets).
fn staff_db(config: &std::path::Path, db: Option<PathBuf>) -> Result<(PathBuf, Option<Config>), Exit> {
    let cfg = match Config::load_with(config, delistd::config::Secrets::Skip) {
        Ok(c) => Some(c),
        Err(e) if db.is_some() => {
            tracing::debug!(error = %e, "config not used (--db given)");
            None
        }
        Err(e) => {
            eprintln!("delistd: {e}\n(give --db PATH to use a database without a config)");
            return Err(Exit::Config);
        }
    };
    match (db, &cfg) {
        (Some(p), _) => Ok((p, cfg)),
        (None, Some(c)) => Ok((c.store.database.clone(), cfg)),
        (None, None) => Err(Exit::Config),
    }
}

fn cases(config: &std::path::Path, db: Option<PathBuf>, command: CasesCmd) -> Exit {
    let (db, cfg) = match staff_db(config, db) {
        Ok(x) => x,
        Err(e) => return e,
    };
    // A demo database given with --db alone: the demo's reply settings (see demo.rs).
    let cfg = cfg.or_else(|| delistd::demo::config_for_database(&db));
    let mut env = delistd::cli::cases::Env::new(jiff::Timestamp::now());
    let builder = match cfg.as_ref().map(|c| delistd::reply::Builder::from_config(&c.replies, c.store.sla)).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("delistd: replies.templates_dir: {e}");
            return Exit::Config;
        }
    };
    if let (Some(c), Some(builder)) = (&cfg, &builder) {
        env.store.sla = jiff::SignedDuration::from_secs(c.store.sla.as_secs() as i64);
        env.replies = Some(builder);
        env.delist_command = c.blocklist.as_ref().and_then(|b| b.delist_command.clone());
    }
    let stdout = std::io::stdout();
    match delistd::cli::cases::run(command, &db, &env, &mut stdout.lock()) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("delistd: {e}");
            Exit::Code(e.exit_code())
        }
    }
}

fn staff(config: &std::path::Path, db: Option<PathBuf>, command: delistd::cli::staff::StaffCmd) -> Exit {
    let (db, _) = match staff_db(config, db) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    match delistd::cli::staff::run(command, &db, jiff::Timestamp::now(), &mut stdin.lock(), &mut stdout.lock()) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("delistd: {e}");
            Exit::Code(e.exit_code())
        }
    }
}

fn web(config: &std::path::Path, db: Option<PathBuf>, listen: Option<std::net::SocketAddr>) -> Exit {
    let (db, cfg) = match staff_db(config, db) {
        Ok(x) => x,
        Err(e) => return e,
    };
    // The demo's database: its reply settings, and a one-time account (see desk::demo_account).
    let demo = cfg.is_none().then(|| delistd::demo::config_for_database(&db)).flatten();
    if demo.is_some() {
        match delistd::desk::accounts::demo_account(&db) {
            Ok(Some(password)) => println!("demo desk: sign in as \"demo\" with the one-time password {password}"),
            Ok(None) => {}
            Err(e) => eprintln!("delistd: demo account: {e}"),
        }
    }
    let cfg = cfg.or(demo);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Failure;
        }
    };
    match rt.block_on(delistd::web::serve_standalone(&db, cfg.as_ref(), listen)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("delistd: {e}");
            Exit::Code(e.exit_code())
        }
    }
}

fn reprocess(config: &std::path::Path, db: Option<PathBuf>, ids: &[i64], force: bool) -> Exit {
    let cfg = match Config::load_with(config, delistd::config::Secrets::Skip) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Config;
        }
    };
    let db = db.unwrap_or_else(|| cfg.store.database.clone());
    let pipeline = match delistd::pipeline::Pipeline::new(&cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("delistd: {e}");
            return Exit::Config;
        }
    };
    // Same lock as `run`: a daemon on this database would race us for the same messages.
    let _instance = match daemon::instance::acquire(&db) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delistd: {e}");
            return match e {
                daemon::instance::InstanceError::Held { .. } => Exit::Code(daemon::instance::INSTANCE_LOCKED_EXIT),
                _ => Exit::Failure,
            };
        }
    };
    let mut store = match delistd::cases::Store::open_checked(&db, pipeline.store_options()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("delistd: {}: {e}", db.display());
            return Exit::Failure;
        }
    };
    let ids: Vec<delistd::cases::MessageId> = if ids.is_empty() {
        match store.quarantined_messages() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("delistd: {e}");
                return Exit::Failure;
            }
        }
    } else {
        ids.iter().map(|i| delistd::cases::MessageId(*i)).collect()
    };
    if ids.is_empty() {
        println!("nothing quarantined");
        return Exit::Ok;
    }
    let mut exit = Exit::Ok;
    for (n, id) in ids.iter().enumerate() {
        match pipeline.reprocess(&mut store, *id, jiff::Timestamp::now(), force) {
            Ok(p) => println!(
                "[{}/{}] message {}: {} {}{}",
                n + 1,
                ids.len(),
                id.0,
                p.action.map(|a| a.to_string()).unwrap_or_else(|| "quarantined again".into()),
                p.cases.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" "),
                if p.queued_reply { " (reply queued)" } else { "" }
            ),
            Err(e @ delistd::pipeline::PipelineError::Refused(_)) => {
                eprintln!("delistd: message {}: {e}", id.0);
                if exit == Exit::Ok {
                    exit = Exit::Code(delistd::cli::cases::EXIT_REFUSED);
                }
            }
            Err(e) => {
                eprintln!("delistd: message {}: {e}", id.0);
                exit = Exit::Failure;
            }
        }
    }
    exit
}

fn outbox(config: &std::path::Path, db: Option<PathBuf>, command: delistd::cli::outbox::OutboxCmd) -> Exit {
    let (db, _) = match staff_db(config, db) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let stdout = std::io::stdout();
    match delistd::cli::outbox::run(command, &db, jiff::Timestamp::now(), &mut stdout.lock()) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("delistd: {e}");
            Exit::Code(e.exit_code())
        }
    }
}
