//! The Tern mail server, wired together: configuration in, running
//! listeners and delivery out.
//!
//! `main.rs` is the CLI around this; integration tests call [`start`]
//! directly to run a real server on ephemeral ports. This crate is the only
//! one that uses `anyhow`: everything below it has typed errors.
#![forbid(unsafe_code)]

pub mod config;
pub mod mailbox_cmd;
pub mod privilege;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context as _;
use ring::rand::{SecureRandom, SystemRandom};
use tern_net::{
    Abuse, AuthBackend, CertPair, ConnectionLimiter, ListenerSpec, QueueManager, RelayPolicy, Role,
    Server, SubmissionPolicy, Timeouts, TlsManager, TlsSettings,
};
use tern_queue::{Spool, SpoolOptions};
use tern_sasl::jwt::{JwtConfig, JwtKey, JwtValidator};
use tern_store::{Directory, MailStore};
use tern_users::UserDbHandle;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::Config;

/// A started server.
#[derive(Debug)]
pub struct Running {
    addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    stop_delivery: watch::Sender<bool>,
    delivery: tokio::task::JoinHandle<()>,
    tls: TlsManager,
    users: Option<UserDbHandle>,
    /// The DKIM keys in force, and the configuration they are read from.
    dkim: (tern_net::SignerHandle, Config),
    reloader: Option<tokio::task::JoinHandle<()>>,
    /// The admin socket server (`tern queue …`); stops with the listeners.
    admin: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The bound listener addresses, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// SIGHUP: re-read the certificates, the users file and the DKIM keys.
    /// A file that fails to load leaves the previous one in force (for the
    /// DKIM keys: the whole previous set); the error is logged.
    pub fn reload(&self) {
        let (signer, config) = &self.dkim;
        match config.dkim_signer() {
            Ok(keys) => {
                log_dkim_keys(config, &keys);
                signer.replace(keys);
            }
            Err(e) => warn!(error = %e, "DKIM key reload failed; keeping the previous keys"),
        }
        match self.tls.reload() {
            Ok(()) => {
                info!(certificates = ?self.tls.certificate_names(), "TLS certificates reloaded")
            }
            Err(e) => warn!(error = %e, "TLS reload failed; keeping the previous certificates"),
        }
        if let Some(users) = &self.users {
            match users.reload_if_changed() {
                Ok(true) => info!(users = users.current().len(), "users file reloaded"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "users file reload failed; keeping the previous users"),
            }
        }
    }

    /// Graceful shutdown: stop accepting, answer 421 to open sessions, let
    /// in-flight commits finish, then stop delivery.
    pub async fn shutdown(self) {
        if let Some(r) = &self.reloader {
            r.abort();
        }
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let _ = self.admin.await;
        let _ = self.stop_delivery.send(true);
        let _ = self.delivery.await;
        info!("stopped");
    }
}

/// Opens the data directory, recovers the spool, binds the listeners and
/// starts serving. Returns once everything is listening.
///
/// The order matters when `user` is configured and Tern starts as root
/// (see [`privilege`]): first what may need root (the DKIM and TLS keys,
/// the users file, the bearer-token key, the smarthost password, binding
/// the listeners), then the switch to `user`, then everything in
/// `data_dir`, which is therefore created by and for that user.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let plan = privilege::plan(config)?;
    let signer = config.dkim_signer()?;
    let users = match &config.auth.users_file {
        Some(path) => Some(
            UserDbHandle::open(path)
                .with_context(|| format!("cannot load auth.users_file {}", path.display()))?,
        ),
        None => None,
    };
    let jwt = match &config.auth.oauth {
        Some(o) => Some(jwt_validator(o)?),
        None => None,
    };
    let outbound = Arc::new(outbound_settings(config)?);
    let tls_settings = TlsSettings {
        certificates: config
            .tls
            .certificates
            .iter()
            .map(|c| CertPair {
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .collect(),
        self_signed_dir: config.data_dir.join("tls"),
        hostname: config.hostname.clone(),
    };
    // Configured certificates are read now; a self-signed one lives in
    // data_dir and is made after the switch.
    let tls = if tls_settings.certificates.is_empty() {
        None
    } else {
        Some(TlsManager::load(&tls_settings)?)
    };
    // Bound now (ports below 1024 need root), listening only once
    // everything is ready: an open port means a working server.
    let mut sockets = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let socket = bind_socket(l.address).with_context(|| {
            if l.address.port() < 1024 && !nix::unistd::geteuid().is_root() {
                format!(
                    "cannot listen on {} (ports below 1024 need root, with user = \"...\" \
                         to drop to, or CAP_NET_BIND_SERVICE: see dist/tern.service)",
                    l.address
                )
            } else {
                format!("cannot listen on {}", l.address)
            }
        })?;
        sockets.push(socket);
    }
    if let privilege::Plan::Drop(run_as) = &plan {
        privilege::drop_privileges(run_as)?;
        info!(user = %run_as.user, uid = run_as.uid, group = %run_as.group, gid = run_as.gid, "switched from root to the service user");
        for problem in privilege::unreadable_after_drop(config) {
            warn!(problem = %problem, "read at start as root, but {} cannot read it: a reload will fail", run_as.user);
        }
    }
    if let Some(run_as) = plan.run_as() {
        privilege::check_state(config, run_as)?;
    }

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

    // One resolver for outbound delivery and the authentication checks.
    let hickory: Option<Arc<tern_dns::HickoryResolver>> =
        if config.delivery.remote || config.mail_auth.enabled {
            let r = tern_dns::HickoryResolver::new(tern_dns::ResolverSettings {
                nameservers: config.dns.nameservers.clone(),
                ..tern_dns::ResolverSettings::default()
            })
            .context("cannot set up the DNS resolver")?;
            Some(Arc::new(r))
        } else {
            None
        };
    let resolver: Option<Arc<dyn tern_dns::Resolver>> = if config.delivery.remote {
        hickory.clone().map(|r| r as Arc<dyn tern_dns::Resolver>)
    } else {
        None
    };
    let mailauth = tern_net::MailAuth {
        verifier: hickory.filter(|_| config.mail_auth.enabled).map(|dns| {
            Arc::new(
                tern_mailauth::Verifier::new(dns, &config.hostname, config.mail_auth.clone())
                    .with_own_domains(config.domains.keys().map(String::as_str)),
            )
        }),
        signer: tern_net::SignerHandle::new(signer),
        ..Default::default()
    };
    log_dkim_keys(config, &mailauth.signer.current());
    let dkim = (mailauth.signer.clone(), config.clone());
    let lmtp = config.lmtp_targets()?;
    let local_intake = tern_net::LocalIntake {
        store: Arc::clone(&store),
        lmtp_domains: lmtp.keys().cloned().collect(),
    };
    let (stop_delivery, delivery_shutdown) = watch::channel(false);
    let (delivery, delivery_task) = QueueManager {
        spool: spool.clone(),
        store,
        directory: Arc::clone(&directory),
        hostname: config.hostname.clone(),
        concurrency: config.delivery.concurrency,
        per_destination: config.delivery.per_destination,
        connection_reuse: config.delivery.connection_reuse,
        schedule: config.queue.clone(),
        resolver,
        outbound,
        lmtp,
        signer: dkim.0.clone(),
    }
    .start(delivery_shutdown);

    let tls = match tls {
        Some(t) => t,
        None => TlsManager::load(&tls_settings)?,
    };
    let auth_secret = load_or_create_secret(&data_dir.join("auth.secret"))?;
    // The users file is re-read when it changes (`tern user add` while running).
    let reloader = users.clone().map(|users| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                match users.reload_if_changed() {
                    Ok(true) => info!(users = users.current().len(), "users file reloaded"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "users file changed but cannot be loaded; keeping the previous users"),
                }
            }
        })
    });

    let l = &config.limits;
    // One mail store for IMAP and POP3: the same per-user stores and locks.
    let mailboxes = Arc::new(tern_store::mailbox::Mailboxes::new(
        data_dir.join("mail"),
        tern_store::mailbox::StoreConfig {
            hostname: config.hostname.clone(),
            quota_bytes: config.imap.quota,
            // A client that reconnects (or opens a second connection)
            // finds its user's store open, with the directory stamps and
            // the message lists of its last session.
            keep_open: 16,
            ..tern_store::mailbox::StoreConfig::default()
        },
    ));
    let ctx = Arc::new(tern_net::Context {
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
            message_data: l.message_data_timeout,
        },
        limiter: ConnectionLimiter::new(
            l.max_connections,
            l.max_connections_per_ip,
            l.abuse.ipv6_prefix,
        ),
        tls: Some(tls.clone()),
        handshake_timeout: config.tls.handshake_timeout,
        auth: AuthBackend {
            users: users.clone(),
            jwt,
            secret: auth_secret.clone(),
            gate: tern_net::gate::PasswordGate::default(),
        },
        submission: SubmissionPolicy {
            enforce_sender: config.submission.enforce_sender,
            fix_headers: config.submission.fix_headers,
        },
        abuse: Abuse::new(
            &l.abuse,
            l.rate_limit_exceptions
                .iter()
                .chain(&config.trusted_networks)
                .copied()
                .collect(),
        ),
        mailauth,
        local_intake: Some(local_intake),
        imap: Some(Arc::new(tern_net::imap::ImapService::new(
            Arc::clone(&mailboxes),
            config.imap.append_limit,
            config.imap.max_sessions_per_user,
        ))),
        pop3: Some(Arc::new(tern_net::pop3::Pop3Service::new(
            mailboxes,
            match config.pop3.delete_mode {
                config::Pop3DeleteMode::Expunge => tern_net::pop3::DeleteMode::Expunge,
                config::Pop3DeleteMode::MoveToTrash => tern_net::pop3::DeleteMode::MoveToTrash,
            },
            config.pop3.idle_timeout,
        ))),
    });
    let listeners: Vec<ListenerSpec> = config
        .listeners
        .iter()
        .map(|l| ListenerSpec {
            addr: l.address,
            role: match l.role {
                config::ListenerRole::Mx => Role::Mx,
                config::ListenerRole::Submission => Role::Submission,
                config::ListenerRole::Submissions => Role::Submissions,
                config::ListenerRole::Imap => Role::Imap,
                config::ListenerRole::Imaps => Role::Imaps,
                config::ListenerRole::Pop3 => Role::Pop3,
                config::ListenerRole::Pop3s => Role::Pop3s,
            },
            smtp: Arc::new(config.listener_server_config(l, &auth_secret)),
        })
        .collect();
    let admin = tern_net::admin::QueueAdmin {
        spool: ctx.spool.clone(),
        directory: Arc::clone(&ctx.directory),
        hostname: config.hostname.clone(),
        delivery: Some(ctx.delivery.clone()),
        signer: dkim.0.clone(),
    };
    let mut bound = Vec::with_capacity(listeners.len());
    for (socket, spec) in sockets.into_iter().zip(listeners) {
        let listener = socket
            .listen(LISTEN_BACKLOG)
            .with_context(|| format!("cannot listen on {}", spec.addr))?;
        bound.push((listener, spec));
    }
    let server = Server::with_listeners(ctx, bound);
    let addrs = server.local_addrs();
    // `<data_dir>/admin.sock`, 0600: `tern queue …` talks to us through it.
    let admin =
        tern_net::admin::AdminServer::bind(&data_dir.join(tern_net::admin::SOCKET_NAME), admin)?;
    let (stop, shutdown) = watch::channel(false);
    let admin = tokio::spawn(admin.run(stop.subscribe()));
    let server = tokio::spawn(server.run(shutdown));
    Ok(Running {
        addrs,
        stop,
        server,
        stop_delivery,
        delivery: delivery_task,
        tls,
        users,
        dkim,
        reloader,
        admin,
    })
}

/// Connections waiting to be accepted, per listener (tokio's default).
const LISTEN_BACKLOG: u32 = 1024;

/// A TCP socket bound to `addr` (address reuse on, as a listener needs
/// after a restart), not yet listening.
fn bind_socket(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// The server's SASL secret (fake credentials for unknown users must stay
/// the same across restarts): 32 random bytes, created once, mode 0600.
fn load_or_create_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Ok(bytes) = std::fs::read(path)
        && bytes.len() >= 32
    {
        return Ok(bytes);
    }
    let mut secret = vec![0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("no system randomness for {}", path.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&secret)?;
    f.sync_all()?;
    Ok(secret)
}

fn outbound_settings(config: &Config) -> anyhow::Result<tern_delivery::outbound::OutboundSettings> {
    use tern_delivery::outbound::{OutboundSettings, Smarthost, SmarthostTls};
    let d = &config.delivery;
    let smarthost = match &d.smarthost {
        None => None,
        Some(s) => {
            let password = match &s.password_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| {
                            format!(
                                "cannot read delivery.smarthost.password_file {}",
                                p.display()
                            )
                        })?
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                ),
                None => None,
            };
            Some(Smarthost {
                host: s.host.clone(),
                port: s.port,
                tls: match s.tls.as_str() {
                    "implicit" => SmarthostTls::Implicit,
                    "none" => SmarthostTls::None,
                    _ => SmarthostTls::Starttls,
                },
                auth: s.username.clone().zip(password),
                verify_certificate: s.tls_verify,
                ca_file: s.ca_file.clone(),
            })
        }
    };
    if let Some(s) = d.smarthost.as_ref().filter(|s| !s.tls_verify) {
        warn!(
            smarthost = %s.host,
            "delivery.smarthost.tls_verify = false: the smarthost's certificate is NOT verified; \
             anyone on the path can pose as it and read the mail and the AUTH password"
        );
    }
    let settings = OutboundSettings {
        helo_name: d
            .helo_name
            .clone()
            .unwrap_or_else(|| config.hostname.clone()),
        port: d.remote_port,
        smarthost,
        timeouts: tern_smtp::client::ClientTimeouts::default(),
        connect_timeout: d.connect_timeout,
        starttls: tern_smtp::client::StartTlsPolicy::Opportunistic,
    };
    // Said once at start, not as a deferral of every message: no system CA
    // bundle, an unreadable ca_file.
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("[delivery.smarthost]: {e}"))?;
    Ok(settings)
}

fn jwt_validator(o: &config::OAuthConfig) -> anyhow::Result<JwtValidator> {
    let key = std::fs::read(&o.key_file)
        .with_context(|| format!("cannot read auth.oauth.key_file {}", o.key_file.display()))?;
    let key = match o.algorithm.as_str() {
        "HS256" => JwtKey::Hs256(key),
        "RS256" => JwtKey::Rs256(key),
        _ => JwtKey::Es256(key),
    };
    let mut cfg = JwtConfig::new(key);
    cfg.issuer = o.issuer.clone();
    cfg.audience = o.audience.clone();
    if let Some(claim) = &o.user_claim {
        cfg.user_claim = claim.clone();
    }
    cfg.required_scope = o.required_scope.clone();
    JwtValidator::new(cfg).map_err(|e| anyhow::anyhow!("[auth.oauth]: {e}"))
}

/// One log line per DKIM key in force, per local domain.
fn log_dkim_keys(config: &Config, signer: &tern_mailauth::Signer) {
    for domain in config.domains.keys() {
        for key in signer.keys(domain) {
            info!(domain = %key.domain, selector = %key.selector, algorithm = %key.algorithm, "DKIM key loaded");
        }
    }
}
