//! Byte-driven tests of the sans-IO server session: C: transcripts in,
//! S: replies and events out, no sockets.

mod common;

use common::{Answer, Harness, config, ehlo, in_transaction};
use tern_smtp::reply::Reply;
use tern_smtp::server::{
    AbortReason, BareLineEndings, EarlyTalkerPolicy, Event, ServerConfig, TimeoutClass,
};
use tern_types::EnhancedStatus;

fn codes(out: &str) -> Vec<String> {
    Harness::codes(out)
}

#[test]
fn greeting_and_ehlo_capabilities() {
    let mut h = Harness::ungreeted(config(), common::accept_all());
    h.session.greet();
    h.pump();
    assert_eq!(h.take(), "220 mx.tern.test ESMTP Tern\r\n");
    let out = h.send("EHLO client.test\r\n");
    let lines: Vec<&str> = out.trim_end().split("\r\n").collect();
    assert_eq!(lines[0], "250-mx.tern.test");
    for cap in [
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
        "DSN",
    ] {
        assert!(
            lines.iter().any(|l| &l[4..] == cap),
            "{cap} missing in {out}"
        );
    }
    assert!(!out.contains("STARTTLS"), "not available: not advertised");
    assert!(!out.contains("2.0.0"), "EHLO lines carry no enhanced code");
    assert!(lines.last().unwrap().starts_with("250 "));
    assert_eq!(
        h.events,
        [Event::Hello {
            name: "client.test".into(),
            extended: true
        }]
    );
    assert_eq!(h.session.helo_name(), Some("client.test"));
    assert_eq!(h.session.protocol(), "ESMTP");
}

#[test]
fn helo_gets_plain_250() {
    let mut h = Harness::new(config());
    assert_eq!(h.send("HELO client.test\r\n"), "250 mx.tern.test\r\n");
    assert_eq!(h.session.protocol(), "SMTP");
}

#[test]
fn starttls_advertised_only_when_available() {
    let mut h = Harness::new(ServerConfig {
        starttls_available: true,
        ..config()
    });
    assert!(h.send("EHLO c.test\r\n").contains("250 STARTTLS\r\n"));
}

#[test]
fn complete_transaction() {
    let mut h = ehlo(config());
    let out = h.send("MAIL FROM:<a@example.com> SIZE=100\r\n");
    assert_eq!(out, "250 2.1.0 Sender <a@example.com> OK\r\n");
    let out = h.send("RCPT TO:<b@example.net>\r\n");
    assert_eq!(out, "250 2.1.5 Recipient <b@example.net> OK\r\n");
    let out = h.send("DATA\r\n");
    assert_eq!(out, "354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_eq!(h.session.timeout_class(), TimeoutClass::Data);
    let out = h.send("Subject: hi\r\n\r\n..dotted\r\nbody\r\n.\r\n");
    assert_eq!(out, "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(
        h.messages,
        [b"Subject: hi\r\n\r\n.dotted\r\nbody\r\n".to_vec()]
    );
    assert_eq!(h.session.timeout_class(), TimeoutClass::Command);
    assert_eq!(
        h.send("QUIT\r\n"),
        "221 2.0.0 mx.tern.test closing connection\r\n"
    );
    assert!(h.session.is_closed());
    let ev = h.control_events();
    assert!(matches!(ev[1], Event::MailFrom { .. }));
    assert!(matches!(ev[2], Event::RcptTo { .. }));
    assert_eq!(
        ev[3..],
        [
            Event::DataStart { bdat: false },
            Event::DataEnd,
            Event::Reset,
            Event::Quit
        ]
    );
    // Input after close is ignored.
    assert_eq!(h.send("NOOP\r\n"), "");
}

#[test]
fn empty_message_is_immediate_dot() {
    let mut h = in_transaction(config());
    let out = h.send("DATA\r\n.\r\n");
    assert_eq!(codes(&out), ["354", "250 2.0.0"]);
    assert_eq!(h.messages, [Vec::<u8>::new()]);
}

#[test]
fn sequence_errors() {
    let mut h = Harness::new(config());
    assert_eq!(codes(&h.send("MAIL FROM:<a@b.c>\r\n")), ["503 5.5.1"]);
    assert_eq!(codes(&h.send("DATA\r\n")), ["503 5.5.1"]);
    h.send("EHLO c.test\r\n");
    assert_eq!(codes(&h.send("RCPT TO:<a@b.c>\r\n")), ["503 5.5.1"]);
    assert_eq!(codes(&h.send("DATA\r\n")), ["503 5.5.1"]);
    assert_eq!(codes(&h.send("MAIL FROM:<a@b.c>\r\n")), ["250 2.1.0"]);
    assert_eq!(codes(&h.send("MAIL FROM:<a@b.c>\r\n")), ["503 5.5.1"]);
    assert_eq!(
        codes(&h.send("DATA\r\n")),
        ["503 5.5.1"],
        "DATA before RCPT"
    );
    assert_eq!(codes(&h.send("RCPT TO:<x@y.z>\r\n")), ["250 2.1.5"]);
    assert_eq!(codes(&h.send("DATA\r\n")), ["354"]);
    assert!(!h.session.is_closed());
    assert_eq!(h.count(|e| matches!(e, Event::MailFrom { .. })), 1);
}

#[test]
fn data_with_binarymime_is_a_sequence_error() {
    let mut h = ehlo(config());
    h.send("MAIL FROM:<a@b.c> BODY=BINARYMIME\r\nRCPT TO:<x@y.z>\r\n");
    assert_eq!(codes(&h.send("DATA\r\n")), ["503 5.5.1"]);
    assert!(!h.session.is_closed());
}

#[test]
fn bdat_without_transaction_is_swallowed() {
    let mut h = ehlo(config());
    let chunk = "MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\n";
    let out = h.send(&format!("BDAT {} LAST\r\n{chunk}NOOP\r\n", chunk.len()));
    assert_eq!(codes(&out), ["503 5.5.1", "250 2.0.0"]);
    assert_eq!(h.count(|e| matches!(e, Event::MailFrom { .. })), 0);
    assert_eq!(h.count(|e| matches!(e, Event::DataStart { .. })), 0);
    // Without RCPT too.
    h.send("MAIL FROM:<a@b.c>\r\n");
    let out = h.send("BDAT 6\r\nRSET\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["503 5.5.1", "250 2.0.0"]);
    assert_eq!(h.count(|e| *e == Event::Reset), 0, "RSET was swallowed");
}

#[test]
fn bdat_transaction_chunks_and_last() {
    let mut h = in_transaction(config());
    let out = h.send("BDAT 7\r\nSubject");
    assert_eq!(out, "250 2.0.0 7 octets received\r\n");
    let out = h.send("BDAT 9 LAST\r\n: x\r\n\r\nhi");
    assert_eq!(out, "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(h.messages, [b"Subject: x\r\n\r\nhi".to_vec()]);
    assert_eq!(h.count(|e| *e == Event::DataStart { bdat: true }), 1);
}

#[test]
fn bdat_zero_last_and_zero_chunks() {
    let mut h = in_transaction(config());
    assert_eq!(h.send("BDAT 0\r\n"), "250 2.0.0 0 octets received\r\n");
    let out = h.send("BDAT 3\r\nabcBDAT 0 LAST\r\n");
    assert_eq!(codes(&out), ["250 2.0.0", "250 2.0.0"]);
    assert!(out.ends_with("queued as Q1\r\n"));
    assert_eq!(h.messages, [b"abc".to_vec()]);
    // A message made of BDAT 0 LAST only.
    h.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n");
    assert_eq!(codes(&h.send("BDAT 0 LAST\r\n")), ["250 2.0.0"]);
    assert_eq!(h.messages.len(), 2);
    assert!(h.messages[1].is_empty());
}

#[test]
fn bdat_and_data_do_not_mix() {
    let mut h = in_transaction(config());
    h.send("BDAT 3\r\nabc");
    assert_eq!(codes(&h.send("DATA\r\n")), ["503 5.5.1"]);
    assert_eq!(codes(&h.send("BDAT 2 LAST\r\nde")), ["250 2.0.0"]);
    assert_eq!(h.messages, [b"abcde".to_vec()]);
    // DATA completes a transaction; BDAT afterwards has no MAIL.
    h.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n");
    assert_eq!(codes(&h.send("DATA\r\nx\r\n.\r\n")), ["354", "250 2.0.0"]);
    assert_eq!(codes(&h.send("BDAT 4 LAST\r\nQUIT")), ["503 5.5.1"]);
    assert!(!h.session.is_closed());
}

#[test]
fn bdat_huge_size_is_counted_not_allocated() {
    let mut h = in_transaction(config());
    let out = h.send("BDAT 18446744073709551615 LAST\r\nabc");
    assert_eq!(out, "", "the chunk is still being swallowed");
    for _ in 0..100 {
        h.feed(&[b'x'; 10_000]);
        assert!(h.session.buffered() == 0);
    }
    assert_eq!(h.session.timeout_class(), TimeoutClass::Data);
    assert_eq!(h.count(|e| matches!(e, Event::DataStart { .. })), 0);
    h.session.on_timeout();
    h.pump();
    assert_eq!(codes(&h.take()), ["421 4.4.2"]);
}

#[test]
fn bdat_total_over_limit_aborts_open_message() {
    let mut h = in_transaction(ServerConfig {
        max_message_size: 10,
        ..config()
    });
    assert_eq!(codes(&h.send("BDAT 6\r\n123456")), ["250 2.0.0"]);
    let out = h.send("BDAT 6 LAST\r\nabcdefNOOP\r\n");
    assert_eq!(codes(&out), ["552 5.3.4", "250 2.0.0"]);
    assert!(h.events.contains(&Event::DataAborted {
        reason: AbortReason::TooBig
    }));
    assert!(h.messages.is_empty());
    // The transaction is over.
    assert_eq!(codes(&h.send("BDAT 1 LAST\r\nx")), ["503 5.5.1"]);
}

#[test]
fn bdat_unreadable_size_closes() {
    let mut h = in_transaction(config());
    let out = h.send("BDAT 99999999999999999999999 LAST\r\nMAIL FROM:<e@x>\r\n");
    assert_eq!(codes(&out), ["501 5.5.4", "421 4.5.0"]);
    assert!(h.session.is_closed());
    assert_eq!(h.count(|e| matches!(e, Event::MailFrom { .. })), 1);
}

#[test]
fn bdat_bare_lf_refused_unless_binarymime() {
    let mut h = in_transaction(config());
    let out = h.send("BDAT 7 LAST\r\nab\ncd\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["550 5.6.0", "250 2.0.0"]);
    assert!(h.events.contains(&Event::DataAborted {
        reason: AbortReason::BareLineEnding
    }));
    assert!(h.messages.is_empty());

    let mut h = ehlo(config());
    h.send("MAIL FROM:<a@b.c> BODY=BINARYMIME\r\nRCPT TO:<x@y.z>\r\n");
    let out = h.send("BDAT 6 LAST\r\na\nb\r\0c");
    assert_eq!(codes(&out), ["250 2.0.0"]);
    assert_eq!(h.messages, [b"a\nb\r\0c".to_vec()]);
}

#[test]
fn bdat_refused_by_runtime_swallows_chunk() {
    let policy = Box::new(|e: &Event| match e {
        Event::DataStart { .. } => Answer::Reply(Reply::new(
            452,
            EnhancedStatus::new(4, 3, 1),
            "Insufficient system storage",
        )),
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n");
    let out = h.send("BDAT 6\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(codes(&out), ["452 4.3.1", "250 2.0.0"]);
    assert!(!h.session.is_closed());
}

#[test]
fn rset_inside_bdat_message_aborts_it() {
    let mut h = in_transaction(config());
    h.send("BDAT 3\r\nabc");
    assert_eq!(codes(&h.send("RSET\r\n")), ["250 2.0.0"]);
    let tail = &h.events[h.events.len() - 2..];
    assert_eq!(
        tail,
        [
            Event::DataAborted {
                reason: AbortReason::Reset
            },
            Event::Reset
        ]
    );
    assert_eq!(codes(&h.send("BDAT 1 LAST\r\nx")), ["503 5.5.1"]);
}

#[test]
fn size_parameter_over_limit() {
    let mut h = ehlo(ServerConfig {
        max_message_size: 1000,
        ..config()
    });
    assert_eq!(
        codes(&h.send("MAIL FROM:<a@b.c> SIZE=1001\r\n")),
        ["552 5.3.4"]
    );
    assert_eq!(
        codes(&h.send("MAIL FROM:<a@b.c> SIZE=1000\r\n")),
        ["250 2.1.0"]
    );
}

#[test]
fn message_over_limit_is_drained_then_refused() {
    let mut h = in_transaction(ServerConfig {
        max_message_size: 100,
        ..config()
    });
    assert_eq!(codes(&h.send("DATA\r\n")), ["354"]);
    let line = "x".repeat(60) + "\r\n";
    let out = h.send(&line.repeat(5));
    assert_eq!(out, "", "nothing until the end of data");
    assert!(h.events.contains(&Event::DataAborted {
        reason: AbortReason::TooBig
    }));
    let out = h.send(&format!("{line}.\r\nNOOP\r\n"));
    assert_eq!(codes(&out), ["552 5.3.4", "250 2.0.0"]);
    assert!(h.messages.is_empty());
    assert_eq!(h.count(|e| *e == Event::DataEnd), 0);
    // A new transaction works.
    h.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n");
    assert_eq!(
        codes(&h.send("DATA\r\nsmall\r\n.\r\n")),
        ["354", "250 2.0.0"]
    );
}

#[test]
fn recipient_limit_first_hundred_work() {
    let mut h = ehlo(config());
    h.send("MAIL FROM:<a@b.c>\r\n");
    let mut cmds = String::new();
    for i in 0..1000 {
        cmds.push_str(&format!("RCPT TO:<r{i}@example.net>\r\n"));
    }
    let out = h.send(&cmds);
    let c = codes(&out);
    assert_eq!(c.len(), 1000);
    assert!(c[..100].iter().all(|c| c == "250 2.1.5"));
    assert!(c[100..].iter().all(|c| c == "452 4.5.3"));
    assert_eq!(h.count(|e| matches!(e, Event::RcptTo { .. })), 100);
    assert!(!h.session.is_closed(), "452 is not a protocol error");
    assert_eq!(codes(&h.send("DATA\r\nx\r\n.\r\n")), ["354", "250 2.0.0"]);
}

#[test]
fn long_line_without_crlf_answered_once_memory_bounded() {
    let mut h = ehlo(config());
    let mut out = String::new();
    for _ in 0..100 {
        h.feed(&[b'A'; 1000]);
        assert!(h.session.buffered() < 512, "{}", h.session.buffered());
        out.push_str(&h.take());
    }
    h.feed(b"AAAA\r\nNOOP\r\n");
    out.push_str(&h.take());
    assert_eq!(codes(&out), ["500 5.5.2", "250 2.0.0"]);
    assert!(out.contains("line too long"));
}

#[test]
fn command_line_limit_is_inclusive_of_crlf() {
    let mut h = ehlo(ServerConfig {
        max_command_line: 20,
        ..config()
    });
    // "NOOP " + 13 = 18 + CRLF = 20: fits.
    let ok = format!("NOOP {}\r\n", "x".repeat(13));
    assert_eq!(codes(&h.send(&ok)), ["250 2.0.0"]);
    let long = format!("NOOP {}\r\n", "x".repeat(14));
    assert_eq!(codes(&h.send(&long)), ["500 5.5.2"]);
    assert_eq!(codes(&h.send("NOOP\r\n")), ["250 2.0.0"]);
    // Long line and the next command in one read.
    let out = h.send(&format!("{long}NOOP\r\n"));
    assert_eq!(codes(&out), ["500 5.5.2", "250 2.0.0"]);
    // Split inside the long line.
    let out = h.send(&long[..20]) + &h.send(&format!("{}NOOP\r\n", &long[20..]));
    assert_eq!(codes(&out), ["500 5.5.2", "250 2.0.0"]);
}

#[test]
fn bad_bytes_in_commands_and_the_session_goes_on() {
    let mut h = ehlo(config());
    for bad in [
        &b"NO\0OP\r\n"[..],
        b"NOOP\rRSET\r\n",
        b"NOOP\n",
        b"\xff\xfe\r\n",
        b"MAIL FROM:<\xc3\xa9@b.c>\r\n",
        b"FOO\r\n",
    ] {
        h.feed(bad);
        let out = h.take();
        let c = codes(&out);
        assert_eq!(c.len(), 1, "{bad:?} → {out}");
        assert!(c[0].starts_with('5'), "{bad:?} → {out}");
    }
    assert_eq!(codes(&h.send("NOOP\r\n")), ["250 2.0.0"]);
    assert_eq!(
        h.count(|e| *e == Event::Reset),
        0,
        "RSET after bare CR never ran"
    );
}

#[test]
fn smtputf8_allows_utf8_recipients() {
    let mut h = ehlo(config());
    h.send("MAIL FROM:<a@b.c>\r\n");
    assert_eq!(codes(&h.send("RCPT TO:<ü@b.c>\r\n")), ["553 5.6.7"]);
    h.send("RSET\r\n");
    assert_eq!(
        codes(&h.send("MAIL FROM:<a@b.c> SMTPUTF8\r\n")),
        ["250 2.1.0"]
    );
    assert_eq!(h.session.protocol(), "UTF8SMTP");
    assert_eq!(codes(&h.send("RCPT TO:<ü@b.c>\r\n")), ["250 2.1.5"]);
}

const FAKES: [&str; 6] = ["\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n", "\r\n.\r", "\n.\r"];
const SMUGGLED: &str = "MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nsmuggled\r\n";

#[test]
fn smuggling_fake_terminators_are_refused_in_reject_mode() {
    for fake in FAKES {
        let mut h = in_transaction(config());
        assert_eq!(codes(&h.send("DATA\r\n")), ["354"]);
        let out = h.send(&format!("Subject: x\r\n\r\nhello{fake}{SMUGGLED}"));
        assert_eq!(out, "", "{fake:?}: nothing may be answered yet");
        assert_eq!(
            h.count(|e| matches!(e, Event::MailFrom { .. })),
            1,
            "{fake:?}"
        );
        assert!(h.events.contains(&Event::DataAborted {
            reason: AbortReason::BareLineEnding
        }));
        let out = h.send(".\r\nNOOP\r\n");
        assert_eq!(codes(&out), ["550 5.6.0", "250 2.0.0"], "{fake:?}");
        assert!(out.contains("bare LF or CR"));
        assert_eq!(
            h.count(|e| matches!(e, Event::MailFrom { .. })),
            1,
            "{fake:?}"
        );
        assert_eq!(h.count(|e| *e == Event::DataEnd), 0);
        assert!(!h.session.is_closed());
    }
}

#[test]
fn smuggling_fake_terminators_stay_content_in_normalize_mode() {
    for fake in FAKES {
        let mut h = in_transaction(ServerConfig {
            bare_line_endings: BareLineEndings::Normalize,
            ..config()
        });
        h.send("DATA\r\n");
        let out = h.send(&format!("Subject: x\r\n\r\nhello{fake}{SMUGGLED}.\r\n"));
        assert_eq!(codes(&out), ["250 2.0.0"], "{fake:?}");
        assert_eq!(h.messages.len(), 1);
        let msg = String::from_utf8_lossy(&h.messages[0]).into_owned();
        assert!(msg.contains("MAIL FROM:<evil@x.test>"), "{fake:?}: {msg:?}");
        assert!(!msg.contains('\n') || !msg.replace("\r\n", "").contains(['\r', '\n']));
        assert_eq!(h.count(|e| matches!(e, Event::MailFrom { .. })), 1);
    }
}

#[test]
fn pipelined_commands_after_end_of_data_form_a_new_transaction() {
    let mut h = in_transaction(config());
    let out = h.send(
        "DATA\r\none\r\n.\r\nMAIL FROM:<c@d.e>\r\nRCPT TO:<f@g.h>\r\nDATA\r\ntwo\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        codes(&out),
        [
            "354",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert!(out.contains("queued as Q1") && out.contains("queued as Q2"));
    assert_eq!(h.messages, [b"one\r\n".to_vec(), b"two\r\n".to_vec()]);
}

#[test]
fn bytes_pipelined_after_accepted_data_are_content() {
    let mut h = in_transaction(config());
    let out = h.send("DATA\r\nMAIL FROM:<x@y.z>\r\n.\r\n");
    assert_eq!(codes(&out), ["354", "250 2.0.0"]);
    assert_eq!(h.messages, [b"MAIL FROM:<x@y.z>\r\n".to_vec()]);
    assert_eq!(h.count(|e| matches!(e, Event::MailFrom { .. })), 1);
}

#[test]
fn bytes_pipelined_after_refused_data_are_never_commands() {
    // Sequence error (no RCPT).
    let mut h = ehlo(config());
    h.send("MAIL FROM:<a@b.c>\r\n");
    let out = h.send("DATA\r\nRCPT TO:<evil@x>\r\n");
    assert_eq!(codes(&out), ["503 5.5.1", "421 4.5.0"]);
    assert!(h.session.is_closed());
    assert_eq!(h.count(|e| matches!(e, Event::RcptTo { .. })), 0);

    // Refused by the runtime.
    let policy = Box::new(|e: &Event| match e {
        Event::DataStart { .. } => Answer::Reply(Reply::new(
            554,
            EnhancedStatus::new(5, 5, 1),
            "No valid recipients",
        )),
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n");
    assert_eq!(codes(&h.send("DATA\r\n")), ["554 5.5.1"]);
    assert!(
        !h.session.is_closed(),
        "without pipelined bytes the session goes on"
    );
    let out = h.send("DATA\r\nQUIT\r\n");
    assert_eq!(codes(&out), ["554 5.5.1", "421 4.5.0"]);
    assert_eq!(h.count(|e| *e == Event::Quit), 0);
}

#[test]
fn runtime_refuses_sender_recipient_and_message() {
    let policy = Box::new(|e: &Event| match e {
        Event::MailFrom { from, .. } if from.to_string() == "<bad@b.c>" => {
            Answer::Reply(Reply::new(550, EnhancedStatus::new(5, 7, 1), "No"))
        }
        Event::RcptTo { to, .. } if to.to_string() == "<unknown@b.c>" => Answer::Reply(Reply::new(
            550,
            EnhancedStatus::new(5, 1, 1),
            "No such user",
        )),
        Event::DataEnd => Answer::Reply(Reply::new(451, EnhancedStatus::new(4, 3, 0), "Try later")),
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(config(), policy);
    h.send("EHLO c.test\r\n");
    assert_eq!(codes(&h.send("MAIL FROM:<bad@b.c>\r\n")), ["550 5.7.1"]);
    assert_eq!(codes(&h.send("RCPT TO:<x@y.z>\r\n")), ["503 5.5.1"]);
    h.send("MAIL FROM:<ok@b.c>\r\n");
    assert_eq!(codes(&h.send("RCPT TO:<unknown@b.c>\r\n")), ["550 5.1.1"]);
    assert_eq!(codes(&h.send("DATA\r\n")), ["503 5.5.1"]);
    h.send("RCPT TO:<x@y.z>\r\n");
    assert_eq!(codes(&h.send("DATA\r\nm\r\n.\r\n")), ["354", "451 4.3.0"]);
    // The transaction is over after the answer.
    assert_eq!(codes(&h.send("RCPT TO:<x@y.z>\r\n")), ["503 5.5.1"]);
}

#[test]
fn starttls_not_available() {
    let mut h = ehlo(config());
    assert_eq!(codes(&h.send("STARTTLS\r\n")), ["502 5.5.1"]);
}

#[test]
fn starttls_injection_is_discarded() {
    let mut h = ehlo(ServerConfig {
        starttls_available: true,
        ..config()
    });
    let out = h.send("STARTTLS\r\nNOOP\r\nMAIL FROM:<x@y.z>\r\n");
    assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(h.events.last(), Some(&Event::StartTls));
    // More plaintext before the handshake: discarded too.
    assert_eq!(h.send("NOOP\r\n"), "");
    h.session.tls_established();
    assert!(h.session.is_tls());
    assert_eq!(h.session.helo_name(), None);
    assert_eq!(codes(&h.send("MAIL FROM:<a@b.c>\r\n")), ["503 5.5.1"]);
    let out = h.send("EHLO c.test\r\n");
    assert!(!out.contains("STARTTLS"), "{out}");
    assert_eq!(h.session.protocol(), "ESMTPS");
    assert_eq!(codes(&h.send("STARTTLS\r\n")), ["503 5.5.1"]);
    assert_eq!(h.count(|e| matches!(e, Event::MailFrom { .. })), 0);
}

#[test]
fn implicit_tls_session() {
    let mut h = Harness::new(ServerConfig {
        tls_active: true,
        starttls_available: true,
        ..config()
    });
    assert!(!h.send("EHLO c.test\r\n").contains("STARTTLS"));
    assert_eq!(h.session.protocol(), "ESMTPS");
    h.send("MAIL FROM:<a@b.c> SMTPUTF8\r\n");
    assert_eq!(h.session.protocol(), "UTF8SMTPS");
}

#[test]
fn early_talker_rejected() {
    let mut h = Harness::ungreeted(config(), common::accept_all());
    h.session.handle_input(b"EHLO c.test\r\n");
    h.session.greet();
    h.pump();
    let out = h.take();
    assert_eq!(codes(&out), ["554 5.5.0"]);
    assert!(h.session.is_closed());
    assert!(h.events.is_empty());
}

#[test]
fn early_talker_allowed() {
    let mut h = Harness::ungreeted(
        ServerConfig {
            early_talkers: EarlyTalkerPolicy::Allow,
            ..config()
        },
        common::accept_all(),
    );
    h.session.handle_input(b"EHLO c.test\r\n");
    assert_eq!(h.session.poll_event(), None, "nothing before the greeting");
    h.session.greet();
    h.pump();
    let out = h.take();
    assert!(out.starts_with("220 mx.tern.test ESMTP Tern\r\n250-mx.tern.test\r\n"));
}

#[test]
fn error_limit_closes_with_421() {
    let mut h = ehlo(ServerConfig {
        max_errors: 3,
        ..config()
    });
    let out = h.send("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(
        codes(&out),
        ["500 5.5.1", "500 5.5.1", "500 5.5.1", "421 4.7.0"]
    );
    assert!(out.contains("too many errors"));
    assert!(h.session.is_closed());
}

#[test]
fn timeout_and_shutdown_mid_data() {
    let mut h = in_transaction(config());
    h.send("DATA\r\npartial line\r\n");
    assert_eq!(h.session.timeout_class(), TimeoutClass::Data);
    h.session.on_timeout();
    h.pump();
    assert_eq!(
        h.take(),
        "421 4.4.2 mx.tern.test Error: timeout exceeded\r\n"
    );
    assert_eq!(
        h.events.last(),
        Some(&Event::DataAborted {
            reason: AbortReason::Timeout
        })
    );
    assert!(h.session.is_closed());

    let mut h = in_transaction(config());
    h.send("DATA\r\npartial");
    h.session.shutdown();
    h.pump();
    assert_eq!(h.take(), "421 4.3.2 mx.tern.test Service shutting down\r\n");
    assert_eq!(
        h.events.last(),
        Some(&Event::DataAborted {
            reason: AbortReason::Shutdown
        })
    );
    // Idle shutdown: no abort.
    let mut h = ehlo(config());
    h.session.shutdown();
    h.pump();
    assert_eq!(codes(&h.take()), ["421 4.3.2"]);
    assert!(
        !h.events
            .iter()
            .any(|e| matches!(e, Event::DataAborted { .. }))
    );
}

#[test]
fn eviction_answers_421_4_7_0_and_closes() {
    let mut h = ehlo(config());
    h.session.evict();
    h.pump();
    assert_eq!(
        h.take(),
        "421 4.7.0 mx.tern.test Error: too many connections, try again later\r\n"
    );
    assert!(h.session.is_closed());
    // Closed: nothing more is said.
    h.session.evict();
    h.pump();
    assert_eq!(h.take(), "");
}

#[test]
fn too_many_received_headers() {
    let mut h = in_transaction(ServerConfig {
        max_received_headers: 3,
        ..config()
    });
    let headers = "Received: from a by b\r\n".repeat(4);
    let out = h.send(&format!("DATA\r\n{headers}\r\nbody\r\n.\r\n"));
    assert_eq!(codes(&out), ["354", "554 5.4.6"]);
    assert!(h.events.contains(&Event::DataAborted {
        reason: AbortReason::TooManyReceived
    }));
    // Exactly the limit is fine; Received in the body is not counted.
    h.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n");
    let headers = "Received: x\r\n".repeat(3);
    let out = h.send(&format!("DATA\r\n{headers}\r\nReceived: y\r\n.\r\n"));
    assert_eq!(codes(&out), ["354", "250 2.0.0"]);
}

#[test]
fn text_line_too_long() {
    let mut h = in_transaction(config());
    let line = "y".repeat(999);
    let out = h.send(&format!("DATA\r\n{line}\r\n.\r\n"));
    assert_eq!(codes(&out), ["354", "500 5.5.2"]);
    assert!(h.events.contains(&Event::DataAborted {
        reason: AbortReason::LineTooLong
    }));
    h.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n");
    let line = "y".repeat(998);
    let out = h.send(&format!("DATA\r\n{line}\r\n.\r\n"));
    assert_eq!(codes(&out), ["354", "250 2.0.0"]);
}

#[test]
fn data_chunks_are_bounded() {
    let mut h = in_transaction(ServerConfig {
        data_chunk_size: 1000,
        ..config()
    });
    let body = "z".repeat(500) + "\r\n";
    let out = h.send(&format!("DATA\r\n{}.\r\n", body.repeat(400)));
    assert_eq!(codes(&out), ["354", "250 2.0.0"]);
    assert_eq!(h.messages[0].len(), 502 * 400);
    assert!(h.largest_chunk <= 1000);
}

#[test]
fn misc_commands() {
    let mut h = ehlo(config());
    assert_eq!(codes(&h.send("NOOP\r\n")), ["250 2.0.0"]);
    assert_eq!(codes(&h.send("HELP\r\n")), ["214 2.0.0"]);
    assert_eq!(codes(&h.send("VRFY postmaster\r\n")), ["252 2.5.0"]);
    assert_eq!(codes(&h.send("EXPN list\r\n")), ["502 5.5.1"]);
    assert_eq!(codes(&h.send("AUTH PLAIN\r\n")), ["502 5.5.1"]);
    assert_eq!(codes(&h.send("RSET\r\n")), ["250 2.0.0"]);
    assert_eq!(h.events.last(), Some(&Event::Reset));
}

#[test]
fn vrfy_and_expn_ask_when_enabled() {
    let policy = Box::new(|e: &Event| match e {
        Event::Verify { expand: true, .. } => {
            Answer::Reply(Reply::new(250, EnhancedStatus::new(2, 1, 5), "<a@b.c>"))
        }
        _ => Answer::Accept,
    });
    let mut h = Harness::with_policy(
        ServerConfig {
            vrfy_enabled: true,
            expn_enabled: true,
            ..config()
        },
        policy,
    );
    h.send("EHLO c.test\r\n");
    assert_eq!(codes(&h.send("VRFY alice\r\n")), ["252 2.5.0"]);
    assert_eq!(codes(&h.send("EXPN list\r\n")), ["250 2.1.5"]);
    assert!(h.events.contains(&Event::Verify {
        argument: "list".into(),
        expand: true
    }));
}

#[test]
fn ehlo_again_resets_transaction() {
    let mut h = in_transaction(config());
    h.send("EHLO again.test\r\n");
    assert_eq!(h.session.helo_name(), Some("again.test"));
    assert!(h.events.contains(&Event::Reset));
    assert_eq!(codes(&h.send("DATA\r\n")), ["503 5.5.1"]);
}

#[test]
fn answers_without_question_are_ignored() {
    let mut h = ehlo(config());
    h.session.accept();
    h.session.accept_message("X");
    h.session
        .reply(Reply::new(250, EnhancedStatus::new(2, 0, 0), "stray"));
    h.pump();
    assert_eq!(h.take(), "");
    assert_eq!(codes(&h.send("NOOP\r\n")), ["250 2.0.0"]);
}
