//! The Tern mail server, wired together: configuration in, running
//! listeners and delivery out.
//!
//! [`config`] reads and validates the TOML configuration; [`start`] turns
//! it into running listeners, the queue and delivery (integration tests
//! call it directly to run a real server on ephemeral ports). The
//! commands that work on a server's data live beside it: [`mailbox_cmd`]
//! (`tern mailbox`, `tern quota`), [`trace_cmd`] (`tern trace`) and
//! [`privilege`] (dropping root). `main.rs` is the CLI around this. This
//! crate is the only one that uses `anyhow`: everything below it has
//! typed errors.
#![forbid(unsafe_code)]

pub mod config;
pub mod mailbox_cmd;
pub mod privilege;
pub mod trace_cmd;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context as _;
use ring::rand::{SecureRandom, SystemRandom};
use tern_net::{
    Abuse, AuthBackend, ListenerSpec, QueueManager, RelayPolicy, Role, Server, TlsManager,
};
use tern_queue::{Spool, SpoolOptions};
use tern_store::Directory;
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
    /// The HTTP listeners (admin API, autoconfig); stop with the listeners.
    http: Vec<tokio::task::JoinHandle<()>>,
    /// The delivery journal, closed (written out) last.
    journal: tern_queue::Journal,
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
        for h in self.http {
            let _ = h.await;
        }
        let _ = self.stop_delivery.send(true);
        let _ = self.delivery.await;
        let journal = self.journal.clone();
        let _ = tokio::task::spawn_blocking(move || journal.close()).await;
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
    start_with_clock(config, tern_net::filter::dnsbl::system_clock()).await
}

/// [`start`] with the clock (seconds since the epoch) greylisting and the
/// blocklist cache read: tests move time forward instead of sleeping.
pub async fn start_with_clock(
    config: &Config,
    clock: tern_net::filter::dnsbl::Clock,
) -> anyhow::Result<Running> {
    raise_open_files_limit();
    let plan = privilege::plan(config)?;
    // Before anything is opened: an admin listener off loopback answers
    // only with the token, so one must exist.
    for l in &config.listeners {
        if l.role == config::ListenerRole::Admin
            && tern_net::http::admin::token_required(l.address)
            && !tern_net::http::token::exists(&config.admin_token_file())
        {
            anyhow::bail!(
                "the admin listener on {} is not on loopback, so it needs a token: \
                 run `tern admin token --config ...` first (it stores the hash in {})",
                l.address,
                config.admin_token_file().display()
            );
        }
    }
    let signer = config.dkim_signer()?;
    let users = match &config.auth.users_file {
        Some(path) => Some(
            UserDbHandle::open(path)
                .with_context(|| format!("cannot load auth.users_file {}", path.display()))?,
        ),
        None => None,
    };
    let jwt = match &config.auth.oauth {
        Some(o) => Some(o.validator().map_err(|e| anyhow::anyhow!("auth.{e}"))?),
        None => None,
    };
    let outbound = Arc::new(
        config
            .delivery
            .outbound_settings(&config.hostname)
            .map_err(|e| anyhow::anyhow!("delivery.{e}"))?,
    );
    let tls_settings = config.tls.settings(&config.data_dir, &config.hostname);
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
    // The queue: the spool (one node), or the database every node shares.
    let queue = match config.queue.store.pg_config(&config.hostname)? {
        None => tern_queue_pg::AnyStore::File(tern_queue::store::FileStore::new(spool.clone())),
        Some(pg) => {
            let store = tern_queue_pg::PgStore::connect(&pg)
                .await
                .context("cannot open the queue database ([queue] url)")?;
            info!(node = %pg.node, "the queue is in PostgreSQL, shared by every node using it");
            tern_queue_pg::AnyStore::Postgres(store)
        }
    };
    // One mail store for every writer and reader: SMTP deliveries (at
    // intake, from the queue), IMAP and POP3 share the per-user stores,
    // locks and quota.
    let store = Arc::new(tern_store::mailbox::Mailboxes::new(
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
    let mailboxes = Arc::clone(&store);
    let directory = Arc::new(Directory::new(config.directory_config()?)?);
    let journal = if config.trace.enabled {
        tern_queue::Journal::open(&data_dir.join("journal"), config.trace.retention())
            .context("cannot open the delivery journal")?
    } else {
        tern_queue::Journal::disabled()
    };

    // One resolver for outbound delivery and the authentication checks.
    let uses_dnsbl = config
        .filters
        .iter()
        .any(|f| matches!(f, tern_filter::config::FilterConfig::Dnsbl(_)));
    let hickory: Option<Arc<tern_dns::HickoryResolver>> =
        if config.delivery.remote || config.mail_auth.enabled || uses_dnsbl {
            let r = tern_dns::HickoryResolver::new(config.dns.resolver_settings())
                .context("cannot set up the DNS resolver")?;
            Some(Arc::new(r))
        } else {
            None
        };
    // DNSBL lookups are counted and timed with the rest.
    let filters = Arc::new(build_pipeline(
        config,
        hickory.clone().map(|r| {
            Arc::new(tern_net::metrics::MeteredResolver(r)) as Arc<dyn tern_dns::Resolver>
        }),
        clock,
    )?);
    // Delivery's lookups are counted and timed (`tern_dns_lookups_total`).
    let resolver: Option<Arc<dyn tern_dns::Resolver>> = if config.delivery.remote {
        hickory
            .clone()
            .map(|r| Arc::new(tern_net::metrics::MeteredResolver(r)) as Arc<dyn tern_dns::Resolver>)
    } else {
        None
    };
    // `/readyz` asks whether the DNS answers when something needs it.
    let ready_resolver: Option<Arc<dyn tern_dns::Resolver>> = hickory
        .clone()
        .map(|r| Arc::new(tern_net::metrics::MeteredResolver(r)) as Arc<dyn tern_dns::Resolver>);
    let mailauth = tern_net::MailAuth {
        verifier: hickory.filter(|_| config.mail_auth.enabled).map(|dns| {
            Arc::new(
                tern_mailauth::Verifier::new(dns, &config.hostname, config.mail_auth.clone())
                    .with_own_domains(config.domains.keys().map(String::as_str))
                    .with_dns_observer(Arc::new(tern_net::metrics::MailAuthDnsMetrics)),
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
    };
    let (stop_delivery, delivery_shutdown) = watch::channel(false);
    let (delivery, delivery_task) = QueueManager {
        queue: queue.clone(),
        lease_ttl: std::time::Duration::from_secs(config.queue.store.lease_seconds),
        spool: spool.clone(),
        store,
        directory: Arc::clone(&directory),
        hostname: config.hostname.clone(),
        concurrency: config.delivery.concurrency,
        per_destination: config.delivery.per_destination,
        connection_reuse: config.delivery.connection_reuse,
        schedule: config.queue.schedule.clone(),
        resolver,
        outbound,
        lmtp,
        signer: dkim.0.clone(),
        journal: journal.clone(),
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
    let ctx = Arc::new(tern_net::Context {
        hostname: config.hostname.clone(),
        journal: journal.clone(),
        directory,
        relay: RelayPolicy {
            trusted_networks: config.trusted_networks.clone(),
        },
        spool,
        queue,
        delivery,
        timeouts: l.timeouts(),
        limiter: l.connection_limiter(&config.trusted_networks),
        tls: Some(tls.clone()),
        handshake_timeout: config.tls.handshake_timeout,
        auth: AuthBackend {
            users: users.clone(),
            jwt,
            secret: auth_secret.clone(),
            gate: tern_net::gate::PasswordGate::default(),
        },
        submission: config.submission,
        abuse: Abuse::new(&l.abuse, l.exempt(&config.trusted_networks)),
        mailauth,
        filters: Arc::clone(&filters),
        local_intake: Some(local_intake),
        imap: Some(Arc::new({
            let mut imap = tern_net::imap::ImapService::new(
                Arc::clone(&mailboxes),
                config.imap.append_limit,
                config.imap.max_sessions_per_user,
            );
            imap.learner = imap_learner(&filters);
            imap
        })),
        pop3: Some(Arc::new(tern_net::pop3::Pop3Service::new(
            mailboxes,
            config.pop3.delete_mode,
            config.pop3.idle_timeout,
            config.pop3.login_delay,
        ))),
    });
    let listeners: Vec<ListenerSpec> = config
        .listeners
        .iter()
        .filter(|l| !l.role.is_http())
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
                config::ListenerRole::Admin
                | config::ListenerRole::Autoconfig
                | config::ListenerRole::Autoconfigs => unreachable!("filtered out above"),
            },
            smtp: Arc::new(config.listener_server_config(l, &auth_secret)),
            idle_timeout: l.idle_timeout,
        })
        .collect();
    let admin = tern_net::admin::QueueAdmin {
        queue: ctx.queue.clone(),
        directory: Arc::clone(&ctx.directory),
        hostname: config.hostname.clone(),
        delivery: Some(ctx.delivery.clone()),
        signer: dkim.0.clone(),
        journal: journal.clone(),
    };
    // Every socket listens now; the addresses are reported in config order.
    let mut addrs = Vec::with_capacity(sockets.len());
    let mut mail_listeners = Vec::new();
    let mut http_listeners = Vec::new();
    for (socket, l) in sockets.into_iter().zip(&config.listeners) {
        let listener = socket
            .listen(LISTEN_BACKLOG)
            .with_context(|| format!("cannot listen on {}", l.address))?;
        addrs.push(listener.local_addr()?);
        if l.role.is_http() {
            http_listeners.push((listener, l.role));
        } else {
            mail_listeners.push(listener);
        }
    }
    let bound: Vec<_> = mail_listeners.into_iter().zip(listeners).collect();
    let mail_count = bound.len();
    let server = Server::with_listeners(Arc::clone(&ctx), bound);
    tern_net::metrics::metrics().watch_spool(ctx.spool.clone());
    if let tern_queue_pg::AnyStore::Postgres(shared) = &ctx.queue {
        tern_net::metrics::metrics().watch_shared_queue(shared.clone(), stop_delivery.subscribe());
    }
    let http = http_services(
        config,
        &addrs,
        http_listeners,
        &admin,
        &ctx,
        ready_resolver,
        mail_count,
        server.live_listeners(),
    )?;
    // `<data_dir>/admin.sock`, 0600: `tern queue …` talks to us through it.
    let admin =
        tern_net::admin::AdminServer::bind(&data_dir.join(tern_net::admin::SOCKET_NAME), admin)?;
    let (stop, shutdown) = watch::channel(false);
    let admin = tokio::spawn(admin.run(stop.subscribe()));
    let http = http
        .into_iter()
        .map(|h| tokio::spawn(h.run(stop.subscribe())))
        .collect();
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
        http,
        journal,
    })
}

/// The `[[filter]]` stages as the runtime's pipeline. Opens the greylist
/// database (in `data_dir`, so after the privilege switch) and reads the
/// rspamd controller's password.
fn build_pipeline(
    config: &Config,
    resolver: Option<Arc<dyn tern_dns::Resolver>>,
    clock: tern_net::filter::dnsbl::Clock,
) -> anyhow::Result<tern_net::filter::Pipeline> {
    let env = tern_net::filter::BuildEnv {
        resolver,
        clock,
        data_dir: config.data_dir.clone(),
    };
    Ok(tern_net::filter::Pipeline::from_config(
        &config.filters,
        &env,
    )?)
}

/// The rspamd stage that can learn (the first with a `controller`).
pub fn spam_learner(
    pipeline: &tern_net::filter::Pipeline,
) -> Option<Arc<tern_net::filter::rspamd::Rspamd>> {
    pipeline.stages().iter().find_map(|s| match &s.kind {
        tern_net::filter::StageKind::Rspamd(r) if r.settings().controller.is_some() => {
            Some(Arc::clone(r))
        }
        _ => None,
    })
}

/// IMAP moves into and out of Junk, told to rspamd's controller in the
/// background (when an rspamd stage has one).
fn imap_learner(pipeline: &tern_net::filter::Pipeline) -> Option<tern_net::imap::learn::Learner> {
    let rspamd = spam_learner(pipeline)?;
    let handle = tokio::runtime::Handle::current();
    Some(tern_net::imap::learn::Learner::new(move |kind, file| {
        let rspamd = Arc::clone(&rspamd);
        handle.spawn(async move {
            let what = match kind {
                tern_filter::rspamd::Learn::Spam => "spam",
                tern_filter::rspamd::Learn::Ham => "ham",
            };
            match rspamd
                .learn(kind, file, std::time::Duration::from_secs(60))
                .await
            {
                Ok(true) => info!(learned = what, "rspamd learned a message moved by a user"),
                Ok(false) => info!(learned = what, "rspamd already knew a message moved by a user"),
                Err(e) => warn!(learned = what, error = %e, "rspamd could not learn a message moved by a user"),
            }
        });
    }))
}

/// The pipeline of `config` for commands that run beside the server
/// (`tern spam learn`): stages built, nothing opened in `data_dir` that
/// the server holds (greylisting is left out).
pub fn command_pipeline(config: &Config) -> anyhow::Result<tern_net::filter::Pipeline> {
    let mut c = config.clone();
    c.filters.0.retain(|f| {
        !matches!(
            f,
            tern_filter::config::FilterConfig::Greylist(_)
                | tern_filter::config::FilterConfig::Dnsbl(_)
        )
    });
    build_pipeline(&c, None, tern_net::filter::dnsbl::system_clock())
}

/// The admin API and autoconfig services of the HTTP listeners.
#[allow(clippy::too_many_arguments)]
fn http_services(
    config: &Config,
    bound: &[SocketAddr],
    listeners: Vec<(tokio::net::TcpListener, config::ListenerRole)>,
    queue: &tern_net::admin::QueueAdmin,
    ctx: &Arc<tern_net::Context>,
    resolver: Option<Arc<dyn tern_dns::Resolver>>,
    mail_listeners: usize,
    live: Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<Vec<tern_net::http::HttpListener>> {
    use tern_net::http::{HttpListener, HttpService, admin, site};
    let mut api: Option<Arc<admin::AdminApi>> = None;
    let mut autoconfig: Option<Arc<site::AutoconfigSite>> = None;
    let token_file = config.admin_token_file();
    let mut out = Vec::with_capacity(listeners.len());
    for (listener, role) in listeners {
        let addr = listener.local_addr()?;
        let service = match role {
            config::ListenerRole::Admin => {
                let require_token = admin::token_required(addr);
                let api = api.get_or_insert_with(|| {
                    Arc::new(admin::AdminApi {
                        queue: queue.clone(),
                        users_file: config.auth.users_file.clone(),
                        dns: tern_net::dnsrecords::DnsSettings {
                            services: config.client_services_bound(bound),
                            ..config.dns_settings()
                        },
                        token_file: token_file.clone(),
                        journal_dir: config
                            .trace
                            .enabled
                            .then(|| config.data_dir.join("journal")),
                        ready: admin::Readiness {
                            listeners: mail_listeners,
                            live: Arc::clone(&live),
                            spool: ctx.spool.clone(),
                            resolver: resolver.clone(),
                            probe_name: config
                                .domains
                                .keys()
                                .next()
                                .cloned()
                                .unwrap_or_else(|| config.hostname.clone()),
                            dns_seen: std::sync::Mutex::new(None),
                        },
                    })
                });
                HttpService::Admin {
                    api: Arc::clone(api),
                    require_token,
                }
            }
            _ => HttpService::Autoconfig(Arc::clone(autoconfig.get_or_insert_with(|| {
                Arc::new(site::AutoconfigSite {
                    services: config.client_services_bound(bound),
                    domains: config.domains.keys().cloned().collect(),
                })
            }))),
        };
        info!(%addr, role = %role, "HTTP listener ready");
        out.push(HttpListener {
            listener,
            service,
            tls: (role == config::ListenerRole::Autoconfigs)
                .then(|| ctx.tls.clone())
                .flatten(),
            handshake_timeout: config.tls.handshake_timeout,
        });
    }
    Ok(out)
}

/// Raises the soft limit on open files to the hard limit (every session
/// holds a socket and, while receiving, a file), and logs the figure.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open files limit"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open files limit"),
        },
        Ok((soft, _)) => info!(limit = soft, "open files limit"),
        Err(e) => warn!(error = %e, "cannot read the open files limit"),
    }
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

/// One log line per DKIM key in force, per local domain.
fn log_dkim_keys(config: &Config, signer: &tern_mailauth::Signer) {
    for domain in config.domains.keys() {
        for key in signer.keys(domain) {
            info!(domain = %key.domain, selector = %key.selector, algorithm = %key.algorithm, "DKIM key loaded");
        }
    }
}
