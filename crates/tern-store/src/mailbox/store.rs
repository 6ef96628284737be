//! One user's mailboxes: the operations IMAP, POP3 and delivery call.
//!
//! See the parent module for the rules every operation follows (files
//! first, index second; sync with the directory before answering; one
//! lock per user). This module must never hold the user's lock while
//! waiting on anything but the disk and the index.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::files::{
    self, DirFile, Namer, Stamp, ensure_maildir, io_err, list_files, next_uidvalidity, split_rel,
    sync_dir, unix_now, write_file,
};
use super::flags::{FlagOp, Flags, KEYWORDS_FILE, KeywordMap, split_file_name};
use super::index::{
    Applied, Change, Index, IndexError, MailboxId, MailboxRow, MessageRow, NewMessage, SpecialUse,
};
use super::list::{ListBuilder, MessageList};
use super::name::MailboxName;
use super::sqlite::SqliteIndex;
use super::watch::{MailboxWatch, Watchers};
use super::{Folder, MailboxError, StoreConfig};

const INDEX_FILE: &str = "tern.index.sqlite";
const LOCK_FILE: &str = "tern.lock";
/// The POP3 maildrop lock ([`UserStore::try_lock_maildrop`]): held with an
/// exclusive `flock` for a whole session; holds the time of the last
/// login (decimal Unix seconds).
const MAILDROP_LOCK_FILE: &str = "tern.pop3.lock";
const UIDVALIDITY_FILE: &str = "tern.uidvalidity";
const TRASH_PREFIX: &str = "tern-deleted.";
/// The intent of a [`UserStore::remove_uids`] in progress: one line per
/// file, `<mailbox dir>\t<file base name>` (the mailbox dir empty for
/// INBOX). Written and fsynced before the first unlink, removed after the
/// index commit; found at open, it is completed (roll forward).
const REMOVE_JOURNAL: &str = "tern.removing";

/// What [`Mailboxes::deliver`](super::Mailboxes::deliver) assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The mailbox it went to.
    pub mailbox: MailboxName,
    /// Its UIDVALIDITY.
    pub uidvalidity: u32,
    /// The message's UID.
    pub uid: u32,
}

/// What an APPEND assigned (for `APPENDUID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The mailbox's UIDVALIDITY.
    pub uidvalidity: u32,
    /// The message's UID.
    pub uid: u32,
    /// Its email id (OBJECTID).
    pub email_id: String,
    /// The mailbox's MODSEQ after the append.
    pub modseq: u64,
}

/// One line of LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The name.
    pub name: MailboxName,
    /// The mailbox, if the name is one (false: `\Noselect` /
    /// `\NonExistent`, listed because it has children or is subscribed).
    pub id: Option<MailboxId>,
    /// Some mailbox is below it (`\HasChildren`; else `\HasNoChildren`).
    pub has_children: bool,
    /// Its special-use attribute.
    pub special_use: Option<SpecialUse>,
    /// Whether the name is subscribed.
    pub subscribed: bool,
}

/// STATUS of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The mailbox.
    pub mailbox: MailboxRow,
    /// MESSAGES.
    pub messages: u32,
    /// UNSEEN.
    pub unseen: u32,
    /// DELETED (RFC 9051).
    pub deleted: u32,
    /// SIZE (RFC 8438).
    pub size: u64,
    /// RECENT (IMAP4rev1): messages no session has selected read-write yet.
    pub recent: u32,
}

/// A mailbox selected: everything a session needs to number messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The mailbox (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ at the snapshot).
    pub mailbox: MailboxRow,
    /// Every message, by UID.
    pub messages: Vec<MessageRow>,
}

/// Changes of a mailbox since a MODSEQ (CONDSTORE/QRESYNC, and a selected
/// session's untagged updates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The mailbox now.
    pub mailbox: MailboxRow,
    /// Messages added or changed after the MODSEQ, by UID.
    pub changed: Vec<MessageRow>,
    /// UIDs expunged after the MODSEQ.
    pub vanished: Vec<u32>,
}

/// What a STORE did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreResult {
    /// The messages addressed that exist, with their flags and MODSEQ
    /// after the STORE (changed or not), by UID.
    pub messages: Vec<MessageRow>,
    /// UIDs not changed because their MODSEQ was above UNCHANGEDSINCE
    /// (`[MODIFIED …]`).
    pub failed: Vec<u32>,
    /// The mailbox's MODSEQ after the STORE.
    pub modseq: u64,
}

/// What a COPY or MOVE did (for `COPYUID`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyResult {
    /// The target's UIDVALIDITY.
    pub uidvalidity: u32,
    /// (source UID, target UID) for every message copied, by source UID.
    pub uids: Vec<(u32, u32)>,
}

/// A user's quota (RFC 9208 `STORAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bytes used.
    pub used: u64,
    /// Number of messages.
    pub messages: u64,
    /// The limit in bytes, if any.
    pub limit: Option<u64>,
}

/// A POP3 session's exclusive hold on the user's maildrop (RFC 1939
/// section 8: "the POP3 server acquires an exclusive-access lock on the
/// maildrop"), from [`UserStore::try_lock_maildrop`].
///
/// It is an exclusive `flock` on `tern.pop3.lock` in the user's Maildir,
/// so it holds across processes (two Tern processes serving one mail
/// tree) as well as within one, and it ends when the value is dropped or
/// the process dies, even by SIGKILL (the kernel releases it with the
/// file). It is not the store's own lock (`tern.lock`, held only during
/// each operation): holding it blocks no store operation, IMAP sessions
/// and deliveries go on, only another `try_lock_maildrop` fails.
///
/// The file also records the time of the last login
/// ([`Self::last_login`], [`Self::record_login`]), for RFC 2449
/// `LOGIN-DELAY`.
#[derive(Debug)]
pub struct MaildropLock {
    file: File,
    path: PathBuf,
    last_login: Option<i64>,
}

impl MaildropLock {
    /// The time of the last login recorded with [`Self::record_login`]
    /// (Unix seconds), by any process; `None` if there was none.
    pub fn last_login(&self) -> Option<i64> {
        self.last_login
    }

    /// Records `now` (Unix seconds) as the time of the last login. Not
    /// fsynced: a crash may forget it, which only shortens one login
    /// delay.
    pub fn record_login(&mut self, now: i64) -> Result<(), MailboxError> {
        use std::io::{Seek, SeekFrom, Write};
        let text = format!("{now}\n");
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(text.as_bytes()))
            .map_err(io_err("write", &self.path))?;
        self.last_login = Some(now);
        Ok(())
    }
}

/// Directory stamps of one mailbox.
#[derive(Debug, Default, Clone, Copy)]
struct Stamps {
    new: Option<Stamp>,
    cur: Option<Stamp>,
}

/// The current [`MessageList`] of a mailbox, as of a MODSEQ.
#[derive(Debug)]
struct CachedList {
    uidvalidity: u32,
    modseq: u64,
    list: MessageList,
}

#[derive(Debug)]
struct Inner {
    index: Box<dyn Index>,
    lock: File,
    stamps: HashMap<MailboxId, Stamps>,
    root_stamp: Option<Stamp>,
    /// The lists sessions share, per mailbox selected since the store was
    /// opened (see [`UserStore::select_list`]).
    lists: HashMap<MailboxId, CachedList>,
}

/// The user's lock: the in-process mutex and the `flock`.
struct Guard<'a>(MutexGuard<'a, Inner>);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = self.0.lock.unlock();
    }
}

impl Deref for Guard<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.0
    }
}

/// One user's mailboxes (see the module docs). Shared: every method
/// takes `&self` and serialises on the user's lock.
#[derive(Debug)]
pub struct UserStore {
    user: String,
    dir: PathBuf,
    config: Arc<StoreConfig>,
    quota: Option<u64>,
    namer: Namer,
    inner: Mutex<Inner>,
    watchers: Watchers,
}

fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    }
}

/// The mtime in nanoseconds: the order in which files found on disk get
/// their UIDs (then their names).
fn mtime_ns(m: &fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

impl UserStore {
    pub(super) fn open(
        user: String,
        dir: PathBuf,
        config: Arc<StoreConfig>,
        quota: Option<u64>,
    ) -> Result<UserStore, MailboxError> {
        if let Some(parent) = dir.parent() {
            fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
        }
        ensure_maildir(&dir, false)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        lock.lock().map_err(io_err("lock", &lock_path))?;
        let mut index = open_or_rebuild_index(&dir, false)?;
        let fresh = match index.mailboxes() {
            Ok(rows) => rows.is_empty(),
            Err(IndexError::Corrupt(_)) => {
                drop(index);
                index = open_or_rebuild_index(&dir, true)?;
                true
            }
            Err(e) => return Err(e.into()),
        };
        let store = UserStore {
            user,
            namer: Namer::new(&config.hostname),
            dir,
            config,
            quota,
            inner: Mutex::new(Inner {
                index: Box::new(index),
                lock,
                stamps: HashMap::new(),
                root_stamp: None,
                lists: HashMap::new(),
            }),
            watchers: Watchers::default(),
        };
        {
            // The flock is held already; wrap it so it is released.
            let mut g = Guard(store.inner.lock().unwrap_or_else(|e| e.into_inner()));
            store.remove_trash();
            store.finish_remove_journal()?;
            store.after_new_index(&mut g, fresh)?;
        }
        Ok(store)
    }

    /// Fills a new index from the directory: folders, special-use
    /// attributes, and (for a rebuilt index) a subscription to every
    /// mailbox found, since subscriptions lived only in the lost index.
    fn after_new_index(&self, g: &mut Guard<'_>, fresh: bool) -> Result<(), MailboxError> {
        self.sync_folders(g)?;
        self.ensure_defaults(g)?;
        if fresh {
            for r in g.index.mailboxes()? {
                g.index.set_subscribed(r.name.as_str(), true)?;
            }
        }
        Ok(())
    }

    /// `tern mailbox reindex`: checks the index (`PRAGMA quick_check`);
    /// if it is corrupt, rebuilds it from the files (new UIDVALIDITYs,
    /// flags from file names); then reads every mailbox's directory in
    /// full. Returns whether the index was rebuilt. Also the remedy when an
    /// operation failed with [`MailboxError::is_index_corrupt`].
    ///
    /// After a rebuild, mailbox ids and UIDVALIDITYs are new: a session
    /// must compare the UIDVALIDITY in every [`Changes`] with the one it
    /// selected, and end the selection if they differ.
    pub fn reindex(&self) -> Result<bool, MailboxError> {
        let mut g = self.lock()?;
        let rebuilt = match g.index.check() {
            Ok(()) => false,
            Err(IndexError::Corrupt(_)) => {
                // Close the broken database before moving its files aside
                // (SQLite removes its WAL by name when closing).
                g.index = Box::new(SqliteIndex::open(Path::new(":memory:"), unix_now())?);
                let index = open_or_rebuild_index(&self.dir, true)?;
                g.index = Box::new(index);
                g.stamps.clear();
                g.lists.clear();
                g.root_stamp = None;
                self.after_new_index(&mut g, true)?;
                self.watchers.notify_all();
                true
            }
            Err(e) => return Err(e.into()),
        };
        g.root_stamp = None;
        g.stamps.clear();
        self.sync_folders(&mut g)?;
        for row in g.index.mailboxes()? {
            self.sync_mailbox(&mut g, &row)?;
        }
        Ok(rebuilt)
    }

    /// The user's key.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's Maildir (`INBOX`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Guard<'_>, MailboxError> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.lock
            .lock()
            .map_err(io_err("lock", &self.dir.join(LOCK_FILE)))?;
        Ok(Guard(g))
    }

    fn mailbox_dir(&self, name: &MailboxName) -> PathBuf {
        if name.is_inbox() {
            self.dir.clone()
        } else {
            self.dir.join(name.dir())
        }
    }

    fn remove_trash(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(TRASH_PREFIX) {
                    let _ = files::remove_tree(&e.path());
                }
            }
        }
    }

    // ----- mailboxes -------------------------------------------------

    /// Reads the user's Maildir for folders made by others (and notices
    /// folders removed by others), if the directory changed.
    fn sync_folders(&self, g: &mut Guard<'_>) -> Result<(), MailboxError> {
        let now = Stamp::of(&self.dir)?;
        if Stamp::unchanged(g.root_stamp, now) {
            return Ok(());
        }
        let mut on_disk: HashSet<MailboxName> = HashSet::new();
        let entries = fs::read_dir(&self.dir).map_err(io_err("read_dir", &self.dir))?;
        for e in entries {
            let e = e.map_err(io_err("read_dir", &self.dir))?;
            let file_name = e.file_name();
            let Some(fname) = file_name.to_str() else {
                continue;
            };
            let Some(name) = MailboxName::from_dir(fname) else {
                continue;
            };
            if e.path().join("cur").is_dir() {
                on_disk.insert(name);
            }
        }
        let rows = g.index.mailboxes()?;
        let known: HashSet<&MailboxName> = rows.iter().map(|r| &r.name).collect();
        let mut added: Vec<MailboxName> = on_disk
            .iter()
            .filter(|n| !known.contains(n))
            .cloned()
            .collect();
        added.sort();
        let mut removed = Vec::new();
        let mut have_inbox = false;
        for r in &rows {
            if r.name.is_inbox() {
                have_inbox = true;
            } else if !on_disk.contains(&r.name) {
                removed.push(r.id);
            }
        }
        for id in removed {
            g.index.delete_mailbox(id)?;
            g.stamps.remove(&id);
            g.lists.remove(&id);
            self.watchers.notify(id);
        }
        if !have_inbox {
            let v = next_uidvalidity(&self.dir.join(UIDVALIDITY_FILE))?;
            g.index.create_mailbox(&MailboxName::inbox(), None, v)?;
        }
        for name in added {
            let v = next_uidvalidity(&self.dir.join(UIDVALIDITY_FILE))?;
            match g.index.create_mailbox(&name, None, v) {
                Ok(_) | Err(IndexError::Exists) => {}
                Err(e) => return Err(e.into()),
            }
        }
        g.root_stamp = Some(now);
        Ok(())
    }

    /// Gives each special-use attribute no mailbox carries to the mailbox
    /// of its default name, creating it if needed.
    fn ensure_defaults(&self, g: &mut Guard<'_>) -> Result<(), MailboxError> {
        let rows = g.index.mailboxes()?;
        for (usage, default) in SpecialUse::DEFAULTS {
            if rows.iter().any(|r| r.special_use == Some(usage)) {
                continue;
            }
            let name = MailboxName::parse(default)?;
            match rows.iter().find(|r| r.name == name) {
                Some(r) => g.index.set_special_use(r.id, Some(usage))?,
                None => {
                    self.create_locked(g, &name, Some(usage))?;
                    g.index.set_subscribed(name.as_str(), true)?;
                }
            }
        }
        Ok(())
    }

    fn find(&self, g: &mut Guard<'_>, name: &MailboxName) -> Result<MailboxRow, MailboxError> {
        self.sync_folders(g)?;
        g.index
            .mailboxes()?
            .into_iter()
            .find(|r| &r.name == name)
            .ok_or_else(|| MailboxError::NoSuchMailbox(name.to_string()))
    }

    fn by_id(&self, g: &mut Guard<'_>, id: MailboxId) -> Result<MailboxRow, MailboxError> {
        g.index
            .mailboxes()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| MailboxError::NoSuchMailbox(format!("id {}", id.0)))
    }

    /// The mailbox called `name`.
    pub fn mailbox(&self, name: &str) -> Result<MailboxRow, MailboxError> {
        let name = MailboxName::parse(name)?;
        let mut g = self.lock()?;
        self.find(&mut g, &name)
    }

    /// Every mailbox, the names implied by their hierarchy (`\Noselect`),
    /// and subscribed names that do not exist, sorted by name.
    pub fn list(&self) -> Result<Vec<ListEntry>, MailboxError> {
        let mut g = self.lock()?;
        self.sync_folders(&mut g)?;
        let rows = g.index.mailboxes()?;
        let subs: HashSet<String> = g.index.subscriptions()?.into_iter().collect();
        let mut entries: HashMap<MailboxName, ListEntry> = HashMap::new();
        for r in &rows {
            entries.insert(
                r.name.clone(),
                ListEntry {
                    name: r.name.clone(),
                    id: Some(r.id),
                    has_children: false,
                    special_use: r.special_use,
                    subscribed: subs.contains(r.name.as_str()),
                },
            );
        }
        for r in &rows {
            for p in r.name.parents() {
                let e = entries.entry(p.clone()).or_insert_with(|| ListEntry {
                    subscribed: subs.contains(p.as_str()),
                    name: p,
                    id: None,
                    has_children: false,
                    special_use: None,
                });
                e.has_children = true;
            }
        }
        for s in &subs {
            if let Ok(name) = MailboxName::parse(s) {
                entries.entry(name.clone()).or_insert(ListEntry {
                    name,
                    id: None,
                    has_children: false,
                    special_use: None,
                    subscribed: true,
                });
            }
        }
        let mut out: Vec<ListEntry> = entries.into_values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// CREATE `name` (and any missing parent), with an optional special-use
    /// attribute (RFC 6154 CREATE-SPECIAL-USE).
    pub fn create(
        &self,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxRow, MailboxError> {
        let name = MailboxName::parse(name)?;
        let mut g = self.lock()?;
        self.sync_folders(&mut g)?;
        if name.is_inbox() {
            return Err(MailboxError::Exists(name.to_string()));
        }
        let rows = g.index.mailboxes()?;
        if rows.iter().any(|r| r.name == name) {
            return Err(MailboxError::Exists(name.to_string()));
        }
        for p in name.parents() {
            if !rows.iter().any(|r| r.name == p) && !p.is_inbox() {
                self.create_locked(&mut g, &p, None)?;
            }
        }
        let row = self.create_locked(&mut g, &name, special_use)?;
        Ok(row)
    }

    fn create_locked(
        &self,
        g: &mut Guard<'_>,
        name: &MailboxName,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxRow, MailboxError> {
        let count = g.index.mailboxes()?.len();
        if count >= self.config.max_mailboxes {
            return Err(MailboxError::TooManyMailboxes(self.config.max_mailboxes));
        }
        let path = self.mailbox_dir(name);
        ensure_maildir(&path, true)?;
        sync_dir(&self.dir)?;
        let v = next_uidvalidity(&self.dir.join(UIDVALIDITY_FILE))?;
        let row = match g.index.create_mailbox(name, special_use, v) {
            Err(IndexError::Exists) => return Err(MailboxError::Exists(name.to_string())),
            other => other?,
        };
        g.root_stamp = None;
        Ok(row)
    }

    /// DELETE `name`: its messages and directory go; mailboxes below it
    /// stay (the name is then listed `\Noselect`). Its subscription stays.
    pub fn delete(&self, name: &str) -> Result<(), MailboxError> {
        let name = MailboxName::parse(name)?;
        if name.is_inbox() {
            return Err(MailboxError::CannotDeleteInbox);
        }
        let mut g = self.lock()?;
        self.sync_folders(&mut g)?;
        let rows = g.index.mailboxes()?;
        let Some(row) = rows.iter().find(|r| r.name == name) else {
            if rows.iter().any(|r| r.name.is_below(&name)) {
                return Err(MailboxError::HasChildren(name.to_string()));
            }
            return Err(MailboxError::NoSuchMailbox(name.to_string()));
        };
        let path = self.mailbox_dir(&name);
        let trash = self.dir.join(format!(
            "{TRASH_PREFIX}{}.{}",
            row.id.0,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::rename(&path, &trash).map_err(io_err("rename", &path))?;
        sync_dir(&self.dir)?;
        g.index.delete_mailbox(row.id)?;
        g.stamps.remove(&row.id);
        g.lists.remove(&row.id);
        g.root_stamp = None;
        self.watchers.notify(row.id);
        files::remove_tree(&trash)?;
        Ok(())
    }

    /// RENAME `from` to `to`, with every mailbox below `from`. Renaming
    /// INBOX moves its messages to a new mailbox `to` and leaves INBOX
    /// empty (RFC 9051 6.3.6); mailboxes below INBOX stay.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), MailboxError> {
        let from = MailboxName::parse(from)?;
        let to = MailboxName::parse(to)?;
        let mut g = self.lock()?;
        self.sync_folders(&mut g)?;
        let rows = g.index.mailboxes()?;
        if to.is_inbox() || rows.iter().any(|r| r.name == to) {
            return Err(MailboxError::Exists(to.to_string()));
        }
        if to.is_below(&from) || to == from {
            return Err(MailboxError::InvalidTarget(format!("{from} → {to}")));
        }
        if from.is_inbox() {
            for p in to.parents() {
                if !rows.iter().any(|r| r.name == p) {
                    self.create_locked(&mut g, &p, None)?;
                }
            }
            let target = self.create_locked(&mut g, &to, None)?;
            let inbox = rows
                .iter()
                .find(|r| r.name.is_inbox())
                .cloned()
                .ok_or_else(|| MailboxError::NoSuchMailbox("INBOX".into()))?;
            self.sync_mailbox(&mut g, &inbox)?;
            let uids: Vec<u32> = g.index.messages(inbox.id)?.iter().map(|m| m.uid).collect();
            self.move_locked(&mut g, &inbox, &uids, &target)?;
            return Ok(());
        }
        let subtree: Vec<&MailboxRow> = rows
            .iter()
            .filter(|r| r.name == from || r.name.is_below(&from))
            .collect();
        if subtree.is_empty() {
            return Err(MailboxError::NoSuchMailbox(from.to_string()));
        }
        let missing_parents: Vec<MailboxName> = to
            .parents()
            .into_iter()
            .filter(|p| !rows.iter().any(|r| &r.name == p) && !p.is_below(&from) && *p != from)
            .collect();
        if rows.len() + missing_parents.len() > self.config.max_mailboxes {
            return Err(MailboxError::TooManyMailboxes(self.config.max_mailboxes));
        }
        let mut renames = Vec::new();
        for r in &subtree {
            let Some(new) = r.name.rebase(&from, &to) else {
                continue;
            };
            // The new name must still be a valid, short enough name.
            let new = MailboxName::parse(new.as_str())?;
            if rows.iter().any(|x| x.name == new) {
                return Err(MailboxError::Exists(new.to_string()));
            }
            renames.push((r.id, r.name.clone(), new));
        }
        for (_, old, new) in &renames {
            let (a, b) = (self.mailbox_dir(old), self.mailbox_dir(new));
            fs::rename(&a, &b).map_err(io_err("rename", &a))?;
        }
        sync_dir(&self.dir)?;
        let pairs: Vec<(MailboxId, MailboxName)> =
            renames.iter().map(|(id, _, n)| (*id, n.clone())).collect();
        g.index.rename_mailboxes(&pairs)?;
        let subs = g.index.subscriptions()?;
        for (_, old, new) in &renames {
            if subs.iter().any(|s| s == old.as_str()) {
                g.index.set_subscribed(old.as_str(), false)?;
                g.index.set_subscribed(new.as_str(), true)?;
            }
        }
        for p in missing_parents {
            self.create_locked(&mut g, &p, None)?;
        }
        g.root_stamp = None;
        for (id, _, _) in &renames {
            g.stamps.remove(id);
            self.watchers.notify(*id);
        }
        Ok(())
    }

    /// SUBSCRIBE / UNSUBSCRIBE `name` (it need not exist; at most
    /// `max_mailboxes` names are subscribed).
    pub fn subscribe(&self, name: &str, subscribed: bool) -> Result<(), MailboxError> {
        let name = MailboxName::parse(name)?;
        let mut g = self.lock()?;
        if subscribed {
            // Subscriptions need not name a mailbox: bound them as well.
            let subs = g.index.subscriptions()?;
            if subs.len() >= self.config.max_mailboxes && !subs.iter().any(|s| s == name.as_str()) {
                return Err(MailboxError::TooManyMailboxes(self.config.max_mailboxes));
            }
        }
        g.index.set_subscribed(name.as_str(), subscribed)?;
        Ok(())
    }

    // ----- sync -------------------------------------------------------

    /// Brings the index in step with the mailbox's directory (see the
    /// module docs); returns whether anything changed.
    fn sync_mailbox(&self, g: &mut Guard<'_>, row: &MailboxRow) -> Result<bool, MailboxError> {
        let path = self.mailbox_dir(&row.name);
        let recorded = g.stamps.get(&row.id).copied().unwrap_or_default();
        let new_now = Stamp::of(&path.join("new"))?;
        let cur_now = Stamp::of(&path.join("cur"))?;
        let new_same = Stamp::unchanged(recorded.new, new_now);
        let cur_same = Stamp::unchanged(recorded.cur, cur_now);
        if new_same && cur_same {
            return Ok(false);
        }
        // Only new/ changed: only new/ needs reading (a file moved from
        // new/ to cur/ by another program changes cur/ as well).
        let full = !cur_same;
        let mut disk: Vec<DirFile> = list_files(&path, "new")?;
        if full {
            disk.extend(list_files(&path, "cur")?);
        }
        // Reading new/ only: only the rows of files in new/ matter.
        let rows = if full {
            g.index.messages(row.id)?
        } else {
            g.index.messages_in_new(row.id)?
        };
        let mut by_base: HashMap<&str, &MessageRow> = HashMap::with_capacity(rows.len());
        for m in &rows {
            let (_, fname) = split_rel(&m.file_name);
            by_base.insert(split_file_name(fname).0, m);
        }
        let map = load_keywords(&path);
        let mut seen: HashSet<u32> = HashSet::with_capacity(rows.len());
        // Borrowed from `disk`: a big mailbox's names are not copied again.
        let mut seen_bases: HashSet<&str> = HashSet::with_capacity(disk.len());
        let mut changes = Vec::new();
        // (mtime in ns, size, rel): ordered by mtime, then base name.
        let mut fresh: Vec<(i128, u64, String)> = Vec::new();
        let now = unix_now();
        // Files the index does not know: statted after the loop, together.
        let mut unknown: Vec<&DirFile> = Vec::new();
        for f in &disk {
            let (sub, fname) = split_rel(&f.rel);
            let (base, letters) = split_file_name(fname);
            if !seen_bases.insert(base) {
                // The same base twice (a copy made by another program):
                // give the second one a name of its own.
                let new_base = self.namer.next();
                let new_rel = if letters.is_empty() && !fname.contains(':') {
                    format!("{sub}/{new_base}")
                } else {
                    format!("{sub}/{new_base}:2,{letters}")
                };
                // (A new name from the namer is unique: it needs no entry.)
                if fs::rename(path.join(&f.rel), path.join(&new_rel)).is_ok()
                    && let Ok(m) = fs::metadata(path.join(&new_rel))
                {
                    fresh.push((mtime_ns(&m), m.len(), new_rel));
                }
                continue;
            }
            match by_base.get(base) {
                Some(m) => {
                    seen.insert(m.uid);
                    if m.file_name != f.rel {
                        let (_, old_fname) = split_rel(&m.file_name);
                        let old_letters = split_file_name(old_fname).1;
                        let flags = Flags::from_maildir_letters_with(letters, &m.flags, &map);
                        if flags != m.flags
                            && Flags::from_maildir_letters_with(old_letters, &m.flags, &map)
                                != flags
                        {
                            changes.push(Change::Update {
                                mailbox: row.id,
                                uid: m.uid,
                                flags,
                                file_name: f.rel.clone(),
                            });
                        } else {
                            changes.push(Change::Relocate {
                                mailbox: row.id,
                                uid: m.uid,
                                file_name: f.rel.clone(),
                            });
                        }
                    }
                }
                None => unknown.push(f),
            }
        }
        for (f, meta) in unknown.iter().zip(stat_all(&unknown)) {
            match meta {
                Ok(meta) if meta.is_file() => {
                    fresh.push((mtime_ns(&meta), meta.len(), f.rel.clone()))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("stat", &path.join(&f.rel))(e)),
            }
        }
        for m in &rows {
            let in_new = m.file_name.starts_with("new/");
            if !seen.contains(&m.uid) && (full || in_new) {
                changes.push(Change::Expunge {
                    mailbox: row.id,
                    uid: m.uid,
                });
            }
        }
        fn base_of(rel: &str) -> &str {
            split_file_name(split_rel(rel).1).0
        }
        fresh.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| base_of(&a.2).cmp(base_of(&b.2)))
                .then(a.1.cmp(&b.1))
                .then_with(|| a.2.cmp(&b.2))
        });
        for (mtime, size, rel) in fresh {
            let (_, fname) = split_rel(&rel);
            let letters = split_file_name(fname).1;
            changes.push(Change::Insert {
                mailbox: row.id,
                message: NewMessage {
                    flags: Flags::from_maildir_letters_with(letters, &Flags::default(), &map),
                    file_name: rel,
                    size,
                    internaldate: mtime.div_euclid(1_000_000_000) as i64,
                    savedate: now,
                    email_id: None,
                },
            });
        }
        let changed = !changes.is_empty();
        if changed {
            g.index.apply(&changes)?;
            self.watchers.notify(row.id);
        }
        let entry = g.stamps.entry(row.id).or_default();
        entry.new = Some(new_now);
        if full {
            entry.cur = Some(cur_now);
        }
        Ok(changed)
    }

    /// Records `cur/`'s stamp after this store changed it itself, if
    /// nothing else had changed it since it was last read.
    fn own_cur_change(g: &mut Guard<'_>, id: MailboxId, before: Option<Stamp>, path: &Path) {
        let recorded = g.stamps.get(&id).and_then(|s| s.cur);
        let after = Stamp::of_own(&path.join("cur"));
        let entry = g.stamps.entry(id).or_default();
        entry.cur = match (before, after) {
            (Some(b), Some(a)) if Stamp::unchanged(recorded, b) => Some(a),
            _ => None,
        };
    }

    fn cur_stamp(path: &Path) -> Option<Stamp> {
        Stamp::of(&path.join("cur")).ok()
    }

    /// Syncs `mailbox` with its directory if it or the index was changed
    /// by someone else; wakes its watchers if so. Cheap (two `stat`s and a
    /// pragma): an idle session may call it once a second.
    pub fn poll(&self, mailbox: MailboxId) -> Result<bool, MailboxError> {
        let mut g = self.lock()?;
        let elsewhere = g.index.changed_elsewhere()?;
        if elsewhere {
            // Another process committed: its changes may be anywhere.
            self.watchers.notify_all();
        }
        let row = self.by_id(&mut g, mailbox)?;
        Ok(self.sync_mailbox(&mut g, &row)? || elsewhere)
    }

    /// A channel that wakes when `mailbox` changes.
    pub fn watch(&self, mailbox: MailboxId) -> MailboxWatch {
        self.watchers.watch(mailbox)
    }

    pub(super) fn notify_external(&self) {
        self.watchers.notify_all();
    }

    // ----- reading ----------------------------------------------------

    /// STATUS of `name`.
    pub fn status(&self, name: &str) -> Result<Status, MailboxError> {
        let name = MailboxName::parse(name)?;
        let mut g = self.lock()?;
        let row = self.find(&mut g, &name)?;
        self.sync_mailbox(&mut g, &row)?;
        let row = self.by_id(&mut g, row.id)?;
        let c = g.index.counts(row.id)?;
        Ok(Status {
            mailbox: row,
            messages: c.messages,
            unseen: c.unseen,
            deleted: c.deleted,
            size: c.size,
            recent: c.recent,
        })
    }

    /// Takes the `\Recent` messages of `mailbox` below `upto` (its UIDNEXT
    /// as the session saw it) for the calling session: returns the first
    /// UID it now owns (`first..upto` are recent to it, and to no other
    /// session, in this process or another). Called by a session that
    /// selects the mailbox read-write and when it learns of new messages.
    pub fn claim_recent(&self, mailbox: MailboxId, upto: u32) -> Result<u32, MailboxError> {
        let mut g = self.lock()?;
        Ok(g.index.claim_recent(mailbox, upto)?)
    }

    /// SELECT / EXAMINE `name`: a snapshot of every message.
    pub fn select(&self, name: &str) -> Result<Selected, MailboxError> {
        let name = MailboxName::parse(name)?;
        let mut g = self.lock()?;
        let row = self.find(&mut g, &name)?;
        self.sync_mailbox(&mut g, &row)?;
        let mailbox = self.by_id(&mut g, row.id)?;
        let messages = g.index.messages(row.id)?;
        Ok(Selected { mailbox, messages })
    }

    /// SELECT / EXAMINE `name` for an IMAP session: the mailbox and its
    /// current [`MessageList`], shared with every other session of the
    /// user that has the mailbox selected (a clone is a reference count;
    /// see [`super::list`]). The list is kept up to date from the index's
    /// changes since the MODSEQ it was made at, so a second SELECT of an
    /// unchanged mailbox reads neither the directory (its mtimes are
    /// unchanged) nor the rows.
    pub fn select_list(&self, name: &str) -> Result<(MailboxRow, MessageList), MailboxError> {
        let name = MailboxName::parse(name)?;
        let mut g = self.lock()?;
        let row = self.find(&mut g, &name)?;
        self.sync_mailbox(&mut g, &row)?;
        let mailbox = self.by_id(&mut g, row.id)?;
        let list = Self::current_list(&mut g, &mailbox)?;
        Ok((mailbox, list))
    }

    /// What changed in `mailbox` after `modseq` (after syncing with the
    /// directory).
    pub fn changes_since(&self, mailbox: MailboxId, modseq: u64) -> Result<Changes, MailboxError> {
        let mut g = self.lock()?;
        self.changes_locked(&mut g, mailbox, modseq)
    }

    /// [`Self::changes_since`], and the mailbox's current [`MessageList`]
    /// at the same moment (what a session's list becomes once it has told
    /// its client about the changes).
    pub fn changes_and_list(
        &self,
        mailbox: MailboxId,
        modseq: u64,
    ) -> Result<(Changes, MessageList), MailboxError> {
        let mut g = self.lock()?;
        let changes = self.changes_locked(&mut g, mailbox, modseq)?;
        let list = Self::current_list(&mut g, &changes.mailbox)?;
        Ok((changes, list))
    }

    fn changes_locked(
        &self,
        g: &mut Guard<'_>,
        mailbox: MailboxId,
        modseq: u64,
    ) -> Result<Changes, MailboxError> {
        let row = self.by_id(g, mailbox)?;
        let row = if self.sync_mailbox(g, &row)? {
            self.by_id(g, mailbox)?
        } else {
            row
        };
        let (changed, vanished) = if modseq >= row.highestmodseq {
            (Vec::new(), Vec::new())
        } else {
            g.index.changes_since(mailbox, modseq)?
        };
        Ok(Changes {
            mailbox: row,
            changed,
            vanished,
        })
    }

    /// The list of `row` as of its HIGHESTMODSEQ: the cached one if the
    /// mailbox has not changed since it was made, else that one brought up
    /// to date with the index's changes since (only the chunks they touch
    /// are copied), else (first use, or another UIDVALIDITY) every row.
    /// Every change to a mailbox raises its HIGHESTMODSEQ, and no other
    /// process changes the index while we hold the user's lock, so the
    /// list and `row` agree.
    fn current_list(g: &mut Guard<'_>, row: &MailboxRow) -> Result<MessageList, MailboxError> {
        let cached = g
            .lists
            .get(&row.id)
            .filter(|c| c.uidvalidity == row.uidvalidity && c.modseq <= row.highestmodseq)
            .map(|c| (c.modseq, c.list.clone()));
        let list = match cached {
            Some((modseq, list)) if modseq == row.highestmodseq => return Ok(list),
            Some((modseq, mut list)) => {
                let (changed, vanished) = g.index.changes_since(row.id, modseq)?;
                list.apply(changed, &vanished);
                list
            }
            None => {
                let mut b = ListBuilder::default();
                g.index.each_message(row.id, &mut |m| b.push(m))?;
                b.finish()
            }
        };
        g.lists.insert(
            row.id,
            CachedList {
                uidvalidity: row.uidvalidity,
                modseq: row.highestmodseq,
                list: list.clone(),
            },
        );
        Ok(list)
    }

    /// Opens the body of message `uid` of `mailbox` for reading.
    pub fn open_message(&self, mailbox: MailboxId, uid: u32) -> Result<File, MailboxError> {
        let mut g = self.lock()?;
        let row = self.by_id(&mut g, mailbox)?;
        for attempt in 0..2 {
            let m = g
                .index
                .messages_by_uid(mailbox, &[uid])?
                .pop()
                .ok_or(MailboxError::NoSuchMessage(uid))?;
            let path = self.mailbox_dir(&row.name).join(&m.file_name);
            match File::open(&path) {
                Ok(f) => return Ok(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {
                    // Renamed or removed by another program: sync, retry.
                    g.stamps.remove(&mailbox);
                    self.sync_mailbox(&mut g, &row)?;
                }
                Err(e) => return Err(io_err("open", &path)(e)),
            }
        }
        Err(MailboxError::NoSuchMessage(uid))
    }

    /// Opens the body of `message` of `mailbox`, both from an earlier
    /// [`Self::select`] snapshot, without taking the user's lock or asking
    /// the index (bodies never change; POP3 reads every message of its
    /// snapshot this way). If the file was renamed or removed since (a flag
    /// change, an expunge), falls back to [`Self::open_message`].
    pub fn open_snapshot_message(
        &self,
        mailbox: &MailboxRow,
        message: &MessageRow,
    ) -> Result<File, MailboxError> {
        match File::open(self.mailbox_dir(&mailbox.name).join(&message.file_name)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.open_message(mailbox.id, message.uid)
            }
            Err(e) => Err(io_err(
                "open",
                &self.mailbox_dir(&mailbox.name).join(&message.file_name),
            )(e)),
        }
    }

    /// Takes the POP3 maildrop lock (see [`MaildropLock`]) without
    /// waiting: `Ok(None)` if another session, in this process or
    /// another, holds it.
    pub fn try_lock_maildrop(&self) -> Result<Option<MaildropLock>, MailboxError> {
        let path = self.dir.join(MAILDROP_LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(files::FILE_MODE)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        let mut text = Vec::new();
        // Bounded: the file holds one number (anything else is ignored).
        (&mut file)
            .take(32)
            .read_to_end(&mut text)
            .map_err(io_err("read", &path))?;
        let last_login = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        Ok(Some(MaildropLock {
            file,
            last_login,
            path,
        }))
    }

    /// The user's storage use and limit.
    pub fn quota(&self) -> Result<Quota, MailboxError> {
        let mut g = self.lock()?;
        let u = g.index.usage()?;
        Ok(Quota {
            used: u.bytes,
            messages: u.messages,
            limit: self.quota,
        })
    }

    /// `Ok` if `size` more bytes fit in the quota.
    pub fn check_quota(&self, size: u64) -> Result<(), MailboxError> {
        let mut g = self.lock()?;
        self.check_quota_locked(&mut g, size)
    }

    fn check_quota_locked(&self, g: &mut Guard<'_>, size: u64) -> Result<(), MailboxError> {
        if let Some(limit) = self.quota {
            let used = g.index.usage()?.bytes;
            if used.saturating_add(size) > limit {
                return Err(MailboxError::OverQuota { used, limit, size });
            }
        }
        Ok(())
    }

    // ----- writing ----------------------------------------------------

    /// Writes a message into `tmp/`, fsyncs it, checks the quota and
    /// renames it to `<sub>/<final name>`. Returns the
    /// relative file name and size. `name` is the caller's file name (a
    /// deterministic delivery name), else a new unique one.
    #[allow(clippy::too_many_arguments)]
    fn write_message(
        &self,
        g: &mut Guard<'_>,
        path: &Path,
        sub: &str,
        name: Option<&str>,
        flags: &Flags,
        prefix: &[u8],
        body: &mut dyn Read,
        internaldate: Option<i64>,
    ) -> Result<(String, u64), MailboxError> {
        let (tmp, size) = self.write_tmp(path, name, prefix, body, internaldate, true)?;
        if let Err(e) = self.check_quota_locked(g, size) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let map = if sub == "cur" {
            match keywords_for(path, std::iter::once(flags)) {
                Ok(m) => m,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        } else {
            KeywordMap::default()
        };
        let rel = final_rel(&tmp, sub, name.is_some(), size, flags, &map);
        let target = path.join(&rel);
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename", &tmp)(e));
        }
        // The directory is fsynced by `insert_written`, alongside the
        // index commit.
        Ok((rel, size))
    }

    /// Writes and fsyncs `tmp/<name>`; returns its path and size.
    fn write_tmp(
        &self,
        path: &Path,
        name: Option<&str>,
        prefix: &[u8],
        body: &mut dyn Read,
        internaldate: Option<i64>,
        sync: bool,
    ) -> Result<(PathBuf, u64), MailboxError> {
        let base = match name {
            Some(n) => n.to_owned(),
            None => self.namer.next(),
        };
        let tmp = path.join("tmp").join(&base);
        if name.is_some() {
            // A stale copy from an interrupted attempt is replaced.
            let _ = fs::remove_file(&tmp);
        }
        let size = write_file(&tmp, prefix, body, internaldate.map(system_time), sync)?;
        Ok((tmp, size))
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_written(
        &self,
        g: &mut Guard<'_>,
        row: &MailboxRow,
        path: &Path,
        rel: String,
        size: u64,
        flags: Flags,
        internaldate: i64,
    ) -> Result<(u32, String, u64), MailboxError> {
        let target = path.join(&rel);
        let dir = target.parent().unwrap_or(path).to_path_buf();
        let change = Change::Insert {
            mailbox: row.id,
            message: NewMessage {
                file_name: rel,
                flags,
                size,
                internaldate,
                savedate: unix_now(),
                email_id: None,
            },
        };
        let result = commit_synced(&mut g.index, &[dir], std::slice::from_ref(&change));
        if result.is_err() {
            // Not acknowledged: take the file back so that it does not
            // turn up later as a message nobody was told about (a row the
            // index did commit is then expunged by the next sync).
            let _ = fs::remove_file(&target);
        }
        match result {
            Ok(applied) => {
                let modseq = applied.modseq(row.id).unwrap_or(row.highestmodseq);
                let (uid, email_id) = applied.inserted.into_iter().next().unwrap_or_default();
                self.watchers.notify(row.id);
                Ok((uid, email_id, modseq))
            }
            Err(e) => Err(e),
        }
    }

    /// APPEND a message to `mailbox` with `flags` and an INTERNALDATE
    /// (Unix seconds; `None`: now). Returns once the file is fsynced in
    /// `cur/` and the index committed.
    pub fn append(
        &self,
        mailbox: MailboxId,
        body: &mut dyn Read,
        flags: &Flags,
        internaldate: Option<i64>,
    ) -> Result<Appended, MailboxError> {
        let mut g = self.lock()?;
        let row = self.by_id(&mut g, mailbox)?;
        let path = self.mailbox_dir(&row.name);
        let before = Self::cur_stamp(&path);
        let (rel, size) =
            self.write_message(&mut g, &path, "cur", None, flags, b"", body, internaldate)?;
        let date = internaldate.unwrap_or_else(unix_now);
        let (uid, email_id, modseq) =
            self.insert_written(&mut g, &row, &path, rel, size, flags.clone(), date)?;
        Self::own_cur_change(&mut g, row.id, before, &path);
        Ok(Appended {
            uidvalidity: row.uidvalidity,
            uid,
            email_id,
            modseq,
        })
    }

    /// MULTIAPPEND (RFC 3502): appends every message or none. The files
    /// are written and fsynced, renamed into `cur/` with one directory
    /// fsync, and committed in one index transaction.
    pub fn append_batch(
        &self,
        mailbox: MailboxId,
        items: &mut [AppendItem<'_>],
    ) -> Result<Vec<Appended>, MailboxError> {
        self.append_batch_inner(mailbox, items, false)
            .map(|(appended, _)| appended)
    }

    /// [`append_batch`](Self::append_batch) by a session that has
    /// `mailbox` selected read-write: the new messages' `\Recent` is
    /// claimed for it (as [`claim_recent`](Self::claim_recent) up to the
    /// new UIDNEXT) before any other session is woken, so the appender,
    /// not a session that happens to wake first, owns them (RFC 3501
    /// §2.3.2; Dovecot behaves so). Returns the first UID claimed too.
    pub fn append_batch_claiming(
        &self,
        mailbox: MailboxId,
        items: &mut [AppendItem<'_>],
    ) -> Result<(Vec<Appended>, u32), MailboxError> {
        self.append_batch_inner(mailbox, items, true)
    }

    fn append_batch_inner(
        &self,
        mailbox: MailboxId,
        items: &mut [AppendItem<'_>],
        claim: bool,
    ) -> Result<(Vec<Appended>, u32), MailboxError> {
        let mut g = self.lock()?;
        let row = self.by_id(&mut g, mailbox)?;
        let path = self.mailbox_dir(&row.name);
        let before = Self::cur_stamp(&path);
        let mut written: Vec<(PathBuf, u64)> = Vec::with_capacity(items.len());
        let cleanup = |written: &[(PathBuf, u64)]| {
            for (p, _) in written {
                let _ = fs::remove_file(p);
            }
        };
        for item in items.iter_mut() {
            match self.write_tmp(&path, None, b"", item.body, item.internaldate, false) {
                Ok(w) => written.push(w),
                Err(e) => {
                    cleanup(&written);
                    return Err(e);
                }
            }
        }
        let total: u64 = written.iter().map(|(_, s)| s).sum();
        if let Err(e) = self.check_quota_locked(&mut g, total) {
            cleanup(&written);
            return Err(e);
        }
        let map = match keywords_for(&path, items.iter().map(|i| &i.flags)) {
            Ok(m) => m,
            Err(e) => {
                cleanup(&written);
                return Err(e);
            }
        };
        // Every file's data is durable before any of them is renamed.
        let paths: Vec<&Path> = written.iter().map(|(p, _)| p.as_path()).collect();
        if let Err(e) = files::sync_files(&paths) {
            cleanup(&written);
            return Err(e);
        }
        let now = unix_now();
        let mut changes = Vec::with_capacity(items.len());
        let mut moved: Vec<(PathBuf, u64)> = Vec::with_capacity(items.len());
        for (i, (tmp, size)) in written.iter().enumerate() {
            let rel = final_rel(tmp, "cur", false, *size, &items[i].flags, &map);
            let target = path.join(&rel);
            if let Err(e) = fs::rename(tmp, &target) {
                cleanup(&written[i..]);
                cleanup(&moved);
                return Err(io_err("rename", tmp)(e));
            }
            moved.push((target, *size));
            changes.push(Change::Insert {
                mailbox,
                message: NewMessage {
                    file_name: rel,
                    flags: items[i].flags.clone(),
                    size: *size,
                    internaldate: items[i].internaldate.unwrap_or(now),
                    savedate: now,
                    email_id: None,
                },
            });
        }
        if changes.is_empty() {
            return Ok((Vec::new(), row.uidnext));
        }
        let applied = match commit_synced(&mut g.index, &[path.join("cur")], &changes) {
            Ok(a) => a,
            Err(e) => {
                cleanup(&moved);
                return Err(e);
            }
        };
        let upto = applied.inserted.iter().map(|(uid, _)| uid + 1).max();
        let first = match upto {
            // The messages are committed: a failed claim leaves them to
            // whichever session claims next (the appender's own sync tries
            // again).
            Some(upto) if claim => g.index.claim_recent(mailbox, upto).unwrap_or(upto),
            _ => upto.unwrap_or(row.uidnext),
        };
        self.watchers.notify(mailbox);
        Self::own_cur_change(&mut g, mailbox, before, &path);
        let modseq = applied.modseq(mailbox).unwrap_or(row.highestmodseq);
        let appended = applied
            .inserted
            .into_iter()
            .map(|(uid, email_id)| Appended {
                uidvalidity: row.uidvalidity,
                uid,
                email_id,
                modseq,
            })
            .collect();
        Ok((appended, first))
    }

    /// Delivers `prefix` + `body` into `new/` of `folder` (see
    /// [`Mailboxes::deliver`](super::Mailboxes::deliver)).
    pub fn deliver(
        &self,
        folder: &Folder,
        prefix: &[u8],
        body: &mut dyn Read,
    ) -> Result<Delivered, MailboxError> {
        self.deliver_inner(folder, None, prefix, body)
    }

    /// [`deliver`](Self::deliver) under the caller's file name `name` (a
    /// name that is the same on every attempt, such as
    /// [`unique_name`](crate::unique_name) of queue id and recipient), so
    /// that a retry after a crash finds the copy an interrupted attempt
    /// left and returns its UID instead of delivering twice.
    pub fn deliver_as(
        &self,
        folder: &Folder,
        name: &str,
        prefix: &[u8],
        body: &mut dyn Read,
    ) -> Result<Delivered, MailboxError> {
        check_file_name(name)?;
        self.deliver_inner(folder, Some(name), prefix, body)
    }

    /// The mailbox row `folder` names, created if missing.
    fn delivery_row(&self, g: &mut Guard<'_>, folder: &Folder) -> Result<MailboxRow, MailboxError> {
        let rows = g.index.mailboxes()?;
        match folder {
            Folder::Inbox => rows.into_iter().find(|r| r.name.is_inbox()),
            Folder::Junk => {
                let junk = rows
                    .iter()
                    .find(|r| r.special_use == Some(SpecialUse::Junk))
                    .cloned();
                match junk {
                    Some(r) => Some(r),
                    None => {
                        let name = MailboxName::parse("Junk")?;
                        match rows.into_iter().find(|r| r.name == name) {
                            Some(r) => Some(r),
                            None => Some(self.create_locked(g, &name, Some(SpecialUse::Junk))?),
                        }
                    }
                }
            }
            Folder::Named(name) => match rows.into_iter().find(|r| &r.name == name) {
                Some(r) => Some(r),
                None => {
                    let rows = g.index.mailboxes()?;
                    for p in name.parents() {
                        if !rows.iter().any(|r| r.name == p) && !p.is_inbox() {
                            self.create_locked(g, &p, None)?;
                        }
                    }
                    Some(self.create_locked(g, name, None)?)
                }
            },
        }
        .ok_or_else(|| MailboxError::NoSuchMailbox("INBOX".into()))
    }

    /// For a delivery the caller writes itself (see
    /// [`Mailboxes::delivery_target`](super::Mailboxes::delivery_target)):
    /// resolves and creates `folder`, checks that `size` more bytes fit
    /// the quota after bringing the folder's index up to date (earlier
    /// deliveries the index has not seen count too), and returns the
    /// folder's directory.
    pub(super) fn prepare_delivery(
        &self,
        folder: &Folder,
        size: u64,
    ) -> Result<PathBuf, MailboxError> {
        let mut g = self.lock()?;
        self.sync_folders(&mut g)?;
        let row = self.delivery_row(&mut g, folder)?;
        if let Some(limit) = self.quota {
            self.sync_mailbox(&mut g, &row)?;
            let used = g.index.usage()?.bytes;
            // `size` 0 asks "is there any room left?".
            if used.saturating_add(size) > limit || (size == 0 && used >= limit) {
                return Err(MailboxError::OverQuota { used, limit, size });
            }
        }
        Ok(self.mailbox_dir(&row.name))
    }

    fn deliver_inner(
        &self,
        folder: &Folder,
        name: Option<&str>,
        prefix: &[u8],
        body: &mut dyn Read,
    ) -> Result<Delivered, MailboxError> {
        let mut g = self.lock()?;
        self.sync_folders(&mut g)?;
        let row = self.delivery_row(&mut g, folder)?;
        let path = self.mailbox_dir(&row.name);
        if let Some(name) = name {
            self.sync_mailbox(&mut g, &row)?;
            if let Some(m) = g.index.find_by_base(row.id, name)? {
                return Ok(Delivered {
                    mailbox: row.name,
                    uidvalidity: row.uidvalidity,
                    uid: m.uid,
                });
            }
        }
        let (rel, size) = self.write_message(
            &mut g,
            &path,
            "new",
            name,
            &Flags::default(),
            prefix,
            body,
            None,
        )?;
        let (uid, _, _) =
            self.insert_written(&mut g, &row, &path, rel, size, Flags::default(), unix_now())?;
        Ok(Delivered {
            mailbox: row.name,
            uidvalidity: row.uidvalidity,
            uid,
        })
    }

    /// STORE: change the flags of the messages `uids` of `mailbox`. With
    /// `unchanged_since` (CONDSTORE), messages whose MODSEQ is greater are
    /// left alone and listed in [`StoreResult::failed`]. File names follow
    /// (`cur/base:2,letters`); returns after the renames are durable and
    /// the index committed.
    pub fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: &[u32],
        op: FlagOp,
        flags: &Flags,
        unchanged_since: Option<u64>,
    ) -> Result<StoreResult, MailboxError> {
        let mut g = self.lock()?;
        let row = self.by_id(&mut g, mailbox)?;
        self.sync_mailbox(&mut g, &row)?;
        let path = self.mailbox_dir(&row.name);
        let before = Self::cur_stamp(&path);
        let rows = g.index.messages_by_uid(mailbox, uids)?;
        let map = keywords_for(&path, std::iter::once(flags))?;
        let mut result = StoreResult::default();
        let mut changes = Vec::new();
        let mut changed_uids = Vec::new();
        let mut touched_new = false;
        let mut renamed = false;
        // (renamed to, renamed from): undone if the STORE fails.
        let mut undo: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            if unchanged_since.is_some_and(|s| m.modseq > s) {
                result.failed.push(m.uid);
                continue;
            }
            let new_flags = m.flags.apply(op, flags)?;
            if new_flags == m.flags {
                out.push(m);
                continue;
            }
            let (sub, fname) = split_rel(&m.file_name);
            let (base, letters) = split_file_name(fname);
            let new_letters = new_flags.maildir_letters_with(letters, &map);
            let new_rel = format!("cur/{base}:2,{new_letters}");
            if new_rel != m.file_name {
                match fs::rename(path.join(&m.file_name), path.join(&new_rel)) {
                    Ok(()) => {
                        renamed = true;
                        touched_new |= sub == "new";
                        undo.push((path.join(&new_rel), path.join(&m.file_name)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Renamed or removed by another program meanwhile:
                        // the next sync sorts it out; leave it unchanged.
                        g.stamps.remove(&mailbox);
                        continue;
                    }
                    Err(e) => {
                        undo_renames(&undo);
                        return Err(io_err("rename", &path.join(&m.file_name))(e));
                    }
                }
            }
            changes.push(Change::Update {
                mailbox,
                uid: m.uid,
                flags: new_flags.clone(),
                file_name: new_rel.clone(),
            });
            changed_uids.push(out.len());
            out.push(MessageRow {
                flags: new_flags,
                file_name: new_rel,
                ..m
            });
        }
        let mut dirs = Vec::new();
        if renamed {
            dirs.push(path.join("cur"));
            if touched_new {
                dirs.push(path.join("new"));
            }
        }
        result.modseq = row.highestmodseq;
        if !changes.is_empty() {
            let applied = match commit_synced(&mut g.index, &dirs, &changes) {
                Ok(a) => a,
                Err(e) => {
                    undo_renames(&undo);
                    return Err(e);
                }
            };
            let modseq = applied.modseq(mailbox).unwrap_or(row.highestmodseq);
            for i in changed_uids {
                out[i].modseq = modseq;
            }
            result.modseq = modseq;
            self.watchers.notify(mailbox);
        }
        if renamed {
            Self::own_cur_change(&mut g, mailbox, before, &path);
        }
        result.messages = out;
        Ok(result)
    }

    /// EXPUNGE: removes the messages of `mailbox` flagged `\Deleted` (only
    /// those among `uids`, for UID EXPUNGE). Returns the UIDs expunged,
    /// after the unlinks are durable and the index committed.
    pub fn expunge(
        &self,
        mailbox: MailboxId,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, MailboxError> {
        let mut g = self.lock()?;
        let row = self.by_id(&mut g, mailbox)?;
        self.sync_mailbox(&mut g, &row)?;
        let rows = match uids {
            Some(u) => g.index.messages_by_uid(mailbox, u)?,
            None => g.index.messages(mailbox)?,
        };
        let doomed: Vec<MessageRow> = rows
            .into_iter()
            .filter(|m| m.flags.system.contains(super::SystemFlags::DELETED))
            .collect();
        self.remove_messages(&mut g, &row, &doomed)
    }

    /// POP3 UPDATE: removes exactly the messages `uids` of `mailbox`,
    /// whatever their flags, in one operation under the user's lock, if
    /// the mailbox's UIDVALIDITY is still `uidvalidity` (a rebuilt index
    /// gives old UIDs to other messages: then nothing is removed and
    /// [`MailboxError::UidValidityChanged`] is returned). UIDs no longer
    /// present (expunged by another session) are skipped. Returns the UIDs
    /// removed, after the unlinks are durable and the index committed.
    pub fn remove_uids(
        &self,
        mailbox: MailboxId,
        uidvalidity: u32,
        uids: &[u32],
    ) -> Result<Vec<u32>, MailboxError> {
        let mut g = self.lock()?;
        self.finish_remove_journal()?;
        let row = self.by_id(&mut g, mailbox)?;
        if row.uidvalidity != uidvalidity {
            return Err(MailboxError::UidValidityChanged);
        }
        self.sync_mailbox(&mut g, &row)?;
        let doomed = g.index.messages_by_uid(mailbox, uids)?;
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        // All or nothing across a crash: the intent is durable before the
        // first unlink, and completed at the next open if we die midway.
        let dir = row.name.dir();
        let mut journal = String::new();
        for m in &doomed {
            let (_, name) = split_rel(&m.file_name);
            let (base, _) = split_file_name(name);
            journal.push_str(&dir);
            journal.push('\t');
            journal.push_str(base);
            journal.push('\n');
        }
        let path = self.dir.join(REMOVE_JOURNAL);
        let tmp = self.dir.join(format!("{REMOVE_JOURNAL}.tmp"));
        let _ = fs::remove_file(&tmp);
        write_file(&tmp, journal.as_bytes(), &mut io::empty(), None, true)?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        sync_dir(&self.dir)?;
        let removed = self.remove_messages(&mut g, &row, &doomed)?;
        fs::remove_file(&path).map_err(io_err("unlink", &path))?;
        Ok(removed)
    }

    /// Completes a [`Self::remove_uids`] interrupted by a crash: unlinks
    /// every file its journal names (in `new/` or `cur/`, whatever flags
    /// its name carries now), then removes the journal. The index learns
    /// of the vanished files at the next sync of their mailbox.
    fn finish_remove_journal(&self) -> Result<(), MailboxError> {
        let path = self.dir.join(REMOVE_JOURNAL);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut by_dir: HashMap<&str, HashSet<&str>> = HashMap::new();
        for line in text.lines() {
            let Some((dir, base)) = line.split_once('\t') else {
                continue;
            };
            // Only names this store writes: one component, no dot-dot.
            let safe = |s: &str| !s.contains('/') && !s.contains('\0') && s != "..";
            if !safe(dir) || !safe(base) || base.is_empty() || base.starts_with('.') {
                continue;
            }
            if !dir.is_empty() && !dir.starts_with('.') {
                continue;
            }
            by_dir.entry(dir).or_default().insert(base);
        }
        for (dir, bases) in by_dir {
            let mailbox_dir = if dir.is_empty() {
                self.dir.clone()
            } else {
                self.dir.join(dir)
            };
            for sub in ["new", "cur"] {
                let mut removed = false;
                for f in list_files(&mailbox_dir, sub)? {
                    let (_, name) = split_rel(&f.rel);
                    if bases.contains(split_file_name(name).0) {
                        let p = mailbox_dir.join(&f.rel);
                        match fs::remove_file(&p) {
                            Ok(()) => removed = true,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io_err("unlink", &p)(e)),
                        }
                    }
                }
                if removed {
                    sync_dir(&mailbox_dir.join(sub))?;
                }
            }
        }
        fs::remove_file(&path).map_err(io_err("unlink", &path))?;
        sync_dir(&self.dir)
    }

    fn remove_messages(
        &self,
        g: &mut Guard<'_>,
        row: &MailboxRow,
        doomed: &[MessageRow],
    ) -> Result<Vec<u32>, MailboxError> {
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.mailbox_dir(&row.name);
        let before = Self::cur_stamp(&path);
        let mut dirs = HashSet::new();
        for m in doomed {
            let p = path.join(&m.file_name);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("unlink", &p)(e)),
            }
            dirs.insert(split_rel(&m.file_name).0.to_owned());
        }
        for d in &dirs {
            sync_dir(&path.join(d))?;
        }
        let changes: Vec<Change> = doomed
            .iter()
            .map(|m| Change::Expunge {
                mailbox: row.id,
                uid: m.uid,
            })
            .collect();
        g.index.apply(&changes)?;
        self.watchers.notify(row.id);
        Self::own_cur_change(g, row.id, before, &path);
        Ok(doomed.iter().map(|m| m.uid).collect())
    }

    /// COPY the messages `uids` of `from` to `to` (hard links when the
    /// filesystem allows, else copies). Flags, keywords, INTERNALDATE and
    /// email ids are kept.
    pub fn copy(
        &self,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<CopyResult, MailboxError> {
        let mut g = self.lock()?;
        let src = self.by_id(&mut g, from)?;
        let dst = self.by_id(&mut g, to)?;
        self.sync_mailbox(&mut g, &src)?;
        let rows = g.index.messages_by_uid(from, uids)?;
        let total: u64 = rows.iter().map(|m| m.size).sum();
        self.check_quota_locked(&mut g, total)?;
        let src_path = self.mailbox_dir(&src.name);
        let dst_path = self.mailbox_dir(&dst.name);
        let before = Self::cur_stamp(&dst_path);
        let map = keywords_for(&dst_path, rows.iter().map(|m| &m.flags))?;
        let mut created = Vec::new();
        let mut changes = Vec::new();
        let now = unix_now();
        for m in &rows {
            let base = format!("{},S={}", self.namer.next(), m.size);
            let rel = format!("cur/{base}:2,{}", m.flags.maildir_letters_with("", &map));
            let target = dst_path.join(&rel);
            let source = src_path.join(&m.file_name);
            if let Err(e) = link_or_copy(&source, &dst_path, &target) {
                for p in &created {
                    let _ = fs::remove_file(p);
                }
                return Err(e);
            }
            created.push(target);
            changes.push(Change::Insert {
                mailbox: to,
                message: NewMessage {
                    file_name: rel,
                    flags: m.flags.clone(),
                    size: m.size,
                    internaldate: m.internaldate,
                    savedate: now,
                    email_id: Some(m.email_id.clone()),
                },
            });
        }
        if created.is_empty() {
            return Ok(CopyResult {
                uidvalidity: dst.uidvalidity,
                uids: Vec::new(),
            });
        }
        let applied = match commit_synced(&mut g.index, &[dst_path.join("cur")], &changes) {
            Ok(a) => a,
            Err(e) => {
                for p in &created {
                    let _ = fs::remove_file(p);
                }
                return Err(e);
            }
        };
        self.watchers.notify(to);
        Self::own_cur_change(&mut g, to, before, &dst_path);
        Ok(CopyResult {
            uidvalidity: dst.uidvalidity,
            uids: rows
                .iter()
                .zip(applied.inserted)
                .map(|(m, (uid, _))| (m.uid, uid))
                .collect(),
        })
    }

    /// MOVE the messages `uids` of `from` to `to` (RFC 6851): renamed into
    /// the target's `cur/`, then added to `to` and expunged from `from` in
    /// one index transaction. Email ids are kept.
    pub fn move_messages(
        &self,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<CopyResult, MailboxError> {
        if from == to {
            return Err(MailboxError::InvalidTarget(
                "moving a mailbox's messages to itself".into(),
            ));
        }
        let mut g = self.lock()?;
        let src = self.by_id(&mut g, from)?;
        let dst = self.by_id(&mut g, to)?;
        self.sync_mailbox(&mut g, &src)?;
        let rows = g.index.messages_by_uid(from, uids)?;
        self.move_locked(
            &mut g,
            &src,
            &rows.iter().map(|m| m.uid).collect::<Vec<_>>(),
            &dst,
        )
    }

    fn move_locked(
        &self,
        g: &mut Guard<'_>,
        src: &MailboxRow,
        uids: &[u32],
        dst: &MailboxRow,
    ) -> Result<CopyResult, MailboxError> {
        let rows = g.index.messages_by_uid(src.id, uids)?;
        let src_path = self.mailbox_dir(&src.name);
        let dst_path = self.mailbox_dir(&dst.name);
        let src_before = Self::cur_stamp(&src_path);
        let dst_before = Self::cur_stamp(&dst_path);
        let map = keywords_for(&dst_path, rows.iter().map(|m| &m.flags))?;
        let mut moved: Vec<&MessageRow> = Vec::new();
        let mut changes = Vec::new();
        let mut src_dirs = HashSet::new();
        let mut undo: Vec<(PathBuf, PathBuf)> = Vec::new();
        let now = unix_now();
        for m in &rows {
            let (sub, fname) = split_rel(&m.file_name);
            let (base, _) = split_file_name(fname);
            // Keyword letters are per mailbox: written again for the target.
            let rel = format!("cur/{base}:2,{}", m.flags.maildir_letters_with("", &map));
            match fs::rename(src_path.join(&m.file_name), dst_path.join(&rel)) {
                Ok(()) => undo.push((dst_path.join(&rel), src_path.join(&m.file_name))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    g.stamps.remove(&src.id);
                    continue;
                }
                Err(e) => {
                    undo_renames(&undo);
                    return Err(io_err("rename", &src_path.join(&m.file_name))(e));
                }
            }
            src_dirs.insert(sub.to_owned());
            changes.push(Change::Insert {
                mailbox: dst.id,
                message: NewMessage {
                    file_name: rel,
                    flags: m.flags.clone(),
                    size: m.size,
                    internaldate: m.internaldate,
                    savedate: now,
                    email_id: Some(m.email_id.clone()),
                },
            });
            moved.push(m);
        }
        if moved.is_empty() {
            return Ok(CopyResult {
                uidvalidity: dst.uidvalidity,
                uids: Vec::new(),
            });
        }
        let mut dirs = vec![dst_path.join("cur")];
        dirs.extend(src_dirs.iter().map(|d| src_path.join(d)));
        for m in &moved {
            changes.push(Change::Expunge {
                mailbox: src.id,
                uid: m.uid,
            });
        }
        let applied = match commit_synced(&mut g.index, &dirs, &changes) {
            Ok(a) => a,
            Err(e) => {
                undo_renames(&undo);
                return Err(e);
            }
        };
        self.watchers.notify(src.id);
        self.watchers.notify(dst.id);
        Self::own_cur_change(g, src.id, src_before, &src_path);
        Self::own_cur_change(g, dst.id, dst_before, &dst_path);
        Ok(CopyResult {
            uidvalidity: dst.uidvalidity,
            uids: moved
                .iter()
                .zip(applied.inserted)
                .map(|(m, (uid, _))| (m.uid, uid))
                .collect(),
        })
    }
}

/// The metadata of each file, on two threads when there are many (the
/// first scan of a big Maildir stats every file; the other core is
/// usually free while a client waits for its SELECT).
fn stat_all(files: &[&DirFile]) -> Vec<io::Result<fs::Metadata>> {
    const PARALLEL_FROM: usize = 2_000;
    if files.len() < PARALLEL_FROM {
        return files.iter().map(|f| f.metadata()).collect();
    }
    let (a, b) = files.split_at(files.len() / 2);
    std::thread::scope(|s| {
        let second = s.spawn(|| b.iter().map(|f| f.metadata()).collect::<Vec<_>>());
        let mut out: Vec<_> = a.iter().map(|f| f.metadata()).collect();
        match second.join() {
            Ok(rest) => out.extend(rest),
            // Cannot happen (metadata does not panic); stat them here.
            Err(_) => out.extend(b.iter().map(|f| f.metadata())),
        }
        out
    })
}

/// Puts renamed files back where they were (best effort) when an
/// operation fails after renaming them, so that a refused STORE or MOVE
/// does not come back at the next sync.
fn undo_renames(undo: &[(PathBuf, PathBuf)]) {
    for (now, before) in undo.iter().rev() {
        let _ = fs::rename(now, before);
    }
}

/// Fsyncs `dirs` on a helper thread while the index commits `changes`;
/// `Ok` only when both succeeded. The two are independent: after a crash
/// with only one of them durable, nothing was acknowledged, and the next
/// sync either finds files the index lacks (new UIDs, flags from their
/// names) or rows without their files (expunged) — so they overlap
/// instead of costing two sequential flushes. (Not for EXPUNGE, whose
/// unlinks must be durable before the index forgets the messages.)
fn commit_synced(
    index: &mut Box<dyn Index>,
    dirs: &[PathBuf],
    changes: &[Change],
) -> Result<Applied, MailboxError> {
    if dirs.is_empty() {
        return Ok(index.apply(changes)?);
    }
    let (synced, applied) = std::thread::scope(|s| {
        let fsync = s.spawn(|| dirs.iter().try_for_each(|d| sync_dir(d)));
        let applied = index.apply(changes);
        let synced = fsync.join().unwrap_or_else(|_| {
            Err(MailboxError::Io {
                op: "fsync directory",
                path: dirs[0].clone(),
                source: io::Error::other("fsync thread panicked"),
            })
        });
        (synced, applied)
    });
    synced?;
    Ok(applied?)
}

/// The file name (relative to the mailbox) a message written to `tmp`
/// gets: in `new/` as it is, in `cur/` with its flags; names the store
/// chose carry their size (`,S=`), as Dovecot's do.
fn final_rel(
    tmp: &Path,
    sub: &str,
    callers_name: bool,
    size: u64,
    flags: &Flags,
    map: &KeywordMap,
) -> String {
    let base = tmp
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = if callers_name {
        base
    } else {
        format!("{base},S={size}")
    };
    if sub == "new" {
        format!("new/{base}")
    } else {
        format!("cur/{base}:2,{}", flags.maildir_letters_with("", map))
    }
}

/// The keyword letters of the Maildir at `path` (empty if it has none).
fn load_keywords(path: &Path) -> KeywordMap {
    fs::read_to_string(path.join(KEYWORDS_FILE))
        .map(|t| KeywordMap::parse(&t))
        .unwrap_or_default()
}

/// The keyword letters of the Maildir at `path`, with letters given to the
/// keywords of `flags` that have none; written (fsynced, renamed into
/// place, directory fsynced) before any file name uses a new letter.
fn keywords_for<'a>(
    path: &Path,
    flags: impl Iterator<Item = &'a Flags>,
) -> Result<KeywordMap, MailboxError> {
    let mut map = load_keywords(path);
    let mut changed = false;
    for f in flags {
        changed |= map.assign(f);
    }
    if changed {
        let tmp = path
            .join("tmp")
            .join(format!("{KEYWORDS_FILE}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        write_file(&tmp, map.to_text().as_bytes(), &mut io::empty(), None, true)?;
        let target = path.join(KEYWORDS_FILE);
        fs::rename(&tmp, &target).map_err(io_err("rename", &tmp))?;
        sync_dir(path)?;
    }
    Ok(map)
}

/// A caller's Maildir file name: one path component without `:` (the
/// info separator), not hidden, printable, at most 200 bytes.
fn check_file_name(name: &str) -> Result<(), MailboxError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(MailboxError::InvalidFileName(name.to_owned()))
    }
}

/// One message of [`UserStore::append_batch`].
pub struct AppendItem<'a> {
    /// The message.
    pub body: &'a mut dyn Read,
    /// Its flags.
    pub flags: Flags,
    /// Its INTERNALDATE (Unix seconds; `None`: now).
    pub internaldate: Option<i64>,
}

impl std::fmt::Debug for AppendItem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendItem")
            .field("flags", &self.flags)
            .field("internaldate", &self.internaldate)
            .finish_non_exhaustive()
    }
}

/// Hard-links `source` to `target`, or copies it (fsynced) through
/// `dir/tmp/` when links are not possible.
fn link_or_copy(source: &Path, dir: &Path, target: &Path) -> Result<(), MailboxError> {
    match fs::hard_link(source, target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(io_err("link", source)(e)),
        Err(_) => {
            let mut input = File::open(source).map_err(io_err("open", source))?;
            let tmp = dir.join("tmp").join(
                target
                    .file_name()
                    .map(|n| n.to_string_lossy().replace(':', "_"))
                    .unwrap_or_default(),
            );
            let mtime = input.metadata().and_then(|m| m.modified()).ok();
            write_file(&tmp, b"", &mut input, mtime, true)?;
            fs::rename(&tmp, target).map_err(io_err("rename", &tmp))
        }
    }
}

/// Opens the user's index; an unreadable one is moved aside and a new one
/// created (every mailbox then gets a new UIDVALIDITY at the folder sync,
/// and messages new UIDs with flags from their file names).
fn open_or_rebuild_index(dir: &Path, rebuild: bool) -> Result<SqliteIndex, MailboxError> {
    let path = dir.join(INDEX_FILE);
    let opened = if rebuild {
        Err(IndexError::Corrupt("rebuild requested".into()))
    } else {
        SqliteIndex::open(&path, unix_now())
    };
    match opened {
        Ok(i) => Ok(i),
        Err(IndexError::Corrupt(_)) => {
            let aside = dir.join(format!("{INDEX_FILE}.corrupt.{}", unix_now()));
            fs::rename(&path, &aside).map_err(io_err("rename", &path))?;
            for ext in ["-wal", "-shm"] {
                let p = dir.join(format!("{INDEX_FILE}{ext}"));
                match fs::rename(&p, dir.join(format!("{INDEX_FILE}.corrupt{ext}"))) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("rename", &p)(e)),
                }
            }
            Ok(SqliteIndex::open(&path, unix_now())?)
        }
        Err(e) => Err(e.into()),
    }
}
