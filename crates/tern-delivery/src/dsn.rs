//! Delivery Status Notifications (RFC 3461–3464): the bounce, delay,
//! success and "relayed" reports Tern sends to a message's envelope sender.
//!
//! [`build_dsn`] turns a [`DsnInput`] into a complete RFC 5322 message with
//! CRLF line endings: `multipart/report; report-type=delivery-status` with
//! a human-readable `text/plain` part naming each recipient and what the
//! remote server said, a `message/delivery-status` part (RFC 3464), and the
//! original message (`message/rfc822`) or only its headers
//! (`text/rfc822-headers`, for `RET=HDRS` and for every delay notice).
//! [`should_notify`] applies a recipient's `NOTIFY=` (RFC 3461 4.1) and
//! [`bounce_recipient`] refuses to report to the null sender (never bounce
//! a bounce: the caller reports those to the local postmaster once). The
//! report is sent with the null reverse path `<>`; that is the caller's job.
//!
//! Everything here is pure: no clock (dates and the boundary seed come in),
//! no I/O.
//!
//! What this module must never do: let text from the remote server, the
//! envelope or the original message add or end a header line — remote
//! replies and addresses have CR, LF and other control characters removed
//! and are folded so that no line exceeds 998 octets; the attached original
//! has every bare CR or LF turned into CRLF and is returned as headers only
//! when it cannot travel whole (lines over 998 octets, `BINARYMIME`); the
//! MIME boundary never occurs in any part. The `message/delivery-status`
//! part is 7-bit: non-ASCII in its addresses is written as xtext (`+XX`)
//! and elsewhere replaced by `?` (RFC 6533 global DSNs are not produced).

use std::fmt::Write as _;

use tern_queue::{Envelope, Recipient};
use tern_types::dsn::Notify;
use tern_types::{EnhancedStatus, Mailbox};

/// Longest line (without CRLF) RFC 5322 allows.
const MAX_LINE: usize = 998;
/// Preferred line length when folding and wrapping.
const FOLD_AT: usize = 76;
/// Longest unbroken run of text kept on one line; longer words are split.
const MAX_WORD: usize = 900;
/// Longest diagnostic text kept (bytes); a longer remote reply is cut.
const MAX_DIAGNOSTIC: usize = 2048;

/// Which report to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnKind {
    /// Recipients that failed or expired (`Action: failed`).
    Failure,
    /// Recipients still being retried (`Action: delayed`).
    Delay,
    /// Recipients delivered, when `NOTIFY=SUCCESS` asked for it.
    Success,
    /// Recipients handed to a next hop that cannot carry DSN requests
    /// (`NOTIFY=SUCCESS` asked, RFC 3461 5.2.2).
    Relayed,
}

impl DsnKind {
    /// The `Subject:` of this kind of report.
    pub fn subject(self) -> &'static str {
        match self {
            DsnKind::Failure => "Undelivered Mail Returned to Sender",
            DsnKind::Delay => "Delayed Mail (still being retried)",
            DsnKind::Success => "Successful Mail Delivery Report",
            DsnKind::Relayed => "Relayed mail",
        }
    }
}

/// The `Action:` of one recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnAction {
    /// Could not be delivered (failed or expired).
    Failed,
    /// Not delivered yet; still being retried.
    Delayed,
    /// Delivered to the recipient's mailbox.
    Delivered,
    /// Handed to a system that will not send further DSNs.
    Relayed,
    /// Delivered and then expanded to further addresses (an alias).
    Expanded,
}

impl DsnAction {
    /// The keyword written in the `Action:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
            DsnAction::Expanded => "expanded",
        }
    }

    /// The generic status used when a recipient's status is not a valid
    /// RFC 3463 code.
    fn generic_status(self) -> &'static str {
        match self {
            DsnAction::Failed => "5.0.0",
            DsnAction::Delayed => "4.0.0",
            DsnAction::Delivered | DsnAction::Relayed | DsnAction::Expanded => "2.0.0",
        }
    }
}

/// One recipient of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The address delivery was attempted to (`Final-Recipient: rfc822;…`).
    pub final_recipient: String,
    /// The DSN `ORCPT=` as stored in the envelope (`"rfc822;addr"`), for
    /// `Original-Recipient:`; a value without `;` is taken as rfc822.
    pub original: Option<String>,
    /// What happened.
    pub action: DsnAction,
    /// RFC 3463 status, e.g. `5.1.1` (an invalid one becomes the generic
    /// code of the action's class).
    pub status: String,
    /// The host that answered, for `Remote-MTA: dns;…`.
    pub remote_mta: Option<String>,
    /// What the remote server (or the local system) said, for
    /// `Diagnostic-Code:`; an SMTP reply is typed `smtp`, other text `X-Tern`.
    pub diagnostic: Option<String>,
    /// When the last attempt was made (Unix seconds; 0 leaves the field out).
    pub last_attempt: u64,
    /// For delayed recipients: when Tern gives up (Unix seconds).
    pub will_retry_until: Option<u64>,
}

/// Everything [`build_dsn`] needs.
#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    /// This server's name: `Reporting-MTA`, `MAILER-DAEMON@…`.
    pub hostname: String,
    /// Which report.
    pub kind: DsnKind,
    /// The envelope of the message reported on (sender, ENVID, RET,
    /// arrival time, body type).
    pub envelope: &'a Envelope,
    /// The recipients to report, already filtered with [`should_notify`].
    pub recipients: Vec<DsnRecipient>,
    /// The stored message bytes.
    pub original: &'a [u8],
    /// The `Date:` of the report (RFC 5322 format, see [`rfc5322_date`]).
    pub date: String,
    /// The `Message-ID:` of the report, with or without angle brackets.
    pub message_id: String,
    /// Seed for the MIME boundary (any value; a clash with the content is
    /// avoided by the builder).
    pub boundary_seed: u64,
}

/// Whether `recipient` asked for a report of this `kind` (RFC 3461 4.1):
/// `NOTIFY=NEVER` never; an explicit list exactly what it names (a
/// relayed notice counts as success); no `NOTIFY` means failures and
/// delays but not successes.
pub fn should_notify(recipient: &Recipient, kind: DsnKind) -> bool {
    let notify = recipient_notify(recipient);
    match kind {
        DsnKind::Failure => notify.failure(),
        DsnKind::Delay => notify.delay(),
        DsnKind::Success | DsnKind::Relayed => notify.success(),
    }
}

/// The NOTIFY a recipient asked for; [`Notify::DEFAULT`] when it asked
/// for none.
pub fn recipient_notify(recipient: &Recipient) -> Notify {
    recipient.notify.unwrap_or(Notify::DEFAULT)
}

/// Where a report about `envelope` goes: its sender, or `None` for the null
/// sender `<>` (a bounce, or another report): never bounce a bounce. A
/// stored sender that no longer parses reads as `<>` (see
/// [`tern_queue::envelope`]), so its reports go to the postmaster.
pub fn bounce_recipient(envelope: &Envelope) -> Option<&Mailbox> {
    envelope.sender.mailbox()
}

/// `Unix seconds` as an RFC 5322 date in UTC, e.g.
/// `Tue, 14 Nov 2023 22:13:20 +0000`.
pub fn rfc5322_date(unix: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Proleptic Gregorian (year, month 1–12, day 1–31) of a day count since
/// 1970-01-01, by 400-year eras of 146,097 days counted from 0000-03-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Build the report (see the module documentation).
pub fn build_dsn(input: &DsnInput<'_>) -> Vec<u8> {
    let host = ascii_token(&input.hostname);
    let attachment = Attachment::new(input);
    let text = human_text(input, &host, &attachment);
    let status = delivery_status(input, &host);
    let text_8bit = !text.is_ascii();
    let boundary = pick_boundary(
        input.boundary_seed,
        &[text.as_bytes(), status.as_bytes(), &attachment.body],
    );

    let mut head = String::with_capacity(1024);
    push_field(
        &mut head,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
    );
    let to = match bounce_recipient(input.envelope) {
        Some(sender) => clean_text(&sender.to_string()),
        None => format!("postmaster@{host}"),
    };
    push_field(&mut head, "To", &format!("<{to}>"));
    push_field(&mut head, "Subject", input.kind.subject());
    push_field(&mut head, "Date", &ascii_text(&input.date));
    let id = ascii_token(&input.message_id);
    let id = id.trim_start_matches('<').trim_end_matches('>');
    push_field(&mut head, "Message-ID", &format!("<{id}>"));
    push_field(&mut head, "Auto-Submitted", "auto-replied");
    push_field(&mut head, "MIME-Version", "1.0");
    push_field(
        &mut head,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    let eight_bit = text_8bit || attachment.eight_bit;
    push_field(
        &mut head,
        "Content-Transfer-Encoding",
        if eight_bit { "8bit" } else { "7bit" },
    );
    head.push_str("\r\nThis is a MIME-encapsulated delivery status notification.\r\n");

    // Part 1: for people.
    let _ = write!(head, "\r\n--{boundary}\r\n");
    let (charset, cte) = if text_8bit {
        ("utf-8", "8bit")
    } else {
        ("us-ascii", "7bit")
    };
    let _ = write!(
        head,
        "Content-Type: text/plain; charset={charset}\r\n\
         Content-Description: Notification\r\n\
         Content-Transfer-Encoding: {cte}\r\n\r\n{text}"
    );
    // Part 2: for programs.
    let _ = write!(
        head,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\r\n{status}"
    );
    // Part 3: what was sent.
    let _ = write!(
        head,
        "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Description: {}\r\n",
        attachment.content_type, attachment.description
    );
    if attachment.eight_bit {
        head.push_str("Content-Transfer-Encoding: 8bit\r\n");
    }
    head.push_str("\r\n");

    let mut out = head.into_bytes();
    out.extend_from_slice(&attachment.body);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The third part: the original, or its headers.
struct Attachment {
    content_type: &'static str,
    description: &'static str,
    /// CRLF-normalised, ends in CRLF (or is empty).
    body: Vec<u8>,
    eight_bit: bool,
    /// Full content was asked for but only the headers could be returned.
    headers_fallback: bool,
}

impl Attachment {
    fn new(input: &DsnInput<'_>) -> Attachment {
        let normalised = without_signature_fields(to_crlf(input.original));
        // RET is about failure reports (RFC 3461 4.3); delay, success and
        // relayed reports carry the headers only.
        let want_full = input.kind == DsnKind::Failure
            && input.envelope.ret != Some(tern_types::dsn::Ret::Headers);
        let can_full = input.envelope.body != tern_types::dsn::BodyType::BinaryMime
            && normalised
                .split(|&b| b == b'\n')
                .all(|line| line.len() <= MAX_LINE + 1);
        if want_full && can_full {
            return Attachment {
                content_type: "message/rfc822",
                description: "The original message",
                eight_bit: !normalised.is_ascii(),
                body: normalised,
                headers_fallback: false,
            };
        }
        let body = split_long_lines(header_block(&normalised));
        Attachment {
            content_type: "text/rfc822-headers",
            description: "The headers of the original message",
            eight_bit: !body.is_ascii(),
            body,
            headers_fallback: want_full,
        }
    }
}

fn human_text(input: &DsnInput<'_>, host: &str, attachment: &Attachment) -> String {
    let mut text = String::with_capacity(1024);
    let mut para = |s: &str| {
        wrap(&mut text, s, "");
        text.push_str("\r\n");
    };
    para(&format!("This is the mail system at {host}."));
    para(match input.kind {
        DsnKind::Failure => {
            "Your message could not be delivered to the recipients listed below. \
             The mail system has given up on them; what the receiving side said is \
             shown with each one."
        }
        DsnKind::Delay => {
            "Your message has not been delivered yet to the recipients listed below. \
             The mail system is still trying and will tell you if it gives up; there \
             is no need to send the message again."
        }
        DsnKind::Success => {
            "Your message was delivered to the recipients listed below, as you asked \
             to be told."
        }
        DsnKind::Relayed => {
            "Your message was passed on for the recipients listed below to a mail \
             system that does not send delivery notifications, so this is the last \
             report you will receive about them."
        }
    });
    for r in &input.recipients {
        wrap(&mut text, &format!("<{}>:", r.final_recipient), "");
        let said = match (&r.remote_mta, &r.diagnostic) {
            (Some(mta), Some(d)) => format!("{} said: {}", clean_text(mta), diagnostic_text(d)),
            (None, Some(d)) => diagnostic_text(d),
            (Some(mta), None) => format!("{} (status {})", clean_text(mta), status_of(r)),
            (None, None) => format!("status {}", status_of(r)),
        };
        wrap(&mut text, &said, "    ");
        if let Some(until) = r
            .will_retry_until
            .filter(|_| r.action == DsnAction::Delayed)
        {
            wrap(
                &mut text,
                &format!("Will keep trying until {}.", rfc5322_date(until)),
                "    ",
            );
        }
        text.push_str("\r\n");
    }
    let note = match (input.kind, attachment.content_type) {
        (DsnKind::Delay, _) => "The headers of your message are attached.",
        (_, "message/rfc822") => "Your message is attached.",
        _ if attachment.headers_fallback => {
            "The headers of your message are attached; the message could not be \
             returned whole (binary content or overlong lines)."
        }
        _ => "The headers of your message are attached.",
    };
    wrap(&mut text, note, "");
    text
}

fn delivery_status(input: &DsnInput<'_>, host: &str) -> String {
    let mut s = String::with_capacity(512);
    push_field(&mut s, "Reporting-MTA", &format!("dns; {host}"));
    if let Some(envid) = input
        .envelope
        .envid
        .as_ref()
        .map(|e| e.as_str())
        .filter(|e| !e.is_empty())
    {
        push_field(&mut s, "Original-Envelope-Id", &xtext(envid));
    }
    if input.envelope.received_at > 0 {
        push_field(
            &mut s,
            "Arrival-Date",
            &rfc5322_date(input.envelope.received_at),
        );
    }
    for r in &input.recipients {
        s.push_str("\r\n");
        if let Some(orcpt) = r.original.as_deref().filter(|o| !o.trim().is_empty()) {
            let (kind, addr) = match orcpt.split_once(';') {
                Some((kind, addr)) => (kind.trim(), addr.trim()),
                None => ("rfc822", orcpt.trim()),
            };
            let kind: String = kind
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let kind = if kind.is_empty() {
                "rfc822".into()
            } else {
                kind
            };
            push_field(
                &mut s,
                "Original-Recipient",
                &format!("{kind}; {}", xtext(addr)),
            );
        }
        push_field(
            &mut s,
            "Final-Recipient",
            &format!("rfc822; {}", xtext(&r.final_recipient)),
        );
        push_field(&mut s, "Action", r.action.as_str());
        push_field(&mut s, "Status", &status_of(r));
        if let Some(mta) = r.remote_mta.as_deref().filter(|m| !m.trim().is_empty()) {
            push_field(&mut s, "Remote-MTA", &format!("dns; {}", ascii_token(mta)));
        }
        if let Some(d) = r.diagnostic.as_deref().filter(|d| !d.trim().is_empty()) {
            let d = ascii_text(&diagnostic_text(d));
            let is_smtp = d.len() >= 3 && d.as_bytes()[..3].iter().all(u8::is_ascii_digit);
            let kind = if is_smtp { "smtp" } else { "X-Tern" };
            push_field(&mut s, "Diagnostic-Code", &format!("{kind}; {d}"));
        }
        if r.last_attempt > 0 {
            push_field(&mut s, "Last-Attempt-Date", &rfc5322_date(r.last_attempt));
        }
        if let Some(until) = r
            .will_retry_until
            .filter(|_| r.action == DsnAction::Delayed)
        {
            push_field(&mut s, "Will-Retry-Until", &rfc5322_date(until));
        }
    }
    s
}

/// The recipient's status if it is a valid RFC 3463 code (read by the one
/// parser, [`EnhancedStatus`]'s `FromStr`), else the generic one for its
/// action.
fn status_of(r: &DsnRecipient) -> String {
    match r.status.trim().parse::<EnhancedStatus>() {
        Ok(status) => status.to_string(),
        Err(_) => r.action.generic_status().to_owned(),
    }
}

/// A remote reply made safe for one (folded) line: control characters
/// removed, whitespace collapsed, cut to [`MAX_DIAGNOSTIC`] bytes.
fn diagnostic_text(d: &str) -> String {
    let mut d = clean_text(d);
    if d.len() > MAX_DIAGNOSTIC {
        let mut end = MAX_DIAGNOSTIC - 3;
        while !d.is_char_boundary(end) {
            end -= 1;
        }
        d.truncate(end);
        d.push_str("...");
    }
    d
}

/// Control characters (CR, LF, TAB, NUL, …) become spaces; runs of
/// whitespace become one space; the ends are trimmed.
fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

/// [`clean_text`], with non-ASCII replaced by `?` (7-bit fields).
fn ascii_text(s: &str) -> String {
    clean_text(s)
        .chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// A single token (host name, message id): the first word of `s`, with
/// anything but printable ASCII dropped; whatever follows a space or a
/// control character is not part of it.
fn ascii_token(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_graphic)
        .collect()
}

/// Printable ASCII other than space kept; every other byte as xtext `+XX`.
fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.trim().as_bytes() {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// `s` cut into pieces of at most `max` bytes on character boundaries.
fn chunks(s: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// `Name: value` folded at spaces near [`FOLD_AT`] columns (continuation
/// lines start with a space); a word longer than [`MAX_WORD`] is split, so
/// no line exceeds [`MAX_LINE`]. `value` must already be clean.
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut line = name.len() + 1;
    let mut first = true;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        for piece in chunks(word, MAX_WORD) {
            if !first && line + 1 + piece.len() > FOLD_AT {
                out.push_str("\r\n");
                line = 0;
            }
            out.push(' ');
            out.push_str(piece);
            line += 1 + piece.len();
            first = false;
        }
    }
    out.push_str("\r\n");
}

/// `text` (cleaned) as lines of about [`FOLD_AT`] columns, each starting
/// with `indent` and ending in CRLF.
fn wrap(out: &mut String, text: &str, indent: &str) {
    let text = clean_text(text);
    let mut line = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        for piece in chunks(word, MAX_WORD) {
            if line > 0 && line + 1 + piece.len() > FOLD_AT {
                out.push_str("\r\n");
                line = 0;
            }
            if line == 0 {
                out.push_str(indent);
                line = indent.len();
            } else {
                out.push(' ');
                line += 1;
            }
            out.push_str(piece);
            line += piece.len();
        }
    }
    if line > 0 {
        out.push_str("\r\n");
    }
}

/// Every CRLF, bare CR and bare LF as CRLF; a missing final line end added.
fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32 + 2);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Header fields a notice never hands back: `DKIM-Signature:` and the ARC
/// set (`ARC-Seal:`, `ARC-Message-Signature:`,
/// `ARC-Authentication-Results:`). Ours would give the sender a signature
/// by our domain to replay elsewhere; the sender's own are of no use to it
/// in a report.
const SIGNATURE_FIELDS: [&str; 4] = [
    "dkim-signature",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
];

/// A CRLF-normalised message without the [`SIGNATURE_FIELDS`] of its
/// header section (each with its continuation lines); the body is kept.
fn without_signature_fields(message: Vec<u8>) -> Vec<u8> {
    let header_len = header_block(&message).len();
    let mut out = Vec::with_capacity(message.len());
    let mut dropping = false;
    for line in message[..header_len].split_inclusive(|&b| b == b'\n') {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if !dropping {
                out.extend_from_slice(line);
            }
            continue;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        dropping = SIGNATURE_FIELDS
            .iter()
            .any(|f| name.trim_ascii().eq_ignore_ascii_case(f.as_bytes()));
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&message[header_len..]);
    out
}

/// The header section of a CRLF-normalised message, each line with its
/// CRLF, without the empty line that ends it (all of it if there is none).
fn header_block(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(pos) => &message[..pos + 2],
        None => message,
    }
}

/// CRLF-terminated lines longer than [`MAX_LINE`] split into continuation
/// lines (starting with a space), never inside a UTF-8 sequence.
fn split_long_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        if content.len() <= MAX_LINE {
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
            continue;
        }
        let mut rest = content;
        let mut first = true;
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_WORD);
            while cut < rest.len() && cut > 1 && rest[cut] & 0xC0 == 0x80 {
                cut -= 1;
            }
            if !first {
                out.push(b' ');
            }
            out.extend_from_slice(&rest[..cut]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[cut..];
            first = false;
        }
    }
    out
}

/// A boundary derived from `seed` that occurs in none of `parts`.
fn pick_boundary(seed: u64, parts: &[&[u8]]) -> String {
    let mut n: u32 = 0;
    loop {
        let candidate = format!("=_tern_dsn_{seed:016x}_{n}");
        let needle = candidate.as_bytes();
        if !parts
            .iter()
            .any(|p| p.windows(needle.len()).any(|w| w == needle))
        {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(4_107_542_399),
            "Sun, 28 Feb 2100 23:59:59 +0000"
        );
        assert_eq!(
            rfc5322_date(4_107_542_400),
            "Mon, 1 Mar 2100 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(1_709_164_800),
            "Thu, 29 Feb 2024 00:00:00 +0000"
        );
        // Never panics, even at the end of time.
        assert!(rfc5322_date(u64::MAX).ends_with("+0000"));
    }

    #[test]
    fn crlf_normalisation() {
        assert_eq!(to_crlf(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(to_crlf(b"\r\r\n\n"), b"\r\n\r\n\r\n");
        assert_eq!(to_crlf(b""), b"");
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_block(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_block(b"\r\nbody\r\n"), b"");
    }

    /// Security finding 1: a "relayed" notice handed the (unauthenticated)
    /// sender the DKIM signature we had put on its message.
    #[test]
    fn finding_01_signature_fields_are_not_returned() {
        let msg =
            b"DKIM-Signature: v=1; d=example.test;\r\n\tb=abc\r\nARC-Seal: i=1; d=example.test\r\n\
From: a@b.test\r\narc-message-signature: i=1;\r\n b=x\r\nARC-Authentication-Results: i=1; mx\r\n\
Subject: s\r\n\r\nDKIM-Signature: in the body stays\r\n"
                .to_vec();
        assert_eq!(
            without_signature_fields(msg),
            b"From: a@b.test\r\nSubject: s\r\n\r\nDKIM-Signature: in the body stays\r\n"
        );
        assert_eq!(without_signature_fields(b"A: 1\r\n".to_vec()), b"A: 1\r\n");
        assert_eq!(without_signature_fields(Vec::new()), b"");
    }

    #[test]
    fn long_lines_are_split_and_kept() {
        let long = format!("X-Long: {}\r\nB: 2\r\n", "é".repeat(1500));
        let out = split_long_lines(long.as_bytes());
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= MAX_LINE + 1, "{}", line.len());
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\nB: 2\r\n"));
        assert_eq!(
            text.replace("\r\n ", "").replace("\r\n", "\n"),
            long.replace("\r\n", "\n")
        );
    }

    #[test]
    fn folding_keeps_lines_short() {
        let mut s = String::new();
        let word = "w".repeat(5000);
        push_field(&mut s, "Diagnostic-Code", &format!("smtp; 550 {word} tail"));
        for line in s.split("\r\n") {
            assert!(line.len() <= MAX_LINE);
        }
        assert!(s.starts_with("Diagnostic-Code: smtp; 550"));
        assert!(s.ends_with(" tail\r\n"));
        assert_eq!(s.matches('\n').count(), s.matches("\r\n").count());
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean_text(" a\r\nb\t\tc\0 "), "a b c");
        assert_eq!(ascii_text("550 ünknown"), "550 ?nknown");
        assert_eq!(xtext("ü@x.test"), "+C3+BC@x.test");
        assert_eq!(xtext("a+b@x.test"), "a+b@x.test");
        assert_eq!(ascii_token(" mx.example.net\r\nX: y"), "mx.example.net");
        assert_eq!(ascii_token("mx.\u{e9}xample.net"), "mx.xample.net");
        assert_eq!(ascii_token(""), "");
    }

    #[test]
    fn boundary_avoids_the_content() {
        let b0 = pick_boundary(7, &[b"nothing"]);
        let content = format!("x {b0} y");
        let b1 = pick_boundary(7, &[content.as_bytes()]);
        assert_ne!(b0, b1);
        assert!(!content.contains(&b1));
    }
}
