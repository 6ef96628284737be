//! IMAP BODY and BODYSTRUCTURE (RFC 9051 §7.5.2, RFC 3501 §7.4.2) written
//! from a parsed [`Part`] tree.
//!
//! Types, subtypes and transfer encodings are written uppercase, as in the
//! RFC examples; parameter names and values, Content-ID, description,
//! disposition, language and location are the raw header bytes (RFC 2231
//! continuations joined, see [`crate::params`]). A text part without a
//! charset gets `("CHARSET" "US-ASCII")`; a missing encoding is `"7BIT"`.
//! Size is the body's stored octets; lines are the body's line count (line
//! ends counted, plus one for a final line without a line end).
//! Multiparts and messages that limits kept from being split are written
//! as `"APPLICATION" "OCTET-STREAM"` so the syntax stays valid.

use crate::envelope::Envelope;
use crate::header::{first_value, unfold};
use crate::imap;
use crate::params::{self, Param};
use crate::structure::{Kind, Part};

/// Lines in `body` as IMAP counts them.
pub fn count_lines(body: &[u8]) -> usize {
    let lf = body.iter().filter(|&&b| b == b'\n').count();
    if body.last().is_some_and(|&b| b != b'\n') {
        lf + 1
    } else {
        lf
    }
}

fn upper(out: &mut Vec<u8>, s: &str) {
    imap::string(out, s.to_ascii_uppercase().as_bytes());
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
        out.extend(b"\"CHARSET\" \"US-ASCII\"");
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
    let d = params::parse(raw);
    if d.value.is_empty() {
        out.extend(b"NIL");
        return;
    }
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
        [one] => imap::string(out, one),
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
        upper(out, &media.subtype);
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
        out.extend(b"\"APPLICATION\" \"OCTET-STREAM\"");
    } else {
        upper(out, &media.kind);
        out.push(b' ');
        upper(out, &media.subtype);
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
    if part.encoding.is_empty() {
        out.extend(b"\"7BIT\"");
    } else {
        upper(out, &part.encoding);
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
        assert_eq!(count_lines(b"a"), 1);
        assert_eq!(count_lines(b"a\r\n"), 1);
        assert_eq!(count_lines(b"a\r\nb"), 2);
        assert_eq!(count_lines(b"\n\n"), 2);
    }

    #[test]
    fn defaults_for_a_bare_message() {
        let m = "Subject: x\r\n\r\nhello\r\nworld\r\n";
        assert_eq!(
            bs(m, false),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 14 2)"
        );
        assert_eq!(
            bs(m, true),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 14 2 NIL NIL NIL NIL)"
        );
        assert_eq!(
            bs("Content-Type: text/html\r\n\r\n<p>", false),
            "(\"TEXT\" \"HTML\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3 1)"
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
            "((\"TEXT\" \"PLAIN\" (\"charset\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 9 1 NIL NIL NIL NIL)\
             (\"APPLICATION\" \"PDF\" (\"name\" \"ab.pdf\") \"<id@x>\" \"the doc\" \"BASE64\" 4 \
             \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"filename*\" \"utf-8''%C3%A9.pdf\")) \
             \"fr\" \"http://x.test/a\") \
             \"MIXED\" (\"boundary\" \"=_b\") NIL (\"en\" \"de\") NIL)"
        );
        assert_eq!(
            bs(m, false),
            "((\"TEXT\" \"PLAIN\" (\"charset\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 9 1)\
             (\"APPLICATION\" \"PDF\" (\"name\" \"ab.pdf\") \"<id@x>\" \"the doc\" \"BASE64\" 4) \
             \"MIXED\")"
        );
    }

    #[test]
    fn embedded_message() {
        let m =
            "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: a@b.test\r\n\r\nbody\r\n";
        assert_eq!(
            bs(m, false),
            "(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 40 \
             (NIL \"inner\" ((NIL NIL \"a\" \"b.test\")) ((NIL NIL \"a\" \"b.test\")) \
             ((NIL NIL \"a\" \"b.test\")) NIL NIL NIL NIL NIL) \
             (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 6 1) 4)"
        );
    }
}
