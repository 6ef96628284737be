//! The header surgery of the inbound checks on arbitrary bytes (what a
//! client sends after DATA): finding the body, removing forged
//! `Authentication-Results:`, and mail-auth's message parser (through
//! `author_domain`). Never panics; stripping keeps every other byte in
//! order, is idempotent, and leaves no field that claims our authserv-id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_mailauth::headers::{body_offset, strip_our_auth_results};
use tern_mailauth::sign::author_domain;

const OURS: &str = "mx.example.test";

fuzz_target!(|data: &[u8]| {
    let split = body_offset(data);
    assert!(split <= data.len());
    let header = &data[..split];
    let (stripped, removed) = strip_our_auth_results(header, OURS);
    assert!(stripped.len() <= header.len());
    // A subsequence of the input: fields are dropped whole, never altered.
    let mut rest = header.iter();
    assert!(stripped.iter().all(|b| rest.any(|h| h == b)));
    if removed == 0 {
        assert_eq!(stripped, header);
    }
    let (again, removed_again) = strip_our_auth_results(&stripped, OURS);
    assert_eq!(removed_again, 0);
    assert_eq!(again, stripped);
    let _ = author_domain(data);
});
