//! The SSRF guard: which destination addresses a delivery may connect to.
//!
//! Endpoint URLs are supplied by customers, so a delivery must never be a way
//! to reach the engine's own network: loopback, private ranges, link-local
//! (and with it the cloud metadata service), and so on. The guard is applied
//! at the one place every connection goes through: `delivery::client` dials
//! names only through [`GuardedResolver::resolve_host`], which resolves a
//! name once and hands back only the addresses that passed, so the
//! connection is made to an address that was checked (no
//! check-then-resolve-again window for DNS rebinding). URLs whose host is an
//! IP literal never reach a resolver; `delivery::http` checks those itself,
//! both for the first request and for every redirect hop (and the client
//! checks them again when dialling).
//!
//! An operator can open ranges again with `allow_cidrs` (tests use
//! `127.0.0.0/8`; an on-premises install may need a private range). An
//! allow-list entry overrides every block, including the metadata address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Whether `ip` is in a range deliveries must not reach (before any
/// allow-list is applied).
///
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`) addresses are judged
/// by the IPv4 address they carry.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => is_blocked_v6(v6),
    }
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    // 0.0.0.0/8 "this network" (includes the unspecified address)
    a == 0
        // 10.0.0.0/8 private
        || a == 10
        // 100.64.0.0/10 carrier-grade NAT (also Alibaba's metadata 100.100.100.200)
        || (a == 100 && (64..=127).contains(&b))
        // 127.0.0.0/8 loopback
        || a == 127
        // 169.254.0.0/16 link-local (cloud metadata 169.254.169.254)
        || (a == 169 && b == 254)
        // 172.16.0.0/12 private
        || (a == 172 && (16..=31).contains(&b))
        // 192.0.0.0/24 IETF protocol assignments
        || (a == 192 && b == 0 && c == 0)
        // 192.0.2.0/24 TEST-NET-1 (documentation)
        || (a == 192 && b == 0 && c == 2)
        // 192.88.99.0/24 6to4 relay anycast (deprecated)
        || (a == 192 && b == 88 && c == 99)
        // 192.168.0.0/16 private
        || (a == 192 && b == 168)
        // 198.18.0.0/15 benchmarking
        || (a == 198 && (b == 18 || b == 19))
        // 198.51.100.0/24 TEST-NET-2 (documentation)
        || (a == 198 && b == 51 && c == 100)
        // 203.0.113.0/24 TEST-NET-3 (documentation)
        || (a == 203 && b == 0 && c == 113)
        // 224.0.0.0/4 multicast
        || (224..=239).contains(&a)
        // 240.0.0.0/4 reserved, including 255.255.255.255 broadcast
        || a >= 240
}

/// The IPv4 address an IPv6 address carries, for the embeddings that map
/// one-to-one onto IPv4 (mapped, compatible, NAT64 well-known prefix, 6to4).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // ::ffff:a.b.c.d IPv4-mapped
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(low);
    }
    // ::ffff:0:a.b.c.d IPv4-translated (SIIT, RFC 2765)
    if s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some(low);
    }
    // ::a.b.c.d IPv4-compatible (deprecated); :: and ::1 are not embeddings
    if s[..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1) {
        return Some(low);
    }
    // 64:ff9b::a.b.c.d NAT64 well-known prefix (RFC 6052)
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    // 2002:aabb:ccdd::/48 6to4 (RFC 3056)
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_blocked_v4(v4);
    }
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        // fc00::/7 unique local (includes AWS metadata fd00:ec2::254)
        || (s[0] & 0xfe00) == 0xfc00
        // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfe80
        // fec0::/10 site-local (deprecated)
        || (s[0] & 0xffc0) == 0xfec0
        // ff00::/8 multicast
        || (s[0] & 0xff00) == 0xff00
        // 100::/64 discard-only
        || s[..4] == [0x100, 0, 0, 0]
        // 64:ff9b:1::/48 local-use NAT64 (RFC 8215): may translate to anything
        || s[..3] == [0x64, 0xff9b, 1]
        // 2001::/32 Teredo: the client IPv4 is obfuscated, refuse the range
        || s[..2] == [0x2001, 0]
        // 2001:2::/48 benchmarking
        || s[..3] == [0x2001, 2, 0]
        // 2001:db8::/32 documentation
        || s[..2] == [0x2001, 0xdb8]
        // 3fff::/20 documentation (RFC 9637)
        || (s[0] == 0x3fff && (s[1] & 0xf000) == 0)
}

/// The guard as configured: [`is_blocked`] with the operator's allow-list.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    /// A guard whose `allow` entries override the built-in blocks.
    pub fn new(allow: Vec<IpNet>) -> Guard {
        Guard { allow }
    }

    /// Whether a connection to `ip` is allowed. An IPv4-mapped IPv6 address
    /// also matches allow-list entries written for its IPv4 form.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return true;
        }
        !is_blocked(ip)
    }

    /// The error for a host every address of which was refused.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), BlockedDestination> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(BlockedDestination {
                host: host.to_string(),
                addrs: vec![ip],
            })
        }
    }
}

/// A destination refused by the guard. A distinct error type (also inside a
/// boxed error from the resolver), which is how `delivery::http` tells it
/// from an ordinary connect error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedDestination {
    /// The host as written in the URL.
    pub host: String,
    /// The addresses it resolved to, all refused.
    pub addrs: Vec<IpAddr>,
}

impl fmt::Display for BlockedDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "destination `{}` is blocked: ", self.host)?;
        if self.addrs.is_empty() {
            return f.write_str("no allowed address");
        }
        f.write_str("every address is in a blocked range (")?;
        for (i, a) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for BlockedDestination {}

/// The DNS resolver for deliveries: resolves once with the system resolver
/// and passes on only the addresses the guard permits. If the name resolved
/// but every address was refused, the error is a [`BlockedDestination`].
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver;

impl GuardedResolver {
    /// Resolve `host` and keep the permitted addresses (port 0: the caller
    /// puts in the URL's port).
    pub async fn resolve_host(
        guard: &Guard,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        if resolved.is_empty() {
            return Err(format!("no addresses found for `{host}`").into());
        }
        let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            resolved.into_iter().partition(|a| guard.permits(a.ip()));
        if allowed.is_empty() {
            return Err(Box::new(BlockedDestination {
                host: host.to_string(),
                addrs: refused.into_iter().map(|a| a.ip()).collect(),
            }));
        }
        if !refused.is_empty() {
            tracing::debug!(host, refused = ?refused, "dropped blocked addresses");
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_special_ipv4_ranges() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "100.100.100.200",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_blocked(ip(s)), "{s} should be blocked");
        }
    }

    #[test]
    fn allows_public_ipv4() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.167.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.1.1",
        ] {
            assert!(!is_blocked(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn blocks_special_ipv6_ranges() {
        for s in [
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "fc00::1",
            "fd00:ec2::254",
            "fdff:ffff::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "3fff:fff::1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::a00:1",
            "::2",
        ] {
            assert!(is_blocked(ip(s)), "{s} should be blocked");
        }
    }

    #[test]
    fn allows_public_ipv6() {
        for s in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "2001:db9::1",
            "fbff::1",
            "fe00::1",
            "3ffe::1",
            "3fff:1000::1",
        ] {
            assert!(!is_blocked(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_by_the_ipv4() {
        // IPv4-mapped
        assert!(is_blocked(ip("::ffff:127.0.0.1")));
        assert!(is_blocked(ip("::ffff:169.254.169.254")));
        assert!(is_blocked(ip("::ffff:10.1.2.3")));
        assert!(!is_blocked(ip("::ffff:8.8.8.8")));
        // IPv4-compatible (deprecated)
        assert!(is_blocked(ip("::127.0.0.1")));
        assert!(is_blocked(ip("::192.168.1.1")));
        assert!(!is_blocked(ip("::8.8.8.8")));
        // NAT64 well-known prefix
        assert!(is_blocked(ip("64:ff9b::10.0.0.1")));
        assert!(is_blocked(ip("64:ff9b::169.254.169.254")));
        assert!(!is_blocked(ip("64:ff9b::8.8.8.8")));
        // 6to4: 2002:7f00:0001::/48 carries 127.0.0.1
        assert!(is_blocked(ip("2002:7f00:1::1")));
        assert!(is_blocked(ip("2002:c0a8:101::1")));
        assert!(!is_blocked(ip("2002:808:808::1")));
    }

    #[test]
    fn allow_list_overrides_and_matches_mapped_addresses() {
        let g = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(g.permits(ip("127.0.0.1")));
        assert!(g.permits(ip("127.1.2.3")));
        assert!(g.permits(ip("::ffff:127.0.0.1")));
        assert!(!g.permits(ip("::1")));
        assert!(!g.permits(ip("10.0.0.1")));
        assert!(!g.permits(ip("169.254.169.254")));
        assert!(g.permits(ip("8.8.8.8")));

        let none = Guard::default();
        assert!(!none.permits(ip("127.0.0.1")));
        let err = none.check("127.0.0.1", ip("127.0.0.1")).unwrap_err();
        assert!(err.to_string().contains("blocked"), "{err}");
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_without_allow_list() {
        // `localhost` resolves from /etc/hosts to loopback only; no packets leave.
        let err = GuardedResolver::resolve_host(&Guard::default(), "localhost")
            .await
            .unwrap_err();
        let blocked = err
            .downcast_ref::<BlockedDestination>()
            .expect("a BlockedDestination error");
        assert_eq!(blocked.host, "localhost");
        assert!(blocked.addrs.iter().all(|a| a.is_loopback()));
    }

    #[tokio::test]
    async fn resolver_keeps_allowed_addresses() {
        let g = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let addrs = GuardedResolver::resolve_host(&g, "localhost")
            .await
            .unwrap();
        assert!(!addrs.is_empty());
        // ::1 (if /etc/hosts lists it) is not in the allow-list and is dropped.
        assert!(
            addrs.iter().all(|a| a.is_ipv4() && a.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}
