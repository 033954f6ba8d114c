//! Where a callback may go. A `callback_url` is the client's to choose, so without a check the
//! scheduler would POST wherever a tenant points it: the cloud's metadata service at
//! 169.254.169.254, Redis on loopback, an admin page on the private network (server-side request
//! forgery). Unless `callback_allow_private_addresses` is set, such addresses are refused when a
//! request is submitted and again when the callback is delivered, on the address actually
//! connected to: [`GuardedResolver`] is the HTTP client's resolver, so a name that resolved to a
//! public address at submit and to a private one later (DNS rebinding) is still refused.
//!
//! Written by hand: no maintained crate classifies addresses for this; the standard library's
//! predicates cover most ranges, the rest are listed below with their RFCs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether a callback must not be sent to `ip`: loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast or reserved, in IPv4 or IPv6 (IPv4-mapped included).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 0.0.0.0/8 "this network" (RFC 1122), 100.64.0.0/10 shared address space (RFC 6598),
        // 240.0.0.0/4 reserved (RFC 1112).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // 64:ff9b::/96 (RFC 6052) translates to IPv4 addresses, internal ones included.
        || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
}

/// Checks a URL's host when a request is submitted: a literal address directly, a name by
/// resolving it. The message is for the client.
pub async fn check(url: &reqwest::Url, allow_internal: bool) -> Result<(), String> {
    let host = url.host_str().ok_or("has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = match literal_ip(host) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("host `{host}` does not resolve ({e}); give a host this service can reach"))?
            .collect(),
    };
    if allow_internal {
        return Ok(());
    }
    let Some(address) = addresses.iter().find(|a| is_internal(a.ip())) else { return Ok(()) };
    let named = match literal_ip(host) {
        Some(_) => format!("`{host}` is"),
        None => format!("`{host}` resolves to {},", address.ip()),
    };
    Err(format!("{named} a loopback, private or link-local address; callbacks go only to public addresses"))
}

/// The IP address a URL host spells, if it is one (`[::1]` included).
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// The callback client's DNS resolver: the system's answer without the internal addresses, and an
/// error when nothing is left, so the client cannot connect to one whatever the name resolves to.
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(public_addresses(name.as_str().to_owned()))
    }
}

async fn public_addresses(host: String) -> Result<Addrs, Box<dyn std::error::Error + Send + Sync>> {
    // The port is the client's to set; 0 is a placeholder for the lookup.
    let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let public: Vec<SocketAddr> = all.into_iter().filter(|a| !is_internal(a.ip())).collect();
    if public.is_empty() {
        return Err(format!("`{host}` resolves only to internal addresses; callback refused").into());
    }
    Ok(Box::new(public.into_iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_public_ones_pass() {
        let internal = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ];
        for ip in internal {
            assert!(is_internal(ip.parse().unwrap()), "{ip} is internal");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn submitted_urls_are_checked_on_the_address_they_name() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let metadata = check(&url("http://169.254.169.254/latest"), false).await.unwrap_err();
        assert!(metadata.contains("169.254.169.254"), "{metadata}");
        assert!(check(&url("http://[::1]:8080/hook"), false).await.is_err());
        assert!(check(&url("http://localhost/hook"), false).await.is_err(), "names are resolved");
        assert!(check(&url("http://127.0.0.1/hook"), true).await.is_ok(), "unless allowed");
        assert!(check(&url("https://93.184.216.34/hook"), false).await.is_ok());
    }

    #[tokio::test]
    async fn the_client_s_resolver_drops_internal_answers() {
        let name: Name = "localhost".parse().unwrap();
        let error = GuardedResolver.resolve(name).await.err().expect("localhost is refused");
        assert!(error.to_string().contains("internal"), "{error}");
    }
}
