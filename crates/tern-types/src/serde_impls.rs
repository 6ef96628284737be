//! `serde` support (the `serde` feature): each value is written as the
//! text its `Display` prints and read back through its one parser
//! (`FromStr`), so what a spool or a configuration file holds is the same
//! text the protocol carries (`"5.1.1"`, `"550 5.1.1 no such user"`,
//! `"SUCCESS,DELAY"`, `"HDRS"`, `"8BITMIME"`, `"alice@example.test"`), and
//! a value that does not parse is refused, never taken in.
//!
//! A [`Mailbox`] is its bare `local@host` text (no angle brackets, local
//! part quoted only when it must be), read back with RFC 6531 UTF-8
//! allowed: whether UTF-8 was allowed is a property of the transaction
//! that carried it, not of the stored value. The paths (`ReversePath`,
//! `ForwardPath`) have no serde form here: how a store writes `<>` and
//! `<Postmaster>` is that store's choice.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ServerReply;
use crate::address::{Domain, Mailbox};
use crate::dsn::{BodyType, EnvId, Notify, Orcpt, Ret};
use crate::status::EnhancedStatus;

struct TextVisitor<T>(PhantomData<T>, &'static str);

impl<T: FromStr> Visitor<'_> for TextVisitor<T>
where
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse()
            .map_err(|e| E::custom(format_args!("{v:?} is not {}: {e}", self.1)))
    }
}

macro_rules! as_text {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                d.deserialize_str(TextVisitor(PhantomData, $what))
            }
        }
    )*};
}

as_text! {
    EnhancedStatus => "an enhanced status code such as \"5.1.1\"",
    ServerReply => "a reply line such as \"550 5.1.1 text\"",
    Notify => "a NOTIFY value such as \"SUCCESS,DELAY\" or \"NEVER\"",
    Ret => "\"FULL\" or \"HDRS\"",
    BodyType => "\"7BIT\", \"8BITMIME\" or \"BINARYMIME\"",
    Orcpt => "an ORCPT such as \"rfc822;alice@example.test\"",
    EnvId => "an envelope id of printable ASCII",
    Mailbox => "an address such as \"alice@example.test\"",
    Domain => "a domain such as \"example.test\"",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_their_text() {
        let status: EnhancedStatus = "5.1.1".parse().unwrap();
        let reply: ServerReply = "550 5.1.1 no such user".parse().unwrap();
        let notify = Notify::parse("SUCCESS,DELAY").unwrap();
        let json =
            serde_json::to_string(&(status, &reply, notify, Ret::Headers, BodyType::EightBitMime))
                .unwrap();
        assert_eq!(
            json,
            r#"["5.1.1","550 5.1.1 no such user","SUCCESS,DELAY","HDRS","8BITMIME"]"#
        );
        let back: (EnhancedStatus, ServerReply, Notify, Ret, BodyType) =
            serde_json::from_str(&json).unwrap();
        assert_eq!(
            back,
            (status, reply, notify, Ret::Headers, BodyType::EightBitMime)
        );
        for bad in [r#""3.0.0""#, r#""5.1""#, "511"] {
            assert!(
                serde_json::from_str::<EnhancedStatus>(bad).is_err(),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<Notify>(r#""NEVER,SUCCESS""#).is_err());
        assert!(serde_json::from_str::<ServerReply>(r#""5.1.1 no code""#).is_err());
        assert!(serde_json::from_str::<Ret>(r#""PART""#).is_err());
    }

    #[test]
    fn addresses_are_their_bare_text() {
        // What the SMTP server prints is what is stored, byte for byte:
        // the domain lower-cased, a local part quoted only when it must be.
        let cases = [
            (r#""alice@example.test""#, r#""alice@example.test""#),
            (r#""Bob@Example.TEST""#, r#""Bob@example.test""#),
            (r#""\"a b\"@example.test""#, r#""\"a b\"@example.test""#),
            (
                r#""\"a\\\"b\"@example.test""#,
                r#""\"a\\\"b\"@example.test""#,
            ),
            (r#""\"plain\"@example.test""#, r#""plain@example.test""#),
            (r#""jösé@bücher.example""#, r#""jösé@bücher.example""#),
            (r#""x@[192.0.2.1]""#, r#""x@[192.0.2.1]""#),
            (r#""x@[IPv6:2001:db8::1]""#, r#""x@[IPv6:2001:db8::1]""#),
        ];
        for (stored, written) in cases {
            let m: Mailbox =
                serde_json::from_str(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert_eq!(serde_json::to_string(&m).unwrap(), written, "{stored}");
            let again: Mailbox = serde_json::from_str(written).unwrap();
            assert_eq!(again, m, "{stored}");
        }
        let bad = [
            r#""""#,
            r#""<a@b.test>""#,
            r#""a b@c.test""#,
            r#""postmaster""#,
            "1",
        ];
        for bad in bad {
            assert!(serde_json::from_str::<Mailbox>(bad).is_err(), "{bad}");
        }
        let d: Domain = serde_json::from_str(r#""Example.TEST""#).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), r#""example.test""#);
        assert!(serde_json::from_str::<Domain>(r#""a..b""#).is_err());
    }
}
