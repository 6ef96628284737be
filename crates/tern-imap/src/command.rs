//! The typed command AST: what a client may ask, after parsing.
//!
//! [`crate::parse::parse_command`] builds these from framed bytes;
//! [`Command::encode`] writes them back (used by our own tests and by a
//! future client). Strings that may be mailbox names, search text or
//! passwords stay bytes here: their charset depends on the session.

use crate::types::{Atom, Date, DateTime, Flag, Mailbox, Section, SequenceSet, StatusItem, Tag};

/// A tagged command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The client's tag, echoed in the completion response.
    pub tag: Tag,
    /// What is asked.
    pub body: CommandBody,
}

/// Every command Tern understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    /// `CAPABILITY`
    Capability,
    /// `NOOP`
    Noop,
    /// `LOGOUT`
    Logout,
    /// `STARTTLS`
    StartTls,
    /// `AUTHENTICATE mech [initial-response]` (SASL-IR, RFC 4959).
    Authenticate {
        /// The SASL mechanism name, upper-cased.
        mechanism: Atom,
        /// The decoded initial response, if one was sent (`=` is the
        /// empty response).
        initial_response: Option<Vec<u8>>,
    },
    /// `LOGIN user password`
    Login {
        /// The user name octets.
        username: Vec<u8>,
        /// The password octets.
        password: Vec<u8>,
    },
    /// `ENABLE cap...` (RFC 5161)
    Enable {
        /// Capability names as sent.
        capabilities: Vec<Atom>,
    },
    /// `SELECT` (or `EXAMINE` when `read_only`).
    Select {
        /// The mailbox.
        mailbox: Mailbox,
        /// `EXAMINE` rather than `SELECT`.
        read_only: bool,
        /// CONDSTORE / QRESYNC parameters.
        params: SelectParams,
    },
    /// `CREATE mailbox [(USE (\Sent))]`
    Create {
        /// The mailbox.
        mailbox: Mailbox,
        /// Special-use attributes requested (RFC 6154), without their `\`
        /// (`Sent` for `\Sent`).
        special_use: Vec<Atom>,
    },
    /// `DELETE mailbox`
    Delete {
        /// The mailbox.
        mailbox: Mailbox,
    },
    /// `RENAME from to`
    Rename {
        /// Existing name.
        from: Mailbox,
        /// New name.
        to: Mailbox,
    },
    /// `SUBSCRIBE mailbox`
    Subscribe {
        /// The mailbox.
        mailbox: Mailbox,
    },
    /// `UNSUBSCRIBE mailbox`
    Unsubscribe {
        /// The mailbox.
        mailbox: Mailbox,
    },
    /// `LIST` with LIST-EXTENDED options.
    List {
        /// Selection options (`(SUBSCRIBED RECURSIVEMATCH)`).
        selection: Vec<ListSelect>,
        /// Reference name.
        reference: Mailbox,
        /// One or more patterns (wildcards `*` and `%`).
        patterns: Vec<Vec<u8>>,
        /// Return options (`RETURN (CHILDREN STATUS (...))`).
        returns: Vec<ListReturn>,
        /// Whether the extended syntax (select options, several patterns
        /// or RETURN) was used, which changes the reply (RFC 5258).
        extended: bool,
    },
    /// `LSUB reference pattern` (IMAP4rev1)
    Lsub {
        /// Reference name.
        reference: Mailbox,
        /// Pattern.
        pattern: Vec<u8>,
    },
    /// `NAMESPACE`
    Namespace,
    /// `STATUS mailbox (items)`
    Status {
        /// The mailbox.
        mailbox: Mailbox,
        /// Requested items.
        items: Vec<StatusItem>,
    },
    /// `APPEND mailbox message...` (MULTIAPPEND allows several).
    Append {
        /// Target mailbox.
        mailbox: Mailbox,
        /// One or more messages.
        messages: Vec<AppendMessage>,
    },
    /// `IDLE`
    Idle,
    /// `CHECK`
    Check,
    /// `CLOSE`
    Close,
    /// `UNSELECT`
    Unselect,
    /// `EXPUNGE`
    Expunge,
    /// `UID EXPUNGE set` (UIDPLUS)
    UidExpunge {
        /// UIDs to expunge (if marked `\Deleted`).
        uids: SequenceSet,
    },
    /// `[UID] SEARCH`
    Search {
        /// `UID SEARCH`.
        uid: bool,
        /// ESEARCH return options; `None` when no RETURN was given.
        returns: Option<Vec<SearchReturn>>,
        /// `CHARSET x`, as sent.
        charset: Option<Vec<u8>>,
        /// The criteria, ANDed.
        criteria: Vec<SearchKey>,
    },
    /// `[UID] FETCH`
    Fetch {
        /// `UID FETCH`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// What to fetch.
        items: FetchItems,
        /// `CHANGEDSINCE n` (CONDSTORE).
        changed_since: Option<u64>,
        /// `VANISHED` (QRESYNC; only with UID and CHANGEDSINCE).
        vanished: bool,
    },
    /// `[UID] STORE`
    Store {
        /// `UID STORE`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// `UNCHANGEDSINCE n` (CONDSTORE).
        unchanged_since: Option<u64>,
        /// Replace, add or remove.
        mode: StoreMode,
        /// `.SILENT`
        silent: bool,
        /// The flags.
        flags: Vec<Flag>,
    },
    /// `[UID] COPY set mailbox`
    Copy {
        /// `UID COPY`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// Target.
        mailbox: Mailbox,
    },
    /// `[UID] MOVE set mailbox` (RFC 6851)
    Move {
        /// `UID MOVE`.
        uid: bool,
        /// The messages.
        set: SequenceSet,
        /// Target.
        mailbox: Mailbox,
    },
    /// `[UID] SORT (criteria) charset search` (RFC 5256)
    Sort {
        /// `UID SORT`.
        uid: bool,
        /// Sort keys, most significant first.
        criteria: Vec<SortCriterion>,
        /// Charset of the search strings.
        charset: Vec<u8>,
        /// Search criteria, ANDed.
        search: Vec<SearchKey>,
    },
    /// `[UID] THREAD algorithm charset search` (RFC 5256)
    Thread {
        /// `UID THREAD`.
        uid: bool,
        /// The algorithm.
        algorithm: ThreadAlgorithm,
        /// Charset of the search strings.
        charset: Vec<u8>,
        /// Search criteria, ANDed.
        search: Vec<SearchKey>,
    },
    /// `GETQUOTA root` (RFC 9208)
    GetQuota {
        /// Quota root name.
        root: Vec<u8>,
    },
    /// `GETQUOTAROOT mailbox`
    GetQuotaRoot {
        /// The mailbox.
        mailbox: Mailbox,
    },
    /// `SETQUOTA root (resource limit ...)` (Tern refuses it; parsed to answer properly).
    SetQuota {
        /// Quota root name.
        root: Vec<u8>,
        /// Resource names and limits.
        limits: Vec<(Atom, u64)>,
    },
    /// `ID (k v ...)` or `ID NIL` (RFC 2971)
    Id {
        /// Field/value pairs; `None` for NIL.
        params: Option<Vec<IdParam>>,
    },
    /// `COMPRESS mechanism` (RFC 4978)
    Compress {
        /// The algorithm (DEFLATE).
        algorithm: Atom,
    },
}

impl CommandBody {
    /// The command's name, upper-case, as used in logs and BAD texts.
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Enable { .. } => "ENABLE",
            CommandBody::Select {
                read_only: false, ..
            } => "SELECT",
            CommandBody::Select {
                read_only: true, ..
            } => "EXAMINE",
            CommandBody::Create { .. } => "CREATE",
            CommandBody::Delete { .. } => "DELETE",
            CommandBody::Rename { .. } => "RENAME",
            CommandBody::Subscribe { .. } => "SUBSCRIBE",
            CommandBody::Unsubscribe { .. } => "UNSUBSCRIBE",
            CommandBody::List { .. } => "LIST",
            CommandBody::Lsub { .. } => "LSUB",
            CommandBody::Namespace => "NAMESPACE",
            CommandBody::Status { .. } => "STATUS",
            CommandBody::Append { .. } => "APPEND",
            CommandBody::Idle => "IDLE",
            CommandBody::Check => "CHECK",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Expunge => "EXPUNGE",
            CommandBody::UidExpunge { .. } => "UID EXPUNGE",
            CommandBody::Search { .. } => "SEARCH",
            CommandBody::Fetch { .. } => "FETCH",
            CommandBody::Store { .. } => "STORE",
            CommandBody::Copy { .. } => "COPY",
            CommandBody::Move { .. } => "MOVE",
            CommandBody::Sort { .. } => "SORT",
            CommandBody::Thread { .. } => "THREAD",
            CommandBody::GetQuota { .. } => "GETQUOTA",
            CommandBody::GetQuotaRoot { .. } => "GETQUOTAROOT",
            CommandBody::SetQuota { .. } => "SETQUOTA",
            CommandBody::Id { .. } => "ID",
            CommandBody::Compress { .. } => "COMPRESS",
        }
    }
}

/// One ID field and its value (NIL is `None`).
pub type IdParam = (Vec<u8>, Option<Vec<u8>>);

/// SELECT/EXAMINE parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectParams {
    /// `(CONDSTORE)`
    pub condstore: bool,
    /// `(QRESYNC (...))`
    pub qresync: Option<QResync>,
}

/// The QRESYNC select parameter (RFC 7162 §3.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QResync {
    /// The UIDVALIDITY the client knows.
    pub uid_validity: u32,
    /// The HIGHESTMODSEQ the client knows.
    pub mod_seq: u64,
    /// UIDs the client knows.
    pub known_uids: Option<SequenceSet>,
    /// Message numbers and matching UIDs the client knows.
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}

/// A LIST selection option (RFC 5258, RFC 6154).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSelect {
    /// `SUBSCRIBED`
    Subscribed,
    /// `REMOTE`
    Remote,
    /// `RECURSIVEMATCH`
    RecursiveMatch,
    /// `SPECIAL-USE`
    SpecialUse,
}

/// A LIST return option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListReturn {
    /// `SUBSCRIBED`
    Subscribed,
    /// `CHILDREN`
    Children,
    /// `SPECIAL-USE`
    SpecialUse,
    /// `STATUS (items)` (LIST-STATUS, RFC 5819)
    Status(Vec<StatusItem>),
}

/// One message of an APPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMessage {
    /// Flags to set.
    pub flags: Vec<Flag>,
    /// INTERNALDATE to set.
    pub date: Option<DateTime>,
    /// The message octets.
    pub data: Vec<u8>,
    /// Sent as a literal8 `~{n}` (BINARY): may contain NUL.
    pub binary: bool,
    /// Wrapped in `UTF8 (...)` (RFC 6855).
    pub utf8: bool,
}

/// An ESEARCH return option (RFC 4731, RFC 5182).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchReturn {
    /// `MIN`
    Min,
    /// `MAX`
    Max,
    /// `ALL`
    All,
    /// `COUNT`
    Count,
    /// `SAVE` (SEARCHRES)
    Save,
}

/// A search key (RFC 9051 §6.4.4 and extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    /// `ALL`
    All,
    /// `ANSWERED`
    Answered,
    /// `BCC s`
    Bcc(Vec<u8>),
    /// `BEFORE d`
    Before(Date),
    /// `BODY s`
    Body(Vec<u8>),
    /// `CC s`
    Cc(Vec<u8>),
    /// `DELETED`
    Deleted,
    /// `DRAFT`
    Draft,
    /// `FLAGGED`
    Flagged,
    /// `FROM s`
    From(Vec<u8>),
    /// `HEADER field s`
    Header(Vec<u8>, Vec<u8>),
    /// `KEYWORD k`
    Keyword(Atom),
    /// `LARGER n`
    Larger(u64),
    /// `NEW` (IMAP4rev1)
    New,
    /// `NOT k`
    Not(Box<SearchKey>),
    /// `OLD` (IMAP4rev1)
    Old,
    /// `ON d`
    On(Date),
    /// `OR a b`
    Or(Box<SearchKey>, Box<SearchKey>),
    /// `RECENT` (IMAP4rev1)
    Recent,
    /// `SEEN`
    Seen,
    /// `SENTBEFORE d`
    SentBefore(Date),
    /// `SENTON d`
    SentOn(Date),
    /// `SENTSINCE d`
    SentSince(Date),
    /// `SINCE d`
    Since(Date),
    /// `SMALLER n`
    Smaller(u64),
    /// `SUBJECT s`
    Subject(Vec<u8>),
    /// `TEXT s`
    Text(Vec<u8>),
    /// `TO s`
    To(Vec<u8>),
    /// `UID set`
    Uid(SequenceSet),
    /// `UNANSWERED`
    Unanswered,
    /// `UNDELETED`
    Undeleted,
    /// `UNDRAFT`
    Undraft,
    /// `UNFLAGGED`
    Unflagged,
    /// `UNKEYWORD k`
    Unkeyword(Atom),
    /// `UNSEEN`
    Unseen,
    /// A message sequence set.
    SequenceSet(SequenceSet),
    /// `( k k ... )`: all of them.
    And(Vec<SearchKey>),
    /// `MODSEQ ["entry" type] n` (CONDSTORE)
    ModSeq {
        /// Optional metadata entry name and type (`priv`, `shared`, `all`).
        entry: Option<(Vec<u8>, EntryType)>,
        /// The mod-sequence value.
        modseq: u64,
    },
    /// `SAVEDBEFORE d` (SAVEDATE, RFC 8514)
    SavedBefore(Date),
    /// `SAVEDON d`
    SavedOn(Date),
    /// `SAVEDSINCE d`
    SavedSince(Date),
    /// `SAVEDATESUPPORTED`
    SaveDateSupported,
    /// `EMAILID id` (OBJECTID, RFC 8474)
    EmailId(Atom),
    /// `THREADID id`
    ThreadId(Atom),
    /// `OLDER n` (WITHIN, RFC 5032)
    Older(u32),
    /// `YOUNGER n`
    Younger(u32),
}

/// The entry type of a MODSEQ search key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// `priv`
    Private,
    /// `shared`
    Shared,
    /// `all`
    All,
}

/// What a FETCH asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItems {
    /// `ALL`: FLAGS INTERNALDATE RFC822.SIZE ENVELOPE
    All,
    /// `FAST`: FLAGS INTERNALDATE RFC822.SIZE
    Fast,
    /// `FULL`: FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY
    Full,
    /// A list (or a single attribute, written without parentheses).
    List(Vec<FetchAttribute>),
}

impl FetchItems {
    /// The attributes, with the macros expanded.
    pub fn attributes(&self) -> Vec<FetchAttribute> {
        use FetchAttribute::*;
        match self {
            FetchItems::All => vec![Flags, InternalDate, Rfc822Size, Envelope],
            FetchItems::Fast => vec![Flags, InternalDate, Rfc822Size],
            FetchItems::Full => vec![Flags, InternalDate, Rfc822Size, Envelope, Body],
            FetchItems::List(l) => l.clone(),
        }
    }
}

/// A FETCH attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttribute {
    /// `FLAGS`
    Flags,
    /// `UID`
    Uid,
    /// `INTERNALDATE`
    InternalDate,
    /// `RFC822.SIZE`
    Rfc822Size,
    /// `RFC822` (IMAP4rev1)
    Rfc822,
    /// `RFC822.HEADER` (IMAP4rev1)
    Rfc822Header,
    /// `RFC822.TEXT` (IMAP4rev1)
    Rfc822Text,
    /// `ENVELOPE`
    Envelope,
    /// `BODY` (structure without extension data)
    Body,
    /// `BODYSTRUCTURE`
    BodyStructure,
    /// `BODY[section]<partial>` or `BODY.PEEK[...]`
    BodySection {
        /// `.PEEK`: do not set `\Seen`.
        peek: bool,
        /// Which part.
        section: Section,
        /// `<offset.length>`
        partial: Option<(u32, u32)>,
    },
    /// `BINARY[part]<partial>` or `BINARY.PEEK[...]` (RFC 3516)
    Binary {
        /// `.PEEK`
        peek: bool,
        /// MIME part numbers.
        part: Vec<u32>,
        /// `<offset.length>`
        partial: Option<(u32, u32)>,
    },
    /// `BINARY.SIZE[part]`
    BinarySize {
        /// MIME part numbers.
        part: Vec<u32>,
    },
    /// `MODSEQ` (CONDSTORE)
    ModSeq,
    /// `SAVEDATE` (RFC 8514)
    SaveDate,
    /// `EMAILID` (RFC 8474)
    EmailId,
    /// `THREADID` (RFC 8474)
    ThreadId,
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// `FLAGS`
    Replace,
    /// `+FLAGS`
    Add,
    /// `-FLAGS`
    Remove,
}

/// A SORT criterion (RFC 5256, RFC 5957).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortCriterion {
    /// `REVERSE`
    pub reverse: bool,
    /// The key.
    pub key: SortKey,
}

/// A SORT key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// `ARRIVAL`
    Arrival,
    /// `CC`
    Cc,
    /// `DATE`
    Date,
    /// `FROM`
    From,
    /// `SIZE`
    Size,
    /// `SUBJECT`
    Subject,
    /// `TO`
    To,
    /// `DISPLAYFROM` (RFC 5957)
    DisplayFrom,
    /// `DISPLAYTO` (RFC 5957)
    DisplayTo,
}

impl SortKey {
    /// The key's name.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Arrival => "ARRIVAL",
            SortKey::Cc => "CC",
            SortKey::Date => "DATE",
            SortKey::From => "FROM",
            SortKey::Size => "SIZE",
            SortKey::Subject => "SUBJECT",
            SortKey::To => "TO",
            SortKey::DisplayFrom => "DISPLAYFROM",
            SortKey::DisplayTo => "DISPLAYTO",
        }
    }
}

/// A THREAD algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    /// `ORDEREDSUBJECT`
    OrderedSubject,
    /// `REFERENCES`
    References,
    /// Anything else (answered NO by the server).
    Other(Atom),
}
