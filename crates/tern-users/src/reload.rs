//! Hot reload: the server's view of the users file, replaced when the file
//! changes.
//!
//! [`UserDbHandle::current`] is cheap (an `Arc` clone under a read lock) and
//! what every login uses. The server calls
//! [`UserDbHandle::reload_if_changed`] from a timer (about once a second); it
//! compares the file's identity (device, inode, size, modification and
//! change times) with the last one seen and reloads only when it differs.
//! `tern user …` replaces the file by rename, so the inode always changes.
//!
//! A file that fails to load (a half-finished hand edit, a typo) never
//! replaces a working database: the previous one stays in use and the error
//! is returned once for that version of the file, so the caller logs it once
//! rather than every second.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::{UserDb, UsersError};

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Result<Stamp, UsersError> {
        let m = std::fs::metadata(path).map_err(|e| UsersError::io(path, "checking", e))?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[derive(Debug)]
struct State {
    db: Arc<UserDb>,
    /// The last version seen, loaded or not (a failed one is not retried
    /// until it changes again).
    seen: Option<Stamp>,
}

/// A shared, reloadable [`UserDb`]. Clones share the same database.
#[derive(Debug, Clone)]
pub struct UserDbHandle {
    path: Arc<PathBuf>,
    state: Arc<RwLock<State>>,
}

impl UserDbHandle {
    /// Loads `path`; fails if it does not load (the server does not start
    /// with a broken users file).
    pub fn open(path: &Path) -> Result<UserDbHandle, UsersError> {
        // Stamp first: if the file changes while it is read, the next check
        // sees a different stamp and reloads.
        let stamp = Stamp::of(path)?;
        let db = UserDb::load(path)?;
        Ok(UserDbHandle {
            path: Arc::new(path.to_owned()),
            state: Arc::new(RwLock::new(State {
                db: Arc::new(db),
                seen: Some(stamp),
            })),
        })
    }

    /// The file this handle watches.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database in use now.
    pub fn current(&self) -> Arc<UserDb> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&state.db)
    }

    /// Reloads the file if it changed since the last call: `Ok(true)` when a
    /// new database is in use, `Ok(false)` when nothing changed (or the
    /// changed file already failed to load). On an error the previous
    /// database stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, UsersError> {
        let stamp = match Stamp::of(&self.path) {
            Ok(s) => s,
            Err(e) => {
                // The file is gone (or unreadable): report once, keep the DB.
                let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                let first = state.seen.is_some();
                state.seen = None;
                return if first { Err(e) } else { Ok(false) };
            }
        };
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.seen == Some(stamp) {
                return Ok(false);
            }
        }
        let loaded = UserDb::load(&self.path);
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.seen = Some(stamp);
        match loaded {
            Ok(db) => {
                state.db = Arc::new(db);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddOptions, HashParams, add_user, delete_user};
    use std::fs;

    fn cheap() -> AddOptions {
        AddOptions {
            hash_params: HashParams {
                memory_kib: 64,
                passes: 1,
                lanes: 1,
            },
            ..AddOptions::default()
        }
    }

    #[test]
    fn reloads_on_change_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        add_user(&path, "a@example.test", "pw", &cheap()).unwrap();
        let handle = UserDbHandle::open(&path).unwrap();
        let clone = handle.clone();
        assert_eq!(handle.path(), path);
        assert_eq!(handle.current().len(), 1);
        assert!(!handle.reload_if_changed().unwrap());

        add_user(&path, "b@example.test", "pw", &cheap()).unwrap();
        let before = handle.current();
        assert!(clone.reload_if_changed().unwrap());
        assert!(!handle.reload_if_changed().unwrap());
        assert_eq!(handle.current().len(), 2);
        assert!(handle.current().get("b@example.test").is_some());
        // A login that took the old DB keeps a consistent view.
        assert_eq!(before.len(), 1);

        delete_user(&path, "a@example.test").unwrap();
        assert!(handle.reload_if_changed().unwrap());
        assert!(handle.current().get("a@example.test").is_none());
    }

    #[test]
    fn in_place_edit_of_the_same_size_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let hash = "$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a";
        fs::write(
            &path,
            format!("[[user]]\naddress = \"a@example.test\"\npassword = \"{hash}\"\n"),
        )
        .unwrap();
        let handle = UserDbHandle::open(&path).unwrap();
        // Same length, same inode: only the times (and contents) differ.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(
                    format!("[[user]]\naddress = \"b@example.test\"\npassword = \"{hash}\"\n")
                        .as_bytes(),
                )
            })
            .unwrap();
        // Make sure the modification time moves even on coarse clocks.
        let f = fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(handle.reload_if_changed().unwrap());
        assert!(handle.current().get("b@example.test").is_some());
    }

    #[test]
    fn a_bad_file_keeps_the_previous_db_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        add_user(&path, "a@example.test", "pw", &cheap()).unwrap();
        let handle = UserDbHandle::open(&path).unwrap();

        fs::write(&path, "[[user]]\naddress = \"a@example.test\"\npassword = ").unwrap();
        let err = handle.reload_if_changed().unwrap_err();
        assert!(matches!(err, UsersError::Syntax { .. }), "{err}");
        assert!(!handle.reload_if_changed().unwrap(), "reported once");
        assert!(
            handle.current().get("a@example.test").is_some(),
            "old DB still in use"
        );

        // Removed: reported once, old DB kept.
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            handle.reload_if_changed(),
            Err(UsersError::Io { .. })
        ));
        assert!(!handle.reload_if_changed().unwrap());
        assert_eq!(handle.current().len(), 1);

        // Fixed: picked up.
        add_user(&path, "c@example.test", "pw", &cheap()).unwrap();
        assert!(handle.reload_if_changed().unwrap());
        assert!(handle.current().get("c@example.test").is_some());
        assert!(handle.current().get("a@example.test").is_none());
    }

    #[test]
    fn open_fails_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        assert!(UserDbHandle::open(&path).is_err());
        fs::write(&path, "nonsense = 1\n").unwrap();
        assert!(matches!(
            UserDbHandle::open(&path),
            Err(UsersError::Syntax { .. })
        ));
    }
}
