//! The Sendmail milter protocol, version 6, MTA side, without I/O.
//!
//! Written for Tern from the protocol's public description (the
//! constants of libmilter's `mfdef.h`, Sendmail's `milter.html` and the
//! behaviour of Postfix's and Sendmail's MTA side). It uses no milter
//! crate: those are GPL-licensed, and Tern is Apache-2.0.
//!
//! A packet is a 4-byte big-endian length, then a command byte, then
//! `length - 1` bytes of data. [`FrameReader`] splits bytes into
//! [`Frame`]s with a size cap ("incomplete" is `Ok(None)`, "invalid" an
//! error); [`Command::encode`] writes the MTA's packets;
//! [`Response::decode`] reads the milter's.
//!
//! [`Session`] is the MTA side's state for one milter connection. Its
//! contract, in order:
//!
//! 1. [`Session::negotiate`] writes the option negotiation; feed the
//!    milter's first frame to [`Session::on_negotiation`].
//! 2. For each SMTP step, call the matching method ([`Session::connect`],
//!    [`Session::helo`], [`Session::mail`], [`Session::rcpt`],
//!    [`Session::data`], [`Session::header`], [`Session::end_of_headers`],
//!    [`Session::body`], [`Session::end_of_message`]). It writes the
//!    macros and the command (or nothing, when the milter asked not to
//!    get that step or has already decided about the message) and returns
//!    whether a reply must be awaited ([`Expect`]).
//! 3. While a reply is awaited, feed each frame to [`Session::on_frame`]:
//!    it yields [`Step::Wait`] (progress), [`Step::Change`] (a
//!    modification, only at the end of the message) or [`Step::Done`]
//!    with the milter's [`Decision`].
//! 4. [`Session::abort`] after a transaction ends early (RSET, a refused
//!    message); [`Session::quit`] at the end.
//!
//! Protocol violations (a reply where none is due, a modification the
//! milter did not negotiate or outside the end of the message, a frame
//! too long) are [`MilterError`]s: the caller treats the milter as failed.

use std::net::SocketAddr;

use tern_smtp::reply::Reply;
use tern_types::EnhancedStatus;
use thiserror::Error;

use crate::Change;

/// The protocol version Tern speaks.
pub const VERSION: u32 = 6;

/// The largest frame accepted from a milter: a body replacement chunk of
/// 1 MB (with `SMFIP_MDS_1M`) plus room for the command.
pub const MAX_FRAME: usize = 1024 * 1024 + 1024;

/// Body chunks sent to the milter are at most this long (libmilter's
/// `MILTER_CHUNK_SIZE`, which every milter accepts).
pub const BODY_CHUNK: usize = 65535;

/// Command bytes the MTA sends (`SMFIC_*`).
pub mod cmd {
    /// Abort the current message.
    pub const ABORT: u8 = b'A';
    /// A body chunk.
    pub const BODY: u8 = b'B';
    /// Connection information.
    pub const CONNECT: u8 = b'C';
    /// Macros for the next command.
    pub const MACRO: u8 = b'D';
    /// End of the body.
    pub const BODYEOB: u8 = b'E';
    /// HELO/EHLO name.
    pub const HELO: u8 = b'H';
    /// Quit, but keep the connection for a new SMTP session.
    pub const QUIT_NC: u8 = b'K';
    /// A header field.
    pub const HEADER: u8 = b'L';
    /// MAIL FROM.
    pub const MAIL: u8 = b'M';
    /// End of the header section.
    pub const EOH: u8 = b'N';
    /// Option negotiation.
    pub const OPTNEG: u8 = b'O';
    /// Close the milter connection.
    pub const QUIT: u8 = b'Q';
    /// RCPT TO.
    pub const RCPT: u8 = b'R';
    /// DATA.
    pub const DATA: u8 = b'T';
    /// An unknown SMTP command.
    pub const UNKNOWN: u8 = b'U';
}

/// Reply bytes a milter sends (`SMFIR_*`).
pub mod reply {
    /// Add a recipient.
    pub const ADDRCPT: u8 = b'+';
    /// Remove a recipient.
    pub const DELRCPT: u8 = b'-';
    /// Add a recipient with ESMTP arguments.
    pub const ADDRCPT_PAR: u8 = b'2';
    /// The milter is shutting down (421).
    pub const SHUTDOWN: u8 = b'4';
    /// Accept the message (no more calls for it).
    pub const ACCEPT: u8 = b'a';
    /// Replace the body (one chunk; several in a row replace it whole).
    pub const REPLBODY: u8 = b'b';
    /// Go on.
    pub const CONTINUE: u8 = b'c';
    /// Accept and discard.
    pub const DISCARD: u8 = b'd';
    /// Change the envelope sender.
    pub const CHGFROM: u8 = b'e';
    /// Cause a connection failure.
    pub const CONN_FAIL: u8 = b'f';
    /// Add a header field at the end.
    pub const ADDHEADER: u8 = b'h';
    /// Insert a header field at a position.
    pub const INSHEADER: u8 = b'i';
    /// Set the macros wanted per stage (in the negotiation only).
    pub const SETSYMLIST: u8 = b'l';
    /// Change or delete a header field.
    pub const CHGHEADER: u8 = b'm';
    /// Still working: reset the timeout.
    pub const PROGRESS: u8 = b'p';
    /// Quarantine the message, with a reason.
    pub const QUARANTINE: u8 = b'q';
    /// Reject.
    pub const REJECT: u8 = b'r';
    /// Skip the rest of this step's calls (body chunks).
    pub const SKIP: u8 = b's';
    /// Tempfail.
    pub const TEMPFAIL: u8 = b't';
    /// Reply with this SMTP code and text.
    pub const REPLYCODE: u8 = b'y';
    /// Option negotiation.
    pub const OPTNEG: u8 = b'O';
}

/// Modification actions (`SMFIF_*`): what a milter may ask for.
pub mod action {
    /// Add header fields.
    pub const ADDHDRS: u32 = 0x01;
    /// Replace the body.
    pub const CHGBODY: u32 = 0x02;
    /// Add recipients.
    pub const ADDRCPT: u32 = 0x04;
    /// Remove recipients.
    pub const DELRCPT: u32 = 0x08;
    /// Change or delete header fields.
    pub const CHGHDRS: u32 = 0x10;
    /// Quarantine.
    pub const QUARANTINE: u32 = 0x20;
    /// Change the envelope sender.
    pub const CHGFROM: u32 = 0x40;
    /// Add recipients with ESMTP arguments.
    pub const ADDRCPT_PAR: u32 = 0x80;
    /// Choose macros per stage.
    pub const SETSYMLIST: u32 = 0x100;
    /// Everything Tern applies.
    pub const ALL: u32 = 0x1ff;
}

/// Protocol steps and flags (`SMFIP_*`): what a milter does not want to
/// get, or will not answer.
pub mod proto {
    /// No connection information.
    pub const NOCONNECT: u32 = 0x01;
    /// No HELO.
    pub const NOHELO: u32 = 0x02;
    /// No MAIL FROM.
    pub const NOMAIL: u32 = 0x04;
    /// No RCPT TO.
    pub const NORCPT: u32 = 0x08;
    /// No body.
    pub const NOBODY: u32 = 0x10;
    /// No header fields.
    pub const NOHDRS: u32 = 0x20;
    /// No end of headers.
    pub const NOEOH: u32 = 0x40;
    /// No reply to header fields.
    pub const NR_HDR: u32 = 0x80;
    /// No unknown commands.
    pub const NOUNKNOWN: u32 = 0x100;
    /// No DATA.
    pub const NODATA: u32 = 0x200;
    /// The MTA understands `SKIP`.
    pub const SKIP: u32 = 0x400;
    /// Send rejected recipients too.
    pub const RCPT_REJ: u32 = 0x800;
    /// No reply to connect.
    pub const NR_CONN: u32 = 0x1000;
    /// No reply to HELO.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to MAIL.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to RCPT.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to DATA.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to unknown commands.
    pub const NR_UNKN: u32 = 0x20000;
    /// No reply to end of headers.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to body chunks.
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space.
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Frames up to 256 KB.
    pub const MDS_256K: u32 = 0x1000_0000;
    /// Frames up to 1 MB.
    pub const MDS_1M: u32 = 0x2000_0000;
    /// Everything Tern offers (it never sends unknown commands and does
    /// not send rejected recipients, but a milter may ask for neither).
    pub const OFFERED: u32 = NOCONNECT
        | NOHELO
        | NOMAIL
        | NORCPT
        | NOBODY
        | NOHDRS
        | NOEOH
        | NR_HDR
        | NOUNKNOWN
        | NODATA
        | SKIP
        | NR_CONN
        | NR_HELO
        | NR_MAIL
        | NR_RCPT
        | NR_DATA
        | NR_UNKN
        | NR_EOH
        | NR_BODY
        | HDR_LEADSPC
        | MDS_256K
        | MDS_1M;
}

/// A macro stage of `SETSYMLIST` (`SMFIM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacroStage {
    /// Connect.
    Connect = 0,
    /// HELO.
    Helo = 1,
    /// MAIL FROM.
    Mail = 2,
    /// RCPT TO.
    Rcpt = 3,
    /// DATA.
    Data = 4,
    /// End of message.
    Eom = 5,
    /// End of headers.
    Eoh = 6,
}

impl MacroStage {
    fn from_u32(n: u32) -> Option<MacroStage> {
        Some(match n {
            0 => MacroStage::Connect,
            1 => MacroStage::Helo,
            2 => MacroStage::Mail,
            3 => MacroStage::Rcpt,
            4 => MacroStage::Data,
            5 => MacroStage::Eom,
            6 => MacroStage::Eoh,
            _ => return None,
        })
    }

    /// The command these macros precede.
    fn command(self) -> u8 {
        match self {
            MacroStage::Connect => cmd::CONNECT,
            MacroStage::Helo => cmd::HELO,
            MacroStage::Mail => cmd::MAIL,
            MacroStage::Rcpt => cmd::RCPT,
            MacroStage::Data => cmd::DATA,
            MacroStage::Eom => cmd::BODYEOB,
            MacroStage::Eoh => cmd::EOH,
        }
    }
}

/// Errors: the milter broke the protocol.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MilterError {
    /// A frame longer than [`MAX_FRAME`] (or of length 0).
    #[error("milter frame of {0} bytes is out of bounds")]
    FrameSize(usize),
    /// A frame whose data does not fit its command.
    #[error("malformed milter reply '{command}': {why}")]
    Malformed {
        /// The command byte, as a char.
        command: char,
        /// What is wrong.
        why: &'static str,
    },
    /// A reply byte no version of the protocol defines.
    #[error("unknown milter reply '{0}'")]
    Unknown(char),
    /// A reply that is not allowed now.
    #[error("unexpected milter reply '{command}' {when}")]
    Unexpected {
        /// The command byte, as a char.
        command: char,
        /// When it came.
        when: &'static str,
    },
    /// The milter asked for an action or step Tern did not offer.
    #[error("milter negotiation: {0}")]
    Negotiation(String),
}

/// One frame: a command byte and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command (or reply) byte.
    pub command: u8,
    /// The data after it.
    pub data: Vec<u8>,
}

/// Splits a byte stream into [`Frame`]s, holding at most one frame.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame; `Ok(None)` when more bytes are needed.
    /// The length is checked before the frame is buffered whole.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, MilterError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(MilterError::FrameSize(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let command = self.buf[4];
        let data = self.buf[5..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(Frame { command, data }))
    }
}

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Option negotiation: our version, the actions we allow, the steps
    /// we can leave out.
    OptNeg {
        /// Protocol version.
        version: u32,
        /// `SMFIF_*` allowed.
        actions: u32,
        /// `SMFIP_*` offered.
        protocol: u32,
    },
    /// Macros for the command `for_command`.
    Macro {
        /// The command byte they precede.
        for_command: u8,
        /// Name, value pairs (names as `{name}` or a single letter).
        pairs: &'a [(&'a str, &'a str)],
    },
    /// The client connected.
    Connect {
        /// Its host name (`[ip]` when unknown).
        hostname: &'a str,
        /// Its address; `None` sends family `U` (unknown).
        addr: Option<SocketAddr>,
    },
    /// HELO/EHLO.
    Helo(&'a str),
    /// MAIL FROM: `<address>` then the ESMTP arguments.
    Mail(&'a [&'a str]),
    /// RCPT TO: `<address>` then the ESMTP arguments.
    Rcpt(&'a [&'a str]),
    /// DATA.
    Data,
    /// A header field.
    Header {
        /// Name.
        name: &'a str,
        /// Value.
        value: &'a str,
    },
    /// End of headers.
    EndOfHeaders,
    /// A body chunk (at most [`BODY_CHUNK`] bytes).
    Body(&'a [u8]),
    /// End of message.
    EndOfBody,
    /// Abort the message.
    Abort,
    /// Close the connection.
    Quit,
    /// Quit the SMTP session, keep the milter connection.
    QuitNewConnection,
    /// An unknown SMTP command.
    Unknown(&'a str),
}

fn push_str0(out: &mut Vec<u8>, s: &str) {
    // A NUL inside would end the string early on the milter's side.
    out.extend(s.bytes().map(|b| if b == 0 { b' ' } else { b }));
    out.push(0);
}

impl Command<'_> {
    /// Appends the packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                out.push(cmd::OPTNEG);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&actions.to_be_bytes());
                out.extend_from_slice(&protocol.to_be_bytes());
            }
            Command::Macro { for_command, pairs } => {
                out.push(cmd::MACRO);
                out.push(*for_command);
                for (name, value) in pairs.iter() {
                    push_str0(out, name);
                    push_str0(out, value);
                }
            }
            Command::Connect { hostname, addr } => {
                out.push(cmd::CONNECT);
                push_str0(out, hostname);
                match addr {
                    Some(a) => {
                        out.push(if a.is_ipv4() { b'4' } else { b'6' });
                        out.extend_from_slice(&a.port().to_be_bytes());
                        push_str0(out, &a.ip().to_string());
                    }
                    None => out.push(b'U'),
                }
            }
            Command::Helo(name) => {
                out.push(cmd::HELO);
                push_str0(out, name);
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                out.push(if matches!(self, Command::Mail(_)) {
                    cmd::MAIL
                } else {
                    cmd::RCPT
                });
                for a in args.iter() {
                    push_str0(out, a);
                }
            }
            Command::Data => out.push(cmd::DATA),
            Command::Header { name, value } => {
                out.push(cmd::HEADER);
                push_str0(out, name);
                push_str0(out, value);
            }
            Command::EndOfHeaders => out.push(cmd::EOH),
            Command::Body(chunk) => {
                out.push(cmd::BODY);
                out.extend_from_slice(&chunk[..chunk.len().min(BODY_CHUNK)]);
            }
            Command::EndOfBody => out.push(cmd::BODYEOB),
            Command::Abort => out.push(cmd::ABORT),
            Command::Quit => out.push(cmd::QUIT),
            Command::QuitNewConnection => out.push(cmd::QUIT_NC),
            Command::Unknown(line) => {
                out.push(cmd::UNKNOWN);
                push_str0(out, line);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// What a milter sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Its side of the negotiation.
    OptNeg {
        /// Its protocol version.
        version: u32,
        /// `SMFIF_*` it wants.
        actions: u32,
        /// `SMFIP_*` it wants.
        protocol: u32,
        /// Macros it wants per stage (`SETSYMLIST`).
        macros: Vec<(MacroStage, Vec<String>)>,
    },
    /// Accept (no more calls for this message, or this connection).
    Accept,
    /// Go on.
    Continue,
    /// Accept and discard the message.
    Discard,
    /// Reject.
    Reject,
    /// Tempfail.
    TempFail,
    /// Skip the remaining body chunks.
    Skip,
    /// Still working.
    Progress,
    /// Fail the connection.
    ConnFail,
    /// The milter is shutting down.
    Shutdown,
    /// Reply with this SMTP reply.
    ReplyCode(Reply),
    /// A modification.
    Change(Modification),
}

/// A modification a milter asks for at the end of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modification {
    /// A header change (add, insert, change, delete).
    Header(Change),
    /// Change the envelope sender (`<address>` and ESMTP arguments).
    ChangeFrom {
        /// The address (angle brackets removed).
        address: String,
        /// ESMTP arguments, if any.
        args: Option<String>,
    },
    /// Add a recipient.
    AddRcpt {
        /// The address (angle brackets removed).
        address: String,
        /// ESMTP arguments, if any.
        args: Option<String>,
    },
    /// Remove a recipient.
    DelRcpt(String),
    /// A chunk of the new body (chunks in a row make the whole new body).
    ReplaceBody(Vec<u8>),
    /// Quarantine, with a reason.
    Quarantine(String),
}

impl Modification {
    /// The `SMFIF_*` action the milter needs to have negotiated.
    pub fn needs(&self) -> u32 {
        match self {
            Modification::Header(Change::Append { .. } | Change::Insert { .. }) => action::ADDHDRS,
            Modification::Header(_) => action::CHGHDRS,
            Modification::ChangeFrom { .. } => action::CHGFROM,
            Modification::AddRcpt { args: None, .. } => action::ADDRCPT,
            Modification::AddRcpt { args: Some(_), .. } => action::ADDRCPT_PAR,
            Modification::DelRcpt(_) => action::DELRCPT,
            Modification::ReplaceBody(_) => action::CHGBODY,
            Modification::Quarantine(_) => action::QUARANTINE,
        }
    }
}

/// NUL-terminated strings of `data`; a missing last NUL is tolerated.
fn strings(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn strip_brackets(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(t)
        .to_owned()
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses a milter's `SMFIR_REPLYCODE` text: `"554 5.7.1 text"`, possibly
/// several lines (`554-5.7.1 a\r\n554 5.7.1 b`).
fn parse_reply_code(text: &str) -> Option<Reply> {
    let mut lines = Vec::new();
    let mut code = None;
    let mut status = None;
    for line in text.split(['\n']).map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        let digits = line.get(..3)?;
        let c: u16 = digits.parse().ok()?;
        if !(400..600).contains(&c) || code.is_some_and(|k| k != c) {
            return None;
        }
        code = Some(c);
        let rest = line.get(4..).unwrap_or("");
        let (st, txt) = match rest.split_once(' ') {
            Some((first, tail)) => match first.parse::<EnhancedStatus>() {
                Ok(s) => (Some(s), tail),
                Err(_) => (None, rest),
            },
            None => match rest.parse::<EnhancedStatus>() {
                Ok(s) => (Some(s), ""),
                Err(_) => (None, rest),
            },
        };
        if status.is_none() {
            status = st;
        }
        lines.push(crate::verdict::clean(txt));
    }
    let code = code?;
    let status = status
        .filter(|s| u16::from(s.class) == code / 100)
        .unwrap_or(EnhancedStatus::new((code / 100) as u8, 7, 1));
    Some(Reply::multiline(code, status, lines))
}

impl Response {
    /// Decodes one frame from a milter.
    pub fn decode(frame: &Frame) -> Result<Response, MilterError> {
        let c = frame.command;
        let d = &frame.data[..];
        let bad = |why| MilterError::Malformed {
            command: c as char,
            why,
        };
        Ok(match c {
            reply::OPTNEG => {
                let (Some(version), Some(actions), Some(protocol)) =
                    (be32(d, 0), be32(d, 4), be32(d, 8))
                else {
                    return Err(bad("shorter than 12 bytes"));
                };
                let mut macros = Vec::new();
                let mut rest = &d[12..];
                while !rest.is_empty() {
                    let Some(stage) = be32(rest, 0) else {
                        return Err(bad("truncated macro list"));
                    };
                    rest = &rest[4..];
                    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                    let names = String::from_utf8_lossy(&rest[..end]);
                    rest = rest.get(end + 1..).unwrap_or(&[]);
                    if let Some(stage) = MacroStage::from_u32(stage) {
                        macros.push((stage, names.split_whitespace().map(str::to_owned).collect()));
                    }
                }
                Response::OptNeg {
                    version,
                    actions,
                    protocol,
                    macros,
                }
            }
            reply::ACCEPT => Response::Accept,
            reply::CONTINUE => Response::Continue,
            reply::DISCARD => Response::Discard,
            reply::REJECT => Response::Reject,
            reply::TEMPFAIL => Response::TempFail,
            reply::SKIP => Response::Skip,
            reply::PROGRESS => Response::Progress,
            reply::CONN_FAIL => Response::ConnFail,
            reply::SHUTDOWN => Response::Shutdown,
            reply::REPLYCODE => {
                let text = strings(d).into_iter().next().unwrap_or_default();
                Response::ReplyCode(parse_reply_code(&text).ok_or(bad("not a 4xx/5xx reply"))?)
            }
            reply::ADDHEADER => {
                let s = strings(d);
                let [name, value] =
                    <[String; 2]>::try_from(s).map_err(|_| bad("not name, value"))?;
                Response::Change(Modification::Header(Change::Append { name, value }))
            }
            reply::INSHEADER | reply::CHGHEADER => {
                let index = be32(d, 0).ok_or(bad("no index"))?;
                let s = strings(&d[4..]);
                let [name, value] =
                    <[String; 2]>::try_from(s).map_err(|_| bad("not name, value"))?;
                Response::Change(Modification::Header(if c == reply::INSHEADER {
                    Change::Insert {
                        index: index as usize,
                        name,
                        value,
                    }
                } else {
                    Change::Replace {
                        name,
                        // Index 0 means the first occurrence, as 1 does.
                        index: index.max(1),
                        value,
                    }
                }))
            }
            reply::CHGFROM | reply::ADDRCPT | reply::ADDRCPT_PAR => {
                let mut s = strings(d).into_iter();
                let address = strip_brackets(&s.next().ok_or(bad("no address"))?);
                let args = s.next().filter(|a| !a.is_empty());
                Response::Change(match c {
                    reply::CHGFROM => Modification::ChangeFrom { address, args },
                    reply::ADDRCPT => Modification::AddRcpt {
                        address,
                        args: None,
                    },
                    _ => Modification::AddRcpt { address, args },
                })
            }
            reply::DELRCPT => {
                let a = strings(d).into_iter().next().ok_or(bad("no address"))?;
                Response::Change(Modification::DelRcpt(strip_brackets(&a)))
            }
            reply::REPLBODY => Response::Change(Modification::ReplaceBody(d.to_vec())),
            reply::QUARANTINE => {
                let reason = strings(d).into_iter().next().unwrap_or_default();
                Response::Change(Modification::Quarantine(reason))
            }
            other => return Err(MilterError::Unknown(other as char)),
        })
    }
}

/// The SMTP step a command belongs to (for macros, replies and flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connect.
    Connect,
    /// HELO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA.
    Data,
    /// A header field.
    Header,
    /// End of headers.
    Eoh,
    /// A body chunk.
    Body,
    /// End of message.
    Eom,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Connect => "to connect",
            Stage::Helo => "to HELO",
            Stage::Mail => "to MAIL",
            Stage::Rcpt => "to RCPT",
            Stage::Data => "to DATA",
            Stage::Header => "to a header",
            Stage::Eoh => "to end of headers",
            Stage::Body => "to a body chunk",
            Stage::Eom => "to end of message",
        }
    }

    /// The `SMFIP_NO*` flag that leaves the step out.
    fn skip_flag(self) -> u32 {
        match self {
            Stage::Connect => proto::NOCONNECT,
            Stage::Helo => proto::NOHELO,
            Stage::Mail => proto::NOMAIL,
            Stage::Rcpt => proto::NORCPT,
            Stage::Data => proto::NODATA,
            Stage::Header => proto::NOHDRS,
            Stage::Eoh => proto::NOEOH,
            Stage::Body => proto::NOBODY,
            Stage::Eom => 0,
        }
    }

    /// The `SMFIP_NR_*` flag that means "no reply".
    fn no_reply_flag(self) -> u32 {
        match self {
            Stage::Connect => proto::NR_CONN,
            Stage::Helo => proto::NR_HELO,
            Stage::Mail => proto::NR_MAIL,
            Stage::Rcpt => proto::NR_RCPT,
            Stage::Data => proto::NR_DATA,
            Stage::Header => proto::NR_HDR,
            Stage::Eoh => proto::NR_EOH,
            Stage::Body => proto::NR_BODY,
            Stage::Eom => 0,
        }
    }

    fn macro_stage(self) -> Option<MacroStage> {
        Some(match self {
            Stage::Connect => MacroStage::Connect,
            Stage::Helo => MacroStage::Helo,
            Stage::Mail => MacroStage::Mail,
            Stage::Rcpt => MacroStage::Rcpt,
            Stage::Data => MacroStage::Data,
            Stage::Eoh => MacroStage::Eoh,
            Stage::Eom => MacroStage::Eom,
            Stage::Header | Stage::Body => return None,
        })
    }
}

/// Whether a command was sent and whether to wait for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing was written: the milter does not take this step, or has
    /// already decided about the message (or connection).
    NotSent,
    /// Written; the milter does not answer it.
    NoReply,
    /// Written; feed frames to [`Session::on_frame`] until [`Step::Done`].
    Reply,
}

/// The milter's decision about a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Continue,
    /// Accept: nothing more is sent about this message (at connect or
    /// HELO: this connection).
    Accept,
    /// Reject (at RCPT: this recipient) with this reply.
    Reject(Reply),
    /// Tempfail (at RCPT: this recipient) with this reply.
    TempFail(Reply),
    /// Accept and discard the message.
    Discard,
    /// Skip the remaining body chunks.
    Skip,
    /// The milter asked the MTA to drop the connection (or shut down):
    /// a temporary failure of this milter.
    Failed,
}

/// The next thing [`Session::on_frame`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not done yet (progress): read another frame.
    Wait,
    /// A modification (end of message only); read another frame.
    Change(Modification),
    /// The final reply to the awaited command.
    Done(Decision),
}

/// What the milter and Tern agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The milter's protocol version.
    pub version: u32,
    /// `SMFIF_*` actions the milter may use.
    pub actions: u32,
    /// `SMFIP_*` flags in force.
    pub protocol: u32,
    macros: Vec<(MacroStage, Vec<String>)>,
}

impl Negotiated {
    /// Whether the milter gets `stage`.
    pub fn sends(&self, stage: Stage) -> bool {
        self.protocol & stage.skip_flag() == 0
    }

    /// Whether the milter answers `stage`.
    pub fn replies(&self, stage: Stage) -> bool {
        self.protocol & stage.no_reply_flag() == 0
    }

    /// The macro names the milter asked for at `stage`, if it asked.
    pub fn macros(&self, stage: MacroStage) -> Option<&[String]> {
        self.macros
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, m)| m.as_slice())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Calls go on.
    Open,
    /// The milter accepted or discarded the message (or rejected it):
    /// nothing more until the next message.
    MessageDone,
    /// The milter accepted (or rejected) the connection: nothing more.
    ConnectionDone,
}

/// The MTA side of one milter connection. See the module documentation
/// for the call order.
#[derive(Debug)]
pub struct Session {
    negotiated: Option<Negotiated>,
    awaiting: Option<Stage>,
    scope: Scope,
    /// A body replacement started (later chunks append).
    replacing_body: bool,
    /// The milter said `SKIP` to a body chunk: no more chunks.
    skip_body: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A session before negotiation.
    pub fn new() -> Session {
        Session {
            negotiated: None,
            awaiting: None,
            scope: Scope::Open,
            replacing_body: false,
            skip_body: false,
        }
    }

    /// Writes our option negotiation (version 6, every action, every
    /// protocol flag Tern supports).
    pub fn negotiate(&mut self, out: &mut Vec<u8>) {
        Command::OptNeg {
            version: VERSION,
            actions: action::ALL,
            protocol: proto::OFFERED,
        }
        .encode(out);
    }

    /// The milter's first frame: its side of the negotiation. Refused if
    /// it is not one, if the version is below 2, or if it wants actions
    /// or flags Tern did not offer.
    pub fn on_negotiation(&mut self, frame: &Frame) -> Result<&Negotiated, MilterError> {
        let Response::OptNeg {
            version,
            actions,
            protocol,
            macros,
        } = Response::decode(frame)?
        else {
            return Err(MilterError::Negotiation(format!(
                "expected the option negotiation, got '{}'",
                frame.command as char
            )));
        };
        if !(2..=VERSION).contains(&version) {
            return Err(MilterError::Negotiation(format!(
                "unsupported protocol version {version}"
            )));
        }
        if actions & !action::ALL != 0 {
            return Err(MilterError::Negotiation(format!(
                "unknown actions {:#x}",
                actions & !action::ALL
            )));
        }
        // Older milters (version < 6) know nothing of NR_ flags, so their
        // protocol words are taken as they are; unknown bits are refused.
        if protocol & !proto::OFFERED & !proto::RCPT_REJ != 0 {
            return Err(MilterError::Negotiation(format!(
                "unsupported protocol flags {:#x}",
                protocol & !proto::OFFERED
            )));
        }
        Ok(self.negotiated.insert(Negotiated {
            version,
            actions,
            protocol,
            macros,
        }))
    }

    /// What was negotiated (after [`Session::on_negotiation`]).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// True while a reply is awaited.
    pub fn is_awaiting(&self) -> bool {
        self.awaiting.is_some()
    }

    /// True when the milter has decided about the whole connection.
    pub fn is_done_with_connection(&self) -> bool {
        self.scope == Scope::ConnectionDone
    }

    /// Writes the macros of `stage` (those the milter asked for, or all
    /// when it did not say) and the command, if the milter takes `stage`.
    fn send(
        &mut self,
        stage: Stage,
        macros: &[(&str, &str)],
        command: Command<'_>,
        out: &mut Vec<u8>,
    ) -> Expect {
        let Some(n) = &self.negotiated else {
            return Expect::NotSent;
        };
        if self.scope != Scope::Open || !n.sends(stage) {
            return Expect::NotSent;
        }
        if let Some(ms) = stage.macro_stage() {
            let wanted = n.macros(ms);
            let pairs: Vec<(&str, &str)> = macros
                .iter()
                .filter(|(name, _)| wanted.is_none_or(|w| w.iter().any(|x| macro_eq(x, name))))
                .copied()
                .collect();
            if !pairs.is_empty() {
                Command::Macro {
                    for_command: ms.command(),
                    pairs: &pairs,
                }
                .encode(out);
            }
        }
        command.encode(out);
        if n.replies(stage) {
            self.awaiting = Some(stage);
            Expect::Reply
        } else {
            Expect::NoReply
        }
    }

    /// The client connected (`hostname`: its name, or `[ip]`).
    pub fn connect(
        &mut self,
        hostname: &str,
        addr: Option<SocketAddr>,
        macros: &[(&str, &str)],
        out: &mut Vec<u8>,
    ) -> Expect {
        self.send(
            Stage::Connect,
            macros,
            Command::Connect { hostname, addr },
            out,
        )
    }

    /// HELO/EHLO.
    pub fn helo(&mut self, name: &str, macros: &[(&str, &str)], out: &mut Vec<u8>) -> Expect {
        self.send(Stage::Helo, macros, Command::Helo(name), out)
    }

    /// MAIL FROM; a new message starts (a previous message's "accept"
    /// no longer holds).
    pub fn mail(&mut self, args: &[&str], macros: &[(&str, &str)], out: &mut Vec<u8>) -> Expect {
        if self.scope == Scope::MessageDone {
            self.scope = Scope::Open;
        }
        self.replacing_body = false;
        self.skip_body = false;
        self.send(Stage::Mail, macros, Command::Mail(args), out)
    }

    /// RCPT TO.
    pub fn rcpt(&mut self, args: &[&str], macros: &[(&str, &str)], out: &mut Vec<u8>) -> Expect {
        self.send(Stage::Rcpt, macros, Command::Rcpt(args), out)
    }

    /// DATA (protocol version 4 and later only).
    pub fn data(&mut self, macros: &[(&str, &str)], out: &mut Vec<u8>) -> Expect {
        if self.negotiated.as_ref().is_some_and(|n| n.version < 4) {
            return Expect::NotSent;
        }
        self.send(Stage::Data, macros, Command::Data, out)
    }

    /// One header field.
    pub fn header(&mut self, name: &str, value: &str, out: &mut Vec<u8>) -> Expect {
        self.send(Stage::Header, &[], Command::Header { name, value }, out)
    }

    /// Whether header values should keep their leading space.
    pub fn wants_leading_space(&self) -> bool {
        self.negotiated
            .as_ref()
            .is_some_and(|n| n.protocol & proto::HDR_LEADSPC != 0)
    }

    /// End of the header section.
    pub fn end_of_headers(&mut self, macros: &[(&str, &str)], out: &mut Vec<u8>) -> Expect {
        self.send(Stage::Eoh, macros, Command::EndOfHeaders, out)
    }

    /// A body chunk (callers split at [`BODY_CHUNK`]).
    pub fn body(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Expect {
        if self.skip_body {
            return Expect::NotSent;
        }
        self.send(Stage::Body, &[], Command::Body(chunk), out)
    }

    /// Whether body chunks are still wanted for this message (not after a
    /// `SKIP`, an accept, or with `NOBODY`).
    pub fn wants_body(&self) -> bool {
        self.scope == Scope::Open
            && !self.skip_body
            && self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.sends(Stage::Body))
    }

    /// End of the message: modifications, then the final decision.
    pub fn end_of_message(&mut self, macros: &[(&str, &str)], out: &mut Vec<u8>) -> Expect {
        self.send(Stage::Eom, macros, Command::EndOfBody, out)
    }

    /// The message is over without an end of message (RSET, refused):
    /// writes an abort unless the milter is done with the connection.
    pub fn abort(&mut self, out: &mut Vec<u8>) {
        if self.negotiated.is_some() && self.scope != Scope::ConnectionDone {
            Command::Abort.encode(out);
        }
        self.awaiting = None;
        self.skip_body = false;
        self.replacing_body = false;
        if self.scope == Scope::MessageDone {
            self.scope = Scope::Open;
        }
    }

    /// The message was handled (accepted or refused after end of message):
    /// the next one starts fresh.
    pub fn message_done(&mut self) {
        if self.scope == Scope::MessageDone {
            self.scope = Scope::Open;
        }
        self.replacing_body = false;
        self.skip_body = false;
    }

    /// Writes the quit command.
    pub fn quit(&mut self, out: &mut Vec<u8>) {
        Command::Quit.encode(out);
        self.awaiting = None;
    }

    /// Whether a body replacement has started in this end of message
    /// (the first [`Modification::ReplaceBody`] chunk starts a new body,
    /// later ones append).
    pub fn replacing_body(&self) -> bool {
        self.replacing_body
    }

    /// Feeds one frame that arrived while a reply was awaited.
    pub fn on_frame(&mut self, frame: &Frame) -> Result<Step, MilterError> {
        let Some(stage) = self.awaiting else {
            return Err(MilterError::Unexpected {
                command: frame.command as char,
                when: "when no reply was due",
            });
        };
        let response = Response::decode(frame)?;
        let unexpected = || MilterError::Unexpected {
            command: frame.command as char,
            when: stage.name(),
        };
        let decision = match response {
            Response::Progress => return Ok(Step::Wait),
            Response::Change(m) => {
                if stage != Stage::Eom {
                    return Err(unexpected());
                }
                let allowed = self.negotiated.as_ref().map_or(0, |n| n.actions);
                if allowed & m.needs() == 0 {
                    return Err(MilterError::Negotiation(format!(
                        "modification '{}' was not negotiated",
                        frame.command as char
                    )));
                }
                if let Modification::ReplaceBody(_) = m {
                    self.replacing_body = true;
                }
                return Ok(Step::Change(m));
            }
            Response::OptNeg { .. } => return Err(unexpected()),
            Response::Continue => Decision::Continue,
            Response::Accept => Decision::Accept,
            Response::Discard => Decision::Discard,
            Response::Reject => Decision::Reject(Reply::new(
                550,
                EnhancedStatus::new(5, 7, 1),
                "Command rejected",
            )),
            Response::TempFail => Decision::TempFail(Reply::new(
                451,
                EnhancedStatus::new(4, 7, 1),
                "Service unavailable - try again later",
            )),
            Response::ReplyCode(r) if r.code >= 500 => Decision::Reject(r),
            Response::ReplyCode(r) => Decision::TempFail(r),
            Response::Skip => {
                let skip_ok = self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.protocol & proto::SKIP != 0);
                if stage != Stage::Body || !skip_ok {
                    return Err(unexpected());
                }
                Decision::Skip
            }
            Response::ConnFail | Response::Shutdown => Decision::Failed,
        };
        self.awaiting = None;
        let connection_level = matches!(stage, Stage::Connect | Stage::Helo);
        match &decision {
            Decision::Failed => self.scope = Scope::ConnectionDone,
            Decision::Accept | Decision::Reject(_) | Decision::TempFail(_) if connection_level => {
                self.scope = Scope::ConnectionDone
            }
            Decision::Accept | Decision::Discard => self.scope = Scope::MessageDone,
            Decision::Reject(_) | Decision::TempFail(_) if stage != Stage::Rcpt => {
                self.scope = Scope::MessageDone
            }
            // A skipped body still gets its end of message.
            Decision::Skip => self.skip_body = true,
            _ => {}
        }
        Ok(Step::Done(decision))
    }
}

/// Macro names match with or without braces (`{auth_authen}` / `auth_authen`).
fn macro_eq(a: &str, b: &str) -> bool {
    let strip = |s: &str| {
        s.strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(s)
            .to_owned()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(command: u8, data: &[u8]) -> Frame {
        Frame {
            command,
            data: data.to_vec(),
        }
    }

    fn optneg(version: u32, actions: u32, protocol: u32, extra: &[u8]) -> Frame {
        let mut d = Vec::new();
        d.extend_from_slice(&version.to_be_bytes());
        d.extend_from_slice(&actions.to_be_bytes());
        d.extend_from_slice(&protocol.to_be_bytes());
        d.extend_from_slice(extra);
        frame(reply::OPTNEG, &d)
    }

    /// Splits encoded packets back into frames.
    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut r = FrameReader::new();
        r.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push(f);
        }
        assert_eq!(r.buffered(), 0);
        out
    }

    fn session(actions: u32, protocol: u32) -> Session {
        let mut s = Session::new();
        let mut out = Vec::new();
        s.negotiate(&mut out);
        s.on_negotiation(&optneg(6, actions, protocol, &[]))
            .unwrap();
        s
    }

    #[test]
    fn negotiation_packet_is_exact() {
        let mut out = Vec::new();
        Session::new().negotiate(&mut out);
        assert_eq!(&out[..5], &[0, 0, 0, 13, b'O']);
        assert_eq!(&out[5..9], &6u32.to_be_bytes());
        assert_eq!(&out[9..13], &0x1ffu32.to_be_bytes());
        assert_eq!(&out[13..17], &proto::OFFERED.to_be_bytes());
    }

    #[test]
    fn frame_reader_incomplete_and_invalid() {
        let mut r = FrameReader::new();
        r.push(&[0, 0]);
        assert_eq!(r.next_frame(), Ok(None));
        r.push(&[0, 2, b'c']);
        assert_eq!(r.next_frame(), Ok(None));
        r.push(&[b'x', 0, 0, 0, 1, b'a']);
        assert_eq!(r.next_frame(), Ok(Some(frame(b'c', b"x"))));
        assert_eq!(r.next_frame(), Ok(Some(frame(b'a', b""))));
        let mut r = FrameReader::new();
        r.push(&[0, 0, 0, 0]);
        assert_eq!(r.next_frame(), Err(MilterError::FrameSize(0)));
        let mut r = FrameReader::new();
        r.push(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(r.next_frame(), Err(MilterError::FrameSize(_))));
    }

    #[test]
    fn negotiation_refusals() {
        let mut s = Session::new();
        assert!(s.on_negotiation(&frame(b'c', b"")).is_err());
        assert!(s.on_negotiation(&optneg(7, 0, 0, &[])).is_err());
        assert!(s.on_negotiation(&optneg(1, 0, 0, &[])).is_err());
        assert!(s.on_negotiation(&optneg(6, 0x200, 0, &[])).is_err());
        assert!(s.on_negotiation(&optneg(6, 0, 0x4000_0000, &[])).is_err());
        assert!(s.on_negotiation(&frame(b'O', &[0, 0, 0, 6])).is_err());
        assert!(
            s.on_negotiation(&optneg(6, action::ADDHDRS, proto::NR_CONN, &[]))
                .is_ok()
        );
    }

    #[test]
    fn commands_are_encoded() {
        let mut out = Vec::new();
        let addr: SocketAddr = "192.0.2.1:4567".parse().unwrap();
        Command::Connect {
            hostname: "[192.0.2.1]",
            addr: Some(addr),
        }
        .encode(&mut out);
        let f = &frames(&out)[0];
        assert_eq!(f.command, b'C');
        assert_eq!(f.data, b"[192.0.2.1]\x004\x11\xd7192.0.2.1\x00");
        out.clear();
        Command::Connect {
            hostname: "h",
            addr: Some("[2001:db8::1]:25".parse().unwrap()),
        }
        .encode(&mut out);
        assert_eq!(frames(&out)[0].data, b"h\x006\x00\x192001:db8::1\x00");
        out.clear();
        Command::Mail(&["<a@b>", "SIZE=10"]).encode(&mut out);
        Command::Header {
            name: "Subject",
            value: "a\0b",
        }
        .encode(&mut out);
        Command::Macro {
            for_command: b'M',
            pairs: &[("i", "ABC"), ("{mail_addr}", "a@b")],
        }
        .encode(&mut out);
        Command::Body(&vec![b'x'; BODY_CHUNK + 10]).encode(&mut out);
        Command::Unknown("XYZZY").encode(&mut out);
        for c in [
            Command::Data,
            Command::EndOfHeaders,
            Command::EndOfBody,
            Command::Abort,
            Command::Quit,
            Command::QuitNewConnection,
            Command::Helo("h"),
            Command::Rcpt(&["<c@d>"]),
        ] {
            c.encode(&mut out);
        }
        let f = frames(&out);
        assert_eq!(f[0], frame(b'M', b"<a@b>\0SIZE=10\0"));
        assert_eq!(f[1], frame(b'L', b"Subject\0a b\0"));
        assert_eq!(f[2], frame(b'D', b"Mi\0ABC\0{mail_addr}\0a@b\0"));
        assert_eq!(f[3].data.len(), BODY_CHUNK);
        assert_eq!(f[4], frame(b'U', b"XYZZY\0"));
        let cmds: Vec<u8> = f[5..].iter().map(|f| f.command).collect();
        assert_eq!(cmds, b"TNEAQKHR");
    }

    #[test]
    fn every_reply_decodes() {
        let cases: Vec<(Frame, Response)> = vec![
            (frame(b'a', b""), Response::Accept),
            (frame(b'c', b""), Response::Continue),
            (frame(b'd', b""), Response::Discard),
            (frame(b'r', b""), Response::Reject),
            (frame(b't', b""), Response::TempFail),
            (frame(b's', b""), Response::Skip),
            (frame(b'p', b""), Response::Progress),
            (frame(b'f', b""), Response::ConnFail),
            (frame(b'4', b""), Response::Shutdown),
            (
                frame(b'h', b"X-Virus\0infected\0"),
                Response::Change(Modification::Header(Change::Append {
                    name: "X-Virus".into(),
                    value: "infected".into(),
                })),
            ),
            (
                frame(b'i', b"\0\0\0\x02X-A\0v\0"),
                Response::Change(Modification::Header(Change::Insert {
                    index: 2,
                    name: "X-A".into(),
                    value: "v".into(),
                })),
            ),
            (
                frame(b'm', b"\0\0\0\0Subject\0\0"),
                Response::Change(Modification::Header(Change::Replace {
                    name: "Subject".into(),
                    index: 1,
                    value: String::new(),
                })),
            ),
            (
                frame(b'e', b"<new@x>\0SIZE=1\0"),
                Response::Change(Modification::ChangeFrom {
                    address: "new@x".into(),
                    args: Some("SIZE=1".into()),
                }),
            ),
            (
                frame(b'+', b"<r@x>\0"),
                Response::Change(Modification::AddRcpt {
                    address: "r@x".into(),
                    args: None,
                }),
            ),
            (
                frame(b'2', b"<r@x>\0NOTIFY=NEVER\0"),
                Response::Change(Modification::AddRcpt {
                    address: "r@x".into(),
                    args: Some("NOTIFY=NEVER".into()),
                }),
            ),
            (
                frame(b'-', b"<r@x>\0"),
                Response::Change(Modification::DelRcpt("r@x".into())),
            ),
            (
                frame(b'b', b"new body"),
                Response::Change(Modification::ReplaceBody(b"new body".to_vec())),
            ),
            (
                frame(b'q', b"virus\0"),
                Response::Change(Modification::Quarantine("virus".into())),
            ),
        ];
        for (f, want) in cases {
            assert_eq!(Response::decode(&f), Ok(want), "{:?}", f.command as char);
        }
        assert_eq!(
            Response::decode(&frame(b'Z', b"")),
            Err(MilterError::Unknown('Z'))
        );
        for bad in [
            frame(b'h', b"only-name\0"),
            frame(b'm', b"\0\0"),
            frame(b'y', b"250 2.0.0 ok\0"),
            frame(b'y', b"hello\0"),
            frame(b'e', b""),
        ] {
            assert!(Response::decode(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reply_codes() {
        let Response::ReplyCode(r) =
            Response::decode(&frame(b'y', b"554 5.7.1 Virus found: Eicar\0")).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.code, 554);
        assert_eq!(r.status, Some(EnhancedStatus::new(5, 7, 1)));
        assert_eq!(r.lines, vec!["Virus found: Eicar"]);
        let Response::ReplyCode(r) = Response::decode(&frame(b'y', b"451 try later\0")).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status, Some(EnhancedStatus::new(4, 7, 1)));
        assert_eq!(r.lines, vec!["try later"]);
        let Response::ReplyCode(r) =
            Response::decode(&frame(b'y', b"550-5.7.1 first\r\n550 5.7.1 second\r\n\0")).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.lines, vec!["first", "second"]);
        // A mismatched class is replaced, never passed on.
        let Response::ReplyCode(r) = Response::decode(&frame(b'y', b"554 2.0.0 odd\0")).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status, Some(EnhancedStatus::new(5, 7, 1)));
    }

    #[test]
    fn optneg_with_macro_lists() {
        let mut extra = Vec::new();
        extra.extend_from_slice(&2u32.to_be_bytes());
        extra.extend_from_slice(b"{mail_addr} i\0");
        extra.extend_from_slice(&9u32.to_be_bytes());
        extra.extend_from_slice(b"ignored\0");
        let mut s = Session::new();
        let n = s
            .on_negotiation(&optneg(6, action::SETSYMLIST, 0, &extra))
            .unwrap();
        assert_eq!(
            n.macros(MacroStage::Mail),
            Some(&["{mail_addr}".to_string(), "i".to_string()][..])
        );
        assert_eq!(n.macros(MacroStage::Connect), None);
        let mut out = Vec::new();
        assert_eq!(
            s.mail(
                &["<a@b>"],
                &[("i", "Q1"), ("{auth_authen}", "u"), ("mail_addr", "a@b")],
                &mut out
            ),
            Expect::Reply
        );
        let f = frames(&out);
        assert_eq!(f[0], frame(b'D', b"Mi\0Q1\0mail_addr\0a@b\0"));
        assert_eq!(f[1].command, b'M');
    }

    #[test]
    fn a_whole_transaction() {
        let mut s = session(
            action::ADDHDRS | action::CHGHDRS | action::CHGBODY | action::QUARANTINE,
            proto::NR_HELO | proto::NOEOH | proto::SKIP,
        );
        let mut out = Vec::new();
        assert_eq!(
            s.connect("[192.0.2.1]", None, &[("j", "mx")], &mut out),
            Expect::Reply
        );
        assert_eq!(s.on_frame(&frame(b'p', b"")), Ok(Step::Wait));
        assert_eq!(
            s.on_frame(&frame(b'c', b"")),
            Ok(Step::Done(Decision::Continue))
        );
        assert_eq!(s.helo("client", &[], &mut out), Expect::NoReply);
        assert!(!s.is_awaiting());
        // A reply nobody asked for is a protocol error.
        assert!(s.on_frame(&frame(b'c', b"")).is_err());
        assert_eq!(s.mail(&["<a@b>"], &[], &mut out), Expect::Reply);
        assert_eq!(
            s.on_frame(&frame(b'c', b"")),
            Ok(Step::Done(Decision::Continue))
        );
        assert_eq!(s.rcpt(&["<c@d>"], &[], &mut out), Expect::Reply);
        // RCPT reject: this recipient only.
        assert!(matches!(
            s.on_frame(&frame(b'r', b"")),
            Ok(Step::Done(Decision::Reject(_)))
        ));
        assert_eq!(s.rcpt(&["<e@d>"], &[], &mut out), Expect::Reply);
        assert_eq!(
            s.on_frame(&frame(b'c', b"")),
            Ok(Step::Done(Decision::Continue))
        );
        assert_eq!(s.data(&[], &mut out), Expect::Reply);
        assert_eq!(
            s.on_frame(&frame(b'c', b"")),
            Ok(Step::Done(Decision::Continue))
        );
        assert_eq!(s.header("Subject", "x", &mut out), Expect::Reply);
        // A modification before the end of the message is refused.
        assert!(s.on_frame(&frame(b'h', b"X\0y\0")).is_err());
        assert_eq!(s.header("Subject", "x", &mut out), Expect::Reply);
        assert_eq!(
            s.on_frame(&frame(b'c', b"")),
            Ok(Step::Done(Decision::Continue))
        );
        assert_eq!(s.end_of_headers(&[], &mut out), Expect::NotSent);
        assert!(s.wants_body());
        assert_eq!(s.body(b"chunk", &mut out), Expect::Reply);
        assert_eq!(
            s.on_frame(&frame(b's', b"")),
            Ok(Step::Done(Decision::Skip))
        );
        assert!(!s.wants_body());
        assert_eq!(s.body(b"chunk", &mut out), Expect::NotSent);
        assert_eq!(s.end_of_message(&[], &mut out), Expect::Reply);
        assert!(matches!(
            s.on_frame(&frame(b'h', b"X-Scanned\0yes\0")),
            Ok(Step::Change(Modification::Header(Change::Append { .. })))
        ));
        assert!(matches!(
            s.on_frame(&frame(b'b', b"replaced")),
            Ok(Step::Change(Modification::ReplaceBody(_)))
        ));
        assert!(s.replacing_body());
        // Not negotiated: refused.
        assert!(matches!(
            s.on_frame(&frame(b'+', b"<x@y>\0")),
            Err(MilterError::Negotiation(_))
        ));
        assert_eq!(
            s.on_frame(&frame(b'a', b"")),
            Ok(Step::Done(Decision::Accept))
        );
        s.message_done();
        assert!(!s.replacing_body());
        // The next message starts fresh.
        assert_eq!(s.mail(&["<a@b>"], &[], &mut out), Expect::Reply);
        assert_eq!(
            s.on_frame(&frame(b'a', b"")),
            Ok(Step::Done(Decision::Accept))
        );
        // Accepted: nothing more about this message.
        assert_eq!(s.rcpt(&["<c@d>"], &[], &mut out), Expect::NotSent);
        s.abort(&mut out);
        assert_eq!(s.mail(&["<a@b>"], &[], &mut out), Expect::Reply);
        assert_eq!(
            s.on_frame(&frame(b'd', b"")),
            Ok(Step::Done(Decision::Discard))
        );
        s.quit(&mut out);
        assert_eq!(frames(&out).last().unwrap().command, b'Q');
    }

    #[test]
    fn connection_level_decisions_end_the_connection() {
        let mut s = session(0, 0);
        let mut out = Vec::new();
        s.connect("h", None, &[], &mut out);
        assert!(matches!(
            s.on_frame(&frame(b't', b"")),
            Ok(Step::Done(Decision::TempFail(_)))
        ));
        assert!(s.is_done_with_connection());
        assert_eq!(s.mail(&["<>"], &[], &mut out), Expect::NotSent);
        let before = out.len();
        s.abort(&mut out);
        assert_eq!(
            out.len(),
            before,
            "no abort after the connection is decided"
        );
        let mut s = session(0, 0);
        s.helo("h", &[], &mut out);
        assert_eq!(
            s.on_frame(&frame(b'f', b"")),
            Ok(Step::Done(Decision::Failed))
        );
        assert!(s.is_done_with_connection());
    }

    #[test]
    fn skip_needs_negotiation_and_a_body_step() {
        let mut s = session(0, 0);
        let mut out = Vec::new();
        s.body(b"x", &mut out);
        assert!(s.on_frame(&frame(b's', b"")).is_err());
        let mut s = session(0, proto::SKIP);
        s.mail(&["<>"], &[], &mut out);
        assert!(s.on_frame(&frame(b's', b"")).is_err());
    }

    #[test]
    fn no_steps_and_no_replies() {
        let mut s = session(
            0,
            proto::NOCONNECT | proto::NOMAIL | proto::NR_RCPT | proto::NOBODY,
        );
        let mut out = Vec::new();
        assert_eq!(
            s.connect("h", None, &[("j", "x")], &mut out),
            Expect::NotSent
        );
        assert!(out.is_empty(), "no macros for a step not sent");
        assert_eq!(s.mail(&["<>"], &[], &mut out), Expect::NotSent);
        assert_eq!(s.rcpt(&["<a@b>"], &[], &mut out), Expect::NoReply);
        assert!(!s.wants_body());
        assert_eq!(s.end_of_message(&[], &mut out), Expect::Reply);
        // Before negotiation nothing is sent.
        let mut fresh = Session::new();
        assert_eq!(fresh.mail(&["<>"], &[], &mut out), Expect::NotSent);
        assert!(!fresh.wants_leading_space());
        let s2 = session(0, proto::HDR_LEADSPC);
        assert!(s2.wants_leading_space());
    }

    #[test]
    fn old_versions_get_no_data_command() {
        let mut s = Session::new();
        s.on_negotiation(&optneg(2, 0, 0, &[])).unwrap();
        let mut out = Vec::new();
        assert_eq!(s.data(&[], &mut out), Expect::NotSent);
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(command in proptest::prelude::any::<u8>(), data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Response::decode(&Frame { command, data });
        }

        #[test]
        fn frames_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..8), split in 1usize..50) {
            let mut out = Vec::new();
            for c in &chunks {
                Command::Body(c).encode(&mut out);
            }
            let mut r = FrameReader::new();
            let mut got = Vec::new();
            for piece in out.chunks(split) {
                r.push(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f.data);
                }
            }
            proptest::prop_assert_eq!(got, chunks);
        }
    }
}
