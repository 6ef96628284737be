//! `tern-loadgen`: the two loads of `bench/compare.sh` that `smtp-source`
//! cannot make.
//!
//! * `idle`: opens N SMTP sessions, reads each greeting, sends `EHLO` and
//!   reads its reply, then holds every session open (idle) for a while so
//!   that the server's resident memory can be read. Prints `ready <n>`
//!   once all are established (or failed), then `closed` at the end.
//! * `latency`: sends messages at a fixed offered rate (open loop: one
//!   message starts every 1/rate seconds, on a pool of persistent
//!   sessions) and measures, for each, the time from writing the final
//!   `.` to reading the `250`. Prints p50/p99/max in milliseconds.
//!
//! * `overload`: the attack of issue 17 — many connections from many
//!   loopback addresses (each its own /24) that say nothing or drip one
//!   byte every few seconds, reconnecting whenever the server closes them
//!   — while a legitimate client from yet another address sends one
//!   message a second. Prints the legitimate client's success rate and
//!   its connect → `250` times.
//!
//! It only ever connects to the address it is given (the script passes
//! 127.0.0.1); it never sends anything a server would relay. Figures go to
//! stdout as `key=value` pairs for the script; it never fails on timing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, mpsc};

#[derive(Parser, Debug)]
#[command(about = "Load tool for bench/compare.sh (loopback only)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Hold N sessions open after EHLO.
    Idle {
        /// Server address (127.0.0.1:port).
        #[arg(long)]
        addr: SocketAddr,
        /// Sessions to open.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Connections being set up at once.
        #[arg(long, default_value_t = 200)]
        parallel: usize,
        /// Seconds to hold the sessions after all are up.
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
    /// Idle and dripping attackers plus one legitimate sender.
    Overload {
        /// Server address (127.0.0.1:port).
        #[arg(long)]
        addr: SocketAddr,
        /// Attacking addresses: 127.0.1.1, 127.0.2.1, … (one /24 each).
        #[arg(long, default_value_t = 40)]
        attackers: usize,
        /// Connections each attacking address holds.
        #[arg(long, default_value_t = 50)]
        per_attacker: usize,
        /// Seconds between the bytes a dripping connection sends (half of
        /// the connections drip, half say nothing).
        #[arg(long, default_value_t = 10)]
        drip_every: u64,
        /// Seconds the attack lasts.
        #[arg(long, default_value_t = 300)]
        duration: u64,
        /// Seconds before the legitimate client starts (the attack builds).
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        /// The legitimate client's source address.
        #[arg(long, default_value = "127.1.0.1")]
        legit: std::net::IpAddr,
        /// Its recipient.
        #[arg(long, default_value = "alice@example.test")]
        rcpt: String,
    },
    /// End-of-data → 250 latency at a fixed offered rate.
    Latency {
        /// Server address (127.0.0.1:port).
        #[arg(long)]
        addr: SocketAddr,
        /// Offered rate, messages per second.
        #[arg(long)]
        rate: f64,
        /// Messages to send.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Persistent sessions in the pool.
        #[arg(long, default_value_t = 50)]
        sessions: usize,
        /// Message size in bytes (approximately).
        #[arg(long, default_value_t = 10_240)]
        size: usize,
        /// Envelope recipient.
        #[arg(long, default_value = "alice@example.test")]
        rcpt: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Idle {
                addr,
                sessions,
                parallel,
                hold,
            } => idle(addr, sessions, parallel, hold).await,
            Cmd::Overload {
                addr,
                attackers,
                per_attacker,
                drip_every,
                duration,
                warmup,
                legit,
                rcpt,
            } => {
                overload(
                    addr,
                    attackers,
                    per_attacker,
                    Duration::from_secs(drip_every),
                    Duration::from_secs(duration),
                    Duration::from_secs(warmup),
                    legit,
                    &rcpt,
                )
                .await
            }
            Cmd::Latency {
                addr,
                rate,
                messages,
                sessions,
                size,
                rcpt,
            } => latency(addr, rate, messages, sessions, size, &rcpt).await,
        }
    })
}

/// One SMTP session: line reader and writer.
struct Session {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    line: String,
}

impl Session {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Session> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut s = Session {
            r: BufReader::new(r),
            w,
            line: String::new(),
        };
        s.expect("220").await?;
        s.w.write_all(b"EHLO loadgen.test\r\n").await?;
        s.expect("250").await?;
        Ok(s)
    }

    /// Reads one (possibly multi-line) reply; fails unless it starts with `code`.
    async fn expect(&mut self, code: &str) -> anyhow::Result<()> {
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line).await? == 0 {
                bail!("connection closed");
            }
            if !self.line.starts_with(code) {
                bail!("expected {code}, got {:?}", self.line.trim_end());
            }
            if self.line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }
}

async fn idle(addr: SocketAddr, n: usize, parallel: usize, hold: u64) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(parallel.max(1));
    let opener = tokio::spawn(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        for _ in 0..n {
            let Ok(permit) = Arc::clone(&gate).acquire_owned().await else {
                break;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let s = Session::connect(addr).await;
                drop(permit);
                let _ = tx.send(s).await;
            });
        }
    });
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    while held.len() + failed < n {
        match rx.recv().await {
            Some(Ok(s)) => held.push(s),
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            None => break,
        }
    }
    opener.await?;
    println!(
        "ready {} failed={} setup_s={:.2}{}",
        held.len(),
        failed,
        started.elapsed().as_secs_f64(),
        first_error
            .map(|e| format!(" first_error={e:?}"))
            .unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(held);
    println!("closed");
    Ok(())
}

async fn latency(
    addr: SocketAddr,
    rate: f64,
    messages: usize,
    sessions: usize,
    size: usize,
    rcpt: &str,
) -> anyhow::Result<()> {
    if rate <= 0.0 || !rate.is_finite() {
        bail!("--rate must be positive");
    }
    let body = message(size);
    let envelope = format!("MAIL FROM:<latency@loadgen.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
    let mut pool = Vec::with_capacity(sessions);
    for _ in 0..sessions.max(1) {
        pool.push(Session::connect(addr).await?);
    }
    let pool = Arc::new(Mutex::new(pool));
    let (tx, mut rx) = mpsc::unbounded_channel::<anyhow::Result<Duration>>();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(messages);
    for i in 0..messages {
        // Open loop: message i starts at start + i * interval.
        tokio::time::sleep_until((start + interval.mul_f64(i as f64)).into()).await;
        let (pool, tx, body, envelope) = (
            Arc::clone(&pool),
            tx.clone(),
            Arc::clone(&body),
            envelope.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut s = loop {
                if let Some(s) = pool.lock().await.pop() {
                    break s;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            let result = send_one(&mut s, &envelope, &body).await;
            let ok = result.is_ok();
            let _ = tx.send(result);
            if ok {
                pool.lock().await.push(s);
            } else if let Ok(s) = Session::connect(addr).await {
                pool.lock().await.push(s);
            }
        }));
    }
    drop(tx);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(messages);
    let mut errors = 0usize;
    let mut first_error = None;
    while let Some(r) = rx.recv().await {
        match r {
            Ok(d) => lat.push(d),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    lat.sort();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i].as_secs_f64() * 1000.0
    };
    println!(
        "sent={} ok={} errors={} offered_rate={:.1} achieved_rate={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3}{}",
        messages,
        lat.len(),
        errors,
        rate,
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        first_error
            .map(|e| format!(" first_error={e:?}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Sends one message on `s`; returns the time from the final `.` to the 250.
async fn send_one(s: &mut Session, envelope: &str, body: &[u8]) -> anyhow::Result<Duration> {
    // Envelope commands one by one (no reliance on PIPELINING).
    for (line, code) in envelope.split_inclusive("\r\n").zip(["250", "250", "354"]) {
        s.w.write_all(line.as_bytes()).await?;
        s.expect(code).await?;
    }
    s.w.write_all(body).await?;
    let t0 = Instant::now();
    s.w.write_all(b".\r\n").await?;
    s.expect("250").await?;
    Ok(t0.elapsed())
}

/// A message of about `size` bytes: a few header fields, then 78-byte lines.
fn message(size: usize) -> Arc<[u8]> {
    let mut m = b"From: <latency@loadgen.test>\r\nTo: <alice@example.test>\r\nSubject: latency probe\r\n\r\n"
        .to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.into()
}

/// A connection from `source` to `addr`.
async fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// One attacking connection, again and again until `end`: connect, then
/// say nothing (or drip one byte every `drip`), reconnect when closed.
async fn attack(
    source: std::net::IpAddr,
    addr: SocketAddr,
    drip: Option<Duration>,
    end: Instant,
    held: Arc<std::sync::atomic::AtomicUsize>,
    connects: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::AsyncReadExt;
    while Instant::now() < end {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(5), connect_from(source, addr)).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        connects.fetch_add(1, Relaxed);
        held.fetch_add(1, Relaxed);
        let mut buf = [0u8; 512];
        loop {
            let wait = drip.unwrap_or(Duration::from_secs(3600));
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(wait.min(left), s.read(&mut buf)).await {
                // Closed (or an error): reconnect.
                Ok(Ok(0) | Err(_)) => break,
                // The greeting, a 421: keep reading until closed.
                Ok(Ok(_)) => {}
                Err(_) => {
                    if drip.is_some() && s.write_all(b"X").await.is_err() {
                        break;
                    }
                }
            }
        }
        held.fetch_sub(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One legitimate message, timed from connect to `250`.
async fn legit_message(
    source: std::net::IpAddr,
    addr: SocketAddr,
    rcpt: &str,
    n: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let stream = connect_from(source, addr).await?;
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut s = Session {
        r: BufReader::new(r),
        w,
        line: String::new(),
    };
    s.expect("220").await?;
    s.w.write_all(b"EHLO legit.test\r\n").await?;
    s.expect("250").await?;
    s.w.write_all(b"MAIL FROM:<someone@legit.test>\r\n").await?;
    s.expect("250").await?;
    s.w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
        .await?;
    s.expect("250").await?;
    s.w.write_all(b"DATA\r\n").await?;
    s.expect("354").await?;
    s.w.write_all(
        format!("From: someone@legit.test\r\nSubject: legitimate {n}\r\n\r\nHello.\r\n.\r\n")
            .as_bytes(),
    )
    .await?;
    s.expect("250").await?;
    let took = started.elapsed();
    let _ = s.w.write_all(b"QUIT\r\n").await;
    Ok(took)
}

#[allow(clippy::too_many_arguments)]
async fn overload(
    addr: SocketAddr,
    attackers: usize,
    per_attacker: usize,
    drip: Duration,
    duration: Duration,
    warmup: Duration,
    legit: std::net::IpAddr,
    rcpt: &str,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    if attackers == 0 || attackers > 250 {
        bail!("--attackers must be 1..=250 (127.0.N.1)");
    }
    let end = Instant::now() + warmup + duration;
    let held = Arc::new(AtomicUsize::new(0));
    let connects = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for a in 0..attackers {
        let source = std::net::IpAddr::from([127, 0, (a + 1) as u8, 1]);
        for c in 0..per_attacker {
            let drips = (c % 2 == 1).then_some(drip);
            tasks.push(tokio::spawn(attack(
                source,
                addr,
                drips,
                end,
                Arc::clone(&held),
                Arc::clone(&connects),
            )));
        }
    }
    tokio::time::sleep(warmup).await;
    println!(
        "attack held={} connects={}",
        held.load(Relaxed),
        connects.load(Relaxed)
    );
    // The legitimate client: one message a second, each on its own task.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut n = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() + Duration::from_secs(1) < end {
        tick.tick().await;
        n += 1;
        let tx = tx.clone();
        let rcpt = rcpt.to_owned();
        tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                legit_message(legit, addr, &rcpt, n),
            )
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r);
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
    }
    drop(tx);
    let mut times = Vec::new();
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    while let Some(r) = rx.recv().await {
        match r {
            Ok(t) => times.push(t),
            Err(e) => *failures.entry(e).or_default() += 1,
        }
    }
    println!(
        "attack held_at_end={} connects={}",
        held.load(Relaxed),
        connects.load(Relaxed)
    );
    for t in tasks {
        t.abort();
    }
    times.sort();
    let pct = |p: f64| -> f64 {
        if times.is_empty() {
            return f64::NAN;
        }
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1000.0
    };
    println!(
        "legit sent={n} ok={} success_pct={:.1} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        times.len(),
        100.0 * times.len() as f64 / n.max(1) as f64,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    for (e, k) in failures {
        println!("legit failure x{k}: {e}");
    }
    Ok(())
}
