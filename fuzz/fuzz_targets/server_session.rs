//! The server session on arbitrary client bytes, in arbitrary reads, with
//! a runtime that answers yes or no as the input dictates: never panics,
//! output stays proportional to input lines, the unread buffer stays below
//! one read plus one command line, and message chunks respect their limit.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tern_smtp::reply::Reply;
use tern_smtp::server::{BareLineEndings, EarlyTalkerPolicy, Event, ServerConfig, ServerSession};
use tern_types::EnhancedStatus;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let config = ServerConfig {
        hostname: "fuzz.test".to_owned(),
        bare_line_endings: if flags & 1 == 0 {
            BareLineEndings::Reject
        } else {
            BareLineEndings::Normalize
        },
        starttls_available: flags & 2 != 0,
        early_talkers: if flags & 4 == 0 {
            EarlyTalkerPolicy::Allow
        } else {
            EarlyTalkerPolicy::Reject
        },
        max_command_line: if flags & 8 == 0 { 512 } else { 40 },
        max_recipients: 3,
        max_errors: if flags & 16 == 0 { 20 } else { 1000 },
        max_message_size: 4096,
        max_text_line: 100,
        max_received_headers: 2,
        vrfy_enabled: flags & 32 != 0,
        expn_enabled: flags & 32 != 0,
        data_chunk_size: 64,
        ..ServerConfig::default()
    };
    let max_line = config.max_command_line;
    let mut s = ServerSession::new(Arc::new(config));
    let read = usize::from(flags >> 6) * 7 + 1;
    let mut output = 0usize;
    let mut answers = 0usize;
    for (n, piece) in rest.chunks(read).enumerate() {
        if n == 0 && flags & 4 != 0 {
            s.handle_input(piece);
            s.greet();
            continue;
        }
        if n == 0 {
            s.greet();
        }
        s.handle_input(piece);
        assert!(s.buffered() <= piece.len() + max_line);
        while let Some(ev) = s.poll_event() {
            let yes = rest
                .get(answers % rest.len().max(1))
                .is_none_or(|b| b & 1 == 0);
            answers += 1;
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
                Event::StartTls if flags & 128 != 0 => s.tls_established(),
                _ => {}
            }
        }
        output += s.take_output().len();
        if s.is_closed() {
            break;
        }
    }
    if flags & 64 != 0 {
        s.on_timeout();
    } else {
        s.shutdown();
    }
    while s.poll_event().is_some() {}
    output += s.take_output().len();
    // Each input line earns at most one reply (EHLO's has ~11 lines, every
    // line ≤ 512 octets) plus a closing 421; plus the greeting.
    let lines = rest.iter().filter(|&&b| b == b'\n').count();
    assert!(
        output <= (lines + 3) * 2 * 12 * 512,
        "{output} for {lines} lines"
    );
});
