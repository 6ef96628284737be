//! `Content-Type` and `Content-Disposition` values (RFC 2045 §5.1,
//! RFC 2183): a main value and `; name=value` parameters, with RFC 2231
//! continuations (`name*0`, `name*1*`…) joined.
//!
//! Values stay as the raw bytes of the header (quoted strings unquoted,
//! nothing decoded), because IMAP BODYSTRUCTURE reports them that way.
//! A joined RFC 2231 parameter keeps its extended form: if any segment
//! was `name*N*=`, the result is `name*` with value
//! `charset'lang'percent-encoded`, as Dovecot reports it.

/// One parameter: name as written (continuation suffix removed) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Attribute name as written; ends in `*` for an RFC 2231 extended value.
    pub name: Vec<u8>,
    /// Value bytes, unquoted.
    pub value: Vec<u8>,
}

/// A parsed `type/subtype; params` or `disposition; params` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderParams {
    /// The value before the first `;` (`text/plain`, `attachment`), trimmed.
    pub value: Vec<u8>,
    /// The parameters in order of first appearance.
    pub params: Vec<Param>,
}

impl HeaderParams {
    /// The value of the parameter `name` (ASCII case-insensitive), also
    /// found under its extended form `name*`.
    pub fn param(&self, name: &[u8]) -> Option<&[u8]> {
        find(&self.params, name)
    }
}

/// The value of parameter `name` in `params` (ASCII case-insensitive; the
/// extended form `name*` also matches).
pub fn find<'a>(params: &'a [Param], name: &[u8]) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|p| {
            p.name.eq_ignore_ascii_case(name)
                || p.name
                    .strip_suffix(b"*")
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|p| p.value.as_slice())
}

const MAX_PARAMS: usize = 64;

fn is_tspecial(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')'
            | b'<'
            | b'>'
            | b'@'
            | b','
            | b';'
            | b':'
            | b'\\'
            | b'"'
            | b'/'
            | b'['
            | b']'
            | b'?'
            | b'='
    )
}

struct Lexer<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    /// Skips blanks, line ends and (nested) comments.
    fn skip_cfws(&mut self) {
        while self.pos < self.b.len() {
            match self.b[self.pos] {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'(' => {
                    let mut depth = 0usize;
                    while self.pos < self.b.len() {
                        match self.b[self.pos] {
                            b'\\' => self.pos += 1,
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    self.pos += 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        self.pos += 1;
                    }
                    // A `\` as the last byte steps one past the end.
                    self.pos = self.pos.min(self.b.len());
                }
                _ => break,
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// A token (RFC 2045) or a quoted string, unquoted.
    fn value(&mut self) -> Vec<u8> {
        self.skip_cfws();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let mut out = Vec::new();
            while let Some(c) = self.peek() {
                self.pos += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        if let Some(n) = self.peek() {
                            out.push(n);
                            self.pos += 1;
                        }
                    }
                    b'\r' | b'\n' => {}
                    _ => out.push(c),
                }
            }
            out
        } else {
            let start = self.pos;
            while let Some(c) = self.peek() {
                // Lenient: unquoted values often hold `/` or `=`
                // (`boundary=----=_Part_1`); stop only where a value
                // cannot go on.
                if c <= b' ' || matches!(c, b';' | b'(' | b'"') {
                    break;
                }
                self.pos += 1;
            }
            self.b[start..self.pos].to_vec()
        }
    }

    /// A parameter attribute name (a token, stopping at `=`).
    fn name(&mut self) -> Vec<u8> {
        self.skip_cfws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c <= b' ' || c == 0x7f || is_tspecial(c) {
                break;
            }
            self.pos += 1;
        }
        self.b[start..self.pos].to_vec()
    }
}

/// Parses a `Content-Type`/`Content-Disposition` raw value.
pub fn parse(raw: &[u8]) -> HeaderParams {
    let end = raw.iter().position(|&b| b == b';').unwrap_or(raw.len());
    let main: Vec<u8> = {
        let mut lx = Lexer {
            b: &raw[..end],
            pos: 0,
        };
        let mut v = Vec::new();
        loop {
            lx.skip_cfws();
            match lx.peek() {
                None => break,
                Some(b'"') => v.extend(lx.value()),
                Some(c) if c == b'/' || !(c <= b' ' || is_tspecial(c)) => {
                    v.push(c);
                    lx.pos += 1;
                }
                Some(_) => lx.pos += 1,
            }
        }
        v
    };
    let mut lx = Lexer { b: raw, pos: end };
    let mut raw_params: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while lx.peek() == Some(b';') && raw_params.len() < MAX_PARAMS * 4 {
        lx.pos += 1;
        let name = lx.name();
        lx.skip_cfws();
        if lx.peek() != Some(b'=') {
            // Skip to the next `;`.
            while lx.peek().is_some_and(|c| c != b';') {
                if lx.peek() == Some(b'"') {
                    lx.value();
                } else {
                    lx.pos += 1;
                }
            }
            continue;
        }
        lx.pos += 1;
        let value = lx.value();
        lx.skip_cfws();
        while lx.peek().is_some_and(|c| c != b';') {
            lx.pos += 1;
        }
        if !name.is_empty() {
            raw_params.push((name, value));
        }
    }
    HeaderParams {
        value: main,
        params: join_rfc2231(raw_params),
    }
}

/// `type/subtype` of a Content-Type value when it is exactly a token, an
/// optional `/` and token, then nothing but comments and blanks before the
/// first `;`. `text` alone gives an empty subtype. `None` when anything
/// else is there (Dovecot then reports type and subtype as "").
pub fn type_subtype(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = raw.iter().position(|&b| b == b';').unwrap_or(raw.len());
    let mut lx = Lexer {
        b: &raw[..end],
        pos: 0,
    };
    let kind = token(&mut lx);
    lx.skip_cfws();
    let subtype = if lx.peek() == Some(b'/') {
        lx.pos += 1;
        token(&mut lx)
    } else {
        &raw[0..0]
    };
    lx.skip_cfws();
    (lx.peek().is_none() && !kind.is_empty()).then_some((kind, subtype))
}

fn token<'a>(lx: &mut Lexer<'a>) -> &'a [u8] {
    lx.skip_cfws();
    let start = lx.pos;
    while let Some(c) = lx.peek() {
        if c <= b' ' || c == 0x7f || is_tspecial(c) {
            break;
        }
        lx.pos += 1;
    }
    &lx.b[start..lx.pos]
}

/// Splits `name*N` / `name*N*` into `(name, N, extended)`.
fn continuation(name: &[u8]) -> Option<(&[u8], u32, bool)> {
    let (body, ext) = match name.strip_suffix(b"*") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let star = body.iter().rposition(|&b| b == b'*')?;
    let digits = &body[star + 1..];
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((&body[..star], n, ext))
}

/// One RFC 2231 segment: number, extended, value.
type Segment = (u32, bool, Vec<u8>);

fn join_rfc2231(raw: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Param> {
    // Plain parameters first, then the joined RFC 2231 ones (Dovecot's
    // order).
    let mut out: Vec<Param> = Vec::new();
    let mut groups: Vec<(Vec<u8>, Vec<Segment>)> = Vec::new();
    for (name, value) in raw {
        let split = continuation(&name).or_else(|| {
            // `name*=charset''value`: one extended segment.
            name.strip_suffix(b"*")
                .filter(|b| !b.is_empty())
                .map(|b| (b, 0, true))
        });
        if let Some((base, n, ext)) = split {
            let base = base.to_vec();
            if let Some(g) = groups.iter_mut().find(|g| g.0.eq_ignore_ascii_case(&base)) {
                if g.1.len() < MAX_PARAMS {
                    g.1.push((n, ext, value));
                }
            } else if groups.len() < MAX_PARAMS {
                groups.push((base, vec![(n, ext, value)]));
            }
            continue;
        }
        // Duplicates are kept, as written (lookups take the first).
        if out.len() < MAX_PARAMS {
            out.push(Param { name, value });
        }
    }
    for (base, mut segs) in groups {
        segs.sort_by_key(|s| s.0);
        let any_ext = segs.iter().any(|s| s.1);
        let mut value = Vec::new();
        for (_, ext, v) in &segs {
            if any_ext && !ext {
                // A plain segment inside an extended value: percent-encode
                // what needs it, so the whole stays one extended value.
                for &b in v {
                    if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                        value.push(b);
                    } else {
                        value.extend(format!("%{b:02X}").as_bytes());
                    }
                }
            } else {
                value.extend(v);
            }
        }
        let mut name = base;
        if any_ext {
            name.push(b'*');
        }
        if !out.iter().any(|p| p.name.eq_ignore_ascii_case(&name)) {
            out.push(Param { name, value });
        }
    }
    out
}

/// Decodes an RFC 2231 extended value `charset'lang'%xx…` to UTF-8
/// (lossy). Returns `None` if `value` is not in that form.
pub fn decode_extended(value: &[u8]) -> Option<String> {
    let q1 = value.iter().position(|&b| b == b'\'')?;
    let rest = &value[q1 + 1..];
    let q2 = rest.iter().position(|&b| b == b'\'')?;
    let charset = &value[..q1];
    let enc = &rest[q2 + 1..];
    let mut bytes = Vec::with_capacity(enc.len());
    let mut i = 0;
    while i < enc.len() {
        if enc[i] == b'%' && i + 2 < enc.len() {
            let h = hex(enc[i + 1]).zip(hex(enc[i + 2]));
            if let Some((a, b)) = h {
                bytes.push(a * 16 + b);
                i += 3;
                continue;
            }
        }
        bytes.push(enc[i]);
        i += 1;
    }
    Some(crate::charset::to_utf8(charset, &bytes).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: &str) -> Param {
        Param {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn content_type_cases() {
        let cases: &[(&str, &str, Vec<Param>)] = &[
            ("text/plain", "text/plain", vec![]),
            (
                " TEXT/Plain ; charset=\"UTF-8\" (comment); format=flowed",
                "TEXT/Plain",
                vec![p("charset", "UTF-8"), p("format", "flowed")],
            ),
            (
                "multipart/mixed;\r\n boundary=\"a \\\"b\\\" c\"",
                "multipart/mixed",
                vec![p("boundary", "a \"b\" c")],
            ),
            ("text / html", "text/html", vec![]),
            (
                "text/plain; junk; name=x",
                "text/plain",
                vec![p("name", "x")],
            ),
            (
                "application/x; name*0=\"long\"; name*1=\"er.txt\"",
                "application/x",
                vec![p("name", "longer.txt")],
            ),
            (
                "application/x; name*1*=%E2%82%AC.txt; name*0*=utf-8''price-",
                "application/x",
                vec![p("name*", "utf-8''price-%E2%82%AC.txt")],
            ),
            (
                "application/x; name*=utf-8''%E2%82%AC",
                "application/x",
                vec![p("name*", "utf-8''%E2%82%AC")],
            ),
            ("", "", vec![]),
        ];
        for (raw, value, params) in cases {
            let got = parse(raw.as_bytes());
            assert_eq!(got.value, value.as_bytes(), "{raw}");
            assert_eq!(&got.params, params, "{raw}");
        }
    }

    #[test]
    fn hostile_values_do_not_panic() {
        for raw in [
            &b"text/plain; a=(\\"[..],
            b"x; (",
            b"; ; =",
            b"a/b; \"",
            b"a; b*=''",
            b"a; b*1*=%",
        ] {
            let _ = parse(raw);
        }
        assert_eq!(decode_extended(b"x''%"), Some("%".into()));
    }

    #[test]
    fn param_lookup_and_extended_decoding() {
        let h = parse(b"attachment; filename*=utf-8''%E2%82%AC%20x.txt");
        let v = h.param(b"FILENAME").unwrap();
        assert_eq!(decode_extended(v).unwrap(), "\u{20ac} x.txt");
        assert_eq!(decode_extended(b"plain"), None);
    }
}
