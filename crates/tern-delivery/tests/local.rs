//! Spool → Maildir delivery end to end on a real filesystem: round trip,
//! the crash window between Maildir rename and state record, deferral and
//! retry, remote recipients, and logging.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tern_delivery::{DeliveryError, LocalReport, deliver_local};
use tern_queue::{Envelope, QueueId, Recipient, Spool, SpoolError, SpoolOptions};
use tern_store::{Folder, Mailboxes, Maildir, StoreConfig, unique_name};

const HOST: &str = "mx.example.test";
const BODY: &[u8] = b"Subject: test\r\n\r\nHello.\r\n";

/// A user's INBOX as SMTP deliveries get it from the store (created).
fn inbox(store: &Mailboxes, user: &str) -> Maildir {
    store.prepare_user(user).unwrap();
    store.delivery_target(user, &Folder::Inbox, 0).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    spool: Option<Spool>,
    store: Mailboxes,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_store(StoreConfig::default())
    }

    fn with_store(config: StoreConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), SpoolOptions::default()).unwrap();
        let store = Mailboxes::new(dir.path().join("mail"), config);
        Fixture {
            dir,
            spool: Some(spool),
            store,
        }
    }

    fn spool(&self) -> &Spool {
        self.spool.as_ref().unwrap()
    }

    /// Drop everything and open the spool again, as after a crash.
    fn restart(&mut self) {
        self.spool = None;
        self.spool =
            Some(Spool::open(&self.dir.path().join("spool"), SpoolOptions::default()).unwrap());
    }

    fn enqueue(&self, rcpts: &[(&str, Option<&str>)]) -> QueueId {
        self.enqueue_notify(rcpts, None)
    }

    fn enqueue_notify(&self, rcpts: &[(&str, Option<&str>)], notify: Option<&str>) -> QueueId {
        self.enqueue_with(rcpts, notify, false)
    }

    fn enqueue_with(
        &self,
        rcpts: &[(&str, Option<&str>)],
        notify: Option<&str>,
        quarantine: bool,
    ) -> QueueId {
        let mut msg = self.spool().create().unwrap();
        msg.write(BODY).unwrap();
        let envelope = Envelope {
            sender: "carol@sender.test"
                .parse::<tern_types::Mailbox>()
                .unwrap()
                .into(),
            recipients: rcpts
                .iter()
                .map(|(address, mailbox)| Recipient {
                    address: address.parse().unwrap(),
                    original: address
                        .to_uppercase()
                        .parse::<tern_types::Mailbox>()
                        .unwrap()
                        .into(),
                    mailbox: mailbox.map(str::to_owned),
                    notify: notify.map(|n| n.parse().unwrap()),
                    orcpt: None,
                    unreadable_address: None,
                    unreadable_original: None,
                })
                .collect(),
            received_at: 1_700_000_000,
            helo: Some("client.test".into()),
            quarantine,
            ..Envelope::default()
        };
        msg.commit(&envelope).unwrap().wait_blocking().unwrap()
    }

    fn deliver(&self, id: &QueueId) -> Result<LocalReport, DeliveryError> {
        deliver_local(self.spool(), &self.store, HOST, id)
    }

    fn maildir(&self, mailbox: &str) -> PathBuf {
        let (local, domain) = mailbox.split_once('@').unwrap();
        self.dir.path().join("mail").join(domain).join(local)
    }

    /// Every message in a mailbox's new/ and cur/.
    fn messages(&self, mailbox: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.maildir(mailbox).join(sub);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                out.push(fs::read(e.unwrap().path()).unwrap());
            }
        }
        out
    }
}

fn expected(address: &str) -> Vec<u8> {
    let mut v =
        format!("Return-Path: <carol@sender.test>\r\nDelivered-To: {address}\r\n").into_bytes();
    v.extend_from_slice(BODY);
    v
}

fn files(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn round_trip_to_two_mailboxes() {
    let fx = Fixture::new();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
    ]);
    let report = fx.deliver(&id).unwrap();
    assert_eq!(
        report,
        LocalReport {
            delivered: vec![
                (0, "alice@example.test".into()),
                (1, "bob@example.test".into())
            ],
            deferred: vec![],
            remote_pending: 0,
            skipped_local: 0,
            removed: true,
            skipped: false,
            notice_source: None,
        }
    );
    assert_eq!(
        fx.messages("alice@example.test"),
        vec![expected("alice@example.test")]
    );
    assert_eq!(
        fx.messages("bob@example.test"),
        vec![expected("bob@example.test")]
    );
    let name = unique_name(1_700_000_000, id.as_str(), 0, HOST);
    assert!(
        fx.maildir("alice@example.test")
            .join("new")
            .join(name)
            .exists()
    );
    assert!(fx.spool().list().unwrap().is_empty());

    // A second call (e.g. a duplicate submission) does nothing.
    let again = fx.deliver(&id).unwrap();
    assert!(again.skipped && again.delivered.is_empty());
    assert_eq!(fx.messages("alice@example.test").len(), 1);
}

#[test]
fn the_same_mailbox_twice_gets_two_copies() {
    // Two recipients mapping to one mailbox (e.g. a list and a member) are
    // two deliveries with distinct names; the directory deduplicates
    // targets before they reach the spool when that is wanted.
    let fx = Fixture::new();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("alice@example.test", Some("alice@example.test")),
    ]);
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered.len(), 2);
    assert_eq!(fx.messages("alice@example.test").len(), 2);
}

#[test]
fn crash_after_maildir_rename_does_not_deliver_twice() {
    let mut fx = Fixture::new();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
        ("carol@example.test", Some("carol@example.test")),
    ]);
    // The interrupted attempt: recipients 0 and 1 reached their Maildirs,
    // the process died before either record_done.
    {
        let stored = fx.spool().open_message(&id).unwrap();
        for (index, mailbox) in [(0, "alice@example.test"), (1, "bob@example.test")] {
            let md = inbox(&fx.store, mailbox);
            let name = unique_name(1_700_000_000, id.as_str(), index, HOST);
            let prefix = format!("Return-Path: <carol@sender.test>\r\nDelivered-To: {mailbox}\r\n");
            md.deliver(&name, prefix.as_bytes(), &mut stored.reader().unwrap())
                .unwrap();
        }
    }
    // Bob's reader already moved his copy to cur/ and marked it seen.
    let bob = fx.maildir("bob@example.test");
    let bob_name = unique_name(1_700_000_000, id.as_str(), 1, HOST);
    fs::rename(
        bob.join("new").join(&bob_name),
        bob.join("cur").join(format!("{bob_name}:2,S")),
    )
    .unwrap();

    fx.restart();
    assert_eq!(fx.spool().list().unwrap(), vec![id.clone()]);
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered.len(), 3);
    assert!(report.removed);
    assert_eq!(
        fx.messages("alice@example.test"),
        vec![expected("alice@example.test")]
    );
    assert_eq!(
        fx.messages("bob@example.test"),
        vec![expected("bob@example.test")]
    );
    assert_eq!(
        fx.messages("carol@example.test"),
        vec![expected("carol@example.test")]
    );
}

#[test]
fn recorded_recipients_are_not_delivered_again() {
    let mut fx = Fixture::new();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
    ]);
    // Recipient 0 was handled by an earlier run (and its copy since deleted
    // by the user): the state file alone must prevent a second delivery.
    fx.spool().record_done(&id, 0, "delivered").unwrap();
    fx.restart();
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(1, "bob@example.test".to_owned())]);
    assert!(fx.messages("alice@example.test").is_empty());
    assert!(report.removed);
}

#[test]
fn full_mailbox_is_deferred_with_452_4_2_2_until_there_is_room() {
    let mut config = StoreConfig::default();
    config
        .quota_overrides
        .insert("bob@example.test".into(), Some(300));
    let fx = Fixture::with_store(config);
    // Bob's mailbox holds 250 of his 300 bytes.
    let filler = vec![b'x'; 250 - 2];
    fx.store
        .deliver(
            "bob@example.test",
            &Folder::Inbox,
            b"\r\n",
            &mut &filler[..],
        )
        .unwrap();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
    ]);
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(0, "alice@example.test".to_owned())]);
    assert_eq!(report.deferred.len(), 1);
    let (index, address, reply) = &report.deferred[0];
    let reply = reply.to_string();
    assert_eq!((*index, address.as_str()), (1, "bob@example.test"));
    assert!(reply.starts_with("452 4.2.2 "), "{reply}");
    assert_eq!(fx.messages("bob@example.test").len(), 1);
    assert!(!report.removed);

    // Bob deletes his big message (another program removes the file: the
    // store notices): the retry delivers.
    let bob = fx.maildir("bob@example.test");
    for entry in fs::read_dir(bob.join("new")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(1, "bob@example.test".to_owned())]);
    assert!(report.deferred.is_empty() && report.removed);
    assert_eq!(fx.messages("bob@example.test").len(), 1);
    assert_eq!(fx.messages("alice@example.test").len(), 1);
}

#[test]
fn quarantined_mail_goes_to_the_stores_junk_mailbox() {
    let fx = Fixture::new();
    let id = fx.enqueue_with(
        &[("alice@example.test", Some("alice@example.test"))],
        None,
        true,
    );
    let report = fx.deliver(&id).unwrap();
    assert!(report.removed, "{report:?}");
    let user = fx.store.open("alice@example.test").unwrap();
    assert_eq!(user.status("Junk").unwrap().messages, 1);
    assert_eq!(user.status("INBOX").unwrap().messages, 0);
}

#[test]
fn unwritable_maildir_is_deferred_then_delivered() {
    let fx = Fixture::new();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
    ]);
    // Tests run as root, so permissions cannot force the failure: a regular
    // file where bob's Maildir directory should be does.
    let bob = fx.maildir("bob@example.test");
    fs::create_dir_all(bob.parent().unwrap()).unwrap();
    fs::write(&bob, b"in the way").unwrap();

    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(0, "alice@example.test".to_owned())]);
    assert_eq!(report.deferred.len(), 1);
    let (index, address, error) = &report.deferred[0];
    let error = error.to_string();
    assert_eq!((*index, address.as_str()), (1, "bob@example.test"));
    assert!(error.contains("mkdir"), "{error}");
    assert!(!report.removed);
    assert_eq!(fx.spool().list().unwrap(), vec![id.clone()]);
    assert_eq!(
        fx.spool()
            .done(&id)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![0]
    );

    // Still broken: deferred again, alice untouched.
    let report = fx.deliver(&id).unwrap();
    assert!(report.delivered.is_empty());
    assert_eq!(report.deferred.len(), 1);

    // The admin fixes it.
    fs::remove_file(&bob).unwrap();
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(1, "bob@example.test".to_owned())]);
    assert!(report.deferred.is_empty() && report.removed);
    assert_eq!(
        fx.messages("alice@example.test"),
        vec![expected("alice@example.test")]
    );
    assert_eq!(
        fx.messages("bob@example.test"),
        vec![expected("bob@example.test")]
    );
    assert_eq!(files(&bob.join("tmp")), 0);
}

#[test]
fn remote_recipients_stay_pending() {
    let fx = Fixture::new();
    let id = fx.enqueue(&[
        ("x@remote.test", None),
        ("alice@example.test", Some("alice@example.test")),
        ("y@remote.test", None),
    ]);
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(1, "alice@example.test".to_owned())]);
    assert_eq!(report.remote_pending, 2);
    assert!(!report.removed);
    assert_eq!(fx.spool().list().unwrap(), vec![id.clone()]);

    let report = fx.deliver(&id).unwrap();
    assert!(report.delivered.is_empty());
    assert_eq!(report.remote_pending, 2);
    assert_eq!(fx.messages("alice@example.test").len(), 1);

    // Once outbound delivery records them, the message goes.
    fx.spool().record_done(&id, 0, "sent").unwrap();
    fx.spool().record_done(&id, 2, "bounced").unwrap();
    let report = fx.deliver(&id).unwrap();
    assert!(report.removed && report.remote_pending == 0);
    assert!(fx.spool().list().unwrap().is_empty());
}

#[test]
fn concurrent_attempt_on_the_same_message_is_skipped() {
    let fx = Fixture::new();
    let id = fx.enqueue(&[("alice@example.test", Some("alice@example.test"))]);
    let lease = fx.spool().lease(&id).unwrap();
    let report = fx.deliver(&id).unwrap();
    assert!(report.skipped);
    assert!(fx.messages("alice@example.test").is_empty());
    drop(lease);
    assert!(fx.deliver(&id).unwrap().removed);
    assert_eq!(fx.messages("alice@example.test").len(), 1);
}

#[test]
fn corrupt_message_is_an_error_and_then_gone() {
    let fx = Fixture::new();
    let id = fx.enqueue(&[("alice@example.test", Some("alice@example.test"))]);
    let path = fx.dir.path().join("spool/queue").join(id.as_str());
    fs::write(&path, b"garbage").unwrap();
    match fx.deliver(&id) {
        Err(DeliveryError::Spool(SpoolError::Corrupt { .. })) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(fx.deliver(&id).unwrap().skipped);
    assert!(fx.messages("alice@example.test").is_empty());
}

#[test]
fn many_messages_each_delivered_once() {
    let fx = Fixture::new();
    let ids: Vec<QueueId> = (0..50)
        .map(|_| fx.enqueue(&[("alice@example.test", Some("alice@example.test"))]))
        .collect();
    for id in &ids {
        assert!(fx.deliver(id).unwrap().removed);
    }
    let mut names: Vec<String> = fs::read_dir(fx.maildir("alice@example.test").join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 50);
    let mut content = String::new();
    fs::File::open(fx.maildir("alice@example.test").join("new").join(&names[0]))
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert!(content.ends_with("Hello.\r\n"));
}

/// A subscriber that records, for every event, whether it has `queue_id`.
#[derive(Default, Clone)]
struct FieldCheck {
    events: Arc<Mutex<Vec<(String, bool)>>>,
}

impl tracing::Subscriber for FieldCheck {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let has = event.metadata().fields().field("queue_id").is_some();
        self.events
            .lock()
            .unwrap()
            .push((event.metadata().name().to_owned(), has));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn every_log_line_carries_the_queue_id() {
    let mut fx = Fixture::new();
    let check = FieldCheck::default();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
    ]);
    // Deferred (warn), found-after-crash (info), removed (debug), skipped.
    let bob = fx.maildir("bob@example.test");
    fs::create_dir_all(bob.parent().unwrap()).unwrap();
    fs::write(&bob, b"x").unwrap();
    tracing::subscriber::with_default(check.clone(), || {
        fx.deliver(&id).unwrap();
    });
    fs::remove_file(&bob).unwrap();
    // Simulate a crash after bob's rename.
    {
        let stored = fx.spool().open_message(&id).unwrap();
        let md = inbox(&fx.store, "bob@example.test");
        let name = unique_name(1_700_000_000, id.as_str(), 1, HOST);
        md.deliver(&name, b"", &mut stored.reader().unwrap())
            .unwrap();
    }
    fx.restart();
    tracing::subscriber::with_default(check.clone(), || {
        fx.deliver(&id).unwrap();
        fx.deliver(&id).unwrap();
    });
    let events = check.events.lock().unwrap();
    assert!(events.len() >= 4, "{events:?}");
    for (name, has) in events.iter() {
        assert!(has, "log event {name} lacks queue_id");
    }
}

#[test]
fn skipped_mailboxes_are_left_for_another_agent() {
    let fx = Fixture::new();
    let id = fx.enqueue(&[
        ("alice@example.test", Some("alice@example.test")),
        ("bob@lmtp.test", Some("bob@lmtp.test")),
    ]);
    let skip = |mailbox: &str| mailbox.ends_with("@lmtp.test");
    let report =
        tern_delivery::deliver_local_skipping(fx.spool(), &fx.store, HOST, &id, &skip).unwrap();
    assert_eq!(report.delivered, vec![(0, "alice@example.test".to_owned())]);
    assert_eq!(report.skipped_local, 1);
    assert!(report.deferred.is_empty());
    assert!(!report.removed, "bob still has to be delivered");
    assert!(fx.messages("bob@lmtp.test").is_empty());
    assert!(!fx.maildir("bob@lmtp.test").exists());
    assert_eq!(fx.spool().done(&id).unwrap().len(), 1);

    // Again: alice is not written twice, bob is still skipped.
    let report =
        tern_delivery::deliver_local_skipping(fx.spool(), &fx.store, HOST, &id, &skip).unwrap();
    assert!(report.delivered.is_empty());
    assert_eq!(report.skipped_local, 1);
    assert!(!report.removed);
    assert_eq!(fx.messages("alice@example.test").len(), 1);

    // Without the predicate (deliver_local), bob goes to his Maildir.
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(1, "bob@lmtp.test".to_owned())]);
    assert_eq!(report.skipped_local, 0);
    assert!(report.removed);
}

#[test]
fn success_notice_source_is_kept_only_when_asked() {
    let fx = Fixture::new();
    let id = fx.enqueue_notify(
        &[("alice@example.test", Some("alice@example.test"))],
        Some("SUCCESS,FAILURE"),
    );
    let report = fx.deliver(&id).unwrap();
    assert!(report.removed);
    let source = report
        .notice_source
        .expect("NOTIFY=SUCCESS keeps the source");
    assert_eq!(
        source.envelope.recipients[0].address.to_string(),
        "alice@example.test"
    );
    assert_eq!(source.head, BODY);
    // Default NOTIFY (failure and delay only): nothing kept.
    let id = fx.enqueue(&[("alice@example.test", Some("alice@example.test"))]);
    assert!(fx.deliver(&id).unwrap().notice_source.is_none());
}

/// Every copy goes through the spool's group committer (one fdatasync per
/// copy, and `new/` fsyncs shared by whatever a batch put in it), and the
/// copies of one message are all written before any is awaited.
#[test]
fn copies_are_group_committed() {
    let fx = Fixture::new();
    let rcpts = [
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
        ("alice@example.test", Some("alice@example.test")),
        ("bob@example.test", Some("bob@example.test")),
    ];
    let id = fx.enqueue(&rcpts);
    let before = fx.spool().stats();
    let report = fx.deliver(&id).unwrap();
    assert_eq!(
        report.delivered.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let after = fx.spool().stats();
    assert_eq!(after.commits - before.commits, 4);
    assert_eq!(after.file_syncs - before.file_syncs, 4);
    let dir_fsyncs = after.dir_fsyncs - before.dir_fsyncs;
    assert!((2..=4).contains(&dir_fsyncs), "{dir_fsyncs}");
    assert_eq!(fx.messages("alice@example.test").len(), 2);
    assert_eq!(fx.messages("bob@example.test").len(), 2);
    for mailbox in ["alice@example.test", "bob@example.test"] {
        assert_eq!(files(&fx.maildir(mailbox).join("tmp")), 0);
    }
}

/// A crash while a copy was being written leaves `tmp/<name>`; the retry
/// (a later process) replaces it instead of failing on it forever.
#[test]
fn stale_tmp_copy_from_a_crash_is_replaced() {
    let mut fx = Fixture::new();
    let id = fx.enqueue(&[("alice@example.test", Some("alice@example.test"))]);
    let name = unique_name(1_700_000_000, id.as_str(), 0, HOST);
    let tmp = fx.maildir("alice@example.test").join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    fs::write(tmp.join(&name), b"half a mess").unwrap();
    fx.restart();
    let report = fx.deliver(&id).unwrap();
    assert_eq!(report.delivered, vec![(0, "alice@example.test".to_owned())]);
    assert!(report.removed);
    assert_eq!(
        fx.messages("alice@example.test"),
        vec![expected("alice@example.test")]
    );
    assert_eq!(files(&tmp), 0);
}
