//! Prometheus metrics: what the server counts, and the text `GET /metrics`
//! serves (OpenMetrics text format, `prometheus-client`).
//!
//! **One set per process.** Like Prometheus's own client libraries, the
//! counters live in one process-wide [`Metrics`] ([`metrics()`]): every
//! part of the runtime reaches it without plumbing, and one process runs
//! one server. (Tests that count exactly therefore run one server in their
//! own test binary.)
//!
//! **Cheap on the hot path.** Every label set known in advance (role ×
//! outcome, destination kind × result, DNS query type × result, …) is
//! resolved once, when the set is made: counting is one relaxed atomic
//! add, with no lock, no hashing and no allocation. Histograms are
//! [`Histogram`]s of atomics (the `prometheus-client` one takes a lock per
//! observation). Only label values that are not known in advance (the
//! enhanced status code of a refusal, an AUTH mechanism, a TLS version, an
//! SPF result) go through a `Family` lookup, and those are not per-byte or
//! per-message work on the accepting path.
//!
//! **At scrape time** the queue (messages and oldest age by state, read
//! from the spool's ids and state files, at most once every
//! [`QUEUE_SCAN_EVERY`]), the group committer's batch sizes and the
//! process (file descriptors, resident memory, CPU, from `/proc/self`)
//! are read by a collector; rendering is blocking work and the HTTP
//! server runs it off the async threads.
//!
//! Names follow the Prometheus conventions: `tern_` prefix, counters end in
//! `_total`, durations are `_seconds`, sizes `_bytes`. What this module
//! must never do: put a client-chosen string into a label (cardinality is
//! bounded by our own vocabularies), or block a session.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use tern_queue::{RecipientState, Spool, WeakSpool};
use tern_smtp::reply::Reply;

use crate::server::Role;

/// The queue is scanned for `tern_queue_*` at most this often.
pub const QUEUE_SCAN_EVERY: Duration = Duration::from_secs(5);

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// ------------------------------------------------------------ vocabularies

/// Listener roles, in the order of the pre-resolved arrays.
const ROLES: [Role; 7] = [
    Role::Mx,
    Role::Submission,
    Role::Submissions,
    Role::Imap,
    Role::Imaps,
    Role::Pop3,
    Role::Pop3s,
];

fn role_index(role: Role) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap_or(0)
}

/// How a session ended (`tern_sessions_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    /// The protocol ended it (QUIT, LOGOUT, or the server closed it after
    /// an error reply).
    Closed,
    /// The client stopped answering within the time limits.
    Timeout,
    /// The client went away (or the socket failed) without ending it.
    Disconnected,
    /// The server shut down.
    Shutdown,
    /// The TLS handshake (implicit TLS or STARTTLS) failed.
    TlsFailed,
    /// Refused at connect by the connection limits or rate limits.
    Refused,
    /// Closed to make room for a new client when the server was full.
    Evicted,
}

impl SessionOutcome {
    const ALL: [SessionOutcome; 7] = [
        SessionOutcome::Closed,
        SessionOutcome::Timeout,
        SessionOutcome::Disconnected,
        SessionOutcome::Shutdown,
        SessionOutcome::TlsFailed,
        SessionOutcome::Refused,
        SessionOutcome::Evicted,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionOutcome::Closed => "closed",
            SessionOutcome::Timeout => "timeout",
            SessionOutcome::Disconnected => "disconnected",
            SessionOutcome::Shutdown => "shutdown",
            SessionOutcome::TlsFailed => "tls_failed",
            SessionOutcome::Refused => "refused",
            SessionOutcome::Evicted => "evicted",
        }
    }
}

/// Where a recipient was delivered (`tern_deliveries_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// A local Maildir (at intake or from the queue).
    Local,
    /// A mailbox server over LMTP.
    Lmtp,
    /// Another domain's MX.
    Remote,
    /// The configured smarthost.
    Smarthost,
}

impl DestinationKind {
    const ALL: [DestinationKind; 4] = [
        DestinationKind::Local,
        DestinationKind::Lmtp,
        DestinationKind::Remote,
        DestinationKind::Smarthost,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Local => "local",
            DestinationKind::Lmtp => "lmtp",
            DestinationKind::Remote => "remote",
            DestinationKind::Smarthost => "smarthost",
        }
    }
}

const DELIVERY_RESULTS: [&str; 4] = ["delivered", "deferred", "failed", "expired"];

fn delivery_result_index(state: &RecipientState) -> Option<usize> {
    match state {
        RecipientState::Delivered { .. } => Some(0),
        RecipientState::Deferred { .. } => Some(1),
        RecipientState::Failed { .. } => Some(2),
        RecipientState::Expired { .. } => Some(3),
        RecipientState::Pending => None,
    }
}

/// Which delivery status notification was queued (`tern_dsn_sent_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnSent {
    /// Failure (bounce).
    Failure,
    /// Delay warning.
    Delay,
    /// Delivered (NOTIFY=SUCCESS).
    Success,
    /// Relayed to a server that does not pass DSN requests on.
    Relayed,
}

const DSN_KINDS: [&str; 4] = ["failure", "delay", "success", "relayed"];

/// DNS query types (`tern_dns_lookups_total{type}`).
const DNS_TYPES: [&str; 5] = ["mx", "ip", "txt", "srv", "ptr"];
/// `noanswer`: a lookup of the inbound checks (SPF, DKIM, DMARC, ARC,
/// iprev) that got no usable answer — `mail-auth` does not say whether it
/// was NXDOMAIN, no records or an error (see `tern_mailauth::dnsmeter`).
const DNS_RESULTS: [&str; 5] = ["ok", "nxdomain", "nodata", "error", "noanswer"];

/// Which query a [`MeteredResolver`] answered.
#[derive(Debug, Clone, Copy)]
enum DnsType {
    Mx = 0,
    Ip = 1,
    Txt = 2,
    Srv = 3,
    Ptr = 4,
}

// ------------------------------------------------------------ histogram

/// A histogram of atomics: observing is a few relaxed atomic operations
/// (the sum is kept in millionths, which is exact enough for seconds and
/// bytes alike). Clones share the counts.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last is `+Inf`.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum of the observations, in millionths.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramInner {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }))
    }

    /// Adds one observation.
    pub fn observe(&self, v: f64) {
        let h = &self.0;
        let i = h
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(h.bounds.len());
        h.buckets[i].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        let micros = if v.is_finite() && v > 0.0 {
            (v * 1e6) as u64
        } else {
            0
        };
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observes the time since `start`, in seconds.
    pub fn observe_since(&self, start: Instant) {
        self.observe(start.elapsed().as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// (sum, count, per-bucket counts): not cumulative, which is what
    /// `prometheus-client`'s encoder takes (it adds them up itself).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let h = &self.0;
        let mut count = 0;
        let mut buckets = Vec::with_capacity(h.buckets.len());
        for (i, n) in h.buckets.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            count += n;
            buckets.push((h.bounds.get(i).copied().unwrap_or(f64::MAX), n));
        }
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Latency buckets (seconds): 1 ms to 1 minute.
const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Delivery latency from acceptance (seconds): 10 ms to 5 days.
const DELIVERY_LATENCY: &[f64] = &[
    0.01, 0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0, 432_000.0,
];
/// Message sizes (bytes): 1 KiB to 50 MiB.
const SIZES: &[f64] = &[
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    52_428_800.0,
];

/// Filter stage call time (seconds): 1 ms to 2 minutes.
const FILTER_LATENCY: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

fn filter_histogram() -> Histogram {
    Histogram::new(FILTER_LATENCY)
}

// ------------------------------------------------------------ the set

type StaticLabels<const N: usize> = [(&'static str, &'static str); N];
type DynLabels<const N: usize> = [(&'static str, Cow<'static, str>); N];

fn histogram_family<const N: usize>(
    bounds: &'static [f64],
) -> Family<StaticLabels<N>, Histogram, impl Fn() -> Histogram + Clone> {
    Family::new_with_constructor(move || Histogram::new(bounds))
}

/// Every metric Tern keeps (see the module documentation).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions: Vec<[Counter; 7]>,
    open: Vec<Gauge>,
    received: Vec<Counter>,
    recipients: Vec<Counter>,
    message_size: Histogram,
    rejected: Family<DynLabels<2>, Counter>,
    rcpt_rejected: Family<DynLabels<1>, Counter>,
    auth: Family<DynLabels<3>, Counter>,
    tls: Family<DynLabels<1>, Counter>,
    commit: Histogram,
    commit_failed: Counter,
    stress: Gauge,
    stress_entered: Counter,
    deliveries: Vec<[Counter; 4]>,
    delivery_latency: Vec<Histogram>,
    dsn: [Counter; 4],
    dns: Vec<[Counter; 5]>,
    dns_latency: Vec<Histogram>,
    mailauth: Family<DynLabels<2>, Counter>,
    http: Family<DynLabels<2>, Counter>,
    filter_verdicts: Family<DynLabels<3>, Counter>,
    filter_failures: Family<DynLabels<1>, Counter>,
    filter_seconds: Family<DynLabels<1>, Histogram, fn() -> Histogram>,
    scrape: Arc<ScrapeState>,
}

/// The one set of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tern");
        let started = SystemTime::now();

        let sessions = Family::<StaticLabels<2>, Counter>::default();
        registry.register(
            "sessions",
            "Sessions by listener role and how they ended",
            sessions.clone(),
        );
        let open = Family::<StaticLabels<1>, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open now, by listener role",
            open.clone(),
        );
        let received = Family::<StaticLabels<1>, Counter>::default();
        registry.register(
            "messages_received",
            "Messages accepted (250 after the data), by listener role",
            received.clone(),
        );
        let recipients = Family::<StaticLabels<1>, Counter>::default();
        registry.register(
            "recipients",
            "Envelope recipients of accepted messages (after alias expansion), by listener role",
            recipients.clone(),
        );
        let message_size = Histogram::new(SIZES);
        registry.register(
            "message_size_bytes",
            "Sizes of accepted messages",
            message_size.clone(),
        );
        let rejected = Family::<DynLabels<2>, Counter>::default();
        registry.register(
            "messages_rejected",
            "Messages refused at the end of the data, by reason and enhanced status code",
            rejected.clone(),
        );
        let rcpt_rejected = Family::<DynLabels<1>, Counter>::default();
        registry.register(
            "recipients_rejected",
            "RCPT TO commands refused, by enhanced status code",
            rcpt_rejected.clone(),
        );
        let auth = Family::<DynLabels<3>, Counter>::default();
        registry.register(
            "auth",
            "Authentication attempts by protocol, SASL mechanism and result",
            auth.clone(),
        );
        let tls = Family::<DynLabels<1>, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes by protocol version (\"failed\": the handshake failed)",
            tls.clone(),
        );
        let commit = Histogram::new(LATENCY);
        registry.register(
            "spool_commit_seconds",
            "Time from the end of the data to the message being on stable storage",
            commit.clone(),
        );
        let commit_failed = Counter::default();
        registry.register(
            "spool_commit_failures",
            "Commits to the spool that failed (answered 4xx)",
            commit_failed.clone(),
        );
        let stress = Gauge::default();
        registry.register(
            "stress_mode",
            "1 while the server is in stress mode (short timeouts, eviction), else 0",
            stress.clone(),
        );
        let stress_entered = Counter::default();
        registry.register(
            "stress_mode_entered",
            "Times the server entered stress mode",
            stress_entered.clone(),
        );
        let deliveries = Family::<StaticLabels<2>, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery results per recipient, by destination kind and result",
            deliveries.clone(),
        );
        let delivery_latency = histogram_family::<1>(DELIVERY_LATENCY);
        registry.register(
            "delivery_latency_seconds",
            "Time from acceptance to delivery, by destination kind",
            delivery_latency.clone(),
        );
        let dsn = Family::<StaticLabels<1>, Counter>::default();
        registry.register(
            "dsn_sent",
            "Delivery status notifications queued for senders, by kind",
            dsn.clone(),
        );
        let dns = Family::<StaticLabels<2>, Counter>::default();
        registry.register(
            "dns_lookups",
            "DNS lookups by query type and result",
            dns.clone(),
        );
        let dns_latency = histogram_family::<1>(LATENCY);
        registry.register(
            "dns_lookup_seconds",
            "DNS lookup time by query type",
            dns_latency.clone(),
        );
        let mailauth = Family::<DynLabels<2>, Counter>::default();
        registry.register(
            "mailauth_results",
            "Inbound SPF, DKIM, DMARC and ARC results",
            mailauth.clone(),
        );
        let http = Family::<DynLabels<2>, Counter>::default();
        registry.register(
            "http_requests",
            "Requests to the admin and autoconfig listeners, by listener and status",
            http.clone(),
        );
        let filter_verdicts = Family::<DynLabels<3>, Counter>::default();
        registry.register(
            "filter_verdicts",
            "Filter pipeline verdicts by stage (its configured name), hook and action",
            filter_verdicts.clone(),
        );
        let filter_failures = Family::<DynLabels<1>, Counter>::default();
        registry.register(
            "filter_failures",
            "Filter stage calls that failed (dead, slow or garbage-speaking scanner) and got the stage's fail verdict",
            filter_failures.clone(),
        );
        let filter_seconds: Family<DynLabels<1>, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(filter_histogram);
        registry.register(
            "filter_stage_seconds",
            "Time of one filter stage call, by stage",
            filter_seconds.clone(),
        );
        let scrape = Arc::new(ScrapeState {
            spool: Mutex::new(None),
            queue: Mutex::new(None),
            shared: std::sync::atomic::AtomicBool::new(false),
            started,
        });
        registry.register_collector(Box::new(ScrapeCollector(Arc::clone(&scrape))));

        let sessions = ROLES
            .iter()
            .map(|r| {
                SessionOutcome::ALL.map(|o| {
                    sessions
                        .get_or_create(&[("role", role_name(*r)), ("outcome", o.as_str())])
                        .clone()
                })
            })
            .collect();
        let per_role = |f: &Family<StaticLabels<1>, Counter>| -> Vec<Counter> {
            ROLES
                .iter()
                .map(|r| f.get_or_create(&[("role", role_name(*r))]).clone())
                .collect()
        };
        let open_by_role = ROLES
            .iter()
            .map(|r| open.get_or_create(&[("role", role_name(*r))]).clone())
            .collect();
        let deliveries_by_kind = DestinationKind::ALL
            .iter()
            .map(|k| {
                DELIVERY_RESULTS.map(|r| {
                    deliveries
                        .get_or_create(&[("kind", k.as_str()), ("result", r)])
                        .clone()
                })
            })
            .collect();
        let latency_by_kind = DestinationKind::ALL
            .iter()
            .map(|k| {
                delivery_latency
                    .get_or_create(&[("kind", k.as_str())])
                    .clone()
            })
            .collect();
        let dns_by_type = DNS_TYPES
            .iter()
            .map(|t| DNS_RESULTS.map(|r| dns.get_or_create(&[("type", t), ("result", r)]).clone()))
            .collect();
        let dns_latency_by_type = DNS_TYPES
            .iter()
            .map(|t| dns_latency.get_or_create(&[("type", t)]).clone())
            .collect();
        Metrics {
            stress,
            stress_entered,
            sessions,
            open: open_by_role,
            received: per_role(&received),
            recipients: per_role(&recipients),
            message_size,
            rejected,
            rcpt_rejected,
            auth,
            tls,
            commit,
            commit_failed,
            deliveries: deliveries_by_kind,
            delivery_latency: latency_by_kind,
            dsn: DSN_KINDS.map(|k| dsn.get_or_create(&[("kind", k)]).clone()),
            dns: dns_by_type,
            dns_latency: dns_latency_by_type,
            mailauth,
            http,
            filter_verdicts,
            filter_failures,
            filter_seconds,
            scrape,
            registry,
        }
    }

    /// The queue whose messages `tern_queue_*` report (the server's spool).
    pub fn watch_spool(&self, spool: Spool) {
        *lock(&self.scrape.spool) = Some(spool.downgrade());
        *lock(&self.scrape.queue) = None;
        self.scrape
            .shared
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// The queue `tern_queue_*` report is the database `store` (every
    /// node's messages, [`PgStore::state_counts`](tern_queue_pg::PgStore::state_counts)),
    /// counted every [`QUEUE_SCAN_EVERY`] by a task that ends with
    /// `shutdown`; the spool's commit histogram still comes from
    /// [`watch_spool`](Self::watch_spool).
    pub fn watch_shared_queue(
        &'static self,
        store: tern_queue_pg::PgStore,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        self.scrape
            .shared
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(QUEUE_SCAN_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                match store.state_counts().await {
                    Ok(counts) => {
                        let c = QueueCounts {
                            messages: counts.map(|(n, _)| n),
                            oldest: counts.map(|(_, age)| age),
                        };
                        *lock(&self.scrape.queue) = Some((Instant::now(), c));
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot count the shared queue"),
                }
            }
        });
    }

    /// Everything, in the OpenMetrics text format (ends with `# EOF`).
    /// Blocking: it may scan the queue.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }

    // -------------------------------------------------------- sessions

    /// The server entered (`true`) or left stress mode.
    pub fn stress_changed(&self, on: bool) {
        self.stress.set(i64::from(on));
        if on {
            self.stress_entered.inc();
        }
    }

    /// A connection was admitted on a `role` listener: counted open until
    /// the guard is dropped.
    pub fn connection_opened(&self, role: Role) -> OpenConnection {
        let gauge = &self.open[role_index(role)];
        gauge.inc();
        OpenConnection {
            gauge: gauge.clone(),
        }
    }

    /// A session on a `role` listener ended with `outcome`.
    pub fn session_ended(&self, role: Role, outcome: SessionOutcome) {
        let o = SessionOutcome::ALL
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(0);
        self.sessions[role_index(role)][o].inc();
    }

    // -------------------------------------------------------- messages

    /// A message was accepted on a `role` listener.
    pub fn message_received(&self, role: Role, size: u64, recipients: usize) {
        let i = role_index(role);
        self.received[i].inc();
        self.recipients[i].inc_by(recipients as u64);
        self.message_size.observe(size as f64);
    }

    /// A message was refused at the end of its data with `reply`;
    /// `reason` is one of our own words (`policy`, `filter` (the
    /// authentication checks or another filter stage), `filter_tempfail`,
    /// `quota`, `storage`, `too_big`, …).
    pub fn message_rejected(&self, reason: &'static str, reply: &Reply) {
        self.rejected
            .get_or_create(&[("reason", reason.into()), ("code", status_label(reply))])
            .inc();
    }

    /// A message the session refused itself (its size, line endings, …).
    pub fn message_aborted(&self, reason: tern_smtp::server::AbortReason) {
        use tern_smtp::server::AbortReason as A;
        let (reason, code) = match reason {
            A::TooBig => ("too_big", "5.3.4"),
            A::BareLineEnding => ("bare_line_ending", "5.6.0"),
            A::TooManyReceived => ("mail_loop", "5.4.6"),
            A::LineTooLong => ("line_too_long", "5.5.2"),
            // Not refusals: the client or the server stopped the message.
            _ => return,
        };
        self.rejected
            .get_or_create(&[("reason", reason.into()), ("code", code.into())])
            .inc();
    }

    /// A recipient was refused with `reply`.
    pub fn recipient_rejected(&self, reply: &Reply) {
        self.rcpt_rejected
            .get_or_create(&[("code", status_label(reply))])
            .inc();
    }

    /// The spool commit of one message took since `start`; `ok` false: it failed.
    pub fn committed(&self, start: Instant, ok: bool) {
        if ok {
            self.commit.observe_since(start);
        } else {
            self.commit_failed.inc();
        }
    }

    // -------------------------------------------------------- auth and TLS

    /// An authentication attempt over `protocol` (`smtp`, `imap`, `pop3`)
    /// with `mechanism` ended (`ok`: it succeeded); `""` for a mechanism
    /// the session does not name (`mechanism="unknown"`). Called only by
    /// the authentication service (`crate::auth`).
    pub fn auth(&self, protocol: &'static str, mechanism: &str, ok: bool) {
        let mechanism = mechanism_label(mechanism);
        let result: &'static str = if ok { "success" } else { "failure" };
        self.auth
            .get_or_create(&[
                ("protocol", protocol.into()),
                ("mechanism", mechanism),
                ("result", result.into()),
            ])
            .inc();
    }

    /// A TLS handshake completed with `version` (`TLSv1.3`), or failed (`None`).
    pub fn tls_handshake(&self, version: Option<&str>) {
        let v: Cow<'static, str> = match version {
            Some("TLSv1.3") => "TLSv1.3".into(),
            Some("TLSv1.2") => "TLSv1.2".into(),
            Some(_) => "other".into(),
            None => "failed".into(),
        };
        self.tls.get_or_create(&[("version", v)]).inc();
    }

    // -------------------------------------------------------- delivery

    /// One recipient's attempt to a `kind` destination ended in `state`;
    /// the message was received at `received_micros` (microseconds since
    /// the Unix epoch, as in its queue id; `None`: unknown, no latency is
    /// observed).
    pub fn delivery(
        &self,
        kind: DestinationKind,
        state: &RecipientState,
        received_micros: Option<u64>,
    ) {
        let Some(r) = delivery_result_index(state) else {
            return;
        };
        let k = DestinationKind::ALL
            .iter()
            .position(|x| *x == kind)
            .unwrap_or(0);
        self.deliveries[k][r].inc();
        if r == 0
            && let Some(at) = received_micros
        {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            self.delivery_latency[k].observe(now.saturating_sub(at) as f64 / 1e6);
        }
    }

    /// A message was delivered to `recipients` local mailboxes at intake:
    /// delivered the moment it was accepted.
    pub fn delivered_at_intake(&self, recipients: usize) {
        let k = 0;
        self.deliveries[k][0].inc_by(recipients as u64);
        for _ in 0..recipients {
            self.delivery_latency[k].observe(0.0);
        }
    }

    /// A delivery status notification of `kind` was queued.
    pub fn dsn_sent(&self, kind: DsnSent) {
        let i = match kind {
            DsnSent::Failure => 0,
            DsnSent::Delay => 1,
            DsnSent::Success => 2,
            DsnSent::Relayed => 3,
        };
        self.dsn[i].inc();
    }

    // -------------------------------------------------------- DNS and mail auth

    fn dns_lookup<T>(&self, t: DnsType, start: Instant, r: &Result<T, tern_dns::DnsError>) {
        use tern_dns::DnsError as E;
        let result = match r {
            Ok(_) => 0,
            Err(E::NxDomain { .. }) => 1,
            Err(E::NoRecords { .. }) => 2,
            Err(_) => 3,
        };
        self.dns[t as usize][result].inc();
        self.dns_latency[t as usize].observe_since(start);
    }

    fn mailauth_lookup(
        &self,
        kind: tern_mailauth::LookupKind,
        outcome: tern_mailauth::LookupOutcome,
        elapsed: Option<std::time::Duration>,
    ) {
        use tern_mailauth::{LookupKind as K, LookupOutcome as O};
        let t = match kind {
            K::Txt => DnsType::Txt,
            K::Mx => DnsType::Mx,
            K::Ip => DnsType::Ip,
            K::Ptr => DnsType::Ptr,
            _ => return,
        };
        let result = match outcome {
            O::Answered => 0,
            _ => 4,
        };
        self.dns[t as usize][result].inc();
        if let Some(e) = elapsed {
            self.dns_latency[t as usize].observe(e.as_secs_f64());
        }
    }

    /// Counts the results named in an authentication summary
    /// (`spf=pass dkim=fail dmarc=none …`).
    pub fn mailauth_summary(&self, summary: &str) {
        for token in summary.split([' ', ';', ',']) {
            let Some((method, result)) = token.split_once('=') else {
                continue;
            };
            let method: &'static str = match method.trim().to_ascii_lowercase().as_str() {
                "spf" => "spf",
                "dkim" => "dkim",
                "dmarc" => "dmarc",
                "arc" => "arc",
                "iprev" => "iprev",
                _ => continue,
            };
            let result: &'static str = match result.trim().to_ascii_lowercase().as_str() {
                "pass" => "pass",
                "fail" => "fail",
                "softfail" => "softfail",
                "neutral" => "neutral",
                "none" => "none",
                "temperror" => "temperror",
                "permerror" => "permerror",
                "policy" => "policy",
                _ => "other",
            };
            self.mailauth
                .get_or_create(&[("method", method.into()), ("result", result.into())])
                .inc();
        }
    }

    /// A filter stage's verdict at a hook (`stage` is the admin's name
    /// for it, from the configuration: a bounded vocabulary), and the
    /// time the call took.
    pub fn filter_verdict(
        &self,
        stage: &str,
        hook: &'static str,
        action: &'static str,
        elapsed: Duration,
    ) {
        self.filter_verdicts
            .get_or_create(&[
                ("stage", Cow::Owned(stage.to_owned())),
                ("hook", hook.into()),
                ("action", action.into()),
            ])
            .inc();
        self.filter_seconds
            .get_or_create(&[("stage", Cow::Owned(stage.to_owned()))])
            .observe(elapsed.as_secs_f64());
    }

    /// A filter stage call failed and got the stage's fail verdict.
    pub fn filter_failure(&self, stage: &str) {
        self.filter_failures
            .get_or_create(&[("stage", Cow::Owned(stage.to_owned()))])
            .inc();
    }

    /// An HTTP request on a `listener` (`admin`, `autoconfig`) got `status`.
    pub fn http_request(&self, listener: &'static str, status: u16) {
        let status: Cow<'static, str> = match status {
            200 => "200".into(),
            204 => "204".into(),
            400 => "400".into(),
            401 => "401".into(),
            404 => "404".into(),
            405 => "405".into(),
            409 => "409".into(),
            413 => "413".into(),
            500 => "500".into(),
            503 => "503".into(),
            s => s.to_string().into(),
        };
        self.http
            .get_or_create(&[("listener", listener.into()), ("status", status)])
            .inc();
    }
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// `5.7.1`, or `none` for a reply without an enhanced status code.
fn status_label(reply: &Reply) -> Cow<'static, str> {
    match &reply.status {
        Some(s) => s.to_string().into(),
        None => format!("{}", reply.code).into(),
    }
}

/// AUTH mechanism names as labels: only names we implement, upper case.
fn mechanism_label(m: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 9] = [
        "PLAIN",
        "LOGIN",
        "CRAM-MD5",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "OAUTHBEARER",
        "XOAUTH2",
        "USER",
        "APOP",
    ];
    if m.is_empty() {
        // A failure before any exchange named its mechanism.
        return Cow::Borrowed("unknown");
    }
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(m))
        .map_or(Cow::Borrowed("other"), |k| Cow::Borrowed(*k))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    gauge: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

// ------------------------------------------------------------ DNS wrapper

/// Counts and times the lookups of the inbound checks (`mail-auth` asks
/// hickory itself; see `tern_mailauth::dnsmeter`) in the same
/// `tern_dns_lookups_total` and `tern_dns_lookup_seconds` as the rest.
#[derive(Debug, Default, Clone, Copy)]
pub struct MailAuthDnsMetrics;

impl tern_mailauth::DnsObserver for MailAuthDnsMetrics {
    fn lookup(
        &self,
        kind: tern_mailauth::LookupKind,
        outcome: tern_mailauth::LookupOutcome,
        elapsed: Option<std::time::Duration>,
    ) {
        metrics().mailauth_lookup(kind, outcome, elapsed);
    }
}

/// A [`tern_dns::Resolver`] that counts and times every lookup of the one
/// it wraps (`tern_dns_lookups_total`, `tern_dns_lookup_seconds`).
pub struct MeteredResolver(pub Arc<dyn tern_dns::Resolver>);

impl std::fmt::Debug for MeteredResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeteredResolver")
    }
}

impl tern_dns::Resolver for MeteredResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> tern_dns::DnsFuture<'a, Vec<tern_dns::MxRecord>> {
        Box::pin(async move {
            let start = Instant::now();
            let r = self.0.mx(domain).await;
            metrics().dns_lookup(DnsType::Mx, start, &r);
            r
        })
    }

    fn ips<'a>(&'a self, host: &'a str) -> tern_dns::DnsFuture<'a, Vec<std::net::IpAddr>> {
        Box::pin(async move {
            let start = Instant::now();
            let r = self.0.ips(host).await;
            metrics().dns_lookup(DnsType::Ip, start, &r);
            r
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> tern_dns::DnsFuture<'a, Vec<String>> {
        Box::pin(async move {
            let start = Instant::now();
            let r = self.0.txt(name).await;
            metrics().dns_lookup(DnsType::Txt, start, &r);
            r
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> tern_dns::DnsFuture<'a, Vec<tern_dns::SrvRecord>> {
        Box::pin(async move {
            let start = Instant::now();
            let r = self.0.srv(name).await;
            metrics().dns_lookup(DnsType::Srv, start, &r);
            r
        })
    }
}

// ------------------------------------------------------------ at scrape time

#[derive(Debug)]
struct ScrapeState {
    /// Weak: the metrics never keep a stopped server's spool (and its
    /// lock) alive.
    spool: Mutex<Option<WeakSpool>>,
    queue: Mutex<Option<(Instant, QueueCounts)>>,
    /// The queue is a database several nodes share: `queue` is refreshed
    /// by [`Metrics::watch_shared_queue`]'s task, never by a scrape.
    shared: std::sync::atomic::AtomicBool,
    started: SystemTime,
}

/// Queue states as `tern_queue_messages{state}` reports them.
const QUEUE_STATES: [&str; 3] = ["active", "deferred", "held"];

/// Messages and the oldest one's age, per queue state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages per state (`active`: a recipient waits for its first
    /// attempt; `deferred`: every open recipient waits for a retry;
    /// `held`: held by the admin).
    pub messages: [u64; 3],
    /// The oldest message's age in seconds, per state (0 when none).
    pub oldest: [u64; 3],
}

/// Counts the spool's messages by state. Reads each message's state file
/// (not the message); the age comes from the queue id.
pub fn count_queue(spool: &Spool, now_micros: u64) -> QueueCounts {
    let mut c = QueueCounts::default();
    let Ok(ids) = spool.list() else {
        return c;
    };
    for id in ids {
        let state = if spool.is_held(&id).unwrap_or(false) {
            2
        } else {
            match spool.recipient_states(&id) {
                Ok(states) if states.iter().any(|s| matches!(s, RecipientState::Pending)) => 0,
                Ok(_) => 1,
                // Gone meanwhile.
                Err(_) => continue,
            }
        };
        c.messages[state] += 1;
        let age = now_micros.saturating_sub(id.created_micros()) / 1_000_000;
        c.oldest[state] = c.oldest[state].max(age);
    }
    c
}

#[derive(Debug)]
struct ScrapeCollector(Arc<ScrapeState>);

fn gauge_desc<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, kind)
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let spool = lock(&self.0.spool).as_ref().and_then(WeakSpool::upgrade);
        let shared = self.0.shared.load(std::sync::atomic::Ordering::Relaxed);
        let counts = if shared {
            // Counted by the shared queue's task (none yet: zeros).
            Some(lock(&self.0.queue).map(|(_, c)| c).unwrap_or_default())
        } else {
            spool.as_ref().map(|spool| {
                let mut cache = lock(&self.0.queue);
                match *cache {
                    Some((at, c)) if at.elapsed() < QUEUE_SCAN_EVERY => c,
                    _ => {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_micros() as u64)
                            .unwrap_or(0);
                        let c = count_queue(spool, now);
                        *cache = Some((Instant::now(), c));
                        c
                    }
                }
            })
        };
        if let Some(counts) = counts {
            let mut m = gauge_desc(
                &mut encoder,
                "queue_messages",
                "Messages in the queue by state",
                MetricType::Gauge,
            )?;
            for (i, state) in QUEUE_STATES.iter().enumerate() {
                let labels = [("state", *state)];
                m.encode_family(&labels)?
                    .encode_gauge(&(counts.messages[i] as i64))?;
            }
            let mut m = gauge_desc(
                &mut encoder,
                "queue_oldest_age_seconds",
                "Age of the oldest message in the queue by state (0: none)",
                MetricType::Gauge,
            )?;
            for (i, state) in QUEUE_STATES.iter().enumerate() {
                let labels = [("state", *state)];
                m.encode_family(&labels)?
                    .encode_gauge(&(counts.oldest[i] as i64))?;
            }
        }
        if let Some(spool) = &spool {
            let stats = spool.stats();
            let m = gauge_desc(
                &mut encoder,
                "spool_commit_batch_size",
                "Messages made durable together by one group commit",
                MetricType::Histogram,
            )?;
            // Per-bucket counts; the encoder makes them cumulative.
            let mut buckets: Vec<(f64, u64)> = tern_queue::BATCH_SIZE_BOUNDS
                .iter()
                .zip(stats.batch_sizes)
                .map(|(bound, n)| (*bound as f64, n))
                .collect();
            buckets.push((f64::MAX, 0));
            let mut m = m;
            m.encode_histogram::<NoLabelSet>(
                stats.batched_files as f64,
                stats.batches,
                &buckets,
                None,
            )?;
        }
        let p = process_stats();
        let started = self
            .0
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        for (name, help, value) in [
            (
                "process_open_fds",
                "Open file descriptors",
                p.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "The open file descriptor limit",
                p.max_fds.map(|v| v as f64),
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory",
                p.rss_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "When the process started (Unix seconds)",
                Some(started),
            ),
        ] {
            if let Some(v) = value {
                gauge_desc(&mut encoder, name, help, MetricType::Gauge)?.encode_gauge(&v)?;
            }
        }
        if let Some(cpu) = p.cpu_seconds {
            gauge_desc(
                &mut encoder,
                "process_cpu_seconds",
                "User and system CPU time",
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&cpu, None)?;
        }
        let info = [("version", env!("CARGO_PKG_VERSION"))];
        gauge_desc(
            &mut encoder,
            "build",
            "The running version",
            MetricType::Info,
        )?
        .encode_info(&info)?;
        Ok(())
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open files.
    pub max_fds: Option<u64>,
    /// Resident set size in bytes.
    pub rss_bytes: Option<u64>,
    /// User plus system CPU seconds.
    pub cpu_seconds: Option<f64>,
}

/// Reads [`ProcessStats`] (Linux; elsewhere every field is `None`).
pub fn process_stats() -> ProcessStats {
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| parse_max_open_files(&s));
    let rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_vm_rss(&s));
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_cpu_ticks(&s))
        // USER_HZ is 100 on every Linux Tern runs on.
        .map(|ticks| ticks as f64 / 100.0);
    ProcessStats {
        open_fds,
        max_fds,
        rss_bytes,
        cpu_seconds,
    }
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15 of `/proc/self/stat`, counted after the
/// command name, which may hold spaces and parentheses).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The value of one sample in rendered metrics text: `name{labels}` exactly
/// as written (labels in registration order), for tests and tools.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Writes `text` minus comments, one sample per line (debug helper for
/// tests that print what they saw).
pub fn samples_only(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let _ = writeln!(out, "{l}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 6.0).abs() < 1e-9);
        assert_eq!(buckets, vec![(1.0, 2), (2.0, 1), (f64::MAX, 1)]);
        // Rendered cumulatively.
        let mut reg = Registry::default();
        reg.register("h", "h", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("h_bucket{le=\"1.0\"} 2\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"2.0\"} 3\n"), "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("h_count 4\n"), "{text}");
    }

    #[test]
    fn mail_auth_lookups_land_in_the_dns_series() {
        use tern_mailauth::{DnsObserver, LookupKind as K, LookupOutcome as O};
        let series = [
            "tern_dns_lookups_total{type=\"ptr\",result=\"ok\"}",
            "tern_dns_lookups_total{type=\"txt\",result=\"noanswer\"}",
            "tern_dns_lookup_seconds_count{type=\"ptr\"}",
        ];
        let read = || {
            let text = metrics().render();
            series.map(|s| sample(&text, s).unwrap_or(0.0))
        };
        let before = read();
        let observer = MailAuthDnsMetrics;
        observer.lookup(
            K::Ptr,
            O::Answered,
            Some(std::time::Duration::from_millis(3)),
        );
        observer.lookup(K::Txt, O::NoAnswer, None);
        observer.lookup(K::Txt, O::NoAnswer, None);
        let after = read();
        assert_eq!(
            [
                after[0] - before[0],
                after[1] - before[1],
                after[2] - before[2]
            ],
            [1.0, 2.0, 1.0]
        );
    }

    #[test]
    fn proc_parsers() {
        assert_eq!(
            parse_max_open_files(
                "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
        assert_eq!(
            parse_vm_rss("Name:\ttern\nVmRSS:\t   12345 kB\n"),
            Some(12345 * 1024)
        );
        let stat = "42 (tern (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let p = process_stats();
        assert!(p.open_fds.unwrap_or(1) > 0);
    }

    #[test]
    fn stress_mode_is_a_gauge_and_its_entries_are_counted() {
        let m = metrics();
        let before = m.stress_entered.get();
        m.stress_changed(true);
        assert!(m.stress_entered.get() > before);
        let text = m.render();
        assert!(text.contains("# TYPE tern_stress_mode gauge"), "{text}");
        assert!(text.contains("tern_stress_mode_entered_total"), "{text}");
    }

    #[test]
    fn rendered_names_follow_the_conventions() {
        let m = metrics();
        m.session_ended(Role::Submission, SessionOutcome::Timeout);
        m.message_rejected(
            "policy",
            &Reply::new(553, tern_types::EnhancedStatus::new(5, 7, 1), "no"),
        );
        m.auth("smtp", "plain", true);
        m.auth("smtp", "<script>", false);
        m.mailauth_summary("spf=pass smtp.mailfrom=a@b dkim=fail dmarc=none (p=none)");
        let text = m.render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            sample(
                &text,
                "tern_sessions_total{role=\"submission\",outcome=\"timeout\"}"
            )
            .unwrap()
                >= 1.0,
            "{text}"
        );
        assert!(text.contains("tern_messages_rejected_total{reason=\"policy\",code=\"5.7.1\"}"));
        assert!(
            text.contains(
                "tern_auth_total{protocol=\"smtp\",mechanism=\"PLAIN\",result=\"success\"}"
            )
        );
        assert!(
            text.contains("mechanism=\"other\""),
            "client text never becomes a label"
        );
        assert!(text.contains("tern_mailauth_results_total{method=\"spf\",result=\"pass\"}"));
        assert!(text.contains("tern_mailauth_results_total{method=\"dmarc\",result=\"none\"}"));
        assert!(text.contains("# TYPE tern_spool_commit_seconds histogram"));
        assert!(
            text.contains("tern_process_resident_memory_bytes "),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("tern_"), "{line}");
        }
    }
}
