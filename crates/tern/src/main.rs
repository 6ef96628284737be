//! `tern`: the command-line entry point.
//!
//! `tern serve --config PATH` runs the server until SIGTERM/SIGINT;
//! `tern check-config PATH` validates a configuration and prints it with
//! every default filled in.

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
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(value_name = "PATH")]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        Command::Serve { config, log_format } => {
            let c = Config::load(&config)?;
            init_logging(log_format.unwrap_or(c.log.format), &c.log.level);
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
    let running = tern::start(&config).await?;
    info!(
        hostname = %config.hostname,
        listeners = ?running.addrs(),
        data_dir = %config.data_dir.display(),
        "tern is ready"
    );
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    running.shutdown().await;
    Ok(())
}
