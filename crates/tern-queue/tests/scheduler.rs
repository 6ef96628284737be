//! The scheduler over a real spool, on a virtual clock: the process is
//! "restarted" in the middle (the scheduler dropped, the spool reopened,
//! the scheduler rebuilt from what the spool recorded) and nothing is
//! delivered twice, no notice is chosen twice, and the message ends as it
//! would have without the restart. No test sleeps.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use tern_queue::{
    Answer, AttemptResult, DELAY_NOTICE, Destination, Envelope, NoticeKind, PassReport, QueueId,
    Recipient, RecipientReport, ScheduledMessage, Scheduler, SchedulerConfig, Spool, SpoolOptions,
};
use tern_types::ServerReply;

const T0: u64 = 1_700_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions { fsync: false }).unwrap()
}

fn envelope() -> Envelope {
    let rcpt = |address: &str, notify: Option<&str>| Recipient {
        address: address.parse().unwrap(),
        original: address.parse::<tern_types::Mailbox>().unwrap().into(),
        mailbox: None,
        notify: notify.map(|n| n.parse().unwrap()),
        orcpt: None,
        unreadable_address: None,
        unreadable_original: None,
    };
    Envelope {
        sender: "alice@example.test"
            .parse::<tern_types::Mailbox>()
            .unwrap()
            .into(),
        recipients: vec![
            rcpt("fast@fast.test", None),
            rcpt("later@slow.test", None),
            rcpt("never@slow.test", Some("FAILURE")),
            rcpt("gone@fast.test", None),
        ],
        received_at: T0,
        ..Envelope::default()
    }
}

fn route(r: &Recipient) -> Destination {
    Destination::Remote(r.address.domain().unwrap().as_str().to_owned())
}

fn load(spool: &Spool, id: &QueueId) -> ScheduledMessage {
    let envelope = spool.open_message(id).unwrap().envelope;
    let state = spool.message_state(id, envelope.recipients.len()).unwrap();
    ScheduledMessage::from_spool(&envelope, state, route)
}

fn reply(text: &str) -> ServerReply {
    text.parse().unwrap()
}

/// The remote side: recipient 0 takes it at once, 1 defers for 6 hours
/// then takes it, 2 always defers, 3 refuses.
fn answer(index: usize, now: u64) -> AttemptResult {
    match index {
        0 => AttemptResult::Delivered(reply("250 2.0.0 ok")),
        1 if now >= T0 + 6 * HOUR => AttemptResult::Delivered(reply("250 2.0.0 ok")),
        3 => AttemptResult::Failed(Answer::Server(reply("550 5.1.1 no such user"))),
        _ => AttemptResult::Deferred(Answer::Server(reply("451 4.3.0 later"))),
    }
}

/// Runs the scheduler until `until` (or until the message is gone), doing
/// what a driver does with the spool: record states before anything else,
/// record delay warnings once sent, remove the message at the end.
fn run(
    spool: &Spool,
    sched: &mut Scheduler,
    until: u64,
    deliveries: &mut BTreeMap<usize, u32>,
    notices: &mut Vec<(u64, NoticeKind, Vec<usize>)>,
) -> bool {
    while let Some(now) = sched.next_wakeup() {
        if now > until {
            return false;
        }
        let due = sched.due(now);
        for n in due.notices {
            spool
                .record_notices(&n.id, &n.recipients, DELAY_NOTICE)
                .unwrap();
            notices.push((now, n.kind, n.recipients));
        }
        for pass in due.passes {
            let mut report = PassReport::default();
            for group in &pass.groups {
                for &index in &group.recipients {
                    let result = answer(index, now);
                    if matches!(result, AttemptResult::Delivered(_)) {
                        *deliveries.entry(index).or_default() += 1;
                    }
                    report.results.push(RecipientReport {
                        index,
                        result,
                        dsn_passed_on: true,
                    });
                }
            }
            let ended = sched.pass_ended(&pass.id, report, now);
            spool.record_states(&pass.id, &ended.record).unwrap();
            for n in ended.notices {
                if n.kind == NoticeKind::Delay {
                    spool
                        .record_notices(&n.id, &n.recipients, DELAY_NOTICE)
                        .unwrap();
                }
                notices.push((now, n.kind, n.recipients));
            }
            if ended.remove {
                spool.remove(&pass.id).unwrap();
                return true;
            }
        }
    }
    false
}

#[test]
fn a_restart_in_the_middle_delivers_nothing_twice() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let spool = open(dir.path());
        let mut msg = spool.create().unwrap();
        msg.write(b"Subject: hi\r\n\r\nhello\r\n").unwrap();
        msg.commit(&envelope()).unwrap().wait_blocking().unwrap()
    };
    let mut deliveries = BTreeMap::new();
    let mut notices = Vec::new();

    // First run: until 5 hours (0 delivered, 3 failed, the delay warning
    // for 1 sent at 4 h), then the process dies.
    {
        let spool = open(dir.path());
        let mut sched = Scheduler::new(SchedulerConfig::default());
        sched.submit(id.clone(), load(&spool, &id), T0);
        assert!(!run(
            &spool,
            &mut sched,
            T0 + 5 * HOUR,
            &mut deliveries,
            &mut notices
        ));
    }
    assert_eq!(deliveries, BTreeMap::from([(0, 1)]));
    // Second run: rebuilt from the spool alone, resumed at 5 h.
    {
        let spool = open(dir.path());
        let mut sched = Scheduler::new(SchedulerConfig::default());
        let message = load(&spool, &id);
        assert!(message.recipients[0].state.is_final());
        assert!(message.recipients[1].warned);
        sched.submit(id.clone(), message, T0 + 5 * HOUR);
        // Nothing is due before the deferred recipients' next attempt.
        assert!(sched.next_wakeup().unwrap() > T0 + 5 * HOUR);
        // And once more in the middle of the second day.
        assert!(!run(
            &spool,
            &mut sched,
            T0 + DAY + 12 * HOUR,
            &mut deliveries,
            &mut notices
        ));
    }
    {
        let spool = open(dir.path());
        let mut sched = Scheduler::new(SchedulerConfig::default());
        sched.submit(id.clone(), load(&spool, &id), T0 + DAY + 12 * HOUR);
        assert!(run(
            &spool,
            &mut sched,
            u64::MAX,
            &mut deliveries,
            &mut notices
        ));
        assert!(spool.list().unwrap().is_empty());
    }
    // Every delivered recipient exactly once.
    assert_eq!(deliveries, BTreeMap::from([(0, 1), (1, 1)]));
    // One failure notice for the refusal, one delay warning (to 1 and 2;
    // 2 asked for failures only, so to 1), the expiry notice for 2 at 5 d.
    let summary: Vec<(u64, NoticeKind, Vec<usize>)> = notices
        .into_iter()
        .map(|(at, kind, list)| (at - T0, kind, list))
        .collect();
    assert_eq!(
        summary,
        [
            (0, NoticeKind::Failure, vec![3]),
            (4 * HOUR, NoticeKind::Delay, vec![1]),
            (5 * DAY, NoticeKind::Failure, vec![2]),
        ]
    );
    assert!(started.elapsed().as_secs() < 5);
}
