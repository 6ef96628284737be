//! The `[queue]` configuration section's choice of backend. The section
//! also holds the retry schedule (`tern_queue::RetrySchedule`'s keys); the
//! binary hands each crate its own keys ([`QueueConfig::KEYS`] are these).
//!
//! ```toml
//! [queue]
//! backend = "postgres"          # or "file" (the default)
//! url = "host=127.0.0.1 port=5432 user=tern dbname=tern"
//! pool_size = 8
//! lease_seconds = 300
//! ```
//!
//! What this module must never do: accept an unknown key silently (a typo
//! would fall back to a default).

use serde::{Deserialize, Serialize};

use crate::PgError;

/// The `[queue]` section as far as the backend is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Which store keeps the queue.
    #[serde(default)]
    pub backend: QueueBackend,
    /// For `postgres`: a libpq-style connection string or `postgresql://`
    /// URL (required).
    #[serde(default)]
    pub url: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// A libpq-style connection string or `postgresql://` URL.
    pub url: String,
    /// Connections kept open (at least one).
    pub pool_size: usize,
    /// This node's name, written with its leases.
    pub node: String,
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
            pool_size: default_pool_size(),
            lease_seconds: default_lease_seconds(),
            node: None,
        }
    }
}

impl QueueConfig {
    /// The keys of the `[queue]` section that are this struct's.
    pub const KEYS: &'static [&'static str] =
        &["backend", "url", "pool_size", "lease_seconds", "node"];

    /// The connection settings when the backend is PostgreSQL (`None` for
    /// files), `default_node` naming this node unless `node` is set.
    /// Fails when `url` is missing.
    pub fn pg_config(&self, default_node: &str) -> Result<Option<PgConfig>, PgError> {
        if self.backend != QueueBackend::Postgres {
            return Ok(None);
        }
        let url = self.url.clone().ok_or(PgError::Config(
            "[queue] backend = \"postgres\" needs a url",
        ))?;
        Ok(Some(PgConfig {
            url,
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
                pool_size: 1,
                node: "n".into(),
            })
        );
    }
}
