//! SMTP AUTH (RFC 4954) in the sans-IO server session: every mechanism
//! driven end to end by bytes (the client side computed here), every error
//! reply, the TLS rules, submission's 530, and secrets kept out of `Debug`.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Answer, Harness, Policy};
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;
use tern_sasl::{CramSecret, FailureKind, Mechanism, ScramCredentials, TokenRejection};
use tern_smtp::reply::Reply;
use tern_smtp::server::{AuthQuestion, Event, MAX_AUTH_LINE, ServerConfig, TimeoutClass};
use tern_types::EnhancedStatus;

const PASSWORD: &str = "s3cret-Pa55";
const TOKEN: &str = "good.bearer.token";
const NONCE: [u8; 24] = [0x42; 24];
const NOW: u64 = 1_700_000_000;
const SALT: &[u8] = b"0123456789abcdef";

fn codes(out: &str) -> Vec<String> {
    Harness::codes(out)
}

/// The EHLO keywords (with parameters) of an EHLO reply.
fn keywords(out: &str) -> Vec<&str> {
    out.split("\r\n")
        .skip(1)
        .filter(|l| l.len() > 4)
        .map(|l| &l[4..])
        .collect()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// Every mechanism, TLS active (implicit TLS listener).
fn config() -> ServerConfig {
    ServerConfig {
        hostname: "mx.tern.test".to_owned(),
        tls_active: true,
        auth_mechanisms: Mechanism::ALL.to_vec(),
        auth_secret: b"a stable server secret of 32+ bytes".to_vec(),
        ..ServerConfig::default()
    }
}

/// The user directory: alice / PASSWORD, token TOKEN is alice's; an
/// authzid other than the authcid is refused with 535.
fn directory() -> Policy {
    Box::new(|ev| match ev {
        Event::AuthStart { .. } => Answer::AuthBegin(NONCE.to_vec(), NOW),
        Event::Auth(q) => Answer::Sasl(match q {
            AuthQuestion::VerifyPassword {
                authcid, password, ..
            } => tern_sasl::Answer::PasswordOk(authcid == "alice" && password.as_str() == PASSWORD),
            AuthQuestion::LookupCram { authcid } => tern_sasl::Answer::Cram(
                (authcid == "alice").then(|| CramSecret::from_password(PASSWORD)),
            ),
            AuthQuestion::LookupScram { authcid, .. } => tern_sasl::Answer::Scram(
                (authcid == "alice")
                    .then(|| ScramCredentials::from_password(PASSWORD, SALT, 4096).unwrap()),
            ),
            AuthQuestion::VerifyToken { token, .. } => {
                tern_sasl::Answer::Token(if token.as_str() == TOKEN {
                    Ok("alice".to_owned())
                } else {
                    Err(TokenRejection::Invalid)
                })
            }
            other => panic!("unexpected question {other:?}"),
        }),
        Event::Authenticated {
            authcid,
            authzid: Some(z),
            ..
        } if z != authcid => Answer::Reply(Reply::new(
            535,
            EnhancedStatus::new(5, 7, 8),
            "not authorised to act as that identity",
        )),
        _ => Answer::Accept,
    })
}

fn session(config: ServerConfig) -> Harness {
    let mut h = Harness::with_policy(config, directory());
    let out = h.send("EHLO client.test\r\n");
    assert!(out.starts_with("250-"), "{out}");
    h
}

fn plain(authzid: &str, authcid: &str, password: &str) -> String {
    b64(format!("{authzid}\0{authcid}\0{password}"))
}

fn auth_failed(h: &Harness) -> Vec<(Mechanism, Option<String>, FailureKind)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::AuthFailed {
                mechanism,
                authcid,
                kind,
            } => Some((*mechanism, authcid.clone(), *kind)),
            _ => None,
        })
        .collect()
}

/// The text after "334 " of the only line of `out`, decoded.
fn challenge(out: &str) -> Vec<u8> {
    let text = out
        .strip_prefix("334 ")
        .and_then(|t| t.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("334 expected: {out:?}"));
    B64.decode(text).unwrap()
}

fn assert_authenticated(h: &mut Harness, user: &str) {
    assert_eq!(h.session.authenticated(), Some(user));
    assert_eq!(h.session.protocol(), "ESMTPSA");
    let out = h.send("MAIL FROM:<alice@tern.test>\r\n");
    assert_eq!(codes(&out), ["250 2.1.0"], "{out}");
}

// ---- mechanisms ---------------------------------------------------------

#[test]
fn plain_with_initial_response() {
    let mut h = session(config());
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    assert!(h.events.contains(&Event::AuthStart {
        mechanism: Mechanism::Plain
    }));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Auth(AuthQuestion::VerifyPassword { authcid, authzid: None, password })
            if authcid == "alice" && password.as_str() == PASSWORD
    )));
    assert!(h.events.contains(&Event::Authenticated {
        mechanism: Mechanism::Plain,
        authcid: "alice".into(),
        authzid: None
    }));
    assert!(auth_failed(&h).is_empty());
    assert_eq!(h.session.authorization_id(), Some("alice"));
    assert_authenticated(&mut h, "alice");
}

#[test]
fn plain_without_initial_response() {
    let mut h = session(config());
    assert_eq!(h.send("AUTH plain\r\n"), "334 \r\n");
    assert_eq!(h.session.timeout_class(), TimeoutClass::Command);
    let out = h.send(&format!("{}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    assert_authenticated(&mut h, "alice");
}

#[test]
fn plain_wrong_password_and_unknown_user_look_the_same() {
    let mut h = session(config());
    let wrong = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", "nope")));
    let unknown = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "mallory", "nope")));
    assert_eq!(wrong, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(wrong, unknown);
    assert_eq!(
        auth_failed(&h),
        [
            (
                Mechanism::Plain,
                Some("alice".into()),
                FailureKind::BadCredentials
            ),
            (
                Mechanism::Plain,
                Some("mallory".into()),
                FailureKind::BadCredentials
            ),
        ]
    );
    assert_eq!(h.session.authenticated(), None);
    // Failed attempts do not end the session; a good one still works.
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(codes(&out), ["235 2.7.0"]);
}

#[test]
fn plain_authzid_refused_by_the_runtime() {
    let mut h = session(config());
    let out = h.send(&format!(
        "AUTH PLAIN {}\r\n",
        plain("bob", "alice", PASSWORD)
    ));
    assert_eq!(out, "535 5.7.8 not authorised to act as that identity\r\n");
    assert!(h.events.contains(&Event::Authenticated {
        mechanism: Mechanism::Plain,
        authcid: "alice".into(),
        authzid: Some("bob".into())
    }));
    assert_eq!(
        auth_failed(&h),
        [(
            Mechanism::Plain,
            Some("alice".into()),
            FailureKind::AuthzidNotAllowed
        )]
    );
    assert_eq!(h.session.authenticated(), None);
    assert_eq!(h.session.protocol(), "ESMTPS");
}

#[test]
fn authzid_accepted_is_the_authorization_id() {
    let policy: Policy = {
        let mut dir = directory();
        Box::new(move |ev| match ev {
            Event::Authenticated { .. } => Answer::Accept,
            _ => dir(ev),
        })
    };
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\n");
    let out = h.send(&format!(
        "AUTH PLAIN {}\r\n",
        plain("bob", "alice", PASSWORD)
    ));
    assert_eq!(codes(&out), ["235 2.7.0"]);
    assert_eq!(h.session.authenticated(), Some("alice"));
    assert_eq!(h.session.authorization_id(), Some("bob"));
}

#[test]
fn login() {
    let mut h = session(config());
    let out = h.send("AUTH LOGIN\r\n");
    assert_eq!(challenge(&out), b"Username:");
    let out = h.send(&format!("{}\r\n", b64("alice")));
    assert_eq!(challenge(&out), b"Password:");
    let out = h.send(&format!("{}\r\n", b64(PASSWORD)));
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    assert_authenticated(&mut h, "alice");
}

#[test]
fn login_with_initial_user_name_and_a_wrong_password() {
    let mut h = session(config());
    let out = h.send(&format!("AUTH LOGIN {}\r\n", b64("alice")));
    assert_eq!(challenge(&out), b"Password:");
    let out = h.send(&format!("{}\r\n", b64("wrong")));
    assert_eq!(codes(&out), ["535 5.7.8"]);
    assert_eq!(
        auth_failed(&h),
        [(
            Mechanism::Login,
            Some("alice".into()),
            FailureKind::BadCredentials
        )]
    );
}

fn hmac_md5(key: &[u8], msg: &[u8]) -> String {
    use ::hmac::{KeyInit, Mac};
    let mut mac = ::hmac::Hmac::<md5::Md5>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn cram_md5() {
    let mut h = session(config());
    let out = h.send("AUTH CRAM-MD5\r\n");
    let c = challenge(&out);
    let text = String::from_utf8(c.clone()).unwrap();
    assert!(
        text.starts_with('<') && text.ends_with("@mx.tern.test>"),
        "{text}"
    );
    assert!(text.contains(&NOW.to_string()), "{text}");
    let digest = hmac_md5(PASSWORD.as_bytes(), &c);
    let out = h.send(&format!("{}\r\n", b64(format!("alice {digest}"))));
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    assert!(h.events.contains(&Event::Auth(AuthQuestion::LookupCram {
        authcid: "alice".into()
    })));
    assert_authenticated(&mut h, "alice");
}

#[test]
fn cram_md5_wrong_digest_and_unknown_user() {
    let mut h = session(config());
    let c = challenge(&h.send("AUTH CRAM-MD5\r\n"));
    let digest = hmac_md5(b"not the password", &c);
    let wrong = h.send(&format!("{}\r\n", b64(format!("alice {digest}"))));
    let c = challenge(&h.send("AUTH CRAM-MD5\r\n"));
    let digest = hmac_md5(PASSWORD.as_bytes(), &c);
    let unknown = h.send(&format!("{}\r\n", b64(format!("ghost {digest}"))));
    assert_eq!(wrong, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(wrong, unknown);
    assert_eq!(h.session.authenticated(), None);
}

#[test]
fn cram_md5_refuses_an_initial_response() {
    let mut h = session(config());
    let out = h.send(&format!("AUTH CRAM-MD5 {}\r\n", b64("alice 00")));
    assert_eq!(codes(&out), ["501 5.5.2"], "{out}");
    assert_eq!(auth_failed(&h)[0].2, FailureKind::Malformed);
}

#[test]
fn accept_without_nonce_fails_nonce_mechanisms_temporarily() {
    // A runtime that answers AuthStart with accept(): PLAIN works, CRAM-MD5
    // and SCRAM cannot run without a nonce and get 454.
    let policy: Policy = {
        let mut dir = directory();
        Box::new(move |ev| match ev {
            Event::AuthStart { .. } => Answer::Accept,
            _ => dir(ev),
        })
    };
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\n");
    assert_eq!(
        h.send("AUTH CRAM-MD5\r\n"),
        "454 4.7.0 Temporary authentication failure\r\n"
    );
    assert_eq!(codes(&h.send("AUTH SCRAM-SHA-256\r\n")), ["454 4.7.0"]);
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(codes(&out), ["235 2.7.0"]);
}

/// The client side of SCRAM-SHA-256 (RFC 5802 section 3).
struct ScramClient {
    first_bare: String,
    salted: [u8; 32],
    auth_message: String,
}

impl ScramClient {
    fn client_final(server_first: &str, first_bare: &str, password: &str) -> (String, Self) {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for field in server_first.split(',') {
            let (k, v) = field.split_at(2);
            match k {
                "r=" => nonce = Some(v.to_owned()),
                "s=" => salt = Some(B64.decode(v).unwrap()),
                "i=" => iterations = Some(v.parse::<u32>().unwrap()),
                _ => {}
            }
        }
        let (nonce, salt, iterations) = (nonce.unwrap(), salt.unwrap(), iterations.unwrap());
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let client = ScramClient {
            first_bare: first_bare.to_owned(),
            salted,
            auth_message,
        };
        (format!("{without_proof},p={}", b64(proof)), client)
    }

    fn expected_server_final(&self) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.salted);
        let server_key = hmac::sign(&key, b"Server Key");
        let sig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
            self.auth_message.as_bytes(),
        );
        assert!(self.auth_message.starts_with(&self.first_bare));
        format!("v={}", b64(sig.as_ref()))
    }
}

#[test]
fn scram_sha_256_full_exchange() {
    let mut h = session(config());
    let first_bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
    let out = h.send(&format!(
        "AUTH SCRAM-SHA-256 {}\r\n",
        b64(format!("n,,{first_bare}"))
    ));
    assert!(h.events.contains(&Event::Auth(AuthQuestion::LookupScram {
        authcid: "alice".into(),
        authzid: None
    })));
    let server_first = String::from_utf8(challenge(&out)).unwrap();
    assert!(
        server_first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL") && server_first.ends_with(",i=4096"),
        "{server_first}"
    );
    let (client_final, client) = ScramClient::client_final(&server_first, first_bare, PASSWORD);
    let out = h.send(&format!("{}\r\n", b64(client_final)));
    let server_final = String::from_utf8(challenge(&out)).unwrap();
    assert_eq!(server_final, client.expected_server_final());
    // The client checked the server's signature; it acknowledges with an
    // empty response.
    let out = h.send("\r\n");
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    assert_authenticated(&mut h, "alice");
}

#[test]
fn scram_sha_256_without_initial_response_and_wrong_password() {
    let mut h = session(config());
    assert_eq!(h.send("AUTH SCRAM-SHA-256\r\n"), "334 \r\n");
    let first_bare = "n=alice,r=abcdefghijklmnop";
    let out = h.send(&format!("{}\r\n", b64(format!("n,,{first_bare}"))));
    let server_first = String::from_utf8(challenge(&out)).unwrap();
    let (client_final, _) = ScramClient::client_final(&server_first, first_bare, "wrong");
    let out = h.send(&format!("{}\r\n", b64(client_final)));
    assert_eq!(out, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(
        auth_failed(&h),
        [(
            Mechanism::ScramSha256,
            Some("alice".into()),
            FailureKind::BadCredentials
        )]
    );
}

#[test]
fn oauthbearer_success() {
    let mut h = session(config());
    let msg = format!("n,a=alice,\x01auth=Bearer {TOKEN}\x01\x01");
    let out = h.send(&format!("AUTH OAUTHBEARER {}\r\n", b64(msg)));
    assert_eq!(out, "235 2.7.0 Authentication successful\r\n");
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Auth(AuthQuestion::VerifyToken { token, user_hint: Some(u) })
            if token.as_str() == TOKEN && u == "alice"
    )));
    assert_authenticated(&mut h, "alice");
}

#[test]
fn oauthbearer_failure_json_challenge_then_535() {
    let mut h = session(config());
    let msg = "n,a=alice,\x01auth=Bearer bad.token.here\x01\x01";
    let out = h.send(&format!("AUTH OAUTHBEARER {}\r\n", b64(msg)));
    let json = String::from_utf8(challenge(&out)).unwrap();
    assert!(json.contains("\"status\":\"invalid_token\""), "{json}");
    // RFC 7628 3.2.3: the client answers the error with a lone %x01.
    let out = h.send(&format!("{}\r\n", b64("\x01")));
    assert_eq!(out, "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(
        auth_failed(&h),
        [(
            Mechanism::OAuthBearer,
            Some("alice".into()),
            FailureKind::BadCredentials
        )]
    );
    assert_eq!(h.session.authenticated(), None);
}

#[test]
fn xoauth2_success() {
    let mut h = session(config());
    let msg = format!("user=alice\x01auth=Bearer {TOKEN}\x01\x01");
    let out = h.send(&format!("AUTH XOAUTH2 {}\r\n", b64(msg)));
    assert_eq!(codes(&out), ["235 2.7.0"]);
    assert_authenticated(&mut h, "alice");
}

// ---- refusals and errors ----------------------------------------------

#[test]
fn auth_not_offered_gets_502() {
    let mut h = session(ServerConfig {
        auth_mechanisms: Vec::new(),
        ..config()
    });
    let out = h.send("EHLO c.test\r\n");
    assert!(!out.contains("AUTH"), "{out}");
    assert_eq!(
        h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD))),
        "502 5.5.1 Error: authentication not available\r\n"
    );
}

#[test]
fn auth_before_ehlo_or_after_helo_gets_503() {
    let mut h = Harness::with_policy(config(), directory());
    let out = h.send("AUTH PLAIN\r\n");
    assert_eq!(out, "503 5.5.1 Error: send EHLO first\r\n");
    h.send("HELO c.test\r\n");
    assert_eq!(codes(&h.send("AUTH PLAIN\r\n")), ["503 5.5.1"]);
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::AuthStart { .. }))
    );
}

#[test]
fn second_auth_gets_503() {
    let mut h = session(config());
    h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(
        h.send("AUTH LOGIN\r\n"),
        "503 5.5.1 Error: already authenticated\r\n"
    );
    assert_eq!(h.session.authenticated(), Some("alice"));
}

#[test]
fn auth_inside_a_transaction_gets_503() {
    let mut h = session(config());
    assert_eq!(codes(&h.send("MAIL FROM:<a@b.test>\r\n")), ["250 2.1.0"]);
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(
        out,
        "503 5.5.1 Error: AUTH not permitted during a mail transaction\r\n"
    );
    // After RSET it is allowed.
    h.send("RSET\r\n");
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(codes(&out), ["235 2.7.0"]);
}

#[test]
fn unknown_or_unoffered_mechanism_gets_504() {
    let mut h = session(ServerConfig {
        auth_mechanisms: vec![Mechanism::Plain],
        ..config()
    });
    for cmd in [
        "AUTH GSSAPI\r\n",
        "AUTH LOGIN\r\n",
        "AUTH SCRAM-SHA-256-PLUS\r\n",
    ] {
        assert_eq!(
            h.send(cmd),
            "504 5.5.4 Error: unrecognized authentication mechanism\r\n",
            "{cmd}"
        );
    }
    assert!(auth_failed(&h).is_empty());
}

#[test]
fn plaintext_auth_refused_with_538_then_allowed_after_starttls() {
    let mut h = session(ServerConfig {
        tls_active: false,
        starttls_available: true,
        ..config()
    });
    let out = h.send("EHLO c.test\r\n");
    assert!(!out.contains("AUTH"), "not advertised before TLS: {out}");
    assert!(out.contains("STARTTLS"), "{out}");
    for mech in ["PLAIN", "CRAM-MD5", "SCRAM-SHA-256", "OAUTHBEARER"] {
        assert_eq!(
            h.send(&format!("AUTH {mech}\r\n")),
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        );
    }
    // An unknown mechanism is still 504.
    assert_eq!(codes(&h.send("AUTH NTLM\r\n")), ["504 5.5.4"]);
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::AuthStart { .. }))
    );

    assert_eq!(codes(&h.send("STARTTLS\r\n")), ["220 2.0.0"]);
    h.session.tls_established();
    let out = h.send("EHLO c.test\r\n");
    assert!(
        keywords(&out).contains(&"AUTH SCRAM-SHA-256 OAUTHBEARER XOAUTH2 CRAM-MD5 PLAIN LOGIN"),
        "{out}"
    );
    assert!(!out.contains("STARTTLS"), "{out}");
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(codes(&out), ["235 2.7.0"]);
    assert_eq!(h.session.protocol(), "ESMTPSA");
}

#[test]
fn plaintext_allowed_on_trusted_loopback() {
    let mut h = session(ServerConfig {
        tls_active: false,
        auth_plaintext_allowed: true,
        auth_mechanisms: vec![Mechanism::Plain, Mechanism::Login, Mechanism::Plain],
        ..config()
    });
    let out = h.send("EHLO c.test\r\n");
    assert!(keywords(&out).contains(&"AUTH PLAIN LOGIN"), "{out}");
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(codes(&out), ["235 2.7.0"]);
    assert_eq!(h.session.protocol(), "ESMTPA");
}

#[test]
fn starttls_after_auth_is_refused_and_tls_clears_auth() {
    let mut h = session(ServerConfig {
        tls_active: false,
        starttls_available: true,
        auth_plaintext_allowed: true,
        ..config()
    });
    h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(
        h.send("STARTTLS\r\n"),
        "503 5.5.1 Error: STARTTLS after AUTH\r\n"
    );
    assert_eq!(h.session.authenticated(), Some("alice"));
    // A runtime that completes a handshake anyway: the identity is gone.
    h.session.tls_established();
    assert_eq!(h.session.authenticated(), None);
}

#[test]
fn initial_response_equals_sign_is_empty() {
    let mut h = session(config());
    // PLAIN with an empty message is malformed (not a 334).
    let out = h.send("AUTH PLAIN =\r\n");
    assert_eq!(codes(&out), ["501 5.5.2"], "{out}");
    assert!(h.events.contains(&Event::AuthStart {
        mechanism: Mechanism::Plain
    }));
    // LOGIN with an empty initial response asks for the user name.
    assert_eq!(challenge(&h.send("AUTH LOGIN =\r\n")), b"Username:");
}

#[test]
fn bad_base64_initial_response_gets_501() {
    let mut h = session(config());
    for cmd in [
        "AUTH PLAIN a\r\n",
        "AUTH PLAIN =abc\r\n",
        "AUTH PLAIN ab=c\r\n",
    ] {
        assert_eq!(
            h.send(cmd),
            "501 5.5.2 Error: initial response is not valid base64\r\n",
            "{cmd}"
        );
    }
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::AuthStart { .. }))
    );
}

#[test]
fn bad_base64_response_gets_501() {
    let mut h = session(config());
    h.send("AUTH LOGIN\r\n");
    let out = h.send("not base64!\r\n");
    assert_eq!(
        out,
        "501 5.5.2 Error: AUTH response is not valid base64\r\n"
    );
    assert_eq!(
        auth_failed(&h),
        [(Mechanism::Login, None, FailureKind::Malformed)]
    );
    // Back to commands.
    assert_eq!(codes(&h.send("NOOP\r\n")), ["250 2.0.0"]);
}

#[test]
fn cancel_with_star() {
    let mut h = session(config());
    h.send("AUTH LOGIN\r\n");
    h.send(&format!("{}\r\n", b64("alice")));
    assert_eq!(h.send("*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
    assert_eq!(
        auth_failed(&h),
        // LOGIN's user name reaches the session only with the password.
        [(Mechanism::Login, None, FailureKind::Cancelled)]
    );
    assert_eq!(h.session.authenticated(), None);
    assert_eq!(codes(&h.send("NOOP\r\n")), ["250 2.0.0"]);
}

#[test]
fn response_ending_in_bare_lf_gets_501() {
    let mut h = session(config());
    h.send("AUTH PLAIN\r\n");
    let out = h.send(&format!("{}\n", plain("", "alice", PASSWORD)));
    assert_eq!(out, "501 5.5.2 Error: bare LF in AUTH response\r\n");
    assert_eq!(h.session.authenticated(), None);
}

#[test]
fn over_long_response_gets_one_500_and_is_drained() {
    let mut h = session(config());
    assert_eq!(h.send("AUTH PLAIN\r\n"), "334 \r\n");
    // 20000 octets in several reads, then the line end and a NOOP.
    let mut out = String::new();
    for _ in 0..4 {
        out += &h.send(&"A".repeat(5000));
        assert!(h.session.buffered() <= 5000 + MAX_AUTH_LINE);
    }
    out += &h.send("AAAA\r\nNOOP\r\n");
    assert_eq!(
        out,
        "500 5.5.6 Error: authentication exchange line is too long\r\n250 2.0.0 Ok\r\n"
    );
    assert_eq!(
        auth_failed(&h),
        [(Mechanism::Plain, None, FailureKind::ResponseTooLong)]
    );
    assert!(!h.events.iter().any(|e| matches!(e, Event::Auth(_))));
}

#[test]
fn response_of_exactly_12288_octets_is_read() {
    let mut h = session(config());
    h.send("AUTH PLAIN\r\n");
    // 12288 base64 octets: within the limit, so it reaches the SASL
    // machine (9216 NULs are not a PLAIN message: 501, not 500).
    let out = h.send(&format!("{}\r\n", "A".repeat(12288)));
    assert_eq!(codes(&out), ["501 5.5.2"], "{out}");
    h.send("AUTH PLAIN\r\n");
    let out = h.send(&format!("{}\r\n", "A".repeat(12289)));
    assert_eq!(codes(&out), ["500 5.5.6"], "{out}");
}

#[test]
fn temporary_directory_failure_gets_454() {
    let policy: Policy = Box::new(|ev| match ev {
        Event::AuthStart { .. } => Answer::AuthBegin(NONCE.to_vec(), NOW),
        Event::Auth(_) => Answer::Sasl(tern_sasl::Answer::Fail(FailureKind::Temporary)),
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\n");
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(out, "454 4.7.0 Temporary authentication failure\r\n");
    assert_eq!(auth_failed(&h)[0].2, FailureKind::Temporary);
}

#[test]
fn accept_to_an_auth_question_never_authenticates() {
    let policy: Policy = Box::new(|ev| match ev {
        Event::AuthStart { .. } => Answer::AuthBegin(NONCE.to_vec(), NOW),
        Event::Auth(_) => Answer::Accept,
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\n");
    let out = h.send(&format!(
        "AUTH PLAIN {}\r\n",
        plain("", "alice", "anything")
    ));
    assert_eq!(codes(&out), ["454 4.7.0"]);
    assert_eq!(h.session.authenticated(), None);
    // A positive reply() does not either.
    let policy: Policy = Box::new(|ev| match ev {
        Event::AuthStart { .. } => Answer::AuthBegin(NONCE.to_vec(), NOW),
        Event::Auth(_) => Answer::Reply(Reply::new(235, EnhancedStatus::new(2, 7, 0), "yes")),
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\n");
    let out = h.send(&format!(
        "AUTH PLAIN {}\r\n",
        plain("", "alice", "anything")
    ));
    assert_eq!(codes(&out), ["454 4.7.0"]);
    assert_eq!(h.session.authenticated(), None);
}

#[test]
fn runtime_refusal_of_an_auth_question() {
    let policy: Policy = Box::new(|ev| match ev {
        Event::AuthStart { .. } => Answer::AuthBegin(NONCE.to_vec(), NOW),
        Event::Auth(_) => Answer::Reply(Reply::new(
            454,
            EnhancedStatus::new(4, 7, 0),
            "directory down",
        )),
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\n");
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(out, "454 4.7.0 directory down\r\n");
    assert_eq!(
        auth_failed(&h),
        [(
            Mechanism::Plain,
            Some("alice".into()),
            FailureKind::Temporary
        )]
    );
}

#[test]
fn auth_start_refused_by_the_runtime() {
    let policy: Policy = Box::new(|ev| match ev {
        Event::AuthStart { .. } => Answer::Reply(Reply::new(
            454,
            EnhancedStatus::new(4, 7, 0),
            "Too many failed authentications, try again later",
        )),
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(
        ServerConfig {
            max_errors: 2,
            ..config()
        },
        policy,
    );
    h.send("EHLO c.test\r\n");
    let auth = format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD));
    for _ in 0..3 {
        assert_eq!(
            h.send(&auth),
            "454 4.7.0 Too many failed authentications, try again later\r\n"
        );
    }
    // A policy answer: not a protocol error, no AuthFailed.
    assert!(!h.session.is_closed());
    assert!(auth_failed(&h).is_empty());
    assert!(!h.events.iter().any(|e| matches!(e, Event::Auth(_))));
}

#[test]
fn failed_auth_counts_towards_max_errors() {
    let mut h = session(ServerConfig {
        max_errors: 3,
        ..config()
    });
    let auth = format!("AUTH PLAIN {}\r\n", plain("", "alice", "wrong"));
    let out = h.send(&auth.repeat(3));
    assert_eq!(
        codes(&out),
        ["535 5.7.8", "535 5.7.8", "535 5.7.8", "421 4.7.0"],
        "{out}"
    );
    assert!(h.session.is_closed());
}

#[test]
fn pipelined_auth_response_and_commands_run_in_order() {
    let mut h = session(config());
    let out = h.send(&format!(
        "AUTH PLAIN\r\n{}\r\nMAIL FROM:<alice@tern.test>\r\nRCPT TO:<b@example.net>\r\n",
        plain("", "alice", PASSWORD)
    ));
    assert_eq!(
        codes(&out),
        ["334", "235 2.7.0", "250 2.1.0", "250 2.1.5"],
        "{out}"
    );
}

#[test]
fn a_command_after_334_is_taken_as_the_response() {
    let mut h = session(config());
    h.send("AUTH PLAIN\r\n");
    // "QUIT" is valid base64: it is the (malformed) response, not a QUIT.
    assert_eq!(codes(&h.send("QUIT\r\n")), ["501 5.5.2"]);
    assert!(!h.session.is_closed());
    assert!(!h.events.contains(&Event::Quit));
}

#[test]
fn timeout_and_shutdown_during_an_exchange() {
    let mut h = session(config());
    h.send("AUTH LOGIN\r\n");
    assert_eq!(h.session.timeout_class(), TimeoutClass::Command);
    h.session.on_timeout();
    h.pump();
    assert_eq!(codes(&h.take()), ["421 4.4.2"]);
    assert!(h.session.is_closed());
}

// ---- submission ---------------------------------------------------------

#[test]
fn auth_required_refuses_mail_before_auth_with_530() {
    let mut h = session(ServerConfig {
        auth_required: true,
        ..config()
    });
    assert_eq!(
        h.send("MAIL FROM:<alice@tern.test>\r\n"),
        "530 5.7.0 Authentication required\r\n"
    );
    assert!(!h.events.iter().any(|e| matches!(e, Event::MailFrom { .. })));
    let out = h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(codes(&out), ["235 2.7.0"]);
    let out = h.send("MAIL FROM:<alice@tern.test>\r\nRCPT TO:<bob@elsewhere.test>\r\n");
    assert_eq!(codes(&out), ["250 2.1.0", "250 2.1.5"]);
    assert_eq!(h.session.protocol(), "ESMTPSA");
}

#[test]
fn rset_and_ehlo_keep_authentication_and_auth_is_no_longer_advertised() {
    let mut h = session(ServerConfig {
        auth_required: true,
        ..config()
    });
    let out = h.send("EHLO c.test\r\n");
    assert!(
        keywords(&out).iter().any(|k| k.starts_with("AUTH ")),
        "{out}"
    );
    h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    assert_eq!(codes(&h.send("RSET\r\n")), ["250 2.0.0"]);
    assert_eq!(h.session.authenticated(), Some("alice"));
    let out = h.send("EHLO c.test\r\n");
    assert!(!out.contains("AUTH"), "{out}");
    assert_eq!(h.session.authenticated(), Some("alice"));
    assert_eq!(
        codes(&h.send("MAIL FROM:<alice@tern.test>\r\n")),
        ["250 2.1.0"]
    );
    // HELO after AUTH: still authenticated, still ESMTPSA (RFC 3848).
    h.send("RSET\r\nHELO c.test\r\n");
    assert_eq!(h.session.protocol(), "ESMTPSA");
}

#[test]
fn utf8_protocol_names_when_authenticated() {
    let mut h = session(config());
    h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    h.send("MAIL FROM:<alice@tern.test> SMTPUTF8\r\n");
    assert_eq!(h.session.protocol(), "UTF8SMTPSA");
    let mut h = session(ServerConfig {
        tls_active: false,
        auth_plaintext_allowed: true,
        ..config()
    });
    h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    h.send("MAIL FROM:<alice@tern.test> SMTPUTF8\r\n");
    assert_eq!(h.session.protocol(), "UTF8SMTPA");
}

// ---- secrets --------------------------------------------------------------

#[test]
fn debug_output_never_shows_passwords_or_tokens() {
    let secrets = [
        PASSWORD.to_owned(),
        TOKEN.to_owned(),
        plain("", "alice", PASSWORD),
        b64(PASSWORD),
        b64(format!("n,a=alice,\x01auth=Bearer {TOKEN}\x01\x01")),
    ];
    let check = |what: &str, text: &str| {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{what} shows {s:?}: {text}");
        }
    };
    let mut h = session(config());
    // Pipelined: while the AuthStart question is pending, the session holds
    // the decoded initial response and the unread password line.
    let paused: Policy = Box::new(|_| Answer::Accept);
    let mut p = Harness::with_policy(config(), paused);
    p.send("EHLO c.test\r\n");
    p.session.handle_input(
        format!(
            "AUTH PLAIN {}\r\nAUTH LOGIN\r\n{}\r\n",
            plain("", "alice", PASSWORD),
            b64(PASSWORD)
        )
        .as_bytes(),
    );
    let ev = p.session.poll_event().unwrap();
    assert_eq!(
        ev,
        Event::AuthStart {
            mechanism: Mechanism::Plain
        }
    );
    check("session", &format!("{:?}", p.session));
    check("session", &format!("{:#?}", p.session));
    check(
        "config",
        &format!(
            "{:?}",
            ServerConfig {
                auth_secret: PASSWORD.as_bytes().to_vec(),
                ..config()
            }
        ),
    );

    // Every flow that carries a secret, to its end.
    h.send(&format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)));
    let mut h2 = session(config());
    h2.send("AUTH LOGIN\r\n");
    h2.send(&format!("{}\r\n", b64("alice")));
    h2.send(&format!("{}\r\n", b64(PASSWORD)));
    let mut h3 = session(config());
    h3.send(&format!(
        "AUTH OAUTHBEARER {}\r\n",
        b64(format!("n,a=alice,\x01auth=Bearer {TOKEN}\x01\x01"))
    ));
    let mut h4 = session(config());
    h4.send(&format!(
        "AUTH XOAUTH2 {}\r\n",
        b64(format!("user=alice\x01auth=Bearer {TOKEN}x\x01\x01"))
    ));
    h4.send(&format!("{}\r\n", b64("\x01")));
    let mut h5 = session(config());
    h5.send(&format!(
        "AUTH PLAIN {}\r\n",
        plain("", "alice", "s3cret-Pa55x")
    ));
    let mut seen = 0;
    for h in [&h, &h2, &h3, &h4, &h5] {
        for ev in &h.events {
            check("event", &format!("{ev:?}"));
            check("event", &format!("{ev:#?}"));
            if matches!(ev, Event::Auth(_)) {
                seen += 1;
            }
        }
        check("session", &format!("{:?}", h.session));
    }
    assert_eq!(seen, 5, "every flow asked a question carrying a secret");

    // The question itself, held by the session while unanswered.
    let mut q = Harness::with_policy(config(), Box::new(|_| Answer::Accept));
    q.send("EHLO c.test\r\n");
    q.session
        .handle_input(format!("AUTH PLAIN {}\r\n", plain("", "alice", PASSWORD)).as_bytes());
    assert!(matches!(
        q.session.poll_event(),
        Some(Event::AuthStart { .. })
    ));
    q.session.auth_begin(&NONCE, NOW);
    let ev = q.session.poll_event().unwrap();
    assert!(matches!(
        ev,
        Event::Auth(AuthQuestion::VerifyPassword { .. })
    ));
    check("question", &format!("{ev:?}"));
    check("session", &format!("{:#?}", q.session));
}

#[test]
fn answers_of_the_wrong_kind_are_ignored() {
    let mut q = Harness::with_policy(config(), Box::new(|_| Answer::Accept));
    q.send("EHLO c.test\r\n");
    // No question pending.
    q.session.auth_begin(&NONCE, NOW);
    q.session.auth_answer(tern_sasl::Answer::PasswordOk(true));
    assert!(q.session.poll_event().is_none());
    assert_eq!(q.session.take_output(), b"");
    q.session
        .handle_input(format!("AUTH PLAIN {}\r\n", plain("", "alice", "wrong")).as_bytes());
    assert!(matches!(
        q.session.poll_event(),
        Some(Event::AuthStart { .. })
    ));
    // An auth_answer to AuthStart is ignored: the question stays pending.
    q.session.auth_answer(tern_sasl::Answer::PasswordOk(true));
    assert!(q.session.poll_event().is_none());
    q.session.auth_begin(&NONCE, NOW);
    assert!(matches!(q.session.poll_event(), Some(Event::Auth(_))));
    // auth_begin to an Auth question is ignored too.
    q.session.auth_begin(&NONCE, NOW);
    assert!(q.session.poll_event().is_none());
    q.session.auth_answer(tern_sasl::Answer::PasswordOk(false));
    assert!(matches!(
        q.session.poll_event(),
        Some(Event::AuthFailed { .. })
    ));
    assert_eq!(
        q.session.take_output(),
        b"535 5.7.8 Authentication credentials invalid\r\n"
    );
}
