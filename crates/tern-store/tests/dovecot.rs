//! Dovecot reads the tree Tern's mail store writes, and Tern reads what
//! Dovecot writes: folder names (modified UTF-7, Maildir++ levels), flags
//! in file names. Needs Dovecot 2.3 (`dovecot-core`, as CI installs it);
//! skipped with a message when it is not installed.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tern_store::mailbox::{Flags, Mailboxes, StoreConfig, SystemFlags};

const USER: &str = "alice@example.test";
/// Dovecot refuses to serve mail as root; any unprivileged id will do.
const MAIL_UID: u32 = 1000;

struct Dovecot {
    conf: PathBuf,
}

impl Dovecot {
    fn start(dir: &Path, maildir: &Path) -> Option<Dovecot> {
        if !Path::new("/usr/sbin/dovecot").exists() || !Path::new("/usr/bin/doveadm").exists() {
            eprintln!("dovecot not installed: skipped");
            return None;
        }
        let run = dir.join("run");
        fs::create_dir_all(&run).unwrap();
        let conf = dir.join("dovecot.conf");
        fs::write(
            dir.join("passwd"),
            format!(
                "alice:{{PLAIN}}x:{MAIL_UID}:{MAIL_UID}::{m}::userdb_mail=maildir:{m}\n",
                m = maildir.display()
            ),
        )
        .unwrap();
        fs::write(
            &conf,
            format!(
                "protocols = imap\nbase_dir = {run}\nlog_path = {dir}/dovecot.log\nssl = no\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {dir}/passwd\n}}\n\
                 userdb {{\n  driver = passwd-file\n  args = {dir}/passwd\n}}\n\
                 namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n\
                 default_internal_user = root\ndefault_login_user = root\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n\
                 inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
                run = run.display(),
                dir = dir.display()
            ),
        )
        .unwrap();
        // The daemon keeps whatever it inherits open: give it no pipes.
        let status = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "dovecot did not start");
        Some(Dovecot { conf })
    }

    fn doveadm(&self, args: &[&str]) -> String {
        let out: Output = Command::new("/usr/bin/doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("/usr/bin/doveadm")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
    }
}

fn chown_tree(path: &Path) {
    chown(path, Some(MAIL_UID), Some(MAIL_UID)).unwrap();
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: a@b.test\r\nSubject: {subject}\r\n\r\nhello\r\n").into_bytes()
}

#[test]
fn dovecot_and_tern_read_each_others_maildir() {
    if !nix_is_root() {
        eprintln!("not root (cannot chown for dovecot): skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Dovecot's mail processes run as MAIL_UID and must reach the Maildir.
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mb = Mailboxes::new(tmp.path().join("mail"), StoreConfig::default());
    let maildir = mb.user_dir(USER).unwrap();
    {
        let user = mb.open(USER).unwrap();
        for name in ["Entwürfe/日本語", "a&b", "x\\y", "Work/Reports"] {
            let f = user.create(name, None).unwrap();
            let flags = Flags::system(SystemFlags::SEEN.union(SystemFlags::FLAGGED));
            user.append(f.id, &mut &message(name)[..], &flags, None)
                .unwrap();
        }
        let inbox = user.mailbox("INBOX").unwrap();
        user.append(
            inbox.id,
            &mut &message("inbox")[..],
            &Flags::from_imap(&["\\Answered", "$Label1"]).unwrap(),
            None,
        )
        .unwrap();
    }
    chown_tree(&maildir);
    let Some(dovecot) = Dovecot::start(&tmp.path().join("dovecot"), &maildir) else {
        return;
    };

    // Dovecot sees Tern's folders under their UTF-8 names...
    let list = dovecot.doveadm(&["mailbox", "list", "-u", "alice"]);
    let mut names: Vec<&str> = list.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Archive",
            "Drafts",
            "Entwürfe",
            "Entwürfe/日本語",
            "INBOX",
            "Junk",
            "Sent",
            "Trash",
            "Work",
            "Work/Reports",
            "a&b",
            "x\\y"
        ]
    );
    // ...and the flags Tern put in the file names.
    let fetched = dovecot.doveadm(&[
        "fetch",
        "-u",
        "alice",
        "flags",
        "mailbox",
        "Entwürfe/日本語",
        "all",
    ]);
    assert!(
        fetched.contains("\\Seen") && fetched.contains("\\Flagged"),
        "{fetched}"
    );
    let fetched = dovecot.doveadm(&["fetch", "-u", "alice", "flags", "mailbox", "INBOX", "all"]);
    assert!(
        fetched.contains("\\Answered")
            && fetched.contains("$Label1")
            && !fetched.contains("\\Seen"),
        "{fetched}"
    );

    // Dovecot files and flags a message; Tern picks both up.
    dovecot.doveadm(&["mailbox", "create", "-u", "alice", "Früh"]);
    let eml = tmp.path().join("m.eml");
    fs::write(&eml, message("from dovecot")).unwrap();
    let out = Command::new("/usr/bin/doveadm")
        .arg("-c")
        .arg(&dovecot.conf)
        .args(["save", "-u", "alice", "-m", "Früh"])
        .stdin(fs::File::open(&eml).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dovecot.doveadm(&[
        "flags",
        "add",
        "-u",
        "alice",
        "\\Seen \\Deleted $NotJunk",
        "mailbox",
        "INBOX",
        "all",
    ]);
    drop(dovecot);

    let user = mb.open(USER).unwrap();
    let early = user.select("Früh").unwrap();
    assert_eq!(early.messages.len(), 1);
    assert!(maildir.join(".Fr&APw-h").is_dir());
    let inbox = user.select("INBOX").unwrap();
    assert_eq!(inbox.messages.len(), 1);
    let f = inbox.messages[0].flags.system;
    assert!(
        f.contains(SystemFlags::SEEN)
            && f.contains(SystemFlags::DELETED)
            && f.contains(SystemFlags::ANSWERED),
        "{f:?}"
    );
    // Keywords both ways: Tern's through the letters it gave them in
    // dovecot-keywords, Dovecot's through the letters it added.
    assert_eq!(inbox.messages[0].flags.keywords(), ["$Label1", "$NotJunk"]);
    // Dovecot's own files in the tree are not mistaken for folders.
    let names: Vec<String> = user
        .list()
        .unwrap()
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("dovecot")), "{names:?}");
}

fn nix_is_root() -> bool {
    // The effective user id, without unsafe code: /proc/self/status.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
