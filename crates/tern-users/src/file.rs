//! Editing the users file safely while the server runs.
//!
//! [`UsersFile::edit`] is the only writer: it takes an exclusive lock on
//! `<file>.lock` (so two `tern user` commands never lose each other's
//! change), reads the file, applies the change to a format-preserving
//! document (comments, order and every other user's entry stay byte for
//! byte), checks that the result loads, writes `<file>.tmp` (mode 0600),
//! fsyncs it, renames it over the file and fsyncs the directory. A reader
//! (the server's hot reload) sees either the old file or the new one, never
//! a half-written one, and a crash leaves one of the two.
//!
//! New files are created 0600. An existing file keeps its owner, group and
//! permission bits (minus any access for others), so a file an admin made
//! group-readable for the server stays readable by it when root edits it.
//!
//! The slow part of [`add_user`] and [`set_password`], hashing, happens
//! before the lock is taken.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tern_sasl::{CramSecret, ScramCredentials};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, TableLike, value};

use crate::UsersError;
use crate::db::{UserDb, address_key, check_address, encode_cram, encode_scram, read_limited};
use crate::hash::{HashParams, MAX_PASSWORD_LEN, hash_password_with, random_bytes};

/// SCRAM-SHA-256 iteration count for new credentials (RFC 7677's minimum).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// How new secrets are made by [`add_user`] and [`set_password`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddOptions {
    /// Also store a CRAM-MD5 secret (a password equivalent for CRAM-MD5;
    /// only when the admin asks for it). [`set_password`] ignores this and
    /// keeps whatever the user had.
    pub cram_md5: bool,
    /// Argon2id parameters of the password hash.
    pub hash_params: HashParams,
    /// SCRAM-SHA-256 iteration count.
    pub scram_iterations: u32,
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions {
            cram_md5: false,
            hash_params: HashParams::OWASP,
            scram_iterations: SCRAM_ITERATIONS,
        }
    }
}

/// The users file as a format-preserving document, handed to the closure of
/// [`UsersFile::edit`].
#[derive(Debug)]
pub struct UsersDocument {
    doc: DocumentMut,
}

/// Entry points for editing a users file: an exclusive lock on
/// `<file>.lock`, then read, change, check, write `<file>.tmp` (0600), fsync,
/// rename over the file, fsync the directory.
#[derive(Debug, Clone, Copy)]
pub struct UsersFile;

impl UsersFile {
    /// Locks `path`, applies `change` to its contents (an empty document if
    /// the file does not exist yet) and, if `change` succeeds and the result
    /// is a valid users file, replaces the file atomically. Returns what
    /// `change` returned. On any error the file is left as it was.
    pub fn edit<T>(
        path: &Path,
        change: impl FnOnce(&mut UsersDocument) -> Result<T, UsersError>,
    ) -> Result<T, UsersError> {
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| UsersError::io(&lock_path, "opening the lock file", e))?;
        lock.lock()
            .map_err(|e| UsersError::io(&lock_path, "locking", e))?;

        let existing = match fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(UsersError::io(path, "reading", e)),
        };
        let text = match existing {
            Some(_) => read_limited(path)?,
            None => String::new(),
        };
        // Refuse to edit a file the server could not load: the admin fixes
        // it by hand first, and nothing of theirs is overwritten.
        UserDb::parse(&text, path)?;
        let doc: DocumentMut =
            text.parse()
                .map_err(|e: toml_edit::TomlError| UsersError::Syntax {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
        let mut document = UsersDocument { doc };
        let result = change(&mut document)?;
        let new_text = document.doc.to_string();
        UserDb::parse(&new_text, path)?;
        if new_text != text || existing.is_none() {
            write_atomically(path, new_text.as_bytes(), existing.as_ref())?;
        }
        // The lock is released when `lock` is dropped (and by the kernel if
        // this process dies).
        drop(lock);
        Ok(result)
    }
}

impl UsersDocument {
    /// The addresses in the file, in file order, as written.
    pub fn addresses(&self) -> Vec<String> {
        self.entries()
            .filter_map(|t| t.get("address").and_then(|a| a.as_str()).map(str::to_owned))
            .collect()
    }

    /// Whether `address` has an entry (case-insensitively).
    pub fn contains(&self, address: &str) -> bool {
        self.position(address).is_some()
    }

    /// Whether the entry for `address` has `key`.
    pub fn has_key(&self, address: &str, key: &str) -> Result<bool, UsersError> {
        let i = self
            .position(address)
            .ok_or_else(|| no_such_user(address))?;
        Ok(self.entries().nth(i).is_some_and(|t| t.contains_key(key)))
    }

    /// Appends an entry with these string keys.
    pub fn push_user(&mut self, fields: &[(&str, &str)]) {
        let mut table = Table::new();
        for (key, v) in fields {
            table.insert(key, value(*v));
        }
        match self.doc.get_mut("user") {
            Some(Item::ArrayOfTables(aot)) => aot.push(table),
            Some(Item::Value(toml_edit::Value::Array(array))) => {
                array.push(table.into_inline_table());
            }
            _ => {
                let mut aot = ArrayOfTables::new();
                aot.push(table);
                self.doc.insert("user", Item::ArrayOfTables(aot));
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) a string key of the entry for
    /// `address`, leaving its other keys as they are.
    pub fn set(&mut self, address: &str, key: &str, v: Option<&str>) -> Result<(), UsersError> {
        let i = self
            .position(address)
            .ok_or_else(|| no_such_user(address))?;
        let entry = self.entry_mut(i).ok_or_else(|| no_such_user(address))?;
        match v {
            Some(v) => match entry.get_mut(key) {
                // Keep the key's position and its comments.
                Some(item) if item.is_value() => {
                    let decor = item.as_value().map(|old| old.decor().clone());
                    *item = value(v);
                    if let (Some(decor), Some(new)) = (decor, item.as_value_mut()) {
                        *new.decor_mut() = decor;
                    }
                }
                _ => {
                    entry.insert(key, value(v));
                }
            },
            None => {
                entry.remove(key);
            }
        }
        Ok(())
    }

    /// Removes the entry for `address`.
    pub fn remove(&mut self, address: &str) -> Result<(), UsersError> {
        let i = self
            .position(address)
            .ok_or_else(|| no_such_user(address))?;
        match self.doc.get_mut("user") {
            Some(Item::ArrayOfTables(aot)) => {
                aot.remove(i);
            }
            Some(Item::Value(toml_edit::Value::Array(array))) => {
                array.remove(i);
            }
            _ => return Err(no_such_user(address)),
        }
        Ok(())
    }

    fn position(&self, address: &str) -> Option<usize> {
        let key = address_key(address);
        self.entries().position(|t| {
            t.get("address")
                .and_then(|a| a.as_str())
                .is_some_and(|a| address_key(a) == key)
        })
    }

    fn entries(&self) -> Box<dyn Iterator<Item = &dyn TableLike> + '_> {
        match self.doc.get("user") {
            Some(Item::ArrayOfTables(aot)) => Box::new(aot.iter().map(|t| t as &dyn TableLike)),
            Some(Item::Value(toml_edit::Value::Array(array))) => Box::new(
                array
                    .iter()
                    .filter_map(|v| v.as_inline_table().map(|t| t as &dyn TableLike)),
            ),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn entry_mut(&mut self, i: usize) -> Option<&mut dyn TableLike> {
        match self.doc.get_mut("user") {
            Some(Item::ArrayOfTables(aot)) => aot.get_mut(i).map(|t| t as &mut dyn TableLike),
            Some(Item::Value(toml_edit::Value::Array(array))) => array
                .get_mut(i)
                .and_then(|v| v.as_inline_table_mut())
                .map(|t| t as &mut dyn TableLike),
            _ => None,
        }
    }
}

/// The secrets stored for one password.
struct Secrets {
    hash: String,
    scram: String,
    cram: String,
}

impl Secrets {
    fn derive(password: &str, opts: &AddOptions) -> Result<Secrets, UsersError> {
        check_password(password)?;
        let hash = hash_password_with(password, &opts.hash_params)?;
        let salt = random_bytes::<16>()?;
        let scram = ScramCredentials::from_password(password, &salt, opts.scram_iterations)
            .map_err(|e| UsersError::Derive(format!("SCRAM-SHA-256: {e}")))?;
        let cram = CramSecret::from_password(password);
        Ok(Secrets {
            hash,
            scram: encode_scram(&scram),
            cram: encode_cram(&cram),
        })
    }
}

/// Refuses passwords no SASL mechanism can carry.
fn check_password(password: &str) -> Result<(), UsersError> {
    if password.is_empty() {
        return Err(UsersError::UnusablePassword("it is empty"));
    }
    if password.chars().any(char::is_control) {
        return Err(UsersError::UnusablePassword(
            "it contains a control character (such as a line break or a tab)",
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(UsersError::UnusablePassword("it is longer than 1024 bytes"));
    }
    Ok(())
}

fn no_such_user(address: &str) -> UsersError {
    UsersError::NoSuchUser(address.to_owned())
}

/// Adds a user with an argon2id hash and SCRAM-SHA-256 credentials (and a
/// CRAM-MD5 secret when `opts.cram_md5`). Fails if the address exists.
pub fn add_user(
    path: &Path,
    address: &str,
    password: &str,
    opts: &AddOptions,
) -> Result<(), UsersError> {
    check_address(address).map_err(|problem| UsersError::InvalidAddress {
        address: address.to_owned(),
        problem,
    })?;
    let secrets = Secrets::derive(password, opts)?;
    UsersFile::edit(path, |doc| {
        if doc.contains(address) {
            return Err(UsersError::UserExists(address.to_owned()));
        }
        let mut fields = vec![
            ("address", address),
            ("password", secrets.hash.as_str()),
            ("scram_sha256", secrets.scram.as_str()),
        ];
        if opts.cram_md5 {
            fields.push(("cram_md5", secrets.cram.as_str()));
        }
        doc.push_user(&fields);
        Ok(())
    })
}

/// Replaces a user's password: new hash and SCRAM credentials, and a new
/// CRAM-MD5 secret if (and only if) the user had one, so no secret for the
/// old password survives. `opts.cram_md5` is ignored.
pub fn set_password(
    path: &Path,
    address: &str,
    password: &str,
    opts: &AddOptions,
) -> Result<(), UsersError> {
    let secrets = Secrets::derive(password, opts)?;
    UsersFile::edit(path, |doc| {
        let had_cram = doc.has_key(address, "cram_md5")?;
        doc.set(address, "password", Some(&secrets.hash))?;
        doc.set(address, "scram_sha256", Some(&secrets.scram))?;
        if had_cram {
            doc.set(address, "cram_md5", Some(&secrets.cram))?;
        }
        Ok(())
    })
}

/// Removes a user.
pub fn delete_user(path: &Path, address: &str) -> Result<(), UsersError> {
    UsersFile::edit(path, |doc| doc.remove(address))
}

/// The users in the file, in file order (the file must exist and load).
pub fn list_users(path: &Path) -> Result<UserDb, UsersError> {
    UserDb::load(path)
}

/// `<path><suffix>`, e.g. `users.toml.lock`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_atomically(
    path: &Path,
    bytes: &[u8],
    existing: Option<&fs::Metadata>,
) -> Result<(), UsersError> {
    let tmp = sibling(path, ".tmp");
    // A leftover from a crash: ours to replace, since we hold the lock.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(UsersError::io(&tmp, "removing a stale temporary file", e)),
    }
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| UsersError::io(&tmp, "creating", e))?;
        if let Some(meta) = existing {
            let mine = file
                .metadata()
                .map_err(|e| UsersError::io(&tmp, "reading metadata of", e))?;
            if (meta.uid(), meta.gid()) != (mine.uid(), mine.gid()) {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))
                    .map_err(|e| UsersError::io(&tmp, "giving the file its previous owner", e))?;
            }
            let mode = meta.permissions().mode() & 0o770;
            file.set_permissions(fs::Permissions::from_mode(mode | 0o600))
                .map_err(|e| UsersError::io(&tmp, "setting permissions of", e))?;
        }
        file.write_all(bytes)
            .map_err(|e| UsersError::io(&tmp, "writing", e))?;
        file.sync_all()
            .map_err(|e| UsersError::io(&tmp, "syncing", e))?;
        fs::rename(&tmp, path).map_err(|e| UsersError::io(path, "replacing", e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| UsersError::io(dir, "syncing the directory", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn cheap() -> AddOptions {
        AddOptions {
            cram_md5: false,
            hash_params: HashParams {
                memory_kib: 64,
                passes: 1,
                lanes: 1,
            },
            scram_iterations: 4096,
        }
    }

    fn users_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("users.toml")
    }

    #[test]
    fn add_creates_a_0600_file_with_hash_and_scram_and_no_cram_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = users_path(&dir);
        add_user(&path, "alice@example.test", "s3cret pass", &cheap()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let lock_mode = fs::metadata(sibling(&path, ".lock"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(lock_mode, 0o600);
        assert!(!sibling(&path, ".tmp").exists());
        let db = UserDb::load(&path).unwrap();
        let alice = db.get("alice@example.test").unwrap();
        assert!(alice.password_hash.verify("s3cret pass").unwrap());
        assert!(alice.password_hash.as_str().starts_with("$argon2id$"));
        let scram = alice.scram.as_ref().unwrap();
        assert_eq!(scram.iterations(), 4096);
        assert_eq!(scram.salt().len(), 16);
        let expected = ScramCredentials::from_password("s3cret pass", scram.salt(), 4096).unwrap();
        assert_eq!(scram, &expected);
        assert!(alice.cram.is_none());
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(matches!(
            add_user(&path, "ALICE@example.test", "x", &cheap()),
            Err(UsersError::UserExists(_))
        ));
    }

    #[test]
    fn cram_md5_only_on_opt_in_and_renewed_by_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let path = users_path(&dir);
        let opts = AddOptions {
            cram_md5: true,
            ..cheap()
        };
        add_user(&path, "tim@example.test", "tanstaaftanstaaf", &opts).unwrap();
        add_user(&path, "ann@example.test", "one", &cheap()).unwrap();
        let db = UserDb::load(&path).unwrap();
        let tim = db.get("tim@example.test").unwrap();
        assert_eq!(
            tim.cram.as_ref().unwrap(),
            &CramSecret::from_password("tanstaaftanstaaf")
        );

        set_password(&path, "tim@example.test", "new one", &cheap()).unwrap();
        set_password(&path, "ann@example.test", "two", &opts).unwrap();
        let db = UserDb::load(&path).unwrap();
        let tim = db.get("tim@example.test").unwrap();
        assert_eq!(
            tim.cram.as_ref().unwrap(),
            &CramSecret::from_password("new one")
        );
        assert!(tim.password_hash.verify("new one").unwrap());
        assert!(!tim.password_hash.verify("tanstaaftanstaaf").unwrap());
        let scram = tim.scram.as_ref().unwrap();
        assert_eq!(
            scram,
            &ScramCredentials::from_password("new one", scram.salt(), 4096).unwrap()
        );
        let ann = db.get("ann@example.test").unwrap();
        assert!(ann.cram.is_none(), "passwd does not opt a user in");
        assert!(ann.password_hash.verify("two").unwrap());
    }

    #[test]
    fn other_entries_and_comments_are_preserved_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = users_path(&dir);
        let bob = "# The users of example.test.\n\n[[user]]   # bob, since 2019\naddress    = \"bob@example.test\"\npassword = \"$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a\"  # imported\nsenders = [ \"b@example.test\" ,\"robert@example.test\" ]\n";
        let carol = "\n[[user]]\naddress = 'carol@example.test'\npassword = \"$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\"\n";
        fs::write(&path, format!("{bob}{carol}")).unwrap();

        add_user(&path, "dave@example.test", "pw", &cheap()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{bob}{carol}")), "{text}");

        delete_user(&path, "carol@example.test").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(bob), "{text}");
        assert!(!text.contains("carol"));
        assert!(text.contains("dave@example.test"));

        set_password(&path, "bob@example.test", "new", &cheap()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# The users of example.test.\n\n[[user]]   # bob, since 2019\naddress    = \"bob@example.test\"\npassword = \"$argon2id$"), "{text}");
        assert!(
            text.contains(
                "\"  # imported\nsenders = [ \"b@example.test\" ,\"robert@example.test\" ]\n"
            ),
            "{text}"
        );
        let db = UserDb::load(&path).unwrap();
        assert!(
            db.get("bob@example.test")
                .unwrap()
                .password_hash
                .verify("new")
                .unwrap()
        );
        assert_eq!(db.get("bob@example.test").unwrap().senders.len(), 2);
        assert!(
            db.get("dave@example.test")
                .unwrap()
                .password_hash
                .verify("pw")
                .unwrap()
        );
    }

    #[test]
    fn inline_array_form_is_edited_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = users_path(&dir);
        fs::write(&path, "user = [{ address = \"a@b.test\", password = \"$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a\" }]\n").unwrap();
        add_user(&path, "c@b.test", "pw", &cheap()).unwrap();
        set_password(&path, "a@b.test", "pw2", &cheap()).unwrap();
        let db = UserDb::load(&path).unwrap();
        assert!(
            db.get("a@b.test")
                .unwrap()
                .password_hash
                .verify("pw2")
                .unwrap()
        );
        assert!(
            db.get("c@b.test")
                .unwrap()
                .password_hash
                .verify("pw")
                .unwrap()
        );
        delete_user(&path, "a@b.test").unwrap();
        assert_eq!(UserDb::load(&path).unwrap().len(), 1);
    }

    #[test]
    fn concurrent_adds_are_both_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(users_path(&dir));
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (path, barrier) = (Arc::clone(&path), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    for j in 0..5 {
                        add_user(&path, &format!("u{i}-{j}@example.test"), "pw", &cheap()).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let db = UserDb::load(&path).unwrap();
        assert_eq!(db.len(), threads * 5);
        for i in 0..threads {
            for j in 0..5 {
                assert!(db.get(&format!("u{i}-{j}@example.test")).is_some());
            }
        }
    }

    #[test]
    fn errors_leave_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = users_path(&dir);
        add_user(&path, "a@example.test", "pw", &cheap()).unwrap();
        let before = fs::read(&path).unwrap();
        assert!(matches!(
            delete_user(&path, "zz@example.test"),
            Err(UsersError::NoSuchUser(_))
        ));
        assert!(matches!(
            set_password(&path, "zz@example.test", "x", &cheap()),
            Err(UsersError::NoSuchUser(_))
        ));
        assert!(matches!(
            add_user(&path, "not an address", "x", &cheap()),
            Err(UsersError::InvalidAddress { .. })
        ));
        assert!(matches!(
            add_user(&path, "b@example.test", "", &cheap()),
            Err(UsersError::UnusablePassword(_))
        ));
        assert!(matches!(
            add_user(&path, "b@example.test", "a\nb", &cheap()),
            Err(UsersError::UnusablePassword(_))
        ));
        // A closure error aborts the edit.
        let r: Result<(), _> = UsersFile::edit(&path, |doc| {
            doc.remove("a@example.test")?;
            Err(UsersError::UnusablePassword("test"))
        });
        assert!(r.is_err());
        // An edit that would make the file unloadable is refused.
        let r = UsersFile::edit(&path, |doc| {
            doc.set("a@example.test", "password", Some("plain"))
        });
        assert!(
            matches!(
                r,
                Err(UsersError::Invalid {
                    key: "password",
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);

        // A hand-broken file is not edited (nor overwritten).
        fs::write(&path, "[[user]\nbroken").unwrap();
        assert!(matches!(
            add_user(&path, "c@example.test", "pw", &cheap()),
            Err(UsersError::Syntax { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), b"[[user]\nbroken");
    }

    #[test]
    fn existing_group_permissions_are_kept_but_never_world_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = users_path(&dir);
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        add_user(&path, "a@example.test", "pw", &cheap()).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn list_needs_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = users_path(&dir);
        let err = list_users(&path).unwrap_err();
        assert!(matches!(err, UsersError::Io { .. }));
        assert!(err.to_string().contains("users.toml"), "{err}");
        add_user(&path, "a@example.test", "pw", &cheap()).unwrap();
        assert_eq!(list_users(&path).unwrap().len(), 1);
    }
}
