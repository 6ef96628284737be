//! The per-message recipient state file, `queue/<id>.state`.
//!
//! Append-only text, one record per line, four kinds:
//!
//! ```text
//! done <index> <checksum> <outcome>\n      recipient <index> is done (final)
//! retry <index> <checksum> <state-json>\n  recipient <index> is pending or deferred
//! hold <checksum> <0|1>\n                  the message is held (1) or released (0)
//! notice <index> <checksum> <kind>\n       a <kind> DSN (`delay`) was sent for <index>
//! ```
//!
//! For `done`, `checksum` is FNV-1a (32 bit, 8 lower-case hex digits) over
//! `"<index> <outcome>"`; for the others it covers the whole line after
//! the tag and checksum, tag included (`"retry <index> <state-json>"`,
//! `"hold <0|1>"`, `"notice <index> <kind>"`). A `notice` record makes a
//! notice that is sent at most once per recipient (the delay warning)
//! survive a restart; an older Tern skips it (unknown tag). A record counts only when it ends in `\n` and its
//! checksum matches, so a line torn by a crash (or garbage left by a
//! filesystem that exposes unwritten blocks) is ignored rather than
//! misread. Before appending to a file that does not end in `\n`, a `\n` is
//! written first so a torn tail can never glue onto the next record.
//!
//! `done` is the original record of [`Spool::record_done`], whose outcome is
//! free text. [`Spool::record_state`] writes a final state (delivered,
//! failed, expired) as a `done` record too, with the outcome
//! `state <state-json>`, so that [`Spool::done`] — and a Tern too old to know
//! `retry` records, which it skips — still sees the recipient as done.
//!
//! Reading applies the records in file order, with one rule on top: once a
//! recipient has a final state, later records for it are ignored (a done
//! recipient is never un-done). A `done` record whose outcome is free text
//! reads back as [`RecipientState::Delivered`] with `at: 0` and the outcome
//! as its reply (the local delivery, its only writer, records deliveries).
//! The last valid `hold` record gives the hold flag.
//!
//! What this module must never do: count a torn or forged line, let a
//! record's text break the line format, or acknowledge a record before it
//! is fsynced.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::committer::sync_dir;
use crate::recipient::RecipientState;
use crate::{QueueId, Spool, SpoolError};

const TAG: &str = "done";

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Replace anything that could break the line format.
fn sanitize_outcome(outcome: &str) -> String {
    let cleaned: String = outcome
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.is_empty() {
        "-".to_owned()
    } else {
        cleaned
    }
}

/// One record, with its trailing newline.
pub(crate) fn encode_record(index: usize, outcome: &str) -> Vec<u8> {
    let outcome = sanitize_outcome(outcome);
    let body = format!("{index} {outcome}");
    let sum = fnv1a32(body.as_bytes());
    format!("{TAG} {index} {sum:08x} {outcome}\n").into_bytes()
}

const RETRY_TAG: &str = "retry";
const HOLD_TAG: &str = "hold";
const NOTICE_TAG: &str = "notice";
/// Outcome prefix of a `done` record that carries a [`RecipientState`].
const STATE_PREFIX: &str = "state ";

/// One `retry` record (non-final state) or, for a final state, one `done`
/// record, with its trailing newline.
pub(crate) fn encode_state(index: usize, state: &RecipientState) -> Vec<u8> {
    // serde_json escapes every control character: the JSON is one line.
    let json = serde_json::to_string(state).expect("a RecipientState always serialises");
    if state.is_final() {
        encode_record(index, &format!("{STATE_PREFIX}{json}"))
    } else {
        let body = format!("{RETRY_TAG} {index} {json}");
        let sum = fnv1a32(body.as_bytes());
        format!("{RETRY_TAG} {index} {sum:08x} {json}\n").into_bytes()
    }
}

/// One `hold` record, with its trailing newline.
pub(crate) fn encode_hold(held: bool) -> Vec<u8> {
    let value = u8::from(held);
    let sum = fnv1a32(format!("{HOLD_TAG} {value}").as_bytes());
    format!("{HOLD_TAG} {sum:08x} {value}\n").into_bytes()
}

/// One `notice` record, with its trailing newline. `kind` is a short
/// lower-case word (`delay`).
pub(crate) fn encode_notice(index: usize, kind: &str) -> Vec<u8> {
    let kind = sanitize_outcome(kind).replace(' ', "-");
    let sum = fnv1a32(format!("{NOTICE_TAG} {index} {kind}").as_bytes());
    format!("{NOTICE_TAG} {index} {sum:08x} {kind}\n").into_bytes()
}

/// What a state file says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StateFile {
    /// Indices with a valid `done` record (what [`Spool::done`] returns).
    pub(crate) done: BTreeSet<usize>,
    /// The state of every recipient with at least one valid record.
    pub(crate) states: BTreeMap<usize, RecipientState>,
    /// The message is held.
    pub(crate) held: bool,
    /// Every record that changed a recipient's state, in file order (what
    /// [`Spool::recipient_history`] returns).
    pub(crate) history: Vec<(usize, RecipientState)>,
    /// `(recipient index, notice kind)` of every valid `notice` record.
    pub(crate) notices: BTreeSet<(usize, String)>,
}

/// A message's state file as [`Spool::message_state`] reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageState {
    /// One state per recipient, in envelope order.
    pub states: Vec<RecipientState>,
    /// The message is held.
    pub held: bool,
    /// `(recipient index, notice kind)` of every notice recorded.
    pub notices: BTreeSet<(usize, String)>,
}

/// One valid record.
enum Record {
    Done(usize, RecipientState),
    Retry(usize, RecipientState),
    Hold(bool),
    Notice(usize, String),
}

/// Read a state file's contents (see the module documentation for the rules).
pub(crate) fn parse(contents: &[u8]) -> StateFile {
    let mut file = StateFile::default();
    let mut lines = contents.split(|&b| b == b'\n');
    // The piece after the last '\n' is an unterminated (torn) line.
    let _ = lines.next_back();
    for line in lines {
        let Some(record) = parse_any(line) else {
            continue;
        };
        let (index, state) = match record {
            Record::Hold(held) => {
                file.held = held;
                continue;
            }
            Record::Notice(index, kind) => {
                file.notices.insert((index, kind));
                continue;
            }
            Record::Done(index, state) => {
                file.done.insert(index);
                (index, state)
            }
            Record::Retry(index, state) => (index, state),
        };
        let current = file.states.entry(index).or_insert(RecipientState::Pending);
        if !current.is_final() {
            *current = state.clone();
            file.history.push((index, state));
        }
    }
    file
}

/// The recipient indices recorded as done in a state file's contents.
pub(crate) fn parse_done(contents: &[u8]) -> BTreeSet<usize> {
    parse(contents).done
}

fn parse_any(line: &[u8]) -> Option<Record> {
    let line = std::str::from_utf8(line).ok()?;
    let (tag, rest) = line.split_once(' ')?;
    match tag {
        TAG => {
            let (index, outcome) = parse_line(line)?;
            let state = outcome
                .strip_prefix(STATE_PREFIX)
                .and_then(|json| serde_json::from_str::<RecipientState>(json).ok())
                .filter(RecipientState::is_final)
                .unwrap_or_else(|| RecipientState::Delivered {
                    at: 0,
                    reply: outcome.to_owned(),
                });
            Some(Record::Done(index, state))
        }
        RETRY_TAG => {
            let (index_str, rest) = rest.split_once(' ')?;
            let (sum_str, json) = rest.split_once(' ')?;
            let index = parse_index(index_str)?;
            if !checksum_ok(sum_str, &format!("{RETRY_TAG} {index} {json}")) {
                return None;
            }
            let state: RecipientState = serde_json::from_str(json).ok()?;
            (!state.is_final()).then_some(Record::Retry(index, state))
        }
        HOLD_TAG => {
            let (sum_str, value) = rest.split_once(' ')?;
            if !checksum_ok(sum_str, &format!("{HOLD_TAG} {value}")) {
                return None;
            }
            match value {
                "0" => Some(Record::Hold(false)),
                "1" => Some(Record::Hold(true)),
                _ => None,
            }
        }
        NOTICE_TAG => {
            let (index_str, rest) = rest.split_once(' ')?;
            let (sum_str, kind) = rest.split_once(' ')?;
            let index = parse_index(index_str)?;
            if kind.is_empty() || !checksum_ok(sum_str, &format!("{NOTICE_TAG} {index} {kind}")) {
                return None;
            }
            Some(Record::Notice(index, kind.to_owned()))
        }
        _ => None,
    }
}

fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn checksum_ok(sum_str: &str, body: &str) -> bool {
    sum_str.len() == 8
        && u32::from_str_radix(sum_str, 16).is_ok_and(|sum| fnv1a32(body.as_bytes()) == sum)
}

fn parse_line(line: &str) -> Option<(usize, &str)> {
    let rest = line.strip_prefix(TAG)?.strip_prefix(' ')?;
    let (index_str, rest) = rest.split_once(' ')?;
    let (sum_str, outcome) = rest.split_once(' ')?;
    let index = parse_index(index_str)?;
    checksum_ok(sum_str, &format!("{index} {outcome}")).then_some((index, outcome))
}

/// Append `records` (complete lines) to the state file at `path` in the
/// queue directory `queue`, creating it 0600 if needed; returns once the
/// data (and, for a new file, the directory entry) is fsynced.
fn append(path: &Path, queue: &Path, records: &[u8]) -> Result<(), SpoolError> {
    let (file, created) = match OpenOptions::new()
        .mode(0o600)
        .read(true)
        .append(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(path)
                .map_err(|e| SpoolError::io("open", path, e))?,
            false,
        ),
        Err(e) => return Err(SpoolError::io("create", path, e)),
    };
    let mut data = Vec::with_capacity(records.len() + 1);
    if !created {
        // A torn last line (crash mid-append) must not glue onto ours.
        let len = file
            .metadata()
            .map_err(|e| SpoolError::io("stat", path, e))?
            .len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1)
                .map_err(|e| SpoolError::io("read", path, e))?;
            if last[0] != b'\n' {
                data.push(b'\n');
            }
        }
    }
    data.extend_from_slice(records);
    (&file)
        .write_all(&data)
        .map_err(|e| SpoolError::io("append", path, e))?;
    file.sync_data()
        .map_err(|e| SpoolError::io("fdatasync", path, e))?;
    if created {
        sync_dir(queue).map_err(|e| SpoolError::io("fsync directory", queue, e))?;
    }
    Ok(())
}

/// Per-recipient states and the hold flag. These always fsync, whatever
/// [`SpoolOptions::fsync`](crate::SpoolOptions::fsync) says: the records are
/// small and a lost one could mean a second delivery.
impl Spool {
    fn queue_dir(&self) -> PathBuf {
        self.path().join("queue")
    }

    fn state_file(&self, id: &QueueId) -> PathBuf {
        self.queue_dir().join(format!("{id}.state"))
    }

    fn require_message(&self, id: &QueueId) -> Result<(), SpoolError> {
        let path = self.queue_dir().join(id.as_str());
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpoolError::NotFound(id.clone())),
            Err(e) => Err(SpoolError::io("stat", &path, e)),
        }
    }

    fn read_state_file(&self, id: &QueueId) -> Result<StateFile, SpoolError> {
        let path = self.state_file(id);
        match fs::read(&path) {
            Ok(bytes) => Ok(parse(&bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StateFile::default()),
            Err(e) => Err(SpoolError::io("read", &path, e)),
        }
    }

    /// The state of every recipient of `id`, in envelope order: what the
    /// state file records, [`RecipientState::Pending`] where it records
    /// nothing. Recipients done through [`record_done`](Self::record_done)
    /// read back as delivered at time 0. Records for indices beyond the
    /// envelope's recipients are ignored.
    pub fn recipient_states(&self, id: &QueueId) -> Result<Vec<RecipientState>, SpoolError> {
        let count = self.open_message(id)?.envelope.recipients.len();
        Ok(self.message_state(id, count)?.states)
    }

    /// Everything the state file says about `id`, read once: the state of
    /// each of its `recipients` (as [`recipient_states`](Self::recipient_states)
    /// gives them), the hold flag and the notices recorded. For a caller
    /// that has the envelope already (the queue manager's pass).
    pub fn message_state(
        &self,
        id: &QueueId,
        recipients: usize,
    ) -> Result<MessageState, SpoolError> {
        self.require_message(id)?;
        let file = self.read_state_file(id)?;
        let mut recorded = file.states;
        Ok(MessageState {
            states: (0..recipients)
                .map(|i| recorded.remove(&i).unwrap_or(RecipientState::Pending))
                .collect(),
            held: file.held,
            notices: file.notices,
        })
    }

    /// Every recorded state change of `id`'s recipients, oldest first, as
    /// `(recipient index, state)`: each deferral with its error, then the
    /// final state. Records ignored by the reading rules (torn, forged,
    /// after a final state) are not part of it. For `tern queue show`.
    pub fn recipient_history(
        &self,
        id: &QueueId,
    ) -> Result<Vec<(usize, RecipientState)>, SpoolError> {
        self.require_message(id)?;
        Ok(self.read_state_file(id)?.history)
    }

    /// Durably record the state of recipient `index` of `id`; returns once
    /// the record is fsynced. A final state (delivered, failed, expired)
    /// also counts for [`done`](Self::done). Recording over a final state
    /// leaves it unchanged when read back: compute states with
    /// [`on_result`](crate::on_result), which never changes a final one.
    pub fn record_state(
        &self,
        id: &QueueId,
        index: usize,
        state: &RecipientState,
    ) -> Result<(), SpoolError> {
        self.record_states(id, &[(index, state.clone())])
    }

    /// [`record_state`](Self::record_state) for several recipients at once
    /// (one append, one fsync): the results of one delivery attempt.
    pub fn record_states(
        &self,
        id: &QueueId,
        states: &[(usize, RecipientState)],
    ) -> Result<(), SpoolError> {
        self.require_message(id)?;
        if states.is_empty() {
            return Ok(());
        }
        let records: Vec<u8> = states
            .iter()
            .flat_map(|(index, state)| encode_state(*index, state))
            .collect();
        append(&self.state_file(id), &self.queue_dir(), &records)
    }

    /// Hold (`true`) or release (`false`) message `id`, durably: a held
    /// message keeps its recipients' states but the queue manager does not
    /// attempt it (`tern queue hold|release`).
    pub fn set_hold(&self, id: &QueueId, held: bool) -> Result<(), SpoolError> {
        self.require_message(id)?;
        append(&self.state_file(id), &self.queue_dir(), &encode_hold(held))
    }

    /// Durably note that a `kind` notice (e.g. `delay`: the delay warning)
    /// went out for each recipient in `indices`, so that it is not sent
    /// again, even after a restart.
    pub fn record_notices(
        &self,
        id: &QueueId,
        indices: &[usize],
        kind: &str,
    ) -> Result<(), SpoolError> {
        self.require_message(id)?;
        if indices.is_empty() {
            return Ok(());
        }
        let records: Vec<u8> = indices
            .iter()
            .flat_map(|&index| encode_notice(index, kind))
            .collect();
        append(&self.state_file(id), &self.queue_dir(), &records)
    }

    /// Whether message `id` is held (see [`set_hold`](Self::set_hold)).
    pub fn is_held(&self, id: &QueueId) -> Result<bool, SpoolError> {
        self.require_message(id)?;
        Ok(self.read_state_file(id)?.held)
    }
}

/// For the fuzz target `queue_state` (not an API): reads `contents` as a
/// state file and checks the rules of this module's documentation on
/// whatever it holds: reading never panics, and a record appended the way
/// [`append`] does (a repair `\n` first when the file does not end in one)
/// always counts, whatever garbage or torn line came before it.
#[doc(hidden)]
pub fn fuzz_check_state_file(contents: &[u8]) {
    let before = parse(contents);
    let mut file = contents.to_vec();
    if file.last().is_some_and(|&b| b != b'\n') {
        file.push(b'\n');
    }
    let index = 4_000_000_001usize;
    file.extend(encode_state(
        index,
        &RecipientState::Deferred {
            attempts: 1,
            last_error: "451 4.0.0 fuzz\r\nInjected: x".into(),
            next_attempt: 7,
        },
    ));
    file.extend(encode_notice(index, "delay"));
    file.extend(encode_hold(!before.held));
    let after = parse(&file);
    assert!(
        matches!(
            after.states.get(&index),
            Some(RecipientState::Deferred { attempts: 1, .. })
        ) || before
            .states
            .get(&index)
            .is_some_and(RecipientState::is_final),
        "an appended record must count"
    );
    assert!(after.notices.contains(&(index, "delay".to_owned())));
    assert_eq!(after.held, !before.held);
    // What was done stays done.
    assert!(before.done.is_subset(&after.done));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut file = Vec::new();
        file.extend(encode_record(0, "delivered"));
        file.extend(encode_record(7, "failed: 550 5.1.1\r\nno such user"));
        file.extend(encode_record(3, ""));
        assert_eq!(parse_done(&file), BTreeSet::from([0, 3, 7]));
    }

    #[test]
    fn torn_and_garbage_lines_are_ignored() {
        let good = encode_record(1, "delivered");
        let other = encode_record(12, "delivered");
        // Every strict prefix of a record is ignored.
        for cut in 0..other.len() {
            let mut file = good.clone();
            file.extend_from_slice(&other[..cut]);
            assert_eq!(parse_done(&file), BTreeSet::from([1]), "cut at {cut}");
            // Even when the repair newline and another record follow
            // (only a record missing nothing but its newline is complete).
            file.push(b'\n');
            file.extend(encode_record(2, "ok"));
            let expected = if cut == other.len() - 1 {
                BTreeSet::from([1, 2, 12])
            } else {
                BTreeSet::from([1, 2])
            };
            assert_eq!(parse_done(&file), expected, "cut at {cut}");
        }
        let mut file = vec![0u8; 100];
        file.push(b'\n');
        file.extend(b"done 5 00000000 forged\n");
        file.extend(b"done x 00000000 forged\n");
        file.extend(b"\xff\xfe\n");
        assert!(parse_done(&file).is_empty());
    }

    fn deferred(attempts: u32) -> RecipientState {
        RecipientState::Deferred {
            attempts,
            last_error: format!("451 4.3.0 try {attempts}\r\nInjected: yes"),
            next_attempt: 1_700_000_000 + u64::from(attempts),
        }
    }

    #[test]
    fn state_records_round_trip_and_final_wins() {
        let failed = RecipientState::Failed {
            at: 5,
            reply: "550 5.1.1 no".into(),
            status: "5.1.1".into(),
        };
        let mut file = Vec::new();
        file.extend(encode_state(0, &deferred(1)));
        file.extend(encode_state(0, &deferred(2)));
        file.extend(encode_state(1, &failed));
        // Nothing after a final state changes it.
        file.extend(encode_state(1, &deferred(3)));
        file.extend(encode_state(1, &RecipientState::Pending));
        file.extend(encode_state(
            1,
            &RecipientState::Delivered {
                at: 9,
                reply: "250 ok".into(),
            },
        ));
        file.extend(encode_record(2, "delivered to bob@example.test"));
        file.extend(encode_hold(true));
        assert_eq!(file.iter().filter(|&&b| b == b'\n').count(), 8);
        let parsed = parse(&file);
        assert_eq!(parsed.states[&0], deferred(2));
        assert_eq!(parsed.states[&1], failed);
        assert_eq!(
            parsed.states[&2],
            RecipientState::Delivered {
                at: 0,
                reply: "delivered to bob@example.test".into()
            }
        );
        assert_eq!(parsed.done, BTreeSet::from([1, 2]));
        // The history keeps every applied record, not the ignored ones.
        assert_eq!(
            parsed.history,
            vec![
                (0, deferred(1)),
                (0, deferred(2)),
                (1, failed.clone()),
                (2, parsed.states[&2].clone()),
            ]
        );
        assert!(parsed.held);
        file.extend(encode_hold(false));
        assert!(!parse(&file).held);
    }

    #[test]
    fn torn_or_forged_state_records_are_ignored() {
        let base = encode_state(0, &deferred(1));
        for record in [
            encode_state(0, &deferred(2)),
            encode_state(
                0,
                &RecipientState::Expired {
                    at: 1,
                    last_error: "x".into(),
                },
            ),
            encode_hold(true),
        ] {
            for cut in 0..record.len() {
                let mut file = base.clone();
                file.extend_from_slice(&record[..cut]);
                let parsed = parse(&file);
                assert_eq!(parsed.states[&0], deferred(1), "cut at {cut}");
                assert!(!parsed.held && parsed.done.is_empty(), "cut at {cut}");
            }
        }
        // Right checksum, wrong content; wrong checksum; a final state in a
        // retry record; a hold value other than 0/1.
        let json = r#"{"state":"delivered","at":1,"reply":"x"}"#;
        let body = format!("retry 0 {json}");
        let forged = format!("retry 0 {:08x} {json}\n", fnv1a32(body.as_bytes()));
        let value = "2";
        let hold = format!(
            "hold {:08x} {value}\n",
            fnv1a32(format!("hold {value}").as_bytes())
        );
        let mut file = base.clone();
        file.extend(forged.as_bytes());
        file.extend(b"retry 0 00000000 {\"state\":\"pending\"}\n");
        file.extend(hold.as_bytes());
        file.extend(b"hold 00000000 1\n");
        let parsed = parse(&file);
        assert_eq!(parsed.states[&0], deferred(1));
        assert!(!parsed.held);
    }

    #[test]
    fn fuzz_check_holds_on_samples() {
        let mut torn = encode_state(0, &deferred(1));
        torn.extend_from_slice(&encode_notice(1, "delay")[..5]);
        for sample in [
            &b""[..],
            b"\n\n",
            b"garbage without newline",
            b"\xff\xfe\x00",
            &torn,
            &encode_record(4_000_000_001, "delivered"),
        ] {
            fuzz_check_state_file(sample);
        }
    }

    #[test]
    fn notice_records_round_trip_and_torn_ones_are_ignored() {
        let mut file = encode_state(0, &deferred(1));
        file.extend(encode_notice(0, "delay"));
        file.extend(encode_notice(3, "delay"));
        file.extend(encode_notice(3, "other\r\nkind"));
        let parsed = parse(&file);
        assert_eq!(
            parsed.notices,
            BTreeSet::from([
                (0, "delay".to_owned()),
                (3, "delay".to_owned()),
                (3, "other--kind".to_owned())
            ])
        );
        // Notices change no state.
        assert_eq!(parsed.states[&0], deferred(1));
        assert!(parsed.done.is_empty());
        let record = encode_notice(5, "delay");
        for cut in 0..record.len() {
            let mut torn = file.clone();
            torn.extend_from_slice(&record[..cut]);
            assert!(
                !parse(&torn).notices.contains(&(5, "delay".to_owned())),
                "cut at {cut}"
            );
        }
        let mut forged = file.clone();
        forged.extend(b"notice 5 00000000 delay\n");
        assert!(!parse(&forged).notices.contains(&(5, "delay".to_owned())));
    }
}
