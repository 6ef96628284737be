//! The DNS records an admin publishes for a domain Tern serves (MX, SPF,
//! DKIM from the keys on disk, DMARC, and MTA-STS and TLS-RPT as
//! recommendations), and a live check of what the DNS says about them.
//!
//! Checking only reads the DNS through the [`Resolver`] it is given (the
//! configured nameservers); it never changes anything and never reads a
//! private key beyond its public half.

use std::fmt;

use tern_dns::{DnsError, Resolver};

use crate::keys::DkimKey;

/// What a record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Where mail for the domain goes.
    Mx,
    /// Which hosts may send the domain's mail.
    Spf,
    /// One DKIM public key.
    Dkim,
    /// The DMARC policy.
    Dmarc,
    /// MTA-STS (RFC 8461), recommended.
    MtaSts,
    /// SMTP TLS reporting (RFC 8460), recommended.
    TlsRpt,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Mx => "MX",
            Purpose::Spf => "SPF",
            Purpose::Dkim => "DKIM",
            Purpose::Dmarc => "DMARC",
            Purpose::MtaSts => "MTA-STS",
            Purpose::TlsRpt => "TLS-RPT",
        })
    }
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What it is for.
    pub purpose: Purpose,
    /// Owner name, without the trailing dot.
    pub name: String,
    /// `MX` or `TXT`.
    pub rtype: &'static str,
    /// The record data (for MX: `10 host.`).
    pub value: String,
    /// False for recommendations (MTA-STS, TLS-RPT).
    pub required: bool,
    /// A short explanation for the admin.
    pub note: String,
}

impl Record {
    /// The record in zone-file syntax (TXT values quoted and split into
    /// 255-byte strings).
    pub fn zone_line(&self) -> String {
        let data = if self.rtype == "TXT" {
            self.value
                .as_bytes()
                .chunks(255)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            self.value.clone()
        };
        format!("{}. 3600 IN {} {}", self.name, self.rtype, data)
    }
}

/// Every record `domain` needs when its MX host is `hostname` and `keys`
/// are its DKIM keys.
pub fn records_for(domain: &str, hostname: &str, keys: &[DkimKey]) -> Vec<Record> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
    let mut out = vec![
        Record {
            purpose: Purpose::Mx,
            name: domain.clone(),
            rtype: "MX",
            value: format!("10 {hostname}."),
            required: true,
            note: format!("mail for {domain} goes to {hostname} (which needs an A/AAAA record)"),
        },
        Record {
            purpose: Purpose::Spf,
            name: domain.clone(),
            rtype: "TXT",
            value: "v=spf1 mx -all".into(),
            required: true,
            note: "only the domain's MX hosts send its mail; add ip4:/include: for other senders"
                .into(),
        },
    ];
    for key in keys {
        out.push(Record {
            purpose: Purpose::Dkim,
            name: key.record_name(),
            rtype: "TXT",
            value: key.record_value(),
            required: true,
            note: format!("public half of {} ({})", key.path.display(), key.algorithm),
        });
    }
    if keys.is_empty() {
        out.push(Record {
            purpose: Purpose::Dkim,
            name: format!("SELECTOR._domainkey.{domain}"),
            rtype: "TXT",
            value: "(no key yet: run `tern dkim keygen DOMAIN`)".into(),
            required: true,
            note: "outgoing mail is not signed until a key exists".into(),
        });
    }
    out.extend([
        Record {
            purpose: Purpose::Dmarc,
            name: format!("_dmarc.{domain}"),
            rtype: "TXT",
            value: format!(
                "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:postmaster@{domain}"
            ),
            required: true,
            note: "start with p=none to observe, then quarantine, then reject".into(),
        },
        Record {
            purpose: Purpose::MtaSts,
            name: format!("_mta-sts.{domain}"),
            rtype: "TXT",
            value: "v=STSv1; id=1".into(),
            required: false,
            note: format!(
                "also serve https://mta-sts.{domain}/.well-known/mta-sts.txt \
                 (version: STSv1, mode: testing, mx: {hostname}, max_age: 86400)"
            ),
        },
        Record {
            purpose: Purpose::TlsRpt,
            name: format!("_smtp._tls.{domain}"),
            rtype: "TXT",
            value: format!("v=TLSRPTv1; rua=mailto:postmaster@{domain}"),
            required: false,
            note: "senders report TLS failures to this address".into(),
        },
    ]);
    out
}

/// What the live DNS says about one [`Record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Published as recommended (or equivalently).
    Ok,
    /// Not published.
    Missing,
    /// Something else is published; what was found.
    Different(String),
    /// The DNS did not answer; try again.
    Unknown(String),
}

/// Normalises a tag=value record for comparison: tags lower-cased, white
/// space removed, tags sorted.
fn tags(record: &str) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = record
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.split_whitespace().collect::<String>(),
            )
        })
        .collect();
    t.sort();
    t
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn txt(resolver: &dyn Resolver, name: &str) -> Result<Vec<String>, Status> {
    match resolver.txt(name).await {
        Ok(r) => Ok(r),
        Err(DnsError::NxDomain { .. } | DnsError::NoRecords { .. }) => Ok(Vec::new()),
        Err(e) => Err(Status::Unknown(e.to_string())),
    }
}

/// Looks `record` up and compares.
pub async fn check(resolver: &dyn Resolver, record: &Record) -> Status {
    if record.name.starts_with("SELECTOR.") {
        return Status::Missing;
    }
    match record.purpose {
        Purpose::Mx => {
            let want = record
                .value
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_string();
            match resolver.mx(&record.name).await {
                Ok(mx) if mx.iter().any(|m| m.exchange == want) => Status::Ok,
                Ok(mx) => Status::Different(
                    mx.iter()
                        .map(|m| format!("{} {}", m.preference, m.exchange))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Err(DnsError::NxDomain { .. } | DnsError::NoRecords { .. }) => Status::Missing,
                Err(e) => Status::Unknown(e.to_string()),
            }
        }
        purpose => {
            let prefix = match purpose {
                Purpose::Spf => "v=spf1",
                Purpose::Dkim => "v=dkim1",
                Purpose::Dmarc => "v=dmarc1",
                Purpose::MtaSts => "v=stsv1",
                _ => "v=tlsrptv1",
            };
            let found = match txt(resolver, &record.name).await {
                Ok(f) => f,
                Err(status) => return status,
            };
            let candidates: Vec<&String> = found
                .iter()
                .filter(|r| {
                    let r = r.trim_start().to_ascii_lowercase();
                    r.starts_with(prefix)
                        // A DKIM record may omit v=.
                        || (purpose == Purpose::Dkim && r.contains("p="))
                })
                .collect();
            let Some(first) = candidates.first() else {
                return Status::Missing;
            };
            if purpose == Purpose::Spf && candidates.len() > 1 {
                return Status::Different(format!(
                    "{} SPF records (RFC 7208 allows one): a permerror",
                    candidates.len()
                ));
            }
            let want = tags(&record.value);
            let have = tags(first);
            let same = match purpose {
                // The key must be ours.
                Purpose::Dkim => {
                    tag(&have, "p") == tag(&want, "p")
                        && tag(&have, "k").unwrap_or("rsa") == tag(&want, "k").unwrap_or("rsa")
                }
                Purpose::Spf => {
                    first
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .eq_ignore_ascii_case(&record.value)
                        || !first.contains("+all") && !first.trim_end().ends_with(" all")
                }
                // Policy choices are the admin's: present and valid is fine.
                Purpose::Dmarc => tag(&have, "p").is_some(),
                _ => true,
            };
            if same {
                Status::Ok
            } else {
                Status::Different((*first).clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_keys_say_how_to_get_one() {
        let r = records_for("Example.test.", "mx.example.test", &[]);
        let kinds: Vec<Purpose> = r.iter().map(|r| r.purpose).collect();
        assert_eq!(
            kinds,
            [
                Purpose::Mx,
                Purpose::Spf,
                Purpose::Dkim,
                Purpose::Dmarc,
                Purpose::MtaSts,
                Purpose::TlsRpt
            ]
        );
        assert_eq!(
            r[0].zone_line(),
            "example.test. 3600 IN MX 10 mx.example.test."
        );
        assert_eq!(
            r[1].zone_line(),
            "example.test. 3600 IN TXT \"v=spf1 mx -all\""
        );
        assert!(r[2].value.contains("tern dkim keygen"));
        assert_eq!(r[3].name, "_dmarc.example.test");
        assert!(!r[4].required && !r[5].required);
    }

    #[test]
    fn long_txt_values_are_split() {
        let rec = Record {
            purpose: Purpose::Dkim,
            name: "s._domainkey.example.test".into(),
            rtype: "TXT",
            value: "x".repeat(300),
            required: true,
            note: String::new(),
        };
        let line = rec.zone_line();
        assert!(line.contains(&format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45))));
    }

    #[test]
    fn tag_normalisation() {
        let t = tags("v=DKIM1; k=rsa; p=AB CD");
        assert_eq!(tag(&t, "p"), Some("ABCD"));
        assert_eq!(tag(&t, "k"), Some("rsa"));
    }
}
