//! The mailbox side of an IMAP session: answers the typed requests of
//! [`tern_imap::session::Session`] from the user's mail store
//! ([`tern_store::mailbox`]), with message views from `tern-mime`.
//!
//! One [`Backend`] per connection. It keeps what a selected session must
//! remember (the UID of every message sequence number, their flags and the
//! MODSEQ it last told the client about) and turns store changes made by
//! others (deliveries, other sessions) into untagged `EXISTS`, `EXPUNGE` /
//! `VANISHED` and `FETCH (FLAGS)` at the moments RFC 9051 7.5 allows.
//!
//! Every method is synchronous (SQLite and file reads): the driver runs
//! them on a blocking thread. Nothing here touches a socket, and no
//! mailbox name or path from the client reaches the file system except
//! through the store, which validates it.

use std::borrow::Cow;
use std::io::Read as _;
use std::sync::{Arc, LazyLock};

use tern_imap::command::{
    FetchAttribute, ListReturn, ListSelect, SearchKey, SearchReturn, SortCriterion, SortKey,
    StoreMode, ThreadAlgorithm,
};
use tern_imap::response::{
    Code, Data, ESearch, EncodeOptions, FetchItem, ListData, QuotaResource, Response,
    StatusResponse, StatusValue,
};
use tern_imap::session::{Completion, Request, RequestKind};
use tern_imap::types::{
    Date, DateTime, Flag, Mailbox, Section, SectionText, SeqNum, SeqRange, SequenceSet, StatusItem,
};
use tern_store::mailbox::{
    AppendItem, FlagOp, Flags, MailboxError, MailboxId, MailboxRow, Mailboxes, MessageList,
    MessageRow, SpecialUse, SystemFlags, UserStore,
};

/// The hierarchy separator.
const DELIMITER: char = '/';

/// How much FETCH output [`Backend::handle_streaming`] gathers before
/// handing it over.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// What a selected session remembers.
#[derive(Debug)]
struct Selected {
    id: MailboxId,
    read_only: bool,
    uidvalidity: u32,
    /// Message sequence number `n` is `rows.get(n - 1)`. Shared with the
    /// store and every other session of the mailbox while this session's
    /// client knows the mailbox as it is; a copy of the chunks that differ
    /// while it must still show messages expunged elsewhere (see
    /// [`Backend::sync`]).
    rows: MessageList,
    /// The MODSEQ of the last state the client was told about.
    modseq: u64,
    /// CONDSTORE is on for this mailbox (FETCH carries MODSEQ).
    condstore: bool,
    /// QRESYNC is on: expunges are reported as `VANISHED`.
    qresync: bool,
    /// An IMAP4rev1 session (IMAP4rev2 not enabled): `\Recent` and
    /// `* n RECENT` are told (RFC 3501 §2.3.2; IMAP4rev2 dropped them).
    rev1: bool,
    /// The UIDs that are `\Recent` in this session, as ranges: the ones it
    /// claimed from the store (read-write), or those no session has claimed
    /// yet (read-only, which claims nothing).
    recent: Vec<std::ops::Range<u32>>,
    /// The `* n RECENT` count the client was last told.
    told_recent: u32,
}

impl Selected {
    fn seq_of(&self, uid: u32) -> Option<usize> {
        self.rows.index_of(uid)
    }

    /// Whether `uid` has `\Recent` in this session.
    fn is_recent(&self, uid: u32) -> bool {
        self.recent.iter().any(|r| r.contains(&uid))
    }

    /// `\Recent` in a FETCH's flag list (IMAP4rev1 sessions only).
    fn shows_recent(&self, uid: u32) -> bool {
        self.rev1 && self.is_recent(uid)
    }

    /// How many messages of the session's list are `\Recent`.
    fn recent_count(&self) -> u32 {
        self.recent
            .iter()
            .map(|r| (self.rows.rank(r.end) - self.rows.rank(r.start)) as u32)
            .sum()
    }

    /// Takes the messages that arrived up to `mailbox`'s UIDNEXT and are
    /// still `\Recent` for this session: from the store (the claim moves
    /// the mailbox's first recent UID, so no other session gets them) when
    /// read-write; as the store has them (claiming nothing) when read-only.
    /// Returns whether the session's recent set grew.
    fn take_recent(&mut self, store: &UserStore, mailbox: &MailboxRow) -> bool {
        let upto = mailbox.uidnext;
        let first = if self.read_only {
            let from = self.recent.last().map_or(0, |r| r.end);
            mailbox.first_recent_uid.max(from)
        } else {
            match store.claim_recent(self.id, upto) {
                Ok(first) => first,
                Err(e) => {
                    tracing::warn!(error = %e, "imap: cannot update \\Recent");
                    upto
                }
            }
        };
        self.add_recent(first, upto)
    }

    /// Adds `first..upto` to the session's `\Recent` UIDs; whether it grew.
    fn add_recent(&mut self, first: u32, upto: u32) -> bool {
        if first >= upto {
            return false;
        }
        match self.recent.last_mut() {
            Some(last) if last.end == first => last.end = upto,
            _ => self.recent.push(first..upto),
        }
        true
    }

    fn max_uid(&self) -> u32 {
        self.rows.max_uid()
    }
}

/// One connection's mailbox state.
#[derive(Debug)]
pub struct Backend {
    mailboxes: Arc<Mailboxes>,
    store: Option<Arc<UserStore>>,
    selected: Option<Selected>,
    /// SEARCHRES (`$`): the UIDs of the last `SEARCH RETURN (SAVE)`.
    saved: Vec<u32>,
    /// Largest message APPEND accepts.
    append_limit: u64,
    /// Spam learning on moves into and out of Junk ([`super::learn`]).
    learner: Option<super::learn::Learner>,
}

/// Encoded untagged responses plus the completion of one request.
#[derive(Debug)]
pub struct Answer {
    /// Untagged responses, encoded, to write before the completion.
    pub untagged: Vec<u8>,
    /// The tagged completion.
    pub completion: Completion,
}

fn no(code: Option<Code>, text: impl Into<String>) -> Completion {
    Completion::no(code, text)
}

fn bad(text: impl Into<String>) -> Completion {
    Completion {
        kind: tern_imap::response::StatusKind::Bad,
        code: None,
        text: text.into(),
    }
}

fn store_error(e: &MailboxError) -> Completion {
    let text = e.to_string();
    if e.is_over_quota() {
        return no(Some(Code::OverQuota), text);
    }
    if e.is_disk_full() {
        return no(Some(Code::Unavailable), "Disk full; try again later");
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("no such mailbox")
        || lower.contains("not found")
        || lower.contains("does not exist")
    {
        return no(Some(Code::NonExistent), text);
    }
    if lower.contains("exists") {
        return no(Some(Code::AlreadyExists), text);
    }
    no(None, text)
}

/// Seconds since the epoch → an IMAP date-time in UTC.
fn date_time(unix: i64) -> DateTime {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(1, 9999) as u16;
    let date = Date::new(year, month, day).unwrap_or(Date {
        year: 1970,
        month: 1,
        day: 1,
    });
    DateTime::new(
        date,
        (secs / 3600) as u8,
        ((secs % 3600) / 60) as u8,
        (secs % 60) as u8,
        0,
    )
    .unwrap_or(DateTime {
        date,
        hour: 0,
        minute: 0,
        second: 0,
        zone_minutes: 0,
    })
}

fn day_start(d: &Date) -> i64 {
    DateTime {
        date: *d,
        hour: 0,
        minute: 0,
        second: 0,
        zone_minutes: 0,
    }
    .unix_seconds()
}

/// The IMAP flags of a message, system flags first (as
/// [`Flags::imap_names`] orders them). Messages without keywords (nearly
/// all) borrow one of 32 shared lists: a FETCH of every message's FLAGS
/// makes no list per message.
fn imap_flags(flags: &Flags) -> Cow<'static, [Flag]> {
    static SYSTEM: LazyLock<Vec<Vec<Flag>>> = LazyLock::new(|| {
        (0..32u8)
            .map(|bits| {
                let set = SystemFlags::from_bits(bits);
                [
                    (SystemFlags::SEEN, Flag::Seen),
                    (SystemFlags::ANSWERED, Flag::Answered),
                    (SystemFlags::FLAGGED, Flag::Flagged),
                    (SystemFlags::DELETED, Flag::Deleted),
                    (SystemFlags::DRAFT, Flag::Draft),
                ]
                .into_iter()
                .filter(|(s, _)| set.contains(*s))
                .map(|(_, f)| f)
                .collect()
            })
            .collect()
    });
    let system = &SYSTEM[usize::from(flags.system.bits() & 31)];
    if flags.keywords().is_empty() {
        return Cow::Borrowed(system);
    }
    let mut all = system.clone();
    all.extend(flags.keywords().iter().filter_map(|k| Flag::parse(k).ok()));
    Cow::Owned(all)
}

fn store_flags(flags: &[Flag]) -> Result<Flags, Completion> {
    let names: Vec<String> = flags
        .iter()
        .filter(|f| !matches!(f, Flag::Extension(_)))
        .map(ToString::to_string)
        .collect();
    Flags::from_imap(&names).map_err(|e| bad(e.to_string()))
}

/// The UIDs a set names: message numbers or UIDs, `$` the saved result.
fn resolve(sel: &Selected, set: &SequenceSet, uid: bool, saved: &[u32]) -> Vec<u32> {
    let ranges = match set {
        SequenceSet::Saved => {
            return saved
                .iter()
                .copied()
                .filter(|u| sel.seq_of(*u).is_some())
                .collect();
        }
        SequenceSet::Ranges(r) => r,
    };
    // Rows are sorted by UID: each range is a slice found by binary search
    // (or by index for message numbers), so a command on a few messages
    // costs O(ranges · log n), not O(n).
    let mut out = Vec::new();
    if uid {
        let largest = sel.max_uid();
        for r in ranges {
            let (lo, hi) = r.bounds(largest);
            let a = sel.rows.rank(lo);
            let b = hi
                .checked_add(1)
                .map_or(sel.rows.len(), |h| sel.rows.rank(h));
            out.extend(sel.rows.range(a, b).map(|row| row.uid));
        }
    } else {
        let count = sel.rows.len() as u32;
        for r in ranges {
            let (lo, hi) = r.bounds(count);
            let (a, b) = (lo.max(1) as usize - 1, (hi.min(count)) as usize);
            if a < b {
                out.extend(sel.rows.range(a, b).map(|row| row.uid));
            }
        }
    }
    if ranges.len() > 1 {
        out.sort_unstable();
        out.dedup();
    }
    out
}

/// RFC 9051 9 (`seq-number`): a message number above the number of
/// messages gets a tagged BAD (a UID that does not exist is ignored).
fn check_seq(sel: &Selected, set: &SequenceSet, uid: bool) -> Result<(), Completion> {
    if uid {
        return Ok(());
    }
    let SequenceSet::Ranges(ranges) = set else {
        return Ok(());
    };
    let count = sel.rows.len() as u32;
    let too_big = |n: &SeqNum| matches!(n, SeqNum::Value(v) if v.get() > count);
    if ranges.iter().any(|r| too_big(&r.start) || too_big(&r.end)) {
        return Err(bad(
            "Invalid message sequence number (beyond the last message)",
        ));
    }
    Ok(())
}

/// Turns CONDSTORE on for the selected mailbox if a command just enabled
/// it, telling the client the mailbox's HIGHESTMODSEQ (RFC 7162 3.1).
fn enable_condstore(sel: &mut Selected, out: &mut Vec<u8>, opts: EncodeOptions) {
    if !sel.condstore {
        sel.condstore = true;
        Response::Status(StatusResponse::untagged(
            tern_imap::response::StatusKind::Ok,
            Some(Code::HighestModSeq(sel.modseq)),
            "Highest",
        ))
        .encode(opts, out);
    }
}

/// A compact sequence set of sorted numbers.
fn to_set(nums: &[u32]) -> SequenceSet {
    let mut sorted: Vec<u32> = nums.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        let v = |n: u32| {
            SeqNum::Value(std::num::NonZeroU32::new(n.max(1)).unwrap_or(std::num::NonZeroU32::MIN))
        };
        ranges.push(SeqRange {
            start: v(start),
            end: v(end),
        });
        i += 1;
    }
    SequenceSet::Ranges(ranges)
}

/// `*` and `%` matching of LIST (case-sensitive except INBOX).
fn list_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('%') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != DELIMITER)
                .any(|i| go(&p[1..], &n[i..])),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    if name.eq_ignore_ascii_case("INBOX") {
        let up: Vec<char> = pattern.to_ascii_uppercase().chars().collect();
        if go(&up, &['I', 'N', 'B', 'O', 'X']) {
            return true;
        }
    }
    go(&p, &n)
}

/// A message's content, loaded once per request when a key needs it.
struct Loaded {
    bytes: Vec<u8>,
}

impl Loaded {
    fn message(&self) -> tern_mime::Message<'_> {
        tern_mime::Message::parse(&self.bytes, &tern_mime::Limits::default())
    }
}

fn mime_section(s: &Section) -> tern_mime::Section {
    tern_mime::Section {
        part: s.part.clone(),
        text: s.text.as_ref().map(|t| match t {
            SectionText::Header => tern_mime::SectionText::Header,
            SectionText::HeaderFields(f) => tern_mime::SectionText::HeaderFields(f.clone()),
            SectionText::HeaderFieldsNot(f) => tern_mime::SectionText::HeaderFieldsNot(f.clone()),
            SectionText::Text => tern_mime::SectionText::Text,
            SectionText::Mime => tern_mime::SectionText::Mime,
        }),
    }
}

/// `BODY[]` / `BODY.PEEK[]` (with or without a partial) and `RFC822`:
/// the stored message as it is, with no need to parse it.
fn whole_message(a: &FetchAttribute) -> bool {
    match a {
        FetchAttribute::BodySection { section, .. } => {
            section.part.is_empty() && section.text.is_none()
        }
        FetchAttribute::Rfc822 => true,
        _ => false,
    }
}

/// A `<origin.count>` partial of `data` (all of it without one),
/// borrowing what was borrowed.
fn cut(data: Cow<'_, [u8]>, partial: Option<(u32, u32)>) -> Cow<'_, [u8]> {
    let Some((o, n)) = partial else {
        return data;
    };
    let (o, n) = (u64::from(o), u64::from(n));
    match data {
        Cow::Borrowed(b) => Cow::Borrowed(tern_mime::partial(b, o, n)),
        Cow::Owned(v) => Cow::Owned(tern_mime::partial(&v, o, n).to_vec()),
    }
}

fn needle(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Backend {
    /// A backend over `mailboxes`; `append_limit`: the largest APPEND.
    pub fn new(mailboxes: Arc<Mailboxes>, append_limit: u64) -> Backend {
        Backend {
            mailboxes,
            store: None,
            selected: None,
            saved: Vec::new(),
            append_limit,
            learner: None,
        }
    }

    /// Tells `learner` about messages moved into and out of Junk.
    pub fn with_learner(mut self, learner: Option<super::learn::Learner>) -> Backend {
        self.learner = learner;
        self
    }

    /// Opens `user`'s store after a successful login (creating the
    /// special-use mailboxes at the first one).
    pub fn login(&mut self, user: &str) -> Result<(), MailboxError> {
        self.store = Some(self.mailboxes.open_for_session(user)?);
        Ok(())
    }

    /// The selected mailbox's change watch, for IDLE.
    pub fn watch(&self) -> Option<tern_store::mailbox::MailboxWatch> {
        let (store, sel) = (self.store.as_ref()?, self.selected.as_ref()?);
        Some(store.watch(sel.id))
    }

    /// Looks for files others wrote (another MDA, the intake fast path)
    /// in the selected mailbox.
    pub fn poll_files(&self) {
        if let (Some(store), Some(sel)) = (&self.store, &self.selected) {
            let _ = store.poll(sel.id);
        }
    }

    /// Untagged updates for the selected mailbox (new mail, flag changes,
    /// expunges by others), encoded; for IDLE and between commands.
    pub fn updates(&mut self, opts: EncodeOptions) -> Vec<u8> {
        let mut out = Vec::new();
        self.sync(&mut out, opts, true);
        out
    }

    /// Answers one request of the session.
    pub fn handle(&mut self, req: Request, opts: EncodeOptions) -> Answer {
        self.handle_streaming(req, opts, &mut |_| {})
    }

    /// [`Self::handle`], handing long output over as it is made: while a
    /// FETCH writes its responses, `flush` gets the untagged bytes so far
    /// (to take from the vector it is given) each time they pass
    /// [`STREAM_CHUNK`], so the client reads the first messages while the
    /// last are being read from disk, and a FETCH of many bodies never
    /// holds them all at once.
    pub fn handle_streaming(
        &mut self,
        req: Request,
        opts: EncodeOptions,
        flush: &mut dyn FnMut(&mut Vec<u8>),
    ) -> Answer {
        let mut out = Vec::new();
        let Some(store) = self.store.clone() else {
            return Answer {
                untagged: out,
                completion: no(Some(Code::Unavailable), "Mail store not open"),
            };
        };
        let allow_expunge = !matches!(
            req.kind,
            RequestKind::Fetch { uid: false, .. }
                | RequestKind::Store { uid: false, .. }
                | RequestKind::Search { uid: false, .. }
        );
        if req.selected.is_none() && !matches!(req.kind, RequestKind::Select { .. }) {
            self.selected = None;
        }
        let completion = match self.dispatch(&store, req, &mut out, opts, flush) {
            Ok(c) => c,
            Err(c) => c,
        };
        if !matches!(completion.kind, tern_imap::response::StatusKind::Bad) {
            self.sync(&mut out, opts, allow_expunge);
        }
        Answer {
            untagged: out,
            completion,
        }
    }

    fn emit(out: &mut Vec<u8>, r: &Response<'_>, opts: EncodeOptions) {
        r.encode(opts, out);
    }

    /// Tells the client what changed in the selected mailbox since it was
    /// last told (RFC 9051 7.5): expunges (only when `allow_expunge`: not
    /// during FETCH, STORE or SEARCH by message number), new messages,
    /// flag changes. Afterwards the session's list is the store's shared
    /// current list again, unless an expunge had to be held back: then the
    /// session keeps its own list, with the expunged messages still in it,
    /// until a command that may announce them.
    fn sync(&mut self, out: &mut Vec<u8>, opts: EncodeOptions, allow_expunge: bool) {
        let (Some(store), Some(sel)) = (&self.store, self.selected.as_mut()) else {
            return;
        };
        if sel.uidvalidity == 0 {
            return;
        }
        let Ok((changes, latest)) = store.changes_and_list(sel.id, sel.modseq) else {
            return;
        };
        if changes.mailbox.uidvalidity != sel.uidvalidity {
            // The index was rebuilt (`tern mailbox reindex`): these UIDs
            // mean other messages now, so nothing is told or taken over;
            // the client sees the new UIDVALIDITY at its next SELECT.
            sel.uidvalidity = 0;
            return;
        }
        let mut gone: Vec<usize> = changes
            .vanished
            .iter()
            .filter_map(|u| sel.seq_of(*u))
            .collect();
        sel.take_recent(store, &changes.mailbox);
        if !gone.is_empty() && !allow_expunge {
            Self::sync_held_back(sel, changes.changed, out, opts);
            return;
        }
        // Expunges, by ascending position: each one renumbers the rest.
        gone.sort_unstable();
        if sel.qresync {
            if !gone.is_empty() {
                let uids: Vec<u32> = gone
                    .iter()
                    .filter_map(|&i| sel.rows.get(i).map(|r| r.uid))
                    .collect();
                Self::emit(
                    out,
                    &Response::Data(Data::Vanished {
                        earlier: false,
                        uids: to_set(&uids),
                    }),
                    opts,
                );
            }
        } else {
            for (k, &i) in gone.iter().enumerate() {
                Self::emit(
                    out,
                    &Response::Data(Data::Expunge((i - k) as u32 + 1)),
                    opts,
                );
            }
        }
        if latest.len() != sel.rows.len() - gone.len() {
            Self::emit(
                out,
                &Response::Data(Data::Exists(latest.len() as u32)),
                opts,
            );
        }
        for row in &changes.changed {
            let told = sel.rows.by_uid(row.uid);
            if told.is_none_or(|t| t.flags == row.flags && t.modseq == row.modseq) {
                continue;
            }
            if let Some(i) = latest.index_of(row.uid) {
                Self::emit_flags(out, sel, i, row, opts);
            }
        }
        sel.rows = latest;
        sel.modseq = sel.modseq.max(changes.mailbox.highestmodseq);
        Self::tell_recent(sel, out, opts);
    }

    /// `* n RECENT` after new messages or expunges changed how many of the
    /// session's messages are `\Recent` (IMAP4rev1 sessions; RFC 3501
    /// §7.3.2).
    fn tell_recent(sel: &mut Selected, out: &mut Vec<u8>, opts: EncodeOptions) {
        if !sel.rev1 {
            return;
        }
        let n = sel.recent_count();
        if n != sel.told_recent {
            sel.told_recent = n;
            Self::emit(out, &Response::Data(Data::Recent(n)), opts);
        }
    }

    /// [`Self::sync`] when expunges may not be told yet: new messages and
    /// flag changes go into the session's own copy of its list (only the
    /// chunks they touch are copied), the expunged messages stay, and the
    /// session's MODSEQ stays where it was, so the next sync finds the
    /// expunges again.
    fn sync_held_back(
        sel: &mut Selected,
        changed: Vec<MessageRow>,
        out: &mut Vec<u8>,
        opts: EncodeOptions,
    ) {
        let before = sel.rows.len();
        let mut flag_updates = Vec::new();
        for row in changed {
            match sel.seq_of(row.uid) {
                Some(i)
                    if sel
                        .rows
                        .get(i)
                        .is_some_and(|t| t.flags != row.flags || t.modseq != row.modseq) =>
                {
                    flag_updates.push(i);
                    sel.rows.set(i, row);
                }
                Some(_) => {}
                None => {
                    sel.rows.push(row);
                }
            }
        }
        if sel.rows.len() != before {
            Self::emit(
                out,
                &Response::Data(Data::Exists(sel.rows.len() as u32)),
                opts,
            );
        }
        Self::tell_recent(sel, out, opts);
        for i in flag_updates {
            if let Some(row) = sel.rows.get(i) {
                Self::emit_flags(out, sel, i, row, opts);
            }
        }
    }

    /// `* n FETCH (FLAGS …)` for a change made elsewhere (with UID under
    /// QRESYNC or CONDSTORE, and MODSEQ under CONDSTORE).
    fn emit_flags(
        out: &mut Vec<u8>,
        sel: &Selected,
        i: usize,
        row: &MessageRow,
        opts: EncodeOptions,
    ) {
        let mut items = vec![FetchItem::Flags {
            flags: imap_flags(&row.flags),
            recent: sel.shows_recent(row.uid),
        }];
        if sel.qresync || sel.condstore {
            items.push(FetchItem::Uid(row.uid));
        }
        if sel.condstore {
            items.push(FetchItem::ModSeq(row.modseq));
        }
        Self::emit(
            out,
            &Response::Data(Data::Fetch {
                seq: i as u32 + 1,
                items,
            }),
            opts,
        );
    }

    fn dispatch(
        &mut self,
        store: &Arc<UserStore>,
        req: Request,
        out: &mut Vec<u8>,
        opts: EncodeOptions,
        flush: &mut dyn FnMut(&mut Vec<u8>),
    ) -> Result<Completion, Completion> {
        let enabled = req.enabled;
        match req.kind {
            RequestKind::Select {
                mailbox,
                read_only,
                params,
            } => {
                self.selected = None;
                let (m, rows) = store.select_list(&mailbox).map_err(|e| store_error(&e))?;
                let condstore = enabled.condstore || params.condstore || params.qresync.is_some();
                let qresync = enabled.qresync;
                let flags = vec![
                    Flag::Answered,
                    Flag::Flagged,
                    Flag::Deleted,
                    Flag::Seen,
                    Flag::Draft,
                ];
                let mut keywords: Vec<Flag> = Vec::new();
                for row in rows.iter() {
                    for k in row.flags.keywords() {
                        if let Ok(f) = Flag::parse(k)
                            && !keywords.contains(&f)
                        {
                            keywords.push(f);
                        }
                    }
                }
                let mut all = flags.clone();
                all.extend(keywords);
                Self::emit(out, &Response::Data(Data::Flags(all.clone())), opts);
                Self::emit(out, &Response::Data(Data::Exists(rows.len() as u32)), opts);
                let mut sel = Selected {
                    id: m.id,
                    read_only,
                    uidvalidity: m.uidvalidity,
                    rows,
                    modseq: m.highestmodseq,
                    condstore,
                    qresync: false,
                    rev1: !enabled.imap4rev2,
                    recent: Vec::new(),
                    told_recent: 0,
                };
                sel.take_recent(store, &m);
                if sel.rev1 {
                    sel.told_recent = sel.recent_count();
                    Self::emit(out, &Response::Data(Data::Recent(sel.told_recent)), opts);
                }
                let rows = &sel.rows;
                let untagged = |code: Code| {
                    Response::Status(StatusResponse::untagged(
                        tern_imap::response::StatusKind::Ok,
                        Some(code),
                        "",
                    ))
                };
                if !enabled.imap4rev2
                    && let Some(first) = rows
                        .iter()
                        .position(|r| !r.flags.system.contains(SystemFlags::SEEN))
                {
                    Self::emit(out, &untagged(Code::Unseen(first as u32 + 1)), opts);
                }
                Self::emit(
                    out,
                    &untagged(Code::PermanentFlags {
                        flags: if read_only { Vec::new() } else { all },
                        keywords: !read_only,
                    }),
                    opts,
                );
                Self::emit(out, &untagged(Code::UidValidity(m.uidvalidity)), opts);
                Self::emit(out, &untagged(Code::UidNext(m.uidnext)), opts);
                Self::emit(out, &untagged(Code::HighestModSeq(m.highestmodseq)), opts);
                Self::emit(out, &untagged(Code::MailboxId(m.object_id.clone())), opts);
                sel.qresync = qresync;
                // QRESYNC: what changed since the client's last state.
                if let Some(q) = params.qresync
                    && q.uid_validity == sel.uidvalidity
                {
                    if let Ok(changes) = store.changes_since(sel.id, q.mod_seq) {
                        let known = q.known_uids.as_ref();
                        let vanished: Vec<u32> = changes
                            .vanished
                            .iter()
                            .copied()
                            .filter(|u| known.is_none_or(|k| k.contains(*u, u32::MAX)))
                            .collect();
                        if !vanished.is_empty() {
                            Self::emit(
                                out,
                                &Response::Data(Data::Vanished {
                                    earlier: true,
                                    uids: to_set(&vanished),
                                }),
                                opts,
                            );
                        }
                        for row in &changes.changed {
                            if let Some(i) = sel.seq_of(row.uid) {
                                Self::emit(
                                    out,
                                    &Response::Data(Data::Fetch {
                                        seq: i as u32 + 1,
                                        items: vec![
                                            FetchItem::Uid(row.uid),
                                            FetchItem::Flags {
                                                flags: imap_flags(&row.flags),
                                                recent: sel.shows_recent(row.uid),
                                            },
                                            FetchItem::ModSeq(row.modseq),
                                        ],
                                    }),
                                    opts,
                                );
                            }
                        }
                    }
                    sel.qresync = true;
                }
                self.selected = Some(sel);
                Ok(Completion::ok(
                    Some(if read_only {
                        Code::ReadOnly
                    } else {
                        Code::ReadWrite
                    }),
                    if read_only {
                        "EXAMINE completed"
                    } else {
                        "SELECT completed"
                    },
                ))
            }
            RequestKind::Create {
                mailbox,
                special_use,
            } => {
                let name = mailbox.trim_end_matches(DELIMITER);
                let use_attr = match special_use.first() {
                    Some(a) => Some(
                        SpecialUse::from_imap(&format!("\\{}", a.as_str())).ok_or_else(|| {
                            no(Some(Code::UseAttr), "Unknown special-use attribute")
                        })?,
                    ),
                    None => None,
                };
                store.create(name, use_attr).map_err(|e| store_error(&e))?;
                Ok(Completion::ok(None, "CREATE completed"))
            }
            RequestKind::Delete { mailbox } => {
                store.delete(&mailbox).map_err(|e| store_error(&e))?;
                Ok(Completion::ok(None, "DELETE completed"))
            }
            RequestKind::Rename { from, to } => {
                store.rename(&from, &to).map_err(|e| store_error(&e))?;
                Ok(Completion::ok(None, "RENAME completed"))
            }
            RequestKind::Subscribe { mailbox, subscribe } => {
                store
                    .subscribe(&mailbox, subscribe)
                    .map_err(|e| store_error(&e))?;
                Ok(Completion::ok(
                    None,
                    if subscribe {
                        "SUBSCRIBE completed"
                    } else {
                        "UNSUBSCRIBE completed"
                    },
                ))
            }
            RequestKind::List {
                lsub,
                reference,
                patterns,
                selection,
                returns,
                extended,
            } => {
                self.list(
                    store,
                    lsub,
                    &reference,
                    &patterns,
                    &selection,
                    &returns,
                    extended,
                    out,
                    opts,
                    enabled.utf8(),
                )?;
                Ok(Completion::ok(
                    None,
                    if lsub {
                        "LSUB completed"
                    } else {
                        "LIST completed"
                    },
                ))
            }
            RequestKind::Status { mailbox, items } => {
                self.status(store, &mailbox, &items, out, opts, enabled.utf8())?;
                Ok(Completion::ok(None, "STATUS completed"))
            }
            RequestKind::Append { mailbox, messages } => self.append(store, &mailbox, messages),
            RequestKind::Poll => Ok(Completion::ok(None, "NOOP completed")),
            RequestKind::Close { expunge } => {
                if let Some(sel) = self.selected.take()
                    && expunge
                    && !sel.read_only
                {
                    store.expunge(sel.id, None).map_err(|e| store_error(&e))?;
                }
                Ok(Completion::ok(None, "CLOSE completed"))
            }
            RequestKind::Expunge { uids } => {
                let sel = self
                    .selected
                    .as_ref()
                    .ok_or_else(|| no(None, "No mailbox selected"))?;
                if sel.read_only {
                    return Err(no(Some(Code::ReadOnly), "Mailbox is read-only"));
                }
                let which = uids.map(|set| resolve(sel, &set, true, &self.saved));
                store
                    .expunge(sel.id, which.as_deref())
                    .map_err(|e| store_error(&e))?;
                // QRESYNC: VANISHED carries no MODSEQ, the tagged OK does
                // (RFC 7162 3.5).
                let code = if sel.qresync {
                    store
                        .changes_since(sel.id, u64::MAX)
                        .ok()
                        .map(|c| Code::HighestModSeq(c.mailbox.highestmodseq))
                } else {
                    None
                };
                Ok(Completion::ok(code, "EXPUNGE completed"))
            }
            RequestKind::Search {
                uid,
                returns,
                criteria,
                ..
            } => self.search(store, uid, returns, &criteria, &req.tag, out, opts),
            RequestKind::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => self.fetch(
                store,
                uid,
                &set,
                &items.attributes(),
                changed_since,
                vanished,
                out,
                opts,
                flush,
            ),
            RequestKind::Store {
                uid,
                set,
                unchanged_since,
                mode,
                silent,
                flags,
            } => self.store(
                store,
                uid,
                &set,
                unchanged_since,
                mode,
                silent,
                &flags,
                out,
                opts,
            ),
            RequestKind::Copy {
                uid,
                is_move,
                set,
                mailbox,
            } => self.copy(store, uid, is_move, &set, &mailbox, out, opts),
            RequestKind::Sort {
                uid,
                criteria,
                search,
                ..
            } => self.sort(store, uid, &criteria, &search, out),
            RequestKind::Thread {
                uid,
                algorithm,
                search,
                ..
            } => self.thread(store, uid, algorithm, &search, out),
            RequestKind::GetQuota { root } => {
                if !root.is_empty() {
                    return Err(no(Some(Code::NonExistent), "No such quota root"));
                }
                self.quota(store, out, opts)?;
                Ok(Completion::ok(None, "GETQUOTA completed"))
            }
            RequestKind::GetQuotaRoot { mailbox } => {
                store.mailbox(&mailbox).map_err(|e| store_error(&e))?;
                Self::emit(
                    out,
                    &Response::Data(Data::QuotaRoot {
                        mailbox: Mailbox::from_utf8(&mailbox, enabled.utf8()),
                        roots: vec![Vec::new()],
                    }),
                    opts,
                );
                self.quota(store, out, opts)?;
                Ok(Completion::ok(None, "GETQUOTAROOT completed"))
            }
            _ => Err(bad("Command not supported")),
        }
    }

    fn quota(
        &self,
        store: &UserStore,
        out: &mut Vec<u8>,
        opts: EncodeOptions,
    ) -> Result<(), Completion> {
        let q = store.quota().map_err(|e| store_error(&e))?;
        let mut resources = Vec::new();
        if let Some(limit) = q.limit {
            resources.push(QuotaResource {
                name: "STORAGE".into(),
                usage: q.used / 1024,
                limit: limit / 1024,
            });
        }
        Self::emit(
            out,
            &Response::Data(Data::Quota {
                root: Vec::new(),
                resources,
            }),
            opts,
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn list(
        &self,
        store: &UserStore,
        lsub: bool,
        reference: &str,
        patterns: &[String],
        selection: &[ListSelect],
        returns: &[ListReturn],
        extended: bool,
        out: &mut Vec<u8>,
        opts: EncodeOptions,
        utf8: bool,
    ) -> Result<(), Completion> {
        // LIST "" "": the hierarchy delimiter.
        if !lsub && patterns.iter().all(String::is_empty) {
            Self::emit(
                out,
                &Response::Data(Data::List(ListData {
                    attributes: vec!["\\Noselect".into()],
                    delimiter: Some(DELIMITER),
                    mailbox: Mailbox::from_bytes(b""),
                    child_info: Vec::new(),
                    old_name: None,
                })),
                opts,
            );
            return Ok(());
        }
        let entries = store.list().map_err(|e| store_error(&e))?;
        let subscribed_only = lsub || selection.contains(&ListSelect::Subscribed);
        let special_only = selection.contains(&ListSelect::SpecialUse);
        let want_subscribed = returns.contains(&ListReturn::Subscribed)
            || selection.contains(&ListSelect::Subscribed);
        let status_items = returns.iter().find_map(|r| match r {
            ListReturn::Status(items) => Some(items.clone()),
            _ => None,
        });
        for e in &entries {
            let name = e.name.as_str();
            let full_patterns: Vec<String> =
                patterns.iter().map(|p| format!("{reference}{p}")).collect();
            if !full_patterns.iter().any(|p| list_matches(p, name)) {
                continue;
            }
            if subscribed_only && !e.subscribed {
                continue;
            }
            if special_only && e.special_use.is_none() {
                continue;
            }
            let mut attributes = Vec::new();
            if e.id.is_none() {
                attributes.push(if lsub {
                    "\\Noselect".to_owned()
                } else {
                    "\\NonExistent".to_owned()
                });
            }
            if !lsub {
                attributes.push(if e.has_children {
                    "\\HasChildren".into()
                } else {
                    "\\HasNoChildren".into()
                });
            }
            if (want_subscribed || extended) && e.subscribed && !lsub {
                attributes.push("\\Subscribed".into());
            }
            if let Some(u) = e.special_use {
                attributes.push(u.as_imap().to_owned());
            }
            let data = ListData {
                attributes,
                delimiter: Some(DELIMITER),
                mailbox: Mailbox::from_utf8(name, utf8),
                child_info: Vec::new(),
                old_name: None,
            };
            Self::emit(
                out,
                &Response::Data(if lsub {
                    Data::Lsub(data)
                } else {
                    Data::List(data)
                }),
                opts,
            );
            if let Some(items) = &status_items
                && e.id.is_some()
            {
                let _ = self.status(store, name, items, out, opts, utf8);
            }
        }
        Ok(())
    }

    fn status(
        &self,
        store: &UserStore,
        mailbox: &str,
        items: &[StatusItem],
        out: &mut Vec<u8>,
        opts: EncodeOptions,
        utf8: bool,
    ) -> Result<(), Completion> {
        let s = store.status(mailbox).map_err(|e| store_error(&e))?;
        let values = items
            .iter()
            .map(|&item| {
                let v = match item {
                    StatusItem::Messages => StatusValue::Number(u64::from(s.messages)),
                    StatusItem::UidNext => StatusValue::Number(u64::from(s.mailbox.uidnext)),
                    StatusItem::UidValidity => {
                        StatusValue::Number(u64::from(s.mailbox.uidvalidity))
                    }
                    StatusItem::Unseen => StatusValue::Number(u64::from(s.unseen)),
                    StatusItem::Deleted => StatusValue::Number(u64::from(s.deleted)),
                    StatusItem::Size => StatusValue::Number(s.size),
                    StatusItem::Recent => StatusValue::Number(u64::from(s.recent)),
                    StatusItem::HighestModSeq => StatusValue::Number(s.mailbox.highestmodseq),
                    StatusItem::AppendLimit => StatusValue::Number(self.append_limit),
                    StatusItem::MailboxId => StatusValue::ObjectId(s.mailbox.object_id.clone()),
                    _ => StatusValue::Nil,
                };
                (item, v)
            })
            .collect();
        Self::emit(
            out,
            &Response::Data(Data::Status {
                mailbox: Mailbox::from_utf8(mailbox, utf8),
                items: values,
            }),
            opts,
        );
        Ok(())
    }

    fn append(
        &mut self,
        store: &UserStore,
        mailbox: &str,
        messages: Vec<tern_imap::command::AppendMessage>,
    ) -> Result<Completion, Completion> {
        let row = store.mailbox(mailbox).map_err(|e| {
            let c = store_error(&e);
            if c.code == Some(Code::NonExistent) {
                no(Some(Code::TryCreate), "No such mailbox; CREATE it first")
            } else {
                c
            }
        })?;
        if messages
            .iter()
            .any(|m| m.data.len() as u64 > self.append_limit)
        {
            return Err(no(Some(Code::TooBig), "Message larger than APPENDLIMIT"));
        }
        let mut flags = Vec::new();
        for m in &messages {
            flags.push(store_flags(&m.flags)?);
        }
        let mut readers: Vec<&[u8]> = messages.iter().map(|m| m.data.as_slice()).collect();
        let mut items: Vec<AppendItem<'_>> = readers
            .iter_mut()
            .zip(flags)
            .zip(messages.iter())
            .map(|((r, flags), m)| AppendItem {
                body: r,
                flags,
                internaldate: m.date.map(|d| d.unix_seconds()),
            })
            .collect();
        // Appending to the mailbox this session has selected read-write:
        // the new messages are `\Recent` here, claimed before another
        // session (an IDLE one, say) is woken and could take them first.
        let selected_rw = self
            .selected
            .as_mut()
            .filter(|sel| sel.id == row.id && !sel.read_only);
        let appended = match selected_rw {
            Some(sel) => {
                let (appended, first) = store
                    .append_batch_claiming(row.id, &mut items)
                    .map_err(|e| store_error(&e))?;
                let upto = appended.iter().map(|a| a.uid + 1).max().unwrap_or(first);
                sel.add_recent(first, upto);
                appended
            }
            None => store
                .append_batch(row.id, &mut items)
                .map_err(|e| store_error(&e))?,
        };
        let uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
        let uidvalidity = appended.first().map_or(row.uidvalidity, |a| a.uidvalidity);
        Ok(Completion::ok(
            Some(Code::AppendUid {
                uid_validity: uidvalidity,
                uids: to_set(&uids),
            }),
            "APPEND completed",
        ))
    }

    fn load(store: &UserStore, id: MailboxId, uid: u32) -> Option<Loaded> {
        let mut f = store.open_message(id, uid).ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        let bytes = match tern_mime::to_crlf(&bytes) {
            std::borrow::Cow::Borrowed(_) => bytes,
            std::borrow::Cow::Owned(v) => v,
        };
        Some(Loaded { bytes })
    }

    #[allow(clippy::too_many_arguments)]
    fn fetch(
        &mut self,
        store: &UserStore,
        uid: bool,
        set: &SequenceSet,
        attrs: &[FetchAttribute],
        changed_since: Option<u64>,
        vanished: bool,
        out: &mut Vec<u8>,
        opts: EncodeOptions,
        flush: &mut dyn FnMut(&mut Vec<u8>),
    ) -> Result<Completion, Completion> {
        let saved = self.saved.clone();
        let sel = self
            .selected
            .as_mut()
            .ok_or_else(|| no(None, "No mailbox selected"))?;
        check_seq(sel, set, uid)?;
        if changed_since.is_some() || attrs.contains(&FetchAttribute::ModSeq) {
            enable_condstore(sel, out, opts);
        }
        if vanished
            && let (Some(since), SequenceSet::Ranges(_)) = (changed_since, set)
            && let Ok(changes) = store.changes_since(sel.id, since)
        {
            {
                let largest = sel.max_uid().max(1);
                let gone: Vec<u32> = changes
                    .vanished
                    .iter()
                    .copied()
                    .filter(|u| set.contains(*u, largest))
                    .collect();
                if !gone.is_empty() {
                    Self::emit(
                        out,
                        &Response::Data(Data::Vanished {
                            earlier: true,
                            uids: to_set(&gone),
                        }),
                        opts,
                    );
                }
            }
        }
        let uids = resolve(sel, set, uid, &saved);
        let needs_body = attrs.iter().any(|a| {
            matches!(
                a,
                FetchAttribute::Envelope
                    | FetchAttribute::Body
                    | FetchAttribute::BodyStructure
                    | FetchAttribute::BodySection { .. }
                    | FetchAttribute::Binary { .. }
                    | FetchAttribute::BinarySize { .. }
                    | FetchAttribute::Rfc822
                    | FetchAttribute::Rfc822Header
                    | FetchAttribute::Rfc822Text
            )
        });
        let needs_structure = attrs.iter().any(|a| {
            !whole_message(a)
                && matches!(
                    a,
                    FetchAttribute::Envelope
                        | FetchAttribute::Body
                        | FetchAttribute::BodyStructure
                        | FetchAttribute::BodySection { .. }
                        | FetchAttribute::Binary { .. }
                        | FetchAttribute::BinarySize { .. }
                        | FetchAttribute::Rfc822Header
                        | FetchAttribute::Rfc822Text
                )
        });
        let sets_seen = !sel.read_only
            && attrs.iter().any(|a| {
                matches!(
                    a,
                    FetchAttribute::BodySection { peek: false, .. }
                        | FetchAttribute::Binary { peek: false, .. }
                        | FetchAttribute::Rfc822
                        | FetchAttribute::Rfc822Text
                )
            });
        if sets_seen {
            let unseen: Vec<u32> = uids
                .iter()
                .copied()
                .filter(|u| {
                    sel.rows
                        .by_uid(*u)
                        .is_some_and(|r| !r.flags.system.contains(SystemFlags::SEEN))
                })
                .collect();
            if !unseen.is_empty()
                && let Ok(result) = store.store_flags(
                    sel.id,
                    &unseen,
                    FlagOp::Add,
                    &Flags::system(SystemFlags::SEEN),
                    None,
                )
            {
                for row in result.messages {
                    if let Some(i) = sel.seq_of(row.uid) {
                        sel.rows.set(i, row);
                    }
                }
            }
        }
        // A clone is a reference count: rows are borrowed from it.
        let rows = sel.rows.clone();
        for u in uids {
            let Some(i) = rows.index_of(u) else { continue };
            let Some(row) = rows.get(i) else { continue };
            if let Some(since) = changed_since
                && row.modseq <= since
            {
                continue;
            }
            let loaded = if needs_body {
                Self::load(store, sel.id, u)
            } else {
                None
            };
            // The MIME structure only when an item needs more than the
            // whole message (BODY[] and RFC822 are the stored bytes).
            let msg = if needs_structure {
                loaded.as_ref().map(Loaded::message)
            } else {
                None
            };
            // Rendered values live here while the response borrows them;
            // sections borrow the loaded message where they can.
            let mut envelope = Vec::new();
            let mut body = Vec::new();
            let mut structure = Vec::new();
            let mut sections: Vec<(usize, Cow<'_, [u8]>)> = Vec::new();
            for (k, a) in attrs.iter().enumerate() {
                let Some(l) = &loaded else { continue };
                if whole_message(a) {
                    let partial = match a {
                        FetchAttribute::BodySection { partial, .. } => *partial,
                        _ => None,
                    };
                    sections.push((k, cut(Cow::Borrowed(&l.bytes), partial)));
                    continue;
                }
                let Some(m) = &msg else { continue };
                match a {
                    FetchAttribute::Envelope => m.envelope_imap(&mut envelope),
                    FetchAttribute::Body => m.body_structure_imap(false, &mut body),
                    FetchAttribute::BodyStructure => m.body_structure_imap(true, &mut structure),
                    FetchAttribute::BodySection {
                        section, partial, ..
                    } => {
                        let data = m.section(&mime_section(section)).unwrap_or_default();
                        sections.push((k, cut(data, *partial)));
                    }
                    FetchAttribute::Binary { part, partial, .. } => {
                        let data = m.binary(part).unwrap_or_default();
                        sections.push((k, cut(data, *partial)));
                    }
                    FetchAttribute::Rfc822Header => sections.push((k, Cow::Borrowed(m.header()))),
                    FetchAttribute::Rfc822Text => sections.push((k, Cow::Borrowed(m.body()))),
                    _ => {}
                }
            }
            let section = |k: usize| {
                sections
                    .iter()
                    .find(|(i, _)| *i == k)
                    .map(|(_, d)| d.as_ref())
            };
            let mut items = Vec::new();
            let mut has_uid = false;
            for (k, a) in attrs.iter().enumerate() {
                match a {
                    FetchAttribute::Flags => items.push(FetchItem::Flags {
                        flags: imap_flags(&row.flags),
                        recent: sel.shows_recent(row.uid),
                    }),
                    FetchAttribute::Uid => {
                        has_uid = true;
                        items.push(FetchItem::Uid(row.uid));
                    }
                    FetchAttribute::InternalDate => {
                        items.push(FetchItem::InternalDate(date_time(row.internaldate)))
                    }
                    FetchAttribute::Rfc822Size => items.push(FetchItem::Rfc822Size(
                        loaded.as_ref().map_or(row.size, |l| l.bytes.len() as u64),
                    )),
                    FetchAttribute::ModSeq => items.push(FetchItem::ModSeq(row.modseq)),
                    FetchAttribute::SaveDate => {
                        items.push(FetchItem::SaveDate(Some(date_time(row.savedate))))
                    }
                    FetchAttribute::EmailId => items.push(FetchItem::EmailId(row.email_id.clone())),
                    FetchAttribute::ThreadId => items.push(FetchItem::ThreadId(None)),
                    FetchAttribute::Envelope if msg.is_some() => {
                        items.push(FetchItem::Envelope(&envelope))
                    }
                    FetchAttribute::Body if msg.is_some() => items.push(FetchItem::Body(&body)),
                    FetchAttribute::BodyStructure if msg.is_some() => {
                        items.push(FetchItem::BodyStructure(&structure))
                    }
                    FetchAttribute::BodySection {
                        section: s,
                        partial,
                        ..
                    } => items.push(FetchItem::BodySection {
                        section: s.clone(),
                        origin: partial.map(|(o, _)| o),
                        data: section(k),
                    }),
                    FetchAttribute::Binary { part, partial, .. } => items.push(FetchItem::Binary {
                        part: part.clone(),
                        origin: partial.map(|(o, _)| o),
                        data: section(k),
                    }),
                    FetchAttribute::BinarySize { part } => items.push(FetchItem::BinarySize {
                        part: part.clone(),
                        size: msg
                            .as_ref()
                            .and_then(|m| m.binary_size(part).ok())
                            .unwrap_or(0) as u64,
                    }),
                    FetchAttribute::Rfc822 => items.push(FetchItem::Rfc822(section(k))),
                    FetchAttribute::Rfc822Header => items.push(FetchItem::Rfc822Header(section(k))),
                    FetchAttribute::Rfc822Text => items.push(FetchItem::Rfc822Text(section(k))),
                    _ => {}
                }
            }
            if uid && !has_uid {
                items.insert(0, FetchItem::Uid(row.uid));
            }
            if sets_seen && !attrs.contains(&FetchAttribute::Flags) {
                items.push(FetchItem::Flags {
                    flags: imap_flags(&row.flags),
                    recent: sel.shows_recent(row.uid),
                });
            }
            if (sel.condstore || changed_since.is_some())
                && !attrs.contains(&FetchAttribute::ModSeq)
            {
                items.push(FetchItem::ModSeq(row.modseq));
            }
            Self::emit(
                out,
                &Response::Data(Data::Fetch {
                    seq: i as u32 + 1,
                    items,
                }),
                opts,
            );
            if out.len() >= STREAM_CHUNK {
                flush(out);
            }
        }
        Ok(Completion::ok(None, "FETCH completed"))
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        store: &UserStore,
        uid: bool,
        set: &SequenceSet,
        unchanged_since: Option<u64>,
        mode: StoreMode,
        silent: bool,
        flags: &[Flag],
        out: &mut Vec<u8>,
        opts: EncodeOptions,
    ) -> Result<Completion, Completion> {
        let saved = self.saved.clone();
        let sel = self
            .selected
            .as_mut()
            .ok_or_else(|| no(None, "No mailbox selected"))?;
        if sel.read_only {
            return Err(no(Some(Code::ReadOnly), "Mailbox is read-only"));
        }
        check_seq(sel, set, uid)?;
        if unchanged_since.is_some() {
            enable_condstore(sel, out, opts);
        }
        let uids = resolve(sel, set, uid, &saved);
        let flags = store_flags(flags)?;
        let op = match mode {
            StoreMode::Replace => FlagOp::Replace,
            StoreMode::Add => FlagOp::Add,
            StoreMode::Remove => FlagOp::Remove,
        };
        let result = store
            .store_flags(sel.id, &uids, op, &flags, unchanged_since)
            .map_err(|e| store_error(&e))?;
        for row in result.messages {
            let Some(i) = sel.seq_of(row.uid) else {
                continue;
            };
            let changed = sel.rows.get(i).is_some_and(|r| r.flags != row.flags);
            sel.rows.set(i, row.clone());
            if silent && !(sel.condstore && changed) {
                continue;
            }
            let mut items = Vec::new();
            if uid || sel.condstore {
                items.push(FetchItem::Uid(row.uid));
            }
            if !silent {
                items.push(FetchItem::Flags {
                    flags: imap_flags(&row.flags),
                    recent: sel.shows_recent(row.uid),
                });
            }
            if sel.condstore {
                items.push(FetchItem::ModSeq(row.modseq));
            }
            Self::emit(
                out,
                &Response::Data(Data::Fetch {
                    seq: i as u32 + 1,
                    items,
                }),
                opts,
            );
        }
        if !result.failed.is_empty() {
            let failed: Vec<u32> = if uid {
                result.failed.clone()
            } else {
                result
                    .failed
                    .iter()
                    .filter_map(|u| sel.seq_of(*u).map(|i| i as u32 + 1))
                    .collect()
            };
            return Ok(Completion::ok(
                Some(Code::Modified(to_set(&failed))),
                "Conditional STORE failed for some messages",
            ));
        }
        Ok(Completion::ok(None, "STORE completed"))
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        store: &UserStore,
        uid: bool,
        is_move: bool,
        set: &SequenceSet,
        mailbox: &str,
        out: &mut Vec<u8>,
        opts: EncodeOptions,
    ) -> Result<Completion, Completion> {
        let saved = self.saved.clone();
        let sel = self
            .selected
            .as_mut()
            .ok_or_else(|| no(None, "No mailbox selected"))?;
        if is_move && sel.read_only {
            return Err(no(Some(Code::ReadOnly), "Mailbox is read-only"));
        }
        let target = store.mailbox(mailbox).map_err(|e| {
            let c = store_error(&e);
            if c.code == Some(Code::NonExistent) {
                no(Some(Code::TryCreate), "No such mailbox; CREATE it first")
            } else {
                c
            }
        })?;
        check_seq(sel, set, uid)?;
        let uids = resolve(sel, set, uid, &saved);
        if uids.is_empty() {
            return Ok(Completion::ok(
                None,
                if is_move {
                    "MOVE completed"
                } else {
                    "COPY completed"
                },
            ));
        }
        let result = if is_move {
            store.move_messages(sel.id, &uids, target.id)
        } else {
            store.copy(sel.id, &uids, target.id)
        }
        .map_err(|e| store_error(&e))?;
        if let Some(learner) = &self.learner {
            super::learn::after_copy(learner, store, sel.id, mailbox, &result);
        }
        let code = Code::CopyUid {
            uid_validity: result.uidvalidity,
            source: to_set(&result.uids.iter().map(|(s, _)| *s).collect::<Vec<_>>()),
            dest: to_set(&result.uids.iter().map(|(_, d)| *d).collect::<Vec<_>>()),
        };
        if !is_move {
            return Ok(Completion::ok(Some(code), "COPY completed"));
        }
        Self::emit(
            out,
            &Response::Status(StatusResponse::untagged(
                tern_imap::response::StatusKind::Ok,
                Some(code),
                "Moved",
            )),
            opts,
        );
        let moved: Vec<u32> = result.uids.iter().map(|(s, _)| *s).collect();
        if sel.qresync {
            for u in &moved {
                if let Some(i) = sel.seq_of(*u) {
                    sel.rows.remove(i);
                }
            }
            Self::emit(
                out,
                &Response::Data(Data::Vanished {
                    earlier: false,
                    uids: to_set(&moved),
                }),
                opts,
            );
        } else {
            let mut seqs: Vec<usize> = moved.iter().filter_map(|u| sel.seq_of(*u)).collect();
            seqs.sort_unstable_by(|a, b| b.cmp(a));
            for i in seqs {
                sel.rows.remove(i);
                Self::emit(out, &Response::Data(Data::Expunge(i as u32 + 1)), opts);
            }
        }
        Ok(Completion::ok(None, "MOVE completed"))
    }

    /// The messages (UIDs, in order) matching every key.
    fn matching(&self, store: &UserStore, keys: &[SearchKey]) -> Result<Vec<u32>, Completion> {
        let sel = self
            .selected
            .as_ref()
            .ok_or_else(|| no(None, "No mailbox selected"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut out = Vec::new();
        for (i, row) in sel.rows.iter().enumerate() {
            let mut cache: Option<Option<Loaded>> = None;
            let mut ctx = Ctx {
                sel,
                seq: i as u32 + 1,
                row,
                store,
                cache: &mut cache,
                saved: &self.saved,
                now,
            };
            if keys.iter().all(|k| ctx.eval(k)) {
                out.push(row.uid);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn search(
        &mut self,
        store: &UserStore,
        uid: bool,
        returns: Option<Vec<SearchReturn>>,
        criteria: &[SearchKey],
        tag: &tern_imap::types::Tag,
        out: &mut Vec<u8>,
        opts: EncodeOptions,
    ) -> Result<Completion, Completion> {
        let uids = self.matching(store, criteria)?;
        if criteria.iter().any(has_modseq)
            && let Some(sel) = self.selected.as_mut()
        {
            enable_condstore(sel, out, opts);
        }
        let sel = self
            .selected
            .as_ref()
            .ok_or_else(|| no(None, "No mailbox selected"))?;
        let ids: Vec<u32> = if uid {
            uids.clone()
        } else {
            uids.iter()
                .filter_map(|u| sel.seq_of(*u).map(|i| i as u32 + 1))
                .collect()
        };
        let modseq = criteria
            .iter()
            .any(has_modseq)
            .then(|| {
                uids.iter()
                    .filter_map(|u| sel.rows.by_uid(*u).map(|r| r.modseq))
                    .max()
            })
            .flatten();
        match returns {
            None => Self::emit(out, &Response::Data(Data::Search { ids, modseq }), opts),
            Some(ret) => {
                let all = ret.is_empty() || ret.contains(&SearchReturn::All);
                let save = ret.contains(&SearchReturn::Save);
                if save {
                    let (min, max) = (
                        ret.contains(&SearchReturn::Min),
                        ret.contains(&SearchReturn::Max),
                    );
                    // RFC 5182 2.4: with MIN/MAX and neither ALL nor COUNT,
                    // `$` holds only those.
                    self.saved = if (min || max)
                        && !ret.contains(&SearchReturn::All)
                        && !ret.contains(&SearchReturn::Count)
                    {
                        let mut v = Vec::new();
                        if min && let Some(&m) = uids.iter().min() {
                            v.push(m);
                        }
                        if max
                            && let Some(&m) = uids.iter().max()
                            && !v.contains(&m)
                        {
                            v.push(m);
                        }
                        v
                    } else {
                        uids.clone()
                    };
                }
                let only_save = save && ret.len() == 1;
                if !only_save {
                    let es = ESearch {
                        tag: Some(tag.clone()),
                        uid,
                        min: ret
                            .contains(&SearchReturn::Min)
                            .then(|| ids.iter().min().copied())
                            .flatten(),
                        max: ret
                            .contains(&SearchReturn::Max)
                            .then(|| ids.iter().max().copied())
                            .flatten(),
                        all: (all && !ids.is_empty()).then(|| to_set(&ids)),
                        count: ret
                            .contains(&SearchReturn::Count)
                            .then_some(ids.len() as u32),
                        modseq,
                    };
                    Self::emit(out, &Response::Data(Data::ESearch(es)), opts);
                }
            }
        }
        Ok(Completion::ok(None, "SEARCH completed"))
    }

    fn sort(
        &mut self,
        store: &UserStore,
        uid: bool,
        criteria: &[SortCriterion],
        search: &[SearchKey],
        out: &mut Vec<u8>,
    ) -> Result<Completion, Completion> {
        let uids = self.matching(store, search)?;
        let sel = self
            .selected
            .as_ref()
            .ok_or_else(|| no(None, "No mailbox selected"))?;
        let mut keyed: Vec<(u32, u32, u64, tern_mime::SortKeys)> = Vec::new();
        for u in uids {
            let Some(i) = sel.seq_of(u) else { continue };
            let Some(row) = sel.rows.get(i) else { continue };
            let keys = Self::load(store, sel.id, u)
                .map(|l| l.message().sort_keys(row.internaldate))
                .unwrap_or_else(|| {
                    tern_mime::Message::parse(b"", &tern_mime::Limits::default())
                        .sort_keys(row.internaldate)
                });
            keyed.push((i as u32 + 1, u, row.size, keys));
        }
        keyed.sort_by(|a, b| {
            for c in criteria {
                let o = match c.key {
                    SortKey::Arrival => a.0.cmp(&b.0),
                    SortKey::Size => a.2.cmp(&b.2),
                    SortKey::Date => a.3.date.cmp(&b.3.date),
                    // RFC 5256 3: i;ascii-casemap for every string key.
                    SortKey::Subject => casemap(a.3.subject.as_bytes(), b.3.subject.as_bytes()),
                    SortKey::From => casemap(&a.3.from, &b.3.from),
                    SortKey::To => casemap(&a.3.to, &b.3.to),
                    SortKey::Cc => casemap(&a.3.cc, &b.3.cc),
                    SortKey::DisplayFrom => {
                        tern_mime::sort::compare_casemap(&a.3.display_from, &b.3.display_from)
                    }
                    SortKey::DisplayTo => {
                        tern_mime::sort::compare_casemap(&a.3.display_to, &b.3.display_to)
                    }
                };
                let o = if c.reverse { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            a.0.cmp(&b.0)
        });
        out.extend_from_slice(b"* SORT");
        for k in keyed {
            out.extend_from_slice(format!(" {}", if uid { k.1 } else { k.0 }).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        Ok(Completion::ok(None, "SORT completed"))
    }

    fn thread(
        &mut self,
        store: &UserStore,
        uid: bool,
        algorithm: ThreadAlgorithm,
        search: &[SearchKey],
        out: &mut Vec<u8>,
    ) -> Result<Completion, Completion> {
        let uids = self.matching(store, search)?;
        let sel = self
            .selected
            .as_ref()
            .ok_or_else(|| no(None, "No mailbox selected"))?;
        let mut msgs = Vec::new();
        for u in uids {
            let Some(i) = sel.seq_of(u) else { continue };
            let Some(row) = sel.rows.get(i) else { continue };
            let number = if uid { u } else { i as u32 + 1 };
            if let Some(l) = Self::load(store, sel.id, u) {
                msgs.push(l.message().thread_message(number, row.internaldate));
            }
        }
        let threads = match algorithm {
            ThreadAlgorithm::References => tern_mime::thread::references(&msgs),
            _ => tern_mime::thread::ordered_subject(&msgs),
        };
        out.extend_from_slice(b"* THREAD ");
        threads.render(out);
        while out.last() == Some(&b' ') {
            out.pop();
        }
        out.extend_from_slice(b"\r\n");
        Ok(Completion::ok(None, "THREAD completed"))
    }
}

/// `i;ascii-casemap` (RFC 4790 9.2): ASCII letters compare case-blind,
/// everything else by octet.
fn casemap(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

fn has_modseq(k: &SearchKey) -> bool {
    match k {
        SearchKey::ModSeq { .. } => true,
        SearchKey::Not(k) => has_modseq(k),
        SearchKey::Or(a, b) => has_modseq(a) || has_modseq(b),
        SearchKey::And(ks) => ks.iter().any(has_modseq),
        _ => false,
    }
}

/// Evaluates search keys against one message.
struct Ctx<'a> {
    sel: &'a Selected,
    seq: u32,
    row: &'a MessageRow,
    store: &'a UserStore,
    cache: &'a mut Option<Option<Loaded>>,
    saved: &'a [u32],
    now: i64,
}

impl Ctx<'_> {
    fn loaded(&mut self) -> Option<&Loaded> {
        if self.cache.is_none() {
            *self.cache = Some(Backend::load(self.store, self.sel.id, self.row.uid));
        }
        self.cache.as_ref().and_then(Option::as_ref)
    }

    fn header(&mut self, name: &[u8], value: &[u8]) -> bool {
        let n = needle(value);
        self.loaded()
            .is_some_and(|l| l.message().header_contains(name, &n))
    }

    fn sent(&mut self) -> Option<(u16, u8, u8)> {
        let l = self.loaded()?;
        l.message().sent_date().map(|d| d.date())
    }

    fn flag(&self, f: SystemFlags) -> bool {
        self.row.flags.system.contains(f)
    }

    fn eval(&mut self, k: &SearchKey) -> bool {
        let date = |d: &Date| (d.year, d.month, d.day);
        let internal_day = {
            let dt = date_time(self.row.internaldate);
            (dt.date.year, dt.date.month, dt.date.day)
        };
        match k {
            SearchKey::All => true,
            SearchKey::Answered => self.flag(SystemFlags::ANSWERED),
            SearchKey::Unanswered => !self.flag(SystemFlags::ANSWERED),
            SearchKey::Deleted => self.flag(SystemFlags::DELETED),
            SearchKey::Undeleted => !self.flag(SystemFlags::DELETED),
            SearchKey::Draft => self.flag(SystemFlags::DRAFT),
            SearchKey::Undraft => !self.flag(SystemFlags::DRAFT),
            SearchKey::Flagged => self.flag(SystemFlags::FLAGGED),
            SearchKey::Unflagged => !self.flag(SystemFlags::FLAGGED),
            SearchKey::Seen => self.flag(SystemFlags::SEEN),
            SearchKey::Unseen => !self.flag(SystemFlags::SEEN),
            SearchKey::New => self.sel.is_recent(self.row.uid) && !self.flag(SystemFlags::SEEN),
            SearchKey::Recent => self.sel.is_recent(self.row.uid),
            SearchKey::Old => !self.sel.is_recent(self.row.uid),
            SearchKey::Keyword(a) => self.row.flags.has_keyword(a.as_str()),
            SearchKey::Unkeyword(a) => !self.row.flags.has_keyword(a.as_str()),
            SearchKey::Larger(n) => self.row.size > *n,
            SearchKey::Smaller(n) => self.row.size < *n,
            SearchKey::Before(d) => internal_day < date(d),
            SearchKey::On(d) => internal_day == date(d),
            SearchKey::Since(d) => internal_day >= date(d),
            SearchKey::SavedBefore(d) => self.row.savedate < day_start(d),
            SearchKey::SavedOn(d) => {
                let dt = date_time(self.row.savedate);
                (dt.date.year, dt.date.month, dt.date.day) == date(d)
            }
            SearchKey::SavedSince(d) => self.row.savedate >= day_start(d),
            SearchKey::SaveDateSupported => true,
            SearchKey::SentBefore(d) => self.sent().is_some_and(|s| s < date(d)),
            SearchKey::SentOn(d) => self.sent().is_some_and(|s| s == date(d)),
            SearchKey::SentSince(d) => self.sent().is_some_and(|s| s >= date(d)),
            SearchKey::Older(secs) => self.row.internaldate <= self.now - i64::from(*secs),
            SearchKey::Younger(secs) => self.row.internaldate >= self.now - i64::from(*secs),
            SearchKey::From(v) => self.header(b"from", v),
            SearchKey::To(v) => self.header(b"to", v),
            SearchKey::Cc(v) => self.header(b"cc", v),
            SearchKey::Bcc(v) => self.header(b"bcc", v),
            SearchKey::Subject(v) => self.header(b"subject", v),
            SearchKey::Header(name, v) => {
                let name = name.to_ascii_lowercase();
                if v.is_empty() {
                    self.loaded().is_some_and(|l| {
                        tern_mime::header::first_value(l.message().header(), &name).is_some()
                    })
                } else {
                    self.header(&name, v)
                }
            }
            SearchKey::Body(v) => {
                let n = needle(v);
                self.loaded().is_some_and(|l| l.message().body_contains(&n))
            }
            SearchKey::Text(v) => {
                let n = needle(v);
                self.loaded().is_some_and(|l| l.message().text_contains(&n))
            }
            SearchKey::Uid(set) => match set {
                SequenceSet::Saved => self.saved.contains(&self.row.uid),
                _ => set.contains(self.row.uid, self.sel.max_uid()),
            },
            SearchKey::SequenceSet(set) => match set {
                SequenceSet::Saved => self.saved.contains(&self.row.uid),
                _ => set.contains(self.seq, self.sel.rows.len() as u32),
            },
            SearchKey::ModSeq { modseq, .. } => self.row.modseq >= *modseq,
            SearchKey::EmailId(a) => self.row.email_id == a.as_str(),
            SearchKey::ThreadId(_) => false,
            SearchKey::Not(k) => !self.eval(k),
            SearchKey::Or(a, b) => self.eval(a) || self.eval(b),
            SearchKey::And(ks) => ks.iter().all(|k| self.eval(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        assert!(list_matches("*", "Archive/2026"));
        assert!(list_matches("%", "Archive"));
        assert!(!list_matches("%", "Archive/2026"));
        assert!(list_matches("Archive/%", "Archive/2026"));
        assert!(list_matches("inbox", "INBOX"));
        assert!(!list_matches("Sent", "Sent Items"));
    }

    #[test]
    fn dates_from_unix_seconds() {
        let d = date_time(0);
        assert_eq!(
            (d.date.year, d.date.month, d.date.day, d.hour),
            (1970, 1, 1, 0)
        );
        let d = date_time(1_796_350_000);
        assert_eq!((d.date.year, d.date.month), (2026, 12));
        assert_eq!(date_time(d.unix_seconds()), d);
    }

    fn selected(uids: &[u32]) -> Selected {
        Selected {
            id: MailboxId(1),
            read_only: false,
            uidvalidity: 1,
            rows: MessageList::from_rows(uids.iter().map(|&uid| MessageRow {
                uid,
                file_name: String::new(),
                flags: Flags::default(),
                modseq: 1,
                size: 1,
                internaldate: 0,
                savedate: 0,
                email_id: String::new(),
            })),
            modseq: 1,
            condstore: false,
            qresync: false,
            rev1: true,
            recent: Vec::new(),
            told_recent: 0,
        }
    }

    fn set(s: &str) -> SequenceSet {
        let line = format!("a FETCH {s} FLAGS\r\n");
        match tern_imap::parse::parse_command(line.as_bytes())
            .unwrap()
            .body
        {
            tern_imap::command::CommandBody::Fetch { set, .. } => set,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sets_resolve_by_uid_and_by_number() {
        let sel = selected(&[2, 5, 7, 9, 12]);
        assert_eq!(resolve(&sel, &set("1:*"), true, &[]), [2, 5, 7, 9, 12]);
        assert_eq!(resolve(&sel, &set("6:9"), true, &[]), [7, 9]);
        assert_eq!(resolve(&sel, &set("9:6,2"), true, &[]), [2, 7, 9]);
        assert_eq!(resolve(&sel, &set("13:*"), true, &[]), [12]);
        assert_eq!(resolve(&sel, &set("3"), true, &[]), Vec::<u32>::new());
        assert_eq!(resolve(&sel, &set("2:3,3:4"), false, &[]), [5, 7, 9]);
        assert_eq!(resolve(&sel, &set("*"), false, &[]), [12]);
        assert_eq!(resolve(&sel, &SequenceSet::Saved, true, &[7, 8]), [7]);
        assert!(check_seq(&sel, &set("6"), false).is_err());
        assert!(check_seq(&sel, &set("5:*"), false).is_ok());
        let empty = selected(&[]);
        assert!(resolve(&empty, &set("1:*"), true, &[]).is_empty());
        assert!(resolve(&empty, &set("*"), false, &[]).is_empty());
    }

    /// A client on a real session and backend, without sockets: what the
    /// driver does, minus the I/O.
    struct Client {
        session: tern_imap::session::Session,
        backend: Backend,
        out: Vec<u8>,
        /// The sizes of the chunks handed over while answering.
        chunks: Vec<usize>,
    }

    impl Client {
        fn new(mailboxes: &Arc<Mailboxes>) -> Client {
            use tern_imap::session::{Session, SessionConfig};
            let mut session = Session::new(
                SessionConfig {
                    plaintext_auth_allowed: true,
                    ..SessionConfig::default()
                },
                false,
            );
            session.greet();
            let mut c = Client {
                session,
                backend: Backend::new(Arc::clone(mailboxes), 1 << 20),
                out: Vec::new(),
                chunks: Vec::new(),
            };
            c.say("a0 LOGIN alice@example.test secret");
            c
        }

        /// Sends one command line; returns everything the server wrote.
        fn say(&mut self, line: &str) -> String {
            use tern_imap::session::{AuthQuestion, Event};
            self.session.handle_input(format!("{line}\r\n").as_bytes());
            loop {
                self.out.extend(self.session.take_output());
                let Some(ev) = self.session.poll_event() else {
                    break;
                };
                match ev {
                    Event::AuthStart { .. } => self.session.auth_begin(
                        tern_sasl::StartContext::new(&[7u8; 16], "imap.test", 1, &[1u8; 32]),
                    ),
                    Event::Auth(AuthQuestion::VerifyPassword { .. }) => self
                        .session
                        .auth_answer(tern_sasl::Answer::PasswordOk(true)),
                    Event::Authenticated { user } => self.backend.login(&user).unwrap(),
                    Event::Request(r) => {
                        let opts = self.session.encode_options();
                        let (out, chunks) = (&mut self.out, &mut self.chunks);
                        let a = self.backend.handle_streaming(r, opts, &mut |o| {
                            chunks.push(o.len());
                            out.append(o);
                        });
                        self.out.extend(a.untagged);
                        self.session.finish(a.completion);
                    }
                    _ => {}
                }
            }
            String::from_utf8(std::mem::take(&mut self.out)).unwrap()
        }
    }

    fn untagged(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("* ")).collect()
    }

    #[test]
    fn two_sessions_share_a_list_and_each_hears_the_others_changes_in_turn() {
        let root = tempfile::tempdir().unwrap();
        let mailboxes = Arc::new(Mailboxes::new(
            root.path().to_path_buf(),
            tern_store::StoreConfig::default(),
        ));
        let store = mailboxes.open("alice@example.test").unwrap();
        let inbox = store.mailbox("INBOX").unwrap();
        for i in 0..5 {
            let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
            store
                .append(inbox.id, &mut body.as_bytes(), &Flags::default(), None)
                .unwrap();
        }
        let mut a = Client::new(&mailboxes);
        let mut b = Client::new(&mailboxes);
        // IMAP4rev2 sessions: no `\Recent` (tested on its own below).
        assert!(a.say("a0 ENABLE IMAP4rev2").contains("* ENABLED IMAP4rev2"));
        assert!(b.say("b0 ENABLE IMAP4rev2").contains("* ENABLED IMAP4rev2"));
        assert!(a.say("a1 SELECT INBOX").contains("* 5 EXISTS"));
        assert!(b.say("b1 SELECT INBOX").contains("* 5 EXISTS"));
        let (sa, sb) = (
            a.backend.selected.as_ref().unwrap(),
            b.backend.selected.as_ref().unwrap(),
        );
        assert!(sa.rows.ptr_eq(&sb.rows), "one list for both sessions");

        // B flags 2 and expunges 3 (and hears its own EXPUNGE).
        b.say("b2 STORE 2 +FLAGS (\\Flagged)");
        b.say("b3 STORE 3 +FLAGS (\\Deleted)");
        assert_eq!(untagged(&b.say("b4 EXPUNGE")), ["* 3 EXPUNGE"]);

        // A's FETCH by number may not hear the expunge: 3 is still there,
        // numbers do not move, but the flag change is told.
        let r = a.say("a2 FETCH 1:5 (UID)");
        assert_eq!(
            untagged(&r),
            [
                "* 1 FETCH (UID 1)",
                "* 2 FETCH (UID 2)",
                "* 3 FETCH (UID 3)",
                "* 4 FETCH (UID 4)",
                "* 5 FETCH (UID 5)",
                "* 2 FETCH (FLAGS (\\Flagged))",
            ],
            "{r}"
        );
        // A delivery meanwhile: A hears EXISTS, still holding message 3.
        store
            .append(
                inbox.id,
                &mut &b"Subject: 6\r\n\r\nx\r\n"[..],
                &Flags::default(),
                None,
            )
            .unwrap();
        assert_eq!(
            untagged(&a.say("a3 FETCH 1 (UID)")),
            ["* 1 FETCH (UID 1)", "* 6 EXISTS"]
        );
        assert_eq!(untagged(&a.say("a3 FETCH 6 (UID)")), ["* 6 FETCH (UID 6)"]);
        // NOOP may: the expunge now, then A shares the store's list again.
        assert_eq!(untagged(&a.say("a4 NOOP")), ["* 3 EXPUNGE"]);
        assert_eq!(untagged(&b.say("b5 NOOP")), ["* 5 EXISTS"]);
        let (sa, sb) = (
            a.backend.selected.as_ref().unwrap(),
            b.backend.selected.as_ref().unwrap(),
        );
        assert!(sa.rows.ptr_eq(&sb.rows));
        assert_eq!(
            sa.rows.iter().map(|r| r.uid).collect::<Vec<_>>(),
            [1, 2, 4, 5, 6]
        );
        let r = a.say("a5 UID FETCH 1:* (UID FLAGS)");
        assert!(r.contains("* 2 FETCH (UID 2 FLAGS (\\Flagged))"), "{r}");
        assert!(r.contains("* 5 FETCH (UID 6 FLAGS ())"), "{r}");
    }

    #[test]
    fn recent_belongs_to_the_first_read_write_session_only() {
        let root = tempfile::tempdir().unwrap();
        let mailboxes = Arc::new(Mailboxes::new(
            root.path().to_path_buf(),
            tern_store::StoreConfig::default(),
        ));
        let store = mailboxes.open("alice@example.test").unwrap();
        let inbox = store.mailbox("INBOX").unwrap();
        let add = |n: u32| {
            let body = format!("Subject: {n}\r\n\r\nbody {n}\r\n");
            store
                .append(inbox.id, &mut body.as_bytes(), &Flags::default(), None)
                .unwrap();
        };
        add(1);
        add(2);
        let mut a = Client::new(&mailboxes);
        let mut b = Client::new(&mailboxes);
        let mut c = Client::new(&mailboxes);
        let mut d = Client::new(&mailboxes);

        // STATUS and EXAMINE see the recent messages and claim none.
        let r = c.say("c1 STATUS INBOX (MESSAGES RECENT)");
        assert!(r.contains("(MESSAGES 2 RECENT 2)"), "{r}");
        let r = c.say("c2 EXAMINE INBOX");
        assert!(r.contains("* 2 RECENT"), "{r}");
        assert!(c.say("c3 FETCH 1 (FLAGS)").contains("(FLAGS (\\Recent))"));

        // The first SELECT takes them: \Recent in its session only.
        let r = a.say("a1 SELECT INBOX");
        assert!(r.contains("* 2 RECENT"), "{r}");
        let r = a.say("a2 FETCH 1:2 (FLAGS)");
        assert!(r.contains("* 1 FETCH (FLAGS (\\Recent))"), "{r}");
        assert_eq!(untagged(&a.say("a3 SEARCH RECENT")), ["* SEARCH 1 2"]);
        assert_eq!(untagged(&a.say("a4 SEARCH OLD")), ["* SEARCH"]);
        let r = b.say("b1 SELECT INBOX");
        assert!(r.contains("* 0 RECENT"), "{r}");
        assert!(b.say("b2 FETCH 1 (FLAGS)").contains("* 1 FETCH (FLAGS ())"));
        assert_eq!(untagged(&b.say("b3 SEARCH NEW")), ["* SEARCH"]);
        let r = d.say("d1 STATUS INBOX (RECENT)");
        assert!(r.contains("(RECENT 0)"), "{r}");

        // A new message goes to the first session that hears of it.
        add(3);
        assert_eq!(untagged(&b.say("b4 NOOP")), ["* 3 EXISTS", "* 1 RECENT"]);
        assert_eq!(untagged(&a.say("a5 NOOP")), ["* 3 EXISTS"]);
        assert_eq!(untagged(&b.say("b5 SEARCH NEW")), ["* SEARCH 3"]);
        b.say("b6 STORE 3 +FLAGS.SILENT (\\Seen)");
        assert_eq!(untagged(&b.say("b7 SEARCH NEW")), ["* SEARCH"]);
        assert_eq!(untagged(&b.say("b8 SEARCH RECENT")), ["* SEARCH 3"]);
        // Expunging a recent message lowers the count.
        b.say("b9 STORE 3 +FLAGS.SILENT (\\Deleted)");
        assert_eq!(
            untagged(&b.say("b10 EXPUNGE")),
            ["* 3 EXPUNGE", "* 0 RECENT"]
        );

        // IMAP4rev2 has no \Recent at all.
        add(4);
        assert!(d.say("d2 ENABLE IMAP4rev2").contains("ENABLED"));
        let r = d.say("d3 SELECT INBOX");
        assert!(!r.contains("RECENT"), "{r}");
        assert!(!d.say("d4 FETCH 3 (FLAGS)").contains("Recent"));
        // ... but its SELECT took message 4 (the claim is the mailbox's).
        let r = a.say("a6 NOOP");
        assert!(r.contains("* 3 EXISTS") && !r.contains("RECENT"), "{r}");

        // An APPEND to the selected mailbox is recent to the appender (the
        // store claims it before waking b: see the mailstore test
        // `an_append_by_the_selecting_session_claims_recent_...`).
        let r = a.say("a7 APPEND INBOX {16+}\r\nSubject: 5\r\n\r\nhi");
        assert!(r.contains("* 4 EXISTS") && r.contains("* 3 RECENT"), "{r}");
        let r = b.say("b11 NOOP");
        assert!(r.contains("* 4 EXISTS") && !r.contains("RECENT"), "{r}");
        assert_eq!(untagged(&a.say("a8 SEARCH RECENT")), ["* SEARCH 1 2 4"]);
        assert_eq!(untagged(&b.say("b12 SEARCH RECENT")), ["* SEARCH"]);
    }

    #[test]
    fn long_fetch_output_is_handed_over_in_chunks() {
        let root = tempfile::tempdir().unwrap();
        let mailboxes = Arc::new(Mailboxes::new(
            root.path().to_path_buf(),
            tern_store::StoreConfig::default(),
        ));
        let store = mailboxes.open("alice@example.test").unwrap();
        let inbox = store.mailbox("INBOX").unwrap();
        let line = "x".repeat(998);
        for i in 0..300 {
            let body = format!("Subject: {i}\r\n\r\n{line}\r\n");
            store
                .append(inbox.id, &mut body.as_bytes(), &Flags::default(), None)
                .unwrap();
        }
        let mut c = Client::new(&mailboxes);
        c.say("a1 SELECT INBOX");
        c.chunks.clear();
        let r = c.say("a2 UID FETCH 1:* (UID BODY.PEEK[])");
        assert_eq!(r.matches(" FETCH (UID ").count(), 300);
        assert!(r.contains("* 300 FETCH (UID 300 BODY[] {1016}\r\nSubject: 299\r\n"));
        assert!(
            r.ends_with("a2 OK FETCH completed\r\n"),
            "{}",
            &r[r.len() - 100..]
        );
        assert!(c.chunks.len() >= 4, "{:?}", c.chunks);
        assert!(
            c.chunks
                .iter()
                .all(|&n| (STREAM_CHUNK..STREAM_CHUNK + 2048).contains(&n))
        );
    }

    #[test]
    fn sets_are_compact() {
        assert_eq!(to_set(&[5, 1, 2, 3, 9, 10]).to_string(), "1:3,5,9:10");
        assert_eq!(to_set(&[7]).to_string(), "7");
    }
}
