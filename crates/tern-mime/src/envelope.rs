//! The IMAP ENVELOPE of a header block (RFC 9051 §7.5.2): date, subject,
//! from, sender, reply-to, to, cc, bcc, in-reply-to, message-id.
//!
//! Values are the raw header bytes, never decoded (encoded words stay
//! encoded, as Dovecot reports them): the subject and display names with
//! white space collapsed for humans ([`crate::address::for_humans`]), the
//! other fields unfolded ([`crate::header::unfold`]). `Sender` and
//! `Reply-To` default to `From` when absent or empty. Groups follow
//! RFC 3501: a start marker `(NIL NIL "name" NIL)`, the members, and an
//! end marker `(NIL NIL NIL NIL)`.

use std::borrow::Cow;

use crate::address::{AddressItem, Mailbox, parse_list};
use crate::header::{fields, last_value, unfold};
use crate::imap;

/// A parsed ENVELOPE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope<'a> {
    /// `Date:` raw value.
    pub date: Option<Cow<'a, [u8]>>,
    /// `Subject:` raw value.
    pub subject: Option<Cow<'a, [u8]>>,
    /// `From:` list.
    pub from: Vec<AddressItem>,
    /// `Sender:` list (defaults to `from`).
    pub sender: Vec<AddressItem>,
    /// `Reply-To:` list (defaults to `from`).
    pub reply_to: Vec<AddressItem>,
    /// `To:` list.
    pub to: Vec<AddressItem>,
    /// `Cc:` list.
    pub cc: Vec<AddressItem>,
    /// `Bcc:` list.
    pub bcc: Vec<AddressItem>,
    /// `In-Reply-To:` raw value.
    pub in_reply_to: Option<Cow<'a, [u8]>>,
    /// `Message-ID:` raw value.
    pub message_id: Option<Cow<'a, [u8]>>,
}

impl<'a> Envelope<'a> {
    /// The envelope of the header block `header`.
    pub fn from_header(header: &'a [u8]) -> Self {
        // As Dovecot: a repeated field's last occurrence wins, except that
        // repeated address fields add up.
        let text = |name: &[u8]| last_value(header, name).map(unfold);
        let list = |name: &[u8]| -> Vec<AddressItem> {
            fields(header)
                .filter(|f| f.name.eq_ignore_ascii_case(name))
                .flat_map(|f| parse_list(f.value))
                .collect()
        };
        let from = list(b"from");
        let mut sender = list(b"sender");
        if sender.is_empty() {
            sender = from.clone();
        }
        let mut reply_to = list(b"reply-to");
        if reply_to.is_empty() {
            reply_to = from.clone();
        }
        Envelope {
            date: text(b"date"),
            subject: last_value(header, b"subject")
                .map(|v| Cow::Owned(crate::address::for_humans(v))),
            from,
            sender,
            reply_to,
            to: list(b"to"),
            cc: list(b"cc"),
            bcc: list(b"bcc"),
            in_reply_to: text(b"in-reply-to"),
            message_id: text(b"message-id"),
        }
    }

    /// Appends the IMAP `envelope` production.
    pub fn write_imap(&self, out: &mut Vec<u8>) {
        out.push(b'(');
        imap::nstring(out, self.date.as_deref());
        out.push(b' ');
        imap::nstring(out, self.subject.as_deref());
        for l in [
            &self.from,
            &self.sender,
            &self.reply_to,
            &self.to,
            &self.cc,
            &self.bcc,
        ] {
            out.push(b' ');
            write_list(out, l);
        }
        out.push(b' ');
        imap::nstring(out, self.in_reply_to.as_deref());
        out.push(b' ');
        imap::nstring(out, self.message_id.as_deref());
        out.push(b')');
    }
}

fn write_mailbox(out: &mut Vec<u8>, m: &Mailbox) {
    out.push(b'(');
    imap::nstring(out, m.name.as_deref());
    out.push(b' ');
    imap::nstring(out, m.adl.as_deref());
    out.push(b' ');
    imap::string(out, &m.mailbox);
    out.push(b' ');
    imap::string(out, &m.host);
    out.push(b')');
}

fn write_list(out: &mut Vec<u8>, items: &[AddressItem]) {
    if items.is_empty() {
        out.extend(b"NIL");
        return;
    }
    out.push(b'(');
    for item in items {
        match item {
            AddressItem::Mailbox(m) => write_mailbox(out, m),
            AddressItem::Group { name, members } => {
                out.extend(b"(NIL NIL ");
                imap::string(out, name);
                out.extend(b" NIL)");
                for m in members {
                    write_mailbox(out, m);
                }
                out.extend(b"(NIL NIL NIL NIL)");
            }
        }
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(header: &str) -> String {
        let mut out = Vec::new();
        Envelope::from_header(header.as_bytes()).write_imap(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc3501_example() {
        // The message behind RFC 3501 §7.4.2's FETCH example.
        let h = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
                 From: Terry Gray <gray@cac.washington.edu>\r\n\
                 Subject: IMAP4rev1 WG mtg summary and minutes\r\n\
                 To: imap@cac.washington.edu\r\n\
                 cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n\
                 Message-Id: <B27397-0100000@cac.washington.edu>\r\n\r\n";
        assert_eq!(
            envelope(h),
            "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \
             \"IMAP4rev1 WG mtg summary and minutes\" \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((NIL NIL \"imap\" \"cac.washington.edu\")) \
             ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")\
             (\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \
             \"<B27397-0100000@cac.washington.edu>\")"
        );
    }

    #[test]
    fn missing_headers_groups_and_encoded_names() {
        assert_eq!(
            envelope("X: y\r\n\r\n"),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
        assert_eq!(
            envelope(
                "From: =?UTF-8?B?SsO2cmc=?= <j@x.test>\r\nSender: s@x.test\r\n\
                 To: Friends: a@x.test, \"B \\\"Q\\\"\" <b@y.test>;\r\nBcc: undisclosed:;\r\n\
                 Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
            ),
            "(NIL \"=?utf-8?q?caf=C3=A9?=\" \
             ((\"=?UTF-8?B?SsO2cmc=?=\" NIL \"j\" \"x.test\")) \
             ((NIL NIL \"s\" \"x.test\")) \
             ((\"=?UTF-8?B?SsO2cmc=?=\" NIL \"j\" \"x.test\")) \
             ((NIL NIL \"Friends\" NIL)(NIL NIL \"a\" \"x.test\")\
             (\"B \\\"Q\\\"\" NIL \"b\" \"y.test\")(NIL NIL NIL NIL)) \
             NIL ((NIL NIL \"undisclosed\" NIL)(NIL NIL NIL NIL)) NIL NIL)"
        );
    }

    #[test]
    fn repeated_fields_as_dovecot() {
        assert_eq!(
            envelope(
                "Subject: one\r\nSubject:  two\t words \r\nFrom: a@b\r\nFrom: c@d\r\n\
                 Message-ID: <1@x>\r\nMessage-ID: <2@x>\r\n\r\n"
            ),
            "(NIL \"two words\" ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) \
             ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) ((NIL NIL \"a\" \"b\")(NIL NIL \"c\" \"d\")) \
             NIL NIL NIL NIL \"<2@x>\")"
        );
    }

    #[test]
    fn eight_bit_subject_is_a_literal() {
        assert_eq!(
            envelope("Subject: caf\u{e9}\r\n\r\n"),
            "(NIL {5}\r\ncaf\u{e9} NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
    }
}
