//! Tern's mailbox store and user directory.
//!
//! * [`directory`]: which domains are ours and what a recipient address
//!   means — a mailbox, an alias expanding to several targets, a catch-all,
//!   a plus-address, or the postmaster. The SMTP layer asks
//!   [`Directory::resolve`] for every `RCPT TO`.
//! * [`maildir`]: the on-disk mail store, one Maildir (qmail spec: `tmp/`,
//!   `new/`, `cur/`) per mailbox under `<root>/<domain>/<local>/`, with
//!   durable, crash-safe delivery.
//! * [`mailbox`]: the mail store proper — one door for every writer and
//!   reader of a user's mailboxes: Maildir bodies, a transactional index
//!   (SQLite) of UIDs, flags and modseqs, folders, quota, change
//!   notifications. Every writer goes through [`Mailboxes`] (SMTP
//!   deliveries through [`Mailboxes::delivery_target`]); [`MailStore`] is
//!   only the Maildir layout underneath, for tools and tests.
//!
//! What this crate must never do: turn text from an SMTP client into a
//! path. Mailbox keys come from the configuration and are validated
//! ([`key::validate_mailbox_key`]) both when the directory is built and
//! again when the store opens a Maildir, so every path stays inside the
//! store's root; a client's local part is only ever *compared* against
//! configured names.
#![forbid(unsafe_code)]

pub mod directory;
pub mod domains;
pub mod key;
pub mod mailbox;
pub mod maildir;

pub use directory::{Directory, DirectoryConfig, DirectoryError, Resolution, Route, Target, Via};
pub use domains::{DomainConfig, DomainsError};
pub use mailbox::{Folder, MailboxError, Mailboxes, StoreConfig, UserStore};
pub use maildir::{MailStore, Maildir, StoreError, unique_name};
