//! Our IMAP command parser against imap-codec's on the same bytes.
//!
//! Neither may panic. Where both accept, they must agree on the tag and
//! on which command it is. Verdict differences (accept vs refuse) are not
//! asserted here: imap-codec lacks several extensions Tern serves and is
//! more lenient in places; those are recorded, line by line, in
//! crates/tern-imap/tests/differential/ (corpus.txt, DIFFERENCES.md).
#![no_main]

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use libfuzzer_sys::fuzz_target;
use tern_imap::parse::parse_command;

fuzz_target!(|data: &[u8]| {
    let ours = parse_command(data);
    let theirs = CommandCodec::default().decode(data);
    if let (Ok(o), Ok((rest, t))) = (ours, theirs) {
        if rest.is_empty() {
            assert_eq!(o.tag.as_str(), t.tag.inner());
            let their_name = t.body.name().to_ascii_uppercase();
            let our_name = o.body.name();
            // imap-codec names UID commands without the UID prefix, and
            // EXAMINE/SELECT as they were sent.
            assert!(
                our_name.ends_with(their_name.as_str()) || their_name.ends_with(our_name),
                "{our_name} vs {their_name}"
            );
        }
    }
});
