//! `serde` support (the `serde` feature): each value is written as the
//! text its `Display` prints and read back through its one parser
//! (`FromStr`), so what a spool or a configuration file holds is the same
//! text the protocol carries (`"5.1.1"`, `"550 5.1.1 no such user"`,
//! `"SUCCESS,DELAY"`, `"HDRS"`, `"8BITMIME"`), and a value that does not
//! parse is refused, never taken in.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ServerReply;
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
}
