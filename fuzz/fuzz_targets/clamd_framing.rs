//! clamd's INSTREAM framing and replies.
//!
//! * Chunk framing round-trips: the chunks decode back to the data, and
//!   never more than the stream's maximum is framed.
//! * Replies: the reader never holds more than its cap and gives the same
//!   reply however the bytes are split; parsing never panics and names
//!   only printable signatures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_filter::clamd::{InStream, MAX_REPLY, ReplyReader, ScanResult, parse_reply};

fn reply(data: &[u8], step: usize) -> Option<Result<Option<String>, String>> {
    let mut r = ReplyReader::new();
    for piece in data.chunks(step.max(1)) {
        match r.push(piece) {
            Ok(Some(s)) => return Some(Ok(Some(s))),
            Ok(None) => {}
            Err(e) => return Some(Err(e.to_string())),
        }
    }
    Some(Ok(r.finish()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    // Framing.
    let max = u64::from(flags) * 7;
    let mut out = Vec::new();
    let mut stream = InStream::start(max, &mut out);
    let mut sent = Vec::new();
    for piece in data.chunks(usize::from(flags % 13) + 1) {
        if stream.chunk(piece, &mut out).is_ok() {
            sent.extend_from_slice(piece);
        }
    }
    assert!(sent.len() as u64 <= max);
    stream.finish(&mut out);
    let mut body = &out[10..];
    let mut decoded = Vec::new();
    loop {
        let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        body = &body[4..];
        if len == 0 {
            break;
        }
        decoded.extend_from_slice(&body[..len]);
        body = &body[len..];
    }
    assert!(body.is_empty());
    assert_eq!(decoded, sent);

    // Replies.
    let whole = reply(data, data.len());
    assert_eq!(whole, reply(data, usize::from(flags % 5) + 1));
    if let Some(Ok(Some(text))) = whole {
        assert!(text.chars().count() <= MAX_REPLY);
        if let Ok(ScanResult::Infected(sig)) = parse_reply(&text) {
            assert!(sig.chars().all(|c| (' '..='~').contains(&c)));
        }
    }
});
