//! The retry schedule and per-recipient states with a virtual clock (no
//! test sleeps), and their persistence through a real spool: restarts, torn
//! state lines, hold/release, and compatibility with `record_done`/`done`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use tern_queue::{
    Answer, AttemptResult, Envelope, Next, QueueId, Recipient, RecipientState, RetrySchedule,
    Spool, SpoolError, SpoolOptions, on_expiry, on_result,
};
use tern_types::ServerReply;

const T0: u64 = 1_700_000_000;
const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

fn temp(text: &str) -> AttemptResult {
    AttemptResult::Deferred(Answer::Server(reply(text)))
}

fn reply(text: &str) -> ServerReply {
    text.parse().unwrap()
}

/// Attempt times of a recipient that is always deferred, from T0 until it
/// expires, with attempts happening exactly when they are due. Returns the
/// attempt times and the final state.
fn always_deferred(schedule: &RetrySchedule) -> (Vec<u64>, RecipientState) {
    let mut state = RecipientState::Pending;
    let mut now = T0;
    let mut times = Vec::new();
    loop {
        assert!(state.is_due(now));
        times.push(now);
        state = on_result(&state, &temp("451 4.3.0 busy"), schedule, T0, now);
        match &state {
            RecipientState::Deferred {
                attempts,
                next_attempt,
                ..
            } => {
                assert_eq!(*attempts as usize, times.len());
                assert!(*next_attempt > now, "the schedule must move forward");
                assert!(!state.is_due(next_attempt - 1));
                now = *next_attempt;
            }
            RecipientState::Expired { .. } => return (times, state),
            other => panic!("unexpected {other:?}"),
        }
        assert!(times.len() < 10_000, "never expires");
    }
}

#[test]
fn default_schedule_attempt_times() {
    let s = RetrySchedule::default();
    assert_eq!(s.max_age, Duration::from_secs(5 * DAY));
    assert_eq!(s.delay_warning_after, Some(Duration::from_secs(4 * HOUR)));
    let (times, _) = always_deferred(&s);
    let offsets: Vec<u64> = times.iter().take(8).map(|t| t - T0).collect();
    assert_eq!(
        offsets,
        [
            0,
            5 * MIN,
            15 * MIN,
            35 * MIN,
            75 * MIN,
            135 * MIN,
            195 * MIN,
            255 * MIN
        ]
    );
    // From the fifth retry on: hourly.
    for pair in times[5..times.len() - 1].windows(2) {
        assert_eq!(pair[1] - pair[0], HOUR);
    }
    assert_eq!(s.next_attempt(T0, 0, T0 + 7), Next::At(T0 + 7));
    assert_eq!(s.next_attempt(T0, 1, T0 + 10), Next::At(T0 + 10 + 5 * MIN));
    assert_eq!(s.next_attempt(T0, 9, T0 + DAY), Next::At(T0 + DAY + HOUR));
    assert_eq!(s.delay_warning_at(T0), Some(T0 + 4 * HOUR));
    assert_eq!(s.expires_at(T0), T0 + 5 * DAY);
}

#[test]
fn expiry_after_exactly_five_days_of_deferrals() {
    let s = RetrySchedule::default();
    let (times, state) = always_deferred(&s);
    let expiry = T0 + 5 * DAY;
    // The last attempt is exactly at max_age: 0, 5, 15, 35, 75 min, then
    // hourly from 75 min (118 times, the last at 119h15m), then 5 days.
    assert_eq!(*times.last().unwrap(), expiry);
    assert_eq!(times.len(), 5 + 118 + 1);
    assert!(times[times.len() - 2] < expiry);
    assert_eq!(
        state,
        RecipientState::Expired {
            at: expiry,
            last_error: "451 4.3.0 busy".into()
        }
    );
    // Nothing is ever scheduled after the expiry; at or after it: Expire.
    for attempts in [1, 5, 50, 1000] {
        for now in [expiry - HOUR, expiry - 1] {
            match s.next_attempt(T0, attempts, now) {
                Next::At(t) => assert!(t <= expiry && t > now),
                Next::Expire => panic!("expired early"),
            }
        }
        assert_eq!(s.next_attempt(T0, attempts, expiry), Next::Expire);
        assert_eq!(s.next_attempt(T0, attempts, expiry + DAY), Next::Expire);
    }
    // One second before expiry a temporary failure still defers (to the
    // expiry itself); at the expiry it expires.
    let deferred = on_result(&RecipientState::Pending, &temp("421"), &s, T0, expiry - 1);
    assert!(matches!(
        deferred,
        RecipientState::Deferred { next_attempt, .. } if next_attempt == expiry
    ));
    let expired = on_result(&deferred, &temp("421 again"), &s, T0, expiry);
    assert!(matches!(expired, RecipientState::Expired { at, .. } if at == expiry));
}

#[test]
fn a_custom_schedule_expires_on_time() {
    let s: RetrySchedule = toml::from_str(
        r#"
        intervals = ["1m", "7m"]
        max_age = "1h"
        delay_warning_after = "never"
        "#,
    )
    .unwrap();
    let (times, _) = always_deferred(&s);
    let offsets: Vec<u64> = times.iter().map(|t| t - T0).collect();
    assert_eq!(
        offsets,
        [0, 60, 480, 900, 1320, 1740, 2160, 2580, 3000, 3420, 3600]
    );
    assert_eq!(s.delay_warning_at(T0), None);
    // A delay warning that would come after the expiry never comes.
    let late = RetrySchedule {
        delay_warning_after: Some(Duration::from_secs(2 * HOUR)),
        ..s
    };
    assert_eq!(late.delay_warning_at(T0), None);
}

#[test]
fn transitions_from_pending_and_deferred() {
    let s = RetrySchedule::default();
    let d = on_result(
        &RecipientState::Pending,
        &temp("451 4.7.1 greylisted"),
        &s,
        T0,
        T0,
    );
    assert_eq!(
        d,
        RecipientState::Deferred {
            attempts: 1,
            last_error: "451 4.7.1 greylisted".into(),
            next_attempt: T0 + 5 * MIN
        }
    );
    let ok = AttemptResult::Delivered(reply("250 2.0.0 queued as X"));
    assert_eq!(
        on_result(&d, &ok, &s, T0, T0 + 300),
        RecipientState::Delivered {
            at: T0 + 300,
            reply: "250 2.0.0 queued as X".into()
        }
    );
    let no = AttemptResult::Failed(Answer::Server(reply(
        "550 5.1.1 <bob@example.net>: no such user",
    )));
    assert_eq!(
        on_result(&d, &no, &s, T0, T0 + 300),
        RecipientState::Failed {
            at: T0 + 300,
            reply: "550 5.1.1 <bob@example.net>: no such user".into(),
            status: "5.1.1".into()
        }
    );
    let vague = AttemptResult::Failed(Answer::Server(reply("554 rejected")));
    assert!(matches!(
        on_result(&RecipientState::Pending, &vague, &s, T0, T0),
        RecipientState::Failed { status, .. } if status == "5.0.0"
    ));
    // A 10 kB reply is kept bounded.
    let huge = temp(&format!("451 {}", "x".repeat(10_000)));
    match on_result(&d, &huge, &s, T0, T0 + 300) {
        RecipientState::Deferred {
            attempts,
            last_error,
            ..
        } => {
            assert_eq!(attempts, 2);
            assert!(last_error.len() <= tern_queue::MAX_REPLY);
        }
        other => panic!("{other:?}"),
    }
    // Expiry without an attempt keeps the last error.
    assert_eq!(
        on_expiry(&d, T0 + 6 * DAY),
        RecipientState::Expired {
            at: T0 + 6 * DAY,
            last_error: "451 4.7.1 greylisted".into()
        }
    );
    assert!(matches!(
        on_expiry(&RecipientState::Pending, T0),
        RecipientState::Expired { .. }
    ));
}

fn finals() -> Vec<RecipientState> {
    vec![
        RecipientState::Delivered {
            at: T0,
            reply: "250 ok".into(),
        },
        RecipientState::Failed {
            at: T0,
            reply: "550 5.1.1 no".into(),
            status: "5.1.1".into(),
        },
        RecipientState::Expired {
            at: T0 + 5 * DAY,
            last_error: "451 busy".into(),
        },
    ]
}

#[test]
fn final_states_never_change() {
    let s = RetrySchedule::default();
    let results = [
        AttemptResult::Delivered(reply("250 again")),
        temp("451 again"),
        AttemptResult::Failed(Answer::Server(reply("550 again"))),
    ];
    for state in finals() {
        assert!(state.is_final());
        for now in [0, T0, T0 + DAY, T0 + 10 * DAY, u64::MAX] {
            assert!(!state.is_due(now), "{state:?} due at {now}");
            for result in &results {
                assert_eq!(on_result(&state, result, &s, T0, now), state);
            }
            assert_eq!(on_expiry(&state, now), state);
        }
    }
    assert!(!RecipientState::Pending.is_final());
}

/// A miniature queue manager over a real spool: every pass attempts the
/// due recipients (read back from disk), records the results, and the
/// spool is reopened between passes as after a crash. The fake remote
/// counts deliveries per recipient: a recipient marked done is never
/// attempted again.
#[test]
fn a_retry_never_redelivers_a_done_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let s = RetrySchedule::default();
    let id = {
        let spool = open(dir.path());
        commit(&spool, 4)
    };
    // Recipient 0 accepts at once; 1 defers twice then accepts; 2 fails;
    // 3 always defers.
    let mut delivered = [0u32; 4];
    let mut attempts = [0u32; 4];
    let mut now = T0;
    for _ in 0..400 {
        let spool = open(dir.path());
        let states = spool.recipient_states(&id).unwrap();
        let mut results = Vec::new();
        for (i, state) in states.iter().enumerate() {
            if !state.is_due(now) {
                continue;
            }
            attempts[i] += 1;
            let result = match (i, attempts[i]) {
                (0, _) | (1, 3..) => {
                    delivered[i] += 1;
                    AttemptResult::Delivered(reply("250 2.0.0 ok"))
                }
                (2, _) => AttemptResult::Failed(Answer::Server(reply("550 5.1.1 unknown"))),
                _ => temp("451 4.3.0 later"),
            };
            results.push((i, on_result(state, &result, &s, T0, now)));
        }
        spool.record_states(&id, &results).unwrap();
        let states = spool.recipient_states(&id).unwrap();
        if states.iter().all(RecipientState::is_final) {
            break;
        }
        now = states
            .iter()
            .filter_map(|st| match st {
                RecipientState::Pending => Some(now),
                RecipientState::Deferred { next_attempt, .. } => Some(*next_attempt),
                _ => None,
            })
            .min()
            .unwrap();
    }
    assert_eq!(delivered, [1, 1, 0, 0]);
    assert_eq!(attempts[0], 1);
    assert_eq!(attempts[1], 3);
    assert_eq!(attempts[2], 1);
    assert_eq!(attempts[3], 124);
    let spool = open(dir.path());
    let states = spool.recipient_states(&id).unwrap();
    assert!(matches!(&states[0], RecipientState::Delivered { at, .. } if *at == T0));
    assert!(matches!(&states[1], RecipientState::Delivered { at, .. } if *at == T0 + 15 * MIN));
    assert!(matches!(&states[2], RecipientState::Failed { status, .. } if status == "5.1.1"));
    assert!(matches!(&states[3], RecipientState::Expired { at, .. } if *at == T0 + 5 * DAY));
    assert_eq!(spool.done(&id).unwrap(), BTreeSet::from([0, 1, 2, 3]));
}

fn envelope(recipients: usize) -> Envelope {
    Envelope {
        sender: "sender@example.org"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: (0..recipients)
            .map(|i| Recipient {
                address: format!("user{i}@example.net")
                    .parse::<tern_types::Mailbox>()
                    .unwrap(),
                original: format!("user{i}@example.net")
                    .parse::<tern_types::Mailbox>()
                    .unwrap()
                    .into(),
                mailbox: None,
                notify: None,
                orcpt: None,
                unreadable_address: None,
                unreadable_original: None,
            })
            .collect(),
        received_at: T0,
        helo: Some("client.example.org".into()),
        protocol: "ESMTPSA".into(),
        auth_user: Some("sender".into()),
        ..Envelope::default()
    }
}

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions { fsync: false }).unwrap()
}

fn commit(spool: &Spool, rcpts: usize) -> QueueId {
    let mut msg = spool.create().unwrap();
    msg.write(b"Subject: hi\r\n\r\nhello\r\n").unwrap();
    msg.commit(&envelope(rcpts))
        .unwrap()
        .wait_blocking()
        .unwrap()
}

fn state_path(dir: &Path, id: &QueueId) -> std::path::PathBuf {
    dir.join("queue").join(format!("{id}.state"))
}

#[test]
fn states_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let deferred = RecipientState::Deferred {
        attempts: 3,
        last_error: "451 4.4.1 connection timed out\r\nX-Injected: 1".into(),
        next_attempt: T0 + 35 * MIN,
    };
    let failed = RecipientState::Failed {
        at: T0 + 1,
        reply: "550 5.1.1 no such user".into(),
        status: "5.1.1".into(),
    };
    let expired = RecipientState::Expired {
        at: T0 + 5 * DAY,
        last_error: "451 busy".into(),
    };
    let id = {
        let spool = open(dir.path());
        let id = commit(&spool, 5);
        assert_eq!(
            spool.recipient_states(&id).unwrap(),
            vec![RecipientState::Pending; 5]
        );
        spool.record_state(&id, 0, &deferred).unwrap();
        spool.record_state(&id, 1, &failed).unwrap();
        spool.record_state(&id, 2, &expired).unwrap();
        spool
            .record_done(&id, 3, "delivered to user3@example.net")
            .unwrap();
        // Index out of range: recorded, never reported.
        spool.record_state(&id, 9, &failed).unwrap();
        id
    };
    let state_file = state_path(dir.path(), &id);
    let text = fs::read_to_string(&state_file).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(!text.contains("X-Injected: 1\n") && !text.contains('\r'));

    let spool = open(dir.path());
    let states = spool.recipient_states(&id).unwrap();
    assert_eq!(
        states,
        vec![
            deferred.clone(),
            failed.clone(),
            expired,
            RecipientState::Delivered {
                at: 0,
                reply: "delivered to user3@example.net".into()
            },
            RecipientState::Pending,
        ]
    );
    // Failed and expired count as done for the local delivery; a deferral
    // does not.
    assert_eq!(spool.done(&id).unwrap(), BTreeSet::from([1, 2, 3, 9]));
    // A later deferral replaces an earlier one; nothing replaces a final state.
    let later = RecipientState::Deferred {
        attempts: 4,
        last_error: "421 4.7.0 later".into(),
        next_attempt: T0 + 75 * MIN,
    };
    spool
        .record_states(&id, &[(0, later.clone()), (1, RecipientState::Pending)])
        .unwrap();
    let states = spool.recipient_states(&id).unwrap();
    assert_eq!(states[0], later);
    assert_eq!(states[1], failed);

    // The message leaving the queue takes its states with it.
    spool.remove(&id).unwrap();
    assert!(!state_file.exists());
    assert!(matches!(
        spool.recipient_states(&id),
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.record_state(&id, 0, &RecipientState::Pending),
        Err(SpoolError::NotFound(_))
    ));
    assert!(!state_file.exists());
}

#[test]
fn a_torn_last_line_is_ignored_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let first = RecipientState::Deferred {
        attempts: 1,
        last_error: "451 first".into(),
        next_attempt: T0 + 5 * MIN,
    };
    let second = RecipientState::Deferred {
        attempts: 2,
        last_error: "451 second".into(),
        next_attempt: T0 + 15 * MIN,
    };
    let id = {
        let spool = open(dir.path());
        let id = commit(&spool, 2);
        spool.record_state(&id, 0, &first).unwrap();
        id
    };
    let state_file = state_path(dir.path(), &id);
    let good = fs::read(&state_file).unwrap();

    // Produce the full record for `second` in a scratch spool, then keep
    // every strict prefix of it as a torn tail after a "crash".
    let scratch = tempfile::tempdir().unwrap();
    let record = {
        let spool = open(scratch.path());
        let other = commit(&spool, 2);
        spool.record_state(&other, 0, &second).unwrap();
        fs::read(state_path(scratch.path(), &other)).unwrap()
    };
    for cut in [1, record.len() / 2, record.len() - 1] {
        let mut torn = good.clone();
        torn.extend_from_slice(&record[..cut]);
        fs::write(&state_file, &torn).unwrap();
        let spool = open(dir.path());
        assert_eq!(spool.recipient_states(&id).unwrap()[0], first, "cut {cut}");
        // The next record does not glue onto the torn tail. (A record
        // missing only its newline is complete once the repair newline
        // ends it, exactly as for `done` records.)
        spool.record_state(&id, 1, &second).unwrap();
        let states = spool.recipient_states(&id).unwrap();
        let zero = if cut == record.len() - 1 {
            &second
        } else {
            &first
        };
        assert_eq!(states, vec![zero.clone(), second.clone()], "cut {cut}");
        fs::write(&state_file, &good).unwrap();
    }
}

#[test]
fn hold_and_release_are_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let (id, other) = {
        let spool = open(dir.path());
        let id = commit(&spool, 1);
        let other = commit(&spool, 1);
        assert!(!spool.is_held(&id).unwrap());
        spool.set_hold(&id, true).unwrap();
        assert!(spool.is_held(&id).unwrap());
        (id, other)
    };
    let spool = open(dir.path());
    assert!(spool.is_held(&id).unwrap());
    assert!(!spool.is_held(&other).unwrap());
    // Holding keeps the recipient states, and does not count as done.
    assert_eq!(
        spool.recipient_states(&id).unwrap(),
        vec![RecipientState::Pending]
    );
    assert!(spool.done(&id).unwrap().is_empty());
    spool.set_hold(&id, false).unwrap();
    drop(spool);
    let spool = open(dir.path());
    assert!(!spool.is_held(&id).unwrap());
    // Torn hold record after a crash: the last complete one counts.
    spool.set_hold(&id, true).unwrap();
    let path = state_path(dir.path(), &id);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"hold 1234");
    fs::write(&path, bytes).unwrap();
    assert!(spool.is_held(&id).unwrap());

    let missing: QueueId = "0000000000000000".parse().unwrap();
    assert!(matches!(
        spool.set_hold(&missing, true),
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.is_held(&missing),
        Err(SpoolError::NotFound(_))
    ));
}

#[test]
fn schedule_config_round_trip() {
    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    struct Queue {
        #[serde(default)]
        retry: RetrySchedule,
    }
    let q: Queue = toml::from_str("").unwrap();
    assert_eq!(q.retry, RetrySchedule::default());
    let q: Queue = toml::from_str("[retry]\nmax_age = \"3d\"\n").unwrap();
    assert_eq!(q.retry.max_age, Duration::from_secs(3 * DAY));
    assert_eq!(q.retry.intervals, RetrySchedule::default().intervals);

    let text = toml::to_string(&Queue {
        retry: RetrySchedule::default(),
    })
    .unwrap();
    assert!(
        text.contains(r#"intervals = ["5m", "10m", "20m", "40m", "1h"]"#),
        "{text}"
    );
    assert!(text.contains(r#"max_age = "5d""#), "{text}");
    assert!(text.contains(r#"delay_warning_after = "4h""#), "{text}");
    assert_eq!(
        toml::from_str::<Queue>(&text).unwrap().retry,
        RetrySchedule::default()
    );

    let custom = RetrySchedule::new(
        vec![Duration::from_secs(90), Duration::from_secs(5400)],
        Duration::from_secs(2 * DAY),
        None,
    )
    .unwrap();
    let text = toml::to_string(&Queue {
        retry: custom.clone(),
    })
    .unwrap();
    assert!(text.contains(r#"["1m30s", "1h30m"]"#), "{text}");
    assert!(text.contains(r#"delay_warning_after = "never""#), "{text}");
    assert_eq!(toml::from_str::<Queue>(&text).unwrap().retry, custom);

    for (bad, needle) in [
        ("[retry]\nmax_agee = \"5d\"\n", "max_agee"),
        ("[retry]\nmax_age = \"5 days\"\n", "invalid duration"),
        ("[retry]\nmax_age = 432000\n", "duration"),
        ("[retry]\nintervals = []\n", "at least one"),
        ("[retry]\nintervals = [\"5m\", \"0s\"]\n", "interval 1"),
        ("[retry]\nmax_age = \"0s\"\n", "max_age"),
        (
            "[retry]\ndelay_warning_after = \"0m\"\n",
            "delay_warning_after",
        ),
    ] {
        let err = toml::from_str::<Queue>(bad).unwrap_err().to_string();
        assert!(err.contains(needle), "{bad:?}: {err}");
    }
}
