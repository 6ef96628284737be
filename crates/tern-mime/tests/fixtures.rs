//! The views of real MIME messages in `tests/fixtures/`.
//!
//! `<name>.dovecot` holds what Dovecot 2.3.19 answered to
//! `FETCH 1 (ENVELOPE BODY BODYSTRUCTURE)` for `<name>.eml` (recorded once
//! with a private Dovecot, see the crate README section); our output must
//! be the same IMAP value. Literals and quoted strings are equal values,
//! so both sides are compared with literals written as quoted strings
//! where a quoted string can hold them.

use std::path::PathBuf;

use tern_mime::binary::BinaryError;
use tern_mime::{Limits, Message, Section, SectionError, SectionText, pop3, thread};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rewrites `{n}\r\n<n bytes>` as a quoted string when the bytes are
/// printable ASCII.
fn normalise(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{'
            && let Some(close) = b[i..].iter().position(|&c| c == b'}')
            && let Ok(n) = std::str::from_utf8(&b[i + 1..i + close])
                .unwrap_or("x")
                .parse::<usize>()
            && b[i + close + 1..].starts_with(b"\r\n")
        {
            let start = i + close + 3;
            let bytes = &b[start..start + n];
            if bytes.iter().all(|&c| (0x20..0x7f).contains(&c)) {
                out.push(b'"');
                for &c in bytes {
                    if c == b'"' || c == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(c);
                }
                out.push(b'"');
            } else {
                out.extend_from_slice(&b[i..start + n]);
            }
            i = start + n;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// (fixture, Dovecot's text, ours, why): places where we answer
/// differently on purpose; Dovecot's recorded answer is patched before
/// comparing.
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str)] = &[(
    "types",
    "(\"name*1\" \" d'hiver\")",
    "(\"name*\" \"iso-8859-1'fr'%E9t%E9%20d%27hiver\")",
    "RFC 2231 `name*0*=` + `name*1=`: Dovecot drops the first segment; we join both \
         into one extended value",
)];

fn fetch_views(raw: &[u8]) -> Vec<u8> {
    let msg = Message::parse(raw, &Limits::default());
    let mut out = b"ENVELOPE ".to_vec();
    msg.envelope_imap(&mut out);
    out.extend(b" BODY ");
    msg.body_structure_imap(false, &mut out);
    out.extend(b" BODYSTRUCTURE ");
    msg.body_structure_imap(true, &mut out);
    out
}

#[test]
fn envelope_and_bodystructure_match_dovecot() {
    for name in [
        "nested",
        "encoded",
        "missing-headers",
        "bare-lf",
        "broken",
        "addresses",
        "types",
    ] {
        let raw = fixture(&format!("{name}.eml"));
        let mut want = String::from_utf8(normalise(&fixture(&format!("{name}.dovecot")))).unwrap();
        for (fixture, theirs, ours, _why) in KNOWN_DIFFERENCES {
            if *fixture == name {
                assert!(want.contains(theirs), "{name}: {theirs}");
                want = want.replace(theirs, ours);
            }
        }
        let got = fetch_views(&raw);
        assert_eq!(String::from_utf8_lossy(&normalise(&got)), want, "{name}");
    }
}

fn sec(part: &[u32], text: Option<SectionText>) -> Section {
    Section {
        part: part.to_vec(),
        text,
    }
}

#[test]
fn nested_sections_and_binary() {
    let raw = fixture("nested.eml");
    let msg = Message::parse(&raw, &Limits::default());
    let s = |part: &[u32], text| {
        String::from_utf8(msg.section(&sec(part, text)).unwrap().into_owned()).unwrap()
    };
    assert!(s(&[1, 1], None).starts_with("Hello Bob,\r\n"));
    assert_eq!(
        s(&[1, 2], Some(SectionText::Mime)),
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    );
    assert_eq!(
        s(
            &[3],
            Some(SectionText::HeaderFields(vec![b"subject".to_vec()]))
        ),
        "Subject: the original\r\n\r\n"
    );
    assert_eq!(s(&[3, 1], None), "Original text.");
    assert_eq!(s(&[3, 2], None), "iVBORw0KGgo=");
    assert!(s(&[3], None).starts_with("Date: Sun, 6 Jul 2025"));
    assert!(s(&[3], Some(SectionText::Text)).starts_with("--inner\r\n"));
    assert_eq!(
        msg.section(&sec(&[2], Some(SectionText::Text))),
        Err(SectionError::NotMessage)
    );

    assert_eq!(
        String::from_utf8(msg.binary(&[1, 1]).unwrap().into_owned()).unwrap(),
        "Hello Bob,\r\nthe r\u{e9}sum\u{e9} is attached. This line is soft broken."
    );
    let pdf = msg.binary(&[2]).unwrap();
    assert!(pdf.starts_with(b"%PDF-1.4\n"));
    assert!(pdf.ends_with(b"%%EOF\n"));
    assert_eq!(msg.binary_size(&[2]).unwrap(), pdf.len());
    assert_eq!(&*msg.binary(&[3, 2]).unwrap(), b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        msg.binary(&[9]),
        Err(BinaryError::Section(SectionError::NoSuchPart))
    );
}

#[test]
fn broken_message_views() {
    let raw = fixture("broken.eml");
    let msg = Message::parse(&raw, &Limits::default());
    assert_eq!(
        msg.binary(&[2]),
        Err(BinaryError::UnknownCte("x-uuencode".into()))
    );
    assert_eq!(&*msg.section(&sec(&[1, 1], None)).unwrap(), b"");
    assert_eq!(
        &*msg.section(&sec(&[4], None)).unwrap(),
        b"last part runs to the end\r\n"
    );
    assert!(!msg.limits_hit());
}

#[test]
fn bare_lf_offsets_are_stored_bytes() {
    let raw = fixture("bare-lf.eml");
    assert!(!raw.contains(&b'\r'));
    let msg = Message::parse(&raw, &Limits::default());
    assert_eq!(&*msg.section(&sec(&[1], None)).unwrap(), b"plain text");
    assert_eq!(
        &*msg.section(&sec(&[2], Some(SectionText::Mime))).unwrap(),
        b"Content-Type: text/html\n\n"
    );
    assert_eq!(
        &*msg
            .section(&sec(
                &[],
                Some(SectionText::HeaderFieldsNot(vec![b"content-type".to_vec()]))
            ))
            .unwrap(),
        b"From: lf@example.org\nSubject: bare LF\n\n"
    );
    assert!(msg.body_contains("HTML"));
    let crlf = tern_mime::to_crlf(&raw);
    assert_eq!(
        crlf.len(),
        raw.len() + raw.iter().filter(|&&b| b == b'\n').count()
    );
    assert!(matches!(
        tern_mime::to_crlf(&crlf),
        std::borrow::Cow::Borrowed(_)
    ));
    assert_eq!(&*tern_mime::to_crlf(b"\na\r\nb\rc\n"), b"\r\na\r\nb\rc\r\n");
    assert_eq!(&*tern_mime::to_crlf(b"a\r\nend\r"), b"a\r\nend");
    assert_eq!(&*tern_mime::to_crlf(b"a\nend\n\r\r"), b"a\r\nend\r\n\r");
    assert_eq!(
        pop3::top(&raw, 2),
        b"From: lf@example.org\nSubject: bare LF\nContent-Type: multipart/alternative; boundary=lf\n\n--lf\nContent-Type: text/plain\n"
    );
}

#[test]
fn search_sort_and_thread_on_fixtures() {
    let nested = fixture("nested.eml");
    let encoded = fixture("encoded.eml");
    let missing = fixture("missing-headers.eml");
    let n = Message::parse(&nested, &Limits::default());
    let e = Message::parse(&encoded, &Limits::default());
    let m = Message::parse(&missing, &Limits::default());

    assert!(e.header_contains(b"subject", "café meeting TOMORROW"));
    assert!(e.header_contains(b"from", "jörg müller"));
    assert!(e.body_contains("grüße aus köln"));
    assert!(n.body_contains("RÉSUMÉ"));
    assert!(
        n.body_contains("original text"),
        "text inside message/rfc822"
    );
    assert!(!n.body_contains("JVBERi0"), "base64 attachment is not text");
    assert!(m.text_contains("no from, no date"));

    let k = n.sort_keys(0);
    assert_eq!(k.subject, "quarterly report");
    assert_eq!(k.display_from, "Ann Example");
    assert_eq!(
        k.cc, b"Team",
        "a list starting with a group sorts by the group name"
    );
    assert_eq!(e.sort_keys(0).subject, "Café meeting tomorrow");
    assert_eq!(e.sort_keys(0).display_from, "Jörg Müller");
    assert_eq!(m.sort_keys(777).date, 777);

    let inputs = vec![
        n.thread_message(1, 0),
        e.thread_message(2, 0),
        m.thread_message(3, 0),
    ];
    assert_eq!(
        inputs[0].references,
        vec!["<root@example.org>", "<parent@example.org>"]
    );
    assert!(inputs[0].is_reply);
    let mut out = Vec::new();
    thread::references(&inputs).render(&mut out);
    // By date: the missing-headers message has internal date 0, then
    // 1 July (encoded), then 7 July (nested).
    assert_eq!(out, b"(3)(2)(1)");
}
