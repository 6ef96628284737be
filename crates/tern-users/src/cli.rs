//! `tern user add|passwd|del|list`, minus the argument parsing.
//!
//! The binary parses its arguments with clap and calls
//! [`run_user_command`], passing [`read_password_interactive_or_stdin`] as
//! the password source. The rule for passwords: on a terminal, prompt twice
//! without echo and require both to match; otherwise read one line from
//! standard input, so scripts can do
//! `printf '%s\n' "$PW" | tern user add alice@example.test --config …`.
//! A password is never taken from the command line (it would show in `ps`
//! and in shell history).
//!
//! [`execute_user_command`] is the one service both front ends call: the
//! CLI prints its [`UserOutcome`] as text (`Display`), the admin HTTP API
//! (`tern-net`) serves the same value as JSON.

use std::fmt;
use std::io::{self, BufRead, IsTerminal};
use std::path::Path;

use serde::Serialize;

use zeroize::Zeroizing;

use crate::db::check_address;
use crate::file::{AddOptions, add_user, delete_user, list_users, set_password};
use crate::{UserDb, UsersError};

/// Longest password read from standard input, in bytes.
const MAX_PASSWORD_LINE: u64 = 4096;

/// One `tern user` subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Create a user (asks for the password).
    Add {
        /// The user's address (their login name).
        address: String,
        /// Also store a CRAM-MD5 secret (`--cram-md5`).
        cram_md5: bool,
    },
    /// Change a user's password (asks for it).
    Passwd {
        /// The user's address.
        address: String,
    },
    /// Remove a user.
    Del {
        /// The user's address.
        address: String,
    },
    /// List the users.
    List,
}

/// What a user command did; `Display` is the CLI's text, `Serialize` the
/// admin API's JSON (`{"result":"added","address":…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum UserOutcome {
    /// A user was created.
    Added {
        /// The address.
        address: String,
        /// With a CRAM-MD5 secret.
        cram_md5: bool,
    },
    /// A password was changed.
    PasswordChanged {
        /// The address, as given.
        address: String,
    },
    /// A user was removed.
    Deleted {
        /// The address, as given.
        address: String,
    },
    /// The users, in file order.
    List {
        /// One entry per user.
        users: Vec<UserSummary>,
    },
}

/// One user as `list` shows it: never a hash or a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    /// The address (login name).
    pub address: String,
    /// The password hash scheme (`argon2id`, `bcrypt`, …).
    pub scheme: String,
    /// The SASL secrets stored besides the hash (`scram-sha-256`, `cram-md5`).
    pub secrets: Vec<String>,
    /// Other addresses the user may send as.
    pub senders: Vec<String>,
}

impl fmt::Display for UserOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserOutcome::Added { address, cram_md5 } => {
                let extra = if *cram_md5 {
                    " (with a CRAM-MD5 secret)"
                } else {
                    ""
                };
                writeln!(f, "added {address}{extra}")
            }
            UserOutcome::PasswordChanged { address } => {
                writeln!(f, "changed the password of {address}")
            }
            UserOutcome::Deleted { address } => writeln!(f, "deleted {address}"),
            UserOutcome::List { users } => f.write_str(&format_list(users)),
        }
    }
}

/// Runs `cmd` against `users_file` with the production hashing parameters
/// and returns what to print. `read_password` is called at most once, and
/// only after the command has been checked (so an admin is not asked for a
/// password for a user that does not exist).
pub fn run_user_command(
    cmd: UserCommand,
    users_file: &Path,
    read_password: impl FnOnce() -> io::Result<String>,
) -> Result<String, UsersError> {
    run_user_command_with(cmd, users_file, read_password, &AddOptions::default())
}

/// [`run_user_command`] with explicit hashing options (`cram_md5` is taken
/// from the command).
pub fn run_user_command_with(
    cmd: UserCommand,
    users_file: &Path,
    read_password: impl FnOnce() -> io::Result<String>,
    opts: &AddOptions,
) -> Result<String, UsersError> {
    execute_user_command(cmd, users_file, read_password, opts).map(|o| o.to_string())
}

/// Carries out `cmd` on `users_file` (the service behind `tern user` and
/// the admin API's `/api/users`). `read_password` is called at most once,
/// and only after the command has been checked.
pub fn execute_user_command(
    cmd: UserCommand,
    users_file: &Path,
    read_password: impl FnOnce() -> io::Result<String>,
    opts: &AddOptions,
) -> Result<UserOutcome, UsersError> {
    let read = || {
        read_password()
            .map(Zeroizing::new)
            .map_err(UsersError::PasswordInput)
    };
    match cmd {
        UserCommand::Add { address, cram_md5 } => {
            check_address(&address).map_err(|problem| UsersError::InvalidAddress {
                address: address.clone(),
                problem,
            })?;
            if users_file.exists() && UserDb::load(users_file)?.get(&address).is_some() {
                return Err(UsersError::UserExists(address));
            }
            let password = read()?;
            let opts = AddOptions { cram_md5, ..*opts };
            add_user(users_file, &address, &password, &opts)?;
            Ok(UserOutcome::Added { address, cram_md5 })
        }
        UserCommand::Passwd { address } => {
            if UserDb::load(users_file)?.get(&address).is_none() {
                return Err(UsersError::NoSuchUser(address));
            }
            let password = read()?;
            set_password(users_file, &address, &password, opts)?;
            Ok(UserOutcome::PasswordChanged { address })
        }
        UserCommand::Del { address } => {
            delete_user(users_file, &address)?;
            Ok(UserOutcome::Deleted { address })
        }
        UserCommand::List => Ok(UserOutcome::List {
            users: summaries(&list_users(users_file)?),
        }),
    }
}

fn summaries(db: &UserDb) -> Vec<UserSummary> {
    db.iter()
        .map(|u| {
            let mut secrets = Vec::new();
            if u.scram.is_some() {
                secrets.push("scram-sha-256".to_owned());
            }
            if u.cram.is_some() {
                secrets.push("cram-md5".to_owned());
            }
            UserSummary {
                address: u.address.clone(),
                scheme: u.password_hash.scheme().name().to_owned(),
                secrets,
                senders: u.senders.clone(),
            }
        })
        .collect()
}

/// One line per user: address, password scheme, SASL secrets, senders.
fn format_list(users: &[UserSummary]) -> String {
    if users.is_empty() {
        return "no users\n".to_owned();
    }
    let width = users
        .iter()
        .map(|u| u.address.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for u in users {
        let secrets = if u.secrets.is_empty() {
            "-".to_owned()
        } else {
            u.secrets.join(",")
        };
        let mut line = format!("{:width$}  {:12}  {:22}", u.address, u.scheme, secrets);
        if !u.senders.is_empty() {
            line.push_str("  senders: ");
            line.push_str(&u.senders.join(", "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Reads a new password: on a terminal, prompts twice without echo (on the
/// terminal, not on standard output) and requires both to match; otherwise
/// reads one line from standard input.
pub fn read_password_interactive_or_stdin() -> io::Result<String> {
    if io::stdin().is_terminal() {
        let mut first = Zeroizing::new(rpassword::prompt_password("New password: ")?);
        let second = Zeroizing::new(rpassword::prompt_password("Repeat the password: ")?);
        if *first != *second {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the two passwords do not match",
            ));
        }
        Ok(std::mem::take(&mut *first))
    } else {
        read_password_line(io::stdin().lock())
    }
}

/// One password line from `input`: the line ending (`\n` or `\r\n`) is
/// removed, nothing else.
pub(crate) fn read_password_line(input: impl BufRead) -> io::Result<String> {
    let mut line = Zeroizing::new(String::new());
    let n = input.take(MAX_PASSWORD_LINE + 1).read_line(&mut line)?;
    if n as u64 > MAX_PASSWORD_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the password line is longer than {MAX_PASSWORD_LINE} bytes"),
        ));
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "no password on standard input",
        ));
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(std::mem::take(&mut *line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashParams;
    use std::cell::Cell;

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

    fn run(cmd: UserCommand, path: &Path, pw: &str) -> Result<String, UsersError> {
        let pw = pw.to_owned();
        run_user_command_with(cmd, path, move || Ok(pw), &cheap())
    }

    fn add(address: &str, cram_md5: bool) -> UserCommand {
        UserCommand::Add {
            address: address.to_owned(),
            cram_md5,
        }
    }

    #[test]
    fn add_passwd_list_del() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        assert_eq!(
            run(add("alice@example.test", false), &path, "pw1").unwrap(),
            "added alice@example.test\n"
        );
        assert_eq!(
            run(add("bob@example.test", true), &path, "pw2").unwrap(),
            "added bob@example.test (with a CRAM-MD5 secret)\n"
        );
        let list = run(UserCommand::List, &path, "").unwrap();
        assert_eq!(
            list,
            "alice@example.test  argon2id      scram-sha-256\nbob@example.test    argon2id      scram-sha-256,cram-md5\n"
        );
        assert!(!list.contains("$argon2id$"));
        let out = run(
            UserCommand::Passwd {
                address: "ALICE@example.test".into(),
            },
            &path,
            "pw3",
        )
        .unwrap();
        assert_eq!(out, "changed the password of ALICE@example.test\n");
        let db = UserDb::load(&path).unwrap();
        assert!(
            db.check_password("alice@example.test", "pw3")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            run(
                UserCommand::Del {
                    address: "bob@example.test".into()
                },
                &path,
                ""
            )
            .unwrap(),
            "deleted bob@example.test\n"
        );
        assert_eq!(UserDb::load(&path).unwrap().len(), 1);
        run(
            UserCommand::Del {
                address: "alice@example.test".into(),
            },
            &path,
            "",
        )
        .unwrap();
        assert_eq!(run(UserCommand::List, &path, "").unwrap(), "no users\n");
    }

    #[test]
    fn no_prompt_when_the_command_cannot_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let asked = Cell::new(0);
        let prompt = || {
            asked.set(asked.get() + 1);
            Ok("pw".to_owned())
        };
        run_user_command_with(add("a@example.test", false), &path, prompt, &cheap()).unwrap();
        assert_eq!(asked.get(), 1);
        let prompt = || {
            asked.set(asked.get() + 1);
            Ok("pw".to_owned())
        };
        let err = run_user_command_with(add("A@example.test", false), &path, prompt, &cheap())
            .unwrap_err();
        assert!(matches!(err, UsersError::UserExists(_)));
        let prompt = || {
            asked.set(asked.get() + 1);
            Ok("pw".to_owned())
        };
        let err = run_user_command_with(
            UserCommand::Passwd {
                address: "z@example.test".into(),
            },
            &path,
            prompt,
            &cheap(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no such user: z@example.test");
        let prompt = || {
            asked.set(asked.get() + 1);
            Ok("pw".to_owned())
        };
        let err =
            run_user_command_with(add("no-at-sign", false), &path, prompt, &cheap()).unwrap_err();
        assert!(matches!(err, UsersError::InvalidAddress { .. }));
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn password_input_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let err = run_user_command_with(
            add("a@example.test", false),
            &path,
            || {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the two passwords do not match",
                ))
            },
            &cheap(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not read the password: the two passwords do not match"
        );
        assert!(!path.exists());
    }

    #[test]
    fn password_line_from_stdin() {
        assert_eq!(read_password_line(&b"s3cret\n"[..]).unwrap(), "s3cret");
        assert_eq!(read_password_line(&b"s3cret\r\n"[..]).unwrap(), "s3cret");
        assert_eq!(
            read_password_line(&b" spaces kept \nsecond line\n"[..]).unwrap(),
            " spaces kept "
        );
        assert_eq!(
            read_password_line(&b"no newline"[..]).unwrap(),
            "no newline"
        );
        assert_eq!(
            read_password_line(&b""[..]).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let long = vec![b'x'; 5000];
        assert_eq!(
            read_password_line(&long[..]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // An empty line is read as an empty password, which add refuses.
        assert_eq!(read_password_line(&b"\n"[..]).unwrap(), "");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let err = run(add("a@example.test", false), &path, "").unwrap_err();
        assert_eq!(err.to_string(), "unusable password: it is empty");
    }

    #[test]
    fn list_shows_imported_schemes_and_senders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[user]]\naddress = \"carol@example.test\"\npassword = \"$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\"\nsenders = [\"c@example.test\", \"info@example.test\"]\n",
        )
        .unwrap();
        assert_eq!(
            run(UserCommand::List, &path, "").unwrap(),
            "carol@example.test  sha512-crypt  -                       senders: c@example.test, info@example.test\n"
        );
    }
}
