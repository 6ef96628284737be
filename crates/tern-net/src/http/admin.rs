//! The admin listener's routes (`role = "admin"`): health, metrics, and a
//! JSON API for what the CLI does. Every operation calls the same service
//! the CLI calls — the queue through [`QueueAdmin::execute`] (the admin
//! socket's protocol), users through [`tern_users::cli::execute_user_command`],
//! DNS records through [`crate::dnsrecords`] — so the API and the CLI cannot
//! disagree.
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | `ok` (the process is up) |
//! | `GET /readyz` | 200 or 503 with `{"ready":…,"checks":{…}}`: listeners, spool, the queue database (when shared), DNS |
//! | `GET /metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | `GET /api/queue` | `tern queue list` |
//! | `GET /api/queue/ID` | `tern queue show ID` |
//! | `POST /api/queue/ID/{hold,release,flush,bounce}`, `DELETE /api/queue/ID` | the same commands |
//! | `POST /api/queue/flush[?domain=D]` | `tern queue flush [--domain D]` |
//! | `POST /api/queue` with a JSON request (`{"cmd":"list"}`) | the admin socket protocol |
//! | `GET /api/users`, `POST /api/users`, `PUT /api/users/A/password`, `DELETE /api/users/A` | `tern user list/add/passwd/del` |
//! | `GET /api/dns/DOMAIN[?check=true]` | `tern dns DOMAIN [--check]` |
//! | `GET /api/trace[?id=&from=&to=&since=&limit=]` | `tern trace … --json` |
//!
//! **Who may ask.** On a loopback listener, anyone who can connect (as
//! for the metrics port of most daemons); on any other address, every
//! request but `/healthz` and `/readyz` must carry `Authorization: Bearer
//! TOKEN` (see [`super::token`]), or gets 401.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::header;
use serde::Deserialize;
use tern_queue::Spool;
use tern_users::UsersError;
use tern_users::cli::{UserCommand, execute_user_command};

use super::{HttpRequest, HttpResponse};
use crate::admin::{ErrorKind, QueueAdmin, Request, Response};
use crate::dnsrecords::{self, DnsRecordsError, DnsSettings};

/// How long a DNS readiness answer is reused.
const DNS_CHECK_EVERY: Duration = Duration::from_secs(10);

/// What `/readyz` checks.
pub struct Readiness {
    /// Mail listeners expected to accept.
    pub listeners: usize,
    /// Mail listeners whose accept loop runs (see [`crate::Server::live_listeners`]).
    pub live: Arc<AtomicUsize>,
    /// The spool messages are written to.
    pub spool: Spool,
    /// The resolver delivery and the checks use; `None`: no DNS needed.
    pub resolver: Option<Arc<dyn tern_dns::Resolver>>,
    /// A name to ask about (a local domain's MX).
    pub probe_name: String,
    /// The last DNS answer and when it came.
    pub dns_seen: Mutex<Option<(Instant, Result<(), tern_dns::DnsError>)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("listeners", &self.listeners)
            .field("dns", &self.resolver.is_some())
            .finish()
    }
}

/// Everything the admin API works on.
#[derive(Debug)]
pub struct AdminApi {
    /// The queue operations (as behind the admin socket).
    pub queue: QueueAdmin,
    /// The users file; `None`: `/api/users` answers 404.
    pub users_file: Option<PathBuf>,
    /// What `/api/dns` works from.
    pub dns: DnsSettings,
    /// Where the token's hash is.
    pub token_file: PathBuf,
    /// The delivery journal's directory; `None` (`trace.enabled = false`):
    /// `/api/trace` answers 404.
    pub journal_dir: Option<PathBuf>,
    /// What `/readyz` checks.
    pub ready: Readiness,
}

fn unix_now() -> u64 {
    crate::auth::unix_now()
}

/// The HTTP status for a queue admin answer.
fn queue_status(r: &Response) -> u16 {
    match r {
        Response::Error { kind, .. } => match kind {
            ErrorKind::NotFound => 404,
            ErrorKind::BadRequest => 400,
            ErrorKind::Busy => 409,
            ErrorKind::Internal => 500,
        },
        _ => 200,
    }
}

fn users_error(e: &UsersError) -> HttpResponse {
    let (status, kind) = match e {
        UsersError::NoSuchUser(_) => (404, "not_found"),
        UsersError::UserExists(_) => (409, "exists"),
        UsersError::InvalidAddress { .. } | UsersError::UnusablePassword(_) => (400, "bad_request"),
        _ => (500, "internal"),
    };
    HttpResponse::error(status, kind, e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    address: String,
    password: String,
    #[serde(default)]
    cram_md5: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

fn is_truthy(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.as_str(), "" | "1" | "true" | "yes"))
}

impl AdminApi {
    /// Answers one request; `require_token`: the listener is not on
    /// loopback, so the bearer token is asked for.
    pub async fn handle(
        self: &Arc<Self>,
        request: HttpRequest,
        require_token: bool,
    ) -> HttpResponse {
        let Some(segments) = request.segments() else {
            return HttpResponse::text(400, "bad path\n");
        };
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (&request.method, segs.as_slice()) {
            (&Method::GET, ["healthz"]) => return HttpResponse::text(200, "ok\n"),
            (&Method::GET, ["readyz"]) => return self.readyz().await,
            _ => {}
        }
        if require_token {
            let ok = request
                .bearer
                .as_deref()
                .is_some_and(|t| super::token::verify(&self.token_file, t));
            if !ok {
                return HttpResponse::error(
                    401,
                    "unauthorized",
                    "this listener needs Authorization: Bearer TOKEN (see `tern admin token`)",
                )
                .with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"tern\"");
            }
        }
        match (&request.method, segs.as_slice()) {
            (&Method::GET, ["metrics"]) => {
                let text = tokio::task::spawn_blocking(|| crate::metrics::metrics().render()).await;
                match text {
                    Ok(text) => HttpResponse::new(200, crate::metrics::CONTENT_TYPE, text),
                    Err(_) => HttpResponse::text(500, "metrics unavailable\n"),
                }
            }
            (_, ["api", "queue", ..]) => self.queue_route(&request, &segs[2..]).await,
            (_, ["api", "users", ..]) => self.users_route(&request, &segs[2..]).await,
            (&Method::GET, ["api", "dns", domain]) => {
                let check = is_truthy(request.query_param("check"));
                self.dns_route(domain, check).await
            }
            (&Method::GET, ["api", "trace"]) => self.trace_route(&request).await,
            (_, ["metrics" | "healthz" | "readyz"]) | (_, ["api", "dns", _]) => {
                HttpResponse::text(405, "method not allowed\n")
            }
            _ => HttpResponse::text(404, "not found\n"),
        }
    }

    /// `GET /api/trace`: the messages the query matches, as `tern trace
    /// --json` prints them (the same reader of the same journal).
    async fn trace_route(self: &Arc<Self>, request: &HttpRequest) -> HttpResponse {
        let Some(dir) = self.journal_dir.clone() else {
            return HttpResponse::error(404, "not_configured", "trace.enabled is false");
        };
        let since = match request.query_param("since") {
            Some(s) => match tern_queue::journal::parse_since(&s, unix_now()) {
                Ok(t) => Some(t),
                Err(e) => return HttpResponse::error(400, "bad_request", e.to_string()),
            },
            None => None,
        };
        let limit = match request.query_param("limit").map(|l| l.parse::<usize>()) {
            None => 100,
            Some(Ok(n)) if (1..=10_000).contains(&n) => n,
            Some(_) => return HttpResponse::error(400, "bad_request", "limit: 1 to 10000"),
        };
        let query = tern_queue::journal::Query {
            id: request.query_param("id"),
            from: request.query_param("from"),
            to: request.query_param("to"),
            since,
        };
        let found =
            tokio::task::spawn_blocking(move || tern_queue::journal::query(&dir, &query, limit))
                .await;
        match found {
            Ok(Ok(traces)) => HttpResponse::json(200, &traces),
            Ok(Err(e)) => HttpResponse::error(500, "internal", e.to_string()),
            Err(_) => HttpResponse::error(500, "internal", "the journal could not be read"),
        }
    }

    async fn queue_request(self: &Arc<Self>, request: Request) -> HttpResponse {
        let api = Arc::clone(self);
        let answer =
            tokio::spawn(async move { api.queue.execute(&request, unix_now()).await }).await;
        match answer {
            Ok(r) => HttpResponse::json(queue_status(&r), &r),
            Err(_) => HttpResponse::error(500, "internal", "the queue operation failed"),
        }
    }

    async fn queue_route(self: &Arc<Self>, request: &HttpRequest, rest: &[&str]) -> HttpResponse {
        let id = |s: &str| s.to_owned();
        let req = match (&request.method, rest) {
            (&Method::GET, []) => Request::List,
            (&Method::POST, []) => match serde_json::from_slice::<Request>(&request.body) {
                Ok(r) => r,
                Err(e) => {
                    return HttpResponse::error(400, "bad_request", format!("not a request: {e}"));
                }
            },
            (&Method::POST, ["flush"]) => Request::Flush {
                id: None,
                domain: request.query_param("domain"),
            },
            (&Method::GET, [qid]) => Request::Show { id: id(qid) },
            (&Method::DELETE, [qid]) => Request::Delete { id: id(qid) },
            (&Method::POST, [qid, "hold"]) => Request::Hold { id: id(qid) },
            (&Method::POST, [qid, "release"]) => Request::Release { id: id(qid) },
            (&Method::POST, [qid, "bounce"]) => Request::Bounce { id: id(qid) },
            (&Method::POST, [qid, "flush"]) => Request::Flush {
                id: Some(id(qid)),
                domain: None,
            },
            _ => return HttpResponse::text(404, "not found\n"),
        };
        self.queue_request(req).await
    }

    async fn users_route(self: &Arc<Self>, request: &HttpRequest, rest: &[&str]) -> HttpResponse {
        let Some(file) = self.users_file.clone() else {
            return HttpResponse::error(
                404,
                "not_configured",
                "auth.users_file is not set: there are no users to manage",
            );
        };
        let (cmd, password) = match (&request.method, rest) {
            (&Method::GET, []) => (UserCommand::List, None),
            (&Method::POST, []) => match serde_json::from_slice::<NewUser>(&request.body) {
                Ok(u) => (
                    UserCommand::Add {
                        address: u.address,
                        cram_md5: u.cram_md5,
                    },
                    Some(u.password),
                ),
                Err(e) => {
                    return HttpResponse::error(
                        400,
                        "bad_request",
                        format!("expected {{\"address\":…,\"password\":…}}: {e}"),
                    );
                }
            },
            (&Method::PUT | &Method::POST, [address, "password"]) => {
                match serde_json::from_slice::<NewPassword>(&request.body) {
                    Ok(p) => (
                        UserCommand::Passwd {
                            address: (*address).to_owned(),
                        },
                        Some(p.password),
                    ),
                    Err(e) => {
                        return HttpResponse::error(
                            400,
                            "bad_request",
                            format!("expected {{\"password\":…}}: {e}"),
                        );
                    }
                }
            }
            (&Method::DELETE, [address]) => (
                UserCommand::Del {
                    address: (*address).to_owned(),
                },
                None,
            ),
            _ => return HttpResponse::text(404, "not found\n"),
        };
        // Hashing a password is seconds of CPU: off the async threads.
        let done = tokio::task::spawn_blocking(move || {
            execute_user_command(
                cmd,
                &file,
                move || {
                    password.ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no password given")
                    })
                },
                &tern_users::AddOptions::default(),
            )
        })
        .await;
        match done {
            Ok(Ok(outcome)) => HttpResponse::json(200, &outcome),
            Ok(Err(e)) => users_error(&e),
            Err(_) => HttpResponse::error(500, "internal", "the user operation failed"),
        }
    }

    async fn dns_route(&self, domain: &str, check: bool) -> HttpResponse {
        let err = |e: DnsRecordsError| match e {
            DnsRecordsError::NotLocal(_) => HttpResponse::error(404, "not_found", e.to_string()),
            e => HttpResponse::error(500, "internal", e.to_string()),
        };
        if check {
            match dnsrecords::check_records(&self.dns, domain).await {
                Ok(r) => HttpResponse::json(200, &r),
                Err(e) => err(e),
            }
        } else {
            let settings = self.dns.clone();
            let domain = domain.to_owned();
            match tokio::task::spawn_blocking(move || dnsrecords::records(&settings, &domain)).await
            {
                Ok(Ok(r)) => HttpResponse::json(200, &r),
                Ok(Err(e)) => err(e),
                Err(_) => HttpResponse::error(500, "internal", "failed"),
            }
        }
    }

    async fn readyz(self: &Arc<Self>) -> HttpResponse {
        let r = &self.ready;
        let live = r.live.load(Ordering::Relaxed);
        let listeners = if live >= r.listeners {
            "ok".to_owned()
        } else {
            format!("{live} of {} listeners accepting", r.listeners)
        };
        let api = Arc::clone(self);
        let spool =
            match tokio::task::spawn_blocking(move || api.ready.spool.probe_writable()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => "failed".to_owned(),
            };
        // A shared queue: the database must answer (the spool above is
        // still where Maildir deliveries are committed).
        let queue = match &self.queue.queue {
            tern_queue_pg::AnyStore::Postgres(store) => {
                use tern_queue::store::QueueStore as _;
                match tokio::time::timeout(QUEUE_CHECK_TIMEOUT, store.list_due(0, 1)).await {
                    Ok(Ok(_)) => "ok".to_owned(),
                    Ok(Err(e)) => format!("failed: {e}"),
                    Err(_) => "failed: the queue database did not answer in time".to_owned(),
                }
            }
            _ => "ok".to_owned(),
        };
        let dns = match &r.resolver {
            None => "not used".to_owned(),
            Some(resolver) => {
                let cached = r
                    .dns_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < DNS_CHECK_EVERY)
                    .map(|(_, v)| v.clone());
                let result = match cached {
                    Some(v) => v,
                    None => {
                        let v = match resolver.mx(&r.probe_name).await {
                            Err(e) if e.is_temporary() => Err(e),
                            // Any answer, even "no such name", is an answer.
                            _ => Ok(()),
                        };
                        *r.dns_seen.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((Instant::now(), v.clone()));
                        v
                    }
                };
                match result {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("failed: {e}"),
                }
            }
        };
        let ready = listeners == "ok"
            && spool == "ok"
            && queue == "ok"
            && (dns == "ok" || dns == "not used");
        HttpResponse::json(
            if ready { 200 } else { 503 },
            &serde_json::json!({
                "ready": ready,
                "checks": {"listeners": listeners, "spool": spool, "queue": queue, "dns": dns},
            }),
        )
    }
}

/// How long `/readyz` waits for a shared queue's database.
const QUEUE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a listener on `addr` must ask for the token.
pub fn token_required(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback()
}
