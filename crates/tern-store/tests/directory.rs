//! Table-driven tests of recipient resolution, including the relay-trick
//! and path-trick battery from docs/security.md, and of config validation.

use tern_store::{Directory, DirectoryConfig, DirectoryError, Resolution, Target};
use tern_types::parse_forward_path;

fn s(v: &str) -> String {
    v.to_owned()
}

fn config() -> DirectoryConfig {
    DirectoryConfig {
        domains: vec![s("Example.TEST"), s("other.test")],
        mailboxes: vec![
            s("alice@example.test"),
            s("Bob@example.test"),
            s("admin@example.test"),
            s("carol@other.test"),
        ],
        aliases: vec![
            (
                s("info@example.test"),
                vec![s("alice@example.test"), s("x@remote.test")],
            ),
            // Nested, with duplicates across levels.
            (
                s("team@example.test"),
                vec![
                    s("info@example.test"),
                    s("bob@example.test"),
                    s("ALICE@example.test"),
                ],
            ),
            // An alias whose full local part contains the delimiter.
            (s("sales+eu@example.test"), vec![s("bob@example.test")]),
            (
                s("all@example.test"),
                vec![s("team@example.test"), s("carol@other.test")],
            ),
        ],
        catch_all: vec![(s("other.test"), s("carol@other.test"))],
        recipient_delimiter: Some('+'),
        postmaster: Some(s("admin@example.test")),
        ..DirectoryConfig::default()
    }
}

#[derive(Debug)]
enum Expect {
    /// The grammar already refuses it: it never reaches the directory.
    Refused,
    NotLocal,
    Unknown,
    Targets(&'static [&'static str]),
}

fn target(t: &str) -> Target {
    match t.split_once(':') {
        Some(("L", m)) => Target::Local {
            mailbox: m.to_owned(),
        },
        Some(("R", a)) => Target::Remote {
            address: a.parse().unwrap(),
        },
        _ => panic!("bad target shorthand {t}"),
    }
}

fn check(dir: &Directory, cases: &[(String, Expect)]) {
    for (path, expect) in cases {
        let parsed = parse_forward_path(path, true);
        match (expect, parsed) {
            (Expect::Refused, Err(_)) => {}
            (Expect::Refused, Ok((fp, _))) => {
                panic!(
                    "{path}: expected a syntax error, parsed as {fp} → {:?}",
                    dir.resolve(&fp)
                )
            }
            (_, Err(e)) => panic!("{path}: did not parse: {e}"),
            (expect, Ok((fp, rest))) => {
                assert_eq!(rest, "", "{path}");
                let got = dir.resolve(&fp);
                let want = match expect {
                    Expect::NotLocal => Resolution::NotLocal,
                    Expect::Unknown => Resolution::Unknown,
                    Expect::Targets(ts) => {
                        Resolution::Targets(ts.iter().map(|t| target(t)).collect())
                    }
                    Expect::Refused => unreachable!("handled above"),
                };
                assert_eq!(got, want, "{path}");
            }
        }
    }
}

const ALICE: &[&str] = &["L:alice@example.test"];
const BOB: &[&str] = &["L:bob@example.test"];
const CAROL: &[&str] = &["L:carol@other.test"];
const ADMIN: &[&str] = &["L:admin@example.test"];

#[test]
fn ordinary_resolution() {
    let dir = Directory::new(config()).unwrap();
    use Expect::*;
    let cases = [
        ("<alice@example.test>", Targets(ALICE)),
        ("<ALICE@Example.TEST>", Targets(ALICE)),
        ("<bob@example.test>", Targets(BOB)),
        ("<\"alice\"@example.test>", Targets(ALICE)),
        ("<alice+tag@example.test>", Targets(ALICE)),
        ("<Alice+Some.Tag@example.test>", Targets(ALICE)),
        ("<alice+@example.test>", Targets(ALICE)),
        ("<alice+a+b@example.test>", Targets(ALICE)),
        ("<+tag@example.test>", Unknown),
        ("<nobody@example.test>", Unknown),
        ("<nobody+alice@example.test>", Unknown),
        // The exact full local part wins over plus-addressing.
        ("<sales+eu@example.test>", Targets(BOB)),
        ("<sales+us@example.test>", Unknown),
        (
            "<info@example.test>",
            Targets(&["L:alice@example.test", "R:x@remote.test"]),
        ),
        (
            "<info+x@example.test>",
            Targets(&["L:alice@example.test", "R:x@remote.test"]),
        ),
        (
            "<team@example.test>",
            Targets(&[
                "L:alice@example.test",
                "R:x@remote.test",
                "L:bob@example.test",
            ]),
        ),
        (
            "<all@example.test>",
            Targets(&[
                "L:alice@example.test",
                "R:x@remote.test",
                "L:bob@example.test",
                "L:carol@other.test",
            ]),
        ),
        // Postmaster, any form, any case, any local domain.
        ("<Postmaster>", Targets(ADMIN)),
        ("<POSTMASTER>", Targets(ADMIN)),
        ("<postmaster@example.test>", Targets(ADMIN)),
        ("<PostMaster@Other.Test>", Targets(ADMIN)),
        ("<postmaster+x@other.test>", Targets(ADMIN)),
        ("<postmaster@remote.test>", NotLocal),
        // Catch-all.
        ("<carol@other.test>", Targets(CAROL)),
        ("<anything@other.test>", Targets(CAROL)),
        ("<any+thing@other.test>", Targets(CAROL)),
        ("<\"john smith\"@other.test>", Targets(CAROL)),
        // Not ours.
        ("<alice@remote.test>", NotLocal),
        ("<alice@example.test.remote.test>", NotLocal),
        ("<alice@sub.example.test>", NotLocal),
        ("<alice@[192.0.2.1]>", NotLocal),
        ("<alice@[IPv6:2001:db8::1]>", NotLocal),
        ("<@example.test:user@remote.test>", NotLocal),
        ("<@remote.test:alice@example.test>", Targets(ALICE)),
        ("<ålice@other.test>", Targets(CAROL)),
        ("<ålice@example.test>", Unknown),
    ];
    let cases: Vec<(String, Expect)> = cases.into_iter().map(|(p, e)| (s(p), e)).collect();
    check(&dir, &cases);
}

#[test]
fn relay_and_path_tricks_never_deliver_or_relay() {
    let dir = Directory::new(config()).unwrap();
    use Expect::*;
    let long = "a".repeat(300);
    let long64 = "a".repeat(64);
    let mut cases: Vec<(String, Expect)> = Vec::new();
    // Each trick on a domain without and with a catch-all.
    for domain in ["example.test", "other.test"] {
        for (local, expect) in [
            ("user%remote.test", Unknown),
            ("alice%remote.test", Unknown),
            ("\"user@remote.test\"", Unknown),
            ("\"alice@example.test\"", Unknown),
            ("remote.test!user", Unknown),
            ("remote.test!alice", Unknown),
            ("a/b", Unknown),
            ("alice/", Unknown),
            ("\"../../etc/passwd\"", Unknown),
            ("\"..\"", Unknown),
            ("\".\"", Unknown),
            ("\".hidden\"", Unknown),
            ("\"a\\\\b\"", Unknown),
            ("\"alice\\\\\"", Unknown),
            ("alice+../../x", Refused),
            ("\"alice+../../x\"", Unknown),
            ("\"alice+a/b\"", Unknown),
            ("\"alice+x%y\"", Unknown),
            ("../../etc/passwd", Refused),
            (".hidden", Refused),
            ("alice.", Refused),
            ("a..b", Refused),
            ("\"a\u{7}b\"", Refused),
            (long.as_str(), Refused),
            ("user@remote.test", Refused),
        ] {
            cases.push((format!("<{local}@{domain}>"), expect));
        }
    }
    cases.extend([
        (s("<con@example.test>"), Unknown),
        (s("<nul@example.test>"), Unknown),
        (format!("<{long64}@example.test>"), Unknown),
        (s("<alice@example.test.>"), Refused),
        (s("<user@remote.test@example.test>"), Refused),
        (s("<alice@example.test%remote.test>"), Refused),
    ]);
    check(&dir, &cases);
}

#[test]
fn delimiter_is_configurable() {
    let mut cfg = config();
    cfg.recipient_delimiter = Some('-');
    let dir = Directory::new(cfg).unwrap();
    let cases = [
        (s("<alice-news@example.test>"), Expect::Targets(ALICE)),
        (s("<alice+news@example.test>"), Expect::Unknown),
        (s("<sales+eu@example.test>"), Expect::Targets(BOB)),
    ];
    check(&dir, &cases);

    let mut cfg = config();
    cfg.recipient_delimiter = None;
    let dir = Directory::new(cfg).unwrap();
    check(&dir, &[(s("<alice+news@example.test>"), Expect::Unknown)]);
}

#[test]
fn local_domains() {
    let dir = Directory::new(config()).unwrap();
    let d = |s: &str| tern_types::Domain::parse(s).unwrap();
    assert!(dir.is_local_domain(&d("example.test")));
    assert!(dir.is_local_domain(&d("EXAMPLE.test")));
    assert!(dir.is_local_domain(&d("other.test")));
    assert!(!dir.is_local_domain(&d("remote.test")));
    assert!(!dir.is_local_domain(&d("test")));
}

#[test]
fn default_postmaster() {
    let base = DirectoryConfig {
        domains: vec![s("example.test")],
        mailboxes: vec![s("zed@example.test"), s("postmaster@example.test")],
        ..DirectoryConfig::default()
    };
    let dir = Directory::new(base.clone()).unwrap();
    assert_eq!(dir.postmaster(), &[target("L:postmaster@example.test")]);

    let cfg = DirectoryConfig {
        mailboxes: vec![s("zed@example.test"), s("amy@example.test")],
        ..base.clone()
    };
    let dir = Directory::new(cfg).unwrap();
    assert_eq!(dir.postmaster(), &[target("L:zed@example.test")]);

    let cfg = DirectoryConfig {
        mailboxes: vec![s("zed@example.test")],
        aliases: vec![(s("postmaster@example.test"), vec![s("ops@remote.test")])],
        ..base.clone()
    };
    let dir = Directory::new(cfg).unwrap();
    assert_eq!(dir.postmaster(), &[target("R:ops@remote.test")]);

    let cfg = DirectoryConfig {
        mailboxes: vec![],
        ..base
    };
    assert_eq!(
        Directory::new(cfg).unwrap_err(),
        DirectoryError::NoPostmaster
    );
}

#[test]
fn invalid_configs_are_refused() {
    let base = || DirectoryConfig {
        domains: vec![s("example.test")],
        mailboxes: vec![s("alice@example.test")],
        ..DirectoryConfig::default()
    };
    type Check = fn(&DirectoryError) -> bool;
    let cases: Vec<(DirectoryConfig, Check)> = vec![
        (
            DirectoryConfig {
                domains: vec![s("exa mple.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidDomain { .. }),
        ),
        (
            DirectoryConfig {
                domains: vec![s("example.test.")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidDomain { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("a/b@example.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidMailbox { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("a+b@example.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidMailbox { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("\".hidden\"@example.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidMailbox { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("\"..\"@example.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidMailbox { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("../../etc/passwd@example.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidAddress { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("émile@example.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidMailbox { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("alice@[127.0.0.1]")],
                ..base()
            },
            |e| matches!(e, DirectoryError::NotLocalDomain { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("alice@remote.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::NotLocalDomain { .. }),
        ),
        (
            DirectoryConfig {
                mailboxes: vec![s("alice@example.test"), s("ALICE@example.test")],
                ..base()
            },
            |e| matches!(e, DirectoryError::Duplicate { .. }),
        ),
        (
            DirectoryConfig {
                aliases: vec![(s("alice@example.test"), vec![s("x@remote.test")])],
                ..base()
            },
            |e| matches!(e, DirectoryError::Duplicate { .. }),
        ),
        (
            DirectoryConfig {
                aliases: vec![(s("a@example.test"), vec![s("nobody@example.test")])],
                ..base()
            },
            |e| matches!(e, DirectoryError::UnknownTarget { .. }),
        ),
        (
            DirectoryConfig {
                aliases: vec![(s("a@example.test"), vec![])],
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidAddress { .. }),
        ),
        (
            DirectoryConfig {
                aliases: vec![(s("a@example.test"), vec![s("a@example.test")])],
                ..base()
            },
            |e| matches!(e, DirectoryError::AliasLoop { .. }),
        ),
        (
            DirectoryConfig {
                aliases: vec![
                    (
                        s("a@example.test"),
                        vec![s("alice@example.test"), s("b@example.test")],
                    ),
                    (s("b@example.test"), vec![s("c@example.test")]),
                    (s("c@example.test"), vec![s("A@example.test")]),
                ],
                ..base()
            },
            |e| matches!(e, DirectoryError::AliasLoop { path } if path.contains("→")),
        ),
        (
            DirectoryConfig {
                aliases: (0..12)
                    .map(|i| {
                        (
                            format!("a{i}@example.test"),
                            vec![format!("a{}@example.test", i + 1)],
                        )
                    })
                    .chain([(s("a12@example.test"), vec![s("alice@example.test")])])
                    .collect(),
                ..base()
            },
            |e| matches!(e, DirectoryError::AliasTooDeep { .. }),
        ),
        (
            DirectoryConfig {
                aliases: vec![(
                    s("many@example.test"),
                    (0..1001).map(|i| format!("u{i}@remote.test")).collect(),
                )],
                ..base()
            },
            |e| matches!(e, DirectoryError::TooManyTargets { .. }),
        ),
        (
            DirectoryConfig {
                catch_all: vec![(s("remote.test"), s("alice@example.test"))],
                ..base()
            },
            |e| matches!(e, DirectoryError::NotLocalDomain { .. }),
        ),
        (
            DirectoryConfig {
                catch_all: vec![(s("example.test"), s("ghost@example.test"))],
                ..base()
            },
            |e| matches!(e, DirectoryError::UnknownTarget { .. }),
        ),
        (
            DirectoryConfig {
                postmaster: Some(s("ghost@example.test")),
                ..base()
            },
            |e| matches!(e, DirectoryError::UnknownTarget { .. }),
        ),
        (
            DirectoryConfig {
                recipient_delimiter: Some('@'),
                ..base()
            },
            |e| matches!(e, DirectoryError::InvalidDelimiter('@')),
        ),
    ];
    for (i, (cfg, ok)) in cases.into_iter().enumerate() {
        match Directory::new(cfg) {
            Err(e) => assert!(ok(&e), "case {i}: unexpected error {e}"),
            Ok(_) => panic!("case {i}: accepted"),
        }
    }
}

#[test]
fn diamond_aliases_are_not_loops_and_are_deduplicated() {
    let cfg = DirectoryConfig {
        domains: vec![s("example.test")],
        mailboxes: vec![s("alice@example.test"), s("bob@example.test")],
        aliases: vec![
            (
                s("top@example.test"),
                vec![s("left@example.test"), s("right@example.test")],
            ),
            (
                s("left@example.test"),
                vec![s("bottom@example.test"), s("alice@example.test")],
            ),
            (s("right@example.test"), vec![s("bottom@example.test")]),
            (
                s("bottom@example.test"),
                vec![s("bob@example.test"), s("alice@example.test")],
            ),
        ],
        ..DirectoryConfig::default()
    };
    let dir = Directory::new(cfg).unwrap();
    let (fp, _) = parse_forward_path("<top@example.test>", false).unwrap();
    assert_eq!(
        dir.resolve(&fp),
        Resolution::Targets(vec![
            target("L:bob@example.test"),
            target("L:alice@example.test")
        ])
    );
}
