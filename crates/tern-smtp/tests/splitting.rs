//! Property tests: however the client's bytes are split into reads, the
//! session produces the same events and the same replies (RFC 2920
//! pipelining must not depend on packet boundaries).

mod common;

use common::{Harness, config};
use proptest::prelude::*;
use tern_smtp::server::{BareLineEndings, Event, ServerConfig};

/// A transcript exercising DATA (with stuffing, a fake terminator and a
/// pipelined tail), BDAT, errors, RSET and QUIT.
const TRANSCRIPT: &[u8] = b"EHLO client.test\r\n\
MAIL FROM:<a@example.com> SIZE=500\r\n\
RCPT TO:<b@example.net>\r\n\
RCPT TO:<c@example.net>\r\n\
DATA\r\n\
Received: from x\r\n\
Subject: test\r\n\
\r\n\
..stuffed\r\n\
fake\r\n.\nMAIL FROM:<evil@x>\r\n\
.\r\n\
MAIL FROM:<d@example.com>\r\n\
RCPT TO:<e@example.net>\r\n\
BDAT 5\r\nab\r\ncBDAT 3 LAST\r\ndef\
FOO\r\n\
NOOP\r\n\
BDAT 4 LAST\r\nRSET\
MAIL FROM:<f@example.com>\r\n\
RSET\r\n\
QUIT\r\n";

fn run(config: ServerConfig, cuts: &[usize]) -> (Vec<Event>, Vec<u8>, Vec<Vec<u8>>) {
    let mut h = Harness::new(config);
    let mut last = 0;
    for &cut in cuts {
        h.feed(&TRANSCRIPT[last..cut]);
        last = cut;
    }
    h.feed(&TRANSCRIPT[last..]);
    let events = h.control_events();
    (events, std::mem::take(&mut h.output), h.messages)
}

fn normalize() -> ServerConfig {
    ServerConfig {
        bare_line_endings: BareLineEndings::Normalize,
        ..config()
    }
}

#[test]
fn reference_transcript_is_what_we_expect() {
    let (events, out, messages) = run(normalize(), &[]);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        Harness::codes(&out),
        [
            "250",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "250 2.0.0",
            "500 5.5.1",
            "250 2.0.0",
            "503 5.5.1",
            "250 2.1.0",
            "250 2.0.0",
            "221 2.0.0"
        ],
        "{out}"
    );
    assert_eq!(messages.len(), 2);
    assert!(messages[0].starts_with(b"Received: from x\r\n"));
    assert!(
        String::from_utf8_lossy(&messages[0])
            .contains(".stuffed\r\nfake\r\n\r\nMAIL FROM:<evil@x>\r\n")
    );
    assert_eq!(messages[1], b"ab\r\ncdef");
    assert_eq!(events.last(), Some(&Event::Quit));
    // In Reject mode the first message is refused, the rest is identical.
    let (_, out, messages) = run(config(), &[]);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(Harness::codes(&out)[5], "550 5.6.0");
    assert_eq!(messages.len(), 1);
}

#[test]
fn byte_by_byte_equals_one_read() {
    for cfg in [config(), normalize()] {
        let whole = run(cfg.clone(), &[]);
        let cuts: Vec<usize> = (1..TRANSCRIPT.len()).collect();
        assert_eq!(run(cfg, &cuts), whole);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_splits_give_identical_results(
        mut cuts in proptest::collection::vec(0..TRANSCRIPT.len(), 0..40),
        reject in any::<bool>(),
    ) {
        cuts.sort_unstable();
        let cfg = if reject { config() } else { normalize() };
        let whole = run(cfg.clone(), &[]);
        prop_assert_eq!(run(cfg, &cuts), whole);
    }
}
