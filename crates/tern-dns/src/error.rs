//! The outcome of a failed lookup, classified the way mail delivery needs
//! it: does the name exist, does it have records of this type, and is a
//! retry worth it.
//!
//! Classification must never call a temporary problem permanent: anything
//! that is not a clear answer from the DNS (NXDOMAIN, NODATA) or a name that
//! can never be looked up is [`DnsError::Temporary`].

use std::fmt;

/// Which lookup failed; part of every [`DnsError`] so that messages (and
/// DSN diagnostic text) say what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// MX records.
    Mx,
    /// A and AAAA records together (an address lookup).
    Ip,
    /// TXT records.
    Txt,
    /// SRV records (`tern dns --check` of the client service records).
    Srv,
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryType::Mx => "MX",
            QueryType::Ip => "A/AAAA",
            QueryType::Txt => "TXT",
            QueryType::Srv => "SRV",
        })
    }
}

/// A lookup that produced no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN): permanent.
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain {
        /// The name that was looked up.
        name: String,
    },
    /// The name exists but has no records of the type asked (NODATA).
    #[error("{name}: no {query} records")]
    NoRecords {
        /// The name that was looked up.
        name: String,
        /// What was asked.
        query: QueryType,
    },
    /// SERVFAIL, REFUSED, a timeout, a network error, a truncated or
    /// malformed answer: the same question may succeed later.
    #[error("{name}: temporary DNS failure for {query}: {reason}")]
    Temporary {
        /// The name that was looked up.
        name: String,
        /// What was asked.
        query: QueryType,
        /// What went wrong, for logs and DSNs.
        reason: String,
    },
    /// The question can never be answered: the name is not a valid domain
    /// name, or every record in the answer is beyond our limits.
    #[error("{name}: permanent DNS failure for {query}: {reason}")]
    Permanent {
        /// The name that was looked up.
        name: String,
        /// What was asked.
        query: QueryType,
        /// What went wrong, for logs and DSNs.
        reason: String,
    },
}

impl DnsError {
    /// True for [`DnsError::Temporary`]: retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary { .. })
    }

    /// The name that was looked up.
    pub fn name(&self) -> &str {
        match self {
            DnsError::NxDomain { name }
            | DnsError::NoRecords { name, .. }
            | DnsError::Temporary { name, .. }
            | DnsError::Permanent { name, .. } => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporary_is_temporary() {
        let name = "example.test".to_string();
        assert!(
            DnsError::Temporary {
                name: name.clone(),
                query: QueryType::Mx,
                reason: "timeout".into()
            }
            .is_temporary()
        );
        assert!(!DnsError::NxDomain { name: name.clone() }.is_temporary());
        assert!(
            !DnsError::NoRecords {
                name: name.clone(),
                query: QueryType::Ip
            }
            .is_temporary()
        );
        let perm = DnsError::Permanent {
            name,
            query: QueryType::Txt,
            reason: "bad name".into(),
        };
        assert!(!perm.is_temporary());
        assert_eq!(perm.name(), "example.test");
        assert_eq!(
            perm.to_string(),
            "example.test: permanent DNS failure for TXT: bad name"
        );
    }
}
