//! How per-client limits (the gateway's rate limits, auth's login lockout) name a client address.

use std::net::{IpAddr, Ipv6Addr};

/// The address as limits count it: an IPv4 address (also an IPv4-mapped IPv6 one), or the /64
/// network of an IPv6 address (one subscriber usually holds a whole /64, so single addresses
/// would give it 2^64 fresh counters).
pub fn limit_subject(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => {
            let network = u128::from(ip) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(ip: &str) -> String {
        limit_subject(ip.parse().unwrap())
    }

    #[test]
    fn ipv4_addresses_and_ipv6_networks() {
        assert_eq!(subject("203.0.113.7"), "203.0.113.7");
        assert_eq!(subject("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(
            subject("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(subject("2001:db8:1:2::1"), subject("2001:db8:1:2:ffff::9"));
        assert_ne!(subject("2001:db8:1:2::1"), subject("2001:db8:1:3::1"));
    }
}
