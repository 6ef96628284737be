//! `tern trace`: what happened to a message, from the delivery journal
//! (`<data_dir>/journal/`, see [`tern_queue::journal`]). Works whether the
//! server runs or not: it only reads the journal's files.
//!
//! What this module must never do: write to the journal or the spool.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tern_queue::journal::{self, Event, Query, Record, Trace};

use crate::config::Config;

/// Most messages one `tern trace` prints (the newest).
pub const DEFAULT_LIMIT: usize = 100;

/// The messages `query` matches, from the journal of the server that
/// `config` describes.
pub fn find(config: &Path, query: &Query, limit: usize) -> anyhow::Result<Vec<Trace>> {
    let c = Config::load(config)?;
    if !c.trace.enabled {
        bail!(
            "{}: trace.enabled is false: no delivery journal is kept",
            config.display()
        );
    }
    let dir = c.data_dir.join("journal");
    journal::query(&dir, query, limit)
        .with_context(|| format!("cannot read the delivery journal in {}", dir.display()))
}

/// `--since` (see [`journal::parse_since`]). Returns Unix seconds.
pub fn parse_since(text: &str, now: u64) -> anyhow::Result<u64> {
    journal::parse_since(text, now).map_err(|e| anyhow::anyhow!("--{e}"))
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The traces as text for people: one block per message.
pub fn render(traces: &[Trace]) -> String {
    let mut out = String::new();
    if traces.is_empty() {
        out.push_str("no message in the journal matches\n");
        return out;
    }
    for (i, t) in traces.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_one(&mut out, t, "");
        let finals = t.final_states();
        if !finals.is_empty() {
            let list: Vec<String> = finals.iter().map(|(to, s)| format!("{to}: {s}")).collect();
            let _ = writeln!(out, "  final: {}", list.join(", "));
        }
        for n in &t.notices {
            render_one(&mut out, n, "  ");
        }
    }
    out
}

fn render_one(out: &mut String, t: &Trace, indent: &str) {
    let _ = writeln!(out, "{indent}{}", t.queue_id);
    if t.records.is_empty() {
        let _ = writeln!(out, "{indent}  (no records)");
    }
    for r in &t.records {
        let _ = writeln!(
            out,
            "{indent}  {} UTC  {}",
            journal::format_utc(r.time_ms / 1000),
            line(r)
        );
    }
}

fn line(r: &Record) -> String {
    let relay =
        |relay: &Option<String>| relay.as_ref().map_or(String::new(), |h| format!(" ({h})"));
    match &r.event {
        Event::Received {
            client,
            role,
            helo,
            tls,
            auth,
            from,
            to,
            size,
            stored,
        } => {
            let mut s = format!(
                "received from {client} on {role} (helo {helo}{}{}): <{from}> to {}, {size} bytes, {}",
                tls.as_ref().map_or(String::new(), |t| format!(", {t}")),
                auth.as_ref()
                    .map_or(String::new(), |a| format!(", auth {a}")),
                to.iter()
                    .map(|t| format!("<{t}>"))
                    .collect::<Vec<_>>()
                    .join(" "),
                if stored == "mailbox" {
                    "delivered at intake"
                } else {
                    "queued"
                }
            );
            s.truncate(4000);
            s
        }
        Event::Generated { about, kind, to } => {
            format!("{kind} notice about {about}, to <{to}>")
        }
        Event::Delivered {
            to,
            via,
            relay: r,
            reply,
        } => format!("{to}: delivered via {via}{}: {reply}", relay(r)),
        Event::Deferred {
            to,
            via,
            relay: r,
            reply,
            attempts,
            next_attempt,
        } => format!(
            "{to}: deferred via {via}{} (attempt {attempts}, next {} UTC): {reply}",
            relay(r),
            journal::format_utc(*next_attempt)
        ),
        Event::Bounced {
            to,
            via,
            relay: r,
            reply,
        } => format!("{to}: bounced via {via}{}: {reply}", relay(r)),
        Event::Expired { to, reply } => format!("{to}: expired (too long in the queue): {reply}"),
        Event::Notice {
            kind,
            to,
            notice_id,
        } => format!("{kind} notice to <{to}> queued as {notice_id}"),
        Event::Removed { by } => format!("removed from the queue by the administrator ({by})"),
        other => format!("{other:?}"),
    }
}
