//! The POP3 driver: pumps bytes between a socket and a sans-IO
//! [`tern_pop3::Session`], answers its SASL questions through the shared
//! authentication service (`crate::auth`, with the brute-force tracker
//! and the password gate), runs the STLS handshake (nothing read before
//! it survives), and serves the maildrop from the mail store.
//!
//! * The maildrop is the user's INBOX, snapshotted at login (messages by
//!   UID). It is locked per user for the session: in this process (a set
//!   of users, checked before the store is opened) and across processes
//!   ([`UserStore::try_lock_maildrop`]: an exclusive `flock` on
//!   `tern.pop3.lock` in the user's Maildir, released when the session
//!   ends or its process dies). A second POP3 session of the same user
//!   gets `-ERR [IN-USE]`. IMAP sessions are not locked out; a message
//!   they expunge meanwhile answers RETR with `-ERR [SYS/PERM]`.
//! * `login_delay` (RFC 2449 `LOGIN-DELAY`): the lock file keeps the time
//!   of the last login; a login sooner than the delay after it gets
//!   `-ERR [LOGIN-DELAY]` (checked after the password, under the lock).
//! * LIST and STAT report what RETR sends ([`tern_pop3::wire_size`]: CRLF
//!   line ends, the last line ended), scanned at login in 64 KiB chunks
//!   ([`tern_pop3::Scanner`]); sizes are cached per (user, UIDVALIDITY,
//!   UID), since a stored message never changes.
//! * RETR reads the file's first 256 KiB in one trip to a blocking thread;
//!   after RETR n, the messages after n are read ahead in batches (up to
//!   32 messages or about 256 KiB per trip) while the client takes message
//!   n, so a client downloading in order waits for no disk read and costs
//!   one thread hand-off per batch. A
//!   message read whole that is already in the wire form
//!   ([`tern_pop3::Scan::verbatim`]: CRLF, no line starting with `.`,
//!   which is most mail received over SMTP; at most its last line end
//!   missing) is sent as it is, in one vectored write; any other goes through a [`tern_pop3::DotStuffer`],
//!   larger ones streamed in 64 KiB chunks. TOP reads the file and sends
//!   [`tern_mime::pop3::top`] of it.
//! * UIDL is `%08x%08x` of UIDVALIDITY and UID (Dovecot's `%08Xv%08Xu`
//!   in lower case): stable across sessions and restarts, never reused.
//! * Deletions happen only at QUIT, in one store call under the user's
//!   store lock: [`tern_store::mailbox::UserStore::remove_uids`]
//!   (`delete_mode = "expunge"`) or `move_messages` to the `\Trash`
//!   mailbox (`"move-to-trash"`). A connection dropped or timed out
//!   deletes nothing.
//!
//! Timeouts: one minute before authentication (capped by the idle
//! timeout), then the listener's idle timeout, or else the service's
//! (RFC 1939: at least ten minutes). This module never parses POP3 itself and never logs a secret.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IoSlice, Read as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_pop3::{DotStuffer, Event, MaildropError, MessageInfo, Scanner, Session, SessionConfig};
use tern_sasl::{Answer, FailureKind};
use tern_smtp::server::ServerConfig;
use tern_store::mailbox::{
    MailboxError, MailboxId, MailboxRow, Mailboxes, MaildropLock, MessageRow, SpecialUse, UserStore,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Context;
use crate::conn::escape_for_log;
use crate::tls::MaybeTlsStream;

/// Waiting for a command before authentication (at most).
const PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// The default autologout timer (RFC 1939 section 3: at least 10 minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Cached message sizes before the cache is emptied.
const SIZE_CACHE_LIMIT: usize = 1_000_000;
/// Bytes read from a message file at a time by RETR after the first read.
const CHUNK: usize = 64 * 1024;
/// Bytes RETR reads first (most messages are whole in one trip to a
/// blocking thread).
const FIRST_CHUNK: usize = 256 * 1024;
/// The most TOP allocates ahead from the size the index records.
const MAX_SIZE_HINT: usize = 64 * 1024 * 1024;
/// Messages read ahead in one trip to a blocking thread (see `ReadAhead`).
const READ_AHEAD_MESSAGES: usize = 32;
/// Bytes read ahead in one trip, about (a first message may exceed it by
/// up to `FIRST_CHUNK`).
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// What QUIT does with the messages a client deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeleteMode {
    /// Remove them from the store.
    #[default]
    Expunge,
    /// Move them to the user's `\Trash` mailbox.
    MoveToTrash,
}

/// The POP3 service: the mail store, the per-user maildrop locks and the
/// size cache, shared by every POP3 session.
#[derive(Debug)]
pub struct Pop3Service {
    /// Every user's mailboxes (the same as IMAP's).
    pub mailboxes: Arc<Mailboxes>,
    /// What QUIT does with deleted messages.
    pub delete_mode: DeleteMode,
    /// The autologout timer.
    pub idle_timeout: Duration,
    /// The least time between two logins of a user (RFC 2449
    /// `LOGIN-DELAY`; zero: none).
    pub login_delay: Duration,
    locked: Mutex<HashSet<String>>,
    sizes: Mutex<HashMap<(String, u32, u32), u64>>,
}

impl Pop3Service {
    /// A service over `mailboxes`.
    pub fn new(
        mailboxes: Arc<Mailboxes>,
        delete_mode: DeleteMode,
        idle_timeout: Duration,
        login_delay: Duration,
    ) -> Self {
        Pop3Service {
            mailboxes,
            delete_mode,
            idle_timeout,
            login_delay,
            locked: Mutex::new(HashSet::new()),
            sizes: Mutex::new(HashMap::new()),
        }
    }

    /// The in-process half of the maildrop lock (the `flock` of
    /// [`UserStore::try_lock_maildrop`] is the other): refuses a second
    /// session of the process without opening the store.
    fn claim_maildrop(self: &Arc<Self>, user: &str) -> Option<MaildropClaim> {
        let key = user.to_ascii_lowercase();
        let mut l = self.locked.lock().unwrap_or_else(|e| e.into_inner());
        if !l.insert(key.clone()) {
            return None;
        }
        Some(MaildropClaim {
            service: Arc::clone(self),
            user: key,
        })
    }

    fn cached_size(&self, key: &(String, u32, u32)) -> Option<u64> {
        let s = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        s.get(key).copied()
    }

    fn cache_size(&self, key: (String, u32, u32), size: u64) {
        let mut s = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= SIZE_CACHE_LIMIT {
            s.clear();
        }
        s.insert(key, size);
    }
}

/// A user's maildrop claimed in this process; dropping it unclaims.
#[derive(Debug)]
struct MaildropClaim {
    service: Arc<Pop3Service>,
    user: String,
}

impl Drop for MaildropClaim {
    fn drop(&mut self) {
        let mut l = self
            .service
            .locked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        l.remove(&self.user);
    }
}

/// The open maildrop of a session.
#[derive(Debug)]
struct Maildrop {
    store: Arc<UserStore>,
    inbox: MailboxId,
    uidvalidity: u32,
    /// INBOX at login.
    mailbox: Arc<MailboxRow>,
    /// The messages at login, by message number - 1.
    rows: Vec<Arc<MessageRow>>,
    /// The `flock` held for the session (across processes).
    _lock: MaildropLock,
    /// The claim in this process.
    _claim: MaildropClaim,
}

/// Why a maildrop was not opened.
#[derive(Debug)]
enum OpenError {
    /// Refused: `[IN-USE]` or `[LOGIN-DELAY]`.
    Refused(MaildropError),
    /// The store failed.
    Store(MailboxError),
}

impl From<MailboxError> for OpenError {
    fn from(e: MailboxError) -> Self {
        OpenError::Store(e)
    }
}

/// The UIDL of a message.
pub fn uidl(uidvalidity: u32, uid: u32) -> String {
    format!("{uidvalidity:08x}{uid:08x}")
}

fn store_error(e: &MailboxError) -> MaildropError {
    match e {
        MailboxError::NoSuchMessage(_) | MailboxError::UidValidityChanged => {
            MaildropError::Permanent
        }
        MailboxError::InvalidUser { .. } => MaildropError::Permanent,
        _ => MaildropError::Temporary,
    }
}

/// Whether a login at `now` comes too soon after one at `last` (Unix
/// seconds). A last login in the future (the clock went back) does not
/// hold anyone out.
fn too_soon(last: Option<i64>, now: i64, delay: Duration) -> bool {
    let delay = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
    match last {
        Some(last) if delay > 0 => last <= now && now - last < delay,
        _ => false,
    }
}

/// Opens and snapshots `user`'s INBOX (blocking: call on a blocking
/// thread): takes the maildrop's `flock` (`[IN-USE]` if another process
/// or session holds it), checks and records the login time
/// (`[LOGIN-DELAY]`), and computes the sizes not yet cached.
fn open_maildrop(
    service: &Pop3Service,
    user: &str,
    claim: MaildropClaim,
    now: i64,
) -> Result<(Maildrop, Vec<MessageInfo>), OpenError> {
    let store = service.mailboxes.open(user)?;
    let Some(mut lock) = store.try_lock_maildrop()? else {
        return Err(OpenError::Refused(MaildropError::InUse));
    };
    if too_soon(lock.last_login(), now, service.login_delay) {
        return Err(OpenError::Refused(MaildropError::LoginDelay));
    }
    let selected = store.select("INBOX")?;
    let uidvalidity = selected.mailbox.uidvalidity;
    let inbox = selected.mailbox.id;
    let mut infos = Vec::with_capacity(selected.messages.len());
    let mut rows = Vec::with_capacity(selected.messages.len());
    let mailbox = Arc::new(selected.mailbox.clone());
    let key_user = user.to_ascii_lowercase();
    let mut buf = Vec::with_capacity(CHUNK);
    for m in &selected.messages {
        let key = (key_user.clone(), uidvalidity, m.uid);
        let size = match service.cached_size(&key) {
            Some(s) => s,
            None => {
                // Scanned in chunks through one buffer: a large message is
                // never held whole.
                let mut f = match store.open_snapshot_message(&mailbox, m) {
                    Ok(f) => f,
                    // Expunged by another session meanwhile: not in the maildrop.
                    Err(MailboxError::NoSuchMessage(_)) => continue,
                    Err(e) => return Err(e.into()),
                };
                let mut scanner = Scanner::new();
                loop {
                    let eof =
                        read_chunk(&mut f, &mut buf, CHUNK).map_err(|source| MailboxError::Io {
                            op: "read",
                            path: m.file_name.clone().into(),
                            source,
                        })?;
                    scanner.push(&buf);
                    if eof {
                        break;
                    }
                }
                let s = scanner.finish().size;
                service.cache_size(key, s);
                s
            }
        };
        rows.push(Arc::new(m.clone()));
        infos.push(MessageInfo {
            size,
            uidl: uidl(uidvalidity, m.uid),
        });
    }
    if !service.login_delay.is_zero()
        && let Err(e) = lock.record_login(now)
    {
        // Only this login's delay is lost; the session goes on.
        warn!(error = %e, "POP3 login time not recorded");
    }
    Ok((
        Maildrop {
            store,
            inbox,
            uidvalidity,
            mailbox,
            rows,
            _lock: lock,
            _claim: claim,
        },
        infos,
    ))
}

/// Commits the deletions (blocking).
fn commit(maildrop: &Maildrop, mode: DeleteMode, numbers: &[u32]) -> Result<usize, MailboxError> {
    let uids: Vec<u32> = numbers
        .iter()
        .filter_map(|n| {
            maildrop
                .rows
                .get((*n as usize).wrapping_sub(1))
                .map(|m| m.uid)
        })
        .collect();
    if uids.is_empty() {
        return Ok(0);
    }
    match mode {
        DeleteMode::Expunge => Ok(maildrop
            .store
            .remove_uids(maildrop.inbox, maildrop.uidvalidity, &uids)?
            .len()),
        DeleteMode::MoveToTrash => {
            let inbox = maildrop.store.mailbox("INBOX")?;
            if inbox.uidvalidity != maildrop.uidvalidity {
                return Err(MailboxError::UidValidityChanged);
            }
            let trash = maildrop
                .store
                .list()?
                .into_iter()
                .find(|e| e.special_use == Some(SpecialUse::Trash))
                .and_then(|e| e.id)
                .ok_or_else(|| MailboxError::NoSuchMailbox("\\Trash".into()))?;
            Ok(maildrop
                .store
                .move_messages(maildrop.inbox, &uids, trash)?
                .uids
                .len())
        }
    }
}

/// The session settings for a listener, from its SMTP-side settings (TLS,
/// mechanisms, plaintext AUTH).
fn session_config(
    smtp: &ServerConfig,
    tls_configured: bool,
    login_delay: Duration,
) -> SessionConfig {
    SessionConfig {
        mechanisms: smtp.auth_mechanisms.clone(),
        plaintext_auth_allowed: smtp.auth_plaintext_allowed,
        starttls: !smtp.tls_active && tls_configured,
        login_delay: match login_delay.as_secs() {
            0 => None,
            s => Some(u32::try_from(s).unwrap_or(u32::MAX)),
        },
        ..SessionConfig::default()
    }
}

async fn write(
    stream: &mut Option<MaybeTlsStream>,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let Some(s) = stream.as_mut() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    match tokio::time::timeout(timeout, s.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Reads up to `limit` bytes into `buf` (cleared first); true at the end
/// of the file.
fn read_chunk(file: &mut std::fs::File, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<bool> {
    buf.clear();
    file.by_ref().take(limit as u64).read_to_end(buf)?;
    Ok(buf.len() < limit)
}

/// A message's first read: its bytes (the whole message, or its first
/// chunk) and, when there is more, the open file to read the rest from.
#[derive(Debug)]
struct FirstRead {
    /// The rest of the message (`None`: `bytes` is all of it).
    more: Option<std::fs::File>,
    /// What was read.
    bytes: Vec<u8>,
}

/// A first read done (or failed) on a blocking thread.
type Opened = Result<FirstRead, MailboxError>;

/// Opens message `row` and reads it whole (`whole`: TOP) or its first
/// `FIRST_CHUNK` bytes (RETR: most messages are whole). Blocking.
fn first_read(store: &UserStore, mailbox: &MailboxRow, row: &MessageRow, whole: bool) -> Opened {
    let uid = row.uid;
    let mut file = store.open_snapshot_message(mailbox, row)?;
    // The index knows the file's size: one allocation, no regrowth (the
    // size is only a hint: reading goes to the end of the file).
    let hint = usize::try_from(row.size).unwrap_or(usize::MAX);
    let cap = if whole { MAX_SIZE_HINT } else { FIRST_CHUNK };
    let mut bytes = Vec::with_capacity(hint.min(cap).saturating_add(1));
    let eof = if whole {
        file.read_to_end(&mut bytes).map(|_| true)
    } else {
        read_chunk(&mut file, &mut bytes, FIRST_CHUNK)
    }
    .map_err(|source| MailboxError::Io {
        op: "read",
        path: format!("message UID {uid}").into(),
        source,
    })?;
    Ok(FirstRead {
        more: (!eof).then_some(file),
        bytes,
    })
}

/// Messages RETR is likely to ask for next (the ones after the message it
/// sent), read ahead in batches: one trip to a blocking thread reads the
/// first chunks of up to `READ_AHEAD_MESSAGES` messages or about
/// `READ_AHEAD_BYTES`, while the client takes the message before. A
/// client that downloads everything in order then waits for no disk read
/// and costs one thread hand-off per batch, not one per message.
///
/// Bounded: one batch in flight or ready, at most `READ_AHEAD_BYTES` (or
/// one message's first chunk) of memory, and at most one open file (a
/// message larger than its first chunk ends its batch).
#[derive(Debug, Default)]
struct ReadAhead {
    /// The batch being read: its first message number, the number after
    /// its last, and the task.
    pending: Option<(u32, u32, tokio::task::JoinHandle<Vec<Opened>>)>,
    /// Reads done, by message number, ascending.
    ready: VecDeque<(u32, Opened)>,
}

impl ReadAhead {
    /// Whether message `number` is read ahead or being read.
    fn covers(&self, number: u32) -> bool {
        self.ready.iter().any(|(n, _)| *n == number)
            || self
                .pending
                .as_ref()
                .is_some_and(|(first, end, _)| (*first..*end).contains(&number))
    }

    /// The read of message `number`, if it was read ahead (waiting for
    /// its batch if need be). Reads of earlier messages are dropped.
    async fn take(&mut self, number: u32) -> Option<Opened> {
        if let Some((first, end, _)) = &self.pending
            && (*first..*end).contains(&number)
            && let Some((first, _, task)) = self.pending.take()
        {
            let reads = task.await.unwrap_or_default();
            self.ready = (first..).zip(reads).collect();
        }
        while let Some((n, _)) = self.ready.front() {
            if *n >= number {
                break;
            }
            self.ready.pop_front();
        }
        match self.ready.front() {
            Some((n, _)) if *n == number => self.ready.pop_front().map(|(_, r)| r),
            _ => None,
        }
    }

    /// Starts reading ahead from message `first` (1-based), unless it is
    /// past the end. The batch is chosen from the sizes the index records:
    /// up to `READ_AHEAD_MESSAGES` messages and about `READ_AHEAD_BYTES`,
    /// ending at the first message larger than one chunk.
    fn start(&mut self, maildrop: &Maildrop, first: u32) {
        let Some(rows) = maildrop.rows.get(first as usize - 1..) else {
            return;
        };
        let mut batch: Vec<Arc<MessageRow>> = Vec::new();
        let mut budget = READ_AHEAD_BYTES;
        for row in rows.iter().take(READ_AHEAD_MESSAGES) {
            let size = usize::try_from(row.size).unwrap_or(usize::MAX);
            if !batch.is_empty() && size.min(FIRST_CHUNK) > budget {
                break;
            }
            budget = budget.saturating_sub(size.min(FIRST_CHUNK));
            batch.push(Arc::clone(row));
            if size >= FIRST_CHUNK {
                break;
            }
        }
        if batch.is_empty() {
            return;
        }
        let end = first.saturating_add(batch.len() as u32);
        let store = Arc::clone(&maildrop.store);
        let mailbox = Arc::clone(&maildrop.mailbox);
        self.ready.clear();
        self.pending = Some((
            first,
            end,
            tokio::task::spawn_blocking(move || {
                let mut reads = Vec::with_capacity(batch.len());
                for row in batch {
                    let read = first_read(&store, &mailbox, &row, false);
                    // A file larger than the index said: at most one open
                    // file per batch.
                    let more = matches!(&read, Ok(r) if r.more.is_some());
                    reads.push(read);
                    if more {
                        break;
                    }
                }
                reads
            }),
        ));
    }
}

/// Sends message `number` (RETR, or TOP with `lines`). `Err` only when
/// the connection failed; a store failure is answered to the session.
async fn retrieve(
    session: &mut Session,
    stream: &mut Option<MaybeTlsStream>,
    maildrop: &Maildrop,
    number: u32,
    lines: Option<u64>,
    timeout: Duration,
    ahead: &mut ReadAhead,
) -> std::io::Result<()> {
    let Some(row) = maildrop.rows.get(number as usize - 1).cloned() else {
        session.retrieve_failed(MaildropError::Permanent);
        return Ok(());
    };
    let uid = row.uid;
    // RETR n+1 usually follows RETR n: it may be read already.
    let ahead_read = match lines {
        None => ahead.take(number).await,
        Some(_) => None,
    };
    let opened = match ahead_read {
        Some(read) => Ok(read),
        None => {
            let store = Arc::clone(&maildrop.store);
            let mailbox = Arc::clone(&maildrop.mailbox);
            let whole = lines.is_some();
            tokio::task::spawn_blocking(move || first_read(&store, &mailbox, &row, whole)).await
        }
    };
    if lines.is_none() && !ahead.covers(number + 1) {
        ahead.start(maildrop, number + 1);
    }
    let FirstRead { more, bytes } = match opened {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            info!(uid, error = %e, "POP3 message cannot be read");
            session.retrieve_failed(store_error(&e));
            return Ok(());
        }
        Err(_) => {
            session.retrieve_failed(MaildropError::Temporary);
            return Ok(());
        }
    };
    session.retrieve_ready();
    let head = session.take_output();
    if lines.is_none() && more.is_none() {
        let scan = tern_pop3::scan(&bytes);
        if scan.verbatim {
            // Most stored mail is already in the wire form (CRLF, no line
            // starting with a dot): sent as it is, in one vectored write.
            let trailer = scan.verbatim_trailer();
            write_all_vectored(stream, &[&head, &bytes, trailer], timeout).await?;
            session.retrieve_done();
            return Ok(());
        }
    }
    let mut out = head;
    let out = &mut out;
    let mut stuffer = DotStuffer::new();
    match lines {
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            stuffer.push(tern_mime::pop3::top(&bytes, n), out);
        }
        None => {
            stuffer.push(&bytes, out);
            let mut chunk = bytes;
            let mut file = more;
            while let Some(mut f) = file.take() {
                write(stream, out, timeout).await?;
                out.clear();
                // A read error after the +OK cannot be reported any more:
                // the connection is closed mid-message, so the client sees
                // no terminating dot and keeps nothing.
                let (f, c, eof) = tokio::task::spawn_blocking(move || {
                    let r = read_chunk(&mut f, &mut chunk, CHUNK);
                    (f, chunk, r)
                })
                .await
                .map_err(|_| std::io::Error::other("read task failed"))?;
                chunk = c;
                if !eof? {
                    file = Some(f);
                }
                stuffer.push(&chunk, out);
            }
        }
    }
    stuffer.finish(out);
    write(stream, out, timeout).await?;
    session.retrieve_done();
    Ok(())
}

/// Writes every buffer of `bufs`, in as few system calls as the stream
/// allows (one, usually, on a plain TCP connection).
async fn write_all_vectored(
    stream: &mut Option<MaybeTlsStream>,
    bufs: &[&[u8]],
    timeout: Duration,
) -> std::io::Result<()> {
    let Some(s) = stream.as_mut() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    let all = async {
        let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut slices = &mut slices[..];
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let n = s.write_vectored(slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Runs one POP3 connection to its end. The stream is already encrypted
/// on implicit-TLS listeners (port 995).
pub(crate) async fn run(
    ctx: Arc<Context>,
    service: Arc<Pop3Service>,
    stream: MaybeTlsStream,
    peer: SocketAddr,
    smtp: Arc<ServerConfig>,
    idle_timeout: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls = stream.tls_info().is_some();
    let mut stream = Some(stream);
    let mut session = Session::new(
        session_config(&smtp, ctx.tls.is_some(), service.login_delay),
        tls,
    );
    let authn =
        crate::auth::Authenticator::new(Arc::clone(&ctx), peer.ip(), crate::auth::Protocol::Pop3);
    session.greet();
    let idle = idle_timeout.unwrap_or(service.idle_timeout);
    let mut maildrop: Option<Maildrop> = None;
    let mut ahead = ReadAhead::default();
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    'session: loop {
        while let Some(event) = session.poll_event() {
            match event {
                Event::StartTls => {
                    let out = session.take_output();
                    if write(&mut stream, &out, idle).await.is_err() {
                        break 'session;
                    }
                    let Some(tlsm) = ctx.tls.as_ref() else {
                        break 'session;
                    };
                    let Some(plain) = stream.take() else {
                        break 'session;
                    };
                    match plain.upgrade(&tlsm.acceptor(), ctx.handshake_timeout).await {
                        Ok(s) => {
                            stream = Some(s);
                            info!("POP3 STLS established");
                            session.tls_established();
                        }
                        Err(e) => {
                            info!(error = %e, "POP3 STLS handshake failed; closing");
                            return;
                        }
                    }
                }
                Event::AuthStart { .. } => {
                    if !authn.begin(|start| session.auth_begin(start)) {
                        session.auth_answer(Answer::Fail(FailureKind::Temporary));
                    }
                }
                Event::Auth(question) => {
                    let answer = match crate::auth::Question::from_pop3(question) {
                        Some(q) => authn.answer(q).await,
                        None => Answer::Fail(FailureKind::Temporary),
                    };
                    session.auth_answer(answer);
                }
                Event::AuthFailed { kind } => {
                    authn.failed(session.auth_mechanism(), None, kind);
                    info!(kind = ?kind, "POP3 authentication failed");
                }
                Event::OpenMaildrop { user } => {
                    authn.succeeded(session.auth_mechanism(), &user);
                    crate::limits::session_authenticated();
                    let Some(claim) = service.claim_maildrop(&user) else {
                        info!(user = %escape_for_log(&user), "POP3 maildrop in use");
                        session.maildrop_opened(Err(MaildropError::InUse));
                        continue;
                    };
                    let s = Arc::clone(&service);
                    let u = user.clone();
                    let now = i64::try_from(crate::auth::unix_now()).unwrap_or(i64::MAX);
                    let opened =
                        tokio::task::spawn_blocking(move || open_maildrop(&s, &u, claim, now))
                            .await;
                    match opened {
                        Ok(Ok((m, infos))) => {
                            info!(user = %escape_for_log(&user), messages = infos.len(), "POP3 login");
                            maildrop = Some(m);
                            session.maildrop_opened(Ok(infos));
                        }
                        Ok(Err(OpenError::Refused(why))) => {
                            info!(user = %escape_for_log(&user), refused = %why, "POP3 maildrop not opened");
                            session.maildrop_opened(Err(why));
                        }
                        Ok(Err(OpenError::Store(e))) => {
                            warn!(user = %escape_for_log(&user), error = %e, "POP3 maildrop cannot be opened");
                            session.maildrop_opened(Err(store_error(&e)));
                        }
                        Err(_) => session.maildrop_opened(Err(MaildropError::Temporary)),
                    }
                }
                Event::Retrieve { number, lines } => {
                    let out = session.take_output();
                    if !out.is_empty() && write(&mut stream, &out, idle).await.is_err() {
                        break 'session;
                    }
                    let Some(m) = maildrop.as_ref() else {
                        session.retrieve_failed(MaildropError::Temporary);
                        continue;
                    };
                    if retrieve(
                        &mut session,
                        &mut stream,
                        m,
                        number,
                        lines,
                        idle,
                        &mut ahead,
                    )
                    .await
                    .is_err()
                    {
                        break 'session;
                    }
                }
                Event::Update { deleted } => {
                    let Some(m) = maildrop.take() else {
                        session.update_done(Ok(()));
                        continue;
                    };
                    let mode = service.delete_mode;
                    let n = deleted.len();
                    let done =
                        tokio::task::spawn_blocking(move || commit(&m, mode, &deleted)).await;
                    match done {
                        Ok(Ok(removed)) => {
                            info!(marked = n, removed, mode = ?mode, "POP3 update");
                            session.update_done(Ok(()));
                        }
                        Ok(Err(e)) => {
                            warn!(error = %e, "POP3 update failed");
                            session.update_done(Err(store_error(&e)));
                        }
                        Err(_) => session.update_done(Err(MaildropError::Temporary)),
                    }
                }
                Event::Close => {
                    let out = session.take_output();
                    let _ = write(&mut stream, &out, idle).await;
                    break 'session;
                }
                other => debug!(event = ?other, "POP3 event"),
            }
        }
        let out = session.take_output();
        if !out.is_empty() && write(&mut stream, &out, idle).await.is_err() {
            break;
        }
        let timeout = if maildrop.is_some() {
            idle
        } else {
            crate::limits::pre_login_timeout(
                idle.min(PRE_AUTH_TIMEOUT),
                ctx.timeouts.stress.command,
            )
        };
        let Some(s) = stream.as_mut() else {
            break;
        };
        buf.clear();
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                let _ = s.write_all(b"-ERR [SYS/TEMP] Server shutting down\r\n").await;
                break;
            }
            () = crate::limits::session_evicted() => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    s.write_all(b"-ERR [SYS/TEMP] Server is full; try again later\r\n"),
                )
                .await;
                break;
            }
            read = tokio::time::timeout(timeout, s.read_buf(&mut buf)) => match read {
                Err(_) => {
                    info!("POP3 client timed out; nothing deleted");
                    let _ = s.write_all(b"-ERR Autologout; idle for too long\r\n").await;
                    break;
                }
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => session.handle_input(&buf),
            }
        }
    }
    if let Some(mut s) = stream {
        let _ = tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await;
    }
    if maildrop.is_some() {
        info!("POP3 connection ended without QUIT; nothing deleted");
    }
    debug!("POP3 disconnect");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_delay_rule() {
        let hour = Duration::from_secs(3600);
        assert!(!too_soon(None, 1000, hour), "no login before");
        assert!(too_soon(Some(1000), 1000, hour));
        assert!(too_soon(Some(1000), 1000 + 3599, hour));
        assert!(
            !too_soon(Some(1000), 1000 + 3600, hour),
            "the delay is over"
        );
        assert!(!too_soon(Some(1000), 1000, Duration::ZERO), "no delay set");
        assert!(
            !too_soon(Some(5000), 1000, hour),
            "a login in the future (the clock went back) holds nobody out"
        );
    }

    #[test]
    fn uidl_is_uidvalidity_and_uid_in_hex() {
        assert_eq!(uidl(0x675f_1a2b, 7), "675f1a2b00000007");
        assert_eq!(uidl(1, u32::MAX), "00000001ffffffff");
    }
}
