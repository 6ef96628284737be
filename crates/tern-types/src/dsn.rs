//! Delivery Status Notification parameters (RFC 3461) and the BODY type
//! (RFC 6152, RFC 3030) as they travel with an envelope.
//!
//! These are plain data: parsing them out of `MAIL`/`RCPT` parameters is
//! the SMTP core's job; the queue stores them and outbound delivery acts on
//! them. Nothing here does I/O.

use std::fmt;
use std::str::FromStr;

/// `BODY=` on `MAIL FROM` (RFC 6152 8BITMIME, RFC 3030 BINARYMIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BodyType {
    /// `BODY=7BIT`, or no BODY parameter.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME` (only valid with BDAT).
    BinaryMime,
}

impl BodyType {
    /// The keyword as written in the ESMTP parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }
}

/// A `BODY=` or `RET=` value that is not one of its keywords.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown keyword")]
pub struct KeywordError;

impl FromStr for BodyType {
    type Err = KeywordError;

    /// `7BIT`, `8BITMIME` or `BINARYMIME`, in any case.
    fn from_str(s: &str) -> Result<BodyType, KeywordError> {
        [
            BodyType::SevenBit,
            BodyType::EightBitMime,
            BodyType::BinaryMime,
        ]
        .into_iter()
        .find(|b| b.as_str().eq_ignore_ascii_case(s))
        .ok_or(KeywordError)
    }
}

impl FromStr for Ret {
    type Err = KeywordError;

    /// `FULL` or `HDRS`, in any case.
    fn from_str(s: &str) -> Result<Ret, KeywordError> {
        [Ret::Full, Ret::Headers]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or(KeywordError)
    }
}

impl fmt::Display for BodyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `RET=` on `MAIL FROM` (RFC 3461 4.3): how much of the message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: only the headers.
    Headers,
}

impl Ret {
    /// The keyword as written in the ESMTP parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Headers => "HDRS",
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `NOTIFY=` on `RCPT TO` (RFC 3461 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notify {
    /// `NOTIFY=NEVER`: no DSN of any kind.
    Never,
    /// Some combination of `SUCCESS`, `FAILURE` and `DELAY` (at least one set).
    On {
        /// Report successful delivery.
        success: bool,
        /// Report failure.
        failure: bool,
        /// Report delays.
        delay: bool,
    },
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Notify::Never => f.write_str("NEVER"),
            Notify::On {
                success,
                failure,
                delay,
            } => {
                let mut first = true;
                for (set, word) in [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")] {
                    if set {
                        if !first {
                            f.write_str(",")?;
                        }
                        f.write_str(word)?;
                        first = false;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The value of `NOTIFY=` is not `NEVER` alone nor a list of `SUCCESS`,
/// `FAILURE` and `DELAY`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// `NEVER` together with another keyword (RFC 3461 4.1: "NEVER" alone).
    #[error("NOTIFY=NEVER cannot be combined")]
    NeverCombined,
    /// An empty value or item, or a word that is not a NOTIFY keyword.
    #[error("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")]
    Syntax,
}

impl Notify {
    /// What a recipient without `NOTIFY` gets (RFC 3461 4.1 leaves it to
    /// the MTA; like most, Tern reports failures and delays).
    pub const DEFAULT: Notify = Notify::On {
        success: false,
        failure: true,
        delay: true,
    };

    /// Parses a `NOTIFY=` value (RFC 3461 4.1): `NEVER` alone, or a
    /// comma-separated list of one or more of `SUCCESS`, `FAILURE` and
    /// `DELAY`, in any case. White space around an item is ignored (the
    /// wire form has none; stored forms may). This is the one NOTIFY
    /// parser: the SMTP command parser, the spool and outbound delivery
    /// all read the value through it.
    pub fn parse(value: &str) -> Result<Notify, NotifyError> {
        let (mut success, mut failure, mut delay, mut never) = (false, false, false, false);
        let mut items = 0;
        for item in value.split(',').map(str::trim) {
            items += 1;
            if item.eq_ignore_ascii_case("SUCCESS") {
                success = true;
            } else if item.eq_ignore_ascii_case("FAILURE") {
                failure = true;
            } else if item.eq_ignore_ascii_case("DELAY") {
                delay = true;
            } else if item.eq_ignore_ascii_case("NEVER") {
                never = true;
            } else {
                return Err(NotifyError::Syntax);
            }
        }
        match (never, items) {
            (true, 1) => Ok(Notify::Never),
            (true, _) => Err(NotifyError::NeverCombined),
            (false, _) => Ok(Notify::On {
                success,
                failure,
                delay,
            }),
        }
    }

    /// Whether a success ("delivered" or "relayed") notice is asked for.
    pub fn success(self) -> bool {
        matches!(self, Notify::On { success: true, .. })
    }

    /// Whether a failure notice is asked for.
    pub fn failure(self) -> bool {
        matches!(self, Notify::On { failure: true, .. })
    }

    /// Whether a delay warning is asked for.
    pub fn delay(self) -> bool {
        matches!(self, Notify::On { delay: true, .. })
    }
}

impl FromStr for Notify {
    type Err = NotifyError;

    fn from_str(s: &str) -> Result<Notify, NotifyError> {
        Notify::parse(s)
    }
}

/// `ORCPT=` on `RCPT TO` (RFC 3461 4.2): the original recipient, already
/// xtext-decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822` or `utf-8`.
    pub addr_type: String,
    /// The decoded address.
    pub address: String,
}

/// `ENVID=` on `MAIL FROM` (RFC 3461 4.4), xtext-decoded: printable
/// US-ASCII (space included), at most [`EnvId::MAX`] characters. Shown in
/// a DSN's `Original-Envelope-Id:` and passed on to the next hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvId(String);

/// Text that is not an [`EnvId`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvIdError {
    /// A character outside printable US-ASCII.
    #[error("ENVID must be printable ASCII")]
    NotPrintable,
    /// Longer than [`EnvId::MAX`].
    #[error("ENVID longer than 100 characters")]
    TooLong,
}

impl EnvId {
    /// The longest envelope id (RFC 3461 4.4).
    pub const MAX: usize = 100;

    /// `text` (already xtext-decoded) as an envelope id.
    pub fn parse(text: &str) -> Result<EnvId, EnvIdError> {
        if text.len() > EnvId::MAX {
            return Err(EnvIdError::TooLong);
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(EnvIdError::NotPrintable);
        }
        Ok(EnvId(text.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EnvId {
    type Err = EnvIdError;

    fn from_str(s: &str) -> Result<EnvId, EnvIdError> {
        EnvId::parse(s)
    }
}

/// An [`Orcpt`]'s stored text (`type;address`) that is not one.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ORCPT must be an address type, ';' and an address")]
pub struct OrcptError;

/// `rfc822;alice@example.test`: the type, `;`, the decoded address (the
/// text a queue stores and a DSN's `Original-Recipient:` shows).
impl fmt::Display for Orcpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{}", self.addr_type, self.address)
    }
}

/// Reads the [`Display`](fmt::Display) form back (not the protocol's
/// xtext-encoded parameter, which the SMTP grammar decodes).
impl FromStr for Orcpt {
    type Err = OrcptError;

    fn from_str(s: &str) -> Result<Orcpt, OrcptError> {
        let (addr_type, address) = s.split_once(';').ok_or(OrcptError)?;
        let addr_type = addr_type.trim();
        if addr_type.is_empty() || address.is_empty() {
            return Err(OrcptError);
        }
        Ok(Orcpt {
            addr_type: addr_type.to_owned(),
            address: address.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_ids_are_printable_ascii_up_to_100() {
        assert_eq!(EnvId::parse("QQ+=x y").unwrap().as_str(), "QQ+=x y");
        assert_eq!(
            EnvId::parse(&"a".repeat(100)).unwrap().to_string().len(),
            100
        );
        assert_eq!(EnvId::parse(&"a".repeat(101)), Err(EnvIdError::TooLong));
        for bad in ["a\r\nb", "tab\there", "caf\u{e9}", "\u{7f}"] {
            assert_eq!(EnvId::parse(bad), Err(EnvIdError::NotPrintable), "{bad:?}");
        }
        assert_eq!("id-1".parse::<EnvId>(), EnvId::parse("id-1"));
    }

    #[test]
    fn orcpt_text_round_trips() {
        let o: Orcpt = "rfc822;Bob@Example.TEST".parse().unwrap();
        assert_eq!(o.addr_type, "rfc822");
        assert_eq!(o.address, "Bob@Example.TEST");
        assert_eq!(o.to_string(), "rfc822;Bob@Example.TEST");
        for bad in ["", "rfc822", ";a@b", "rfc822;"] {
            assert!(bad.parse::<Orcpt>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn notify_values() {
        let on = |success, failure, delay| {
            Ok(Notify::On {
                success,
                failure,
                delay,
            })
        };
        let cases = [
            ("NEVER", Ok(Notify::Never)),
            ("never", Ok(Notify::Never)),
            ("SUCCESS", on(true, false, false)),
            ("FAILURE", on(false, true, false)),
            ("DELAY", on(false, false, true)),
            ("SUCCESS,DELAY", on(true, false, true)),
            ("success, delay", on(true, false, true)),
            ("SUCCESS,FAILURE,DELAY", on(true, true, true)),
            ("FAILURE,FAILURE", on(false, true, false)),
            ("NEVER,SUCCESS", Err(NotifyError::NeverCombined)),
            ("SUCCESS,NEVER", Err(NotifyError::NeverCombined)),
            ("NEVER,NEVER", Err(NotifyError::NeverCombined)),
            ("", Err(NotifyError::Syntax)),
            ("SUCCESS,", Err(NotifyError::Syntax)),
            (",", Err(NotifyError::Syntax)),
            ("SOMETIMES", Err(NotifyError::Syntax)),
            ("SUCCESS;DELAY", Err(NotifyError::Syntax)),
        ];
        for (text, want) in cases {
            let got = Notify::parse(text);
            assert_eq!(got, want, "{text:?}");
            if let Ok(n) = got {
                assert_eq!(Notify::parse(&n.to_string()), Ok(n), "{text:?}");
            }
        }
        assert!(Notify::DEFAULT.failure() && Notify::DEFAULT.delay());
        for b in [
            BodyType::SevenBit,
            BodyType::EightBitMime,
            BodyType::BinaryMime,
        ] {
            assert_eq!(b.as_str().parse(), Ok(b));
            assert_eq!(b.as_str().to_lowercase().parse(), Ok(b));
        }
        assert_eq!("hdrs".parse(), Ok(Ret::Headers));
        assert_eq!("FULL".parse(), Ok(Ret::Full));
        assert_eq!("8BIT".parse::<BodyType>(), Err(KeywordError));
        assert_eq!("".parse::<Ret>(), Err(KeywordError));
        assert!(!Notify::DEFAULT.success() && !Notify::Never.failure());
    }
}
