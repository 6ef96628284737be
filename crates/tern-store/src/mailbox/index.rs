//! The metadata index of one user's mailboxes, behind a trait.
//!
//! The index holds what Maildir file names cannot: mailboxes with their
//! UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, subscriptions and special-use
//! attributes; per message its UID, file name, flags and keywords, MODSEQ,
//! INTERNALDATE, SAVEDATE, size and email id; expunged UIDs with the MODSEQ
//! of their expunge (for QRESYNC `VANISHED (EARLIER)`); the user's quota
//! usage. Bodies are never in the index: they are the Maildir files.
//!
//! [`Index`] is what the store needs from a backend: a few reads and one
//! transactional [`Index::apply`] that assigns UIDs and MODSEQs. The
//! embedded backend is [`SqliteIndex`](super::sqlite::SqliteIndex); a
//! PostgreSQL backend implements the same trait (one schema per user or a
//! `user` column), and the store above it does not change.
//!
//! Contract every backend keeps (the store's invariants rest on it):
//! * [`apply`](Index::apply) is atomic and durable when it returns `Ok`;
//! * UIDs come from the mailbox's UIDNEXT, which only grows, and are never
//!   handed out twice within one UIDVALIDITY (expunging the highest UID
//!   does not lower UIDNEXT);
//! * every `apply` that changes a mailbox gives it one new MODSEQ greater
//!   than any before, stored on each changed or expunged message;
//! * the quota usage is the sum of the sizes of the messages indexed.

use std::fmt;

use super::flags::Flags;
use super::name::MailboxName;

/// A mailbox's id in the index: stable across renames, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(pub i64);

/// RFC 6154 special-use attributes a mailbox may carry.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    /// `\Archive`.
    Archive,
    /// `\Drafts`.
    Drafts,
    /// `\Junk`.
    Junk,
    /// `\Sent`.
    Sent,
    /// `\Trash`.
    Trash,
}

impl SpecialUse {
    /// Every attribute, with the mailbox name created for it at first open.
    pub const DEFAULTS: [(SpecialUse, &'static str); 5] = [
        (SpecialUse::Drafts, "Drafts"),
        (SpecialUse::Sent, "Sent"),
        (SpecialUse::Junk, "Junk"),
        (SpecialUse::Trash, "Trash"),
        (SpecialUse::Archive, "Archive"),
    ];

    /// The attribute as IMAP writes it (`\Sent`).
    pub fn as_imap(self) -> &'static str {
        match self {
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
        }
    }

    /// From the IMAP form (case-insensitive); `None` for attributes this
    /// store does not support (`\All`, `\Flagged` are virtual).
    pub fn from_imap(s: &str) -> Option<SpecialUse> {
        [
            SpecialUse::Archive,
            SpecialUse::Drafts,
            SpecialUse::Junk,
            SpecialUse::Sent,
            SpecialUse::Trash,
        ]
        .into_iter()
        .find(|u| u.as_imap().eq_ignore_ascii_case(s))
    }
}

/// A mailbox as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxRow {
    /// Its id.
    pub id: MailboxId,
    /// Its name.
    pub name: MailboxName,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// The UID the next message will get.
    pub uidnext: u32,
    /// The highest MODSEQ of the mailbox (1 for a new mailbox).
    pub highestmodseq: u64,
    /// Its special-use attribute.
    pub special_use: Option<SpecialUse>,
    /// MAILBOXID (RFC 8474).
    pub object_id: String,
    /// The first UID that is still `\Recent` (IMAP4rev1, RFC 3501 §2.3.2):
    /// no session has selected the mailbox read-write since that message
    /// arrived. Moves only forward ([`Index::claim_recent`]).
    pub first_recent_uid: u32,
}

/// A message as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    /// UID.
    pub uid: u32,
    /// Its file name in the mailbox's `cur/` (`base:2,letters`).
    pub file_name: String,
    /// Flags and keywords.
    pub flags: Flags,
    /// MODSEQ of its last change.
    pub modseq: u64,
    /// Size of the file in bytes (RFC822.SIZE of a CRLF message).
    pub size: u64,
    /// INTERNALDATE, seconds since the Unix epoch.
    pub internaldate: i64,
    /// SAVEDATE (RFC 8514), seconds since the Unix epoch.
    pub savedate: i64,
    /// EMAILID (RFC 8474): the same for a message copied or moved.
    pub email_id: String,
}

/// A message to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// Its file name in `cur/`.
    pub file_name: String,
    /// Flags and keywords.
    pub flags: Flags,
    /// Size in bytes.
    pub size: u64,
    /// INTERNALDATE.
    pub internaldate: i64,
    /// SAVEDATE.
    pub savedate: i64,
    /// An email id to keep (copy, move); `None` makes a new one.
    pub email_id: Option<String>,
}

/// One change in an [`Index::apply`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a message with the next UID of `mailbox`.
    Insert {
        /// Where.
        mailbox: MailboxId,
        /// What.
        message: NewMessage,
    },
    /// Set a message's flags and file name.
    Update {
        /// Where.
        mailbox: MailboxId,
        /// Which.
        uid: u32,
        /// Its new flags.
        flags: Flags,
        /// Its file name now.
        file_name: String,
    },
    /// Record that a message's file moved (`new/` → `cur/`, or renamed by
    /// another program without a flag change): no new MODSEQ.
    Relocate {
        /// Where.
        mailbox: MailboxId,
        /// Which.
        uid: u32,
        /// Its file name now.
        file_name: String,
    },
    /// Remove a message, remembering its UID as expunged.
    Expunge {
        /// Where.
        mailbox: MailboxId,
        /// Which.
        uid: u32,
    },
}

/// What an [`Index::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// For each [`Change::Insert`], in order: its UID and email id.
    pub inserted: Vec<(u32, String)>,
    /// The new MODSEQ of each mailbox the batch changed.
    pub modseqs: Vec<(MailboxId, u64)>,
}

impl Applied {
    /// The MODSEQ the batch gave `mailbox`.
    pub fn modseq(&self, mailbox: MailboxId) -> Option<u64> {
        self.modseqs
            .iter()
            .find(|(m, _)| *m == mailbox)
            .map(|(_, s)| *s)
    }
}

/// Counts for STATUS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages.
    pub messages: u32,
    /// Messages without `\Seen`.
    pub unseen: u32,
    /// Messages with `\Deleted`.
    pub deleted: u32,
    /// Sum of their sizes.
    pub size: u64,
    /// Messages at or above the mailbox's first recent UID (`\Recent`).
    pub recent: u32,
}

/// Storage used by one user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of every message.
    pub bytes: u64,
    /// Number of messages.
    pub messages: u64,
}

/// Errors of an index backend.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index cannot be read: the store rebuilds it from the files.
    #[error("mail index is corrupt: {0}")]
    Corrupt(String),
    /// The index was written by a newer Tern.
    #[error("mail index schema version {0} is newer than this program knows")]
    TooNew(i64),
    /// A mailbox of that name already exists.
    #[error("mailbox exists")]
    Exists,
    /// No such mailbox.
    #[error("no such mailbox")]
    NoMailbox,
    /// The backend failed (I/O, locking, SQL).
    #[error("mail index: {0}")]
    Backend(String),
}

/// The index of one user's mailboxes (see the module docs for the
/// contract). Calls are blocking.
pub trait Index: Send + fmt::Debug {
    /// Every mailbox.
    fn mailboxes(&mut self) -> Result<Vec<MailboxRow>, IndexError>;
    /// Adds a mailbox (HIGHESTMODSEQ 1, UIDNEXT 1).
    fn create_mailbox(
        &mut self,
        name: &MailboxName,
        special_use: Option<SpecialUse>,
        uidvalidity: u32,
    ) -> Result<MailboxRow, IndexError>;
    /// Removes a mailbox, its messages and expunge records.
    fn delete_mailbox(&mut self, id: MailboxId) -> Result<(), IndexError>;
    /// Renames mailboxes, all in one transaction.
    fn rename_mailboxes(&mut self, renames: &[(MailboxId, MailboxName)]) -> Result<(), IndexError>;
    /// Sets or clears a mailbox's special-use attribute.
    fn set_special_use(
        &mut self,
        id: MailboxId,
        special_use: Option<SpecialUse>,
    ) -> Result<(), IndexError>;
    /// Subscribed names (they need not exist).
    fn subscriptions(&mut self) -> Result<Vec<String>, IndexError>;
    /// Subscribes or unsubscribes a name.
    fn set_subscribed(&mut self, name: &str, subscribed: bool) -> Result<(), IndexError>;
    /// Every message of a mailbox, by UID.
    fn messages(&mut self, id: MailboxId) -> Result<Vec<MessageRow>, IndexError>;
    /// Every message of a mailbox, by UID, handed to `f` one at a time,
    /// with an empty `file_name` (what a [`MessageList`] keeps; a big
    /// mailbox is never held twice).
    ///
    /// [`MessageList`]: super::MessageList
    fn each_message(
        &mut self,
        id: MailboxId,
        f: &mut dyn FnMut(MessageRow),
    ) -> Result<(), IndexError>;
    /// The messages whose files are in `new/`, by UID.
    fn messages_in_new(&mut self, id: MailboxId) -> Result<Vec<MessageRow>, IndexError>;
    /// The messages with these UIDs (those that exist), by UID.
    fn messages_by_uid(
        &mut self,
        id: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<MessageRow>, IndexError>;
    /// The message whose file has the base name `base` (in `new/`, or in
    /// `cur/` with any flags).
    fn find_by_base(&mut self, id: MailboxId, base: &str)
    -> Result<Option<MessageRow>, IndexError>;
    /// Messages changed after `modseq`, and UIDs expunged after it.
    fn changes_since(
        &mut self,
        id: MailboxId,
        modseq: u64,
    ) -> Result<(Vec<MessageRow>, Vec<u32>), IndexError>;
    /// Counts for STATUS.
    fn counts(&mut self, id: MailboxId) -> Result<Counts, IndexError>;
    /// Makes the messages below `upto` no longer `\Recent` for the next
    /// session: moves the mailbox's first recent UID up to `upto` (never
    /// down) and returns what it was, so the caller owns the `\Recent`
    /// UIDs from there to `upto` (two callers never get the same UID).
    fn claim_recent(&mut self, id: MailboxId, upto: u32) -> Result<u32, IndexError>;
    /// Applies a batch atomically and durably.
    fn apply(&mut self, changes: &[Change]) -> Result<Applied, IndexError>;
    /// The user's usage.
    fn usage(&mut self) -> Result<Usage, IndexError>;
    /// A full consistency check of the backend's storage;
    /// [`IndexError::Corrupt`] if it fails.
    fn check(&mut self) -> Result<(), IndexError>;
    /// Whether another process changed the index since the last call.
    fn changed_elsewhere(&mut self) -> Result<bool, IndexError>;
}

/// The contract of the module docs as a test any backend can run (the
/// PostgreSQL one should call it too).
#[cfg(test)]
pub(crate) fn check_contract(index: &mut dyn Index) {
    use super::flags::SystemFlags;

    let new = |name: &str, size: u64| NewMessage {
        file_name: format!("cur/{name}:2,"),
        flags: Flags::default(),
        size,
        internaldate: 1,
        savedate: 2,
        email_id: None,
    };
    let a = index
        .create_mailbox(&MailboxName::parse("A").unwrap(), None, 7)
        .unwrap();
    let b = index
        .create_mailbox(
            &MailboxName::parse("B").unwrap(),
            Some(SpecialUse::Trash),
            8,
        )
        .unwrap();
    assert!(matches!(
        index.create_mailbox(&MailboxName::parse("A").unwrap(), None, 9),
        Err(IndexError::Exists)
    ));
    assert_eq!((a.uidnext, a.highestmodseq, a.uidvalidity), (1, 1, 7));

    // One batch, two mailboxes: UIDs in order, one new MODSEQ per mailbox.
    let applied = index
        .apply(&[
            Change::Insert {
                mailbox: a.id,
                message: new("a1", 10),
            },
            Change::Insert {
                mailbox: a.id,
                message: new("a2", 20),
            },
            Change::Insert {
                mailbox: b.id,
                message: new("b1", 30),
            },
            Change::Insert {
                mailbox: a.id,
                message: new("a3", 40),
            },
        ])
        .unwrap();
    let uids: Vec<u32> = applied.inserted.iter().map(|(u, _)| *u).collect();
    assert_eq!(uids, [1, 2, 1, 3]);
    assert_eq!(applied.modseq(a.id), Some(2));
    assert_eq!(applied.modseq(b.id), Some(2));
    let ids: std::collections::HashSet<&String> = applied.inserted.iter().map(|(_, e)| e).collect();
    assert_eq!(ids.len(), 4, "email ids are distinct");
    assert_eq!(
        index.usage().unwrap(),
        Usage {
            bytes: 100,
            messages: 4
        }
    );

    // A relocation is not a change; a flag update is.
    let r = index
        .apply(&[Change::Relocate {
            mailbox: a.id,
            uid: 1,
            file_name: "new/a1".into(),
        }])
        .unwrap();
    assert!(r.modseqs.is_empty());
    let seen = Flags::system(SystemFlags::SEEN);
    let u = index
        .apply(&[Change::Update {
            mailbox: a.id,
            uid: 2,
            flags: seen.clone(),
            file_name: "cur/a2:2,S".into(),
        }])
        .unwrap();
    assert_eq!(u.modseq(a.id), Some(3));
    assert_eq!(index.find_by_base(a.id, "a2").unwrap().unwrap().uid, 2);
    assert_eq!(
        index.find_by_base(a.id, "a1").unwrap().unwrap().file_name,
        "new/a1"
    );
    assert!(index.find_by_base(a.id, "a").unwrap().is_none());
    assert_eq!(index.messages_in_new(a.id).unwrap().len(), 1);

    // Expunging the highest UID does not lower UIDNEXT; VANISHED remembers.
    let e = index
        .apply(&[Change::Expunge {
            mailbox: a.id,
            uid: 3,
        }])
        .unwrap();
    assert_eq!(e.modseq(a.id), Some(4));
    let (changed, vanished) = index.changes_since(a.id, 2).unwrap();
    assert_eq!(changed.iter().map(|m| m.uid).collect::<Vec<_>>(), [2]);
    assert_eq!(changed[0].flags, seen);
    assert_eq!(vanished, [3]);
    let again = index
        .apply(&[Change::Insert {
            mailbox: a.id,
            message: new("a4", 1),
        }])
        .unwrap();
    assert_eq!(again.inserted[0].0, 4);
    let c = index.counts(a.id).unwrap();
    assert_eq!((c.messages, c.unseen, c.deleted, c.size), (3, 2, 0, 31));
    // `\Recent`: every message until a session claims them; a claim moves
    // the first recent UID only forward and hands out each UID once.
    assert_eq!(c.recent, 3);
    assert_eq!(index.claim_recent(a.id, 4).unwrap(), 1);
    assert_eq!(index.counts(a.id).unwrap().recent, 1);
    assert_eq!(index.claim_recent(a.id, 3).unwrap(), 4);
    assert_eq!(index.claim_recent(a.id, 5).unwrap(), 4);
    assert_eq!(index.counts(a.id).unwrap().recent, 0);
    assert_eq!(index.claim_recent(a.id, 5).unwrap(), 5);
    let row = index
        .mailboxes()
        .unwrap()
        .into_iter()
        .find(|m| m.id == a.id)
        .unwrap();
    assert_eq!(row.first_recent_uid, 5);
    assert!(matches!(
        index.claim_recent(MailboxId(999), 1),
        Err(IndexError::NoMailbox)
    ));
    assert_eq!(
        index.usage().unwrap(),
        Usage {
            bytes: 61,
            messages: 4
        }
    );

    // A batch naming a missing mailbox changes nothing.
    let before = index.usage().unwrap();
    assert!(matches!(
        index.apply(&[
            Change::Insert {
                mailbox: a.id,
                message: new("x", 5)
            },
            Change::Insert {
                mailbox: MailboxId(999),
                message: new("y", 5)
            },
        ]),
        Err(IndexError::NoMailbox)
    ));
    assert_eq!(index.usage().unwrap(), before);
    assert_eq!(index.messages(a.id).unwrap().len(), 3);
    // each_message: the same rows in the same order, without file names.
    let mut streamed = Vec::new();
    index.each_message(a.id, &mut |m| streamed.push(m)).unwrap();
    let listed: Vec<MessageRow> = index
        .messages(a.id)
        .unwrap()
        .into_iter()
        .map(|m| MessageRow {
            file_name: String::new(),
            ..m
        })
        .collect();
    assert_eq!(streamed, listed);

    // Renames (even swaps) in one go; deletion frees the usage.
    index
        .rename_mailboxes(&[
            (a.id, MailboxName::parse("B").unwrap()),
            (b.id, MailboxName::parse("A").unwrap()),
        ])
        .unwrap();
    let names: Vec<(MailboxId, String)> = index
        .mailboxes()
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.name.to_string()))
        .collect();
    assert!(names.contains(&(a.id, "B".into())) && names.contains(&(b.id, "A".into())));
    index.delete_mailbox(b.id).unwrap();
    assert_eq!(
        index.usage().unwrap(),
        Usage {
            bytes: 31,
            messages: 3
        }
    );
    index.set_subscribed("A", true).unwrap();
    index.set_subscribed("Z", true).unwrap();
    index.set_subscribed("A", false).unwrap();
    assert_eq!(index.subscriptions().unwrap(), ["Z"]);
    index.check().unwrap();
}
