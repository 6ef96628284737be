//! The per-message recipient state file, `queue/<id>.state`.
//!
//! Append-only text, one record per line:
//!
//! ```text
//! done <index> <checksum> <outcome>\n
//! ```
//!
//! `checksum` is FNV-1a (32 bit, 8 lower-case hex digits) over
//! `"<index> <outcome>"`. A record counts only when it ends in `\n` and its
//! checksum matches, so a line torn by a crash (or garbage left by a
//! filesystem that exposes unwritten blocks) is ignored rather than
//! misread. Before appending to a file that does not end in `\n`, a `\n` is
//! written first so a torn tail can never glue onto the next record.
//!
//! This module never interprets an outcome: it stores a one-line text.

use std::collections::BTreeSet;

const TAG: &str = "done";

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Replace anything that could break the line format.
fn sanitize_outcome(outcome: &str) -> String {
    let cleaned: String = outcome
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.is_empty() {
        "-".to_owned()
    } else {
        cleaned
    }
}

/// One record, with its trailing newline.
pub(crate) fn encode_record(index: usize, outcome: &str) -> Vec<u8> {
    let outcome = sanitize_outcome(outcome);
    let body = format!("{index} {outcome}");
    let sum = fnv1a32(body.as_bytes());
    format!("{TAG} {index} {sum:08x} {outcome}\n").into_bytes()
}

/// The recipient indices recorded in a state file's contents.
pub(crate) fn parse_done(contents: &[u8]) -> BTreeSet<usize> {
    let mut done = BTreeSet::new();
    let mut lines = contents.split(|&b| b == b'\n');
    // The piece after the last '\n' is an unterminated (torn) line.
    let _ = lines.next_back();
    for line in lines {
        if let Some(index) = parse_line(line) {
            done.insert(index);
        }
    }
    done
}

fn parse_line(line: &[u8]) -> Option<usize> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix(TAG)?.strip_prefix(' ')?;
    let (index_str, rest) = rest.split_once(' ')?;
    let (sum_str, outcome) = rest.split_once(' ')?;
    if index_str.is_empty() || !index_str.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: usize = index_str.parse().ok()?;
    let sum = u32::from_str_radix(sum_str, 16).ok()?;
    (sum_str.len() == 8 && fnv1a32(format!("{index} {outcome}").as_bytes()) == sum).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut file = Vec::new();
        file.extend(encode_record(0, "delivered"));
        file.extend(encode_record(7, "failed: 550 5.1.1\r\nno such user"));
        file.extend(encode_record(3, ""));
        assert_eq!(parse_done(&file), BTreeSet::from([0, 3, 7]));
    }

    #[test]
    fn torn_and_garbage_lines_are_ignored() {
        let good = encode_record(1, "delivered");
        let other = encode_record(12, "delivered");
        // Every strict prefix of a record is ignored.
        for cut in 0..other.len() {
            let mut file = good.clone();
            file.extend_from_slice(&other[..cut]);
            assert_eq!(parse_done(&file), BTreeSet::from([1]), "cut at {cut}");
            // Even when the repair newline and another record follow
            // (only a record missing nothing but its newline is complete).
            file.push(b'\n');
            file.extend(encode_record(2, "ok"));
            let expected = if cut == other.len() - 1 {
                BTreeSet::from([1, 2, 12])
            } else {
                BTreeSet::from([1, 2])
            };
            assert_eq!(parse_done(&file), expected, "cut at {cut}");
        }
        let mut file = vec![0u8; 100];
        file.push(b'\n');
        file.extend(b"done 5 00000000 forged\n");
        file.extend(b"done x 00000000 forged\n");
        file.extend(b"\xff\xfe\n");
        assert!(parse_done(&file).is_empty());
    }
}
