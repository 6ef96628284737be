//! Every view tern-mime offers on arbitrary bytes: structure, ENVELOPE,
//! BODY/BODYSTRUCTURE, every section of every part (with partials),
//! BINARY, the SEARCH matchers, SORT keys, THREAD input and POP3 TOP.
//! Never panics; sections are sub-slices of the input (or built from its
//! header fields); work stays bounded by the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_mime::{Kind, Limits, Message, Part, Section, SectionText, partial, pop3, thread};

/// Every range is inside the input, a header comes before its body, and
/// children lie inside their parent's body, in order.
fn check_ranges(p: &Part, len: usize) {
    assert!(p.header.start <= p.header.end, "{p:?}");
    assert!(p.header.end <= p.body.start, "{p:?}");
    assert!(p.body.start <= p.body.end && p.body.end <= len, "{p:?}");
    match &p.kind {
        Kind::Multipart(children) => {
            assert!(!children.is_empty());
            let mut at = p.body.start;
            for c in children {
                assert!(c.header.start >= at && c.body.end <= p.body.end, "{p:?}");
                at = c.body.end;
                check_ranges(c, len);
            }
        }
        Kind::Message(inner) => {
            assert!(inner.header.start == p.body.start && inner.body.end <= p.body.end);
            check_ranges(inner, len);
        }
        Kind::Leaf => {}
    }
}

fn paths(p: &Part, prefix: &mut Vec<u32>, out: &mut Vec<Vec<u32>>) {
    if out.len() > 200 {
        return;
    }
    match &p.kind {
        Kind::Multipart(children) => {
            for (i, c) in children.iter().enumerate() {
                prefix.push(i as u32 + 1);
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        Kind::Message(inner) => paths(inner, prefix, out),
        Kind::Leaf => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_depth: 16,
        max_parts: 200,
        max_boundary_len: 100,
    };
    let msg = Message::parse(data, &limits);
    check_ranges(msg.root(), data.len());
    let mut out = Vec::new();
    msg.envelope_imap(&mut out);
    msg.body_structure_imap(false, &mut out);
    msg.body_structure_imap(true, &mut out);

    let mut all = vec![Vec::new()];
    paths(msg.root(), &mut Vec::new(), &mut all);
    all.push(vec![1]);
    all.push(vec![1, 1]);
    all.push(vec![99]);
    for path in &all {
        for text in [
            None,
            Some(SectionText::Header),
            Some(SectionText::Text),
            Some(SectionText::Mime),
            Some(SectionText::HeaderFields(vec![b"subject".to_vec(), b"from".to_vec()])),
            Some(SectionText::HeaderFieldsNot(vec![b"subject".to_vec()])),
        ] {
            let s = Section {
                part: path.clone(),
                text,
            };
            if let Ok(bytes) = msg.section(&s) {
                if s.text.is_none() || matches!(s.text, Some(SectionText::Header | SectionText::Text | SectionText::Mime)) {
                    assert!(bytes.len() <= data.len());
                }
                let p = partial(&bytes, 3, 10);
                assert!(p.len() <= 10);
            }
        }
        if let Ok(b) = msg.binary(path) {
            assert_eq!(msg.binary_size(path).ok(), Some(b.len()));
        }
    }
    let _ = msg.header_contains(b"subject", "x");
    let _ = msg.body_contains("Ab");
    let _ = msg.text_contains("é");
    let _ = msg.sent_date();
    let _ = msg.sort_keys(0);
    let t = msg.thread_message(1, 0);
    let mut rendered = Vec::new();
    thread::references(&[t.clone(), t.clone()]).render(&mut rendered);
    thread::ordered_subject(&[t]).render(&mut rendered);
    let top = pop3::top(data, 2);
    assert!(data.starts_with(top));
    let crlf = tern_mime::to_crlf(data);
    assert!(matches!(tern_mime::to_crlf(&crlf), std::borrow::Cow::Borrowed(_)));
});
