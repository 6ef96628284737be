//! `parse_command` on arbitrary bytes: it must never panic, every error
//! must produce exactly one well-formed reply line, and a parsed MAIL/RCPT
//! path must survive Display → parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_smtp::command::{Command, parse_command};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, line)) = data.split_first() else {
        return;
    };
    let utf8 = flags & 1 == 1;
    match parse_command(line, utf8) {
        Err(e) => {
            let wire = e.to_reply().to_bytes();
            assert!(wire.ends_with(b"\r\n"));
            assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(wire.iter().filter(|&&b| b == b'\r').count(), 1);
            assert!(!wire.contains(&0));
        }
        Ok(Command::Mail { from, params }) => {
            assert!(params.smtputf8 || from.is_ascii());
            let again = if from.is_ascii() {
                format!("MAIL FROM:{from}")
            } else {
                format!("MAIL FROM:{from} SMTPUTF8")
            };
            match parse_command(again.as_bytes(), false) {
                Ok(Command::Mail { from: f2, .. }) => assert_eq!(f2, from, "{again}"),
                other => panic!("reparse of {again:?} gave {other:?}"),
            }
        }
        Ok(Command::Rcpt { to, .. }) => {
            assert!(utf8 || to.is_ascii());
            let again = format!("RCPT TO:{to}");
            match parse_command(again.as_bytes(), utf8) {
                Ok(Command::Rcpt { to: t2, .. }) => assert_eq!(t2, to, "{again}"),
                other => panic!("reparse of {again:?} gave {other:?}"),
            }
        }
        Ok(Command::Ehlo(name) | Command::Helo(name)) => {
            assert!(!name.is_empty());
            assert!(!name.contains([' ', '\r', '\n', '\0']));
        }
        Ok(_) => {}
    }
});
