//! The stored envelope (the JSON tail of a queue file, the `envelope`
//! column of the PostgreSQL backend) against arbitrary text: reading never
//! panics and never fails over an address (one that no longer parses is
//! kept as its text), and whatever reads back is written again as text
//! that reads back to the same envelope and the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_queue::store::codec::{decode_envelope, encode_envelope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(envelope) = decode_envelope(text) else {
        return;
    };
    let written = encode_envelope(&envelope).expect("an envelope always serialises");
    let again = decode_envelope(&written).expect("what was written reads back");
    assert_eq!(again, envelope);
    assert_eq!(encode_envelope(&again).unwrap(), written);
});
