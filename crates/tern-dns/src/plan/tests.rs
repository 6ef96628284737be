//! Pure tests of [`plan_delivery`] against a [`StaticResolver`].

use super::*;
use crate::StaticResolver;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn plan(r: &StaticResolver, domain: &str, seed: u64) -> Result<DeliveryPlan, PlanError> {
    block_on(plan_delivery(r, domain, seed))
}

fn names(p: &DeliveryPlan) -> Vec<&str> {
    p.hosts.iter().map(|h| h.name.as_str()).collect()
}

#[test]
fn mx_hosts_ordered_by_preference() {
    let r = StaticResolver::new()
        .with_mx(
            "example.test",
            &[(20, "b.mx.test"), (10, "a.mx.test"), (30, "c.mx.test")],
        )
        .with_ips("a.mx.test", &[ip("192.0.2.1"), ip("2001:db8::1")])
        .with_ips("b.mx.test", &[ip("192.0.2.2")])
        .with_ips("c.mx.test", &[ip("192.0.2.3")]);
    let p = plan(&r, "example.test", 7).unwrap();
    assert_eq!(p.source, PlanSource::Mx);
    assert_eq!(p.domain, "example.test");
    assert_eq!(names(&p), ["a.mx.test", "b.mx.test", "c.mx.test"]);
    assert_eq!(
        p.hosts.iter().map(|h| h.preference).collect::<Vec<_>>(),
        [10, 20, 30]
    );
    assert_eq!(p.hosts[0].addresses, [ip("192.0.2.1"), ip("2001:db8::1")]);
    let targets: Vec<_> = p.targets().map(|(h, a)| (h.name.as_str(), a)).collect();
    assert_eq!(
        targets,
        [
            ("a.mx.test", ip("192.0.2.1")),
            ("a.mx.test", ip("2001:db8::1")),
            ("b.mx.test", ip("192.0.2.2")),
            ("c.mx.test", ip("192.0.2.3")),
        ]
    );
    assert!(p.skipped.is_empty());
}

fn equal_pref_resolver(order: &[&str]) -> StaticResolver {
    let mut mx: Vec<(u16, &str)> = order.iter().map(|n| (10, *n)).collect();
    mx.push((5, "primary.mx.test"));
    mx.push((50, "backup.mx.test"));
    let mut r = StaticResolver::new().with_mx("example.test", &mx);
    for (i, n) in order
        .iter()
        .chain(["primary.mx.test", "backup.mx.test"].iter())
        .enumerate()
    {
        r = r.with_ips(n, &[IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8 + 1))]);
    }
    r
}

#[test]
fn equal_preferences_shuffled_deterministically() {
    let group = ["m1.test", "m2.test", "m3.test", "m4.test", "m5.test"];
    let r = equal_pref_resolver(&group);
    let mut reversed = group;
    reversed.reverse();
    let r_reversed = equal_pref_resolver(&reversed);

    let mut orders = BTreeSet::new();
    let mut firsts = BTreeSet::new();
    for seed in 0..200u64 {
        let p = plan(&r, "example.test", seed).unwrap();
        let n = names(&p);
        // Preference still rules: 5 first, 50 last.
        assert_eq!(n[0], "primary.mx.test");
        assert_eq!(n[6], "backup.mx.test");
        let middle: Vec<String> = n[1..6].iter().map(|s| s.to_string()).collect();
        let mut sorted = middle.clone();
        sorted.sort();
        assert_eq!(sorted, group, "the group is a permutation");
        // Same seed, same answer: whatever order the DNS answered in.
        assert_eq!(plan(&r, "example.test", seed).unwrap(), p);
        assert_eq!(names(&plan(&r_reversed, "example.test", seed).unwrap()), n);
        firsts.insert(middle[0].clone());
        orders.insert(middle);
    }
    // The shuffle really spreads the load: every host leads sometimes, and
    // many of the 120 orders occur.
    assert_eq!(firsts.len(), 5);
    assert!(orders.len() > 60, "only {} orders", orders.len());
}

#[test]
fn shuffle_is_close_to_uniform() {
    let group = ["m1.test", "m2.test", "m3.test"];
    let r = equal_pref_resolver(&group);
    let mut first = std::collections::HashMap::<String, u32>::new();
    for seed in 0..3000u64 {
        let p = plan(&r, "example.test", seed).unwrap();
        *first.entry(p.hosts[1].name.clone()).or_default() += 1;
    }
    for n in group {
        let c = first[n];
        assert!((800..1200).contains(&c), "{n} first {c} times of 3000");
    }
}

#[test]
fn at_most_ten_mx_hosts_are_looked_up() {
    let hosts: Vec<String> = (0..30).map(|i| format!("mx{i:02}.test")).collect();
    let mx: Vec<(u16, &str)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (i as u16, h.as_str()))
        .collect();
    let mut r = StaticResolver::new().with_mx("big.test", &mx);
    for (i, h) in hosts.iter().enumerate() {
        r = r.with_ips(h, &[IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8))]);
    }
    let p = plan(&r, "big.test", 1).unwrap();
    assert_eq!(p.hosts.len(), MAX_MX_HOSTS);
    assert_eq!(p.hosts[0].name, "mx00.test");
    assert_eq!(p.hosts[9].name, "mx09.test");
    let ip_queries = r
        .queries()
        .iter()
        .filter(|(q, _)| *q == QueryType::Ip)
        .count();
    assert_eq!(ip_queries, MAX_MX_HOSTS);
}

#[test]
fn addresses_capped_deduplicated_and_filtered() {
    let mut many: Vec<IpAddr> = (1..=25)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    many.insert(0, ip("198.51.100.1")); // duplicate
    many.insert(0, ip("0.0.0.0"));
    many.insert(0, ip("255.255.255.255"));
    many.insert(0, ip("224.0.0.1"));
    many.insert(0, ip("::"));
    let r = StaticResolver::new()
        .with_mx("example.test", &[(10, "mx.example.test")])
        .with_ips("mx.example.test", &many);
    let p = plan(&r, "example.test", 0).unwrap();
    let expected: Vec<IpAddr> = (1..=10)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    assert_eq!(p.hosts[0].addresses, expected);
}

#[test]
fn host_with_only_unusable_addresses_is_skipped() {
    let r = StaticResolver::new()
        .with_mx("example.test", &[(10, "zero.test"), (20, "ok.test")])
        .with_ips("zero.test", &[ip("0.0.0.0")])
        .with_ips("ok.test", &[ip("192.0.2.9")]);
    let p = plan(&r, "example.test", 0).unwrap();
    assert_eq!(names(&p), ["ok.test"]);
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].name, "zero.test");
}

#[test]
fn duplicate_exchange_kept_once_at_best_preference() {
    let r = StaticResolver::new()
        .with_mx(
            "example.test",
            &[(30, "mx.test"), (10, "MX.test."), (20, "other.test")],
        )
        .with_ips("mx.test", &[ip("192.0.2.1")])
        .with_ips("other.test", &[ip("192.0.2.2")]);
    let p = plan(&r, "Example.TEST.", 0).unwrap();
    assert_eq!(p.domain, "example.test");
    assert_eq!(names(&p), ["mx.test", "other.test"]);
    assert_eq!(p.hosts[0].preference, 10);
}

#[test]
fn null_mx_is_permanent_5_1_10() {
    let r = StaticResolver::new().with_mx("nomail.test", &[(0, ".")]);
    let e = plan(&r, "nomail.test", 0).unwrap_err();
    assert_eq!(
        e,
        PlanError::NullMx {
            domain: "nomail.test".into()
        }
    );
    assert!(e.is_permanent());
    assert_eq!(e.status().to_string(), "5.1.10");
    // Nothing else is asked: no address lookup of "." or of the domain.
    assert_eq!(r.queries(), [(QueryType::Mx, "nomail.test".to_string())]);
}

#[test]
fn root_exchange_with_other_preference_is_still_no_mail() {
    let r = StaticResolver::new().with_mx("nomail.test", &[(10, ".")]);
    assert!(matches!(
        plan(&r, "nomail.test", 0),
        Err(PlanError::NullMx { .. })
    ));
}

#[test]
fn root_exchange_beside_real_mx_is_ignored() {
    let r = StaticResolver::new()
        .with_mx("mixed.test", &[(0, "."), (10, "mx.mixed.test")])
        .with_ips("mx.mixed.test", &[ip("192.0.2.1")]);
    let p = plan(&r, "mixed.test", 0).unwrap();
    assert_eq!(names(&p), ["mx.mixed.test"]);
}

#[test]
fn no_mx_means_implicit_mx() {
    let r = StaticResolver::new().with_ips("bare.test", &[ip("192.0.2.5"), ip("2001:db8::5")]);
    let p = plan(&r, "bare.test", 0).unwrap();
    assert_eq!(p.source, PlanSource::ImplicitMx);
    assert_eq!(
        p.hosts,
        [MxHost {
            name: "bare.test".into(),
            preference: 0,
            addresses: vec![ip("192.0.2.5"), ip("2001:db8::5")],
        }]
    );
}

#[test]
fn no_mx_and_no_address_is_permanent_5_1_2() {
    let r = StaticResolver::new().with_txt("txtonly.test", &["v=spf1 -all"]);
    let e = plan(&r, "txtonly.test", 0).unwrap_err();
    assert_eq!(
        e,
        PlanError::NoMailHost {
            domain: "txtonly.test".into()
        }
    );
    assert!(e.is_permanent());
    assert_eq!(e.status().to_string(), "5.1.2");
}

#[test]
fn nxdomain_is_permanent_5_1_2() {
    let r = StaticResolver::new();
    let e = plan(&r, "nowhere.test", 0).unwrap_err();
    assert_eq!(
        e,
        PlanError::NoSuchDomain {
            domain: "nowhere.test".into()
        }
    );
    assert!(e.is_permanent());
    assert_eq!(e.status().to_string(), "5.1.2");
}

fn temporary(name: &str, query: QueryType) -> DnsError {
    DnsError::Temporary {
        name: name.into(),
        query,
        reason: "SERVFAIL".into(),
    }
}

#[test]
fn temporary_mx_failure_defers() {
    let r = StaticResolver::new().with_error(
        "flaky.test",
        QueryType::Mx,
        temporary("flaky.test", QueryType::Mx),
    );
    let e = plan(&r, "flaky.test", 0).unwrap_err();
    assert!(matches!(e, PlanError::Temporary { .. }));
    assert!(!e.is_permanent());
    assert_eq!(e.status().to_string(), "4.4.3");
}

#[test]
fn temporary_failure_of_implicit_mx_defers() {
    let r = StaticResolver::new()
        .with_txt("flaky.test", &["x"])
        .with_error(
            "flaky.test",
            QueryType::Ip,
            temporary("flaky.test", QueryType::Ip),
        );
    let e = plan(&r, "flaky.test", 0).unwrap_err();
    assert!(matches!(e, PlanError::Temporary { .. }));
    assert!(!e.is_permanent());
}

#[test]
fn permanent_lookup_error_bounces() {
    let r = StaticResolver::new().with_error(
        "bad.test",
        QueryType::Mx,
        DnsError::Permanent {
            name: "bad.test".into(),
            query: QueryType::Mx,
            reason: "invalid domain name".into(),
        },
    );
    let e = plan(&r, "bad.test", 0).unwrap_err();
    assert!(matches!(e, PlanError::InvalidDomain { .. }));
    assert_eq!(e.status().to_string(), "5.1.2");
}

#[test]
fn mx_host_without_address_is_skipped() {
    let r = StaticResolver::new()
        .with_mx(
            "example.test",
            &[(10, "gone.example.test"), (20, "mx2.example.test")],
        )
        .with_ips("mx2.example.test", &[ip("192.0.2.2")]);
    let p = plan(&r, "example.test", 0).unwrap();
    assert_eq!(names(&p), ["mx2.example.test"]);
    assert_eq!(
        p.skipped,
        [SkippedHost {
            name: "gone.example.test".into(),
            preference: 10,
            error: DnsError::NxDomain {
                name: "gone.example.test".into()
            },
        }]
    );
}

#[test]
fn no_mx_host_with_address_defers_4_4_4() {
    let r = StaticResolver::new()
        .with_mx(
            "example.test",
            &[(10, "gone.example.test"), (20, "empty.example.test")],
        )
        .with_txt("empty.example.test", &["exists, but no address"]);
    let e = plan(&r, "example.test", 0).unwrap_err();
    let PlanError::Unroutable { domain, skipped } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(domain, "example.test");
    assert_eq!(skipped.len(), 2);
    assert!(matches!(skipped[0].error, DnsError::NxDomain { .. }));
    assert!(matches!(skipped[1].error, DnsError::NoRecords { .. }));
    assert!(!e.is_permanent());
    assert_eq!(e.status().to_string(), "4.4.4");
    assert!(e.to_string().contains("gone.example.test"), "{e}");
}

#[test]
fn unroutable_after_temporary_host_failure_is_4_4_3() {
    let r = StaticResolver::new()
        .with_mx("example.test", &[(10, "mx.example.test")])
        .with_error(
            "mx.example.test",
            QueryType::Ip,
            temporary("mx.example.test", QueryType::Ip),
        );
    let e = plan(&r, "example.test", 0).unwrap_err();
    assert!(matches!(e, PlanError::Unroutable { .. }));
    assert_eq!(e.status().to_string(), "4.4.3");
}

#[test]
fn ip_literal_exchange_is_looked_up_as_a_name() {
    // Not in the table: the name "192.0.2.7" does not exist, so the host is
    // skipped instead of being connected to.
    let r = StaticResolver::new().with_mx("lit.test", &[(10, "192.0.2.7")]);
    let e = plan(&r, "lit.test", 0).unwrap_err();
    assert!(matches!(e, PlanError::Unroutable { .. }));
    assert!(
        r.queries()
            .contains(&(QueryType::Ip, "192.0.2.7".to_string()))
    );

    // If the DNS publishes addresses for that name, they are what is used.
    let r = StaticResolver::new()
        .with_mx("lit.test", &[(10, "192.0.2.7")])
        .with_ips("192.0.2.7", &[ip("198.51.100.7")]);
    let p = plan(&r, "lit.test", 0).unwrap();
    assert_eq!(p.hosts[0].addresses, [ip("198.51.100.7")]);
}

#[test]
fn address_literal_domain_is_refused() {
    let r = StaticResolver::new();
    let e = plan(&r, "[192.0.2.1]", 0).unwrap_err();
    assert!(matches!(e, PlanError::InvalidDomain { .. }));
    assert!(r.queries().is_empty());
}

#[test]
fn literal_plans() {
    let p = DeliveryPlan::literal(ip("192.0.2.1"));
    assert_eq!(p.domain, "[192.0.2.1]");
    assert_eq!(p.source, PlanSource::Literal);
    assert_eq!(
        p.targets()
            .map(|(h, a)| (h.name.clone(), a))
            .collect::<Vec<_>>(),
        [("192.0.2.1".to_string(), ip("192.0.2.1"))]
    );
    let p = DeliveryPlan::literal(ip("2001:db8::1"));
    assert_eq!(p.domain, "[IPv6:2001:db8::1]");
    assert_eq!(p.hosts[0].addresses, [ip("2001:db8::1")]);
}

#[test]
fn static_resolver_negative_answers() {
    let r = StaticResolver::new().with_txt("t.test", &["a"]);
    let nodata = block_on(r.mx("t.test")).unwrap_err();
    assert_eq!(
        nodata,
        DnsError::NoRecords {
            name: "t.test".into(),
            query: QueryType::Mx
        }
    );
    let nx = block_on(r.ips("other.test")).unwrap_err();
    assert_eq!(
        nx,
        DnsError::NxDomain {
            name: "other.test".into()
        }
    );
    assert_eq!(block_on(r.txt("T.TEST.")).unwrap(), ["a"]);
    // An empty list is NODATA, never Ok(empty).
    let r = StaticResolver::new().with_ips("e.test", &[]);
    assert!(matches!(
        block_on(r.ips("e.test")),
        Err(DnsError::NoRecords { .. })
    ));
}
