//! Shared test helpers: a scripted client, an in-memory directory and a
//! SCRAM-SHA-256 client, all driving `ServerAuth` through its public API.
#![allow(dead_code, unreachable_pub)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};
use std::collections::HashMap;
use std::num::NonZeroU32;
use tern_sasl::{
    Answer, CramSecret, Mechanism, ScramCredentials, ServerAuth, StartContext, Step, TokenRejection,
};

pub const NONCE: [u8; 18] = *b"0123456789abcdefgh";
pub const HOST: &str = "mx.example.test";
pub const NOW: u64 = 1_700_000_000;
pub const SERVER_SECRET: &[u8] = b"a stable server secret, 32 bytes";
pub const ITERATIONS: u32 = 4096;

pub fn ctx() -> StartContext<'static> {
    StartContext::new(&NONCE, HOST, NOW, SERVER_SECRET)
}

/// What the scripted client does with a challenge.
pub enum Reply {
    Send(Vec<u8>),
    Cancel,
}

/// The user directory and token validator the driver consults.
pub struct Directory {
    pub passwords: HashMap<String, String>,
    pub cram: HashMap<String, CramSecret>,
    pub scram: HashMap<String, ScramCredentials>,
    pub tokens: HashMap<String, String>,
}

impl Directory {
    pub fn new() -> Directory {
        let mut d = Directory {
            passwords: HashMap::new(),
            cram: HashMap::new(),
            scram: HashMap::new(),
            tokens: HashMap::new(),
        };
        d.add("alice", "correct horse");
        d.add("tim", "tanstaaftanstaaf");
        d.tokens.insert("good-token".into(), "alice".into());
        d
    }

    pub fn add(&mut self, user: &str, password: &str) {
        self.passwords.insert(user.into(), password.into());
        self.cram
            .insert(user.into(), CramSecret::from_password(password));
        let salt = [user.len() as u8; 16];
        self.scram.insert(
            user.into(),
            ScramCredentials::from_password(password, &salt, ITERATIONS).unwrap(),
        );
    }

    pub fn answer(&self, step: &Step) -> Answer {
        match step {
            Step::VerifyPassword {
                authcid, password, ..
            } => Answer::PasswordOk(
                self.passwords.get(authcid).map(String::as_str) == Some(password.as_str()),
            ),
            Step::LookupCram { authcid } => Answer::Cram(self.cram.get(authcid).cloned()),
            Step::LookupScram { authcid, .. } => Answer::Scram(self.scram.get(authcid).cloned()),
            Step::VerifyToken { token, .. } => Answer::Token(
                self.tokens
                    .get(token.as_str())
                    .cloned()
                    .ok_or(TokenRejection::Invalid),
            ),
            other => panic!("not a question: {other:?}"),
        }
    }
}

/// Everything that happened in one exchange.
pub struct Transcript {
    pub steps: Vec<Step>,
    pub debug: String,
}

impl Transcript {
    pub fn last(&self) -> &Step {
        self.steps.last().unwrap()
    }

    pub fn challenges(&self) -> Vec<Vec<u8>> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Challenge(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Drives `auth` to its end: challenges go to `client`, questions to `dir`.
/// Records every step and the `Debug` form of every step and machine state.
pub fn drive(
    mut auth: ServerAuth,
    dir: &Directory,
    mut client: impl FnMut(&[u8]) -> Reply,
) -> Transcript {
    let mut steps = Vec::new();
    let mut debug = String::new();
    for _ in 0..32 {
        debug.push_str(&format!("{auth:?}\n{auth:#?}\n"));
        let step = auth.next();
        debug.push_str(&format!("{step:?}\n{step:#?}\n"));
        match &step {
            Step::Challenge(c) => match client(c) {
                Reply::Send(data) => auth.client_response(&data),
                Reply::Cancel => auth.cancel(),
            },
            Step::Success { .. } | Step::Failure(_) => {
                // The end is sticky.
                let again = auth.next();
                assert_eq!(format!("{again:?}"), format!("{step:?}"));
                assert!(auth.is_done());
                steps.push(step);
                return Transcript { steps, debug };
            }
            Step::NeedResponse | Step::NeedAnswer => panic!("driver lost track: {step:?}"),
            question => {
                let answer = dir.answer(question);
                debug.push_str(&format!("{answer:?}\n"));
                auth.provide(answer);
            }
        }
        steps.push(step);
    }
    panic!("exchange did not end");
}

/// A client that sends the given responses in order, one per challenge.
pub fn scripted(responses: Vec<Vec<u8>>) -> impl FnMut(&[u8]) -> Reply {
    let mut it = responses.into_iter();
    move |_| it.next().map(Reply::Send).unwrap_or(Reply::Cancel)
}

pub fn start(mech: Mechanism, initial: Option<&[u8]>) -> ServerAuth {
    ServerAuth::start(mech, initial, ctx())
}

pub fn hmac_md5_hex(password: &str, challenge: &[u8]) -> String {
    use ::hmac::{KeyInit, Mac};
    let mut mac = ::hmac::Hmac::<md5::Md5>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(challenge);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A SCRAM-SHA-256 client: answers server-first with client-final, then
/// checks server-final.
pub struct ScramClient {
    pub password: String,
    pub gs2_header: String,
    pub bare: String,
    pub auth_message: Option<String>,
    pub salted: Option<[u8; 32]>,
}

impl ScramClient {
    pub fn new(user: &str, password: &str, gs2_header: &str, nonce: &str) -> ScramClient {
        ScramClient {
            password: password.into(),
            gs2_header: gs2_header.into(),
            bare: format!("n={user},r={nonce}"),
            auth_message: None,
            salted: None,
        }
    }

    pub fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.bare).into_bytes()
    }

    pub fn final_message(&mut self, server_first: &[u8]) -> Vec<u8> {
        let sf = std::str::from_utf8(server_first).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for field in sf.split(',') {
            if let Some(v) = field.strip_prefix("r=") {
                nonce = v;
            } else if let Some(v) = field.strip_prefix("s=") {
                salt = STANDARD.decode(v).unwrap();
            } else if let Some(v) = field.strip_prefix("i=") {
                iterations = v.parse().unwrap();
            }
        }
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(&self.gs2_header));
        let auth_message = format!("{},{sf},{without_proof}", self.bare);
        let proof = client_proof(&self.password, &salt, iterations, &auth_message);
        self.salted = Some(salted_password(&self.password, &salt, iterations));
        self.auth_message = Some(auth_message);
        format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes()
    }

    pub fn expected_server_final(&self) -> Vec<u8> {
        let salted = self.salted.unwrap();
        let sig = server_signature(&salted, self.auth_message.as_deref().unwrap());
        format!("v={}", STANDARD.encode(sig)).into_bytes()
    }
}

pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).unwrap(),
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

pub fn client_proof(password: &str, salt: &[u8], iterations: u32, auth_message: &str) -> Vec<u8> {
    let salted = salted_password(password, salt, iterations);
    let client_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salted), b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let signature = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
        auth_message.as_bytes(),
    );
    client_key
        .as_ref()
        .iter()
        .zip(signature.as_ref())
        .map(|(a, b)| a ^ b)
        .collect()
}

pub fn server_signature(salted: &[u8; 32], auth_message: &str) -> Vec<u8> {
    let server_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salted), b"Server Key");
    hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
        auth_message.as_bytes(),
    )
    .as_ref()
    .to_vec()
}

pub fn failure_kind(step: &Step) -> tern_sasl::FailureKind {
    match step {
        Step::Failure(f) => f.kind,
        other => panic!("expected a failure, got {other:?}"),
    }
}
