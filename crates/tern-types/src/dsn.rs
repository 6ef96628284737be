//! Delivery Status Notification parameters (RFC 3461) and the BODY type
//! (RFC 6152, RFC 3030) as they travel with an envelope.
//!
//! These are plain data: parsing them out of `MAIL`/`RCPT` parameters is
//! the SMTP core's job; the queue stores them and outbound delivery acts on
//! them. Nothing here does I/O.

use std::fmt;

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

/// `ORCPT=` on `RCPT TO` (RFC 3461 4.2): the original recipient, already
/// xtext-decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822` or `utf-8`.
    pub addr_type: String,
    /// The decoded address.
    pub address: String,
}
