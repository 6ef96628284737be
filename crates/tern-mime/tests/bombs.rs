//! MIME bombs: the parse and every view stay bounded (no deep recursion,
//! no per-part blow-up) on deep nesting, a million parts, huge boundaries
//! and a 10 MB header line.

use tern_mime::{Kind, Limits, Message, Section, SectionText};

fn every_view(raw: &[u8]) -> Message<'_> {
    let msg = Message::parse(raw, &Limits::default());
    let mut out = Vec::new();
    msg.envelope_imap(&mut out);
    msg.body_structure_imap(true, &mut out);
    let _ = msg.section(&Section {
        part: vec![1, 1, 1],
        text: Some(SectionText::Mime),
    });
    let _ = msg.binary(&[1]);
    let _ = msg.body_contains("needle");
    let _ = msg.text_contains("needle");
    let _ = msg.sort_keys(0);
    msg
}

fn depth(p: &tern_mime::Part) -> usize {
    match &p.kind {
        Kind::Leaf => 0,
        Kind::Multipart(ch) => 1 + ch.iter().map(depth).max().unwrap_or(0),
        Kind::Message(inner) => 1 + depth(inner),
    }
}

fn count(p: &tern_mime::Part) -> usize {
    match &p.kind {
        Kind::Leaf => 1,
        Kind::Multipart(ch) => 1 + ch.iter().map(count).sum::<usize>(),
        Kind::Message(inner) => 1 + count(inner),
    }
}

#[test]
fn deep_nesting_is_cut_at_max_depth() {
    let mut raw = Vec::new();
    for i in 0..20_000 {
        if i % 2 == 0 {
            raw.extend(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        } else {
            raw.extend(b"Content-Type: message/rfc822\r\n\r\n");
        }
    }
    let msg = every_view(&raw);
    assert!(msg.limits_hit());
    assert!(depth(msg.root()) <= Limits::default().max_depth);
}

#[test]
fn an_oversized_depth_limit_is_capped() {
    let mut raw = Vec::new();
    for i in 0..5_000 {
        raw.extend(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    let limits = Limits {
        max_depth: usize::MAX,
        ..Limits::default()
    };
    let msg = Message::parse(&raw, &limits);
    let mut out = Vec::new();
    msg.body_structure_imap(true, &mut out);
    assert!(msg.limits_hit());
    assert!(depth(msg.root()) <= tern_mime::structure::MAX_DEPTH);
}

#[test]
fn a_million_parts_are_capped() {
    let mut raw = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
    for _ in 0..1_000_000 {
        raw.extend(b"--x\r\n\r\n");
    }
    let msg = every_view(&raw);
    assert!(msg.limits_hit());
    assert!(count(msg.root()) <= Limits::default().max_parts + 1);
}

#[test]
fn huge_boundary_is_not_split() {
    let boundary = "b".repeat(1_000_000);
    let raw = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let msg = every_view(raw.as_bytes());
    assert!(msg.limits_hit());
    assert!(matches!(msg.root().kind, Kind::Leaf));
}

#[test]
fn ten_megabyte_header_line() {
    let mut raw = b"Subject: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 10 << 20));
    raw.extend(b"\r\nFrom: ");
    raw.extend(std::iter::repeat_n(b'<', 1 << 20));
    raw.extend(b"\r\nContent-Type: text/plain; ");
    raw.extend(std::iter::repeat_n(b'(', 1 << 20));
    raw.extend(b"\r\n\r\nbody\r\n");
    let msg = every_view(&raw);
    assert_eq!(msg.body(), b"body\r\n");
    assert!(msg.header_contains(b"subject", "aaaa"));
}
