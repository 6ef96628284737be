//! Round trips: generated commands encode to bytes that frame and parse
//! back to the same command, in every literal mode; plus exact encodings.

use super::*;
use crate::framing::{Expect, Frame, Framer, FramingLimits};
use crate::parse::parse_command;
use crate::types::*;
use proptest::collection::vec;
use proptest::prelude::*;
use std::num::NonZeroU32;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[A-Za-z0-9._/-]{1,12}".prop_map(|s| s.into_bytes()),
        "[ -~]{0,12}".prop_map(|s| s.into_bytes()),
        "\\PC{0,6}".prop_map(|s| s.into_bytes()),
        vec(1u8..=255, 0..12),
    ]
}

fn atom() -> impl Strategy<Value = Atom> {
    "[A-Za-z0-9$_=.-]{1,10}".prop_map(|s| Atom::new(&s).unwrap())
}

fn object_id() -> impl Strategy<Value = Atom> {
    "[A-Za-z0-9_-]{1,20}".prop_map(|s| Atom::new(&s).unwrap())
}

fn mailbox() -> impl Strategy<Value = Mailbox> {
    prop_oneof![
        Just(Mailbox::inbox()),
        bytes().prop_map(|b| Mailbox::from_bytes(&b))
    ]
}

fn seq_num() -> impl Strategy<Value = SeqNum> {
    prop_oneof![
        1 => Just(SeqNum::Largest),
        4 => (1u32..).prop_map(|n| SeqNum::Value(NonZeroU32::new(n).unwrap())),
    ]
}

fn seq_set() -> impl Strategy<Value = SequenceSet> {
    prop_oneof![
        1 => Just(SequenceSet::Saved),
        6 => vec((seq_num(), prop::option::of(seq_num())), 1..5).prop_map(|v| SequenceSet::Ranges(
            v.into_iter().map(|(start, end)| SeqRange { start, end: end.unwrap_or(start) }).collect()
        )),
    ]
}

fn date() -> impl Strategy<Value = Date> {
    (1900u16..2100, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| Date::new(y, m, d).unwrap())
}

fn date_time() -> impl Strategy<Value = DateTime> {
    (date(), 0u8..24, 0u8..60, 0u8..=60, -1439i16..=1439)
        .prop_map(|(d, h, m, s, z)| DateTime::new(d, h, m, s, z).unwrap())
}

fn flag() -> impl Strategy<Value = Flag> {
    prop_oneof![
        Just(Flag::Seen),
        Just(Flag::Answered),
        Just(Flag::Flagged),
        Just(Flag::Deleted),
        Just(Flag::Draft),
        "[$A-Za-z][A-Za-z0-9_]{0,8}".prop_map(|s| Flag::parse(&s).unwrap()),
        "\\\\[A-Za-z]{1,8}".prop_map(|s| Flag::parse(&s).unwrap()),
    ]
}

fn status_item() -> impl Strategy<Value = StatusItem> {
    prop::sample::select(StatusItem::ALL.to_vec())
}

fn modseq() -> impl Strategy<Value = u64> {
    1u64..=i64::MAX as u64
}

fn search_key() -> impl Strategy<Value = SearchKey> {
    use SearchKey as K;
    let leaf = prop_oneof![
        prop::sample::select(vec![
            K::All,
            K::Answered,
            K::Deleted,
            K::Draft,
            K::Flagged,
            K::New,
            K::Old,
            K::Recent,
            K::Seen,
            K::Unanswered,
            K::Undeleted,
            K::Undraft,
            K::Unflagged,
            K::Unseen,
            K::SaveDateSupported,
        ]),
        bytes().prop_map(K::Bcc),
        bytes().prop_map(K::Body),
        bytes().prop_map(K::Cc),
        bytes().prop_map(K::From),
        bytes().prop_map(K::Subject),
        bytes().prop_map(K::Text),
        bytes().prop_map(K::To),
        (bytes(), bytes()).prop_map(|(a, b)| K::Header(a, b)),
        date().prop_map(K::Before),
        date().prop_map(K::On),
        date().prop_map(K::Since),
        date().prop_map(K::SentBefore),
        date().prop_map(K::SentOn),
        date().prop_map(K::SentSince),
        date().prop_map(K::SavedBefore),
        date().prop_map(K::SavedOn),
        date().prop_map(K::SavedSince),
        atom().prop_map(K::Keyword),
        atom().prop_map(K::Unkeyword),
        any::<u64>().prop_map(K::Larger),
        any::<u64>().prop_map(K::Smaller),
        (1u32..).prop_map(K::Older),
        (1u32..).prop_map(K::Younger),
        seq_set().prop_map(K::Uid),
        seq_set().prop_map(K::SequenceSet),
        (
            prop::option::of((
                "[ -~]{0,10}".prop_map(|s| s.into_bytes()),
                prop::sample::select(vec![EntryType::Private, EntryType::Shared, EntryType::All])
            )),
            0u64..=i64::MAX as u64
        )
            .prop_map(|(entry, modseq)| K::ModSeq { entry, modseq }),
        object_id().prop_map(K::EmailId),
        object_id().prop_map(K::ThreadId),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|k| K::Not(Box::new(k))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| K::Or(Box::new(a), Box::new(b))),
            vec(inner, 1..4).prop_map(K::And),
        ]
    })
}

fn part() -> impl Strategy<Value = Vec<u32>> {
    vec(1u32.., 0..4)
}

fn partial() -> impl Strategy<Value = Option<(u32, u32)>> {
    prop::option::of((any::<u32>(), 1u32..))
}

fn section() -> impl Strategy<Value = Section> {
    (part(), 0u8..7, vec(bytes(), 1..4)).prop_map(|(part, t, names)| {
        let text = match t {
            0 => None,
            1 => Some(SectionText::Header),
            2 => Some(SectionText::HeaderFields(names)),
            3 => Some(SectionText::HeaderFieldsNot(names)),
            4 => Some(SectionText::Text),
            5 if !part.is_empty() => Some(SectionText::Mime),
            _ => None,
        };
        Section { part, text }
    })
}

fn fetch_att() -> impl Strategy<Value = FetchAttribute> {
    use FetchAttribute as F;
    prop_oneof![
        prop::sample::select(vec![
            F::Flags,
            F::Uid,
            F::InternalDate,
            F::Rfc822Size,
            F::Rfc822,
            F::Rfc822Header,
            F::Rfc822Text,
            F::Envelope,
            F::Body,
            F::BodyStructure,
            F::ModSeq,
            F::SaveDate,
            F::EmailId,
            F::ThreadId,
        ]),
        (any::<bool>(), section(), partial()).prop_map(|(peek, section, partial)| F::BodySection {
            peek,
            section,
            partial
        }),
        (any::<bool>(), part(), partial()).prop_map(|(peek, part, partial)| F::Binary {
            peek,
            part,
            partial
        }),
        part().prop_map(|part| F::BinarySize { part }),
    ]
}

fn body() -> impl Strategy<Value = CommandBody> {
    use CommandBody as C;
    let simple = prop::sample::select(vec![
        C::Capability,
        C::Noop,
        C::Logout,
        C::StartTls,
        C::Namespace,
        C::Idle,
        C::Check,
        C::Close,
        C::Unselect,
        C::Expunge,
    ]);
    let qresync = (
        1u32..,
        modseq(),
        prop::option::of(seq_set()),
        prop::option::of((seq_set(), seq_set())),
    )
        .prop_map(|(uid_validity, mod_seq, known_uids, seq_match)| QResync {
            uid_validity,
            mod_seq,
            known_uids,
            seq_match,
        });
    let append = (
        vec(flag(), 0..3),
        prop::option::of(date_time()),
        vec(any::<u8>(), 0..40),
        0u8..3,
    )
        .prop_map(|(flags, date, mut data, kind)| {
            let (binary, utf8) = match kind {
                0 => {
                    data.retain(|&b| b != 0);
                    (false, false)
                }
                1 => (true, false),
                _ => (true, true),
            };
            AppendMessage {
                flags,
                date,
                data,
                binary,
                utf8,
            }
        });
    let list = (
        any::<bool>(),
        prop::sample::subsequence(
            vec![
                ListSelect::Subscribed,
                ListSelect::Remote,
                ListSelect::RecursiveMatch,
                ListSelect::SpecialUse,
            ],
            0..=4,
        ),
        mailbox(),
        vec(bytes(), 1..3),
        vec(
            prop_oneof![
                Just(ListReturn::Subscribed),
                Just(ListReturn::Children),
                Just(ListReturn::SpecialUse),
                vec(status_item(), 1..4).prop_map(ListReturn::Status),
            ],
            0..3,
        ),
    )
        .prop_map(
            |(extended, mut selection, reference, mut patterns, mut returns)| {
                if selection.contains(&ListSelect::RecursiveMatch)
                    && !selection
                        .iter()
                        .any(|s| matches!(s, ListSelect::Subscribed | ListSelect::SpecialUse))
                {
                    selection.insert(0, ListSelect::Subscribed);
                }
                if !extended {
                    selection.clear();
                    returns.clear();
                    patterns.truncate(1);
                }
                C::List {
                    selection,
                    reference,
                    patterns,
                    returns,
                    extended,
                }
            },
        );
    let search_returns = prop::option::of(vec(
        prop::sample::select(vec![
            SearchReturn::Min,
            SearchReturn::Max,
            SearchReturn::All,
            SearchReturn::Count,
            SearchReturn::Save,
        ]),
        0..4,
    ));
    let fetch_items = prop_oneof![
        Just(FetchItems::All),
        Just(FetchItems::Fast),
        Just(FetchItems::Full),
        vec(fetch_att(), 1..4).prop_map(FetchItems::List),
    ];
    let sort_key = prop::sample::select(vec![
        SortKey::Arrival,
        SortKey::Cc,
        SortKey::Date,
        SortKey::From,
        SortKey::Size,
        SortKey::Subject,
        SortKey::To,
        SortKey::DisplayFrom,
        SortKey::DisplayTo,
    ]);
    let charset = "[A-Za-z0-9_-]{1,10}".prop_map(|s| s.into_bytes());
    prop_oneof![
        simple,
        (atom(), prop::option::of(vec(any::<u8>(), 0..20))).prop_map(|(m, initial_response)| {
            C::Authenticate {
                mechanism: Atom::new(&m.as_str().to_ascii_uppercase()).unwrap(),
                initial_response,
            }
        }),
        (bytes(), bytes()).prop_map(|(username, password)| C::Login { username, password }),
        vec(atom(), 1..4).prop_map(|capabilities| C::Enable { capabilities }),
        (
            mailbox(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(qresync)
        )
            .prop_map(|(mailbox, read_only, condstore, qresync)| {
                C::Select {
                    mailbox,
                    read_only,
                    params: SelectParams { condstore, qresync },
                }
            }),
        (mailbox(), vec(atom(), 0..3)).prop_map(|(mailbox, special_use)| C::Create {
            mailbox,
            special_use
        }),
        mailbox().prop_map(|mailbox| C::Delete { mailbox }),
        mailbox().prop_map(|mailbox| C::Subscribe { mailbox }),
        mailbox().prop_map(|mailbox| C::Unsubscribe { mailbox }),
        mailbox().prop_map(|mailbox| C::GetQuotaRoot { mailbox }),
        (mailbox(), mailbox()).prop_map(|(from, to)| C::Rename { from, to }),
        list,
        (mailbox(), bytes()).prop_map(|(reference, pattern)| C::Lsub { reference, pattern }),
        (mailbox(), vec(status_item(), 1..5))
            .prop_map(|(mailbox, items)| C::Status { mailbox, items }),
        (mailbox(), vec(append, 1..3))
            .prop_map(|(mailbox, messages)| C::Append { mailbox, messages }),
        seq_set().prop_map(|uids| C::UidExpunge { uids }),
        (
            any::<bool>(),
            search_returns,
            prop::option::of(bytes()),
            vec(search_key(), 1..3)
        )
            .prop_map(|(uid, returns, charset, criteria)| C::Search {
                uid,
                returns,
                charset,
                criteria
            }),
        (
            any::<bool>(),
            seq_set(),
            fetch_items,
            prop::option::of(modseq()),
            any::<bool>()
        )
            .prop_map(|(uid, set, items, changed_since, vanished)| C::Fetch {
                uid,
                set,
                items,
                vanished: vanished && uid && changed_since.is_some(),
                changed_since,
            }),
        (
            any::<bool>(),
            seq_set(),
            prop::option::of(0u64..=i64::MAX as u64),
            prop::sample::select(vec![StoreMode::Replace, StoreMode::Add, StoreMode::Remove]),
            any::<bool>(),
            vec(flag(), 0..4)
        )
            .prop_map(
                |(uid, set, unchanged_since, mode, silent, flags)| C::Store {
                    uid,
                    set,
                    unchanged_since,
                    mode,
                    silent,
                    flags
                }
            ),
        (any::<bool>(), seq_set(), mailbox()).prop_map(|(uid, set, mailbox)| C::Copy {
            uid,
            set,
            mailbox
        }),
        (any::<bool>(), seq_set(), mailbox()).prop_map(|(uid, set, mailbox)| C::Move {
            uid,
            set,
            mailbox
        }),
        (
            any::<bool>(),
            vec((any::<bool>(), sort_key), 1..4),
            charset.clone(),
            vec(search_key(), 1..3)
        )
            .prop_map(|(uid, criteria, charset, search)| C::Sort {
                uid,
                criteria: criteria
                    .into_iter()
                    .map(|(reverse, key)| SortCriterion { reverse, key })
                    .collect(),
                charset,
                search
            }),
        (
            any::<bool>(),
            0u8..3,
            atom(),
            charset,
            vec(search_key(), 1..3)
        )
            .prop_map(|(uid, a, other, charset, search)| {
                let algorithm = match a {
                    0 => ThreadAlgorithm::References,
                    1 => ThreadAlgorithm::OrderedSubject,
                    _ if other.eq_ignore_case("REFERENCES")
                        || other.eq_ignore_case("ORDEREDSUBJECT") =>
                    {
                        ThreadAlgorithm::References
                    }
                    _ => ThreadAlgorithm::Other(other),
                };
                C::Thread {
                    uid,
                    algorithm,
                    charset,
                    search,
                }
            }),
        bytes().prop_map(|root| C::GetQuota { root }),
        (bytes(), vec((atom(), 0u64..=i64::MAX as u64), 0..3))
            .prop_map(|(root, limits)| C::SetQuota { root, limits }),
        prop::option::of(vec((bytes(), prop::option::of(bytes())), 0..3))
            .prop_map(|params| C::Id { params }),
        atom().prop_map(|algorithm| C::Compress { algorithm }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    ("[A-Za-z0-9.]{1,8}", body()).prop_map(|(t, body)| Command {
        tag: Tag::new(&t).unwrap(),
        body,
    })
}

/// Send the fragments through the framer as a client would (waiting for
/// each `+`) and parse what comes out.
fn through_framer(f: &Fragments) -> Command {
    let mut framer = Framer::new(FramingLimits::default());
    let n = f.0.len();
    for (i, part) in f.0.iter().enumerate() {
        framer.push(part);
        if i + 1 < n {
            assert_eq!(
                framer.next(Expect::Command),
                Some(Frame::Continue),
                "fragment {i} of {f:?}"
            );
        }
    }
    match framer.next(Expect::Command) {
        Some(Frame::Command(bytes)) => parse_command(&bytes)
            .unwrap_or_else(|e| panic!("{e:?}: {:?}", String::from_utf8_lossy(&bytes))),
        other => panic!("{other:?} for {f:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn command_to_bytes_and_back(cmd in command(), utf8 in any::<bool>()) {
        let opts = EncodeOptions { utf8 };
        let sync = cmd.encode(LiteralMode::Sync, opts);
        prop_assert_eq!(&through_framer(&sync), &cmd);
        let nonsync = cmd.encode(LiteralMode::NonSync, opts);
        prop_assert_eq!(nonsync.0.len(), 1);
        prop_assert_eq!(&parse_command(&nonsync.concat()).unwrap(), &cmd);
        prop_assert_eq!(&through_framer(&nonsync), &cmd);
    }

    /// Any split of the input into chunks frames to the same result.
    #[test]
    fn framing_is_independent_of_chunking(cmd in command(), cuts in vec(any::<prop::sample::Index>(), 0..6)) {
        let bytes = cmd.encode(LiteralMode::NonSync, EncodeOptions::default()).concat();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut framer = Framer::new(FramingLimits::default());
        let mut prev = 0;
        let mut frames = Vec::new();
        for p in points.into_iter().chain([bytes.len()]) {
            framer.push(&bytes[prev..p]);
            prev = p;
            while let Some(f) = framer.next(Expect::Command) {
                frames.push(f);
            }
        }
        prop_assert_eq!(frames, vec![Frame::Command(bytes)]);
    }
}

#[test]
fn exact_encodings() {
    let c = |s: &str| parse_command(s.as_bytes()).unwrap();
    let enc = |cmd: &Command| cmd.encode(LiteralMode::Sync, EncodeOptions::default());
    let cases = [
        (
            "a LOGIN alice \"pass word\"\r\n",
            vec!["a LOGIN alice \"pass word\"\r\n"],
        ),
        (
            "a LOGIN {5}\r\nalice {2}\r\n\r\n\r\n",
            vec!["a LOGIN alice {2}\r\n", "\r\n\r\n"],
        ),
        ("a select inbox\r\n", vec!["a SELECT INBOX\r\n"]),
        (
            "a SEARCH CHARSET UTF-8 OR (FROM a 2:*) NOT $\r\n",
            vec!["a SEARCH CHARSET UTF-8 OR (FROM a 2:*) NOT $\r\n"],
        ),
        (
            "a UID FETCH 1:* flags (changedsince 5 vanished)\r\n",
            vec!["a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)\r\n"],
        ),
        (
            "a APPEND x (\\Seen) {3}\r\nabc ~{1}\r\n\0\r\n",
            vec!["a APPEND x (\\Seen) {3}\r\n", "abc ~{1}\r\n", "\0\r\n"],
        ),
        ("a LIST () \"\" *\r\n", vec!["a LIST () \"\" *\r\n"]),
        (
            "a AUTHENTICATE plain =\r\n",
            vec!["a AUTHENTICATE PLAIN =\r\n"],
        ),
    ];
    for (input, want) in cases {
        let got = enc(&c(input));
        let want: Vec<Vec<u8>> = want.into_iter().map(|s| s.as_bytes().to_vec()).collect();
        assert_eq!(got.0, want, "{input:?}");
    }
}
