//! The mail store: the one door through which every writer and reader of
//! a user's mailboxes goes (intake and queued delivery, quarantine to
//! Junk, IMAP APPEND/COPY/MOVE/STORE/EXPUNGE, POP3, the CLI).
//!
//! * **Bodies are Maildir files** (qmail `tmp/` → `new/`/`cur/`), folders
//!   in Dovecot's default Maildir++ layout (`.Sent`, `.Work.Reports`; see
//!   [`name`] for how names are written on disk), so Dovecot, mutt and
//!   backup tools keep working on the same tree.
//! * **Metadata is in a per-user index** ([`index::Index`]; the embedded
//!   backend is [`sqlite::SqliteIndex`], one `tern.index.sqlite` in the
//!   user's Maildir): UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, special-use and
//!   subscriptions per mailbox; UID, flags and keywords, MODSEQ,
//!   INTERNALDATE, SAVEDATE, size and email id per message; expunged UIDs
//!   with their MODSEQ; quota usage.
//!
//! [`Mailboxes`] maps a user (a validated `local@domain` key, as in
//! [`crate::maildir`]) to its [`UserStore`], shared by every session of
//! that user in the process. All calls are blocking: the async runtime
//! calls them in `spawn_blocking`.
//!
//! # Files first, index second
//!
//! Every change is made to the files first (written and fsynced; renamed;
//! unlinked; the directory fsynced) and committed to the index after
//! (SQLite, WAL, `synchronous = FULL`). The directory is the truth about
//! which messages exist; the index follows it. A crash between the two
//! leaves files the index does not know (picked up as new messages, flags
//! from their names) or index rows without a file (expunged) at the next
//! access — never an acknowledged change lost, never a UID reused. Where
//! either order is safe after a crash (append, delivery, STORE, COPY,
//! MOVE), the directory fsync runs alongside the index commit and the
//! answer waits for both; EXPUNGE commits only after its unlinks are
//! durable. A STORE or MOVE whose commit fails renames its files back.
//! Every operation holds the user's lock (a mutex in the process and an
//! exclusive `flock` on `tern.lock` across processes) from its first
//! file change to its commit.
//!
//! # Sync with the directory
//!
//! Before answering, an operation compares the mtimes of the mailbox's
//! `new/` and `cur/` with those recorded when it last read them (two
//! `stat`s). If one changed, the directory is read: files the index does
//! not know (another MDA, a restore, Tern's intake fast path) get the
//! next UIDs in a stable order (file mtime, then name); files that
//! vanished are expunged with a new MODSEQ; a file whose `:2,` flags were
//! changed by another program brings its flags into the index. Files
//! stay where they are (`new/` is not emptied by a read); a flag change
//! moves a file from `new/` to `cur/`. A directory whose mtime is less
//! than a clock tick old is read again next time (a change in the same
//! tick would not move the mtime); after its own change to `cur/` the
//! store records the new mtime at once, so a big mailbox is not re-read
//! after every STORE — the one thing this can miss until `cur/` changes
//! again is another program's change to `cur/` in the same clock tick
//! (Tern's own intake writes to `new/`, which has no such shortcut).
//!
//! # Limits
//!
//! Mailbox names: see [`name`] (200 bytes, 16 levels, no control
//! characters, no `..`). At most [`StoreConfig::max_mailboxes`] mailboxes
//! and as many subscriptions per user; at most 64 keywords of 100 bytes
//! per message; a storage quota per user ([`MailboxError::OverQuota`]).
//!
//! # The intake fast path
//!
//! Intake delivery (`tern_delivery::intake`) keeps writing `tmp/` →
//! `new/` through the spool's group committer, fsynced before the `250`,
//! without touching the index: the message gets its UID lazily, at the
//! next access of the mailbox (any reader runs the sync above), and
//! [`Mailboxes::notify_external`] after the commit wakes IDLE sessions at
//! once. Queued delivery and quarantine use [`Mailboxes::deliver_as`]
//! (idempotent under the queue's deterministic file name) or
//! [`Mailboxes::deliver`], which return the UID they assigned.
//!
//! # A lost or corrupt index
//!
//! Opening reads only the index's schema; a file that is not a database is
//! moved aside and the index rebuilt from the files at once.
//! [`UserStore::reindex`] (`tern mailbox reindex`) runs a full check and
//! rebuilds a damaged index the same way. A rebuilt index gives every
//! mailbox a new UIDVALIDITY (`tern.uidvalidity` only grows), numbers the
//! messages again in file order, and takes their flags from the file
//! names — keywords too, for the 26 per mailbox that have a letter in
//! its `dovecot-keywords` (see [`flags`]); subscriptions are set for every
//! mailbox found.
//!
//! What this module must never do: turn a client's mailbox name into a
//! path other than through [`name::MailboxName::dir`], answer before the
//! change is durable in files and index, or hand out a UID twice within a
//! UIDVALIDITY.

mod files;
pub mod flags;
pub mod index;
pub mod list;
pub mod name;
pub mod sqlite;
mod store;
pub mod watch;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

pub use flags::{FlagError, FlagOp, Flags, KeywordMap, SystemFlags};
pub use index::{Counts, Index, IndexError, MailboxId, MailboxRow, MessageRow, SpecialUse, Usage};
pub use list::MessageList;
pub use name::{MailboxName, NameError};
pub use store::{
    AppendItem, Appended, Changes, CopyResult, Delivered, ListEntry, Quota, Selected, Status,
    StoreResult, UserStore,
};
pub use watch::MailboxWatch;

use crate::key::validate_mailbox_key;

/// Default bound on the number of mailboxes of one user.
pub const DEFAULT_MAX_MAILBOXES: usize = 1000;

/// Settings of the mail store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Host name written into the names of files the store creates.
    pub hostname: String,
    /// Storage limit per user in bytes (`None`: unlimited), unless
    /// [`quota_overrides`](Self::quota_overrides) names the user.
    pub quota_bytes: Option<u64>,
    /// Per-user limits (`local@domain` → limit), overriding the default.
    pub quota_overrides: HashMap<String, Option<u64>>,
    /// Most mailboxes one user may have.
    pub max_mailboxes: usize,
    /// How many of the stores most recently opened for a client session
    /// ([`Mailboxes::open_for_session`]) stay open after their last user
    /// let go (0: none). An open store keeps its SQLite
    /// connection, the directory stamps it last read and the message
    /// lists of the mailboxes selected, so a client that reconnects finds
    /// its mailbox without reading the directory or the index's rows
    /// again; each costs about 150 bytes per message of its selected
    /// mailboxes. The server keeps a few; tools keep none.
    pub keep_open: usize,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            hostname: "localhost".to_owned(),
            quota_bytes: None,
            quota_overrides: HashMap::new(),
            max_mailboxes: DEFAULT_MAX_MAILBOXES,
            keep_open: 0,
        }
    }
}

impl StoreConfig {
    fn quota_for(&self, user: &str) -> Option<u64> {
        match self.quota_overrides.get(user) {
            Some(limit) => *limit,
            None => self.quota_bytes,
        }
    }
}

/// Errors of the mail store, grouped by whose fault.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// A filesystem operation failed (the server's problem; retry later).
    #[error("mail store: {op} {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The user key is not a valid `local@domain` key.
    #[error("mail store: invalid user {key:?}: {reason}")]
    InvalidUser {
        /// The key as given.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A mailbox name from the client is not acceptable.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A flag or keyword from the client is not acceptable.
    #[error(transparent)]
    Flags(#[from] FlagError),
    /// No mailbox of that name (or id).
    #[error("no such mailbox: {0}")]
    NoSuchMailbox(String),
    /// A mailbox of that name exists already.
    #[error("mailbox already exists: {0}")]
    Exists(String),
    /// The name has inferior mailboxes and no messages of its own.
    #[error("mailbox {0} has children and cannot be deleted")]
    HasChildren(String),
    /// INBOX cannot be deleted.
    #[error("INBOX cannot be deleted")]
    CannotDeleteInbox,
    /// A mailbox cannot be renamed below itself, nor moved onto itself.
    #[error("invalid rename or move: {0}")]
    InvalidTarget(String),
    /// The user has as many mailboxes as allowed.
    #[error("too many mailboxes (limit {0})")]
    TooManyMailboxes(usize),
    /// The message would take the user over the storage quota
    /// (IMAP `[OVERQUOTA]`, SMTP 452 4.2.2).
    #[error("over quota: {used} of {limit} bytes used, {size} more refused")]
    OverQuota {
        /// Bytes used now.
        used: u64,
        /// The limit.
        limit: u64,
        /// Bytes the refused operation needed.
        size: u64,
    },
    /// A delivery file name that is not one safe path component.
    #[error("mail store: invalid Maildir file name {0:?}")]
    InvalidFileName(String),
    /// The mailbox's UIDVALIDITY is not the one the caller's UIDs belong
    /// to (the index was rebuilt in between).
    #[error("UIDVALIDITY changed")]
    UidValidityChanged,
    /// No message with that UID.
    #[error("no message with UID {0}")]
    NoSuchMessage(u32),
}

impl MailboxError {
    /// True when the disk or filesystem quota is full (ENOSPC, EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            MailboxError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) || matches!(source.raw_os_error(), Some(28 | 122))
            }
            _ => false,
        }
    }

    /// True when the index is corrupt: call [`UserStore::reindex`].
    pub fn is_index_corrupt(&self) -> bool {
        matches!(self, MailboxError::Index(IndexError::Corrupt(_)))
    }

    /// True for [`MailboxError::OverQuota`].
    pub fn is_over_quota(&self) -> bool {
        matches!(self, MailboxError::OverQuota { .. })
    }
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folder {
    /// `INBOX`.
    Inbox,
    /// The user's `\Junk` mailbox (created as `Junk` if there is none).
    Junk,
    /// A named mailbox (created if missing), e.g. by a Sieve `fileinto`.
    Named(MailboxName),
}

/// Every user's store under one root (`<root>/<domain>/<local>/`, the
/// layout of [`crate::MailStore`]).
#[derive(Debug)]
pub struct Mailboxes {
    root: PathBuf,
    config: Arc<StoreConfig>,
    users: Mutex<HashMap<String, Weak<UserStore>>>,
    /// The most recently opened stores, newest first, at most
    /// [`StoreConfig::keep_open`]: they stay open when nobody else holds
    /// them.
    recent: Mutex<VecDeque<Arc<UserStore>>>,
}

impl Mailboxes {
    /// The store rooted at `root`.
    pub fn new(root: PathBuf, config: StoreConfig) -> Mailboxes {
        Mailboxes {
            root,
            config: Arc::new(config),
            users: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The user's Maildir directory (`INBOX`), without touching the disk.
    pub fn user_dir(&self, user: &str) -> Result<PathBuf, MailboxError> {
        let (local, domain) =
            validate_mailbox_key(user).map_err(|reason| MailboxError::InvalidUser {
                key: user.to_owned(),
                reason,
            })?;
        Ok(self.root.join(domain).join(local))
    }

    /// Opens `user`'s store (shared with every other caller in this
    /// process that has it open). At the first open the Maildir, the
    /// index and the special-use mailboxes (Drafts, Sent, Junk, Trash,
    /// Archive) are created; a lost or corrupt index is rebuilt from the
    /// files, with new UIDVALIDITYs.
    pub fn open(&self, user: &str) -> Result<Arc<UserStore>, MailboxError> {
        self.open_shared(user)
    }

    /// [`Self::open`] for a client session (IMAP): the store is also put
    /// first among the [`StoreConfig::keep_open`] stores that stay open
    /// when nobody holds them, so the client's next session finds it.
    /// (Deliveries use [`Self::open`]: a stream of mail for many users
    /// does not push the sessions' stores out.)
    pub fn open_for_session(&self, user: &str) -> Result<Arc<UserStore>, MailboxError> {
        let store = self.open_shared(user)?;
        self.keep(&store);
        Ok(store)
    }

    /// Puts `store` first among the stores kept open.
    fn keep(&self, store: &Arc<UserStore>) {
        if self.config.keep_open == 0 {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.front().is_some_and(|s| Arc::ptr_eq(s, store)) {
            return;
        }
        recent.retain(|s| !Arc::ptr_eq(s, store));
        recent.push_front(Arc::clone(store));
        let keep = self.config.keep_open.min(recent.len());
        let dropped: Vec<Arc<UserStore>> = recent.drain(keep..).collect();
        drop(recent);
        // Closed (if nobody else holds them) outside the lock.
        drop(dropped);
    }

    fn open_shared(&self, user: &str) -> Result<Arc<UserStore>, MailboxError> {
        let dir = self.user_dir(user)?;
        if let Some(store) = self.cached(user) {
            return Ok(store);
        }
        // Opened without holding the map's lock, so that a user whose
        // lock another process holds (a long reindex) delays only itself.
        let quota = self.config.quota_for(user);
        let store = Arc::new(UserStore::open(
            user.to_owned(),
            dir,
            Arc::clone(&self.config),
            quota,
        )?);
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = users.get(user).and_then(Weak::upgrade) {
            // Another thread opened it meanwhile: everyone shares theirs.
            return Ok(first);
        }
        users.retain(|_, w| w.strong_count() > 0);
        users.insert(user.to_owned(), Arc::downgrade(&store));
        Ok(store)
    }

    fn cached(&self, user: &str) -> Option<Arc<UserStore>> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(user).and_then(Weak::upgrade)
    }

    /// Delivers a message (`prefix`, then `body`) to `folder` of `user`:
    /// the file is written to `tmp/`, fsynced, renamed into `new/`, `new/`
    /// is fsynced, and the index commits its UID before this returns.
    /// Over the user's quota: [`MailboxError::OverQuota`], nothing stored.
    pub fn deliver(
        &self,
        user: &str,
        folder: &Folder,
        prefix: &[u8],
        body: &mut dyn Read,
    ) -> Result<Delivered, MailboxError> {
        self.open(user)?.deliver(folder, prefix, body)
    }

    /// [`deliver`](Self::deliver) under a deterministic file name:
    /// idempotent across retries (see [`UserStore::deliver_as`]).
    pub fn deliver_as(
        &self,
        user: &str,
        folder: &Folder,
        name: &str,
        prefix: &[u8],
        body: &mut dyn Read,
    ) -> Result<Delivered, MailboxError> {
        self.open(user)?.deliver_as(folder, name, prefix, body)
    }

    /// Tells sessions watching `user`'s mailboxes that something was
    /// written without the store (the intake fast path, after its commit
    /// resolved): they wake and sync. Cheap; does nothing if no session of
    /// the user is open.
    pub fn notify_external(&self, user: &str) {
        if let Some(store) = self.cached(user) {
            store.notify_external();
        }
    }

    /// Whether `user` has room for `size` more bytes (for checking before
    /// accepting a message on the fast path: SMTP 452 4.2.2 otherwise).
    pub fn check_quota(&self, user: &str, size: u64) -> Result<(), MailboxError> {
        self.open(user)?.check_quota(size)
    }
}
