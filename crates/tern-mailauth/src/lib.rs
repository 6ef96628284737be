//! Email authentication for Tern, over the `mail-auth` crate: inbound
//! checks ([`verify`]: SPF, DKIM, DMARC, ARC, iprev and the
//! `Authentication-Results:` field), outbound DKIM signing ([`sign`]) with
//! keys on disk ([`keys`]) shared through a [`SignerHandle`] that a reload
//! swaps whole, the DNS records an admin must publish
//! ([`records`]) and the header surgery both need ([`headers`]). [`body`]
//! parses signatures within bounds and streams the body hashes; [`policy`]
//! is what the admin decides (the inbound policy and the DKIM keys).
//!
//! This crate is a service (layer 2): no sockets of its own, no listeners,
//! no logging of message content or keys. DNS goes through the hickory
//! resolver of `tern-dns`, configured with Tern's nameservers, so every
//! test serves records from a DNS server on loopback.
//!
//! ```no_run
//! # async fn demo(dns: std::sync::Arc<tern_dns::HickoryResolver>, msg: &[u8]) {
//! use tern_mailauth::{Inbound, InboundPolicy, Verifier};
//! let verifier = Verifier::new(dns, "mx.example.test", InboundPolicy::default());
//! let verdict = verifier
//!     .verify(Inbound {
//!         client_ip: "192.0.2.1".parse().unwrap(),
//!         helo: "mail.example.org",
//!         mail_from: "a@example.org",
//!         message: msg,
//!         seal_with: None,
//!     })
//!     .await;
//! println!("{}", verdict.header); // Authentication-Results: mx.example.test; spf=…
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod body;
pub mod dnsmeter;
pub mod error;
pub mod headers;
pub mod keys;
pub mod policy;
pub mod records;
pub mod sign;
pub mod verify;

pub use dnsmeter::{DnsObserver, LookupKind, LookupOutcome};
pub use error::Error;
pub use keys::{DkimKey, KeyAlgorithm};
pub use policy::{Action, DkimConfig, InboundPolicy, TempErrorAction};
pub use sign::{Signer, SignerHandle};
pub use verify::{Disposition, Inbound, Verdict, Verifier};
