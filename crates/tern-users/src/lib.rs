//! Tern's users: the users file, password verification, and the safe
//! editing and hot reloading of that file.
//!
//! - [`UserDb`] is the loaded file: look a user up by address
//!   (case-insensitively) and check a password with
//!   [`UserDb::check_password`], which spends the same time on unknown
//!   users as on wrong passwords.
//! - [`verify_password`] checks argon2id/argon2i, bcrypt and
//!   sha512/sha256-crypt hashes, so admins can bring their Dovecot or Postfix
//!   users along; [`hash_password`] makes new argon2id hashes.
//! - [`add_user`], [`set_password`], [`delete_user`] and [`UsersFile::edit`]
//!   change the file atomically under a lock while the server runs; the
//!   server's [`UserDbHandle`] picks the change up, and keeps the previous
//!   users if a hand edit breaks the file.
//! - [`cli`] is `tern user add|passwd|del|list` without the argument parsing.
//!
//! Each user also carries the secrets the SASL mechanisms of `tern-sasl`
//! need: SCRAM-SHA-256 salted keys (always written by `tern user add`) and
//! a CRAM-MD5 secret (only when the admin opts in, since it is a password
//! equivalent for CRAM-MD5). The clear password is never stored.
//!
//! What this crate must never do: print a password, a hash or a SASL secret
//! (in `Debug`, in an error, in `tern user list`); panic on anything in the
//! file; leave a half-written users file; lose a concurrent edit.
//!
//! ```no_run
//! use std::path::Path;
//! use tern_users::{AddOptions, UserDbHandle, add_user};
//!
//! let path = Path::new("/etc/tern/users.toml");
//! add_user(path, "alice@example.test", "correct horse", &AddOptions::default())?;
//! let users = UserDbHandle::open(path)?;
//! // … once a second, from a timer:
//! users.reload_if_changed()?;
//! let db = users.current();
//! assert!(db.check_password("Alice@example.test", "correct horse")?.is_some());
//! # Ok::<(), tern_users::UsersError>(())
//! ```
#![forbid(unsafe_code)]

pub mod cli;
mod db;
mod error;
mod file;
mod hash;
mod reload;

pub use db::{MAX_FILE_SIZE, PasswordHash, SCRAM_PREFIX, User, UserDb};
pub use error::UsersError;
pub use file::{
    AddOptions, SCRAM_ITERATIONS, UsersDocument, UsersFile, add_user, delete_user, list_users,
    set_password,
};
pub use hash::{
    HashParams, MAX_ARGON2_MEMORY_KIB, MAX_ARGON2_PASSES, MAX_BCRYPT_COST, MAX_PASSWORD_LEN,
    MAX_SHA_CRYPT_ROUNDS, Scheme, dummy_verify, hash_password, hash_password_with, verify_password,
};
pub use reload::UserDbHandle;
pub use tern_sasl::{CramSecret, ScramCredentials};
