//! The SSRF guard (PROTOCOL.md §6.4): a webhook may not reach this machine or its private
//! network unless `TSUNAGI_WEBHOOK_ALLOW_PRIVATE=true`. Checked when a webhook is registered
//! and again on every connection a delivery opens — the delivery client resolves names through
//! [`GuardedResolver`], which drops such addresses, so a name that resolves elsewhere later
//! (DNS rebinding) is caught too.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Loopback, private (RFC 1918, unique local), link-local, unspecified, and the like: addresses
/// that reach the server's own side of the network rather than the internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
                // 0.0.0.0/8
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                // fc00::/7 unique local, fe80::/10 link-local
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why a target is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the webhook's host does not resolve")]
    Unresolved,
    #[error(
        "the webhook's host resolves to a loopback, private, link-local or unspecified address"
    )]
    Private,
}

/// Resolves `host:port` and refuses it when any address is private (unless `allow_private`).
pub async fn check_host(host: &str, port: u16, allow_private: bool) -> Result<(), Refused> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Refused::Unresolved)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refused::Unresolved);
    }
    if !allow_private && addrs.iter().any(|a| is_private(a.ip())) {
        return Err(Refused::Private);
    }
    Ok(())
}

/// reqwest's resolver for deliveries: the system's, without private addresses (unless allowed).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(Refused::Private) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn literal_addresses_are_checked_without_dns() {
        assert_eq!(
            check_host("127.0.0.1", 80, false).await,
            Err(Refused::Private)
        );
        assert_eq!(check_host("[::1]", 80, false).await, Err(Refused::Private));
        assert_eq!(check_host("127.0.0.1", 80, true).await, Ok(()));
        assert_eq!(
            check_host("localhost", 80, false).await,
            Err(Refused::Private)
        );
    }
}
