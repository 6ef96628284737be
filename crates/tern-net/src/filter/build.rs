//! The pipeline built from the `[[filter]]` tables
//! ([`tern_filter::config::Filters`], which `tern-filter` reads and
//! validates): each stage's client, with what it needs from outside (the
//! rspamd controller's password, the greylist database, the resolver).
//!
//! Building reads the password files and opens the greylist database: call
//! it where those may be opened (after the privilege switch, for the
//! database in `data_dir`). It never connects to a scanner.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tern_filter::config::{ConfigError, FilterConfig, FilterRole, Filters};
use tern_filter::greylist::{GreylistError, MemoryStore, SqliteStore, Store};
use tracing::info;

use super::dnsbl::Clock;
use super::{Pipeline, Roles, Stage, StageKind, clamd, dnsbl, greylist, milter, rspamd};

/// What the stages need from outside the configuration.
#[derive(Clone)]
pub struct BuildEnv {
    /// The resolver of the blocklist stages (`None`: a `dnsbl` stage is an error).
    pub resolver: Option<Arc<dyn tern_dns::Resolver>>,
    /// The clock greylisting and the blocklist cache read (seconds since the epoch).
    pub clock: Clock,
    /// Where the greylist database is kept unless `database` says otherwise.
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for BuildEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildEnv")
            .field("resolver", &self.resolver.is_some())
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A stage that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The tables are not valid (see [`Filters::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The rspamd controller's `password_file` cannot be read.
    #[error("[[filter]] #{number} ({name}): cannot read password_file {}", path.display())]
    PasswordFile {
        /// The table's position, from 1.
        number: usize,
        /// The stage's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A blocklist stage without a resolver.
    #[error("[[filter]] #{number} ({name}): no DNS resolver")]
    NoResolver {
        /// The table's position, from 1.
        number: usize,
        /// The stage's name.
        name: String,
    },
    /// The greylist database cannot be opened.
    #[error("[[filter]] #{number} ({name}): cannot open {}", path.display())]
    GreylistDatabase {
        /// The table's position, from 1.
        number: usize,
        /// The stage's name.
        name: String,
        /// The database.
        path: PathBuf,
        /// Why.
        #[source]
        source: GreylistError,
    },
}

/// Connecting is bounded by the stage's timeout, and by 10 s at most.
fn connect_timeout(t: Duration) -> Duration {
    t.min(Duration::from_secs(10))
}

fn roles(roles: &[FilterRole]) -> Roles {
    Roles {
        mx: roles.contains(&FilterRole::Mx),
        submission: roles.contains(&FilterRole::Submission),
    }
}

impl Pipeline {
    /// The pipeline of the `[[filter]]` tables, in order (validated again
    /// here, so an invalid table never becomes a stage). Logs each stage.
    pub fn from_config(filters: &Filters, env: &BuildEnv) -> Result<Pipeline, BuildError> {
        filters.validate()?;
        let mut stages = Vec::with_capacity(filters.len() + 1);
        for (i, fc) in filters.iter().enumerate() {
            let name = filters.name(i);
            let number = i + 1;
            let Some((stage_roles, timeout, fail)) = fc.common() else {
                stages.push(Stage {
                    name,
                    roles: Roles {
                        mx: true,
                        submission: true,
                    },
                    timeout: tern_mailauth::verify::CHECK_DEADLINE,
                    fail: tern_filter::FailMode::Open,
                    kind: StageKind::MailAuth,
                });
                continue;
            };
            let kind = match fc {
                FilterConfig::MailAuth(_) => StageKind::MailAuth,
                FilterConfig::Rspamd(r) => {
                    let password = match &r.password_file {
                        Some(path) => {
                            Some(first_line(path).map_err(|source| BuildError::PasswordFile {
                                number,
                                name: name.clone(),
                                path: path.clone(),
                                source,
                            })?)
                        }
                        None => None,
                    };
                    let at = |problem| ConfigError::new(number, fc.kind(), problem);
                    StageKind::Rspamd(Arc::new(rspamd::Rspamd::new(rspamd::RspamdSettings {
                        endpoint: r.endpoint().map_err(at)?,
                        controller: r.controller().map_err(at)?,
                        password,
                        max_size: r.max_size,
                        settings_id: r.settings_id.clone(),
                        policy: r.policy(),
                        connect_timeout: connect_timeout(timeout),
                    })))
                }
                FilterConfig::Milter(m) => StageKind::Milter(Arc::new(milter::MilterSpec {
                    endpoint: m
                        .endpoint()
                        .map_err(|p| ConfigError::new(number, fc.kind(), p))?,
                    connect_timeout: connect_timeout(timeout),
                })),
                FilterConfig::Clamd(c) => {
                    StageKind::Clamd(Arc::new(clamd::Clamd::new(clamd::ClamdSettings {
                        endpoint: c
                            .endpoint()
                            .map_err(|p| ConfigError::new(number, fc.kind(), p))?,
                        max_size: c.max_size,
                        infected: c.infected,
                        connect_timeout: connect_timeout(timeout),
                    })))
                }
                FilterConfig::Dnsbl(d) => {
                    let zones = d.zones().map_err(|e| {
                        ConfigError::new(number, fc.kind(), tern_filter::config::Problem::Zone(e))
                    })?;
                    let resolver = env.resolver.clone().ok_or_else(|| BuildError::NoResolver {
                        number,
                        name: name.clone(),
                    })?;
                    StageKind::Dnsbl(Arc::new(dnsbl::Dnsbl::new(
                        resolver,
                        zones,
                        d.threshold,
                        d.hook.into(),
                        Arc::clone(&env.clock),
                    )))
                }
                FilterConfig::Greylist(g) => {
                    let store: Box<dyn Store + Send> = match g.database.as_deref() {
                        Some(p) if p == Path::new(":memory:") => Box::new(MemoryStore::new()),
                        p => {
                            let path = p
                                .map(Path::to_path_buf)
                                .unwrap_or_else(|| env.data_dir.join("greylist.db"));
                            Box::new(SqliteStore::open(&path).map_err(|source| {
                                BuildError::GreylistDatabase {
                                    number,
                                    name: name.clone(),
                                    path: path.clone(),
                                    source,
                                }
                            })?)
                        }
                    };
                    StageKind::Greylist(Arc::new(greylist::GreylistService::new(
                        g.settings(),
                        store,
                        Arc::clone(&env.clock),
                    )))
                }
            };
            stages.push(Stage {
                name,
                roles: roles(stage_roles),
                timeout,
                fail,
                kind,
            });
        }
        for s in &stages {
            info!(stage = %s.name, mx = s.roles.mx, submission = s.roles.submission, timeout = ?s.timeout, fail = ?s.fail, "filter stage");
        }
        Ok(Pipeline::new(stages))
    }
}

/// The first line of a secret file.
fn first_line(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}
