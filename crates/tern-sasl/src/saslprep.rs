//! SASLprep-lite: the parts of SASLprep (RFC 4013) Tern applies to SCRAM
//! user names and passwords.
//!
//! Implemented: mapping of "commonly mapped to nothing" characters (RFC 3454
//! table B.1) to nothing and of non-ASCII spaces (table C.1.2) to U+0020,
//! and refusal of every prohibited character of RFC 4013 section 2.3
//! (controls, private use, non-characters, tagging, change-display and
//! inappropriate-for-plain-text characters).
//!
//! Not implemented (the limitation): Unicode NFKC normalisation and the
//! bidirectional check of RFC 3454 section 6. A password that is not
//! already in NFKC form (for example one typed with a decomposed accent)
//! therefore derives different SCRAM keys here than in a client that
//! normalises; ASCII and NFKC-form passwords, the overwhelming majority, are
//! unaffected. This module must never accept a prohibited character: the
//! result is used in a protocol message and in logs.

use std::borrow::Cow;

/// The input contains a character SASLprep prohibits, or maps to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prohibited;

fn mapped_to_nothing(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{1806}' | '\u{180B}'..='\u{180D}'
        | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}')
}

fn non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

fn prohibited(c: char) -> bool {
    let cp = c as u32;
    // C.2.1 / C.2.2: controls.
    c.is_control()
        || matches!(c,
            '\u{06DD}' | '\u{070F}' | '\u{180E}' | '\u{2028}' | '\u{2029}'
            | '\u{2061}'..='\u{2063}' | '\u{206A}'..='\u{206F}' | '\u{FFF9}'..='\u{FFFD}'
            | '\u{1D173}'..='\u{1D17A}'
            // C.3 private use
            | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}'
            // C.4 non-characters
            | '\u{FDD0}'..='\u{FDEF}'
            // C.7 ideographic description, C.8 change display properties
            | '\u{2FF0}'..='\u{2FFB}' | '\u{0340}' | '\u{0341}' | '\u{200E}' | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            // C.9 tagging
            | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
        || (cp & 0xFFFE) == 0xFFFE
}

/// Applies SASLprep-lite. Borrowed when nothing had to be mapped.
pub(crate) fn prep(input: &str) -> Result<Cow<'_, str>, Prohibited> {
    if input.chars().any(prohibited) {
        return Err(Prohibited);
    }
    let out: Cow<'_, str> = if input
        .chars()
        .any(|c| mapped_to_nothing(c) || non_ascii_space(c))
    {
        Cow::Owned(
            input
                .chars()
                .filter(|&c| !mapped_to_nothing(c))
                .map(|c| if non_ascii_space(c) { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(input)
    };
    if out.is_empty() {
        return Err(Prohibited);
    }
    Ok(out)
}

/// True when `s` has no control character (C0, DEL, C1). Used for the
/// identities of every mechanism: they end up in logs and replies.
pub(crate) fn is_clean_identity(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4013_examples() {
        // RFC 4013 section 3, the examples this subset can handle.
        assert_eq!(prep("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(prep("user").unwrap(), "user");
        assert_eq!(prep("USER").unwrap(), "USER");
        assert_eq!(prep("\u{0007}"), Err(Prohibited));
        assert!(matches!(prep("user"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn spaces_and_prohibited() {
        assert_eq!(prep("a\u{00A0}b\u{3000}c").unwrap(), "a b c");
        assert_eq!(prep("\u{200B}"), Err(Prohibited));
        for bad in [
            "a\nb",
            "a\rb",
            "a\0b",
            "x\u{7F}",
            "\u{85}",
            "\u{E000}",
            "\u{FFFF}",
            "\u{202E}x",
            "\u{E0041}",
        ] {
            assert_eq!(prep(bad), Err(Prohibited), "{bad:?}");
        }
        assert_eq!(prep("pässwörd ✓").unwrap(), "pässwörd ✓");
    }

    #[test]
    fn identities() {
        assert!(is_clean_identity("alice@example.test"));
        assert!(is_clean_identity("José"));
        assert!(!is_clean_identity(""));
        assert!(!is_clean_identity("alice\r\nMAIL FROM:<x>"));
        assert!(!is_clean_identity("a\u{9B}b"));
    }
}
