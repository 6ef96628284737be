//! The mail store on a real filesystem: operations, sync with the
//! directory, the invariants (UIDs never reused, answered changes survive
//! kill -9, a lost index is rebuilt from the files), hostile names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_store::mailbox::{
    AppendItem, FlagOp, Flags, Folder, MailboxError, MailboxName, Mailboxes, SpecialUse,
    StoreConfig, SystemFlags, flags::split_file_name,
};
use tern_store::{MailStore, unique_name};

const USER: &str = "alice@example.test";

fn config() -> StoreConfig {
    StoreConfig {
        hostname: "mx.example.test".into(),
        ..StoreConfig::default()
    }
}

fn store(root: &Path) -> Mailboxes {
    Mailboxes::new(root.to_path_buf(), config())
}

fn user_dir(root: &Path) -> PathBuf {
    root.join("example.test/alice")
}

fn msg(i: usize) -> Vec<u8> {
    format!("From: a@b.test\r\nSubject: message {i}\r\n\r\nbody {i}\r\n").into_bytes()
}

fn seen() -> Flags {
    Flags::system(SystemFlags::SEEN)
}

fn deleted() -> Flags {
    Flags::system(SystemFlags::DELETED)
}

/// Every file of `dir/new` and `dir/cur`, as `new/x` / `cur/x`.
fn files_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in fs::read_dir(dir.join(sub)).unwrap() {
            out.push(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_str().unwrap()
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn first_open_creates_inbox_and_special_use_mailboxes() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let list = user.list().unwrap();
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
    );
    for (usage, name) in SpecialUse::DEFAULTS {
        let e = list.iter().find(|e| e.name.as_str() == name).unwrap();
        assert_eq!(e.special_use, Some(usage));
        assert!(e.subscribed && e.id.is_some() && !e.has_children);
        let d = user_dir(root.path()).join(format!(".{name}"));
        for sub in ["tmp", "new", "cur"] {
            assert!(d.join(sub).is_dir(), "{name}/{sub}");
        }
        assert!(d.join("maildirfolder").is_file());
    }
    let inbox = user.status("INBOX").unwrap();
    assert_eq!(inbox.messages, 0);
    assert_eq!(inbox.mailbox.uidnext, 1);
    assert_eq!(inbox.mailbox.highestmodseq, 1);
    // Opening again (same process) gives the same store; a new process
    // (a new Mailboxes) the same mailboxes and UIDVALIDITYs.
    let again = mb.open(USER).unwrap();
    assert!(Arc::ptr_eq(&user, &again));
    let v = inbox.mailbox.uidvalidity;
    drop((user, again, mb));
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    assert_eq!(user.status("inbox").unwrap().mailbox.uidvalidity, v);
    assert_eq!(user.list().unwrap().len(), 6);
}

#[test]
fn concurrent_opens_share_one_store() {
    let root = tempfile::tempdir().unwrap();
    let mb = Arc::new(store(root.path()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mb = Arc::clone(&mb);
            std::thread::spawn(move || mb.open(USER).unwrap())
        })
        .collect();
    let stores: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(stores.iter().all(|s| Arc::ptr_eq(s, &stores[0])));
    assert_eq!(stores[0].list().unwrap().len(), 6, "defaults created once");
}

#[test]
fn the_most_recent_stores_stay_open_for_the_next_session() {
    let root = tempfile::tempdir().unwrap();
    let kept = Mailboxes::new(
        root.path().to_path_buf(),
        StoreConfig {
            keep_open: 1,
            ..config()
        },
    );
    let first = Arc::downgrade(&kept.open_for_session(USER).unwrap());
    // Nobody holds it, yet the next open finds the same store.
    assert!(Arc::ptr_eq(
        &kept.open(USER).unwrap(),
        &first.upgrade().unwrap()
    ));
    // A delivery's open does not take the place.
    let bob = Arc::downgrade(&kept.open("bob@example.test").unwrap());
    assert!(bob.upgrade().is_none());
    assert!(first.upgrade().is_some());
    // A second user's session takes the only place: the first closes.
    kept.open_for_session("bob@example.test").unwrap();
    assert!(first.upgrade().is_none());
    // Without keep_open, a store closes with its last holder.
    let plain = store(root.path());
    let once = Arc::downgrade(&plain.open_for_session(USER).unwrap());
    assert!(once.upgrade().is_none());
}

#[test]
fn append_select_store_expunge() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    let mut uids = Vec::new();
    for i in 0..3 {
        let flags = if i == 0 { seen() } else { Flags::default() };
        let a = user
            .append(
                inbox.id,
                &mut &msg(i)[..],
                &flags,
                Some(1_700_000_000 + i as i64),
            )
            .unwrap();
        assert_eq!(a.uidvalidity, inbox.uidvalidity);
        uids.push(a.uid);
    }
    assert_eq!(uids, [1, 2, 3]);
    let sel = user.select("INBOX").unwrap();
    assert_eq!(sel.mailbox.uidnext, 4);
    assert_eq!(sel.messages.len(), 3);
    let m0 = &sel.messages[0];
    assert_eq!(m0.flags, seen());
    assert_eq!(m0.internaldate, 1_700_000_000);
    assert_eq!(m0.size, msg(0).len() as u64);
    assert!(m0.file_name.starts_with("cur/") && m0.file_name.ends_with(":2,S"));
    let ids: HashSet<&str> = sel.messages.iter().map(|m| m.email_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "email ids are distinct");
    // The body reads back.
    let mut body = Vec::new();
    user.open_message(inbox.id, 2)
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(body, msg(1));
    assert!(matches!(
        user.open_message(inbox.id, 99),
        Err(MailboxError::NoSuchMessage(99))
    ));

    // STORE +FLAGS (\Flagged $Forwarded Work) on 2: the file name follows.
    let before = sel.mailbox.highestmodseq;
    let with = Flags::from_imap(&["\\Flagged", "$Forwarded", "Work"]).unwrap();
    let r = user
        .store_flags(inbox.id, &[2, 77], FlagOp::Add, &with, None)
        .unwrap();
    assert_eq!(r.messages.len(), 1);
    assert!(r.modseq > before);
    assert_eq!(r.messages[0].modseq, r.modseq);
    assert!(
        r.messages[0].file_name.ends_with(":2,FPa"),
        "{}",
        r.messages[0].file_name
    );
    assert!(
        user_dir(root.path())
            .join(&r.messages[0].file_name)
            .is_file()
    );
    // "Work" got Dovecot's first keyword letter.
    assert_eq!(
        fs::read_to_string(user_dir(root.path()).join("dovecot-keywords")).unwrap(),
        "0 Work\n"
    );
    // Changes since the snapshot: just that message.
    let ch = user.changes_since(inbox.id, before).unwrap();
    assert_eq!(ch.changed.iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
    assert!(ch.vanished.is_empty());
    assert_eq!(ch.mailbox.highestmodseq, r.modseq);
    // A STORE that changes nothing does not move MODSEQ.
    let again = user
        .store_flags(inbox.id, &[2], FlagOp::Add, &with, None)
        .unwrap();
    assert_eq!(again.modseq, r.modseq);
    assert_eq!(again.messages[0].modseq, r.modseq);

    // EXPUNGE removes only \Deleted messages, files and rows.
    user.store_flags(inbox.id, &[1, 3], FlagOp::Add, &deleted(), None)
        .unwrap();
    let gone = user.expunge(inbox.id, Some(&[3])).unwrap();
    assert_eq!(gone, [3]);
    let st = user.status("INBOX").unwrap();
    assert_eq!((st.messages, st.deleted, st.unseen), (2, 1, 1));
    assert_eq!(st.size, (msg(0).len() + msg(1).len()) as u64);
    let gone = user.expunge(inbox.id, None).unwrap();
    assert_eq!(gone, [1]);
    assert_eq!(files_of(&user_dir(root.path())).len(), 1);
    let ch = user.changes_since(inbox.id, r.modseq).unwrap();
    assert_eq!(ch.vanished, [1, 3]);
    assert!(ch.changed.is_empty());
    let q = user.quota().unwrap();
    assert_eq!((q.used, q.messages), (msg(1).len() as u64, 1));
}

#[test]
fn uids_are_never_reused_after_expunging_the_highest_and_reopening() {
    let root = tempfile::tempdir().unwrap();
    let v;
    {
        let mb = store(root.path());
        let user = mb.open(USER).unwrap();
        let inbox = user.mailbox("INBOX").unwrap();
        v = inbox.uidvalidity;
        for i in 0..3 {
            user.append(inbox.id, &mut &msg(i)[..], &deleted(), None)
                .unwrap();
        }
        assert_eq!(user.expunge(inbox.id, None).unwrap(), [1, 2, 3]);
    }
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    assert_eq!(inbox.uidvalidity, v);
    assert_eq!(inbox.uidnext, 4);
    let a = user
        .append(inbox.id, &mut &msg(9)[..], &Flags::default(), None)
        .unwrap();
    assert_eq!((a.uidvalidity, a.uid), (v, 4));
    // And a delivery through another path after that: 5.
    let d = mb
        .deliver(USER, &Folder::Inbox, b"", &mut &msg(10)[..])
        .unwrap();
    assert_eq!((d.uidvalidity, d.uid), (v, 5));
    // A file another program drops in gets 6, never an old number.
    let dir = user_dir(root.path());
    fs::write(dir.join("new/1.foreign.host"), msg(11)).unwrap();
    let sel = user.select("INBOX").unwrap();
    assert_eq!(
        sel.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [4, 5, 6]
    );
}

#[test]
fn many_foreign_files_get_uids_by_mtime_then_name() {
    // Enough files that the scan stats them on two threads.
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let dir = user_dir(root.path());
    let t0 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let n = 2_500u64;
    for i in 0..n {
        // Names in the reverse order of the mtimes; pairs share an mtime
        // (then the name decides).
        let p = dir.join(format!("new/{:05}.host", n - i));
        fs::write(&p, format!("Subject: {i}\r\n\r\n")).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t0 + Duration::from_secs(i / 2))
            .unwrap();
    }
    let sel = user.select("INBOX").unwrap();
    let mut want: Vec<(u64, String)> = (0..n)
        .map(|i| (i / 2, format!("new/{:05}.host", n - i)))
        .collect();
    want.sort();
    let got: Vec<(u64, String)> = sel
        .messages
        .iter()
        .map(|m| ((m.internaldate - 1_600_000_000) as u64, m.file_name.clone()))
        .collect();
    assert_eq!(got, want);
    assert!(
        sel.messages
            .iter()
            .enumerate()
            .all(|(i, m)| m.uid == i as u32 + 1)
    );
}

#[test]
fn files_written_by_others_get_uids_in_order_and_flags_follow_their_names() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let dir = user_dir(root.path());
    let t0 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    // Three foreign files: mtimes decide the order, not names.
    for (name, secs) in [
        ("new/c.host", 30),
        ("cur/a.host:2,RS", 10),
        ("cur/b.host:2,", 20),
    ] {
        let p = dir.join(name);
        fs::write(&p, name.as_bytes()).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t0 + Duration::from_secs(secs))
            .unwrap();
    }
    let sel = user.select("INBOX").unwrap();
    let got: Vec<(u32, &str, Vec<String>)> = sel
        .messages
        .iter()
        .map(|m| (m.uid, m.file_name.as_str(), m.flags.imap_names()))
        .collect();
    assert_eq!(
        got,
        [
            (
                1,
                "cur/a.host:2,RS",
                vec!["\\Seen".into(), "\\Answered".into()]
            ),
            (2, "cur/b.host:2,", vec![]),
            (3, "new/c.host", vec![]),
        ]
    );
    assert_eq!(sel.messages[0].internaldate, 1_600_000_010);
    let m1 = sel.mailbox.highestmodseq;

    // mutt marks b flagged and moves c to cur/ without changing flags.
    fs::rename(dir.join("cur/b.host:2,"), dir.join("cur/b.host:2,F")).unwrap();
    fs::rename(dir.join("new/c.host"), dir.join("cur/c.host:2,")).unwrap();
    let ch = user.changes_since(sel.mailbox.id, m1).unwrap();
    assert_eq!(ch.changed.len(), 1, "{:?}", ch.changed);
    assert_eq!(ch.changed[0].uid, 2);
    assert_eq!(ch.changed[0].flags, Flags::system(SystemFlags::FLAGGED));
    let m2 = ch.mailbox.highestmodseq;
    assert!(m2 > m1);
    // A STORE on the moved file renames it from where it is now.
    let r = user
        .store_flags(sel.mailbox.id, &[3], FlagOp::Add, &seen(), None)
        .unwrap();
    assert_eq!(r.messages[0].file_name, "cur/c.host:2,S");
    assert!(dir.join("cur/c.host:2,S").is_file());

    // Another program deletes a: expunged with a new MODSEQ.
    fs::remove_file(dir.join("cur/a.host:2,RS")).unwrap();
    let ch = user.changes_since(sel.mailbox.id, r.modseq).unwrap();
    assert_eq!(ch.vanished, [1]);
    assert!(ch.mailbox.highestmodseq > r.modseq);
    let sel = user.select("INBOX").unwrap();
    assert_eq!(
        sel.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [2, 3]
    );
    // Files and index agree.
    let from_index: Vec<String> = sel.messages.iter().map(|m| m.file_name.clone()).collect();
    assert_eq!(files_of(&dir), from_index);
}

#[test]
fn files_dropped_between_reads_are_each_seen() {
    // Reads of new/ alone (cur/ unchanged) in quick succession; the
    // same-tick case is pinned down by the unit test of `Stamp`.
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let new = user_dir(root.path()).join("new");
    for i in 0..200 {
        assert_eq!(user.status("INBOX").unwrap().messages, i);
        fs::write(new.join(format!("{i}.race.host")), msg(i as usize)).unwrap();
        assert_eq!(
            user.status("INBOX").unwrap().messages,
            i + 1,
            "file {i} missed"
        );
    }
}

/// The rows of `list` as the index has them (file names aside).
fn rows_without_files(
    rows: impl IntoIterator<Item = tern_store::mailbox::MessageRow>,
) -> Vec<(u32, Flags, u64, u64, String)> {
    rows.into_iter()
        .map(|m| (m.uid, m.flags, m.modseq, m.size, m.email_id))
        .collect()
}

#[test]
fn sessions_share_one_message_list_kept_in_step_with_the_index() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    for i in 0..600 {
        user.append(inbox.id, &mut &msg(i)[..], &Flags::default(), None)
            .unwrap();
    }
    // Two SELECTs of an unchanged mailbox: one list, shared.
    let (row, a) = user.select_list("INBOX").unwrap();
    let (_, b) = user.select_list("INBOX").unwrap();
    assert!(a.ptr_eq(&b));
    assert_eq!(a.len(), 600);
    assert!(a.iter().all(|m| m.file_name.is_empty()));
    let (ch, c) = user.changes_and_list(inbox.id, row.highestmodseq).unwrap();
    assert!(ch.changed.is_empty() && ch.vanished.is_empty());
    assert!(c.ptr_eq(&a));

    // Changes made by this store and by another one (another process:
    // its own index connection and lock) bring a new list; the old one
    // is untouched for the sessions that still show it.
    user.store_flags(inbox.id, &[5], FlagOp::Add, &seen(), None)
        .unwrap();
    user.store_flags(inbox.id, &[1, 300], FlagOp::Add, &deleted(), None)
        .unwrap();
    user.expunge(inbox.id, None).unwrap();
    {
        let other = store(root.path());
        let them = other.open(USER).unwrap();
        them.append(inbox.id, &mut &msg(900)[..], &seen(), None)
            .unwrap();
        them.store_flags(inbox.id, &[600], FlagOp::Add, &seen(), None)
            .unwrap();
    }
    let (ch, d) = user.changes_and_list(inbox.id, row.highestmodseq).unwrap();
    assert_eq!(ch.vanished, [1, 300]);
    assert_eq!(
        ch.changed.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [5, 600, 601]
    );
    assert!(!d.ptr_eq(&a));
    assert_eq!(a.len(), 600);
    assert_eq!(a.by_uid(5).unwrap().flags, Flags::default());
    // The list is what the index holds, row for row.
    let full = user.select("INBOX").unwrap();
    assert_eq!(
        rows_without_files(d.iter().cloned()),
        rows_without_files(full.messages)
    );
    assert_eq!(d.by_uid(5).unwrap().flags, seen());
    // And shared again from there.
    let (_, e) = user.select_list("INBOX").unwrap();
    assert!(e.ptr_eq(&d));
}

#[test]
fn intake_fast_path_files_are_picked_up_lazily() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    let mut watch = user.watch(inbox.id);
    // What the spool's group committer does today: tmp/ → new/, fsynced,
    // with no index involved (the old MailStore API writes the same way).
    let old = MailStore::new(root.path().to_path_buf());
    let md = old.maildir(USER).unwrap();
    for i in 0..3 {
        let name = unique_name(1_700_000_000, "0123456789ABCDEF", i, "mx.example.test");
        md.deliver(&name, b"Return-Path: <>\r\n", &mut &msg(i)[..])
            .unwrap();
    }
    // The writer tells the store; watchers wake.
    mb.notify_external(USER);
    assert!(watch.take_changed());
    let st = user.status("INBOX").unwrap();
    assert_eq!(st.messages, 3);
    assert_eq!(st.mailbox.uidnext, 4);
    let sel = user.select("INBOX").unwrap();
    assert!(sel.messages.iter().all(|m| m.file_name.starts_with("new/")));
    // The quarantine target SMTP deliveries get from the store is the
    // store's Junk mailbox.
    let junk = mb.delivery_target(USER, &Folder::Junk, 100).unwrap();
    junk.deliver("1.QJR0.h", b"", &mut &msg(7)[..]).unwrap();
    assert_eq!(user.status("Junk").unwrap().messages, 1);
}

#[test]
fn delivery_under_a_deterministic_name_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let name = unique_name(1_700_000_000, "0123456789ABCDEF", 2, "mx.example.test");
    let a = mb
        .deliver_as(USER, &Folder::Inbox, &name, b"P: 1\r\n", &mut &msg(1)[..])
        .unwrap();
    let dir = user_dir(root.path());
    assert!(dir.join("new").join(&name).is_file());
    // A retry (the queue's record of it was lost) finds it: same UID.
    let b = mb
        .deliver_as(USER, &Folder::Inbox, &name, b"P: 1\r\n", &mut &msg(1)[..])
        .unwrap();
    assert_eq!(a, b);
    // Also once a reader has flagged it (renamed into cur/).
    let user = mb.open(USER).unwrap();
    user.store_flags(
        user.mailbox("INBOX").unwrap().id,
        &[a.uid],
        FlagOp::Add,
        &seen(),
        None,
    )
    .unwrap();
    assert!(dir.join("cur").join(format!("{name}:2,S")).is_file());
    let c = mb
        .deliver_as(USER, &Folder::Inbox, &name, b"", &mut &msg(1)[..])
        .unwrap();
    assert_eq!(c, a);
    assert_eq!(user.status("INBOX").unwrap().messages, 1);
    // A name differing only after the base is another message.
    let other = unique_name(1_700_000_000, "0123456789ABCDEF", 20, "mx.example.test");
    let d = mb
        .deliver_as(USER, &Folder::Junk, &other, b"", &mut &msg(2)[..])
        .unwrap();
    assert_eq!((d.mailbox.as_str(), d.uid), ("Junk", 1));
    for bad in ["", "../x", "a/b", "a:2,S", ".hidden", "a\nb"] {
        assert!(matches!(
            mb.deliver_as(USER, &Folder::Inbox, bad, b"", &mut &b"x"[..]),
            Err(MailboxError::InvalidFileName(_))
        ));
    }
}

#[test]
fn multiappend_stores_all_or_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mb = Mailboxes::new(
        root.path().to_path_buf(),
        StoreConfig {
            quota_bytes: Some(1000),
            ..config()
        },
    );
    let user = mb.open(USER).unwrap();
    let sent = user.mailbox("Sent").unwrap();
    let bodies: Vec<Vec<u8>> = (0..5).map(msg).collect();
    let mut readers: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
    let mut items: Vec<AppendItem<'_>> = readers
        .iter_mut()
        .map(|r| AppendItem {
            body: r,
            flags: seen(),
            internaldate: Some(1_700_000_000),
        })
        .collect();
    let done = user.append_batch(sent.id, &mut items).unwrap();
    assert_eq!(
        done.iter().map(|a| a.uid).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(done.iter().all(|a| a.modseq == done[0].modseq));
    // Too big together: none of them.
    let big = vec![b'x'; 400];
    let mut readers: Vec<&[u8]> = vec![&big[..], &big[..]];
    let mut items: Vec<AppendItem<'_>> = readers
        .iter_mut()
        .map(|r| AppendItem {
            body: r,
            flags: Flags::default(),
            internaldate: None,
        })
        .collect();
    assert!(
        user.append_batch(sent.id, &mut items)
            .unwrap_err()
            .is_over_quota()
    );
    let sel = user.select("Sent").unwrap();
    assert_eq!(sel.messages.len(), 5);
    let dir = user_dir(root.path()).join(".Sent");
    assert_eq!(files_of(&dir).len(), 5);
    assert!(fs::read_dir(dir.join("tmp")).unwrap().next().is_none());
}

#[test]
fn an_append_by_the_selecting_session_claims_recent_before_anyone_hears_of_it() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    // Message 1 arrived while nobody had INBOX selected: still recent.
    user.append(inbox.id, &mut &msg(1)[..], &Flags::default(), None)
        .unwrap();
    let mut woken = user.watch(inbox.id);
    let bodies: Vec<Vec<u8>> = (2..4).map(msg).collect();
    let mut readers: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
    let mut items: Vec<AppendItem<'_>> = readers
        .iter_mut()
        .map(|r| AppendItem {
            body: r,
            flags: Flags::default(),
            internaldate: None,
        })
        .collect();
    let (done, first) = user.append_batch_claiming(inbox.id, &mut items).unwrap();
    assert_eq!(done.iter().map(|a| a.uid).collect::<Vec<_>>(), [2, 3]);
    // The appender owns 1..4; a session woken by the append finds none.
    assert_eq!(first, 1);
    assert!(woken.take_changed());
    assert_eq!(user.claim_recent(inbox.id, 4).unwrap(), 4);
    assert_eq!(user.status("INBOX").unwrap().recent, 0);
    // A plain append leaves its message to whoever claims first.
    user.append_batch(
        inbox.id,
        &mut [AppendItem {
            body: &mut &msg(4)[..],
            flags: Flags::default(),
            internaldate: None,
        }],
    )
    .unwrap();
    assert_eq!(user.status("INBOX").unwrap().recent, 1);
}

#[test]
fn unchanged_since_reports_modified_messages() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    for i in 0..2 {
        user.append(inbox.id, &mut &msg(i)[..], &Flags::default(), None)
            .unwrap();
    }
    let snap = user.select("INBOX").unwrap().mailbox.highestmodseq;
    let r = user
        .store_flags(inbox.id, &[1], FlagOp::Add, &seen(), None)
        .unwrap();
    assert!(r.modseq > snap);
    // A client that saw `snap` tries to flag both: 1 changed since.
    let flagged = Flags::system(SystemFlags::FLAGGED);
    let r2 = user
        .store_flags(inbox.id, &[1, 2], FlagOp::Add, &flagged, Some(snap))
        .unwrap();
    assert_eq!(r2.failed, [1]);
    assert_eq!(r2.messages.len(), 1);
    assert_eq!(r2.messages[0].uid, 2);
    assert_eq!(r2.messages[0].flags, flagged);
    let sel = user.select("INBOX").unwrap();
    assert_eq!(sel.messages[0].flags, seen());
}

#[test]
fn copy_and_move_map_uids_and_keep_email_ids() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    let trash = user.mailbox("Trash").unwrap();
    let archive = user.mailbox("Archive").unwrap();
    let kw = Flags::from_imap(&["\\Seen", "Work"]).unwrap();
    for i in 0..4 {
        user.append(inbox.id, &mut &msg(i)[..], &kw, Some(1_700_000_000))
            .unwrap();
    }
    let src = user.select("INBOX").unwrap().messages;
    let c = user.copy(inbox.id, &[2, 4, 99], archive.id).unwrap();
    assert_eq!(c.uidvalidity, archive.uidvalidity);
    assert_eq!(c.uids, [(2, 1), (4, 2)]);
    let arch = user.select("Archive").unwrap().messages;
    assert_eq!(arch[0].email_id, src[1].email_id);
    assert_eq!(arch[0].flags, kw);
    assert_eq!(arch[0].internaldate, 1_700_000_000);
    let mut body = Vec::new();
    user.open_message(archive.id, 2)
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    assert_eq!(body, msg(3));

    let m = user.move_messages(inbox.id, &[1, 2], trash.id).unwrap();
    assert_eq!(m.uids, [(1, 1), (2, 2)]);
    let sel = user.select("INBOX").unwrap();
    assert_eq!(
        sel.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [3, 4]
    );
    let t = user.select("Trash").unwrap().messages;
    assert_eq!(t[0].email_id, src[0].email_id);
    assert_eq!(t[1].flags, kw);
    let ch = user.changes_since(inbox.id, 1).unwrap();
    assert_eq!(ch.vanished, [1, 2]);
    assert!(matches!(
        user.move_messages(inbox.id, &[3], inbox.id),
        Err(MailboxError::InvalidTarget(_))
    ));
    // Files and index agree in every mailbox.
    for name in ["INBOX", "Trash", "Archive"] {
        let row = user.select(name).unwrap();
        let dir = if name == "INBOX" {
            user_dir(root.path())
        } else {
            user_dir(root.path()).join(format!(".{name}"))
        };
        let idx: Vec<String> = row.messages.iter().map(|m| m.file_name.clone()).collect();
        let mut idx_sorted = idx.clone();
        idx_sorted.sort();
        assert_eq!(files_of(&dir), idx_sorted, "{name}");
    }
    assert_eq!(user.quota().unwrap().messages, 6);
}

#[test]
fn create_delete_rename_and_the_hierarchy() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let dir = user_dir(root.path());
    user.create("Work/Reports/2026", None).unwrap();
    assert!(dir.join(".Work.Reports.2026/cur").is_dir());
    assert!(dir.join(".Work/cur").is_dir(), "parents are created");
    // Names are case-sensitive, except INBOX.
    assert!(user.create("work/reports/2026", None).is_ok());
    assert!(matches!(
        user.create("Work", None),
        Err(MailboxError::Exists(_))
    ));
    assert!(matches!(
        user.create("inbox", None),
        Err(MailboxError::Exists(_))
    ));
    let list = user.list().unwrap();
    let work = list.iter().find(|e| e.name.as_str() == "Work").unwrap();
    assert!(work.has_children && work.id.is_some());
    let leaf = list
        .iter()
        .find(|e| e.name.as_str() == "Work/Reports/2026")
        .unwrap();
    assert!(!leaf.has_children && !leaf.subscribed);

    // DELETE a parent: it becomes \Noselect, its children stay.
    let w = user.mailbox("Work").unwrap();
    user.append(w.id, &mut &msg(1)[..], &Flags::default(), None)
        .unwrap();
    user.subscribe("Work", true).unwrap();
    user.delete("Work").unwrap();
    assert!(!dir.join(".Work").exists());
    let list = user.list().unwrap();
    let work = list.iter().find(|e| e.name.as_str() == "Work").unwrap();
    assert!(work.id.is_none() && work.has_children && work.subscribed);
    assert!(matches!(
        user.delete("Work"),
        Err(MailboxError::HasChildren(_))
    ));
    assert!(matches!(
        user.delete("Nope"),
        Err(MailboxError::NoSuchMailbox(_))
    ));
    assert!(matches!(
        user.delete("INBOX"),
        Err(MailboxError::CannotDeleteInbox)
    ));
    assert_eq!(user.quota().unwrap().messages, 0);

    // RENAME moves the whole subtree; UIDVALIDITY and messages stay.
    let r = user.mailbox("Work/Reports").unwrap();
    user.append(r.id, &mut &msg(2)[..], &seen(), None).unwrap();
    user.subscribe("Work/Reports", true).unwrap();
    user.rename("Work/Reports", "Archive/Old Reports").unwrap();
    assert!(dir.join(".Archive.Old Reports.2026/cur").is_dir());
    assert!(!dir.join(".Work.Reports").exists());
    let moved = user.status("Archive/Old Reports").unwrap();
    assert_eq!(moved.mailbox.id, r.id);
    assert_eq!(moved.mailbox.uidvalidity, r.uidvalidity);
    assert_eq!(moved.messages, 1);
    let list = user.list().unwrap();
    assert!(
        list.iter()
            .any(|e| e.name.as_str() == "Archive/Old Reports/2026")
    );
    assert!(
        list.iter()
            .find(|e| e.name.as_str() == "Archive/Old Reports")
            .unwrap()
            .subscribed
    );
    assert!(matches!(
        user.rename("Archive", "Archive/Sub"),
        Err(MailboxError::InvalidTarget(_))
    ));
    assert!(matches!(
        user.rename("Sent", "Trash"),
        Err(MailboxError::Exists(_))
    ));

    // RENAME INBOX: its messages move, INBOX stays (empty).
    let inbox = user.mailbox("INBOX").unwrap();
    for i in 0..2 {
        user.append(inbox.id, &mut &msg(i)[..], &seen(), None)
            .unwrap();
    }
    user.rename("INBOX", "Old Inbox").unwrap();
    assert_eq!(user.status("INBOX").unwrap().messages, 0);
    assert_eq!(user.status("INBOX").unwrap().mailbox.uidnext, 3);
    let old = user.select("Old Inbox").unwrap();
    assert_eq!(old.messages.len(), 2);
    assert_eq!(old.messages[0].flags, seen());
}

#[test]
fn hostile_mailbox_names_never_leave_the_users_maildir() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let dir = user_dir(root.path());
    let long = "x".repeat(300);
    let deep = vec!["d"; 40].join("/");
    for bad in [
        "../../../etc",
        "..",
        "/etc/passwd",
        "a\0b",
        "a\r\nb",
        "",
        "a//b",
        long.as_str(),
        deep.as_str(),
        "*",
        "INBOX/../..",
    ] {
        assert!(
            matches!(user.create(bad, None), Err(MailboxError::Name(_))),
            "{bad:?} accepted"
        );
    }
    // Allowed names that look like paths stay single directories inside.
    for odd in [
        ".hidden",
        "...",
        "a.b/c.d",
        "..x",
        "~root",
        "back\\slash",
        "Entwürfe/日本語",
        "&amp",
        "dot./.dot",
    ] {
        user.create(odd, None).unwrap();
    }
    let mut count = 0;
    for e in fs::read_dir(root.path()).unwrap() {
        assert_eq!(e.unwrap().file_name(), "example.test");
    }
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(!name.contains('/') && name != "." && name != "..");
        if name.starts_with('.') {
            assert!(e.path().join("cur").is_dir(), "{name}");
            count += 1;
        }
    }
    assert!(count >= 9 + 5);
    // Each one round-trips through its directory: reopen with no index.
    let before: Vec<String> = user
        .list()
        .unwrap()
        .iter()
        .filter(|e| e.id.is_some())
        .map(|e| e.name.to_string())
        .collect();
    drop((user, mb));
    fs::remove_file(dir.join("tern.index.sqlite")).unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let after: Vec<String> = user
        .list()
        .unwrap()
        .iter()
        .filter(|e| e.id.is_some())
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(before, after);
    assert!(after.contains(&"Entwürfe/日本語".to_owned()));
    assert!(dir.join(".Entw&APw-rfe.&ZeVnLIqe-").is_dir());
    assert!(dir.join(".a\\2eb.c\\2ed").is_dir());
}

#[test]
fn mailbox_count_is_bounded() {
    let root = tempfile::tempdir().unwrap();
    let mb = Mailboxes::new(
        root.path().to_path_buf(),
        StoreConfig {
            max_mailboxes: 8,
            ..config()
        },
    );
    let user = mb.open(USER).unwrap();
    user.create("one", None).unwrap();
    user.create("two", None).unwrap();
    assert!(matches!(
        user.create("three", None),
        Err(MailboxError::TooManyMailboxes(8))
    ));
    assert!(matches!(
        user.create("a/b", None),
        Err(MailboxError::TooManyMailboxes(8))
    ));
    // Subscriptions to names that do not exist are bounded too.
    for i in 0..8 {
        let _ = user.subscribe(&format!("ghost{i}"), true);
    }
    assert!(matches!(
        user.subscribe("one-more", true),
        Err(MailboxError::TooManyMailboxes(8))
    ));
    user.subscribe("Sent", true).unwrap();
    user.subscribe("Sent", false).unwrap();
}

#[test]
fn quota_refuses_append_copy_and_delivery() {
    let root = tempfile::tempdir().unwrap();
    let mb = Mailboxes::new(
        root.path().to_path_buf(),
        StoreConfig {
            quota_bytes: Some(100),
            ..config()
        },
    );
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    let body = [b'x'; 60];
    user.append(inbox.id, &mut &body[..], &Flags::default(), None)
        .unwrap();
    let err = user
        .append(inbox.id, &mut &body[..], &Flags::default(), None)
        .unwrap_err();
    assert!(err.is_over_quota(), "{err}");
    assert!(matches!(
        err,
        MailboxError::OverQuota {
            used: 60,
            limit: 100,
            size: 60
        }
    ));
    let err = mb
        .deliver(USER, &Folder::Inbox, b"", &mut &body[..])
        .unwrap_err();
    assert!(err.is_over_quota());
    let trash = user.mailbox("Trash").unwrap();
    assert!(
        user.copy(inbox.id, &[1], trash.id)
            .unwrap_err()
            .is_over_quota()
    );
    assert!(mb.check_quota(USER, 41).is_err());
    assert!(mb.check_quota(USER, 40).is_ok());
    // Nothing was left behind.
    assert_eq!(files_of(&user_dir(root.path())).len(), 1);
    assert!(
        fs::read_dir(user_dir(root.path()).join("tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    let q = user.quota().unwrap();
    assert_eq!((q.used, q.limit), (60, Some(100)));
    // Moving does not count twice.
    user.move_messages(inbox.id, &[1], trash.id).unwrap();
    assert_eq!(user.quota().unwrap().used, 60);
}

#[test]
fn deliver_returns_the_uid_and_wakes_idle_sessions_within_a_second() {
    let root = tempfile::tempdir().unwrap();
    let mb = Arc::new(store(root.path()));
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    let junk = user.mailbox("Junk").unwrap();
    let mut watch = user.watch(inbox.id);
    let mut junk_watch = user.watch(junk.id);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mb2 = Arc::clone(&mb);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        mb2.deliver(
            USER,
            &Folder::Inbox,
            b"Delivered-To: alice\r\n",
            &mut &msg(1)[..],
        )
        .unwrap()
    });
    let start = Instant::now();
    let woke = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .unwrap_or(false)
    });
    assert!(woke, "no wake-up within 1 s");
    assert!(start.elapsed() < Duration::from_secs(1));
    let d = t.join().unwrap();
    assert_eq!(d.mailbox.as_str(), "INBOX");
    assert_eq!((d.uidvalidity, d.uid), (inbox.uidvalidity, 1));
    assert!(!junk_watch.take_changed(), "other mailboxes are not woken");
    let ch = user.changes_since(inbox.id, inbox.highestmodseq).unwrap();
    assert_eq!(ch.changed.len(), 1);
    assert!(ch.changed[0].file_name.starts_with("new/"));

    // Junk, and a named folder created on the fly.
    let d = mb
        .deliver(USER, &Folder::Junk, b"", &mut &msg(2)[..])
        .unwrap();
    assert_eq!((d.mailbox.as_str(), d.uid), ("Junk", 1));
    assert!(junk_watch.take_changed());
    let lists = Folder::Named(MailboxName::parse("Lists/rust").unwrap());
    let d = mb.deliver(USER, &lists, b"", &mut &msg(3)[..]).unwrap();
    assert_eq!((d.mailbox.as_str(), d.uid), ("Lists/rust", 1));
    assert_eq!(user.status("Lists/rust").unwrap().messages, 1);
}

#[test]
fn poll_notices_files_written_by_another_process() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    let mut watch = user.watch(inbox.id);
    assert!(!user.poll(inbox.id).unwrap());
    fs::write(user_dir(root.path()).join("new/123.other.host"), msg(1)).unwrap();
    assert!(user.poll(inbox.id).unwrap());
    assert!(watch.take_changed());
    assert!(!user.poll(inbox.id).unwrap());
    assert!(!watch.take_changed());
    // A second store on the same files (another process) changes the
    // index: poll sees it through the database, not the directories.
    let other = store(root.path());
    let other_user = other.open(USER).unwrap();
    other_user.subscribe("Somewhere", true).unwrap();
    assert!(user.poll(inbox.id).unwrap());
    assert!(watch.take_changed());
}

#[test]
fn a_corrupt_or_lost_index_is_rebuilt_from_the_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = user_dir(root.path());
    let (v_inbox, v_sent);
    {
        let mb = store(root.path());
        let user = mb.open(USER).unwrap();
        let inbox = user.mailbox("INBOX").unwrap();
        let sent = user.mailbox("Sent").unwrap();
        v_inbox = inbox.uidvalidity;
        v_sent = sent.uidvalidity;
        for i in 0..5 {
            user.append(inbox.id, &mut &msg(i)[..], &Flags::default(), None)
                .unwrap();
        }
        user.append(sent.id, &mut &msg(9)[..], &seen(), None)
            .unwrap();
        user.store_flags(inbox.id, &[2, 4], FlagOp::Add, &seen(), None)
            .unwrap();
        // Keywords get Dovecot's letters (dovecot-keywords), so they too
        // survive in the file names.
        let junk = Flags::from_imap(&["$Junk", "Work"]).unwrap();
        user.store_flags(inbox.id, &[2], FlagOp::Add, &junk, None)
            .unwrap();
        user.store_flags(
            inbox.id,
            &[4],
            FlagOp::Add,
            &Flags::system(SystemFlags::FLAGGED.union(SystemFlags::ANSWERED)),
            None,
        )
        .unwrap();
        user.create("Projects/Tern", None).unwrap();
    }
    // Scribble over the database.
    let db = dir.join("tern.index.sqlite");
    let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.write_all(&[0xA5; 4096]).unwrap();
    drop(f);
    let _ = fs::remove_file(dir.join("tern.index.sqlite-wal"));
    let _ = fs::remove_file(dir.join("tern.index.sqlite-shm"));

    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let sel = user.select("INBOX").unwrap();
    assert_ne!(
        sel.mailbox.uidvalidity, v_inbox,
        "UIDVALIDITY changes on rebuild"
    );
    assert!(sel.mailbox.uidvalidity > v_inbox);
    assert_eq!(sel.messages.len(), 5);
    let flags: Vec<Vec<String>> = sel.messages.iter().map(|m| m.flags.imap_names()).collect();
    let mut expect: Vec<Vec<String>> = vec![vec![]; 5];
    expect[1] = vec!["\\Seen".into(), "$Junk".into(), "Work".into()];
    expect[3] = vec!["\\Seen".into(), "\\Answered".into(), "\\Flagged".into()];
    assert_eq!(flags, expect, "flags come back from the file names");
    let sent = user.select("Sent").unwrap();
    assert_ne!(sent.mailbox.uidvalidity, v_sent);
    assert_eq!(sent.messages[0].flags, seen());
    assert_eq!(sent.mailbox.special_use, Some(SpecialUse::Sent));
    assert!(
        user.list()
            .unwrap()
            .iter()
            .any(|e| e.name.as_str() == "Projects/Tern")
    );
    assert_eq!(user.quota().unwrap().messages, 6);
    // The broken database was kept aside for inspection.
    assert!(fs::read_dir(&dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".corrupt.")
    }));
    // UIDs in the new UIDVALIDITY start at 1, in file order.
    assert_eq!(
        sel.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

#[test]
fn reindex_finds_a_damaged_index_and_rebuilds_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = user_dir(root.path());
    let v;
    {
        let mb = store(root.path());
        let user = mb.open(USER).unwrap();
        let inbox = user.mailbox("INBOX").unwrap();
        v = inbox.uidvalidity;
        for i in 0..300 {
            let flags = if i % 3 == 0 { seen() } else { Flags::default() };
            user.append(inbox.id, &mut &msg(i)[..], &flags, None)
                .unwrap();
        }
        // A healthy index: reindex keeps it (and its UIDVALIDITY).
        assert!(!user.reindex().unwrap());
        assert_eq!(user.mailbox("INBOX").unwrap().uidvalidity, v);
    }
    // Damage pages in the middle; the header stays valid, so opening
    // (which reads only the schema) works.
    let db = dir.join("tern.index.sqlite");
    let len = fs::metadata(&db).unwrap().len();
    assert!(len > 16384, "{len}");
    let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&vec![0x5A; 8192]).unwrap();
    drop(f);
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    let mut watch = user.watch(inbox.id);
    assert!(user.reindex().unwrap(), "damage not found");
    assert!(watch.take_changed(), "sessions are told");
    let sel = user.select("INBOX").unwrap();
    assert!(sel.mailbox.uidvalidity > v);
    assert_eq!(sel.messages.len(), 300);
    let seen_count = sel
        .messages
        .iter()
        .filter(|m| m.flags.system.contains(SystemFlags::SEEN))
        .count();
    assert_eq!(seen_count, 100);
    // Subscriptions come back for every mailbox found.
    assert!(
        user.list()
            .unwrap()
            .iter()
            .filter(|e| e.id.is_some())
            .all(|e| e.subscribed)
    );
    // And the rebuilt index is durable: a new process sees the same.
    drop((user, mb));
    let mb = store(root.path());
    let again = mb.open(USER).unwrap().select("INBOX").unwrap();
    assert_eq!(again.mailbox.uidvalidity, sel.mailbox.uidvalidity);
    assert_eq!(again.messages.len(), 300);
}

#[test]
fn an_index_from_a_newer_program_is_refused_not_misread() {
    let root = tempfile::tempdir().unwrap();
    drop(store(root.path()).open(USER).unwrap());
    let db = user_dir(root.path()).join("tern.index.sqlite");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
            [],
        )
        .unwrap();
    }
    let err = store(root.path()).open(USER).unwrap_err();
    assert!(err.to_string().contains("999"), "{err}");
    assert!(db.exists(), "not thrown away");
}

// ----- kill -9 -----------------------------------------------------------

const CHILD_ENV: &str = "TERN_MAILSTORE_KILL_CHILD";

/// Run by the parent as a separate process: concurrent delivery, APPEND,
/// STORE and EXPUNGE, logging every acknowledged operation to `ack.log`
/// (one `write` per line, so a kill never leaves half a line that counts).
#[test]
fn kill_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = PathBuf::from(root);
    let mb = Arc::new(store(&root.join("mail")));
    let user = mb.open(USER).unwrap();
    user.create("Work", None).ok();
    let log = Arc::new(
        fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(root.join("ack.log"))
            .unwrap(),
    );
    let write = |log: &fs::File, line: String| {
        (&*log).write_all(line.as_bytes()).unwrap();
    };
    let inbox = user.mailbox("INBOX").unwrap();
    let work = user.mailbox("Work").unwrap();
    write(
        &log,
        format!("V {} {}\n", inbox.uidvalidity, work.uidvalidity),
    );
    let mut threads = Vec::new();
    // Delivery to INBOX.
    {
        let (mb, log) = (Arc::clone(&mb), Arc::clone(&log));
        threads.push(std::thread::spawn(move || {
            for i in 0.. {
                let d = mb
                    .deliver(USER, &Folder::Inbox, b"X-Test: 1\r\n", &mut &msg(i)[..])
                    .unwrap();
                write(&log, format!("D {}\n", d.uid));
            }
        }));
    }
    // APPEND to Work, marking every other message \Deleted.
    {
        let (user, log) = (Arc::clone(&user), Arc::clone(&log));
        threads.push(std::thread::spawn(move || {
            for i in 0.. {
                let flags = if i % 2 == 0 { deleted() } else { seen() };
                let a = user
                    .append(work.id, &mut &msg(i)[..], &flags, None)
                    .unwrap();
                write(&log, format!("A {} {}\n", a.uid, flags.system.bits()));
            }
        }));
    }
    // EXPUNGE in Work.
    {
        let (user, log) = (Arc::clone(&user), Arc::clone(&log));
        threads.push(std::thread::spawn(move || {
            loop {
                let gone = user.expunge(work.id, None).unwrap();
                for uid in gone {
                    write(&log, format!("X {uid}\n"));
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        }));
    }
    // MOVE from Work to Archive (the \Seen ones, which EXPUNGE leaves).
    {
        let (user, log) = (Arc::clone(&user), Arc::clone(&log));
        let archive = user.mailbox("Archive").unwrap();
        threads.push(std::thread::spawn(move || {
            loop {
                let sel = user.select("Work").unwrap();
                let uids: Vec<u32> = sel
                    .messages
                    .iter()
                    .filter(|m| !m.flags.system.contains(SystemFlags::DELETED))
                    .map(|m| m.uid)
                    .take(3)
                    .collect();
                if !uids.is_empty() {
                    let r = user.move_messages(work.id, &uids, archive.id).unwrap();
                    for (from, to) in r.uids {
                        write(&log, format!("M {from} {to}\n"));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    // STORE on INBOX: toggle \Flagged, logging intent and acknowledgement.
    {
        let (user, log) = (Arc::clone(&user), Arc::clone(&log));
        threads.push(std::thread::spawn(move || {
            let flagged = Flags::system(SystemFlags::FLAGGED);
            let mut n: u64 = 0;
            loop {
                let sel = user.select("INBOX").unwrap();
                if sel.messages.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let m = &sel.messages[(n >> 33) as usize % sel.messages.len()];
                let on = !m.flags.system.contains(SystemFlags::FLAGGED);
                let op = if on { FlagOp::Add } else { FlagOp::Remove };
                write(&log, format!("P {} {}\n", m.uid, u8::from(on)));
                let r = user
                    .store_flags(sel.mailbox.id, &[m.uid], op, &flagged, None)
                    .unwrap();
                assert_eq!(r.messages.len(), 1);
                write(&log, format!("S {} {}\n", m.uid, u8::from(on)));
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn pseudo_random(seed: u64) -> u64 {
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x
}

#[test]
fn kill_9_during_concurrent_writes_loses_nothing_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for trial in 0..4u64 {
        let root = tempfile::tempdir().unwrap();
        // The first trial leaves a store behind for the next runs of the
        // child to reopen: run each trial twice on the same tree.
        for round in 0..2u64 {
            let mut child = Command::new(&exe)
                .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, root.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Wait until the child is busy (every writer has acknowledged
            // something in this round: a starved delivery thread is not
            // "nothing delivered"), then kill it at a random moment.
            let log = root.path().join("ack.log");
            let size = || fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let initial = size();
            let this_round = || {
                let all = fs::read(&log).unwrap_or_default();
                let new = &all[(initial as usize).min(all.len())..];
                let has = |p: &[u8]| new.split(|&b| b == b'\n').any(|l| l.starts_with(p));
                has(b"D ") && has(b"A ")
            };
            let start = Instant::now();
            while size() < initial + 200 || !this_round() {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "child never started"
                );
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("child exited early: {status}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let delay = 20 + pseudo_random(u64::from(nanos) + trial * 7 + round) % 500;
            std::thread::sleep(Duration::from_millis(delay));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            check_after_kill(root.path(), trial, round);
        }
    }
}

fn check_after_kill(root: &Path, trial: u64, round: u64) {
    let log = fs::read_to_string(root.join("ack.log")).unwrap();
    // Only whole lines count.
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    // The next run appends after whole lines only.
    fs::write(root.join("ack.log"), complete).unwrap();
    let mut validity: Vec<(u32, u32)> = Vec::new();
    let mut delivered: HashSet<u32> = HashSet::new();
    let mut appended: HashMap<u32, u8> = HashMap::new();
    let mut expunged: HashSet<u32> = HashSet::new();
    // Work UID → Archive UID
    let mut moved: HashMap<u32, u32> = HashMap::new();
    // uid → (acknowledged state, state of an operation begun after it)
    let mut flagged: BTreeMap<u32, (Option<bool>, Option<bool>)> = BTreeMap::new();
    for line in complete.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let n = |i: usize| parts[i].parse::<u32>().unwrap();
        match parts[0] {
            "V" => validity.push((n(1), n(2))),
            "D" => assert!(delivered.insert(n(1)), "UID {} delivered twice", n(1)),
            "A" => assert!(
                appended.insert(n(1), n(2) as u8).is_none(),
                "UID {} appended twice",
                n(1)
            ),
            "X" => assert!(expunged.insert(n(1)), "UID {} expunged twice", n(1)),
            "M" => assert!(
                moved.insert(n(1), n(2)).is_none(),
                "UID {} moved twice",
                n(1)
            ),
            "P" => flagged.entry(n(1)).or_default().1 = Some(n(2) == 1),
            "S" => *flagged.entry(n(1)).or_default() = (Some(n(2) == 1), None),
            other => panic!("bad log line {other:?}"),
        }
    }
    assert!(
        !delivered.is_empty(),
        "trial {trial}/{round}: nothing delivered"
    );
    eprintln!(
        "trial {trial}/{round}: {} delivered, {} appended, {} expunged, {} moved, {} flag changes acknowledged",
        delivered.len(),
        appended.len(),
        expunged.len(),
        moved.len(),
        complete.lines().filter(|l| l.starts_with('S')).count()
    );
    // Every run saw the same UIDVALIDITYs: the index was never rebuilt.
    assert!(validity.windows(2).all(|w| w[0] == w[1]), "{validity:?}");

    let mb = store(&root.join("mail"));
    let user = mb.open(USER).unwrap();
    let inbox = user.select("INBOX").unwrap();
    let work = user.select("Work").unwrap();
    assert_eq!(
        (inbox.mailbox.uidvalidity, work.mailbox.uidvalidity),
        validity[0],
        "trial {trial}/{round}: UIDVALIDITY changed"
    );
    let in_inbox: HashMap<u32, &tern_store::mailbox::MessageRow> =
        inbox.messages.iter().map(|m| (m.uid, m)).collect();
    for uid in &delivered {
        assert!(
            in_inbox.contains_key(uid),
            "trial {trial}/{round}: delivered UID {uid} lost"
        );
    }
    let in_work: HashSet<u32> = work.messages.iter().map(|m| m.uid).collect();
    let archive = user.select("Archive").unwrap();
    let in_archive: HashSet<u32> = archive.messages.iter().map(|m| m.uid).collect();
    for (from, to) in &moved {
        assert!(
            !in_work.contains(from),
            "trial {trial}/{round}: moved UID {from} still in Work"
        );
        assert!(
            in_archive.contains(to),
            "trial {trial}/{round}: moved UID {from} → {to} lost"
        );
    }
    for (uid, bits) in &appended {
        if moved.contains_key(uid) {
            continue;
        }
        if expunged.contains(uid) {
            assert!(
                !in_work.contains(uid),
                "trial {trial}/{round}: expunged UID {uid} is back"
            );
        } else if *bits == SystemFlags::SEEN.bits() {
            // In Work, or moved by a MOVE whose log line the kill cut off
            // (Archive then holds more than the moves logged).
            assert!(
                in_work.contains(uid) || archive.messages.len() > moved.len(),
                "trial {trial}/{round}: appended UID {uid} lost"
            );
        }
    }
    for uid in &expunged {
        // (Its "A" line may be missing: the expunge can be acknowledged
        // before the append's thread logged it.)
        assert!(!in_work.contains(uid));
    }
    let vanished = user.changes_since(work.mailbox.id, 1).unwrap().vanished;
    for uid in &expunged {
        assert!(vanished.contains(uid), "expunged UID {uid} not in VANISHED");
    }
    for (uid, (acked, pending)) in &flagged {
        let Some(m) = in_inbox.get(uid) else {
            panic!("trial {trial}/{round}: flagged UID {uid} lost");
        };
        let now = m.flags.system.contains(SystemFlags::FLAGGED);
        // Delivered unflagged; then the last acknowledged STORE, or the
        // one begun after it, which the kill may or may not have let finish.
        let allowed = [
            acked.unwrap_or(false),
            pending.unwrap_or(acked.unwrap_or(false)),
        ];
        assert!(
            allowed.contains(&now),
            "trial {trial}/{round}: UID {uid} is flagged={now}, acknowledged {acked:?}, pending {pending:?}"
        );
    }
    // UIDs are below UIDNEXT and unique; files and index agree.
    for sel in [&inbox, &work, &archive] {
        let dir = if sel.mailbox.name.is_inbox() {
            root.join("mail/example.test/alice")
        } else {
            root.join(format!("mail/example.test/alice/.{}", sel.mailbox.name))
        };
        let mut seen_uids = HashSet::new();
        for m in &sel.messages {
            assert!(m.uid < sel.mailbox.uidnext);
            assert!(seen_uids.insert(m.uid));
            let (_, fname) = m.file_name.split_once('/').unwrap();
            let letters = split_file_name(fname).1;
            assert_eq!(
                Flags::from_maildir_letters(letters, &m.flags).system,
                m.flags.system,
                "{}",
                m.file_name
            );
            assert!(dir.join(&m.file_name).is_file(), "{} missing", m.file_name);
        }
        let mut idx: Vec<String> = sel.messages.iter().map(|m| m.file_name.clone()).collect();
        idx.sort();
        assert_eq!(
            files_of(&dir),
            idx,
            "trial {trial}/{round}: files and index differ"
        );
    }
    let max_delivered = delivered.iter().max().copied().unwrap_or(0);
    assert!(inbox.mailbox.uidnext > max_delivered);
    let max_appended = appended.keys().max().copied().unwrap_or(0);
    assert!(work.mailbox.uidnext > max_appended);
}

/// POP3 UPDATE: exactly the UIDs given go, whatever their flags; UIDs
/// already gone are skipped; a stale UIDVALIDITY removes nothing.
#[test]
fn remove_uids_removes_exactly_those_under_their_uidvalidity() {
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    let inbox = user.mailbox("INBOX").unwrap();
    for i in 0..4 {
        user.append(inbox.id, &mut &msg(i)[..], &Flags::default(), None)
            .unwrap();
    }
    assert!(matches!(
        user.remove_uids(inbox.id, inbox.uidvalidity.wrapping_add(1), &[1]),
        Err(MailboxError::UidValidityChanged)
    ));
    assert_eq!(user.select("INBOX").unwrap().messages.len(), 4);
    let removed = user
        .remove_uids(inbox.id, inbox.uidvalidity, &[2, 4, 9])
        .unwrap();
    assert_eq!(removed, [2, 4]);
    let left: Vec<u32> = user
        .select("INBOX")
        .unwrap()
        .messages
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(left, [1, 3]);
    assert_eq!(files_of(&user_dir(root.path())).len(), 2);
    assert_eq!(
        user.remove_uids(inbox.id, inbox.uidvalidity, &[2]).unwrap(),
        Vec::<u32>::new()
    );
}

/// A crash in the middle of `remove_uids` (some files unlinked, the index
/// not committed) is rolled forward at the next open from the journal the
/// store wrote first (`tern.removing`: `<mailbox dir>\t<file base>` per
/// line): all the messages go, never some.
#[test]
fn an_interrupted_remove_is_completed_at_the_next_open() {
    let root = tempfile::tempdir().unwrap();
    let dir = user_dir(root.path());
    {
        let mb = store(root.path());
        let user = mb.open(USER).unwrap();
        let inbox = user.mailbox("INBOX").unwrap();
        for i in 0..3 {
            user.append(inbox.id, &mut &msg(i)[..], &Flags::default(), None)
                .unwrap();
        }
        let sel = user.select("INBOX").unwrap();
        // The state a kill -9 after the journal and the first unlink leaves.
        let doomed = [&sel.messages[0], &sel.messages[2]];
        let mut journal = String::new();
        for m in doomed {
            let name = m.file_name.split_once('/').unwrap().1;
            journal.push_str(&format!("\t{}\n", split_file_name(name).0));
        }
        // One of them renamed by another program meanwhile (a flag change).
        let (base, _) = split_file_name(doomed[1].file_name.split_once('/').unwrap().1);
        fs::rename(
            dir.join(&doomed[1].file_name),
            dir.join(format!("cur/{base}:2,S")),
        )
        .unwrap();
        fs::write(dir.join("tern.removing"), journal).unwrap();
        fs::remove_file(dir.join(&doomed[0].file_name)).unwrap();
        // A hostile line is ignored.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.join("tern.removing"))
            .unwrap();
        f.write_all(b"../..\tx\n.Trash\t../../x\n").unwrap();
    }
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    assert!(!dir.join("tern.removing").exists());
    let left: Vec<u32> = user
        .select("INBOX")
        .unwrap()
        .messages
        .iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(left, [2]);
    assert_eq!(files_of(&dir).len(), 1);
}

#[test]
fn delivery_target_enforces_the_quota_counting_files_the_index_has_not_seen() {
    let root = tempfile::tempdir().unwrap();
    let mb = Mailboxes::new(
        root.path().to_path_buf(),
        StoreConfig {
            quota_bytes: Some(1000),
            ..config()
        },
    );
    // SMTP deliveries write their files themselves (the spool's group
    // committer), with no index commit: a flood must still be stopped.
    for i in 0..3 {
        let md = mb.delivery_target(USER, &Folder::Inbox, 300).unwrap();
        let name = unique_name(1_700_000_000, "0123456789ABCDEF", i, "mx.example.test");
        md.deliver(&name, b"", &mut &[b'x'; 300][..]).unwrap();
    }
    match mb.delivery_target(USER, &Folder::Inbox, 300) {
        Err(MailboxError::OverQuota { used, limit, size }) => {
            assert_eq!((used, limit, size), (900, 1000, 300));
        }
        other => panic!("{other:?}"),
    }
    let md = mb.delivery_target(USER, &Folder::Inbox, 100).unwrap();
    md.deliver("last.QR0.h", b"", &mut &[b'y'; 100][..])
        .unwrap();
    // Full to the byte: "is there room at all?" (size 0) is refused too,
    // also for the Junk folder (one quota per user).
    assert!(matches!(
        mb.delivery_target(USER, &Folder::Inbox, 0),
        Err(MailboxError::OverQuota { .. })
    ));
    assert!(matches!(
        mb.delivery_target(USER, &Folder::Junk, 1),
        Err(MailboxError::OverQuota { .. })
    ));
    // Nothing was refused that the user's mailboxes do not show.
    assert_eq!(mb.open(USER).unwrap().status("INBOX").unwrap().messages, 4);
}

// ----- the POP3 maildrop lock ----------------------------------------------

const LOCK_CHILD_ENV: &str = "TERN_MAILSTORE_LOCK_CHILD";

/// Run by the parent as a separate process: takes the maildrop lock of
/// the store at `$TERN_MAILSTORE_LOCK_CHILD`, records a login, says so in
/// `locked`, and holds the lock until it is killed.
#[test]
fn maildrop_lock_child() {
    let Ok(root) = std::env::var(LOCK_CHILD_ENV) else {
        return;
    };
    let root = PathBuf::from(root);
    let mb = store(&root);
    let user = mb.open(USER).unwrap();
    let mut lock = user
        .try_lock_maildrop()
        .unwrap()
        .expect("free in the child");
    lock.record_login(1_700_000_123).unwrap();
    fs::write(root.join("locked"), b"1").unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(lock);
}

/// The maildrop lock is exclusive within a process and across processes,
/// does not stop the store's own operations (its `tern.lock` is another
/// file), and is released by a process killed with SIGKILL.
#[test]
fn the_maildrop_lock_holds_across_processes_and_dies_with_its_holder() {
    if std::env::var(LOCK_CHILD_ENV).is_ok() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mb = store(root.path());
    let user = mb.open(USER).unwrap();
    // In one process: a second lock is refused until the first is dropped.
    let first = user.try_lock_maildrop().unwrap().expect("free");
    assert_eq!(first.last_login(), None);
    assert!(user.try_lock_maildrop().unwrap().is_none());
    // Another Mailboxes of the same process (another open of the file).
    assert!(
        store(root.path())
            .open(USER)
            .unwrap()
            .try_lock_maildrop()
            .unwrap()
            .is_none()
    );
    drop(first);
    drop(user.try_lock_maildrop().unwrap().expect("free again"));

    // Another process holds it.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "maildrop_lock_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOCK_CHILD_ENV, root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !root.path().join("locked").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "child never locked"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        user.try_lock_maildrop().unwrap().is_none(),
        "held by the child"
    );
    // The store's operations go on meanwhile (its own lock is free).
    let inbox = user.mailbox("INBOX").unwrap();
    user.append(inbox.id, &mut &msg(1)[..], &Flags::default(), None)
        .unwrap();
    let sel = user.select("INBOX").unwrap();
    assert_eq!(sel.messages.len(), 1);
    user.remove_uids(inbox.id, inbox.uidvalidity, &[sel.messages[0].uid])
        .unwrap();
    // SIGKILL: the kernel releases the lock; the recorded login stays.
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = user
        .try_lock_maildrop()
        .unwrap()
        .expect("released by the kill");
    assert_eq!(lock.last_login(), Some(1_700_000_123));
}
