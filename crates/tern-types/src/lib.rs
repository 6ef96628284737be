//! Validated value types shared by every Tern crate (placeholder: the
//! address grammar lands in this crate next).
#![forbid(unsafe_code)]

pub mod dsn;
