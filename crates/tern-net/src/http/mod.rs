//! The HTTP listeners: the admin API (`/metrics`, `/healthz`, `/readyz`,
//! `/api/…`, see [`admin`]) and mail client autoconfiguration (see
//! [`site`]), HTTP/1.1 on hyper, plain or over TLS with the server
//! certificate.
//!
//! **Bounds.** At most [`MAX_CONNECTIONS`] connections per listener are
//! served at once (more wait in the listen backlog); the request head must
//! arrive within [`HEADER_TIMEOUT`] and hold at most [`MAX_HEADERS`] fields
//! in [`MAX_HEAD_BYTES`]; a body is at most [`MAX_BODY`] bytes (413
//! otherwise, announced or not); a connection lives at most
//! [`CONNECTION_TIMEOUT`], whatever it does. Handlers get the whole
//! request, already read, as an [`HttpRequest`].
//!
//! What this module must never do: buffer an unbounded request, log a
//! request body or an `Authorization` header, or let a slow client hold a
//! connection slot past its deadline.

pub mod admin;
pub mod site;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics::metrics;
use crate::tls::{MaybeTlsStream, TlsManager};

/// Connections served at once, per listener.
pub const MAX_CONNECTIONS: usize = 64;
/// Header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Bytes of one request head (request line and fields).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Bytes of one request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Time for the request head to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one connection may stay open.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// A request, read whole.
#[derive(Debug)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: hyper::Method,
    /// The path, percent-encoded as received.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `Host` field (without the port), lower case.
    pub host: Option<String>,
    /// A bearer token from `Authorization: Bearer …`.
    pub bearer: Option<String>,
    /// The body (at most [`MAX_BODY`] bytes).
    pub body: Bytes,
    /// The client.
    pub peer: SocketAddr,
}

impl HttpRequest {
    /// One query parameter, decoded (`application/x-www-form-urlencoded`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref()?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The path's segments, percent-decoded (`None`: not valid UTF-8).
    pub fn segments(&self) -> Option<Vec<String>> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            })
            .collect()
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// More header fields.
    pub headers: Vec<(header::HeaderName, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A response with `body` of `content_type`.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        HttpResponse {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Plain text.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        HttpResponse::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// JSON of `value`.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                HttpResponse::new(status, "application/json", body)
            }
            Err(_) => HttpResponse::text(500, "cannot encode the answer\n"),
        }
    }

    /// A JSON error: `{"result":"error","kind":…,"message":…}`, the form
    /// the queue admin protocol uses.
    pub fn error(status: u16, kind: &str, message: impl Into<String>) -> Self {
        HttpResponse::json(
            status,
            &serde_json::json!({"result": "error", "kind": kind, "message": message.into()}),
        )
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What an HTTP listener serves.
#[derive(Debug, Clone)]
pub enum HttpService {
    /// The admin API and metrics.
    Admin {
        /// The API.
        api: Arc<admin::AdminApi>,
        /// Ask for the bearer token (a listener off loopback).
        require_token: bool,
    },
    /// Mail client autoconfiguration.
    Autoconfig(Arc<site::AutoconfigSite>),
}

impl HttpService {
    fn name(&self) -> &'static str {
        match self {
            HttpService::Admin { .. } => "admin",
            HttpService::Autoconfig(_) => "autoconfig",
        }
    }

    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        match self {
            HttpService::Admin { api, require_token } => api.handle(request, *require_token).await,
            HttpService::Autoconfig(site) => site.handle(request),
        }
    }
}

/// One bound HTTP listener, ready to serve.
#[derive(Debug)]
pub struct HttpListener {
    /// The socket, listening.
    pub listener: TcpListener,
    /// What it serves.
    pub service: HttpService,
    /// TLS with the server certificate (`None`: plain HTTP).
    pub tls: Option<TlsManager>,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
}

impl HttpListener {
    /// Serves until `shutdown` becomes true; open connections are then
    /// given a moment to finish and closed.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let HttpListener {
            listener,
            service,
            tls,
            handshake_timeout,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, role = service.name(), tls = tls.is_some(), "listening (HTTP)");
        }
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut conns = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let permit = tokio::select! {
                _ = shutdown.changed() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = service.clone();
            let acceptor = tls.as_ref().map(TlsManager::acceptor);
            conns.spawn(async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                let stream = MaybeTlsStream::Plain(stream);
                let stream = match acceptor {
                    None => stream,
                    Some(acceptor) => match stream.upgrade(&acceptor, handshake_timeout).await {
                        Ok(s) => s,
                        Err(e) => {
                            debug!(client = %peer, error = %e, "HTTPS handshake failed");
                            return;
                        }
                    },
                };
                if tokio::time::timeout(CONNECTION_TIMEOUT, serve_connection(stream, peer, service))
                    .await
                    .is_err()
                {
                    debug!(client = %peer, "HTTP connection closed: too long");
                }
            });
        }
        drop(listener);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            conns.abort_all();
        }
    }
}

async fn serve_connection(stream: MaybeTlsStream, peer: SocketAddr, service: HttpService) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let service = service.clone();
        async move {
            let name = service.name();
            let response = match read_request(req, peer).await {
                Ok(request) => service.handle(request).await,
                Err(response) => response,
            };
            metrics().http_request(name, response.status);
            Ok::<_, std::convert::Infallible>(into_hyper(response))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES.max(8192));
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
        debug!(client = %peer, error = %e, "HTTP connection ended with an error");
    }
}

async fn read_request(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
) -> Result<HttpRequest, HttpResponse> {
    let (parts, body) = req.into_parts();
    let too_large = || HttpResponse::text(413, format!("request body over {MAX_BODY} bytes\n"));
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_large());
    }
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| too_large())?
        .to_bytes();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.host())
        .map(|h| {
            // Strip the port (an IPv6 literal keeps its brackets).
            let h = match h.rsplit_once(':') {
                Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
                _ => h,
            };
            h.trim_end_matches('.').to_ascii_lowercase()
        });
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    Ok(HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        host,
        bearer,
        body,
        peer,
    })
}

fn into_hyper(r: HttpResponse) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(r.body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}
