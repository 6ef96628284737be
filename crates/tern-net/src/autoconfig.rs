//! Mail client autoconfiguration: what a client needs to set itself up
//! from an address and a password, generated from the listeners that
//! exist — never a service that is not configured.
//!
//! - Thunderbird autoconfig (`config-v1.1.xml`),
//! - Microsoft Autodiscover, "POX" (`autodiscover.xml`, an XML request
//!   naming the address, an XML answer),
//! - an Apple configuration profile (`.mobileconfig`, unsigned, without a
//!   password: the device asks for it),
//! - the RFC 6186 / RFC 8314 SRV records ([`ClientServices::srv_records`]),
//!   which `tern dns` prints.
//!
//! This module does no I/O (the HTTP listener in [`crate::http`] serves
//! what it makes). What it must never do: put a value a client sent into a
//! document unescaped ([`xml_escape`] is applied to every one), read a DTD
//! or resolve an entity of a request ([`autodiscover_request_address`]
//! refuses any document with a DOCTYPE), or name a port nobody listens on.

use std::fmt::Write as _;

use tern_types::Mailbox;

/// The largest Autodiscover request body accepted (bytes).
pub const MAX_AUTODISCOVER_REQUEST: usize = 16 * 1024;

/// The mail services a client can use, as configured: the host name
/// clients connect to and the port of each service that has a listener
/// (the first listener of its role).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientServices {
    /// The host name clients connect to (the server certificate's name).
    pub hostname: String,
    /// Submission over implicit TLS (465).
    pub submissions: Option<u16>,
    /// Submission with STARTTLS (587).
    pub submission: Option<u16>,
    /// IMAP over implicit TLS (993).
    pub imaps: Option<u16>,
    /// IMAP with STARTTLS (143).
    pub imap: Option<u16>,
    /// POP3 over implicit TLS (995).
    pub pop3s: Option<u16>,
    /// POP3 with STLS (110).
    pub pop3: Option<u16>,
}

/// How a client secures a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (RFC 8314).
    Implicit,
    /// STARTTLS / STLS before authenticating.
    StartTls,
}

/// One service a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// `imap`, `pop3` or `smtp`.
    pub protocol: &'static str,
    /// The port.
    pub port: u16,
    /// Implicit TLS or STARTTLS.
    pub security: Security,
}

/// One SRV record of RFC 6186 / RFC 8314.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// `_imaps._tcp.example.org`.
    pub name: String,
    /// Priority (0 and target "." with port 0 for a service not offered).
    pub priority: u16,
    /// Weight.
    pub weight: u16,
    /// Port (0: not offered).
    pub port: u16,
    /// The host, or `.` for a service not offered.
    pub target: String,
}

impl SrvRecord {
    /// `0 1 993 mx.example.org.`, or `0 0 0 .`.
    pub fn value(&self) -> String {
        let target = if self.target == "." {
            ".".to_owned()
        } else {
            format!("{}.", self.target)
        };
        format!("{} {} {} {target}", self.priority, self.weight, self.port)
    }

    /// True when the record says the service is not offered.
    pub fn not_offered(&self) -> bool {
        self.target == "."
    }
}

impl ClientServices {
    /// Incoming services, preferred first: IMAP before POP3, implicit TLS
    /// before STARTTLS (RFC 8314).
    pub fn incoming(&self) -> Vec<Service> {
        let mut out = Vec::new();
        for (protocol, port, security) in [
            ("imap", self.imaps, Security::Implicit),
            ("imap", self.imap, Security::StartTls),
            ("pop3", self.pop3s, Security::Implicit),
            ("pop3", self.pop3, Security::StartTls),
        ] {
            if let Some(port) = port {
                out.push(Service {
                    protocol,
                    port,
                    security,
                });
            }
        }
        out
    }

    /// Outgoing (submission) services, implicit TLS first.
    pub fn outgoing(&self) -> Vec<Service> {
        let mut out = Vec::new();
        for (port, security) in [
            (self.submissions, Security::Implicit),
            (self.submission, Security::StartTls),
        ] {
            if let Some(port) = port {
                out.push(Service {
                    protocol: "smtp",
                    port,
                    security,
                });
            }
        }
        out
    }

    /// True when a client could be configured at all (something to read
    /// mail with and something to send it with).
    pub fn usable(&self) -> bool {
        !self.incoming().is_empty() && !self.outgoing().is_empty()
    }

    /// The SRV records of RFC 6186 (with RFC 8314's `_submissions`) for
    /// `domain`: one per service, and for a service with no listener the
    /// "not offered" form (`0 0 0 .`).
    pub fn srv_records(&self, domain: &str) -> Vec<SrvRecord> {
        let host = self.hostname.trim_end_matches('.').to_ascii_lowercase();
        [
            ("_submissions", self.submissions),
            ("_submission", self.submission),
            ("_imaps", self.imaps),
            ("_imap", self.imap),
            ("_pop3s", self.pop3s),
            ("_pop3", self.pop3),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (service, port))| {
            let name = format!("{service}._tcp.{domain}");
            match port {
                // RFC 6186 5: implicit TLS preferred over STARTTLS (lower
                // priority value); IMAP over POP3 by priority too.
                Some(port) => SrvRecord {
                    name,
                    priority: (i / 2) as u16 * 10 + (i % 2) as u16 * 5,
                    weight: 1,
                    port,
                    target: host.clone(),
                },
                None => SrvRecord {
                    name,
                    priority: 0,
                    weight: 0,
                    port: 0,
                    target: ".".into(),
                },
            }
        })
        .collect()
    }
}

/// Escapes text for XML character data and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A requested address, checked: a valid address whose domain is one of
/// `local_domains` (case-insensitive). Returns the address and its domain
/// (lower case).
pub fn check_address<'a>(
    address: &str,
    local_domains: impl IntoIterator<Item = &'a str>,
) -> Option<(String, String)> {
    let address = address.trim();
    if address.len() > 254 {
        return None;
    }
    let mailbox = Mailbox::parse(address, true).ok()?;
    let text = mailbox.to_string();
    let (_, domain) = text.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    local_domains
        .into_iter()
        .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&domain))
        .then_some((text.clone(), domain))
}

/// The Thunderbird autoconfig document (`config-v1.1.xml`) for `domain`.
pub fn thunderbird(services: &ClientServices, domain: &str) -> String {
    let host = xml_escape(&services.hostname);
    let domain = xml_escape(domain);
    let mut out = String::new();
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <clientConfig version=\"1.1\">\n\
         \x20 <emailProvider id=\"{domain}\">\n\
         \x20   <domain>{domain}</domain>\n\
         \x20   <displayName>{domain} mail</displayName>\n\
         \x20   <displayShortName>{domain}</displayShortName>\n"
    );
    let socket = |s: Security| match s {
        Security::Implicit => "SSL",
        Security::StartTls => "STARTTLS",
    };
    for s in services.incoming() {
        let _ = write!(
            out,
            "    <incomingServer type=\"{}\">\n\
             \x20     <hostname>{host}</hostname>\n\
             \x20     <port>{}</port>\n\
             \x20     <socketType>{}</socketType>\n\
             \x20     <authentication>password-cleartext</authentication>\n\
             \x20     <username>%EMAILADDRESS%</username>\n\
             \x20   </incomingServer>\n",
            s.protocol,
            s.port,
            socket(s.security)
        );
    }
    for s in services.outgoing() {
        let _ = write!(
            out,
            "    <outgoingServer type=\"smtp\">\n\
             \x20     <hostname>{host}</hostname>\n\
             \x20     <port>{}</port>\n\
             \x20     <socketType>{}</socketType>\n\
             \x20     <authentication>password-cleartext</authentication>\n\
             \x20     <username>%EMAILADDRESS%</username>\n\
             \x20   </outgoingServer>\n",
            s.port,
            socket(s.security)
        );
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}

/// Why an Autodiscover request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AutodiscoverError {
    /// Not well-formed XML, or not a request naming an address.
    #[error("not an Autodiscover request: {0}")]
    Malformed(String),
    /// The document has a DOCTYPE (DTDs and entities are never read).
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    /// Larger than [`MAX_AUTODISCOVER_REQUEST`].
    #[error("request larger than {MAX_AUTODISCOVER_REQUEST} bytes")]
    TooLarge,
}

/// The `EMailAddress` of an Autodiscover POX request. The parser reads no
/// DTD, so no entity (internal or external) is ever expanded: a document
/// with a DOCTYPE is refused outright.
pub fn autodiscover_request_address(body: &[u8]) -> Result<String, AutodiscoverError> {
    use quick_xml::events::Event;
    if body.len() > MAX_AUTODISCOVER_REQUEST {
        return Err(AutodiscoverError::TooLarge);
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut in_address = false;
    let mut depth = 0usize;
    let mut address: Option<String> = None;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| AutodiscoverError::Malformed(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(AutodiscoverError::Doctype),
            Event::Start(e) => {
                depth += 1;
                if depth > 16 {
                    return Err(AutodiscoverError::Malformed("nested too deeply".into()));
                }
                in_address = e
                    .local_name()
                    .as_ref()
                    .eq_ignore_ascii_case(b"EMailAddress");
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                in_address = false;
            }
            Event::Text(t) if in_address => {
                let text = t
                    .decode()
                    .map_err(|e| AutodiscoverError::Malformed(e.to_string()))?;
                let text = quick_xml::escape::unescape(&text)
                    .map_err(|e| AutodiscoverError::Malformed(e.to_string()))?;
                address
                    .get_or_insert_with(String::new)
                    .push_str(text.trim());
            }
            Event::GeneralRef(r) if in_address => {
                // Only the five predefined entities and character
                // references; anything else is refused.
                let name = r
                    .decode()
                    .map_err(|e| AutodiscoverError::Malformed(e.to_string()))?;
                let c = match &*name {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    other => {
                        return Err(AutodiscoverError::Malformed(format!(
                            "unknown entity &{other};"
                        )));
                    }
                };
                address.get_or_insert_with(String::new).push(c);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    address
        .filter(|a| !a.is_empty())
        .ok_or_else(|| AutodiscoverError::Malformed("no EMailAddress".into()))
}

/// The Autodiscover (Outlook POX) answer for `address`.
pub fn autodiscover(services: &ClientServices, address: &str) -> String {
    let host = xml_escape(&services.hostname);
    let login = xml_escape(address);
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n\
         \x20 <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n\
         \x20   <Account>\n\
         \x20     <AccountType>email</AccountType>\n\
         \x20     <Action>settings</Action>\n",
    );
    for s in services.incoming().into_iter().chain(services.outgoing()) {
        let (ssl, encryption) = match s.security {
            Security::Implicit => ("on", "SSL"),
            Security::StartTls => ("off", "TLS"),
        };
        let _ = write!(
            out,
            "      <Protocol>\n\
             \x20       <Type>{}</Type>\n\
             \x20       <Server>{host}</Server>\n\
             \x20       <Port>{}</Port>\n\
             \x20       <DomainRequired>off</DomainRequired>\n\
             \x20       <LoginName>{login}</LoginName>\n\
             \x20       <SPA>off</SPA>\n\
             \x20       <SSL>{ssl}</SSL>\n\
             \x20       <Encryption>{encryption}</Encryption>\n\
             \x20       <AuthRequired>on</AuthRequired>\n\
             \x20     </Protocol>\n",
            s.protocol.to_ascii_uppercase(),
            s.port
        );
    }
    out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    out
}

/// A stable UUID (version 8 layout) for `parts`: the same account gets
/// the same profile identifiers, so installing it again replaces it.
fn stable_uuid(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let d = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The Apple configuration profile for `address` (unsigned; no password:
/// the device asks for it when the profile is installed). `None` when
/// there is no incoming or no outgoing service to describe.
pub fn mobileconfig(services: &ClientServices, address: &str, domain: &str) -> Option<String> {
    let incoming = *services.incoming().first()?;
    let outgoing = *services.outgoing().first()?;
    let host = xml_escape(&services.hostname);
    let addr = xml_escape(address);
    // Reverse-DNS identifiers from the (local, validated) domain.
    let reverse: String = domain.rsplit('.').collect::<Vec<_>>().join(".");
    let reverse = xml_escape(&reverse);
    let account_uuid = stable_uuid(&["account", &services.hostname, address]);
    let profile_uuid = stable_uuid(&["profile", &services.hostname, address]);
    let account_type = if incoming.protocol == "imap" {
        "EmailTypeIMAP"
    } else {
        "EmailTypePOP"
    };
    let tf = |b: bool| if b { "<true/>" } else { "<false/>" };
    // UseSSL: TLS for the connection; with a STARTTLS port the device
    // upgrades the connection, which is what the listener requires.
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
<plist version=\"1.0\">\n\
<dict>\n\
\t<key>PayloadContent</key>\n\
\t<array>\n\
\t\t<dict>\n\
\t\t\t<key>EmailAccountDescription</key>\n\t\t\t<string>{addr}</string>\n\
\t\t\t<key>EmailAccountName</key>\n\t\t\t<string>{addr}</string>\n\
\t\t\t<key>EmailAccountType</key>\n\t\t\t<string>{account_type}</string>\n\
\t\t\t<key>EmailAddress</key>\n\t\t\t<string>{addr}</string>\n\
\t\t\t<key>IncomingMailServerAuthentication</key>\n\t\t\t<string>EmailAuthPassword</string>\n\
\t\t\t<key>IncomingMailServerHostName</key>\n\t\t\t<string>{host}</string>\n\
\t\t\t<key>IncomingMailServerPortNumber</key>\n\t\t\t<integer>{in_port}</integer>\n\
\t\t\t<key>IncomingMailServerUseSSL</key>\n\t\t\t{in_ssl}\n\
\t\t\t<key>IncomingMailServerUsername</key>\n\t\t\t<string>{addr}</string>\n\
\t\t\t<key>OutgoingMailServerAuthentication</key>\n\t\t\t<string>EmailAuthPassword</string>\n\
\t\t\t<key>OutgoingMailServerHostName</key>\n\t\t\t<string>{host}</string>\n\
\t\t\t<key>OutgoingMailServerPortNumber</key>\n\t\t\t<integer>{out_port}</integer>\n\
\t\t\t<key>OutgoingMailServerUseSSL</key>\n\t\t\t{out_ssl}\n\
\t\t\t<key>OutgoingMailServerUsername</key>\n\t\t\t<string>{addr}</string>\n\
\t\t\t<key>OutgoingPasswordSameAsIncomingPassword</key>\n\t\t\t<true/>\n\
\t\t\t<key>PayloadDescription</key>\n\t\t\t<string>Mail account {addr}</string>\n\
\t\t\t<key>PayloadDisplayName</key>\n\t\t\t<string>{addr}</string>\n\
\t\t\t<key>PayloadIdentifier</key>\n\t\t\t<string>{reverse}.tern.mail.{account_uuid}</string>\n\
\t\t\t<key>PayloadType</key>\n\t\t\t<string>com.apple.mail.managed</string>\n\
\t\t\t<key>PayloadUUID</key>\n\t\t\t<string>{account_uuid}</string>\n\
\t\t\t<key>PayloadVersion</key>\n\t\t\t<integer>1</integer>\n\
\t\t\t<key>PreventAppSheet</key>\n\t\t\t<false/>\n\
\t\t\t<key>PreventMove</key>\n\t\t\t<false/>\n\
\t\t\t<key>SMIMEEnabled</key>\n\t\t\t<false/>\n\
\t\t</dict>\n\
\t</array>\n\
\t<key>PayloadDescription</key>\n\t<string>Sets up the mail account {addr}</string>\n\
\t<key>PayloadDisplayName</key>\n\t<string>Mail for {addr}</string>\n\
\t<key>PayloadIdentifier</key>\n\t<string>{reverse}.tern.profile.{profile_uuid}</string>\n\
\t<key>PayloadRemovalDisallowed</key>\n\t<false/>\n\
\t<key>PayloadType</key>\n\t<string>Configuration</string>\n\
\t<key>PayloadUUID</key>\n\t<string>{profile_uuid}</string>\n\
\t<key>PayloadVersion</key>\n\t<integer>1</integer>\n\
</dict>\n\
</plist>\n",
        in_port = incoming.port,
        in_ssl = tf(true),
        out_port = outgoing.port,
        out_ssl = tf(true),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> ClientServices {
        ClientServices {
            hostname: "mx.example.test".into(),
            submissions: Some(465),
            submission: Some(587),
            imaps: Some(993),
            imap: Some(143),
            pop3s: None,
            pop3: None,
        }
    }

    #[test]
    fn documents_name_exactly_the_configured_services() {
        let s = all();
        let tb = thunderbird(&s, "example.test");
        assert!(tb.contains("<incomingServer type=\"imap\">"));
        assert!(tb.contains("<port>993</port>") && tb.contains("<port>143</port>"));
        assert!(!tb.contains("pop3"), "{tb}");
        assert!(tb.contains("<port>465</port>") && tb.contains("<port>587</port>"));
        assert_eq!(tb.matches("<socketType>SSL</socketType>").count(), 2);
        assert_eq!(tb.matches("<socketType>STARTTLS</socketType>").count(), 2);

        let ad = autodiscover(&s, "alice@example.test");
        assert_eq!(ad.matches("<Protocol>").count(), 4);
        assert!(ad.contains("<Type>IMAP</Type>") && ad.contains("<Type>SMTP</Type>"));
        assert!(!ad.contains("POP3"));

        let mc = mobileconfig(&s, "alice@example.test", "example.test").unwrap();
        assert!(mc.contains("<integer>993</integer>") && mc.contains("<integer>465</integer>"));
        assert!(
            !mc.to_ascii_lowercase()
                .contains("password</key>\n\t\t\t<string")
        );
        assert!(mc.contains("test.example.tern.mail."));
        // Same account, same identifiers.
        assert_eq!(
            mc,
            mobileconfig(&s, "alice@example.test", "example.test").unwrap()
        );

        let none = ClientServices {
            hostname: "h".into(),
            ..ClientServices::default()
        };
        assert!(mobileconfig(&none, "a@b", "b").is_none());
        assert!(!none.usable());
    }

    #[test]
    fn srv_records_say_what_is_not_offered() {
        let srv = all().srv_records("example.test");
        let lines: Vec<String> = srv
            .iter()
            .map(|r| format!("{} {}", r.name, r.value()))
            .collect();
        assert_eq!(
            lines,
            [
                "_submissions._tcp.example.test 0 1 465 mx.example.test.",
                "_submission._tcp.example.test 5 1 587 mx.example.test.",
                "_imaps._tcp.example.test 10 1 993 mx.example.test.",
                "_imap._tcp.example.test 15 1 143 mx.example.test.",
                "_pop3s._tcp.example.test 0 0 0 .",
                "_pop3._tcp.example.test 0 0 0 .",
            ]
        );
    }

    #[test]
    fn escaping_and_address_checks() {
        assert_eq!(
            xml_escape("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
        let locals = ["example.test"];
        assert_eq!(
            check_address("Alice@Example.TEST", locals),
            Some(("Alice@example.test".into(), "example.test".into()))
        );
        assert_eq!(check_address("alice@elsewhere.test", locals), None);
        assert_eq!(check_address("<script>@example.test", locals), None);
        assert_eq!(check_address("no-at-sign", locals), None);
        // A quoted local part is a valid address: it is escaped, not refused.
        let (a, _) = check_address("\"a<b>\"@example.test", locals).unwrap();
        assert!(autodiscover(&all(), &a).contains("&quot;a&lt;b&gt;&quot;@example.test"));
    }

    #[test]
    fn autodiscover_requests_are_parsed_without_dtds() {
        let req = br#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>alice@example.test</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#;
        assert_eq!(
            autodiscover_request_address(req).unwrap(),
            "alice@example.test"
        );
        let xxe = br#"<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>"#;
        assert_eq!(
            autodiscover_request_address(xxe),
            Err(AutodiscoverError::Doctype)
        );
        let undeclared =
            b"<Autodiscover><Request><EMailAddress>a&x;@b</EMailAddress></Request></Autodiscover>";
        assert!(autodiscover_request_address(undeclared).is_err());
        let escaped =
            b"<A><Request><EMailAddress>a&amp;b@example.test</EMailAddress></Request></A>";
        assert_eq!(
            autodiscover_request_address(escaped).unwrap(),
            "a&b@example.test"
        );
        assert!(autodiscover_request_address(b"<A><Request/></A>").is_err());
        assert!(autodiscover_request_address(b"not xml <<<").is_err());
        let big = vec![b' '; MAX_AUTODISCOVER_REQUEST + 1];
        assert_eq!(
            autodiscover_request_address(&big),
            Err(AutodiscoverError::TooLarge)
        );
    }
}
