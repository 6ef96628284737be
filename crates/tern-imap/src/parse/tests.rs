//! Table-driven parser tests: RFC examples per command and extension,
//! exact ASTs for the tricky ones, and lines that must be refused.

use super::*;

fn parse(s: &[u8]) -> Result<Command, CommandError> {
    parse_command(s)
}

fn body(s: &str) -> CommandBody {
    match parse(s.as_bytes()) {
        Ok(c) => c.body,
        Err(e) => panic!("{s:?}: {e:?}"),
    }
}

fn nz(n: u32) -> SeqNum {
    SeqNum::Value(NonZeroU32::new(n).unwrap())
}

fn set(ranges: &[(SeqNum, SeqNum)]) -> SequenceSet {
    SequenceSet::Ranges(
        ranges
            .iter()
            .map(|&(start, end)| SeqRange { start, end })
            .collect(),
    )
}

fn atom(s: &str) -> Atom {
    Atom::new(s).unwrap()
}

fn date(y: u16, m: u8, d: u8) -> Date {
    Date::new(y, m, d).unwrap()
}

/// Lines from RFC 9051, RFC 3501 and the extension RFCs (and what real
/// clients send) that must parse.
const ACCEPTED: &[&str] = &[
    // RFC 9051 §6.1
    "abcd CAPABILITY\r\n",
    "a002 NOOP\r\n",
    "A023 LOGOUT\r\n",
    "a001 STARTTLS\r\n",
    // §6.2
    "A001 AUTHENTICATE GSSAPI\r\n",
    "a002 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
    "a003 AUTHENTICATE PLAIN =\r\n",
    "a001 LOGIN SMITH SESAME\r\n",
    "a001 LOGIN \"smith\" {6}\r\nsesame\r\n",
    "a001 LOGIN {5+}\r\nsmith \"p\\\\w\\\"d\"\r\n",
    // §6.3
    "t2 ENABLE CONDSTORE QRESYNC\r\n",
    "t2 ENABLE IMAP4rev2 UTF8=ACCEPT\r\n",
    "A142 SELECT INBOX\r\n",
    "A932 EXAMINE blurdybloop\r\n",
    "a SELECT \"INBOX\" (CONDSTORE)\r\n",
    "A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n",
    "B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997:29999)))\r\n",
    "a SELECT x (QRESYNC (1 1 (1 1)))\r\n",
    "A003 CREATE owatagusiam/\r\n",
    "A004 CREATE owatagusiam/blurdybloop\r\n",
    "t1 CREATE \"Important Messages\" (USE (\\Important))\r\n",
    "t1 CREATE MySpecial (USE (\\Drafts \\Sent))\r\n",
    "t1 CREATE x (USE ())\r\n",
    "A683 DELETE blurdybloop\r\n",
    "A682 RENAME blurdybloop sarasoop\r\n",
    "A002 SUBSCRIBE #news.comp.mail.mime\r\n",
    "A002 UNSUBSCRIBE #news.comp.mail.mime\r\n",
    "A101 LIST \"\" \"\"\r\n",
    "A102 LIST #news.comp.mail.misc \"\"\r\n",
    "A202 LIST ~/Mail/ %\r\n",
    "A203 LIST \"\" *\r\n",
    "A03 LIST () \"\" \"%\" RETURN (CHILDREN)\r\n",
    "A04 LIST (SUBSCRIBED) \"\" \"*\"\r\n",
    "A05 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"\r\n",
    "A06 LIST (SUBSCRIBED REMOTE) \"\" \"*\" RETURN (CHILDREN)\r\n",
    "A07 LIST \"\" (\"INBOX\" \"Drafts\" \"Sent/%\")\r\n",
    "t1 LIST (SPECIAL-USE) \"\" \"*\"\r\n",
    "t1 LIST \"\" \"*\" RETURN (SPECIAL-USE)\r\n",
    "A01 LIST \"\" % RETURN (STATUS (MESSAGES UNSEEN))\r\n",
    "a LIST \"\" \"*\" RETURN (SPECIAL-USE STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ) CHILDREN SUBSCRIBED)\r\n",
    "A002 LSUB \"#news.\" \"comp.mail.*\"\r\n",
    "A001 NAMESPACE\r\n",
    "A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n",
    "a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ APPENDLIMIT MAILBOXID)\r\n",
    "A003 APPEND saved-messages (\\Seen) {10}\r\n0123456789\r\n",
    "A003 APPEND saved-messages (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" {4}\r\nabcd\r\n",
    "A003 APPEND saved-messages \"07-Feb-1994 21:52:25 +0100\" {4+}\r\nabcd\r\n",
    "A003 APPEND saved-messages () {0}\r\n\r\n",
    "A003 APPEND Drafts (\\Draft $MDNSent) ~{3}\r\na\x00b\r\n",
    "A003 APPEND Drafts UTF8 (~{3}\r\nabc)\r\n",
    "A003 APPEND saved-messages (\\Seen) {3}\r\nabc {3}\r\ndef\r\n",
    "A003 APPEND x (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" {3}\r\nabc (\\Answered) {3+}\r\ndef \"01-Jan-2000 00:00:00 +0000\" {1}\r\ng\r\n",
    "a IDLE\r\n",
    "FXXZ CHECK\r\n",
    "A341 CLOSE\r\n",
    "A342 UNSELECT\r\n",
    "A202 EXPUNGE\r\n",
    "A003 UID EXPUNGE 3000:3002\r\n",
    // SEARCH
    "A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
    "A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"\r\n",
    "A284 SEARCH TEXT \"string not in mailbox\"\r\n",
    "A285 SEARCH CHARSET UTF-8 TEXT {12}\r\nXXXXXXXXXXXX\r\n",
    "A286 SEARCH CHARSET UTF-8 TEXT {5+}\r\nété\r\n",
    "A301 SEARCH RETURN (SAVE) SINCE 28-Oct-2006 NOT FROM \"eric\"\r\n",
    "A302 UID FETCH $ (FLAGS INTERNALDATE)\r\n",
    "A303 UID SEARCH UID $ SMALLER 4096\r\n",
    "A304 SEARCH RETURN (SAVE MIN) FLAGGED\r\n",
    "a SEARCH OR (FROM a SUBJECT b) NOT (TO c) 1:5,7,*:9 UID 1:*\r\n",
    "a SEARCH MODSEQ 620162338\r\n",
    "a SEARCH MODSEQ \"/flags/\\\\draft\" all 620162338\r\n",
    "a SEARCH ALL ANSWERED BCC x BEFORE 1-Feb-1994 BODY y CC z DELETED DRAFT FLAGGED\r\n",
    "a SEARCH HEADER Message-ID \"<a@b>\" KEYWORD $Forwarded LARGER 100 NEW OLD ON \"1-Feb-1994\"\r\n",
    "a SEARCH RECENT SEEN SENTBEFORE 1-Feb-1994 SENTON 1-Feb-1994 SENTSINCE 1-Feb-1994 SINCE 1-Feb-1994\r\n",
    "a SEARCH SMALLER 5 SUBJECT s TEXT t TO u UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD Junk UNSEEN\r\n",
    "a SEARCH SAVEDBEFORE 1-Feb-2020 SAVEDON 1-Feb-2020 SAVEDSINCE 1-Feb-2020 SAVEDATESUPPORTED\r\n",
    "a SEARCH EMAILID M6d99ac3275bb4e THREADID T64b478a75b7ea9\r\n",
    "a SEARCH YOUNGER 3600 OLDER 60\r\n",
    "a SEARCH $\r\n",
    "a SEARCH SINCE 29-Feb-2024\r\n",
    // FETCH
    "A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n",
    "a FETCH 1 ALL\r\n",
    "a FETCH 1:* FAST\r\n",
    "a FETCH 1 FULL\r\n",
    "a FETCH 1 BODY[]\r\n",
    "a FETCH 1 (BODY.PEEK[1.2.HEADER] BODY[1.2.MIME] BODY[3.TEXT]<0.2048> BODY[4.2])\r\n",
    "a FETCH 1 (FLAGS UID INTERNALDATE RFC822.SIZE RFC822 RFC822.HEADER RFC822.TEXT ENVELOPE BODY BODYSTRUCTURE)\r\n",
    "a FETCH 1 (BINARY[1] BINARY.PEEK[1.2]<0.100> BINARY.SIZE[1] BINARY[])\r\n",
    "a FETCH 1 (MODSEQ SAVEDATE EMAILID THREADID)\r\n",
    "s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n",
    "A04 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n",
    "a FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (Received \"X-Spam\")]\r\n",
    "a FETCH 5:2 uid\r\n",
    // STORE
    "A003 STORE 2:4 +FLAGS (\\Deleted)\r\n",
    "A004 STORE 2:4 -FLAGS.SILENT (\\Deleted \\Seen)\r\n",
    "A005 STORE 1 FLAGS ()\r\n",
    "A006 STORE 1 FLAGS \\Seen $Junk\r\n",
    "d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)\r\n",
    "a UID STORE 1:* +FLAGS (\\Seen)\r\n",
    // COPY, MOVE
    "A003 COPY 2:4 MEETING\r\n",
    "a UID COPY 1:3 \"Sent Items\"\r\n",
    "a MOVE 1:5 Trash\r\n",
    "a UID MOVE 42 {5}\r\nTrash\r\n",
    // SORT, THREAD
    "A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994\r\n",
    "A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n",
    "A284 SORT (SUBJECT) US-ASCII TEXT \"not in mailbox\"\r\n",
    "a UID SORT (REVERSE ARRIVAL DISPLAYFROM) \"UTF-8\" UNSEEN\r\n",
    "A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000\r\n",
    "A284 THREAD REFERENCES US-ASCII TEXT \"gewp\"\r\n",
    "a UID THREAD REFERENCES UTF-8 ALL\r\n",
    // QUOTA
    "G0001 GETQUOTA \"!partition/sda4\"\r\n",
    "G0002 GETQUOTAROOT INBOX\r\n",
    "S0000 SETQUOTA \"#user/alice\" (STORAGE 510)\r\n",
    "S0001 SETQUOTA \"\" ()\r\n",
    // ID, COMPRESS
    "a023 ID (\"name\" \"sodr\" \"version\" \"19.34\" \"vendor\" \"Pink Floyd Music Limited\")\r\n",
    "a ID NIL\r\n",
    "a ID (\"x\" NIL)\r\n",
    "a COMPRESS DEFLATE\r\n",
    // Case-insensitivity and INBOX.
    "a select inbox\r\n",
    "a uid fetch 1 (flags)\r\n",
];

/// Lines that must be refused.
const REJECTED: &[&[u8]] = &[
    b"\r\n",
    b"a\r\n",
    b"a \r\n",
    b"+a NOOP\r\n",
    b"* NOOP\r\n",
    b"a NOOP \r\n",
    b"a NOOP",
    b"a NOOP\n",
    b"a NOOP\r\nb NOOP\r\n",
    b"a FOO\r\n",
    b"a LOGIN smith\r\n",
    b"a LOGIN \"smi\x00th\" x\r\n",
    b"a LOGIN \"smi\rth\" x\r\n",
    b"a LOGIN \"smi\nth\" x\r\n",
    b"a LOGIN \"a\\b\" x\r\n",
    b"a LOGIN \"\xff\xfe\" x\r\n",
    b"a LOGIN {3}\r\na\x00b x\r\n",
    b"a LOGIN {5}\r\nab x\r\n",
    b"a LOGIN ~{1}\r\na x\r\n",
    b"a AUTHENTICATE PLAIN !!!\r\n",
    b"a AUTHENTICATE\r\n",
    b"a ENABLE\r\n",
    b"a SELECT\r\n",
    b"a SELECT INBOX (FOO)\r\n",
    b"a SELECT INBOX (QRESYNC (0 1))\r\n",
    b"a SELECT INBOX (QRESYNC (1 0))\r\n",
    b"a SELECT INBOX ()\r\n",
    b"a CREATE x (USE (Sent))\r\n",
    b"a RENAME x\r\n",
    b"a LIST \"\"\r\n",
    b"a LIST (RECURSIVEMATCH) \"\" *\r\n",
    b"a LIST (BOGUS) \"\" *\r\n",
    b"a LIST \"\" * RETURN (BOGUS)\r\n",
    b"a LIST \"\" ()\r\n",
    b"a STATUS INBOX ()\r\n",
    b"a STATUS INBOX (MESSAGES BOGUS)\r\n",
    b"a STATUS INBOX MESSAGES\r\n",
    b"a APPEND INBOX\r\n",
    b"a APPEND INBOX (\\Seen)\r\n",
    b"a APPEND INBOX \"32-Feb-1994 21:52:25 -0800\" {1}\r\nx\r\n",
    b"a APPEND INBOX \"7-Feb-1994 21:52:25 -0800\" {1}\r\nx\r\n",
    b"a APPEND INBOX \"07-Feb-1994 24:52:25 -0800\" {1}\r\nx\r\n",
    b"a APPEND INBOX UTF8 ({1}\r\nx)\r\n",
    b"a UID EXPUNGE\r\n",
    b"a UID EXPUNGE 0\r\n",
    b"a UID FOO 1\r\n",
    b"a SEARCH\r\n",
    b"a SEARCH FOO\r\n",
    b"a SEARCH SINCE 30-Feb-2024\r\n",
    b"a SEARCH SINCE 1-Foo-2024\r\n",
    b"a SEARCH OR SEEN\r\n",
    b"a SEARCH NOT\r\n",
    b"a SEARCH ()\r\n",
    b"a SEARCH (SEEN\r\n",
    b"a SEARCH 0\r\n",
    b"a SEARCH 1:0\r\n",
    b"a SEARCH 01\r\n",
    b"a SEARCH 4294967296\r\n",
    b"a SEARCH $,1\r\n",
    b"a SEARCH  SEEN\r\n",
    b"a SEARCH RETURN (BOGUS) ALL\r\n",
    b"a SEARCH MODSEQ \"/flags/x\" bogus 1\r\n",
    b"a SEARCH MODSEQ 9223372036854775808\r\n",
    b"a FETCH 1\r\n",
    b"a FETCH 1 ()\r\n",
    b"a FETCH 1 BOGUS\r\n",
    b"a FETCH 1 (ALL)\r\n",
    b"a FETCH 1 BODY[MIME]\r\n",
    b"a FETCH 1 BODY[0]\r\n",
    b"a FETCH 1 BODY[HEADER.FIELDS]\r\n",
    b"a FETCH 1 BODY[HEADER.FIELDS ()]\r\n",
    b"a FETCH 1 BODY[]<0.0>\r\n",
    b"a FETCH 1 BODY.PEEK\r\n",
    b"a FETCH 1 BINARY[HEADER]\r\n",
    b"a FETCH 1 (FLAGS) (VANISHED)\r\n",
    b"a UID FETCH 1 (FLAGS) (VANISHED)\r\n",
    b"a FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
    b"a STORE 1 FLAGS\r\n",
    b"a STORE 1 +FLAG (\\Seen)\r\n",
    b"a STORE 1 FLAGS (\\Seen\r\n",
    b"a COPY 1\r\n",
    b"a SORT SUBJECT UTF-8 ALL\r\n",
    b"a SORT (SUBJECT) ALL\r\n",
    b"a SORT (BOGUS) UTF-8 ALL\r\n",
    b"a SORT () UTF-8 ALL\r\n",
    b"a THREAD REFERENCES UTF-8\r\n",
    b"a SETQUOTA x (STORAGE)\r\n",
    b"a ID\r\n",
    b"a ID (\"x\")\r\n",
    b"a COMPRESS\r\n",
];

#[test]
fn accepted_lines() {
    for line in ACCEPTED {
        if let Err(e) = parse(line.as_bytes()) {
            panic!("{line:?} refused: {e:?}");
        }
    }
}

#[test]
fn rejected_lines() {
    for line in REJECTED {
        if let Ok(c) = parse(line) {
            panic!("{:?} accepted: {c:?}", String::from_utf8_lossy(line));
        }
    }
}

#[test]
fn errors_keep_the_tag() {
    let e = parse(b"A77 FOO bar\r\n").unwrap_err();
    assert_eq!(e.tag, Some(Tag::new("A77").unwrap()));
    assert_eq!(e.error, ParseError::UnknownCommand);
    let e = parse(b"(( NOOP\r\n").unwrap_err();
    assert_eq!(e.tag, None);
}

#[test]
fn nesting_is_bounded() {
    let mut deep = b"a SEARCH ".to_vec();
    deep.extend(std::iter::repeat_n(b'(', 10_000));
    deep.extend_from_slice(b"ALL");
    deep.extend(std::iter::repeat_n(b')', 10_000));
    deep.extend_from_slice(b"\r\n");
    assert_eq!(parse(&deep).unwrap_err().error, ParseError::TooDeep);
    let mut nots = b"a SEARCH".to_vec();
    for _ in 0..10_000 {
        nots.extend_from_slice(b" NOT");
    }
    nots.extend_from_slice(b" ALL\r\n");
    let e = parse(&nots).unwrap_err();
    assert_eq!(e.error, ParseError::TooDeep);
    // Within the limit it parses.
    let ok = format!(
        "a SEARCH {}ALL{}\r\n",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert!(parse(ok.as_bytes()).is_ok());
}

#[test]
fn exact_asts() {
    assert_eq!(
        body("a LOGIN {5}\r\nsmith \"p\\\\w\\\"d\"\r\n"),
        CommandBody::Login {
            username: b"smith".to_vec(),
            password: b"p\\w\"d".to_vec()
        }
    );
    assert_eq!(
        body("a AUTHENTICATE plain AGFsaWNlAHNlY3JldA==\r\n"),
        CommandBody::Authenticate {
            mechanism: atom("PLAIN"),
            initial_response: Some(b"\0alice\0secret".to_vec())
        }
    );
    assert_eq!(
        body("a AUTHENTICATE PLAIN =\r\n"),
        CommandBody::Authenticate {
            mechanism: atom("PLAIN"),
            initial_response: Some(vec![])
        }
    );
    assert_eq!(
        body("a select inbox\r\n"),
        CommandBody::Select {
            mailbox: Mailbox::inbox(),
            read_only: false,
            params: SelectParams::default()
        }
    );
    assert_eq!(
        body("A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211))\r\n"),
        CommandBody::Select {
            mailbox: Mailbox::inbox(),
            read_only: false,
            params: SelectParams {
                condstore: false,
                qresync: Some(QResync {
                    uid_validity: 67890007,
                    mod_seq: 20050715194045000,
                    known_uids: Some(set(&[(nz(41), nz(41)), (nz(43), nz(211))])),
                    seq_match: None,
                }),
            },
        }
    );
    assert_eq!(
        body("t1 CREATE MySpecial (USE (\\Drafts \\Sent))\r\n"),
        CommandBody::Create {
            mailbox: Mailbox::from_bytes(b"MySpecial"),
            special_use: vec![atom("Drafts"), atom("Sent")]
        }
    );
    assert_eq!(
        body("a LIST (SUBSCRIBED) \"\" (\"INBOX\" %) RETURN (CHILDREN STATUS (MESSAGES SIZE))\r\n"),
        CommandBody::List {
            selection: vec![ListSelect::Subscribed],
            reference: Mailbox::from_bytes(b""),
            patterns: vec![b"INBOX".to_vec(), b"%".to_vec()],
            returns: vec![
                ListReturn::Children,
                ListReturn::Status(vec![StatusItem::Messages, StatusItem::Size])
            ],
            extended: true,
        }
    );
    assert_eq!(
        body("a LIST \"\" *\r\n"),
        CommandBody::List {
            selection: vec![],
            reference: Mailbox::from_bytes(b""),
            patterns: vec![b"*".to_vec()],
            returns: vec![],
            extended: false,
        }
    );
    let dt = DateTime::new(date(1994, 2, 7), 21, 52, 25, -480).unwrap();
    assert_eq!(
        body("A003 APPEND x (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" {3}\r\nabc ~{2}\r\n\0\x01\r\n"),
        CommandBody::Append {
            mailbox: Mailbox::from_bytes(b"x"),
            messages: vec![
                AppendMessage {
                    flags: vec![Flag::Seen],
                    date: Some(dt),
                    data: b"abc".to_vec(),
                    binary: false,
                    utf8: false
                },
                AppendMessage {
                    flags: vec![],
                    date: None,
                    data: vec![0, 1],
                    binary: true,
                    utf8: false
                },
            ]
        }
    );
    assert_eq!(dt.to_string(), " 7-Feb-1994 21:52:25 -0800");
    assert_eq!(
        body("a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR (FROM a 2:*) NOT $ MODSEQ 5\r\n"),
        CommandBody::Search {
            uid: true,
            returns: Some(vec![SearchReturn::Min, SearchReturn::Count]),
            charset: Some(b"UTF-8".to_vec()),
            criteria: vec![
                SearchKey::Or(
                    Box::new(SearchKey::And(vec![
                        SearchKey::From(b"a".to_vec()),
                        SearchKey::SequenceSet(set(&[(nz(2), SeqNum::Largest)]))
                    ])),
                    Box::new(SearchKey::Not(Box::new(SearchKey::SequenceSet(
                        SequenceSet::Saved
                    ))))
                ),
                SearchKey::ModSeq {
                    entry: None,
                    modseq: 5
                },
            ],
        }
    );
    assert_eq!(
        body("a SEARCH SINCE 1-feb-1994 BEFORE \"29-Feb-2000\"\r\n"),
        CommandBody::Search {
            uid: false,
            returns: None,
            charset: None,
            criteria: vec![
                SearchKey::Since(date(1994, 2, 1)),
                SearchKey::Before(date(2000, 2, 29))
            ],
        }
    );
    assert_eq!(
        body(
            "a UID FETCH 1:* (UID BODY.PEEK[1.2.HEADER.FIELDS (From To)]<10.20>) (CHANGEDSINCE 7 VANISHED)\r\n"
        ),
        CommandBody::Fetch {
            uid: true,
            set: set(&[(nz(1), SeqNum::Largest)]),
            items: FetchItems::List(vec![
                FetchAttribute::Uid,
                FetchAttribute::BodySection {
                    peek: true,
                    section: Section {
                        part: vec![1, 2],
                        text: Some(SectionText::HeaderFields(vec![
                            b"From".to_vec(),
                            b"To".to_vec()
                        ]))
                    },
                    partial: Some((10, 20)),
                }
            ]),
            changed_since: Some(7),
            vanished: true,
        }
    );
    assert_eq!(
        body("a FETCH 3 BINARY.PEEK[1]<0.5>\r\n"),
        CommandBody::Fetch {
            uid: false,
            set: set(&[(nz(3), nz(3))]),
            items: FetchItems::List(vec![FetchAttribute::Binary {
                peek: true,
                part: vec![1],
                partial: Some((0, 5))
            }]),
            changed_since: None,
            vanished: false,
        }
    );
    assert_eq!(
        body("d105 STORE 7,5:3 (UNCHANGEDSINCE 320162338) -FLAGS.SILENT (\\Deleted $Junk)\r\n"),
        CommandBody::Store {
            uid: false,
            set: set(&[(nz(7), nz(7)), (nz(5), nz(3))]),
            unchanged_since: Some(320162338),
            mode: StoreMode::Remove,
            silent: true,
            flags: vec![Flag::Deleted, Flag::Keyword(atom("$Junk"))],
        }
    );
    assert_eq!(
        body("a UID SORT (REVERSE DATE SUBJECT) UTF-8 UNSEEN\r\n"),
        CommandBody::Sort {
            uid: true,
            criteria: vec![
                SortCriterion {
                    reverse: true,
                    key: SortKey::Date
                },
                SortCriterion {
                    reverse: false,
                    key: SortKey::Subject
                }
            ],
            charset: b"UTF-8".to_vec(),
            search: vec![SearchKey::Unseen],
        }
    );
    assert_eq!(
        body("a THREAD REFERENCES UTF-8 ALL\r\n"),
        CommandBody::Thread {
            uid: false,
            algorithm: ThreadAlgorithm::References,
            charset: b"UTF-8".to_vec(),
            search: vec![SearchKey::All]
        }
    );
    assert_eq!(
        body("a ID (\"name\" \"x\" \"os\" NIL)\r\n"),
        CommandBody::Id {
            params: Some(vec![
                (b"name".to_vec(), Some(b"x".to_vec())),
                (b"os".to_vec(), None)
            ])
        }
    );
    assert_eq!(
        body("S0 SETQUOTA \"\" (STORAGE 512)\r\n"),
        CommandBody::SetQuota {
            root: vec![],
            limits: vec![(atom("STORAGE"), 512)]
        }
    );
}

#[test]
fn auth_lines_and_done() {
    assert_eq!(parse_auth_line(b"*"), Ok(AuthLine::Cancel));
    assert_eq!(parse_auth_line(b""), Ok(AuthLine::Data(vec![])));
    assert_eq!(
        parse_auth_line(b"dGVzdA=="),
        Ok(AuthLine::Data(b"test".to_vec()))
    );
    assert!(parse_auth_line(b"dGVzdA=").is_err());
    assert!(parse_auth_line(b"not base64!").is_err());
    assert!(is_idle_done(b"DONE"));
    assert!(is_idle_done(b"done"));
    assert!(!is_idle_done(b"DONE "));
}
