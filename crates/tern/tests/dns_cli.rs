//! `tern dkim keygen` and `tern dns DOMAIN [--check]` through the real
//! binary. The live check asks a hickory DNS server on loopback (the
//! config's `[dns] nameservers`), never the machine's resolver. And the
//! daemon, signing at `RUST_LOG=trace`, never logs its private keys.

mod common;
use tern_testkit::dns;

use std::path::Path;
use std::process::{Command, Output};

fn tern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run tern")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn write_config(path: &Path, data: &Path, nameserver: &str) {
    std::fs::write(
        path,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {data:?}\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\"]\n[dns]\nnameservers = [\"{nameserver}\"]\n"
        ),
    )
    .unwrap();
}

/// The value of a zone line's TXT record (the quoted strings, joined).
fn txt_value(zone_line: &str) -> String {
    zone_line
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_then_dns_then_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tern.toml");
    let data = dir.path().join("data");
    write_config(&config, &data, "127.0.0.1:9");
    let cfg = config.to_str().unwrap();

    // keygen: writes the key 0600 and prints its TXT record.
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.to_owned();
        move || {
            tern(&[
                "dkim",
                "keygen",
                "example.test",
                "--algorithm",
                "ed25519",
                "--selector",
                "s1",
                "--config",
                &cfg,
            ])
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("s1._domainkey.example.test. 3600 IN TXT \"v=DKIM1; k=ed25519; p="),
        "{stdout}"
    );
    let key = data.join("dkim/example.test/s1.key");
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"));
    // The private key is never printed.
    let body: String = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!stdout.contains(&body) && !stderr.contains(&body));
    // Never over an existing key; not for a foreign domain.
    let again = tern(&[
        "dkim",
        "keygen",
        "example.test",
        "-a",
        "ed25519",
        "-s",
        "s1",
        "--config",
        cfg,
    ]);
    assert!(!again.status.success());
    assert!(
        text(&again).1.contains("exists already"),
        "{:?}",
        text(&again)
    );
    let foreign = tern(&["dkim", "keygen", "other.test", "--config", cfg]);
    assert!(!foreign.status.success());
    assert!(
        text(&foreign).1.contains("not a local domain"),
        "{:?}",
        text(&foreign)
    );

    // dns: every record, the DKIM one from the key on disk.
    let out = tern(&["dns", "example.test", "--config", cfg]);
    let (listing, stderr) = text(&out);
    assert!(out.status.success(), "{listing}{stderr}");
    for want in [
        "example.test. 3600 IN MX 10 mx.example.test.",
        "example.test. 3600 IN TXT \"v=spf1 mx -all\"",
        stdout.trim(),
        "_dmarc.example.test. 3600 IN TXT \"v=DMARC1;",
        "_mta-sts.example.test. 3600 IN TXT \"v=STSv1; id=1\"",
        "_smtp._tls.example.test. 3600 IN TXT \"v=TLSRPTv1;",
    ] {
        assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
    }

    // --check against a DNS server publishing some of it: MX and DKIM
    // right, SPF wrong (+all), DMARC missing.
    let dkim_value = txt_value(stdout.trim());
    let server = dns::start(vec![
        dns::mx("example.test", 10, "mx.example.test"),
        dns::txt("example.test", "v=spf1 +all"),
        dns::txt("s1._domainkey.example.test", &dkim_value),
        dns::txt(
            "_smtp._tls.example.test",
            "v=TLSRPTv1; rua=mailto:tls@example.test",
        ),
    ])
    .await;
    write_config(&config, &data, &server.addr.to_string());
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.to_owned();
        move || tern(&["dns", "example.test", "--check", "--config", &cfg])
    })
    .await
    .unwrap();
    let (report, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}{stderr}");
    let line = |purpose: &str| {
        report
            .lines()
            .find(|l| l.starts_with(purpose))
            .unwrap_or_else(|| panic!("no {purpose} line in:\n{report}"))
            .to_owned()
    };
    assert!(line("MX ").ends_with(" ok"), "{report}");
    assert!(line("SPF ").contains("WRONG"), "{report}");
    assert!(report.contains("found:   v=spf1 +all"), "{report}");
    assert!(line("DKIM ").ends_with(" ok"), "{report}");
    assert!(line("DMARC ").contains("MISSING"), "{report}");
    assert!(
        line("MTA-STS ").contains("MISSING (recommended)"),
        "{report}"
    );
    assert!(line("TLS-RPT ").ends_with(" ok"), "{report}");
    assert!(
        stderr.contains("2 required record(s) missing or wrong"),
        "{stderr}"
    );
}

#[test]
fn dkim_private_keys_never_appear_in_trace_logs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = data.join("dkim");
    let mut pem_lines = Vec::new();
    for (selector, alg) in [
        ("r1", tern_mailauth::KeyAlgorithm::Rsa),
        ("e1", tern_mailauth::KeyAlgorithm::Ed25519),
    ] {
        let key = tern_mailauth::keys::generate(&keys, "example.test", selector, alg).unwrap();
        let text = std::fs::read_to_string(&key.path).unwrap();
        pem_lines.extend(
            text.lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::to_owned),
        );
    }
    let users = dir.path().join("users.toml");
    common::add_user(&users, "alice@example.test", "Alice-Pass-1");
    let addr = common::free_loopback_addr();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.example.test\"\ndata_dir = {data:?}\n[[listener]]\naddress = \"{addr}\"\nrole = \"submission\"\nplaintext_auth = true\n\
             [auth]\nusers_file = {users:?}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n[mail_auth]\nenabled = false\n\
             [domains.\"example.test\"]\nmailboxes = [\"alice\", \"bob\"]\n[limits.abuse.tarpit]\ninitial_delay = \"0s\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("tern.log");
    let mut child = common::spawn_daemon(&config, &log, addr, &[("RUST_LOG", "trace")]);
    let mut c = common::Raw::greeted(addr);
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    use base64::Engine as _;
    let token =
        base64::engine::general_purpose::STANDARD.encode("\0alice@example.test\0Alice-Pass-1");
    assert!(c.cmd(&format!("AUTH PLAIN {token}")).starts_with("235"));
    let r = c.send_mail(
        "alice@example.test",
        "bob@example.test",
        "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: s\r\n\r\nbody",
    );
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
    let stored = common::wait_for_mail_in(&data.join("mail/example.test/bob/new"), 1).remove(0);
    assert_eq!(stored.matches("DKIM-Signature:").count(), 2, "{stored}");
    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DKIM signed"),
        "the log shows the signing:\n{text}"
    );
    assert!(text.contains("DKIM key loaded"), "{text}");
    for line in &pem_lines {
        assert!(
            !text.contains(line.as_str()),
            "private key material leaked into the log"
        );
    }
}
