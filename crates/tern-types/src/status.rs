//! RFC 3463 enhanced mail system status codes (`class.subject.detail`).
//!
//! A plain value type: it never decides which code a situation deserves,
//! it only holds and prints one. Every SMTP reply Tern sends carries one.

use std::fmt;
use std::str::FromStr;

/// An RFC 3463 enhanced status code, e.g. `2.1.0` or `5.7.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject (0..=999).
    pub subject: u16,
    /// The detail (0..=999).
    pub detail: u16,
}

impl EnhancedStatus {
    /// Builds a status code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// `2.0.0` Other undefined status (success).
    pub const OK: EnhancedStatus = EnhancedStatus::new(2, 0, 0);

    /// True for class 2.
    pub const fn is_success(&self) -> bool {
        self.class == 2
    }

    /// The generic status of a class: `<class>.0.0` ("other undefined
    /// status", RFC 3463 3.1).
    pub const fn generic(class: u8) -> EnhancedStatus {
        EnhancedStatus::new(class, 0, 0)
    }

    /// The same subject and detail in another class: how a persistent
    /// transient failure (`4.4.7`, expired) is reported once it has
    /// become permanent (`5.4.7`).
    pub const fn with_class(self, class: u8) -> EnhancedStatus {
        EnhancedStatus::new(class, self.subject, self.detail)
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// The text was not an RFC 3463 status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid enhanced status code")]
pub struct ParseStatusError;

impl FromStr for EnhancedStatus {
    type Err = ParseStatusError;

    /// Parses `class "." subject "." detail` where class is 2, 4 or 5 and
    /// subject and detail are 1 to 3 digits (RFC 3463 section 2).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn part(p: &str) -> Result<u16, ParseStatusError> {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseStatusError);
            }
            p.parse().map_err(|_| ParseStatusError)
        }
        let mut it = s.split('.');
        let (Some(c), Some(s), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(ParseStatusError);
        };
        let class = match c {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return Err(ParseStatusError),
        };
        Ok(EnhancedStatus::new(class, part(s)?, part(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        let cases = [
            ("2.1.0", Some(EnhancedStatus::new(2, 1, 0))),
            ("5.7.1", Some(EnhancedStatus::new(5, 7, 1))),
            ("4.4.2", Some(EnhancedStatus::new(4, 4, 2))),
            ("5.999.999", Some(EnhancedStatus::new(5, 999, 999))),
            ("3.0.0", None),
            ("5.0", None),
            ("5.0.0.0", None),
            ("5.1000.0", None),
            ("5..0", None),
            ("5.+1.0", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<EnhancedStatus>().ok();
            assert_eq!(got, want, "{text}");
            if let Some(s) = got {
                assert_eq!(s.to_string(), text);
            }
        }
        assert!(EnhancedStatus::OK.is_success());
        assert!(!EnhancedStatus::new(5, 1, 1).is_success());
        assert_eq!(
            EnhancedStatus::new(4, 4, 7).with_class(5),
            EnhancedStatus::new(5, 4, 7)
        );
        assert_eq!(EnhancedStatus::generic(4).to_string(), "4.0.0");
    }
}
