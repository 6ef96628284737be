//! `tern queue …`: look at and steer the mail queue.
//!
//! The CLI first asks the running server over its admin socket
//! (`<data_dir>/admin.sock`, see [`tern_net::admin`]); only the user Tern
//! runs as and root can connect. When nothing answers there (the server is
//! stopped), it opens the spool itself — which takes the spool's exclusive
//! lock, so this can never run beside a live server — and carries out the
//! same operations ([`QueueAdmin::execute`]) directly. Offline, `flush` has
//! nothing to do (the next start looks at every message), and the failure
//! notice of a `bounce` is queued in the spool and delivered when the
//! server starts. With a shared queue (`[queue] backend = "postgres"`) it
//! works on the database instead, beside whichever nodes are running: each
//! operation takes the message's lease first, as the nodes' passes do.
//!
//! Output is for people by default and one JSON object (the server's
//! [`Response`]) with `--json`. It must never print raw control characters
//! from a message or a remote reply to the terminal, and never touch the
//! spool while a server holds it.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use tern::config::Config;
use tern_net::admin::{
    self, AdminError, MessageDetail, MessageSummary, QueueAdmin, RecipientInfo, Request, Response,
};
use tern_queue::{RecipientState, Spool, SpoolError, SpoolOptions};

/// How long the CLI waits for the server's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Subcommand)]
pub(crate) enum QueueAction {
    /// List queued messages: id, age, size, sender, recipients and their
    /// states, next attempt, last error.
    List,
    /// Show one message: envelope, header section, recipient states and
    /// the history of attempts.
    Show {
        /// The queue id.
        id: String,
    },
    /// Attempt deferred messages now: one (ID), those with recipients in
    /// one domain (--domain), or all.
    Flush {
        /// Only this message.
        id: Option<String>,
        /// Only recipients in this domain.
        #[arg(long, conflicts_with = "id")]
        domain: Option<String>,
    },
    /// Stop delivery attempts for a message until it is released.
    Hold {
        /// The queue id.
        id: String,
    },
    /// Release a held message and attempt it now.
    Release {
        /// The queue id.
        id: String,
    },
    /// Remove a message from the queue; nobody is told.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Return a message to its sender: every recipient not yet done fails
    /// with "550 5.0.0 Message returned by the administrator", the sender
    /// gets one failure notice (DSN), and the message leaves the queue.
    Bounce {
        /// The queue id.
        id: String,
    },
}

impl QueueAction {
    fn request(self) -> Request {
        match self {
            QueueAction::List => Request::List,
            QueueAction::Show { id } => Request::Show { id },
            QueueAction::Flush { id, domain } => Request::Flush { id, domain },
            QueueAction::Hold { id } => Request::Hold { id },
            QueueAction::Release { id } => Request::Release { id },
            QueueAction::Delete { id } => Request::Delete { id },
            QueueAction::Bounce { id } => Request::Bounce { id },
        }
    }
}

/// Runs `tern queue <action>` with the configuration at `config_path`.
pub(crate) fn run(action: QueueAction, config_path: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let socket = config.data_dir.join(admin::SOCKET_NAME);
    let request = action.request();
    let response = match admin::request(&socket, &request, ANSWER_TIMEOUT) {
        Ok(response) => response,
        Err(AdminError::NotRunning { .. }) => offline(&config, &request)?,
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string(&response)?);
    } else {
        print!("{}", render(&response));
    }
    if let Response::Error { message, .. } = response {
        bail!("{message}");
    }
    Ok(())
}

/// The server is not running: work on the queue directly — the spool,
/// or the database a shared queue lives in (where other nodes may be
/// running: every operation takes the message's lease first).
fn offline(config: &Config, request: &Request) -> anyhow::Result<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(pg) = config.queue.store.pg_config(&config.hostname)? {
        return runtime.block_on(async {
            let store = tern_queue_pg::PgStore::connect(&pg)
                .await
                .context("cannot open the queue database ([queue] url)")?;
            eprintln!("note: the server is not running here; working on the shared queue database");
            let queue = offline_admin(config, request, tern_queue_pg::AnyStore::Postgres(store))?;
            let response = queue.execute(request, unix_now()).await;
            queue.journal.close();
            Ok(response)
        });
    }
    let spool_dir = config.data_dir.join("spool");
    if !spool_dir.join("queue").is_dir() {
        bail!(
            "the server is not running and there is no spool at {} (check data_dir)",
            spool_dir.display()
        );
    }
    if let Request::Flush { .. } = request {
        return Ok(Response::Done {
            action: "flush".to_owned(),
            ids: Vec::new(),
            note: Some(
                "the server is not running: nothing to flush (it looks at every queued message when it starts)"
                    .to_owned(),
            ),
        });
    }
    // Root would leave files in the spool that the server, running as
    // `user`, cannot use: work on it as that user.
    if let tern::privilege::Plan::Drop(run_as) = tern::privilege::plan(config)? {
        tern::privilege::drop_privileges(&run_as)?;
    }
    let spool = match Spool::open(&spool_dir, SpoolOptions::default()) {
        Ok(spool) => spool,
        Err(SpoolError::Locked { .. }) => bail!(
            "a Tern server holds the spool {} but does not answer on its admin socket {}; \
             it may be starting or stopping — try again in a moment",
            spool_dir.display(),
            config.data_dir.join(admin::SOCKET_NAME).display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the spool {}", spool_dir.display()));
        }
    };
    eprintln!("note: the server is not running; working on the spool directly");
    let queue = offline_admin(
        config,
        request,
        tern_queue_pg::AnyStore::File(tern_queue::store::FileStore::new(spool)),
    )?;
    let response = runtime.block_on(queue.execute(request, unix_now()));
    queue.journal.close();
    if let (Request::Bounce { .. }, Response::Done { .. }) = (request, &response) {
        eprintln!("note: the failure notice is delivered when the server starts");
    }
    Ok(response)
}

/// The admin operations of a CLI working on `queue` itself.
fn offline_admin(
    config: &Config,
    request: &Request,
    queue: tern_queue_pg::AnyStore,
) -> anyhow::Result<QueueAdmin> {
    let directory = tern_store::Directory::new(config.directory_config()?)
        .context("cannot load the domains and mailboxes")?;
    Ok(QueueAdmin {
        queue,
        directory: Arc::new(directory),
        hostname: config.hostname.clone(),
        delivery: None,
        // Only `bounce` writes a notice: it is signed like the server's,
        // with the keys on disk (unsigned, with a warning, if they do not
        // load). The other commands need no keys, so none are read.
        signer: match request {
            Request::Bounce { .. } => {
                tern_net::SignerHandle::new(config.dkim_signer().unwrap_or_else(|e| {
                    eprintln!("warning: {e}; the failure notice goes unsigned");
                    tern_mailauth::Signer::default()
                }))
            }
            _ => tern_net::SignerHandle::default(),
        },
        // The server is stopped: this process writes the journal itself
        // (the spool lock it holds keeps a server from starting meanwhile).
        journal: match request {
            Request::Delete { .. } | Request::Bounce { .. } if config.trace.enabled => {
                tern_queue::Journal::open(
                    &config.data_dir.join("journal"),
                    config.trace.retention(),
                )
                .unwrap_or_else(|e| {
                    eprintln!("warning: {e}; not recorded in the journal");
                    tern_queue::Journal::disabled()
                })
            }
            _ => tern_queue::Journal::disabled(),
        },
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Text for a terminal: control characters (a hostile reply or header
/// could carry escape sequences) become `?`, except tabs.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

/// `s` cleaned and cut to `max` characters (with `…`).
fn cut(s: &str, max: usize) -> String {
    let s = clean(s);
    if s.chars().count() <= max {
        s
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A compact duration: the two largest units (`45s`, `5m10s`, `3h05m`, `2d04h`).
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn sender(s: &str) -> String {
    if s.is_empty() {
        "<>".to_owned()
    } else {
        clean(s)
    }
}

fn when(at: u64, now: u64) -> String {
    if at <= now {
        "now".to_owned()
    } else {
        format!("in {}", span(at - now))
    }
}

fn next_attempt(m: &MessageSummary, now: u64) -> String {
    match (m.held, m.next_attempt) {
        (true, _) => "held".to_owned(),
        (false, Some(at)) => when(at, now),
        (false, None) => "-".to_owned(),
    }
}

/// One recipient's state in words.
fn state_text(state: &RecipientState, now: u64) -> String {
    match state {
        RecipientState::Pending => "pending".to_owned(),
        RecipientState::Delivered { reply, .. } => format!("delivered: {}", cut(reply, 80)),
        RecipientState::Deferred {
            attempts,
            last_error,
            next_attempt,
        } => format!(
            "deferred ({attempts} attempt{}, next {}): {}",
            if *attempts == 1 { "" } else { "s" },
            when(*next_attempt, now),
            cut(last_error, 80)
        ),
        RecipientState::Failed { reply, .. } => format!("failed: {}", cut(reply, 80)),
        RecipientState::Expired { last_error, .. } => format!("expired: {}", cut(last_error, 80)),
    }
}

fn recipient_line(out: &mut String, r: &RecipientInfo, now: u64) {
    let _ = writeln!(
        out,
        "    -> {:<32} {}",
        cut(&r.address, 60),
        state_text(&r.state, now)
    );
}

/// The human form of a response.
fn render(response: &Response) -> String {
    let mut out = String::new();
    match response {
        Response::List { now, messages } => {
            if messages.is_empty() {
                out.push_str("The queue is empty.\n");
                return out;
            }
            let _ = writeln!(
                out,
                "{:<16}  {:>7}  {:>9}  {:<32}  {:<10}  LAST ERROR",
                "ID", "AGE", "SIZE", "SENDER", "NEXT"
            );
            for m in messages {
                let _ = writeln!(
                    out,
                    "{:<16}  {:>7}  {:>9}  {:<32}  {:<10}  {}",
                    m.id,
                    span(m.age),
                    size(m.size),
                    cut(&sender(&m.sender), 32),
                    next_attempt(m, *now),
                    m.last_error
                        .as_deref()
                        .map_or("-".to_owned(), |e| cut(e, 60)),
                );
                for r in &m.recipients {
                    recipient_line(&mut out, r, *now);
                }
            }
            let rcpts: usize = messages.iter().map(|m| m.recipients.len()).sum();
            let _ = writeln!(
                out,
                "{} message{}, {rcpts} recipient{}.",
                messages.len(),
                if messages.len() == 1 { "" } else { "s" },
                if rcpts == 1 { "" } else { "s" }
            );
        }
        Response::Show { now, message } => render_show(&mut out, message, *now),
        Response::Done { action, ids, note } => {
            match (action.as_str(), ids.len()) {
                ("flush", 0) => {}
                ("flush", n) => {
                    let _ = writeln!(
                        out,
                        "flush: {n} message{} scheduled now: {}",
                        if n == 1 { "" } else { "s" },
                        ids.join(" ")
                    );
                }
                ("hold", _) => out.push_str(&format!("held: {}\n", ids.join(" "))),
                ("release", _) => out.push_str(&format!("released: {}\n", ids.join(" "))),
                ("delete", _) => out.push_str(&format!("deleted: {}\n", ids.join(" "))),
                ("bounce", _) => out.push_str(&format!("returned to sender: {}\n", ids.join(" "))),
                (other, _) => out.push_str(&format!("{}: {}\n", clean(other), ids.join(" "))),
            }
            if let Some(note) = note {
                let _ = writeln!(out, "{}", clean(note));
            }
        }
        // Reported on stderr by the caller.
        Response::Error { .. } => {}
    }
    out
}

fn render_show(out: &mut String, d: &MessageDetail, now: u64) {
    let m = &d.summary;
    let opt = |v: &Option<String>| v.as_deref().map_or("-".to_owned(), clean);
    let _ = writeln!(out, "Message {}", m.id);
    let _ = writeln!(
        out,
        "  Arrived:      {} ({} ago)",
        tern_delivery::dsn::rfc5322_date(m.received_at),
        span(m.age)
    );
    let _ = writeln!(out, "  Size:         {} ({} bytes)", size(m.size), m.size);
    let _ = writeln!(out, "  Sender:       {}", sender(&m.sender));
    let _ = writeln!(
        out,
        "  Client:       {} (helo {})",
        opt(&d.client_ip),
        opt(&d.helo)
    );
    let _ = writeln!(
        out,
        "  Protocol:     {}, TLS {}, authenticated as {}",
        clean(&d.protocol),
        opt(&d.tls),
        opt(&d.auth_user)
    );
    let _ = writeln!(
        out,
        "  Body:         {}; DSN RET {}, ENVID {}",
        clean(&d.body),
        opt(&d.ret),
        opt(&d.envid)
    );
    let _ = writeln!(out, "  Held:         {}", if m.held { "yes" } else { "no" });
    let _ = writeln!(out, "  Next attempt: {}", next_attempt(m, now));
    let _ = writeln!(out, "Recipients:");
    for r in &m.recipients {
        let _ = writeln!(
            out,
            "  [{}] {} ({}{})",
            r.index,
            clean(&r.address),
            if r.local { "local" } else { "remote" },
            if r.original == r.address {
                String::new()
            } else {
                format!(", RCPT TO {}", clean(&r.original))
            }
        );
        let _ = writeln!(out, "      {}", state_text(&r.state, now));
    }
    let _ = writeln!(out, "History:");
    if d.history.is_empty() {
        out.push_str("  (no attempt yet)\n");
    }
    for h in &d.history {
        let at = match &h.state {
            RecipientState::Delivered { at, .. }
            | RecipientState::Failed { at, .. }
            | RecipientState::Expired { at, .. } => *at,
            _ => 0,
        };
        let stamp = if at == 0 {
            String::new()
        } else {
            format!("{}: ", tern_delivery::dsn::rfc5322_date(at))
        };
        let _ = writeln!(
            out,
            "  [{}] {stamp}{}",
            h.recipient,
            state_text(&h.state, now)
        );
    }
    let _ = writeln!(out, "Headers:");
    for line in d.headers.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.is_empty() {
            let _ = writeln!(out, "  {}", clean(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(held: bool, next: Option<u64>) -> MessageSummary {
        MessageSummary {
            id: "0ABCDEFGHJKM0001".into(),
            received_at: 1_000,
            age: 3_720,
            size: 2_048,
            sender: String::new(),
            held,
            recipients: vec![RecipientInfo {
                index: 0,
                address: "bob@example.net".into(),
                original: "bob@example.net".into(),
                local: false,
                state: RecipientState::Deferred {
                    attempts: 1,
                    last_error: "451 4.4.1 \x1b[31mno\x1b[0m answer".into(),
                    next_attempt: 5_000,
                },
            }],
            next_attempt: next,
            last_error: Some("451 4.4.1 \x1b[31mno\x1b[0m answer".into()),
        }
    }

    #[test]
    fn list_is_a_table_without_control_characters() {
        let text = render(&Response::List {
            now: 4_720,
            messages: vec![message(false, Some(5_000))],
        });
        assert!(text.starts_with("ID "), "{text}");
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("0ABCDEFGHJKM0001"), "{row}");
        assert!(row.contains("1h02m") && row.contains("2.0 KiB"), "{row}");
        assert!(row.contains("<>") && row.contains("in 4m40s"), "{row}");
        assert!(text.contains("-> bob@example.net"), "{text}");
        assert!(
            text.contains("deferred (1 attempt, next in 4m40s)"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.ends_with("1 message, 1 recipient.\n"), "{text}");
        let held = render(&Response::List {
            now: 4_720,
            messages: vec![message(true, Some(5_000))],
        });
        assert!(held.lines().nth(1).unwrap().contains("held"), "{held}");
        assert_eq!(
            render(&Response::List {
                now: 0,
                messages: vec![]
            }),
            "The queue is empty.\n"
        );
    }

    #[test]
    fn spans_and_sizes() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(61), "1m01s");
        assert_eq!(span(3_600 * 5 + 60 * 7 + 9), "5h07m");
        assert_eq!(span(86_400 * 5 + 3_600), "5d01h");
        assert_eq!(size(10), "10 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
