//! The inbound checks and DKIM signing against a real DNS server on
//! loopback (hickory-server in process): SPF results of RFC 7208 2.6 (pass,
//! fail, softfail, neutral, none, temperror, permerror including the
//! 10-lookup limit), DKIM sign-and-verify with RSA and Ed25519 (and
//! failures after tampering), DMARC policy, `pct`, and the
//! `Authentication-Results:` field.

use tern_testkit::dns;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tern_dns::{HickoryResolver, ResolverSettings};
use tern_mailauth::keys::generate;
use tern_mailauth::{
    Action, Disposition, InboundPolicy, KeyAlgorithm, Signer, TempErrorAction, Verdict, Verifier,
};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const HELO: &str = "mail.sender.test";

struct World {
    _dns: dns::TestDns,
    resolver: Arc<HickoryResolver>,
    signer: Signer,
    _keys: tempfile::TempDir,
}

async fn world() -> World {
    let keys = tempfile::tempdir().unwrap();
    let mut signing = Vec::new();
    for (domain, selector, alg) in [
        ("signed.test", "rsa1", KeyAlgorithm::Rsa),
        ("signed.test", "ed1", KeyAlgorithm::Ed25519),
        ("protected.test", "ed1", KeyAlgorithm::Ed25519),
    ] {
        signing.push(generate(keys.path(), domain, selector, alg).unwrap());
    }
    let mut records: Vec<_> = signing
        .iter()
        .map(|k| dns::txt(&k.record_name(), &k.record_value()))
        .collect();
    let signer = Signer::load(keys.path(), ["signed.test", "protected.test"]).unwrap();

    records.extend([
        // The client: iprev passes.
        dns::ptr("1.0.0.127.in-addr.arpa", HELO),
        dns::a(HELO, Ipv4Addr::LOCALHOST),
        dns::txt(HELO, "v=spf1 ip4:127.0.0.1 -all"),
        // SPF, one domain per result.
        dns::txt("pass.test", "v=spf1 ip4:127.0.0.0/8 -all"),
        dns::txt("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
        dns::txt("softfail.test", "v=spf1 ip4:192.0.2.1 ~all"),
        dns::txt("neutral.test", "v=spf1 ?all"),
        dns::txt("none.test", "not an SPF record"),
        // A syntax error, and an include of a domain without SPF record.
        dns::txt("permerror.test", "v=spf1 ip4:192.0.2 -all"),
        dns::txt("badinclude.test", "v=spf1 include:none.test -all"),
        dns::txt("signed.test", "v=spf1 ip4:192.0.2.1 -all"),
        // DMARC.
        dns::txt("protected.test", "v=spf1 ip4:192.0.2.1 -all"),
        dns::txt("_dmarc.protected.test", "v=DMARC1; p=reject"),
        dns::txt("quarantined.test", "v=spf1 ip4:192.0.2.1 -all"),
        dns::txt("_dmarc.quarantined.test", "v=DMARC1; p=quarantine"),
        dns::txt("sampled.test", "v=spf1 ip4:192.0.2.1 -all"),
        dns::txt("_dmarc.sampled.test", "v=DMARC1; p=reject; pct=0"),
        dns::txt("_dmarc.pass.test", "v=DMARC1; p=reject"),
    ]);
    // Ten DNS mechanisms are allowed, the eleventh is a permerror.
    let hosts: Vec<String> = (1..=11).map(|i| format!("a:h{i}.limit.test")).collect();
    for i in 1..=11u8 {
        records.push(dns::a(
            &format!("h{i}.limit.test"),
            Ipv4Addr::new(192, 0, 2, i),
        ));
    }
    records.push(dns::txt(
        "ten.limit.test",
        &format!("v=spf1 {} ip4:127.0.0.1 -all", hosts[..10].join(" ")),
    ));
    records.push(dns::txt(
        "eleven.limit.test",
        &format!("v=spf1 {} ip4:127.0.0.1 -all", hosts.join(" ")),
    ));
    // Includes count too, and loops end at the limit.
    records.push(dns::txt("loop.test", "v=spf1 include:loop.test -all"));

    let dns = dns::start(records).await;
    let resolver = Arc::new(
        HickoryResolver::new(ResolverSettings {
            nameservers: vec![dns.addr],
            timeout: Duration::from_secs(2),
            attempts: 1,
            cache_size: 256,
        })
        .unwrap(),
    );
    World {
        _dns: dns,
        resolver,
        signer,
        _keys: keys,
    }
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Someone <{from}>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@x>\r\n\r\n{body}"
    )
    .into_bytes()
}

async fn check(w: &World, policy: InboundPolicy, mail_from: &str, msg: &[u8]) -> Verdict {
    let v = Verifier::new(Arc::clone(&w.resolver), "mx.example.test", policy);
    v.verify(tern_mailauth::Inbound {
        client_ip: CLIENT,
        helo: HELO,
        mail_from,
        message: msg,
        seal_with: None,
    })
    .await
}

fn field<'a>(header: &'a str, method: &str) -> Vec<&'a str> {
    header
        .split(';')
        .map(str::trim)
        .filter_map(|part| part.strip_prefix(&format!("{method}=")))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_results() {
    let w = world().await;
    for (domain, want) in [
        ("pass.test", "pass"),
        ("fail.test", "fail"),
        ("softfail.test", "softfail"),
        ("neutral.test", "neutral"),
        ("none.test", "none"),
        ("nxdomain.test", "none"),
        ("x.servfail.test", "temperror"),
        ("permerror.test", "permerror"),
        ("badinclude.test", "permerror"),
        ("ten.limit.test", "pass"),
        ("eleven.limit.test", "permerror"),
        ("loop.test", "permerror"),
    ] {
        let from = format!("user@{domain}");
        let v = check(
            &w,
            InboundPolicy::default(),
            &from,
            &message(&from, "s", "b\r\n"),
        )
        .await;
        assert!(
            v.header
                .starts_with("Authentication-Results: mx.example.test;"),
            "{}",
            v.header
        );
        // The MAIL FROM result comes first, then the HELO one.
        assert_eq!(
            field(&v.header, "spf"),
            [want, "pass"],
            "{domain}: {}",
            v.header
        );
        assert!(v.summary.contains(&format!("spf={want}")), "{}", v.summary);
        assert!(
            v.header.contains(&format!("smtp.mailfrom={from}"))
                || v.header.contains(&format!("smtp.mailfrom=\"{from}\"")),
            "{}",
            v.header
        );
        assert!(
            v.header.contains("smtp.helo=mail.sender.test"),
            "{}",
            v.header
        );
        // Default policy: SPF results alone never refuse.
        assert_eq!(v.disposition, Disposition::Accept, "{domain}");
    }
    // iprev of 127.0.0.1 → mail.sender.test → 127.0.0.1.
    let v = check(
        &w,
        InboundPolicy::default(),
        "u@pass.test",
        &message("u@pass.test", "s", "b"),
    )
    .await;
    assert_eq!(field(&v.header, "iprev"), ["pass"], "{}", v.header);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_policy_knobs() {
    let w = world().await;
    let strict = InboundPolicy {
        spf_fail: Action::Reject,
        temperror: TempErrorAction::Tempfail,
        ..InboundPolicy::default()
    };
    let v = check(
        &w,
        strict.clone(),
        "u@fail.test",
        &message("u@fail.test", "s", "b"),
    )
    .await;
    assert!(matches!(v.disposition, Disposition::Reject { .. }), "{v:?}");
    let v = check(
        &w,
        strict.clone(),
        "u@softfail.test",
        &message("u@softfail.test", "s", "b"),
    )
    .await;
    assert_eq!(v.disposition, Disposition::Accept);
    let v = check(
        &w,
        strict,
        "u@x.servfail.test",
        &message("u@x.servfail.test", "s", "b"),
    )
    .await;
    assert!(
        matches!(v.disposition, Disposition::TempFail { .. }),
        "{v:?}"
    );
    // The default accepts and tags.
    let v = check(
        &w,
        InboundPolicy::default(),
        "u@x.servfail.test",
        &message("u@x.servfail.test", "s", "b"),
    )
    .await;
    assert_eq!(v.disposition, Disposition::Accept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_round_trip_rsa_and_ed25519() {
    let w = world().await;
    let msg = message("news@signed.test", "Signed", "Hello,\r\nsigned body.\r\n");
    let sigs = w.signer.sign("signed.test", &msg).unwrap();
    // RSA first, then Ed25519; relaxed/relaxed; From oversigned.
    let fields: Vec<&str> = sigs
        .split("DKIM-Signature:")
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(fields.len(), 2, "{sigs}");
    assert!(fields[0].contains("a=rsa-sha256"), "{sigs}");
    assert!(fields[1].contains("a=ed25519-sha256"), "{sigs}");
    assert!(sigs.contains("c=relaxed/relaxed"), "{sigs}");
    let h: String = fields[0]
        .split(';')
        .find_map(|t| t.trim().strip_prefix("h="))
        .unwrap()
        .split_whitespace()
        .collect();
    let names: Vec<String> = h.split(':').map(|n| n.to_ascii_lowercase()).collect();
    assert_eq!(names.iter().filter(|n| *n == "from").count(), 2, "{h}");
    assert_eq!(names.iter().filter(|n| *n == "subject").count(), 2, "{h}");

    let signed = [sigs.as_bytes(), &msg].concat();
    let v = check(&w, InboundPolicy::default(), "news@signed.test", &signed).await;
    assert_eq!(field(&v.header, "dkim"), ["pass", "pass"], "{}", v.header);
    assert!(v.header.contains("header.d=signed.test"), "{}", v.header);
    // SPF fails (192.0.2.1 only) but DKIM aligns: DMARC would pass.
    assert_eq!(v.disposition, Disposition::Accept);

    // A changed body fails both.
    let tampered = [
        sigs.as_bytes(),
        &message("news@signed.test", "Signed", "Hello,\r\nchanged body.\r\n"),
    ]
    .concat();
    let v = check(&w, InboundPolicy::default(), "news@signed.test", &tampered).await;
    assert_eq!(field(&v.header, "dkim"), ["fail", "fail"], "{}", v.header);

    // A changed signed header fails both.
    let tampered = [
        sigs.as_bytes(),
        &message("news@signed.test", "Changed", "Hello,\r\nsigned body.\r\n"),
    ]
    .concat();
    let v = check(&w, InboundPolicy::default(), "news@signed.test", &tampered).await;
    assert_eq!(field(&v.header, "dkim"), ["fail", "fail"], "{}", v.header);

    // An added From: (oversigned) fails both.
    let tampered = [sigs.as_bytes(), b"From: evil@attacker.test\r\n", &msg].concat();
    let v = check(&w, InboundPolicy::default(), "news@signed.test", &tampered).await;
    assert_eq!(field(&v.header, "dkim"), ["fail", "fail"], "{}", v.header);

    // Relaxed canonicalisation: re-folded headers and trailing white space
    // in the body still verify.
    let refolded = String::from_utf8(signed.clone())
        .unwrap()
        .replace("Subject: Signed", "Subject:   Signed ")
        .replace("signed body.\r\n", "signed body.  \r\n\r\n");
    let v = check(
        &w,
        InboundPolicy::default(),
        "news@signed.test",
        refolded.as_bytes(),
    )
    .await;
    assert_eq!(field(&v.header, "dkim"), ["pass", "pass"], "{}", v.header);

    // No key, no signature.
    assert_eq!(w.signer.sign("unsigned.test", &msg).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_policies() {
    let w = world().await;
    // p=reject, SPF fails, no DKIM: rejected.
    let msg = message("ceo@protected.test", "Wire money", "now\r\n");
    let v = check(&w, InboundPolicy::default(), "ceo@protected.test", &msg).await;
    assert!(matches!(v.disposition, Disposition::Reject { .. }), "{v:?}");
    assert_eq!(field(&v.header, "dmarc"), ["fail"], "{}", v.header);
    assert!(v.header.contains("policy.dmarc=reject"), "{}", v.header);
    // The envelope sender need not be the From: domain.
    let v = check(&w, InboundPolicy::default(), "bounce@pass.test", &msg).await;
    assert!(matches!(v.disposition, Disposition::Reject { .. }), "{v:?}");
    // The admin may only tag.
    let lenient = InboundPolicy {
        dmarc_reject: Action::Tag,
        ..InboundPolicy::default()
    };
    let v = check(&w, lenient, "ceo@protected.test", &msg).await;
    assert_eq!(v.disposition, Disposition::Accept);

    // A valid aligned DKIM signature passes.
    let sigs = w.signer.sign("protected.test", &msg).unwrap();
    let signed = [sigs.as_bytes(), &msg].concat();
    let v = check(&w, InboundPolicy::default(), "ceo@protected.test", &signed).await;
    assert_eq!(v.disposition, Disposition::Accept, "{v:?}");
    assert_eq!(field(&v.header, "dmarc"), ["pass"], "{}", v.header);
    assert!(
        v.header.contains("header.from=protected.test"),
        "{}",
        v.header
    );

    // A signature of another domain does not align.
    let sigs = w.signer.sign("signed.test", &msg).unwrap();
    let v = check(
        &w,
        InboundPolicy::default(),
        "ceo@protected.test",
        &[sigs.as_bytes(), &msg].concat(),
    )
    .await;
    assert!(matches!(v.disposition, Disposition::Reject { .. }), "{v:?}");

    // Aligned SPF passes.
    let msg = message("a@pass.test", "hi", "b\r\n");
    let v = check(&w, InboundPolicy::default(), "a@pass.test", &msg).await;
    assert_eq!(field(&v.header, "dmarc"), ["pass"], "{}", v.header);

    // p=quarantine: quarantined.
    let msg = message("a@quarantined.test", "hi", "b\r\n");
    let v = check(&w, InboundPolicy::default(), "a@quarantined.test", &msg).await;
    assert!(
        matches!(v.disposition, Disposition::Quarantine { .. }),
        "{v:?}"
    );

    // p=reject; pct=0: never sampled, so one step milder: quarantine.
    let msg = message("a@sampled.test", "hi", "b\r\n");
    let v = check(&w, InboundPolicy::default(), "a@sampled.test", &msg).await;
    assert!(
        matches!(v.disposition, Disposition::Quarantine { .. }),
        "{v:?}"
    );
    assert!(
        v.summary.contains("pct=0 applied=quarantine"),
        "{}",
        v.summary
    );

    // No DMARC record: nothing to enforce.
    let msg = message("a@fail.test", "hi", "b\r\n");
    let v = check(&w, InboundPolicy::default(), "a@fail.test", &msg).await;
    assert_eq!(v.disposition, Disposition::Accept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_sealing_for_forwarded_mail() {
    let w = world().await;
    let v = Verifier::new(
        Arc::clone(&w.resolver),
        "mx.example.test",
        InboundPolicy::default(),
    );
    let key = w.signer.sealing_key("signed.test").unwrap();
    assert_eq!(key.algorithm, KeyAlgorithm::Rsa);
    let msg = message("a@pass.test", "forwarded", "body\r\n");
    let first = v
        .verify(tern_mailauth::Inbound {
            client_ip: CLIENT,
            helo: HELO,
            mail_from: "a@pass.test",
            message: &msg,
            seal_with: Some(key),
        })
        .await;
    let set = &first.arc_seal;
    assert!(set.starts_with("ARC-Seal: i=1;"), "{set}");
    assert!(set.contains("cv=none"), "{set}");
    assert!(set.contains("ARC-Message-Signature: i=1;"), "{set}");
    assert!(
        set.contains("ARC-Authentication-Results: i=1; mx.example.test;"),
        "{set}"
    );
    assert!(set.contains("d=signed.test"), "{set}");
    assert!(
        first.summary.contains("arc.sealed=d:signed.test"),
        "{}",
        first.summary
    );

    // The next hop validates the chain, and seals on top of it.
    let forwarded = [set.as_bytes(), first.header.as_bytes(), &msg].concat();
    let next = Verifier::new(
        Arc::clone(&w.resolver),
        "mx.next.test",
        InboundPolicy::default(),
    );
    let second = next
        .verify(tern_mailauth::Inbound {
            client_ip: CLIENT,
            helo: HELO,
            mail_from: "a@pass.test",
            message: &forwarded,
            seal_with: Some(key),
        })
        .await;
    assert_eq!(field(&second.header, "arc"), ["pass"], "{}", second.header);
    assert!(
        second.arc_seal.starts_with("ARC-Seal: i=2;"),
        "{}",
        second.arc_seal
    );
    assert!(second.arc_seal.contains("cv=pass"), "{}", second.arc_seal);

    // A broken chain is reported and not sealed again.
    let broken = String::from_utf8(forwarded)
        .unwrap()
        .replace("Subject: forwarded", "Subject: changed");
    let third = next
        .verify(tern_mailauth::Inbound {
            client_ip: CLIENT,
            helo: HELO,
            mail_from: "a@pass.test",
            message: broken.as_bytes(),
            seal_with: None,
        })
        .await;
    assert_eq!(field(&third.header, "arc"), ["fail"], "{}", third.header);
}

/// Collects what [`tern_mailauth::DnsObserver`] is told.
#[derive(Debug, Default)]
struct Lookups(
    std::sync::Mutex<
        Vec<(
            tern_mailauth::LookupKind,
            tern_mailauth::LookupOutcome,
            bool,
        )>,
    >,
);

impl tern_mailauth::DnsObserver for Lookups {
    fn lookup(
        &self,
        kind: tern_mailauth::LookupKind,
        outcome: tern_mailauth::LookupOutcome,
        elapsed: Option<Duration>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push((kind, outcome, elapsed.is_some()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lookup_of_the_checks_is_observed() {
    use tern_mailauth::{LookupKind as K, LookupOutcome as O};
    let w = world().await;
    let lookups = Arc::new(Lookups::default());
    let policy = InboundPolicy {
        iprev: true,
        ..InboundPolicy::default()
    };
    let v = Verifier::new(Arc::clone(&w.resolver), "mx.example.test", policy)
        .with_dns_observer(lookups.clone());
    let run = |from: &'static str, mail_from: &'static str| {
        let v = &v;
        async move {
            let msg = message(from, "lookups", "hello\r\n");
            v.verify(tern_mailauth::Inbound {
                client_ip: CLIENT,
                helo: HELO,
                mail_from,
                message: &msg,
                seal_with: None,
            })
            .await
        }
    };
    let sorted = |seen: &Lookups| {
        let mut l = std::mem::take(&mut *seen.0.lock().unwrap());
        l.sort_by_key(|e| format!("{e:?}"));
        l
    };

    // pass.test: SPF of the HELO name and of pass.test, DMARC of
    // pass.test, iprev's PTR and the A of the name it gives: all answered;
    // mail-auth also asks `_dmarc.test` (the zone publishes nothing there).
    let verdict = run("a@pass.test", "b@pass.test").await;
    assert!(
        verdict.summary.contains("dmarc=pass"),
        "{}",
        verdict.summary
    );
    assert_eq!(
        sorted(&lookups),
        [
            (K::Ip, O::Answered, true),
            (K::Ptr, O::Answered, true),
            (K::Txt, O::Answered, true),
            (K::Txt, O::Answered, true),
            (K::Txt, O::Answered, true),
            (K::Txt, O::NoAnswer, false),
        ]
    );

    // nowhere.test publishes nothing: its SPF and DMARC lookups get no
    // answer, and are counted as such.
    let verdict = run("a@nowhere.test", "b@nowhere.test").await;
    assert!(verdict.summary.contains("spf=none"), "{}", verdict.summary);
    let seen = sorted(&lookups);
    let no_answer = seen
        .iter()
        .filter(|e| **e == (K::Txt, O::NoAnswer, false))
        .count();
    assert!(no_answer >= 2, "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|e| **e == (K::Txt, O::Answered, true))
            .count(),
        1,
        "only the HELO name's SPF answers: {seen:?}"
    );
}
