//! The client's unit tests: reply framing, extensions, configuration.
use super::*;
use tern_types::EnhancedStatus;
use tern_types::dsn::Orcpt;
use zeroize::Zeroizing;

use super::session::encode_orcpt;
use crate::reply::Reply;

fn parse_all(bytes: &[u8]) -> Vec<Result<Reply, ReplyError>> {
    let mut p = ReplyParser::new(ReplyLimits::default());
    let mut input = bytes;
    let mut out = Vec::new();
    while !input.is_empty() {
        match p.parse(&mut input) {
            Ok(Some(r)) => out.push(Ok(r)),
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

/// Input, then the expected code, status and lines.
type ReplyCase = (
    &'static [u8],
    u16,
    Option<EnhancedStatus>,
    Vec<&'static str>,
);

#[test]
fn reply_lines() {
    let s = |c, a, b| Some(EnhancedStatus::new(c, a, b));
    let cases: Vec<ReplyCase> = vec![
        (b"250 OK\r\n", 250, None, vec!["OK"]),
        (b"250\r\n", 250, None, vec![""]),
        (
            b"250 2.1.0 Sender OK\r\n",
            250,
            s(2, 1, 0),
            vec!["Sender OK"],
        ),
        (b"250 2.1.0\r\n", 250, s(2, 1, 0), vec![""]),
        // Class mismatch: kept as text.
        (b"550 4.1.1 odd\r\n", 550, None, vec!["4.1.1 odd"]),
        (b"550 5.1.1x no\r\n", 550, None, vec!["5.1.1x no"]),
        (
            b"550-5.1.1 a\r\n550-5.1.1 b\r\n550 5.1.1 c\r\n",
            550,
            s(5, 1, 1),
            vec!["a", "b", "c"],
        ),
        (b"220 bare lf\n", 220, None, vec!["bare lf"]),
        (b"220 a\rb\r\n", 220, None, vec!["a b"]),
        (b"220 a\0b\x1b\r\n", 220, None, vec!["a b "]),
        (
            b"550 caf\xc3\xa9 \xff\r\n",
            550,
            None,
            vec!["caf\u{e9} \u{fffd}"],
        ),
        (b"250-\r\n250 x\r\n", 250, None, vec!["", "x"]),
    ];
    for (input, code, status, lines) in cases {
        let got = parse_all(input);
        assert_eq!(got.len(), 1, "{}", input.escape_ascii());
        let r = got[0].clone().unwrap();
        assert_eq!(
            (r.code, r.status),
            (code, status),
            "{}",
            input.escape_ascii()
        );
        assert_eq!(r.lines, lines, "{}", input.escape_ascii());
    }
}

#[test]
fn malformed_replies() {
    let cases: Vec<(&[u8], ReplyError)> = vec![
        (b"25\r\n", ReplyError::Malformed),
        (b"\r\n", ReplyError::Malformed),
        (b"150 x\r\n", ReplyError::Malformed),
        (b"600 x\r\n", ReplyError::Malformed),
        (b"260 x\r\n", ReplyError::Malformed),
        (b"25a x\r\n", ReplyError::Malformed),
        (b"250x\r\n", ReplyError::Malformed),
        (b"\xff\xfe\xfd\r\n", ReplyError::Malformed),
        (
            b"250-a\r\n251 b\r\n",
            ReplyError::InconsistentCode {
                first: 250,
                then: 251,
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_all(input),
            vec![Err(want)],
            "{}",
            input.escape_ascii()
        );
    }
}

#[test]
fn limits_are_exact() {
    let limits = ReplyLimits {
        max_line: 512,
        max_lines: 3,
    };
    // 512 octets with CRLF: accepted; 513: refused.
    for (len, ok) in [(512usize, true), (513, false)] {
        let mut line = b"250 ".to_vec();
        line.resize(len - 2, b'x');
        line.extend_from_slice(b"\r\n");
        let mut p = ReplyParser::new(limits);
        let mut input = &line[..];
        let r = p.parse(&mut input);
        assert_eq!(r.is_ok(), ok, "{len}");
    }
    let mut p = ReplyParser::new(limits);
    let mut input: &[u8] = b"250-a\r\n250-b\r\n250 c\r\n";
    assert!(p.parse(&mut input).unwrap().is_some());
    let mut input: &[u8] = b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n";
    assert_eq!(
        p.parse(&mut input),
        Err(ReplyError::TooManyLines { limit: 3 })
    );
}

#[test]
fn extensions() {
    let r = Reply::without_status(
        250,
        [
            "mx.example",
            "pipelining",
            "SIZE 1000",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "STARTTLS",
            "AUTH plain LOGIN CRAM-MD5",
            "AUTH=LOGIN XOAUTH2",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
            "X-UNKNOWN 1",
            "",
        ],
    );
    let e = Extensions::from_ehlo(&r);
    assert!(e.pipelining && e.eight_bit_mime && e.smtputf8 && e.dsn);
    assert!(e.starttls && e.chunking && e.enhanced_status_codes);
    assert_eq!(e.size, Some(1000));
    assert_eq!(e.auth, ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"]);
    assert!(e.offers_auth(AuthMechanism::Plain));
    for (line, want) in [("SIZE", Some(0)), ("SIZE 0", Some(0)), ("SIZE x", Some(0))] {
        let e = Extensions::from_ehlo(&Reply::without_status(250, ["mx", line]));
        assert_eq!(e.size, want, "{line}");
    }
    // The first line is the server's name, never a keyword.
    let e = Extensions::from_ehlo(&Reply::without_status(250, ["PIPELINING"]));
    assert_eq!(e, Extensions::default());
}

#[test]
fn orcpt_encoding() {
    let o = |t: &str, a: &str| Orcpt {
        addr_type: t.into(),
        address: a.into(),
    };
    assert_eq!(
        encode_orcpt(&o("rfc822", "a+b=c@x.test")).unwrap(),
        "rfc822;a+2Bb+3Dc@x.test"
    );
    assert_eq!(
        encode_orcpt(&o("rfc822", "j\u{f6}rg@x.test")).unwrap(),
        "utf-8;j\\x{F6}rg@x.test"
    );
    assert_eq!(encode_orcpt(&o("bad type", "a@b")), None);
    assert_eq!(encode_orcpt(&o("", "a@b")), None);
}

#[test]
fn config_validation() {
    assert!(ClientConfig::new("mx.example.org").validate().is_ok());
    assert!(ClientConfig::new("[192.0.2.1]").validate().is_ok());
    for bad in ["", "a b", "mx\r\nRSET", "[nope]", "caf\u{e9}.test"] {
        assert_eq!(
            ClientConfig::new(bad).validate(),
            Err(ConfigError::InvalidHeloName),
            "{bad:?}"
        );
    }
    let mut c = ClientConfig::new("mx.example.org");
    c.auth = Some(ClientAuth::new(AuthMechanism::Plain, "u", "p\0w"));
    assert_eq!(c.validate(), Err(ConfigError::InvalidCredentials));
    c.auth = None;
    c.reply_limits.max_line = 100;
    assert_eq!(c.validate(), Err(ConfigError::InvalidLimits));
}

#[test]
fn secrets_never_in_debug() {
    let a = ClientAuth::new(AuthMechanism::Login, "user", "hunter2");
    assert!(!format!("{a:?}").contains("hunter2"));
    let o = Outgoing::secret(Zeroizing::new(b"AUTH PLAIN aHVudGVyMg==\r\n".to_vec()));
    let d = format!("{:?}", Event::Send(o));
    assert!(!d.contains("aHVudGVy") && d.contains("redacted"), "{d}");
}
