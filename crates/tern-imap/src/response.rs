//! Typed server responses and their encoder.
//!
//! A [`Response`] is a status line (tagged or untagged OK/NO/BAD, PREAUTH,
//! BYE, with an optional response code), an untagged data line, or a `+`
//! continuation request. [`Response::encode`] writes it with CRLF, choosing
//! for every string the form the grammar allows: an atom where an astring
//! may be one, a quoted string when the octets are short and quotable, and
//! a literal otherwise (8-bit octets for an IMAP4rev1 client, CR or LF,
//! NUL, long strings). Message bodies are always literals, and BINARY
//! content containing NUL a literal8 `~{n}`.
//!
//! FETCH items that borrow their bytes ([`FetchItem::BodySection`],
//! [`FetchItem::Envelope`], ...) let the caller pass message data and
//! ENVELOPE / BODYSTRUCTURE values rendered elsewhere (`tern-mime`) without
//! copying them into an owned response first. Pre-rendered values are
//! written as given: the caller vouches that they are valid IMAP syntax.
//!
//! Free text (the human-readable part of a status) never carries CR, LF
//! or NUL into the output: they are replaced by spaces, so a client-supplied
//! string quoted in a reply cannot inject a line.

use crate::types::{DateTime, Flag, Mailbox, Section, SequenceSet, StatusItem, Tag};

/// Longest string written as a quoted string; longer ones are literals.
pub const MAX_QUOTED: usize = 1024;

/// How to encode: what the client has enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeOptions {
    /// The client enabled IMAP4rev2 or UTF8=ACCEPT: UTF-8 may appear in
    /// quoted strings.
    pub utf8: bool,
}

/// A server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// `tag OK ...`, `* NO ...`, `* BYE ...`
    Status(StatusResponse),
    /// `* ...` data.
    Data(Data<'a>),
    /// `+ ...`
    Continue(Continuation),
}

/// The kind of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// `OK`
    Ok,
    /// `NO`
    No,
    /// `BAD`
    Bad,
    /// `PREAUTH` (greeting only, untagged)
    PreAuth,
    /// `BYE` (untagged)
    Bye,
}

impl StatusKind {
    fn name(self) -> &'static str {
        match self {
            StatusKind::Ok => "OK",
            StatusKind::No => "NO",
            StatusKind::Bad => "BAD",
            StatusKind::PreAuth => "PREAUTH",
            StatusKind::Bye => "BYE",
        }
    }
}

/// A status response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    /// `None` for `*`.
    pub tag: Option<Tag>,
    /// OK, NO, BAD, PREAUTH or BYE.
    pub kind: StatusKind,
    /// The bracketed response code.
    pub code: Option<Code>,
    /// Human-readable text.
    pub text: String,
}

impl StatusResponse {
    /// A tagged status.
    pub fn tagged(tag: Tag, kind: StatusKind, code: Option<Code>, text: impl Into<String>) -> Self {
        StatusResponse {
            tag: Some(tag),
            kind,
            code,
            text: text.into(),
        }
    }

    /// An untagged status.
    pub fn untagged(kind: StatusKind, code: Option<Code>, text: impl Into<String>) -> Self {
        StatusResponse {
            tag: None,
            kind,
            code,
            text: text.into(),
        }
    }
}

/// A response code (RFC 9051 §7.1 and extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// `ALERT`
    Alert,
    /// `ALREADYEXISTS`
    AlreadyExists,
    /// `APPENDUID uidvalidity uids` (UIDPLUS)
    AppendUid {
        /// UIDVALIDITY of the target.
        uid_validity: u32,
        /// Assigned UIDs.
        uids: SequenceSet,
    },
    /// `AUTHENTICATIONFAILED`
    AuthenticationFailed,
    /// `AUTHORIZATIONFAILED`
    AuthorizationFailed,
    /// `BADCHARSET (charsets)`
    BadCharset(Vec<String>),
    /// `CANNOT`
    Cannot,
    /// `CAPABILITY caps`
    Capability(Vec<String>),
    /// `CLIENTBUG`
    ClientBug,
    /// `CLOSED` (QRESYNC)
    Closed,
    /// `COMPRESSIONACTIVE` (RFC 4978)
    CompressionActive,
    /// `CONTACTADMIN`
    ContactAdmin,
    /// `COPYUID uidvalidity source-uids dest-uids` (UIDPLUS)
    CopyUid {
        /// UIDVALIDITY of the target.
        uid_validity: u32,
        /// Source UIDs.
        source: SequenceSet,
        /// Assigned UIDs, in the same order.
        dest: SequenceSet,
    },
    /// `CORRUPTION`
    Corruption,
    /// `EXPIRED`
    Expired,
    /// `EXPUNGEISSUED`
    ExpungeIssued,
    /// `HASCHILDREN`
    HasChildren,
    /// `HIGHESTMODSEQ n` (CONDSTORE)
    HighestModSeq(u64),
    /// `INUSE`
    InUse,
    /// `LIMIT`
    Limit,
    /// `MAILBOXID (id)` (OBJECTID)
    MailboxId(String),
    /// `MODIFIED set` (CONDSTORE)
    Modified(SequenceSet),
    /// `NOMODSEQ` (CONDSTORE)
    NoModSeq,
    /// `NONEXISTENT`
    NonExistent,
    /// `NOPERM`
    NoPerm,
    /// `OVERQUOTA`
    OverQuota,
    /// `PARSE`
    Parse,
    /// `PERMANENTFLAGS (flags [\*])`
    PermanentFlags {
        /// Flags that can be changed permanently.
        flags: Vec<Flag>,
        /// `\*`: new keywords can be created.
        keywords: bool,
    },
    /// `PRIVACYREQUIRED`
    PrivacyRequired,
    /// `READ-ONLY`
    ReadOnly,
    /// `READ-WRITE`
    ReadWrite,
    /// `SERVERBUG`
    ServerBug,
    /// `TOOBIG` (RFC 7889 / RFC 9051)
    TooBig,
    /// `TRYCREATE`
    TryCreate,
    /// `UIDNEXT n`
    UidNext(u32),
    /// `UIDNOTSTICKY`
    UidNotSticky,
    /// `UIDVALIDITY n`
    UidValidity(u32),
    /// `UNAVAILABLE`
    Unavailable,
    /// `UNSEEN n` (IMAP4rev1)
    Unseen(u32),
    /// `USEATTR` (CREATE-SPECIAL-USE)
    UseAttr,
}

/// A continuation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// `+ text` (for literals and IDLE).
    Text(String),
    /// `+ base64` (a SASL challenge; empty gives `+ `).
    Base64(Vec<u8>),
}

/// One LIST or LSUB line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListData {
    /// Attributes with their backslash (`\HasNoChildren`, `\Sent`).
    pub attributes: Vec<String>,
    /// Hierarchy delimiter; `None` for NIL.
    pub delimiter: Option<char>,
    /// The name, already in the client's form (UTF-8 or modified UTF-7).
    pub mailbox: Mailbox,
    /// `CHILDINFO ("SUBSCRIBED")` extended data (LIST-EXTENDED).
    pub child_info: Vec<String>,
    /// `OLDNAME ("old")` extended data (IMAP4rev2 RENAME).
    pub old_name: Option<Mailbox>,
}

/// A STATUS item's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusValue {
    /// A number.
    Number(u64),
    /// NIL (APPENDLIMIT without a limit).
    Nil,
    /// An object id (`MAILBOXID (id)`).
    ObjectId(String),
}

/// One namespace (RFC 2342).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceDesc {
    /// Prefix (`""`, `"Other Users/"`).
    pub prefix: Vec<u8>,
    /// Hierarchy delimiter.
    pub delimiter: Option<char>,
}

/// One resource of a QUOTA line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaResource {
    /// `STORAGE` (KiB), `MESSAGE`, ...
    pub name: String,
    /// Current usage.
    pub usage: u64,
    /// Limit.
    pub limit: u64,
}

/// A THREAD result (RFC 5256) as an arena: no recursion to build, encode
/// or drop it, however long the reply chains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreadForest {
    /// Every node; children refer to others by index.
    pub nodes: Vec<ThreadNode>,
    /// Indices of the top-level threads, in order.
    pub roots: Vec<usize>,
}

/// A message in a thread and its replies. A node with `id: None` stands
/// for a missing parent (only meaningful as a root): its children are
/// siblings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNode {
    /// Message number or UID; `None` for a dummy parent.
    pub id: Option<u32>,
    /// Indices (into [`ThreadForest::nodes`]) of the replies, in order.
    pub children: Vec<usize>,
}

/// ESEARCH result (RFC 4731).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ESearch {
    /// The tag of the SEARCH command.
    pub tag: Option<Tag>,
    /// Numbers are UIDs.
    pub uid: bool,
    /// `MIN`
    pub min: Option<u32>,
    /// `MAX`
    pub max: Option<u32>,
    /// `ALL`
    pub all: Option<SequenceSet>,
    /// `COUNT`
    pub count: Option<u32>,
    /// `MODSEQ` (CONDSTORE)
    pub modseq: Option<u64>,
}

/// Untagged data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// `* CAPABILITY ...`
    Capability(Vec<String>),
    /// `* LIST ...`
    List(ListData),
    /// `* LSUB ...`
    Lsub(ListData),
    /// `* STATUS mailbox (...)`
    Status {
        /// The mailbox, in the client's form.
        mailbox: Mailbox,
        /// Items and values.
        items: Vec<(StatusItem, StatusValue)>,
    },
    /// `* ESEARCH ...`
    ESearch(ESearch),
    /// `* SEARCH n... [(MODSEQ m)]`
    Search {
        /// Matching numbers.
        ids: Vec<u32>,
        /// Highest mod-sequence of the matches (CONDSTORE).
        modseq: Option<u64>,
    },
    /// `* SORT n...`
    Sort {
        /// Numbers in sorted order.
        ids: Vec<u32>,
        /// Highest mod-sequence (CONDSTORE).
        modseq: Option<u64>,
    },
    /// `* THREAD (...)...`
    Thread(ThreadForest),
    /// `* FLAGS (...)`
    Flags(Vec<Flag>),
    /// `* n EXISTS`
    Exists(u32),
    /// `* n RECENT` (IMAP4rev1)
    Recent(u32),
    /// `* n EXPUNGE`
    Expunge(u32),
    /// `* VANISHED [(EARLIER)] uids` (QRESYNC)
    Vanished {
        /// `(EARLIER)`
        earlier: bool,
        /// The UIDs.
        uids: SequenceSet,
    },
    /// `* n FETCH (...)`
    Fetch {
        /// Message sequence number.
        seq: u32,
        /// Items.
        items: Vec<FetchItem<'a>>,
    },
    /// `* ENABLED ...`
    Enabled(Vec<String>),
    /// `* ID (...)` or `* ID NIL`
    Id(Option<Vec<(String, Option<String>)>>),
    /// `* NAMESPACE personal other shared`
    Namespace {
        /// Personal namespaces.
        personal: Vec<NamespaceDesc>,
        /// Other users' namespaces.
        other: Vec<NamespaceDesc>,
        /// Shared namespaces.
        shared: Vec<NamespaceDesc>,
    },
    /// `* QUOTA root (...)`
    Quota {
        /// Quota root.
        root: Vec<u8>,
        /// Resources.
        resources: Vec<QuotaResource>,
    },
    /// `* QUOTAROOT mailbox root...`
    QuotaRoot {
        /// The mailbox.
        mailbox: Mailbox,
        /// Its quota roots.
        roots: Vec<Vec<u8>>,
    },
}

/// One FETCH data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem<'a> {
    /// `FLAGS (...)`; `recent` adds `\Recent` (IMAP4rev1).
    Flags {
        /// The flags (borrowed: a server can keep one list per
        /// combination of system flags instead of making one per message).
        flags: std::borrow::Cow<'a, [Flag]>,
        /// Include `\Recent`.
        recent: bool,
    },
    /// `UID n`
    Uid(u32),
    /// `INTERNALDATE "..."`
    InternalDate(DateTime),
    /// `RFC822.SIZE n`
    Rfc822Size(u64),
    /// `MODSEQ (n)`
    ModSeq(u64),
    /// `SAVEDATE "..."` or NIL
    SaveDate(Option<DateTime>),
    /// `EMAILID (id)`
    EmailId(String),
    /// `THREADID (id)` or NIL
    ThreadId(Option<String>),
    /// `ENVELOPE (...)`: pre-rendered, valid IMAP syntax, parentheses included.
    Envelope(&'a [u8]),
    /// `BODYSTRUCTURE (...)`: pre-rendered.
    BodyStructure(&'a [u8]),
    /// `BODY (...)` (structure without extensions): pre-rendered.
    Body(&'a [u8]),
    /// `BODY[section]<origin> data`
    BodySection {
        /// The section asked for.
        section: Section,
        /// The partial's offset, when a partial was asked for.
        origin: Option<u32>,
        /// The octets; `None` for NIL.
        data: Option<&'a [u8]>,
    },
    /// `BINARY[part]<origin> data`
    Binary {
        /// Part numbers.
        part: Vec<u32>,
        /// The partial's offset.
        origin: Option<u32>,
        /// Decoded octets; `None` for NIL.
        data: Option<&'a [u8]>,
    },
    /// `BINARY.SIZE[part] n`
    BinarySize {
        /// Part numbers.
        part: Vec<u32>,
        /// Decoded size.
        size: u64,
    },
    /// `RFC822 data` (IMAP4rev1)
    Rfc822(Option<&'a [u8]>),
    /// `RFC822.HEADER data`
    Rfc822Header(Option<&'a [u8]>),
    /// `RFC822.TEXT data`
    Rfc822Text(Option<&'a [u8]>),
}

// ---- primitive writers -------------------------------------------------

/// A number in decimal, without allocating (a FETCH of every message of
/// a big mailbox writes hundreds of thousands of them).
fn push_num(out: &mut Vec<u8>, n: impl Number) {
    let mut n = n.into_u64();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The unsigned numbers responses carry.
trait Number {
    fn into_u64(self) -> u64;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            fn into_u64(self) -> u64 {
                self as u64
            }
        }
        impl Number for &$t {
            fn into_u64(self) -> u64 {
                *self as u64
            }
        }
    )*};
}

number!(u32, u64, usize);

/// A flag as IMAP writes it (`\Seen`, `$Junk`), without allocating.
fn push_flag(out: &mut Vec<u8>, f: &Flag) {
    match f {
        Flag::Answered => out.extend_from_slice(b"\\Answered"),
        Flag::Flagged => out.extend_from_slice(b"\\Flagged"),
        Flag::Deleted => out.extend_from_slice(b"\\Deleted"),
        Flag::Seen => out.extend_from_slice(b"\\Seen"),
        Flag::Draft => out.extend_from_slice(b"\\Draft"),
        Flag::Keyword(a) => out.extend_from_slice(a.as_str().as_bytes()),
        Flag::Extension(a) => {
            out.push(b'\\');
            out.extend_from_slice(a.as_str().as_bytes());
        }
    }
}

fn quotable(s: &[u8], opts: EncodeOptions) -> bool {
    s.len() <= MAX_QUOTED
        && !s.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
        && (s.is_ascii() || (opts.utf8 && std::str::from_utf8(s).is_ok()))
}

fn write_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn write_literal(out: &mut Vec<u8>, s: &[u8], binary: bool) {
    if binary {
        out.push(b'~');
    }
    out.push(b'{');
    push_num(out, s.len());
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

/// `string`: quoted when possible, else a literal.
pub fn write_string(out: &mut Vec<u8>, s: &[u8], opts: EncodeOptions) {
    if quotable(s, opts) {
        write_quoted(out, s);
    } else {
        write_literal(out, s, false);
    }
}

/// `astring`: an atom when the octets form one (and are not `NIL`), else a
/// string.
pub fn write_astring(out: &mut Vec<u8>, s: &[u8], opts: EncodeOptions) {
    if !s.is_empty()
        && s.iter().all(|&b| crate::parse::is_astring_char(b))
        && !s.eq_ignore_ascii_case(b"NIL")
    {
        out.extend_from_slice(s);
    } else {
        write_string(out, s, opts);
    }
}

/// `nstring`: NIL or a string.
pub fn write_nstring(out: &mut Vec<u8>, s: Option<&[u8]>, opts: EncodeOptions) {
    match s {
        None => out.extend_from_slice(b"NIL"),
        Some(s) => write_string(out, s, opts),
    }
}

/// Message data: always a literal (a literal8 when `binary` and NUL occurs).
fn write_body(out: &mut Vec<u8>, s: Option<&[u8]>, binary: bool) {
    match s {
        None => out.extend_from_slice(b"NIL"),
        Some(s) => write_literal(out, s, binary && s.contains(&0)),
    }
}

fn write_mailbox(out: &mut Vec<u8>, m: &Mailbox, opts: EncodeOptions) {
    // A mailbox that is all atom characters goes bare, except that names
    // that could be read as another token are quoted.
    write_astring(out, m.as_bytes(), opts);
}

fn write_delimiter(out: &mut Vec<u8>, d: Option<char>) {
    match d {
        None => out.extend_from_slice(b"NIL"),
        Some(c) => {
            let mut buf = [0u8; 4];
            write_quoted(out, c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Human text: at least one character, no CR, LF or NUL, and no `[` at the
/// start where a response code could be read.
fn write_text(out: &mut Vec<u8>, text: &str, fallback: &str) {
    let t = if text.is_empty() { fallback } else { text };
    for (i, &b) in t.as_bytes().iter().enumerate() {
        out.push(match b {
            0 | b'\r' | b'\n' => b' ',
            b'[' if i == 0 => b' ',
            _ => b,
        });
    }
}

fn write_seq(out: &mut Vec<u8>, s: &SequenceSet) {
    out.extend_from_slice(s.to_string().as_bytes());
}

fn write_list<T>(out: &mut Vec<u8>, items: &[T], mut f: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'(');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        f(out, it);
    }
    out.push(b')');
}

fn write_flags(out: &mut Vec<u8>, flags: &[Flag], extra: &[&str]) {
    out.push(b'(');
    let mut first = true;
    for f in flags {
        if !first {
            out.push(b' ');
        }
        first = false;
        push_flag(out, f);
    }
    for e in extra {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(e.as_bytes());
    }
    out.push(b')');
}

fn write_date_time(out: &mut Vec<u8>, d: &DateTime) {
    out.push(b'"');
    out.extend_from_slice(d.to_string().as_bytes());
    out.push(b'"');
}

fn write_part(out: &mut Vec<u8>, part: &[u32]) {
    out.push(b'[');
    for (i, p) in part.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_num(out, p);
    }
    out.push(b']');
}

/// Capability-like tokens: only atom characters survive (a bad entry
/// cannot break the line).
fn write_atoms(out: &mut Vec<u8>, atoms: &[String]) {
    for a in atoms {
        out.push(b' ');
        out.extend(
            a.bytes()
                .filter(|&b| crate::parse::is_atom_char(b) || b == b'\\'),
        );
    }
}

impl Code {
    fn write(&self, out: &mut Vec<u8>) {
        let simple = |out: &mut Vec<u8>, s: &str| out.extend_from_slice(s.as_bytes());
        match self {
            Code::Alert => simple(out, "ALERT"),
            Code::AlreadyExists => simple(out, "ALREADYEXISTS"),
            Code::AppendUid { uid_validity, uids } => {
                simple(out, "APPENDUID ");
                push_num(out, uid_validity);
                out.push(b' ');
                write_seq(out, uids);
            }
            Code::AuthenticationFailed => simple(out, "AUTHENTICATIONFAILED"),
            Code::AuthorizationFailed => simple(out, "AUTHORIZATIONFAILED"),
            Code::BadCharset(cs) => {
                simple(out, "BADCHARSET");
                if !cs.is_empty() {
                    out.push(b' ');
                    write_list(out, cs, |out, c| {
                        write_astring(out, c.as_bytes(), EncodeOptions::default())
                    });
                }
            }
            Code::Cannot => simple(out, "CANNOT"),
            Code::Capability(caps) => {
                simple(out, "CAPABILITY");
                write_atoms(out, caps);
            }
            Code::ClientBug => simple(out, "CLIENTBUG"),
            Code::Closed => simple(out, "CLOSED"),
            Code::CompressionActive => simple(out, "COMPRESSIONACTIVE"),
            Code::ContactAdmin => simple(out, "CONTACTADMIN"),
            Code::CopyUid {
                uid_validity,
                source,
                dest,
            } => {
                simple(out, "COPYUID ");
                push_num(out, uid_validity);
                out.push(b' ');
                write_seq(out, source);
                out.push(b' ');
                write_seq(out, dest);
            }
            Code::Corruption => simple(out, "CORRUPTION"),
            Code::Expired => simple(out, "EXPIRED"),
            Code::ExpungeIssued => simple(out, "EXPUNGEISSUED"),
            Code::HasChildren => simple(out, "HASCHILDREN"),
            Code::HighestModSeq(n) => {
                simple(out, "HIGHESTMODSEQ ");
                push_num(out, n);
            }
            Code::InUse => simple(out, "INUSE"),
            Code::Limit => simple(out, "LIMIT"),
            Code::MailboxId(id) => {
                simple(out, "MAILBOXID (");
                simple(out, id);
                out.push(b')');
            }
            Code::Modified(set) => {
                simple(out, "MODIFIED ");
                write_seq(out, set);
            }
            Code::NoModSeq => simple(out, "NOMODSEQ"),
            Code::NonExistent => simple(out, "NONEXISTENT"),
            Code::NoPerm => simple(out, "NOPERM"),
            Code::OverQuota => simple(out, "OVERQUOTA"),
            Code::Parse => simple(out, "PARSE"),
            Code::PermanentFlags { flags, keywords } => {
                simple(out, "PERMANENTFLAGS ");
                write_flags(out, flags, if *keywords { &["\\*"] } else { &[] });
            }
            Code::PrivacyRequired => simple(out, "PRIVACYREQUIRED"),
            Code::ReadOnly => simple(out, "READ-ONLY"),
            Code::ReadWrite => simple(out, "READ-WRITE"),
            Code::ServerBug => simple(out, "SERVERBUG"),
            Code::TooBig => simple(out, "TOOBIG"),
            Code::TryCreate => simple(out, "TRYCREATE"),
            Code::UidNext(n) => {
                simple(out, "UIDNEXT ");
                push_num(out, n);
            }
            Code::UidNotSticky => simple(out, "UIDNOTSTICKY"),
            Code::UidValidity(n) => {
                simple(out, "UIDVALIDITY ");
                push_num(out, n);
            }
            Code::Unavailable => simple(out, "UNAVAILABLE"),
            Code::Unseen(n) => {
                simple(out, "UNSEEN ");
                push_num(out, n);
            }
            Code::UseAttr => simple(out, "USEATTR"),
        }
    }
}

fn write_thread(out: &mut Vec<u8>, forest: &ThreadForest, root: usize, seen: &mut [bool]) {
    // An explicit stack, and each node written at most once: reply chains
    // can be as long as the mailbox, and a malformed forest (a cycle, an
    // index out of range) must not hang or panic the encoder.
    enum Step {
        Members(usize),
        Raw(&'static [u8]),
    }
    if root >= forest.nodes.len() || seen[root] {
        return;
    }
    let mut stack = vec![Step::Raw(b")"), Step::Members(root)];
    out.push(b'(');
    while let Some(step) = stack.pop() {
        match step {
            Step::Raw(r) => out.extend_from_slice(r),
            Step::Members(i) => {
                let Some(n) = forest.nodes.get(i) else {
                    continue;
                };
                if std::mem::replace(&mut seen[i], true) {
                    continue;
                }
                let has_id = n.id.is_some();
                if let Some(id) = n.id {
                    push_num(out, id);
                }
                let children: Vec<usize> = n
                    .children
                    .iter()
                    .copied()
                    .filter(|&c| c < forest.nodes.len() && !seen[c])
                    .collect();
                match children.len() {
                    0 => {}
                    1 => {
                        if has_id {
                            out.push(b' ');
                        }
                        stack.push(Step::Members(children[0]));
                    }
                    _ => {
                        if has_id {
                            out.push(b' ');
                        }
                        for &c in children.iter().rev() {
                            stack.push(Step::Raw(b")"));
                            stack.push(Step::Members(c));
                            stack.push(Step::Raw(b"("));
                        }
                    }
                }
            }
        }
    }
}

impl FetchItem<'_> {
    fn write(&self, out: &mut Vec<u8>, opts: EncodeOptions) {
        match self {
            FetchItem::Flags { flags, recent } => {
                out.extend_from_slice(b"FLAGS ");
                write_flags(out, flags, if *recent { &["\\Recent"] } else { &[] });
            }
            FetchItem::Uid(u) => {
                out.extend_from_slice(b"UID ");
                push_num(out, u);
            }
            FetchItem::InternalDate(d) => {
                out.extend_from_slice(b"INTERNALDATE ");
                write_date_time(out, d);
            }
            FetchItem::Rfc822Size(n) => {
                out.extend_from_slice(b"RFC822.SIZE ");
                push_num(out, n);
            }
            FetchItem::ModSeq(n) => {
                out.extend_from_slice(b"MODSEQ (");
                push_num(out, n);
                out.push(b')');
            }
            FetchItem::SaveDate(d) => {
                out.extend_from_slice(b"SAVEDATE ");
                match d {
                    Some(d) => write_date_time(out, d),
                    None => out.extend_from_slice(b"NIL"),
                }
            }
            FetchItem::EmailId(id) => {
                out.extend_from_slice(b"EMAILID (");
                out.extend_from_slice(id.as_bytes());
                out.push(b')');
            }
            FetchItem::ThreadId(id) => {
                out.extend_from_slice(b"THREADID ");
                match id {
                    Some(id) => {
                        out.push(b'(');
                        out.extend_from_slice(id.as_bytes());
                        out.push(b')');
                    }
                    None => out.extend_from_slice(b"NIL"),
                }
            }
            FetchItem::Envelope(raw) => {
                out.extend_from_slice(b"ENVELOPE ");
                out.extend_from_slice(raw);
            }
            FetchItem::BodyStructure(raw) => {
                out.extend_from_slice(b"BODYSTRUCTURE ");
                out.extend_from_slice(raw);
            }
            FetchItem::Body(raw) => {
                out.extend_from_slice(b"BODY ");
                out.extend_from_slice(raw);
            }
            FetchItem::BodySection {
                section,
                origin,
                data,
            } => {
                out.extend_from_slice(b"BODY[");
                out.extend_from_slice(section.to_string().as_bytes());
                out.push(b']');
                if let Some(o) = origin {
                    out.push(b'<');
                    push_num(out, o);
                    out.push(b'>');
                }
                out.push(b' ');
                write_body(out, *data, false);
            }
            FetchItem::Binary { part, origin, data } => {
                out.extend_from_slice(b"BINARY");
                write_part(out, part);
                if let Some(o) = origin {
                    out.push(b'<');
                    push_num(out, o);
                    out.push(b'>');
                }
                out.push(b' ');
                write_body(out, *data, true);
            }
            FetchItem::BinarySize { part, size } => {
                out.extend_from_slice(b"BINARY.SIZE");
                write_part(out, part);
                out.push(b' ');
                push_num(out, size);
            }
            FetchItem::Rfc822(d) => {
                out.extend_from_slice(b"RFC822 ");
                write_body(out, *d, false);
            }
            FetchItem::Rfc822Header(d) => {
                out.extend_from_slice(b"RFC822.HEADER ");
                write_body(out, *d, false);
            }
            FetchItem::Rfc822Text(d) => {
                out.extend_from_slice(b"RFC822.TEXT ");
                write_body(out, *d, false);
            }
        }
        let _ = opts;
    }
}

fn write_list_data(out: &mut Vec<u8>, l: &ListData, opts: EncodeOptions) {
    write_list(out, &l.attributes, |out, a| {
        out.extend(
            a.bytes()
                .filter(|&b| crate::parse::is_atom_char(b) || b == b'\\'),
        )
    });
    out.push(b' ');
    write_delimiter(out, l.delimiter);
    out.push(b' ');
    write_mailbox(out, &l.mailbox, opts);
    let mut ext: Vec<Vec<u8>> = Vec::new();
    if !l.child_info.is_empty() {
        let mut e = b"\"CHILDINFO\" ".to_vec();
        write_list(&mut e, &l.child_info, |out, c| {
            write_quoted(out, c.as_bytes())
        });
        ext.push(e);
    }
    if let Some(old) = &l.old_name {
        let mut e = b"\"OLDNAME\" (".to_vec();
        write_string(&mut e, old.as_bytes(), opts);
        e.push(b')');
        ext.push(e);
    }
    if !ext.is_empty() {
        out.push(b' ');
        write_list(out, &ext, |out, e| out.extend_from_slice(e));
    }
}

fn write_namespaces(out: &mut Vec<u8>, ns: &[NamespaceDesc], opts: EncodeOptions) {
    if ns.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for n in ns {
        out.push(b'(');
        write_string(out, &n.prefix, opts);
        out.push(b' ');
        write_delimiter(out, n.delimiter);
        out.push(b')');
    }
    out.push(b')');
}

impl Data<'_> {
    fn write(&self, out: &mut Vec<u8>, opts: EncodeOptions) {
        out.extend_from_slice(b"* ");
        match self {
            Data::Capability(caps) => {
                out.extend_from_slice(b"CAPABILITY");
                write_atoms(out, caps);
            }
            Data::List(l) => {
                out.extend_from_slice(b"LIST ");
                write_list_data(out, l, opts);
            }
            Data::Lsub(l) => {
                out.extend_from_slice(b"LSUB ");
                write_list_data(out, l, opts);
            }
            Data::Status { mailbox, items } => {
                out.extend_from_slice(b"STATUS ");
                write_mailbox(out, mailbox, opts);
                out.push(b' ');
                write_list(out, items, |out, (item, v)| {
                    out.extend_from_slice(item.name().as_bytes());
                    out.push(b' ');
                    match v {
                        StatusValue::Number(n) => push_num(out, n),
                        StatusValue::Nil => out.extend_from_slice(b"NIL"),
                        StatusValue::ObjectId(id) => {
                            out.push(b'(');
                            out.extend_from_slice(id.as_bytes());
                            out.push(b')');
                        }
                    }
                });
            }
            Data::ESearch(e) => {
                out.extend_from_slice(b"ESEARCH");
                if let Some(t) = &e.tag {
                    out.extend_from_slice(b" (TAG ");
                    write_quoted(out, t.as_str().as_bytes());
                    out.push(b')');
                }
                if e.uid {
                    out.extend_from_slice(b" UID");
                }
                if let Some(n) = e.min {
                    out.extend_from_slice(b" MIN ");
                    push_num(out, n);
                }
                if let Some(n) = e.max {
                    out.extend_from_slice(b" MAX ");
                    push_num(out, n);
                }
                if let Some(s) = &e.all {
                    out.extend_from_slice(b" ALL ");
                    write_seq(out, s);
                }
                if let Some(n) = e.count {
                    out.extend_from_slice(b" COUNT ");
                    push_num(out, n);
                }
                if let Some(n) = e.modseq {
                    out.extend_from_slice(b" MODSEQ ");
                    push_num(out, n);
                }
            }
            Data::Search { ids, modseq } | Data::Sort { ids, modseq } => {
                out.extend_from_slice(if matches!(self, Data::Search { .. }) {
                    b"SEARCH"
                } else {
                    b"SORT"
                });
                for id in ids {
                    out.push(b' ');
                    push_num(out, id);
                }
                if let Some(m) = modseq {
                    out.extend_from_slice(b" (MODSEQ ");
                    push_num(out, m);
                    out.push(b')');
                }
            }
            Data::Thread(forest) => {
                out.extend_from_slice(b"THREAD");
                if !forest.roots.is_empty() {
                    out.push(b' ');
                }
                let mut seen = vec![false; forest.nodes.len()];
                for &r in &forest.roots {
                    write_thread(out, forest, r, &mut seen);
                }
            }
            Data::Flags(flags) => {
                out.extend_from_slice(b"FLAGS ");
                write_flags(out, flags, &[]);
            }
            Data::Exists(n) => {
                push_num(out, n);
                out.extend_from_slice(b" EXISTS");
            }
            Data::Recent(n) => {
                push_num(out, n);
                out.extend_from_slice(b" RECENT");
            }
            Data::Expunge(n) => {
                push_num(out, n);
                out.extend_from_slice(b" EXPUNGE");
            }
            Data::Vanished { earlier, uids } => {
                out.extend_from_slice(b"VANISHED ");
                if *earlier {
                    out.extend_from_slice(b"(EARLIER) ");
                }
                write_seq(out, uids);
            }
            Data::Fetch { seq, items } => {
                push_num(out, seq);
                out.extend_from_slice(b" FETCH ");
                write_list(out, items, |out, it| it.write(out, opts));
            }
            Data::Enabled(caps) => {
                out.extend_from_slice(b"ENABLED");
                write_atoms(out, caps);
            }
            Data::Id(params) => {
                out.extend_from_slice(b"ID ");
                match params {
                    None => out.extend_from_slice(b"NIL"),
                    Some(p) => write_list(out, p, |out, (k, v)| {
                        write_string(out, k.as_bytes(), opts);
                        out.push(b' ');
                        write_nstring(out, v.as_deref().map(str::as_bytes), opts);
                    }),
                }
            }
            Data::Namespace {
                personal,
                other,
                shared,
            } => {
                out.extend_from_slice(b"NAMESPACE ");
                write_namespaces(out, personal, opts);
                out.push(b' ');
                write_namespaces(out, other, opts);
                out.push(b' ');
                write_namespaces(out, shared, opts);
            }
            Data::Quota { root, resources } => {
                out.extend_from_slice(b"QUOTA ");
                write_astring(out, root, opts);
                out.push(b' ');
                write_list(out, resources, |out, r| {
                    out.extend(r.name.bytes().filter(|&b| crate::parse::is_atom_char(b)));
                    out.push(b' ');
                    push_num(out, r.usage);
                    out.push(b' ');
                    push_num(out, r.limit);
                });
            }
            Data::QuotaRoot { mailbox, roots } => {
                out.extend_from_slice(b"QUOTAROOT ");
                write_mailbox(out, mailbox, opts);
                for r in roots {
                    out.push(b' ');
                    write_astring(out, r, opts);
                }
            }
        }
    }
}

impl Response<'_> {
    /// Append the response, CRLF included, to `out`.
    pub fn encode(&self, opts: EncodeOptions, out: &mut Vec<u8>) {
        match self {
            Response::Status(s) => {
                match &s.tag {
                    Some(t) => out.extend_from_slice(t.as_str().as_bytes()),
                    None => out.push(b'*'),
                }
                out.push(b' ');
                out.extend_from_slice(s.kind.name().as_bytes());
                out.push(b' ');
                if let Some(c) = &s.code {
                    out.push(b'[');
                    c.write(out);
                    out.extend_from_slice(b"] ");
                }
                write_text(out, &s.text, s.kind.name());
            }
            Response::Data(d) => d.write(out, opts),
            Response::Continue(Continuation::Text(t)) => {
                out.extend_from_slice(b"+ ");
                write_text(out, t, "Ready");
            }
            Response::Continue(Continuation::Base64(b)) => {
                use base64::Engine as _;
                out.extend_from_slice(b"+ ");
                out.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(b)
                        .as_bytes(),
                );
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The response as a fresh byte vector.
    pub fn to_bytes(&self, opts: EncodeOptions) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(opts, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
