//! A real authoritative DNS server for tests: hickory-server in process, UDP
//! and TCP on 127.0.0.1 with an ephemeral port, serving in-memory zones.
//! Every name under `servfail.test.` is answered SERVFAIL (a temporary
//! error); a root zone with only its SOA makes every other name NXDOMAIN.
//! Shared by the tests of `tern-mailauth` and of the `tern` binary
//! (`#[path]`-included), so both see the same server.
#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, MX, PTR, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

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

/// A TXT record; values longer than 255 bytes are split into strings.
pub fn txt(owner: &str, value: &str) -> Record {
    Record::from_rdata(
        name(&fqdn(owner)),
        60,
        RData::TXT(TXT::from_bytes(value.as_bytes().chunks(255).collect())),
    )
}

pub fn a(owner: &str, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name(&fqdn(owner)), 60, RData::A(A::from(ip)))
}

pub fn mx(owner: &str, preference: u16, exchange: &str) -> Record {
    Record::from_rdata(
        name(&fqdn(owner)),
        60,
        RData::MX(MX::new(preference, name(&fqdn(exchange)))),
    )
}

pub fn ptr(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(&fqdn(owner)), 60, RData::PTR(PTR(name(&fqdn(target)))))
}

fn zone(origin: &str, records: Vec<Record>) -> InMemoryZoneHandler {
    let mut z = InMemoryZoneHandler::empty(name(origin), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = Record::from_rdata(
        name(origin),
        60,
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

/// A running test DNS server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    _server: Server<Handler>,
}

/// Serves `records` from zone `test.` (and `in-addr.arpa.` for PTR records
/// whose owner ends in it). Must run inside a tokio runtime.
pub async fn start(records: Vec<Record>) -> TestDns {
    let (arpa, test): (Vec<Record>, Vec<Record>) = records
        .into_iter()
        .partition(|r| r.name.to_ascii().ends_with("in-addr.arpa."));
    let mut catalog = Catalog::new();
    for z in [
        zone("test.", test),
        zone("in-addr.arpa.", arpa),
        zone("servfail.test.", vec![]),
        zone(".", vec![]),
    ] {
        let origin = hickory_server::zone_handler::ZoneHandler::origin(&z).clone();
        catalog.upsert(origin, vec![Arc::new(z)]);
    }
    let handler = Handler {
        catalog,
        servfail: LowerName::from(name("servfail.test.")),
    };
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr().unwrap();
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 16);
    TestDns {
        addr,
        _server: server,
    }
}
