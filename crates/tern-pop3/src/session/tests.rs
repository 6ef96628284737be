//! Transcript tests: a fake driver (directory: alice/secret; a maildrop
//! of stored messages) runs the session; each case gives the client's
//! bytes and the exact server transcript.

use super::*;
use crate::wire::DotStuffer;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const M1: &[u8] = b"Subject: one\r\n\r\nline 1\r\n.dot line\r\n";
const M2: &[u8] = b"Subject: two\n\nbare lf\nsecond\nthird\n";

#[derive(Debug, Default)]
struct Fake {
    messages: Vec<Vec<u8>>,
    open_error: Option<MaildropError>,
    retrieve_error: Option<MaildropError>,
    update_error: Option<MaildropError>,
    updates: Vec<Vec<u32>>,
    failures: Vec<FailureKind>,
    opened: Vec<String>,
    tls_handshakes: usize,
    closed: bool,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            messages: vec![M1.to_vec(), M2.to_vec()],
            ..Fake::default()
        }
    }
}

fn top_of(stored: &[u8], n: u64) -> Vec<u8> {
    // The header up to the first empty line, then n lines.
    let mut out = Vec::new();
    let mut lines = stored.split_inclusive(|&b| b == b'\n');
    for l in lines.by_ref() {
        out.extend_from_slice(l);
        if l == b"\r\n" || l == b"\n" {
            break;
        }
    }
    for l in lines.take(n as usize) {
        out.extend_from_slice(l);
    }
    out
}

fn drive(s: &mut Session, f: &mut Fake, input: &[u8]) -> String {
    s.handle_input(input);
    let mut out = s.take_output();
    while let Some(e) = s.poll_event() {
        match e {
            Event::StartTls => {
                out.extend(s.take_output());
                f.tls_handshakes += 1;
                s.tls_established();
            }
            Event::AuthStart { .. } => {
                s.auth_begin(StartContext::new(
                    &[7u8; 32],
                    "pop.example.test",
                    1_700_000_000,
                    b"secret key",
                ));
            }
            Event::Auth(AuthQuestion::VerifyPassword { authcid, password }) => {
                s.auth_answer(Answer::PasswordOk(
                    authcid == "alice" && password.as_str() == "secret pw",
                ));
            }
            Event::Auth(AuthQuestion::LookupCram { .. }) => s.auth_answer(Answer::Cram(None)),
            Event::Auth(AuthQuestion::LookupScram { .. }) => s.auth_answer(Answer::Scram(None)),
            Event::Auth(AuthQuestion::VerifyToken { .. }) => {
                s.auth_answer(Answer::Token(Err(tern_sasl::TokenRejection::Invalid)))
            }
            Event::AuthFailed { kind } => f.failures.push(kind),
            Event::OpenMaildrop { user } => {
                f.opened.push(user);
                match f.open_error {
                    Some(e) => s.maildrop_opened(Err(e)),
                    None => s.maildrop_opened(Ok(f
                        .messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| MessageInfo {
                            size: crate::wire::wire_size(m),
                            uidl: format!("0000002a{:08x}", i + 1),
                        })
                        .collect())),
                }
            }
            Event::Retrieve { number, lines } => match f.retrieve_error {
                Some(e) => s.retrieve_failed(e),
                None => {
                    s.retrieve_ready();
                    out.extend(s.take_output());
                    let stored = &f.messages[number as usize - 1];
                    let body = match lines {
                        None => stored.clone(),
                        Some(n) => top_of(stored, n),
                    };
                    let mut d = DotStuffer::new();
                    // Two chunks, to exercise the streaming.
                    let (a, b) = body.split_at(body.len() / 2);
                    d.push(a, &mut out);
                    d.push(b, &mut out);
                    d.finish(&mut out);
                    s.retrieve_done();
                }
            },
            Event::Update { deleted } => {
                f.updates.push(deleted);
                s.update_done(match f.update_error {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
            }
            Event::Close => f.closed = true,
        }
        out.extend(s.take_output());
    }
    out.extend(s.take_output());
    String::from_utf8(out).unwrap()
}

fn session(config: SessionConfig, tls: bool) -> Session {
    let mut s = Session::new(config, tls);
    s.greet();
    assert_eq!(s.take_output(), b"+OK Tern POP3 ready\r\n");
    s
}

const LOGIN: &str = "USER alice\r\nPASS secret pw\r\n";
const LOGGED_IN: &str = "+OK Send your password\r\n+OK Logged in, 2 messages (75 octets)\r\n";

/// (name, TLS, client bytes, exact server transcript)
fn cases() -> Vec<(&'static str, bool, String, String)> {
    let l = |s: &str| format!("{LOGIN}{s}");
    let r = |s: &str| format!("{LOGGED_IN}{s}");
    vec![
        (
            "capa before login over TLS",
            true,
            "CAPA\r\n".into(),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION Tern\r\n.\r\n".into(),
        ),
        (
            "capa before TLS: no USER, no SASL, STLS",
            false,
            "capa\r\n".into(),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION Tern\r\nSTLS\r\n.\r\n".into(),
        ),
        (
            "capa after login: no USER/SASL/STLS",
            true,
            l("CAPA\r\n"),
            r("+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION Tern\r\n.\r\n"),
        ),
        (
            "USER and PASS refused before TLS",
            false,
            LOGIN.into(),
            "-ERR [AUTH] Plaintext authentication disallowed without TLS (use STLS)\r\n-ERR [AUTH] Plaintext authentication disallowed without TLS (use STLS)\r\n".into(),
        ),
        (
            "AUTH refused before TLS",
            false,
            "AUTH PLAIN AGFsaWNlAHNlY3JldCBwdw==\r\n".into(),
            "-ERR [AUTH] Authentication disallowed without TLS (use STLS)\r\n".into(),
        ),
        (
            "STLS drops pipelined bytes, then login works",
            false,
            "STLS\r\nUSER mallory\r\n".into(),
            "+OK Begin TLS negotiation\r\n".into(),
        ),
        (
            "STLS over TLS refused",
            true,
            "STLS\r\n".into(),
            "-ERR STLS not available\r\n".into(),
        ),
        ("wrong password", true, "USER alice\r\nPASS nope\r\n".into(), "+OK Send your password\r\n-ERR [AUTH] Authentication failed\r\n".into()),
        ("PASS without USER", true, "PASS secret pw\r\n".into(), "-ERR USER first\r\n".into()),
        ("USER without name", true, "USER\r\n".into(), "-ERR USER needs a user name\r\n".into()),
        (
            "login, STAT, LIST, UIDL",
            true,
            l("STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 1\r\n"),
            r("+OK 2 75\r\n+OK 2 messages (75 octets)\r\n1 35\r\n2 40\r\n.\r\n+OK 2 40\r\n+OK Unique-ID listing follows\r\n1 0000002a00000001\r\n2 0000002a00000002\r\n.\r\n+OK 1 0000002a00000001\r\n"),
        ),
        (
            "RETR dot-stuffs and normalises line ends",
            true,
            l("RETR 1\r\nRETR 2\r\n"),
            r("+OK 35 octets\r\nSubject: one\r\n\r\nline 1\r\n..dot line\r\n.\r\n+OK 40 octets\r\nSubject: two\r\n\r\nbare lf\r\nsecond\r\nthird\r\n.\r\n"),
        ),
        (
            "TOP 0 and TOP 1",
            true,
            l("TOP 2 0\r\nTOP 2 1\r\nTOP 1 99\r\n"),
            r("+OK Top of message follows\r\nSubject: two\r\n\r\n.\r\n+OK Top of message follows\r\nSubject: two\r\n\r\nbare lf\r\n.\r\n+OK Top of message follows\r\nSubject: one\r\n\r\nline 1\r\n..dot line\r\n.\r\n"),
        ),
        (
            "TOP argument errors",
            true,
            l("TOP 1\r\nTOP 1 x\r\nTOP 3 1\r\nTOP 1 -1\r\n"),
            r("-ERR TOP needs a message number and a line count\r\n-ERR Invalid line count\r\n-ERR No such message\r\n-ERR Invalid line count\r\n"),
        ),
        (
            "DELE hides a message; deleted message errors; RSET restores",
            true,
            l("DELE 1\r\nSTAT\r\nLIST\r\nLIST 1\r\nRETR 1\r\nDELE 1\r\nUIDL 1\r\nRSET\r\nSTAT\r\n"),
            r("+OK Message 1 deleted\r\n+OK 1 40\r\n+OK 1 messages (40 octets)\r\n2 40\r\n.\r\n-ERR Message is deleted\r\n-ERR Message is deleted\r\n-ERR Message is deleted\r\n-ERR Message is deleted\r\n+OK 2 messages (75 octets)\r\n+OK 2 75\r\n"),
        ),
        (
            "message number errors",
            true,
            l("RETR\r\nRETR 0\r\nRETR 3\r\nRETR +1\r\nRETR 1 2\r\nDELE abc\r\nLIST 99999999999\r\n"),
            r("-ERR Message number required\r\n-ERR Invalid message number\r\n-ERR No such message\r\n-ERR Invalid message number\r\n-ERR Too many arguments\r\n-ERR Invalid message number\r\n-ERR Invalid message number\r\n"),
        ),
        (
            "QUIT in TRANSACTION commits the deletions",
            true,
            l("DELE 2\r\nQUIT\r\nNOOP\r\n"),
            r("+OK Message 2 deleted\r\n+OK Logging out (1 messages left)\r\n"),
        ),
        ("QUIT in AUTHORIZATION", false, "QUIT\r\nCAPA\r\n".into(), "+OK Logging out\r\n".into()),
        ("NOOP", true, l("NOOP\r\n"), r("+OK\r\n")),
        (
            "transaction commands before login",
            true,
            "STAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\nNOOP\r\nRSET\r\nTOP 1 1\r\nUIDL\r\n".into(),
            "-ERR Not authenticated\r\n".repeat(8),
        ),
        (
            "authorization commands after login",
            true,
            l("USER bob\r\nPASS x\r\nAUTH PLAIN\r\nSTLS\r\n"),
            r(&"-ERR Already authenticated\r\n".repeat(4)),
        ),
        ("unknown and APOP", true, "APOP alice 0123456789abcdef\r\nXYZZY\r\n".into(), "-ERR Unknown command\r\n-ERR Unknown command\r\n".into()),
        ("not UTF-8", true, "\u{0}\r\n".into(), "-ERR Unknown command\r\n".into()),
        (
            "AUTH PLAIN with initial response",
            true,
            format!("AUTH PLAIN {}\r\nSTAT\r\n", STANDARD.encode(b"\0alice\0secret pw")),
            "+OK Logged in, 2 messages (75 octets)\r\n+OK 2 75\r\n".into(),
        ),
        (
            "AUTH PLAIN with a challenge",
            true,
            format!("AUTH PLAIN\r\n{}\r\n", STANDARD.encode(b"alice\0alice\0secret pw")),
            "+ \r\n+OK Logged in, 2 messages (75 octets)\r\n".into(),
        ),
        (
            "AUTH PLAIN with = (empty initial response) fails",
            true,
            "AUTH PLAIN =\r\n".into(),
            "-ERR Malformed authentication exchange\r\n".into(),
        ),
        (
            "AUTH LOGIN",
            true,
            format!("AUTH LOGIN\r\n{}\r\n{}\r\n", STANDARD.encode("alice"), STANDARD.encode("secret pw")),
            "+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK Logged in, 2 messages (75 octets)\r\n".into(),
        ),
        ("AUTH cancelled", true, "AUTH LOGIN\r\n*\r\n".into(), "+ VXNlcm5hbWU6\r\n-ERR Authentication cancelled\r\n".into()),
        ("AUTH bad base64", true, "AUTH LOGIN\r\n!!!\r\n".into(), "+ VXNlcm5hbWU6\r\n-ERR Malformed authentication exchange\r\n".into()),
        ("AUTH bad initial base64", true, "AUTH PLAIN !!!\r\n".into(), "-ERR Invalid base64 in the initial response\r\n".into()),
        ("AUTH unknown mechanism", true, "AUTH KERBEROS_V4\r\nAUTH CRAM-MD5\r\n".into(), "-ERR Unsupported mechanism\r\n-ERR Unsupported mechanism\r\n".into()),
        (
            "AUTH with another authzid",
            true,
            format!("AUTH PLAIN {}\r\n", STANDARD.encode(b"bob\0alice\0secret pw")),
            "-ERR [AUTH] Not authorized to act as that user\r\n".into(),
        ),
        ("AUTH wrong password", true, format!("AUTH PLAIN {}\r\n", STANDARD.encode(b"\0alice\0wrong")), "-ERR [AUTH] Authentication failed\r\n".into()),
        ("AUTH lists mechanisms", true, "AUTH\r\n".into(), "+OK Mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n".into()),
        ("AUTH too many arguments", true, "AUTH PLAIN a b\r\n".into(), "-ERR AUTH takes a mechanism and an initial response\r\n".into()),
        (
            "line too long is refused and skipped",
            true,
            format!("NOOP {}\r\nCAPA x\r\n", "x".repeat(600)),
            "-ERR Line too long\r\n+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION Tern\r\n.\r\n".into(),
        ),
        (
            "bare LF line ends accepted",
            true,
            "USER alice\nPASS secret pw\nSTAT\n".into(),
            "+OK Send your password\r\n+OK Logged in, 2 messages (75 octets)\r\n+OK 2 75\r\n".into(),
        ),
        (
            "too many errors close the session",
            true,
            "X\r\n".repeat(12),
            format!("{}-ERR Too many errors, closing\r\n", "-ERR Unknown command\r\n".repeat(10)),
        ),
    ]
}

#[test]
fn transcripts() {
    for (name, tls, input, want) in cases() {
        let mut f = Fake::new();
        let mut s = session(SessionConfig::default(), tls);
        let got = drive(&mut s, &mut f, input.as_bytes());
        assert_eq!(got, want, "case: {name}");
        // The same bytes one at a time give the same transcript.
        let mut f = Fake::new();
        let mut s = session(SessionConfig::default(), tls);
        let mut got = String::new();
        for b in input.as_bytes() {
            got.push_str(&drive(&mut s, &mut f, std::slice::from_ref(b)));
        }
        // Except where STLS drops what follows it in the same read.
        if !name.starts_with("STLS drops") {
            assert_eq!(got, want, "case (bytewise): {name}");
        }
    }
}

#[test]
fn stls_then_login_and_no_plaintext_before() {
    let mut f = Fake::new();
    let mut s = session(SessionConfig::default(), false);
    let out = drive(&mut s, &mut f, b"STLS\r\nUSER mallory\r\nPASS x\r\n");
    assert_eq!(out, "+OK Begin TLS negotiation\r\n");
    assert_eq!(f.tls_handshakes, 1);
    assert!(s.is_tls());
    // The pipelined USER was dropped: PASS needs a USER of its own.
    let out = drive(&mut s, &mut f, b"PASS secret pw\r\nCAPA\r\n");
    assert!(out.starts_with("-ERR USER first\r\n"), "{out}");
    assert!(!out.contains("STLS"), "{out}");
    let out = drive(&mut s, &mut f, LOGIN.as_bytes());
    assert_eq!(out, LOGGED_IN);
    assert_eq!(f.opened, ["alice"]);
}

#[test]
fn plaintext_allowed_on_loopback_listener() {
    let mut f = Fake::new();
    let config = SessionConfig {
        plaintext_auth_allowed: true,
        ..SessionConfig::default()
    };
    let mut s = session(config, false);
    let out = drive(&mut s, &mut f, format!("{LOGIN}STAT\r\n").as_bytes());
    assert_eq!(out, format!("{LOGGED_IN}+OK 2 75\r\n"));
}

#[test]
fn quit_reports_the_deleted_numbers_once() {
    let mut f = Fake::new();
    let mut s = session(SessionConfig::default(), true);
    drive(
        &mut s,
        &mut f,
        format!("{LOGIN}DELE 2\r\nDELE 1\r\nRSET\r\nDELE 2\r\nQUIT\r\n").as_bytes(),
    );
    assert_eq!(f.updates, vec![vec![2]]);
    assert!(f.closed);
    assert_eq!(s.state(), State::Closed);
}

#[test]
fn no_update_without_quit() {
    let mut f = Fake::new();
    let mut s = session(SessionConfig::default(), true);
    drive(&mut s, &mut f, format!("{LOGIN}DELE 1\r\n").as_bytes());
    assert_eq!(s.state(), State::Transaction);
    assert!(f.updates.is_empty());
}

#[test]
fn failed_update_is_reported() {
    for (e, want) in [
        (
            MaildropError::Temporary,
            "-ERR [SYS/TEMP] Some deleted messages were not removed\r\n",
        ),
        (
            MaildropError::Permanent,
            "-ERR [SYS/PERM] Some deleted messages were not removed\r\n",
        ),
    ] {
        let mut f = Fake::new();
        f.update_error = Some(e);
        let mut s = session(SessionConfig::default(), true);
        let out = drive(
            &mut s,
            &mut f,
            format!("{LOGIN}DELE 1\r\nQUIT\r\n").as_bytes(),
        );
        assert!(out.ends_with(want), "{out}");
        assert!(f.closed);
    }
}

#[test]
fn maildrop_errors_go_back_to_authorization() {
    for (e, want) in [
        (
            MaildropError::InUse,
            "-ERR [IN-USE] Maildrop is locked by another session\r\n",
        ),
        (
            MaildropError::Temporary,
            "-ERR [SYS/TEMP] Maildrop unavailable, try again later\r\n",
        ),
        (
            MaildropError::Permanent,
            "-ERR [SYS/PERM] Maildrop cannot be opened\r\n",
        ),
    ] {
        let mut f = Fake::new();
        f.open_error = Some(e);
        let mut s = session(SessionConfig::default(), true);
        let out = drive(&mut s, &mut f, format!("{LOGIN}STAT\r\n").as_bytes());
        assert_eq!(
            out,
            format!("+OK Send your password\r\n{want}-ERR Not authenticated\r\n")
        );
        assert_eq!(s.state(), State::Authorization);
        assert_eq!(s.user(), None);
    }
}

#[test]
fn retrieve_errors() {
    for (e, want) in [
        (
            MaildropError::Temporary,
            "-ERR [SYS/TEMP] Message cannot be read now, try again later\r\n",
        ),
        (
            MaildropError::Permanent,
            "-ERR [SYS/PERM] Message no longer available\r\n",
        ),
    ] {
        let mut f = Fake::new();
        f.retrieve_error = Some(e);
        let mut s = session(SessionConfig::default(), true);
        let out = drive(
            &mut s,
            &mut f,
            format!("{LOGIN}RETR 1\r\nNOOP\r\n").as_bytes(),
        );
        assert_eq!(out, format!("{LOGGED_IN}{want}+OK\r\n"));
    }
}

#[test]
fn auth_failures_are_reported_as_events() {
    let mut f = Fake::new();
    let mut s = session(SessionConfig::default(), true);
    drive(
        &mut s,
        &mut f,
        b"USER alice\r\nPASS wrong\r\nAUTH LOGIN\r\n*\r\n",
    );
    assert_eq!(
        f.failures,
        [FailureKind::BadCredentials, FailureKind::Cancelled]
    );
}

#[test]
fn scram_and_bearer_reach_the_directory() {
    let mut f = Fake::new();
    let config = SessionConfig {
        mechanisms: vec![
            Mechanism::ScramSha256,
            Mechanism::OAuthBearer,
            Mechanism::CramMd5,
        ],
        ..SessionConfig::default()
    };
    let mut s = session(config, true);
    let first = STANDARD.encode("n,,n=alice,r=clientnonce0123456789");
    let out = drive(
        &mut s,
        &mut f,
        format!("AUTH SCRAM-SHA-256 {first}\r\n").as_bytes(),
    );
    // Unknown user: a fake credential, the exchange goes on (no leak).
    assert!(out.starts_with("+ "), "{out}");
    let out = drive(&mut s, &mut f, b"*\r\n");
    assert_eq!(out, "-ERR Authentication cancelled\r\n");
    let bearer = STANDARD.encode("n,a=alice,\x01auth=Bearer tok\x01\x01");
    let out = drive(
        &mut s,
        &mut f,
        format!("AUTH OAUTHBEARER {bearer}\r\n").as_bytes(),
    );
    assert!(out.starts_with("+ "), "{out}");
    let out = drive(&mut s, &mut f, b"AQ==\r\n");
    assert_eq!(out, "-ERR [AUTH] Authentication failed\r\n");
    let out = drive(&mut s, &mut f, b"AUTH CRAM-MD5\r\n");
    assert!(out.starts_with("+ "), "{out}");
    let out = drive(
        &mut s,
        &mut f,
        format!(
            "{}\r\n",
            STANDARD.encode("alice 0123456789abcdef0123456789abcdef")
        )
        .as_bytes(),
    );
    assert_eq!(out, "-ERR [AUTH] Authentication failed\r\n");
}

#[test]
fn long_auth_lines_are_allowed_up_to_their_own_bound() {
    let mut f = Fake::new();
    let mut s = session(SessionConfig::default(), true);
    let out = drive(&mut s, &mut f, b"AUTH PLAIN\r\n");
    assert_eq!(out, "+ \r\n");
    // 2000 octets: over the command bound, under the AUTH bound.
    let mut msg = b"\0alice\0".to_vec();
    msg.extend(std::iter::repeat_n(b'x', 1500));
    let out = drive(
        &mut s,
        &mut f,
        format!("{}\r\n", STANDARD.encode(&msg)).as_bytes(),
    );
    assert_eq!(out, "-ERR [AUTH] Authentication failed\r\n");
    // Over the AUTH bound: refused, drained, the session goes on.
    let out = drive(&mut s, &mut f, b"AUTH PLAIN\r\n");
    assert_eq!(out, "+ \r\n");
    let out = drive(&mut s, &mut f, &vec![b'A'; 20_000]);
    assert_eq!(out, "-ERR Authentication response too long\r\n");
    let out = drive(&mut s, &mut f, b"AAAA\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(out, "-ERR Not authenticated\r\n+OK Logging out\r\n");
}

#[test]
fn expire_is_configurable() {
    let mut f = Fake::new();
    let config = SessionConfig {
        expire: Expire::Days(30),
        ..SessionConfig::default()
    };
    let mut s = session(config, true);
    let out = drive(&mut s, &mut f, b"CAPA\r\n");
    assert!(out.contains("\r\nEXPIRE 30\r\n"), "{out}");
}

#[test]
fn login_delay_is_announced_and_answered() {
    // Not configured: not announced.
    let mut f = Fake::new();
    let mut s = session(SessionConfig::default(), true);
    let out = drive(&mut s, &mut f, b"CAPA\r\n");
    assert!(!out.contains("LOGIN-DELAY"), "{out}");
    // Configured: announced before and after login; a login too soon
    // gets [LOGIN-DELAY] and the session stays in AUTHORIZATION.
    let config = SessionConfig {
        login_delay: Some(900),
        ..SessionConfig::default()
    };
    let mut s = session(config, true);
    let out = drive(&mut s, &mut f, b"CAPA\r\n");
    assert!(out.contains("\r\nLOGIN-DELAY 900\r\n"), "{out}");
    f.open_error = Some(MaildropError::LoginDelay);
    let out = drive(&mut s, &mut f, LOGIN.as_bytes());
    assert_eq!(
        out,
        "+OK Send your password\r\n-ERR [LOGIN-DELAY] Logged in too recently, try again later\r\n"
    );
    assert_eq!(s.state(), State::Authorization);
    assert!(drive(&mut s, &mut f, b"STAT\r\n").starts_with("-ERR Not authenticated"));
    f.open_error = None;
    let out = drive(&mut s, &mut f, LOGIN.as_bytes());
    assert_eq!(out, LOGGED_IN);
    let out = drive(&mut s, &mut f, b"CAPA\r\n");
    assert!(out.contains("\r\nLOGIN-DELAY 900\r\n"), "{out}");
}

#[test]
fn pipelined_commands_wait_for_the_pending_event() {
    let mut s = session(SessionConfig::default(), true);
    s.handle_input(b"USER alice\r\nPASS secret pw\r\nSTAT\r\n");
    assert_eq!(s.take_output(), b"+OK Send your password\r\n");
    assert!(matches!(s.poll_event(), Some(Event::Auth(_))));
    s.auth_answer(Answer::PasswordOk(true));
    assert!(matches!(s.poll_event(), Some(Event::OpenMaildrop { .. })));
    // STAT is not answered before the maildrop is open.
    assert_eq!(s.take_output(), b"");
    assert_eq!(s.state(), State::Authorization);
    s.maildrop_opened(Ok(vec![]));
    assert_eq!(
        s.take_output(),
        b"+OK Logged in, 0 messages (0 octets)\r\n+OK 0 0\r\n"
    );
    assert_eq!(s.user(), Some("alice"));
}

#[test]
fn answers_out_of_turn_are_ignored() {
    let mut s = session(SessionConfig::default(), false);
    s.auth_answer(Answer::PasswordOk(true));
    s.maildrop_opened(Ok(vec![]));
    s.retrieve_ready();
    s.retrieve_done();
    s.retrieve_failed(MaildropError::Temporary);
    s.update_done(Ok(()));
    s.tls_established();
    s.auth_begin(StartContext::new(&[1; 32], "h", 0, b"k"));
    assert_eq!(s.take_output(), b"");
    assert!(s.poll_event().is_none());
    assert_eq!(s.state(), State::Authorization);
    assert!(!s.is_tls());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"USER alice\r\n".to_vec()),
            Just(b"PASS secret pw\r\n".to_vec()),
            Just(b"PASS x\r\n".to_vec()),
            Just(b"STAT\r\n".to_vec()),
            Just(b"LIST\r\n".to_vec()),
            Just(b"UIDL\r\n".to_vec()),
            Just(b"RSET\r\n".to_vec()),
            Just(b"NOOP\r\n".to_vec()),
            Just(b"CAPA\r\n".to_vec()),
            Just(b"STLS\r\n".to_vec()),
            Just(b"AUTH PLAIN\r\n".to_vec()),
            Just(b"AUTH LOGIN\r\n".to_vec()),
            Just(b"*\r\n".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            (0u32..4).prop_map(|n| format!("RETR {n}\r\n").into_bytes()),
            (0u32..4).prop_map(|n| format!("DELE {n}\r\n").into_bytes()),
            (0u32..4, 0u64..3).prop_map(|(n, l)| format!("TOP {n} {l}\r\n").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    proptest! {
        /// The session never panics, every response ends in CRLF, nothing
        /// follows QUIT's answer, and UPDATE lists each existing message at
        /// most once, ascending.
        #[test]
        fn random_command_streams(
            lines in proptest::collection::vec(line(), 0..30),
            tls in any::<bool>(),
            chunk in 1usize..64,
        ) {
            let input: Vec<u8> = lines.concat();
            let mut f = Fake::new();
            let mut s = session(SessionConfig::default(), tls);
            let mut out = String::new();
            for piece in input.chunks(chunk) {
                out.push_str(&drive(&mut s, &mut f, piece));
            }
            prop_assert!(out.is_empty() || out.ends_with("\r\n"));
            prop_assert!(f.updates.len() <= 1);
            for u in &f.updates {
                prop_assert!(u.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(u.iter().all(|&n| (1..=2).contains(&n)));
            }
            if f.closed {
                prop_assert_eq!(s.state(), State::Closed);
                prop_assert!(drive(&mut s, &mut f, b"NOOP\r\nSTAT\r\n").is_empty());
            }
        }
    }
}

#[test]
fn auth_mechanism_names_the_exchange_that_ran() {
    // (client bytes, the mechanism the session reports afterwards)
    let cases: [(&str, Option<Mechanism>); 5] = [
        ("CAPA\r\n", None),
        (LOGIN, Some(Mechanism::Plain)),
        ("USER alice\r\nPASS wrong\r\n", Some(Mechanism::Plain)),
        (
            "AUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0IHB3\r\n",
            Some(Mechanism::Login),
        ),
        // Refused before any exchange, after the mechanism was named.
        ("AUTH PLAIN !!!\r\n", Some(Mechanism::Plain)),
    ];
    for (input, expected) in cases {
        let mut f = Fake::new();
        let mut s = session(SessionConfig::default(), true);
        drive(&mut s, &mut f, input.as_bytes());
        assert_eq!(s.auth_mechanism(), expected, "{input:?}");
    }
}
