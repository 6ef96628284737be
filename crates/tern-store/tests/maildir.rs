//! Maildir delivery on a real filesystem.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tern_store::{MailStore, StoreError, unique_name};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn deliver_writes_prefix_and_body_into_new() {
    let root = tempfile::tempdir().unwrap();
    let store = MailStore::new(root.path().join("mail"));
    let md = store.maildir("alice@example.test").unwrap();
    assert_eq!(md.path(), root.path().join("mail/example.test/alice"));
    for sub in ["tmp", "new", "cur"] {
        assert_eq!(mode(&md.path().join(sub)), 0o700, "{sub}");
    }
    assert_eq!(mode(md.path()), 0o700);

    let body: Vec<u8> = (0..1_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let name = unique_name(1_700_000_000, "0123456789ABCDEF", 0, "mx.example.test");
    assert!(!md.contains(&name).unwrap());
    let path = md
        .deliver(&name, b"Return-Path: <s@x>\r\n", &mut body.as_slice())
        .unwrap();
    assert_eq!(path, md.path().join("new").join(&name));
    assert_eq!(mode(&path), 0o600);
    let stored = fs::read(&path).unwrap();
    assert_eq!(&stored[..20], b"Return-Path: <s@x>\r\n");
    assert_eq!(&stored[20..], body.as_slice());
    assert!(entries(&md.path().join("tmp")).is_empty());
    assert!(md.contains(&name).unwrap());
    // Opening it again is fine and idempotent.
    let again = store.maildir("alice@example.test").unwrap();
    assert!(again.contains(&name).unwrap());
}

#[test]
fn contains_finds_messages_a_reader_moved_to_cur() {
    let root = tempfile::tempdir().unwrap();
    let store = MailStore::new(root.path().to_path_buf());
    let md = store.maildir("bob@example.test").unwrap();
    let name = unique_name(1, "AAAAAAAAAAAAAAAA", 1, "h");
    let other = unique_name(1, "AAAAAAAAAAAAAAAA", 10, "h");
    md.deliver(&name, b"", &mut &b"x"[..]).unwrap();
    md.deliver(&other, b"", &mut &b"y"[..]).unwrap();

    let new = md.path().join("new");
    let cur = md.path().join("cur");
    // A reader moves it to cur/ without info...
    fs::rename(new.join(&name), cur.join(&name)).unwrap();
    assert!(md.contains(&name).unwrap());
    // ...and then marks it seen.
    fs::rename(cur.join(&name), cur.join(format!("{name}:2,S"))).unwrap();
    assert!(md.contains(&name).unwrap());
    // R1 is not confused with R10 and vice versa.
    fs::rename(new.join(&other), cur.join(format!("{other}:2,RS"))).unwrap();
    assert!(md.contains(&other).unwrap());
    fs::remove_file(cur.join(format!("{name}:2,S"))).unwrap();
    assert!(!md.contains(&name).unwrap());
}

#[test]
fn stale_tmp_file_is_replaced() {
    let root = tempfile::tempdir().unwrap();
    let store = MailStore::new(root.path().to_path_buf());
    let md = store.maildir("alice@example.test").unwrap();
    let name = unique_name(1, "AAAAAAAAAAAAAAAA", 0, "h");
    fs::write(md.path().join("tmp").join(&name), vec![b'z'; 10_000]).unwrap();
    md.deliver(&name, b"P\r\n", &mut &b"body"[..]).unwrap();
    assert_eq!(
        fs::read(md.path().join("new").join(&name)).unwrap(),
        b"P\r\nbody"
    );
}

#[test]
fn failing_body_leaves_nothing_behind() {
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("connection lost"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }
    let root = tempfile::tempdir().unwrap();
    let store = MailStore::new(root.path().to_path_buf());
    let md = store.maildir("alice@example.test").unwrap();
    let name = unique_name(1, "AAAAAAAAAAAAAAAA", 0, "h");
    let err = md.deliver(&name, b"", &mut Broken(500_000)).unwrap_err();
    assert!(matches!(err, StoreError::Io { op: "write", .. }), "{err}");
    assert!(!err.is_disk_full());
    assert!(entries(&md.path().join("tmp")).is_empty());
    assert!(entries(&md.path().join("new")).is_empty());
    assert!(!md.contains(&name).unwrap());
}

#[test]
fn unsafe_keys_and_names_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = MailStore::new(root.path().join("mail"));
    for key in [
        "../../etc/passwd@example.test",
        "alice@../..",
        "a/b@example.test",
        ".hidden@example.test",
        "..@example.test",
        "alice",
        "Alice@example.test",
        "alice@example.test/x",
        "alice\0@example.test",
    ] {
        assert!(
            matches!(store.maildir(key), Err(StoreError::InvalidMailbox { .. })),
            "{key:?}"
        );
    }
    assert!(!root.path().join("mail").exists(), "something was created");

    let md = store.maildir("alice@example.test").unwrap();
    for name in ["", "..", "../x", "a/b", ".x", "a:2,S"] {
        assert!(matches!(
            md.deliver(name, b"", &mut &b""[..]),
            Err(StoreError::InvalidName(_))
        ));
        assert!(matches!(md.contains(name), Err(StoreError::InvalidName(_))));
    }
}

#[test]
fn a_file_where_the_maildir_should_be_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    let store = MailStore::new(root.path().to_path_buf());
    fs::create_dir(root.path().join("example.test")).unwrap();
    fs::write(root.path().join("example.test/alice"), b"not a dir").unwrap();
    let err = store.maildir("alice@example.test").unwrap_err();
    assert!(matches!(err, StoreError::Io { op: "mkdir", .. }), "{err}");
    fs::remove_file(root.path().join("example.test/alice")).unwrap();
    assert!(store.maildir("alice@example.test").is_ok());
}
