//! Mailbox keys: the only strings that ever become mail-store paths.
//!
//! A key is `local@domain`, both lower-case ASCII. The local part is
//! `[a-z0-9._-]{1,64}` not starting with `.` (so never `.`, `..` or a hidden
//! file); the domain is LDH labels of 1..=63 characters joined by single
//! dots, at most 253 characters, no label starting or ending with `-`.
//! Such a key maps to `<root>/<domain>/<local>` with two plain path
//! components, so it can never point outside the root.
//!
//! This module must never be loosened to accept anything a client could use
//! to traverse paths (`/`, `\`, `..`, NUL, …).

/// Longest local part of a mailbox key (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL: usize = 64;
/// Longest domain of a mailbox key.
pub const MAX_DOMAIN: usize = 253;

/// Splits and checks a mailbox key; returns `(local, domain)`.
pub fn validate_mailbox_key(key: &str) -> Result<(&str, &str), &'static str> {
    let (local, domain) = key
        .rsplit_once('@')
        .ok_or("mailbox key must be local@domain")?;
    validate_local(local)?;
    validate_domain(domain)?;
    Ok((local, domain))
}

/// Checks the local part of a mailbox key.
pub fn validate_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.len() > MAX_LOCAL {
        return Err("local part longer than 64 characters");
    }
    if local.starts_with('.') {
        return Err("local part starts with '.'");
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("local part may only contain a-z 0-9 . _ -");
    }
    Ok(())
}

/// Checks the domain of a mailbox key (lower-case ASCII LDH).
pub fn validate_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return Err("domain empty or longer than 253 characters");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("domain label empty or longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("domain may only contain a-z 0-9 - and dots");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in [
            "alice@example.test",
            "a.b_c-d@x",
            "0@a-b.c",
            "con@example.test",
            "a..b@example.test",
        ] {
            assert!(validate_mailbox_key(good).is_ok(), "{good}");
        }
        let long_local = format!("{}@example.test", "a".repeat(65));
        let long_label = format!("a@{}.test", "b".repeat(64));
        for bad in [
            "",
            "alice",
            "@example.test",
            "alice@",
            ".hidden@example.test",
            "..@example.test",
            "../../etc/passwd@example.test",
            "a/b@example.test",
            "a\\b@example.test",
            "Alice@example.test",
            "alice@Example.test",
            "a+b@example.test",
            "a%b@example.test",
            "a\0@example.test",
            "alice@example..test",
            "alice@.example.test",
            "alice@example.test.",
            "alice@-x.test",
            "alice@x-.test",
            "alice@ex/ample",
            "alice@..",
            "alice@[127.0.0.1]",
            "ålice@example.test",
            long_local.as_str(),
            long_label.as_str(),
        ] {
            assert!(validate_mailbox_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
