//! End-to-end tests: [`HickoryResolver`] and [`plan_delivery`] against a
//! real authoritative DNS server (`tern_testkit::dns`: hickory-server, in
//! process, UDP and TCP on 127.0.0.1 with an ephemeral port), serving
//! in-memory zones:
//!
//! - `example.test.`: the cases (MX, A, AAAA, TXT, null MX, implicit MX,
//!   missing MX targets, CNAMEs, oversized answers);
//! - `servfail.test.`: every query answered SERVFAIL (a request handler in
//!   front of the catalog);
//! - `.`: a root zone with only its SOA, so that any other name is
//!   NXDOMAIN, as on the Internet.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tern_dns::{
    DnsError, HickoryResolver, MAX_ADDRESSES_PER_HOST, MAX_MX_HOSTS, MAX_RECORDS, MAX_TXT_LEN,
    PlanError, PlanSource, QueryType, Resolver, ResolverSettings, plan_delivery,
};
use tern_testkit::dns::{
    DnsServer, Record, TestDns, a, aaaa, bind_udp_and_tcp, cname, mx, txt, txt_bytes, txt_strings,
};

// ------------------------------------------------------------------ server

/// One TXT record of `len` bytes of `fill`, in 255-byte character-strings.
fn long_txt(owner: &str, fill: u8, len: usize) -> Record {
    txt_bytes(owner, &vec![fill; len])
}

/// The DKIM-like 2 000-byte value of `dkim.example.test`.
fn dkim_value() -> String {
    let mut s = String::from("v=DKIM1; k=rsa; p=");
    let mut i = 0u32;
    while s.len() < 2000 {
        s.push(char::from(b'A' + (i % 26) as u8));
        i += 1;
    }
    s
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn example_records() -> Vec<Record> {
    let o = "example.test.";
    let mut r = vec![
        // Three MX hosts: one preferred, two equal.
        mx(o, 10, "MX1.example.test."),
        mx(o, 20, "mx2.example.test."),
        mx(o, 20, "mx3.example.test."),
        a("mx1.example.test.", [127, 0, 0, 11]),
        aaaa("mx1.example.test.", v6("2001:db8::11")),
        a("mx2.example.test.", [127, 0, 0, 12]),
        a("mx3.example.test.", [127, 0, 0, 13]),
        // Null MX.
        mx("nullmx.example.test.", 0, "."),
        // No MX: implicit MX on the domain's own addresses.
        a("implicit.example.test.", [127, 0, 0, 21]),
        aaaa("implicit.example.test.", v6("2001:db8::21")),
        // Neither MX nor address.
        txt_strings("nomail.example.test.", &["no mail here"]),
        // MX targets that do not resolve: one missing, one without address.
        mx("noaddr.example.test.", 10, "ghost.example.test."),
        mx("noaddr.example.test.", 20, "empty.example.test."),
        txt_strings("empty.example.test.", &["exists, has no address"]),
        // One broken MX target beside a working one.
        mx("partial.example.test.", 10, "ghost.example.test."),
        mx("partial.example.test.", 20, "mx2.example.test."),
        // MX target in a zone that SERVFAILs.
        mx("tempmx.example.test.", 10, "mx.servfail.test."),
        // An IP address as MX exchange (forbidden by RFC 5321/7505).
        mx("literal.example.test.", 10, "192.0.2.55."),
        // TXT split into several character-strings, and a second record.
        txt_strings(
            "txt.example.test.",
            &["v=spf1 ", "ip4:192.0.2.0/24", " ip6:2001:db8::/32 -all"],
        ),
        txt_strings("txt.example.test.", &["second record"]),
        // Too big for a UDP answer: needs the TCP fallback.
        txt("dkim.example.test.", &dkim_value()),
        // Oversized records.
        long_txt("huge.example.test.", b'x', MAX_TXT_LEN + 1000),
        long_txt("hugeplus.example.test.", b'y', MAX_TXT_LEN + 1),
        txt_strings("hugeplus.example.test.", &["small"]),
        long_txt("edge.example.test.", b'z', MAX_TXT_LEN),
        // CNAMEs.
        cname("alias.example.test.", "mx1.example.test."),
        cname("loop1.example.test.", "loop2.example.test."),
        cname("loop2.example.test.", "loop1.example.test."),
        // IDN: bücher.example.test.
        mx("xn--bcher-kva.example.test.", 10, "mx1.example.test."),
    ];
    // Hostile sizes: 80 MX records, 80 A records, 100 TXT records.
    for i in 0..80u16 {
        let host = format!("h{i:02}.bigmx.example.test.");
        // Listed worst preference first, so that keeping the best needs
        // sorting.
        r.push(mx("bigmx.example.test.", 1000 - i, &host));
        r.push(a(&host, [127, 0, 1, i as u8]));
        r.push(a("manya.example.test.", [127, 0, 2, i as u8]));
    }
    r.push(mx("manyaddr.example.test.", 10, "manya.example.test."));
    for i in 0..100 {
        r.push(txt_strings(
            "manytxt.example.test.",
            &[&format!("record {i}")],
        ));
    }
    r
}

/// The test server (`tern_testkit::dns`): `example.test.` with the cases,
/// plus the kit's `servfail.test.` and root zones.
async fn start_dns(with_tcp: bool) -> TestDns {
    let server = DnsServer::new().zone("example.test.", example_records());
    if with_tcp {
        server.start().await
    } else {
        server.udp_only().start().await
    }
}

fn settings(addr: SocketAddr) -> ResolverSettings {
    ResolverSettings {
        nameservers: vec![addr],
        timeout: Duration::from_secs(2),
        attempts: 1,
        cache_size: 64,
    }
}

async fn setup() -> (TestDns, HickoryResolver) {
    let dns = start_dns(true).await;
    let resolver = HickoryResolver::new(settings(dns.addr)).unwrap();
    (dns, resolver)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ------------------------------------------------------------------ lookups

#[tokio::test]
async fn mx_records() {
    let (_dns, r) = setup().await;
    let mut got = r.mx("example.test").await.unwrap();
    got.sort_by(|a, b| (a.preference, &a.exchange).cmp(&(b.preference, &b.exchange)));
    let got: Vec<_> = got
        .iter()
        .map(|m| (m.preference, m.exchange.as_str()))
        .collect();
    // Exchanges come back lower-cased, without the trailing dot.
    assert_eq!(
        got,
        [
            (10, "mx1.example.test"),
            (20, "mx2.example.test"),
            (20, "mx3.example.test")
        ]
    );
    // Case and trailing dot of the question do not matter.
    assert_eq!(r.mx("EXAMPLE.Test.").await.unwrap().len(), 3);
}

#[tokio::test]
async fn addresses_v4_then_v6() {
    let (_dns, r) = setup().await;
    assert_eq!(
        r.ips("mx1.example.test").await.unwrap(),
        [ip("127.0.0.11"), ip("2001:db8::11")]
    );
    assert_eq!(r.ips("mx2.example.test").await.unwrap(), [ip("127.0.0.12")]);
}

#[tokio::test]
async fn negative_answers_are_told_apart() {
    let (_dns, r) = setup().await;
    assert_eq!(
        r.mx("nothing.example.test").await,
        Err(DnsError::NxDomain {
            name: "nothing.example.test".into()
        })
    );
    assert_eq!(
        r.mx("nomail.example.test").await,
        Err(DnsError::NoRecords {
            name: "nomail.example.test".into(),
            query: QueryType::Mx
        })
    );
    assert_eq!(
        r.ips("empty.example.test").await,
        Err(DnsError::NoRecords {
            name: "empty.example.test".into(),
            query: QueryType::Ip
        })
    );
    assert_eq!(
        r.ips("ghost.example.test").await,
        Err(DnsError::NxDomain {
            name: "ghost.example.test".into()
        })
    );
    // Outside our zones: the root zone says NXDOMAIN.
    assert!(matches!(
        r.txt("elsewhere.invalid-tld").await,
        Err(DnsError::NxDomain { .. })
    ));
}

#[tokio::test]
async fn servfail_is_temporary() {
    let (_dns, r) = setup().await;
    for result in [
        r.mx("servfail.test").await.map(|_| ()),
        r.ips("mx.servfail.test").await.map(|_| ()),
        r.txt("deep.name.servfail.test").await.map(|_| ()),
    ] {
        let e = result.unwrap_err();
        assert!(e.is_temporary(), "{e:?}");
    }
}

#[tokio::test]
async fn invalid_names_are_permanent_and_never_sent() {
    let (_dns, r) = setup().await;
    let long_label = format!("{}.example.test", "a".repeat(64));
    let e = r.mx(&long_label).await.unwrap_err();
    assert!(matches!(e, DnsError::Permanent { .. }), "{e:?}");
    let e = r.txt("").await.unwrap_err();
    assert!(matches!(e, DnsError::Permanent { .. }), "{e:?}");
}

#[tokio::test]
async fn txt_strings_are_concatenated_per_record() {
    let (_dns, r) = setup().await;
    let mut got = r.txt("txt.example.test").await.unwrap();
    got.sort();
    assert_eq!(
        got,
        [
            "second record",
            "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"
        ]
    );
}

#[tokio::test]
async fn large_txt_comes_over_tcp() {
    let (_dns, r) = setup().await;
    assert_eq!(r.txt("dkim.example.test").await.unwrap(), [dkim_value()]);
    // A record of exactly MAX_TXT_LEN is kept.
    let edge = r.txt("edge.example.test").await.unwrap();
    assert_eq!(edge, ["z".repeat(MAX_TXT_LEN)]);
}

#[tokio::test]
async fn without_tcp_a_truncated_answer_is_temporary() {
    // The same zone served over UDP only: the 2 000-byte record cannot be
    // had, which shows the test above really used TCP, and that a
    // truncated answer is never taken as the whole answer.
    let dns = start_dns(false).await;
    let r = HickoryResolver::new(settings(dns.addr)).unwrap();
    let e = r.txt("dkim.example.test").await.unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    // Small answers still work over UDP.
    assert_eq!(r.txt("empty.example.test").await.unwrap().len(), 1);
}

#[tokio::test]
async fn oversized_txt_records_are_dropped() {
    let (_dns, r) = setup().await;
    let e = r.txt("huge.example.test").await.unwrap_err();
    assert!(matches!(e, DnsError::Permanent { .. }), "{e:?}");
    assert_eq!(r.txt("hugeplus.example.test").await.unwrap(), ["small"]);
}

#[tokio::test]
async fn hostile_answer_sizes_are_capped() {
    let (_dns, r) = setup().await;
    assert_eq!(
        r.txt("manytxt.example.test").await.unwrap().len(),
        MAX_RECORDS
    );
    let many = r.ips("manya.example.test").await.unwrap();
    assert_eq!(many.len(), MAX_RECORDS);
    let mx = r.mx("bigmx.example.test").await.unwrap();
    assert_eq!(mx.len(), MAX_RECORDS);
    // The best (lowest) preferences are the ones kept: 921..=984.
    let prefs: Vec<u16> = mx.iter().map(|m| m.preference).collect();
    assert_eq!(prefs, (921..=984).collect::<Vec<u16>>());
}

#[tokio::test]
async fn cnames_are_followed_and_loops_end() {
    let (_dns, r) = setup().await;
    assert_eq!(
        r.ips("alias.example.test").await.unwrap(),
        [ip("127.0.0.11"), ip("2001:db8::11")]
    );
    let start = Instant::now();
    let e = r.ips("loop1.example.test").await.unwrap_err();
    assert!(
        !matches!(e, DnsError::Permanent { .. }),
        "a CNAME loop is not an invalid name: {e:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn closed_port_is_temporary() {
    // Bind and drop, so nothing listens on the port.
    let (udp, tcp) = bind_udp_and_tcp().await;
    let addr = udp.local_addr().unwrap();
    drop((udp, tcp));
    let r = HickoryResolver::new(ResolverSettings {
        timeout: Duration::from_millis(300),
        ..settings(addr)
    })
    .unwrap();
    let start = Instant::now();
    let e = r.mx("example.test").await.unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn silent_server_times_out_as_temporary() {
    // Sockets that accept queries and never answer.
    let (udp, tcp) = bind_udp_and_tcp().await;
    let addr = udp.local_addr().unwrap();
    let r = HickoryResolver::new(ResolverSettings {
        nameservers: vec![addr],
        timeout: Duration::from_millis(300),
        attempts: 1,
        cache_size: 0,
    })
    .unwrap();
    let start = Instant::now();
    let e = r.mx("example.test").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(e.is_temporary(), "{e:?}");
    // Two tries of 300 ms, a backstop of 900 ms: well under 5 s.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    drop((udp, tcp));
}

#[tokio::test]
async fn idn_domains_are_asked_as_a_labels() {
    let (_dns, r) = setup().await;
    let mx = r.mx("bücher.example.test").await.unwrap();
    assert_eq!(mx[0].exchange, "mx1.example.test");
}

// ------------------------------------------------------------ plan_delivery

#[tokio::test]
async fn plan_orders_by_preference_and_shuffles_equals() {
    let (_dns, r) = setup().await;
    let mut seen_orders = std::collections::BTreeSet::new();
    for seed in 0..32u64 {
        let p = plan_delivery(&r, "example.test", seed).await.unwrap();
        assert_eq!(p.source, PlanSource::Mx);
        let names: Vec<&str> = p.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names[0], "mx1.example.test");
        assert_eq!(p.hosts[0].addresses, [ip("127.0.0.11"), ip("2001:db8::11")]);
        let mut tail = names[1..].to_vec();
        // Deterministic for a seed.
        let again = plan_delivery(&r, "example.test", seed).await.unwrap();
        assert_eq!(again, p);
        seen_orders.insert(tail.join(","));
        tail.sort();
        assert_eq!(tail, ["mx2.example.test", "mx3.example.test"]);
    }
    assert_eq!(seen_orders.len(), 2, "both orders of the equal pair occur");
}

#[tokio::test]
async fn plan_null_mx() {
    let (_dns, r) = setup().await;
    let e = plan_delivery(&r, "nullmx.example.test", 0)
        .await
        .unwrap_err();
    assert!(matches!(e, PlanError::NullMx { .. }), "{e:?}");
    assert!(e.is_permanent());
    assert_eq!(e.status().to_string(), "5.1.10");
}

#[tokio::test]
async fn plan_implicit_mx() {
    let (_dns, r) = setup().await;
    let p = plan_delivery(&r, "implicit.example.test", 0).await.unwrap();
    assert_eq!(p.source, PlanSource::ImplicitMx);
    assert_eq!(p.hosts.len(), 1);
    assert_eq!(p.hosts[0].name, "implicit.example.test");
    assert_eq!(p.hosts[0].addresses, [ip("127.0.0.21"), ip("2001:db8::21")]);
}

#[tokio::test]
async fn plan_nxdomain_and_nodata_bounce() {
    let (_dns, r) = setup().await;
    let e = plan_delivery(&r, "nothing.example.test", 0)
        .await
        .unwrap_err();
    assert!(matches!(e, PlanError::NoSuchDomain { .. }), "{e:?}");
    assert_eq!(e.status().to_string(), "5.1.2");
    let e = plan_delivery(&r, "nomail.example.test", 0)
        .await
        .unwrap_err();
    assert!(matches!(e, PlanError::NoMailHost { .. }), "{e:?}");
    assert!(e.is_permanent());
}

#[tokio::test]
async fn plan_mx_targets_without_address_defer() {
    let (_dns, r) = setup().await;
    let e = plan_delivery(&r, "noaddr.example.test", 0)
        .await
        .unwrap_err();
    let PlanError::Unroutable { skipped, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(skipped.len(), 2);
    assert!(matches!(skipped[0].error, DnsError::NxDomain { .. }));
    assert!(matches!(skipped[1].error, DnsError::NoRecords { .. }));
    assert!(!e.is_permanent());
    assert_eq!(e.status().to_string(), "4.4.4");

    // With one good host left, that host is the plan.
    let p = plan_delivery(&r, "partial.example.test", 0).await.unwrap();
    assert_eq!(p.hosts.len(), 1);
    assert_eq!(p.hosts[0].name, "mx2.example.test");
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].name, "ghost.example.test");
}

#[tokio::test]
async fn plan_temporary_failures_defer() {
    let (_dns, r) = setup().await;
    let e = plan_delivery(&r, "servfail.test", 0).await.unwrap_err();
    assert!(matches!(e, PlanError::Temporary { .. }), "{e:?}");
    assert!(!e.is_permanent());
    assert_eq!(e.status().to_string(), "4.4.3");
    // The MX target's zone SERVFAILs: defer with 4.4.3.
    let e = plan_delivery(&r, "tempmx.example.test", 0)
        .await
        .unwrap_err();
    assert!(matches!(e, PlanError::Unroutable { .. }), "{e:?}");
    assert_eq!(e.status().to_string(), "4.4.3");
}

#[tokio::test]
async fn plan_ip_literal_exchange_is_a_name() {
    let (_dns, r) = setup().await;
    // "192.0.2.55." is looked up as a name; the root zone says NXDOMAIN,
    // so the host is skipped and nothing is planned for 192.0.2.55.
    let e = plan_delivery(&r, "literal.example.test", 0)
        .await
        .unwrap_err();
    let PlanError::Unroutable { skipped, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(skipped[0].name, "192.0.2.55");
    assert!(matches!(skipped[0].error, DnsError::NxDomain { .. }));
}

#[tokio::test]
async fn plan_caps_hosts_and_addresses() {
    let (_dns, r) = setup().await;
    let p = plan_delivery(&r, "bigmx.example.test", 3).await.unwrap();
    assert_eq!(p.hosts.len(), MAX_MX_HOSTS);
    // The most preferred ten: preferences 921..=930.
    let prefs: Vec<u16> = p.hosts.iter().map(|h| h.preference).collect();
    assert_eq!(prefs, (921..=930).collect::<Vec<u16>>());

    let p = plan_delivery(&r, "manyaddr.example.test", 0).await.unwrap();
    assert_eq!(p.hosts[0].addresses.len(), MAX_ADDRESSES_PER_HOST);
}

#[tokio::test]
async fn plan_through_a_shared_dyn_resolver() {
    let (_dns, r) = setup().await;
    let shared: std::sync::Arc<dyn Resolver> = std::sync::Arc::new(r);
    // The queue manager spawns plans on the runtime: the future is Send.
    let task = {
        let shared = shared.clone();
        tokio::spawn(async move { plan_delivery(&*shared, "implicit.example.test", 0).await })
    };
    let p = task.await.unwrap().unwrap();
    assert_eq!(p.hosts[0].name, "implicit.example.test");
}
