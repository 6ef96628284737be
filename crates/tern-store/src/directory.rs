//! The user directory: what a recipient address means.
//!
//! A [`Directory`] is built once from a [`DirectoryConfig`] (local domains,
//! mailboxes, aliases, catch-alls, the recipient delimiter, the postmaster)
//! and then answers [`Directory::resolve`] for every `RCPT TO`:
//!
//! 1. `<Postmaster>` and `postmaster@<any local domain>` (any case) always
//!    reach the postmaster target (RFC 5321 4.5.1).
//! 2. An address literal or a non-local domain is [`Resolution::NotLocal`];
//!    relay policy, not the directory, decides what happens next.
//! 3. A local part that could be a relay trick or a path (`@ % ! / \`, a
//!    leading `.`, control characters, longer than 64 octets) is
//!    [`Resolution::Unknown`], even where a catch-all exists.
//! 4. Otherwise the local part is case-folded and looked up: the full local
//!    part first (mailbox, then alias), then the part before the recipient
//!    delimiter (`alice+tag` → `alice`), then the domain's catch-all.
//!
//! Aliases are expanded when the directory is built (nested aliases, loops
//! refused, depth and fan-out capped, results deduplicated), so resolving is
//! a few hash look-ups and never recursion on client input.
//!
//! What this module must never do: turn a client's local part into a
//! mailbox key. Keys come only from the configuration and are validated by
//! [`validate_mailbox_key`]; the client's text is only compared.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tern_types::{Domain, ForwardPath, Host, Mailbox};

use crate::key::{MAX_LOCAL, validate_mailbox_key};

/// Deepest alias nesting accepted (`a` → `b` → … counts each level).
pub const MAX_ALIAS_DEPTH: usize = 8;
/// Most delivery targets one alias may expand to.
pub const MAX_ALIAS_TARGETS: usize = 1000;

/// The directory's configuration, as read from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// Domains we receive mail for.
    pub domains: Vec<String>,
    /// Mailbox keys, e.g. `alice@example.test`: the local part must be
    /// `[a-z0-9._-]` (case-folded), not starting with `.`, at most 64.
    pub mailboxes: Vec<String>,
    /// Alias address → targets (mailboxes, other aliases, remote addresses).
    pub aliases: Vec<(String, Vec<String>)>,
    /// Domain → target address for mail to unknown users of that domain.
    pub catch_all: Vec<(String, String)>,
    /// The plus-addressing delimiter (`alice+tag`), `None` to disable.
    pub recipient_delimiter: Option<char>,
    /// The postmaster target; default `postmaster@<first domain>` if it is
    /// a mailbox (or alias), else the first mailbox.
    pub postmaster: Option<String>,
    /// Local domains whose mailboxes are delivered over LMTP; the others'
    /// go to Maildirs ([`Directory::route`]).
    pub lmtp_domains: Vec<String>,
    /// Every address elsewhere goes through the smarthost.
    pub smarthost: bool,
}

impl Default for DirectoryConfig {
    fn default() -> DirectoryConfig {
        DirectoryConfig {
            domains: Vec::new(),
            mailboxes: Vec::new(),
            aliases: Vec::new(),
            catch_all: Vec::new(),
            recipient_delimiter: Some('+'),
            postmaster: None,
            lmtp_domains: Vec::new(),
            smarthost: false,
        }
    }
}

/// Why a [`DirectoryConfig`] was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// A configured domain is not a valid ASCII domain.
    #[error("directory: invalid domain {domain:?}: {reason}")]
    InvalidDomain {
        /// As configured.
        domain: String,
        /// Why.
        reason: String,
    },
    /// A configured address does not parse.
    #[error("directory: invalid address {address:?}: {reason}")]
    InvalidAddress {
        /// As configured.
        address: String,
        /// Why.
        reason: String,
    },
    /// A mailbox key is not safe file-name material.
    #[error("directory: invalid mailbox {mailbox:?}: {reason}")]
    InvalidMailbox {
        /// As configured.
        mailbox: String,
        /// Why.
        reason: &'static str,
    },
    /// A mailbox, alias or catch-all is in a domain that is not local.
    #[error("directory: {address:?} is not in a local domain")]
    NotLocalDomain {
        /// As configured.
        address: String,
    },
    /// The same address is configured twice (as mailbox and/or alias).
    #[error("directory: {address:?} is configured more than once")]
    Duplicate {
        /// The canonical address.
        address: String,
    },
    /// An alias (or catch-all, or the postmaster) points at a local address
    /// that is neither a mailbox nor an alias.
    #[error("directory: {alias:?} points at unknown local address {target:?}")]
    UnknownTarget {
        /// The alias.
        alias: String,
        /// The target.
        target: String,
    },
    /// Aliases that expand into themselves.
    #[error("directory: alias loop: {path}")]
    AliasLoop {
        /// The loop, e.g. `a@x → b@x → a@x`.
        path: String,
    },
    /// Aliases nested deeper than [`MAX_ALIAS_DEPTH`].
    #[error("directory: alias {alias:?} nests deeper than {MAX_ALIAS_DEPTH} levels")]
    AliasTooDeep {
        /// The alias.
        alias: String,
    },
    /// An alias expanding to more than [`MAX_ALIAS_TARGETS`] targets.
    #[error("directory: alias {alias:?} expands to more than {MAX_ALIAS_TARGETS} targets")]
    TooManyTargets {
        /// The alias.
        alias: String,
    },
    /// There is no postmaster (no mailbox and no `postmaster` setting).
    #[error("directory: no postmaster: configure a mailbox or the postmaster address")]
    NoPostmaster,
    /// The recipient delimiter cannot be used in a local part.
    #[error("directory: {0:?} cannot be a recipient delimiter")]
    InvalidDelimiter(char),
}

/// What a recipient address means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Domain not local: relay policy decides.
    NotLocal,
    /// Local domain, no such user → 550 5.1.1.
    Unknown,
    /// Deliver to these targets (deduplicated, at least one).
    Targets(Vec<Target>),
}

/// One delivery target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A local mailbox, by its canonical key (`alice@example.test`).
    Local {
        /// The mailbox key (see [`crate::key`]).
        mailbox: String,
    },
    /// An address elsewhere (an alias forwarding off-site, or a relayed
    /// recipient).
    Remote {
        /// The address.
        address: Mailbox,
    },
}

/// Where a delivery target goes: decided once, by [`Directory::route`],
/// for every path that delivers (intake, the queue, notices).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// A local mailbox.
    Local {
        /// The mailbox key.
        mailbox: String,
        /// How it is reached.
        via: Via,
    },
    /// The mail exchangers of `domain` (lower-case).
    Remote {
        /// The domain of the address.
        domain: String,
    },
    /// The smarthost, whatever the domain.
    Smarthost,
}

/// How a local mailbox is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Via {
    /// Its Maildir, through the mail store.
    Maildir,
    /// The LMTP server configured for `domain` (its canonical name).
    Lmtp {
        /// The mailbox's domain.
        domain: String,
    },
}

/// Local domains, mailboxes, aliases, catch-alls, plus-addressing.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    domains: HashSet<String>,
    mailboxes: HashSet<String>,
    /// Alias key → fully expanded targets.
    aliases: HashMap<String, Vec<Target>>,
    /// Domain → fully expanded targets.
    catch_all: HashMap<String, Vec<Target>>,
    delimiter: Option<char>,
    lmtp_domains: HashSet<String>,
    smarthost: bool,
    postmaster: Vec<Target>,
}

/// A configured target before expansion.
#[derive(Debug, Clone)]
enum RawTarget {
    /// `local@domain` in a local domain, case-folded.
    Local(String),
    Remote(Mailbox),
}

/// Case-fold a local part: ASCII lower-casing, Unicode lower-casing for the
/// rest (so the comparison is the same for every client).
fn fold(local: &str) -> String {
    if local.is_ascii() {
        local.to_ascii_lowercase()
    } else {
        local.chars().flat_map(char::to_lowercase).collect()
    }
}

/// Whether a client's local part may even be compared: refuses relay
/// tricks and anything path-like.
fn is_safe_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL
        && !local.starts_with('.')
        && !local
            .chars()
            .any(|c| matches!(c, '@' | '%' | '!' | '/' | '\\') || c.is_control())
}

fn parse_config_address(s: &str) -> Result<(String, Host), DirectoryError> {
    let m = Mailbox::parse(s.trim(), true).map_err(|e| DirectoryError::InvalidAddress {
        address: s.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((fold(m.local_part.as_str()), m.host))
}

/// Builder state while validating a config.
struct Builder {
    domains: HashSet<String>,
    mailboxes: HashSet<String>,
    raw_aliases: HashMap<String, Vec<RawTarget>>,
}

impl Builder {
    fn local_domain(&self, host: &Host) -> Option<String> {
        match host {
            Host::Domain(d) if self.domains.contains(d.as_str()) => Some(d.as_str().to_owned()),
            _ => None,
        }
    }

    /// A target as configured: local ones must exist.
    fn target(&self, owner: &str, s: &str) -> Result<RawTarget, DirectoryError> {
        let m = Mailbox::parse(s.trim(), true).map_err(|e| DirectoryError::InvalidAddress {
            address: s.to_owned(),
            reason: e.to_string(),
        })?;
        match self.local_domain(&m.host) {
            Some(domain) => {
                let key = format!("{}@{domain}", fold(m.local_part.as_str()));
                if self.mailboxes.contains(&key) || self.raw_aliases.contains_key(&key) {
                    Ok(RawTarget::Local(key))
                } else {
                    Err(DirectoryError::UnknownTarget {
                        alias: owner.to_owned(),
                        target: s.to_owned(),
                    })
                }
            }
            None => Ok(RawTarget::Remote(m)),
        }
    }

    fn expand_targets(
        &self,
        owner: &str,
        targets: &[RawTarget],
        memo: &mut HashMap<String, (Vec<Target>, usize)>,
        stack: &mut Vec<String>,
    ) -> Result<(Vec<Target>, usize), DirectoryError> {
        let mut out: Vec<Target> = Vec::new();
        let mut depth = 1;
        for t in targets {
            let (expanded, d) = match t {
                RawTarget::Remote(a) => (vec![Target::Remote { address: a.clone() }], 0),
                RawTarget::Local(k) if self.mailboxes.contains(k) => {
                    (vec![Target::Local { mailbox: k.clone() }], 0)
                }
                RawTarget::Local(k) => self.expand_alias(k, memo, stack)?,
            };
            depth = depth.max(d + 1);
            for target in expanded {
                if !out.contains(&target) {
                    out.push(target);
                }
            }
            if out.len() > MAX_ALIAS_TARGETS {
                return Err(DirectoryError::TooManyTargets {
                    alias: owner.to_owned(),
                });
            }
        }
        if depth > MAX_ALIAS_DEPTH {
            return Err(DirectoryError::AliasTooDeep {
                alias: owner.to_owned(),
            });
        }
        Ok((out, depth))
    }

    fn expand_alias(
        &self,
        key: &str,
        memo: &mut HashMap<String, (Vec<Target>, usize)>,
        stack: &mut Vec<String>,
    ) -> Result<(Vec<Target>, usize), DirectoryError> {
        if let Some(done) = memo.get(key) {
            return Ok(done.clone());
        }
        if let Some(pos) = stack.iter().position(|k| k == key) {
            let mut path: Vec<&str> = stack[pos..].iter().map(String::as_str).collect();
            path.push(key);
            return Err(DirectoryError::AliasLoop {
                path: path.join(" → "),
            });
        }
        let targets = self.raw_aliases.get(key).cloned().unwrap_or_default();
        stack.push(key.to_owned());
        let result = self.expand_targets(key, &targets, memo, stack)?;
        stack.pop();
        memo.insert(key.to_owned(), result.clone());
        Ok(result)
    }
}

impl Directory {
    /// Validates everything and builds the directory: domains, mailbox keys
    /// (safe file-name material), alias sources and targets, loops, depth,
    /// catch-alls and the postmaster.
    pub fn new(cfg: DirectoryConfig) -> Result<Directory, DirectoryError> {
        if let Some(d) = cfg.recipient_delimiter
            && (d == '@' || d == '"' || d == '\\' || d.is_control() || d.is_whitespace())
        {
            return Err(DirectoryError::InvalidDelimiter(d));
        }
        let mut domains = HashSet::new();
        let mut first_domain = None;
        for d in &cfg.domains {
            let parsed = Domain::parse(d.trim()).map_err(|e| DirectoryError::InvalidDomain {
                domain: d.clone(),
                reason: e.to_string(),
            })?;
            first_domain.get_or_insert_with(|| parsed.as_str().to_owned());
            domains.insert(parsed.as_str().to_owned());
        }
        let mut b = Builder {
            domains,
            mailboxes: HashSet::new(),
            raw_aliases: HashMap::new(),
        };

        let mut first_mailbox = None;
        for m in &cfg.mailboxes {
            let (local, host) = parse_config_address(m)?;
            let domain = b
                .local_domain(&host)
                .ok_or_else(|| DirectoryError::NotLocalDomain { address: m.clone() })?;
            let key = format!("{local}@{domain}");
            validate_mailbox_key(&key).map_err(|reason| DirectoryError::InvalidMailbox {
                mailbox: m.clone(),
                reason,
            })?;
            first_mailbox.get_or_insert_with(|| key.clone());
            if !b.mailboxes.insert(key.clone()) {
                return Err(DirectoryError::Duplicate { address: key });
            }
        }

        // Alias sources first, so that targets can name any alias.
        let mut alias_keys = Vec::with_capacity(cfg.aliases.len());
        for (source, _) in &cfg.aliases {
            let (local, host) = parse_config_address(source)?;
            let domain = b
                .local_domain(&host)
                .ok_or_else(|| DirectoryError::NotLocalDomain {
                    address: source.clone(),
                })?;
            let key = format!("{local}@{domain}");
            if b.mailboxes.contains(&key) || b.raw_aliases.contains_key(&key) {
                return Err(DirectoryError::Duplicate { address: key });
            }
            b.raw_aliases.insert(key.clone(), Vec::new());
            alias_keys.push(key);
        }
        for (key, (_, targets)) in alias_keys.iter().zip(&cfg.aliases) {
            let raw = targets
                .iter()
                .map(|t| b.target(key, t))
                .collect::<Result<Vec<_>, _>>()?;
            if raw.is_empty() {
                return Err(DirectoryError::InvalidAddress {
                    address: key.clone(),
                    reason: "alias has no targets".to_owned(),
                });
            }
            b.raw_aliases.insert(key.clone(), raw);
        }

        let mut memo = HashMap::new();
        let mut aliases = HashMap::new();
        for key in &alias_keys {
            let (targets, _) = b.expand_alias(key, &mut memo, &mut Vec::new())?;
            aliases.insert(key.clone(), targets);
        }

        let mut catch_all = HashMap::new();
        for (domain, target) in &cfg.catch_all {
            let d = Domain::parse(domain.trim()).map_err(|e| DirectoryError::InvalidDomain {
                domain: domain.clone(),
                reason: e.to_string(),
            })?;
            if !b.domains.contains(d.as_str()) {
                return Err(DirectoryError::NotLocalDomain {
                    address: domain.clone(),
                });
            }
            let owner = format!("@{}", d.as_str());
            let raw = b.target(&owner, target)?;
            let (targets, _) = b.expand_targets(&owner, &[raw], &mut memo, &mut Vec::new())?;
            if catch_all.insert(d.as_str().to_owned(), targets).is_some() {
                return Err(DirectoryError::Duplicate { address: owner });
            }
        }

        let postmaster_raw = match &cfg.postmaster {
            Some(p) => b.target("postmaster", p)?,
            None => {
                let preferred = first_domain.map(|d| format!("postmaster@{d}"));
                match preferred {
                    Some(k) if b.mailboxes.contains(&k) || b.raw_aliases.contains_key(&k) => {
                        RawTarget::Local(k)
                    }
                    _ => RawTarget::Local(first_mailbox.ok_or(DirectoryError::NoPostmaster)?),
                }
            }
        };
        let (postmaster, _) =
            b.expand_targets("postmaster", &[postmaster_raw], &mut memo, &mut Vec::new())?;

        Ok(Directory {
            inner: Arc::new(Inner {
                domains: b.domains,
                mailboxes: b.mailboxes,
                aliases,
                catch_all,
                delimiter: cfg.recipient_delimiter,
                postmaster,
                lmtp_domains: cfg
                    .lmtp_domains
                    .iter()
                    .map(|d| d.trim().to_ascii_lowercase())
                    .collect(),
                smarthost: cfg.smarthost,
            }),
        })
    }

    /// How local `mailbox` (a mailbox key) is reached: [`route`](Self::route)
    /// for a local target, without building one.
    pub fn via(&self, mailbox: &str) -> Via {
        let domain = mailbox.rsplit_once('@').map_or("", |(_, d)| d);
        if self.inner.lmtp_domains.contains(domain) {
            Via::Lmtp {
                domain: domain.to_owned(),
            }
        } else {
            Via::Maildir
        }
    }

    /// Where `target` is delivered: a local mailbox over LMTP when its
    /// domain has an LMTP server, else to its Maildir; an address
    /// elsewhere to its domain's exchangers, or to the smarthost when
    /// there is one.
    pub fn route(&self, target: &Target) -> Route {
        match target {
            Target::Local { mailbox } => Route::Local {
                mailbox: mailbox.clone(),
                via: self.via(mailbox),
            },
            Target::Remote { .. } if self.inner.smarthost => Route::Smarthost,
            Target::Remote { address } => Route::Remote {
                domain: match &address.host {
                    Host::Domain(d) => d.as_str().to_owned(),
                    literal => literal.to_string().to_ascii_lowercase(),
                },
            },
        }
    }

    /// Whether we receive mail for this domain.
    pub fn is_local_domain(&self, d: &Domain) -> bool {
        self.inner.domains.contains(d.as_str())
    }

    /// The postmaster's targets.
    pub fn postmaster(&self) -> &[Target] {
        &self.inner.postmaster
    }

    /// What `to` means here (see the module docs for the rules).
    pub fn resolve(&self, to: &ForwardPath) -> Resolution {
        let m = match to {
            ForwardPath::Postmaster => return self.postmaster_resolution(),
            ForwardPath::Mailbox(m) => m,
        };
        let Host::Domain(domain) = &m.host else {
            return Resolution::NotLocal;
        };
        if !self.is_local_domain(domain) {
            return Resolution::NotLocal;
        }
        let raw = m.local_part.as_str();
        if !is_safe_local(raw) {
            return Resolution::Unknown;
        }
        let local = fold(raw);
        if let Some(r) = self.lookup(&local, domain) {
            return r;
        }
        if let Some(delim) = self.inner.delimiter
            && let Some((base, _tag)) = local.split_once(delim)
            && !base.is_empty()
            && let Some(r) = self.lookup(base, domain)
        {
            return r;
        }
        match self.inner.catch_all.get(domain.as_str()) {
            Some(targets) => Resolution::Targets(targets.clone()),
            None => Resolution::Unknown,
        }
    }

    fn postmaster_resolution(&self) -> Resolution {
        Resolution::Targets(self.inner.postmaster.clone())
    }

    /// Exact look-up of a folded local part in a local domain.
    fn lookup(&self, local: &str, domain: &Domain) -> Option<Resolution> {
        if local == "postmaster" {
            return Some(self.postmaster_resolution());
        }
        let key = format!("{local}@{}", domain.as_str());
        if self.inner.mailboxes.contains(&key) {
            return Some(Resolution::Targets(vec![Target::Local { mailbox: key }]));
        }
        self.inner
            .aliases
            .get(&key)
            .map(|targets| Resolution::Targets(targets.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_decided_here_once() {
        let mut cfg = DirectoryConfig {
            domains: vec!["example.test".into(), "lmtp.test".into()],
            mailboxes: vec!["alice@example.test".into(), "bob@lmtp.test".into()],
            lmtp_domains: vec!["LMTP.test".into()],
            ..DirectoryConfig::default()
        };
        let d = Directory::new(cfg.clone()).unwrap();
        let local = |m: &str| Target::Local { mailbox: m.into() };
        let remote = |a: &str| Target::Remote {
            address: a.parse().unwrap(),
        };
        assert_eq!(
            d.route(&local("alice@example.test")),
            Route::Local {
                mailbox: "alice@example.test".into(),
                via: Via::Maildir
            }
        );
        assert_eq!(
            d.route(&local("bob@lmtp.test")),
            Route::Local {
                mailbox: "bob@lmtp.test".into(),
                via: Via::Lmtp {
                    domain: "lmtp.test".into()
                }
            }
        );
        assert_eq!(
            d.route(&remote("carol@Remote.TEST")),
            Route::Remote {
                domain: "remote.test".into()
            }
        );
        cfg.smarthost = true;
        let d = Directory::new(cfg).unwrap();
        assert_eq!(d.route(&remote("carol@remote.test")), Route::Smarthost);
        assert!(matches!(
            d.route(&local("alice@example.test")),
            Route::Local {
                via: Via::Maildir,
                ..
            }
        ));
    }
}
