//! The examples of RFC 4616 (PLAIN), RFC 2195 (CRAM-MD5) and RFC 7677
//! (SCRAM-SHA-256), checked through the public API.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use support::*;
use tern_sasl::{Answer, CramSecret, Mechanism, ScramCredentials, Step};

#[test]
fn rfc4616_section4_examples() {
    // "\0tim\0tanstaaftanstaaf": tim authenticates as himself.
    let mut auth = start(Mechanism::Plain, Some(b"\0tim\0tanstaaftanstaaf"));
    match auth.next() {
        Step::VerifyPassword {
            authcid,
            authzid,
            password,
        } => {
            assert_eq!(authcid, "tim");
            assert_eq!(authzid, None);
            assert_eq!(password.as_str(), "tanstaaftanstaaf");
        }
        other => panic!("{other:?}"),
    }
    auth.provide(Answer::PasswordOk(true));
    assert_eq!(
        auth.next(),
        Step::Success {
            authcid: "tim".into(),
            authzid: None
        }
    );

    // "Ursel\0Kurt\0xipj3plmq": Kurt authenticates and asks to act as Ursel.
    let mut auth = start(Mechanism::Plain, Some(b"Ursel\0Kurt\0xipj3plmq"));
    match auth.next() {
        Step::VerifyPassword {
            authcid,
            authzid,
            password,
        } => {
            assert_eq!(authcid, "Kurt");
            assert_eq!(authzid.as_deref(), Some("Ursel"));
            assert_eq!(password.as_str(), "xipj3plmq");
        }
        other => panic!("{other:?}"),
    }
    auth.provide(Answer::PasswordOk(true));
    assert_eq!(
        auth.next(),
        Step::Success {
            authcid: "Kurt".into(),
            authzid: Some("Ursel".into())
        }
    );
}

#[test]
fn rfc2195_example() {
    let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
    let response = "tim b913a602c7eda7a495b4e6e7334d3890";
    // The client side of the example, with a reference HMAC-MD5.
    assert_eq!(
        format!("tim {}", hmac_md5_hex("tanstaaftanstaaf", challenge)),
        response
    );
    // The server side, from the stored secret only.
    let secret = CramSecret::from_password("tanstaaftanstaaf");
    let digest: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&response[4 + 2 * i..6 + 2 * i], 16).unwrap())
        .collect();
    let digest: [u8; 16] = digest.try_into().unwrap();
    assert!(secret.verify(challenge, &digest));
    assert!(!secret.verify(b"<1896.697170952@postoffice.reston.mci.ne>", &digest));
    // The stored form survives a round trip.
    assert!(CramSecret::from_bytes(*secret.to_bytes()).verify(challenge, &digest));
}

const RFC7677_CLIENT_FIRST_BARE: &str = "n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC7677_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC7677_CLIENT_FINAL_WITHOUT_PROOF: &str =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

#[test]
fn rfc7677_section3_keys_proof_and_signature() {
    // ScramCredentials::from_password("pencil", salt, 4096) must give keys
    // that, with the RFC's AuthMessage, produce the RFC's proof check and
    // server signature.
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let creds = ScramCredentials::from_password("pencil", &salt, 4096).unwrap();
    let auth_message = format!(
        "{RFC7677_CLIENT_FIRST_BARE},{RFC7677_SERVER_FIRST},{RFC7677_CLIENT_FINAL_WITHOUT_PROOF}"
    );
    let proof = client_proof("pencil", &salt, 4096, &auth_message);
    assert_eq!(
        STANDARD.encode(&proof),
        "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    );

    // StoredKey = H(ClientKey) where ClientKey = proof XOR HMAC(StoredKey, AuthMessage).
    let stored = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, creds.stored_key());
    let signature = ring::hmac::sign(&stored, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(signature.as_ref())
        .map(|(a, b)| a ^ b)
        .collect();
    assert_eq!(
        ring::digest::digest(&ring::digest::SHA256, &client_key).as_ref(),
        creds.stored_key()
    );

    let server_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, creds.server_key());
    let server_signature = ring::hmac::sign(&server_key, auth_message.as_bytes());
    assert_eq!(
        STANDARD.encode(server_signature.as_ref()),
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn rfc7677_user_through_the_exchange() {
    // The RFC's user, password, client nonce, salt and iteration count,
    // through ServerAuth (the server nonce is ours, so proof and signature
    // are computed by the test client and checked against the server).
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let mut dir = Directory::new();
    dir.scram.insert(
        "user".into(),
        ScramCredentials::from_password("pencil", &salt, 4096).unwrap(),
    );
    let mut client = ScramClient::new("user", "pencil", "n,,", "rOprNGfwEbeRWgbNEkqO");
    let mut auth = start(Mechanism::ScramSha256, Some(&client.first()));
    let question = auth.next();
    assert_eq!(
        question,
        Step::LookupScram {
            authcid: "user".into(),
            authzid: None
        }
    );
    auth.provide(dir.answer(&question));
    let Step::Challenge(server_first) = auth.next() else {
        panic!()
    };
    let sf = String::from_utf8(server_first.clone()).unwrap();
    assert!(sf.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
    assert!(
        sf.len() > "r=rOprNGfwEbeRWgbNEkqO".len() + 20,
        "a server nonce is appended: {sf}"
    );
    assert!(sf.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), "{sf}");
    auth.client_response(&client.final_message(&server_first));
    let Step::Challenge(server_final) = auth.next() else {
        panic!()
    };
    assert_eq!(server_final, client.expected_server_final());
    assert_eq!(auth.next(), Step::NeedResponse);
    auth.client_response(b"");
    assert_eq!(
        auth.next(),
        Step::Success {
            authcid: "user".into(),
            authzid: None
        }
    );
}
