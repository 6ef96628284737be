//! Transcript tests for the session state machine: `C:` lines are fed to
//! the session, `S:` lines are what it must write, in order. A fake
//! directory (alice / secret) and a fake store answer its events.

use tern_imap::response::*;
use tern_imap::session::*;
use tern_imap::types::{Flag, Mailbox, SeqNum, SeqRange, SequenceSet};
use tern_sasl::{Answer, StartContext};

struct Driver {
    session: Session,
    out: Vec<u8>,
    events: Vec<String>,
    /// Let STARTTLS complete at once.
    auto_tls: bool,
}

fn uids(a: u32, b: u32) -> SequenceSet {
    SequenceSet::Ranges(vec![SeqRange {
        start: SeqNum::Value(a.try_into().unwrap()),
        end: SeqNum::Value(b.try_into().unwrap()),
    }])
}

impl Driver {
    fn new(config: SessionConfig, tls: bool) -> Driver {
        let mut session = Session::new(config, tls);
        session.greet();
        let mut d = Driver {
            session,
            out: Vec::new(),
            events: Vec::new(),
            auto_tls: true,
        };
        d.pump();
        d
    }

    fn plaintext() -> Driver {
        Driver::new(
            SessionConfig {
                plaintext_auth_allowed: true,
                ..SessionConfig::default()
            },
            false,
        )
    }

    fn input(&mut self, bytes: &[u8]) {
        self.session.handle_input(bytes);
        self.pump();
    }

    fn pump(&mut self) {
        loop {
            self.out.extend(self.session.take_output());
            let Some(ev) = self.session.poll_event() else {
                break;
            };
            match ev {
                Event::StartTls => {
                    self.events.push("StartTls".into());
                    if self.auto_tls {
                        self.out.extend(self.session.take_output());
                        self.session.tls_established();
                    }
                }
                Event::AuthStart { mechanism } => {
                    self.events.push(format!("AuthStart {}", mechanism.name()));
                    let nonce = [7u8; 16];
                    self.session.auth_begin(StartContext::new(
                        &nonce,
                        "imap.example",
                        1_700_000_000,
                        b"a server secret of 32 bytes.....",
                    ));
                }
                Event::Auth(AuthQuestion::VerifyPassword { authcid, password }) => {
                    self.events.push(format!("VerifyPassword {authcid}"));
                    self.session.auth_answer(Answer::PasswordOk(
                        authcid == "alice" && password.as_str() == "secret",
                    ));
                }
                Event::Auth(AuthQuestion::LookupScram { authcid }) => {
                    self.events.push(format!("LookupScram {authcid}"));
                    let creds = (authcid == "alice").then(|| {
                        tern_sasl::ScramCredentials::from_password(
                            "secret",
                            b"pepper and salt!",
                            4096,
                        )
                        .unwrap()
                    });
                    self.session.auth_answer(Answer::Scram(creds));
                }
                Event::Auth(q) => {
                    self.events.push(format!("{q:?}"));
                    self.session
                        .auth_answer(Answer::Fail(tern_sasl::FailureKind::Temporary));
                }
                Event::Authenticated { user } => self.events.push(format!("Authenticated {user}")),
                Event::AuthFailed { kind } => self.events.push(format!("AuthFailed {kind:?}")),
                Event::IdleStart => self.events.push("IdleStart".into()),
                Event::IdleDone => self.events.push("IdleDone".into()),
                Event::Compress { pending } => self
                    .events
                    .push(format!("Compress {}", String::from_utf8_lossy(&pending))),
                Event::ClientId(_) => self.events.push("ClientId".into()),
                Event::Close => self.events.push("Close".into()),
                Event::Request(r) => self.request(r),
                _ => self.events.push("other".into()),
            }
        }
    }

    fn request(&mut self, r: Request) {
        let s = &mut self.session;
        match &r.kind {
            RequestKind::Select {
                mailbox, read_only, ..
            } => {
                self.events.push(format!("Select {mailbox}"));
                if mailbox != "INBOX" && mailbox != "Entwürfe" {
                    return s.finish(Completion::no(Some(Code::NonExistent), "No such mailbox"));
                }
                s.send(&Response::Data(Data::Flags(vec![
                    Flag::Seen,
                    Flag::Deleted,
                ])));
                s.send(&Response::Data(Data::Exists(2)));
                s.send(&Response::Status(StatusResponse::untagged(
                    StatusKind::Ok,
                    Some(Code::UidValidity(1)),
                    "UIDs valid",
                )));
                s.send(&Response::Status(StatusResponse::untagged(
                    StatusKind::Ok,
                    Some(Code::UidNext(3)),
                    "Predicted next UID",
                )));
                let code = if *read_only {
                    Code::ReadOnly
                } else {
                    Code::ReadWrite
                };
                s.finish(Completion::ok(Some(code), "SELECT completed"));
            }
            RequestKind::List { patterns, .. } => {
                self.events.push(format!("List {patterns:?}"));
                for (name, attr) in [("INBOX", "\\HasNoChildren"), ("Sent", "\\Sent")] {
                    s.send(&Response::Data(Data::List(ListData {
                        attributes: vec![attr.into()],
                        delimiter: Some('/'),
                        mailbox: Mailbox::from_bytes(name.as_bytes()),
                        child_info: vec![],
                        old_name: None,
                    })));
                }
                s.finish(Completion::ok(None, "LIST completed"));
            }
            RequestKind::Append { mailbox, messages } => {
                self.events
                    .push(format!("Append {mailbox} {}", messages.len()));
                s.finish(Completion::ok(
                    Some(Code::AppendUid {
                        uid_validity: 1,
                        uids: uids(3, 2 + messages.len() as u32),
                    }),
                    "APPEND completed",
                ));
            }
            RequestKind::Fetch { set, .. } => {
                self.events.push(format!("Fetch {set}"));
                s.send(&Response::Data(Data::Fetch {
                    seq: 1,
                    items: vec![
                        FetchItem::Uid(1),
                        FetchItem::Flags {
                            flags: vec![Flag::Seen].into(),
                            recent: false,
                        },
                    ],
                }));
                s.finish(Completion::ok(None, "FETCH completed"));
            }
            RequestKind::Search { .. } => {
                s.send(&Response::Data(Data::Search {
                    ids: vec![1, 2],
                    modseq: None,
                }));
                s.finish(Completion::ok(None, "SEARCH completed"));
            }
            other => {
                self.events.push(
                    format!("{other:?}")
                        .split([' ', '{'])
                        .next()
                        .unwrap()
                        .to_string(),
                );
                s.finish(Completion::ok(None, "done"));
            }
        }
    }
}

/// Run a transcript: each `C:` line (escapes: `\r\n` not needed, added;
/// `{n}` literal data goes on its own `C:` line) is sent as one chunk;
/// all output must equal the `S:` lines in order.
fn transcript(d: &mut Driver, script: &str) {
    let mut expected = Vec::new();
    for line in script
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
    {
        if let Some(c) = line.strip_prefix("C: ") {
            let mut bytes = c.as_bytes().to_vec();
            bytes.extend_from_slice(b"\r\n");
            d.input(&bytes);
        } else if let Some(s) = line.strip_prefix("S: ") {
            expected.push(s.to_string());
        } else if line == "C:" {
            d.input(b"\r\n");
        } else {
            panic!("bad script line {line:?}");
        }
    }
    let out = String::from_utf8(std::mem::take(&mut d.out)).unwrap();
    let got: Vec<&str> = out.split_terminator("\r\n").collect();
    assert_eq!(got, expected, "\nwhole output:\n{out}");
}

const CAPS_BEFORE_PLAIN: &str = "IMAP4rev1 IMAP4rev2 LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 SASL-IR ID ENABLE IDLE";
const CAPS_AFTER: &str = "IMAP4rev1 IMAP4rev2 LITERAL+ ENABLE ID IDLE NAMESPACE SASL-IR UNSELECT UIDPLUS MOVE CHILDREN LIST-EXTENDED LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES CONDSTORE QRESYNC BINARY STATUS=SIZE MULTIAPPEND QUOTA QUOTA=RES-STORAGE SORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES UTF8=ACCEPT SAVEDATE OBJECTID APPENDLIMIT=67108864 COMPRESS=DEFLATE";

#[test]
fn login_select_fetch_logout() {
    let mut d = Driver::plaintext();
    transcript(
        &mut d,
        &format!(
            "
        S: * OK [CAPABILITY {CAPS_BEFORE_PLAIN}] Tern IMAP ready
        C: a001 CAPABILITY
        S: * CAPABILITY {CAPS_BEFORE_PLAIN}
        S: a001 OK CAPABILITY completed
        C: a002 LOGIN alice secret
        S: a002 OK [CAPABILITY {CAPS_AFTER}] Logged in
        C: a003 SELECT inbox
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: a003 OK [READ-WRITE] SELECT completed
        C: a004 FETCH 1 (UID FLAGS)
        S: * 1 FETCH (UID 1 FLAGS (\\Seen))
        S: a004 OK FETCH completed
        C: a005 NOOP
        S: a005 OK done
        C: a006 LOGOUT
        S: * BYE Logging out
        S: a006 OK LOGOUT completed
        C: a007 NOOP
        "
        ),
    );
    assert_eq!(d.session.state(), SessionState::Logout);
    assert_eq!(
        d.events,
        [
            "VerifyPassword alice",
            "Authenticated alice",
            "Select INBOX",
            "Fetch 1",
            "Poll",
            "Close"
        ]
    );
}

#[test]
fn logindisabled_until_starttls_and_pipelined_bytes_dropped() {
    let mut d = Driver::new(SessionConfig::default(), false);
    d.auto_tls = false;
    assert_eq!(d.session.timeout_class(), TimeoutClass::NotAuthenticated);
    transcript(
        &mut d,
        "
        S: * OK [CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ STARTTLS LOGINDISABLED SASL-IR ID ENABLE IDLE] Tern IMAP ready
        C: a LOGIN alice secret
        S: a NO [PRIVACYREQUIRED] LOGIN needs TLS
        C: b AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==
        S: b NO [PRIVACYREQUIRED] AUTHENTICATE needs TLS
        ",
    );
    // STARTTLS with a command pipelined in the same packet: the command
    // must never run, before or after the handshake.
    d.input(b"c STARTTLS\r\nd LOGIN alice secret\r\n");
    assert_eq!(d.out, b"c OK Begin TLS negotiation now\r\n");
    d.out.clear();
    assert_eq!(d.events, ["StartTls"]);
    assert_eq!(d.session.timeout_class(), TimeoutClass::TlsHandshake);
    // Nothing, not even a pushed update, goes out in plaintext now.
    d.session.send(&Response::Data(Data::Exists(1)));
    assert!(!d.session.has_output());
    // Bytes arriving before the handshake finished are ignored too.
    d.input(b"e LOGIN alice secret\r\n");
    assert!(d.out.is_empty());
    d.session.tls_established();
    assert!(d.session.is_tls());
    transcript(
        &mut d,
        &format!(
            "
        C: f CAPABILITY
        S: * CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 SASL-IR ID ENABLE IDLE
        S: f OK CAPABILITY completed
        C: g STARTTLS
        S: g BAD STARTTLS not available
        C: h LOGIN alice secret
        S: h OK [CAPABILITY {CAPS_AFTER}] Logged in
        C: i STARTTLS
        S: i BAD Already authenticated
        "
        ),
    );
    assert_eq!(
        d.events,
        ["StartTls", "VerifyPassword alice", "Authenticated alice"]
    );
}

#[test]
fn authenticate_plain_with_and_without_initial_response() {
    let mut d = Driver::plaintext();
    d.out.clear();
    transcript(
        &mut d,
        "
        C: a AUTHENTICATE PLAIN
        S: + 
        C: AGFsaWNlAHdyb25n
        S: a NO [AUTHENTICATIONFAILED] Authentication failed
        C: b AUTHENTICATE PLAIN
        S: + 
        C: *
        S: b NO Authentication cancelled
        C: c AUTHENTICATE PLAIN !!!
        S: c BAD Invalid arguments: syntax error at octet 21: expected base64
        C: d AUTHENTICATE CRAM-MD5
        S: d NO [CANNOT] Unsupported mechanism
        C: e AUTHENTICATE PLAIN
        S: + 
        C: not base64!
        S: e BAD Malformed authentication exchange
        C: f AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==
        S: f OK [CAPABILITY <after>] Logged in
        "
        .replace("<after>", CAPS_AFTER)
        .as_str(),
    );
    assert_eq!(
        d.events,
        [
            "AuthStart PLAIN",
            "VerifyPassword alice",
            "AuthFailed BadCredentials",
            "AuthStart PLAIN",
            "AuthFailed Cancelled",
            "AuthStart PLAIN",
            "AuthFailed Malformed",
            "AuthStart PLAIN",
            "VerifyPassword alice",
            "Authenticated alice",
        ]
    );
}

#[test]
fn authenticate_login_mechanism_and_authzid() {
    let mut d = Driver::plaintext();
    d.out.clear();
    // "Username:" and "Password:" challenges, base64.
    transcript(
        &mut d,
        "
        C: a AUTHENTICATE LOGIN
        S: + VXNlcm5hbWU6
        C: YWxpY2U=
        S: + UGFzc3dvcmQ6
        C: c2VjcmV0
        S: a OK [CAPABILITY <after>] Logged in
        "
        .replace("<after>", CAPS_AFTER)
        .as_str(),
    );
    let mut d = Driver::plaintext();
    d.out.clear();
    // PLAIN with authzid "bob": refused without asking the directory.
    transcript(
        &mut d,
        "
        C: a AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==
        S: a NO [AUTHORIZATIONFAILED] Not authorized
        ",
    );
    assert_eq!(
        d.events,
        ["AuthStart PLAIN", "AuthFailed AuthzidNotAllowed"]
    );
}

#[test]
fn commands_in_the_wrong_state() {
    let mut d = Driver::plaintext();
    d.out.clear();
    transcript(
        &mut d,
        "
        C: a SELECT INBOX
        S: a BAD Not authenticated
        C: b FETCH 1 FLAGS
        S: b BAD Not authenticated
        C: c IDLE
        S: c BAD Not authenticated
        C: d ENABLE CONDSTORE
        S: d BAD Not authenticated
        C: e LOGIN alice secret
        S: e OK [CAPABILITY <after>] Logged in
        C: f FETCH 1 FLAGS
        S: f BAD No mailbox selected
        C: g EXPUNGE
        S: g BAD No mailbox selected
        C: h CLOSE
        S: h BAD No mailbox selected
        C: i LOGIN alice secret
        S: i BAD Already authenticated
        C: j FOO
        S: j BAD Unknown command
        C: k SELECT
        S: k BAD Invalid arguments: syntax error at octet 8: expected SP
        C: (((
        S: * BAD Missing or invalid tag
        C: l SETQUOTA \"\" (STORAGE 1)
        S: l NO [NOPERM] Quotas are set by the administrator
        C: m SELECT INBOX
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: m OK [READ-WRITE] SELECT completed
        C: n ENABLE CONDSTORE
        S: n BAD ENABLE is not allowed with a mailbox selected
        "
        .replace("<after>", CAPS_AFTER)
        .as_str(),
    );
}

#[test]
fn select_closes_the_previous_mailbox_and_a_failed_select_leaves_none() {
    let mut d = Driver::plaintext();
    d.input(b"a LOGIN alice secret\r\nb EXAMINE INBOX\r\n");
    assert_eq!(d.session.selected().map(|s| s.read_only), Some(true));
    d.out.clear();
    transcript(
        &mut d,
        "
        C: c STORE 1 +FLAGS (\\Seen)
        S: c NO [READ-ONLY] Mailbox is read-only
        C: d SELECT Nope
        S: * OK [CLOSED] Previous mailbox closed
        S: d NO [NONEXISTENT] No such mailbox
        C: e FETCH 1 FLAGS
        S: e BAD No mailbox selected
        C: f SELECT INBOX
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: f OK [READ-WRITE] SELECT completed
        C: g UNSELECT
        S: g OK done
        ",
    );
    assert_eq!(d.session.state(), SessionState::Authenticated);
}

#[test]
fn enable_and_mailbox_name_encoding() {
    let mut d = Driver::plaintext();
    d.input(b"a LOGIN alice secret\r\n");
    d.out.clear();
    d.events.clear();
    transcript(
        &mut d,
        "
        C: b SELECT \"Entw&APw-rfe\"
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: b OK [READ-WRITE] SELECT completed
        C: c UNSELECT
        S: c OK done
        C: d SELECT \"Entw&AGE-rfe\"
        S: d BAD Invalid mailbox name
        C: e ENABLE UTF8=ACCEPT CONDSTORE X-UNKNOWN
        S: * ENABLED UTF8=ACCEPT CONDSTORE
        S: e OK ENABLE completed
        C: f ENABLE CONDSTORE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: f OK ENABLE completed
        C: g SELECT \"Entwürfe\"
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: g OK [READ-WRITE] SELECT completed
        ",
    );
    assert_eq!(d.events, ["Select Entwürfe", "Close", "Select Entwürfe"]);
    assert!(d.session.enabled().utf8());
}

#[test]
fn qresync_needs_enable() {
    let mut d = Driver::plaintext();
    d.input(b"a LOGIN alice secret\r\n");
    d.out.clear();
    transcript(
        &mut d,
        "
        C: b SELECT INBOX (QRESYNC (1 1))
        S: b BAD QRESYNC is not enabled
        C: c ENABLE QRESYNC
        S: * ENABLED QRESYNC
        S: c OK ENABLE completed
        C: d SELECT INBOX (QRESYNC (1 1))
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: d OK [READ-WRITE] SELECT completed
        ",
    );
    let e = d.session.enabled();
    assert!(e.qresync && e.condstore);
}

#[test]
fn idle_with_keepalive_and_pushed_updates() {
    let mut d = Driver::plaintext();
    d.input(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n");
    d.out.clear();
    d.events.clear();
    assert_eq!(d.session.timeout_class(), TimeoutClass::Command);
    d.input(b"c IDLE\r\n");
    assert!(d.session.is_idle());
    assert_eq!(d.session.timeout_class(), TimeoutClass::Idle);
    assert!(d.session.keepalive());
    d.session.send(&Response::Data(Data::Exists(3)));
    d.pump();
    transcript(
        &mut d,
        "
        S: + idling
        S: * OK Still here
        S: * 3 EXISTS
        C: DONE
        S: c OK IDLE terminated
        C: d IDLE
        S: + idling
        C: NOT DONE
        S: d BAD Expected DONE
        ",
    );
    assert!(!d.session.keepalive());
    assert_eq!(
        d.events,
        [
            "Select INBOX",
            "IdleStart",
            "IdleDone",
            "IdleStart",
            "IdleDone"
        ][1..]
    );
}

#[test]
fn literals_and_limits() {
    let mut d = Driver::plaintext();
    d.out.clear();
    transcript(
        &mut d,
        "
        C: a LOGIN {5}
        S: + Ready for literal data
        C: alice {6+}
        C: secret
        S: a OK [CAPABILITY <after>] Logged in
        C: b APPEND INBOX (\\Seen) {5}
        S: + Ready for literal data
        C: hello {3+}
        C: abc
        S: b OK [APPENDUID 1 3:4] APPEND completed
        C: c APPEND INBOX {4294967295}
        S: c NO [TOOBIG] Command refused: literal too large
        C: d NOOP
        S: d OK NOOP completed
        "
        .replace("<after>", CAPS_AFTER)
        .as_str(),
    );
    // Before login, literals are small: 9000 octets are refused.
    let mut d = Driver::plaintext();
    d.out.clear();
    transcript(
        &mut d,
        "
        C: a LOGIN alice {9000}
        S: a NO [TOOBIG] Command refused: literal too large
        ",
    );
}

#[test]
fn too_many_bad_commands_end_the_session() {
    let mut d = Driver::new(
        SessionConfig {
            plaintext_auth_allowed: true,
            max_bad_commands: 3,
            ..SessionConfig::default()
        },
        false,
    );
    d.out.clear();
    transcript(
        &mut d,
        "
        C: a FOO
        S: a BAD Unknown command
        C: b NOOP
        S: b OK NOOP completed
        C: c FOO
        S: c BAD Unknown command
        C: d FOO
        S: d BAD Unknown command
        C: e FOO
        S: e BAD Unknown command
        S: * BYE Too many invalid commands
        C: f NOOP
        ",
    );
    assert_eq!(d.events, ["Close"]);
}

#[test]
fn compress_hands_over_pipelined_bytes() {
    let mut d = Driver::plaintext();
    d.input(b"a LOGIN alice secret\r\n");
    d.out.clear();
    d.input(b"b COMPRESS DEFLATE\r\n\x78\x9c compressed");
    assert_eq!(d.out, b"b OK DEFLATE active\r\n");
    d.out.clear();
    assert_eq!(d.events.last().unwrap(), "Compress x\u{fffd} compressed");
    transcript(
        &mut d,
        "
        C: c COMPRESS DEFLATE
        S: c NO [COMPRESSIONACTIVE] Already compressed
        ",
    );
    assert!(
        !d.session
            .capabilities()
            .contains(&"COMPRESS=DEFLATE".to_string())
    );
}

#[test]
fn list_status_append_search_reach_the_store() {
    let mut d = Driver::plaintext();
    d.input(b"a LOGIN alice secret\r\n");
    d.out.clear();
    d.events.clear();
    transcript(
        &mut d,
        "
        C: b LIST \"\" \"*\" RETURN (SPECIAL-USE)
        S: * LIST (\\HasNoChildren) \"/\" INBOX
        S: * LIST (\\Sent) \"/\" Sent
        S: b OK LIST completed
        C: c NAMESPACE
        S: * NAMESPACE ((\"\" \"/\")) NIL NIL
        S: c OK NAMESPACE completed
        C: d ID (\"name\" \"Thunderbird\")
        S: * ID (\"name\" \"Tern\")
        S: d OK ID completed
        C: e STATUS INBOX (MESSAGES)
        S: e OK done
        C: f SEARCH UNSEEN
        S: f BAD No mailbox selected
        C: g SELECT INBOX
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: g OK [READ-WRITE] SELECT completed
        C: h UID SEARCH UNSEEN
        S: * SEARCH 1 2
        S: h OK SEARCH completed
        C: i UID MOVE 1 Trash
        S: i OK done
        C: i2 SEARCH CHARSET KOI8-R TEXT x
        S: i2 NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset
        C: i3 SORT (DATE) ISO-8859-1 ALL
        S: i3 NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset
        C: i4 THREAD SOMETHING UTF-8 ALL
        S: i4 BAD Unsupported threading algorithm
        C: i5 SEARCH CHARSET utf-8 ALL
        S: * SEARCH 1 2
        S: i5 OK SEARCH completed
        C: j CLOSE
        S: j OK done
        ",
    );
    assert_eq!(
        d.events,
        [
            "List [\"*\"]",
            "ClientId",
            "Status",
            "Select INBOX",
            "Copy",
            "Close"
        ]
    );
}

#[test]
fn long_pipelines_are_a_loop_not_a_recursion() {
    // A LOGIN whose password is not UTF-8 fails inside the session, without
    // asking the directory; 20,000 of them in one read must not grow the
    // stack.
    let mut d = Driver::new(
        SessionConfig {
            plaintext_auth_allowed: true,
            max_bad_commands: u32::MAX,
            ..SessionConfig::default()
        },
        false,
    );
    d.out.clear();
    let line = b"a LOGIN alice {1+}\r\n\xff\r\nb NOOP\r\n";
    let mut input = Vec::new();
    for _ in 0..20_000 {
        input.extend_from_slice(line);
    }
    let session = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            d.input(&input);
            d
        })
        .unwrap();
    let d = session.join().unwrap();
    let out = String::from_utf8(d.out).unwrap();
    assert_eq!(
        out.matches("a BAD Malformed authentication exchange\r\n")
            .count(),
        20_000,
        "{}",
        &out[..200]
    );
    assert_eq!(out.matches("b OK NOOP completed\r\n").count(), 20_000);
}

#[test]
fn one_command_in_flight_while_the_driver_works() {
    let mut s = Session::new(
        SessionConfig {
            plaintext_auth_allowed: true,
            ..SessionConfig::default()
        },
        false,
    );
    s.handle_input(b"a LOGIN alice secret\r\nb NOOP\r\n");
    assert!(matches!(
        s.poll_event(),
        Some(Event::Auth(AuthQuestion::VerifyPassword { .. }))
    ));
    assert_eq!(s.timeout_class(), TimeoutClass::Driver);
    // b waits until a is answered.
    assert!(s.take_output().is_empty());
    s.auth_answer(Answer::PasswordOk(true));
    assert!(matches!(s.poll_event(), Some(Event::Authenticated { .. })));
    let out = String::from_utf8(s.take_output()).unwrap();
    assert!(out.starts_with("a OK [CAPABILITY "));
    assert!(out.ends_with("b OK NOOP completed\r\n"));
    // A request holds later commands back in the same way.
    s.handle_input(b"c SELECT INBOX\r\nd NOOP\r\n");
    let Some(Event::Request(r)) = s.poll_event() else {
        panic!()
    };
    assert_eq!(r.user, "alice");
    assert_eq!(
        r.kind,
        RequestKind::Select {
            mailbox: "INBOX".into(),
            read_only: false,
            params: Default::default()
        }
    );
    assert_eq!(s.timeout_class(), TimeoutClass::Driver);
    assert!(s.take_output().is_empty());
    // Answers out of turn are ignored.
    s.auth_answer(Answer::PasswordOk(true));
    s.finish(Completion::ok(Some(Code::ReadWrite), "SELECT completed"));
    assert_eq!(s.state(), SessionState::Selected);
    let Some(Event::Request(r)) = s.poll_event() else {
        panic!()
    };
    assert_eq!(r.kind, RequestKind::Poll);
    assert_eq!(
        r.selected,
        Some(SelectedMailbox {
            name: "INBOX".into(),
            read_only: false
        })
    );
    s.finish(Completion::ok(None, "NOOP completed"));
    assert_eq!(
        s.take_output(),
        b"c OK [READ-WRITE] SELECT completed\r\nd OK NOOP completed\r\n"
    );
}

/// What Thunderbird sends on first start and after (the flow of issue 12's
/// interop test), through the session with the fake store.
#[test]
fn thunderbird_like_first_start() {
    let mut d = Driver::new(SessionConfig::default(), true);
    d.out.clear();
    d.events.clear();
    transcript(
        &mut d,
        "
        C: 1 capability
        S: * CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ AUTH=PLAIN AUTH=LOGIN AUTH=SCRAM-SHA-256 SASL-IR ID ENABLE IDLE
        S: 1 OK CAPABILITY completed
        C: 2 authenticate PLAIN AGFsaWNlAHNlY3JldA==
        S: 2 OK [CAPABILITY <after>] Logged in
        C: 3 ID (\"name\" \"Thunderbird\" \"version\" \"128.0\")
        S: * ID (\"name\" \"Tern\")
        S: 3 OK ID completed
        C: 4 enable CONDSTORE
        S: * ENABLED CONDSTORE
        S: 4 OK ENABLE completed
        C: 5 list (special-use) \"\" \"*\"
        S: * LIST (\\HasNoChildren) \"/\" INBOX
        S: * LIST (\\Sent) \"/\" Sent
        S: 5 OK LIST completed
        C: 6 list \"\" \"*\" return (subscribed children status (messages unseen uidnext))
        S: * LIST (\\HasNoChildren) \"/\" INBOX
        S: * LIST (\\Sent) \"/\" Sent
        S: 6 OK LIST completed
        C: 7 select \"INBOX\" (CONDSTORE)
        S: * FLAGS (\\Seen \\Deleted)
        S: * 2 EXISTS
        S: * OK [UIDVALIDITY 1] UIDs valid
        S: * OK [UIDNEXT 3] Predicted next UID
        S: 7 OK [READ-WRITE] SELECT completed
        C: 8 UID fetch 1:* (FLAGS) (CHANGEDSINCE 1)
        S: * 1 FETCH (UID 1 FLAGS (\\Seen))
        S: 8 OK FETCH completed
        C: 9 UID fetch 1:2 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])
        S: * 1 FETCH (UID 1 FLAGS (\\Seen))
        S: 9 OK FETCH completed
        C: 10 IDLE
        S: + idling
        C: DONE
        S: 10 OK IDLE terminated
        C: 11 UID store 2 +FLAGS (\\Seen)
        S: 11 OK done
        C: 12 UID move 2 \"Trash\"
        S: 12 OK done
        C: 13 append \"Sent\" (\\Seen) {5+}
        C: hello
        S: 13 OK [APPENDUID 1 3] APPEND completed
        C: 14 logout
        S: * BYE Logging out
        S: 14 OK LOGOUT completed
        "
        .replace("<after>", CAPS_AFTER)
        .as_str(),
    );
    assert_eq!(
        d.events,
        [
            "AuthStart PLAIN",
            "VerifyPassword alice",
            "Authenticated alice",
            "ClientId",
            "List [\"*\"]",
            "List [\"*\"]",
            "Select INBOX",
            "Fetch 1:*",
            "Fetch 1:2",
            "IdleStart",
            "IdleDone",
            "Store",
            "Copy",
            "Append Sent 1",
            "Close",
        ]
    );
    assert!(d.session.enabled().condstore);
}

/// SCRAM-SHA-256 (RFC 7677) over AUTHENTICATE with SASL-IR: two server
/// challenges, the last one answered by an empty line.
#[test]
fn authenticate_scram_sha_256() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use ring::{digest, hmac, pbkdf2};

    fn scram(password: &str, wrong_server_key: bool) -> (Vec<u8>, Vec<String>) {
        let mut d = Driver::plaintext();
        d.out.clear();
        let client_first_bare = "n=alice,r=clientnonce0123456789";
        d.input(
            format!(
                "a AUTHENTICATE SCRAM-SHA-256 {}\r\n",
                B64.encode(format!("n,,{client_first_bare}"))
            )
            .as_bytes(),
        );
        let out = String::from_utf8(std::mem::take(&mut d.out)).unwrap();
        let server_first = String::from_utf8(
            B64.decode(out.strip_prefix("+ ").unwrap().trim_end())
                .unwrap(),
        )
        .unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0u32;
        for part in server_first.split(',') {
            match part.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = B64.decode(v).unwrap(),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        assert!(nonce.starts_with("r=clientnonce0123456789".strip_prefix("r=").unwrap()));
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations.try_into().unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let client_final = format!("{without_proof},p={}", B64.encode(proof));
        d.input(format!("{}\r\n", B64.encode(client_final)).as_bytes());
        let out = String::from_utf8(std::mem::take(&mut d.out)).unwrap();
        if let Some(challenge) = out.strip_prefix("+ ") {
            // The server's signature proves it knows the credentials.
            let server_final =
                String::from_utf8(B64.decode(challenge.trim_end()).unwrap()).unwrap();
            let server_key = hmac::sign(&salted, b"Server Key");
            let key = if wrong_server_key {
                b"not the server key".as_slice()
            } else {
                server_key.as_ref()
            };
            let expected = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, key),
                auth_message.as_bytes(),
            );
            assert_eq!(
                server_final == format!("v={}", B64.encode(expected)),
                !wrong_server_key
            );
            d.input(b"\r\n");
            return (d.out, d.events);
        }
        (out.into_bytes(), d.events)
    }

    let (out, events) = scram("secret", false);
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("a OK [CAPABILITY "), "{out}");
    assert_eq!(
        events,
        [
            "AuthStart SCRAM-SHA-256",
            "LookupScram alice",
            "Authenticated alice"
        ]
    );
    let (_, _) = scram("secret", true);
    let (out, events) = scram("wrong", false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    );
    assert_eq!(
        events,
        [
            "AuthStart SCRAM-SHA-256",
            "LookupScram alice",
            "AuthFailed BadCredentials"
        ]
    );
}

#[test]
fn auth_mechanism_names_the_exchange_that_ran() {
    // (client bytes, the mechanism the session reports afterwards)
    let cases: [(&[u8], Option<tern_sasl::Mechanism>); 4] = [
        (b"a CAPABILITY\r\n", None),
        (
            b"a LOGIN alice secret\r\n",
            Some(tern_sasl::Mechanism::Plain),
        ),
        (
            b"a LOGIN alice wrong\r\n",
            Some(tern_sasl::Mechanism::Plain),
        ),
        (
            b"a AUTHENTICATE LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\n",
            Some(tern_sasl::Mechanism::Login),
        ),
    ];
    for (input, expected) in cases {
        let mut d = Driver::plaintext();
        d.input(input);
        assert_eq!(
            d.session.auth_mechanism(),
            expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}
