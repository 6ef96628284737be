//! What the server advertised in its EHLO/LHLO reply ([`Extensions`]).

use super::config::AuthMechanism;
use crate::reply::Reply;

/// What the server advertised in its EHLO reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(n)` when advertised; `n` is the largest
    /// message, 0 when the server gave no (or no readable) fixed limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// AUTH mechanisms (RFC 4954), upper-case, at most
    /// [`MAX_AUTH_MECHANISMS`]. Empty: AUTH not offered.
    pub auth: Vec<String>,
    /// CHUNKING (RFC 3030); parsed, not used by this client.
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
}

/// Most AUTH mechanisms kept from an EHLO reply.
pub const MAX_AUTH_MECHANISMS: usize = 32;

impl Extensions {
    /// Reads the keywords of an EHLO reply (every line but the first,
    /// which names the server). Unknown keywords are ignored; keywords
    /// are case-insensitive. `AUTH=…` (an old form) counts as AUTH.
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            let mut mechanisms =
                |first: Option<&str>, words: std::str::SplitAsciiWhitespace<'_>| {
                    for m in first.into_iter().chain(words) {
                        let m = m.to_ascii_uppercase();
                        if !m.is_empty()
                            && ext.auth.len() < MAX_AUTH_MECHANISMS
                            && !ext.auth.contains(&m)
                        {
                            ext.auth.push(m);
                        }
                    }
                };
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => {
                    ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                "AUTH" => mechanisms(None, words),
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                k => {
                    if let Some(first) = k.strip_prefix("AUTH=") {
                        mechanisms(Some(first), words);
                    }
                }
            }
        }
        ext
    }

    /// The server offers this AUTH mechanism.
    pub fn offers_auth(&self, mechanism: AuthMechanism) -> bool {
        self.auth.iter().any(|m| m == mechanism.as_str())
    }
}
