//! Bounded parsing of a message's signatures and streaming body hashes, so
//! that a message is verified without ever being held whole in memory.
//!
//! Verification needs two things of a message: its header section (held in
//! memory, bounded by the caller) and, per distinct (canonicalization,
//! hash, length) of its `DKIM-Signature:` and `ARC-Message-Signature:`
//! fields, a hash of the body. [`BodyHashPlan::of`] reads the header
//! section and caps the work an attacker can ask for: at most
//! [`MAX_DKIM_SIGNATURES`] DKIM signatures, [`MAX_ARC_SETS`] ARC sets and
//! [`MAX_BODY_HASHES`] distinct body hashes (signatures needing more are
//! left out, as if absent). [`BodyHashPlan::hash`] then streams the body
//! from any reader, once, through every hash at the same time.
//!
//! This module never allocates more than the header section and one read
//! buffer, and never does network I/O; hashing is CPU work, so async
//! callers run it on a blocking thread.

use std::io::{self, Read};

use mail_auth::AuthenticatedMessage;
use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::dkim::Canonicalization;
use mail_auth::dkim::canonicalize::BodyHasher;

use crate::headers::body_offset;

/// `DKIM-Signature:` fields verified per message; later ones are ignored.
pub const MAX_DKIM_SIGNATURES: usize = 10;
/// ARC sets considered per message (RFC 8617 5.1.1 allows 50 instances).
pub const MAX_ARC_SETS: usize = 50;
/// Distinct body hashes computed per message.
pub const MAX_BODY_HASHES: usize = 8;

/// One body hash: canonicalization, algorithm, `l=` (0: the whole body).
type Spec = (Canonicalization, HashAlgorithm, u64);

/// What to hash of a message's body, from its header section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyHashPlan {
    specs: Vec<Spec>,
}

/// The body hashes of one message, computed by [`BodyHashPlan::hash`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyHashes {
    hashes: Vec<(Canonicalization, HashAlgorithm, u64, Vec<u8>)>,
}

/// The relaxed SHA-256 hash of the whole body, which our ARC seal needs.
const SEAL_SPEC: Spec = (Canonicalization::Relaxed, HashAlgorithm::Sha256, 0);

impl BodyHashPlan {
    /// The hashes the signatures of `header` (a header section, with or
    /// without the empty line that ends it) need, bounded as the module
    /// says; with `sealing`, also the hash our ARC seal needs.
    pub fn of(header: &[u8], sealing: bool) -> BodyHashPlan {
        let mut plan = match parse_bounded(header) {
            Some(m) => BodyHashPlan {
                specs: m
                    .body_hashes
                    .iter()
                    .map(|(c, h, l, _)| (*c, *h, *l))
                    .collect(),
            },
            None => BodyHashPlan::default(),
        };
        if sealing && !plan.specs.contains(&SEAL_SPEC) {
            plan.specs.push(SEAL_SPEC);
        }
        plan
    }

    /// How many hashes the plan computes.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether the plan computes nothing (no signatures, no seal).
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Streams `body` (the bytes after the header section) through every
    /// hash of the plan.
    pub fn hash(&self, mut body: impl Read) -> io::Result<BodyHashes> {
        let mut hashers: Vec<(Spec, BodyHasher<ring::digest::Context>)> = self
            .specs
            .iter()
            .map(|&(c, h, l)| {
                let ctx = match h {
                    HashAlgorithm::Sha1 => {
                        ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY)
                    }
                    HashAlgorithm::Sha256 => ring::digest::Context::new(&ring::digest::SHA256),
                };
                ((c, h, l), BodyHasher::new(ctx, c, l))
            })
            .collect();
        if !hashers.is_empty() {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                for (_, h) in &mut hashers {
                    h.write(&buf[..n]);
                }
            }
        }
        Ok(BodyHashes {
            hashes: hashers
                .into_iter()
                .map(|((c, h, l), hasher)| {
                    let (ctx, _) = hasher.finish();
                    (c, h, l, ctx.finish().as_ref().to_vec())
                })
                .collect(),
        })
    }
}

impl BodyHashes {
    /// Hashes the body of a whole message held in memory (for callers that
    /// have one; the server streams from its spool instead).
    pub fn of_message(message: &[u8], sealing: bool) -> BodyHashes {
        let split = body_offset(message);
        BodyHashPlan::of(&message[..split], sealing)
            .hash(&message[split..])
            .unwrap_or_default()
    }
}

/// Parses the signatures of a header section with the caps of this module:
/// the message `mail-auth` verifies, with an empty body whose hashes
/// [`attach`] fills in. Signatures beyond the caps are dropped.
pub(crate) fn parse_bounded(header: &[u8]) -> Option<AuthenticatedMessage<'_>> {
    let header = &header[..body_offset(header)];
    let mut m = AuthenticatedMessage::parse(header)?;
    m.dkim_headers.truncate(MAX_DKIM_SIGNATURES);
    if m.as_headers.len() > MAX_ARC_SETS || m.ams_headers.len() > MAX_ARC_SETS {
        // More instances than RFC 8617 allows: not a chain to validate.
        m.as_headers.clear();
        m.ams_headers.clear();
        m.aar_headers.clear();
        m.has_arc_errors = true;
    }
    let spec_of = |cb: Canonicalization, a, l: u64| -> Spec { (cb, HashAlgorithm::from(a), l) };
    let mut specs: Vec<Spec> = Vec::new();
    let mut keep = |spec: Spec| -> bool {
        if specs.contains(&spec) {
            true
        } else if specs.len() < MAX_BODY_HASHES {
            specs.push(spec);
            true
        } else {
            false
        }
    };
    m.dkim_headers
        .retain(|h| keep(spec_of(h.header.cb, h.header.a, h.header.l)));
    let arc_before = m.ams_headers.len();
    m.ams_headers
        .retain(|h| keep(spec_of(h.header.cb, h.header.a, h.header.l)));
    if m.ams_headers.len() != arc_before {
        m.has_arc_errors = true;
    }
    m.body_hashes = specs
        .into_iter()
        .map(|(c, h, l)| (c, h, l, Vec::new()))
        .collect();
    Some(m)
}

/// Puts the streamed body hashes into a message from [`parse_bounded`].
/// A hash the plan did not compute stays empty, which matches no
/// signature's `bh=` (a body hash failure, never a pass).
pub(crate) fn attach(m: &mut AuthenticatedMessage<'_>, hashes: &BodyHashes) {
    for (c, h, l, bh) in &mut m.body_hashes {
        if let Some((_, _, _, got)) = hashes
            .hashes
            .iter()
            .find(|(c2, h2, l2, _)| c2 == c && h2 == h && l2 == l)
        {
            bh.clone_from(got);
        }
    }
    let seal = hashes
        .hashes
        .iter()
        .find(|(c, h, l, _)| (*c, *h, *l) == SEAL_SPEC);
    if let Some(seal) = seal
        && !m
            .body_hashes
            .iter()
            .any(|(c, h, l, _)| (*c, *h, *l) == SEAL_SPEC)
    {
        m.body_hashes.push(seal.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(i: usize, l: Option<usize>) -> String {
        format!(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=d{i}.test; s=s; h=from;{} bh=AAAA; b=AAAA\r\n",
            l.map(|l| format!(" l={l};")).unwrap_or_default()
        )
    }

    /// Security finding 14: the number of signatures (and so of body
    /// hashes and header scans) was unbounded.
    #[test]
    fn finding_14_signatures_and_body_hashes_are_capped() {
        let mut header = String::new();
        for i in 0..500 {
            header.push_str(&signature(i, None));
        }
        header.push_str("From: a@b.test\r\n\r\n");
        let m = parse_bounded(header.as_bytes()).unwrap();
        assert!(m.dkim_headers.len() <= MAX_DKIM_SIGNATURES);
        assert!(m.body_hashes.len() <= MAX_BODY_HASHES);
        let plan = BodyHashPlan::of(header.as_bytes(), true);
        assert!(plan.len() <= MAX_BODY_HASHES + 1);
    }

    #[test]
    fn streamed_hashes_match_the_whole_message_ones() {
        let body = "Line one  \r\n\r\nline\tthree\r\n\r\n\r\n".repeat(5000);
        let mut header = String::new();
        header.push_str(&signature(1, None));
        header.push_str(&signature(2, Some(100)));
        header.push_str(
            "DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; d=x.test; s=s; h=from; bh=AAAA; b=AAAA\r\n",
        );
        header.push_str("From: a@b.test\r\n\r\n");
        let whole = format!("{header}{body}");
        let reference = AuthenticatedMessage::parse(whole.as_bytes()).unwrap();
        let plan = BodyHashPlan::of(header.as_bytes(), false);
        // l= signatures are refused by the strict parse (RFC 6376 8.2: a
        // body length limit lets anyone append content): no hash for them.
        assert_eq!(plan.len(), 2);
        // Read in small pieces so that hashing crosses read boundaries.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let hashes = plan.hash(Dribble(body.as_bytes())).unwrap();
        let mut m = parse_bounded(header.as_bytes()).unwrap();
        attach(&mut m, &hashes);
        assert_eq!(m.body_hashes, reference.body_hashes);
        assert_eq!(BodyHashes::of_message(whole.as_bytes(), false), hashes);
    }
}
