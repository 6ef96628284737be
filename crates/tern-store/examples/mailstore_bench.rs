//! Mail store figures to compare with Dovecot (run in a release build):
//!
//! ```text
//! cargo run --release -p tern-store --example mailstore_bench [DIR]
//! ```
//!
//! 1. APPEND of 10,000 messages one by one, each acknowledged (file and
//!    directory fsynced, index committed) before the next;
//! 2. the same 10,000 as MULTIAPPEND batches of 100;
//! 3. a 100,000-message mailbox written straight into `cur/` (as a copied
//!    Dovecot Maildir would be): the first SELECT, which indexes every
//!    file, then SELECT again (UID + flags of every message, from the
//!    index), STATUS, a STORE, and SELECT after it.
//!
//! DIR (default: a temporary directory) should be on the filesystem the
//! comparison runs on. With `tree` after DIR, it only writes a small tree
//! (UTF-8 and dotted folder names, flagged messages) for checking that
//! Dovecot reads what Tern wrote (`doveadm mailbox list`, `doveadm fetch`).

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use tern_store::mailbox::{AppendItem, FlagOp, Flags, Mailboxes, StoreConfig, SystemFlags};

const USER: &str = "bench@example.test";

fn message(i: usize) -> Vec<u8> {
    // Sizes from 1 KB to ~20 KB, like a mix of short mail and newsletters.
    let body_len = 1000 + (i * 7919) % 19_000;
    let mut m = format!(
        "Return-Path: <s{i}@example.net>\r\nFrom: Sender {i} <s{i}@example.net>\r\n\
         To: bench@example.test\r\nSubject: message number {i}\r\n\
         Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{i}@example.net>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    while m.len() < body_len {
        m.extend_from_slice(b"The quick brown fox jumps over the lazy dog. 0123456789\r\n");
    }
    m
}

fn main() {
    let keep;
    let root: PathBuf = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => {
            keep = tempfile::tempdir().expect("temporary directory");
            keep.path().to_path_buf()
        }
    };
    let mb = Mailboxes::new(
        root.join("mail"),
        StoreConfig {
            hostname: "bench.example.test".into(),
            ..StoreConfig::default()
        },
    );
    let user = mb.open(USER).expect("open");
    if std::env::args().nth(2).as_deref() == Some("tree") {
        for name in ["Entwürfe/日本語", "a.b", "x\\y", "Work/Reports"] {
            let folder = user.create(name, None).expect("create");
            let flags = Flags::from_imap(&["\\Seen", "\\Flagged", "$Forwarded"]).expect("flags");
            user.append(folder.id, &mut &message(1)[..], &flags, Some(1_700_000_000))
                .expect("append");
        }
        let inbox = user.mailbox("INBOX").expect("inbox");
        user.append(
            inbox.id,
            &mut &message(2)[..],
            &Flags::system(SystemFlags::ANSWERED),
            None,
        )
        .expect("append");
        println!(
            "tree written under {}",
            mb.user_dir(USER).expect("dir").display()
        );
        return;
    }
    let messages: Vec<Vec<u8>> = (0..10_000).map(message).collect();

    // 1. APPEND one by one.
    let inbox = user.create("Appended", None).expect("create");
    let t = Instant::now();
    for m in &messages {
        user.append(inbox.id, &mut &m[..], &Flags::default(), None)
            .expect("append");
    }
    let one = t.elapsed();
    println!(
        "APPEND 10,000 one by one (each fsynced + committed): {:.2} s ({:.0}/s)",
        one.as_secs_f64(),
        10_000.0 / one.as_secs_f64()
    );

    // 2. MULTIAPPEND in batches of 100.
    let batch_box = user.create("Batched", None).expect("create");
    let t = Instant::now();
    for chunk in messages.chunks(100) {
        let mut readers: Vec<&[u8]> = chunk.iter().map(|m| &m[..]).collect();
        let mut items: Vec<AppendItem<'_>> = readers
            .iter_mut()
            .map(|r| AppendItem {
                body: r,
                flags: Flags::default(),
                internaldate: None,
            })
            .collect();
        user.append_batch(batch_box.id, &mut items)
            .expect("append batch");
    }
    let batched = t.elapsed();
    println!(
        "APPEND 10,000 as MULTIAPPEND of 100: {:.2} s ({:.0}/s)",
        batched.as_secs_f64(),
        10_000.0 / batched.as_secs_f64()
    );

    // 3. A 100,000-message mailbox.
    let big = user.create("Big", None).expect("create");
    let cur = mb.user_dir(USER).expect("dir").join(".Big/cur");
    let t = Instant::now();
    for i in 0..100_000usize {
        let flags = match i % 10 {
            0..=6 => "S",
            7 => "FS",
            8 => "RS",
            _ => "",
        };
        let name = format!("{}.M{i}P1.bench:2,{flags}", 1_700_000_000 + i);
        let mut f = fs::File::create(cur.join(name)).expect("create file");
        f.write_all(&messages[i % messages.len()]).expect("write");
    }
    println!(
        "(wrote 100,000 files in {:.1} s, not timed below)",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let sel = user.select("Big").expect("select");
    let first = t.elapsed();
    assert_eq!(sel.messages.len(), 100_000);
    println!(
        "first SELECT of 100,000 (reads the directory, indexes every file): {:.3} s",
        first.as_secs_f64()
    );
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let sel = user.select("Big").expect("select");
        times.push(t.elapsed());
        assert_eq!(sel.messages.len(), 100_000);
        let unseen = sel
            .messages
            .iter()
            .filter(|m| !m.flags.system.contains(SystemFlags::SEEN))
            .count();
        assert_eq!(unseen, 10_000);
    }
    times.sort();
    println!(
        "SELECT of 100,000 again (uid, flags, modseq, size, dates, email id of each): median {:.3} s",
        times[2].as_secs_f64()
    );
    let t = Instant::now();
    let st = user.status("Big").expect("status");
    println!(
        "STATUS (messages {}, unseen {}, size {} MB): {:.3} s",
        st.messages,
        st.unseen,
        st.size / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    user.store_flags(
        big.id,
        &[50_000],
        FlagOp::Add,
        &Flags::system(SystemFlags::FLAGGED),
        None,
    )
    .expect("store");
    println!("STORE on one message: {:.4} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    user.select("Big").expect("select");
    println!(
        "SELECT of 100,000 after our own STORE: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let ch = user
        .changes_since(big.id, st.mailbox.highestmodseq)
        .expect("changes");
    println!(
        "changes since the STATUS MODSEQ ({} changed): {:.4} s",
        ch.changed.len(),
        t.elapsed().as_secs_f64()
    );
}
