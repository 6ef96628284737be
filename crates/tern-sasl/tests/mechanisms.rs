//! Every mechanism driven through the public `ServerAuth` API: happy paths,
//! failures, cancellation at every step, bounds, driver misuse and secret
//! redaction.

mod support;

use support::*;
use tern_sasl::{
    Answer, FailureKind, Limits, Mechanism, ServerAuth, StartContext, Step, TokenRejection,
};

fn success(t: &Transcript) -> (String, Option<String>) {
    match t.last() {
        Step::Success { authcid, authzid } => (authcid.clone(), authzid.clone()),
        other => panic!("expected success, got {other:?}\n{}", t.debug),
    }
}

// ---------------------------------------------------------------- PLAIN

#[test]
fn plain_with_initial_response() {
    let dir = Directory::new();
    let t = drive(
        start(Mechanism::Plain, Some(b"\0alice\0correct horse")),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(success(&t), ("alice".into(), None));
    assert!(t.challenges().is_empty());
}

#[test]
fn plain_without_initial_response_gets_an_empty_challenge() {
    let dir = Directory::new();
    let t = drive(
        start(Mechanism::Plain, None),
        &dir,
        scripted(vec![b"\0alice\0correct horse".to_vec()]),
    );
    assert_eq!(t.challenges(), vec![Vec::<u8>::new()]);
    assert_eq!(success(&t), ("alice".into(), None));
}

#[test]
fn plain_returns_a_different_authzid_for_the_caller_to_judge() {
    let dir = Directory::new();
    let t = drive(
        start(Mechanism::Plain, Some(b"bob\0alice\0correct horse")),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(success(&t), ("alice".into(), Some("bob".into())));
    let t = drive(
        start(Mechanism::Plain, Some(b"alice\0alice\0correct horse")),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(success(&t), ("alice".into(), None));
}

#[test]
fn plain_wrong_password_and_unknown_user_fail_identically() {
    let dir = Directory::new();
    let wrong = drive(
        start(Mechanism::Plain, Some(b"\0alice\0wrong")),
        &dir,
        scripted(vec![]),
    );
    let unknown = drive(
        start(Mechanism::Plain, Some(b"\0mallory\0wrong")),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(failure_kind(wrong.last()), FailureKind::BadCredentials);
    assert_eq!(wrong.last(), unknown.last());
}

#[test]
fn plain_malformed() {
    let dir = Directory::new();
    for input in [
        &b""[..],
        b"alice\0correct horse",
        b"\0alice\0",
        b"\0\0pw",
        b"\0ali\xffce\0pw",
        b"\0alice\r\n\0pw",
        b"\0alice\0pw\0",
    ] {
        let t = drive(start(Mechanism::Plain, Some(input)), &dir, scripted(vec![]));
        assert_eq!(failure_kind(t.last()), FailureKind::Malformed, "{input:?}");
        // Nothing was asked of the directory.
        assert_eq!(t.steps.len(), 1);
    }
}

// ---------------------------------------------------------------- LOGIN

#[test]
fn login_happy_paths() {
    let dir = Directory::new();
    let t = drive(
        start(Mechanism::Login, None),
        &dir,
        scripted(vec![b"alice".to_vec(), b"correct horse".to_vec()]),
    );
    assert_eq!(
        t.challenges(),
        vec![b"Username:".to_vec(), b"Password:".to_vec()]
    );
    assert_eq!(success(&t), ("alice".into(), None));

    let t = drive(
        start(Mechanism::Login, Some(b"alice")),
        &dir,
        scripted(vec![b"correct horse".to_vec()]),
    );
    assert_eq!(t.challenges(), vec![b"Password:".to_vec()]);
    assert_eq!(success(&t), ("alice".into(), None));

    // "=" (an empty initial response) is the same as none.
    let t = drive(
        start(Mechanism::Login, Some(b"")),
        &dir,
        scripted(vec![b"alice".to_vec(), b"correct horse".to_vec()]),
    );
    assert_eq!(t.challenges().len(), 2);
    assert_eq!(success(&t), ("alice".into(), None));
}

#[test]
fn login_failures() {
    let dir = Directory::new();
    let wrong = drive(
        start(Mechanism::Login, Some(b"alice")),
        &dir,
        scripted(vec![b"nope".to_vec()]),
    );
    let unknown = drive(
        start(Mechanism::Login, Some(b"nobody")),
        &dir,
        scripted(vec![b"nope".to_vec()]),
    );
    assert_eq!(failure_kind(wrong.last()), FailureKind::BadCredentials);
    assert_eq!(wrong.last(), unknown.last());
    let t = drive(
        start(Mechanism::Login, Some(b"alice")),
        &dir,
        scripted(vec![b"".to_vec()]),
    );
    assert_eq!(failure_kind(t.last()), FailureKind::Malformed);
    let t = drive(
        start(Mechanism::Login, None),
        &dir,
        scripted(vec![b"al\x00ice".to_vec()]),
    );
    assert_eq!(failure_kind(t.last()), FailureKind::Malformed);
    let t = drive(
        start(Mechanism::Login, Some(b"alice")),
        &dir,
        scripted(vec![b"p\xffw".to_vec()]),
    );
    assert_eq!(failure_kind(t.last()), FailureKind::Malformed);
}

// ---------------------------------------------------------------- CRAM-MD5

fn cram_client(user: &'static str, password: &'static str) -> impl FnMut(&[u8]) -> Reply {
    move |challenge| {
        Reply::Send(format!("{user} {}", hmac_md5_hex(password, challenge)).into_bytes())
    }
}

#[test]
fn cram_md5_happy_path_and_challenge_shape() {
    let dir = Directory::new();
    let t = drive(
        start(Mechanism::CramMd5, None),
        &dir,
        cram_client("tim", "tanstaaftanstaaf"),
    );
    assert_eq!(success(&t), ("tim".into(), None));
    let challenge = String::from_utf8(t.challenges()[0].clone()).unwrap();
    let hex: String = NONCE.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(challenge, format!("<{hex}.{NOW}@{HOST}>"));
    // Upper-case hex digests are accepted too.
    let t = drive(start(Mechanism::CramMd5, None), &dir, |c: &[u8]| {
        Reply::Send(
            format!("alice {}", hmac_md5_hex("correct horse", c).to_uppercase()).into_bytes(),
        )
    });
    assert_eq!(success(&t), ("alice".into(), None));
}

#[test]
fn cram_md5_failures_do_not_reveal_unknown_users() {
    let dir = Directory::new();
    let wrong = drive(
        start(Mechanism::CramMd5, None),
        &dir,
        cram_client("tim", "guess"),
    );
    let unknown = drive(
        start(Mechanism::CramMd5, None),
        &dir,
        cram_client("nobody", "guess"),
    );
    assert_eq!(failure_kind(wrong.last()), FailureKind::BadCredentials);
    assert_eq!(wrong.last(), unknown.last());
    // Same number of steps: the unknown user ran the whole exchange too.
    assert_eq!(wrong.steps.len(), unknown.steps.len());

    let t = drive(
        start(Mechanism::CramMd5, None),
        &dir,
        scripted(vec![b"tim 1234".to_vec()]),
    );
    assert_eq!(failure_kind(t.last()), FailureKind::Malformed);
    let t = drive(
        start(Mechanism::CramMd5, Some(b"tim")),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(failure_kind(t.last()), FailureKind::Malformed);
}

// ---------------------------------------------------------------- SCRAM-SHA-256

fn scram_exchange(
    user: &str,
    password: &str,
    gs2: &str,
    initial: bool,
    dir: &Directory,
) -> (Transcript, Option<Vec<u8>>) {
    let client = std::cell::RefCell::new(ScramClient::new(
        user,
        password,
        gs2,
        "fyko+d2lbbFgONRv9qkxdawL",
    ));
    let first = client.borrow().first();
    let mut script = Vec::new();
    if !initial {
        script.push(first.clone());
    }
    let mut round = 0;
    let mut script = script.into_iter();
    let t = drive(
        start(Mechanism::ScramSha256, initial.then_some(first.as_slice())),
        dir,
        |challenge: &[u8]| {
            if challenge.is_empty() && round == 0 && !initial {
                return Reply::Send(script.next().unwrap());
            }
            round += 1;
            if challenge.starts_with(b"r=") {
                Reply::Send(client.borrow_mut().final_message(challenge))
            } else {
                // server-final: check it, then the empty response.
                assert_eq!(
                    challenge,
                    client.borrow().expected_server_final().as_slice()
                );
                Reply::Send(Vec::new())
            }
        },
    );
    let expected = client
        .borrow()
        .salted
        .map(|_| client.borrow().expected_server_final());
    (t, expected)
}

#[test]
fn scram_happy_path_with_and_without_initial_response() {
    let dir = Directory::new();
    for initial in [true, false] {
        let (t, expected) = scram_exchange("alice", "correct horse", "n,,", initial, &dir);
        assert_eq!(success(&t), ("alice".into(), None), "initial {initial}");
        let challenges = t.challenges();
        // server-first then server-final (v=) as a challenge, then success.
        assert_eq!(challenges.last(), expected.as_ref());
        let server_first = String::from_utf8(challenges[challenges.len() - 2].clone()).unwrap();
        assert!(
            server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"),
            "{server_first}"
        );
        assert!(server_first.ends_with(",i=4096"), "{server_first}");
    }
}

#[test]
fn scram_y_flag_and_authzid() {
    let dir = Directory::new();
    let (t, _) = scram_exchange("alice", "correct horse", "y,,", true, &dir);
    assert_eq!(success(&t), ("alice".into(), None));
    let (t, _) = scram_exchange("alice", "correct horse", "n,a=postmaster,", true, &dir);
    assert_eq!(success(&t), ("alice".into(), Some("postmaster".into())));
}

#[test]
fn scram_wrong_password_and_unknown_user_fail_identically() {
    let dir = Directory::new();
    let (wrong, _) = scram_exchange("alice", "guess", "n,,", true, &dir);
    let (unknown, _) = scram_exchange("nobody", "guess", "n,,", true, &dir);
    assert_eq!(failure_kind(wrong.last()), FailureKind::BadCredentials);
    assert_eq!(wrong.last(), unknown.last());
    assert_eq!(wrong.steps.len(), unknown.steps.len());
    // The fake salt of an unknown user is stable, and looks like a real one.
    let (again, _) = scram_exchange("nobody", "other guess", "n,,", true, &dir);
    let salt = |t: &Transcript| {
        let sf = String::from_utf8(t.challenges()[0].clone()).unwrap();
        sf.split(',')
            .find(|f| f.starts_with("s="))
            .unwrap()
            .to_owned()
    };
    assert_eq!(salt(&unknown), salt(&again));
    assert_eq!(salt(&unknown).len(), salt(&wrong).len());
    let (other_unknown, _) = scram_exchange("nobody2", "guess", "n,,", true, &dir);
    assert_ne!(salt(&unknown), salt(&other_unknown));
}

#[test]
fn scram_refuses_channel_binding() {
    let dir = Directory::new();
    let t = drive(
        start(
            Mechanism::ScramSha256,
            Some(b"p=tls-exporter,,n=alice,r=abc"),
        ),
        &dir,
        scripted(vec![]),
    );
    match t.last() {
        Step::Failure(f) => {
            assert_eq!(f.kind, FailureKind::Malformed);
            assert!(f.reason.contains("channel binding"), "{}", f.reason);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn scram_protocol_violations() {
    let dir = Directory::new();
    // A client-final with a nonce that is not the combined one.
    let mut auth = start(Mechanism::ScramSha256, Some(b"n,,n=alice,r=abc"));
    let question = auth.next();
    auth.provide(dir.answer(&question));
    let Step::Challenge(_) = auth.next() else {
        panic!()
    };
    auth.client_response(b"c=biws,r=abc,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    assert_eq!(failure_kind(&auth.next()), FailureKind::Malformed);

    // A non-empty answer to server-final.
    let client = std::cell::RefCell::new(ScramClient::new("alice", "correct horse", "n,,", "xyz"));
    let first = client.borrow().first();
    let t = drive(
        start(Mechanism::ScramSha256, Some(&first)),
        &dir,
        |c: &[u8]| {
            if c.starts_with(b"r=") {
                Reply::Send(client.borrow_mut().final_message(c))
            } else {
                Reply::Send(b"unexpected".to_vec())
            }
        },
    );
    assert_eq!(failure_kind(t.last()), FailureKind::Malformed);

    for bad in [
        &b"n,,m=ext,n=alice,r=abc"[..],
        b"n,,n=alice",
        b"x,,n=alice,r=abc",
        b"n,,n=a=b,r=c",
    ] {
        let t = drive(
            start(Mechanism::ScramSha256, Some(bad)),
            &dir,
            scripted(vec![]),
        );
        assert_eq!(failure_kind(t.last()), FailureKind::Malformed, "{bad:?}");
    }
}

// ---------------------------------------------------------------- OAUTHBEARER / XOAUTH2

fn oauthbearer(authzid: &str, token: &str) -> Vec<u8> {
    let gs2 = if authzid.is_empty() {
        "n,,".to_owned()
    } else {
        format!("n,a={authzid},")
    };
    format!("{gs2}\x01host=mx.example.test\x01port=587\x01auth=Bearer {token}\x01\x01").into_bytes()
}

#[test]
fn oauthbearer_happy_path() {
    let dir = Directory::new();
    let t = drive(
        start(
            Mechanism::OAuthBearer,
            Some(&oauthbearer("alice", "good-token")),
        ),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(success(&t), ("alice".into(), None));
    // The hint is compared ignoring ASCII case; a different one is returned
    // as authzid for the caller's policy.
    let t = drive(
        start(
            Mechanism::OAuthBearer,
            Some(&oauthbearer("ALICE", "good-token")),
        ),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(success(&t), ("alice".into(), None));
    let t = drive(
        start(
            Mechanism::OAuthBearer,
            Some(&oauthbearer("bob", "good-token")),
        ),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(success(&t), ("alice".into(), Some("bob".into())));
    let t = drive(
        start(Mechanism::OAuthBearer, None),
        &dir,
        scripted(vec![oauthbearer("", "good-token")]),
    );
    assert_eq!(success(&t), ("alice".into(), None));
}

#[test]
fn oauthbearer_rejection_sends_json_then_fails_after_the_dummy_response() {
    let dir = Directory::new();
    let mut auth = start(
        Mechanism::OAuthBearer,
        Some(&oauthbearer("alice", "bad-token")),
    );
    let question = auth.next();
    assert!(matches!(&question, Step::VerifyToken { user_hint: Some(h), .. } if h == "alice"));
    auth.provide(dir.answer(&question));
    let Step::Challenge(json) = auth.next() else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["status"], "invalid_token");
    assert_eq!(auth.next(), Step::NeedResponse);
    auth.client_response(b"\x01");
    assert_eq!(failure_kind(&auth.next()), FailureKind::BadCredentials);

    for (rejection, status) in [
        (TokenRejection::Expired, "invalid_token"),
        (TokenRejection::InsufficientScope, "insufficient_scope"),
    ] {
        let mut auth = start(Mechanism::OAuthBearer, Some(&oauthbearer("", "t")));
        auth.next();
        auth.provide(Answer::Token(Err(rejection)));
        let Step::Challenge(json) = auth.next() else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["status"], status);
    }
}

#[test]
fn oauthbearer_malformed() {
    let dir = Directory::new();
    for bad in [
        &b"n,,auth=Bearer x"[..],
        b"n,,\x01auth=Bearer x\x01",
        b"n,,\x01host=x\x01\x01",
        b"p=tls-unique,,\x01auth=Bearer x\x01\x01",
        b"",
    ] {
        let t = drive(
            start(Mechanism::OAuthBearer, Some(bad)),
            &dir,
            scripted(vec![]),
        );
        assert_eq!(failure_kind(t.last()), FailureKind::Malformed, "{bad:?}");
    }
}

#[test]
fn xoauth2_happy_path_and_rejection() {
    let dir = Directory::new();
    let t = drive(
        start(
            Mechanism::XOAuth2,
            Some(b"user=alice\x01auth=Bearer good-token\x01\x01"),
        ),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(success(&t), ("alice".into(), None));

    let t = drive(
        start(Mechanism::XOAuth2, None),
        &dir,
        scripted(vec![
            b"user=alice\x01auth=Bearer expired\x01\x01".to_vec(),
            Vec::new(),
        ]),
    );
    let challenges = t.challenges();
    assert_eq!(challenges.len(), 2);
    let v: serde_json::Value = serde_json::from_slice(&challenges[1]).unwrap();
    assert_eq!(v["status"], "401");
    assert_eq!(failure_kind(t.last()), FailureKind::BadCredentials);

    let t = drive(
        start(Mechanism::XOAuth2, Some(b"auth=Bearer good-token\x01\x01")),
        &dir,
        scripted(vec![]),
    );
    assert_eq!(failure_kind(t.last()), FailureKind::Malformed);
}

#[test]
fn bearer_with_jwt_validator() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use tern_sasl::jwt::{JwtConfig, JwtKey, JwtValidator};
    let secret = b"0123456789abcdef0123456789abcdef";
    let mut config = JwtConfig::new(JwtKey::Hs256(secret.to_vec()));
    config.audience = Some("tern".into());
    let validator = JwtValidator::new(config).unwrap();
    let input = format!(
        "{}.{}",
        B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        B64.encode(format!(
            r#"{{"email":"alice@example.test","aud":"tern","exp":{}}}"#,
            NOW + 300
        ))
    );
    let sig = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        input.as_bytes(),
    );
    let jwt = format!("{input}.{}", B64.encode(sig.as_ref()));

    for (mech, message) in [
        (
            Mechanism::OAuthBearer,
            oauthbearer("alice@example.test", &jwt),
        ),
        (
            Mechanism::XOAuth2,
            format!("user=alice@example.test\x01auth=Bearer {jwt}\x01\x01").into_bytes(),
        ),
    ] {
        for now in [NOW, NOW + 3600] {
            let mut auth = start(mech, Some(&message));
            let Step::VerifyToken { token, .. } = auth.next() else {
                panic!()
            };
            let debug = format!(
                "{:?}",
                Step::VerifyToken {
                    token: token.clone(),
                    user_hint: None
                }
            );
            assert!(!debug.contains(&jwt[..20]), "{debug}");
            auth.provide(Answer::Token(
                validator
                    .validate(token.as_str(), now)
                    .map(|c| c.user)
                    .map_err(TokenRejection::from),
            ));
            match (now == NOW, auth.next()) {
                (true, Step::Success { authcid, authzid }) => {
                    assert_eq!(authcid, "alice@example.test");
                    assert_eq!(authzid, None);
                }
                (false, Step::Challenge(json)) => {
                    assert!(String::from_utf8(json).unwrap().contains("status"));
                    auth.client_response(b"\x01");
                    assert_eq!(failure_kind(&auth.next()), FailureKind::BadCredentials);
                }
                (_, other) => panic!("{mech}: {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------- cancel at every step

/// Runs the happy path of `mech` but answers the `cancel_at`-th challenge
/// with `*`. Returns None when the exchange has fewer challenges.
fn cancelled_at(mech: Mechanism, initial: Option<&[u8]>, cancel_at: usize) -> Option<Transcript> {
    let dir = Directory::new();
    let scram = std::cell::RefCell::new(ScramClient::new("alice", "correct horse", "n,,", "abc"));
    let mut seen = 0;
    let mut reached = false;
    let t = drive(
        ServerAuth::start(mech, initial, ctx()),
        &dir,
        |c: &[u8]| {
            seen += 1;
            if seen - 1 == cancel_at {
                reached = true;
                return Reply::Cancel;
            }
            Reply::Send(match mech {
                Mechanism::Plain => b"\0alice\0correct horse".to_vec(),
                Mechanism::Login if c == b"Username:" => b"alice".to_vec(),
                Mechanism::Login => b"correct horse".to_vec(),
                Mechanism::CramMd5 => {
                    format!("alice {}", hmac_md5_hex("correct horse", c)).into_bytes()
                }
                Mechanism::ScramSha256 if c.is_empty() => scram.borrow().first(),
                Mechanism::ScramSha256 if c.starts_with(b"r=") => {
                    scram.borrow_mut().final_message(c)
                }
                Mechanism::ScramSha256 => Vec::new(),
                Mechanism::OAuthBearer if c.is_empty() => oauthbearer("", "bad-token"),
                Mechanism::XOAuth2 if c.is_empty() => {
                    b"user=alice\x01auth=Bearer bad-token\x01\x01".to_vec()
                }
                Mechanism::OAuthBearer => b"\x01".to_vec(),
                Mechanism::XOAuth2 => Vec::new(),
            })
        },
    );
    reached.then_some(t)
}

#[test]
fn cancel_at_every_challenge_of_every_mechanism() {
    for mech in Mechanism::ALL {
        let mut cancelled = 0;
        for at in 0..8 {
            match cancelled_at(mech, None, at) {
                Some(t) => {
                    assert_eq!(
                        failure_kind(t.last()),
                        FailureKind::Cancelled,
                        "{mech} at {at}"
                    );
                    cancelled += 1;
                }
                None => break,
            }
        }
        let expected = match mech {
            Mechanism::Plain | Mechanism::CramMd5 => 1,
            Mechanism::Login | Mechanism::OAuthBearer | Mechanism::XOAuth2 => 2,
            Mechanism::ScramSha256 => 3,
        };
        assert_eq!(cancelled, expected, "{mech}");
    }
}

#[test]
fn cancel_while_the_caller_decides_and_after_the_end() {
    let mut auth = start(Mechanism::Plain, Some(b"\0alice\0pw"));
    assert!(matches!(auth.next(), Step::VerifyPassword { .. }));
    auth.cancel();
    assert_eq!(failure_kind(&auth.next()), FailureKind::Cancelled);
    // Later input is ignored; the end stays.
    auth.provide(Answer::PasswordOk(true));
    auth.client_response(b"x");
    auth.cancel();
    assert_eq!(failure_kind(&auth.next()), FailureKind::Cancelled);

    let mut auth = start(Mechanism::Plain, Some(b"\0alice\0pw"));
    auth.next();
    auth.provide(Answer::PasswordOk(true));
    auth.cancel();
    assert!(matches!(auth.next(), Step::Success { .. }));
}

// ---------------------------------------------------------------- bounds

#[test]
fn oversized_responses_are_refused() {
    let limit = Limits::default().max_response_len;
    assert_eq!(limit, 12288);
    for mech in Mechanism::ALL {
        let big = vec![b'a'; limit + 1];
        let mut auth = start(mech, None);
        let Step::Challenge(_) = auth.next() else {
            panic!("{mech}")
        };
        auth.client_response(&big);
        assert_eq!(
            failure_kind(&auth.next()),
            FailureKind::ResponseTooLong,
            "{mech}"
        );
    }
    // As an initial response too (CRAM-MD5 refuses any initial response).
    let mut auth = start(Mechanism::Plain, Some(&vec![0u8; limit + 1]));
    assert_eq!(failure_kind(&auth.next()), FailureKind::ResponseTooLong);
    // Exactly at the limit is parsed (and here rejected as malformed).
    let mut at_limit = b"\0alice\0".to_vec();
    at_limit.resize(limit, b'x');
    let mut auth = start(Mechanism::Plain, Some(&at_limit));
    assert!(matches!(auth.next(), Step::VerifyPassword { .. }));
}

#[test]
fn configurable_limits() {
    let mut ctx = ctx();
    ctx.limits = Limits {
        max_response_len: 8,
        max_responses: 1,
    };
    let mut auth = ServerAuth::start(Mechanism::Login, Some(b"alice"), ctx);
    assert_eq!(auth.next(), Step::Challenge(b"Password:".to_vec()));
    auth.client_response(b"pw");
    match auth.next() {
        Step::Failure(f) => {
            assert_eq!(f.kind, FailureKind::Malformed);
            assert_eq!(f.reason, "too many SASL responses");
        }
        other => panic!("{other:?}"),
    }
    let mut auth = ServerAuth::start(Mechanism::Plain, Some(b"\0alice\0password"), ctx);
    assert_eq!(failure_kind(&auth.next()), FailureKind::ResponseTooLong);
}

#[test]
fn short_nonces_are_refused_where_they_matter() {
    let nonce = [1u8; 8];
    for mech in Mechanism::ALL {
        let mut auth = ServerAuth::start(
            mech,
            None,
            StartContext::new(&nonce, HOST, NOW, SERVER_SECRET),
        );
        let step = auth.next();
        if matches!(mech, Mechanism::CramMd5 | Mechanism::ScramSha256) {
            assert_eq!(failure_kind(&step), FailureKind::Temporary, "{mech}");
        } else {
            assert!(matches!(step, Step::Challenge(_)), "{mech}");
        }
    }
}

// ---------------------------------------------------------------- driver contract

#[test]
fn steps_are_given_once_then_the_machine_says_what_it_waits_for() {
    let mut auth = start(Mechanism::Login, None);
    assert_eq!(auth.mechanism(), Mechanism::Login);
    assert_eq!(auth.next(), Step::Challenge(b"Username:".to_vec()));
    assert_eq!(auth.next(), Step::NeedResponse);
    assert_eq!(auth.next(), Step::NeedResponse);
    auth.client_response(b"alice");
    auth.next();
    auth.client_response(b"correct horse");
    assert!(matches!(auth.next(), Step::VerifyPassword { .. }));
    assert_eq!(auth.next(), Step::NeedAnswer);
    assert!(!auth.is_done());
    auth.provide(Answer::PasswordOk(true));
    assert!(auth.is_done());
}

#[test]
fn out_of_order_calls_fail_temporarily_never_panic() {
    // An answer while a client response is awaited.
    let mut auth = start(Mechanism::Login, None);
    auth.provide(Answer::PasswordOk(true));
    assert_eq!(failure_kind(&auth.next()), FailureKind::Temporary);
    // Client data while an answer is awaited.
    let mut auth = start(Mechanism::Plain, Some(b"\0alice\0pw"));
    auth.client_response(b"more");
    assert_eq!(failure_kind(&auth.next()), FailureKind::Temporary);
    // The wrong kind of answer.
    let mut auth = start(Mechanism::Plain, Some(b"\0alice\0pw"));
    auth.provide(Answer::Scram(None));
    assert_eq!(failure_kind(&auth.next()), FailureKind::Temporary);
    let mut auth = start(Mechanism::CramMd5, None);
    auth.next();
    auth.client_response(b"alice 00000000000000000000000000000000");
    auth.provide(Answer::PasswordOk(true));
    assert_eq!(failure_kind(&auth.next()), FailureKind::Temporary);
}

#[test]
fn the_caller_can_fail_an_exchange() {
    for kind in [FailureKind::Temporary, FailureKind::AuthzidNotAllowed] {
        let mut auth = start(Mechanism::Plain, Some(b"admin\0alice\0pw"));
        auth.next();
        auth.provide(Answer::Fail(kind));
        assert_eq!(failure_kind(&auth.next()), kind);
    }
    let mut auth = start(Mechanism::ScramSha256, Some(b"n,,n=alice,r=abc"));
    auth.next();
    auth.provide(Answer::Fail(FailureKind::Temporary));
    assert_eq!(failure_kind(&auth.next()), FailureKind::Temporary);
}

// ---------------------------------------------------------------- secrets never printed

#[test]
fn debug_output_never_contains_secrets() {
    let dir = Directory::new();
    let password = "correct horse";
    let mut debug = String::new();
    let mut runs = vec![
        drive(
            start(Mechanism::Plain, Some(b"\0alice\0correct horse")),
            &dir,
            scripted(vec![]),
        ),
        drive(
            start(Mechanism::Login, None),
            &dir,
            scripted(vec![b"alice".to_vec(), password.as_bytes().to_vec()]),
        ),
        drive(
            start(Mechanism::CramMd5, None),
            &dir,
            cram_client("alice", "correct horse"),
        ),
        drive(
            start(
                Mechanism::OAuthBearer,
                Some(&oauthbearer("alice", "good-token")),
            ),
            &dir,
            scripted(vec![]),
        ),
        drive(
            start(
                Mechanism::XOAuth2,
                Some(b"user=alice\x01auth=Bearer bad-token\x01\x01"),
            ),
            &dir,
            scripted(vec![Vec::new()]),
        ),
    ];
    runs.push(scram_exchange("alice", password, "n,,", true, &dir).0);
    for t in &runs {
        debug.push_str(&t.debug);
    }
    assert!(debug.contains("Password(***)"));
    assert!(debug.contains("Token(***)"));
    assert!(debug.contains("CramSecret(***)"));
    assert!(debug.contains("ScramCredentials"));
    for secret in [
        "correct horse",
        "correct",
        "good-token",
        "bad-token",
        "a stable server secret",
    ] {
        assert!(!debug.contains(secret), "{secret:?} leaked:\n{debug}");
    }
    // The stored keys never appear either.
    let creds = &dir.scram["alice"];
    assert!(!debug.contains(&format!("{:?}", creds.stored_key())));
    assert!(!format!("{:?}", ctx()).contains("server secret"));
}
