//! Fake scanners that speak the real protocols (rspamd's HTTP, the milter
//! protocol, clamd's INSTREAM) with scripted answers, and the faults a
//! real one can have: dead, slow, garbage. Each runs on an ephemeral
//! loopback port inside the test's tokio runtime.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_filter::milter::{Frame, FrameReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A closed port: connections are refused.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// How a fake misbehaves.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers properly.
    None,
    /// Waits this long before answering.
    Slow(Duration),
    /// Answers with bytes that are not the protocol.
    Garbage,
    /// Closes the connection without answering.
    Hangup,
}

// ---------------------------------------------------------------- rspamd

/// A fake rspamd normal worker: answers every `/checkv2` with the JSON
/// `answer(request)` gives, and records the requests (head and body).
/// Requests seen: (head, body).
pub type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

pub struct FakeRspamd {
    pub addr: SocketAddr,
    pub requests: Requests,
}

pub type Answer = Arc<dyn Fn(&str, &[u8]) -> String + Send + Sync>;

pub async fn rspamd(fault: Fault, answer: Answer) -> FakeRspamd {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let recorded = Arc::clone(&recorded);
            let answer = Arc::clone(&answer);
            let fault = fault.clone();
            tokio::spawn(async move {
                // Keep-alive: several requests per connection.
                while let Some((head, body)) = read_http_request(&mut s).await {
                    recorded.lock().unwrap().push((head.clone(), body.clone()));
                    match &fault {
                        Fault::Hangup => return,
                        Fault::Garbage => {
                            let _ = s.write_all(b"220 this is not HTTP\r\n\r\n{{{").await;
                            return;
                        }
                        Fault::Slow(d) => tokio::time::sleep(*d).await,
                        Fault::None => {}
                    }
                    let json = answer(&head, &body);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{json}",
                        json.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeRspamd { addr, requests }
}

async fn read_http_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// An rspamd answer with `action` and score.
pub fn rspamd_json(action: &str, score: f64, extra: &str) -> String {
    format!(
        r#"{{"is_skipped":false,"score":{score},"required_score":15.0,"action":"{action}","symbols":{{}},"messages":{{"smtp_message":"rspamd says {action}"}}{extra}}}"#
    )
}

// ---------------------------------------------------------------- milter

/// What the fake milter saw, in order: command bytes, with the data of
/// some (MAIL/RCPT arguments, header names, macros).
#[derive(Debug, Default, Clone)]
pub struct MilterLog {
    pub commands: Vec<char>,
    pub macros: Vec<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub connections: usize,
}

pub struct FakeMilter {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<MilterLog>>,
}

fn frame_bytes(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut v = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(cmd);
    v.extend_from_slice(data);
    v
}

fn strings(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A fake milter. Its script, by what it sees:
/// - MAIL FROM `<tempfail@…>`: tempfail; RCPT TO `<blocked@…>`: 550 reply code.
/// - end of message, by the `Subject:`: `milter-reject` → `554 5.7.1`;
///   `milter-discard` → discard; `milter-quarantine` → quarantine;
///   `milter-replbody` → new body; `milter-addrcpt` → adds bob; anything
///   else → adds `X-Test-Milter: scanned`, changes the subject, accepts.
pub async fn milter(fault: Fault) -> FakeMilter {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(MilterLog::default()));
    let shared = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            shared.lock().unwrap().connections += 1;
            tokio::spawn(milter_conn(s, fault.clone(), Arc::clone(&shared)));
        }
    });
    FakeMilter { addr, log }
}

async fn milter_conn(mut s: TcpStream, fault: Fault, log: Arc<Mutex<MilterLog>>) {
    let mut reader = FrameReader::new();
    let mut buf = vec![0u8; 65536];
    let mut subject = String::new();
    loop {
        let frame: Frame = loop {
            match reader.next_frame() {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(_) => return,
            }
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            reader.push(&buf[..n]);
        };
        let c = frame.command;
        {
            let mut l = log.lock().unwrap();
            l.commands.push(c as char);
            match c {
                b'D' => l.macros.extend(strings(&frame.data[1..])),
                b'L' => {
                    let s = strings(&frame.data);
                    l.headers
                        .push((s[0].clone(), s.get(1).cloned().unwrap_or_default()));
                }
                b'B' => l.body.extend_from_slice(&frame.data),
                _ => {}
            }
        }
        let mut out = Vec::new();
        match c {
            b'O' => {
                if let Fault::Hangup = fault {
                    return;
                }
                let mut d = Vec::new();
                d.extend_from_slice(&6u32.to_be_bytes());
                d.extend_from_slice(&0x1ffu32.to_be_bytes());
                d.extend_from_slice(&0u32.to_be_bytes());
                out = frame_bytes(b'O', &d);
            }
            b'D' | b'A' => {}
            b'Q' => return,
            b'M' if strings(&frame.data)[0].contains("tempfail@") => {
                out = frame_bytes(b't', b"");
            }
            b'R' if strings(&frame.data)[0].contains("blocked@") => {
                out = frame_bytes(b'y', b"550 5.7.1 Recipient blocked by the test milter\0");
            }
            b'L' => {
                let s = strings(&frame.data);
                if s[0].eq_ignore_ascii_case("subject") {
                    subject = s.get(1).cloned().unwrap_or_default();
                }
                out = frame_bytes(b'c', b"");
            }
            b'E' => {
                match &fault {
                    Fault::Slow(d) => tokio::time::sleep(*d).await,
                    Fault::Garbage => {
                        let _ = s.write_all(b"\0\0\0\x05Zjunk").await;
                        continue;
                    }
                    _ => {}
                }
                if subject.contains("milter-reject") {
                    out = frame_bytes(b'y', b"554 5.7.1 Rejected by the test milter\0");
                } else if subject.contains("milter-discard") {
                    out = frame_bytes(b'd', b"");
                } else if subject.contains("milter-quarantine") {
                    out.extend(frame_bytes(b'q', b"test quarantine\0"));
                    out.extend(frame_bytes(b'a', b""));
                } else if subject.contains("milter-replbody") {
                    out.extend(frame_bytes(b'b', b"Replaced by the milter.\r\n"));
                    out.extend(frame_bytes(b'c', b""));
                } else if subject.contains("milter-addrcpt") {
                    out.extend(frame_bytes(b'+', b"<bob@example.test>\0"));
                    out.extend(frame_bytes(b'-', b"<alice@example.test>\0"));
                    out.extend(frame_bytes(b'c', b""));
                } else {
                    out.extend(frame_bytes(b'p', b""));
                    out.extend(frame_bytes(b'h', b"X-Test-Milter\0scanned\0"));
                    let mut chg = 1u32.to_be_bytes().to_vec();
                    chg.extend_from_slice(b"Subject\0[milter] ");
                    chg.extend_from_slice(subject.as_bytes());
                    chg.push(0);
                    out.extend(frame_bytes(b'm', &chg));
                    out.extend(frame_bytes(b'a', b""));
                }
                subject.clear();
            }
            _ => out = frame_bytes(b'c', b""),
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- clamd

/// The EICAR test string.
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

pub struct FakeClamd {
    pub addr: SocketAddr,
    pub scanned: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A fake clamd: `INSTREAM` only; "infected" when the data holds EICAR;
/// refuses (like `StreamMaxLength`) more than `limit` bytes.
pub async fn clamd(fault: Fault, limit: usize) -> FakeClamd {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scanned = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&scanned);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let shared = Arc::clone(&shared);
            let fault = fault.clone();
            tokio::spawn(async move {
                let mut cmd = [0u8; 10];
                if s.read_exact(&mut cmd).await.is_err() || &cmd != b"zINSTREAM\0" {
                    return;
                }
                let mut data = Vec::new();
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes(len) as usize;
                    if len == 0 {
                        break;
                    }
                    let mut chunk = vec![0u8; len];
                    if s.read_exact(&mut chunk).await.is_err() {
                        return;
                    }
                    data.extend_from_slice(&chunk);
                    if data.len() > limit {
                        let _ = s.write_all(b"INSTREAM size limit exceeded. ERROR\0").await;
                        return;
                    }
                }
                shared.lock().unwrap().push(data.clone());
                match fault {
                    Fault::Hangup => return,
                    Fault::Garbage => {
                        let _ = s.write_all(b"PONG?\0").await;
                        return;
                    }
                    Fault::Slow(d) => tokio::time::sleep(d).await,
                    Fault::None => {}
                }
                let found = data.windows(EICAR.len()).any(|w| w == EICAR.as_bytes());
                let reply: &[u8] = if found {
                    b"stream: Win.Test.EICAR_HDB-1 FOUND\0"
                } else {
                    b"stream: OK\0"
                };
                let _ = s.write_all(reply).await;
            });
        }
    });
    FakeClamd { addr, scanned }
}
