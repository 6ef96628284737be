//! The milter client (MTA side) against arbitrary milter bytes in
//! arbitrary chunks.
//!
//! * Framing never panics, never holds more than one frame plus a chunk,
//!   and gives the same frames (and the same error) however the bytes are
//!   split.
//! * The session never panics: whatever a milter sends, each awaited
//!   reply ends in a decision or an error, modifications only come at the
//!   end of the message and only the negotiated ones, and decoded header
//!   changes can be applied to a header section without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_filter::header::HeaderSection;
use tern_filter::milter::{Expect, Frame, FrameReader, MAX_FRAME, Modification, Session, Step};

fn frames(data: &[u8], sizes: &[u8]) -> (Vec<Frame>, bool) {
    let mut r = FrameReader::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let step = sizes
            .get(i % sizes.len().max(1))
            .map_or(data.len(), |&s| usize::from(s) + 1);
        i += 1;
        let end = (pos + step).min(data.len());
        r.push(&data[pos..end]);
        loop {
            match r.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.data.len() < MAX_FRAME);
                    out.push(f);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        assert!(r.buffered() <= MAX_FRAME + 4 + data.len());
        pos = end;
    }
    (out, false)
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let split = rest.len().min(usize::from(flags & 0x0f));
    let (sizes, data) = rest.split_at(split);
    let (all, err) = frames(data, &[]);
    assert_eq!((all.clone(), err), frames(data, sizes));

    let mut frames = all.into_iter();
    let mut s = Session::new();
    let mut out = Vec::new();
    s.negotiate(&mut out);
    let Some(first) = frames.next() else { return };
    if s.on_negotiation(&first).is_err() {
        return;
    }
    let mut section = HeaderSection::parse(b"From: a@b.test\r\nSubject: x\r\n\r\n");
    // The steps of one message, each answered by the next frames.
    for step in 0..9u8 {
        let expect = match step {
            0 => s.connect("[192.0.2.1]", None, &[("j", "mx")], &mut out),
            1 => s.helo("client.test", &[], &mut out),
            2 => s.mail(&["<a@b.test>"], &[("i", "Q")], &mut out),
            3 => s.rcpt(&["<c@d.test>"], &[], &mut out),
            4 => s.data(&[], &mut out),
            5 => s.header("Subject", "x", &mut out),
            6 => s.end_of_headers(&[], &mut out),
            7 => s.body(b"body\r\n", &mut out),
            _ => s.end_of_message(&[], &mut out),
        };
        if expect != Expect::Reply {
            continue;
        }
        loop {
            let Some(f) = frames.next() else {
                s.abort(&mut out);
                return;
            };
            match s.on_frame(&f) {
                Ok(Step::Wait) => {}
                Ok(Step::Change(m)) => {
                    assert_eq!(step, 8, "modification before the end of message");
                    let allowed = s.negotiated().map_or(0, |n| n.actions);
                    assert!(allowed & m.needs() != 0);
                    if let Modification::Header(c) = m {
                        section.apply(&c);
                        let bytes = section.to_bytes();
                        assert!(bytes.ends_with(b"\r\n\r\n"));
                    }
                }
                Ok(Step::Done(_)) => break,
                Err(_) => return,
            }
        }
    }
    s.message_done();
    s.quit(&mut out);
});
