//! Header-section surgery that verification and signing need: finding the
//! end of the header section, and removing `Authentication-Results:`
//! fields that claim our authserv-id (RFC 8601 5), which a sender could
//! forge to make a message look checked.
//!
//! Only the header section is ever rewritten (it is bounded); the body is
//! passed through untouched. Nothing here allocates more than the header
//! section it is given.

/// Offset of the first body byte: just after the empty line that ends the
/// header section. A message without an empty line is all header section
/// (returns its length).
pub fn body_offset(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 2;
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => p + 4,
        None => message.len(),
    }
}

/// Splits a header section into raw fields, each with its folded
/// continuation lines and its line end (or the header section's end).
fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < header.len() {
        let line_end = match header[pos..].iter().position(|&b| b == b'\n') {
            Some(p) => pos + p + 1,
            None => header.len(),
        };
        // A new field starts at a line that does not begin with WSP.
        if pos > start && !matches!(header[pos], b' ' | b'\t') {
            out.push(&header[start..pos]);
            start = pos;
        }
        pos = line_end;
    }
    if start < header.len() {
        out.push(&header[start..]);
    }
    out
}

/// The authserv-id of an `Authentication-Results:` field value: the first
/// token, after any comments, up to `;` or white space (RFC 8601 2.2).
fn authserv_id(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let mut rest = text.trim_start();
    // Skip comments (nesting allowed) and folding white space.
    while let Some(after) = rest.strip_prefix('(') {
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = after[end?..].trim_start();
    }
    let id: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '(')
        .collect();
    let id = id
        .trim_matches('"')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!id.is_empty()).then_some(id)
}

/// Whether `header` may hold an `Authentication-Results:` field (the name
/// appears anywhere, any case): when not, [`strip_our_auth_results`] has
/// nothing to do and the header section can be passed on as it is.
pub fn mentions_auth_results(header: &[u8]) -> bool {
    const NAME: &[u8] = b"authentication-results";
    header
        .windows(NAME.len())
        .any(|w| w.eq_ignore_ascii_case(NAME))
}

/// Removes every `Authentication-Results:` field of `header` whose
/// authserv-id is `ours` (case-insensitive, trailing dot ignored). Returns
/// the new header section and how many fields were removed.
pub fn strip_our_auth_results(header: &[u8], ours: &str) -> (Vec<u8>, usize) {
    let ours = ours.trim_end_matches('.').to_ascii_lowercase();
    let mut out = Vec::with_capacity(header.len());
    let mut removed = 0;
    for field in fields(header) {
        let claims_ours = field
            .iter()
            .position(|&b| b == b':')
            .filter(|&colon| {
                field[..colon]
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"Authentication-Results")
            })
            .and_then(|colon| authserv_id(&field[colon + 1..]))
            .is_some_and(|id| id == ours);
        if claims_ours {
            removed += 1;
        } else {
            out.extend_from_slice(field);
        }
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_offset_finds_the_empty_line() {
        assert_eq!(body_offset(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(body_offset(b"\r\nbody"), 2);
        assert_eq!(body_offset(b"A: b\r\n"), 6);
    }

    #[test]
    fn forged_results_with_our_id_are_removed_others_kept() {
        let header = b"Received: x\r\n\
Authentication-Results: MX.example.test.; dmarc=pass\r\n\
authentication-results: (comment (nested)) mx.example.test;\r\n\tspf=pass\r\n\
Authentication-Results: other.example; dkim=pass\r\n\
Authentication-Results: mx.example.test.evil; dkim=pass\r\n\
Subject: hi\r\n";
        let (out, removed) = strip_our_auth_results(header, "mx.example.test");
        assert_eq!(removed, 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: x\r\n\
Authentication-Results: other.example; dkim=pass\r\n\
Authentication-Results: mx.example.test.evil; dkim=pass\r\n\
Subject: hi\r\n"
        );
    }

    #[test]
    fn mentions_are_found_in_any_case() {
        assert!(mentions_auth_results(
            b"A: b\r\nAUTHENTICATION-RESULTS: mx; none\r\n"
        ));
        assert!(mentions_auth_results(b"X: authentication-results\r\n"));
        assert!(!mentions_auth_results(
            b"From: a@b.test\r\nSubject: results\r\n"
        ));
        assert!(!mentions_auth_results(b""));
    }

    #[test]
    fn folded_fields_stay_whole() {
        let header = b"Subject: a\r\n b\r\nTo: c\r\n";
        let (out, removed) = strip_our_auth_results(header, "mx");
        assert_eq!(removed, 0);
        assert_eq!(out, header);
    }

    #[test]
    fn authserv_id_parsing() {
        assert_eq!(authserv_id(b" mx.test; none").as_deref(), Some("mx.test"));
        assert_eq!(authserv_id(b" mx.test 1; none").as_deref(), Some("mx.test"));
        assert_eq!(authserv_id(b"(c) MX.Test;").as_deref(), Some("mx.test"));
        assert_eq!(authserv_id(b" ; none"), None);
        assert_eq!(authserv_id(b" (unclosed"), None);
    }
}
