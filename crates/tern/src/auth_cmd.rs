//! `tern dkim keygen` and `tern dns`: what an admin must publish in the DNS
//! for the domains of a configuration, and whether it is there.
//!
//! Key generation writes only under the configured keys directory (0700
//! directories, 0600 files, never over an existing key) and prints only
//! the public half. `tern dns --check` only reads the DNS, through the
//! configured `[dns] nameservers`.

use std::path::Path;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use tern::config::Config;
use tern_mailauth::KeyAlgorithm;
use tern_mailauth::records::records_for;

/// `tern dkim …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DkimAction {
    /// Generate a signing key for a local domain and print its DNS record.
    ///
    /// The key is written to `<dkim.keys_dir>/<DOMAIN>/<SELECTOR>.key`
    /// (mode 0600); a running server uses it after a restart. Generate one
    /// of each algorithm to sign every message twice.
    Keygen {
        /// A local domain of the configuration.
        domain: String,
        /// The selector (the `s=` of signatures; a DNS label).
        #[arg(long, short)]
        selector: Option<String>,
        /// rsa (2048 bits; verified everywhere) or ed25519 (RFC 8463).
        #[arg(long, short, value_enum, default_value_t = Algorithm::Rsa)]
        algorithm: Algorithm,
    },
}

/// Key algorithms for `tern dkim keygen`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Algorithm {
    /// rsa-sha256, 2048-bit.
    Rsa,
    /// ed25519-sha256.
    Ed25519,
}

fn local_domain(config: &Config, domain: &str) -> anyhow::Result<String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    if !config
        .domains
        .keys()
        .any(|k| k.trim_end_matches('.').eq_ignore_ascii_case(&d))
    {
        bail!("{domain} is not a local domain of this configuration (add [domains.\"{d}\"] first)");
    }
    Ok(d)
}

pub(crate) fn dkim(action: DkimAction, config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    match action {
        DkimAction::Keygen {
            domain,
            selector,
            algorithm,
        } => {
            let domain = local_domain(&config, &domain)?;
            let (algorithm, default_selector) = match algorithm {
                Algorithm::Rsa => (KeyAlgorithm::Rsa, "tern-rsa"),
                Algorithm::Ed25519 => (KeyAlgorithm::Ed25519, "tern-ed25519"),
            };
            let selector = selector.unwrap_or_else(|| default_selector.to_owned());
            let keys_dir = config.dkim_keys_dir();
            // Root generating a key for a server that runs as `user`: a key
            // under data_dir is written as that user (root-owned state there
            // would stop the server at start, and it could not reload it).
            if keys_dir.starts_with(&config.data_dir)
                && let tern::privilege::Plan::Drop(run_as) = tern::privilege::plan(&config)?
            {
                tern::privilege::drop_privileges(&run_as)?;
            }
            let key = tern_mailauth::keys::generate(&keys_dir, &domain, &selector, algorithm)?;
            eprintln!(
                "wrote {} ({algorithm}); publish this TXT record, then restart tern:",
                key.path.display()
            );
            let record = records_for(&domain, &config.hostname, std::slice::from_ref(&key))
                .into_iter()
                .find(|r| r.name == key.record_name())
                .context("no record for the new key")?;
            println!("{}", record.zone_line());
            Ok(())
        }
    }
}

/// `tern dns DOMAIN [--check] [--json]`: the same service as the admin
/// API's `/api/dns/DOMAIN` ([`tern_net::dnsrecords`]).
pub(crate) fn dns(
    domain: &str,
    check_live: bool,
    json: bool,
    config_path: &Path,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let settings = config.dns_settings();
    if !check_live {
        let report = tern_net::dnsrecords::records(&settings, domain)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", tern_net::dnsrecords::format_records(&report));
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(tern_net::dnsrecords::check_records(&settings, domain))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", tern_net::dnsrecords::format_check(&report));
    }
    if report.problems > 0 {
        bail!(
            "{} required record(s) missing or wrong for {}",
            report.problems,
            report.domain
        );
    }
    Ok(())
}
