//! `tern dkim keygen` and `tern dns`: what an admin must publish in the DNS
//! for the domains of a configuration, and whether it is there.
//!
//! Key generation writes only under the configured keys directory (0700
//! directories, 0600 files, never over an existing key) and prints only
//! the public half. `tern dns --check` only reads the DNS, through the
//! configured `[dns] nameservers`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use tern::config::Config;
use tern_mailauth::KeyAlgorithm;
use tern_mailauth::records::{Status, check, records_for};

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

/// `tern dns DOMAIN [--check]`.
pub(crate) fn dns(domain: &str, check_live: bool, config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let domain = local_domain(&config, domain)?;
    let keys = tern_mailauth::keys::load_domain_keys(&config.dkim_keys_dir(), &domain)?;
    let records = records_for(&domain, &config.hostname, &keys);
    if !check_live {
        let mut out = format!(
            "; DNS records for {domain} (mail host {})\n",
            config.hostname
        );
        for r in &records {
            let kind = if r.required {
                "required"
            } else {
                "recommended"
            };
            let _ = writeln!(out, "\n; {} ({kind}): {}", r.purpose, r.note);
            let _ = writeln!(out, "{}", r.zone_line());
        }
        print!("{out}");
        return Ok(());
    }

    let resolver = Arc::new(
        tern_dns::HickoryResolver::new(tern_dns::ResolverSettings {
            nameservers: config.dns.nameservers.clone(),
            ..tern_dns::ResolverSettings::default()
        })
        .context("cannot set up the DNS resolver")?,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut problems = 0;
    for r in &records {
        let status = runtime.block_on(check(resolver.as_ref(), r));
        let (label, detail) = match &status {
            Status::Ok => ("ok", String::new()),
            Status::Missing => ("MISSING", format!("\n    publish: {}", r.zone_line())),
            Status::Different(found) => (
                "WRONG",
                format!("\n    found:   {found}\n    publish: {}", r.zone_line()),
            ),
            Status::Unknown(e) => ("UNKNOWN", format!("\n    lookup failed: {e}")),
        };
        let label = if r.required || status == Status::Ok {
            label.to_owned()
        } else {
            format!("{label} (recommended)")
        };
        if r.required && status != Status::Ok {
            problems += 1;
        }
        println!(
            "{:<8} {} {} {}{detail}",
            r.purpose.to_string(),
            r.name,
            r.rtype,
            label
        );
    }
    if problems > 0 {
        bail!("{problems} required record(s) missing or wrong for {domain}");
    }
    println!("all required records for {domain} are published");
    Ok(())
}
