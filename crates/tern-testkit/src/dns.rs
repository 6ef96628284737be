//! A real authoritative DNS server for tests: hickory-server in process,
//! UDP and (unless turned off) TCP on one ephemeral 127.0.0.1 port,
//! serving in-memory zones.
//!
//! Besides the zones a test asks for, every server has:
//! * `servfail.test.`: every query under it is answered SERVFAIL (a
//!   request handler in front of the catalog), a temporary error;
//! * `.`: a root zone with only its SOA, so that any other name is
//!   NXDOMAIN, as on the Internet.
//!
//! [`start`] is the common case (records under `test.` and PTR records
//! under `in-addr.arpa.`); [`DnsServer`] builds any set of zones.
//!
//! ```no_run
//! # async fn demo() {
//! use tern_testkit::dns;
//! let server = dns::start(vec![
//!     dns::mx("example.test", 10, "mx.example.test"),
//!     dns::a("mx.example.test", [127, 0, 0, 2]),
//! ])
//! .await;
//! // Point a resolver at server.addr; the server stops when dropped.
//! # drop(server);
//! # }
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

/// The record type the helpers build, for tests that keep lists of them.
pub use hickory_proto::rr::Record;

/// The TTL of every record and SOA served.
pub const TTL: u32 = 60;

/// The zone every query under which is answered SERVFAIL.
pub const SERVFAIL_ZONE: &str = "servfail.test.";

/// A DNS name from its text (absolute when it ends in `.`).
///
/// # Panics
/// When `s` is not a valid name.
pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn fqdn(s: &str) -> String {
    if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

/// A record of `owner` (made absolute) holding `data`.
pub fn record(owner: &str, data: RData) -> Record {
    Record::from_rdata(name(&fqdn(owner)), TTL, data)
}

/// A TXT record of one value; a value longer than 255 bytes is split into
/// 255-byte character-strings (as DKIM keys are published).
pub fn txt(owner: &str, value: &str) -> Record {
    txt_bytes(owner, value.as_bytes())
}

/// A TXT record of one value given as bytes, split as [`txt`] splits.
pub fn txt_bytes(owner: &str, value: &[u8]) -> Record {
    record(
        owner,
        RData::TXT(TXT::from_bytes(value.chunks(255).collect())),
    )
}

/// A TXT record made of these character-strings, as given.
pub fn txt_strings(owner: &str, strings: &[&str]) -> Record {
    record(
        owner,
        RData::TXT(TXT::new(strings.iter().map(|s| s.to_string()).collect())),
    )
}

/// An A record.
pub fn a(owner: &str, ip: impl Into<Ipv4Addr>) -> Record {
    record(owner, RData::A(A::from(ip.into())))
}

/// An AAAA record.
pub fn aaaa(owner: &str, ip: impl Into<Ipv6Addr>) -> Record {
    record(owner, RData::AAAA(AAAA::from(ip.into())))
}

/// An MX record (`"."` as exchange is a null MX, RFC 7505).
pub fn mx(owner: &str, preference: u16, exchange: &str) -> Record {
    record(owner, RData::MX(MX::new(preference, name(&fqdn(exchange)))))
}

/// A PTR record (`owner` under `in-addr.arpa.` or `ip6.arpa.`).
pub fn ptr(owner: &str, target: &str) -> Record {
    record(owner, RData::PTR(PTR(name(&fqdn(target)))))
}

/// A CNAME record.
pub fn cname(owner: &str, target: &str) -> Record {
    record(owner, RData::CNAME(CNAME(name(&fqdn(target)))))
}

/// A zone of `origin` holding its SOA and `records`.
fn zone(origin: &str, records: Vec<Record>) -> InMemoryZoneHandler {
    let origin = fqdn(origin);
    let mut z = InMemoryZoneHandler::empty(name(&origin), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = Record::from_rdata(
        name(&origin),
        TTL,
        RData::SOA(SOA::new(
            name("ns.test."),
            name("hostmaster.test."),
            1,
            3600,
            600,
            86400,
            60,
        )),
    );
    assert!(z.upsert_mut(soa, 1));
    for r in records {
        let what = format!("{r:?}");
        assert!(z.upsert_mut(r, 1), "cannot add {what}");
    }
    z
}

/// Answers SERVFAIL under [`SERVFAIL_ZONE`] and hands everything else to
/// the catalog.
struct Handler {
    catalog: Catalog,
    servfail: LowerName,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let broken = request
            .queries
            .queries()
            .iter()
            .any(|q| self.servfail.zone_of(q.name()));
        if !broken {
            return self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        }
        let response = MessageResponseBuilder::from_message_request(request)
            .error_msg(&request.metadata, ResponseCode::ServFail);
        response_handle
            .send_response(response)
            .await
            .expect("send SERVFAIL")
    }
}

/// A running test DNS server; it stops when dropped.
pub struct TestDns {
    /// Where it answers (UDP, and TCP unless [`DnsServer::udp_only`]).
    pub addr: SocketAddr,
    _server: Server<Handler>,
}

impl fmt::Debug for TestDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).finish()
    }
}

/// The zones of a server to start.
#[derive(Debug, Default)]
pub struct DnsServer {
    zones: Vec<(String, Vec<Record>)>,
    udp_only: bool,
}

impl DnsServer {
    /// A server with only the SERVFAIL and root zones.
    pub fn new() -> DnsServer {
        DnsServer::default()
    }

    /// Adds the zone `origin` holding `records` (and its SOA).
    pub fn zone(mut self, origin: &str, records: Vec<Record>) -> DnsServer {
        self.zones.push((origin.to_string(), records));
        self
    }

    /// Answers over UDP only: an answer too big for a datagram comes back
    /// truncated and cannot be had over TCP.
    pub fn udp_only(mut self) -> DnsServer {
        self.udp_only = true;
        self
    }

    /// Starts the server. Must run inside a tokio runtime.
    ///
    /// # Panics
    /// When no port is free for both UDP and TCP, or a record does not
    /// belong to its zone.
    pub async fn start(self) -> TestDns {
        let mut catalog = Catalog::new();
        let zones = self.zones.into_iter().chain([
            (SERVFAIL_ZONE.to_string(), Vec::new()),
            (".".to_string(), Vec::new()),
        ]);
        for (origin, records) in zones {
            let z = zone(&origin, records);
            let origin = hickory_server::zone_handler::ZoneHandler::origin(&z).clone();
            catalog.upsert(origin, vec![Arc::new(z)]);
        }
        let handler = Handler {
            catalog,
            servfail: LowerName::from(name(SERVFAIL_ZONE)),
        };
        let (udp, tcp) = bind_udp_and_tcp().await;
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(handler);
        server.register_socket(udp);
        if self.udp_only {
            drop(tcp);
        } else {
            server.register_listener(tcp, Duration::from_secs(5), 16);
        }
        TestDns {
            addr,
            _server: server,
        }
    }
}

/// A UDP socket and a TCP listener on the same loopback port (a resolver
/// asks both on one port); also what a test binds to have a server that
/// never answers, or drops to have a port where nothing listens.
///
/// # Panics
/// When no port is free for both after 50 tries.
pub async fn bind_udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Serves `records` from zone `test.`, and those whose owner ends in
/// `in-addr.arpa.` from that zone. Must run inside a tokio runtime.
pub async fn start(records: Vec<Record>) -> TestDns {
    let (arpa, test): (Vec<Record>, Vec<Record>) = records
        .into_iter()
        .partition(|r| r.name.to_ascii().ends_with("in-addr.arpa."));
    DnsServer::new()
        .zone("test.", test)
        .zone("in-addr.arpa.", arpa)
        .start()
        .await
}
