//! rspamd's HTTP response and `/checkv2` JSON, from arbitrary bytes.
//!
//! * The HTTP parser never panics, never returns a body over its cap, and
//!   gives the same response however the bytes are split.
//! * A parsed reply always maps to a verdict, and its header changes
//!   apply to a header section without breaking it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_filter::header::HeaderSection;
use tern_filter::http::ResponseParser;
use tern_filter::rspamd::{Policy, parse_reply, verdict};

const MAX: usize = 4096;

fn parse(data: &[u8], step: usize) -> Option<Result<Vec<u8>, String>> {
    let mut p = ResponseParser::new(MAX);
    for piece in data.chunks(step.max(1)) {
        match p.push(piece) {
            Ok(Some(r)) => {
                assert!(r.body.len() <= MAX);
                return Some(Ok(r.body));
            }
            Ok(None) => {}
            Err(e) => return Some(Err(e.to_string())),
        }
    }
    match p.finish() {
        Ok(r) => Some(Ok(r.body)),
        Err(_) => None,
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let whole = parse(data, data.len());
    assert_eq!(whole, parse(data, usize::from(flags % 17) + 1));
    for body in [data, whole.and_then(Result::ok).as_deref().unwrap_or(b"")] {
        if let Ok(reply) = parse_reply(body) {
            let v = verdict(&reply, &Policy::default());
            let mut h = HeaderSection::parse(b"Subject: x\r\nX-Spam: 1\r\n\r\n");
            for c in &v.changes {
                h.apply(c);
            }
            assert!(h.to_bytes().ends_with(b"\r\n\r\n"));
        }
    }
});
