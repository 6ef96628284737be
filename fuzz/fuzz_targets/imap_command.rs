//! IMAP framing and command parsing on arbitrary bytes: never panics,
//! never buffers more than the limits allow, answers every refused command
//! once, and every command that parses encodes back to bytes that parse to
//! the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_imap::encode::LiteralMode;
use tern_imap::framing::{Expect, Frame, Framer, FramingLimits, LiteralPlus};
use tern_imap::parse::{parse_auth_line, parse_command};
use tern_imap::response::EncodeOptions;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let limits = FramingLimits {
        max_line: 256,
        max_literal: 512,
        max_command: 2048,
        literal_plus: if flags & 1 == 1 {
            LiteralPlus::Minus
        } else {
            LiteralPlus::Plus
        },
    };
    let chunk = usize::from(flags >> 1).max(1);
    let mut framer = Framer::new(limits);
    for piece in rest.chunks(chunk) {
        framer.push(piece);
        // Alternate what the session expects, as IDLE and AUTHENTICATE do.
        let expect = if piece[0] & 0x80 != 0 {
            Expect::Line
        } else {
            Expect::Command
        };
        while let Some(frame) = framer.next(expect) {
            match frame {
                Frame::Command(bytes) => {
                    assert!(bytes.len() as u64 <= limits.max_command);
                    if let Ok(cmd) = parse_command(&bytes) {
                        for mode in [LiteralMode::Sync, LiteralMode::NonSync] {
                            let again = cmd.encode(mode, EncodeOptions { utf8: true }).concat();
                            assert_eq!(parse_command(&again).as_ref(), Ok(&cmd));
                        }
                    }
                }
                Frame::Line(line) => {
                    assert!(line.len() <= limits.max_line);
                    let _ = parse_auth_line(&line);
                }
                Frame::Continue | Frame::Rejected { .. } => {}
            }
        }
        assert!(
            framer.buffered() <= limits.max_line,
            "{}",
            framer.buffered()
        );
    }
});
