//! The one `NOTIFY=` parser (`tern_types::dsn::Notify::parse`, RFC 3461
//! 4.1): never a panic; a value it accepts prints in a form it reads back
//! to the same value; `NEVER` is never accepted together with another word.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_types::dsn::Notify;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(notify) = Notify::parse(text) {
        assert_eq!(Notify::parse(&notify.to_string()), Ok(notify));
        if notify == Notify::Never {
            assert_eq!(text.split(',').count(), 1);
        }
    }
});
