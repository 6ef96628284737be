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

use tern_types::dsn::{BodyType, EnvId, Notify, NotifyError, Orcpt, Ret};
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
    pub envid: Option<EnvId>,
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
/// More ESMTP parameters than any extension set defines: refused, which
/// also keeps the duplicate check cheap on hostile lines.
const MAX_PARAMS: usize = 32;
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
        if out.len() == MAX_PARAMS {
            return Err(syntax("too many parameters"));
        }
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
            params.envid = Some(EnvId::parse(&text).map_err(|_| syntax("ENVID must be ASCII"))?);
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

/// `NOTIFY=` by the workspace's one parser ([`Notify::parse`]).
fn parse_notify(v: &str) -> Result<Notify, CommandError> {
    Notify::parse(v).map_err(|e| match e {
        NotifyError::NeverCombined => syntax("NOTIFY=NEVER cannot be combined"),
        _ => syntax("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tern_types::Mailbox;

    fn mail(from: &str, params: MailParams) -> Command {
        let from = if from.is_empty() {
            ReversePath::Null
        } else {
            ReversePath::Mailbox(Mailbox::parse(from, true).unwrap())
        };
        Command::Mail { from, params }
    }

    fn rcpt(to: &str, params: RcptParams) -> Command {
        let to = if to.is_empty() {
            ForwardPath::Postmaster
        } else {
            ForwardPath::Mailbox(Mailbox::parse(to, true).unwrap())
        };
        Command::Rcpt { to, params }
    }

    fn syn(s: &'static str) -> CommandError {
        CommandError::Syntax(s)
    }

    #[test]
    fn commands_table() {
        use CommandError as E;
        let on = |success, failure, delay| {
            Some(Notify::On {
                success,
                failure,
                delay,
            })
        };
        let cases: Vec<(&[u8], bool, Result<Command, CommandError>)> = vec![
            // Hello.
            (
                b"EHLO client.example",
                false,
                Ok(Command::Ehlo("client.example".into())),
            ),
            (
                b"ehlo Client.Example",
                false,
                Ok(Command::Ehlo("Client.Example".into())),
            ),
            (
                b"HELO localhost",
                false,
                Ok(Command::Helo("localhost".into())),
            ),
            (b"HeLo my_pc", false, Ok(Command::Helo("my_pc".into()))),
            (
                b"EHLO host.example.",
                false,
                Ok(Command::Ehlo("host.example.".into())),
            ),
            (
                b"EHLO [192.0.2.1]",
                false,
                Ok(Command::Ehlo("[192.0.2.1]".into())),
            ),
            (
                b"EHLO [IPv6:2001:db8::1]",
                false,
                Ok(Command::Ehlo("[IPv6:2001:db8::1]".into())),
            ),
            (
                b"EHLO  spaced.example  ",
                false,
                Ok(Command::Ehlo("spaced.example".into())),
            ),
            (
                b"EHLO",
                false,
                Err(syn("EHLO/HELO requires a domain or address literal")),
            ),
            (
                b"EHLO ",
                false,
                Err(syn("EHLO/HELO requires a domain or address literal")),
            ),
            (
                b"EHLO a b",
                false,
                Err(syn("EHLO/HELO takes one domain or address literal")),
            ),
            (
                b"EHLO [1.2.3.999]",
                false,
                Err(syn("invalid address literal in EHLO/HELO")),
            ),
            (b"EHLO a..b", false, Err(syn("invalid domain in EHLO/HELO"))),
            (
                b"EHLO <script>",
                false,
                Err(syn("invalid domain in EHLO/HELO")),
            ),
            (b"EHLO a(b)", false, Err(syn("invalid domain in EHLO/HELO"))),
            (
                b"HELO x\tX-Injected:1",
                false,
                Err(syn("invalid domain in EHLO/HELO")),
            ),
            // MAIL.
            (
                b"MAIL FROM:<a@b.example>",
                false,
                Ok(mail("a@b.example", MailParams::default())),
            ),
            (
                b"mail from:<a@B.EXAMPLE>",
                false,
                Ok(mail("a@b.example", MailParams::default())),
            ),
            (
                b"MAIL FROM: <a@b.example>",
                false,
                Ok(mail("a@b.example", MailParams::default())),
            ),
            (
                b"MAIL FROM:  <a@b.example>  ",
                false,
                Ok(mail("a@b.example", MailParams::default())),
            ),
            (b"MAIL FROM:<>", false, Ok(mail("", MailParams::default()))),
            (
                b"MAIL FROM:<@relay:a@b>",
                false,
                Ok(mail("a@b", MailParams::default())),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        size: Some(1000),
                        body: Some(BodyType::EightBitMime),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> size=18446744073709551615 body=binarymime",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        size: Some(u64::MAX),
                        body: Some(BodyType::BinaryMime),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> BODY=7bit",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        body: Some(BodyType::SevenBit),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=18446744073709551616",
                false,
                Err(syn("SIZE too large")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=99999999999999999999999",
                false,
                Err(syn("SIZE too large")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=-1",
                false,
                Err(syn("SIZE must be a number")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=1k",
                false,
                Err(syn("SIZE must be a number")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE",
                false,
                Err(syn("SIZE requires a value")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=",
                false,
                Err(syn("invalid parameter value")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=1 SIZE=2",
                false,
                Err(syn("duplicate parameter")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=1 size=1",
                false,
                Err(syn("duplicate parameter")),
            ),
            (
                b"MAIL FROM:<a@b> BODY=9BIT",
                false,
                Err(syn("BODY must be 7BIT, 8BITMIME or BINARYMIME")),
            ),
            (
                b"MAIL FROM:<a@b> SMTPUTF8",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        smtputf8: true,
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> SMTPUTF8=yes",
                false,
                Err(syn("SMTPUTF8 takes no value")),
            ),
            (
                b"MAIL FROM:<a@b> RET=hdrs",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        ret: Some(Ret::Headers),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> RET=FULL",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        ret: Some(Ret::Full),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> RET=ALL",
                false,
                Err(syn("RET must be FULL or HDRS")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=QQ+2B+3Dx+20y",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        envid: EnvId::parse("QQ+=x y").ok(),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a+2",
                false,
                Err(syn("truncated xtext escape")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a+ZZ",
                false,
                Err(syn("invalid xtext escape")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a+0D+0A",
                false,
                Err(syn("control character in xtext")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a+C3+A9",
                false,
                Err(syn("ENVID must be ASCII")),
            ),
            (
                b"MAIL FROM:<a@b> ENVID=a=b",
                false,
                Err(syn("invalid parameter value")),
            ),
            (
                b"MAIL FROM:<a@b> AUTH=<>",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        auth: Some("<>".into()),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> AUTH=user+2Btag@example.com",
                false,
                Ok(mail(
                    "a@b",
                    MailParams {
                        auth: Some("user+tag@example.com".into()),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"MAIL FROM:<a@b> AUTH=a+FF",
                false,
                Err(syn("xtext is not valid UTF-8")),
            ),
            (
                b"MAIL FROM:<a@b> NOTIFY=NEVER",
                false,
                Err(E::UnknownParameter("NOTIFY".into())),
            ),
            (
                b"MAIL FROM:<a@b> X-Foo=bar",
                false,
                Err(E::UnknownParameter("X-FOO".into())),
            ),
            (
                b"MAIL FROM:<a@b> -x",
                false,
                Err(syn("invalid parameter keyword")),
            ),
            (
                b"MAIL FROM:<a@b> =x",
                false,
                Err(syn("invalid parameter keyword")),
            ),
            (
                b"MAIL FROM:<a@b>SIZE=1",
                false,
                Err(syn("expected a space after the address")),
            ),
            (
                b"MAIL FROM:a@b",
                false,
                Err(E::BadSender(AddressError::Syntax("path must start with <"))),
            ),
            (
                b"MAIL FROM:<a@b",
                false,
                Err(E::BadSender(AddressError::Syntax("missing >"))),
            ),
            (
                b"MAIL FROM:<user@local.>",
                false,
                Err(E::BadSender(AddressError::Syntax("trailing dot in domain"))),
            ),
            (
                b"MAIL TO:<a@b>",
                false,
                Err(syn("MAIL requires FROM:<address>")),
            ),
            (
                b"MAIL FROM <a@b>",
                false,
                Err(syn("MAIL requires FROM:<address>")),
            ),
            (b"MAIL", false, Err(syn("MAIL requires FROM:<address>"))),
            (
                b"MAIL FROM:",
                false,
                Err(E::BadSender(AddressError::Syntax("path must start with <"))),
            ),
            // UTF-8 senders need SMTPUTF8 on the same line.
            (
                "MAIL FROM:<j\u{f6}rg@b\u{fc}cher.example> SMTPUTF8".as_bytes(),
                false,
                Ok(mail(
                    "j\u{f6}rg@b\u{fc}cher.example",
                    MailParams {
                        smtputf8: true,
                        ..Default::default()
                    },
                )),
            ),
            (
                "MAIL FROM:<j\u{f6}rg@x>".as_bytes(),
                true,
                Err(E::BadSender(AddressError::Utf8NotAllowed)),
            ),
            (
                b"MAIL FROM:<j\xc3@x> SMTPUTF8",
                false,
                Err(syn("invalid UTF-8 in arguments")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=\xc3\xa9",
                false,
                Err(syn("invalid parameter value")),
            ),
            // RCPT.
            (
                b"RCPT TO:<c@d.example>",
                false,
                Ok(rcpt("c@d.example", RcptParams::default())),
            ),
            (
                b"rcpt to: <c@d.example>",
                false,
                Ok(rcpt("c@d.example", RcptParams::default())),
            ),
            (
                b"RCPT TO:<Postmaster>",
                false,
                Ok(rcpt("", RcptParams::default())),
            ),
            (
                b"RCPT TO:<postmaster@d.example>",
                false,
                Ok(rcpt("postmaster@d.example", RcptParams::default())),
            ),
            (
                b"RCPT TO:<\"user@remote\"@local>",
                false,
                Ok(rcpt("\"user@remote\"@local", RcptParams::default())),
            ),
            (
                b"RCPT TO:<user%remote@local>",
                false,
                Ok(rcpt("user%remote@local", RcptParams::default())),
            ),
            (
                b"RCPT TO:<@local:user@remote>",
                false,
                Ok(rcpt("user@remote", RcptParams::default())),
            ),
            (
                b"RCPT TO:<user@remote@local>",
                false,
                Err(E::BadRecipient(AddressError::Syntax(
                    "invalid character in domain",
                ))),
            ),
            (
                b"RCPT TO:<>",
                false,
                Err(E::BadRecipient(AddressError::Syntax("empty forward path"))),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=NEVER",
                false,
                Ok(rcpt(
                    "c@d",
                    RcptParams {
                        notify: Some(Notify::Never),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=success,DELAY",
                false,
                Ok(rcpt(
                    "c@d",
                    RcptParams {
                        notify: on(true, false, true),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=FAILURE",
                false,
                Ok(rcpt(
                    "c@d",
                    RcptParams {
                        notify: on(false, true, false),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=NEVER,SUCCESS",
                false,
                Err(syn("NOTIFY=NEVER cannot be combined")),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=SUCCESS,NEVER",
                false,
                Err(syn("NOTIFY=NEVER cannot be combined")),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=SUCCESS,",
                false,
                Err(syn("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=SOMETIMES",
                false,
                Err(syn("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")),
            ),
            (
                b"RCPT TO:<c@d> ORCPT=rfc822;c+2Bx@d",
                false,
                Ok(rcpt(
                    "c@d",
                    RcptParams {
                        orcpt: Some(Orcpt {
                            addr_type: "rfc822".into(),
                            address: "c+x@d".into(),
                        }),
                        ..Default::default()
                    },
                )),
            ),
            (
                b"RCPT TO:<c@d> ORCPT=c@d",
                false,
                Err(syn("ORCPT must be addr-type;address")),
            ),
            (
                b"RCPT TO:<c@d> ORCPT=rfc822;",
                false,
                Err(syn("empty ORCPT address")),
            ),
            (
                b"RCPT TO:<c@d> ORCPT=;c@d",
                false,
                Err(syn("invalid ORCPT address type")),
            ),
            (
                b"RCPT TO:<c@d> NOTIFY=NEVER NOTIFY=NEVER",
                false,
                Err(syn("duplicate parameter")),
            ),
            (
                b"RCPT TO:<c@d> SIZE=10",
                false,
                Err(E::UnknownParameter("SIZE".into())),
            ),
            (
                b"RCPT FROM:<c@d>",
                false,
                Err(syn("RCPT requires TO:<address>")),
            ),
            (b"RCPT", false, Err(syn("RCPT requires TO:<address>"))),
            // UTF-8 recipients follow the transaction.
            (
                "RCPT TO:<\u{7528}@x>".as_bytes(),
                true,
                Ok(rcpt("\u{7528}@x", RcptParams::default())),
            ),
            (
                "RCPT TO:<\u{7528}@x>".as_bytes(),
                false,
                Err(E::BadRecipient(AddressError::Utf8NotAllowed)),
            ),
            // Argument-less commands.
            (b"DATA", false, Ok(Command::Data)),
            (b"data   ", false, Ok(Command::Data)),
            (
                b"DATA x",
                false,
                Err(syn("this command takes no arguments")),
            ),
            (b"RSET", false, Ok(Command::Rset)),
            (
                b"RSET now",
                false,
                Err(syn("this command takes no arguments")),
            ),
            (b"QUIT", false, Ok(Command::Quit)),
            (
                b"quit please",
                false,
                Err(syn("this command takes no arguments")),
            ),
            (b"STARTTLS", false, Ok(Command::StartTls)),
            (
                b"StartTLS x",
                false,
                Err(syn("this command takes no arguments")),
            ),
            (b"NOOP", false, Ok(Command::Noop)),
            (b"NOOP anything at all", false, Ok(Command::Noop)),
            (b"HELP", false, Ok(Command::Help(None))),
            (b"HELP MAIL", false, Ok(Command::Help(Some("MAIL".into())))),
            (b"VRFY alice", false, Ok(Command::Vrfy("alice".into()))),
            (b"VRFY", false, Err(syn("VRFY requires an argument"))),
            (
                b"EXPN staff list",
                false,
                Ok(Command::Expn("staff list".into())),
            ),
            (b"EXPN", false, Err(syn("EXPN requires an argument"))),
            // BDAT.
            (
                b"BDAT 1000",
                false,
                Ok(Command::Bdat {
                    size: 1000,
                    last: false,
                }),
            ),
            (
                b"BDAT 0 LAST",
                false,
                Ok(Command::Bdat {
                    size: 0,
                    last: true,
                }),
            ),
            (
                b"bdat 5 last",
                false,
                Ok(Command::Bdat {
                    size: 5,
                    last: true,
                }),
            ),
            (
                b"BDAT 18446744073709551615 LAST",
                false,
                Ok(Command::Bdat {
                    size: u64::MAX,
                    last: true,
                }),
            ),
            (
                b"BDAT 18446744073709551616",
                false,
                Err(syn("BDAT chunk size too large")),
            ),
            (
                b"BDAT 999999999999999999999999999",
                false,
                Err(syn("BDAT chunk size must be a number")),
            ),
            (
                b"BDAT -1",
                false,
                Err(syn("BDAT chunk size must be a number")),
            ),
            (
                b"BDAT 1x",
                false,
                Err(syn("BDAT chunk size must be a number")),
            ),
            (
                b"BDAT LAST",
                false,
                Err(syn("BDAT chunk size must be a number")),
            ),
            (b"BDAT", false, Err(syn("BDAT requires a chunk size"))),
            (
                b"BDAT 1 FIRST",
                false,
                Err(syn("BDAT takes a size and an optional LAST")),
            ),
            (
                b"BDAT 1 LAST x",
                false,
                Err(syn("BDAT takes a size and an optional LAST")),
            ),
            // AUTH.
            (
                b"AUTH PLAIN",
                false,
                Ok(Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: None,
                }),
            ),
            (
                b"auth plain AGFsaWNlAHNlY3JldA==",
                false,
                Ok(Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: Some("AGFsaWNlAHNlY3JldA==".into()),
                }),
            ),
            (
                b"AUTH PLAIN =",
                false,
                Ok(Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial_response: Some("=".into()),
                }),
            ),
            (
                b"AUTH SCRAM-SHA-256",
                false,
                Ok(Command::Auth {
                    mechanism: "SCRAM-SHA-256".into(),
                    initial_response: None,
                }),
            ),
            (b"AUTH", false, Err(syn("AUTH requires a mechanism"))),
            (
                b"AUTH PL@IN",
                false,
                Err(syn("invalid SASL mechanism name")),
            ),
            (
                b"AUTH ABCDEFGHIJKLMNOPQRSTU",
                false,
                Err(syn("invalid SASL mechanism name")),
            ),
            (
                b"AUTH PLAIN a!b",
                false,
                Err(syn("initial response is not base64")),
            ),
            (
                b"AUTH PLAIN a b",
                false,
                Err(syn(
                    "AUTH takes a mechanism and an optional initial response",
                )),
            ),
            // Garbage.
            (b"", false, Err(E::UnknownCommand)),
            (b"   ", false, Err(E::UnknownCommand)),
            (b" MAIL FROM:<a@b>", false, Err(E::UnknownCommand)),
            (b"XYZZY", false, Err(E::UnknownCommand)),
            (b"TURN", false, Err(E::UnknownCommand)),
            (b"MAIL\tFROM:<a@b>", false, Err(E::UnknownCommand)),
            (b"MAIL:FROM:<a@b>", false, Err(E::UnknownCommand)),
            (b"EHL0 x", false, Err(E::UnknownCommand)),
            (b"AVERYVERYLONGVERBINDEED", false, Err(E::UnknownCommand)),
            (b"GET / HTTP/1.1", false, Err(E::UnknownCommand)),
            (
                b"\xc3\xa9HLO x",
                false,
                Err(E::InvalidBytes("8-bit bytes in the verb")),
            ),
            (
                b"EHLO\xff x",
                false,
                Err(E::InvalidBytes("8-bit bytes in the verb")),
            ),
            (b"EHLO x\0", false, Err(E::InvalidBytes("a NUL byte"))),
            (b"\0", false, Err(E::InvalidBytes("a NUL byte"))),
            (
                b"MAIL FROM:<a@b>\r",
                false,
                Err(E::InvalidBytes("a bare CR")),
            ),
            (
                b"DATA\rMAIL FROM:<a@b>",
                false,
                Err(E::InvalidBytes("a bare CR")),
            ),
            (b"RSET\nQUIT", false, Err(E::InvalidBytes("a bare LF"))),
        ];
        for (line, utf8, want) in cases {
            let got = parse_command(line, utf8);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn replies_for_errors() {
        let cases = [
            (CommandError::UnknownCommand, 500, (5, 5, 1)),
            (CommandError::InvalidBytes("a NUL byte"), 500, (5, 5, 2)),
            (CommandError::Syntax("x"), 501, (5, 5, 4)),
            (
                CommandError::BadSender(AddressError::Syntax("x")),
                501,
                (5, 1, 7),
            ),
            (
                CommandError::BadRecipient(AddressError::TooLong("path")),
                501,
                (5, 1, 3),
            ),
            (
                CommandError::BadSender(AddressError::Utf8NotAllowed),
                553,
                (5, 6, 7),
            ),
            (
                CommandError::BadRecipient(AddressError::Utf8NotAllowed),
                553,
                (5, 6, 7),
            ),
            (
                CommandError::UnknownParameter("X-FOO".into()),
                555,
                (5, 5, 4),
            ),
        ];
        for (err, code, (c, s, d)) in cases {
            let r = err.to_reply();
            assert_eq!(r.code, code, "{err:?}");
            assert_eq!(r.status, Some(EnhancedStatus::new(c, s, d)), "{err:?}");
            assert!(!r.is_positive());
            let wire = r.to_bytes();
            assert!(wire.ends_with(b"\r\n"));
            assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
        }
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b> FOO", false)
                .unwrap_err()
                .to_reply()
                .to_bytes(),
            b"555 5.5.4 Unsupported parameter FOO\r\n"
        );
        assert_eq!(
            CommandError::BadSender(AddressError::Utf8NotAllowed).address_error(),
            Some(&AddressError::Utf8NotAllowed)
        );
        assert_eq!(CommandError::UnknownCommand.address_error(), None);
    }

    #[test]
    fn auth_response_never_echoed() {
        let err = parse_command(b"AUTH PLAIN c2VjcmV0!", false).unwrap_err();
        let text = String::from_utf8(err.to_reply().to_bytes()).unwrap();
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }

    #[test]
    fn xtext_round_trip() {
        for s in [&b""[..], b"abc", b"a+b=c", b" \x00\xff~!", b"+++"] {
            let enc = encode_xtext(s);
            assert_eq!(decode_xtext(&enc).unwrap(), s);
        }
        assert_eq!(encode_xtext(b"a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(decode_xtext("a+2b").unwrap(), b"a+");
        assert!(decode_xtext("a b").is_err());
        assert!(decode_xtext("a+").is_err());
        assert!(decode_xtext("a+4").is_err());
        assert!(decode_xtext("a+-1").is_err());
        assert!(decode_xtext("\u{e9}").is_err());
    }

    #[test]
    fn parameter_count_is_bounded() {
        let many: String = (0..32).map(|i| format!(" X{i}")).collect();
        let line = format!("MAIL FROM:<a@b>{many}");
        assert_eq!(
            parse_command(line.as_bytes(), false),
            Err(CommandError::UnknownParameter("X0".into()))
        );
        let line = format!("MAIL FROM:<a@b>{many} X32");
        assert_eq!(
            parse_command(line.as_bytes(), false),
            Err(syn("too many parameters"))
        );
    }

    #[test]
    fn envid_and_orcpt_limits() {
        let ok = format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(100));
        assert!(parse_command(ok.as_bytes(), false).is_ok());
        let long = format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(101));
        assert_eq!(
            parse_command(long.as_bytes(), false),
            Err(syn("ENVID longer than 100 characters"))
        );
        let long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "e".repeat(500));
        assert_eq!(
            parse_command(long.as_bytes(), false),
            Err(syn("ORCPT longer than 500 characters"))
        );
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..200), utf8 in any::<bool>()) {
                let _ = parse_command(&line, utf8).map_err(|e| e.to_reply().to_bytes());
            }

            #[test]
            fn never_panics_on_near_commands(
                verb in "(MAIL FROM:|RCPT TO:|EHLO |BDAT |AUTH |VRFY )",
                rest in "[<>@\\[\\]:.,\"\\\\a-zA-Z0-9 =+;\u{e9}-]{0,60}",
                utf8 in any::<bool>(),
            ) {
                let line = format!("{verb}{rest}");
                if let Ok(cmd) = parse_command(line.as_bytes(), utf8) {
                    match cmd {
                        Command::Mail { from, params } => {
                            let again = format!("MAIL FROM:{from}{}", if params.smtputf8 { " SMTPUTF8" } else { "" });
                            let Ok(Command::Mail { from: f2, .. }) = parse_command(again.as_bytes(), false) else {
                                return Err(TestCaseError::fail(format!("reparse of {again:?}")));
                            };
                            prop_assert_eq!(f2, from);
                        }
                        Command::Rcpt { to, .. } => {
                            let again = format!("RCPT TO:{to}");
                            let Ok(Command::Rcpt { to: t2, .. }) = parse_command(again.as_bytes(), utf8) else {
                                return Err(TestCaseError::fail(format!("reparse of {again:?}")));
                            };
                            prop_assert_eq!(t2, to);
                        }
                        _ => {}
                    }
                }
            }

            #[test]
            fn size_round_trips(n in any::<u64>()) {
                let line = format!("MAIL FROM:<a@b> SIZE={n}");
                let Ok(Command::Mail { params, .. }) = parse_command(line.as_bytes(), false) else {
                    return Err(TestCaseError::fail("SIZE refused"));
                };
                prop_assert_eq!(params.size, Some(n));
                let line = format!("BDAT {n} LAST");
                prop_assert_eq!(parse_command(line.as_bytes(), false), Ok(Command::Bdat { size: n, last: true }));
            }

            #[test]
            fn xtext_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..50)) {
                prop_assert_eq!(decode_xtext(&encode_xtext(&bytes)).unwrap(), bytes);
            }
        }
    }
}
