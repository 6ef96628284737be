//! What an admin decides: the inbound policy (`[mail_auth]`) and where the
//! DKIM signing keys live (`[dkim]`), as serde types the binary embeds in
//! its configuration file.
//!
//! This module only describes decisions; it never looks anything up and
//! never reads a key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to do with a message when a check gives a given result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse it at the end of data (5xx, or 4xx for temporary errors).
    Reject,
    /// Deliver it into the recipient's `Junk` folder.
    Quarantine,
    /// Deliver it normally; the result is only recorded in
    /// `Authentication-Results:`.
    Tag,
}

/// What to do when a check could not complete because of a temporary DNS
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TempErrorAction {
    /// Accept and record `temperror`.
    Accept,
    /// Answer `451 4.7.x` so that the client retries later.
    Tempfail,
}

/// `[mail_auth]`: the inbound checks on the MX role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundPolicy {
    /// Run the checks and add `Authentication-Results:` on MX listeners.
    pub enabled: bool,
    /// DMARC failure of a domain publishing `p=reject` (after `pct`).
    pub dmarc_reject: Action,
    /// DMARC failure of a domain publishing `p=quarantine` (after `pct`).
    pub dmarc_quarantine: Action,
    /// SPF `fail` (`-all`) of the MAIL FROM identity (or of HELO for the
    /// null sender).
    pub spf_fail: Action,
    /// A temporary DNS error in SPF or DMARC.
    pub temperror: TempErrorAction,
    /// Check the reverse DNS of the client (iprev, RFC 8601 3).
    pub iprev: bool,
    /// Validate ARC chains (RFC 8617).
    pub arc: bool,
    /// Refuse (550 5.7.1) mail on the MX port whose `From:` is one of our
    /// own domains but that nothing authenticates (no aligned DKIM pass, no
    /// aligned SPF pass, no DMARC pass), whatever our published DMARC
    /// policy says: our users send through submission. Turn off for sites
    /// whose mailing lists rewrite our users' mail and break signatures.
    pub reject_own_domain_unauthenticated: bool,
    /// Clients whose mail is not checked (trusted relays); their messages
    /// still lose forged `Authentication-Results:` and get ours with
    /// `none`.
    pub skip_networks: Vec<ipnet::IpNet>,
}

impl Default for InboundPolicy {
    fn default() -> Self {
        InboundPolicy {
            enabled: true,
            dmarc_reject: Action::Reject,
            dmarc_quarantine: Action::Quarantine,
            spf_fail: Action::Tag,
            temperror: TempErrorAction::Accept,
            iprev: true,
            arc: true,
            reject_own_domain_unauthenticated: true,
            skip_networks: Vec::new(),
        }
    }
}

/// `[dkim]`: signing of outgoing mail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Sign mail from authenticated users (and trusted networks) with the
    /// keys found for the `From:` domain.
    pub sign: bool,
    /// Where keys live: `<keys_dir>/<domain>/<selector>.key`. Unset:
    /// `<data_dir>/dkim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_dir: Option<PathBuf>,
}

impl Default for DkimConfig {
    fn default() -> Self {
        DkimConfig {
            sign: true,
            keys_dir: None,
        }
    }
}
