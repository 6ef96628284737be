//! The key a client address is counted under.
//!
//! An IPv6 client usually controls a whole /64 (often far more), so counting
//! single IPv6 addresses would let it reset every per-address limit by
//! changing its interface identifier. Limits therefore count IPv6 clients
//! by prefix, and IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, as a
//! dual-stack socket reports IPv4 peers) as the IPv4 address they are.

use std::net::{IpAddr, Ipv6Addr};

/// The address `ip` is counted under: IPv4 addresses as they are (including
/// IPv4-mapped IPv6 ones), IPv6 addresses truncated to their first
/// `ipv6_prefix` bits (clamped to 0..=128).
///
/// ```
/// use std::net::IpAddr;
/// use tern_limits::client_key;
/// let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
/// assert_eq!(client_key(a, 64), client_key(b, 64));
/// assert_eq!(client_key("::ffff:192.0.2.7".parse().unwrap(), 64), "192.0.2.7".parse::<IpAddr>().unwrap());
/// ```
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let prefix = u32::from(ipv6_prefix.min(128));
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes() {
        assert_eq!(client_key(ip("192.0.2.9"), 64), ip("192.0.2.9"));
        assert_eq!(client_key(ip("2001:db8::1:2:3:4"), 64), ip("2001:db8::"));
        assert_eq!(
            client_key(ip("2001:db8::1:2:3:4"), 128),
            ip("2001:db8::1:2:3:4")
        );
        assert_eq!(
            client_key(ip("2001:db8::1:2:3:4"), 200),
            ip("2001:db8::1:2:3:4")
        );
        assert_eq!(client_key(ip("2001:db8::1"), 0), ip("::"));
        assert_eq!(client_key(ip("2001:db8:ffff::"), 36), ip("2001:db8:f000::"));
        assert_eq!(client_key(ip("::ffff:10.1.2.3"), 64), ip("10.1.2.3"));
    }
}
