//! Our response encoder's output must be valid IMAP as imap-codec reads
//! it: every response here is encoded by us and decoded by imap-codec's
//! response parser, which must consume it whole. (Responses of
//! extensions imap-codec does not implement — ESEARCH, OBJECTID, SAVEDATE,
//! LIST-EXTENDED data — are checked byte for byte in our unit tests
//! instead.)

use std::num::NonZeroU32;

use imap_codec::decode::Decoder;
use imap_codec::{GreetingCodec, ResponseCodec};
use tern_imap::response::*;
use tern_imap::types::*;

fn seq(a: u32, b: u32) -> SequenceSet {
    SequenceSet::Ranges(vec![SeqRange {
        start: SeqNum::Value(NonZeroU32::new(a).unwrap()),
        end: SeqNum::Value(NonZeroU32::new(b).unwrap()),
    }])
}

fn tag() -> Tag {
    Tag::new("A1").unwrap()
}

fn status(kind: StatusKind, code: Option<Code>) -> Response<'static> {
    Response::Status(StatusResponse::tagged(tag(), kind, code, "done"))
}

#[test]
fn imap_codec_reads_what_we_write() {
    let dt = DateTime::new(Date::new(2024, 2, 29).unwrap(), 9, 5, 0, 60).unwrap();
    let list = |name: &[u8]| ListData {
        attributes: vec!["\\HasNoChildren".into(), "\\Sent".into()],
        delimiter: Some('/'),
        mailbox: Mailbox::from_bytes(name),
        child_info: vec![],
        old_name: None,
    };
    let body = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody \xc3\xa9\r\n".as_slice();
    let responses: Vec<(Response<'_>, EncodeOptions)> = vec![
        (status(StatusKind::Ok, None), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::TryCreate)), EncodeOptions::default()),
        (status(StatusKind::Bad, Some(Code::Parse)), EncodeOptions::default()),
        (status(StatusKind::Ok, Some(Code::AppendUid { uid_validity: 7, uids: seq(3, 5) })), EncodeOptions::default()),
        (
            status(StatusKind::Ok, Some(Code::CopyUid { uid_validity: 7, source: seq(1, 3), dest: seq(10, 12) })),
            EncodeOptions::default(),
        ),
        (status(StatusKind::Ok, Some(Code::UidValidity(3857529045))), EncodeOptions::default()),
        (status(StatusKind::Ok, Some(Code::UidNext(4392))), EncodeOptions::default()),
        (
            status(StatusKind::Ok, Some(Code::PermanentFlags { flags: vec![Flag::Seen, Flag::Deleted], keywords: true })),
            EncodeOptions::default(),
        ),
        (status(StatusKind::Ok, Some(Code::ReadWrite)), EncodeOptions::default()),
        (status(StatusKind::Ok, Some(Code::ReadOnly)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::AuthenticationFailed)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::OverQuota)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::AlreadyExists)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::NonExistent)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::Cannot)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::Unavailable)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::InUse)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::Limit)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::ServerBug)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::ContactAdmin)), EncodeOptions::default()),
        (status(StatusKind::No, Some(Code::NoPerm)), EncodeOptions::default()),
        (status(StatusKind::Ok, Some(Code::Alert)), EncodeOptions::default()),
        (status(StatusKind::Ok, Some(Code::Capability(vec!["IMAP4rev2".into(), "IDLE".into()]))), EncodeOptions::default()),
        (Response::Status(StatusResponse::untagged(StatusKind::Bye, None, "bye")), EncodeOptions::default()),
        (Response::Status(StatusResponse::untagged(StatusKind::PreAuth, None, "hi")), EncodeOptions::default()),
        (Response::Continue(Continuation::Text("Ready".into())), EncodeOptions::default()),
        (Response::Continue(Continuation::Base64(b"challenge".to_vec())), EncodeOptions::default()),
        (Response::Data(Data::Capability(vec!["IMAP4rev1".into(), "AUTH=PLAIN".into()])), EncodeOptions::default()),
        (Response::Data(Data::List(list(b"Sent"))), EncodeOptions::default()),
        (Response::Data(Data::List(list(b"Sent Items"))), EncodeOptions::default()),
        (Response::Data(Data::List(list("Entwürfe".as_bytes()))), EncodeOptions::default()),
        (Response::Data(Data::List(list("Entwürfe".as_bytes()))), EncodeOptions { utf8: true }),
        (Response::Data(Data::List(list(b"a\"b\\c"))), EncodeOptions::default()),
        (Response::Data(Data::Lsub(list(b"INBOX"))), EncodeOptions::default()),
        (
            Response::Data(Data::Status {
                mailbox: Mailbox::inbox(),
                items: vec![
                    (StatusItem::Messages, StatusValue::Number(3)),
                    (StatusItem::UidNext, StatusValue::Number(4)),
                    (StatusItem::Unseen, StatusValue::Number(1)),
                    (StatusItem::HighestModSeq, StatusValue::Number(99)),
                ],
            }),
            EncodeOptions::default(),
        ),
        (Response::Data(Data::Search { ids: vec![1, 2, 3], modseq: None }), EncodeOptions::default()),
        (Response::Data(Data::Search { ids: vec![], modseq: None }), EncodeOptions::default()),
        (Response::Data(Data::Sort { ids: vec![3, 1, 2], modseq: None }), EncodeOptions::default()),
        (Response::Data(Data::Flags(vec![Flag::Seen, Flag::Keyword(Atom::new("$Junk").unwrap())])), EncodeOptions::default()),
        (Response::Data(Data::Exists(23)), EncodeOptions::default()),
        (Response::Data(Data::Recent(0)), EncodeOptions::default()),
        (Response::Data(Data::Expunge(4)), EncodeOptions::default()),
        (Response::Data(Data::Vanished { earlier: true, uids: seq(1, 9) }), EncodeOptions::default()),
        (Response::Data(Data::Enabled(vec!["CONDSTORE".into()])), EncodeOptions::default()),
        (Response::Data(Data::Id(Some(vec![("name".into(), Some("Tern".into()))]))), EncodeOptions::default()),
        (Response::Data(Data::Id(None)), EncodeOptions::default()),
        (
            Response::Data(Data::Namespace {
                personal: vec![NamespaceDesc { prefix: vec![], delimiter: Some('/') }],
                other: vec![],
                shared: vec![],
            }),
            EncodeOptions::default(),
        ),
        (
            Response::Data(Data::Quota {
                root: vec![],
                resources: vec![QuotaResource { name: "STORAGE".into(), usage: 10, limit: 512 }],
            }),
            EncodeOptions::default(),
        ),
        (Response::Data(Data::QuotaRoot { mailbox: Mailbox::inbox(), roots: vec![vec![]] }), EncodeOptions::default()),
        (
            Response::Data(Data::Thread(ThreadForest {
                nodes: vec![
                    ThreadNode { id: Some(3), children: vec![1] },
                    ThreadNode { id: Some(6), children: vec![2, 3] },
                    ThreadNode { id: Some(4), children: vec![] },
                    ThreadNode { id: Some(44), children: vec![] },
                ],
                roots: vec![0],
            })),
            EncodeOptions::default(),
        ),
        (
            Response::Data(Data::Fetch {
                seq: 1,
                items: vec![
                    FetchItem::Flags { flags: vec![Flag::Seen].into(), recent: false },
                    FetchItem::Uid(7),
                    FetchItem::InternalDate(dt),
                    FetchItem::Rfc822Size(body.len() as u64),
                    FetchItem::ModSeq(12345),
                    FetchItem::BodySection { section: Section::default(), origin: None, data: Some(body) },
                    FetchItem::BodySection {
                        section: Section {
                            part: vec![],
                            text: Some(SectionText::HeaderFields(vec![b"From".to_vec(), b"Subject".to_vec()])),
                        },
                        origin: Some(0),
                        data: Some(b"From: a\r\n\r\n"),
                    },
                    FetchItem::BodySection {
                        section: Section { part: vec![1], text: None },
                        origin: None,
                        data: None,
                    },
                    FetchItem::Binary { part: vec![1], origin: None, data: Some(b"bin\0ary") },
                    FetchItem::BinarySize { part: vec![1], size: 7 },
                    FetchItem::Rfc822Header(Some(b"From: a\r\n\r\n")),
                    FetchItem::Envelope(
                        b"(\"Thu, 29 Feb 2024 09:05:00 +0100\" \"hi\" ((NIL NIL \"a\" \"example.org\")) NIL NIL NIL NIL NIL NIL NIL)",
                    ),
                    FetchItem::BodyStructure(b"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"UTF-8\") NIL NIL \"8BIT\" 8 1 NIL NIL NIL NIL)"),
                ],
            }),
            EncodeOptions::default(),
        ),
    ];
    for (r, opts) in responses {
        let bytes = r.to_bytes(opts);
        // PREAUTH only exists as a greeting.
        let whole = if matches!(&r, Response::Status(s) if s.kind == StatusKind::PreAuth) {
            matches!(GreetingCodec::default().decode(&bytes), Ok((rest, _)) if rest.is_empty())
        } else {
            matches!(ResponseCodec::default().decode(&bytes), Ok((rest, _)) if rest.is_empty())
        };
        assert!(
            whole,
            "imap-codec refused {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
