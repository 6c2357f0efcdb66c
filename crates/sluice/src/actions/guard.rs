//! The private-address guard of webhooks: rule templates can produce any URL, so without it
//! a rule could make sluice call its own database, the cloud metadata service or anything else
//! on the internal network.
//!
//! The check happens where the connection is made, not before: [`GuardedResolver`] is the HTTP
//! client's resolver, so the addresses checked are the addresses connected to, and a DNS answer
//! that changes between a check and the connection (DNS rebinding) cannot slip through. Hosts
//! that are IP literals never reach a resolver; the executor checks those with
//! [`is_private`] itself.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether a webhook must not connect to `ip`: loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast, documentation, benchmarking and reserved ranges, and the
/// IPv6 equivalents. IPv6 addresses that embed an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by that IPv4 address, since that is where the packets end up.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    match a {
        // "This network" (0/8, including the unspecified address), private 10/8, loopback 127/8.
        0 | 10 | 127 => true,
        // Shared address space (CGNAT), 100.64.0.0/10.
        100 => (64..128).contains(&b),
        169 => b == 254,
        172 => (16..32).contains(&b),
        192 => match (b, c) {
            // IETF protocol assignments, TEST-NET-1, the 6to4 relay anycast.
            (0, 0) | (0, 2) | (88, 99) => true,
            (168, _) => true,
            _ => false,
        },
        // Benchmarking 198.18.0.0/15, TEST-NET-2.
        198 => b == 18 || b == 19 || (b == 51 && c == 100),
        // TEST-NET-3.
        203 => b == 0 && c == 113,
        // Multicast 224/4, reserved 240/4 and the broadcast address.
        224..=255 => true,
        _ => false,
    }
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_private_v4(v4);
    }
    let segments = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        // Unique local fc00::/7.
        || segments[0] & 0xfe00 == 0xfc00
        // Link-local fe80::/10 and the deprecated site-local fec0::/10.
        || segments[0] & 0xffc0 == 0xfe80
        || segments[0] & 0xffc0 == 0xfec0
        // Multicast ff00::/8.
        || segments[0] & 0xff00 == 0xff00
        // Documentation 2001:db8::/32 and 3fff::/20.
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || segments[0] & 0xfff0 == 0x3ff0
        // Discard-only 100::/64.
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0])
}

/// The IPv4 address inside an IPv6 one that only carries it: IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-translated `::ffff:0:a.b.c.d`, the deprecated IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d` (and the local-use `64:ff9b:1::/48`) and 6to4 `2002:aabb:ccdd::`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // `::` and `::1` have their own meaning; everything else in ::/96 is IPv4-compatible.
    if s[..6] == [0; 6] && !(ip.is_unspecified() || ip.is_loopback()) {
        return Some(low(s[6], s[7]));
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(low(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        return Some(low(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

/// Why a connection was refused; the executor finds it in the client error's source chain to
/// tell a refusal (permanent) from a failing network (retryable).
#[derive(Debug)]
pub struct Refused {
    pub host: String,
    pub address: IpAddr,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves to private address {}",
            self.host, self.address
        )
    }
}

impl std::error::Error for Refused {}

/// Resolves with the system resolver (through tokio) and keeps only public addresses; a name
/// with no public address at all fails with [`Refused`].
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts the URL's port in afterwards.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (public, private): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| !is_private(addr.ip()));
            if public.is_empty() {
                if let Some(first) = private.first() {
                    return Err(Box::new(Refused {
                        host,
                        address: first.ip(),
                    }) as _);
                }
                return Err(format!("{host} has no addresses").into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ipv4() {
        let table = [
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("10.0.0.5", true),
            ("10.255.255.255", true),
            ("100.63.255.255", false),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("169.254.169.254", true),
            ("169.253.0.1", false),
            ("172.15.255.255", false),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("192.0.0.8", true),
            ("192.0.2.1", true),
            ("192.0.3.1", false),
            ("192.88.99.1", true),
            ("192.168.1.1", true),
            ("192.169.0.1", false),
            ("198.18.0.1", true),
            ("198.19.255.255", true),
            ("198.20.0.1", false),
            ("198.51.100.7", true),
            ("203.0.113.9", true),
            ("203.0.114.9", false),
            ("224.0.0.1", true),
            ("239.255.255.250", true),
            ("240.0.0.1", true),
            ("255.255.255.255", true),
            ("1.1.1.1", false),
            ("8.8.8.8", false),
            ("93.184.216.34", false),
            ("223.255.255.255", false),
        ];
        for (text, private) in table {
            let ip: IpAddr = text.parse().expect("the table holds valid addresses");
            assert_eq!(is_private(ip), private, "{text}");
        }
    }

    #[test]
    fn classifies_ipv6() {
        let table = [
            ("::", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.1.2.3", true),
            ("::ffff:8.8.8.8", false),
            ("::ffff:0:127.0.0.1", true),
            ("::ffff:0:10.0.0.1", true),
            ("::ffff:0:8.8.8.8", false),
            ("64:ff9b:1::10.0.0.1", true),
            ("::127.0.0.1", true),
            ("::8.8.8.8", false),
            ("64:ff9b::192.168.0.1", true),
            ("64:ff9b::8.8.8.8", false),
            ("2002:7f00:1::", true),
            ("2002:808:808::", false),
            ("fc00::1", true),
            ("fd12:3456:789a::1", true),
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", true),
            ("ff02::1", true),
            ("2001:db8::1", true),
            ("3fff::1", true),
            ("100::1", true),
            ("100:0:0:1::1", false),
            ("2001:4860:4860::8888", false),
            ("2606:4700:4700::1111", false),
            ("2a00:1450:4001::200e", false),
        ];
        for (text, private) in table {
            let ip: IpAddr = text.parse().expect("the table holds valid addresses");
            assert_eq!(is_private(ip), private, "{text}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        let name: Name = "localhost".parse().expect("localhost is a valid name");
        let error = match GuardedResolver.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let refused = error
            .downcast_ref::<Refused>()
            .expect("the error is a refusal");
        assert_eq!(refused.host, "localhost");
        assert!(refused.address.is_loopback(), "{}", refused.address);
    }
}
