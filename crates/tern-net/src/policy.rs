//! Recipient and relay policy: the answer to "may this client send to this
//! recipient?".
//!
//! Pure functions over the directory's [`Resolution`] and the client's
//! standing, so every rule is unit-tested without sockets. Invariant 4 lives
//! here: a recipient outside the local domains is accepted only from a
//! trusted network (authenticated users join in the submission issue).
//! Relay tricks (percent hack, bang paths, quoted `"user@remote"@local`,
//! source routes) never reach a remote domain: the grammar strips source
//! routes and the directory treats the others as unknown local users.

use std::net::IpAddr;

use ipnet::IpNet;
use tern_smtp::reply::Reply;
use tern_store::{Resolution, Target};
use tern_types::{EnhancedStatus, ForwardPath};

/// Who may relay through this server.
#[derive(Debug, Clone, Default)]
pub struct RelayPolicy {
    /// Client networks allowed to send to non-local domains.
    pub trusted_networks: Vec<IpNet>,
}

impl RelayPolicy {
    /// Whether `ip` is inside a trusted network.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket is still that IPv4 client.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
}

/// The verdict on one `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    /// Accept; deliver to these targets.
    Accept(Vec<Target>),
    /// Refuse with this reply.
    Reject(Reply),
}

/// Decides one recipient. `to` is the recipient as the client wrote it
/// (the remote target when relaying is allowed).
pub fn decide_recipient(resolution: Resolution, to: &ForwardPath, may_relay: bool) -> RcptVerdict {
    match resolution {
        Resolution::Targets(targets) => RcptVerdict::Accept(targets),
        Resolution::Unknown => RcptVerdict::Reject(Reply::new(
            550,
            EnhancedStatus::new(5, 1, 1),
            "Recipient address rejected: user unknown in local recipient table",
        )),
        // (A bare `<Postmaster>` is always local: never `NotLocal`.)
        Resolution::NotLocal => match to.mailbox() {
            Some(address) if may_relay => RcptVerdict::Accept(vec![Target::Remote {
                address: address.clone(),
            }]),
            _ => RcptVerdict::Reject(Reply::new(
                554,
                EnhancedStatus::new(5, 7, 1),
                "Relay access denied",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_networks_match_v4_and_mapped_v6() {
        let p = RelayPolicy {
            trusted_networks: vec!["192.0.2.0/24".parse().unwrap()],
        };
        assert!(p.is_trusted("192.0.2.7".parse().unwrap()));
        assert!(p.is_trusted("::ffff:192.0.2.7".parse().unwrap()));
        assert!(!p.is_trusted("198.51.100.1".parse().unwrap()));
        assert!(!RelayPolicy::default().is_trusted("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn verdicts() {
        let local = vec![Target::Local {
            mailbox: "alice@example.test".into(),
        }];
        let to = |s: &str| ForwardPath::Mailbox(s.parse().unwrap());
        assert_eq!(
            decide_recipient(
                Resolution::Targets(local.clone()),
                &to("alice@example.test"),
                false
            ),
            RcptVerdict::Accept(local)
        );
        match decide_recipient(Resolution::Unknown, &to("x@example.test"), true) {
            RcptVerdict::Reject(r) => assert_eq!(r.code, 550),
            other => panic!("{other:?}"),
        }
        match decide_recipient(Resolution::NotLocal, &to("x@remote.test"), false) {
            RcptVerdict::Reject(r) => {
                assert_eq!(r.code, 554);
                assert_eq!(r.status, Some(EnhancedStatus::new(5, 7, 1)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide_recipient(Resolution::NotLocal, &to("x@remote.test"), true),
            RcptVerdict::Accept(vec![Target::Remote {
                address: "x@remote.test".parse().unwrap()
            }])
        );
    }
}
