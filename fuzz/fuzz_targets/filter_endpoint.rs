//! Scanner addresses of the `[[filter]]` tables (`tern_filter::endpoint`):
//! never a panic; an address it accepts prints (`Display`) in a form it
//! reads back to the same address; a TCP host is never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_filter::endpoint::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(endpoint) = Endpoint::parse(text) else {
        return;
    };
    if let Endpoint::Tcp { host, .. } = &endpoint {
        assert!(!host.is_empty());
    }
    let printed = endpoint.to_string();
    assert_eq!(Endpoint::parse(&printed).as_ref(), Ok(&endpoint), "{printed:?}");
});
