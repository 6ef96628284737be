//! Running unprivileged: who Tern runs as, and the switch from root to the
//! configured `user` once the listeners are bound.
//!
//! Root is needed for one thing only: binding ports below 1024 (and,
//! sometimes, reading keys that only root may read). [`start`](crate::start)
//! therefore reads the key files and binds the listeners first, then calls
//! [`drop_privileges`], and only then opens the data directory, so that
//! everything Tern creates there belongs to the service user. Under systemd
//! the same is done without root at all: `User=tern` with
//! `AmbientCapabilities=CAP_NET_BIND_SERVICE` (`dist/tern.service`).
//!
//! What this module must never do: leave the process half-switched (the
//! order is setgroups, setgid, setuid, and each failure is an error before
//! anything is served); go on when the switch cannot be verified (the real
//! and effective ids are read back and `setuid(0)` must fail); or let Tern
//! run as root without the admin saying so ([`refuse_root`]).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use nix::unistd::{Gid, Group, Uid, User};

use crate::Config;

/// The unprivileged account Tern runs as (`user`, `group` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name, as configured.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group: `group` from the config, else the user's primary group.
    pub gid: u32,
    /// The group's name (its number when it has none).
    pub group: String,
}

/// What start-up does about privileges; decided before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No `user` configured: stay who we are ([`refuse_root`] decides
    /// whether that may be root).
    Stay,
    /// Started as root: switch to this account after binding.
    Drop(RunAs),
    /// Already running as the configured user (systemd `User=`).
    AlreadyAs(RunAs),
}

impl Plan {
    /// The account Tern runs as once started, when one is configured.
    pub fn run_as(&self) -> Option<&RunAs> {
        match self {
            Plan::Stay => None,
            Plan::Drop(r) | Plan::AlreadyAs(r) => Some(r),
        }
    }
}

/// Looks the configured `user` (and `group`) up and decides what to do.
pub fn plan(config: &Config) -> anyhow::Result<Plan> {
    let Some(name) = &config.user else {
        if config.group.is_some() {
            bail!("group = {:?} needs user = \"...\" as well", config.group);
        }
        return Ok(Plan::Stay);
    };
    let user = User::from_name(name)
        .with_context(|| format!("user = {name:?}: cannot look the user up"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "user = {name:?}: no such user on this system; create it, e.g. \
                 `useradd --system --home-dir /var/lib/tern --shell /usr/sbin/nologin {name}`"
            )
        })?;
    if user.uid.is_root() {
        bail!("user = {name:?} has uid 0: name an unprivileged user for Tern to run as");
    }
    let (gid, group) = match &config.group {
        Some(g) => {
            let found = Group::from_name(g)
                .with_context(|| format!("group = {g:?}: cannot look the group up"))?
                .ok_or_else(|| anyhow::anyhow!("group = {g:?}: no such group on this system"))?;
            (found.gid, g.clone())
        }
        None => {
            let name = Group::from_gid(user.gid)
                .ok()
                .flatten()
                .map_or_else(|| user.gid.to_string(), |g| g.name);
            (user.gid, name)
        }
    };
    if gid.as_raw() == 0 {
        bail!("the group Tern would run as ({group}) is gid 0: set group = an unprivileged group");
    }
    let run_as = RunAs {
        user: name.clone(),
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
        group,
    };
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(Plan::Drop(run_as))
    } else if euid.as_raw() == run_as.uid {
        Ok(Plan::AlreadyAs(run_as))
    } else {
        bail!(
            "user = {name:?} (uid {}), but Tern was started as uid {}, which cannot switch \
             users: start it as root (it drops to {name} after binding its ports) or as {name}",
            run_as.uid,
            euid
        )
    }
}

/// Refuses to serve as root unless the admin asked for it: either `user`
/// is configured (Tern will drop to it), or `allow_root = true`, or the
/// `--allow-root` flag (`allow_flag`). Returns whether Tern will run as
/// root, so the caller can warn.
pub fn refuse_root(config: &Config, allow_flag: bool) -> anyhow::Result<bool> {
    if !nix::unistd::geteuid().is_root() || config.user.is_some() {
        return Ok(false);
    }
    if config.allow_root || allow_flag {
        return Ok(true);
    }
    bail!(
        "refusing to run as root: set user = \"tern\" (Tern binds its ports, then switches \
         to that user), or run it as an unprivileged user with CAP_NET_BIND_SERVICE \
         (dist/tern.service), or, if you really mean it, set allow_root = true or pass --allow-root"
    )
}

/// Switches the whole process (every thread) to `run_as`: supplementary
/// groups, then the group, then the user; then checks that it worked and
/// cannot be undone.
pub fn drop_privileges(run_as: &RunAs) -> anyhow::Result<()> {
    let (uid, gid) = (Uid::from_raw(run_as.uid), Gid::from_raw(run_as.gid));
    let who = format!("{}:{}", run_as.user, run_as.group);
    nix::unistd::setgroups(&[gid])
        .with_context(|| format!("cannot drop supplementary groups (switching to {who})"))?;
    nix::unistd::setgid(gid)
        .with_context(|| format!("cannot set the group (switching to {who})"))?;
    nix::unistd::setuid(uid)
        .with_context(|| format!("cannot set the user (switching to {who})"))?;
    verify_dropped(run_as)
}

/// The switch to `run_as` is complete and permanent.
fn verify_dropped(run_as: &RunAs) -> anyhow::Result<()> {
    use nix::unistd::{getegid, geteuid, getgid, getgroups, getuid};
    let ids = (
        getuid().as_raw(),
        geteuid().as_raw(),
        getgid().as_raw(),
        getegid().as_raw(),
    );
    if ids != (run_as.uid, run_as.uid, run_as.gid, run_as.gid) {
        bail!(
            "privilege drop to {}:{} did not take: uid {} euid {} gid {} egid {}",
            run_as.user,
            run_as.group,
            ids.0,
            ids.1,
            ids.2,
            ids.3
        );
    }
    let groups = getgroups().context("cannot read the supplementary groups")?;
    if groups.iter().any(|g| g.as_raw() != run_as.gid) {
        bail!("privilege drop: supplementary groups remain: {groups:?}");
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!(
            "privilege drop to {} can be undone (setuid(0) succeeded)",
            run_as.user
        );
    }
    Ok(())
}

/// Checks that the service user owns the state Tern writes: the data
/// directory, and what it holds two levels down (spool, Maildirs, TLS
/// and DKIM key directories, the SASL secret). Creates the data directory
/// when it is missing and its parent lets us. Every problem is named with
/// the command that fixes it.
pub fn check_state(config: &Config, run_as: &RunAs) -> anyhow::Result<()> {
    let data = &config.data_dir;
    let fix = format!(
        "chown -R {}:{} {}",
        run_as.user,
        run_as.group,
        data.display()
    );
    match std::fs::symlink_metadata(data) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data)
                .with_context(|| {
                    format!(
                        "cannot create data_dir {} as {}: create it with \
                         `install -d -o {} -g {} -m 0700 {}` (systemd's StateDirectory= does this)",
                        data.display(),
                        run_as.user,
                        run_as.user,
                        run_as.group,
                        data.display()
                    )
                })?;
            return Ok(());
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read data_dir {}", data.display()));
        }
        Ok(_) => {}
    }
    let mut wrong = Vec::new();
    let mut look = |path: &Path| match std::fs::symlink_metadata(path) {
        Ok(m) if m.uid() != run_as.uid => wrong.push(format!(
            "{} is owned by uid {}, not by {} (uid {})",
            path.display(),
            m.uid(),
            run_as.user,
            run_as.uid
        )),
        Ok(m) if m.is_dir() && m.mode() & 0o700 != 0o700 => wrong.push(format!(
            "{} has mode {:o}: its owner {} needs rwx",
            path.display(),
            m.mode() & 0o7777,
            run_as.user
        )),
        Ok(_) => {}
        Err(e) => wrong.push(format!("{}: {e}", path.display())),
    };
    look(data);
    for child in entries(data) {
        look(&child);
        if child.is_dir() && !child.is_symlink() {
            for grandchild in entries(&child) {
                look(&grandchild);
            }
        }
    }
    if !wrong.is_empty() {
        let shown = wrong.len().min(10);
        bail!(
            "Tern runs as {} but cannot own its state:\n  {}{}\nfix: {fix}",
            run_as.user,
            wrong[..shown].join("\n  "),
            if wrong.len() > shown {
                format!("\n  … and {} more", wrong.len() - shown)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Files read at start (as root, before the drop) that the service user
/// cannot read: a SIGHUP or a change will not reload them. One line each.
pub fn unreadable_after_drop(config: &Config) -> Vec<String> {
    let mut files: Vec<(&str, PathBuf)> = Vec::new();
    for c in &config.tls.certificates {
        files.push(("tls certificate", c.cert.clone()));
        files.push(("tls key", c.key.clone()));
    }
    if let Some(u) = &config.auth.users_file {
        files.push(("auth.users_file", u.clone()));
    }
    let mut out: Vec<String> = files
        .into_iter()
        .filter_map(|(what, path)| {
            std::fs::File::open(&path)
                .err()
                .map(|e| format!("{what} {}: {e}", path.display()))
        })
        .collect();
    let dkim = config.dkim_keys_dir();
    if config.dkim.sign
        && dkim.exists()
        && let Err(e) = std::fs::read_dir(&dkim)
    {
        out.push(format!("dkim keys_dir {}: {e}", dkim.display()));
    }
    out
}

/// The entries of `dir`, or none when it cannot be read (the caller's own
/// check of `dir` reports why).
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "hostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n[domains.\"example.test\"]\nmailboxes = [\"alice\"]\n";

    fn config(top: &str) -> Config {
        Config::parse(&format!("{top}\n{BASE}")).unwrap()
    }

    #[test]
    fn plans() {
        assert_eq!(plan(&config("")).unwrap(), Plan::Stay);
        let err = format!(
            "{:#}",
            plan(&config("user = \"no-such-user-tern\"")).unwrap_err()
        );
        assert!(err.contains("no such user"), "{err}");
        let err = format!("{:#}", plan(&config("user = \"root\"")).unwrap_err());
        assert!(err.contains("uid 0"), "{err}");
        let err = format!("{:#}", plan(&config("group = \"nogroup\"")).unwrap_err());
        assert!(err.contains("needs user"), "{err}");
        let p = plan(&config("user = \"nobody\""));
        if nix::unistd::geteuid().is_root() {
            let Ok(Plan::Drop(r)) = p else {
                panic!("{p:?}")
            };
            assert_eq!(r.user, "nobody");
            assert_ne!(r.uid, 0);
        } else {
            assert!(p.is_err(), "{p:?}");
        }
    }

    #[test]
    fn root_needs_permission() {
        let root = nix::unistd::geteuid().is_root();
        let plain = config("");
        assert_eq!(refuse_root(&plain, false).is_err(), root);
        assert_eq!(refuse_root(&plain, true).unwrap(), root);
        assert_eq!(
            refuse_root(&config("allow_root = true"), false).unwrap(),
            root
        );
        assert!(!refuse_root(&config("user = \"nobody\""), false).unwrap());
    }
}
