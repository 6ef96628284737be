//! The envelope stored with every queued message.
//!
//! [`Envelope`] and [`Recipient`] are plain data serialised with serde_json
//! into the tail of the queue file (and the `envelope` column of the
//! PostgreSQL backend). They record what the SMTP transaction said
//! (sender, recipients, DSN parameters, how the client connected) and what
//! the directory decided (the delivery address and local mailbox key).
//!
//! The addresses are typed ([`ReversePath`], [`Mailbox`], [`ForwardPath`])
//! but stored as the bare text the SMTP server prints, exactly as before
//! they were typed: `""` for the null sender `<>`, `local@host` without
//! brackets (domain lower-cased, the local part quoted only when it must
//! be), `postmaster` for a bare `RCPT TO:<Postmaster>`. A stored address is
//! read back with RFC 6531 UTF-8 allowed (it was accepted once; whether the
//! transaction had SMTPUTF8 is the envelope's `smtputf8`), and leniently:
//! surrounding blanks, angle brackets and `<>` for the null sender are
//! taken too.
//!
//! # A stored address that no longer parses
//!
//! An envelope written by an older Tern, or a spool edited by hand, may
//! hold an address the parser refuses. That must never make the message
//! unreadable or lost, so reading never fails over an address: the text is
//! kept as an [`UnreadableAddress`] (and written back unchanged if the
//! envelope is stored again), and
//!
//! - an unreadable **sender** reads as the null path `<>`
//!   ([`Envelope::unreadable_sender`] holds the text): the message is still
//!   delivered to every recipient; like any message from `<>` it gets no
//!   delay or success notices, and a failure is reported to the local
//!   postmaster (who can see the stored text), since no report could be
//!   sent to an address that does not parse anyway;
//! - an unreadable **delivery address** ([`Recipient::unreadable_address`])
//!   leaves [`Recipient::address`] holding [`unreadable_placeholder`]
//!   (`unreadable@invalid`: `.invalid` never resolves, RFC 6761). A local
//!   recipient is still delivered through its mailbox key, which is all
//!   local delivery uses; a remote recipient is failed by the outbound
//!   client before any connection with `553 5.1.3` naming the stored text,
//!   and the sender gets a failure report for it. Its other recipients
//!   are delivered as usual;
//! - an unreadable **RCPT TO path** ([`Recipient::unreadable_original`])
//!   only changes what is shown: `original` reads as the delivery address.
//!
//! The `*_text` methods ([`Envelope::sender_text`],
//! [`Recipient::address_text`], [`Recipient::original_text`]) give the
//! stored text in every case, for logs, the journal and the admin views.
//!
//! Nothing here is trusted as a path: `mailbox` is a key that the mail store
//! validates again before it turns it into a directory name.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tern_types::dsn::{BodyType, EnvId, Notify, Orcpt, Ret};
use tern_types::{
    AddressError, ForwardPath, Mailbox, ReversePath, parse_forward_path, parse_reverse_path,
};

/// Everything the queue needs to deliver a message besides its bytes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "StoredEnvelope")]
pub struct Envelope {
    /// The reverse path; stored as its bare text, `""` for the null sender
    /// `<>`. [`ReversePath::Null`] too when the stored text no longer
    /// parses (see [`Envelope::unreadable_sender`]).
    pub sender: ReversePath,
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
    pub body: BodyType,
    /// Whether MAIL carried SMTPUTF8.
    pub smtputf8: bool,
    /// DSN `RET=`: `FULL` or `HDRS` (stored as that text).
    pub ret: Option<Ret>,
    /// DSN `ENVID=`, xtext-decoded (stored as that text).
    pub envid: Option<EnvId>,
    /// Message bytes as stored. [`IncomingMessage::commit`](crate::IncomingMessage::commit)
    /// overwrites it with the number of bytes actually written.
    pub size: u64,
    /// The inbound authentication checks asked for quarantine (DMARC
    /// `p=quarantine`): local recipients get it in their `Junk` folder.
    /// Absent in envelopes written before this field existed.
    pub quarantine: bool,
    /// The stored sender text, when the parser refuses it (`sender` is then
    /// [`ReversePath::Null`]; see the module documentation). Not a field of
    /// its own on disk: it is written back in place of `sender`.
    pub unreadable_sender: Option<UnreadableAddress>,
}

impl Default for Envelope {
    /// The null sender, no recipients, received at 0 over plain `ESMTP`
    /// with a `7BIT` body, nothing else set: a base to fill in with
    /// struct-update syntax (`Envelope { sender, recipients, ..Envelope::default() }`).
    fn default() -> Envelope {
        Envelope {
            sender: ReversePath::Null,
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
            unreadable_sender: None,
        }
    }
}

impl Envelope {
    /// The sender as stored: `""` for `<>`, `local@host`, or the stored
    /// text that no longer parses.
    pub fn sender_text(&self) -> Cow<'_, str> {
        match (&self.unreadable_sender, &self.sender) {
            (Some(u), _) => Cow::Borrowed(&u.text),
            (None, ReversePath::Null) => Cow::Borrowed(""),
            (None, ReversePath::Mailbox(m)) => Cow::Owned(m.to_string()),
        }
    }

    /// Whether the sender is `<>` (read as such from a stored text that no
    /// longer parses included): no report is ever sent to it.
    pub fn is_null_sender(&self) -> bool {
        matches!(self.sender, ReversePath::Null)
    }
}

/// One delivery target of a message.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "StoredRecipient")]
pub struct Recipient {
    /// The delivery address (after alias and plus-address resolution);
    /// [`unreadable_placeholder`] when the stored text no longer parses
    /// (see [`Recipient::unreadable_address`]).
    pub address: Mailbox,
    /// The RCPT TO path as the client gave it: a mailbox, or the bare
    /// `<Postmaster>` (RFC 5321 4.1.1.3), stored as `postmaster`.
    pub original: ForwardPath,
    /// Local mailbox key (e.g. `alice@example.test`); `None` for a remote
    /// recipient.
    pub mailbox: Option<String>,
    /// DSN `NOTIFY=`: `NEVER` or a subset of `SUCCESS,FAILURE,DELAY`
    /// (stored as that text).
    pub notify: Option<Notify>,
    /// DSN `ORCPT=`, decoded (stored as `rfc822;addr`).
    pub orcpt: Option<Orcpt>,
    /// The stored delivery address text, when the parser refuses it. A
    /// remote recipient with one is never sent to (see the module
    /// documentation). Written back in place of `address`.
    pub unreadable_address: Option<UnreadableAddress>,
    /// The stored RCPT TO text, when the parser refuses it (`original` then
    /// reads as `address`). Written back in place of `original`.
    pub unreadable_original: Option<UnreadableAddress>,
}

impl Recipient {
    /// A recipient with only its delivery address: the client gave the
    /// same address, remote, no DSN parameters.
    pub fn new(address: Mailbox) -> Recipient {
        Recipient {
            original: ForwardPath::Mailbox(address.clone()),
            address,
            mailbox: None,
            notify: None,
            orcpt: None,
            unreadable_address: None,
            unreadable_original: None,
        }
    }

    /// Whether this recipient is delivered to a local mailbox.
    pub fn is_local(&self) -> bool {
        self.mailbox.is_some()
    }

    /// The delivery address as stored: `local@host`, or the stored text
    /// that no longer parses.
    pub fn address_text(&self) -> Cow<'_, str> {
        match &self.unreadable_address {
            Some(u) => Cow::Borrowed(&u.text),
            None => Cow::Owned(self.address.to_string()),
        }
    }

    /// The RCPT TO path as stored: `local@host`, `postmaster`, or the
    /// stored text that no longer parses.
    pub fn original_text(&self) -> Cow<'_, str> {
        match &self.unreadable_original {
            Some(u) => Cow::Borrowed(&u.text),
            None => Cow::Owned(BareForward(&self.original).to_string()),
        }
    }
}

/// A stored address text that the parser refuses: what was stored and why
/// it is refused (see the module documentation for what happens then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableAddress {
    /// The text as stored, kept unchanged.
    pub text: String,
    /// Why the parser refuses it.
    pub error: AddressError,
}

impl fmt::Display for UnreadableAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stored address {:?} no longer parses: {}",
            self.text, self.error
        )
    }
}

/// What [`Recipient::address`] holds when its stored text no longer parses:
/// `unreadable@invalid`. The `.invalid` top-level domain never resolves
/// (RFC 6761 6.4), so nothing can ever be delivered to it, even by a caller
/// that overlooked [`Recipient::unreadable_address`].
pub fn unreadable_placeholder() -> Mailbox {
    static PLACEHOLDER: LazyLock<Mailbox> = LazyLock::new(|| {
        Mailbox::parse("unreadable@invalid", false).expect("a constant that parses")
    });
    PLACEHOLDER.clone()
}

// ------------------------------------------------------ Reading addresses

/// `s` without blanks around it, and without the angle brackets of a path.
fn unbracketed(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
}

/// Reads a stored sender: `""` (or `<>`) is the null path, anything else a
/// mailbox, RFC 6531 UTF-8 allowed.
pub fn read_sender(text: &str) -> Result<ReversePath, AddressError> {
    let trimmed = text.trim();
    if trimmed.starts_with('<') {
        return whole(parse_reverse_path(trimmed, true)?);
    }
    if trimmed.is_empty() {
        return Ok(ReversePath::Null);
    }
    Mailbox::parse(trimmed, true).map(ReversePath::Mailbox)
}

/// Reads a stored delivery address, RFC 6531 UTF-8 allowed.
pub fn read_address(text: &str) -> Result<Mailbox, AddressError> {
    Mailbox::parse(unbracketed(text), true)
}

/// Reads a stored RCPT TO path: `postmaster` in any case (no domain) is the
/// bare `<Postmaster>`, anything else a mailbox, RFC 6531 UTF-8 allowed.
pub fn read_original(text: &str) -> Result<ForwardPath, AddressError> {
    let trimmed = text.trim();
    if trimmed.starts_with('<') {
        return whole(parse_forward_path(trimmed, true)?);
    }
    if trimmed.eq_ignore_ascii_case("postmaster") {
        return Ok(ForwardPath::Postmaster);
    }
    Mailbox::parse(trimmed, true).map(ForwardPath::Mailbox)
}

/// A path that must be all of its text.
fn whole<P>((path, rest): (P, &str)) -> Result<P, AddressError> {
    if rest.trim().is_empty() {
        Ok(path)
    } else {
        Err(AddressError::Syntax("text after the path"))
    }
}

// ------------------------------------------------------------ Stored form

/// A reverse path as stored: `""` for `<>`, else the bare mailbox.
struct BareReverse<'a>(&'a ReversePath);

impl fmt::Display for BareReverse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// A forward path as stored: `postmaster` for `<Postmaster>`, else the
/// bare mailbox.
struct BareForward<'a>(&'a ForwardPath);

impl fmt::Display for BareForward<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ForwardPath::Postmaster => f.write_str("postmaster"),
            ForwardPath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// Serialises a [`fmt::Display`] value as its text, or the stored text
/// that no longer parses in its place.
struct Text<'a, T>(&'a Option<UnreadableAddress>, T);

impl<T: fmt::Display> Serialize for Text<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(u) => s.serialize_str(&u.text),
            None => s.collect_str(&self.1),
        }
    }
}

impl Serialize for Envelope {
    /// The stored form, field for field as before the addresses were typed.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Envelope", 13 + usize::from(self.quarantine))?;
        st.serialize_field(
            "sender",
            &Text(&self.unreadable_sender, BareReverse(&self.sender)),
        )?;
        st.serialize_field("recipients", &self.recipients)?;
        st.serialize_field("received_at", &self.received_at)?;
        st.serialize_field("client_ip", &self.client_ip)?;
        st.serialize_field("helo", &self.helo)?;
        st.serialize_field("protocol", &self.protocol)?;
        st.serialize_field("tls", &self.tls)?;
        st.serialize_field("auth_user", &self.auth_user)?;
        st.serialize_field("body", &self.body)?;
        st.serialize_field("smtputf8", &self.smtputf8)?;
        st.serialize_field("ret", &self.ret)?;
        st.serialize_field("envid", &self.envid)?;
        st.serialize_field("size", &self.size)?;
        if self.quarantine {
            st.serialize_field("quarantine", &true)?;
        } else {
            st.skip_field("quarantine")?;
        }
        st.end()
    }
}

impl Serialize for Recipient {
    /// The stored form, field for field as before the addresses were typed.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Recipient", 5)?;
        st.serialize_field("address", &Text(&self.unreadable_address, &self.address))?;
        st.serialize_field(
            "original",
            &Text(&self.unreadable_original, BareForward(&self.original)),
        )?;
        st.serialize_field("mailbox", &self.mailbox)?;
        st.serialize_field("notify", &self.notify)?;
        st.serialize_field("orcpt", &self.orcpt)?;
        st.end()
    }
}

/// The envelope as stored: the addresses as text, read through
/// [`read_sender`], [`read_address`] and [`read_original`] without ever
/// failing over one.
#[derive(Deserialize)]
struct StoredEnvelope {
    sender: String,
    recipients: Vec<Recipient>,
    received_at: u64,
    client_ip: Option<IpAddr>,
    helo: Option<String>,
    protocol: String,
    tls: Option<String>,
    auth_user: Option<String>,
    #[serde(deserialize_with = "body_or_8bit")]
    body: BodyType,
    smtputf8: bool,
    #[serde(default, deserialize_with = "known_or_none")]
    ret: Option<Ret>,
    #[serde(default, deserialize_with = "known_or_none")]
    envid: Option<EnvId>,
    size: u64,
    #[serde(default)]
    quarantine: bool,
}

impl From<StoredEnvelope> for Envelope {
    fn from(s: StoredEnvelope) -> Envelope {
        let (sender, unreadable_sender) = match read_sender(&s.sender) {
            Ok(path) => (path, None),
            Err(error) => (
                ReversePath::Null,
                Some(UnreadableAddress {
                    text: s.sender,
                    error,
                }),
            ),
        };
        Envelope {
            sender,
            recipients: s.recipients,
            received_at: s.received_at,
            client_ip: s.client_ip,
            helo: s.helo,
            protocol: s.protocol,
            tls: s.tls,
            auth_user: s.auth_user,
            body: s.body,
            smtputf8: s.smtputf8,
            ret: s.ret,
            envid: s.envid,
            size: s.size,
            quarantine: s.quarantine,
            unreadable_sender,
        }
    }
}

/// A recipient as stored (see [`StoredEnvelope`]).
#[derive(Deserialize)]
struct StoredRecipient {
    address: String,
    original: String,
    mailbox: Option<String>,
    #[serde(default, deserialize_with = "known_or_none")]
    notify: Option<Notify>,
    #[serde(default, deserialize_with = "known_or_none")]
    orcpt: Option<Orcpt>,
}

impl From<StoredRecipient> for Recipient {
    fn from(s: StoredRecipient) -> Recipient {
        let (address, unreadable_address) = match read_address(&s.address) {
            Ok(m) => (m, None),
            Err(error) => (
                unreadable_placeholder(),
                Some(UnreadableAddress {
                    text: s.address,
                    error,
                }),
            ),
        };
        let (original, unreadable_original) = match read_original(&s.original) {
            Ok(path) => (path, None),
            Err(error) => (
                ForwardPath::Mailbox(address.clone()),
                Some(UnreadableAddress {
                    text: s.original,
                    error,
                }),
            ),
        };
        Recipient {
            address,
            original,
            mailbox: s.mailbox,
            notify: s.notify,
            orcpt: s.orcpt,
            unreadable_address,
            unreadable_original,
        }
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
                notify: Some("SUCCESS,DELAY".parse().unwrap()),
                orcpt: Some(Orcpt {
                    addr_type: "rfc822".into(),
                    address: "B@C.test".into(),
                }),
                ..Recipient::new("b@c.test".parse().unwrap())
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

    /// Envelopes as the spool wrote them before the addresses were typed
    /// (`serde_json::to_string` of the string-field struct, as the SMTP
    /// server filled it in: `""` for `<>`, `m.to_string()` for a mailbox,
    /// `postmaster` for `<Postmaster>`).
    const WRITTEN_BEFORE: [&str; 2] = [
        concat!(
            r#"{"sender":"","recipients":["#,
            r#"{"address":"postmaster@example.test","original":"postmaster","mailbox":"postmaster@example.test","notify":null,"orcpt":null},"#,
            r#"{"address":"\"a b\"@example.test","original":"\"a b\"@example.test","mailbox":null,"notify":"FAILURE","orcpt":"rfc822;\"a b\"@example.test"},"#,
            r#"{"address":"jösé@bücher.example","original":"Jösé@bücher.example","mailbox":null,"notify":null,"orcpt":null},"#,
            r#"{"address":"x@[192.0.2.1]","original":"x@[192.0.2.1]","mailbox":null,"notify":null,"orcpt":null}"#,
            r#"],"received_at":1700000000,"client_ip":"192.0.2.7","helo":"mx.example.net","protocol":"UTF8SMTPS","#,
            r#""tls":"TLSv1.3 TLS13_AES_256_GCM_SHA384","auth_user":null,"body":"8BITMIME","smtputf8":true,"ret":null,"envid":null,"size":1234}"#,
        ),
        concat!(
            r#"{"sender":"\"john..doe\"@example.net","recipients":["#,
            r#"{"address":"alice@example.test","original":"Alice+tag@example.test","mailbox":"alice@example.test","notify":"SUCCESS,DELAY","orcpt":null}"#,
            r#"],"received_at":1,"client_ip":null,"helo":null,"protocol":"ESMTPSA","tls":null,"auth_user":"john","#,
            r#""body":"7BIT","smtputf8":false,"ret":"HDRS","envid":"QQ 314","size":7,"quarantine":true}"#,
        ),
    ];

    #[test]
    fn envelopes_written_before_typing_read_typed_and_write_back_the_same() {
        let old = WRITTEN_BEFORE.map(|json| serde_json::from_str::<Envelope>(json).unwrap());
        for (json, e) in WRITTEN_BEFORE.iter().zip(&old) {
            assert_eq!(&serde_json::to_string(e).unwrap(), json);
            assert!(e.unreadable_sender.is_none());
            for r in &e.recipients {
                assert!(r.unreadable_address.is_none() && r.unreadable_original.is_none());
            }
        }
        let [null, quoted] = old;
        assert_eq!(null.sender, ReversePath::Null);
        assert!(null.is_null_sender());
        assert_eq!(null.sender_text(), "");
        let r = &null.recipients;
        assert_eq!(r[0].original, ForwardPath::Postmaster);
        assert_eq!(r[0].original_text(), "postmaster");
        assert_eq!(r[0].address.local_part.as_str(), "postmaster");
        assert_eq!(r[1].address.local_part.as_str(), "a b");
        assert_eq!(r[1].address_text(), "\"a b\"@example.test");
        assert_eq!(r[2].address.domain().unwrap().as_str(), "bücher.example");
        assert!(!r[2].address.is_ascii());
        let ForwardPath::Mailbox(given) = &r[2].original else {
            panic!("{:?}", r[2].original)
        };
        assert_eq!(given.local_part.as_str(), "Jösé");
        assert_eq!(r[3].address.domain(), None);
        assert_eq!(
            quoted.sender.mailbox().unwrap().local_part.as_str(),
            "john..doe"
        );
        assert_eq!(quoted.sender_text(), "\"john..doe\"@example.net");
        assert!(quoted.quarantine);
    }

    #[test]
    fn lenient_forms_read_as_the_path_they_name() {
        for (text, null) in [("", true), ("<>", true), (" ", true), ("a@b.test", false)] {
            assert_eq!(
                read_sender(text).unwrap() == ReversePath::Null,
                null,
                "{text:?}"
            );
        }
        assert_eq!(
            read_sender(" <A@B.Test> ").unwrap(),
            ReversePath::Mailbox("A@b.test".parse().unwrap())
        );
        for pm in ["postmaster", "Postmaster", "POSTMASTER", "<Postmaster>"] {
            assert_eq!(read_original(pm).unwrap(), ForwardPath::Postmaster, "{pm}");
        }
        assert_eq!(
            read_original("<@relay.test:bob@example.test>").unwrap(),
            ForwardPath::Mailbox("bob@example.test".parse().unwrap())
        );
        assert_eq!(
            read_address("<Bob@Example.TEST>").unwrap().to_string(),
            "Bob@example.test"
        );
        for bad in ["", "postmaster", "a b@c.test", "a@b@c.test", "<a@b.test> x"] {
            assert!(read_address(bad).is_err(), "{bad:?}");
        }
        assert!(read_sender("<a@b.test> x").is_err());
        assert!(read_original("<>").is_err());
    }

    #[test]
    fn unreadable_addresses_never_make_the_envelope_unreadable() {
        let json = concat!(
            r#"{"sender":"no at sign","recipients":["#,
            r#"{"address":"bad address@remote.test","original":"bad address@remote.test","mailbox":null,"notify":null,"orcpt":null},"#,
            r#"{"address":"carol@example.test","original":"carol@@example.test","mailbox":"carol@example.test","notify":null,"orcpt":null},"#,
            r#"{"address":"dave@remote.test","original":"dave@remote.test","mailbox":null,"notify":null,"orcpt":null}"#,
            r#"],"received_at":1,"client_ip":null,"helo":null,"protocol":"ESMTP","tls":null,"auth_user":null,"#,
            r#""body":"7BIT","smtputf8":false,"ret":null,"envid":null,"size":0}"#,
        );
        let e: Envelope = serde_json::from_str(json).unwrap();
        // The sender reads as <>; its text is kept and shown.
        assert_eq!(e.sender, ReversePath::Null);
        assert!(e.is_null_sender());
        let u = e.unreadable_sender.as_ref().unwrap();
        assert_eq!(u.text, "no at sign");
        assert!(matches!(u.error, AddressError::Syntax(_)), "{u}");
        assert_eq!(e.sender_text(), "no at sign");
        // A recipient whose address does not parse holds the placeholder.
        let bad = &e.recipients[0];
        assert_eq!(bad.address, unreadable_placeholder());
        assert_eq!(bad.address.to_string(), "unreadable@invalid");
        assert_eq!(bad.address_text(), "bad address@remote.test");
        assert_eq!(bad.original_text(), "bad address@remote.test");
        assert!(bad.unreadable_address.is_some() && bad.unreadable_original.is_some());
        // An RCPT TO text that does not parse reads as the delivery address.
        let carol = &e.recipients[1];
        assert!(carol.unreadable_address.is_none());
        assert_eq!(carol.original, ForwardPath::Mailbox(carol.address.clone()));
        assert_eq!(carol.original_text(), "carol@@example.test");
        assert!(carol.is_local());
        // The others are untouched, and the envelope is written back as read.
        assert_eq!(e.recipients[2].address.to_string(), "dave@remote.test");
        assert!(e.recipients[2].unreadable_address.is_none());
        assert_eq!(serde_json::to_string(&e).unwrap(), json);
        // The scheduler treats the message as from <>: no report to a
        // sender that does not parse, failures to the postmaster.
        let scheduled =
            crate::ScheduledMessage::from_spool(&e, crate::MessageState::default(), |_| {
                crate::Destination::Maildir
            });
        assert!(scheduled.null_sender);
        assert_eq!(scheduled.recipients.len(), 3);
    }

    #[test]
    fn new_envelopes_are_stored_as_the_server_prints_them() {
        let e = Envelope {
            sender: ReversePath::Mailbox("\"a\\\"b\"@Example.NET".parse().unwrap()),
            recipients: vec![Recipient {
                original: ForwardPath::Postmaster,
                mailbox: Some("postmaster@example.test".into()),
                ..Recipient::new("postmaster@example.test".parse().unwrap())
            }],
            ..Envelope::default()
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            json.starts_with(concat!(
                r#"{"sender":"\"a\\\"b\"@example.net","recipients":[{"address":"postmaster@example.test","#,
                r#""original":"postmaster","mailbox":"postmaster@example.test","notify":null,"orcpt":null}],"#
            )),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), e);
        let null = Envelope::default();
        let json = serde_json::to_string(&null).unwrap();
        assert!(json.starts_with(r#"{"sender":"","#), "{json}");
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), null);
    }
}
