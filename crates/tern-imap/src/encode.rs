//! The command encoder: a [`Command`] back to bytes, as a client sends it.
//!
//! The output parses back to the same command ([`crate::parse`]); a
//! property test checks that for generated commands. Strings take the
//! shortest form the grammar allows (atom, quoted, literal). Literals are
//! synchronising unless [`LiteralMode::NonSync`] is asked for, and the
//! output is cut into [`Fragments`]: after each synchronising literal's
//! announcement the client must wait for the server's `+`.

use base64::Engine as _;

use crate::command::*;
use crate::response::EncodeOptions;
use crate::types::{Date, DateTime, Flag, Section, SectionText, SequenceSet};

/// How the encoder writes literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LiteralMode {
    /// `{n}`: wait for `+` before sending the octets.
    #[default]
    Sync,
    /// `{n+}` (LITERAL+): send everything at once.
    NonSync,
}

/// An encoded command: the pieces to send, waiting for a `+`
/// continuation between consecutive pieces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragments(pub Vec<Vec<u8>>);

impl Fragments {
    /// All pieces joined, as the server's framer assembles them.
    pub fn concat(&self) -> Vec<u8> {
        self.0.concat()
    }
}

struct W {
    parts: Vec<Vec<u8>>,
    cur: Vec<u8>,
    mode: LiteralMode,
    opts: EncodeOptions,
}

impl W {
    fn raw(&mut self, b: &[u8]) {
        self.cur.extend_from_slice(b);
    }

    fn num(&mut self, n: impl std::fmt::Display) {
        self.raw(n.to_string().as_bytes());
    }

    fn sp(&mut self) {
        self.cur.push(b' ');
    }

    fn literal(&mut self, data: &[u8], binary: bool) {
        if binary {
            self.cur.push(b'~');
        }
        self.cur.push(b'{');
        self.num(data.len());
        match self.mode {
            LiteralMode::NonSync => self.raw(b"+}\r\n"),
            LiteralMode::Sync => {
                self.raw(b"}\r\n");
                self.parts.push(std::mem::take(&mut self.cur));
            }
        }
        self.raw(data);
    }

    fn quotable(&self, s: &[u8]) -> bool {
        s.len() <= crate::response::MAX_QUOTED
            && !s.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
            && (s.is_ascii() || (self.opts.utf8 && std::str::from_utf8(s).is_ok()))
    }

    fn quoted(&mut self, s: &[u8]) {
        self.cur.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                self.cur.push(b'\\');
            }
            self.cur.push(b);
        }
        self.cur.push(b'"');
    }

    fn string(&mut self, s: &[u8]) {
        if self.quotable(s) {
            self.quoted(s)
        } else {
            self.literal(s, false)
        }
    }

    fn astring(&mut self, s: &[u8]) {
        if !s.is_empty() && s.iter().all(|&b| crate::parse::is_astring_char(b)) {
            self.raw(s);
        } else {
            self.string(s);
        }
    }

    fn list_mailbox(&mut self, s: &[u8]) {
        if !s.is_empty()
            && s.iter()
                .all(|&b| crate::parse::is_astring_char(b) || b == b'%' || b == b'*')
        {
            self.raw(s);
        } else {
            self.string(s);
        }
    }

    fn seq(&mut self, s: &SequenceSet) {
        self.raw(s.to_string().as_bytes());
    }

    fn date(&mut self, d: &Date) {
        self.raw(d.to_string().as_bytes());
    }

    fn date_time(&mut self, d: &DateTime) {
        self.cur.push(b'"');
        self.raw(d.to_string().as_bytes());
        self.cur.push(b'"');
    }

    fn flags(&mut self, flags: &[Flag]) {
        self.cur.push(b'(');
        for (i, f) in flags.iter().enumerate() {
            if i > 0 {
                self.sp();
            }
            self.raw(f.to_string().as_bytes());
        }
        self.cur.push(b')');
    }

    fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.cur.push(b'(');
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                self.sp();
            }
            f(self, it);
        }
        self.cur.push(b')');
    }

    fn section(&mut self, s: &Section) {
        self.cur.push(b'[');
        for (i, p) in s.part.iter().enumerate() {
            if i > 0 {
                self.cur.push(b'.');
            }
            self.num(p);
        }
        if let Some(t) = &s.text {
            if !s.part.is_empty() {
                self.cur.push(b'.');
            }
            match t {
                SectionText::Header => self.raw(b"HEADER"),
                SectionText::Text => self.raw(b"TEXT"),
                SectionText::Mime => self.raw(b"MIME"),
                SectionText::HeaderFields(names) | SectionText::HeaderFieldsNot(names) => {
                    self.raw(if matches!(t, SectionText::HeaderFields(_)) {
                        b"HEADER.FIELDS "
                    } else {
                        b"HEADER.FIELDS.NOT "
                    });
                    self.list(names, |w, n| w.astring(n));
                }
            }
        }
        self.cur.push(b']');
    }

    fn partial(&mut self, p: &Option<(u32, u32)>) {
        if let Some((o, l)) = p {
            self.cur.push(b'<');
            self.num(o);
            self.cur.push(b'.');
            self.num(l);
            self.cur.push(b'>');
        }
    }

    fn part(&mut self, part: &[u32]) {
        self.cur.push(b'[');
        for (i, p) in part.iter().enumerate() {
            if i > 0 {
                self.cur.push(b'.');
            }
            self.num(p);
        }
        self.cur.push(b']');
    }

    fn fetch_att(&mut self, a: &FetchAttribute) {
        use FetchAttribute as F;
        match a {
            F::Flags => self.raw(b"FLAGS"),
            F::Uid => self.raw(b"UID"),
            F::InternalDate => self.raw(b"INTERNALDATE"),
            F::Rfc822Size => self.raw(b"RFC822.SIZE"),
            F::Rfc822 => self.raw(b"RFC822"),
            F::Rfc822Header => self.raw(b"RFC822.HEADER"),
            F::Rfc822Text => self.raw(b"RFC822.TEXT"),
            F::Envelope => self.raw(b"ENVELOPE"),
            F::Body => self.raw(b"BODY"),
            F::BodyStructure => self.raw(b"BODYSTRUCTURE"),
            F::ModSeq => self.raw(b"MODSEQ"),
            F::SaveDate => self.raw(b"SAVEDATE"),
            F::EmailId => self.raw(b"EMAILID"),
            F::ThreadId => self.raw(b"THREADID"),
            F::BodySection {
                peek,
                section,
                partial,
            } => {
                self.raw(if *peek { b"BODY.PEEK" } else { b"BODY" });
                self.section(section);
                self.partial(partial);
            }
            F::Binary {
                peek,
                part,
                partial,
            } => {
                self.raw(if *peek { b"BINARY.PEEK" } else { b"BINARY" });
                self.part(part);
                self.partial(partial);
            }
            F::BinarySize { part } => {
                self.raw(b"BINARY.SIZE");
                self.part(part);
            }
        }
    }

    fn search_key(&mut self, k: &SearchKey) {
        use SearchKey as K;
        let s = |w: &mut Self, name: &[u8], v: &[u8]| {
            w.raw(name);
            w.sp();
            w.astring(v);
        };
        let d = |w: &mut Self, name: &[u8], v: &Date| {
            w.raw(name);
            w.sp();
            w.date(v);
        };
        match k {
            K::All => self.raw(b"ALL"),
            K::Answered => self.raw(b"ANSWERED"),
            K::Deleted => self.raw(b"DELETED"),
            K::Draft => self.raw(b"DRAFT"),
            K::Flagged => self.raw(b"FLAGGED"),
            K::New => self.raw(b"NEW"),
            K::Old => self.raw(b"OLD"),
            K::Recent => self.raw(b"RECENT"),
            K::Seen => self.raw(b"SEEN"),
            K::Unanswered => self.raw(b"UNANSWERED"),
            K::Undeleted => self.raw(b"UNDELETED"),
            K::Undraft => self.raw(b"UNDRAFT"),
            K::Unflagged => self.raw(b"UNFLAGGED"),
            K::Unseen => self.raw(b"UNSEEN"),
            K::SaveDateSupported => self.raw(b"SAVEDATESUPPORTED"),
            K::Bcc(v) => s(self, b"BCC", v),
            K::Body(v) => s(self, b"BODY", v),
            K::Cc(v) => s(self, b"CC", v),
            K::From(v) => s(self, b"FROM", v),
            K::Subject(v) => s(self, b"SUBJECT", v),
            K::Text(v) => s(self, b"TEXT", v),
            K::To(v) => s(self, b"TO", v),
            K::Before(v) => d(self, b"BEFORE", v),
            K::On(v) => d(self, b"ON", v),
            K::Since(v) => d(self, b"SINCE", v),
            K::SentBefore(v) => d(self, b"SENTBEFORE", v),
            K::SentOn(v) => d(self, b"SENTON", v),
            K::SentSince(v) => d(self, b"SENTSINCE", v),
            K::SavedBefore(v) => d(self, b"SAVEDBEFORE", v),
            K::SavedOn(v) => d(self, b"SAVEDON", v),
            K::SavedSince(v) => d(self, b"SAVEDSINCE", v),
            K::Header(f, v) => {
                self.raw(b"HEADER ");
                self.astring(f);
                self.sp();
                self.astring(v);
            }
            K::Keyword(a) => {
                self.raw(b"KEYWORD ");
                self.raw(a.as_str().as_bytes());
            }
            K::Unkeyword(a) => {
                self.raw(b"UNKEYWORD ");
                self.raw(a.as_str().as_bytes());
            }
            K::Larger(n) => {
                self.raw(b"LARGER ");
                self.num(n);
            }
            K::Smaller(n) => {
                self.raw(b"SMALLER ");
                self.num(n);
            }
            K::Older(n) => {
                self.raw(b"OLDER ");
                self.num(n);
            }
            K::Younger(n) => {
                self.raw(b"YOUNGER ");
                self.num(n);
            }
            K::Not(k) => {
                self.raw(b"NOT ");
                self.search_key(k);
            }
            K::Or(a, b) => {
                self.raw(b"OR ");
                self.search_key(a);
                self.sp();
                self.search_key(b);
            }
            K::Uid(s) => {
                self.raw(b"UID ");
                self.seq(s);
            }
            K::SequenceSet(s) => self.seq(s),
            K::And(keys) => self.list(keys, |w, k| w.search_key(k)),
            K::ModSeq { entry, modseq } => {
                self.raw(b"MODSEQ ");
                if let Some((name, t)) = entry {
                    self.quoted(name);
                    self.raw(match t {
                        EntryType::Private => b" priv ",
                        EntryType::Shared => b" shared ",
                        EntryType::All => b" all ",
                    });
                }
                self.num(modseq);
            }
            K::EmailId(a) => {
                self.raw(b"EMAILID ");
                self.raw(a.as_str().as_bytes());
            }
            K::ThreadId(a) => {
                self.raw(b"THREADID ");
                self.raw(a.as_str().as_bytes());
            }
        }
    }

    fn search_keys(&mut self, keys: &[SearchKey]) {
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                self.sp();
            }
            self.search_key(k);
        }
    }

    fn charset(&mut self, c: &[u8]) {
        if !c.is_empty() && c.iter().all(|&b| crate::parse::is_atom_char(b)) {
            self.raw(c);
        } else {
            self.quoted(c);
        }
    }

    fn uid(&mut self, uid: bool) {
        if uid {
            self.raw(b"UID ");
        }
    }

    fn body(&mut self, b: &CommandBody) {
        use CommandBody as C;
        match b {
            C::Capability
            | C::Noop
            | C::Logout
            | C::StartTls
            | C::Namespace
            | C::Idle
            | C::Check
            | C::Close
            | C::Unselect
            | C::Expunge => self.raw(b.name().as_bytes()),
            C::Authenticate {
                mechanism,
                initial_response,
            } => {
                self.raw(b"AUTHENTICATE ");
                self.raw(mechanism.as_str().as_bytes());
                if let Some(ir) = initial_response {
                    self.sp();
                    if ir.is_empty() {
                        self.raw(b"=");
                    } else {
                        let e = base64::engine::general_purpose::STANDARD.encode(ir);
                        self.raw(e.as_bytes());
                    }
                }
            }
            C::Login { username, password } => {
                self.raw(b"LOGIN ");
                self.astring(username);
                self.sp();
                self.astring(password);
            }
            C::Enable { capabilities } => {
                self.raw(b"ENABLE");
                for c in capabilities {
                    self.sp();
                    self.raw(c.as_str().as_bytes());
                }
            }
            C::Select {
                mailbox,
                read_only,
                params,
            } => {
                self.raw(if *read_only { b"EXAMINE " } else { b"SELECT " });
                self.astring(mailbox.as_bytes());
                if params.condstore || params.qresync.is_some() {
                    self.raw(b" (");
                    if params.condstore {
                        self.raw(b"CONDSTORE");
                        if params.qresync.is_some() {
                            self.sp();
                        }
                    }
                    if let Some(q) = &params.qresync {
                        self.raw(b"QRESYNC (");
                        self.num(q.uid_validity);
                        self.sp();
                        self.num(q.mod_seq);
                        if let Some(k) = &q.known_uids {
                            self.sp();
                            self.seq(k);
                        }
                        if let Some((a, b)) = &q.seq_match {
                            self.raw(b" (");
                            self.seq(a);
                            self.sp();
                            self.seq(b);
                            self.raw(b")");
                        }
                        self.raw(b")");
                    }
                    self.raw(b")");
                }
            }
            C::Create {
                mailbox,
                special_use,
            } => {
                self.raw(b"CREATE ");
                self.astring(mailbox.as_bytes());
                if !special_use.is_empty() {
                    self.raw(b" (USE ");
                    self.list(special_use, |w, a| {
                        w.raw(b"\\");
                        w.raw(a.as_str().as_bytes());
                    });
                    self.raw(b")");
                }
            }
            C::Delete { mailbox }
            | C::Subscribe { mailbox }
            | C::Unsubscribe { mailbox }
            | C::GetQuotaRoot { mailbox } => {
                self.raw(b.name().as_bytes());
                self.sp();
                self.astring(mailbox.as_bytes());
            }
            C::Rename { from, to } => {
                self.raw(b"RENAME ");
                self.astring(from.as_bytes());
                self.sp();
                self.astring(to.as_bytes());
            }
            C::List {
                selection,
                reference,
                patterns,
                returns,
                extended,
            } => {
                self.raw(b"LIST ");
                if *extended {
                    self.list(selection, |w, s| {
                        w.raw(match s {
                            ListSelect::Subscribed => b"SUBSCRIBED".as_slice(),
                            ListSelect::Remote => b"REMOTE",
                            ListSelect::RecursiveMatch => b"RECURSIVEMATCH",
                            ListSelect::SpecialUse => b"SPECIAL-USE",
                        })
                    });
                    self.sp();
                }
                self.astring(reference.as_bytes());
                self.sp();
                if patterns.len() == 1 {
                    self.list_mailbox(&patterns[0]);
                } else {
                    self.list(patterns, |w, p| w.list_mailbox(p));
                }
                if !returns.is_empty() {
                    self.raw(b" RETURN ");
                    self.list(returns, |w, r| match r {
                        ListReturn::Subscribed => w.raw(b"SUBSCRIBED"),
                        ListReturn::Children => w.raw(b"CHILDREN"),
                        ListReturn::SpecialUse => w.raw(b"SPECIAL-USE"),
                        ListReturn::Status(items) => {
                            w.raw(b"STATUS ");
                            w.list(items, |w, i| w.raw(i.name().as_bytes()));
                        }
                    });
                }
            }
            C::Lsub { reference, pattern } => {
                self.raw(b"LSUB ");
                self.astring(reference.as_bytes());
                self.sp();
                self.list_mailbox(pattern);
            }
            C::Status { mailbox, items } => {
                self.raw(b"STATUS ");
                self.astring(mailbox.as_bytes());
                self.sp();
                self.list(items, |w, i| w.raw(i.name().as_bytes()));
            }
            C::Append { mailbox, messages } => {
                self.raw(b"APPEND ");
                self.astring(mailbox.as_bytes());
                for m in messages {
                    self.sp();
                    if !m.flags.is_empty() {
                        self.flags(&m.flags);
                        self.sp();
                    }
                    if let Some(d) = &m.date {
                        self.date_time(d);
                        self.sp();
                    }
                    if m.utf8 {
                        self.raw(b"UTF8 (");
                        self.literal(&m.data, true);
                        self.raw(b")");
                    } else {
                        self.literal(&m.data, m.binary);
                    }
                }
            }
            C::UidExpunge { uids } => {
                self.raw(b"UID EXPUNGE ");
                self.seq(uids);
            }
            C::Search {
                uid,
                returns,
                charset,
                criteria,
            } => {
                self.uid(*uid);
                self.raw(b"SEARCH ");
                if let Some(r) = returns {
                    self.raw(b"RETURN ");
                    self.list(r, |w, r| {
                        w.raw(match r {
                            SearchReturn::Min => b"MIN".as_slice(),
                            SearchReturn::Max => b"MAX",
                            SearchReturn::All => b"ALL",
                            SearchReturn::Count => b"COUNT",
                            SearchReturn::Save => b"SAVE",
                        })
                    });
                    self.sp();
                }
                if let Some(c) = charset {
                    self.raw(b"CHARSET ");
                    self.astring(c);
                    self.sp();
                }
                self.search_keys(criteria);
            }
            C::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                self.uid(*uid);
                self.raw(b"FETCH ");
                self.seq(set);
                self.sp();
                match items {
                    FetchItems::All => self.raw(b"ALL"),
                    FetchItems::Fast => self.raw(b"FAST"),
                    FetchItems::Full => self.raw(b"FULL"),
                    FetchItems::List(l) => self.list(l, |w, a| w.fetch_att(a)),
                }
                if changed_since.is_some() || *vanished {
                    self.raw(b" (");
                    if let Some(c) = changed_since {
                        self.raw(b"CHANGEDSINCE ");
                        self.num(c);
                        if *vanished {
                            self.sp();
                        }
                    }
                    if *vanished {
                        self.raw(b"VANISHED");
                    }
                    self.raw(b")");
                }
            }
            C::Store {
                uid,
                set,
                unchanged_since,
                mode,
                silent,
                flags,
            } => {
                self.uid(*uid);
                self.raw(b"STORE ");
                self.seq(set);
                self.sp();
                if let Some(u) = unchanged_since {
                    self.raw(b"(UNCHANGEDSINCE ");
                    self.num(u);
                    self.raw(b") ");
                }
                self.raw(match mode {
                    StoreMode::Replace => b"".as_slice(),
                    StoreMode::Add => b"+",
                    StoreMode::Remove => b"-",
                });
                self.raw(if *silent { b"FLAGS.SILENT " } else { b"FLAGS " });
                self.flags(flags);
            }
            C::Copy { uid, set, mailbox } | C::Move { uid, set, mailbox } => {
                self.uid(*uid);
                self.raw(b.name().as_bytes());
                self.sp();
                self.seq(set);
                self.sp();
                self.astring(mailbox.as_bytes());
            }
            C::Sort {
                uid,
                criteria,
                charset,
                search,
            } => {
                self.uid(*uid);
                self.raw(b"SORT ");
                self.list(criteria, |w, c| {
                    if c.reverse {
                        w.raw(b"REVERSE ");
                    }
                    w.raw(c.key.name().as_bytes());
                });
                self.sp();
                self.charset(charset);
                self.sp();
                self.search_keys(search);
            }
            C::Thread {
                uid,
                algorithm,
                charset,
                search,
            } => {
                self.uid(*uid);
                self.raw(b"THREAD ");
                match algorithm {
                    ThreadAlgorithm::OrderedSubject => self.raw(b"ORDEREDSUBJECT"),
                    ThreadAlgorithm::References => self.raw(b"REFERENCES"),
                    ThreadAlgorithm::Other(a) => self.raw(a.as_str().as_bytes()),
                }
                self.sp();
                self.charset(charset);
                self.sp();
                self.search_keys(search);
            }
            C::GetQuota { root } => {
                self.raw(b"GETQUOTA ");
                self.astring(root);
            }
            C::SetQuota { root, limits } => {
                self.raw(b"SETQUOTA ");
                self.astring(root);
                self.sp();
                self.list(limits, |w, (r, n)| {
                    w.raw(r.as_str().as_bytes());
                    w.sp();
                    w.num(n);
                });
            }
            C::Id { params } => {
                self.raw(b"ID ");
                match params {
                    None => self.raw(b"NIL"),
                    Some(p) => self.list(p, |w, (k, v)| {
                        w.string(k);
                        w.sp();
                        match v {
                            None => w.raw(b"NIL"),
                            Some(v) => w.string(v),
                        }
                    }),
                }
            }
            C::Compress { algorithm } => {
                self.raw(b"COMPRESS ");
                self.raw(algorithm.as_str().as_bytes());
            }
        }
    }
}

impl Command {
    /// Encode the command, CRLF included, cut after each synchronising
    /// literal announcement. `opts.utf8` allows UTF-8 in quoted strings
    /// (only once the server has IMAP4rev2 or UTF8=ACCEPT on).
    pub fn encode(&self, mode: LiteralMode, opts: EncodeOptions) -> Fragments {
        let mut w = W {
            parts: Vec::new(),
            cur: Vec::new(),
            mode,
            opts,
        };
        w.raw(self.tag.as_str().as_bytes());
        w.sp();
        w.body(&self.body);
        w.raw(b"\r\n");
        let mut parts = w.parts;
        parts.push(w.cur);
        Fragments(parts)
    }
}

#[cfg(test)]
mod tests;
