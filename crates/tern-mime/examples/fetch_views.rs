//! Prints what tern-mime answers for each message file named on the
//! command line (after [`tern_mime::to_crlf`]), one block per file:
//!
//! ```text
//! cargo run -p tern-mime --example fetch_views -- a.eml b.eml
//! cargo run -p tern-mime --example fetch_views -- --sections a.eml
//! ```
//!
//! The first form prints `ENVELOPE (...) BODYSTRUCTURE (...)`; the second
//! one line per section (`BODY[]`, `BODY[HEADER]`, `BODY[TEXT]`, then
//! `BODY[p]`, `BODY[p.MIME]` and `BINARY[p]` for every part `p`) with its
//! length and FNV-1a hash, or `ERR`. Used to compare with another server
//! (see `tests/fixtures/record_dovecot.py --compare`).

use std::io::Write;

use tern_mime::{Kind, Limits, Message, Part, Section, SectionText};

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn paths(p: &Part, prefix: &mut Vec<u32>, out: &mut Vec<Vec<u32>>) {
    match &p.kind {
        Kind::Multipart(children) => {
            for (i, c) in children.iter().enumerate() {
                prefix.push(u32::try_from(i + 1).unwrap_or(u32::MAX));
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        Kind::Message(inner) => match inner.kind {
            Kind::Multipart(_) => paths(inner, prefix, out),
            _ => {
                prefix.push(1);
                out.push(prefix.clone());
                prefix.pop();
            }
        },
        Kind::Leaf => {}
    }
}

fn show(out: &mut Vec<u8>, name: &str, r: Result<Vec<u8>, String>) {
    let line = match r {
        Ok(b) => format!("{name} {} {:016x}\n", b.len(), fnv(&b)),
        Err(_) => format!("{name} ERR\n"),
    };
    out.extend(line.as_bytes());
}

fn sections(msg: &Message<'_>, out: &mut Vec<u8>) {
    let body = |part: &[u32], text: Option<SectionText>| {
        msg.section(&Section {
            part: part.to_vec(),
            text,
        })
        .map(|b| b.into_owned())
        .map_err(|e| e.to_string())
    };
    show(out, "BODY[]", body(&[], None));
    show(out, "BODY[HEADER]", body(&[], Some(SectionText::Header)));
    show(out, "BODY[TEXT]", body(&[], Some(SectionText::Text)));
    let mut all = Vec::new();
    if !matches!(msg.root().kind, Kind::Multipart(_)) {
        all.push(vec![1]);
    }
    paths(msg.root(), &mut Vec::new(), &mut all);
    for p in all {
        let dotted: Vec<String> = p.iter().map(u32::to_string).collect();
        let dotted = dotted.join(".");
        show(out, &format!("BODY[{dotted}]"), body(&p, None));
        show(
            out,
            &format!("BODY[{dotted}.MIME]"),
            body(&p, Some(SectionText::Mime)),
        );
        show(
            out,
            &format!("BINARY[{dotted}]"),
            msg.binary(&p)
                .map(|b| b.into_owned())
                .map_err(|e| e.to_string()),
        );
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let with_sections = args.first().is_some_and(|a| a == "--sections");
    if with_sections {
        args.remove(0);
    }
    let mut stdout = std::io::stdout().lock();
    for path in args {
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        };
        let raw = tern_mime::to_crlf(&raw);
        let msg = Message::parse(&raw, &Limits::default());
        let mut out = format!("== {path}\n").into_bytes();
        if with_sections {
            sections(&msg, &mut out);
        } else {
            out.extend(b"ENVELOPE ");
            msg.envelope_imap(&mut out);
            out.extend(b" BODYSTRUCTURE ");
            msg.body_structure_imap(true, &mut out);
            out.push(b'\n');
        }
        if stdout.write_all(&out).is_err() {
            std::process::exit(1);
        }
    }
}
