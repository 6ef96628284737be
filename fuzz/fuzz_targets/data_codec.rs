//! The DATA decoder on arbitrary bytes in arbitrary chunks: never panics,
//! the result does not depend on the chunking, the output is never longer
//! than the input (Reject mode; at most twice with Normalize), and the
//! message ends exactly after the first real `CRLF . CRLF` — never on a
//! fake terminator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_smtp::data::DataDecoder;
use tern_smtp::server::BareLineEndings;

/// Decodes `data` in pieces whose sizes come from `sizes` (cycled), with a
/// small output limit: returns (output, consumed, done).
fn decode(
    mode: BareLineEndings,
    data: &[u8],
    sizes: &[u8],
    limit: usize,
) -> (Vec<u8>, usize, bool) {
    let mut dec = DataDecoder::new(mode);
    let mut all = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let step = sizes
            .get(i % sizes.len().max(1))
            .map_or(data.len(), |&s| usize::from(s) + 1);
        i += 1;
        let end = (pos + step).min(data.len());
        let mut piece_pos = pos;
        while piece_pos < end {
            let mut out = Vec::new();
            let r = dec.decode(&data[piece_pos..end], &mut out, limit);
            assert!(out.len() <= limit.max(3));
            assert!(r.consumed > 0 || r.done);
            piece_pos += r.consumed;
            all.extend_from_slice(&out);
            if r.done {
                return (all, piece_pos, true);
            }
        }
        pos = end;
    }
    (all, pos, false)
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let mode = if flags & 1 == 0 {
        BareLineEndings::Reject
    } else {
        BareLineEndings::Normalize
    };
    let limit = usize::from(flags >> 1) + 1;
    // The first few bytes choose the chunk sizes; the rest is the content.
    let split = rest.len().min(usize::from(flags & 0x0f));
    let (sizes, data) = rest.split_at(split);

    let (whole, w_consumed, w_done) = decode(mode, data, &[], usize::MAX);
    let (chunked, consumed, done) = decode(mode, data, sizes, limit);
    assert_eq!(whole, chunked);
    assert_eq!((w_consumed, w_done), (consumed, done));

    match mode {
        BareLineEndings::Reject => assert!(whole.len() <= consumed),
        BareLineEndings::Normalize => assert!(whole.len() <= 2 * consumed),
    }

    // The oracle: "CRLF" (the DATA line's) + content; the end is right
    // after the first CRLF.CRLF.
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(data);
    let first = framed.windows(5).position(|w| w == b"\r\n.\r\n");
    match first {
        Some(i) => {
            assert!(done);
            assert_eq!(consumed, i + 3);
        }
        None => assert!(!done),
    }
});
