//! Differential test: our parser and imap-codec's must agree on whether
//! each command in `differential/corpus.txt` is valid, except for the
//! lines where the corpus records a deliberate difference (explained in
//! `differential/DIFFERENCES.md`).
//!
//! Each corpus line records both verdicts, so a change in either parser
//! (ours, or an imap-codec upgrade) fails the test and is looked at.

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use tern_imap::parse::parse_command;

const CORPUS: &str = include_str!("differential/corpus.txt");
const DIFFERENCES: &str = include_str!("differential/DIFFERENCES.md");

/// Decode the corpus escapes: \r \n \t \0 \\ \" \xNN; any other backslash
/// stays as it is (so `\Seen` is written plainly).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'0' => out.push(0),
                b'\\' => out.push(b'\\'),
                b'"' => out.push(b'"'),
                b'x' if i + 3 < b.len() => {
                    let h = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(h, 16).unwrap());
                    i += 4;
                    continue;
                }
                _ => {
                    out.push(b'\\');
                    i += 1;
                    continue;
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn theirs(input: &[u8]) -> bool {
    matches!(CommandCodec::default().decode(input), Ok((rest, _)) if rest.is_empty())
}

fn ours(input: &[u8]) -> bool {
    parse_command(input).is_ok()
}

fn verdict(ok: bool) -> char {
    if ok { '+' } else { '-' }
}

struct Entry<'a> {
    ours: char,
    theirs: char,
    text: &'a str,
}

fn corpus() -> Vec<Entry<'static>> {
    CORPUS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (v, text) = l.split_once('\t').expect("verdicts TAB command");
            let mut c = v.chars();
            Entry {
                ours: c.next().unwrap(),
                theirs: c.next().unwrap(),
                text,
            }
        })
        .collect()
}

#[test]
fn corpus_is_big_enough_and_mixed() {
    let c = corpus();
    assert!(c.len() >= 150, "{}", c.len());
    assert!(c.iter().filter(|e| e.ours == '+').count() >= 75);
    assert!(c.iter().filter(|e| e.ours == '-').count() >= 75);
}

#[test]
fn both_parsers_give_the_recorded_verdicts() {
    // Set TERN_BLESS=1 to print the observed verdicts in corpus form
    // (for adding lines); the recorded file is what is checked.
    let bless = std::env::var_os("TERN_BLESS").is_some();
    let mut failures = Vec::new();
    for e in corpus() {
        let input = unescape(e.text);
        let (o, t) = (verdict(ours(&input)), verdict(theirs(&input)));
        if bless {
            println!("{o}{t}\t{}", e.text);
        }
        if (o, t) != (e.ours, e.theirs) {
            failures.push(format!(
                "recorded {}{} observed {o}{t}: {}",
                e.ours, e.theirs, e.text
            ));
        }
    }
    assert!(bless || failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_difference_is_explained() {
    for e in corpus() {
        if e.ours != e.theirs {
            assert!(
                DIFFERENCES.contains(&format!("`{}`", e.text)),
                "difference not explained in DIFFERENCES.md: {}",
                e.text
            );
        }
    }
}
