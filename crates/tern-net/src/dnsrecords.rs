//! The DNS records a local domain needs, and whether they are published:
//! the one service behind `tern dns DOMAIN [--check]` and the admin API's
//! `GET /api/dns/DOMAIN[?check=true]`.
//!
//! The records are those of [`tern_mailauth::records::records_for`] (MX,
//! SPF, DKIM from the keys on disk, DMARC, MTA-STS, TLS-RPT) and the mail
//! client service records of RFC 6186 / RFC 8314 made from the listeners
//! that exist ([`ClientServices::srv_records`]), plus the `autoconfig.` and
//! `autodiscover.` names when an autoconfig listener serves them. Checking
//! only reads the DNS, through the configured nameservers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use tern_dns::{DnsError, Resolver};
use tern_mailauth::records::{Record, Status, check, records_for};

use crate::autoconfig::ClientServices;

/// What the records are made from (the configuration's part of them).
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Our host name (the MX, the services' host).
    pub hostname: String,
    /// The local domains.
    pub domains: Vec<String>,
    /// Where the DKIM keys are.
    pub dkim_keys_dir: PathBuf,
    /// The client services that have listeners.
    pub services: ClientServices,
    /// An autoconfig (HTTP/HTTPS) listener exists.
    pub autoconfig: bool,
    /// Nameservers for `check` (empty: `/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    /// What it is for: `MX`, `SPF`, `DKIM`, `DMARC`, `MTA-STS`, `TLS-RPT`,
    /// `SRV`, `AUTOCONFIG`.
    pub purpose: String,
    /// Owner name, without the trailing dot.
    pub name: String,
    /// `MX`, `TXT`, `SRV`, `CNAME`.
    pub rtype: String,
    /// The record data.
    pub value: String,
    /// False for recommendations.
    pub required: bool,
    /// A short explanation.
    pub note: String,
    /// The record as a zone file line.
    pub zone_line: String,
}

/// Every record of one domain (`tern dns DOMAIN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsReport {
    /// The domain (lower case).
    pub domain: String,
    /// The mail host.
    pub hostname: String,
    /// The records, required ones first within each purpose.
    pub records: Vec<DnsRecord>,
}

/// What the DNS said about one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckedRecord {
    /// The record.
    #[serde(flatten)]
    pub record: DnsRecord,
    /// `ok`, `missing`, `wrong` or `unknown` (the DNS did not answer).
    pub status: String,
    /// What was found instead (`wrong`), or why the lookup failed (`unknown`).
    pub found: Option<String>,
}

/// The result of `tern dns DOMAIN --check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsCheckReport {
    /// The domain.
    pub domain: String,
    /// Each record with its status.
    pub records: Vec<CheckedRecord>,
    /// Required records missing or wrong.
    pub problems: usize,
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsRecordsError {
    /// Not one of the configuration's domains.
    #[error("{0} is not a local domain of this configuration (add [domains.\"{0}\"] first)")]
    NotLocal(String),
    /// The DKIM keys could not be read.
    #[error("{0}")]
    Keys(String),
    /// No resolver could be set up.
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

impl DnsSettings {
    fn local_domain(&self, domain: &str) -> Result<String, DnsRecordsError> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        if self
            .domains
            .iter()
            .any(|k| k.trim_end_matches('.').eq_ignore_ascii_case(&d))
        {
            Ok(d)
        } else {
            Err(DnsRecordsError::NotLocal(d))
        }
    }
}

fn from_mailauth(r: &Record) -> DnsRecord {
    DnsRecord {
        purpose: r.purpose.to_string(),
        name: r.name.clone(),
        rtype: r.rtype.to_owned(),
        value: r.value.clone(),
        required: r.required,
        note: r.note.clone(),
        zone_line: r.zone_line(),
    }
}

fn plain(purpose: &str, name: String, rtype: &str, value: String, note: String) -> DnsRecord {
    let zone_line = format!("{name}. 3600 IN {rtype} {value}");
    DnsRecord {
        purpose: purpose.to_owned(),
        name,
        rtype: rtype.to_owned(),
        value,
        required: false,
        note,
        zone_line,
    }
}

/// Every record `domain` needs (`tern dns DOMAIN`).
pub fn records(settings: &DnsSettings, domain: &str) -> Result<DnsReport, DnsRecordsError> {
    let domain = settings.local_domain(domain)?;
    let keys = tern_mailauth::keys::load_domain_keys(&settings.dkim_keys_dir, &domain)
        .map_err(|e| DnsRecordsError::Keys(e.to_string()))?;
    let hostname = settings.hostname.trim_end_matches('.').to_ascii_lowercase();
    let mut out: Vec<DnsRecord> = records_for(&domain, &hostname, &keys)
        .iter()
        .map(from_mailauth)
        .collect();
    for srv in settings.services.srv_records(&domain) {
        let note = if srv.not_offered() {
            "no listener for this service: clients are told it is not offered (RFC 6186)".to_owned()
        } else {
            format!(
                "mail clients find this service on {}:{} (RFC 6186, RFC 8314)",
                srv.target, srv.port
            )
        };
        out.push(plain("SRV", srv.name.clone(), "SRV", srv.value(), note));
    }
    if settings.autoconfig {
        for (name, what) in [
            ("autoconfig", "Thunderbird autoconfig"),
            ("autodiscover", "Outlook Autodiscover"),
        ] {
            out.push(plain(
                "AUTOCONFIG",
                format!("{name}.{domain}"),
                "CNAME",
                format!("{hostname}."),
                format!(
                    "{what} asks http(s)://{name}.{domain}/: point it at the host running \
                     the autoconfig listener (reachable on port 80 or 443)"
                ),
            ));
        }
    }
    Ok(DnsReport {
        domain,
        hostname,
        records: out,
    })
}

/// The report as `tern dns DOMAIN` prints it (a zone file fragment).
pub fn format_records(report: &DnsReport) -> String {
    let mut out = format!(
        "; DNS records for {} (mail host {})\n",
        report.domain, report.hostname
    );
    for r in &report.records {
        let kind = if r.required {
            "required"
        } else {
            "recommended"
        };
        let _ = writeln!(out, "\n; {} ({kind}): {}", r.purpose, r.note);
        let _ = writeln!(out, "{}", r.zone_line);
    }
    out
}

async fn check_srv(resolver: &dyn Resolver, record: &DnsRecord) -> (String, Option<String>) {
    let mut want = record.value.split_whitespace();
    let (_, _, port, target) = (want.next(), want.next(), want.next(), want.next());
    let port: u16 = port.and_then(|p| p.parse().ok()).unwrap_or(0);
    let target = target.unwrap_or(".").trim_end_matches('.');
    let target = if target.is_empty() { "." } else { target };
    match resolver.srv(&record.name).await {
        Ok(found) => {
            if found
                .iter()
                .any(|f| f.port == port && f.target.eq_ignore_ascii_case(target))
            {
                ("ok".into(), None)
            } else {
                let list = found
                    .iter()
                    .map(|f| format!("{} {} {} {}", f.priority, f.weight, f.port, f.target))
                    .collect::<Vec<_>>()
                    .join(", ");
                ("wrong".into(), Some(list))
            }
        }
        Err(DnsError::NxDomain { .. } | DnsError::NoRecords { .. }) => ("missing".into(), None),
        Err(e) => ("unknown".into(), Some(e.to_string())),
    }
}

async fn check_name(resolver: &dyn Resolver, record: &DnsRecord) -> (String, Option<String>) {
    match resolver.ips(&record.name).await {
        Ok(_) => ("ok".into(), None),
        Err(DnsError::NxDomain { .. } | DnsError::NoRecords { .. }) => ("missing".into(), None),
        Err(e) => ("unknown".into(), Some(e.to_string())),
    }
}

/// Looks every record of `domain` up with `resolver` (`tern dns --check`).
pub async fn check_with(
    settings: &DnsSettings,
    domain: &str,
    resolver: &dyn Resolver,
) -> Result<DnsCheckReport, DnsRecordsError> {
    let report = records(settings, domain)?;
    let domain_l = report.domain.clone();
    let keys = tern_mailauth::keys::load_domain_keys(&settings.dkim_keys_dir, &domain_l)
        .map_err(|e| DnsRecordsError::Keys(e.to_string()))?;
    let auth_records = records_for(&domain_l, &report.hostname, &keys);
    let mut checked = Vec::with_capacity(report.records.len());
    let mut problems = 0;
    for (i, record) in report.records.into_iter().enumerate() {
        let (status, found) = if let Some(r) = auth_records.get(i) {
            match check(resolver, r).await {
                Status::Ok => ("ok".to_owned(), None),
                Status::Missing => ("missing".to_owned(), None),
                Status::Different(f) => ("wrong".to_owned(), Some(f)),
                Status::Unknown(e) => ("unknown".to_owned(), Some(e)),
            }
        } else if record.rtype == "SRV" {
            check_srv(resolver, &record).await
        } else {
            check_name(resolver, &record).await
        };
        if record.required && status != "ok" {
            problems += 1;
        }
        checked.push(CheckedRecord {
            record,
            status,
            found,
        });
    }
    Ok(DnsCheckReport {
        domain: domain_l,
        records: checked,
        problems,
    })
}

/// [`check_with`] through a resolver for the configured nameservers.
pub async fn check_records(
    settings: &DnsSettings,
    domain: &str,
) -> Result<DnsCheckReport, DnsRecordsError> {
    let resolver = tern_dns::HickoryResolver::new(tern_dns::ResolverSettings {
        nameservers: settings.nameservers.clone(),
        ..tern_dns::ResolverSettings::default()
    })
    .map_err(|e| DnsRecordsError::Resolver(e.to_string()))?;
    let resolver = crate::metrics::MeteredResolver(std::sync::Arc::new(resolver));
    check_with(settings, domain, &resolver).await
}

/// The check as `tern dns DOMAIN --check` prints it.
pub fn format_check(report: &DnsCheckReport) -> String {
    let mut out = String::new();
    for c in &report.records {
        let r = &c.record;
        let (label, detail) = match c.status.as_str() {
            "ok" => ("ok", String::new()),
            "missing" => ("MISSING", format!("\n    publish: {}", r.zone_line)),
            "wrong" => (
                "WRONG",
                format!(
                    "\n    found:   {}\n    publish: {}",
                    c.found.as_deref().unwrap_or(""),
                    r.zone_line
                ),
            ),
            _ => (
                "UNKNOWN",
                format!("\n    lookup failed: {}", c.found.as_deref().unwrap_or("")),
            ),
        };
        let label = if r.required || c.status == "ok" {
            label.to_owned()
        } else {
            format!("{label} (recommended)")
        };
        let _ = writeln!(
            out,
            "{:<8} {} {} {}{detail}",
            r.purpose, r.name, r.rtype, label
        );
    }
    if report.problems == 0 {
        let _ = writeln!(
            out,
            "all required records for {} are published",
            report.domain
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> DnsSettings {
        DnsSettings {
            hostname: "mx.example.test".into(),
            domains: vec!["example.test".into()],
            dkim_keys_dir: dir.to_path_buf(),
            services: ClientServices {
                hostname: "mx.example.test".into(),
                submissions: Some(465),
                imaps: Some(993),
                ..ClientServices::default()
            },
            autoconfig: true,
            nameservers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn records_and_their_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        assert!(matches!(
            records(&s, "other.test"),
            Err(DnsRecordsError::NotLocal(_))
        ));
        let report = records(&s, "Example.TEST.").unwrap();
        let text = format_records(&report);
        assert!(
            text.contains("_imaps._tcp.example.test. 3600 IN SRV 10 1 993 mx.example.test."),
            "{text}"
        );
        assert!(
            text.contains("_pop3._tcp.example.test. 3600 IN SRV 0 0 0 ."),
            "{text}"
        );
        assert!(
            text.contains("autoconfig.example.test. 3600 IN CNAME mx.example.test."),
            "{text}"
        );

        let resolver = tern_dns::StaticResolver::new()
            .with_mx("example.test", &[(10, "mx.example.test")])
            .with_srv(
                "_imaps._tcp.example.test",
                &[tern_dns::SrvRecord {
                    priority: 10,
                    weight: 1,
                    port: 993,
                    target: "mx.example.test".into(),
                }],
            )
            .with_srv(
                "_submissions._tcp.example.test",
                &[tern_dns::SrvRecord {
                    priority: 0,
                    weight: 1,
                    port: 4650,
                    target: "mx.example.test".into(),
                }],
            );
        let checked = check_with(&s, "example.test", &resolver).await.unwrap();
        let status = |name: &str, rtype: &str| {
            checked
                .records
                .iter()
                .find(|c| c.record.name == name && c.record.rtype == rtype)
                .map(|c| c.status.clone())
                .unwrap()
        };
        assert_eq!(status("example.test", "MX"), "ok");
        assert_eq!(status("_imaps._tcp.example.test", "SRV"), "ok");
        assert_eq!(status("_submissions._tcp.example.test", "SRV"), "wrong");
        assert_eq!(status("_pop3._tcp.example.test", "SRV"), "missing");
        assert!(checked.problems > 0);
        let json = serde_json::to_string(&checked).unwrap();
        assert!(json.contains(r#""status":"ok""#), "{json}");
    }
}
