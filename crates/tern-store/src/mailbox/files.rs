//! File-system helpers of the mail store: writing a message durably,
//! naming it, reading a Maildir directory, and the directory stamps that
//! tell whether a directory needs reading again.
//!
//! Nothing here knows about the index. This module must never create a
//! file outside the directory it was given, nor a file name with `/`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::MailboxError;

pub(crate) const DIR_MODE: u32 = 0o700;
pub(crate) const FILE_MODE: u32 = 0o600;
const COPY_BUFFER: usize = 128 * 1024;

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MailboxError {
    let path = path.to_owned();
    move |source| MailboxError::Io { op, path, source }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), MailboxError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", path))
}

/// Creates `path` (0700) unless it is already a directory.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), MailboxError> {
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(MailboxError::Io {
            op: "mkdir",
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Creates a Maildir (`tmp/`, `new/`, `cur/`) at `path`; with `folder`,
/// also the Maildir++ `maildirfolder` marker.
pub(crate) fn ensure_maildir(path: &Path, folder: bool) -> Result<(), MailboxError> {
    ensure_dir(path)?;
    for sub in ["tmp", "new", "cur"] {
        ensure_dir(&path.join(sub))?;
    }
    if folder {
        let marker = path.join("maildirfolder");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&marker)
            .map_err(io_err("create", &marker))?;
    }
    Ok(())
}

/// Unique Maildir base names for messages this process writes:
/// `<secs>.M<micros>P<pid>Q<n>.<host>` (the qmail/Dovecot shape), with
/// `/`, `:` and anything not printable in the host escaped as `\ooo`.
#[derive(Debug)]
pub(crate) struct Namer {
    host: String,
    counter: AtomicU64,
}

impl Namer {
    pub(crate) fn new(hostname: &str) -> Namer {
        let mut host = String::with_capacity(hostname.len());
        for b in hostname.bytes() {
            if b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'\\' && b != b',' {
                host.push(char::from(b));
            } else {
                host.push_str(&format!("\\{b:03o}"));
            }
        }
        if host.is_empty() {
            host.push_str("localhost");
        }
        Namer {
            host,
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.M{:06}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            n,
            self.host
        )
    }
}

/// Writes `prefix` + `body` to `path` (0600, must not exist), fsyncs it
/// (unless `sync` is false: the caller fsyncs it later, see
/// [`sync_files`]), optionally sets its mtime (IMAP INTERNALDATE); returns
/// the size. On error the file is removed.
pub(crate) fn write_file(
    path: &Path,
    prefix: &[u8],
    body: &mut dyn Read,
    mtime: Option<SystemTime>,
    sync: bool,
) -> Result<u64, MailboxError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io_err("create", path))?;
    let result = (|| {
        let mut w = BufWriter::with_capacity(COPY_BUFFER, file);
        w.write_all(prefix).map_err(io_err("write", path))?;
        let n = io::copy(body, &mut w).map_err(io_err("write", path))?;
        let file = w.into_inner().map_err(|e| MailboxError::Io {
            op: "write",
            path: path.to_owned(),
            source: e.into_error(),
        })?;
        if let Some(t) = mtime {
            file.set_modified(t).map_err(io_err("set mtime", path))?;
        }
        if sync {
            file.sync_all().map_err(io_err("fsync", path))?;
        }
        Ok(prefix.len() as u64 + n)
    })();
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Fsyncs many files at once on a few threads, so that the device sees
/// their flushes together (MULTIAPPEND).
pub(crate) fn sync_files(paths: &[&Path]) -> Result<(), MailboxError> {
    const THREADS: usize = 4;
    let chunk = paths.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter().try_for_each(|p| {
                        File::open(p)
                            .and_then(|f| f.sync_all())
                            .map_err(io_err("fsync", p))
                    })
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(MailboxError::Io {
                    op: "fsync",
                    path: PathBuf::new(),
                    source: io::Error::other("fsync thread panicked"),
                })
            })
        })
    })
}

/// What a directory looked like when it was last read: its mtime (and
/// inode, so a replaced directory counts as changed). `trusted` is false
/// when the mtime is so recent that a further change could leave it as it
/// is (see [`Stamp::of`]): such a directory is read again next time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    mtime_ns: i128,
    ino: u64,
    trusted: bool,
}

impl Stamp {
    /// The stamp of `path` as read now, trusted only if its mtime is far
    /// enough in the past that a later change must move it: Linux stamps
    /// mtimes from a clock that advances in ticks of up to 10 ms, and some
    /// filesystems keep whole seconds, so a change in the same tick as the
    /// read would otherwise go unnoticed (Dovecot has the same rule).
    pub(crate) fn of(path: &Path) -> Result<Stamp, MailboxError> {
        let m = fs::metadata(path).map_err(io_err("stat", path))?;
        let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        let margin: i128 = if m.mtime_nsec() == 0 {
            2_000_000_000
        } else {
            20_000_000
        };
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Ok(Stamp {
            mtime_ns,
            ino: m.ino(),
            trusted: mtime_ns + margin < now_ns,
        })
    }

    /// The stamp of a directory this store has just changed itself, while
    /// holding the user's lock: trusted at once (a change by another
    /// program within the same clock tick is the one case it misses until
    /// the directory changes again).
    pub(crate) fn of_own(path: &Path) -> Option<Stamp> {
        Stamp::of(path).ok().map(|s| Stamp { trusted: true, ..s })
    }

    /// Whether a directory stamped `recorded` earlier is unchanged `now`.
    pub(crate) fn unchanged(recorded: Option<Stamp>, now: Stamp) -> bool {
        recorded.is_some_and(|r| r.trusted && r.mtime_ns == now.mtime_ns && r.ino == now.ino)
    }
}

/// One file of a Maildir's `new/` or `cur/`.
#[derive(Debug)]
pub(crate) struct DirFile {
    /// `new/<name>` or `cur/<name>`.
    pub(crate) rel: String,
    entry: fs::DirEntry,
}

impl DirFile {
    /// The file's metadata, following a symbolic link as
    /// [`fs::metadata`] does; looked up relative to the open directory
    /// (no walk down the whole path for each of a big mailbox's files).
    pub(crate) fn metadata(&self) -> io::Result<fs::Metadata> {
        let m = self.entry.metadata()?;
        if m.file_type().is_symlink() {
            return fs::metadata(self.entry.path());
        }
        Ok(m)
    }
}

/// The message files of `dir/sub` (`sub` is `new` or `cur`): every entry
/// whose name is valid UTF-8 and does not start with `.`.
pub(crate) fn list_files(dir: &Path, sub: &str) -> Result<Vec<DirFile>, MailboxError> {
    let path = dir.join(sub);
    let entries = match fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read_dir", &path)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read_dir", &path))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name.contains('/') {
            continue;
        }
        out.push(DirFile {
            rel: format!("{sub}/{name}"),
            entry,
        });
    }
    Ok(out)
}

/// `new/x` → (`new`, `x`).
pub(crate) fn split_rel(rel: &str) -> (&str, &str) {
    rel.split_once('/').unwrap_or(("cur", rel))
}

/// Removes `path` and everything below it; a missing path is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), MailboxError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Reads the last UIDVALIDITY handed out for this user from `file` and
/// stores the next one, `max(now, last + 1)`: strictly greater than any
/// before, even when a lost index is rebuilt in the same second.
pub(crate) fn next_uidvalidity(file: &Path) -> Result<u32, MailboxError> {
    let last: u32 = match fs::read_to_string(file) {
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err("read", file)(e)),
    };
    let now = u32::try_from(unix_now()).unwrap_or(u32::MAX - 1);
    let next = now.max(last.saturating_add(1)).max(1);
    let tmp: PathBuf = file.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(format!("{next}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io_err("write", &tmp))?;
    }
    fs::rename(&tmp, file).map_err(io_err("rename", &tmp))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_changed_just_now_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"x").unwrap();
        let fresh = Stamp::of(dir.path()).unwrap();
        // Changed within the last clock tick: a change now might keep the
        // same mtime, so the stamp must not vouch for the directory.
        assert!(!fresh.trusted);
        assert!(!Stamp::unchanged(Some(fresh), fresh));
        std::thread::sleep(Duration::from_millis(60));
        let settled = Stamp::of(dir.path()).unwrap();
        assert_eq!(settled.mtime_ns, fresh.mtime_ns);
        assert!(settled.trusted);
        assert!(Stamp::unchanged(Some(settled), settled));
        fs::write(dir.path().join("b"), b"x").unwrap();
        let after = Stamp::of(dir.path()).unwrap();
        assert!(!Stamp::unchanged(Some(settled), after));
        // Our own change, under the lock, is trusted at once.
        assert!(Stamp::of_own(dir.path()).unwrap().trusted);
    }

    #[test]
    fn uidvalidity_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("uv");
        let a = next_uidvalidity(&f).unwrap();
        let b = next_uidvalidity(&f).unwrap();
        assert!(b > a);
        // Even if the clock is behind the last value handed out.
        fs::write(&f, format!("{}\n", u32::MAX - 5)).unwrap();
        assert_eq!(next_uidvalidity(&f).unwrap(), u32::MAX - 4);
    }

    #[test]
    fn names_are_single_safe_components() {
        let n = Namer::new("mx/evil:host,x\n");
        let a = n.next();
        let b = n.next();
        assert_ne!(a, b);
        assert!(!a.contains('/') && !a.contains(':') && !a.contains(','));
        assert!(a.ends_with("mx\\057evil\\072host\\054x\\012"), "{a}");
    }
}
