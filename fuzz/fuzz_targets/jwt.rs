//! OAUTHBEARER/XOAUTH2 bearer tokens (attacker-controlled) against the JWT
//! validator, for each key type: it never panics and never accepts a token
//! it did not see signed by the configured key (the fuzzer cannot forge an
//! HMAC-SHA256 or an ECDSA signature, so every input must be refused).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tern_sasl::jwt::{JwtConfig, JwtKey, JwtValidator};

fn validators() -> &'static [JwtValidator] {
    static V: OnceLock<Vec<JwtValidator>> = OnceLock::new();
    V.get_or_init(|| {
        let hs = JwtValidator::new(JwtConfig::new(JwtKey::Hs256(
            b"fuzzing-secret-of-at-least-32-bytes!!".to_vec(),
        )))
        .expect("HS256 config");
        // An uncompressed P-256 point (the generator G).
        let mut point = vec![0x04];
        point.extend_from_slice(&[
            0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4,
            0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45,
            0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7,
            0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce,
            0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
        ]);
        let mut out = vec![hs];
        if let Ok(es) = JwtValidator::new(JwtConfig::new(JwtKey::Es256(point))) {
            out.push(es);
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    for v in validators() {
        assert!(
            v.validate(token, 1_700_000_000).is_err(),
            "accepted a token nobody signed: {token:?}"
        );
    }
});
