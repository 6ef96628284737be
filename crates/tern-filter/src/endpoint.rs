//! Where a scanner (rspamd, a milter, clamd) listens, as an admin writes
//! it: `unix:/path`, `host:port`, `inet:port@host` (Sendmail's form),
//! `http://host:port`. A pure parser: connecting is the runtime's
//! (`tern-net`'s `filter::net`). It never resolves a name or opens a socket.

use std::fmt;
use std::path::PathBuf;

/// A scanner's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` (a name is resolved by the system resolver).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket.
    Unix(PathBuf),
}

/// Why a scanner address cannot be used (the text is the address as
/// written, quoted, then what is wrong with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// `unix:` followed by a relative path.
    #[error("{input:?}: a Unix socket path must be absolute")]
    RelativeUnixPath {
        /// The address as written.
        input: String,
    },
    /// The port is not a number from 0 to 65535.
    #[error("{input:?}: bad port {port:?}")]
    BadPort {
        /// The address as written.
        input: String,
        /// The port as written.
        port: String,
    },
    /// Neither `host:port` nor a Unix socket.
    #[error("{input:?}: expected host:port or unix:/path")]
    NotAnEndpoint {
        /// The address as written.
        input: String,
    },
    /// `:port` with no host before it.
    #[error("{input:?}: no host")]
    NoHost {
        /// The address as written.
        input: String,
    },
}

impl Endpoint {
    /// Parses `unix:/path`, `/path`, `tcp:host:port`, `inet:port@host`
    /// (Sendmail's form), `http://host:port`, `host:port` or `[v6]:port`.
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            return if path.starts_with('/') {
                Ok(Endpoint::Unix(PathBuf::from(path)))
            } else {
                Err(EndpointError::RelativeUnixPath { input: s.into() })
            };
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if let Some(rest) = s.strip_prefix("inet:")
            && let Some((port, host)) = rest.split_once('@')
        {
            let port = port.parse().map_err(|_| EndpointError::BadPort {
                input: s.into(),
                port: port.into(),
            })?;
            let host = host.trim_matches(['[', ']']);
            if host.is_empty() {
                return Err(EndpointError::NoHost { input: s.into() });
            }
            return Ok(Endpoint::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        let rest = s
            .strip_prefix("tcp:")
            .or_else(|| s.strip_prefix("inet:"))
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| EndpointError::NotAnEndpoint { input: s.into() })?;
        let port = port.parse().map_err(|_| EndpointError::BadPort {
            input: s.into(),
            port: port.into(),
        })?;
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err(EndpointError::NoHost { input: s.into() });
        }
        Ok(Endpoint::Tcp {
            host: host.to_owned(),
            port,
        })
    }

    /// The value of an HTTP `Host:` field for this endpoint.
    pub fn host_header(&self) -> String {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
            Endpoint::Unix(_) => "localhost".into(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { .. } => write!(f, "tcp:{}", self.host_header()),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let tcp = |h: &str, p| Endpoint::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            Endpoint::parse("127.0.0.1:11333"),
            Ok(tcp("127.0.0.1", 11333))
        );
        assert_eq!(
            Endpoint::parse("http://localhost:11333/"),
            Ok(tcp("localhost", 11333))
        );
        assert_eq!(Endpoint::parse("tcp:[::1]:3310"), Ok(tcp("::1", 3310)));
        assert_eq!(
            Endpoint::parse("inet:8891@127.0.0.1"),
            Ok(tcp("127.0.0.1", 8891))
        );
        assert_eq!(
            Endpoint::parse("inet:127.0.0.1:8891"),
            Ok(tcp("127.0.0.1", 8891))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/clamav/clamd.ctl"),
            Ok(Endpoint::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(
            Endpoint::parse("/run/x.sock"),
            Ok(Endpoint::Unix("/run/x.sock".into()))
        );
        for bad in ["unix:relative", "localhost", "host:port", ":25", "inet:x@h"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(tcp("::1", 1).host_header(), "[::1]:1");
        assert_eq!(tcp("::1", 1).to_string(), "tcp:[::1]:1");
    }

    #[test]
    fn endpoint_errors_say_what_is_wrong() {
        let cases = [
            (
                "unix:relative",
                "\"unix:relative\": a Unix socket path must be absolute",
            ),
            (
                "localhost",
                "\"localhost\": expected host:port or unix:/path",
            ),
            ("host:port", "\"host:port\": bad port \"port\""),
            (":25", "\":25\": no host"),
            ("inet:x@h", "\"inet:x@h\": bad port \"x\""),
        ];
        for (input, text) in cases {
            assert_eq!(Endpoint::parse(input).unwrap_err().to_string(), text);
        }
        assert!(matches!(
            Endpoint::parse("h:99999"),
            Err(EndpointError::BadPort { port, .. }) if port == "99999"
        ));
    }

    /// Found by the fuzz target `filter_endpoint`: Sendmail's
    /// `inet:port@host` form with no host was taken as an empty host name.
    #[test]
    fn sendmail_form_needs_a_host() {
        for input in ["inet:41444@", "inet:25@[]", "inet:25@[", "local:", "unix:"] {
            assert!(Endpoint::parse(input).is_err(), "{input}");
        }
        assert_eq!(
            Endpoint::parse("inet:41444@").unwrap_err().to_string(),
            "\"inet:41444@\": no host"
        );
    }
}
