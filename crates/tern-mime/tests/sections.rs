//! BODY[section] and BINARY[section] on the fixtures against Dovecot
//! 2.3.19's answers, recorded in `tests/fixtures/<name>.sections` as
//! `command \n length \n bytes \n` (or `command \n ERROR NO`). The
//! LF-only fixture is compared after [`tern_mime::to_crlf`].
//!
//! Where we answer with an error Dovecot answers an empty string (a part
//! that does not exist, HEADER/TEXT of a part that is not a message): the
//! server is free to do the same. Two documented differences are listed
//! in `KNOWN_DIFFERENCES`. BINARY of a multipart or message part decodes
//! every leaf inside, as Dovecot does.

use std::path::PathBuf;

use tern_mime::{BinaryError, Limits, Message, Section, SectionText};

/// (fixture, command): Dovecot answers these differently, on purpose.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    // Dovecot lets `.1` of a leaf inside a multipart name the leaf itself;
    // RFC 9051 gives only messages (not leaves) a part 1, we answer
    // NoSuchPart.
    ("nested", "BODY.PEEK[1.1.1]"),
    ("nested", "BODY.PEEK[3.1.1]"),
];

fn read(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Dovecot's recorded answers: (command, Some(bytes) or None for NO).
fn recorded(name: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let b = read(&format!("{name}.sections"));
    let mut out = Vec::new();
    let mut i = 0;
    let line = |i: &mut usize| {
        let end = b[*i..].iter().position(|&c| c == b'\n').unwrap() + *i;
        let l = String::from_utf8(b[*i..end].to_vec()).unwrap();
        *i = end + 1;
        l
    };
    while i < b.len() {
        let cmd = line(&mut i);
        let len = line(&mut i);
        if len.starts_with("ERROR") {
            out.push((cmd, None));
            continue;
        }
        let n: usize = len.parse().unwrap();
        out.push((cmd, Some(b[i..i + n].to_vec())));
        i += n + 1;
    }
    out
}

enum Fetch {
    Body(Section),
    Binary(Vec<u32>),
    BinarySize(Vec<u32>),
}

/// Parses `BODY.PEEK[3.HEADER.FIELDS (A B)]`, `BINARY.PEEK[1.2]`,
/// `BINARY.SIZE[2]`.
fn parse_command(cmd: &str) -> Fetch {
    let (kind, rest) = cmd.split_once('[').unwrap();
    let spec = rest.strip_suffix(']').unwrap();
    let (spec, list) = match spec.split_once(" (") {
        Some((s, l)) => (
            s,
            l.trim_end_matches(')')
                .split(' ')
                .map(|n| n.as_bytes().to_vec())
                .collect(),
        ),
        None => (spec, Vec::new()),
    };
    let mut part = Vec::new();
    let mut words = Vec::new();
    for t in spec.split('.').filter(|t| !t.is_empty()) {
        match t.parse::<u32>() {
            Ok(n) if words.is_empty() => part.push(n),
            _ => words.push(t),
        }
    }
    let text = match words.join(".").as_str() {
        "" => None,
        "HEADER" => Some(SectionText::Header),
        "TEXT" => Some(SectionText::Text),
        "MIME" => Some(SectionText::Mime),
        "HEADER.FIELDS" => Some(SectionText::HeaderFields(list)),
        "HEADER.FIELDS.NOT" => Some(SectionText::HeaderFieldsNot(list)),
        other => panic!("{other}"),
    };
    match kind {
        "BODY.PEEK" => Fetch::Body(Section { part, text }),
        "BINARY.PEEK" => Fetch::Binary(part),
        "BINARY.SIZE" => Fetch::BinarySize(part),
        other => panic!("{other}"),
    }
}

#[test]
fn sections_match_dovecot() {
    let mut compared = 0;
    for name in ["nested", "broken", "missing-headers", "encoded", "bare-lf"] {
        // Dovecot serves LF-stored mail with CRLF line ends; so do we,
        // after `to_crlf`.
        let stored = read(&format!("{name}.eml"));
        let raw = tern_mime::to_crlf(&stored);
        let msg = Message::parse(&raw, &Limits::default());
        for (cmd, want) in recorded(name) {
            if KNOWN_DIFFERENCES.contains(&(name, cmd.as_str())) {
                continue;
            }
            let got: Result<Vec<u8>, String> = match parse_command(&cmd) {
                Fetch::Body(s) => msg
                    .section(&s)
                    .map(|b| b.into_owned())
                    .map_err(|e| e.to_string()),
                Fetch::Binary(p) => msg.binary(&p).map(|b| b.into_owned()).map_err(|e| match e {
                    BinaryError::UnknownCte(_) => "UNKNOWN-CTE".to_string(),
                    other => other.to_string(),
                }),
                Fetch::BinarySize(p) => msg
                    .binary_size(&p)
                    .map(|n| n.to_string().into_bytes())
                    .map_err(|e| e.to_string()),
            };
            match (&got, &want) {
                (Ok(g), Some(w)) => assert_eq!(
                    String::from_utf8_lossy(g),
                    String::from_utf8_lossy(w),
                    "{name} {cmd}"
                ),
                (Err(_), Some(w)) => assert!(w.is_empty(), "{name} {cmd}: {got:?} vs {w:?}"),
                (Err(e), None) => assert_eq!(e, "UNKNOWN-CTE", "{name} {cmd}"),
                (Ok(g), None) => panic!("{name} {cmd}: Dovecot said NO, we sent {g:?}"),
            }
            compared += 1;
        }
    }
    assert!(compared > 50, "{compared}");
}
