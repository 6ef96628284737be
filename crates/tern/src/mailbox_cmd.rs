//! `tern mailbox …` and `tern quota …`: a user's IMAP mailboxes, worked on
//! through the mail store (the same door the server uses), whether the
//! server runs or not (the store's index is SQLite: its own locking keeps
//! both consistent).
//!
//! Started as root with `user` configured, the command first switches to
//! that user, so nothing in the data directory becomes root's.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use tern_store::mailbox::{Mailboxes, SpecialUse, StoreConfig};

use crate::Config;

/// What to do with a user's mailboxes.
#[derive(Debug, Subcommand)]
pub enum MailboxAction {
    /// List the user's mailboxes with their counts (creating the
    /// special-use ones at the first use, as the first login would).
    List {
        /// The user's address.
        user: String,
    },
    /// Create a mailbox (`/` separates levels).
    Create {
        /// The user's address.
        user: String,
        /// The mailbox name.
        name: String,
        /// A special-use attribute: Sent, Drafts, Trash, Junk, Archive.
        #[arg(long)]
        special_use: Option<String>,
    },
    /// Delete a mailbox and its messages.
    Delete {
        /// The user's address.
        user: String,
        /// The mailbox name.
        name: String,
    },
    /// Rebuild the user's index from the Maildir files (after a restore;
    /// UIDVALIDITY changes only if the index was lost or damaged).
    Reindex {
        /// The user's address.
        user: String,
    },
}

fn open(config: &Config) -> anyhow::Result<Mailboxes> {
    if let crate::privilege::Plan::Drop(run_as) = crate::privilege::plan(config)? {
        crate::privilege::drop_privileges(&run_as)?;
    }
    Ok(Mailboxes::new(
        config.data_dir.join("mail"),
        StoreConfig {
            hostname: config.hostname.clone(),
            quota_bytes: config.imap.quota,
            ..StoreConfig::default()
        },
    ))
}

/// Runs a `tern mailbox` command; returns what to print.
pub fn mailbox(action: MailboxAction, config_path: &Path) -> anyhow::Result<String> {
    let config = Config::load(config_path)?;
    let mailboxes = Arc::new(open(&config)?);
    let mut out = String::new();
    match action {
        MailboxAction::List { user } => {
            let store = mailboxes
                .open(&user)
                .with_context(|| format!("cannot open the mail store of {user}"))?;
            out.push_str(
                "MAILBOX                          MESSAGES   UNSEEN       BYTES  SPECIAL-USE\n",
            );
            for e in store.list()? {
                if e.id.is_none() {
                    continue;
                }
                let s = store.status(e.name.as_str())?;
                out.push_str(&format!(
                    "{:<32} {:>8} {:>8} {:>11}  {}\n",
                    e.name.as_str(),
                    s.messages,
                    s.unseen,
                    s.size,
                    e.special_use.map(SpecialUse::as_imap).unwrap_or("")
                ));
            }
        }
        MailboxAction::Create {
            user,
            name,
            special_use,
        } => {
            let store = mailboxes.open(&user)?;
            let special = match special_use {
                Some(s) => {
                    let attr = format!("\\{}", s.trim_start_matches('\\'));
                    Some(SpecialUse::from_imap(&attr).with_context(|| {
                        format!("unknown special use {s:?}: Sent, Drafts, Trash, Junk or Archive")
                    })?)
                }
                None => None,
            };
            store.create(&name, special)?;
            out.push_str(&format!("created {name} for {user}\n"));
        }
        MailboxAction::Delete { user, name } => {
            let store = mailboxes.open(&user)?;
            store.delete(&name)?;
            out.push_str(&format!("deleted {name} of {user}\n"));
        }
        MailboxAction::Reindex { user } => {
            let store = mailboxes.open(&user)?;
            let rebuilt = store.reindex()?;
            out.push_str(if rebuilt {
                "index rebuilt from the files (UIDVALIDITY changed)\n"
            } else {
                "index checked and in step with the files\n"
            });
        }
    }
    Ok(out)
}

/// Runs `tern quota USER`; returns what to print.
pub fn quota(user: &str, config_path: &Path) -> anyhow::Result<String> {
    let config = Config::load(config_path)?;
    let mailboxes = open(&config)?;
    let store = mailboxes.open(user)?;
    let q = store.quota()?;
    Ok(match q.limit {
        Some(limit) => format!(
            "{user}: {} of {} bytes used ({:.1}%), {} messages\n",
            q.used,
            limit,
            q.used as f64 * 100.0 / limit.max(1) as f64,
            q.messages
        ),
        None => format!(
            "{user}: {} bytes used, {} messages, no quota\n",
            q.used, q.messages
        ),
    })
}
