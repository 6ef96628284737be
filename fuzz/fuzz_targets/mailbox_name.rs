//! Mailbox names and Maildir file names on arbitrary text: never panics;
//! every accepted name maps to one directory name inside the user's
//! Maildir (no `/`, NUL, `.` or `..`, not starting with `..`) that reads
//! back to the same name; modified UTF-7 round-trips; directory names
//! found on disk are accepted only if they encode back to themselves;
//! flag letters parsed from a file name and written again stay a single,
//! sorted set of safe letters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_store::mailbox::flags::{Flags, split_file_name};
use tern_store::mailbox::name::{MAX_NAME_BYTES, MailboxName, decode_mutf7, encode_mutf7};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = MailboxName::parse(s) {
        assert!(name.as_str().len() <= MAX_NAME_BYTES);
        let dir = name.dir();
        if name.is_inbox() {
            assert!(dir.is_empty());
        } else {
            assert!(dir.starts_with('.') && !dir.starts_with(".."), "{dir:?}");
            assert!(!dir.contains('/') && !dir.contains('\0'), "{dir:?}");
            assert!(dir.len() <= 250);
            assert!(dir.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{dir:?}");
            assert_eq!(MailboxName::from_dir(&dir).as_ref(), Some(&name), "{dir:?}");
        }
    }
    if let Some(name) = MailboxName::from_dir(s) {
        assert_eq!(name.dir(), s);
    }
    assert_eq!(decode_mutf7(&encode_mutf7(s)).as_deref(), Some(s));
    if let Some(decoded) = decode_mutf7(s) {
        assert_eq!(encode_mutf7(&decoded), s);
    }
    let (base, letters) = split_file_name(s);
    assert!(!base.contains(':'));
    let flags = Flags::from_maildir_letters(letters, &Flags::default());
    let written = flags.maildir_letters(letters);
    assert!(written.bytes().all(|b| b.is_ascii_alphanumeric()), "{written:?}");
    assert!(written.as_bytes().windows(2).all(|w| w[0] < w[1]), "{written:?}");
    assert_eq!(Flags::from_maildir_letters(&written, &Flags::default()), flags);
});
