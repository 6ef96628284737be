//! The server session with AUTH offered, on arbitrary client bytes in
//! arbitrary reads, with a runtime that answers every question (AUTH ones
//! included) as the input dictates: never panics, never authenticates
//! unless the runtime confirmed an `Authenticated` question, the unread
//! buffer stays below one read plus one AUTH line, output stays
//! proportional to input lines, and no event's `Debug` shows the
//! directory's password.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tern_sasl::{Answer, CramSecret, FailureKind, Mechanism, ScramCredentials, TokenRejection};
use tern_smtp::reply::Reply;
use tern_smtp::server::{AuthQuestion, Event, MAX_AUTH_LINE, ServerConfig, ServerSession};
use tern_types::EnhancedStatus;

const PASSWORD: &str = "fuzz-password";

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let config = ServerConfig {
        hostname: "fuzz.test".to_owned(),
        tls_active: flags & 1 != 0,
        starttls_available: true,
        auth_plaintext_allowed: flags & 2 != 0,
        auth_required: flags & 4 != 0,
        auth_mechanisms: if flags & 8 == 0 {
            Mechanism::ALL.to_vec()
        } else {
            vec![Mechanism::Plain, Mechanism::Login]
        },
        auth_secret: b"fuzz server secret".to_vec(),
        max_command_line: if flags & 16 == 0 { 512 } else { 40 },
        max_errors: if flags & 32 == 0 { 20 } else { 1000 },
        max_recipients: 3,
        max_message_size: 4096,
        data_chunk_size: 64,
        ..ServerConfig::default()
    };
    let max_line = config.max_command_line.max(MAX_AUTH_LINE);
    let mut s = ServerSession::new(Arc::new(config));
    s.greet();
    let read = usize::from(flags >> 6) * 7 + 1;
    let mut output = 0usize;
    let mut answers = 0usize;
    let mut confirmed = false;
    for piece in rest.chunks(read) {
        s.handle_input(piece);
        assert!(s.buffered() <= piece.len() + max_line);
        while let Some(ev) = s.poll_event() {
            let dbg = format!("{ev:?}");
            assert!(!dbg.contains(PASSWORD), "{dbg}");
            let choice = rest.get(answers % rest.len().max(1)).copied().unwrap_or(0);
            answers += 1;
            let yes = choice & 1 == 0;
            let refuse = || Reply::new(454, EnhancedStatus::new(4, 7, 0), "no");
            match ev {
                Event::DataChunk(c) => assert!(!c.is_empty() && c.len() <= 64),
                Event::DataEnd if yes => s.accept_message("FUZZ1"),
                Event::MailFrom { .. }
                | Event::RcptTo { .. }
                | Event::DataStart { .. }
                | Event::DataEnd
                | Event::Verify { .. } => {
                    if yes {
                        s.accept();
                    } else {
                        s.reply(Reply::new(550, EnhancedStatus::new(5, 7, 1), "no"));
                    }
                }
                Event::AuthStart { .. } => match choice % 4 {
                    0 => s.reply(refuse()),
                    1 => s.accept(),
                    2 => s.auth_begin(&[choice; 8], 1),
                    _ => s.auth_begin(&[choice; 32], 1_700_000_000),
                },
                Event::Auth(q) => {
                    let pick = choice % 3;
                    if pick == 2 {
                        s.reply(refuse());
                    } else if choice & 8 != 0 {
                        s.auth_answer(Answer::Fail(FailureKind::Temporary));
                    } else {
                        let known = pick == 0;
                        s.auth_answer(match q {
                            AuthQuestion::VerifyPassword { password, .. } => {
                                Answer::PasswordOk(known && password.as_str() == PASSWORD)
                            }
                            AuthQuestion::LookupCram { .. } => {
                                Answer::Cram(known.then(|| CramSecret::from_password(PASSWORD)))
                            }
                            AuthQuestion::LookupScram { .. } => Answer::Scram(known.then(|| {
                                ScramCredentials::from_password(PASSWORD, b"salt", 1).unwrap()
                            })),
                            AuthQuestion::VerifyToken { .. } if known => {
                                Answer::Token(Ok("fuzz".to_owned()))
                            }
                            AuthQuestion::VerifyToken { .. } => {
                                Answer::Token(Err(TokenRejection::Expired))
                            }
                            _ => Answer::Fail(FailureKind::Temporary),
                        });
                    }
                }
                Event::Authenticated { .. } => {
                    if yes {
                        confirmed = true;
                        s.accept();
                    } else {
                        s.reply(Reply::new(535, EnhancedStatus::new(5, 7, 8), "no"));
                    }
                }
                Event::StartTls if flags & 1 == 0 => s.tls_established(),
                _ => {}
            }
            if s.authenticated().is_some() {
                assert!(confirmed, "authenticated without a confirmed Authenticated");
            }
        }
        output += s.take_output().len();
        if s.is_closed() {
            break;
        }
    }
    s.shutdown();
    while s.poll_event().is_some() {}
    output += s.take_output().len();
    // Each input line earns at most one reply (EHLO's ~12 lines, each ≤ 512
    // octets; a 334 challenge is short) plus a closing 421; plus the
    // greeting.
    let lines = rest.iter().filter(|&&b| b == b'\n').count();
    assert!(
        output <= (lines + 3) * 2 * 13 * 512,
        "{output} for {lines} lines"
    );
});
