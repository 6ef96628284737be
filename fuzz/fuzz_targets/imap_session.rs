//! The IMAP session on arbitrary client bytes, with a fake directory and
//! store answering every event: never panics, never writes a response line
//! without CRLF, and never runs a command before the STARTTLS handshake
//! finished or after LOGOUT; answers given out of turn are ignored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_imap::response::{Code, Data, Response};
use tern_imap::session::{AuthQuestion, Completion, Event, Session, SessionConfig, SessionState};
use tern_sasl::{Answer, FailureKind, StartContext};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let config = SessionConfig {
        plaintext_auth_allowed: flags & 1 == 1,
        max_bad_commands: 50,
        ..SessionConfig::default()
    };
    let mut session = Session::new(config, flags & 2 == 2);
    session.greet();
    let chunk = usize::from(flags >> 2).max(1);
    let mut awaiting_tls = false;
    for piece in rest.chunks(chunk) {
        let before = session.take_output();
        assert!(before.is_empty() || before.ends_with(b"\r\n"));
        session.handle_input(piece);
        if awaiting_tls {
            // Input before the handshake is never acted on.
            assert!(!session.has_output());
            assert!(session.poll_event().is_none());
            session.tls_established();
            awaiting_tls = false;
        }
        while let Some(ev) = session.poll_event() {
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
                Event::Request(r) => {
                    session.send(&Response::Data(Data::Exists(1)));
                    if r.tag.as_str().len() % 2 == 0 {
                        session.finish(Completion::ok(None, "done"));
                    } else {
                        session.finish(Completion::no(Some(Code::NonExistent), "no"));
                    }
                }
                Event::Close => assert_eq!(session.state(), SessionState::Logout),
                _ => {}
            }
        }
        // Answers out of turn (nothing is pending now, except perhaps a
        // TLS handshake) change nothing.
        if piece[0] & 0x40 != 0 && !awaiting_tls {
            let state = session.state();
            let out = session.take_output();
            assert!(out.is_empty() || out.ends_with(b"\r\n"));
            session.finish(Completion::ok(None, "spurious"));
            session.auth_answer(Answer::PasswordOk(true));
            session.auth_begin(StartContext::new(
                &[1; 16],
                "x",
                0,
                b"0123456789abcdef0123456789abcdef",
            ));
            session.tls_established();
            assert!(!session.has_output());
            assert!(session.poll_event().is_none());
            assert_eq!(session.state(), state);
        }
        if session.state() == SessionState::Logout {
            session.handle_input(b"a NOOP\r\n");
            let out = session.take_output();
            assert!(!out.ends_with(b"a OK NOOP completed\r\n"));
        }
    }
});
