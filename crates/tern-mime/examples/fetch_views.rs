//! Prints what tern-mime answers to `FETCH (ENVELOPE BODYSTRUCTURE)` for
//! each message file named on the command line, one file per block:
//!
//! ```text
//! cargo run -p tern-mime --example fetch_views -- a.eml b.eml
//! ```
//!
//! Used to compare with another server by hand (see
//! `tests/fixtures/record_dovecot.py`).

use std::io::Write;

fn main() {
    for path in std::env::args().skip(1) {
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        };
        let raw = tern_mime::to_crlf(&raw);
        let msg = tern_mime::Message::parse(&raw, &tern_mime::Limits::default());
        let mut out = b"ENVELOPE ".to_vec();
        msg.envelope_imap(&mut out);
        out.extend(b" BODYSTRUCTURE ");
        msg.body_structure_imap(true, &mut out);
        let mut stdout = std::io::stdout().lock();
        let written = writeln!(stdout, "== {path}")
            .and_then(|()| stdout.write_all(&out))
            .and_then(|()| writeln!(stdout));
        if written.is_err() {
            std::process::exit(1);
        }
    }
}
