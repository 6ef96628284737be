//! A spool written by an earlier Tern is read by this one: the fixture in
//! `tests/fixtures/spool-v1/` was written by the spool code of December
//! 2026 (JSON envelope with string fields, `TERNENV1` trailer, the
//! append-only state file) and is committed as bytes. Whatever the types
//! of the envelope become, this test must keep passing.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use tern_queue::{
    Destination, Envelope, QueueId, Recipient, RecipientState, ScheduledMessage, Spool,
    SpoolOptions,
};
use tern_types::dsn::Notify;

const ID: &str = "0PZ2D8W1JQ0000A1";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool-v1")
}

/// The envelope the fixture holds.
fn envelope() -> Envelope {
    Envelope {
        sender: "alice@example.test"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: vec![
            Recipient {
                address: "bob@example.test".parse::<tern_types::Mailbox>().unwrap(),
                original: "Bob@Example.TEST"
                    .parse::<tern_types::Mailbox>()
                    .unwrap()
                    .into(),
                mailbox: Some("bob@example.test".into()),
                notify: Some("SUCCESS,DELAY".parse().unwrap()),
                orcpt: Some("rfc822;Bob@Example.TEST".parse().unwrap()),
                unreadable_address: None,
                unreadable_original: None,
            },
            Recipient {
                address: "carol@remote.test".parse::<tern_types::Mailbox>().unwrap(),
                original: "carol@remote.test"
                    .parse::<tern_types::Mailbox>()
                    .unwrap()
                    .into(),
                mailbox: None,
                notify: Some("NEVER".parse().unwrap()),
                orcpt: None,
                unreadable_address: None,
                unreadable_original: None,
            },
            Recipient {
                address: "dave@remote.test".parse::<tern_types::Mailbox>().unwrap(),
                original: "dave@remote.test"
                    .parse::<tern_types::Mailbox>()
                    .unwrap()
                    .into(),
                mailbox: None,
                notify: None,
                orcpt: None,
                unreadable_address: None,
                unreadable_original: None,
            },
        ],
        received_at: 1_700_000_000,
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        helo: Some("client.example.test".into()),
        protocol: "ESMTPSA".into(),
        tls: Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into()),
        auth_user: Some("alice".into()),
        body: "8BITMIME".parse().unwrap(),
        smtputf8: false,
        ret: Some("HDRS".parse().unwrap()),
        envid: Some("env-1".parse().unwrap()),
        size: 0,
        quarantine: true,
        unreadable_sender: None,
    }
}

const BODY: &[u8] = b"Subject: old spool\r\n\r\nwritten before the envelope was typed\r\n";

fn deferred() -> RecipientState {
    RecipientState::Deferred {
        attempts: 2,
        last_error: "451 4.4.1 connection refused".into(),
        next_attempt: 1_700_000_900,
    }
}

/// Writes the fixture (run once, by hand, with the code whose format it
/// records: `cargo test -p tern-queue --test old_spool -- --ignored`).
#[test]
#[ignore = "writes the committed fixture"]
fn write_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let mut msg = spool.create().unwrap();
    msg.write(BODY).unwrap();
    let id = msg.commit(&envelope()).unwrap().wait_blocking().unwrap();
    spool
        .record_done(&id, 0, "delivered to bob@example.test")
        .unwrap();
    spool.record_state(&id, 2, &deferred()).unwrap();
    spool.record_notices(&id, &[2], "delay").unwrap();
    spool.set_hold(&id, true).unwrap();
    let out = fixture().join("queue");
    fs::create_dir_all(&out).unwrap();
    fs::copy(dir.path().join("queue").join(id.as_str()), out.join(ID)).unwrap();
    fs::copy(
        dir.path().join("queue").join(format!("{id}.state")),
        out.join(format!("{ID}.state")),
    )
    .unwrap();
}

#[test]
fn a_spool_written_by_the_previous_format_is_read() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("queue")).unwrap();
    for name in [ID.to_owned(), format!("{ID}.state")] {
        fs::copy(
            fixture().join("queue").join(&name),
            dir.path().join("queue").join(&name),
        )
        .unwrap();
    }
    let spool = Spool::open(dir.path(), SpoolOptions { fsync: false }).unwrap();
    let id: QueueId = ID.parse().unwrap();
    assert_eq!(spool.list().unwrap(), std::slice::from_ref(&id));
    let message = spool.open_message(&id).unwrap();
    let mut want = envelope();
    want.size = BODY.len() as u64;
    assert_eq!(message.envelope, want);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut message.reader().unwrap(), &mut body).unwrap();
    assert_eq!(body, BODY);

    let state = spool.message_state(&id, 3).unwrap();
    assert!(state.held);
    assert_eq!(state.states[1], RecipientState::Pending);
    assert_eq!(state.states[2], deferred());
    assert!(matches!(state.states[0], RecipientState::Delivered { .. }));
    assert!(state.notices.contains(&(2, "delay".to_owned())));

    // The stored strings read back as the typed values.
    let scheduled = ScheduledMessage::from_spool(&message.envelope, state, |r| {
        if r.mailbox.is_some() {
            Destination::Maildir
        } else {
            Destination::Remote("remote.test".into())
        }
    });
    assert!(scheduled.held && !scheduled.null_sender);
    assert_eq!(
        scheduled.recipients[0].notify,
        Some(Notify::On {
            success: true,
            failure: false,
            delay: true
        })
    );
    assert_eq!(scheduled.recipients[1].notify, Some(Notify::Never));
    assert_eq!(scheduled.recipients[2].notify, None);
    assert!(scheduled.recipients[2].warned);
    assert_eq!(scheduled.received_at, 1_700_000_000);
}
