//! Byte-driven tests of the sans-IO client in LMTP mode (RFC 2033):
//! scripted server replies in, bytes and per-recipient results out.

use std::mem;
use std::sync::Arc;

use tern_smtp::client::{
    ClientConfig, ClientSession, Event, MessageParams, Outcome, Protocol, ProtocolError,
    RcptResult, Recipient, SessionError, SessionFailure, StartTlsPolicy, TimeoutClass, Transaction,
    TransactionResult,
};
use tern_types::{ForwardPath, Mailbox, ReversePath};

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
}

impl H {
    fn new(config: ClientConfig) -> H {
        H {
            s: ClientSession::new(Arc::new(config)).unwrap(),
            log: Vec::new(),
        }
    }

    fn server(&mut self, bytes: &str) -> &mut H {
        self.s.handle_input(bytes.as_bytes());
        self.pump();
        self
    }

    fn pump(&mut self) {
        while let Some(e) = self.s.poll_event() {
            self.log.push(match e {
                Event::Send(o) => Ev::Sent(String::from_utf8(o.as_bytes().to_vec()).unwrap()),
                Event::StartTls => Ev::StartTls,
                Event::NeedData => Ev::NeedData,
                Event::TransactionDone(r) => Ev::Done(r),
                Event::Ready => Ev::Ready,
                Event::Closed(o) => Ev::Closed(o),
                other => panic!("unknown event {other:?}"),
            });
        }
    }

    fn take(&mut self) -> Vec<Ev> {
        mem::take(&mut self.log)
    }

    fn done(&self) -> TransactionResult {
        let all: Vec<_> = self
            .log
            .iter()
            .filter_map(|e| match e {
                Ev::Done(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(all.len(), 1, "one TransactionDone: {:?}", self.log);
        all[0].clone()
    }

    fn failure(&self) -> SessionFailure {
        match self.log.last() {
            Some(Ev::Closed(Outcome::Failed(f))) => f.clone(),
            other => panic!("not failed: {other:?} in {:?}", self.log),
        }
    }
}

fn sent(s: &str) -> Ev {
    Ev::Sent(s.to_owned())
}

fn lmtp() -> ClientConfig {
    let mut c = ClientConfig::new("mx.tern.test");
    c.protocol = Protocol::Lmtp;
    c.starttls = StartTlsPolicy::Disabled;
    c
}

const GREETING: &str = "220 imap.tern.test Dovecot ready.\r\n";
/// What Dovecot's LMTP server answers to LHLO (no PIPELINING keyword:
/// RFC 2033 makes it implicit).
const LHLO_REPLY: &str =
    "250-imap.tern.test\r\n250-8BITMIME\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n";

fn ready(config: ClientConfig) -> H {
    let mut h = H::new(config);
    h.server(GREETING);
    assert_eq!(h.take(), [sent("LHLO mx.tern.test\r\n")]);
    h.server(LHLO_REPLY);
    assert_eq!(h.take(), [Ev::Ready]);
    assert!(h.s.is_extended());
    h
}

fn rcpt(s: &str) -> Recipient {
    Recipient::new(ForwardPath::Mailbox(s.parse::<Mailbox>().unwrap()))
}

fn txn(n: usize) -> Transaction {
    Transaction {
        from: ReversePath::Mailbox("alice@example.test".parse().unwrap()),
        params: MessageParams::default(),
        rcpts: (0..n).map(|i| rcpt(&format!("u{i}@lmtp.test"))).collect(),
    }
}

/// The pipelined MAIL, RCPTs and DATA for `txn(n)`.
fn pipelined(n: usize) -> String {
    let mut s = String::from("MAIL FROM:<alice@example.test>\r\n");
    for i in 0..n {
        s.push_str(&format!("RCPT TO:<u{i}@lmtp.test>\r\n"));
    }
    s.push_str("DATA\r\n");
    s
}

/// ('D'elivered | 'T'emporary | 'F'ailed, code, from_server) per recipient.
fn kinds(r: &TransactionResult) -> Vec<(char, u16, bool)> {
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
            (k, o.result.reply().code, o.from_server)
        })
        .collect()
}

fn rcpt_replies(codes: &[u16]) -> String {
    codes
        .iter()
        .map(|c| format!("{c} {}.0.0 reply\r\n", c / 100))
        .collect()
}

/// Runs `txn(n)` up to the end of data with every RCPT accepted.
fn through_data(n: usize) -> H {
    let mut h = ready(lmtp());
    h.s.start_transaction(txn(n)).unwrap();
    h.pump();
    assert_eq!(h.take(), [sent(&pipelined(n))]);
    let mut replies = String::from("250 2.1.0 OK\r\n");
    replies.push_str(&"250 2.1.5 OK\r\n".repeat(n));
    replies.push_str("354 OK\r\n");
    h.server(&replies);
    assert_eq!(h.take(), [Ev::NeedData]);
    h.s.data_sent().unwrap();
    h.pump();
    assert!(h.take().is_empty());
    h
}

#[test]
fn lhlo_then_pipelined_without_the_keyword() {
    let mut h = ready(lmtp());
    assert!(!h.s.extensions().pipelining, "not advertised");
    h.s.start_transaction(txn(2)).unwrap();
    h.pump();
    assert_eq!(h.take(), [sent(&pipelined(2))]);
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::Mail));
}

#[test]
fn pipelining_off_in_the_config_is_honoured() {
    let mut c = lmtp();
    c.pipelining = false;
    let mut h = ready(c);
    h.s.start_transaction(txn(1)).unwrap();
    h.pump();
    assert_eq!(h.take(), [sent("MAIL FROM:<alice@example.test>\r\n")]);
    h.server("250 OK\r\n");
    assert_eq!(h.take(), [sent("RCPT TO:<u0@lmtp.test>\r\n")]);
    h.server("250 OK\r\n");
    assert_eq!(h.take(), [sent("DATA\r\n")]);
    h.server("354 go\r\n");
    assert_eq!(h.take(), [Ev::NeedData]);
    h.s.data_sent().unwrap();
    h.server("250 2.0.0 <u0@lmtp.test> saved\r\n");
    assert_eq!(kinds(&h.done()), [('D', 250, true)]);
}

#[test]
fn no_helo_fallback() {
    for (reply, permanent) in [
        ("550 5.5.1 LHLO refused\r\n", true),
        ("421 busy\r\n", false),
    ] {
        let mut h = H::new(lmtp());
        h.server(GREETING);
        h.take();
        h.server(reply);
        let log = h.take();
        assert!(
            !log.iter()
                .any(|e| matches!(e, Ev::Sent(s) if s.starts_with("HELO"))),
            "{log:?}"
        );
        let Some(Ev::Closed(Outcome::Failed(f))) = log.last() else {
            panic!("{log:?}")
        };
        assert_eq!(f.is_permanent(), permanent, "{reply}");
        assert!(f.before_any_transaction);
        if permanent {
            assert!(matches!(f.error, SessionError::HelloRejected(_)));
        }
    }
    // A 4xx to LHLO also ends the session, without HELO.
    let mut h = H::new(lmtp());
    h.server(GREETING).server("451 4.3.0 later\r\n");
    assert!(matches!(h.failure().error, SessionError::HelloRejected(_)));
}

#[test]
fn one_reply_per_recipient_after_data() {
    // u1 is refused at RCPT; the other three are accepted, so three
    // replies follow the end of data, in RCPT order.
    let mut h = ready(lmtp());
    h.s.start_transaction(txn(4)).unwrap();
    h.pump();
    h.take();
    h.server("250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 <u1@lmtp.test> User doesn't exist\r\n");
    h.server("250 2.1.5 OK\r\n250 2.1.5 OK\r\n354 OK\r\n");
    assert_eq!(h.take(), [Ev::NeedData]);
    h.s.data_sent().unwrap();
    h.pump();
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::DataTermination));
    h.server("250 2.0.0 <u0@lmtp.test> Saved\r\n");
    assert!(h.take().is_empty(), "two replies still due");
    assert_eq!(h.s.timeout_class(), Some(TimeoutClass::DataTermination));
    h.server(
        "452 4.2.2 <u2@lmtp.test> Quota exceeded\r\n552 5.2.2 <u3@lmtp.test> Mailbox full\r\n",
    );
    let r = h.done();
    assert_eq!(
        kinds(&r),
        [
            ('D', 250, true),
            ('F', 550, true),
            ('T', 452, true),
            ('F', 552, true)
        ]
    );
    assert_eq!(
        r.rcpts[2].result.reply().lines,
        ["<u2@lmtp.test> Quota exceeded"]
    );
    assert_eq!(r.message_reply.as_ref().map(|m| m.code), Some(552));
    assert!(r.dsn_passed_on);
    assert_eq!(h.log.last(), Some(&Ev::Ready));
    // The connection is reused for the next message.
    h.take();
    h.s.start_transaction(txn(1)).unwrap();
    h.pump();
    assert_eq!(h.take(), [sent(&pipelined(1))]);
}

#[test]
fn every_mix_of_replies_after_data() {
    let codes = [250u16, 452, 550];
    for a in codes {
        for b in codes {
            for c in codes {
                let mut h = through_data(3);
                h.server(&rcpt_replies(&[a, b, c]));
                let want: Vec<(char, u16, bool)> = [a, b, c]
                    .iter()
                    .map(|&code| {
                        let k = match code / 100 {
                            2 => 'D',
                            4 => 'T',
                            _ => 'F',
                        };
                        (k, code, true)
                    })
                    .collect();
                assert_eq!(kinds(&h.done()), want, "{a} {b} {c}");
                assert_eq!(h.log.last(), Some(&Ev::Ready), "{a} {b} {c}");
            }
        }
    }
}

#[test]
fn replies_split_anywhere() {
    let all = rcpt_replies(&[250, 550, 250]);
    for cut in 1..all.len() {
        let mut h = through_data(3);
        h.server(&all[..cut]);
        h.server(&all[cut..]);
        assert_eq!(
            kinds(&h.done()),
            [('D', 250, true), ('F', 550, true), ('D', 250, true)],
            "cut at {cut}"
        );
    }
}

#[test]
fn service_closing_midway_defers_the_rest() {
    let mut h = through_data(3);
    h.server("250 2.0.0 saved\r\n421 4.3.2 Shutting down\r\n");
    let r = h.done();
    assert_eq!(
        kinds(&r),
        [('D', 250, true), ('T', 421, true), ('T', 421, true)]
    );
    let f = h.failure();
    assert!(matches!(f.error, SessionError::ServiceClosing(_)));
    assert!(!f.before_any_transaction);
    assert!(h.s.is_closed());
}

#[test]
fn fewer_replies_then_eof_defers_the_rest() {
    let mut h = through_data(3);
    h.server("550 5.1.1 no such user\r\n");
    assert!(h.take().is_empty());
    h.s.connection_lost();
    h.pump();
    let r = h.done();
    assert_eq!(
        kinds(&r),
        [('F', 550, true), ('T', 421, false), ('T', 421, false)]
    );
    assert_eq!(
        r.rcpts[1].result.reply().status.map(|s| s.to_string()),
        Some("4.4.2".to_owned())
    );
    assert!(matches!(h.failure().error, SessionError::ConnectionLost));
}

#[test]
fn timeout_between_replies_defers_the_rest() {
    let mut h = through_data(2);
    h.server("250 2.0.0 saved\r\n");
    h.s.on_timeout();
    h.pump();
    assert_eq!(kinds(&h.done()), [('D', 250, true), ('T', 421, false)]);
    assert!(matches!(
        h.failure().error,
        SessionError::Timeout(TimeoutClass::DataTermination)
    ));
}

#[test]
fn extra_reply_after_the_last_recipient_is_unsolicited() {
    let mut h = through_data(1);
    h.server("250 2.0.0 saved\r\n250 2.0.0 once more\r\n");
    assert_eq!(kinds(&h.done()), [('D', 250, true)]);
    assert!(matches!(
        h.failure().error,
        SessionError::Protocol(ProtocolError::Unsolicited(_))
    ));
}

#[test]
fn data_refused_settles_accepted_recipients() {
    let mut h = ready(lmtp());
    h.s.start_transaction(txn(2)).unwrap();
    h.pump();
    h.take();
    h.server("250 OK\r\n250 OK\r\n250 OK\r\n554 5.3.0 no DATA today\r\n");
    assert_eq!(kinds(&h.done()), [('F', 554, true), ('F', 554, true)]);
    assert!(h.log.contains(&sent("RSET\r\n")));
}

#[test]
fn data_accepted_without_recipients_is_a_protocol_error() {
    let mut h = ready(lmtp());
    h.s.start_transaction(txn(2)).unwrap();
    h.pump();
    h.take();
    h.server("250 OK\r\n550 5.1.1 no\r\n450 4.2.1 later\r\n354 go ahead anyway\r\n");
    assert_eq!(kinds(&h.done()), [('F', 550, true), ('T', 450, true)]);
    assert!(
        !h.log
            .iter()
            .any(|e| matches!(e, Ev::Sent(s) if s == ".\r\n")),
        "no empty message: {:?}",
        h.log
    );
    assert!(matches!(
        h.failure().error,
        SessionError::Protocol(ProtocolError::Unexpected { .. })
    ));
}

#[test]
fn lhlo_again_after_starttls() {
    let mut c = lmtp();
    c.starttls = StartTlsPolicy::Opportunistic;
    let mut h = H::new(c);
    h.server(GREETING);
    h.take();
    h.server("250-imap.tern.test\r\n250 STARTTLS\r\n");
    assert_eq!(h.take(), [sent("STARTTLS\r\n")]);
    h.server("220 2.0.0 go\r\n");
    assert_eq!(h.take(), [Ev::StartTls]);
    h.s.tls_established().unwrap();
    h.pump();
    assert_eq!(h.take(), [sent("LHLO mx.tern.test\r\n")]);
}

#[test]
fn smtp_is_unchanged_by_default() {
    let mut h = H::new(ClientConfig::new("mx.tern.test"));
    h.server("220 mx ESMTP\r\n");
    assert_eq!(h.take(), [sent("EHLO mx.tern.test\r\n")]);
    h.server("500 what\r\n");
    assert_eq!(h.take(), [sent("HELO mx.tern.test\r\n")]);
}

#[test]
fn smtputf8_header_alone_does_not_fail_over_lmtp() {
    // Dovecot does not offer SMTPUTF8: a message received with it but with
    // ASCII addresses goes without the parameter.
    let mut h = ready(lmtp());
    let mut t = txn(1);
    t.params.smtputf8 = true;
    h.s.start_transaction(t).unwrap();
    h.pump();
    assert_eq!(h.take(), [sent(&pipelined(1))]);

    // Offered: the parameter goes along.
    let mut h = H::new(lmtp());
    h.server(GREETING)
        .server("250-imap.tern.test\r\n250 SMTPUTF8\r\n");
    h.take();
    let mut t = txn(1);
    t.params.smtputf8 = true;
    h.s.start_transaction(t).unwrap();
    h.pump();
    let log = h.take();
    assert!(
        matches!(&log[..], [Ev::Sent(s)] if s.starts_with("MAIL FROM:<alice@example.test> SMTPUTF8\r\n")),
        "{log:?}"
    );

    // A non-ASCII address still needs it: 553 5.6.7, nothing sent.
    let mut h = ready(lmtp());
    let mut t = txn(1);
    t.from = ReversePath::Mailbox("j\u{f6}rg@example.test".parse().unwrap());
    h.s.start_transaction(t).unwrap();
    h.pump();
    assert!(
        !h.log.iter().any(|e| matches!(e, Ev::Sent(_))),
        "{:?}",
        h.log
    );
    assert_eq!(kinds(&h.done()), [('F', 553, false)]);

    // SMTP keeps the strict rule.
    let mut h = H::new(ClientConfig::new("mx.tern.test"));
    h.server(GREETING).server("250-mx\r\n250 PIPELINING\r\n");
    h.take();
    let mut t = txn(1);
    t.params.smtputf8 = true;
    h.s.start_transaction(t).unwrap();
    h.pump();
    assert_eq!(kinds(&h.done()), [('F', 553, false)]);
}
