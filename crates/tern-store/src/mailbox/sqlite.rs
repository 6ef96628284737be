//! The embedded index: one SQLite database per user (`rusqlite`, SQLite
//! compiled in, so a fresh machine needs only a C compiler).
//!
//! Durability: WAL journal with `synchronous = FULL`, so every committed
//! transaction has its WAL frames fsynced before `COMMIT` returns — an
//! answered flag change or expunge survives kill -9 and power loss.
//! (`NORMAL` would fsync only at checkpoints: a power loss could undo the
//! last commits, which IMAP clients were already told about.) Writers use
//! `BEGIN IMMEDIATE` and wait up to [`BUSY_TIMEOUT`] for another process.
//!
//! The schema is versioned: `schema_migrations` lists the migrations
//! applied, [`MIGRATIONS`] holds them in order, and an index written by a
//! newer program is refused ([`IndexError::TooNew`]) rather than misread.
//! A database SQLite cannot read (not a database, corrupt pages) is
//! reported as [`IndexError::Corrupt`]; the store then rebuilds it from the
//! files. Opening reads only the schema (cheap: delivery may open a user's
//! index for every message); [`Index::check`] runs `PRAGMA quick_check`
//! for `tern mailbox reindex` (about 0.1 s per 100,000 messages).
//!
//! This module must never commit a change partially or hand out a UID
//! below a mailbox's UIDNEXT.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::flags::Flags;
use super::index::{
    Applied, Change, Counts, Index, IndexError, MailboxId, MailboxRow, MessageRow, SpecialUse,
    Usage,
};
use super::name::MailboxName;

/// How long a writer waits for another process's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one migration per entry; entry `i` is version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: mailboxes, messages, expunged UIDs, subscriptions, counters.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
     CREATE TABLE mailboxes (
         id INTEGER PRIMARY KEY,
         name TEXT NOT NULL UNIQUE,
         uidvalidity INTEGER NOT NULL,
         uidnext INTEGER NOT NULL,
         highestmodseq INTEGER NOT NULL,
         special_use TEXT,
         created INTEGER NOT NULL
     );
     CREATE TABLE messages (
         mailbox INTEGER NOT NULL REFERENCES mailboxes(id),
         uid INTEGER NOT NULL,
         file_name TEXT NOT NULL,
         flags INTEGER NOT NULL,
         keywords TEXT NOT NULL,
         modseq INTEGER NOT NULL,
         size INTEGER NOT NULL,
         internaldate INTEGER NOT NULL,
         savedate INTEGER NOT NULL,
         email_id TEXT NOT NULL,
         PRIMARY KEY (mailbox, uid)
     ) WITHOUT ROWID;
     CREATE INDEX messages_modseq ON messages (mailbox, modseq);
     CREATE TABLE expunged (
         mailbox INTEGER NOT NULL,
         uid INTEGER NOT NULL,
         modseq INTEGER NOT NULL,
         PRIMARY KEY (mailbox, uid)
     ) WITHOUT ROWID;
     CREATE TABLE subscriptions (name TEXT PRIMARY KEY) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES ('usage_bytes', 0), ('usage_messages', 0),
         ('next_email_id', 1);",
    // 2: look messages up by file name (idempotent delivery, sync).
    "CREATE INDEX messages_file ON messages (mailbox, file_name);",
    // 3: `\Recent` (IMAP4rev1): the first UID no session has seen yet.
    "ALTER TABLE mailboxes ADD COLUMN first_recent_uid INTEGER NOT NULL DEFAULT 1;",
];

/// The SQLite index of one user.
#[derive(Debug)]
pub struct SqliteIndex {
    conn: Connection,
    /// Identifies this database in object ids (its creation time).
    stamp: i64,
    data_version: i64,
}

fn backend(e: rusqlite::Error) -> IndexError {
    if let rusqlite::Error::SqliteFailure(err, _) = &e
        && matches!(
            err.code,
            rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
        )
    {
        return IndexError::Corrupt(e.to_string());
    }
    IndexError::Backend(e.to_string())
}

fn special_use_text(s: Option<SpecialUse>) -> Option<&'static str> {
    s.map(SpecialUse::as_imap)
}

impl SqliteIndex {
    /// Opens (creating if missing) the index at `path` and brings its
    /// schema up to date. `now` (Unix seconds) stamps a new database.
    pub fn open(path: &Path, now: i64) -> Result<SqliteIndex, IndexError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        // Reading the schema fails at once on a file that is not a database.
        conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(backend)?;
        let mut index = SqliteIndex {
            conn,
            stamp: 0,
            data_version: 0,
        };
        index.migrate(now)?;
        index.stamp = index
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'stamp'", [], |r| {
                r.get(0)
            })
            .map_err(backend)?;
        index.data_version = index.read_data_version()?;
        Ok(index)
    }

    fn migrate(&mut self, now: i64) -> Result<(), IndexError> {
        // Up to date (the usual case): no write transaction.
        let current: Option<i64> = self
            .conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .optional()
            .ok()
            .flatten();
        if current == Some(MIGRATIONS.len() as i64) {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .map_err(backend)?;
        let version: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if version > MIGRATIONS.len() as i64 {
            return Err(IndexError::TooNew(version));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![i as i64 + 1, now],
            )
            .map_err(backend)?;
            if i == 0 {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('stamp', ?1)",
                    params![now],
                )
                .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    fn read_data_version(&self) -> Result<i64, IndexError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(backend)
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64, IndexError> {
        self.conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .map_err(backend)
    }
}

fn mailbox_row(stamp: i64, r: &rusqlite::Row<'_>) -> rusqlite::Result<MailboxRow> {
    let id: i64 = r.get(0)?;
    let name: String = r.get(1)?;
    let special: Option<String> = r.get(5)?;
    Ok(MailboxRow {
        id: MailboxId(id),
        // Names were checked before they were stored.
        name: MailboxName::parse(&name).unwrap_or_else(|_| MailboxName::inbox()),
        uidvalidity: r.get::<_, i64>(2)? as u32,
        uidnext: r.get::<_, i64>(3)? as u32,
        highestmodseq: r.get::<_, i64>(4)? as u64,
        special_use: special.as_deref().and_then(SpecialUse::from_imap),
        object_id: format!("F{stamp:x}-{id:x}"),
        first_recent_uid: r.get::<_, i64>(6)? as u32,
    })
}

const MESSAGE_COLUMNS: &str =
    "uid, file_name, flags, keywords, modseq, size, internaldate, savedate, email_id";

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    let bits: i64 = r.get(2)?;
    let keywords: String = r.get(3)?;
    Ok(MessageRow {
        uid: r.get::<_, i64>(0)? as u32,
        file_name: r.get(1)?,
        flags: Flags::from_stored(bits as u8, &keywords),
        modseq: r.get::<_, i64>(4)? as u64,
        size: r.get::<_, i64>(5)? as u64,
        internaldate: r.get(6)?,
        savedate: r.get(7)?,
        email_id: r.get(8)?,
    })
}

impl Index for SqliteIndex {
    fn mailboxes(&mut self) -> Result<Vec<MailboxRow>, IndexError> {
        let stamp = self.stamp;
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, name, uidvalidity, uidnext, highestmodseq, special_use,
                        first_recent_uid
                 FROM mailboxes ORDER BY name",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([], |r| mailbox_row(stamp, r))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn create_mailbox(
        &mut self,
        name: &MailboxName,
        special_use: Option<SpecialUse>,
        uidvalidity: u32,
    ) -> Result<MailboxRow, IndexError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM mailboxes WHERE name = ?1)",
                params![name.as_str()],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if exists {
            return Err(IndexError::Exists);
        }
        tx.execute(
            "INSERT INTO mailboxes (name, uidvalidity, uidnext, highestmodseq, special_use, created)
             VALUES (?1, ?2, 1, 1, ?3, strftime('%s','now'))",
            params![
                name.as_str(),
                i64::from(uidvalidity),
                special_use_text(special_use)
            ],
        )
        .map_err(backend)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(backend)?;
        Ok(MailboxRow {
            id: MailboxId(id),
            name: name.clone(),
            uidvalidity,
            uidnext: 1,
            highestmodseq: 1,
            special_use,
            object_id: format!("F{:x}-{id:x}", self.stamp),
            first_recent_uid: 1,
        })
    }

    fn delete_mailbox(&mut self, id: MailboxId) -> Result<(), IndexError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let (count, bytes): (i64, i64) = tx
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages WHERE mailbox = ?1",
                params![id.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(backend)?;
        tx.execute("DELETE FROM messages WHERE mailbox = ?1", params![id.0])
            .map_err(backend)?;
        tx.execute("DELETE FROM expunged WHERE mailbox = ?1", params![id.0])
            .map_err(backend)?;
        let n = tx
            .execute("DELETE FROM mailboxes WHERE id = ?1", params![id.0])
            .map_err(backend)?;
        if n == 0 {
            return Err(IndexError::NoMailbox);
        }
        tx.execute(
            "UPDATE meta SET value = MAX(0, value - ?1) WHERE key = 'usage_bytes'",
            params![bytes],
        )
        .map_err(backend)?;
        tx.execute(
            "UPDATE meta SET value = MAX(0, value - ?1) WHERE key = 'usage_messages'",
            params![count],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    fn rename_mailboxes(&mut self, renames: &[(MailboxId, MailboxName)]) -> Result<(), IndexError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        // Two passes so that swapping names within the batch cannot collide.
        for (id, _) in renames {
            tx.execute(
                "UPDATE mailboxes SET name = char(1) || id WHERE id = ?1",
                params![id.0],
            )
            .map_err(backend)?;
        }
        for (id, name) in renames {
            tx.execute(
                "UPDATE mailboxes SET name = ?2 WHERE id = ?1",
                params![id.0, name.as_str()],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    IndexError::Exists
                }
                e => backend(e),
            })?;
        }
        tx.commit().map_err(backend)
    }

    fn set_special_use(
        &mut self,
        id: MailboxId,
        special_use: Option<SpecialUse>,
    ) -> Result<(), IndexError> {
        self.conn
            .execute(
                "UPDATE mailboxes SET special_use = ?2 WHERE id = ?1",
                params![id.0, special_use_text(special_use)],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn subscriptions(&mut self) -> Result<Vec<String>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name FROM subscriptions ORDER BY name")
            .map_err(backend)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn set_subscribed(&mut self, name: &str, subscribed: bool) -> Result<(), IndexError> {
        let sql = if subscribed {
            "INSERT OR IGNORE INTO subscriptions (name) VALUES (?1)"
        } else {
            "DELETE FROM subscriptions WHERE name = ?1"
        };
        self.conn.execute(sql, params![name]).map_err(backend)?;
        Ok(())
    }

    fn messages(&mut self, id: MailboxId) -> Result<Vec<MessageRow>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = ?1 ORDER BY uid"
            ))
            .map_err(backend)?;
        let rows = st.query_map(params![id.0], message_row).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn each_message(
        &mut self,
        id: MailboxId,
        f: &mut dyn FnMut(MessageRow),
    ) -> Result<(), IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT uid, '', flags, keywords, modseq, size, internaldate, savedate, email_id
                 FROM messages WHERE mailbox = ?1 ORDER BY uid",
            )
            .map_err(backend)?;
        let mut rows = st.query(params![id.0]).map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            f(message_row(r).map_err(backend)?);
        }
        Ok(())
    }

    fn messages_in_new(&mut self, id: MailboxId) -> Result<Vec<MessageRow>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE mailbox = ?1 AND file_name >= 'new/' AND file_name < 'new0' ORDER BY uid"
            ))
            .map_err(backend)?;
        let rows = st.query_map(params![id.0], message_row).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn messages_by_uid(
        &mut self,
        id: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<MessageRow>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = ?1 AND uid = ?2"
            ))
            .map_err(backend)?;
        let mut sorted = uids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = Vec::with_capacity(sorted.len());
        for uid in sorted {
            if let Some(row) = st
                .query_row(params![id.0, i64::from(uid)], message_row)
                .optional()
                .map_err(backend)?
            {
                out.push(row);
            }
        }
        Ok(out)
    }

    fn find_by_base(
        &mut self,
        id: MailboxId,
        base: &str,
    ) -> Result<Option<MessageRow>, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox = ?1
                 AND (file_name = 'new/' || ?2 OR file_name = 'cur/' || ?2
                      OR (file_name >= 'cur/' || ?2 || ':' AND file_name < 'cur/' || ?2 || ';'))"
            ))
            .map_err(backend)?;
        st.query_row(params![id.0, base], message_row)
            .optional()
            .map_err(backend)
    }

    fn changes_since(
        &mut self,
        id: MailboxId,
        modseq: u64,
    ) -> Result<(Vec<MessageRow>, Vec<u32>), IndexError> {
        let changed = {
            let mut st = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE mailbox = ?1 AND modseq > ?2 ORDER BY uid"
                ))
                .map_err(backend)?;
            let rows = st
                .query_map(params![id.0, modseq as i64], message_row)
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)?
        };
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT uid FROM expunged WHERE mailbox = ?1 AND modseq > ?2 ORDER BY uid",
            )
            .map_err(backend)?;
        let rows = st
            .query_map(params![id.0, modseq as i64], |r| {
                Ok(r.get::<_, i64>(0)? as u32)
            })
            .map_err(backend)?;
        let vanished = rows.collect::<Result<Vec<_>, _>>().map_err(backend)?;
        Ok((changed, vanished))
    }

    fn counts(&mut self, id: MailboxId) -> Result<Counts, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM((flags & 1) = 0), 0),
                        COALESCE(SUM((flags & 8) != 0), 0), COALESCE(SUM(size), 0),
                        COALESCE(SUM(uid >= (SELECT first_recent_uid FROM mailboxes
                                              WHERE id = ?1)), 0)
                 FROM messages WHERE mailbox = ?1",
            )
            .map_err(backend)?;
        st.query_row(params![id.0], |r| {
            Ok(Counts {
                messages: r.get::<_, i64>(0)? as u32,
                unseen: r.get::<_, i64>(1)? as u32,
                deleted: r.get::<_, i64>(2)? as u32,
                size: r.get::<_, i64>(3)? as u64,
                recent: r.get::<_, i64>(4)? as u32,
            })
        })
        .map_err(backend)
    }

    fn claim_recent(&mut self, id: MailboxId, upto: u32) -> Result<u32, IndexError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let first: i64 = tx
            .query_row(
                "SELECT first_recent_uid FROM mailboxes WHERE id = ?1",
                params![id.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?
            .ok_or(IndexError::NoMailbox)?;
        if first < i64::from(upto) {
            tx.execute(
                "UPDATE mailboxes SET first_recent_uid = ?2 WHERE id = ?1",
                params![id.0, i64::from(upto)],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        Ok(first as u32)
    }

    fn apply(&mut self, changes: &[Change]) -> Result<Applied, IndexError> {
        let stamp = self.stamp;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let mut applied = Applied::default();
        // (mailbox, uidnext, new modseq, changed)
        let mut boxes: Vec<(MailboxId, i64, i64, bool)> = Vec::new();
        let mut bytes_delta: i64 = 0;
        let mut count_delta: i64 = 0;
        let mut next_email: i64 = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'next_email_id'",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let email_before = next_email;
        {
            let mut get_box = tx
                .prepare_cached("SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?1")
                .map_err(backend)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (mailbox, uid, file_name, flags, keywords, modseq, size,
                         internaldate, savedate, email_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(backend)?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE messages SET flags = ?3, keywords = ?4, file_name = ?5, modseq = ?6
                     WHERE mailbox = ?1 AND uid = ?2",
                )
                .map_err(backend)?;
            let mut relocate = tx
                .prepare_cached(
                    "UPDATE messages SET file_name = ?3 WHERE mailbox = ?1 AND uid = ?2",
                )
                .map_err(backend)?;
            let mut remove = tx
                .prepare_cached(
                    "DELETE FROM messages WHERE mailbox = ?1 AND uid = ?2 RETURNING size",
                )
                .map_err(backend)?;
            let mut tomb = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO expunged (mailbox, uid, modseq) VALUES (?1, ?2, ?3)",
                )
                .map_err(backend)?;
            for change in changes {
                let mailbox = match change {
                    Change::Insert { mailbox, .. }
                    | Change::Update { mailbox, .. }
                    | Change::Relocate { mailbox, .. }
                    | Change::Expunge { mailbox, .. } => *mailbox,
                };
                let slot = match boxes.iter().position(|(m, _, _, _)| *m == mailbox) {
                    Some(i) => i,
                    None => {
                        let (uidnext, modseq): (i64, i64) = get_box
                            .query_row(params![mailbox.0], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                            .map_err(backend)?
                            .ok_or(IndexError::NoMailbox)?;
                        boxes.push((mailbox, uidnext, modseq + 1, false));
                        boxes.len() - 1
                    }
                };
                let modseq = boxes[slot].2;
                if !matches!(change, Change::Relocate { .. }) {
                    boxes[slot].3 = true;
                }
                match change {
                    Change::Insert { message, .. } => {
                        let uid = boxes[slot].1;
                        if uid > i64::from(u32::MAX) {
                            return Err(IndexError::Backend("mailbox UIDs exhausted".into()));
                        }
                        boxes[slot].1 += 1;
                        let email_id = match &message.email_id {
                            Some(e) => e.clone(),
                            None => {
                                let e = format!("M{stamp:x}-{next_email:x}");
                                next_email += 1;
                                e
                            }
                        };
                        insert
                            .execute(params![
                                mailbox.0,
                                uid,
                                message.file_name,
                                i64::from(message.flags.system.bits()),
                                message.flags.keywords_text(),
                                modseq,
                                message.size as i64,
                                message.internaldate,
                                message.savedate,
                                email_id,
                            ])
                            .map_err(backend)?;
                        bytes_delta += message.size as i64;
                        count_delta += 1;
                        applied.inserted.push((uid as u32, email_id));
                    }
                    Change::Update {
                        uid,
                        flags,
                        file_name,
                        ..
                    } => {
                        update
                            .execute(params![
                                mailbox.0,
                                i64::from(*uid),
                                i64::from(flags.system.bits()),
                                flags.keywords_text(),
                                file_name,
                                modseq
                            ])
                            .map_err(backend)?;
                    }
                    Change::Relocate { uid, file_name, .. } => {
                        relocate
                            .execute(params![mailbox.0, i64::from(*uid), file_name])
                            .map_err(backend)?;
                    }
                    Change::Expunge { uid, .. } => {
                        let size: Option<i64> = remove
                            .query_row(params![mailbox.0, i64::from(*uid)], |r| r.get(0))
                            .optional()
                            .map_err(backend)?;
                        if let Some(size) = size {
                            bytes_delta -= size;
                            count_delta -= 1;
                            tomb.execute(params![mailbox.0, i64::from(*uid), modseq])
                                .map_err(backend)?;
                        }
                    }
                }
            }
            let mut put_box = tx
                .prepare_cached(
                    "UPDATE mailboxes SET uidnext = ?2, highestmodseq = ?3 WHERE id = ?1",
                )
                .map_err(backend)?;
            for (mailbox, uidnext, modseq, changed) in &boxes {
                if !changed {
                    continue;
                }
                put_box
                    .execute(params![mailbox.0, uidnext, modseq])
                    .map_err(backend)?;
                applied.modseqs.push((*mailbox, *modseq as u64));
            }
            if bytes_delta != 0 || count_delta != 0 {
                let mut meta = tx
                    .prepare_cached("UPDATE meta SET value = MAX(0, value + ?2) WHERE key = ?1")
                    .map_err(backend)?;
                meta.execute(params!["usage_bytes", bytes_delta])
                    .map_err(backend)?;
                meta.execute(params!["usage_messages", count_delta])
                    .map_err(backend)?;
            }
            if next_email != email_before {
                tx.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'next_email_id'",
                    params![next_email],
                )
                .map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)?;
        Ok(applied)
    }

    fn usage(&mut self) -> Result<Usage, IndexError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT (SELECT value FROM meta WHERE key = 'usage_bytes'),
                        (SELECT value FROM meta WHERE key = 'usage_messages')",
            )
            .map_err(backend)?;
        st.query_row([], |r| {
            Ok(Usage {
                bytes: r.get::<_, i64>(0)? as u64,
                messages: r.get::<_, i64>(1)? as u64,
            })
        })
        .map_err(backend)
    }

    fn check(&mut self) -> Result<(), IndexError> {
        let mut st = self.conn.prepare("PRAGMA quick_check").map_err(backend)?;
        let rows: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(())
        } else {
            Err(IndexError::Corrupt(rows.join("; ")))
        }
    }

    fn changed_elsewhere(&mut self) -> Result<bool, IndexError> {
        let v = self.read_data_version()?;
        let changed = v != self.data_version;
        self.data_version = v;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_keeps_the_index_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        let mut index = SqliteIndex::open(&path, 1_700_000_000).unwrap();
        assert_eq!(index.schema_version().unwrap(), MIGRATIONS.len() as i64);
        super::super::index::check_contract(&mut index);
        // Reopening keeps everything, without migrating again.
        drop(index);
        let mut index = SqliteIndex::open(&path, 1_800_000_000).unwrap();
        assert_eq!(index.usage().unwrap().messages, 3);
        let applied: i64 = index
            .conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
        // Durability settings.
        let mode: String = index
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = index
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), sync), ("wal", 2));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.sqlite");
        std::fs::write(&path, vec![0x42; 8192]).unwrap();
        assert!(matches!(
            SqliteIndex::open(&path, 1),
            Err(IndexError::Corrupt(_))
        ));
    }
}
