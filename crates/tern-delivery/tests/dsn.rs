//! Delivery status notifications checked the way a receiving mail client
//! would read them: parsed with mail-parser, the delivery-status part read
//! as RFC 3464 field groups, plus raw checks on line endings and lengths.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use tern_delivery::{
    DsnAction, DsnInput, DsnKind, DsnRecipient, bounce_recipient, build_dsn, rfc5322_date,
    should_notify,
};
use tern_queue::{Envelope, Recipient};

const HOST: &str = "mx.example.test";
const RECEIVED: u64 = 1_700_000_000;
const ORIGINAL: &[u8] = b"From: Carol <carol@sender.test>\r\n\
To: a@remote.test, b@remote.test, c@remote.test\r\n\
Subject: quarterly figures\r\n\
Message-ID: <orig-1@sender.test>\r\n\
\r\n\
The figures are attached.\r\n\
SECRET-BODY-LINE\r\n";

fn recipient(addr: &str, notify: Option<&str>, orcpt: Option<&str>) -> Recipient {
    Recipient {
        notify: notify.map(|n| n.parse().unwrap()),
        orcpt: orcpt.map(|o| o.parse().unwrap()),
        ..Recipient::new(addr.parse().unwrap())
    }
}

fn envelope(sender: &str, ret: Option<&str>, envid: Option<&str>) -> Envelope {
    Envelope {
        sender: tern_queue::envelope::read_sender(sender).unwrap(),
        recipients: vec![
            recipient("a@remote.test", None, None),
            recipient(
                "b@remote.test",
                Some("FAILURE"),
                Some("rfc822;B@Remote.Test"),
            ),
            recipient("c@remote.test", Some("SUCCESS,DELAY"), None),
        ],
        received_at: RECEIVED,
        helo: Some("client.sender.test".into()),
        protocol: "ESMTPSA".into(),
        auth_user: Some("carol".into()),
        body: "8BITMIME".parse().unwrap(),
        ret: ret.map(|r| r.parse().unwrap()),
        envid: envid.map(|e| e.parse().unwrap()),
        size: ORIGINAL.len() as u64,
        ..Envelope::default()
    }
}

fn failed_b() -> DsnRecipient {
    DsnRecipient {
        final_recipient: "b@remote.test".into(),
        original: Some("rfc822;B@Remote.Test".into()),
        action: DsnAction::Failed,
        status: "5.1.1".into(),
        remote_mta: Some("mx1.remote.test".into()),
        diagnostic: Some("550 5.1.1 <b@remote.test>: Recipient address rejected".into()),
        last_attempt: RECEIVED + 60,
        will_retry_until: None,
    }
}

fn input<'a>(
    kind: DsnKind,
    envelope: &'a Envelope,
    recipients: Vec<DsnRecipient>,
    original: &'a [u8],
) -> DsnInput<'a> {
    DsnInput {
        hostname: HOST.into(),
        kind,
        envelope,
        recipients,
        original,
        date: rfc5322_date(RECEIVED + 120),
        message_id: "dsn-1@mx.example.test".into(),
        boundary_seed: 0x5eed,
    }
}

/// Raw properties every report must have: CRLF only, lines ≤ 998.
fn check_raw(dsn: &[u8]) {
    for (i, &b) in dsn.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && dsn[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(dsn.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    for line in dsn.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
    assert!(dsn.ends_with(b"--\r\n"));
}

/// The three parts of a parsed report.
struct Report<'x> {
    message: Message<'x>,
}

impl<'x> Report<'x> {
    fn parse(dsn: &'x [u8]) -> Report<'x> {
        check_raw(dsn);
        let message = MessageParser::default().parse(dsn).expect("parses");
        let ct = message.content_type().expect("content type");
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let report = Report { message };
        assert_eq!(report.part_ids().len(), 3, "three parts");
        report
    }

    fn part_ids(&self) -> Vec<u32> {
        match &self.message.parts[0].body {
            PartType::Multipart(ids) => ids.clone(),
            other => panic!("root is not multipart: {other:?}"),
        }
    }

    fn part(&self, n: usize) -> &mail_parser::MessagePart<'x> {
        &self.message.parts[self.part_ids()[n] as usize]
    }

    fn content_type(&self, n: usize) -> String {
        let ct = self.part(n).content_type().expect("part content type");
        format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
    }

    /// The human-readable part with its line wrapping undone.
    fn text(&self) -> String {
        assert_eq!(self.content_type(0), "text/plain");
        let text = self.part(0).text_contents().expect("text");
        for line in text.split("\r\n") {
            assert!(line.len() <= 78, "wrapped near 76 columns: {line:?}");
        }
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The delivery-status part as field groups (per-message first).
    fn status(&self) -> Vec<Vec<(String, String)>> {
        assert_eq!(self.content_type(1), "message/delivery-status");
        let body = std::str::from_utf8(self.part(1).contents()).expect("7-bit status");
        assert!(body.is_ascii());
        body.split("\r\n\r\n")
            .filter(|g| !g.trim().is_empty())
            .map(|group| {
                let unfolded = group.replace("\r\n ", " ").replace("\r\n\t", " ");
                unfolded
                    .split("\r\n")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("field {l:?}"));
                        (k.to_owned(), v.trim().to_owned())
                    })
                    .collect()
            })
            .collect()
    }

    fn header(&self, name: &str) -> String {
        self.message
            .header_raw(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .trim()
            .to_owned()
    }
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found = group.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    let first = found.next().map(|(_, v)| v.as_str());
    assert!(found.next().is_none(), "{name} appears twice");
    first
}

#[test]
fn failure_for_one_of_three_recipients() {
    let env = envelope("carol@sender.test", None, Some("QQ314159"));
    let dsn = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], ORIGINAL));
    let report = Report::parse(&dsn);

    // Top-level headers.
    let from = report.message.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@mx.example.test"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    let to = report.message.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some("carol@sender.test"));
    assert_eq!(
        report.message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(report.message.message_id(), Some("dsn-1@mx.example.test"));
    assert_eq!(report.header("Auto-Submitted"), "auto-replied");
    assert_eq!(report.header("MIME-Version"), "1.0");
    assert_eq!(report.header("Date"), "Tue, 14 Nov 2023 22:15:20 +0000");
    assert!(report.message.date().is_some());

    // The human part names the failed recipient and the server's reply,
    // and no other recipient.
    let text = report.text();
    assert!(text.contains("<b@remote.test>"), "{text}");
    assert!(text.contains("mx1.remote.test said: 550 5.1.1"), "{text}");
    assert!(text.contains("Recipient address rejected"), "{text}");
    assert!(!text.contains("a@remote.test") && !text.contains("c@remote.test"));

    // The machine part.
    let groups = report.status();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let msg = &groups[0];
    assert_eq!(field(msg, "Reporting-MTA"), Some("dns; mx.example.test"));
    assert_eq!(field(msg, "Original-Envelope-Id"), Some("QQ314159"));
    assert_eq!(
        field(msg, "Arrival-Date"),
        Some("Tue, 14 Nov 2023 22:13:20 +0000")
    );
    let rcpt = &groups[1];
    assert_eq!(
        field(rcpt, "Original-Recipient"),
        Some("rfc822; B@Remote.Test")
    );
    assert_eq!(
        field(rcpt, "Final-Recipient"),
        Some("rfc822; b@remote.test")
    );
    assert_eq!(field(rcpt, "Action"), Some("failed"));
    assert_eq!(field(rcpt, "Status"), Some("5.1.1"));
    assert_eq!(field(rcpt, "Remote-MTA"), Some("dns; mx1.remote.test"));
    assert_eq!(
        field(rcpt, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <b@remote.test>: Recipient address rejected")
    );
    assert_eq!(
        field(rcpt, "Last-Attempt-Date"),
        Some("Tue, 14 Nov 2023 22:14:20 +0000")
    );
    assert_eq!(field(rcpt, "Will-Retry-Until"), None);
    let status_text = std::str::from_utf8(report.part(1).contents()).unwrap();
    assert!(!status_text.contains("a@remote.test") && !status_text.contains("c@remote.test"));

    // RET not given: the whole original comes back.
    assert_eq!(report.content_type(2), "message/rfc822");
    let PartType::Message(original) = &report.part(2).body else {
        panic!("not a message: {:?}", report.part(2).body);
    };
    assert_eq!(original.subject(), Some("quarterly figures"));
    assert_eq!(original.message_id(), Some("orig-1@sender.test"));
    assert!(original.body_text(0).unwrap().contains("SECRET-BODY-LINE"));

    // Deterministic for a given input; another seed, another boundary.
    let again = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], ORIGINAL));
    assert_eq!(dsn, again);
    let mut other = input(DsnKind::Failure, &env, vec![failed_b()], ORIGINAL);
    other.boundary_seed = 99;
    assert_ne!(build_dsn(&other), dsn);
}

#[test]
fn ret_hdrs_returns_only_the_headers() {
    let env = envelope("carol@sender.test", Some("HDRS"), None);
    let dsn = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], ORIGINAL));
    let report = Report::parse(&dsn);
    assert_eq!(report.content_type(2), "text/rfc822-headers");
    let headers = report.part(2).text_contents().unwrap();
    assert!(headers.contains("Subject: quarterly figures"), "{headers}");
    assert!(headers.contains("Message-ID: <orig-1@sender.test>"));
    assert!(!headers.contains("SECRET-BODY-LINE"));
    assert!(!String::from_utf8_lossy(&dsn).contains("SECRET-BODY-LINE"));
    // No ENVID given: no Original-Envelope-Id.
    assert_eq!(field(&report.status()[0], "Original-Envelope-Id"), None);
    // RET=FULL is the same as no RET.
    let env = envelope("carol@sender.test", Some("FULL"), None);
    let dsn = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], ORIGINAL));
    assert_eq!(Report::parse(&dsn).content_type(2), "message/rfc822");
}

#[test]
fn delay_notice() {
    let env = envelope("carol@sender.test", Some("FULL"), Some("E1"));
    let until = RECEIVED + 5 * 86_400;
    let delayed = DsnRecipient {
        final_recipient: "c@remote.test".into(),
        original: None,
        action: DsnAction::Delayed,
        status: "4.4.1".into(),
        remote_mta: None,
        diagnostic: Some("4.4.1 connection refused by mx1.remote.test".into()),
        last_attempt: RECEIVED + 4 * 3600,
        will_retry_until: Some(until),
    };
    let dsn = build_dsn(&input(DsnKind::Delay, &env, vec![delayed], ORIGINAL));
    let report = Report::parse(&dsn);
    assert_eq!(
        report.message.subject(),
        Some("Delayed Mail (still being retried)")
    );
    let text = report.text();
    assert!(text.contains("<c@remote.test>"));
    assert!(text.contains("connection refused"));
    assert!(text.contains(&rfc5322_date(until)), "{text}");
    let groups = report.status();
    let rcpt = &groups[1];
    assert_eq!(field(rcpt, "Action"), Some("delayed"));
    assert_eq!(field(rcpt, "Status"), Some("4.4.1"));
    assert_eq!(field(rcpt, "Original-Recipient"), None);
    assert_eq!(field(rcpt, "Remote-MTA"), None);
    assert_eq!(
        field(rcpt, "Diagnostic-Code"),
        Some("X-Tern; 4.4.1 connection refused by mx1.remote.test")
    );
    assert_eq!(
        field(rcpt, "Will-Retry-Until"),
        Some(rfc5322_date(until).as_str())
    );
    // A delay notice never returns the body, whatever RET says.
    assert_eq!(report.content_type(2), "text/rfc822-headers");
    assert!(!String::from_utf8_lossy(&dsn).contains("SECRET-BODY-LINE"));
}

#[test]
fn success_and_relayed_notices() {
    let env = envelope("carol@sender.test", None, None);
    for (kind, action, subject) in [
        (
            DsnKind::Success,
            DsnAction::Delivered,
            "Successful Mail Delivery Report",
        ),
        (DsnKind::Relayed, DsnAction::Relayed, "Relayed mail"),
    ] {
        let ok = DsnRecipient {
            final_recipient: "c@remote.test".into(),
            original: Some("c@remote.test".into()),
            action,
            status: "2.0.0".into(),
            remote_mta: None,
            diagnostic: None,
            last_attempt: RECEIVED + 1,
            will_retry_until: Some(RECEIVED + 99),
        };
        let dsn = build_dsn(&input(kind, &env, vec![ok], ORIGINAL));
        let report = Report::parse(&dsn);
        assert_eq!(report.message.subject(), Some(subject));
        assert!(report.text().contains("<c@remote.test>"));
        let groups = report.status();
        let rcpt = &groups[1];
        assert_eq!(field(rcpt, "Action"), Some(action.as_str()));
        assert_eq!(field(rcpt, "Status"), Some("2.0.0"));
        assert_eq!(field(rcpt, "Diagnostic-Code"), None);
        // ORCPT without a type is rfc822; Will-Retry-Until only for delays.
        assert_eq!(
            field(rcpt, "Original-Recipient"),
            Some("rfc822; c@remote.test")
        );
        assert_eq!(field(rcpt, "Will-Retry-Until"), None);
        // RET is about failures (RFC 3461 4.3): success and relayed
        // notices carry the headers only.
        assert_eq!(report.content_type(2), "text/rfc822-headers");
    }
}

#[test]
fn notify_rules() {
    use DsnKind::*;
    let table: [(Option<&str>, [bool; 4]); 8] = [
        // notify            Failure Delay  Success Relayed
        (None, [true, true, false, false]),
        (Some("NEVER"), [false, false, false, false]),
        (Some("never"), [false, false, false, false]),
        (Some("FAILURE"), [true, false, false, false]),
        (Some("DELAY"), [false, true, false, false]),
        (Some("SUCCESS"), [false, false, true, true]),
        (Some("SUCCESS,FAILURE,DELAY"), [true, true, true, true]),
        (Some("success, delay"), [false, true, true, true]),
    ];
    for (notify, expected) in table {
        let r = recipient("x@remote.test", notify, None);
        let got = [Failure, Delay, Success, Relayed].map(|k| should_notify(&r, k));
        assert_eq!(got, expected, "NOTIFY={notify:?}");
    }
}

#[test]
fn never_bounce_a_bounce() {
    assert_eq!(
        bounce_recipient(&envelope("carol@sender.test", None, None)).map(ToString::to_string),
        Some("carol@sender.test".to_owned())
    );
    let null = envelope("", None, None);
    assert_eq!(bounce_recipient(&null), None);
    assert_eq!(bounce_recipient(&envelope("<>", None, None)), None);
    // Built anyway (for the postmaster), it is addressed to the postmaster,
    // never to `<>`.
    let dsn = build_dsn(&input(DsnKind::Failure, &null, vec![failed_b()], ORIGINAL));
    let report = Report::parse(&dsn);
    let to = report.message.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some("postmaster@mx.example.test"));
}

#[test]
fn hostile_remote_replies_are_neutralised() {
    let env = envelope("carol@sender.test", None, None);
    let boundaryish =
        "\r\n\r\n--=_tern_dsn_0000000000005eed_0\r\nContent-Type: text/html\r\n\r\n<b>x</b>";
    let evil = DsnRecipient {
        final_recipient: "b@remote.test\r\nX-Injected-Rcpt: 1".into(),
        original: Some("rfc822;b@remote.test\nX-Injected-Orcpt: 1".into()),
        action: DsnAction::Failed,
        status: "5.1.1\r\nX-Injected-Status: 1".into(),
        remote_mta: Some("mx.evil\r\nFinal-Recipient: rfc822; victim@x".into()),
        diagnostic: Some(format!(
            "550 5.7.1 no\r\nX-Injected: yes\r\n\r\nAction: delivered\0{boundaryish}{}",
            "A".repeat(10_000)
        )),
        last_attempt: RECEIVED,
        will_retry_until: None,
    };
    let huge_words = DsnRecipient {
        final_recipient: "a@remote.test".into(),
        diagnostic: Some(format!("550 {}", "word ".repeat(2_000))),
        ..failed_b()
    };
    let dsn = build_dsn(&input(
        DsnKind::Failure,
        &env,
        vec![evil, huge_words],
        ORIGINAL,
    ));
    let report = Report::parse(&dsn);
    let raw = String::from_utf8_lossy(&dsn);
    for injected in [
        "\r\nX-Injected",
        "\r\nAction: delivered",
        "\r\nFinal-Recipient: rfc822; victim",
        "\r\nContent-Type: text/html",
    ] {
        assert!(!raw.contains(injected), "{injected:?} injected");
    }
    let groups = report.status();
    assert_eq!(groups.len(), 3, "{groups:?}");
    let rcpt = &groups[1];
    assert_eq!(field(rcpt, "Action"), Some("failed"));
    // An invalid status becomes the generic one for the action.
    assert_eq!(field(rcpt, "Status"), Some("5.0.0"));
    let diag = field(rcpt, "Diagnostic-Code").unwrap();
    assert!(
        diag.starts_with("smtp; 550 5.7.1 no X-Injected: yes"),
        "{diag}"
    );
    assert!(
        diag.len() < 2_200,
        "diagnostic kept bounded: {}",
        diag.len()
    );
    assert!(rcpt.iter().all(|(k, _)| !k.starts_with("X-Injected")));
    assert_eq!(
        field(rcpt, "Final-Recipient"),
        Some("rfc822; b@remote.test+0D+0AX-Injected-Rcpt:+201")
    );
    assert_eq!(field(rcpt, "Remote-MTA"), Some("dns; mx.evil"));
    // The other recipient's 10 kB reply is folded onto short lines (the
    // raw check above) and cut to about 2 kB.
    let diag = field(&groups[2], "Diagnostic-Code").unwrap();
    assert!(diag.starts_with("smtp; 550 word word"), "{diag}");
    assert!(diag.ends_with("..."));
    assert_eq!(diag.matches("word").count(), 408);
    let status_part = std::str::from_utf8(report.part(1).contents()).unwrap();
    // Folded near 78 columns; only an unbreakable run is longer (and it is
    // split at 900 octets).
    for line in status_part.lines() {
        assert!(
            line.len() <= 78 || (!line.trim().contains(' ') && line.len() <= 901),
            "{line:?}"
        );
    }
    assert_eq!(report.part_ids().len(), 3);
    assert_eq!(report.content_type(2), "message/rfc822");
}

#[test]
fn the_original_is_normalised_or_reduced_to_headers() {
    // Bare LF and CR (and smuggling-shaped sequences) in the stored message.
    let messy = b"Subject: messy\nX-A: 1\r\n\nline one\rline two\n.\nMAIL FROM:<x@y>\r\n.\r";
    let env = envelope("carol@sender.test", None, None);
    let dsn = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], messy));
    let report = Report::parse(&dsn);
    assert_eq!(report.content_type(2), "message/rfc822");
    let PartType::Message(original) = &report.part(2).body else {
        panic!("not a message");
    };
    assert_eq!(original.subject(), Some("messy"));
    let body = original.body_text(0).unwrap();
    assert!(
        body.contains("line one\r\nline two\r\n.\r\nMAIL FROM"),
        "{body:?}"
    );

    // A line over 998 octets cannot travel whole: headers only, said so.
    let mut long = b"Subject: long\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 5_000));
    long.extend_from_slice(b"\r\n");
    let dsn = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], &long));
    let report = Report::parse(&dsn);
    assert_eq!(report.content_type(2), "text/rfc822-headers");
    assert!(
        report
            .part(2)
            .text_contents()
            .unwrap()
            .contains("Subject: long")
    );
    assert!(report.text().contains("could not be returned whole"));

    // BINARYMIME bodies come back as headers only too.
    let mut binary = envelope("carol@sender.test", None, None);
    binary.body = "BINARYMIME".parse().unwrap();
    let dsn = build_dsn(&input(
        DsnKind::Failure,
        &binary,
        vec![failed_b()],
        ORIGINAL,
    ));
    assert_eq!(Report::parse(&dsn).content_type(2), "text/rfc822-headers");

    // A header line over 998 octets in the returned headers is folded.
    let mut header = b"Subject: h\r\nX-Big: ".to_vec();
    header.extend(std::iter::repeat_n(b'y', 3_000));
    header.extend_from_slice(b"\r\n\r\nbody\r\n");
    let hdrs = envelope("carol@sender.test", Some("HDRS"), None);
    let dsn = build_dsn(&input(DsnKind::Failure, &hdrs, vec![failed_b()], &header));
    let report = Report::parse(&dsn);
    let returned = report.part(2).text_contents().unwrap();
    assert_eq!(returned.matches('y').count(), 3_000);

    // 8-bit originals are declared 8bit.
    let utf8 = "Subject: Grüße\r\n\r\nÄpfel\r\n".as_bytes();
    let dsn = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], utf8));
    let report = Report::parse(&dsn);
    assert_eq!(report.part(2).content_transfer_encoding(), Some("8bit"));
    assert_eq!(report.header("Content-Transfer-Encoding"), "8bit");
    let ascii = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], ORIGINAL));
    assert!(ascii.is_ascii());
}

#[test]
fn a_boundary_in_the_original_is_avoided() {
    let env = envelope("carol@sender.test", None, None);
    let first = build_dsn(&input(DsnKind::Failure, &env, vec![failed_b()], ORIGINAL));
    let report = Report::parse(&first);
    let boundary = report
        .message
        .content_type()
        .unwrap()
        .attribute("boundary")
        .unwrap()
        .to_owned();
    // An original that contains exactly that boundary.
    let trap = format!(
        "Subject: trap\r\n\r\n--{boundary}\r\nContent-Type: text/html\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let dsn = build_dsn(&input(
        DsnKind::Failure,
        &env,
        vec![failed_b()],
        trap.as_bytes(),
    ));
    let report = Report::parse(&dsn);
    let used = report
        .message
        .content_type()
        .unwrap()
        .attribute("boundary")
        .unwrap();
    assert_ne!(used, boundary);
    let PartType::Message(original) = &report.part(2).body else {
        panic!("not a message");
    };
    assert_eq!(original.subject(), Some("trap"));
}
