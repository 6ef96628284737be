//! A reply line as the queue stores it and reads it back
//! (`tern_types::ServerReply::parse`), and the status a stored text
//! carries (`tern_types::reply::status_of`): never a panic, a parsed reply
//! prints as one line that parses to the same value, and a status found is
//! of the class asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_types::ServerReply;
use tern_types::reply::status_of;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reply) = ServerReply::parse(text) {
        let line = reply.to_string();
        assert!(!line.contains(['\r', '\n']));
        assert_eq!(ServerReply::parse(&line), Ok(reply.clone()));
        assert_eq!(reply.status_in_class().class, reply.class());
    }
    for class in [2, 4, 5] {
        assert_eq!(status_of(text, class).class, class);
    }
});
