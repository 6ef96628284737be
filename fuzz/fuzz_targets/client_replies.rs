//! The SMTP client against arbitrary server bytes in arbitrary chunks.
//!
//! * The reply parser never panics, stays within its limits, and gives the
//!   same replies (and the same error) however the bytes are split.
//! * The client session never panics, emits nothing after `Closed`, and
//!   gives every started transaction exactly one `TransactionDone` with one
//!   result per recipient, in order — also when the connection is then
//!   lost.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tern_smtp::client::{
    AuthMechanism, ClientAuth, ClientConfig, ClientError, ClientSession, Event, MessageParams,
    Recipient, ReplyLimits, ReplyParser, StartTlsPolicy, Transaction,
};
use tern_smtp::reply::Reply;
use tern_types::dsn::{BodyType, Notify};
use tern_types::{ForwardPath, ReversePath};

const LIMITS: ReplyLimits = ReplyLimits {
    max_line: 512,
    max_lines: 8,
};

/// All replies (and the first error) from `data` fed in pieces.
fn parse(data: &[u8], sizes: &[u8]) -> (Vec<Reply>, Option<String>) {
    let mut p = ReplyParser::new(LIMITS);
    let mut replies = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let step = sizes
            .get(i % sizes.len().max(1))
            .map_or(data.len(), |&s| usize::from(s) + 1);
        i += 1;
        let end = (pos + step).min(data.len());
        let mut piece = &data[pos..end];
        loop {
            match p.parse(&mut piece) {
                Ok(Some(r)) => {
                    assert!(r.lines.len() <= LIMITS.max_lines);
                    assert!(r.lines.iter().all(|l| l.len() < 3 * LIMITS.max_line));
                    assert!((200..600).contains(&r.code));
                    replies.push(r);
                }
                Ok(None) => {
                    assert!(piece.is_empty());
                    break;
                }
                Err(e) => return (replies, Some(e.to_string())),
            }
        }
        pos = end;
    }
    (replies, None)
}

fn transaction(n: usize, flags: u8) -> Transaction {
    Transaction {
        from: ReversePath::Mailbox("s@origin.test".parse().unwrap()),
        params: MessageParams {
            size: Some(u64::from(flags) * 1000),
            body: if flags & 1 == 0 {
                BodyType::SevenBit
            } else {
                BodyType::EightBitMime
            },
            smtputf8: flags & 2 != 0,
            ret: None,
            envid: tern_types::dsn::EnvId::parse("env id").ok(),
        },
        rcpts: (0..n)
            .map(|i| Recipient {
                address: ForwardPath::Mailbox(format!("r{i}@remote.test").parse().unwrap()),
                notify: Some(Notify::Never),
                orcpt: None,
            })
            .collect(),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let split = rest.len().min(usize::from(flags & 0x0f));
    let (sizes, data) = rest.split_at(split);

    // The parser: chunking never changes the result.
    assert_eq!(parse(data, &[]), parse(data, sizes));

    // The session.
    let mut config = ClientConfig::new("client.test");
    config.reply_limits = LIMITS;
    config.pipelining = flags & 0x10 != 0;
    config.starttls = match flags >> 5 & 3 {
        0 => StartTlsPolicy::Opportunistic,
        1 => StartTlsPolicy::Required,
        _ => StartTlsPolicy::Disabled,
    };
    if flags & 0x80 != 0 {
        config.auth = Some(ClientAuth::new(AuthMechanism::Login, "u", "p"));
        config.allow_insecure_auth = true;
    }
    let mut s = ClientSession::new(Arc::new(config)).unwrap();
    let mut started: Vec<usize> = Vec::new();
    let mut done = 0usize;
    let mut closed = false;
    let pump =
        |s: &mut ClientSession, started: &mut Vec<usize>, done: &mut usize, closed: &mut bool| {
            while let Some(e) = s.poll_event() {
                assert!(!*closed, "event after Closed: {e:?}");
                match e {
                    // Later input in the same read may have closed the
                    // session since the event was queued: the call then says
                    // Closed, and Event::Closed is still to come.
                    Event::Ready => {
                        if started.len() < 2 {
                            let n = 1 + started.len() * 2;
                            match s.start_transaction(transaction(n, flags)) {
                                Ok(()) => started.push(n),
                                Err(e) => assert!(e == ClientError::Closed && s.is_closed()),
                            }
                        } else if let Err(e) = s.quit() {
                            assert!(e == ClientError::Closed && s.is_closed());
                        }
                    }
                    Event::NeedData => {
                        if let Err(e) = s.data_sent() {
                            assert!(e == ClientError::Closed && s.is_closed());
                        }
                    }
                    Event::StartTls => {
                        if flags & 0x40 == 0 {
                            s.tls_established().unwrap();
                        } else {
                            s.tls_failed().unwrap();
                        }
                    }
                    Event::TransactionDone(r) => {
                        let n = started[*done];
                        assert_eq!(r.rcpts.len(), n);
                        for (i, o) in r.rcpts.iter().enumerate() {
                            assert_eq!(o.index, i);
                        }
                        *done += 1;
                    }
                    Event::Closed(_) => *closed = true,
                    Event::Send(_) => {}
                    _ => {}
                }
            }
        };
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let step = sizes
            .get(i % sizes.len().max(1))
            .map_or(data.len(), |&s| usize::from(s) + 1);
        i += 1;
        let end = (pos + step).min(data.len());
        s.handle_input(&data[pos..end]);
        pump(&mut s, &mut started, &mut done, &mut closed);
        pos = end;
    }
    s.connection_lost();
    pump(&mut s, &mut started, &mut done, &mut closed);
    assert!(s.is_closed() && closed);
    assert_eq!(done, started.len(), "every transaction reported once");
});
