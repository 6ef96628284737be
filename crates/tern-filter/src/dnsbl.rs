//! DNS blocklists and allowlists, without I/O: the names to look up, what
//! the answers mean, and the weighted decision.
//!
//! A client address is looked up as its reversed form under each zone:
//! `192.0.2.1` in `zen.spamhaus.org` is `1.2.0.192.zen.spamhaus.org`;
//! IPv6 addresses are reversed nibble by nibble (32 labels). An `A`
//! answer means "listed", with these exceptions:
//!
//! - **Spamhaus** zones (any zone under `spamhaus.org` or `spamhaus.net`,
//!   or [`ZoneKind::Spamhaus`]): only `127.0.0.2`–`127.0.0.11` count
//!   (SBL, CSS, XBL, DROP, PBL); `127.255.255.x` are error codes (252: a
//!   typing error in the query; 254: the query came through a public
//!   resolver; 255: too many queries) and never mean listed.
//! - **Other** zones: any `127.0.0.0/8` answer counts but `127.0.0.1` and
//!   `127.255.255.0/24` (the error range several lists use), unless the
//!   zone names the answers it counts ([`Zone::results`]).
//!
//! Each listed zone adds its weight (negative for allowlists such as
//! DNSWL); the client is refused when the sum reaches the threshold. The
//! reply names the lists: `554 5.7.1 Service unavailable; client
//! [192.0.2.1] blocked using zen.spamhaus.org`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;

use crate::{Action, Verdict};

/// The name to look up for `ip` under `zone` (no trailing dot).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    let mut s = String::with_capacity(80);
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let _ = write!(s, "{}.{}.{}.{}.", o[3], o[2], o[1], o[0]);
        }
        IpAddr::V6(v6) => {
            // An IPv4-mapped address is looked up as the IPv4 address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return query_name(IpAddr::V4(v4), zone);
            }
            for byte in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
            }
        }
    }
    s.push_str(zone);
    s
}

/// How a zone's answers are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZoneKind {
    /// Spamhaus if the zone is under `spamhaus.org`/`spamhaus.net`,
    /// otherwise generic.
    #[default]
    Auto,
    /// Spamhaus ZEN semantics.
    Spamhaus,
    /// Any `127.0.0.0/8` answer but `127.0.0.1` and `127.255.255.0/24`.
    Generic,
}

/// One list.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// The zone (`zen.spamhaus.org`).
    pub name: String,
    /// What a listing weighs (negative: an allowlist).
    pub weight: f64,
    /// How answers are read.
    pub kind: ZoneKind,
    /// Only these answers count (empty: the kind's rule).
    pub results: Vec<Ipv4Net>,
}

impl Zone {
    /// A zone with weight 1 and the default reading.
    pub fn new(name: &str) -> Zone {
        Zone {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            weight: 1.0,
            kind: ZoneKind::Auto,
            results: Vec::new(),
        }
    }

    fn is_spamhaus(&self) -> bool {
        match self.kind {
            ZoneKind::Spamhaus => true,
            ZoneKind::Generic => false,
            ZoneKind::Auto => {
                let n = self.name.as_str();
                ["spamhaus.org", "spamhaus.net"]
                    .iter()
                    .any(|d| n == *d || n.ends_with(&format!(".{d}")))
            }
        }
    }

    /// What the `A` answers of a lookup mean.
    pub fn interpret(&self, answers: &[Ipv4Addr]) -> Listing {
        let mut listed = Vec::new();
        let mut errors = Vec::new();
        for a in answers {
            let o = a.octets();
            if o[0] == 127 && o[1] == 255 && o[2] == 255 {
                errors.push(*a);
                continue;
            }
            let counts = if !self.results.is_empty() {
                self.results.iter().any(|n| n.contains(a))
            } else if self.is_spamhaus() {
                o[..3] == [127, 0, 0] && (2..=11).contains(&o[3])
            } else {
                o[0] == 127 && *a != Ipv4Addr::new(127, 0, 0, 1)
            };
            if counts {
                listed.push(*a);
            }
        }
        if !listed.is_empty() {
            Listing::Listed(listed)
        } else if !errors.is_empty() {
            Listing::Error(errors)
        } else {
            Listing::NotListed
        }
    }
}

/// What one zone said about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// Listed, with the answers that count.
    Listed(Vec<Ipv4Addr>),
    /// No answer (NXDOMAIN), or only answers that do not count.
    NotListed,
    /// Only error codes (`127.255.255.x`): the list refused to answer.
    Error(Vec<Ipv4Addr>),
    /// The lookup failed (timeout, SERVFAIL).
    LookupFailed,
}

/// Every zone's answer for one client, and the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// (zone, what it said), in configuration order.
    pub zones: Vec<(String, f64, Listing)>,
    /// Sum of the weights of the zones that list the client.
    pub score: f64,
}

impl Report {
    /// Folds the answers of `zones` (same order as `listings`).
    pub fn new(zones: &[Zone], listings: Vec<Listing>) -> Report {
        let mut score = 0.0;
        let mut out = Vec::with_capacity(zones.len());
        for (z, l) in zones.iter().zip(listings) {
            if let Listing::Listed(_) = l {
                score += z.weight;
            }
            out.push((z.name.clone(), z.weight, l));
        }
        Report { zones: out, score }
    }

    /// The blocklists (positive weight) that list the client.
    pub fn blocking_lists(&self) -> Vec<&str> {
        self.zones
            .iter()
            .filter(|(_, w, l)| *w > 0.0 && matches!(l, Listing::Listed(_)))
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    /// Whether an allowlist (negative weight) lists the client.
    pub fn allowlisted(&self) -> bool {
        self.zones
            .iter()
            .any(|(_, w, l)| *w < 0.0 && matches!(l, Listing::Listed(_)))
    }

    /// A short result: `none`, `listed (zen.spamhaus.org=127.0.0.4)`,
    /// `allowlisted (list.dnswl.org)`, with the score when weights matter.
    pub fn result(&self) -> String {
        let mut parts = Vec::new();
        for (name, _, l) in &self.zones {
            match l {
                Listing::Listed(codes) => parts.push(format!(
                    "{name}={}",
                    codes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )),
                Listing::Error(codes) => parts.push(format!(
                    "{name}=error:{}",
                    codes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )),
                Listing::LookupFailed => parts.push(format!("{name}=temperror")),
                Listing::NotListed => {}
            }
        }
        if parts.is_empty() {
            "none".into()
        } else {
            format!("{} (score={})", parts.join(" "), self.score)
        }
    }

    /// The verdict: refused (`554 5.7.1`, naming the lists) when the score
    /// reaches `threshold`, otherwise go on.
    pub fn verdict(&self, client: IpAddr, threshold: f64) -> Verdict {
        let lists = self.blocking_lists();
        if self.score >= threshold && !lists.is_empty() {
            Verdict::with_action(
                Action::Reject(Reply::new(
                    554,
                    EnhancedStatus::new(5, 7, 1),
                    format!(
                        "Service unavailable; client [{client}] blocked using {}",
                        lists.join(", ")
                    ),
                )),
                self.result(),
            )
        } else {
            Verdict::pass(self.result())
        }
    }
}

/// Answers remembered per (zone, client), for `ttl` seconds of the
/// injected clock, at most `capacity` of them (the oldest go first).
#[derive(Debug)]
pub struct Cache {
    entries: std::collections::HashMap<(String, IpAddr), (u64, Listing)>,
    order: std::collections::VecDeque<(u64, String, IpAddr)>,
    capacity: usize,
    ttl: u64,
}

impl Cache {
    /// A cache of at most `capacity` answers kept `ttl` seconds.
    pub fn new(capacity: usize, ttl: u64) -> Cache {
        Cache {
            entries: std::collections::HashMap::new(),
            order: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The remembered answer, if still fresh at `now`. Failed lookups are
    /// never remembered.
    pub fn get(&self, zone: &str, ip: IpAddr, now: u64) -> Option<Listing> {
        self.entries
            .get(&(zone.to_owned(), ip))
            .filter(|(at, _)| now.saturating_sub(*at) < self.ttl)
            .map(|(_, l)| l.clone())
    }

    /// Remembers an answer.
    pub fn put(&mut self, zone: &str, ip: IpAddr, listing: Listing, now: u64) {
        if listing == Listing::LookupFailed || self.ttl == 0 {
            return;
        }
        while self.entries.len() >= self.capacity {
            let Some((at, z, i)) = self.order.pop_front() else {
                break;
            };
            // Only the entry this order record was made for.
            if self
                .entries
                .get(&(z.clone(), i))
                .is_some_and(|(t, _)| *t == at)
            {
                self.entries.remove(&(z, i));
            }
        }
        self.entries.insert((zone.to_owned(), ip), (now, listing));
        self.order.push_back((now, zone.to_owned(), ip));
        // Stale order records (of entries refreshed since) are bounded too.
        while self.order.len() > 2 * self.capacity {
            self.order.pop_front();
        }
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_names() {
        assert_eq!(
            query_name("192.0.2.1".parse().unwrap(), "zen.spamhaus.org."),
            "1.2.0.192.zen.spamhaus.org"
        );
        assert_eq!(
            query_name("::ffff:192.0.2.1".parse().unwrap(), "bl.test"),
            "1.2.0.192.bl.test"
        );
    }

    #[test]
    fn ipv6_nibbles() {
        // RFC 5782 section 2.4's example.
        assert_eq!(
            query_name(
                "2001:db8:1:2:3:4:567:89ab".parse().unwrap(),
                "ugly.example.com"
            ),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
        );
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn spamhaus_semantics() {
        let zen = Zone::new("zen.spamhaus.org");
        for listed in ["127.0.0.2", "127.0.0.4", "127.0.0.10", "127.0.0.11"] {
            assert!(
                matches!(zen.interpret(&[a(listed)]), Listing::Listed(_)),
                "{listed}"
            );
        }
        for not in ["127.0.0.1", "127.0.0.12", "127.0.1.2", "10.0.0.2"] {
            assert_eq!(zen.interpret(&[a(not)]), Listing::NotListed, "{not}");
        }
        for err in ["127.255.255.252", "127.255.255.254", "127.255.255.255"] {
            assert_eq!(
                zen.interpret(&[a(err)]),
                Listing::Error(vec![a(err)]),
                "{err}"
            );
        }
        assert_eq!(
            zen.interpret(&[a("127.255.255.254"), a("127.0.0.3")]),
            Listing::Listed(vec![a("127.0.0.3")])
        );
        let mut forced = Zone::new("zen.example.test");
        assert!(matches!(
            forced.interpret(&[a("127.0.0.42")]),
            Listing::Listed(_)
        ));
        forced.kind = ZoneKind::Spamhaus;
        assert_eq!(forced.interpret(&[a("127.0.0.42")]), Listing::NotListed);
    }

    #[test]
    fn generic_and_result_filters() {
        let z = Zone::new("bl.test");
        assert!(matches!(z.interpret(&[a("127.0.0.2")]), Listing::Listed(_)));
        assert!(matches!(z.interpret(&[a("127.1.2.3")]), Listing::Listed(_)));
        assert_eq!(z.interpret(&[a("127.0.0.1")]), Listing::NotListed);
        assert!(matches!(
            z.interpret(&[a("127.255.255.1")]),
            Listing::Error(_)
        ));
        assert_eq!(z.interpret(&[]), Listing::NotListed);
        let mut only = Zone::new("bl.test");
        only.results = vec!["127.0.0.4/30".parse().unwrap()];
        assert!(matches!(
            only.interpret(&[a("127.0.0.6")]),
            Listing::Listed(_)
        ));
        assert_eq!(only.interpret(&[a("127.0.0.2")]), Listing::NotListed);
    }

    #[test]
    fn weights_threshold_and_reply() {
        let mut zones = vec![
            Zone::new("zen.spamhaus.org"),
            Zone::new("bl.test"),
            Zone::new("wl.test"),
        ];
        zones[1].weight = 0.5;
        zones[2].weight = -2.0;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let r = Report::new(
            &zones,
            vec![
                Listing::Listed(vec![a("127.0.0.2")]),
                Listing::NotListed,
                Listing::NotListed,
            ],
        );
        let v = r.verdict(ip, 1.0);
        let Action::Reject(reply) = &v.action else {
            panic!("{v:?}")
        };
        assert_eq!(reply.code, 554);
        assert_eq!(
            reply.lines,
            vec!["Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org"]
        );
        assert_eq!(v.result, "zen.spamhaus.org=127.0.0.2 (score=1)");
        // Half a listing is not enough; an allowlist cancels a listing.
        let r = Report::new(
            &zones,
            vec![
                Listing::NotListed,
                Listing::Listed(vec![a("127.0.0.2")]),
                Listing::NotListed,
            ],
        );
        assert_eq!(r.verdict(ip, 1.0).action, Action::Continue);
        let r = Report::new(
            &zones,
            vec![
                Listing::Listed(vec![a("127.0.0.2")]),
                Listing::Listed(vec![a("127.0.0.2")]),
                Listing::Listed(vec![a("127.0.0.2")]),
            ],
        );
        assert!(r.allowlisted());
        assert_eq!(r.verdict(ip, 1.0).action, Action::Continue);
        let r = Report::new(
            &zones,
            vec![
                Listing::LookupFailed,
                Listing::Error(vec![a("127.255.255.254")]),
                Listing::NotListed,
            ],
        );
        assert_eq!(r.verdict(ip, 1.0).action, Action::Continue);
        assert_eq!(
            r.result(),
            "zen.spamhaus.org=temperror bl.test=error:127.255.255.254 (score=0)"
        );
        let clean = Report::new(&zones, vec![Listing::NotListed; 3]);
        assert_eq!(clean.result(), "none");
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let mut c = Cache::new(2, 300);
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
        c.put("bl.test", ip(1), Listing::NotListed, 100);
        assert_eq!(c.get("bl.test", ip(1), 399), Some(Listing::NotListed));
        assert_eq!(c.get("bl.test", ip(1), 400), None);
        assert_eq!(c.get("other.test", ip(1), 100), None);
        c.put("bl.test", ip(2), Listing::Listed(vec![a("127.0.0.2")]), 101);
        c.put("bl.test", ip(3), Listing::NotListed, 102);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("bl.test", ip(1), 102), None);
        c.put("bl.test", ip(4), Listing::LookupFailed, 103);
        assert_eq!(c.get("bl.test", ip(4), 103), None);
        for n in 0..100 {
            c.put("bl.test", ip(3), Listing::NotListed, 200 + n);
        }
        assert!(c.len() <= 2 && !c.is_empty());
    }
}
