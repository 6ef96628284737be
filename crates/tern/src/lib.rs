//! The Tern mail server, wired together: configuration in, running
//! listeners and delivery out.
//!
//! `main.rs` is the CLI around this; integration tests call [`start`]
//! directly to run a real server on ephemeral ports. This crate is the only
//! one that uses `anyhow`: everything below it has typed errors.
#![forbid(unsafe_code)]

pub mod config;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context as _;
use tern_net::{ConnectionLimiter, DeliveryAgent, RelayPolicy, Role, Server, Timeouts};
use tern_queue::{Spool, SpoolOptions};
use tern_store::{Directory, MailStore};
use tokio::sync::watch;
use tracing::info;

pub use config::Config;

/// A started server.
#[derive(Debug)]
pub struct Running {
    addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    stop_delivery: watch::Sender<bool>,
    delivery: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The bound listener addresses, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Graceful shutdown: stop accepting, answer 421 to open sessions, let
    /// in-flight commits finish, then stop delivery.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let _ = self.stop_delivery.send(true);
        let _ = self.delivery.await;
        info!("stopped");
    }
}

/// Opens the data directory, recovers the spool, binds the listeners and
/// starts serving. Returns once everything is listening.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let data_dir = &config.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let spool = Spool::open(&data_dir.join("spool"), SpoolOptions::default())
        .with_context(|| format!("cannot open the spool in {}", data_dir.display()))?;
    let store = Arc::new(MailStore::new(data_dir.join("mail")));
    let directory = Arc::new(Directory::new(config.directory_config()?)?);

    let (stop_delivery, delivery_shutdown) = watch::channel(false);
    let (delivery, delivery_task) = DeliveryAgent {
        spool: spool.clone(),
        store,
        hostname: config.hostname.clone(),
        concurrency: config.delivery.concurrency,
    }
    .start(delivery_shutdown);

    let l = &config.limits;
    let ctx = Arc::new(tern_net::Context {
        smtp: Arc::new(config.server_config()),
        hostname: config.hostname.clone(),
        directory,
        relay: RelayPolicy {
            trusted_networks: config.trusted_networks.clone(),
        },
        spool,
        delivery,
        timeouts: Timeouts {
            command: l.command_timeout,
            data: l.data_timeout,
            greet_pause: l.greet_pause,
            min_data_rate: l.min_data_rate,
        },
        limiter: ConnectionLimiter::new(l.max_connections, l.max_connections_per_ip),
    });
    let listeners: Vec<(SocketAddr, Role)> = config
        .listeners
        .iter()
        .map(|l| {
            (
                l.address,
                match l.role {
                    config::ListenerRole::Mx => Role::Mx,
                },
            )
        })
        .collect();
    let server = Server::bind(ctx, &listeners).await?;
    let addrs = server.local_addrs();
    let (stop, shutdown) = watch::channel(false);
    let server = tokio::spawn(server.run(shutdown));
    Ok(Running {
        addrs,
        stop,
        server,
        stop_delivery,
        delivery: delivery_task,
    })
}
