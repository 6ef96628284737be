//! The POP3 session on arbitrary client bytes, with a fake directory and
//! maildrop answering every event: never panics, every response ends in
//! CRLF, nothing read before the STLS handshake is acted on, RETR/TOP and
//! DELE name only existing, undeleted messages, and UPDATE lists each
//! message at most once. The same bytes, taken as a stored message: the
//! chunked `Scanner` agrees with `scan`, its size is what the dot-stuffer
//! sends once unstuffed, and a message it calls verbatim is sent as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_pop3::{
    AuthQuestion, DotStuffer, Event, MaildropError, MessageInfo, Scanner, Session, SessionConfig,
};
use tern_sasl::{Answer, FailureKind, StartContext};

const STORED: &[&[u8]] = &[b"A: b\r\n\r\n.x\r\n", b"C: d\n\nbody", b""];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    wire(rest, usize::from(flags).max(1));
    let config = SessionConfig {
        plaintext_auth_allowed: flags & 1 == 1,
        max_bad_commands: 50,
        ..SessionConfig::default()
    };
    let mut session = Session::new(config, flags & 2 == 2);
    session.greet();
    let chunk = usize::from(flags >> 3).max(1);
    let mut awaiting_tls = false;
    let mut closed = false;
    for piece in rest.chunks(chunk) {
        let before = session.take_output();
        assert!(before.is_empty() || before.ends_with(b"\r\n"));
        session.handle_input(piece);
        if awaiting_tls {
            assert!(session.take_output().is_empty());
            assert!(session.poll_event().is_none());
            session.tls_established();
            awaiting_tls = false;
        }
        while let Some(ev) = session.poll_event() {
            assert!(!closed, "event after Close");
            match ev {
                Event::StartTls => awaiting_tls = true,
                Event::AuthStart { .. } => session.auth_begin(StartContext::new(
                    &[9; 16],
                    "fuzz.example",
                    0,
                    b"0123456789abcdef0123456789abcdef",
                )),
                Event::Auth(AuthQuestion::VerifyPassword { authcid, .. }) => {
                    session.auth_answer(Answer::PasswordOk(authcid == "alice"))
                }
                Event::Auth(_) => session.auth_answer(Answer::Fail(FailureKind::Temporary)),
                Event::OpenMaildrop { user } => {
                    if flags & 4 == 4 && user.len() % 2 == 1 {
                        session.maildrop_opened(Err(MaildropError::InUse));
                    } else if flags & 4 == 4 && user.len() % 3 == 0 {
                        session.maildrop_opened(Err(MaildropError::LoginDelay));
                    } else {
                        session.maildrop_opened(Ok(STORED
                            .iter()
                            .enumerate()
                            .map(|(i, m)| MessageInfo {
                                size: tern_pop3::wire_size(m),
                                uidl: format!("u{i}"),
                            })
                            .collect()));
                    }
                }
                Event::Retrieve { number, .. } => {
                    assert!((1..=STORED.len() as u32).contains(&number));
                    session.retrieve_ready();
                    let mut out = session.take_output();
                    let mut d = DotStuffer::new();
                    d.push(STORED[number as usize - 1], &mut out);
                    d.finish(&mut out);
                    assert!(out.ends_with(b"\r\n.\r\n") || out.ends_with(b"+OK Top of message follows\r\n.\r\n") || out.ends_with(b"octets\r\n.\r\n"));
                    session.retrieve_done();
                }
                Event::Update { deleted } => {
                    assert!(deleted.windows(2).all(|w| w[0] < w[1]));
                    assert!(deleted.iter().all(|n| (1..=STORED.len() as u32).contains(n)));
                    session.update_done(Ok(()));
                }
                Event::Close => closed = true,
                _ => {}
            }
        }
        if closed {
            break;
        }
    }
});

/// The wire form of `stored`, fed in chunks of `chunk` bytes.
fn wire(stored: &[u8], chunk: usize) {
    let whole = tern_pop3::scan(stored);
    let mut scanner = Scanner::new();
    let mut stuffer = DotStuffer::new();
    let mut out = Vec::new();
    for c in stored.chunks(chunk) {
        scanner.push(c);
        stuffer.push(c, &mut out);
    }
    stuffer.finish(&mut out);
    assert_eq!(scanner.finish(), whole);
    assert_eq!(tern_pop3::wire_size(stored), whole.size);
    let body = out.strip_suffix(b".\r\n").expect("terminator");
    let mut unstuffed = 0u64;
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "every line ends in CRLF");
        assert!(line != b".\r\n", "no early terminator");
        unstuffed += line.len() as u64 - u64::from(line.starts_with(b"."));
    }
    assert_eq!(unstuffed, whole.size);
    if whole.verbatim {
        let mut as_is = stored.to_vec();
        as_is.extend_from_slice(whole.verbatim_trailer());
        assert_eq!(out, as_is);
    }
}
