//! Properties of the scheduler under arbitrary traffic, on a virtual
//! clock: whatever messages, destinations and results come, it never runs
//! more passes than `concurrency` nor more than `per_destination` at one
//! destination, never starts a second pass on a message, never changes a
//! final state, never chooses a failure notice twice for a recipient, and
//! — once every destination accepts — delivers everything and forgets it.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tern_queue::{
    Answer, AttemptResult, Destination, NoticeKind, PassReport, QueueId, RecipientReport,
    RecipientState, RetrySchedule, ScheduledMessage, ScheduledRecipient, Scheduler,
    SchedulerConfig,
};
use tern_types::ServerReply;

const T0: u64 = 1_700_000_000;

fn destination(n: u8) -> Destination {
    match n % 4 {
        0 => Destination::Maildir,
        1 => Destination::Lmtp("lmtp.test".into()),
        k => Destination::Remote(format!("d{k}.test")),
    }
}

fn result(kind: u8) -> AttemptResult {
    let reply = |t: &str| t.parse::<ServerReply>().unwrap();
    match kind % 3 {
        0 => AttemptResult::Delivered(reply("250 ok")),
        1 => AttemptResult::Deferred(Answer::Server(reply("451 4.3.0 later"))),
        _ => AttemptResult::Failed(Answer::Server(reply("550 5.1.1 no"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_under_any_traffic(
        messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..5), 1..12),
        outcomes in prop::collection::vec(any::<u8>(), 1..200),
        steps in prop::collection::vec(1u64..20_000, 1..200),
        concurrency in 1usize..4,
        per_destination in 1usize..3,
    ) {
        let mut s = Scheduler::new(SchedulerConfig {
            schedule: RetrySchedule::default(),
            concurrency,
            per_destination,
            idle_retry: 60,
        });
        let mut states: BTreeMap<(QueueId, usize), RecipientState> = BTreeMap::new();
        for (n, rcpts) in messages.iter().enumerate() {
            let id: QueueId = format!("{n:016}").parse().unwrap();
            let recipients = rcpts
                .iter()
                .map(|&d| ScheduledRecipient {
                    destination: destination(d),
                    notify: None,
                    state: RecipientState::Pending,
                    warned: false,
                })
                .collect();
            s.submit(id, ScheduledMessage { received_at: T0, null_sender: false, held: false, recipients }, T0);
        }
        let mut now = T0;
        let mut running: Vec<(QueueId, Vec<usize>)> = Vec::new();
        let mut failure_noticed = BTreeSet::new();
        let mut outcome = outcomes.iter().cycle();
        for (i, step) in steps.iter().enumerate() {
            let due = s.due(now);
            for pass in due.passes {
                prop_assert!(running.iter().all(|(id, _)| *id != pass.id), "second pass on a message");
                let rcpts = pass.groups.iter().flat_map(|g| g.recipients.clone()).collect();
                running.push((pass.id, rcpts));
            }
            prop_assert!(s.running() <= concurrency);
            prop_assert_eq!(s.running(), running.len());
            for k in 0..4u8 {
                prop_assert!(s.busy(&destination(k)) <= per_destination);
            }
            // End one running pass now and then.
            if !running.is_empty() && i % 2 == 0 {
                let (id, rcpts) = running.remove(0);
                let report = PassReport {
                    results: rcpts
                        .iter()
                        .map(|&index| RecipientReport {
                            index,
                            result: result(*outcome.next().unwrap()),
                            dsn_passed_on: true,
                        })
                        .collect(),
                    ..PassReport::default()
                };
                let ended = s.pass_ended(&id, report, now);
                for (index, state) in ended.record {
                    if let Some(old) = states.get(&(id.clone(), index)) {
                        prop_assert!(!old.is_final(), "a final state changed");
                    }
                    states.insert((id.clone(), index), state);
                }
                for n in ended.notices.iter().filter(|n| n.kind == NoticeKind::Failure) {
                    for &r in &n.recipients {
                        prop_assert!(failure_noticed.insert((id.clone(), r)), "failure noticed twice");
                    }
                }
            }
            now += step;
        }
        // Everything running ends delivered; from now on all is accepted.
        loop {
            for (id, rcpts) in running.drain(..) {
                let report = PassReport {
                    results: rcpts
                        .iter()
                        .map(|&index| RecipientReport { index, result: result(0), dsn_passed_on: true })
                        .collect(),
                    ..PassReport::default()
                };
                s.pass_ended(&id, report, now);
            }
            let Some(at) = s.next_wakeup() else { break };
            now = now.max(at);
            let due = s.due(now);
            prop_assert!(!due.passes.is_empty() || !due.notices.is_empty() || s.next_wakeup() != Some(now),
                "woken for nothing at the same time again (spin)");
            for pass in due.passes {
                let rcpts = pass.groups.iter().flat_map(|g| g.recipients.clone()).collect();
                running.push((pass.id, rcpts));
            }
            prop_assert!(now < T0 + 30 * 86_400, "never finishes");
        }
        prop_assert!(s.is_empty());
    }
}
