//! Behaviour of the spool seen from outside: commit visibility, recovery
//! after "crashes" (dropping everything and reopening), corrupt files,
//! recipient state, permissions, and group commit under concurrency.

use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use tern_queue::{Envelope, QueueId, Recipient, RecipientState, Spool, SpoolError, SpoolOptions};

fn envelope(recipients: usize) -> Envelope {
    Envelope {
        sender: "sender@example.org"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: (0..recipients)
            .map(|i| Recipient {
                address: format!("user{i}@example.test")
                    .parse::<tern_types::Mailbox>()
                    .unwrap(),
                original: format!("User{i}@Example.Test")
                    .parse::<tern_types::Mailbox>()
                    .unwrap()
                    .into(),
                mailbox: Some(format!("user{i}@example.test")),
                notify: None,
                orcpt: None,
                unreadable_address: None,
                unreadable_original: None,
            })
            .collect(),
        received_at: 1_700_000_000,
        client_ip: Some("192.0.2.1".parse().unwrap()),
        helo: Some("client.example.org".into()),
        protocol: "ESMTPS".into(),
        tls: Some("TLSv1.3".into()),
        body: "8BITMIME".parse().unwrap(),
        ret: Some("HDRS".parse().unwrap()),
        envid: Some("abc".parse().unwrap()),
        ..Envelope::default()
    }
}

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default()).unwrap()
}

fn commit(spool: &Spool, body: &[u8], rcpts: usize) -> QueueId {
    let mut msg = spool.create().unwrap();
    msg.write(body).unwrap();
    msg.commit(&envelope(rcpts))
        .unwrap()
        .wait_blocking()
        .unwrap()
}

fn read_all(spool: &Spool, id: &QueueId) -> Vec<u8> {
    let stored = spool.open_message(id).unwrap();
    let mut out = Vec::new();
    stored.reader().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out.len() as u64, stored.data_len());
    out
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A minimal executor so the async `wait()` is tested without a runtime.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

#[test]
fn committed_message_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut msg = spool.create().unwrap();
    let id = msg.id().clone();
    // Larger than the write buffer, in odd-sized pieces.
    let body: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    for piece in body.chunks(9_999) {
        msg.write(piece).unwrap();
    }
    assert_eq!(msg.size(), body.len() as u64);
    assert!(dir.path().join("tmp").join(id.as_str()).exists());
    assert!(
        spool.list().unwrap().is_empty(),
        "uncommitted message listed"
    );

    let pending = msg.commit(&envelope(2)).unwrap();
    assert_eq!(pending.id(), &id);
    assert_eq!(block_on(pending.wait()).unwrap(), id);

    assert_eq!(spool.list().unwrap(), vec![id.clone()]);
    assert!(names(&dir.path().join("tmp")).is_empty());
    let stored = spool.open_message(&id).unwrap();
    let mut expected = envelope(2);
    expected.size = body.len() as u64;
    assert_eq!(stored.envelope, expected);
    assert_eq!(read_all(&spool, &id), body);
    // Two readers are independent.
    let mut a = stored.reader().unwrap();
    let mut b = stored.reader().unwrap();
    let mut x = [0u8; 10];
    let mut y = [0u8; 10];
    a.read_exact(&mut x).unwrap();
    b.read_exact(&mut y).unwrap();
    assert_eq!(x, y);

    assert_eq!(mode(dir.path()), 0o700);
    for sub in ["tmp", "queue", "corrupt"] {
        assert_eq!(mode(&dir.path().join(sub)), 0o700, "{sub}");
    }
    assert_eq!(mode(&dir.path().join("queue").join(id.as_str())), 0o600);
    let stats = spool.stats();
    assert_eq!((stats.commits, stats.batches, stats.dir_fsyncs), (1, 1, 1));
}

#[test]
fn empty_message_commits() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let id = commit(&spool, b"", 1);
    assert!(read_all(&spool, &id).is_empty());
}

#[test]
fn dropped_message_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut msg = spool.create().unwrap();
    msg.write(b"half a message").unwrap();
    let tmp = dir.path().join("tmp").join(msg.id().as_str());
    assert!(tmp.exists());
    drop(msg);
    assert!(!tmp.exists());
    assert!(spool.list().unwrap().is_empty());
    assert_eq!(spool.stats().batches, 0);
}

#[test]
fn reopen_finds_exactly_the_committed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let committed: Vec<QueueId> = {
        let spool = open(dir.path());
        let ids: Vec<QueueId> = (0..5)
            .map(|i| commit(&spool, format!("message {i}\r\n").as_bytes(), 1))
            .collect();
        let mut open_msg = spool.create().unwrap();
        open_msg.write(b"never committed").unwrap();
        drop(open_msg);
        ids
    };
    // What a crash leaves behind: a half-written tmp file and an orphaned
    // state file whose message was already removed.
    fs::write(dir.path().join("tmp").join("0000000000000ZZZ"), b"partial").unwrap();
    fs::write(dir.path().join("tmp").join("junk"), b"partial").unwrap();
    let orphan = dir.path().join("queue").join("0000000000000001.state");
    fs::write(&orphan, b"done 0 00000000 x\n").unwrap();

    let spool = open(dir.path());
    assert_eq!(spool.list().unwrap(), committed);
    assert!(
        names(&dir.path().join("tmp")).is_empty(),
        "tmp/ not cleaned"
    );
    assert!(!orphan.exists(), "orphaned state file kept");
    for (i, id) in committed.iter().enumerate() {
        assert_eq!(read_all(&spool, id), format!("message {i}\r\n").as_bytes());
    }
    // New ids sort after every id from the previous run.
    let newer = commit(&spool, b"x", 1);
    assert!(committed.iter().all(|old| *old < newer));
    // Oldest first.
    let listed = spool.list().unwrap();
    assert_eq!(listed.last(), Some(&newer));
}

#[test]
fn second_open_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    match Spool::open(dir.path(), SpoolOptions::default()) {
        Err(SpoolError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    // A clone shares the lock; dropping every clone releases it.
    let clone = spool.clone();
    drop(spool);
    assert!(Spool::open(dir.path(), SpoolOptions::default()).is_err());
    drop(clone);
    assert!(Spool::open(dir.path(), SpoolOptions::default()).is_ok());
}

#[test]
fn corrupt_files_are_moved_aside_and_recovery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let good = commit(&spool, b"good\r\n", 1);
    let ids: Vec<QueueId> = (0..5)
        .map(|_| commit(&spool, b"soon corrupt\r\n", 1))
        .collect();
    let queue = dir.path().join("queue");
    let file = |id: &QueueId| queue.join(id.as_str());

    // 0: truncated (trailer cut off).
    let bytes = fs::read(file(&ids[0])).unwrap();
    fs::write(file(&ids[0]), &bytes[..bytes.len() - 5]).unwrap();
    // 1: shorter than a trailer.
    fs::write(file(&ids[1]), b"tiny").unwrap();
    // 2: envelope length larger than the file.
    let mut bytes = fs::read(file(&ids[2])).unwrap();
    let n = bytes.len();
    bytes[n - 16..n - 8].copy_from_slice(&u64::MAX.to_le_bytes());
    fs::write(file(&ids[2]), &bytes).unwrap();
    // 3: envelope JSON damaged.
    let mut bytes = fs::read(file(&ids[3])).unwrap();
    let n = bytes.len();
    bytes[n - 20] = b'\0';
    fs::write(file(&ids[3]), &bytes).unwrap();
    // 4: message bytes cut from the front (size no longer matches).
    let bytes = fs::read(file(&ids[4])).unwrap();
    fs::write(file(&ids[4]), &bytes[3..]).unwrap();
    spool.record_done(&ids[4], 0, "x").unwrap();

    drop(spool);
    let spool = open(dir.path());
    let mut recovered = Vec::new();
    let mut corrupt = Vec::new();
    for id in spool.list().unwrap() {
        match spool.open_message(&id) {
            Ok(m) => recovered.push(m.id),
            Err(SpoolError::Corrupt { id, moved_to, .. }) => {
                assert_eq!(moved_to, Some(dir.path().join("corrupt").join(id.as_str())));
                corrupt.push(id);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(recovered, vec![good.clone()]);
    assert_eq!(corrupt, ids);
    assert_eq!(spool.list().unwrap(), vec![good]);
    let aside = names(&dir.path().join("corrupt"));
    assert_eq!(aside.len(), 6, "{aside:?}"); // five files and one state file
    assert!(aside.contains(&format!("{}.state", ids[4])));
}

#[test]
fn missing_message_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let id: QueueId = "0000000000000000".parse().unwrap();
    assert!(matches!(
        spool.open_message(&id),
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.record_done(&id, 0, "x"),
        Err(SpoolError::NotFound(_))
    ));
    assert!(spool.done(&id).unwrap().is_empty());
    spool.remove(&id).unwrap();
}

#[test]
fn recipient_state_survives_reopen_and_torn_lines() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let spool = open(dir.path());
        let id = commit(&spool, b"hello\r\n", 4);
        assert!(spool.done(&id).unwrap().is_empty());
        spool.record_done(&id, 2, "delivered to maildir").unwrap();
        spool
            .record_done(&id, 0, "failed: 550 5.1.1\nforged line")
            .unwrap();
        assert_eq!(spool.done(&id).unwrap(), BTreeSet::from([0, 2]));
        id
    };
    let state = dir.path().join("queue").join(format!("{id}.state"));
    assert_eq!(mode(&state), 0o600);
    // A crash in the middle of appending the record for recipient 3.
    let mut bytes = fs::read(&state).unwrap();
    bytes.extend_from_slice(b"done 3 1234");
    fs::write(&state, &bytes).unwrap();

    let spool = open(dir.path());
    assert_eq!(spool.done(&id).unwrap(), BTreeSet::from([0, 2]));
    spool.record_done(&id, 1, "delivered").unwrap();
    assert_eq!(spool.done(&id).unwrap(), BTreeSet::from([0, 1, 2]));
    spool.record_done(&id, 3, "delivered").unwrap();
    assert_eq!(spool.done(&id).unwrap(), BTreeSet::from([0, 1, 2, 3]));

    spool.remove(&id).unwrap();
    assert!(spool.list().unwrap().is_empty());
    assert!(!state.exists());
    assert!(names(&dir.path().join("queue")).is_empty());
    assert!(matches!(
        spool.open_message(&id),
        Err(SpoolError::NotFound(_))
    ));
}

#[test]
fn a_failing_file_fails_only_its_own_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut bad = spool.create().unwrap();
    bad.write(b"bad").unwrap();
    let bad_id = bad.id().clone();
    // Something already occupies queue/<id> as a non-empty directory, so
    // the rename fails for this message only.
    let blocker = dir.path().join("queue").join(bad_id.as_str());
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("x"), b"").unwrap();
    let mut good = spool.create().unwrap();
    good.write(b"good").unwrap();

    let bad_pending = bad.commit(&envelope(1)).unwrap();
    let good_pending = good.commit(&envelope(1)).unwrap();
    let err = bad_pending.wait_blocking().unwrap_err();
    assert!(matches!(err, SpoolError::Io { op: "rename", .. }), "{err}");
    assert!(!err.is_disk_full());
    let good_id = good_pending.wait_blocking().unwrap();
    assert!(!dir.path().join("tmp").join(bad_id.as_str()).exists());
    fs::remove_dir_all(&blocker).unwrap();
    assert_eq!(spool.list().unwrap(), vec![good_id]);
    let stats = spool.stats();
    assert_eq!((stats.commits, stats.failed_commits), (1, 1));
}

#[test]
fn first_attempt_is_claimed_once_and_only_for_fresh_messages() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let spool = open(dir.path());
        let id = commit(&spool, b"x", 1);
        assert!(spool.claim_first_attempt(&id));
        assert!(!spool.claim_first_attempt(&id));
        // Committed but never attempted before the "crash".
        commit(&spool, b"y", 1)
    };
    let spool = open(dir.path());
    assert!(
        !spool.claim_first_attempt(&id),
        "recovered message claimed as fresh"
    );
}

#[test]
fn group_commit_batches_concurrent_commits() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let spool = spool.clone();
            thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        let body = format!("thread {t} message {i}\r\n").repeat(40);
                        (commit(&spool, body.as_bytes(), 1), body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<(QueueId, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    let stats = spool.stats();
    eprintln!(
        "group commit: {} commits in {:?} ({:.0}/s), {} batches, {} dir fsyncs, largest batch {}",
        stats.commits,
        elapsed,
        stats.commits as f64 / elapsed.as_secs_f64(),
        stats.batches,
        stats.dir_fsyncs,
        stats.largest_batch
    );
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(stats.commits, total);
    assert_eq!(stats.failed_commits, 0);
    assert_eq!(stats.file_syncs, total);
    assert_eq!(stats.dir_fsyncs, stats.batches);
    assert!(stats.batches < stats.commits, "no batching: {stats:?}");
    assert!(stats.largest_batch > 1);

    let listed: BTreeSet<QueueId> = spool.list().unwrap().into_iter().collect();
    assert_eq!(listed.len(), results.len());
    for (id, body) in &results {
        assert!(listed.contains(id));
        assert_eq!(read_all(&spool, id), body.as_bytes());
    }
}

#[test]
fn committer_finishes_queued_work_when_the_spool_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let mut msg = spool.create().unwrap();
    msg.write(b"late").unwrap();
    drop(spool);
    // The message keeps the spool (and its committer) alive.
    let id = msg.commit(&envelope(1)).unwrap().wait_blocking().unwrap();
    let spool = open(dir.path());
    assert_eq!(spool.list().unwrap(), vec![id]);
}

#[test]
fn without_fsync_nothing_is_synced_but_commits_still_batch() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions { fsync: false }).unwrap();
    let id = commit(&spool, b"x", 1);
    assert_eq!(spool.list().unwrap(), vec![id]);
    let stats = spool.stats();
    assert_eq!(
        (stats.dir_fsyncs, stats.file_syncs, stats.batches),
        (0, 0, 1)
    );
}

#[test]
fn delivery_lease_is_exclusive_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let a = commit(&spool, b"a", 1);
    let b = commit(&spool, b"b", 1);
    let lease = spool.lease(&a).unwrap();
    assert_eq!(lease.id(), &a);
    assert!(spool.clone().lease(&a).is_none());
    let other = spool.lease(&b).unwrap();
    drop(lease);
    assert!(spool.lease(&a).is_some());
    drop(other);
}

#[test]
fn a_lone_committer_is_never_held_back_for_a_batch() {
    // Sequential commits cannot share a batch: each one is synced and
    // resolved on its own, without waiting for company.
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let started = Instant::now();
    for i in 0..50 {
        commit(&spool, format!("message {i}\r\n").as_bytes(), 1);
    }
    let elapsed = started.elapsed();
    let stats = spool.stats();
    eprintln!(
        "sequential: {} commits in {:?} ({:.0}/s)",
        stats.commits,
        elapsed,
        stats.commits as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        (stats.commits, stats.batches, stats.largest_batch),
        (50, 50, 1)
    );
}

#[test]
fn delivered_and_queued_commits_share_batches() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir.path().join("spool"));
    let boxes: Vec<_> = ["a", "b"]
        .iter()
        .map(|b| {
            let d = dir.path().join(b);
            fs::create_dir_all(d.join("tmp")).unwrap();
            fs::create_dir_all(d.join("new")).unwrap();
            d
        })
        .collect();
    // Everything is handed to the committer before anyone waits.
    let mut pending = Vec::new();
    let mut delivered = Vec::new();
    for i in 0..40 {
        let mut msg = if i % 2 == 0 {
            spool.create().unwrap()
        } else {
            let b = &boxes[(i / 2) % 2];
            let id = spool.next_id();
            let name = format!("m{i}");
            delivered.push((b.join("new").join(&name), id.clone()));
            spool
                .create_delivered(id, b.join("tmp").join(&name), b.join("new").join(&name))
                .unwrap()
        };
        assert_eq!(msg.is_delivered(), i % 2 == 1);
        msg.write(format!("message {i}\r\n").as_bytes()).unwrap();
        pending.push(msg.commit(&envelope(1)).unwrap());
    }
    for p in pending {
        p.wait_blocking().unwrap();
    }
    assert_eq!(spool.list().unwrap().len(), 20);
    for (path, id) in &delivered {
        // No envelope, no trailer: exactly the bytes written.
        let text = fs::read_to_string(path).unwrap();
        assert!(text.starts_with("message ") && text.ends_with("\r\n"));
        // Not queued, so never claimed for delivery.
        assert!(!spool.claim_first_attempt(id));
        assert!(spool.open_message(id).unwrap_err().is_not_found());
    }
    for b in &boxes {
        assert!(names(&b.join("tmp")).is_empty());
        assert_eq!(names(&b.join("new")).len(), 10);
    }
    let stats = spool.stats();
    assert_eq!((stats.commits, stats.file_syncs), (40, 40));
    // One fsync per directory (queue/, a/new, b/new) and batch, at most.
    assert!(stats.dir_fsyncs <= 3 * stats.batches, "{stats:?}");
    assert!(stats.dir_fsyncs >= stats.batches, "{stats:?}");
}

#[test]
fn a_delivered_message_can_be_redirected_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir.path().join("spool"));
    for sub in ["tmp", "new", ".Junk/new"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let id = spool.next_id();
    let mut msg = spool
        .create_delivered(id, dir.path().join("tmp/m"), dir.path().join("new/m"))
        .unwrap();
    msg.write(b"quarantined\r\n").unwrap();
    assert_eq!(
        msg.delivery_path(),
        Some(dir.path().join("new/m").as_path())
    );
    assert!(msg.redirect_delivery(dir.path().join(".Junk/new/m")));
    msg.commit(&envelope(1)).unwrap().wait_blocking().unwrap();
    assert!(names(&dir.path().join("new")).is_empty());
    assert_eq!(
        fs::read(dir.path().join(".Junk/new/m")).unwrap(),
        b"quarantined\r\n"
    );
    // A queued message cannot be redirected.
    let mut queued = spool.create().unwrap();
    assert_eq!(queued.delivery_path(), None);
    assert!(!queued.redirect_delivery(dir.path().join("new/x")));
}

#[test]
fn message_state_reads_states_hold_and_notices_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let id = commit(&spool, b"Subject: x\r\n\r\nbody\r\n", 3);
    let fresh = spool.message_state(&id, 3).unwrap();
    assert_eq!(fresh.states, vec![RecipientState::Pending; 3]);
    assert!(!fresh.held && fresh.notices.is_empty());

    let deferred = RecipientState::Deferred {
        attempts: 1,
        last_error: "451 4.4.1 later".into(),
        next_attempt: 99,
    };
    spool.record_state(&id, 1, &deferred).unwrap();
    spool.record_notices(&id, &[1, 2], "delay").unwrap();
    spool.set_hold(&id, true).unwrap();
    let state = spool.message_state(&id, 3).unwrap();
    assert_eq!(
        state.states,
        vec![RecipientState::Pending, deferred, RecipientState::Pending]
    );
    assert!(state.held);
    assert_eq!(
        state.notices,
        BTreeSet::from([(1, "delay".to_owned()), (2, "delay".to_owned())])
    );
    // The same states as recipient_states gives; notices survive a reopen.
    assert_eq!(spool.recipient_states(&id).unwrap(), state.states);
    drop(spool);
    let spool = open(dir.path());
    assert_eq!(spool.message_state(&id, 3).unwrap(), state);
    // Nothing is recorded for a message that is not there.
    spool.remove(&id).unwrap();
    assert!(spool.record_notices(&id, &[0], "delay").is_err());
    assert!(spool.message_state(&id, 3).is_err());
}
