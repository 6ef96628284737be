//! The `[queue]` configuration section's choice of backend. The section
//! also holds the retry schedule (`tern_queue::RetrySchedule`'s keys); the
//! binary hands each crate its own keys ([`QueueConfig::KEYS`] are these).
//!
//! ```toml
//! [queue]
//! backend = "postgres"          # or "file" (the default)
//! url = "host=127.0.0.1 port=5432 user=tern dbname=tern"
//! password_file = "/etc/tern/queue-db.password"   # optional
//! pool_size = 8
//! lease_seconds = 300
//! ```
//!
//! What this module must never do: accept an unknown key silently (a typo
//! would fall back to a default), or show a database password: the
//! effective configuration prints the url with its password replaced by
//! `…`, and [`PgConfig`]'s `Debug` does the same.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use crate::PgError;

/// The `[queue]` section as far as the backend is concerned (its `Debug`
/// shows the url redacted).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Which store keeps the queue.
    #[serde(default)]
    pub backend: QueueBackend,
    /// For `postgres`: a libpq-style connection string or `postgresql://`
    /// URL (required). Printed with its password replaced by `…`.
    #[serde(default, serialize_with = "serialize_redacted")]
    pub url: Option<String>,
    /// For `postgres`: a file whose first line is the database password,
    /// so that the url need not carry it (it wins over one in the url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// For `postgres`: connections this node keeps open.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a delivery pass's lease lasts before another node may take
    /// the message over (seconds): longer than a slow delivery, shorter
    /// than a node failure should delay mail.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// For `postgres`: this node's name in the lease columns (for `tern
    /// queue list`); the caller's default (the host name) when absent.
    #[serde(default)]
    pub node: Option<String>,
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_deref().map(redacted))
            .field("password_file", &self.password_file)
            .field("pool_size", &self.pool_size)
            .field("lease_seconds", &self.lease_seconds)
            .field("node", &self.node)
            .finish()
    }
}

/// Where the queue lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// The spool directory under `data_dir` (one node).
    #[default]
    File,
    /// A PostgreSQL database (one or several nodes).
    Postgres,
}

/// How [`PgStore::connect`](crate::PgStore::connect) reaches the database.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// A libpq-style connection string or `postgresql://` URL.
    pub url: String,
    /// The password, when it is not in `url` (read from `password_file`).
    pub password: Option<String>,
    /// Connections kept open (at least one).
    pub pool_size: usize,
    /// This node's name, written with its leases.
    pub node: String,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("pool_size", &self.pool_size)
            .field("node", &self.node)
            .finish()
    }
}

/// `url` with any password in it replaced by `…`: the one of a
/// `postgresql://user:password@host` URL, and the value of `password=` in
/// a key/value connection string (quoted or not).
pub(crate) fn redacted(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            let tail = redact_query(tail);
            return format!("{scheme}://{user}:…@{host}{tail}");
        }
        return format!("{scheme}://{authority}{}", redact_query(tail));
    }
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = find_key(rest, "password") {
        let after_key = rest[at + "password".len()..].trim_start();
        let Some(value) = after_key.strip_prefix('=') else {
            out.push_str(&rest[..at + "password".len()]);
            rest = &rest[at + "password".len()..];
            continue;
        };
        let value = value.trim_start();
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote that is not escaped.
            let mut end = quoted.len();
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '\'' if !escaped => {
                        end = i + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            1 + end
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        let value_start = rest.len() - value.len();
        out.push_str(&rest[..at]);
        out.push_str("password=…");
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

/// `password=` in a URL's query string, redacted.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=…"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{path}?{}", params.join("&"))
}

/// Where key `key` starts in a key/value string (at the start or after
/// white space).
fn find_key(s: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(key).map(|i| i + from) {
        let starts = i == 0 || s[..i].ends_with(char::is_whitespace);
        let rest = s[i + key.len()..].trim_start();
        if starts && rest.starts_with('=') {
            return Some(i);
        }
        from = i + key.len();
    }
    None
}

fn serialize_redacted<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(&redacted(url)),
        None => s.serialize_none(),
    }
}

fn default_pool_size() -> usize {
    8
}

fn default_lease_seconds() -> u64 {
    300
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            backend: QueueBackend::File,
            url: None,
            password_file: None,
            pool_size: default_pool_size(),
            lease_seconds: default_lease_seconds(),
            node: None,
        }
    }
}

impl QueueConfig {
    /// The keys of the `[queue]` section that are this struct's.
    pub const KEYS: &'static [&'static str] = &[
        "backend",
        "url",
        "password_file",
        "pool_size",
        "lease_seconds",
        "node",
    ];

    /// The connection settings when the backend is PostgreSQL (`None` for
    /// files), `default_node` naming this node unless `node` is set.
    /// Fails when `url` is missing or `password_file` cannot be read.
    pub fn pg_config(&self, default_node: &str) -> Result<Option<PgConfig>, PgError> {
        if self.backend != QueueBackend::Postgres {
            return Ok(None);
        }
        let url = self.url.clone().ok_or(PgError::Config(
            "[queue] backend = \"postgres\" needs a url",
        ))?;
        let password = match &self.password_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| PgError::PasswordFile {
                        path: path.clone(),
                        source,
                    })?;
                Some(text.lines().next().unwrap_or("").to_owned())
            }
            None => None,
        };
        Ok(Some(PgConfig {
            url,
            password,
            pool_size: self.pool_size.max(1),
            node: self.node.clone().unwrap_or_else(|| default_node.to_owned()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections() {
        let cases: &[(&str, Option<QueueConfig>)] = &[
            ("", Some(QueueConfig::default())),
            (
                "backend = \"postgres\"\nurl = \"host=db user=tern\"\npool_size = 3\nlease_seconds = 60\nnode = \"a\"",
                Some(QueueConfig {
                    backend: QueueBackend::Postgres,
                    url: Some("host=db user=tern".into()),
                    password_file: None,
                    pool_size: 3,
                    lease_seconds: 60,
                    node: Some("a".into()),
                }),
            ),
            ("backend = \"sqlite\"", None),
            ("backend = \"file\"\nurll = \"x\"", None),
        ];
        for (text, want) in cases {
            let got = toml::from_str::<QueueConfig>(text).ok();
            assert_eq!(&got, want, "{text}");
        }
    }

    #[test]
    fn passwords_are_never_shown() {
        let cases = [
            (
                "host=db user=tern dbname=tern",
                "host=db user=tern dbname=tern",
            ),
            (
                "host=db password=s3cret user=tern",
                "host=db password=… user=tern",
            ),
            ("password = 's e\\'cret' host=db", "password=… host=db"),
            ("host=db password=", "host=db password=…"),
            ("host=db mypassword=x", "host=db mypassword=x"),
            (
                "postgresql://tern:s3cret@db.internal:5432/tern",
                "postgresql://tern:…@db.internal:5432/tern",
            ),
            ("postgres://tern@db/tern", "postgres://tern@db/tern"),
            (
                "postgresql://db/tern?user=tern&password=s3cret&sslmode=disable",
                "postgresql://db/tern?user=tern&password=…&sslmode=disable",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redacted(url), shown, "{url}");
        }
        let config = QueueConfig {
            backend: QueueBackend::Postgres,
            url: Some("postgresql://tern:s3cret@db/tern".into()),
            ..QueueConfig::default()
        };
        let printed = toml::to_string(&config).unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(printed.contains("postgresql://tern:…@db/tern"), "{printed}");
        let pg = config.pg_config("n").unwrap().unwrap();
        assert_eq!(pg.url, "postgresql://tern:s3cret@db/tern", "used as given");
        let debug = format!("{pg:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn the_password_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pa ss\nignored\n").unwrap();
        let config: QueueConfig = toml::from_str(&format!(
            "backend = \"postgres\"\nurl = \"host=db user=tern\"\npassword_file = {file:?}"
        ))
        .unwrap();
        let pg = config.pg_config("n").unwrap().unwrap();
        assert_eq!(pg.password.as_deref(), Some("pa ss"));
        assert!(!format!("{pg:?}").contains("pa ss"));
        let missing = QueueConfig {
            password_file: Some(dir.path().join("nope")),
            ..config
        };
        let err = missing.pg_config("n").unwrap_err().to_string();
        assert!(
            err.contains("password_file") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn pg_config() {
        let file = QueueConfig::default();
        assert_eq!(file.pg_config("n").unwrap(), None);
        let pg = QueueConfig {
            backend: QueueBackend::Postgres,
            pool_size: 0,
            ..QueueConfig::default()
        };
        assert!(pg.pg_config("n").is_err(), "url is required");
        let pg = QueueConfig {
            url: Some("host=db".into()),
            ..pg
        };
        assert_eq!(
            pg.pg_config("n").unwrap(),
            Some(PgConfig {
                url: "host=db".into(),
                password: None,
                pool_size: 1,
                node: "n".into(),
            })
        );
    }
}
