//! Inbound checks for the MX role: SPF (RFC 7208) of the MAIL FROM and HELO
//! identities, every DKIM signature (RFC 6376, RFC 8463), DMARC (RFC 7489:
//! alignment, policy, `pct`), ARC (RFC 8617) and iprev, summed up in one
//! `Authentication-Results:` field (RFC 8601) and a [`Disposition`] the
//! runtime turns into a reply.
//!
//! DNS comes from the same hickory resolver as the rest of Tern (the
//! configured nameservers), so tests serve records from a local server.
//! This module never decides on its own to drop mail: it reports, and the
//! admin's [`InboundPolicy`] says what a result means. It never logs; the
//! caller logs the [`Verdict::summary`] with the queue id.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcResult,
    MessageAuthenticator, SpfOutput, SpfResult,
};
use tern_dns::{HickoryResolver, Resolver};

use crate::body::{BodyHashes, attach, parse_bounded};
use crate::dnsmeter::{DnsObserver, LookupKind, Meter};
use crate::policy::{Action, InboundPolicy, TempErrorAction};

/// Overall bound on all the checks of one message; what is not done by
/// then is reported as `temperror`.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(60);

/// What the runtime should do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver it.
    Accept,
    /// Deliver it into the recipients' `Junk` folders.
    Quarantine {
        /// Why, for the log.
        reason: String,
    },
    /// Refuse it permanently: `550 5.7.1` with this text.
    Reject {
        /// The reply text.
        reason: String,
    },
    /// Refuse it for now: `451 4.7.x` with this text.
    TempFail {
        /// The reply text.
        reason: String,
    },
}

/// The outcome of the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The `Authentication-Results:` field to prepend, with its CRLF.
    pub header: String,
    /// What to do.
    pub disposition: Disposition,
    /// `spf=pass dkim=pass dmarc=pass …`, for the log line.
    pub summary: String,
    /// `ARC-Seal:`, `ARC-Message-Signature:` and
    /// `ARC-Authentication-Results:` to prepend when sealing was asked for
    /// and possible (the chain did not fail), else empty.
    pub arc_seal: String,
    /// The `From:` domain is one of ours ([`Verifier::with_own_domains`])
    /// and neither an aligned DKIM signature nor an aligned SPF pass
    /// vouches for it: the domain, for the caller's policy (our own domain
    /// never sends unauthenticated mail to our MX).
    pub unauthenticated_own_domain: Option<String>,
}

/// What the runtime knows about the message.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The SMTP client.
    pub client_ip: IpAddr,
    /// The EHLO/HELO argument.
    pub helo: &'a str,
    /// The MAIL FROM address, `""` for the null sender.
    pub mail_from: &'a str,
    /// The message as the client sent it: header section and body for
    /// [`Verifier::verify`]; the header section alone is enough for
    /// [`Verifier::verify_with_body`], which gets the body's hashes.
    pub message: &'a [u8],
    /// Tern forwards this message to another domain (an alias with remote
    /// targets): add an ARC set (RFC 8617) with this key, so the next hop
    /// can trust our results although SPF and DKIM may no longer pass.
    pub seal_with: Option<&'a crate::keys::DkimKey>,
}

/// Runs the inbound checks. Cheap to share behind an `Arc`.
pub struct Verifier {
    auth: MessageAuthenticator,
    dns: Arc<HickoryResolver>,
    authserv_id: String,
    policy: InboundPolicy,
    own_domains: Vec<String>,
    observer: Option<Arc<dyn DnsObserver>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("authserv_id", &self.authserv_id)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// Whether `helo` is a domain name SPF can check (not an address literal).
fn helo_is_domain(helo: &str) -> bool {
    !helo.is_empty()
        && !helo.starts_with('[')
        && helo.contains('.')
        && helo.parse::<IpAddr>().is_err()
}

/// The `pct=` of a DMARC record, 100 when absent or malformed.
fn dmarc_pct(record: &str) -> u8 {
    record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.trim().parse::<u8>().ok())
        .map_or(100, |p| p.min(100))
}

/// Whether this message is sampled into a policy published with `pct`
/// (RFC 7489 6.6.4).
fn sampled(pct: u8) -> bool {
    if pct >= 100 {
        return true;
    }
    let mut byte = [0u8; 1];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte).is_err() {
        return true;
    }
    u32::from(byte[0]) * 100 / 256 < u32::from(pct)
}

impl Verifier {
    /// A verifier asking `dns`'s nameservers, naming itself `authserv_id`
    /// (our hostname) in `Authentication-Results:`.
    pub fn new(dns: Arc<HickoryResolver>, authserv_id: &str, policy: InboundPolicy) -> Verifier {
        Verifier {
            auth: MessageAuthenticator(dns.hickory().clone()),
            dns,
            authserv_id: authserv_id.trim_end_matches('.').to_ascii_lowercase(),
            policy,
            own_domains: Vec::new(),
            observer: None,
        }
    }

    /// Tells `observer` about every DNS lookup the checks make (Tern's
    /// `tern_dns_lookups_total`; see [`crate::dnsmeter`]).
    pub fn with_dns_observer(mut self, observer: Arc<dyn DnsObserver>) -> Verifier {
        self.observer = Some(observer);
        self
    }

    /// Names our own domains: mail whose `From:` is one of them (or a
    /// subdomain) and that nothing authenticates is reported in
    /// [`Verdict::unauthenticated_own_domain`].
    pub fn with_own_domains<'a>(mut self, domains: impl IntoIterator<Item = &'a str>) -> Verifier {
        self.own_domains = domains
            .into_iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        self
    }

    /// Whether `domain` is one of ours or below one of ours.
    fn is_own(&self, domain: &str) -> bool {
        self.own_domains
            .iter()
            .any(|d| aligned_strictly_below(domain, d))
    }

    /// The authserv-id we write and whose forgeries we strip.
    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// The policy in force.
    pub fn policy(&self) -> &InboundPolicy {
        &self.policy
    }

    /// Whether mail from `ip` is exempt from the checks.
    pub fn skips(&self, ip: IpAddr) -> bool {
        self.policy.skip_networks.iter().any(|n| n.contains(&ip))
    }

    /// The verdict for a client the policy exempts: `none`, accept.
    pub fn exempt(&self) -> Verdict {
        Verdict {
            header: format!("Authentication-Results: {}; none\r\n", self.authserv_id),
            disposition: Disposition::Accept,
            summary: "skipped (trusted client)".into(),
            arc_seal: String::new(),
            unauthenticated_own_domain: None,
        }
    }

    /// `pct=` of the DMARC record that applies to `domain`: the domain's
    /// own, else its parents' (the organisational domain is among them).
    async fn pct(&self, domain: &str, meter: &Meter<'_>) -> u8 {
        let mut name = domain;
        loop {
            let start = std::time::Instant::now();
            let found = self.dns.txt(&format!("_dmarc.{name}")).await;
            meter.record(LookupKind::Txt, found.is_ok(), start);
            if let Ok(records) = found
                && let Some(r) = records
                    .iter()
                    .find(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
            {
                return dmarc_pct(r);
            }
            match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') => name = parent,
                _ => return 100,
            }
        }
    }

    /// Runs every check on `input`, whose `message` is the whole message
    /// (hashed in memory; see [`Self::verify_with_body`] to stream it).
    pub async fn verify(&self, input: Inbound<'_>) -> Verdict {
        let hashes = BodyHashes::of_message(input.message, input.seal_with.is_some());
        self.verify_with_body(input, &hashes).await
    }

    /// Runs every check on `input`, whose `message` may be the header
    /// section alone, with the body hashes of [`BodyHashPlan`] (computed
    /// by the caller from a stream). The independent checks (SPF of both
    /// identities, DKIM, ARC, iprev) run at the same time; DMARC follows,
    /// as it needs the SPF and DKIM results. At most
    /// [`crate::body::MAX_DKIM_SIGNATURES`] signatures are checked.
    ///
    /// [`BodyHashPlan`]: crate::body::BodyHashPlan
    pub async fn verify_with_body(&self, input: Inbound<'_>, body: &BodyHashes) -> Verdict {
        let meter = Meter::new(self.observer.as_deref());
        let verdict = self.verify_metered(input, body, &meter).await;
        meter.finish();
        verdict
    }

    async fn verify_metered(
        &self,
        input: Inbound<'_>,
        body: &BodyHashes,
        meter: &Meter<'_>,
    ) -> Verdict {
        let caches = meter.caches();
        let ip = input.client_ip;
        let helo = input.helo.trim_end_matches('.');
        let host = self.authserv_id.as_str();
        let parsed = parse_bounded(input.message).map(|mut m| {
            attach(&mut m, body);
            m
        });
        let mail_from_domain = input
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase());

        // SPF: HELO identity and MAIL FROM (RFC 7208 2.3, 2.4).
        let spf_helo = async {
            if helo_is_domain(helo) {
                Some(
                    self.auth
                        .verify_spf(caches.params(SpfParameters::verify_ehlo(ip, helo, host)))
                        .await,
                )
            } else {
                None
            }
        };
        let spf_mail = async {
            if mail_from_domain.is_some() {
                Some(
                    self.auth
                        .verify_spf(caches.params(SpfParameters::verify_mail_from(
                            ip,
                            helo,
                            host,
                            input.mail_from,
                        )))
                        .await,
                )
            } else {
                None
            }
        };
        let dkim = async {
            match &parsed {
                Some(message) => self
                    .auth
                    .verify_dkim(caches.params(message))
                    .await
                    .into_iter()
                    .map(|d| body_hash_is_fail(d, message))
                    .collect(),
                None => Vec::new(),
            }
        };
        let arc = async {
            match &parsed {
                Some(message)
                    if self.policy.arc
                        && (!message.ams_headers.is_empty() || !message.as_headers.is_empty()) =>
                {
                    Some(self.auth.verify_arc(caches.params(message)).await)
                }
                _ => None,
            }
        };
        let iprev = async {
            if self.policy.iprev {
                Some(self.auth.verify_iprev(caches.params(ip)).await)
            } else {
                None
            }
        };
        let (spf_helo, spf_mail, dkim, arc, iprev): (_, _, Vec<DkimOutput<'_>>, _, _) =
            futures_util::future::join5(spf_helo, spf_mail, dkim, arc, iprev).await;
        // Null sender: the MAIL FROM identity is postmaster@HELO.
        let spf_mail = spf_mail.or_else(|| spf_helo.clone());
        let spf_domain = mail_from_domain
            .clone()
            .unwrap_or_else(|| helo.to_ascii_lowercase());

        let mut results = AuthenticationResults::new(host);
        let mut summary = Vec::new();
        let mut disposition = Disposition::Accept;
        let mut temperror = false;

        let spf_mail_result = spf_mail.as_ref().map_or(SpfResult::None, SpfOutput::result);
        if let Some(out) = &spf_mail {
            results = results.with_spf_mailfrom_result(out, ip, input.mail_from, helo);
        }
        summary.push(format!("spf={}", spf_word(spf_mail_result)));
        if let Some(out) = &spf_helo {
            results = results.with_spf_ehlo_result(out, ip, helo);
            summary.push(format!("spf.helo={}", spf_word(out.result())));
        }
        if spf_mail_result == SpfResult::TempError {
            temperror = true;
        }

        let Some(message) = &parsed else {
            // Not a message mail-auth can read: nothing to verify beyond
            // the envelope. Delivered, as other MTAs would.
            summary.push("dkim=none dmarc=none (unparsable header)".into());
            if let Some(iprev) = &iprev {
                results = results.with_iprev_result(iprev, ip);
            }
            return self.finish(
                results,
                summary,
                disposition,
                temperror,
                &spf_mail_result,
                String::new(),
            );
        };

        // DKIM: every signature.
        let header_from = message.from().to_string();
        results = results.with_dkim_results(&dkim, &header_from);
        if dkim.is_empty() {
            summary.push("dkim=none".into());
        }
        for d in &dkim {
            let sig = d
                .signature()
                .map(|s| format!(" (d={} s={} a={:?})", s.d, s.s, s.a))
                .unwrap_or_default();
            summary.push(format!("dkim={}{sig}", dkim_word(d.result())));
        }

        if let Some(arc) = &arc {
            results = results.with_arc_result(arc, ip);
            summary.push(format!("arc={}", dkim_word(arc.result())));
        }

        // DMARC.
        let empty_spf = SpfOutput::new(spf_domain.clone());
        let spf_for_dmarc = spf_mail.as_ref().unwrap_or(&empty_spf);
        let dmarc = self
            .auth
            .verify_dmarc(caches.params(DmarcParameters::new(
                message,
                &dkim,
                &spf_domain,
                spf_for_dmarc,
            )))
            .await;
        let dmarc_result = dmarc.result();
        if dmarc.dmarc_record().is_some() || !matches!(dmarc_result, DmarcResult::None) {
            results = results.with_dmarc_result(&dmarc);
        }
        let mut dmarc_note = format!("dmarc={}", dmarc_word(&dmarc_result));
        // Our own domain: authenticated by DMARC, or by an aligned DKIM
        // pass or SPF pass when it publishes no DMARC record.
        // Every address of every From: field counts (a second field must
        // not hide the first).
        let own_from = message.from.iter().find_map(|a| {
            a.rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
                .filter(|d| self.is_own(d))
        });
        let unauthenticated_own_domain = own_from.filter(|d| {
            let dkim_aligned = dkim.iter().any(|out| {
                matches!(out.result(), DkimResult::Pass)
                    && out
                        .signature()
                        .is_some_and(|s| relaxed_aligned(d, &s.d.to_ascii_lowercase()))
            });
            let spf_aligned = spf_mail_result == SpfResult::Pass
                && mail_from_domain
                    .as_deref()
                    .is_some_and(|m| relaxed_aligned(d, m));
            !matches!(dmarc_result, DmarcResult::Pass) && !dkim_aligned && !spf_aligned
        });
        if matches!(dmarc_result, DmarcResult::TempError(_)) {
            temperror = true;
        }
        if matches!(dmarc_result, DmarcResult::Fail(_))
            && matches!(dmarc.policy(), Policy::Reject | Policy::Quarantine)
        {
            let pct = self.pct(dmarc.domain(), meter).await;
            let mut policy = dmarc.policy();
            if !sampled(pct) {
                // Not sampled: one step milder (RFC 7489 6.6.4).
                policy = if policy == Policy::Reject {
                    Policy::Quarantine
                } else {
                    Policy::None
                };
            }
            dmarc_note.push_str(&format!(
                " policy={} pct={pct} applied={}",
                if dmarc.policy() == Policy::Reject {
                    "reject"
                } else {
                    "quarantine"
                },
                match policy {
                    Policy::Reject => "reject",
                    Policy::Quarantine => "quarantine",
                    _ => "none",
                }
            ));
            let action = match policy {
                Policy::Reject => self.policy.dmarc_reject,
                Policy::Quarantine => self.policy.dmarc_quarantine,
                _ => Action::Tag,
            };
            let why = format!(
                "DMARC policy of {} does not allow this message (not authenticated by SPF or DKIM)",
                dmarc.domain()
            );
            disposition = stricter(disposition, action, why);
        }
        summary.push(dmarc_note);

        if let Some(iprev) = &iprev {
            results = results.with_iprev_result(iprev, ip);
            summary.push(format!(
                "iprev={}",
                match iprev.result() {
                    mail_auth::IprevResult::Pass => "pass",
                    mail_auth::IprevResult::Fail(_) => "fail",
                    mail_auth::IprevResult::TempError(_) => "temperror",
                    mail_auth::IprevResult::PermError(_) => "permerror",
                    mail_auth::IprevResult::None => "none",
                }
            ));
        }

        // ARC: seal what we saw, for the next hop.
        let mut arc_seal = String::new();
        if let Some(key) = input.seal_with {
            let none = mail_auth::ArcOutput::default();
            let chain = arc.as_ref().unwrap_or(&none);
            let raw = results.to_header();
            if clean_field(&raw) != raw {
                // Never repeat a value that needed cleaning in a signed set.
                summary.push("arc.sealed=no (unclean results)".into());
            } else if chain.can_be_sealed() {
                match key.sealer.seal(message, &results, chain) {
                    Ok(set) => {
                        arc_seal = set.to_header();
                        summary.push(format!("arc.sealed=d:{}", key.domain));
                    }
                    Err(e) => summary.push(format!("arc.seal_error=\"{e}\"")),
                }
            } else {
                summary.push("arc.sealed=no (chain failed)".into());
            }
        }

        Verdict {
            unauthenticated_own_domain,
            ..self.finish(
                results,
                summary,
                disposition,
                temperror,
                &spf_mail_result,
                arc_seal,
            )
        }
    }

    fn finish(
        &self,
        results: AuthenticationResults<'_>,
        summary: Vec<String>,
        mut disposition: Disposition,
        temperror: bool,
        spf: &SpfResult,
        arc_seal: String,
    ) -> Verdict {
        if *spf == SpfResult::Fail {
            disposition = stricter(
                disposition,
                self.policy.spf_fail,
                "SPF: the sender's domain does not allow this client to send its mail".into(),
            );
        }
        if temperror
            && self.policy.temperror == TempErrorAction::Tempfail
            && !matches!(disposition, Disposition::Reject { .. })
        {
            disposition = Disposition::TempFail {
                reason: "Temporary DNS failure while checking SPF/DMARC; try again later".into(),
            };
        }
        Verdict {
            header: clean_field(&results.to_header()),
            disposition,
            summary: summary.join(" "),
            arc_seal,
            unauthenticated_own_domain: None,
        }
    }
}

/// `a` equals `b` or is a subdomain of it.
fn aligned_strictly_below(a: &str, b: &str) -> bool {
    a == b || a.strip_suffix(b).is_some_and(|rest| rest.ends_with('.'))
}

/// Relaxed alignment without a public-suffix list: one domain is the
/// other or below it. Used only for our own domains, where the admin's
/// configuration says which names are ours.
fn relaxed_aligned(a: &str, b: &str) -> bool {
    aligned_strictly_below(a, b) || aligned_strictly_below(b, a)
}

/// A header field that cannot break out of itself, whatever the message
/// and the client put into the values it quotes (mail-auth already escapes
/// them; this is the second lock): line breaks only as CRLF followed by a
/// tab (folding), no other control characters, one CRLF at the end.
fn clean_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len() + 2);
    for (i, line) in field
        .trim_end_matches(['\r', '\n'])
        .split("\r\n")
        .enumerate()
    {
        if i > 0 {
            out.push_str("\r\n");
            if !line.starts_with(['\t', ' ']) {
                out.push('\t');
            }
        }
        out.extend(
            line.chars()
                .map(|c| if c.is_control() && c != '\t' { ' ' } else { c }),
        );
    }
    out.push_str("\r\n");
    out
}

/// A body hash mismatch is `fail` (RFC 6376 6.1.3: PERMFAIL; RFC 8601
/// 2.7.1), which mail-auth reports as `neutral`.
fn body_hash_is_fail<'x>(
    d: DkimOutput<'x>,
    message: &'x AuthenticatedMessage<'x>,
) -> DkimOutput<'x> {
    let DkimResult::Neutral(e @ mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) =
        d.result()
    else {
        return d;
    };
    let mut out = DkimOutput::fail(e.clone());
    if let Some(sig) = d.signature()
        && let Some(h) = message.dkim_headers.iter().find(|h| h.header.b == sig.b)
    {
        out = out.with_signature(&h.header);
    }
    out
}

/// The stricter of the current disposition and `action`.
fn stricter(current: Disposition, action: Action, reason: String) -> Disposition {
    match (action, current) {
        (_, d @ Disposition::Reject { .. }) => d,
        (Action::Reject, _) => Disposition::Reject { reason },
        (Action::Quarantine, Disposition::Accept) => Disposition::Quarantine { reason },
        (_, d) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_break_out() {
        assert_eq!(
            clean_field("Authentication-Results: mx;\r\n\tspf=pass\r\n"),
            "Authentication-Results: mx;\r\n\tspf=pass\r\n"
        );
        assert_eq!(
            clean_field("Authentication-Results: mx; a=b\r\nBcc: x\nY: z\r\n"),
            "Authentication-Results: mx; a=b\r\n\tBcc: x Y: z\r\n"
        );
    }

    #[test]
    fn pct_parsing() {
        assert_eq!(dmarc_pct("v=DMARC1; p=reject"), 100);
        assert_eq!(dmarc_pct("v=DMARC1; p=reject; pct=20"), 20);
        assert_eq!(dmarc_pct("v=DMARC1; p=reject; PCT = 0 "), 0);
        assert_eq!(dmarc_pct("v=DMARC1; pct=300"), 100);
        assert_eq!(dmarc_pct("v=DMARC1; pct=x"), 100);
    }

    #[test]
    fn sampling_bounds() {
        assert!((0..100).all(|_| sampled(100)));
        assert!((0..100).all(|_| !sampled(0)));
    }

    #[test]
    fn helo_identity() {
        assert!(helo_is_domain("mail.example.org"));
        assert!(!helo_is_domain("[192.0.2.1]"));
        assert!(!helo_is_domain("localhost"));
        assert!(!helo_is_domain("192.0.2.1"));
    }

    #[test]
    fn alignment_of_own_domains() {
        assert!(aligned_strictly_below("example.test", "example.test"));
        assert!(aligned_strictly_below("mail.example.test", "example.test"));
        assert!(!aligned_strictly_below("badexample.test", "example.test"));
        assert!(!aligned_strictly_below("example.test", "mail.example.test"));
        assert!(relaxed_aligned("example.test", "mail.example.test"));
        assert!(!relaxed_aligned("example.test", "other.test"));
    }

    #[test]
    fn stricter_keeps_the_worst() {
        let r = stricter(Disposition::Accept, Action::Quarantine, "q".into());
        assert!(matches!(r, Disposition::Quarantine { .. }));
        let r = stricter(r, Action::Reject, "r".into());
        assert!(matches!(r, Disposition::Reject { .. }));
        let r = stricter(r, Action::Tag, "t".into());
        assert!(matches!(r, Disposition::Reject { .. }));
    }
}
