//! Who is on the other end: the client address every per-IP limit counts by (and that later
//! services may be told about), from the socket peer and, behind our own proxies,
//! `X-Forwarded-For` read from the right.
//!
//! The rule, with `ERP_TRUSTED_PROXIES` = N:
//!
//! - N = 0 (the default): `X-Forwarded-For` is ignored; the client is the socket peer.
//! - N ≥ 1: the socket peer is the last of our N proxies, and each of them appended to
//!   `X-Forwarded-For` the address it was connected from. So the rightmost N - 1 entries are
//!   our own proxies (skipped) and the N-th entry from the right is the address the first of our
//!   proxies saw: the client. Everything left of it was sent by the client and is ignored. All
//!   `X-Forwarded-For` lines of a request count, in order, as one comma-separated list.
//! - If the header has fewer than N entries, or the N-th from the right is not an IP address
//!   (optionally with a port, IPv6 in brackets), the request did not come through the expected
//!   chain and the socket peer is the client.
//!
//! The [`crate::middleware::Observe`] layer resolves the address once per request and puts it in
//! the request's extensions; handlers take it with the [`ClientIp`] extractor.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use erp_platform::config::{ConfigError, Env};

pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of a request (see the module documentation for how it is found).
///
/// In a handler: `async fn handler(ClientIp(ip): ClientIp, ...)`; from a request or its parts:
/// `ClientIp::of(request.extensions())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client of a request arriving from `peer` with `headers`, behind `trusted_proxies`.
    pub(crate) fn resolve(headers: &HeaderMap, peer: IpAddr, trusted_proxies: usize) -> Self {
        Self(client_ip(headers, peer, trusted_proxies).to_canonical())
    }

    /// The address the pipeline resolved for this request; without one (a router served
    /// without [`crate::middleware::Observe`]), the socket peer; without that, `0.0.0.0`.
    pub(crate) fn of(extensions: &Extensions) -> Self {
        if let Some(ip) = extensions.get::<ClientIp>() {
            return *ip;
        }
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Self(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), |c| {
                Self(c.0.ip().to_canonical())
            })
    }

    /// What per-IP limits count by (the same grouping as auth's login lockout).
    pub(crate) fn rate_limit_subject(&self) -> String {
        erp_platform::client_address::limit_subject(self.0)
    }
}

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self::of(&parts.extensions))
    }
}

/// `ERP_TRUSTED_PROXIES` (0..=16, default 0); when unset, `ERP_TRUST_FORWARDED_FOR=true` (the
/// older setting, which trusted one proxy in front) means 1.
pub(crate) fn trusted_proxies_from_env(env: &Env) -> Result<usize, ConfigError> {
    let legacy = usize::from(env.bool("ERP_TRUST_FORWARDED_FOR", false)?);
    env.int_in("ERP_TRUSTED_PROXIES", legacy, 0..=16)
}

/// The rule of the module documentation.
pub(crate) fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: usize) -> IpAddr {
    if trusted_proxies == 0 {
        return peer;
    }
    // Lines in order, entries of each in order; read from the right.
    let mut entries = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','));
    entries
        .nth(trusted_proxies - 1)
        .and_then(parse_entry)
        .unwrap_or(peer)
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    const PEER: &str = "10.0.0.9";

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn client(lines: &[&str], trusted: usize) -> String {
        ClientIp::resolve(&headers(lines), PEER.parse().unwrap(), trusted).to_string()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(client(&["203.0.113.7"], 0), PEER);
        assert_eq!(client(&[], 0), PEER);
    }

    #[test]
    fn one_proxy_the_rightmost_entry_is_the_client() {
        assert_eq!(client(&["203.0.113.7"], 1), "203.0.113.7");
        // Whatever the client put in front is ignored.
        assert_eq!(client(&["1.2.3.4, 5.6.7.8, 203.0.113.7"], 1), "203.0.113.7");
        assert_eq!(client(&["1.2.3.4,203.0.113.7"], 1), "203.0.113.7");
    }

    #[test]
    fn n_proxies_skip_the_n_minus_one_rightmost_entries() {
        // client 203.0.113.7 -> proxy A (10.0.0.1) -> proxy B (10.0.0.2) -> gateway (peer B).
        let chain = "6.6.6.6, 203.0.113.7, 10.0.0.1";
        assert_eq!(client(&[chain], 2), "203.0.113.7");
        assert_eq!(client(&[chain], 3), "6.6.6.6");
        assert_eq!(client(&[chain], 1), "10.0.0.1");
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        assert_eq!(
            client(&["6.6.6.6", "203.0.113.7, 10.0.0.1"], 2),
            "203.0.113.7"
        );
        assert_eq!(
            client(&["6.6.6.6, 203.0.113.7", "10.0.0.1"], 2),
            "203.0.113.7"
        );
        assert_eq!(
            client(&["6.6.6.6", "203.0.113.7", "10.0.0.1"], 3),
            "6.6.6.6"
        );
    }

    #[test]
    fn too_few_entries_or_garbage_fall_back_to_the_peer() {
        assert_eq!(client(&[], 1), PEER);
        assert_eq!(client(&["203.0.113.7"], 2), PEER);
        assert_eq!(client(&["203.0.113.7, unknown"], 1), PEER);
        assert_eq!(client(&["203.0.113.7, "], 1), PEER);
        assert_eq!(client(&["203.0.113.7,,10.0.0.1"], 2), PEER);
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        assert_eq!(client(&["203.0.113.7:4711"], 1), "203.0.113.7");
        assert_eq!(client(&["[2001:db8::1]:4711"], 1), "2001:db8::1");
        assert_eq!(client(&["[2001:db8::1]"], 1), "2001:db8::1");
        assert_eq!(client(&[" 2001:db8::1 "], 1), "2001:db8::1");
        assert_eq!(client(&["::ffff:203.0.113.7"], 1), "203.0.113.7");
    }

    #[test]
    fn trusted_proxies_setting() {
        let read = |pairs: &[(&str, &str)]| {
            trusted_proxies_from_env(&Env::from_pairs(pairs.iter().copied()))
        };
        assert_eq!(read(&[]).unwrap(), 0);
        assert_eq!(read(&[("ERP_TRUSTED_PROXIES", "2")]).unwrap(), 2);
        assert_eq!(read(&[("ERP_TRUST_FORWARDED_FOR", "true")]).unwrap(), 1);
        assert_eq!(read(&[("ERP_TRUST_FORWARDED_FOR", "false")]).unwrap(), 0);
        assert_eq!(
            read(&[
                ("ERP_TRUST_FORWARDED_FOR", "true"),
                ("ERP_TRUSTED_PROXIES", "0")
            ])
            .unwrap(),
            0
        );
        for bad in ["-1", "17", "two"] {
            let error = read(&[("ERP_TRUSTED_PROXIES", bad)]).unwrap_err();
            assert!(error.to_string().contains("ERP_TRUSTED_PROXIES"), "{error}");
        }
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let ip = ClientIp("2001:db8:1:2:3:4:5:6".parse().unwrap());
        assert_eq!(ip.rate_limit_subject(), "2001:db8:1:2::/64");
        let ip = ClientIp("203.0.113.7".parse().unwrap());
        assert_eq!(ip.rate_limit_subject(), "203.0.113.7");
    }

    #[test]
    fn the_resolved_address_wins_then_the_peer() {
        let mut extensions = Extensions::new();
        assert_eq!(ClientIp::of(&extensions).to_string(), "0.0.0.0");
        extensions.insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 5000))));
        assert_eq!(ClientIp::of(&extensions).to_string(), "192.0.2.1");
        extensions.insert(ClientIp("203.0.113.7".parse().unwrap()));
        assert_eq!(ClientIp::of(&extensions).to_string(), "203.0.113.7");
    }
}
