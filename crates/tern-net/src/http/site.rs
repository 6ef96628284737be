//! The autoconfig listener's routes (`role = "autoconfig"` / `"autoconfigs"`):
//!
//! | request | answer |
//! |---|---|
//! | `GET /.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=A` | Thunderbird autoconfig |
//! | `GET /mail/config-v1.1.xml[?emailaddress=A]` (host `autoconfig.DOMAIN`) | the same |
//! | `POST /autodiscover/autodiscover.xml` | Outlook Autodiscover (POX) |
//! | `GET /apple/mobileconfig?emailaddress=A` | an Apple configuration profile |
//!
//! Only addresses in local domains get an answer (404 otherwise); the
//! documents are made by [`crate::autoconfig`] from the listeners that
//! exist. Nothing here says whether a user exists.

use hyper::Method;
use hyper::header;

use super::{HttpRequest, HttpResponse};
use crate::autoconfig::{self, ClientServices, check_address};

/// What the autoconfig listener needs.
#[derive(Debug, Clone)]
pub struct AutoconfigSite {
    /// The services clients are told about.
    pub services: ClientServices,
    /// The local domains.
    pub domains: Vec<String>,
}

impl AutoconfigSite {
    fn address(&self, raw: &str) -> Option<(String, String)> {
        check_address(raw, self.domains.iter().map(String::as_str))
    }

    /// The domain a Thunderbird request is about: the address's, else the
    /// `Host` (`autoconfig.DOMAIN`).
    fn thunderbird_domain(&self, request: &HttpRequest) -> Result<String, HttpResponse> {
        if let Some(address) = request.query_param("emailaddress") {
            return self
                .address(&address)
                .map(|(_, d)| d)
                .ok_or_else(|| HttpResponse::text(404, "not a domain served here\n"));
        }
        let host = request.host.as_deref().unwrap_or("");
        let domain = host.strip_prefix("autoconfig.").unwrap_or(host);
        self.domains
            .iter()
            .find(|d| d.trim_end_matches('.').eq_ignore_ascii_case(domain))
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .ok_or_else(|| {
                HttpResponse::text(
                    400,
                    "give ?emailaddress=ADDRESS, or ask for autoconfig.DOMAIN\n",
                )
            })
    }

    /// Answers one request.
    pub fn handle(&self, request: HttpRequest) -> HttpResponse {
        if self.services.incoming().is_empty() && self.services.outgoing().is_empty() {
            return HttpResponse::text(404, "no mail services are configured\n");
        }
        let path = request.path.to_ascii_lowercase();
        match (&request.method, path.as_str()) {
            (&Method::GET | &Method::HEAD, "/.well-known/autoconfig/mail/config-v1.1.xml")
            | (&Method::GET | &Method::HEAD, "/mail/config-v1.1.xml") => {
                match self.thunderbird_domain(&request) {
                    Ok(domain) => HttpResponse::new(
                        200,
                        "application/xml; charset=utf-8",
                        autoconfig::thunderbird(&self.services, &domain),
                    ),
                    Err(r) => r,
                }
            }
            (&Method::POST, "/autodiscover/autodiscover.xml") => {
                let raw = match autoconfig::autodiscover_request_address(&request.body) {
                    Ok(a) => a,
                    Err(e) => return HttpResponse::text(400, format!("{e}\n")),
                };
                match self.address(&raw) {
                    Some((address, _)) => HttpResponse::new(
                        200,
                        "application/xml; charset=utf-8",
                        autoconfig::autodiscover(&self.services, &address),
                    ),
                    None => HttpResponse::text(404, "not a domain served here\n"),
                }
            }
            (&Method::GET | &Method::HEAD, "/apple/mobileconfig") => {
                let Some(raw) = request.query_param("emailaddress") else {
                    return HttpResponse::text(400, "give ?emailaddress=ADDRESS\n");
                };
                let Some((address, domain)) = self.address(&raw) else {
                    return HttpResponse::text(404, "not a domain served here\n");
                };
                match autoconfig::mobileconfig(&self.services, &address, &domain) {
                    Some(profile) => {
                        HttpResponse::new(200, "application/x-apple-aspen-config", profile)
                            .with_header(
                                header::CONTENT_DISPOSITION,
                                // The domain is a validated local domain.
                                format!("attachment; filename=\"{domain}.mobileconfig\""),
                            )
                    }
                    None => HttpResponse::text(
                        404,
                        "a profile needs an IMAP or POP3 listener and a submission listener\n",
                    ),
                }
            }
            (_, "/.well-known/autoconfig/mail/config-v1.1.xml")
            | (_, "/mail/config-v1.1.xml")
            | (_, "/autodiscover/autodiscover.xml")
            | (_, "/apple/mobileconfig") => HttpResponse::text(405, "method not allowed\n")
                .with_header(
                    header::ALLOW,
                    if path == "/autodiscover/autodiscover.xml" {
                        "POST"
                    } else {
                        "GET, HEAD"
                    },
                ),
            _ => HttpResponse::text(404, "not found\n"),
        }
    }
}
