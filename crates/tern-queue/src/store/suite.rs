//! The conformance suite every [`QueueStore`] must pass, written once.
//!
//! Each case is an `async fn` over a [`Harness`] (how to open a store of
//! the backend under test) and panics on a broken promise. A backend's
//! integration tests call every case, on a multi-threaded tokio runtime:
//! `tern-queue`'s `tests/store_file.rs` for [`FileStore`](super::FileStore),
//! `tern-queue-pg`'s `tests/store_pg.rs` for PostgreSQL. [`CASES`] names them
//! all, so a backend's tests can check they run every one.
//!
//! This module must never weaken a case for one backend: a behaviour that
//! differs between backends is a bug in one of them.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Read;

use super::{IncomingBody, QueueStore, StoreError};
use crate::envelope::{Envelope, Recipient};
use crate::id::QueueId;
use crate::recipient::RecipientState;

/// How a suite case gets stores of the backend under test.
pub trait Harness: Send {
    /// The store under test.
    type Store: QueueStore;
    /// A handle on the queue as a newly started process would open it: the
    /// first one, or one after every earlier handle was dropped (a crash).
    fn open(&mut self) -> impl Future<Output = Self::Store> + Send;
    /// A second handle on the same queue while `first` is alive: another
    /// node (PostgreSQL) or another part of the same process (files, whose
    /// spool one process holds).
    fn another(&mut self, first: &Self::Store) -> impl Future<Output = Self::Store> + Send;
}

/// The names of every case, in the order [`run_all`] runs them.
pub const CASES: &[&str] = &[
    "commit_survives_reopen",
    "uncommitted_message_is_not_stored",
    "leases_are_exclusive_and_expire",
    "results_survive_reopen",
    "one_record_applies_its_states_in_order",
    "hold_release_delete",
    "remove_under_lease",
    "list_due_orders_by_next_attempt",
    "concurrent_leases_never_overlap",
    "stored_addresses_read_back_as_written",
];

/// Every case, one after the other, each on a fresh harness from `make`.
pub async fn run_all<H: Harness, F: Future<Output = H>>(mut make: impl FnMut() -> F) {
    commit_survives_reopen(make().await).await;
    uncommitted_message_is_not_stored(make().await).await;
    leases_are_exclusive_and_expire(make().await).await;
    results_survive_reopen(make().await).await;
    one_record_applies_its_states_in_order(make().await).await;
    hold_release_delete(make().await).await;
    remove_under_lease(make().await).await;
    list_due_orders_by_next_attempt(make().await).await;
    concurrent_leases_never_overlap(make().await).await;
    stored_addresses_read_back_as_written(make().await).await;
}

fn envelope(recipients: usize) -> Envelope {
    Envelope {
        sender: "sender@example.test"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: (0..recipients)
            .map(|i| Recipient {
                address: format!("rcpt{i}@example.net")
                    .parse::<tern_types::Mailbox>()
                    .unwrap(),
                original: format!("rcpt{i}@example.net")
                    .parse::<tern_types::Mailbox>()
                    .unwrap()
                    .into(),
                mailbox: None,
                notify: Some("FAILURE,DELAY".parse().unwrap()),
                orcpt: None,
                unreadable_address: None,
                unreadable_original: None,
            })
            .collect(),
        received_at: 1_700_000_000,
        helo: Some("client.example.test".into()),
        ..Envelope::default()
    }
}

fn body(seed: usize) -> Vec<u8> {
    let mut b = format!("Subject: message {seed}\r\n\r\n").into_bytes();
    // Long enough to span several reads, with every byte value.
    b.extend((0..200_000usize).map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 256) as u8));
    b.extend(b"\r\n");
    b
}

async fn commit<S: QueueStore>(store: &S, seed: usize, recipients: usize) -> QueueId {
    let mut incoming = store.create().expect("create");
    let id = incoming.id().clone();
    for chunk in body(seed).chunks(8192) {
        incoming.write(chunk).expect("write");
    }
    let committed = store
        .commit(incoming, &envelope(recipients))
        .await
        .expect("commit");
    assert_eq!(committed, id, "commit returns the id create gave");
    id
}

fn deferred(attempts: u32, next_attempt: u64) -> RecipientState {
    RecipientState::Deferred {
        attempts,
        last_error: "451 4.3.0 try later".into(),
        next_attempt,
    }
}

fn delivered(at: u64) -> RecipientState {
    RecipientState::Delivered {
        at,
        reply: "250 2.0.0 ok".into(),
    }
}

const TTL: u64 = 60;

/// A committed message outlives the store that committed it (dropped as
/// by a crash): the same envelope, the same bytes, every recipient pending.
pub async fn commit_survives_reopen<H: Harness>(mut h: H) {
    let store = h.open().await;
    let id = commit(&store, 1, 2).await;
    drop(store);

    let store = h.open().await;
    assert_eq!(store.list().await.unwrap(), vec![id.clone()]);
    let mut opened = store.open(&id).await.expect("open after reopen");
    assert_eq!(opened.id, id);
    let want = Envelope {
        size: body(1).len() as u64,
        ..envelope(2)
    };
    assert_eq!(opened.envelope, want);
    assert_eq!(opened.data_len, body(1).len() as u64);
    let mut bytes = Vec::new();
    opened.body.read_to_end(&mut bytes).unwrap();
    assert!(bytes == body(1), "the body reads back byte for byte");
    let state = store.message_state(&id).await.unwrap();
    assert_eq!(state.states, vec![RecipientState::Pending; 2]);
    assert!(!state.held);
    assert!(state.notices.is_empty());
    assert!(store.history(&id).await.unwrap().is_empty());
}

/// A message dropped before its commit is never stored, and an unknown id
/// is reported as not found by every operation that takes one.
pub async fn uncommitted_message_is_not_stored<H: Harness>(mut h: H) {
    let store = h.open().await;
    let mut incoming = store.create().unwrap();
    let lost = incoming.id().clone();
    incoming
        .write(b"Subject: lost\r\n\r\nnever committed\r\n")
        .unwrap();
    assert_eq!(incoming.size(), 34);
    drop(incoming);
    drop(store);

    let store = h.open().await;
    assert!(store.list().await.unwrap().is_empty());
    assert!(store.open(&lost).await.unwrap_err().is_not_found());
    assert!(store.message_state(&lost).await.unwrap_err().is_not_found());
    assert!(store.lease(&lost, 0, TTL).await.unwrap_err().is_not_found());
    assert!(
        store
            .set_hold(&lost, true)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.delete(&lost).await.unwrap_err().is_not_found());
    assert!(store.history(&lost).await.unwrap_err().is_not_found());
}

/// One lease at a time per message, across handles; an expired lease is
/// taken over and its old holder can no longer write.
pub async fn leases_are_exclusive_and_expire<H: Harness>(mut h: H) {
    let a = h.open().await;
    let b = h.another(&a).await;
    let id = commit(&a, 2, 2).await;

    let la = a
        .lease(&id, 1000, TTL)
        .await
        .unwrap()
        .expect("free message");
    assert_eq!((la.id.clone(), la.expires), (id.clone(), 1000 + TTL));
    assert_eq!(
        b.lease(&id, 1030, TTL).await.unwrap(),
        None,
        "b while a holds it"
    );
    assert_eq!(a.lease(&id, 1030, TTL).await.unwrap(), None, "a twice");
    assert!(b.lease_due(1030, TTL, 10).await.unwrap().is_empty());
    assert!(b.list_due(1030, 10).await.unwrap().is_empty());
    // The holder may renew; the renewed lease is the one that counts.
    let la = a.renew(&la, 1050, TTL).await.unwrap();
    assert_eq!(la.expires, 1050 + TTL);
    assert_eq!(b.lease(&id, 1100, TTL).await.unwrap(), None, "renewed");

    // a stalls past its lease: b takes over.
    let lb = b
        .lease(&id, 1111, TTL)
        .await
        .unwrap()
        .expect("expired lease");
    assert_ne!(lb.token, la.token);
    let lost = a.record_states(&la, &[(0, delivered(1112))]).await;
    assert!(
        lost.unwrap_err().is_lease_lost(),
        "old holder cannot record"
    );
    let lost = a.record_notices(&la, &[0], "delay").await;
    assert!(lost.unwrap_err().is_lease_lost());
    assert!(a.renew(&la, 1112, TTL).await.unwrap_err().is_lease_lost());
    assert!(a.remove(la.clone()).await.unwrap_err().is_lease_lost());
    a.release(la)
        .await
        .expect("releasing a lost lease is no error");
    assert_eq!(a.lease(&id, 1112, TTL).await.unwrap(), None, "b holds it");

    b.record_states(&lb, &[(1, deferred(1, 2000))])
        .await
        .unwrap();
    let state = a.message_state(&id).await.unwrap();
    assert_eq!(
        state.states,
        vec![RecipientState::Pending, deferred(1, 2000)]
    );

    b.release(lb).await.unwrap();
    let again = a.lease(&id, 1113, TTL).await.unwrap();
    assert!(again.is_some(), "a released lease is free at once");
}

/// States, notices and history are durable, and a final state never
/// changes again.
pub async fn results_survive_reopen<H: Harness>(mut h: H) {
    let store = h.open().await;
    let id = commit(&store, 3, 3).await;
    let lease = store.lease(&id, 100, TTL).await.unwrap().unwrap();
    store
        .record_states(&lease, &[(0, deferred(1, 400)), (1, deferred(1, 400))])
        .await
        .unwrap();
    store
        .record_states(&lease, &[(0, delivered(150))])
        .await
        .unwrap();
    store.record_states(&lease, &[]).await.unwrap();
    store.record_notices(&lease, &[1], "delay").await.unwrap();
    store.record_notices(&lease, &[], "delay").await.unwrap();
    // Over a final state: ignored.
    store
        .record_states(&lease, &[(0, deferred(2, 900))])
        .await
        .unwrap();
    drop(lease);
    drop(store);

    let store = h.open().await;
    let state = store.message_state(&id).await.unwrap();
    assert_eq!(
        state.states,
        vec![delivered(150), deferred(1, 400), RecipientState::Pending]
    );
    assert_eq!(state.notices, BTreeSet::from([(1, "delay".to_owned())]));
    assert!(!state.held);
    // Read back with its envelope in one go: the same state.
    let (read_envelope, read_state) = store.read_back(&id).await.unwrap();
    assert_eq!(read_envelope, store.open(&id).await.unwrap().envelope);
    assert_eq!(read_envelope.recipients, envelope(3).recipients);
    assert_eq!(read_state, state);
    assert_eq!(
        store.history(&id).await.unwrap(),
        vec![
            (0, deferred(1, 400)),
            (1, deferred(1, 400)),
            (0, delivered(150)),
        ]
    );
    // The lease of the dropped store is gone with it (files) or expires
    // (a database): either way it can be leased once expired.
    assert!(store.lease(&id, 100 + TTL, TTL).await.unwrap().is_some());
}

/// One record with several states for one recipient applies them in
/// order, as separate records would: a state over a final one changes
/// nothing and leaves no history; the message is due at its earliest
/// deferred recipient.
pub async fn one_record_applies_its_states_in_order<H: Harness>(mut h: H) {
    let store = h.open().await;
    let id = commit(&store, 5, 3).await;
    let lease = store.lease(&id, 100, TTL).await.unwrap().unwrap();
    store
        .record_states(
            &lease,
            &[
                (1, deferred(1, 700)),
                (0, deferred(1, 500)),
                (0, delivered(160)),
                (0, deferred(2, 900)),
                (2, deferred(1, 600)),
            ],
        )
        .await
        .unwrap();
    let state = store.message_state(&id).await.unwrap();
    assert_eq!(
        state.states,
        vec![delivered(160), deferred(1, 700), deferred(1, 600)]
    );
    assert_eq!(
        store.history(&id).await.unwrap(),
        vec![
            (1, deferred(1, 700)),
            (0, deferred(1, 500)),
            (0, delivered(160)),
            (2, deferred(1, 600)),
        ]
    );
    drop(lease);
    // Due at 600 (recipient 2), not before.
    assert!(store.list_due(599, 10).await.unwrap().is_empty());
    let due = store.list_due(600, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| &d.id).collect::<Vec<_>>(), [&id]);
}

/// Admin commands: a held message is never due (but keeps its states), a
/// released one is due again, a deleted one is gone for every handle —
/// including a pass that held its lease.
pub async fn hold_release_delete<H: Harness>(mut h: H) {
    let a = h.open().await;
    let b = h.another(&a).await;
    let x = commit(&a, 4, 1).await;
    let y = commit(&a, 5, 1).await;

    b.set_hold(&x, true).await.unwrap();
    assert!(a.message_state(&x).await.unwrap().held);
    let due: Vec<QueueId> = a
        .list_due(10, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(due, vec![y.clone()]);
    let leased = a.lease_due(10, TTL, 10).await.unwrap();
    assert_eq!(
        leased.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![y.clone()]
    );
    for lease in leased {
        a.release(lease).await.unwrap();
    }
    assert_eq!(
        a.list().await.unwrap(),
        vec![x.clone(), y.clone()],
        "held is still queued"
    );

    b.set_hold(&x, false).await.unwrap();
    assert!(!a.message_state(&x).await.unwrap().held);
    let due: Vec<QueueId> = a
        .list_due(10, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(due, vec![x.clone(), y.clone()]);

    let held_by_a = a.lease(&y, 10, TTL).await.unwrap().unwrap();
    b.delete(&y).await.unwrap();
    assert_eq!(b.list().await.unwrap(), vec![x.clone()]);
    assert!(a.open(&y).await.unwrap_err().is_not_found());
    assert!(a.message_state(&y).await.unwrap_err().is_not_found());
    assert!(a.read_back(&y).await.unwrap_err().is_not_found());
    let late = a.record_states(&held_by_a, &[(0, delivered(11))]).await;
    assert!(
        late.unwrap_err().is_not_found(),
        "a deleted message stays deleted"
    );
    assert!(b.delete(&y).await.unwrap_err().is_not_found());
    a.release(held_by_a)
        .await
        .expect("releasing after a delete is no error");
}

/// The end of a message's life: every recipient done, the pass removes it.
pub async fn remove_under_lease<H: Harness>(mut h: H) {
    let store = h.open().await;
    let id = commit(&store, 6, 2).await;
    let lease = store.lease(&id, 50, TTL).await.unwrap().unwrap();
    store
        .record_states(&lease, &[(0, delivered(51)), (1, delivered(52))])
        .await
        .unwrap();
    // All final: due at 0 so that a crash here still gets it removed.
    let state = store.message_state(&id).await.unwrap();
    assert_eq!(super::due_at(&state.states), 0);
    store.remove(lease).await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
    assert!(store.open(&id).await.unwrap_err().is_not_found());
    assert!(store.history(&id).await.unwrap_err().is_not_found());
    drop(store);
    let store = h.open().await;
    assert!(store.list().await.unwrap().is_empty(), "removed for good");
}

/// Due messages come pending first (by id), then by next attempt.
pub async fn list_due_orders_by_next_attempt<H: Harness>(mut h: H) {
    let store = h.open().await;
    let m1 = commit(&store, 7, 1).await;
    let m2 = commit(&store, 8, 2).await;
    let m3 = commit(&store, 9, 1).await;
    let m4 = commit(&store, 10, 1).await;
    for (id, states) in [
        (&m1, vec![(0, deferred(1, 500))]),
        (&m2, vec![(0, deferred(2, 300)), (1, deferred(1, 700))]),
        (&m4, vec![(0, delivered(20))]),
    ] {
        let lease = store.lease(id, 10, TTL).await.unwrap().unwrap();
        store.record_states(&lease, &states).await.unwrap();
        store.release(lease).await.unwrap();
    }
    let ids = |due: Vec<super::DueMessage>| -> Vec<(QueueId, u64)> {
        due.into_iter().map(|d| (d.id, d.due_at)).collect()
    };
    assert_eq!(
        ids(store.list_due(1000, 10).await.unwrap()),
        vec![
            (m3.clone(), 0),
            (m4.clone(), 0),
            (m2.clone(), 300),
            (m1.clone(), 500)
        ]
    );
    assert_eq!(
        ids(store.list_due(400, 10).await.unwrap()),
        vec![(m3.clone(), 0), (m4.clone(), 0), (m2.clone(), 300)]
    );
    assert_eq!(
        ids(store.list_due(400, 1).await.unwrap()),
        vec![(m3.clone(), 0)]
    );
    assert_eq!(ids(store.list_due(400, 0).await.unwrap()), vec![]);

    let leased = store.lease_due(400, TTL, 2).await.unwrap();
    assert_eq!(
        leased.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![m3.clone(), m4.clone()]
    );
    assert!(leased.iter().all(|l| l.expires == 400 + TTL));
    assert_eq!(
        ids(store.list_due(400, 10).await.unwrap()),
        vec![(m2.clone(), 300)]
    );
    // The leases expire: everything due is due again.
    assert_eq!(store.list_due(400 + TTL, 10).await.unwrap().len(), 3);
}

/// Two handles (two tasks each) leasing in parallel, in small batches, finishing and
/// removing what they lease, until nothing is left: every message goes to
/// exactly one of them, and none is leased after its removal.
pub async fn concurrent_leases_never_overlap<H: Harness>(mut h: H) {
    const MESSAGES: usize = 60;
    let a = h.open().await;
    let b = h.another(&a).await;
    let mut all = BTreeSet::new();
    for seed in 0..MESSAGES {
        all.insert(commit(&a, 100 + seed, 1).await);
    }

    async fn drain<S: QueueStore>(store: S) -> Vec<QueueId> {
        let mut got = Vec::new();
        loop {
            let batch = store.lease_due(5_000, 600, 3).await.expect("lease_due");
            if batch.is_empty() {
                return got;
            }
            for lease in batch {
                // A single lease too, racing the other handle's batches.
                assert!(store.lease(&lease.id, 5_000, 600).await.unwrap().is_none());
                // Finish the message as a pass would, while the other
                // handle lists and leases.
                store
                    .record_states(&lease, &[(0, delivered(5_000))])
                    .await
                    .expect("record under a fresh lease");
                got.push(lease.id.clone());
                store
                    .remove(lease)
                    .await
                    .expect("remove under a fresh lease");
            }
        }
    }
    // Two tasks per handle: leasing races within a handle too.
    let tasks: Vec<_> = [&a, &a, &b, &b]
        .into_iter()
        .map(|store| tokio::spawn(drain(store.clone())))
        .collect();
    let mut union = BTreeSet::new();
    let mut leased = 0;
    for task in tasks {
        let got = task.await.unwrap();
        leased += got.len();
        union.extend(got);
    }
    assert_eq!(leased, union.len(), "a message was leased twice");
    assert_eq!(union, all, "every message leased once");
    assert!(a.list().await.unwrap().is_empty(), "every message removed");
}

/// An envelope as an earlier Tern stored it (addresses as text: the null
/// sender, a quoted local part, a UTF-8 address, a bare `postmaster`) and
/// one with an address the parser refuses, committed and read back after a
/// reopen: the same typed envelope, stored as the same text.
pub async fn stored_addresses_read_back_as_written<H: Harness>(mut h: H) {
    const OLD: &str = concat!(
        r#"{"sender":"","recipients":["#,
        r#"{"address":"postmaster@example.test","original":"postmaster","mailbox":"postmaster@example.test","notify":null,"orcpt":null},"#,
        r#"{"address":"\"a b\"@example.net","original":"\"a b\"@example.net","mailbox":null,"notify":"FAILURE","orcpt":null},"#,
        r#"{"address":"jösé@bücher.example","original":"jösé@bücher.example","mailbox":null,"notify":null,"orcpt":null},"#,
        r#"{"address":"no at sign","original":"no at sign","mailbox":null,"notify":null,"orcpt":null}"#,
        r#"],"received_at":1700000000,"client_ip":null,"helo":null,"protocol":"UTF8SMTP","tls":null,"#,
        r#""auth_user":null,"body":"8BITMIME","smtputf8":true,"ret":null,"envid":null,"size":5}"#,
    );
    let old = super::codec::decode_envelope(OLD).expect("an old envelope reads");
    assert_eq!(super::codec::encode_envelope(&old).unwrap(), OLD);
    assert!(old.recipients[3].unreadable_address.is_some());
    let store = h.open().await;
    let mut incoming = store.create().expect("create");
    let id = incoming.id().clone();
    incoming.write(b"x\r\n\r\n").expect("write");
    store.commit(incoming, &old).await.expect("commit");
    drop(store);

    let store = h.open().await;
    let opened = store.open(&id).await.expect("open after reopen");
    assert_eq!(opened.envelope, old);
    assert_eq!(
        super::codec::encode_envelope(&opened.envelope).unwrap(),
        OLD,
        "stored as the same text"
    );
}

/// One `#[tokio::test]` (multi-threaded) per case of the suite, for the
/// backend whose harness `$harness` makes: an `async fn() -> Option<H>`
/// with `H: Harness`, which returns `None` — after printing why — when the
/// backend cannot run here (a case then does nothing). The caller needs
/// `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! queue_store_suite {
    ($harness:path) => {
        $crate::queue_store_suite!(@case $harness, commit_survives_reopen);
        $crate::queue_store_suite!(@case $harness, uncommitted_message_is_not_stored);
        $crate::queue_store_suite!(@case $harness, leases_are_exclusive_and_expire);
        $crate::queue_store_suite!(@case $harness, results_survive_reopen);
        $crate::queue_store_suite!(@case $harness, one_record_applies_its_states_in_order);
        $crate::queue_store_suite!(@case $harness, hold_release_delete);
        $crate::queue_store_suite!(@case $harness, remove_under_lease);
        $crate::queue_store_suite!(@case $harness, list_due_orders_by_next_attempt);
        $crate::queue_store_suite!(@case $harness, concurrent_leases_never_overlap);
        $crate::queue_store_suite!(@case $harness, stored_addresses_read_back_as_written);
    };
    (@case $harness:path, $case:ident) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some(harness) = $harness().await else {
                return;
            };
            $crate::store::suite::$case(harness).await;
        }
    };
}
