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

/// `--since`: a duration ago (`90s`, `30m`, `2h`, `3d`), a UTC date
/// (`2026-12-04`) or date and time (`2026-12-04T10:02`, `…:13`, a space
/// instead of `T` too), or Unix seconds. Returns Unix seconds.
pub fn parse_since(text: &str, now: u64) -> anyhow::Result<u64> {
    let t = text.trim();
    if let Some(unit) = t.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let n: u64 = t[..t.len() - 1]
            .parse()
            .with_context(|| format!("--since {t:?}: not a number before {unit:?}"))?;
        let secs = match unit {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            'd' => n * 86_400,
            _ => bail!("--since {t:?}: the unit is s, m, h or d"),
        };
        return Ok(now.saturating_sub(secs));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() {
        return t.parse().context("--since: Unix seconds");
    }
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, tm),
        None => (t, "00:00:00"),
    };
    let d: Vec<&str> = date.split('-').collect();
    let tm: Vec<&str> = time.split(':').collect();
    let bad = || format!("--since {t:?}: expected 2h, 2026-12-04 or 2026-12-04T10:02[:13] (UTC)");
    if d.len() != 3 || !(2..=3).contains(&tm.len()) {
        bail!(bad());
    }
    let num = |s: &str, max: u32| -> anyhow::Result<u32> {
        let v: u32 = s.parse().with_context(bad)?;
        if v > max {
            bail!(bad());
        }
        Ok(v)
    };
    let (y, m, day) = (num(d[0], 9999)?, num(d[1], 12)?, num(d[2], 31)?);
    let (hh, mm) = (num(tm[0], 23)?, num(tm[1], 59)?);
    let ss = if tm.len() == 3 { num(tm[2], 60)? } else { 0 };
    if m == 0 || day == 0 {
        bail!(bad());
    }
    let days = days_from_civil(i64::from(y), m, day);
    let secs = days * 86_400 + i64::from(hh) * 3600 + i64::from(mm) * 60 + i64::from(ss);
    u64::try_from(secs).map_err(|_| anyhow::anyhow!(bad()))
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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
            civil(r.time_ms / 1000),
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
            civil(*next_attempt)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_dates_and_seconds() {
        let now = 1_764_842_533; // 2025-12-04 10:02:13 UTC
        assert_eq!(parse_since("2h", now).unwrap(), now - 7200);
        assert_eq!(parse_since("3d", now).unwrap(), now - 3 * 86_400);
        assert_eq!(parse_since("90s", now).unwrap(), now - 90);
        assert_eq!(parse_since("1700000000", now).unwrap(), 1_700_000_000);
        assert_eq!(parse_since("2025-12-04", now).unwrap(), 1_764_806_400);
        assert_eq!(parse_since("2025-12-04T10:02", now).unwrap(), 1_764_842_520);
        assert_eq!(parse_since("2025-12-04 10:02:13", now).unwrap(), now);
        assert_eq!(civil(now), "2025-12-04 10:02:13");
        for bad in [
            "",
            "2x",
            "h",
            "2025-13-01",
            "2025-12-04T25:00",
            "yesterday",
            "2025-12",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }
}
