//! The one duration parser (`tern_types::duration`): never a panic; a
//! duration it accepts prints in a form it reads back to the same value;
//! a bare number is accepted only where seconds are allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_types::duration::{Bare, format, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let strict = parse(text, Bare::Refused);
    let lenient = parse(text, Bare::Seconds);
    if let Ok(d) = strict {
        assert_eq!(lenient, Ok(d));
    }
    if let Ok(d) = lenient {
        assert_eq!(parse(&format(d), Bare::Refused), Ok(d));
        if strict.is_err() {
            assert!(text.trim().bytes().all(|b| b.is_ascii_digit()));
        }
    }
});
