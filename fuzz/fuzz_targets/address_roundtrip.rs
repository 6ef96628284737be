//! The address grammar on arbitrary text: never panics, and whatever
//! parses prints back to text that parses to the same value, within the
//! RFC 5321 length limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_types::address::{MAX_DOMAIN, MAX_LOCAL_PART, MAX_MAILBOX, MAX_PATH};
use tern_types::{Domain, Mailbox, parse_forward_path, parse_reverse_path};

fn check_mailbox(m: &Mailbox, utf8: bool) {
    let shown = m.to_string();
    assert!(shown.len() <= MAX_MAILBOX, "{shown}");
    assert!(m.local_part.to_string().len() <= MAX_LOCAL_PART, "{shown}");
    assert_eq!(Mailbox::parse(&shown, utf8).as_ref(), Ok(m), "{shown}");
    assert!(utf8 || m.is_ascii());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let utf8 = flags & 1 == 1;

    if let Ok((path, _)) = parse_forward_path(s, utf8) {
        let shown = path.to_string();
        assert!(shown.len() <= MAX_PATH, "{shown}");
        assert_eq!(
            parse_forward_path(&shown, utf8),
            Ok((path.clone(), "")),
            "{shown}"
        );
        if let Some(m) = path.mailbox() {
            check_mailbox(m, utf8);
        }
    }
    if let Ok((path, _)) = parse_reverse_path(s, utf8) {
        let shown = path.to_string();
        assert!(shown.len() <= MAX_PATH, "{shown}");
        assert_eq!(
            parse_reverse_path(&shown, utf8),
            Ok((path.clone(), "")),
            "{shown}"
        );
        if let Some(m) = path.mailbox() {
            check_mailbox(m, utf8);
        }
    }
    if let Ok(m) = Mailbox::parse(s, utf8) {
        check_mailbox(&m, utf8);
    }
    let domain = if utf8 {
        Domain::parse_utf8(s)
    } else {
        Domain::parse(s)
    };
    if let Ok(d) = domain {
        assert!(d.as_str().len() <= MAX_DOMAIN);
        assert!(utf8 || d.is_ascii());
        assert_eq!(Domain::parse_utf8(d.as_str()).as_ref(), Ok(&d));
    }
});
