//! The Pi's address on the HTTP boot path: `X-Forwarded-For` from a local forwarder
//! (HookTFTP), in every form forwarders send it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// The Pi's address for a boot-path request that arrived on `connection`: the first entry of
/// `X-Forwarded-For`, trusted only when the connection comes from loopback (a forwarder on
/// this host); a remote HTTP client's own address says nothing about a Pi.
///
/// The entry may be a bare address (`10.0.0.7`, `fe80::1`) or carry the client's port
/// (`10.0.0.7:49152`, `[fe80::1]:49152`): hooktftp 1.1.1 sends no header at all, its current
/// head sends `ip:port`.
pub fn boot_peer(connection: SocketAddr, headers: &HeaderMap) -> Option<IpAddr> {
    if !connection.ip().is_loopback() {
        return None;
    }
    let first = headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim();
    parse_entry(first)
}

/// One `X-Forwarded-For` entry: an address, with or without a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    #[test]
    fn addresses_with_and_without_ports_are_read() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for (value, want) in [
            ("10.0.0.7", "10.0.0.7"),
            ("10.0.0.7:49152", "10.0.0.7"),
            (" 10.0.0.7:49152 , 127.0.0.1", "10.0.0.7"),
            ("fe80::1", "fe80::1"),
            ("[fe80::1]:49152", "fe80::1"),
        ] {
            let want: IpAddr = want.parse().unwrap();
            assert_eq!(boot_peer(local, &headers(value)), Some(want), "{value}");
        }
        for bad in ["", "pi-7", "10.0.0.7:port", "[fe80::1]", "10.0.0.300"] {
            assert_eq!(boot_peer(local, &headers(bad)), None, "{bad:?}");
        }
        assert_eq!(boot_peer(local, &HeaderMap::new()), None);
    }

    #[test]
    fn only_a_loopback_forwarder_is_trusted() {
        let remote: SocketAddr = "10.9.9.9:5000".parse().unwrap();
        assert_eq!(boot_peer(remote, &headers("10.0.0.7:49152")), None);
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(
            boot_peer(local6, &headers("10.0.0.7")),
            Some("10.0.0.7".parse().unwrap())
        );
    }
}
