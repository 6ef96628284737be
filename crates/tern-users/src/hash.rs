//! Password hashes: verifying the schemes admins migrate from, and making
//! new argon2id hashes.
//!
//! Verified: argon2id and argon2i (PHC strings, `$argon2id$v=19$m=…`),
//! bcrypt (`$2a$`, `$2b$`, `$2y$`), sha512-crypt (`$6$`) and sha256-crypt
//! (`$5$`). A Dovecot-style scheme prefix (`{SHA512-CRYPT}$6$…`,
//! `{BLF-CRYPT}$2y$…`, `{ARGON2ID}$argon2id$…`) is accepted and ignored, so
//! a Dovecot `passwd-file` hash can be pasted as it is. New hashes are always
//! argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane).
//!
//! Verification is slow on purpose (tens of milliseconds): callers in an
//! async runtime run it on a blocking thread. Every comparison of a computed
//! hash with the stored one is constant-time (the argon2, bcrypt and
//! sha-crypt crates compare with `subtle`/`ctutils`). For unknown users call
//! [`dummy_verify`], which costs what a real argon2id check costs, so that
//! the time to answer does not reveal whether a user exists.
//!
//! This module must never log, print or put into an error a password or a
//! hash: errors carry the scheme name and the problem only.

use std::hint::black_box;

use argon2::password_hash::phc::PasswordHash as PhcHash;
use argon2::{Algorithm, Argon2, PasswordHasher, PasswordVerifier, Version};
use sha_crypt::ShaCrypt;

use crate::UsersError;

/// Largest argon2 memory cost accepted when verifying, in KiB (1 GiB): a
/// typo in the users file must not let one login exhaust the machine.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
/// Largest argon2 time cost (passes) accepted when verifying.
pub const MAX_ARGON2_PASSES: u32 = 64;
/// Largest bcrypt cost accepted when verifying (2^16 rounds, about 4 s).
pub const MAX_BCRYPT_COST: u32 = 16;
/// Largest sha-crypt `rounds=` accepted when verifying (about 2 s).
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 2_000_000;

/// Longest password checked, in bytes. Longer ones are wrong without being
/// hashed: sha-crypt's cost grows with the password's length, and no SASL
/// client sends a password this long.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// An argon2id hash of a random password nobody knows, with the production
/// parameters: what [`dummy_verify`] checks against.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$MVQ0Wm8zZmQyMm5MSVBCaw$Uc5lEOjWP3UQG/6pee6CqwXSlsSolQv5zss6incCzWE";

/// The password hash schemes Tern verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `$argon2id$` (PHC string format); what Tern writes.
    Argon2id,
    /// `$argon2i$` (PHC string format).
    Argon2i,
    /// `$2a$`, `$2b$` or `$2y$`.
    Bcrypt,
    /// `$6$`.
    Sha512Crypt,
    /// `$5$`.
    Sha256Crypt,
}

impl Scheme {
    /// The scheme's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "argon2id",
            Scheme::Argon2i => "argon2i",
            Scheme::Bcrypt => "bcrypt",
            Scheme::Sha512Crypt => "sha512-crypt",
            Scheme::Sha256Crypt => "sha256-crypt",
        }
    }

    /// The scheme of `hash`, after an optional Dovecot `{SCHEME}` prefix.
    pub fn of(hash: &str) -> Result<Scheme, UsersError> {
        let (_, body) = split_dovecot_prefix(hash)?;
        let scheme = if body.starts_with("$argon2id$") {
            Scheme::Argon2id
        } else if body.starts_with("$argon2i$") {
            Scheme::Argon2i
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| body.starts_with(p)) {
            Scheme::Bcrypt
        } else if body.starts_with("$6$") {
            Scheme::Sha512Crypt
        } else if body.starts_with("$5$") {
            Scheme::Sha256Crypt
        } else {
            return Err(UsersError::UnknownScheme {
                scheme: describe_scheme(body),
            });
        };
        Ok(scheme)
    }
}

/// Argon2id parameters for new hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl HashParams {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    pub const OWASP: HashParams = HashParams {
        memory_kib: 19_456,
        passes: 2,
        lanes: 1,
    };
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams::OWASP
    }
}

/// Checks `password` against a stored `hash` of any supported scheme.
///
/// `Ok(false)` is a wrong password. An error means the hash itself is
/// unusable (unknown scheme, malformed, parameters beyond the caps): the
/// caller logs it and answers as for a wrong password. A password longer
/// than [`MAX_PASSWORD_LEN`] is wrong. Never panics.
pub fn verify_password(hash: &str, password: &str) -> Result<bool, UsersError> {
    let scheme = Scheme::of(hash)?;
    let (_, hash) = split_dovecot_prefix(hash)?;
    if password.len() > MAX_PASSWORD_LEN {
        return Ok(false);
    }
    let pw = password.as_bytes();
    match scheme {
        Scheme::Argon2id | Scheme::Argon2i => verify_argon2(scheme, hash, pw),
        Scheme::Bcrypt => verify_bcrypt(hash, pw),
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => verify_sha_crypt(scheme, hash, pw),
    }
}

/// Spends the time of a real argon2id verification (production parameters)
/// and learns nothing: call it when the user does not exist, so that an
/// unknown user is answered as slowly as a wrong password.
pub fn dummy_verify(password: &str) {
    // The dummy's password is unknown, so the result is always false; it is
    // passed through black_box so the work cannot be optimised away.
    let _ = black_box(verify_password(black_box(DUMMY_HASH), black_box(password)));
}

/// A new argon2id hash of `password` with [`HashParams::OWASP`] and a random
/// 16-byte salt from the operating system.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    hash_password_with(password, &HashParams::OWASP)
}

/// A new argon2id hash of `password` with `params` and a random salt.
pub fn hash_password_with(password: &str, params: &HashParams) -> Result<String, UsersError> {
    let salt = random_bytes::<16>()?;
    let params = argon2::Params::new(params.memory_kib, params.passes, params.lanes, None)
        .map_err(|e| UsersError::Derive(format!("argon2 parameters: {e}")))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let hash = hasher
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| UsersError::Derive(format!("argon2: {e}")))?;
    Ok(hash.to_string())
}

/// `N` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], UsersError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| UsersError::Derive(format!("operating system random numbers: {e}")))?;
    Ok(bytes)
}

fn malformed(scheme: Scheme, problem: impl Into<String>) -> UsersError {
    UsersError::MalformedHash {
        scheme: scheme.name(),
        problem: problem.into(),
    }
}

fn verify_argon2(scheme: Scheme, hash: &str, pw: &[u8]) -> Result<bool, UsersError> {
    let parsed = PhcHash::new(hash).map_err(|e| malformed(scheme, e.to_string()))?;
    let params = argon2::Params::try_from(&parsed).map_err(|e| malformed(scheme, e.to_string()))?;
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err(malformed(
            scheme,
            format!("memory cost above {MAX_ARGON2_MEMORY_KIB} KiB"),
        ));
    }
    if params.t_cost() > MAX_ARGON2_PASSES {
        return Err(malformed(
            scheme,
            format!("more than {MAX_ARGON2_PASSES} passes"),
        ));
    }
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(malformed(scheme, "no salt or no hash"));
    };
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str())
        .map_err(|e| malformed(scheme, e.to_string()))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| malformed(scheme, e.to_string()))?,
        None => Version::default(),
    };
    let blocks = params.block_count();
    let hasher = Argon2::new(algorithm, version, params);
    let mut out = [0u8; argon2::password_hash::phc::Output::MAX_LENGTH];
    let out = out
        .get_mut(..expected.len())
        .ok_or_else(|| malformed(scheme, "hash too long"))?;
    hasher
        .hash_password_into_with_memory(pw, salt.as_ref(), out, argon2_memory(blocks))
        .map_err(|e| malformed(scheme, e.to_string()))?;
    let computed = argon2::password_hash::phc::Output::new(out)
        .map_err(|e| malformed(scheme, e.to_string()))?;
    // `Output`'s equality is constant-time.
    Ok(computed == *expected)
}

/// Working memory for one argon2 computation of `blocks` blocks, allocated
/// so that it goes back to the operating system when it is dropped. glibc
/// serves a large allocation with its own `mmap` and unmaps it when freed,
/// but then raises its mmap threshold to that size (up to 32 MiB), so the
/// next 19 MiB of an argon2 check would come from the heap, which keeps
/// it: about 19–38 MiB in each malloc arena that ever ran a check (up to
/// 16 arenas on two cores), held by a server that is otherwise small. A
/// capacity above 32 MiB is always mapped and never raises the
/// threshold; only the blocks the parameters need are written, so only
/// those pages are ever resident.
fn argon2_memory(blocks: usize) -> Vec<argon2::Block> {
    const ALWAYS_MAPPED: usize = 32 * 1024 * 1024 / argon2::Block::SIZE + 1;
    let mut memory = Vec::with_capacity(blocks.max(ALWAYS_MAPPED));
    memory.resize(blocks, argon2::Block::default());
    memory
}

fn verify_bcrypt(hash: &str, pw: &[u8]) -> Result<bool, UsersError> {
    // `$2b$NN$…`: check the cost before spending it.
    let cost: u32 = hash
        .get(4..6)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed(Scheme::Bcrypt, "no cost"))?;
    if cost > MAX_BCRYPT_COST {
        return Err(malformed(
            Scheme::Bcrypt,
            format!("cost {cost} above {MAX_BCRYPT_COST}"),
        ));
    }
    // Passwords longer than 72 bytes are truncated, as every bcrypt
    // implementation that wrote these hashes did.
    bcrypt::verify(pw, hash).map_err(|e| malformed(Scheme::Bcrypt, e.to_string()))
}

fn verify_sha_crypt(scheme: Scheme, hash: &str, pw: &[u8]) -> Result<bool, UsersError> {
    // `$6$rounds=N$salt$hash` or `$6$salt$hash`.
    if let Some(rounds) = hash
        .get(3..)
        .and_then(|rest| rest.strip_prefix("rounds="))
        .and_then(|rest| rest.split('$').next())
    {
        let rounds: u32 = rounds
            .parse()
            .map_err(|_| malformed(scheme, "invalid rounds"))?;
        if rounds > MAX_SHA_CRYPT_ROUNDS {
            return Err(malformed(
                scheme,
                format!("rounds above {MAX_SHA_CRYPT_ROUNDS}"),
            ));
        }
    }
    match ShaCrypt::default().verify_password(pw, hash) {
        Ok(()) => Ok(true),
        Err(sha_crypt::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(malformed(scheme, e.to_string())),
    }
}

/// Splits `{SCHEME}hash` into the Dovecot scheme name and the hash.
fn split_dovecot_prefix(hash: &str) -> Result<(Option<&str>, &str), UsersError> {
    let Some(rest) = hash.strip_prefix('{') else {
        return Ok((None, hash));
    };
    let Some((name, body)) = rest.split_once('}') else {
        return Err(UsersError::UnknownScheme {
            scheme: describe_scheme(hash),
        });
    };
    const KNOWN: [&str; 6] = [
        "ARGON2ID",
        "ARGON2I",
        "BLF-CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "CRYPT",
    ];
    if KNOWN.iter().any(|k| k.eq_ignore_ascii_case(name)) {
        Ok((Some(name), body))
    } else {
        Err(UsersError::UnknownScheme {
            scheme: describe_scheme(hash),
        })
    }
}

/// A short, safe description of what a hash's scheme looks like, for an
/// error: the identifier between the first `$…$` or `{…}`, limited to a few
/// harmless characters, never the hash (or a clear password pasted by
/// mistake).
fn describe_scheme(hash: &str) -> String {
    let ident = if let Some(rest) = hash.strip_prefix('$') {
        rest.split_once('$').map(|(id, _)| (id, '$', '$'))
    } else if let Some(rest) = hash.strip_prefix('{') {
        rest.split_once('}').map(|(id, _)| (id, '{', '}'))
    } else {
        None
    };
    match ident {
        Some((id, open, close))
            if !id.is_empty()
                && id.len() <= 16
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            format!("{open}{id}{close}")
        }
        _ => "(no recognisable scheme prefix)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters where the cost is not the point.
    const CHEAP: HashParams = HashParams {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    // Known vectors made with other implementations on the development
    // machine:
    // - argon2 reference CLI: `echo -n secret | argon2 somesaltsomesalt -id -t 2 -m 10 -p 1 -e`
    const ARGON2ID_SECRET: &str = "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$OHc9SRN0/XEiuUUihEOCXBYjZ7cbpwHqG3uM3/Rhr/w";
    //   `echo -n secret | argon2 somesaltsomesalt -i -t 3 -m 12 -p 2 -e`
    const ARGON2I_SECRET: &str = "$argon2i$v=19$m=4096,t=3,p=2$c29tZXNhbHRzb21lc2FsdA$BxmGX0WdpxRmfsMocAIaAcgBYnuEN0yfH97NGzvZfGk";
    //   `echo -n secret | argon2 saltsaltsaltsalt -id -t 2 -k 19456 -p 1 -e` (production parameters)
    const ARGON2ID_OWASP_SECRET: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$6G4RVhNf4sYzxbGJQzsImNwnF3BnniV+nogjylwdjiA";
    // - `openssl passwd -6 -salt saltsalt secret`
    const SHA512_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    // - `openssl passwd -5 -salt saltsalt secret`
    const SHA256_SECRET: &str = "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA";
    // - glibc/libxcrypt crypt(3) via Python's crypt module:
    //   crypt('secret', '$6$rounds=10000$saltsalt')
    const SHA512_ROUNDS_SECRET: &str = "$6$rounds=10000$saltsalt$WowrPBpEDVlCoruBosYlrZycTCx3//TyDHYqEhX9DUHHt0XTztUqzQDDUuvUGRA8aUe9p55hcAxeGcu58sm3u.";
    //   crypt('correct horse battery staple', '$5$rounds=2000$abc')
    const SHA256_ROUNDS_STAPLE: &str =
        "$5$rounds=2000$abc$B4C20RbUP09z3cO6nrsD5Ffv4YWEuByF5dpv1hSXl55";
    //   crypt('secret', '$2y$05$abcdefghijklmnopqrstuu')
    const BCRYPT_2Y_SECRET: &str = "$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";
    //   crypt('secret', '$2b$05$abcdefghijklmnopqrstuu')
    const BCRYPT_2B_SECRET: &str = "$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";
    //   crypt('secret', '$2a$04$saltsaltsaltsaltsaltsu')
    const BCRYPT_2A_SECRET: &str = "$2a$04$saltsaltsaltsaltsaltsuWh6U.jwuCGL.FR5/wFOY9.o2fz8txby";

    #[test]
    fn known_vectors_verify() {
        for hash in [
            ARGON2ID_SECRET,
            ARGON2I_SECRET,
            SHA512_SECRET,
            SHA256_SECRET,
            SHA512_ROUNDS_SECRET,
            BCRYPT_2Y_SECRET,
            BCRYPT_2B_SECRET,
            BCRYPT_2A_SECRET,
        ] {
            assert!(verify_password(hash, "secret").unwrap(), "{hash}");
            assert!(!verify_password(hash, "Secret").unwrap(), "{hash}");
            assert!(!verify_password(hash, "").unwrap(), "{hash}");
        }
        assert!(verify_password(SHA256_ROUNDS_STAPLE, "correct horse battery staple").unwrap());
        assert!(!verify_password(SHA256_ROUNDS_STAPLE, "correct horse battery stapler").unwrap());
    }

    #[test]
    fn production_parameters_round_trip_and_known_vector() {
        let hash = hash_password("correct horse").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(&hash, "correct horse").unwrap());
        assert!(!verify_password(&hash, "correct horsf").unwrap());
        assert!(verify_password(ARGON2ID_OWASP_SECRET, "secret").unwrap());
        // The dummy uses exactly the production parameters, so it costs the
        // same as checking a real user's password.
        let dummy = PhcHash::new(DUMMY_HASH).unwrap();
        let real = PhcHash::new(&hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(dummy.salt.unwrap().len(), real.salt.unwrap().len());
        assert!(!verify_password(DUMMY_HASH, "secret").unwrap());
        dummy_verify("correct horse");
    }

    #[test]
    fn argon2_round_trip_with_random_salts() {
        let a = hash_password_with("pässwörd", &CHEAP).unwrap();
        let b = hash_password_with("pässwörd", &CHEAP).unwrap();
        assert_ne!(a, b, "each hash gets its own salt");
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        for h in [&a, &b] {
            assert!(verify_password(h, "pässwörd").unwrap());
            assert!(!verify_password(h, "passwort").unwrap());
        }
        assert_eq!(Scheme::of(&a).unwrap(), Scheme::Argon2id);
    }

    #[test]
    fn bcrypt_round_trip() {
        let hash = bcrypt::hash("hunter2", 4).unwrap();
        assert!(hash.starts_with("$2b$04$"));
        assert!(verify_password(&hash, "hunter2").unwrap());
        assert!(!verify_password(&hash, "hunter3").unwrap());
        let y = hash.replacen("$2b$", "$2y$", 1);
        assert!(verify_password(&y, "hunter2").unwrap());
        assert_eq!(Scheme::of(&y).unwrap(), Scheme::Bcrypt);
    }

    #[test]
    fn sha_crypt_round_trip() {
        use sha_crypt::{Algorithm as ShaAlg, Params, PasswordHasher as _};
        for (alg, scheme) in [
            (ShaAlg::Sha512Crypt, Scheme::Sha512Crypt),
            (ShaAlg::Sha256Crypt, Scheme::Sha256Crypt),
        ] {
            let hasher = ShaCrypt::new(alg, Params::new(5000).unwrap());
            let hash = hasher
                .hash_password_with_salt(b"open sesame", b"aBcD1234eFgH")
                .unwrap()
                .to_string();
            assert_eq!(Scheme::of(&hash).unwrap(), scheme, "{hash}");
            assert!(verify_password(&hash, "open sesame").unwrap());
            assert!(!verify_password(&hash, "open sesam").unwrap());
        }
    }

    #[test]
    fn dovecot_prefixes_are_accepted() {
        assert!(verify_password(&format!("{{SHA512-CRYPT}}{SHA512_SECRET}"), "secret").unwrap());
        assert!(verify_password(&format!("{{BLF-CRYPT}}{BCRYPT_2Y_SECRET}"), "secret").unwrap());
        assert!(verify_password(&format!("{{argon2id}}{ARGON2ID_SECRET}"), "secret").unwrap());
        assert!(verify_password(&format!("{{CRYPT}}{SHA256_SECRET}"), "secret").unwrap());
        let err = verify_password("{PLAIN}secret", "secret").unwrap_err();
        assert!(matches!(err, UsersError::UnknownScheme { ref scheme } if scheme == "{PLAIN}"));
    }

    #[test]
    fn unknown_schemes_are_errors_that_leak_nothing() {
        let cases = [
            ("$1$saltsalt$abcdefghijklmnopqrstuv", "$1$"),
            ("$y$j9T$abcdefghijklmnop$qrstuvwxyz", "$y$"),
            ("hunter2", "(no recognisable scheme prefix)"),
            ("", "(no recognisable scheme prefix)"),
            ("$argon2d$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$abc", "$argon2d$"),
            ("{unterminated", "(no recognisable scheme prefix)"),
            ("$hunter2 with spaces$", "(no recognisable scheme prefix)"),
        ];
        for (hash, scheme) in cases {
            let err = verify_password(hash, "pw").unwrap_err();
            match &err {
                UsersError::UnknownScheme { scheme: s } => assert_eq!(s, scheme, "{hash}"),
                other => panic!("{hash}: {other:?}"),
            }
            let text = err.to_string();
            assert!(
                !text.contains("hunter2") && !text.contains("saltsalt"),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_hashes_are_errors_not_panics() {
        let cases = [
            "$argon2id$",
            "$argon2id$v=19$m=64,t=1,p=1$!!!$###",
            "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$OHc9SRN0/XEiuUUihEOCXBYjZ7cbpwHqG3uM3/Rhr/w",
            "$argon2id$v=19$m=1024,t=1000,p=1$c29tZXNhbHRzb21lc2FsdA$OHc9SRN0/XEiuUUihEOCXBYjZ7cbpwHqG3uM3/Rhr/w",
            "$2b$",
            "$2b$xx$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
            "$2b$31$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
            "$2b$05$short",
            "$6$",
            "$6$rounds=99999999$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1",
            "$6$rounds=abc$saltsalt$x",
            "$6$saltsalt$not*base64",
            "$5$saltsalt$",
        ];
        for hash in cases {
            match verify_password(hash, "secret") {
                Err(UsersError::MalformedHash { scheme, problem }) => {
                    assert!(!problem.contains("saltsalt"), "{hash}: {problem}");
                    assert!(!scheme.is_empty());
                }
                other => panic!("{hash}: {other:?}"),
            }
        }
    }

    #[test]
    fn long_and_odd_passwords_do_not_panic() {
        let long = "x".repeat(100_000);
        let start = std::time::Instant::now();
        assert!(!verify_password(SHA512_SECRET, &long).unwrap());
        assert!(!verify_password(BCRYPT_2B_SECRET, &long).unwrap());
        assert!(!verify_password(ARGON2ID_SECRET, &long).unwrap());
        assert!(!verify_password(ARGON2ID_SECRET, "\0").unwrap());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "long passwords are not hashed"
        );
        // The limit itself still verifies.
        let at_limit = "y".repeat(MAX_PASSWORD_LEN);
        let hash = hash_password_with(&at_limit, &CHEAP).unwrap();
        assert!(verify_password(&hash, &at_limit).unwrap());
        assert!(!verify_password(&hash, &format!("{at_limit}y")).unwrap());
    }
}
