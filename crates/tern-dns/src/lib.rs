//! DNS for Tern: the [`Resolver`] trait every DNS consumer shares, its
//! production implementation on hickory-resolver ([`HickoryResolver`]), a
//! table-backed fake for unit tests ([`StaticResolver`]), and the MX logic of
//! outbound delivery ([`plan_delivery`]: RFC 5321 section 5.1, RFC 7505 null
//! MX). [`config`] is the `[dns]` section of the configuration file, which
//! this crate owns.
//!
//! The outbound queue manager holds an `Arc<dyn Resolver>` and asks
//! [`plan_delivery`] where a domain's mail goes; SPF, DKIM and DMARC will ask
//! the same resolver for TXT records, so tests of all of them can point one
//! [`HickoryResolver`] at a DNS server on loopback.
//!
//! What this crate must never do:
//! - allocate without bound on a hostile answer: every list it returns is
//!   capped ([`MAX_RECORDS`], [`MAX_TXT_LEN`], [`MAX_MX_HOSTS`],
//!   [`MAX_ADDRESSES_PER_HOST`]) and every lookup has a deadline;
//! - turn a temporary DNS problem (SERVFAIL, timeout, network) into a
//!   permanent failure: that would bounce mail that a retry would deliver;
//! - use DNS over TLS/HTTPS/QUIC or DNSSEC: hickory-resolver is built with
//!   its default features off, so this crate brings no TLS stack and no
//!   crypto provider into the binary;
//! - read `/etc/hosts`: mail routing comes from the DNS alone.
#![forbid(unsafe_code)]

pub mod config;
mod error;
mod hickory;
mod plan;
mod resolver;
mod static_resolver;

pub use error::{DnsError, QueryType};
pub use hickory::{HickoryResolver, ResolverSettings, SetupError};
pub use plan::{
    DeliveryPlan, MAX_ADDRESSES_PER_HOST, MAX_MX_HOSTS, MxHost, PlanError, PlanSource, SkippedHost,
    plan_delivery,
};
pub use resolver::{DnsFuture, MAX_RECORDS, MAX_TXT_LEN, MxRecord, Resolver, SrvRecord};
pub use static_resolver::StaticResolver;
