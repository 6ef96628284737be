//! `tern`: the command-line entry point.
//!
//! `tern serve --config PATH` runs the server until SIGTERM/SIGINT;
//! `tern check-config PATH` validates a configuration and prints it with
//! every default filled in; `tern user …` and `tern queue …` manage users
//! and the mail queue; `tern dkim keygen` and `tern dns` say what to
//! publish in the DNS.

mod auth_cmd;
mod queue_cmd;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tern::config::{Config, LogFormat};
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Tern: a mail server that receives, queues and delivers mail.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH")]
        config: PathBuf,
        /// Log line format (overrides `log.format`).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
        /// Run as root although no `user` is configured (like `allow_root =
        /// true`; for development containers, never for a server).
        #[arg(long)]
        allow_root: bool,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(value_name = "PATH")]
        config: PathBuf,
    },
    /// Manage the users who may log in (the file named by `auth.users_file`).
    ///
    /// Passwords are never taken from the command line: on a terminal you
    /// are asked twice; otherwise one line is read from standard input. A
    /// running server picks changes up within a second.
    User {
        #[command(subcommand)]
        action: UserAction,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
    },
    /// Look at and steer the mail queue: through the running server's
    /// admin socket, or directly on the spool when the server is stopped.
    Queue {
        #[command(subcommand)]
        action: queue_cmd::QueueAction,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
        /// Print the answer as one JSON object (for scripts).
        #[arg(long, global = true)]
        json: bool,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        action: auth_cmd::DkimAction,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
    },
    /// A user's IMAP mailboxes: list, create, delete, reindex.
    Mailbox {
        #[command(subcommand)]
        action: tern::mailbox_cmd::MailboxAction,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
    },
    /// What happened to a message: when and from whom it arrived, each
    /// delivery attempt, its final state and the notices sent about it
    /// (from the delivery journal; the server may be running or not).
    Trace {
        /// A queue id (as in the logs and the `250` reply).
        id: Option<String>,
        /// Messages from this envelope sender.
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
        /// Messages to this recipient.
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
        /// Messages received since: `2h`, `3d`, `2026-12-04`,
        /// `2026-12-04T10:02` (UTC) or Unix seconds.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many messages (the newest).
        #[arg(long, default_value_t = tern::trace_cmd::DEFAULT_LIMIT)]
        limit: usize,
        /// Print JSON (one array of messages with their records).
        #[arg(long)]
        json: bool,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// A user's storage use and quota.
    Quota {
        /// The user's address.
        user: String,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Print every DNS record a local domain needs (MX, SPF, DKIM, DMARC,
    /// MTA-STS, TLS-RPT); with --check, look them up and say which are
    /// missing or wrong (exit status 1 if a required one is).
    Dns {
        /// A local domain of the configuration.
        domain: String,
        /// Look the records up (through `[dns] nameservers`).
        #[arg(long)]
        check: bool,
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Add a user (argon2id password hash plus SCRAM-SHA-256 credentials).
    Add {
        /// The user's address, also their login name.
        address: String,
        /// Also store a CRAM-MD5 secret (needed for CRAM-MD5; password-equivalent).
        #[arg(long)]
        cram_md5: bool,
    },
    /// Change a user's password.
    Passwd {
        /// The user's address.
        address: String,
    },
    /// Delete a user.
    Del {
        /// The user's address.
        address: String,
    },
    /// List the users.
    List,
}

/// The log filter for `level` (unless `RUST_LOG` says otherwise). rustls
/// warns about what clients send in their hello (an IP address as SNI,
/// which many clients and scanners send): nothing an admin can act on,
/// so those lines are shown only when `level` asks for debug output.
fn log_directives(level: &str) -> String {
    let verbose = level.contains("debug") || level.contains("trace");
    if verbose || level.contains("rustls") {
        level.to_owned()
    } else {
        format!("{level},rustls::msgs::handshake=error")
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log_directives(level)));
    use std::io::IsTerminal;
    // Colours only for people: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let c = Config::load(&config)?;
            print!("{}", c.to_toml()?);
            eprintln!("{}: configuration is valid", config.display());
            Ok(())
        }
        Command::User { action, config } => {
            let Some(config) = config else {
                anyhow::bail!(
                    "tern user needs --config PATH (the file that names auth.users_file)"
                );
            };
            let c = Config::load(&config)?;
            let Some(users_file) = c.auth.users_file.clone() else {
                anyhow::bail!("{}: auth.users_file is not set", config.display());
            };
            let cmd = match action {
                UserAction::Add { address, cram_md5 } => {
                    tern_users::cli::UserCommand::Add { address, cram_md5 }
                }
                UserAction::Passwd { address } => tern_users::cli::UserCommand::Passwd { address },
                UserAction::Del { address } => tern_users::cli::UserCommand::Del { address },
                UserAction::List => tern_users::cli::UserCommand::List,
            };
            let out = tern_users::cli::run_user_command(
                cmd,
                &users_file,
                tern_users::cli::read_password_interactive_or_stdin,
            )?;
            print!("{out}");
            Ok(())
        }
        Command::Queue {
            action,
            config,
            json,
        } => {
            let Some(config) = config else {
                anyhow::bail!("tern queue needs --config PATH");
            };
            queue_cmd::run(action, &config, json)
        }
        Command::Dkim { action, config } => {
            let Some(config) = config else {
                anyhow::bail!("tern dkim needs --config PATH");
            };
            auth_cmd::dkim(action, &config)
        }
        Command::Mailbox { action, config } => {
            let Some(config) = config else {
                anyhow::bail!("tern mailbox needs --config PATH");
            };
            print!("{}", tern::mailbox_cmd::mailbox(action, &config)?);
            Ok(())
        }
        Command::Trace {
            id,
            from,
            to,
            since,
            limit,
            json,
            config,
        } => {
            let Some(config) = config else {
                anyhow::bail!("tern trace needs --config PATH");
            };
            let since = since
                .map(|s| tern::trace_cmd::parse_since(&s, tern::trace_cmd::unix_now()))
                .transpose()?;
            let query = tern_queue::journal::Query {
                id,
                from,
                to,
                since,
            };
            let traces = tern::trace_cmd::find(&config, &query, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&traces)?);
            } else {
                print!("{}", tern::trace_cmd::render(&traces));
            }
            Ok(())
        }
        Command::Quota { user, config } => {
            let Some(config) = config else {
                anyhow::bail!("tern quota needs --config PATH");
            };
            print!("{}", tern::mailbox_cmd::quota(&user, &config)?);
            Ok(())
        }
        Command::Dns {
            domain,
            check,
            config,
        } => {
            let Some(config) = config else {
                anyhow::bail!("tern dns needs --config PATH");
            };
            auth_cmd::dns(&domain, check, &config)
        }
        Command::Serve {
            config,
            log_format,
            allow_root,
        } => {
            let c = Config::load(&config)?;
            init_logging(log_format.unwrap_or(c.log.format), &c.log.level);
            if tern::privilege::refuse_root(&c, allow_root)? {
                tracing::warn!(
                    "running as root (allow_root): set user = \"tern\" to switch to an unprivileged user after binding"
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("tern")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(c))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let running = tern::start(&config).await?;
    info!(
        hostname = %config.hostname,
        listeners = ?running.addrs(),
        data_dir = %config.data_dir.display(),
        "tern is ready"
    );
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { info!("SIGINT: shutting down"); break }
            _ = hup.recv() => { info!("SIGHUP: reloading certificates, users and DKIM keys"); running.reload() }
        }
    }
    running.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn rustls_hello_warnings_are_shown_only_at_debug() {
        assert_eq!(log_directives("info"), "info,rustls::msgs::handshake=error");
        assert_eq!(log_directives("warn"), "warn,rustls::msgs::handshake=error");
        assert_eq!(log_directives("debug"), "debug");
        assert_eq!(log_directives("info,tern_net=trace"), "info,tern_net=trace");
        assert_eq!(log_directives("info,rustls=warn"), "info,rustls=warn");
        // The directives parse.
        for level in ["info", "warn", "debug"] {
            tracing_subscriber::EnvFilter::try_new(log_directives(level)).unwrap();
        }
    }
}
