//! Delivery at intake on a real filesystem: the message is written once,
//! straight into the Maildir, made durable by the spool's group committer,
//! and never queued; an uncommitted one leaves nothing behind.

use std::fs;
use std::path::Path;

use tern_delivery::open_delivered;
use tern_queue::{Envelope, Spool, SpoolOptions};
use tern_store::{Mailboxes, StoreConfig, unique_name};

const HOST: &str = "mx.example.test";
const BODY: &[u8] = b"Subject: test\r\n\r\nHello.\r\n";

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn envelope() -> Envelope {
    Envelope {
        sender: "carol@sender.test"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: Vec::new(),
        received_at: 1_700_000_000,
        ..Envelope::default()
    }
}

#[test]
fn committed_message_is_in_new_and_not_queued() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), SpoolOptions::default()).unwrap();
    let store = Mailboxes::new(dir.path().join("mail"), StoreConfig::default());
    let mut msg = open_delivered(
        &spool,
        &store,
        HOST,
        1_700_000_000,
        "carol@sender.test",
        "alice@example.test",
        "alice@example.test",
    )
    .unwrap();
    assert!(msg.is_delivered());
    let id = msg.id().clone();
    msg.write(BODY).unwrap();
    let maildir = dir.path().join("mail/example.test/alice");
    // Before the commit the message is only in tmp/, never visible.
    assert!(names(&maildir.join("new")).is_empty());
    assert_eq!(names(&maildir.join("tmp")).len(), 1);

    let committed = msg.commit(&envelope()).unwrap().wait_blocking().unwrap();
    assert_eq!(committed, id);
    let name = unique_name(1_700_000_000, id.as_str(), 0, HOST);
    assert_eq!(names(&maildir.join("new")), vec![name.clone()]);
    assert!(names(&maildir.join("tmp")).is_empty());
    let mut want =
        b"Return-Path: <carol@sender.test>\r\nDelivered-To: alice@example.test\r\n".to_vec();
    want.extend_from_slice(BODY);
    assert_eq!(fs::read(maildir.join("new").join(&name)).unwrap(), want);

    // Nothing was queued, so nothing can be delivered a second time.
    assert!(spool.list().unwrap().is_empty());
    assert!(names(&dir.path().join("spool/tmp")).is_empty());
    let stats = spool.stats();
    assert_eq!(stats.commits, 1);
    assert_eq!(stats.file_syncs, 1);
    assert_eq!(stats.dir_fsyncs, 1);
}

#[test]
fn dropped_message_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), SpoolOptions::default()).unwrap();
    let store = Mailboxes::new(dir.path().join("mail"), StoreConfig::default());
    let mut msg = open_delivered(
        &spool,
        &store,
        HOST,
        1,
        "",
        "alice@example.test",
        "alice@example.test",
    )
    .unwrap();
    msg.write(BODY).unwrap();
    drop(msg);
    let maildir = dir.path().join("mail/example.test/alice");
    assert!(names(&maildir.join("tmp")).is_empty());
    assert!(names(&maildir.join("new")).is_empty());
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn an_unsafe_mailbox_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), SpoolOptions::default()).unwrap();
    let store = Mailboxes::new(dir.path().join("mail"), StoreConfig::default());
    assert!(open_delivered(&spool, &store, HOST, 1, "", "x", "../x@example.test").is_err());
    assert!(open_delivered(&spool, &store, HOST, 1, "", "x", "x@../etc").is_err());
}

/// The intake path no longer makes the Maildir's directories for every
/// message, only when opening its file fails: a mailbox whose whole Maildir,
/// or only its `new/`, was removed by hand between two messages still gets
/// both, in `new/`, with `cur/` made again too.
#[test]
fn maildir_removed_between_messages_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), SpoolOptions::default()).unwrap();
    let store = Mailboxes::new(dir.path().join("mail"), StoreConfig::default());
    let maildir = dir.path().join("mail/example.test/alice");
    let deliver = |at: u64| {
        let mut msg = open_delivered(
            &spool,
            &store,
            HOST,
            at,
            "carol@sender.test",
            "alice@example.test",
            "alice@example.test",
        )
        .unwrap();
        msg.write(BODY).unwrap();
        msg.commit(&envelope()).unwrap().wait_blocking().unwrap();
    };

    deliver(1);
    assert_eq!(names(&maildir.join("new")).len(), 1);

    // The whole Maildir goes: the open fails, the Maildir is made again.
    fs::remove_dir_all(&maildir).unwrap();
    deliver(2);
    assert_eq!(names(&maildir.join("new")).len(), 1);
    assert!(maildir.join("cur").is_dir());

    // Only new/ goes: the open in tmp/ works, the commit's rename makes
    // new/ again instead of failing the message.
    fs::remove_dir_all(maildir.join("new")).unwrap();
    deliver(3);
    assert_eq!(names(&maildir.join("new")).len(), 1);
    assert!(names(&maildir.join("tmp")).is_empty());
    assert_eq!(spool.stats().failed_commits, 0);
}
