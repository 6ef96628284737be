//! IMAP BODY and BODYSTRUCTURE (RFC 9051 §7.5.2, RFC 3501 §7.4.2) written
//! from a parsed [`Part`] tree.
//!
//! The output follows Dovecot (the reference server) byte for byte where
//! it can: types, subtypes, encodings, parameters, Content-ID,
//! description, disposition, language and location are the raw header
//! bytes as written (IMAP compares them case-insensitively; RFC 2231
//! continuations joined, see [`crate::params`]); a text part without a
//! charset gets `("charset" "us-ascii")`; a missing encoding is `"7bit"`;
//! the language is always a list. Size is the body's stored octets; lines
//! are the body's line ends (LF) counted, so a last line without a line
//! end does not count. Multiparts and messages that limits kept from being
//! split are written as `"application" "octet-stream"` so the syntax stays
//! valid.

use crate::envelope::Envelope;
use crate::header::{first_value, unfold};
use crate::imap;
use crate::params::{self, Param};
use crate::structure::{Kind, Part};

/// Lines in `body` as IMAP counts them.
pub fn count_lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

fn text(out: &mut Vec<u8>, s: &str) {
    imap::string(out, s.as_bytes());
}

fn write_params(out: &mut Vec<u8>, ps: &[Param], add_charset: bool) {
    if ps.is_empty() && !add_charset {
        out.extend(b"NIL");
        return;
    }
    out.push(b'(');
    let mut first = true;
    for p in ps {
        if !first {
            out.push(b' ');
        }
        first = false;
        imap::string(out, &p.name);
        out.push(b' ');
        imap::string(out, &p.value);
    }
    if add_charset {
        if !first {
            out.push(b' ');
        }
        out.extend(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

fn write_field(out: &mut Vec<u8>, header: &[u8], name: &[u8]) {
    imap::nstring(out, first_value(header, name).map(unfold).as_deref());
}

fn write_disposition(out: &mut Vec<u8>, header: &[u8]) {
    let Some(raw) = first_value(header, b"content-disposition") else {
        out.extend(b"NIL");
        return;
    };
    // Present but without a type still gives `("" params)`, as Dovecot.
    let d = params::parse(raw);
    out.push(b'(');
    imap::string(out, &d.value);
    out.push(b' ');
    write_params(out, &d.params, false);
    out.push(b')');
}

fn write_language(out: &mut Vec<u8>, header: &[u8]) {
    let Some(raw) = first_value(header, b"content-language") else {
        out.extend(b"NIL");
        return;
    };
    let tags: Vec<Vec<u8>> = raw
        .split(|&b| b == b',')
        .map(|t| params::parse(t).value)
        .filter(|t| !t.is_empty())
        .collect();
    match tags.as_slice() {
        [] => out.extend(b"NIL"),
        many => {
            out.push(b'(');
            for (i, t) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                imap::string(out, t);
            }
            out.push(b')');
        }
    }
}

/// Appends `disposition SP language SP location`.
fn write_dsp_lang_loc(out: &mut Vec<u8>, header: &[u8]) {
    write_disposition(out, header);
    out.push(b' ');
    write_language(out, header);
    out.push(b' ');
    write_field(out, header, b"content-location");
}

/// Appends the BODY (`extensible == false`) or BODYSTRUCTURE of `part`.
pub(crate) fn write(out: &mut Vec<u8>, bytes: &[u8], part: &Part, extensible: bool) {
    let header = &bytes[part.header.clone()];
    let body = &bytes[part.body.clone()];
    let media = &part.media;
    out.push(b'(');
    if let Kind::Multipart(children) = &part.kind {
        for c in children {
            write(out, bytes, c, extensible);
        }
        out.push(b' ');
        text(out, &media.subtype_raw);
        if extensible {
            out.push(b' ');
            write_params(out, &media.params, false);
            out.push(b' ');
            write_dsp_lang_loc(out, header);
        }
        out.push(b')');
        return;
    }
    let opaque =
        matches!(part.kind, Kind::Leaf) && (media.kind == "multipart" || media.is_message());
    if opaque {
        out.extend(b"\"application\" \"octet-stream\"");
    } else if let Kind::Message(_) = part.kind {
        // The body-type-msg form names its type, whatever the case written.
        out.extend(b"\"message\" \"rfc822\"");
    } else {
        text(out, &media.kind_raw);
        out.push(b' ');
        text(out, &media.subtype_raw);
    }
    out.push(b' ');
    let is_text = media.kind == "text";
    write_params(
        out,
        &media.params,
        is_text && media.param(b"charset").is_none(),
    );
    out.push(b' ');
    write_field(out, header, b"content-id");
    out.push(b' ');
    write_field(out, header, b"content-description");
    out.push(b' ');
    if part.encoding_raw.is_empty() {
        out.extend(b"\"7bit\"");
    } else {
        text(out, &part.encoding_raw);
    }
    out.push(b' ');
    imap::number(out, body.len());
    match &part.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            Envelope::from_header(&bytes[inner.header.clone()]).write_imap(out);
            out.push(b' ');
            write(out, bytes, inner, extensible);
            out.push(b' ');
            imap::number(out, count_lines(body));
        }
        _ if is_text => {
            out.push(b' ');
            imap::number(out, count_lines(body));
        }
        _ => {}
    }
    if extensible {
        out.push(b' ');
        write_field(out, header, b"content-md5");
        out.push(b' ');
        write_dsp_lang_loc(out, header);
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::{Limits, parse};

    fn bs(m: &str, ext: bool) -> String {
        let (root, _) = parse(m.as_bytes(), &Limits::default());
        let mut out = Vec::new();
        write(&mut out, m.as_bytes(), &root, ext);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"a"), 0);
        assert_eq!(count_lines(b"a\r\n"), 1);
        assert_eq!(count_lines(b"a\r\nb"), 1);
        assert_eq!(count_lines(b"\n\n"), 2);
    }

    #[test]
    fn defaults_for_a_bare_message() {
        let m = "Subject: x\r\n\r\nhello\r\nworld\r\n";
        assert_eq!(
            bs(m, false),
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 2)"
        );
        assert_eq!(
            bs(m, true),
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 2 NIL NIL NIL NIL)"
        );
        assert_eq!(
            bs("Content-Type: TEXT/Html\r\n\r\n<p>", false),
            "(\"TEXT\" \"Html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 0)"
        );
    }

    #[test]
    fn multipart_with_extension_data() {
        let m = "Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\
                 Content-Language: en, de\r\n\r\n\
                 --=_b\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n\
                 --=_b\r\nContent-Type: application/pdf; name*0=\"a\"; name*1=\"b.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment;\r\n filename*=utf-8''%C3%A9.pdf\r\n\
                 Content-ID: <id@x>\r\nContent-Description: the doc\r\n\
                 Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\
                 Content-Language: fr\r\nContent-Location: http://x.test/a\r\n\r\nAAAA\r\n\
                 --=_b--\r\n";
        assert_eq!(
            bs(m, true),
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 9 0 NIL NIL NIL NIL)\
             (\"application\" \"pdf\" (\"name\" \"ab.pdf\") \"<id@x>\" \"the doc\" \"base64\" 4 \
             \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"filename*\" \"utf-8''%C3%A9.pdf\")) \
             (\"fr\") \"http://x.test/a\") \
             \"mixed\" (\"boundary\" \"=_b\") NIL (\"en\" \"de\") NIL)"
        );
        assert_eq!(
            bs(m, false),
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 9 0)\
             (\"application\" \"pdf\" (\"name\" \"ab.pdf\") \"<id@x>\" \"the doc\" \"base64\" 4) \
             \"mixed\")"
        );
    }

    #[test]
    fn embedded_message() {
        let m =
            "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: a@b.test\r\n\r\nbody\r\n";
        assert_eq!(
            bs(m, false),
            "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 40 \
             (NIL \"inner\" ((NIL NIL \"a\" \"b.test\")) ((NIL NIL \"a\" \"b.test\")) \
             ((NIL NIL \"a\" \"b.test\")) NIL NIL NIL NIL NIL) \
             (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1) 4)"
        );
    }

    /// `lines` CRLF-terminated lines of `size` bytes in all.
    fn text_of(size: usize, lines: usize) -> String {
        let content = size - 2 * lines;
        (0..lines)
            .map(|i| {
                let n = content / lines + usize::from(i < content % lines);
                format!("{}\r\n", "x".repeat(n))
            })
            .collect()
    }

    #[test]
    fn rfc_examples() {
        // RFC 3501 §7.4.2 BODYSTRUCTURE example for a single part.
        let m = format!(
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\nContent-Transfer-Encoding: 7BIT\r\n\r\n{}",
            text_of(3028, 92)
        );
        assert_eq!(
            bs(&m, false),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92)"
        );
        // RFC 9051 §7.5.2's multipart example.
        let m = format!(
            "Content-Type: MULTIPART/MIXED; BOUNDARY=\"x\"\r\n\r\n\
             --x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\nContent-Transfer-Encoding: 7BIT\r\n\r\n{}\r\n\
             --x\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=\"cc.diff\"\r\n\
             Content-ID: <960723163407.20117h@cac.washington.edu>\r\n\
             Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n{}\r\n--x--\r\n",
            text_of(1152, 23),
            text_of(4554, 73)
        );
        assert_eq!(
            bs(&m, false),
            "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 1152 23)\
             (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\" \"NAME\" \"cc.diff\") \
             \"<960723163407.20117h@cac.washington.edu>\" \"Compiler diff\" \"BASE64\" 4554 73) \"MIXED\")"
        );
    }

    #[test]
    fn limits_make_opaque_leaves() {
        let m = "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\
                 Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n";
        let limits = Limits {
            max_depth: 1,
            ..Limits::default()
        };
        let (root, limited) = parse(m.as_bytes(), &limits);
        assert!(limited);
        let mut out = Vec::new();
        write(&mut out, m.as_bytes(), &root, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "((\"application\" \"octet-stream\" (\"boundary\" \"b\") NIL NIL \"7bit\" 15) \"mixed\")"
        );
    }
}
