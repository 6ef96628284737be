//! A socket-free driver for `ServerSession`: feeds client bytes, answers
//! the session's questions with a scripted policy, and records everything.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use tern_smtp::reply::Reply;
use tern_smtp::server::{Event, ServerConfig, ServerSession};

/// How the fake runtime answers one question.
pub enum Answer {
    Accept,
    Message(String),
    Reply(Reply),
    /// `auth_begin(nonce, now)` for an AuthStart.
    AuthBegin(Vec<u8>, u64),
    /// `auth_answer(..)` for an Auth question.
    Sasl(tern_sasl::Answer),
}

/// The fake runtime's policy: given the question, the answer.
pub type Policy = Box<dyn FnMut(&Event) -> Answer>;

pub struct Harness {
    pub session: ServerSession,
    pub events: Vec<Event>,
    /// Messages completed (DataEnd seen), in order, as the runtime stored them.
    pub messages: Vec<Vec<u8>>,
    /// Bytes of the message being received.
    pub current: Vec<u8>,
    /// Largest DataChunk seen.
    pub largest_chunk: usize,
    pub output: Vec<u8>,
    policy: Policy,
    queued: u32,
}

/// Accept everything; DataEnd gets queue ids Q1, Q2, ...
pub fn accept_all() -> Policy {
    Box::new(|_| Answer::Accept)
}

impl Harness {
    pub fn new(config: ServerConfig) -> Harness {
        Harness::with_policy(config, accept_all())
    }

    /// A session, not yet greeted.
    pub fn ungreeted(config: ServerConfig, policy: Policy) -> Harness {
        Harness {
            session: ServerSession::new(Arc::new(config)),
            events: Vec::new(),
            messages: Vec::new(),
            current: Vec::new(),
            largest_chunk: 0,
            output: Vec::new(),
            policy,
            queued: 0,
        }
    }

    /// A greeted session; the greeting is consumed from the output.
    pub fn with_policy(config: ServerConfig, policy: Policy) -> Harness {
        let mut h = Harness::ungreeted(config, policy);
        h.session.greet();
        h.pump();
        h.take();
        h
    }

    /// Runs the session until it needs input: answers questions, records
    /// events, collects output.
    pub fn pump(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            match &ev {
                Event::DataChunk(bytes) => {
                    self.largest_chunk = self.largest_chunk.max(bytes.len());
                    self.current.extend_from_slice(bytes);
                }
                Event::DataAborted { .. } => self.current.clear(),
                Event::MailFrom { .. }
                | Event::RcptTo { .. }
                | Event::DataStart { .. }
                | Event::DataEnd
                | Event::Verify { .. }
                | Event::AuthStart { .. }
                | Event::Auth(_)
                | Event::Authenticated { .. } => {
                    let answer = (self.policy)(&ev);
                    if ev == Event::DataEnd {
                        self.messages.push(std::mem::take(&mut self.current));
                    }
                    match answer {
                        Answer::Accept if ev == Event::DataEnd => {
                            self.queued += 1;
                            let id = format!("Q{}", self.queued);
                            self.session.accept_message(&id);
                        }
                        Answer::Accept => self.session.accept(),
                        Answer::Message(id) => self.session.accept_message(&id),
                        Answer::Reply(r) => self.session.reply(r),
                        Answer::AuthBegin(nonce, now) => self.session.auth_begin(&nonce, now),
                        Answer::Sasl(a) => self.session.auth_answer(a),
                    }
                }
                _ => {}
            }
            self.events.push(ev);
        }
        let out = self.session.take_output();
        self.output.extend_from_slice(&out);
    }

    /// Feeds bytes as one read and runs the session.
    pub fn feed(&mut self, bytes: &[u8]) -> &mut Harness {
        self.session.handle_input(bytes);
        self.pump();
        self
    }

    /// Feeds, then returns (and clears) the output so far as text.
    pub fn send(&mut self, bytes: &str) -> String {
        self.feed(bytes.as_bytes());
        self.take()
    }

    /// The output so far as text, cleared.
    pub fn take(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.output)).into_owned()
    }

    /// Reply codes (with the enhanced status when present) of the final
    /// line of each reply in `out`.
    pub fn codes(out: &str) -> Vec<String> {
        out.split("\r\n")
            .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                let code = parts.next().unwrap_or("");
                match parts.next() {
                    Some(s) if s.split('.').count() == 3 && s.as_bytes()[0].is_ascii_digit() => {
                        format!("{code} {s}")
                    }
                    _ => code.to_owned(),
                }
            })
            .collect()
    }

    /// Events other than DataChunk, for compact assertions.
    pub fn control_events(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| !matches!(e, Event::DataChunk(_)))
            .cloned()
            .collect()
    }

    pub fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }
}

/// A session after `EHLO client.test`.
pub fn ehlo(config: ServerConfig) -> Harness {
    let mut h = Harness::new(config);
    let out = h.send("EHLO client.test\r\n");
    assert!(out.starts_with("250-"), "{out}");
    h
}

/// A session inside a transaction with one accepted recipient.
pub fn in_transaction(config: ServerConfig) -> Harness {
    let mut h = ehlo(config);
    let out = h.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n");
    assert_eq!(Harness::codes(&out), ["250 2.1.0", "250 2.1.5"], "{out}");
    h
}

pub fn config() -> ServerConfig {
    ServerConfig {
        hostname: "mx.tern.test".to_owned(),
        ..ServerConfig::default()
    }
}
