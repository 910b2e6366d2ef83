//! The client address (PROTOCOL.md §7, `TSUNAGI_TRUSTED_PROXIES`): the TCP peer, unless the peer
//! is a trusted proxy; then `X-Forwarded-For` is walked from the right, skipping trusted proxies,
//! and the first untrusted entry is the client. Per-address limits key on [`AddressKey`].
//!
//! Hand-written: the rule is a dozen lines, and the crates that parse forwarding headers either
//! trust the leftmost entry (spoofable) or come with a framework of their own.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The client address key of a request's head (an HTTP request, or the handshake of a
/// Socket.IO connection). A request without a peer (built in process, never from a socket)
/// counts as the unspecified address.
pub fn request_client(parts: &Parts, trusted: &[IpNet]) -> AddressKey {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    AddressKey::of(client_addr(peer, &parts.headers, trusted))
}

/// Who the client is, given the TCP `peer`, the request's headers and the trusted proxies.
/// A malformed `X-Forwarded-For` from a trusted proxy leaves the peer as the client (the
/// proxy is then the one limited, which is the safe side). All entries trusted: the leftmost.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for entry in text.split(',') {
            match parse_entry(entry.trim()) {
                Some(ip) => chain.push(ip),
                None => return peer,
            }
        }
    }
    let mut client = peer;
    for ip in chain.into_iter().rev() {
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// An IPv4 peer seen on a dual-stack socket (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `1.2.3.4`, `2001:db8::1`, and the forms with a port some proxies write (`1.2.3.4:80`,
/// `[2001:db8::1]:80`, `[2001:db8::1]`).
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let bracketed = s.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// What per-address limits count by: an IPv4 address, or an IPv6 /64 (one subscriber's
/// network: a host picks any address within its /64 at will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                AddressKey(IpAddr::V6(Ipv6Addr::from(bits)))
            }
            v4 => AddressKey(v4),
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let h = headers(&["9.9.9.9"]);
        assert_eq!(client_addr(ip("1.2.3.4"), &h, &[]), ip("1.2.3.4"));
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_addr(ip("1.2.3.4"), &h, &t), ip("1.2.3.4"));
    }

    #[test]
    fn walks_from_the_right_skipping_trusted_proxies() {
        let t = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // spoofed leftmost entry, real client, then an inner proxy
        let h = headers(&["6.6.6.6, 5.5.5.5, 10.0.0.7"]);
        assert_eq!(client_addr(ip("127.0.0.1"), &h, &t), ip("5.5.5.5"));
        // several headers count as one list, in order
        let h = headers(&["6.6.6.6", "5.5.5.5", "10.1.1.1"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &t), ip("5.5.5.5"));
    }

    #[test]
    fn all_trusted_gives_the_leftmost_and_no_header_the_peer() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &t), ip("10.0.0.3"));
        assert_eq!(
            client_addr(ip("10.0.0.1"), &HeaderMap::new(), &t),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn malformed_header_leaves_the_peer() {
        let t = nets(&["10.0.0.0/8"]);
        for bad in ["unknown", "5.5.5.5, ", "5.5.5.5,,6.6.6.6", "1.2.3.4.5", ""] {
            let h = headers(&[bad]);
            assert_eq!(
                client_addr(ip("10.0.0.1"), &h, &t),
                ip("10.0.0.1"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let t = nets(&["127.0.0.1/32"]);
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(client_addr(ip("127.0.0.1"), &h, &t), ip("2001:db8::1"));
        let h = headers(&["5.5.5.5:1234"]);
        assert_eq!(client_addr(ip("::ffff:127.0.0.1"), &h, &t), ip("5.5.5.5"));
        let h = headers(&["[2001:db8::2]"]);
        assert_eq!(client_addr(ip("127.0.0.1"), &h, &t), ip("2001:db8::2"));
    }

    #[test]
    fn ipv6_keys_by_64() {
        let a = AddressKey::of(ip("2001:db8:1:2:aaaa::1"));
        let b = AddressKey::of(ip("2001:db8:1:2:bbbb::9"));
        let c = AddressKey::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(AddressKey::of(ip("::ffff:1.2.3.4")).to_string(), "1.2.3.4");
    }
}
