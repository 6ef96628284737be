//! The envelope stored with every queued message.
//!
//! [`Envelope`] and [`Recipient`] are plain data serialised with serde_json
//! into the tail of the queue file. They record what the SMTP transaction
//! said (sender, recipients, DSN parameters, how the client connected) and
//! what the directory decided (the delivery address and local mailbox key).
//!
//! Nothing here is trusted as a path: `mailbox` is a key that the mail store
//! validates again before it turns it into a directory name.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};
use tern_types::dsn::{BodyType, EnvId, Notify, Orcpt, Ret};

/// Everything the queue needs to deliver a message besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Reverse path without brackets; `""` for the null sender `<>`.
    pub sender: String,
    /// One entry per delivery target (aliases already expanded). The index
    /// in this vector is the recipient index used by the state file.
    pub recipients: Vec<Recipient>,
    /// When the message was received, Unix seconds.
    pub received_at: u64,
    /// The SMTP client's address, when the message came over the network.
    pub client_ip: Option<IpAddr>,
    /// The EHLO/HELO name the client gave.
    pub helo: Option<String>,
    /// `ESMTP`, `ESMTPS`, `ESMTPSA`, … (RFC 3848).
    pub protocol: String,
    /// TLS version and cipher, when the session was encrypted.
    pub tls: Option<String>,
    /// The authenticated user, for submission.
    pub auth_user: Option<String>,
    /// `BODY=`: `7BIT`, `8BITMIME` or `BINARYMIME` (stored as that text).
    #[serde(deserialize_with = "body_or_8bit")]
    pub body: BodyType,
    /// Whether MAIL carried SMTPUTF8.
    pub smtputf8: bool,
    /// DSN `RET=`: `FULL` or `HDRS` (stored as that text).
    #[serde(default, deserialize_with = "known_or_none")]
    pub ret: Option<Ret>,
    /// DSN `ENVID=`, xtext-decoded (stored as that text).
    #[serde(default, deserialize_with = "known_or_none")]
    pub envid: Option<EnvId>,
    /// Message bytes as stored. [`IncomingMessage::commit`](crate::IncomingMessage::commit)
    /// overwrites it with the number of bytes actually written.
    pub size: u64,
    /// The inbound authentication checks asked for quarantine (DMARC
    /// `p=quarantine`): local recipients get it in their `Junk` folder.
    /// Absent in envelopes written before this field existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantine: bool,
}

impl Default for Envelope {
    /// The null sender, no recipients, received at 0 over plain `ESMTP`
    /// with a `7BIT` body, nothing else set: a base to fill in with
    /// struct-update syntax (`Envelope { sender, recipients, ..Envelope::default() }`).
    fn default() -> Envelope {
        Envelope {
            sender: String::new(),
            recipients: Vec::new(),
            received_at: 0,
            client_ip: None,
            helo: None,
            protocol: "ESMTP".to_owned(),
            tls: None,
            auth_user: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            size: 0,
            quarantine: false,
        }
    }
}

/// One delivery target of a message.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Recipient {
    /// The delivery address (after alias and plus-address resolution).
    pub address: String,
    /// The RCPT TO address as the client gave it.
    pub original: String,
    /// Local mailbox key (e.g. `alice@example.test`); `None` for a remote
    /// recipient.
    pub mailbox: Option<String>,
    /// DSN `NOTIFY=`: `NEVER` or a subset of `SUCCESS,FAILURE,DELAY`
    /// (stored as that text).
    #[serde(default, deserialize_with = "known_or_none")]
    pub notify: Option<Notify>,
    /// DSN `ORCPT=`, decoded (stored as `rfc822;addr`).
    #[serde(default, deserialize_with = "known_or_none")]
    pub orcpt: Option<Orcpt>,
}

impl Recipient {
    /// Whether this recipient is delivered to a local mailbox.
    pub fn is_local(&self) -> bool {
        self.mailbox.is_some()
    }
}

/// Reads an optional DSN parameter through its one parser. A value that
/// does not parse — one an older Tern stored before there was one parser
/// (`NEVER,SUCCESS` was taken by one of them) — reads as absent, which
/// means the protocol's default: the message is delivered, never refused
/// or lost over it.
fn known_or_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
{
    let text: Option<String> = Option::deserialize(d)?;
    Ok(text.and_then(|t| t.parse().ok()))
}

/// Reads `BODY=` through its parser; a value that does not parse reads as
/// `8BITMIME`, the choice that never mislabels 8-bit data as 7-bit.
fn body_or_8bit<'de, D: Deserializer<'de>>(d: D) -> Result<BodyType, D::Error> {
    let text = String::deserialize(d)?;
    Ok(text.parse().unwrap_or(BodyType::EightBitMime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_is_optional_on_disk() {
        let old = r#"{"sender":"a@b.test","recipients":[],"received_at":1,"client_ip":null,
            "helo":null,"protocol":"ESMTP","tls":null,"auth_user":null,"body":"7BIT",
            "smtputf8":false,"ret":null,"envid":null,"size":0}"#;
        let e: Envelope = serde_json::from_str(old).unwrap();
        assert!(!e.quarantine);
        // Written only when set, so older readers see the same JSON.
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("quarantine"));
        let q = Envelope {
            quarantine: true,
            ..e
        };
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&q).unwrap()).unwrap();
        assert!(back.quarantine);
    }

    #[test]
    fn dsn_parameters_are_typed_and_stored_as_their_text() {
        let e = Envelope {
            body: BodyType::EightBitMime,
            ret: Some(Ret::Headers),
            envid: Some(EnvId::parse("QQ 314").unwrap()),
            recipients: vec![Recipient {
                address: "b@c.test".into(),
                notify: Some("SUCCESS,DELAY".parse().unwrap()),
                orcpt: Some(Orcpt {
                    addr_type: "rfc822".into(),
                    address: "B@C.test".into(),
                }),
                ..Recipient::default()
            }],
            ..Envelope::default()
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""body":"8BITMIME""#), "{json}");
        assert!(json.contains(r#""ret":"HDRS""#), "{json}");
        assert!(json.contains(r#""envid":"QQ 314""#), "{json}");
        assert!(json.contains(r#""notify":"SUCCESS,DELAY""#), "{json}");
        assert!(json.contains(r#""orcpt":"rfc822;B@C.test""#), "{json}");
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), e);
        // What older parsers let through reads as absent (the default).
        let old = json
            .replace("SUCCESS,DELAY", "NEVER,SUCCESS")
            .replace(r#""HDRS""#, r#""PART""#)
            .replace("8BITMIME", "9BIT")
            .replace("rfc822;B@C.test", "B@C.test");
        let back: Envelope = serde_json::from_str(&old).unwrap();
        assert_eq!(back.recipients[0].notify, None);
        assert_eq!(back.ret, None);
        assert_eq!(back.body, BodyType::EightBitMime);
        assert_eq!(back.recipients[0].orcpt, None);
    }
}
