//! Queue identifiers.
//!
//! A [`QueueId`] names one message in the spool for its whole life: it is the
//! file name under `tmp/` and `queue/`, it appears in `250 … queued as <id>`,
//! in `Received:` headers and on every log line. It is therefore restricted
//! to `[0-9A-Z]` so that it is always a safe file name and header token.
//!
//! Layout: 12 characters of microseconds since the Unix epoch followed by 4
//! characters of a sequence number, both in a base32 alphabet whose ASCII
//! order is its numeric order, so that string order is creation order.
//! The generator hands out strictly increasing ids within a process and is
//! seeded from the newest id already on disk, so ids stay unique across
//! restarts even when the wall clock steps backwards.
//!
//! This module must never accept a string that could act as a path
//! (`/`, `.`, `..`): [`QueueId::from_str`] validates length and alphabet.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Base32 digits in ascending ASCII order (Crockford's alphabet).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_CHARS: usize = 12;
const SEQ_CHARS: usize = 4;
/// Total length of a queue id.
pub const QUEUE_ID_LEN: usize = TIME_CHARS + SEQ_CHARS;
const SEQ_LIMIT: u32 = 1 << (5 * SEQ_CHARS);

/// A spool message identifier: 16 characters of `[0-9A-Z]`, sortable by
/// creation time, unique across restarts of one spool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    /// The id as a string (always 16 ASCII characters).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_parts(micros: u64, seq: u32) -> QueueId {
        let mut s = String::with_capacity(QUEUE_ID_LEN);
        push_base32(&mut s, micros, TIME_CHARS);
        push_base32(&mut s, u64::from(seq), SEQ_CHARS);
        QueueId(s)
    }

    /// When the id was made (microseconds since the Unix epoch): the time
    /// the message was received, read without opening it.
    pub fn created_micros(&self) -> u64 {
        self.parts().0
    }

    /// The (microseconds, sequence) pair this id encodes.
    fn parts(&self) -> (u64, u32) {
        let b = self.0.as_bytes();
        let micros = decode_base32(&b[..TIME_CHARS]);
        // SEQ_CHARS * 5 = 20 bits, always fits in u32.
        let seq = u32::try_from(decode_base32(&b[TIME_CHARS..])).unwrap_or(u32::MAX);
        (micros, seq)
    }
}

fn push_base32(out: &mut String, value: u64, width: usize) {
    for i in (0..width).rev() {
        let digit = ((value >> (5 * i)) & 0x1f) as usize;
        out.push(char::from(ALPHABET[digit]));
    }
}

fn decode_base32(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |acc, &c| {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u64;
        (acc << 5) | v
    })
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a [`QueueId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queue id: expected {QUEUE_ID_LEN} characters of [0-9A-Z] (Crockford base32)")]
pub struct InvalidQueueId;

impl FromStr for QueueId {
    type Err = InvalidQueueId;

    fn from_str(s: &str) -> Result<QueueId, InvalidQueueId> {
        if s.len() == QUEUE_ID_LEN && s.bytes().all(|c| ALPHABET.contains(&c)) {
            Ok(QueueId(s.to_owned()))
        } else {
            Err(InvalidQueueId)
        }
    }
}

/// Hands out strictly increasing [`QueueId`]s.
///
/// Within a microsecond the sequence starts at a random per-process salt
/// below 2^19 (leaving at least 2^19 ids per microsecond), so that even if
/// the clock stepped back across a restart *and* the spool held no newer id
/// to seed from, a repeat of an old id would need the same microsecond and
/// the same salt.
/// Hands out strictly increasing [`QueueId`]s (what [`Spool::create`](crate::Spool::create)
/// uses; public for other queue stores, which keep one per process).
#[derive(Debug)]
pub struct IdGenerator {
    last: Mutex<(u64, u32)>,
    salt: u32,
}

fn random_salt() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    (h.finish() % u64::from(SEQ_LIMIT / 2)) as u32
}

impl IdGenerator {
    /// A generator whose ids all sort after `newest` (the newest id on disk).
    /// A generator whose ids all sort after `newest` (the newest id already
    /// stored, if any). Its sequence numbers start at a per-process salt, so
    /// two processes starting ids in the same microsecond rarely collide.
    pub fn new(newest: Option<&QueueId>) -> IdGenerator {
        IdGenerator {
            last: Mutex::new(newest.map_or((0, 0), QueueId::parts)),
            salt: random_salt(),
        }
    }

    /// The next id, greater than every id this generator gave before.
    pub fn next_id(&self) -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let now = now & ((1u64 << (5 * TIME_CHARS)) - 1);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (micros, seq) = if now > last.0 {
            (now, self.salt)
        } else if last.1 + 1 < SEQ_LIMIT {
            (last.0, last.1 + 1)
        } else {
            (last.0 + 1, self.salt)
        };
        *last = (micros, seq);
        QueueId::from_parts(micros, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_sorted_and_unique() {
        let generator = IdGenerator::new(None);
        let ids: Vec<QueueId> = (0..10_000).map(|_| generator.next_id()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        for id in &ids {
            assert_eq!(id.as_str().parse::<QueueId>().as_ref(), Ok(id));
        }
    }

    #[test]
    fn generator_seeded_from_the_future_stays_monotonic() {
        // An id far in the future (clock stepped back since it was made).
        let future = QueueId::from_parts((1u64 << 60) - 2, SEQ_LIMIT - 1);
        let generator = IdGenerator::new(Some(&future));
        let next = generator.next_id();
        assert!(next > future);
        assert!(generator.next_id() > next);
    }

    #[test]
    fn parts_round_trip() {
        let id = QueueId::from_parts(1_700_000_000_123_456, 77);
        assert_eq!(id.parts(), (1_700_000_000_123_456, 77));
        assert_eq!(id.as_str().len(), QUEUE_ID_LEN);
    }

    #[test]
    fn rejects_path_like_and_malformed_ids() {
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            "0123456789ABCDE",
            "0123456789ABCDEFG",
            "0123456789abcdef",
            "0123456789ABCDE/",
            "0123456789ABCDEI", // I is not in the alphabet
            "0123456789ABCDEU",
        ] {
            assert!(bad.parse::<QueueId>().is_err(), "{bad:?} accepted");
        }
        assert!("0123456789ABCDEF".parse::<QueueId>().is_ok());
    }
}
