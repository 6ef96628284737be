//! Encoder tests: RFC examples written byte for byte, and the string-form
//! choice (atom / quoted / literal / literal8).

use super::*;
use crate::types::{Date, SeqNum, SeqRange};
use std::num::NonZeroU32;

fn enc(r: Response<'_>) -> String {
    String::from_utf8(r.to_bytes(EncodeOptions::default())).unwrap()
}

fn enc_utf8(r: Response<'_>) -> Vec<u8> {
    r.to_bytes(EncodeOptions { utf8: true })
}

fn tag(s: &str) -> Tag {
    Tag::new(s).unwrap()
}

fn range(a: u32, b: u32) -> SeqRange {
    SeqRange {
        start: SeqNum::Value(NonZeroU32::new(a).unwrap()),
        end: SeqNum::Value(NonZeroU32::new(b).unwrap()),
    }
}

fn seq(r: &[(u32, u32)]) -> SequenceSet {
    SequenceSet::Ranges(r.iter().map(|&(a, b)| range(a, b)).collect())
}

fn list(attrs: &[&str], mailbox: &[u8]) -> ListData {
    ListData {
        attributes: attrs.iter().map(|s| s.to_string()).collect(),
        delimiter: Some('/'),
        mailbox: Mailbox::from_bytes(mailbox),
        child_info: vec![],
        old_name: None,
    }
}

#[test]
fn status_lines() {
    let cases: Vec<(Response<'_>, &str)> = vec![
        (
            Response::Status(StatusResponse::tagged(
                tag("a1"),
                StatusKind::Ok,
                None,
                "LOGIN completed",
            )),
            "a1 OK LOGIN completed\r\n",
        ),
        (
            Response::Status(StatusResponse::untagged(
                StatusKind::Ok,
                Some(Code::Capability(vec![
                    "IMAP4rev2".into(),
                    "AUTH=PLAIN".into(),
                ])),
                "Tern ready",
            )),
            "* OK [CAPABILITY IMAP4rev2 AUTH=PLAIN] Tern ready\r\n",
        ),
        (
            Response::Status(StatusResponse::tagged(
                tag("A003"),
                StatusKind::Ok,
                Some(Code::AppendUid {
                    uid_validity: 38505,
                    uids: seq(&[(3955, 3955)]),
                }),
                "APPEND completed",
            )),
            "A003 OK [APPENDUID 38505 3955] APPEND completed\r\n",
        ),
        (
            Response::Status(StatusResponse::tagged(
                tag("A004"),
                StatusKind::Ok,
                Some(Code::CopyUid {
                    uid_validity: 38505,
                    source: seq(&[(304, 304), (319, 320)]),
                    dest: seq(&[(3956, 3958)]),
                }),
                "Done",
            )),
            "A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
        ),
        (
            Response::Status(StatusResponse::untagged(
                StatusKind::Ok,
                Some(Code::PermanentFlags {
                    flags: vec![Flag::Deleted, Flag::Seen],
                    keywords: true,
                }),
                "Limited",
            )),
            "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
        ),
        (
            Response::Status(StatusResponse::tagged(
                tag("d105"),
                StatusKind::Ok,
                Some(Code::Modified(seq(&[(7, 7), (9, 9)]))),
                "Conditional STORE failed",
            )),
            "d105 OK [MODIFIED 7,9] Conditional STORE failed\r\n",
        ),
        (
            Response::Status(StatusResponse::untagged(
                StatusKind::Ok,
                Some(Code::HighestModSeq(715194045007)),
                "Highest",
            )),
            "* OK [HIGHESTMODSEQ 715194045007] Highest\r\n",
        ),
        (
            Response::Status(StatusResponse::untagged(
                StatusKind::Ok,
                Some(Code::Closed),
                "",
            )),
            "* OK [CLOSED] OK\r\n",
        ),
        (
            Response::Status(StatusResponse::tagged(
                tag("a"),
                StatusKind::No,
                Some(Code::TooBig),
                "Message too big",
            )),
            "a NO [TOOBIG] Message too big\r\n",
        ),
        (
            Response::Status(StatusResponse::tagged(
                tag("a"),
                StatusKind::No,
                Some(Code::MailboxId("F2212ea87".into())),
                "x",
            )),
            "a NO [MAILBOXID (F2212ea87)] x\r\n",
        ),
        (
            Response::Status(StatusResponse::untagged(
                StatusKind::Bye,
                None,
                "evil\r\n* OK injected",
            )),
            "* BYE evil  * OK injected\r\n",
        ),
        (
            Response::Status(StatusResponse::untagged(
                StatusKind::Bad,
                None,
                "[not a code",
            )),
            "* BAD  not a code\r\n",
        ),
        (
            Response::Continue(Continuation::Text("Ready for literal".into())),
            "+ Ready for literal\r\n",
        ),
        (Response::Continue(Continuation::Base64(vec![])), "+ \r\n"),
        (
            Response::Continue(Continuation::Base64(b"test".to_vec())),
            "+ dGVzdA==\r\n",
        ),
    ];
    for (r, want) in cases {
        assert_eq!(enc(r), want);
    }
}

#[test]
fn data_lines() {
    let dt = DateTime::new(Date::new(1996, 7, 17).unwrap(), 2, 44, 25, -420).unwrap();
    let cases: Vec<(Response<'_>, &str)> = vec![
        (Response::Data(Data::Exists(23)), "* 23 EXISTS\r\n"),
        (Response::Data(Data::Recent(5)), "* 5 RECENT\r\n"),
        (Response::Data(Data::Expunge(3)), "* 3 EXPUNGE\r\n"),
        (
            Response::Data(Data::Flags(vec![
                Flag::Answered,
                Flag::Flagged,
                Flag::Deleted,
                Flag::Seen,
                Flag::Draft,
            ])),
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
        ),
        (
            Response::Data(Data::List(list(&["\\Noselect"], b"foo"))),
            "* LIST (\\Noselect) \"/\" foo\r\n",
        ),
        (
            Response::Data(Data::List(list(&[], b"INBOX"))),
            "* LIST () \"/\" INBOX\r\n",
        ),
        (
            Response::Data(Data::List(list(&[], b"Sent Items"))),
            "* LIST () \"/\" \"Sent Items\"\r\n",
        ),
        (
            Response::Data(Data::List(list(&[], b"NIL"))),
            "* LIST () \"/\" \"NIL\"\r\n",
        ),
        (
            Response::Data(Data::List(list(&[], b""))),
            "* LIST () \"/\" \"\"\r\n",
        ),
        (
            Response::Data(Data::List(ListData {
                child_info: vec!["SUBSCRIBED".into()],
                ..list(&["\\NonExistent"], b"Foo")
            })),
            "* LIST (\\NonExistent) \"/\" Foo (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n",
        ),
        (
            Response::Data(Data::List(ListData {
                old_name: Some(Mailbox::from_bytes(b"Old")),
                ..list(&[], b"New")
            })),
            "* LIST () \"/\" New (\"OLDNAME\" (\"Old\"))\r\n",
        ),
        (
            Response::Data(Data::List(ListData {
                delimiter: None,
                ..list(&[], b"x")
            })),
            "* LIST () NIL x\r\n",
        ),
        (
            Response::Data(Data::Lsub(ListData {
                delimiter: Some('\\'),
                ..list(&[], b"x")
            })),
            "* LSUB () \"\\\\\" x\r\n",
        ),
        (
            Response::Data(Data::Status {
                mailbox: Mailbox::from_bytes(b"blurdybloop"),
                items: vec![
                    (StatusItem::Messages, StatusValue::Number(231)),
                    (StatusItem::UidNext, StatusValue::Number(44292)),
                    (StatusItem::AppendLimit, StatusValue::Nil),
                    (StatusItem::MailboxId, StatusValue::ObjectId("F22".into())),
                ],
            }),
            "* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292 APPENDLIMIT NIL MAILBOXID (F22))\r\n",
        ),
        (
            Response::Data(Data::ESearch(ESearch {
                tag: Some(tag("A282")),
                uid: true,
                min: Some(2),
                count: Some(3),
                all: Some(seq(&[(1, 3), (5, 5)])),
                modseq: Some(917162500),
                ..ESearch::default()
            })),
            "* ESEARCH (TAG \"A282\") UID MIN 2 ALL 1:3,5 COUNT 3 MODSEQ 917162500\r\n",
        ),
        (
            Response::Data(Data::ESearch(ESearch {
                tag: Some(tag("A283")),
                ..ESearch::default()
            })),
            "* ESEARCH (TAG \"A283\")\r\n",
        ),
        (
            Response::Data(Data::Search {
                ids: vec![2, 84, 882],
                modseq: None,
            }),
            "* SEARCH 2 84 882\r\n",
        ),
        (
            Response::Data(Data::Search {
                ids: vec![],
                modseq: None,
            }),
            "* SEARCH\r\n",
        ),
        (
            Response::Data(Data::Search {
                ids: vec![2, 5],
                modseq: Some(917162500),
            }),
            "* SEARCH 2 5 (MODSEQ 917162500)\r\n",
        ),
        (
            Response::Data(Data::Sort {
                ids: vec![2, 84, 882],
                modseq: None,
            }),
            "* SORT 2 84 882\r\n",
        ),
        (
            Response::Data(Data::Vanished {
                earlier: true,
                uids: seq(&[(41, 41), (43, 116)]),
            }),
            "* VANISHED (EARLIER) 41,43:116\r\n",
        ),
        (
            Response::Data(Data::Vanished {
                earlier: false,
                uids: seq(&[(405, 405)]),
            }),
            "* VANISHED 405\r\n",
        ),
        (
            Response::Data(Data::Enabled(vec!["CONDSTORE".into(), "QRESYNC".into()])),
            "* ENABLED CONDSTORE QRESYNC\r\n",
        ),
        (Response::Data(Data::Enabled(vec![])), "* ENABLED\r\n"),
        (
            Response::Data(Data::Capability(vec!["IMAP4rev1".into(), "IDLE".into()])),
            "* CAPABILITY IMAP4rev1 IDLE\r\n",
        ),
        (
            Response::Data(Data::Id(Some(vec![
                ("name".into(), Some("Tern".into())),
                ("os".into(), None),
            ]))),
            "* ID (\"name\" \"Tern\" \"os\" NIL)\r\n",
        ),
        (Response::Data(Data::Id(None)), "* ID NIL\r\n"),
        (
            Response::Data(Data::Namespace {
                personal: vec![NamespaceDesc {
                    prefix: vec![],
                    delimiter: Some('/'),
                }],
                other: vec![],
                shared: vec![],
            }),
            "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n",
        ),
        (
            Response::Data(Data::Quota {
                root: vec![],
                resources: vec![QuotaResource {
                    name: "STORAGE".into(),
                    usage: 10,
                    limit: 512,
                }],
            }),
            "* QUOTA \"\" (STORAGE 10 512)\r\n",
        ),
        (
            Response::Data(Data::QuotaRoot {
                mailbox: Mailbox::inbox(),
                roots: vec![vec![]],
            }),
            "* QUOTAROOT INBOX \"\"\r\n",
        ),
        (
            Response::Data(Data::Fetch {
                seq: 12,
                items: vec![
                    FetchItem::Flags {
                        flags: vec![Flag::Seen].into(),
                        recent: true,
                    },
                    FetchItem::InternalDate(dt),
                    FetchItem::Rfc822Size(4286),
                    FetchItem::Uid(7),
                    FetchItem::ModSeq(624140003),
                    FetchItem::EmailId("M6d99ac3275bb4e".into()),
                    FetchItem::ThreadId(None),
                    FetchItem::SaveDate(None),
                ],
            }),
            "* 12 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" RFC822.SIZE 4286 UID 7 MODSEQ (624140003) EMAILID (M6d99ac3275bb4e) THREADID NIL SAVEDATE NIL)\r\n",
        ),
        (
            Response::Data(Data::Fetch {
                seq: 1,
                items: vec![
                    FetchItem::Envelope(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
                    FetchItem::BodyStructure(
                        b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 3 1 NIL NIL NIL NIL)",
                    ),
                ],
            }),
            "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) BODYSTRUCTURE (\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 3 1 NIL NIL NIL NIL))\r\n",
        ),
        (
            Response::Data(Data::Fetch {
                seq: 2,
                items: vec![
                    FetchItem::BodySection {
                        section: Section::default(),
                        origin: None,
                        data: Some(b"Hi\r\n"),
                    },
                    FetchItem::BodySection {
                        section: Section {
                            part: vec![1, 2],
                            text: Some(crate::types::SectionText::Mime),
                        },
                        origin: Some(100),
                        data: None,
                    },
                    FetchItem::BodySection {
                        section: Section {
                            part: vec![],
                            text: Some(crate::types::SectionText::HeaderFields(vec![
                                b"From".to_vec(),
                                b"X Y".to_vec(),
                            ])),
                        },
                        origin: None,
                        data: Some(b""),
                    },
                ],
            }),
            "* 2 FETCH (BODY[] {4}\r\nHi\r\n BODY[1.2.MIME]<100> NIL BODY[HEADER.FIELDS (From \"X Y\")] {0}\r\n)\r\n",
        ),
        (
            Response::Data(Data::Fetch {
                seq: 3,
                items: vec![
                    FetchItem::Binary {
                        part: vec![1],
                        origin: None,
                        data: Some(b"a\0b"),
                    },
                    FetchItem::Binary {
                        part: vec![],
                        origin: Some(0),
                        data: Some(b"ab"),
                    },
                    FetchItem::BinarySize {
                        part: vec![1, 2],
                        size: 42,
                    },
                    FetchItem::Rfc822Header(Some(b"X: y\r\n\r\n")),
                ],
            }),
            "* 3 FETCH (BINARY[1] ~{3}\r\na\0b BINARY[]<0> {2}\r\nab BINARY.SIZE[1.2] 42 RFC822.HEADER {8}\r\nX: y\r\n\r\n)\r\n",
        ),
        (
            Response::Data(Data::Thread(forest(
                &[
                    (2, &[]),
                    (3, &[2]),
                    (6, &[3, 5]),
                    (4, &[4]),
                    (23, &[]),
                    (44, &[6]),
                    (7, &[7]),
                    (96, &[]),
                    (0, &[9, 10]),
                    (5, &[]),
                    (9, &[]),
                ],
                &[0, 1, 8],
            ))),
            "* THREAD (2)(3 6 (4 23)(44 7 96))((5)(9))\r\n",
        ),
        (
            Response::Data(Data::Thread(ThreadForest::default())),
            "* THREAD\r\n",
        ),
    ];
    for (r, want) in cases {
        assert_eq!(enc(r), want);
    }
}

#[test]
fn string_forms() {
    let b = |s: &[u8], utf8: bool| {
        let mut out = Vec::new();
        write_astring(&mut out, s, EncodeOptions { utf8 });
        out
    };
    assert_eq!(b(b"INBOX", false), b"INBOX");
    assert_eq!(b(b"a]b", false), b"a]b");
    assert_eq!(b(b"", false), b"\"\"");
    assert_eq!(b(b"nil", false), b"\"nil\"");
    assert_eq!(b(b"a b", false), b"\"a b\"");
    assert_eq!(b(b"a\"b\\c", false), b"\"a\\\"b\\\\c\"");
    assert_eq!(b(b"a*b", false), b"\"a*b\"");
    assert_eq!(b(b"a{b", false), b"\"a{b\"");
    assert_eq!(b("Entwürfe".as_bytes(), false), b"{9}\r\nEntw\xc3\xbcrfe");
    assert_eq!(b("Entwürfe".as_bytes(), true), "\"Entwürfe\"".as_bytes());
    assert_eq!(b(b"\xff", true), b"{1}\r\n\xff");
    assert_eq!(b(b"a\r\nb", true), b"{4}\r\na\r\nb");
    assert_eq!(b(b"a\0b", true), b"{3}\r\na\0b");
    // An atom of any length stays an atom; a longer-than-MAX_QUOTED
    // string that is not one becomes a literal.
    let long = vec![b'x'; MAX_QUOTED + 1];
    assert_eq!(b(&long, false), long);
    let mut spaced = long.clone();
    spaced[0] = b' ';
    let mut want_spaced = format!("{{{}}}\r\n", spaced.len()).into_bytes();
    want_spaced.extend_from_slice(&spaced);
    assert_eq!(b(&spaced, false), want_spaced);
    assert_eq!(b(&spaced[..MAX_QUOTED], false)[0], b'"');
    // UTF-8 mailbox names in STATUS for a UTF8=ACCEPT client.
    assert_eq!(
        enc_utf8(Response::Data(Data::Status {
            mailbox: Mailbox::from_bytes("Größe".as_bytes()),
            items: vec![(StatusItem::Messages, StatusValue::Number(1))],
        })),
        "* STATUS \"Größe\" (MESSAGES 1)\r\n".as_bytes()
    );
}

/// A forest from (id, children) pairs; id 0 is a dummy parent.
fn forest(nodes: &[(u32, &[usize])], roots: &[usize]) -> ThreadForest {
    ThreadForest {
        nodes: nodes
            .iter()
            .map(|&(id, ch)| ThreadNode {
                id: (id != 0).then_some(id),
                children: ch.to_vec(),
            })
            .collect(),
        roots: roots.to_vec(),
    }
}

#[test]
fn deep_and_malformed_threads() {
    // A 200,000-message reply chain.
    let n = 200_000usize;
    let chain = ThreadForest {
        nodes: (0..n)
            .map(|i| ThreadNode {
                id: Some(i as u32 + 1),
                children: if i + 1 < n { vec![i + 1] } else { vec![] },
            })
            .collect(),
        roots: vec![0],
    };
    let out = Response::Data(Data::Thread(chain)).to_bytes(EncodeOptions::default());
    assert!(out.starts_with(b"* THREAD (1 2 3 "));
    assert!(out.ends_with(b" 199999 200000)\r\n"));
    // A cycle and an index out of range: each node once, no panic.
    let bad = forest(&[(1, &[1, 7]), (2, &[0])], &[0, 1, 9]);
    assert_eq!(enc(Response::Data(Data::Thread(bad))), "* THREAD (1 2)\r\n");
}
