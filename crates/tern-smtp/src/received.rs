//! The `Received:` trace header field (RFC 5321 4.4, RFC 5322 3.6.7).
//!
//! [`received_header`] builds the whole field from facts the caller
//! gathered (the session's HELO name, the peer address, the queue id, the
//! date): there is no clock and no DNS here.
//!
//! Most of those facts are client-controlled (HELO, recipient) or
//! attacker-influenced (reverse DNS). Every piece is sanitised before it is
//! written: no CR, LF, NUL or other control character can reach the header,
//! and parentheses and backslashes never appear inside comments, so a HELO
//! like `x\r\nX-Injected: 1` can neither add a header field nor unbalance
//! the comment syntax. The result is folded below 78 columns.
//!
//! ```
//! use tern_smtp::received::{received_header, ReceivedInfo};
//! let h = received_header(&ReceivedInfo {
//!     helo: Some("client.example"),
//!     peer_ip: "192.0.2.1".parse().unwrap(),
//!     peer_name: Some("client.example"),
//!     by: "mx.example.net",
//!     protocol: "ESMTP",
//!     queue_id: "ABC123",
//!     tls: None,
//!     for_rcpt: Some("user@example.net"),
//!     date: "Tue, 1 Jul 2025 10:00:00 +0000",
//! });
//! assert!(h.starts_with("Received: from client.example (client.example [192.0.2.1])"));
//! assert!(h.ends_with("; Tue, 1 Jul 2025 10:00:00 +0000\r\n"));
//! ```

use std::net::IpAddr;

/// What goes into one `Received:` field.
#[derive(Debug, Clone)]
pub struct ReceivedInfo<'a> {
    /// The EHLO/HELO name the client sent, if any.
    pub helo: Option<&'a str>,
    /// The client's IP address.
    pub peer_ip: IpAddr,
    /// The client's verified reverse-DNS name, if any.
    pub peer_name: Option<&'a str>,
    /// Our host name.
    pub by: &'a str,
    /// The protocol keyword (`SMTP`, `ESMTPS`, `UTF8SMTPSA`...).
    pub protocol: &'a str,
    /// The queue id of the message.
    pub queue_id: &'a str,
    /// TLS version and cipher, e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`.
    pub tls: Option<&'a str>,
    /// The recipient, set when there is exactly one (with or without `<>`).
    pub for_rcpt: Option<&'a str>,
    /// The RFC 5322 date-time, computed by the caller.
    pub date: &'a str,
}

/// Folded lines stay below this many columns (RFC 5322 2.1.1 says 78).
const FOLD_AT: usize = 78;
/// Longest piece of client text we copy.
const MAX_PIECE: usize = 255;

/// Keeps host-name material (letters, digits, `-._:` and brackets for
/// literals); anything else becomes `?`. Empty input becomes `unknown`.
fn clean_host(s: &str) -> String {
    let out: String = s
        .chars()
        .take(MAX_PIECE)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']') {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.is_empty() {
        "unknown".to_owned()
    } else {
        out
    }
}

/// Keeps printable text without comment or line syntax: controls (CR, LF,
/// NUL...), parentheses and backslashes become `?`; spaces stay.
fn clean_text(s: &str) -> String {
    s.chars()
        .take(MAX_PIECE)
        .map(|c| {
            if c.is_control() || matches!(c, '(' | ')' | '\\') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// An atom-like token (protocol, queue id): letters, digits, `-`, `_`, `.`.
fn clean_atom(s: &str) -> String {
    clean_host(s).replace([':', '[', ']'], "?")
}

fn ip_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => format!("[{a}]"),
        IpAddr::V6(a) => format!("[IPv6:{a}]"),
    }
}

/// Builds the full header field, folded below 78 columns, ending in CRLF:
///
/// ```text
/// Received: from HELO (RDNS [IP]) (using TLS)
///     by BY with PROTOCOL id QUEUEID for <RCPT>; DATE
/// ```
pub fn received_header(info: &ReceivedInfo<'_>) -> String {
    let ip = ip_literal(info.peer_ip);
    let mut words: Vec<String> = Vec::new();
    let push_all = |s: &str, words: &mut Vec<String>| {
        words.extend(s.split(' ').filter(|w| !w.is_empty()).map(str::to_owned));
    };
    words.push("from".to_owned());
    words.push(match info.helo {
        Some(h) => clean_host(h),
        None => ip.clone(),
    });
    let tcp_info = match info.peer_name {
        Some(n) => format!("({} {ip})", clean_host(n)),
        None => format!("({ip})"),
    };
    push_all(&tcp_info, &mut words);
    if let Some(tls) = info.tls {
        let tls = clean_text(tls);
        let tls = tls.trim();
        if !tls.is_empty() {
            push_all(&format!("(using {tls})"), &mut words);
        }
    }
    // Each clause keyword stays on one line with its value, so folding never
    // separates `id` from the queue id that admins grep for.
    words.push(format!("by {}", clean_host(info.by)));
    words.push(format!("with {}", clean_atom(info.protocol)));
    words.push(format!("id {}", clean_atom(info.queue_id)));
    if let Some(rcpt) = info.for_rcpt {
        let bare = rcpt
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .unwrap_or(rcpt);
        // A path is one token: spaces (in quoted local parts) become '?',
        // as do brackets that could end it early.
        let bare: String = clean_text(bare)
            .chars()
            .map(|c| if matches!(c, ' ' | '<' | '>') { '?' } else { c })
            .collect();
        if !bare.is_empty() {
            words.push(format!("for <{bare}>"));
        }
    }
    if let Some(last) = words.last_mut() {
        last.push(';');
    }
    // The date is one unit too: folding inside it is legal but unreadable.
    words.push(clean_text(info.date).trim().to_owned());

    let mut out = String::from("Received:");
    let mut col = out.len();
    for w in words {
        let width = w.chars().count();
        if col + 1 + width >= FOLD_AT && col > 1 {
            out.push_str("\r\n\t");
            col = 1;
        } else {
            out.push(' ');
            col += 1;
        }
        out.push_str(&w);
        col += width;
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>() -> ReceivedInfo<'a> {
        ReceivedInfo {
            helo: Some("client.example"),
            peer_ip: "192.0.2.1".parse().unwrap(),
            peer_name: Some("mail.client.example"),
            by: "mx.example.net",
            protocol: "ESMTPS",
            queue_id: "0123456789ABCDEF",
            tls: Some("TLSv1.3 TLS_AES_256_GCM_SHA384"),
            for_rcpt: Some("<user@example.net>"),
            date: "Tue, 1 Jul 2025 10:00:00 +0000",
        }
    }

    /// Unfolds and checks the invariants every header must keep.
    fn check(h: &str) -> String {
        assert!(h.starts_with("Received: "), "{h}");
        assert!(h.ends_with("\r\n"), "{h}");
        let body = &h[..h.len() - 2];
        for line in body.split("\r\n") {
            // Over-long lines only when one unfoldable clause (a keyword and
            // its value, e.g. `by <very long host>`) is too long by itself.
            assert!(
                line.chars().count() < FOLD_AT || line.trim_start().split(' ').count() <= 2,
                "{line:?}"
            );
            assert!(!line.contains(['\r', '\n', '\0']), "{line:?}");
        }
        for (i, line) in body.split("\r\n").enumerate() {
            if i > 0 {
                assert!(
                    line.starts_with('\t'),
                    "continuation must start with WSP: {line:?}"
                );
            }
        }
        let unfolded = body.replace("\r\n\t", " ");
        let mut depth = 0i32;
        for c in unfolded.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            assert!((0..=1).contains(&depth), "{unfolded}");
        }
        assert_eq!(depth, 0, "{unfolded}");
        unfolded
    }

    #[test]
    fn full_header() {
        let h = received_header(&info());
        let u = check(&h);
        assert_eq!(
            u,
            "Received: from client.example (mail.client.example [192.0.2.1]) (using TLSv1.3 \
             TLS_AES_256_GCM_SHA384) by mx.example.net with ESMTPS id 0123456789ABCDEF for \
             <user@example.net>; Tue, 1 Jul 2025 10:00:00 +0000"
        );
        assert!(h.contains("\r\n\t"), "long header must be folded: {h}");
    }

    #[test]
    fn minimal_header() {
        let mut i = info();
        i.helo = None;
        i.peer_name = None;
        i.tls = None;
        i.for_rcpt = None;
        i.protocol = "SMTP";
        i.peer_ip = "2001:db8::1".parse().unwrap();
        let u = check(&received_header(&i));
        assert_eq!(
            u,
            "Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1]) by mx.example.net with \
             SMTP id 0123456789ABCDEF; Tue, 1 Jul 2025 10:00:00 +0000"
        );
    }

    #[test]
    fn mapped_ipv4_is_written_as_ipv4() {
        let mut i = info();
        i.peer_ip = "::ffff:198.51.100.7".parse().unwrap();
        let u = check(&received_header(&i));
        assert!(u.contains("[198.51.100.7])"), "{u}");
    }

    #[test]
    fn injection_attempts_are_neutralised() {
        let nasty = [
            "evil\r\nX-Injected: yes",
            "evil\nBcc: victim@example.com",
            "evil\rX: y",
            "evil\0nul",
            "evil) (by forged.example",
            "((((",
            "))))",
            "a\\",
            "",
            "   ",
            "ünïcödé",
            &"x".repeat(5000),
        ];
        for n in nasty {
            let mut i = info();
            i.helo = Some(n);
            i.peer_name = Some(n);
            i.tls = Some(n);
            i.for_rcpt = Some(n);
            i.protocol = n;
            i.queue_id = n;
            i.by = n;
            i.date = n;
            let h = received_header(&i);
            let u = check(&h);
            // The text may survive, but only inside this field's body.
            assert!(!h.contains("\r\nX-Injected") && !h.contains("\nBcc"), "{h}");
            assert!(!u.contains("(by"), "{u}");
            // Exactly one header field: no line starts a new field.
            assert_eq!(
                h.matches("\r\n").count(),
                h.matches("\r\n\t").count() + 1,
                "{h}"
            );
        }
    }

    #[test]
    fn quoted_recipient_stays_one_token() {
        let mut i = info();
        i.for_rcpt = Some("\"john (doe)\"@example.net");
        let u = check(&received_header(&i));
        assert!(u.contains("for <\"john??doe?\"@example.net>;"), "{u}");
    }

    #[test]
    fn folding_never_leaves_an_empty_line() {
        for len in 0..120 {
            let mut i = info();
            let helo = "h".repeat(len);
            i.helo = Some(&helo);
            let h = received_header(&i);
            check(&h);
            assert!(!h.contains("\r\n\t\r\n"));
            assert!(
                !h.contains(":\r\n"),
                "never fold right after the field name"
            );
        }
    }
}
