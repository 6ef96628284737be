//! Byte-driven tests of the sans-IO SMTP client: scripted S: replies in,
//! C: bytes and events out, no sockets, no clock.

use std::mem;
use std::sync::Arc;

use proptest::prelude::*;
use tern_smtp::client::{
    AuthMechanism, ClientAuth, ClientConfig, ClientError, ClientSession, ClientTimeouts,
    DataEncoder, Event, Outcome, ProtocolError, RcptResult, Recipient, ReplyError, ReplyLimits,
    ReplyParser, SessionError, SessionFailure, StartTlsPolicy, TimeoutClass, Transaction,
    TransactionResult,
};
use tern_smtp::data::DataDecoder;
use tern_smtp::reply::Reply;
use tern_smtp::server::BareLineEndings;
use tern_types::dsn::{BodyType, Notify, Orcpt, Ret};
use tern_types::{EnhancedStatus, ForwardPath, Mailbox, ReversePath};

// ------------------------------------------------------------ harness

/// One event, with Send bytes as text for readable assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Sent(String),
    StartTls,
    NeedData,
    Done(TransactionResult),
    Ready,
    Closed(Outcome),
}

struct H {
    s: ClientSession,
    log: Vec<Ev>,
    /// Every byte ever sent (never cleared).
    wire: Vec<u8>,
}

impl H {
    fn new(config: ClientConfig) -> H {
        H {
            s: ClientSession::new(Arc::new(config)).unwrap(),
            log: Vec::new(),
            wire: Vec::new(),
        }
    }

    fn server(&mut self, bytes: impl AsRef<[u8]>) -> &mut H {
        self.s.handle_input(bytes.as_ref());
        self.pump();
        self
    }

    fn pump(&mut self) {
        while let Some(e) = self.s.poll_event() {
            let ev = match e {
                Event::Send(o) => {
                    self.wire.extend_from_slice(o.as_bytes());
                    Ev::Sent(String::from_utf8(o.as_bytes().to_vec()).unwrap())
                }
                Event::StartTls => Ev::StartTls,
                Event::NeedData => Ev::NeedData,
                Event::TransactionDone(r) => Ev::Done(r),
                Event::Ready => Ev::Ready,
                Event::Closed(o) => Ev::Closed(o),
                other => panic!("unknown event {other:?}"),
            };
            self.log.push(ev);
        }
    }

    fn take(&mut self) -> Vec<Ev> {
        mem::take(&mut self.log)
    }

    fn start(&mut self, t: Transaction) -> &mut H {
        self.s.start_transaction(t).unwrap();
        self.pump();
        self
    }

    fn data_sent(&mut self) -> &mut H {
        self.s.data_sent().unwrap();
        self.pump();
        self
    }

    /// The only TransactionDone in the log.
    fn done(&self) -> TransactionResult {
        let mut it = self.log.iter().filter_map(|e| match e {
            Ev::Done(r) => Some(r.clone()),
            _ => None,
        });
        let r = it.next().expect("a TransactionDone");
        assert!(it.next().is_none(), "one TransactionDone: {:?}", self.log);
        r
    }

    fn closed(&self) -> Outcome {
        match self.log.last() {
            Some(Ev::Closed(o)) => o.clone(),
            other => panic!("not closed: {other:?} in {:?}", self.log),
        }
    }

    fn failure(&self) -> SessionFailure {
        match self.closed() {
            Outcome::Failed(f) => f,
            Outcome::Quit => panic!("closed with Quit"),
        }
    }
}

fn sent(s: &str) -> Ev {
    Ev::Sent(s.to_owned())
}

fn parse_reply(text: &str) -> Reply {
    let mut p = ReplyParser::new(ReplyLimits::default());
    let mut input = text.as_bytes();
    let r = p.parse(&mut input).unwrap().unwrap();
    assert!(input.is_empty());
    r
}

fn cfg() -> ClientConfig {
    ClientConfig::new("client.test")
}

const GREETING: &str = "220 mx.remote.test ESMTP\r\n";
const EHLO_FULL: &str = "250-mx.remote.test Hello\r\n250-PIPELINING\r\n250-SIZE 10000\r\n\
250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n";
const EHLO_LOCKSTEP: &str = "250-mx.remote.test Hello\r\n250-SIZE 10000\r\n250 8BITMIME\r\n";

/// A session past EHLO, ready for a transaction.
fn connected(config: ClientConfig, ehlo: &str) -> H {
    let mut h = H::new(config);
    h.server(GREETING);
    assert_eq!(h.take(), [sent("EHLO client.test\r\n")]);
    h.server(ehlo);
    assert_eq!(h.take(), [Ev::Ready]);
    h
}

fn mailbox(s: &str) -> Mailbox {
    s.parse().unwrap()
}

fn rcpt(s: &str) -> Recipient {
    Recipient::new(ForwardPath::Mailbox(mailbox(s)))
}

/// From sender@origin.test to r0..r{n-1}@remote.test, 100 octets.
fn txn(n: usize) -> Transaction {
    Transaction {
        from: ReversePath::Mailbox(mailbox("sender@origin.test")),
        params: tern_smtp::client::MessageParams {
            size: Some(100),
            ..Default::default()
        },
        rcpts: (0..n).map(|i| rcpt(&format!("r{i}@remote.test"))).collect(),
    }
}

/// (kind, code) per recipient: 'D'elivered, 'T'emporary, 'F'ailed.
fn kinds(r: &TransactionResult) -> Vec<(char, u16)> {
    r.rcpts
        .iter()
        .enumerate()
        .map(|(i, o)| {
            assert_eq!(o.index, i);
            let k = match o.result {
                RcptResult::Delivered(_) => 'D',
                RcptResult::Deferred(_) => 'T',
                RcptResult::Failed(_) => 'F',
            };
            (k, o.result.reply().code)
        })
        .collect()
}

fn wire(h: &H) -> String {
    String::from_utf8(h.wire.clone()).unwrap()
}

// ------------------------------------------------------------ happy paths

#[test]
fn happy_path_pipelined_and_connection_reuse() {
    let mut h = connected(cfg(), EHLO_FULL);
    assert!(h.s.extensions().pipelining);
    assert_eq!(h.s.timeout_class(), None, "idle");
    h.start(txn(2));
    assert_eq!(
        h.take(),
        [sent(
            "MAIL FROM:<sender@origin.test> SIZE=100\r\nRCPT TO:<r0@remote.test>\r\n\
             RCPT TO:<r1@remote.test>\r\nDATA\r\n"
        )],
        "one write (RFC 2920)"
    );
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Mail));
    h.server("250 2.1.0 Sender OK\r\n");
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Rcpt));
    h.server("250 2.1.5 OK\r\n250 2.1.5 OK\r\n");
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::DataInit));
    h.server("354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_eq!(h.take(), [Ev::NeedData]);
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::DataBlock));
    h.data_sent();
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::DataTermination));
    assert!(h.take().is_empty());
    h.server("250 2.0.0 Ok: queued as 12345\r\n");
    let done = h.done();
    assert_eq!(kinds(&done), [('D', 250), ('D', 250)]);
    assert!(done.rcpts.iter().all(|o| o.from_server));
    let final_reply = parse_reply("250 2.0.0 Ok: queued as 12345\r\n");
    assert_eq!(done.message_reply, Some(final_reply.clone()));
    assert_eq!(done.rcpts[0].result, RcptResult::Delivered(final_reply));
    assert!(done.dsn_passed_on);
    assert_eq!(h.take().last(), Some(&Ev::Ready));

    // Reuse: a second transaction straight away, no RSET.
    h.start(txn(1));
    assert_eq!(
        h.take(),
        [sent(
            "MAIL FROM:<sender@origin.test> SIZE=100\r\nRCPT TO:<r0@remote.test>\r\nDATA\r\n"
        )]
    );
    h.server("250 OK\r\n250 OK\r\n354 go\r\n");
    assert_eq!(h.take(), [Ev::NeedData]);
    h.data_sent().server("250 OK\r\n");
    assert_eq!(kinds(&h.done()), [('D', 250)]);
    h.take();
    h.s.quit().unwrap();
    h.pump();
    assert_eq!(h.take(), [sent("QUIT\r\n")]);
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Command));
    h.server("221 2.0.0 Bye\r\n");
    assert_eq!(h.take(), [Ev::Closed(Outcome::Quit)]);
    assert!(h.s.is_closed());
    assert!(!wire(&h).contains("RSET"));
}

#[test]
fn happy_path_without_pipelining() {
    // Not offered by the server, and offered but disabled in our config.
    let mut disabled = cfg();
    disabled.pipelining = false;
    for (config, ehlo) in [(cfg(), EHLO_LOCKSTEP), (disabled, EHLO_FULL)] {
        let mut h = connected(config, ehlo);
        h.start(txn(2));
        assert_eq!(
            h.take(),
            [sent("MAIL FROM:<sender@origin.test> SIZE=100\r\n")]
        );
        assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Mail));
        h.server("250 2.1.0 OK\r\n");
        assert_eq!(h.take(), [sent("RCPT TO:<r0@remote.test>\r\n")]);
        assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Rcpt));
        h.server("250 2.1.5 OK\r\n");
        assert_eq!(h.take(), [sent("RCPT TO:<r1@remote.test>\r\n")]);
        h.server("250 2.1.5 OK\r\n");
        assert_eq!(h.take(), [sent("DATA\r\n")]);
        assert_eq!(h.s.timeout_class(), Some(TimeoutClass::DataInit));
        h.server("354 go\r\n");
        assert_eq!(h.take(), [Ev::NeedData]);
        h.data_sent().server("250 2.0.0 queued\r\n");
        assert_eq!(kinds(&h.done()), [('D', 250), ('D', 250)]);
        assert_eq!(h.take().last(), Some(&Ev::Ready));
    }
}

// ------------------------------------------------------------ every mix

/// Drives one transaction of three recipients with the given RCPT codes
/// and final code; returns the harness after the transaction.
fn mix(pipelining: bool, rcpt_codes: [u16; 3], final_code: u16) -> H {
    let mut h = connected(cfg(), if pipelining { EHLO_FULL } else { EHLO_LOCKSTEP });
    h.start(txn(3));
    let reply = |code: u16| -> String {
        let status = match code / 100 {
            2 => "2.1.5",
            4 => "4.2.1",
            _ => "5.1.1",
        };
        format!("{code} {status} rcpt says {code}\r\n")
    };
    let accepted = rcpt_codes.contains(&250);
    if pipelining {
        let mut batch = String::from("250 2.1.0 OK\r\n");
        for c in rcpt_codes {
            batch.push_str(&reply(c));
        }
        if accepted {
            batch.push_str("354 go\r\n");
        } else {
            batch.push_str("554 5.5.1 Error: no valid recipients\r\n");
        }
        h.server(batch);
    } else {
        h.server("250 2.1.0 OK\r\n");
        for c in rcpt_codes {
            h.server(reply(c));
        }
        if accepted {
            h.server("354 go\r\n");
        }
    }
    if accepted {
        assert_eq!(h.log.last(), Some(&Ev::NeedData));
        let status = match final_code / 100 {
            2 => "2.0.0",
            4 => "4.3.0",
            _ => "5.7.1",
        };
        h.data_sent()
            .server(format!("{final_code} {status} final {final_code}\r\n"));
        assert_eq!(h.log.last(), Some(&Ev::Ready));
    } else {
        assert!(!h.log.contains(&Ev::NeedData));
        assert_eq!(h.log.last(), Some(&sent("RSET\r\n")));
        h.server("250 2.0.0 OK\r\n");
        assert_eq!(h.log.last(), Some(&Ev::Ready));
    }
    h
}

#[test]
fn every_mix_of_recipient_and_final_replies() {
    let mut cases = 0;
    for pipelining in [true, false] {
        for a in [250, 451, 550] {
            for b in [250, 451, 550] {
                for c in [250, 451, 550] {
                    for fin in [250, 451, 554] {
                        let h = mix(pipelining, [a, b, c], fin);
                        let done = h.done();
                        let want: Vec<(char, u16)> = [a, b, c]
                            .iter()
                            .map(|&code| match code {
                                250 => match fin {
                                    250 => ('D', 250),
                                    451 => ('T', 451),
                                    _ => ('F', 554),
                                },
                                451 => ('T', 451),
                                _ => ('F', 550),
                            })
                            .collect();
                        let ctx = format!("pipelining={pipelining} {a} {b} {c} final {fin}");
                        assert_eq!(kinds(&done), want, "{ctx}");
                        assert!(done.rcpts.iter().all(|o| o.from_server), "{ctx}");
                        // A rejected recipient keeps its own reply text.
                        for (o, code) in done.rcpts.iter().zip([a, b, c]) {
                            if code != 250 {
                                assert_eq!(
                                    o.result.reply().lines,
                                    [format!("rcpt says {code}")],
                                    "{ctx}"
                                );
                            }
                        }
                        let accepted = [a, b, c].contains(&250);
                        assert_eq!(done.message_reply.is_some(), accepted, "{ctx}");
                        if !pipelining {
                            assert_eq!(wire(&h).contains("DATA"), accepted, "{ctx}");
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 2 * 27 * 3);
}

#[test]
fn all_recipients_rejected_sends_no_message() {
    // Without PIPELINING: no DATA at all, RSET instead.
    let h = mix(false, [550, 451, 550], 250);
    let w = wire(&h);
    assert!(!w.contains("DATA") && w.ends_with("RSET\r\n"), "{w}");

    // With PIPELINING, a broken server that answers DATA with 354 anyway
    // gets an empty message, never ours.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(2));
    h.take();
    h.server("250 OK\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n354 go\r\n");
    assert_eq!(h.take(), [sent(".\r\n")]);
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::DataTermination));
    h.server("250 2.0.0 empty queued\r\n");
    let events = h.take();
    let [Ev::Done(done), Ev::Ready] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(kinds(done), [('F', 550), ('F', 550)]);
    assert_eq!(done.message_reply, None);

    // MAIL refused: every recipient gets the MAIL reply; no RSET needed.
    for (pipelining, code, kind) in [(true, 451, 'T'), (false, 553, 'F'), (true, 553, 'F')] {
        let mut h = connected(cfg(), if pipelining { EHLO_FULL } else { EHLO_LOCKSTEP });
        h.start(txn(2));
        h.take();
        if pipelining {
            h.server(format!(
                "{code} sender refused\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no valid rcpts\r\n"
            ));
        } else {
            h.server(format!("{code} sender refused\r\n"));
        }
        let events = h.take();
        let [Ev::Done(done), Ev::Ready] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(kinds(done), [(kind, code), (kind, code)]);
        assert!(!wire(&h).contains("RSET"));
        if !pipelining {
            assert!(!wire(&h).contains("RCPT"));
        }
    }
}

// ------------------------------------------------------------ 421 and breaks

#[test]
fn service_closing_421_at_every_step() {
    let closing = "421 4.3.2 Shutting down\r\n";
    let r421 = parse_reply(closing);

    // 421 instead of the MAIL reply (pipelined): everyone deferred with it.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(3)).take();
    h.server(closing);
    assert_eq!(kinds(&h.done()), [('T', 421); 3]);
    assert_eq!(h.done().rcpts[0].result, RcptResult::Deferred(r421.clone()));
    assert!(h.done().rcpts.iter().all(|o| o.from_server));
    let f = h.failure();
    assert_eq!(f.error, SessionError::ServiceClosing(r421.clone()));
    assert!(!f.before_any_transaction && !f.is_permanent());
    assert_eq!(f.reply(), r421);
    assert!(!wire(&h).contains("QUIT"));

    // 421 after one RCPT answer: the answered one keeps its result.
    let mut h = connected(cfg(), EHLO_LOCKSTEP);
    h.start(txn(3))
        .server("250 OK\r\n250 OK\r\n550 5.1.1 unknown\r\n");
    h.server(closing);
    assert_eq!(kinds(&h.done()), [('T', 421), ('F', 550), ('T', 421)]);
    assert!(matches!(h.failure().error, SessionError::ServiceClosing(_)));

    // 421 in reply to DATA.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(2))
        .server("250 OK\r\n250 OK\r\n451 4.2.1 later\r\n")
        .server(closing);
    assert_eq!(kinds(&h.done()), [('T', 421), ('T', 451)]);

    // 421 as the reply to the end of data.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(2))
        .server("250 OK\r\n250 OK\r\n550 no\r\n354 go\r\n")
        .data_sent()
        .server(closing);
    let done = h.done();
    assert_eq!(kinds(&done), [('T', 421), ('F', 550)]);
    assert_eq!(done.message_reply, None);
    h.failure();

    // 421 while idle, after a transaction: nothing to defer.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(1))
        .server("250 OK\r\n250 OK\r\n354 go\r\n")
        .data_sent()
        .server("250 OK\r\n");
    h.take();
    h.server(closing);
    assert_eq!(h.log.len(), 1, "only Closed: {:?}", h.log);
    assert!(!h.failure().before_any_transaction);

    // 421 greeting: temporary, before any transaction.
    let mut h = H::new(cfg());
    h.server("421 4.7.0 Too many connections\r\n");
    let f = h.failure();
    assert!(matches!(f.error, SessionError::Greeting(ref r) if r.code == 421));
    assert!(f.before_any_transaction && !f.is_permanent());
    assert_eq!(h.log.len(), 1, "nothing sent, only Closed");

    // 421 to QUIT is still a clean end.
    let mut h = connected(cfg(), EHLO_FULL);
    h.s.quit().unwrap();
    h.pump();
    h.server(closing);
    assert_eq!(h.closed(), Outcome::Quit);
}

#[test]
fn greeting_refusals() {
    for (greeting, permanent) in [
        ("554 5.7.1 No SMTP service here\r\n", true),
        ("450 4.3.2 busy\r\n", false),
        ("554-multi\r\n554 line\r\n", true),
    ] {
        let mut h = H::new(cfg());
        h.server(greeting);
        let f = h.failure();
        assert!(matches!(f.error, SessionError::Greeting(_)), "{greeting}");
        assert_eq!(f.is_permanent(), permanent, "{greeting}");
        assert!(f.before_any_transaction);
        assert!(h.wire.is_empty());
    }
    // A 3xx greeting is a protocol error: temporary.
    let mut h = H::new(cfg());
    h.server("354 what\r\n");
    let f = h.failure();
    assert!(matches!(f.error, SessionError::Protocol(_)) && !f.is_permanent());
}

#[test]
fn connection_lost_and_timeouts_defer_what_is_open() {
    // Lost while the message is being written.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(3))
        .server("250 OK\r\n250 OK\r\n451 4.2.1 later\r\n250 OK\r\n354 go\r\n");
    h.s.connection_lost();
    h.pump();
    let done = h.done();
    assert_eq!(kinds(&done), [('T', 421), ('T', 451), ('T', 421)]);
    let synthetic = done.rcpts[0].result.reply();
    assert_eq!(synthetic.status, Some(EnhancedStatus::new(4, 4, 2)));
    assert!(!done.rcpts[0].from_server && done.rcpts[1].from_server);
    assert_eq!(h.failure().error, SessionError::ConnectionLost);
    assert_eq!(h.s.data_sent(), Err(ClientError::Closed));

    // Timeout at each step of a lockstep transaction.
    let steps: [(&[&str], TimeoutClass); 4] = [
        (&[], TimeoutClass::Mail),
        (&["250 OK\r\n"], TimeoutClass::Rcpt),
        (&["250 OK\r\n", "250 OK\r\n"], TimeoutClass::DataInit),
        (
            &["250 OK\r\n", "250 OK\r\n", "354 go\r\n"],
            TimeoutClass::DataBlock,
        ),
    ];
    for (replies, class) in steps {
        let mut h = connected(cfg(), EHLO_LOCKSTEP);
        h.start(txn(1));
        for r in replies {
            h.server(r);
        }
        assert_eq!(h.s.timeout_class(), Some(class));
        h.s.on_timeout();
        h.pump();
        assert_eq!(kinds(&h.done()), [('T', 421)], "{class:?}");
        let r = h.done().rcpts[0].result.reply().clone();
        assert_eq!(r.status, Some(EnhancedStatus::new(4, 4, 2)));
        assert!(r.lines[0].contains("Timed out"), "{r:?}");
        assert_eq!(h.failure().error, SessionError::Timeout(class));
        assert!(h.s.is_closed());
        assert_eq!(h.s.timeout_class(), None);
    }
    // The end-of-data timeout too (RFC 5321 4.5.3.2.6).
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(1))
        .server("250 OK\r\n250 OK\r\n354 go\r\n")
        .data_sent();
    h.s.on_timeout();
    h.pump();
    assert_eq!(
        h.failure().error,
        SessionError::Timeout(TimeoutClass::DataTermination)
    );
    assert_eq!(kinds(&h.done()), [('T', 421)]);

    // Before the greeting: no transaction, next MX.
    let mut h = H::new(cfg());
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Greeting));
    h.s.on_timeout();
    h.pump();
    let f = h.failure();
    assert!(f.before_any_transaction && !f.is_permanent());
    // Idle: the timer does not apply.
    let mut h = connected(cfg(), EHLO_FULL);
    h.s.on_timeout();
    h.pump();
    assert!(h.take().is_empty() && !h.s.is_closed());
    // After QUIT: a clean end either way.
    h.s.quit().unwrap();
    h.s.connection_lost();
    h.pump();
    assert_eq!(h.closed(), Outcome::Quit);
}

#[test]
fn timeout_defaults_follow_rfc_5321() {
    let t = ClientTimeouts::default();
    let min = |m: u64| std::time::Duration::from_secs(m * 60);
    for (class, want) in [
        (TimeoutClass::Greeting, min(5)),
        (TimeoutClass::Command, min(5)),
        (TimeoutClass::Mail, min(5)),
        (TimeoutClass::Rcpt, min(5)),
        (TimeoutClass::DataInit, min(2)),
        (TimeoutClass::DataBlock, min(3)),
        (TimeoutClass::DataTermination, min(10)),
        (TimeoutClass::TlsHandshake, min(5)),
    ] {
        assert_eq!(t.get(class), want, "{class:?}");
    }
}

#[test]
fn a_reply_during_the_message_ends_the_session() {
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(2))
        .server("250 OK\r\n250 OK\r\n451 later\r\n354 go\r\n");
    h.take();
    h.server("554 5.7.1 Virus found\r\n");
    assert_eq!(kinds(&h.done()), [('F', 554), ('T', 451)]);
    assert!(matches!(
        h.failure().error,
        SessionError::Protocol(ProtocolError::DuringData(_))
    ));
    assert_eq!(h.s.data_sent(), Err(ClientError::Closed));

    // A 250 there is nonsense: deferred, never delivered.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(txn(1)).server("250 OK\r\n250 OK\r\n354 go\r\n");
    h.server("250 OK\r\n");
    assert_eq!(kinds(&h.done()), [('T', 421)]);
    assert!(!h.done().rcpts[0].from_server);
}

#[test]
fn nonsense_codes_are_protocol_errors() {
    let cases: [(&str, &str); 4] = [
        ("354 to MAIL\r\n", "MAIL"),
        ("250 OK\r\n354 to RCPT\r\n", "RCPT"),
        ("250 OK\r\n250 OK\r\n250 to DATA\r\n", "DATA"),
        ("250 OK\r\n250 OK\r\n354 go\r\n", "the end of data"),
    ];
    for (script, command) in cases {
        let mut h = connected(cfg(), EHLO_FULL);
        h.start(txn(1)).server(script);
        if command == "the end of data" {
            h.data_sent().server("354 again\r\n");
        }
        let f = h.failure();
        assert!(
            matches!(&f.error, SessionError::Protocol(ProtocolError::Unexpected { command: c, .. }) if *c == command),
            "{f:?}"
        );
        assert_eq!(kinds(&h.done()), [('T', 421)], "{command}");
        assert_eq!(
            h.done().rcpts[0].result.reply().status,
            Some(EnhancedStatus::new(4, 5, 0))
        );
    }
    // A reply while idle.
    let mut h = connected(cfg(), EHLO_FULL);
    h.server("250 surprise\r\n");
    assert!(matches!(
        h.failure().error,
        SessionError::Protocol(ProtocolError::Unsolicited(_))
    ));
    // More replies than commands: in a byte stream a reply that arrives
    // early is the answer to the next command (here the second 250
    // answers RCPT); one after the 354 is a reply during the message.
    let mut h = connected(cfg(), EHLO_LOCKSTEP);
    h.start(txn(1)).server("250 OK\r\n250 OK\r\n");
    assert_eq!(h.log.last(), Some(&sent("DATA\r\n")));
    h.server("354 go\r\n250 extra\r\n");
    assert!(matches!(
        h.failure().error,
        SessionError::Protocol(ProtocolError::DuringData(_))
    ));
}

// ------------------------------------------------------------ EHLO / HELO

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let mut h = H::new(cfg());
    h.server(GREETING);
    h.server("502 5.5.1 Command not implemented\r\n");
    assert_eq!(
        h.take(),
        [sent("EHLO client.test\r\n"), sent("HELO client.test\r\n")]
    );
    h.server("250 mx.remote.test\r\n");
    assert_eq!(h.take(), [Ev::Ready]);
    assert!(!h.s.is_extended());
    assert_eq!(h.s.extensions(), &Default::default());
    // No extensions: one command at a time, no SIZE parameter.
    h.start(txn(1));
    assert_eq!(h.take(), [sent("MAIL FROM:<sender@origin.test>\r\n")]);

    // HELO refused too: permanent.
    let mut h = H::new(cfg());
    h.server(GREETING)
        .server("500 what\r\n")
        .server("550 5.7.1 go away\r\n");
    let f = h.failure();
    assert!(matches!(f.error, SessionError::HelloRejected(_)) && f.is_permanent());
    // EHLO 4xx: temporary, no HELO.
    let mut h = H::new(cfg());
    h.server(GREETING).server("451 4.3.0 try later\r\n");
    let f = h.failure();
    assert!(matches!(f.error, SessionError::HelloRejected(_)) && !f.is_permanent());
    assert!(!wire(&h).contains("HELO"));
}

#[test]
fn helo_name_is_validated() {
    for bad in ["", "bad name", "x\r\nMAIL FROM:<a@b>"] {
        assert!(ClientSession::new(Arc::new(ClientConfig::new(bad))).is_err());
    }
    assert!(ClientSession::new(Arc::new(ClientConfig::new("[IPv6:2001:db8::1]"))).is_ok());
}

// ------------------------------------------------------------ STARTTLS

const EHLO_TLS: &str = "250-mx.remote.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

fn at_starttls(policy: StartTlsPolicy) -> H {
    let mut c = cfg();
    c.starttls = policy;
    let mut h = H::new(c);
    h.server(GREETING).server(EHLO_TLS);
    assert_eq!(
        h.take(),
        [sent("EHLO client.test\r\n"), sent("STARTTLS\r\n")]
    );
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Command));
    h
}

#[test]
fn starttls_offered() {
    for policy in [StartTlsPolicy::Opportunistic, StartTlsPolicy::Required] {
        let mut h = at_starttls(policy);
        h.server("220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(h.take(), [Ev::StartTls]);
        assert_eq!(h.s.timeout_class(), Some(TimeoutClass::TlsHandshake));
        assert_eq!(h.s.data_sent(), Err(ClientError::WrongState));
        h.s.tls_established().unwrap();
        h.pump();
        assert_eq!(h.take(), [sent("EHLO client.test\r\n")]);
        assert!(h.s.is_tls());
        assert_eq!(h.s.extensions(), &Default::default(), "forgotten");
        // STARTTLS advertised again inside TLS: never used twice.
        h.server("250-mx.remote.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
        assert_eq!(h.take(), [Ev::Ready]);
        assert!(h.s.extensions().pipelining);
    }
}

#[test]
fn starttls_absent() {
    let mut h = connected(cfg(), EHLO_LOCKSTEP);
    assert!(!h.s.is_tls());
    h.start(txn(1));

    let mut c = cfg();
    c.starttls = StartTlsPolicy::Required;
    let mut h = H::new(c);
    h.server(GREETING).server(EHLO_LOCKSTEP);
    assert_eq!(h.log.len(), 3, "{:?}", h.log);
    assert_eq!(h.log[1], sent("QUIT\r\n"));
    let f = h.failure();
    assert_eq!(f.error, SessionError::TlsUnavailable);
    assert!(!f.is_permanent() && f.before_any_transaction);
    assert_eq!(f.reply().status, Some(EnhancedStatus::new(4, 7, 4)));

    // Disabled: offered but never used.
    let mut c = cfg();
    c.starttls = StartTlsPolicy::Disabled;
    let mut h = H::new(c);
    h.server(GREETING).server(EHLO_TLS);
    assert_eq!(h.take(), [sent("EHLO client.test\r\n"), Ev::Ready]);
}

#[test]
fn starttls_broken() {
    // Refused: opportunistic goes on in plaintext, without a second EHLO.
    let mut h = at_starttls(StartTlsPolicy::Opportunistic);
    h.server("454 4.7.0 TLS not available due to temporary reason\r\n");
    assert_eq!(h.take(), [Ev::Ready]);
    assert!(!h.s.is_tls());
    h.start(txn(1));
    assert!(wire(&h).ends_with("MAIL FROM:<sender@origin.test>\r\n"));

    // Refused with TLS required: QUIT and a temporary failure.
    let mut h = at_starttls(StartTlsPolicy::Required);
    h.server("454 4.7.0 TLS not available\r\n");
    let events = h.take();
    assert_eq!(events[0], sent("QUIT\r\n"));
    let Ev::Closed(Outcome::Failed(f)) = &events[1] else {
        panic!("{events:?}")
    };
    assert!(matches!(f.error, SessionError::StartTlsRefused(_)) && !f.is_permanent());

    // Handshake failure: opportunistic may retry without TLS.
    for (policy, retry) in [
        (StartTlsPolicy::Opportunistic, true),
        (StartTlsPolicy::Required, false),
    ] {
        let mut h = at_starttls(policy);
        h.server("220 go ahead\r\n");
        h.s.tls_failed().unwrap();
        h.pump();
        let f = h.failure();
        assert_eq!(
            f.error,
            SessionError::TlsHandshake {
                retry_without_tls: retry
            }
        );
        assert_eq!(f.retry_without_tls(), retry);
        assert!(f.before_any_transaction);
    }
    // The handshake call outside a handshake is refused.
    let mut h = connected(cfg(), EHLO_FULL);
    assert_eq!(h.s.tls_established(), Err(ClientError::WrongState));
    assert_eq!(h.s.tls_failed(), Err(ClientError::WrongState));
}

#[test]
fn bytes_after_the_starttls_220_are_discarded() {
    // CVE-2021-38371: an attacker appends a fake EHLO reply to the 220; if
    // it were read after the handshake it would answer our EHLO.
    let mut h = at_starttls(StartTlsPolicy::Opportunistic);
    h.server("220 2.0.0 go\r\n250-evil.test\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n");
    assert_eq!(h.take(), [Ev::StartTls]);
    // More plaintext before the handshake finishes: discarded too.
    h.server("250 injected\r\n250-partial");
    assert!(h.take().is_empty());
    h.s.tls_established().unwrap();
    h.pump();
    assert_eq!(h.take(), [sent("EHLO client.test\r\n")]);
    // The real reply, over TLS.
    h.server("250-mx.remote.test\r\n250 SIZE 100\r\n");
    assert_eq!(h.take(), [Ev::Ready]);
    let ext = h.s.extensions();
    assert_eq!(ext.size, Some(100));
    assert!(!ext.pipelining && ext.auth.is_empty());

    // A partial reply read before the handshake never joins the reply
    // after it (it would add PIPELINING here).
    let mut h = at_starttls(StartTlsPolicy::Opportunistic);
    h.server("220 go\r\n");
    h.server("250-evil.test\r\n250-PIPELINING\r\n");
    h.s.tls_established().unwrap();
    h.pump();
    h.server("250-mx.remote.test\r\n250 SIZE 100\r\n");
    assert_eq!(h.log.last(), Some(&Ev::Ready));
    assert_eq!(h.s.extensions().size, Some(100));
    assert!(!h.s.extensions().pipelining);

    // A partial line in the same read as the 220 is dropped as well: the
    // next reply after the handshake parses cleanly.
    let mut h = at_starttls(StartTlsPolicy::Opportunistic);
    h.server("220 go\r\n250-inj");
    h.s.tls_established().unwrap();
    h.pump();
    h.server("250 mx.remote.test\r\n");
    assert_eq!(
        h.take(),
        [Ev::StartTls, sent("EHLO client.test\r\n"), Ev::Ready]
    );
}

// ------------------------------------------------------------ AUTH

fn auth_cfg(mechanism: AuthMechanism) -> ClientConfig {
    let mut c = cfg();
    c.starttls = StartTlsPolicy::Required;
    c.auth = Some(ClientAuth::new(mechanism, "smart-user", "s3cret pass"));
    c
}

/// Through STARTTLS to the second EHLO's reply.
fn tls_session(config: ClientConfig, ehlo_after_tls: &str) -> H {
    let mut h = H::new(config);
    h.server(GREETING).server(EHLO_TLS).server("220 go\r\n");
    h.s.tls_established().unwrap();
    h.pump();
    h.take();
    h.server(ehlo_after_tls);
    h
}

#[test]
fn auth_plain_and_login_after_tls() {
    let mut h = tls_session(
        auth_cfg(AuthMechanism::Plain),
        "250-mx\r\n250 AUTH LOGIN PLAIN\r\n",
    );
    // base64("\0smart-user\0s3cret pass")
    assert_eq!(
        h.take(),
        [sent("AUTH PLAIN AHNtYXJ0LXVzZXIAczNjcmV0IHBhc3M=\r\n")]
    );
    h.server("235 2.7.0 Authentication successful\r\n");
    assert_eq!(h.take(), [Ev::Ready]);
    assert!(h.s.is_authenticated());

    let mut h = tls_session(
        auth_cfg(AuthMechanism::Login),
        "250-mx\r\n250 AUTH=LOGIN\r\n",
    );
    assert_eq!(h.take(), [sent("AUTH LOGIN\r\n")]);
    h.server("334 VXNlcm5hbWU6\r\n");
    assert_eq!(h.take(), [sent("c21hcnQtdXNlcg==\r\n")]);
    h.server("334 UGFzc3dvcmQ6\r\n");
    assert_eq!(h.take(), [sent("czNjcmV0IHBhc3M=\r\n")]);
    h.server("235 2.7.0 OK\r\n");
    assert_eq!(h.take(), [Ev::Ready]);
}

#[test]
fn credential_lines_are_redacted_in_debug() {
    let mut c = auth_cfg(AuthMechanism::Plain);
    c.starttls = StartTlsPolicy::Disabled;
    c.allow_insecure_auth = true;
    let mut s = ClientSession::new(Arc::new(c)).unwrap();
    s.handle_input(GREETING.as_bytes());
    s.handle_input(b"250-mx\r\n250 AUTH PLAIN\r\n");
    let mut debug = format!("{s:?}");
    let mut auth_line = None;
    while let Some(e) = s.poll_event() {
        debug.push_str(&format!("{e:?}"));
        if let Event::Send(o) = &e
            && o.as_bytes().starts_with(b"AUTH")
        {
            assert!(o.is_sensitive());
            auth_line = Some(o.as_bytes().to_vec());
        }
    }
    assert!(auth_line.is_some(), "sent in plaintext when allowed");
    for secret in ["s3cret", "AHNtYXJ0", "czNjcmV0"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

#[test]
fn auth_refusals_are_temporary_and_never_leak_credentials() {
    // Wrong password.
    let mut h = tls_session(
        auth_cfg(AuthMechanism::Plain),
        "250-mx\r\n250 AUTH PLAIN\r\n",
    );
    h.take();
    h.server("535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(h.log[0], sent("QUIT\r\n"));
    let f = h.failure();
    assert!(matches!(f.error, SessionError::AuthFailed(_)));
    assert!(!f.is_permanent(), "our configuration, not the message");

    // Mechanism not offered.
    let h = tls_session(
        auth_cfg(AuthMechanism::Plain),
        "250-mx\r\n250 AUTH LOGIN\r\n",
    );
    assert_eq!(h.failure().error, SessionError::AuthUnavailable("PLAIN"));
    assert!(!wire(&h).contains("AUTH"));

    // No TLS (not offered, opportunistic policy): credentials stay home.
    let mut c = auth_cfg(AuthMechanism::Plain);
    c.starttls = StartTlsPolicy::Opportunistic;
    let mut h = H::new(c);
    h.server(GREETING)
        .server("250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
    assert_eq!(h.failure().error, SessionError::AuthNeedsTls);
    assert_eq!(
        wire(&h),
        "EHLO client.test\r\nQUIT\r\n",
        "nothing but EHLO and QUIT"
    );

    // LOGIN refused after the user name.
    let mut h = tls_session(
        auth_cfg(AuthMechanism::Login),
        "250-mx\r\n250 AUTH LOGIN\r\n",
    );
    h.server("334 VXNlcm5hbWU6\r\n")
        .server("454 4.7.0 Temporary authentication failure\r\n");
    assert!(matches!(h.failure().error, SessionError::AuthFailed(_)));
    assert!(!wire(&h).contains("czNjcmV0"), "password never sent");
}

// ------------------------------------------------------------ pre-checks

#[test]
fn size_precheck() {
    let mut h = connected(cfg(), EHLO_FULL);
    let mut t = txn(2);
    t.params.size = Some(10_001);
    h.start(t);
    let events = h.take();
    let [Ev::Done(done), Ev::Ready] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(kinds(done), [('F', 552), ('F', 552)]);
    assert_eq!(
        done.rcpts[0].result.reply().status,
        Some(EnhancedStatus::new(5, 3, 4))
    );
    assert!(done.rcpts.iter().all(|o| !o.from_server));
    assert!(h.wire.len() < 100, "MAIL never sent: {}", wire(&h));

    // At the limit, or with SIZE 0 (no fixed limit): sent with SIZE=.
    let mut t = txn(1);
    t.params.size = Some(10_000);
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(t);
    assert!(wire(&h).contains("MAIL FROM:<sender@origin.test> SIZE=10000\r\n"));
    let mut t = txn(1);
    t.params.size = Some(1 << 40);
    let mut h = connected(cfg(), "250-mx\r\n250 SIZE 0\r\n");
    h.start(t);
    assert!(wire(&h).contains(&format!("SIZE={}", 1u64 << 40)));
}

#[test]
fn smtputf8_precheck() {
    let utf8_rcpt = || {
        let mut t = txn(1);
        t.rcpts.push(rcpt("j\u{f6}rg@b\u{fc}cher.test"));
        t
    };
    let flagged = || {
        let mut t = txn(2);
        t.params.smtputf8 = true;
        t
    };
    for t in [utf8_rcpt(), flagged()] {
        // Without SMTPUTF8 at the server: permanent 5.6.7, nothing sent.
        let mut h = connected(cfg(), EHLO_LOCKSTEP);
        let before = h.wire.len();
        h.start(t.clone());
        let done = h.done();
        assert_eq!(kinds(&done), [('F', 553), ('F', 553)]);
        assert_eq!(
            done.rcpts[1].result.reply().status,
            Some(EnhancedStatus::new(5, 6, 7))
        );
        assert_eq!(h.wire.len(), before);
        // With it: MAIL carries SMTPUTF8.
        let mut h = connected(cfg(), EHLO_FULL);
        h.start(t);
        assert!(
            wire(&h).contains("MAIL FROM:<sender@origin.test> SIZE=100 SMTPUTF8\r\n"),
            "{}",
            wire(&h)
        );
    }
}

#[test]
fn body_types() {
    let with_body = |body| {
        let mut t = txn(1);
        t.params.body = body;
        t
    };
    // 8BITMIME advertised: BODY=8BITMIME.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(with_body(BodyType::EightBitMime));
    assert!(wire(&h).contains("SIZE=100 BODY=8BITMIME\r\n"));
    // Not advertised: sent as is, without BODY (documented decision).
    let mut h = connected(cfg(), "250-mx\r\n250 PIPELINING\r\n");
    h.start(with_body(BodyType::EightBitMime));
    assert!(wire(&h).contains("MAIL FROM:<sender@origin.test>\r\nRCPT"));
    // BINARYMIME needs BDAT, which we do not send.
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(with_body(BodyType::BinaryMime));
    assert_eq!(kinds(&h.done()), [('F', 554)]);
    assert!(!wire(&h).contains("MAIL"));
}

#[test]
fn dsn_parameters_only_when_advertised() {
    let dsn_txn = || {
        let mut t = txn(2);
        t.params.ret = Some(Ret::Headers);
        t.params.envid = tern_types::dsn::EnvId::parse("id+1 =x").ok();
        t.rcpts[0].notify = Some(Notify::On {
            success: true,
            failure: true,
            delay: false,
        });
        t.rcpts[0].orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            address: "orig+tag@origin.test".into(),
        });
        t.rcpts[1].notify = Some(Notify::Never);
        t
    };
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(dsn_txn());
    assert_eq!(
        h.take(),
        [sent(
            "MAIL FROM:<sender@origin.test> SIZE=100 RET=HDRS ENVID=id+2B1+20+3Dx\r\n\
             RCPT TO:<r0@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Btag@origin.test\r\n\
             RCPT TO:<r1@remote.test> NOTIFY=NEVER\r\n\
             DATA\r\n"
        )]
    );
    h.server("250 OK\r\n250 OK\r\n250 OK\r\n354 go\r\n")
        .data_sent()
        .server("250 OK\r\n");
    assert!(h.done().dsn_passed_on);

    let mut h = connected(cfg(), "250-mx\r\n250-PIPELINING\r\n250 SIZE 10000\r\n");
    h.start(dsn_txn());
    assert_eq!(
        h.take(),
        [sent(
            "MAIL FROM:<sender@origin.test> SIZE=100\r\nRCPT TO:<r0@remote.test>\r\n\
             RCPT TO:<r1@remote.test>\r\nDATA\r\n"
        )]
    );
    h.server("250 OK\r\n250 OK\r\n250 OK\r\n354 go\r\n")
        .data_sent()
        .server("250 OK\r\n");
    assert!(!h.done().dsn_passed_on, "the queue owes 'relayed' notices");
}

#[test]
fn null_sender_and_postmaster() {
    let mut h = connected(cfg(), EHLO_FULL);
    h.start(Transaction {
        from: ReversePath::Null,
        params: Default::default(),
        rcpts: vec![Recipient::new(ForwardPath::Postmaster)],
    });
    assert_eq!(
        h.take(),
        [sent("MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n")]
    );
}

#[test]
fn misplaced_calls_are_refused() {
    let mut h = H::new(cfg());
    assert_eq!(h.s.start_transaction(txn(1)), Err(ClientError::NotReady));
    assert_eq!(h.s.quit(), Err(ClientError::NotReady));
    assert_eq!(h.s.data_sent(), Err(ClientError::WrongState));
    let mut h = connected(cfg(), EHLO_FULL);
    assert_eq!(
        h.s.start_transaction(txn(0)),
        Err(ClientError::NoRecipients)
    );
    h.start(txn(1));
    assert_eq!(h.s.start_transaction(txn(1)), Err(ClientError::NotReady));
    assert_eq!(h.s.data_sent(), Err(ClientError::WrongState));
    h.s.connection_lost();
    assert_eq!(h.s.start_transaction(txn(1)), Err(ClientError::Closed));
    // Input after the close is ignored.
    h.pump();
    h.take();
    h.server("250 OK\r\n");
    assert!(h.take().is_empty());
}

// ------------------------------------------------------------ hostile servers

/// Feeds `bytes` in 1 kB reads until the session closes; returns how many
/// bytes were fed.
fn feed_until_closed(h: &mut H, bytes: &[u8]) -> usize {
    let mut fed = 0;
    for chunk in bytes.chunks(1024) {
        if h.s.is_closed() {
            break;
        }
        h.server(chunk);
        fed += chunk.len();
    }
    fed
}

#[test]
fn hostile_replies_are_bounded_and_temporary() {
    let no_crlf = vec![b'2'; 100_000];
    let mut many = String::new();
    for _ in 0..10_000 {
        many.push_str("250-continuation\r\n");
    }
    many.push_str("250 end\r\n");
    let garbage = b"\xff\xfe\x00\x01 binary junk\r\n".to_vec();
    let cases: [(&[u8], ReplyError); 3] = [
        (&no_crlf, ReplyError::LineTooLong { limit: 2048 }),
        (many.as_bytes(), ReplyError::TooManyLines { limit: 100 }),
        (&garbage, ReplyError::Malformed),
    ];
    for (bytes, want) in cases {
        // As the greeting.
        let mut h = H::new(cfg());
        let fed = feed_until_closed(&mut h, bytes);
        assert!(fed <= 3 * 1024, "stopped early: {fed}");
        let f = h.failure();
        assert_eq!(
            f.error,
            SessionError::Protocol(ProtocolError::Reply(want.clone()))
        );
        assert!(!f.is_permanent() && f.before_any_transaction);

        // As the reply to RCPT, mid-transaction: deferred, not bounced.
        let mut h = connected(cfg(), EHLO_LOCKSTEP);
        h.start(txn(2)).server("250 OK\r\n250 OK\r\n");
        feed_until_closed(&mut h, bytes);
        assert_eq!(kinds(&h.done()), [('T', 421), ('T', 421)]);
        assert_eq!(
            h.failure().error,
            SessionError::Protocol(ProtocolError::Reply(want))
        );
    }
}

#[test]
fn non_ascii_reply_text_is_tolerated() {
    // Localised text (UTF-8 or Latin-1) is shown, never trusted.
    let mut h = H::new(cfg());
    h.server("220 mx.remote.test Bienvenue \u{e0} vous\r\n");
    h.server(b"250-mx.remote.test gr\xfc\xdf dich\r\n250 PIPELINING\r\n");
    assert_eq!(h.take().last(), Some(&Ev::Ready));
    assert_eq!(
        h.s.greeting().unwrap().lines,
        ["mx.remote.test Bienvenue \u{e0} vous"]
    );
    assert!(h.s.extensions().pipelining);
}

// ------------------------------------------------------------ splitting

/// One step of a scripted session.
#[derive(Clone)]
enum Step {
    Server(&'static str),
    Start(Transaction),
    TlsOk,
    DataSent,
    Quit,
}

fn script() -> Vec<Step> {
    let mut t2 = txn(1);
    t2.params.size = Some(5);
    vec![
        Step::Server("220-mx.remote.test ESMTP\r\n220 second line\r\n"),
        Step::Server("250-mx.remote.test\r\n250-STARTTLS\r\n250-SIZE 10000\r\n250 PIPELINING\r\n"),
        Step::Server("220 2.0.0 go\r\n"),
        Step::TlsOk,
        Step::Server("250-mx.remote.test\r\n250-PIPELINING\r\n250-DSN\r\n250 SIZE 10000\r\n"),
        Step::Start(txn(3)),
        Step::Server(
            "250 2.1.0 OK\r\n250 2.1.5 OK\r\n550-5.1.1 No such\r\n550 5.1.1 user\r\n\
             451 4.2.1 later\r\n354 go\r\n",
        ),
        Step::DataSent,
        Step::Server("250-2.0.0 queued\r\n250 2.0.0 as ABC\r\n"),
        Step::Start(t2),
        Step::Server("250 OK\r\n452-4.5.3 too\r\n452 4.5.3 many\r\n554 5.5.1 no rcpts\r\n"),
        Step::Server("250 2.0.0 reset\r\n"),
        Step::Quit,
        Step::Server("221 2.0.0 bye\r\n"),
    ]
}

/// Runs the script, splitting server step `which` (or every step, with
/// `None`) by `split`.
fn run(split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>, which: Option<usize>) -> (Vec<Ev>, Vec<u8>) {
    let mut h = H::new(cfg());
    let mut log = Vec::new();
    for (i, step) in script().into_iter().enumerate() {
        match step {
            Step::Server(bytes) => {
                if which.is_none_or(|w| w == i) {
                    for piece in split(bytes.as_bytes()) {
                        h.server(piece);
                    }
                } else {
                    h.server(bytes);
                }
            }
            Step::Start(t) => {
                h.start(t);
            }
            Step::TlsOk => {
                h.s.tls_established().unwrap();
                h.pump();
            }
            Step::DataSent => {
                h.data_sent();
            }
            Step::Quit => {
                h.s.quit().unwrap();
                h.pump();
            }
        }
        log.extend(h.take());
    }
    (log, h.wire)
}

#[test]
fn replies_split_at_every_byte() {
    let whole = run(&|b| vec![b.to_vec()], None);
    // Sanity: the script does what it says.
    let dones: Vec<&TransactionResult> = whole
        .0
        .iter()
        .filter_map(|e| match e {
            Ev::Done(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(dones.len(), 2);
    assert_eq!(kinds(dones[0]), [('D', 250), ('F', 550), ('T', 451)]);
    assert_eq!(dones[0].rcpts[1].result.reply().lines, ["No such", "user"]);
    assert_eq!(kinds(dones[1]), [('T', 452)]);
    assert_eq!(whole.0.last(), Some(&Ev::Closed(Outcome::Quit)));

    let bytewise = run(&|b| b.iter().map(|&x| vec![x]).collect(), None);
    assert_eq!(bytewise, whole);
    let steps = script();
    for (i, step) in steps.iter().enumerate() {
        let Step::Server(bytes) = step else { continue };
        for k in 0..=bytes.len() {
            let two = run(&|b| vec![b[..k].to_vec(), b[k..].to_vec()], Some(i));
            assert_eq!(two, whole, "step {i} split at {k}");
        }
    }
}

#[test]
fn reply_parser_is_split_independent() {
    let text = b"250-mx.example\r\n250-PIPELINING\n250 SIZE 1\r\n550 5.1.1 no\r\n354\r\n";
    let parse = |pieces: Vec<&[u8]>| {
        let mut p = ReplyParser::new(ReplyLimits::default());
        let mut out = Vec::new();
        for mut piece in pieces {
            while let Some(r) = p.parse(&mut piece).unwrap() {
                out.push(r);
            }
            assert!(piece.is_empty());
        }
        assert!(p.is_idle());
        out
    };
    let whole = parse(vec![text]);
    assert_eq!(
        whole.iter().map(|r| r.code).collect::<Vec<_>>(),
        [250, 550, 354]
    );
    for k in 0..=text.len() {
        assert_eq!(parse(vec![&text[..k], &text[k..]]), whole, "{k}");
    }
    assert_eq!(parse(text.chunks(1).collect()), whole);
}

// ------------------------------------------------------------ DataEncoder

#[test]
fn data_encoder_cases() {
    let cases: [(&[u8], &[u8]); 14] = [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
        (b"a.b\r\n", b"a.b\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb", b"a\r\nb\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),
        (b"\r\r\n", b"\r\n\r\n.\r\n"),
        (b"\n\r", b"\r\n\r\n.\r\n"),
        // The smuggling sequences: every dot lands stuffed on its own line.
        (b"x\n.\nMAIL", b"x\r\n..\r\nMAIL\r\n.\r\n"),
        (b"x\r.\rMAIL", b"x\r\n..\r\nMAIL\r\n.\r\n"),
    ];
    for (input, want) in cases {
        assert_eq!(
            DataEncoder::encode_all(input).escape_ascii().to_string(),
            want.escape_ascii().to_string(),
            "{}",
            input.escape_ascii()
        );
    }
    // The real thing in a body is still just content.
    let out = DataEncoder::encode_all(b"x\r\n.\r\nMAIL FROM:<a@b>\r\n");
    assert_eq!(out, b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n");
}

#[test]
fn data_encoder_every_split_point() {
    let body: &[u8] = b".start\r\nline\n.\nx\r.\r\r\n.\r\n\r\r\n..\n\ra.b\r";
    let whole = DataEncoder::encode_all(body);
    for k in 0..=body.len() {
        for j in k..=body.len() {
            let mut enc = DataEncoder::new();
            let mut out = Vec::new();
            enc.encode(&body[..k], &mut out);
            enc.encode(&body[k..j], &mut out);
            enc.encode(&body[j..], &mut out);
            enc.finish(&mut out);
            assert_eq!(out, whole, "split at {k}, {j}");
        }
    }
}

/// The reference: bare CR and bare LF become CRLF; a non-empty message
/// ends with CRLF.
fn normalise(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match (input[i], input.get(i + 1)) {
            (b'\r', Some(b'\n')) => {
                out.extend_from_slice(b"\r\n");
                i += 2;
            }
            (b'\r' | b'\n', _) => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn data_encoder_round_trips_and_ends_once(
        body in prop::collection::vec(
            prop::sample::select(vec![b'\r', b'\n', b'.', b'a', b' ', 0u8, 0xff]),
            0..200,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
        points.sort_unstable();
        let mut enc = DataEncoder::new();
        let mut encoded = Vec::new();
        let mut last = 0;
        for p in points {
            enc.encode(&body[last..p], &mut encoded);
            last = p;
        }
        enc.encode(&body[last..], &mut encoded);
        enc.finish(&mut encoded);
        prop_assert_eq!(&encoded, &DataEncoder::encode_all(&body));

        // The only CRLF.CRLF (counting the DATA line's CRLF) is the last.
        let mut framed = b"\r\n".to_vec();
        framed.extend_from_slice(&encoded);
        let first = framed.windows(5).position(|w| w == b"\r\n.\r\n");
        prop_assert_eq!(first, Some(framed.len() - 5));

        // A strict receiver reads back exactly the normalised message.
        let mut dec = DataDecoder::new(BareLineEndings::Reject);
        let mut out = Vec::new();
        let r = dec.decode(&encoded, &mut out, encoded.len() + 16);
        prop_assert!(r.done);
        prop_assert_eq!(r.consumed, encoded.len());
        prop_assert!(!dec.saw_bare_line_ending());
        prop_assert_eq!(out, normalise(&body));
    }
}
