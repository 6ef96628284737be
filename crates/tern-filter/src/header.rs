//! The header section of a message as a list of fields, for the header
//! [`Change`]s stages ask for.
//!
//! Parsing never fails: a line that is not a field (no colon) is kept as
//! it is and matches no name. Fields nobody changes are written back byte
//! for byte. Values handed to stages are the text after the colon without
//! the line end; a folded value keeps its folds as `\n` followed by the
//! white space, the way milters expect them. Values written back are
//! folded with CRLF, and any CR or LF not followed by white space is
//! replaced by a space, so a stage can never end the header section early
//! or smuggle a field.

use crate::Change;

/// One field, as it appears in the message (with its CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    raw: Vec<u8>,
    /// Length of the name (0 for a line with no colon).
    name_len: usize,
}

impl Field {
    fn new(name: &str, value: &str) -> Field {
        let name = sanitize_name(name);
        let mut raw = Vec::with_capacity(name.len() + value.len() + 4);
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        push_value(&mut raw, value.trim_start_matches([' ', '\t']));
        raw.extend_from_slice(b"\r\n");
        Field {
            name_len: name.len(),
            raw,
        }
    }

    fn name(&self) -> &[u8] {
        &self.raw[..self.name_len]
    }

    fn is(&self, name: &str) -> bool {
        self.name_len > 0 && self.name().eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A header section that changes can be applied to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderSection {
    fields: Vec<Field>,
    /// The empty line that ends the section (`\r\n`), or nothing when the
    /// message had none.
    end: Vec<u8>,
    changed: bool,
}

impl HeaderSection {
    /// Splits `section` (the header section, with or without the empty
    /// line that ends it) into fields.
    pub fn parse(section: &[u8]) -> HeaderSection {
        let mut fields: Vec<Field> = Vec::new();
        let mut end = Vec::new();
        let mut rest = section;
        while !rest.is_empty() {
            let line_len = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |p| p + 1);
            let (line, tail) = rest.split_at(line_len);
            rest = tail;
            if line == b"\r\n" || line == b"\n" {
                end = line.to_vec();
                // Anything after the empty line is not ours to parse; keep it.
                end.extend_from_slice(rest);
                break;
            }
            let continuation = matches!(line.first(), Some(b' ' | b'\t'));
            match fields.last_mut() {
                Some(last) if continuation => last.raw.extend_from_slice(line),
                _ => {
                    let name_len = line
                        .iter()
                        .position(|&b| b == b':')
                        .filter(|&p| {
                            p > 0 && line[..p].iter().all(|&b| b.is_ascii_graphic() && b != b':')
                        })
                        .unwrap_or(0);
                    fields.push(Field {
                        raw: line.to_vec(),
                        name_len,
                    });
                }
            }
        }
        HeaderSection {
            fields,
            end,
            changed: false,
        }
    }

    /// The number of fields (lines without a colon count too).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether any change was applied.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// Every field as (name, value): the value without the colon, the
    /// line end and (unless `leading_space`) the white space after the
    /// colon; folds as `\n` + white space.
    pub fn fields(&self, leading_space: bool) -> impl Iterator<Item = (&str, String)> + '_ {
        self.fields.iter().filter(|f| f.name_len > 0).map(move |f| {
            let name = std::str::from_utf8(f.name()).unwrap_or("");
            let mut v = &f.raw[f.name_len + 1..];
            if !leading_space {
                while let Some((b' ' | b'\t', rest)) = v.split_first() {
                    v = rest;
                }
            }
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            let v = v.strip_suffix(b"\r").unwrap_or(v);
            let text = String::from_utf8_lossy(v).replace("\r\n", "\n");
            (name, text)
        })
    }

    /// The value of the first field called `name`, as [`HeaderSection::fields`] gives it.
    pub fn get(&self, name: &str) -> Option<String> {
        self.fields(false)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Applies a header change; envelope changes and prepended fields are
    /// the caller's and are ignored here. Returns whether anything changed.
    pub fn apply(&mut self, change: &Change) -> bool {
        let changed = match change {
            Change::Append { name, value } => {
                self.fields.push(Field::new(name, value));
                true
            }
            Change::Insert { index, name, value } => {
                let at = (*index).min(self.fields.len());
                self.fields.insert(at, Field::new(name, value));
                true
            }
            Change::Replace { name, index, value } => {
                let pos = self
                    .fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.is(name))
                    .nth((*index).max(1) as usize - 1)
                    .map(|(i, _)| i);
                match (pos, value.trim().is_empty()) {
                    (Some(i), true) => {
                        self.fields.remove(i);
                        true
                    }
                    (Some(i), false) => {
                        // The message's own spelling of the name stays.
                        let own = String::from_utf8_lossy(self.fields[i].name()).into_owned();
                        self.fields[i] = Field::new(&own, value);
                        true
                    }
                    (None, true) => false,
                    (None, false) => {
                        self.fields.push(Field::new(name, value));
                        true
                    }
                }
            }
            Change::RemoveAll { name } => {
                let before = self.fields.len();
                self.fields.retain(|f| !f.is(name));
                self.fields.len() != before
            }
            Change::Remove { name, index } => {
                let matching: Vec<usize> = self
                    .fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.is(name))
                    .map(|(i, _)| i)
                    .collect();
                if *index == 0 {
                    let before = self.fields.len();
                    self.fields.retain(|f| !f.is(name));
                    let changed = self.fields.len() != before;
                    self.changed |= changed;
                    return changed;
                }
                let pick = match *index {
                    n if n > 0 => matching.get(n as usize - 1).copied(),
                    n => matching
                        .len()
                        .checked_sub(n.unsigned_abs() as usize)
                        .and_then(|i| matching.get(i).copied()),
                };
                match pick {
                    Some(i) => {
                        self.fields.remove(i);
                        true
                    }
                    None => false,
                }
            }
            Change::Subject(subject) => {
                match self.fields.iter().position(|f| f.is("Subject")) {
                    Some(i) => self.fields[i] = Field::new("Subject", subject),
                    None => self.fields.push(Field::new("Subject", subject)),
                }
                true
            }
            Change::Prepend { .. }
            | Change::ChangeFrom { .. }
            | Change::AddRcpt { .. }
            | Change::DelRcpt { .. } => false,
        };
        self.changed |= changed;
        changed
    }

    /// The section as bytes, with the empty line that ends it (if it had one).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.fields.iter().map(|f| f.raw.len()).sum::<usize>() + 2);
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
        }
        out.extend_from_slice(&self.end);
        out
    }
}

/// One header field as wire bytes (`Name: value\r\n`), sanitised like
/// fields a change adds.
pub fn field_bytes(name: &str, value: &str) -> Vec<u8> {
    Field::new(name, value).raw
}

/// A field name made safe: printable ASCII without colon or space.
fn sanitize_name(name: &str) -> String {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != ':')
        .collect();
    if n.is_empty() { "X-Invalid".into() } else { n }
}

/// Appends `value`, folding with CRLF where it has `\n` (or `\r\n`)
/// followed by white space, and turning every other CR, LF or NUL into a
/// space.
fn push_value(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                i += 1;
                continue;
            }
            b'\n' | b'\r' => {
                if matches!(bytes.get(i + 1), Some(b' ' | b'\t')) {
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.push(b' ');
                }
            }
            0 => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: a@b.test\r\nSubject: hello\r\n world\r\nX-Spam: old\r\nTo: c@d.test\r\nX-Spam: older\r\n\r\nbody\r\n";

    #[test]
    fn round_trip_unchanged() {
        let h = HeaderSection::parse(MSG);
        assert_eq!(h.to_bytes(), MSG);
        assert_eq!(h.len(), 5);
        assert!(!h.is_changed());
        let section_only = &MSG[..MSG.len() - 6];
        assert_eq!(HeaderSection::parse(section_only).to_bytes(), section_only);
        let no_end = b"From: a@b\r\nTo: c@d\r\n";
        assert_eq!(HeaderSection::parse(no_end).to_bytes(), no_end);
    }

    #[test]
    fn values_for_stages() {
        let h = HeaderSection::parse(MSG);
        let f: Vec<_> = h.fields(false).collect();
        assert_eq!(f[1], ("Subject", "hello\n world".to_string()));
        let f: Vec<_> = h.fields(true).collect();
        assert_eq!(f[0], ("From", " a@b.test".to_string()));
        assert_eq!(h.get("subject").as_deref(), Some("hello\n world"));
    }

    #[test]
    fn changes() {
        let mut h = HeaderSection::parse(MSG);
        assert!(h.apply(&Change::Replace {
            name: "x-spam".into(),
            index: 2,
            value: "new".into()
        }));
        assert!(h.apply(&Change::Insert {
            index: 0,
            name: "X-First".into(),
            value: "1".into()
        }));
        assert!(h.apply(&Change::Append {
            name: "X-Last".into(),
            value: "a\n\tb".into()
        }));
        assert!(h.apply(&Change::Subject("[SPAM] hello".into())));
        assert!(h.apply(&Change::Remove {
            name: "X-Spam".into(),
            index: 1
        }));
        let out = String::from_utf8(h.to_bytes()).unwrap();
        assert_eq!(
            out,
            "X-First: 1\r\nFrom: a@b.test\r\nSubject: [SPAM] hello\r\nTo: c@d.test\r\nX-Spam: new\r\nX-Last: a\r\n\tb\r\n\r\nbody\r\n"
        );
        assert!(h.apply(&Change::Replace {
            name: "X-Spam".into(),
            index: 1,
            value: String::new()
        }));
        assert!(!h.apply(&Change::Replace {
            name: "X-Spam".into(),
            index: 1,
            value: String::new()
        }));
        assert!(h.apply(&Change::RemoveAll {
            name: "x-last".into()
        }));
        assert!(h.is_changed());
    }

    #[test]
    fn remove_from_the_bottom_and_all() {
        let mut h = HeaderSection::parse(MSG);
        assert!(h.apply(&Change::Remove {
            name: "X-Spam".into(),
            index: -1
        }));
        assert_eq!(h.get("X-Spam").as_deref(), Some("old"));
        assert!(!h.apply(&Change::Remove {
            name: "X-Spam".into(),
            index: -5
        }));
        assert!(h.apply(&Change::Remove {
            name: "X-Spam".into(),
            index: 0
        }));
        assert_eq!(h.get("X-Spam"), None);
    }

    #[test]
    fn added_values_cannot_smuggle_fields() {
        let mut h = HeaderSection::parse(b"From: a\r\n\r\n");
        h.apply(&Change::Append {
            name: "X-Bad\r\nBcc".into(),
            value: "v\r\nBcc: evil@x\n\r\n\r\nbody".into(),
        });
        let out = String::from_utf8(h.to_bytes()).unwrap();
        assert_eq!(out, "From: a\r\nX-BadBcc: v Bcc: evil@x   body\r\n\r\n");
        assert_eq!(field_bytes("", "x"), b"X-Invalid: x\r\n");
    }

    #[test]
    fn lines_without_colon_are_kept_and_never_match() {
        let raw = b"garbage line\r\nFrom: a\r\n\r\n";
        let mut h = HeaderSection::parse(raw);
        assert_eq!(h.fields(false).count(), 1);
        assert!(!h.apply(&Change::RemoveAll {
            name: "garbage line".into()
        }));
        assert_eq!(h.to_bytes(), raw);
    }
}
