//! SMTP command parsing (RFC 5321 4.1, with the ESMTP parameters of
//! RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 3030 CHUNKING, RFC 6531 SMTPUTF8,
//! RFC 3461 DSN and RFC 4954 AUTH).
//!
//! [`parse_command`] takes one command line without its CRLF and returns a
//! [`Command`] or a [`CommandError`] that knows its own reply
//! ([`CommandError::to_reply`]). It never panics, whatever the bytes: the
//! session feeds it peer-controlled input and the fuzz target
//! `command_parser` holds it to that.
//!
//! It never decides policy: whether a sender or recipient is acceptable, a
//! command is allowed in the current state, or a SIZE fits, is the
//! session's and the runtime's business.
//!
//! ```
//! use tern_smtp::command::{parse_command, Command};
//! let cmd = parse_command(b"MAIL FROM:<a@example.com> SIZE=1000", false).unwrap();
//! let Command::Mail { from, params } = cmd else { panic!() };
//! assert_eq!(from.to_string(), "<a@example.com>");
//! assert_eq!(params.size, Some(1000));
//! ```

use tern_types::dsn::{BodyType, Notify, Orcpt, Ret};
use tern_types::{
    AddressError, AddressLiteral, Domain, EnhancedStatus, ForwardPath, ReversePath,
    parse_forward_path, parse_reverse_path,
};

use crate::reply::Reply;

/// A parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `EHLO name`: the client's name as sent (domain or address literal).
    Ehlo(String),
    /// `HELO name`: the client's name as sent.
    Helo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail {
        /// The reverse path.
        from: ReversePath,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// The forward path.
        to: ForwardPath,
        /// The ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [anything]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism name, upper-cased.
        mechanism: String,
        /// The base64 initial response, or `=` for an empty one.
        initial_response: Option<String>,
    },
}

/// The ESMTP parameters of `MAIL FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<BodyType>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954), xtext-decoded, stored only.
    pub auth: Option<String>,
}

/// The ESMTP parameters of `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=` (RFC 3461), address xtext-decoded.
    pub orcpt: Option<Orcpt>,
}

/// Why a command line was refused. [`CommandError::to_reply`] gives the
/// reply to send; the session then goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Not a command we know (500 5.5.1).
    #[error("command not recognized")]
    UnknownCommand,
    /// The line holds bytes no command may contain: NUL, a bare CR or LF,
    /// or 8-bit bytes in the verb (500 5.5.2).
    #[error("invalid bytes in command: {0}")]
    InvalidBytes(&'static str),
    /// The arguments do not follow the grammar (501 5.5.4).
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// The `MAIL FROM` path is not a valid address (501 5.1.7), or is UTF-8
    /// without SMTPUTF8 on the same line (553 5.6.7).
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// The `RCPT TO` path is not a valid address (501 5.1.3), or is UTF-8
    /// in a transaction without SMTPUTF8 (553 5.6.7).
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// An ESMTP parameter we do not support (555 5.5.4); holds the keyword.
    #[error("unsupported parameter {0}")]
    UnknownParameter(String),
}

impl CommandError {
    /// The address error behind a `BadSender` or `BadRecipient`.
    pub fn address_error(&self) -> Option<&AddressError> {
        match self {
            CommandError::BadSender(e) | CommandError::BadRecipient(e) => Some(e),
            _ => None,
        }
    }

    /// The reply this error deserves. The text never echoes raw client
    /// input beyond a validated parameter keyword.
    pub fn to_reply(&self) -> Reply {
        match self {
            CommandError::UnknownCommand => Reply::new(
                500,
                EnhancedStatus::new(5, 5, 1),
                "Error: command not recognized",
            ),
            CommandError::InvalidBytes(what) => Reply::new(
                500,
                EnhancedStatus::new(5, 5, 2),
                format!("Error: command line contains {what}"),
            ),
            CommandError::Syntax(what) => Reply::new(
                501,
                EnhancedStatus::new(5, 5, 4),
                format!("Syntax error: {what}"),
            ),
            CommandError::BadSender(e) if e.is_utf8_not_allowed() => Reply::new(
                553,
                EnhancedStatus::new(5, 6, 7),
                "UTF-8 sender address requires the SMTPUTF8 parameter",
            ),
            CommandError::BadRecipient(e) if e.is_utf8_not_allowed() => Reply::new(
                553,
                EnhancedStatus::new(5, 6, 7),
                "UTF-8 recipient address requires SMTPUTF8 on MAIL FROM",
            ),
            CommandError::BadSender(e) => Reply::new(
                501,
                EnhancedStatus::new(5, 1, 7),
                format!("Bad sender address: {e}"),
            ),
            CommandError::BadRecipient(e) => Reply::new(
                501,
                EnhancedStatus::new(5, 1, 3),
                format!("Bad recipient address: {e}"),
            ),
            CommandError::UnknownParameter(k) => Reply::new(
                555,
                EnhancedStatus::new(5, 5, 4),
                format!("Unsupported parameter {k}"),
            ),
        }
    }
}

fn syntax(msg: &'static str) -> CommandError {
    CommandError::Syntax(msg)
}

/// Longest verb we bother to look at (STARTTLS is 8).
const MAX_VERB: usize = 16;
/// RFC 3461 4.4: ENVID is at most 100 characters.
const MAX_ENVID: usize = 100;
/// RFC 3461 4.2: ORCPT is at most 500 characters.
const MAX_ORCPT: usize = 500;
/// AUTH= carries a mailbox: xtext of at most a path's worth, hex-expanded.
const MAX_AUTH_PARAM: usize = 500;
/// RFC 4422 3.1: a SASL mechanism name is 1 to 20 characters.
const MAX_SASL_MECH: usize = 20;

/// Parses one command line (`line` excludes the CRLF).
///
/// Verbs are case-insensitive. `utf8_transaction` says whether the current
/// transaction's `MAIL FROM` carried SMTPUTF8: it allows UTF-8 `RCPT TO`
/// addresses. `MAIL FROM` is governed by its own SMTPUTF8 parameter.
/// Trailing spaces are ignored.
pub fn parse_command(line: &[u8], utf8_transaction: bool) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::InvalidBytes("a NUL byte"));
    }
    if line.contains(&b'\r') {
        return Err(CommandError::InvalidBytes("a bare CR"));
    }
    if line.contains(&b'\n') {
        return Err(CommandError::InvalidBytes("a bare LF"));
    }
    let end = line.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let line = &line[..end];
    let (verb, args) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    if verb.iter().any(|&b| b >= 0x80) {
        return Err(CommandError::InvalidBytes("8-bit bytes in the verb"));
    }
    if verb.is_empty() || verb.len() > MAX_VERB || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(CommandError::UnknownCommand);
    }
    let mut upper = [0u8; MAX_VERB];
    let upper = &mut upper[..verb.len()];
    upper.copy_from_slice(verb);
    upper.make_ascii_uppercase();
    // Arguments as text; 8-bit bytes must at least be UTF-8.
    let args = match args {
        None => None,
        Some(a) => Some(std::str::from_utf8(a).map_err(|_| syntax("invalid UTF-8 in arguments"))?),
    };
    match &*upper {
        b"EHLO" => parse_hello(args).map(Command::Ehlo),
        b"HELO" => parse_hello(args).map(Command::Helo),
        b"MAIL" => parse_mail(args.ok_or(syntax("MAIL requires FROM:<address>"))?),
        b"RCPT" => parse_rcpt(
            args.ok_or(syntax("RCPT requires TO:<address>"))?,
            utf8_transaction,
        ),
        b"DATA" => no_args(args, Command::Data),
        b"RSET" => no_args(args, Command::Rset),
        b"QUIT" => no_args(args, Command::Quit),
        b"STARTTLS" => no_args(args, Command::StartTls),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help(
            args.map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
        )),
        b"VRFY" => one_arg(args, "VRFY requires an argument").map(Command::Vrfy),
        b"EXPN" => one_arg(args, "EXPN requires an argument").map(Command::Expn),
        b"BDAT" => parse_bdat(args),
        b"AUTH" => parse_auth(args),
        _ => Err(CommandError::UnknownCommand),
    }
}

fn no_args(args: Option<&str>, cmd: Command) -> Result<Command, CommandError> {
    match args {
        None => Ok(cmd),
        Some(_) => Err(syntax("this command takes no arguments")),
    }
}

fn one_arg(args: Option<&str>, msg: &'static str) -> Result<String, CommandError> {
    match args.map(str::trim) {
        Some(a) if !a.is_empty() => Ok(a.to_owned()),
        _ => Err(syntax(msg)),
    }
}

/// Splits on runs of spaces (clients sometimes double them).
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|w| !w.is_empty())
}

/// The EHLO/HELO argument: a domain, an address literal, or — for the real
/// world's sake — a host name with underscores or a trailing dot. Anything
/// else (spaces, brackets, quotes, controls) is refused.
fn parse_hello(args: Option<&str>) -> Result<String, CommandError> {
    let mut it = words(args.unwrap_or(""));
    let name = it
        .next()
        .ok_or(syntax("EHLO/HELO requires a domain or address literal"))?;
    if it.next().is_some() {
        return Err(syntax("EHLO/HELO takes one domain or address literal"));
    }
    if name.starts_with('[') {
        AddressLiteral::parse(name).map_err(|_| syntax("invalid address literal in EHLO/HELO"))?;
        return Ok(name.to_owned());
    }
    if Domain::parse_utf8(name).is_ok() {
        return Ok(name.to_owned());
    }
    // Lenient form: underscores (Windows host names) and one trailing dot.
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let lenient = !trimmed.is_empty()
        && trimmed.len() <= 255
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if lenient {
        Ok(name.to_owned())
    } else {
        Err(syntax("invalid domain in EHLO/HELO"))
    }
}

/// Strips a case-insensitive `FROM:`/`TO:` and the spaces some clients put
/// after the colon.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    Some(args[keyword.len()..].trim_start_matches(' '))
}

/// One `keyword[=value]` ESMTP parameter (RFC 5321 4.1.2).
struct Param<'a> {
    keyword: &'a str,
    value: Option<&'a str>,
}

fn parse_params(rest: &str) -> Result<Vec<Param<'_>>, CommandError> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(syntax("expected a space after the address"));
    }
    let mut out: Vec<Param<'_>> = Vec::new();
    for word in words(rest) {
        let (keyword, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let kb = keyword.as_bytes();
        let keyword_ok = !kb.is_empty()
            && kb[0].is_ascii_alphanumeric()
            && kb.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        if !keyword_ok {
            return Err(syntax("invalid parameter keyword"));
        }
        if let Some(v) = value
            && (v.is_empty() || !v.bytes().all(|b| matches!(b, 33..=60 | 62..=126)))
        {
            return Err(syntax("invalid parameter value"));
        }
        if out.iter().any(|p| p.keyword.eq_ignore_ascii_case(keyword)) {
            return Err(syntax("duplicate parameter"));
        }
        out.push(Param { keyword, value });
    }
    Ok(out)
}

/// RFC 3461 4 xtext: `+XX` hex escapes, other characters 33..=126 but `+`
/// and `=` as is. Lower-case hex digits are tolerated.
pub fn decode_xtext(s: &str) -> Result<Vec<u8>, CommandError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .ok_or(syntax("truncated xtext escape"))?;
                let hex = std::str::from_utf8(hex).map_err(|_| syntax("invalid xtext escape"))?;
                if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                    return Err(syntax("invalid xtext escape"));
                }
                out.push(u8::from_str_radix(hex, 16).map_err(|_| syntax("invalid xtext escape"))?);
                i += 3;
            }
            b'=' => return Err(syntax("invalid character in xtext")),
            c @ 33..=126 => {
                out.push(c);
                i += 1;
            }
            _ => return Err(syntax("invalid character in xtext")),
        }
    }
    Ok(out)
}

/// Encodes `s` as RFC 3461 xtext (the inverse of [`decode_xtext`]).
pub fn encode_xtext(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decodes xtext into text without control characters.
fn xtext_text(value: &str, max: usize, what: &'static str) -> Result<String, CommandError> {
    if value.len() > max {
        return Err(syntax(what));
    }
    let bytes = decode_xtext(value)?;
    let text = String::from_utf8(bytes).map_err(|_| syntax("xtext is not valid UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(syntax("control character in xtext"));
    }
    Ok(text)
}

fn require_value<'a>(p: &Param<'a>, msg: &'static str) -> Result<&'a str, CommandError> {
    p.value.ok_or(syntax(msg))
}

fn parse_mail(args: &str) -> Result<Command, CommandError> {
    let path = strip_keyword(args, "FROM:").ok_or(syntax("MAIL requires FROM:<address>"))?;
    // Parse with UTF-8 allowed; whether it was allowed depends on the
    // SMTPUTF8 parameter that follows the path.
    let (from, rest) = parse_reverse_path(path, true).map_err(CommandError::BadSender)?;
    let mut params = MailParams::default();
    for p in parse_params(rest)? {
        let k = p.keyword;
        if k.eq_ignore_ascii_case("SIZE") {
            let v = require_value(&p, "SIZE requires a value")?;
            if !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax("SIZE must be a number"));
            }
            params.size = Some(v.parse().map_err(|_| syntax("SIZE too large"))?);
        } else if k.eq_ignore_ascii_case("BODY") {
            let v = require_value(&p, "BODY requires a value")?;
            params.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                BodyType::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                BodyType::EightBitMime
            } else if v.eq_ignore_ascii_case("BINARYMIME") {
                BodyType::BinaryMime
            } else {
                return Err(syntax("BODY must be 7BIT, 8BITMIME or BINARYMIME"));
            });
        } else if k.eq_ignore_ascii_case("SMTPUTF8") {
            if p.value.is_some() {
                return Err(syntax("SMTPUTF8 takes no value"));
            }
            params.smtputf8 = true;
        } else if k.eq_ignore_ascii_case("RET") {
            let v = require_value(&p, "RET requires a value")?;
            params.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                Ret::Full
            } else if v.eq_ignore_ascii_case("HDRS") {
                Ret::Headers
            } else {
                return Err(syntax("RET must be FULL or HDRS"));
            });
        } else if k.eq_ignore_ascii_case("ENVID") {
            let v = require_value(&p, "ENVID requires a value")?;
            let text = xtext_text(v, MAX_ENVID, "ENVID longer than 100 characters")?;
            if !text.is_ascii() {
                return Err(syntax("ENVID must be ASCII"));
            }
            params.envid = Some(text);
        } else if k.eq_ignore_ascii_case("AUTH") {
            let v = require_value(&p, "AUTH requires a value")?;
            params.auth = Some(xtext_text(v, MAX_AUTH_PARAM, "AUTH parameter too long")?);
        } else {
            return Err(CommandError::UnknownParameter(k.to_ascii_uppercase()));
        }
    }
    if !params.smtputf8 && !from.is_ascii() {
        return Err(CommandError::BadSender(AddressError::Utf8NotAllowed));
    }
    Ok(Command::Mail { from, params })
}

fn parse_notify(v: &str) -> Result<Notify, CommandError> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for item in v.split(',') {
        if item.eq_ignore_ascii_case("SUCCESS") {
            success = true;
        } else if item.eq_ignore_ascii_case("FAILURE") {
            failure = true;
        } else if item.eq_ignore_ascii_case("DELAY") {
            delay = true;
        } else if item.eq_ignore_ascii_case("NEVER") {
            return Err(syntax("NOTIFY=NEVER cannot be combined"));
        } else {
            return Err(syntax("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY"));
        }
    }
    Ok(Notify::On {
        success,
        failure,
        delay,
    })
}

fn parse_orcpt(v: &str) -> Result<Orcpt, CommandError> {
    if v.len() > MAX_ORCPT {
        return Err(syntax("ORCPT longer than 500 characters"));
    }
    let (addr_type, addr) = v
        .split_once(';')
        .ok_or(syntax("ORCPT must be addr-type;address"))?;
    // addr-type is an RFC 5322 atom.
    if addr_type.is_empty() || !addr_type.bytes().all(is_atext) {
        return Err(syntax("invalid ORCPT address type"));
    }
    let address = xtext_text(addr, MAX_ORCPT, "ORCPT longer than 500 characters")?;
    if address.is_empty() {
        return Err(syntax("empty ORCPT address"));
    }
    Ok(Orcpt {
        addr_type: addr_type.to_owned(),
        address,
    })
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn parse_rcpt(args: &str, utf8: bool) -> Result<Command, CommandError> {
    let path = strip_keyword(args, "TO:").ok_or(syntax("RCPT requires TO:<address>"))?;
    let (to, rest) = parse_forward_path(path, utf8).map_err(CommandError::BadRecipient)?;
    let mut params = RcptParams::default();
    for p in parse_params(rest)? {
        let k = p.keyword;
        if k.eq_ignore_ascii_case("NOTIFY") {
            params.notify = Some(parse_notify(require_value(&p, "NOTIFY requires a value")?)?);
        } else if k.eq_ignore_ascii_case("ORCPT") {
            params.orcpt = Some(parse_orcpt(require_value(&p, "ORCPT requires a value")?)?);
        } else {
            return Err(CommandError::UnknownParameter(k.to_ascii_uppercase()));
        }
    }
    Ok(Command::Rcpt { to, params })
}

fn parse_bdat(args: Option<&str>) -> Result<Command, CommandError> {
    let mut it = words(args.unwrap_or(""));
    let size = it.next().ok_or(syntax("BDAT requires a chunk size"))?;
    if size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax("BDAT chunk size must be a number"));
    }
    let size = size
        .parse()
        .map_err(|_| syntax("BDAT chunk size too large"))?;
    let last = match it.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax("BDAT takes a size and an optional LAST")),
    };
    if it.next().is_some() {
        return Err(syntax("BDAT takes a size and an optional LAST"));
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(args: Option<&str>) -> Result<Command, CommandError> {
    let mut it = words(args.unwrap_or(""));
    let mech = it.next().ok_or(syntax("AUTH requires a mechanism"))?;
    if mech.len() > MAX_SASL_MECH
        || !mech
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(syntax("invalid SASL mechanism name"));
    }
    let initial_response = match it.next() {
        None => None,
        Some("=") => Some("=".to_owned()),
        Some(r) => {
            let ok = r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
            if !ok {
                return Err(syntax("initial response is not base64"));
            }
            Some(r.to_owned())
        }
    };
    if it.next().is_some() {
        return Err(syntax(
            "AUTH takes a mechanism and an optional initial response",
        ));
    }
    Ok(Command::Auth {
        mechanism: mech.to_ascii_uppercase(),
        initial_response,
    })
}
