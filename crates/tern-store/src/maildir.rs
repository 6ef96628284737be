//! Maildir delivery (the qmail `maildir(5)` layout).
//!
//! [`MailStore`] maps a validated mailbox key `local@domain` to the
//! directory `<root>/<domain>/<local>/` and creates its `tmp/`, `new/` and
//! `cur/` (0700) on first use. [`Maildir::deliver`] writes `tmp/<name>`
//! (0600), fsyncs it, renames it into `new/<name>` and fsyncs `new/`: once
//! it returns, the message is on stable storage and a reader never sees a
//! partial file. [`Maildir::contains`] answers "was this name delivered
//! already?" so that delivery after a crash does not duplicate a message.
//!
//! Names are chosen by the caller, deterministically, with [`unique_name`]
//! (one name per queue id and recipient index). This module refuses any
//! name or key that could escape its directory, and never follows
//! client-supplied text into a path.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::key::validate_mailbox_key;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Write buffer used when copying a message into the Maildir.
const COPY_BUFFER: usize = 256 * 1024;
/// Longest file name we create (most filesystems allow 255 bytes).
const MAX_NAME: usize = 255;

/// Errors of the mail store.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
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
    /// The mailbox key is not a safe `local@domain` key.
    #[error("mail store: invalid mailbox key {key:?}: {reason}")]
    InvalidMailbox {
        /// The key as given.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The Maildir file name is not safe.
    #[error("mail store: invalid Maildir file name {0:?}")]
    InvalidName(String),
}

impl StoreError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the disk or quota is full (ENOSPC, EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) || matches!(source.raw_os_error(), Some(28 | 122))
            }
            _ => false,
        }
    }
}

/// The set of Maildirs under one root directory.
#[derive(Debug, Clone)]
pub struct MailStore {
    root: PathBuf,
}

impl MailStore {
    /// A store rooted at `root` (created on first delivery).
    pub fn new(root: PathBuf) -> MailStore {
        MailStore { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Maildir of `mailbox` (a key such as `alice@example.test`),
    /// creating `tmp/`, `new/` and `cur/` (0700) if they are missing.
    pub fn maildir(&self, mailbox: &str) -> Result<Maildir, StoreError> {
        let Maildir { path } = self.maildir_path(mailbox)?;
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&path)
            .map_err(|e| StoreError::io("mkdir", &path, e))?;
        for sub in ["tmp", "new", "cur"] {
            let p = path.join(sub);
            match DirBuilder::new().mode(DIR_MODE).create(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => return Err(StoreError::io("mkdir", &p, e)),
            }
        }
        Ok(Maildir { path })
    }

    /// The Maildir of `mailbox` as a path only: the key is checked, the file
    /// system is not touched. For the hot path (delivery at intake), which
    /// opens its file first and calls [`maildir`](Self::maildir) to create
    /// the directories only when that open fails with "not found" — four
    /// `mkdir`s saved per message.
    pub fn maildir_path(&self, mailbox: &str) -> Result<Maildir, StoreError> {
        let (local, domain) =
            validate_mailbox_key(mailbox).map_err(|reason| StoreError::InvalidMailbox {
                key: mailbox.to_owned(),
                reason,
            })?;
        Ok(Maildir {
            path: self.root.join(domain).join(local),
        })
    }
}

/// One mailbox's Maildir.
#[derive(Debug, Clone)]
pub struct Maildir {
    path: PathBuf,
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", path, e))
}

/// `Ok(true)` if something exists at `path`.
fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("stat", path, e)),
    }
}

impl Maildir {
    /// The Maildir at `path` (the mail store resolved and validated it).
    pub(crate) fn at(path: PathBuf) -> Maildir {
        Maildir { path }
    }

    /// Whether its `new/` exists (one `stat`).
    pub fn exists(&self) -> bool {
        self.path.join("new").is_dir()
    }

    /// The Maildir's directory (the one holding `tmp/`, `new/`, `cur/`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deliver a message: `tmp/<name>` ← `prefix` + `body`; fsync; rename
    /// into `new/<name>`; fsync `new/`. Returns the final path. On error
    /// nothing is left in `tmp/` (best effort) and nothing partial is in
    /// `new/`. A stale `tmp/<name>` from an interrupted attempt is replaced.
    pub fn deliver(
        &self,
        name: &str,
        prefix: &[u8],
        body: &mut dyn Read,
    ) -> Result<PathBuf, StoreError> {
        check_name(name)?;
        let tmp = self.path.join("tmp").join(name);
        let new_dir = self.path.join("new");
        let new = new_dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(|e| StoreError::io("create", &tmp, e))?;
        let result = write_and_sync(file, prefix, body, &tmp)
            .and_then(|()| fs::rename(&tmp, &new).map_err(|e| StoreError::io("rename", &tmp, e)));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&new_dir)?;
        Ok(new)
    }

    /// The two paths of a delivery under `name`: `tmp/<name>` to write
    /// and fsync, then `new/<name>` to rename it to (and fsync `new/`).
    /// For writers that stream a message in themselves, such as the
    /// spool's delivery at intake; [`deliver`](Self::deliver) does all
    /// of it for a message that is already stored.
    pub fn delivery_paths(&self, name: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        check_name(name)?;
        Ok((
            self.path.join("tmp").join(name),
            self.path.join("new").join(name),
        ))
    }

    /// Whether a message named `name` is already in `new/` or `cur/` (where
    /// a mail reader may have renamed it to `<name>:2,FLAGS`). The exact
    /// names are checked first; only if both miss is `cur/` scanned, so call
    /// this on the recovery path, not for every first delivery.
    pub fn contains(&self, name: &str) -> Result<bool, StoreError> {
        check_name(name)?;
        let new = self.path.join("new").join(name);
        let cur_dir = self.path.join("cur");
        if exists(&new)? || exists(&cur_dir.join(name))? {
            return Ok(true);
        }
        let prefix = format!("{name}:");
        let entries =
            fs::read_dir(&cur_dir).map_err(|e| StoreError::io("read_dir", &cur_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("read_dir", &cur_dir, e))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn write_and_sync(
    file: File,
    prefix: &[u8],
    body: &mut dyn Read,
    path: &Path,
) -> Result<(), StoreError> {
    let mut writer = BufWriter::with_capacity(COPY_BUFFER, file);
    writer
        .write_all(prefix)
        .map_err(|e| StoreError::io("write", path, e))?;
    io::copy(body, &mut writer).map_err(|e| StoreError::io("write", path, e))?;
    let file = writer
        .into_inner()
        .map_err(|e| StoreError::io("write", path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync", path, e))
}

/// The deterministic Maildir name for recipient `index` of queue message
/// `queue_id`: `<secs>.Q<id>R<index>.<host>`. In `hostname`, `/` becomes
/// `\057` and `:` becomes `\072` (as the Maildir spec asks); control
/// characters, whitespace, `\` and non-ASCII bytes are escaped the same way
/// so the name is always a safe, single path component.
pub fn unique_name(received_at: u64, queue_id: &str, index: usize, hostname: &str) -> String {
    let mut name = format!("{received_at}.Q{queue_id}R{index}.");
    for b in hostname.bytes() {
        if b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'\\' {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("\\{b:03o}"));
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names() {
        assert_eq!(
            unique_name(1_700_000_000, "0123456789ABCDEF", 3, "mx.example.test"),
            "1700000000.Q0123456789ABCDEFR3.mx.example.test"
        );
        assert_eq!(unique_name(1, "ID", 0, "a/b:c"), "1.QIDR0.a\\057b\\072c");
        assert_eq!(
            unique_name(1, "ID", 0, "a b\n\\"),
            "1.QIDR0.a\\040b\\012\\134"
        );
        // Recipient indices never collide: R1 vs R10 are followed by '.'.
        assert_ne!(unique_name(1, "ID", 1, "h"), unique_name(1, "ID", 10, "h"));
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "a:2,S", ".hidden", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(256)).is_err());
        assert!(check_name("1.QXR0.h\\057x").is_ok());
    }
}
