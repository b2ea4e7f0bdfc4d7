//! The static network of a bake request: what may go into a Pi's kernel `ip=` parameter.
//!
//! Each value ends up inside `cmdline.txt`, so each must be exactly what it says: IPv4
//! addresses (the kernel's `ip=` autoconfiguration is IPv4 only) and an RFC 1123 host name;
//! anything else could add kernel parameters or lines.

use std::net::Ipv4Addr;

use bakery_client::StaticNetwork;
use thiserror::Error;

/// The longest host name accepted.
pub const MAX_HOSTNAME: usize = 253;

/// A static network the kernel's `ip=` parameter cannot carry as given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetworkError {
    /// A field that must be an IPv4 address is not one.
    #[error("network {field} {value:?} is not an ipv4 address")]
    NotIpv4 {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// The host name is not an RFC 1123 host name.
    #[error(
        "network hostname {0:?} is not a host name (letters, digits, '-' and '.', at most 253 characters)"
    )]
    Hostname(String),
}

fn ipv4(field: &'static str, value: &str) -> Result<(), NetworkError> {
    value
        .parse::<Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| NetworkError::NotIpv4 {
            field,
            value: value.to_owned(),
        })
}

/// Checks every field of a bake request's static network.
pub fn check_network(net: &StaticNetwork) -> Result<(), NetworkError> {
    ipv4("ip", &net.ip)?;
    ipv4("netmask", &net.netmask)?;
    if let Some(gateway) = &net.gateway {
        ipv4("gateway", gateway)?;
    }
    for dns in &net.dns {
        ipv4("dns", dns)?;
    }
    if let Some(host) = &net.hostname {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.len() > MAX_HOSTNAME || !host.split('.').all(label_ok) {
            return Err(NetworkError::Hostname(host.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> StaticNetwork {
        StaticNetwork {
            ip: "10.0.0.21".into(),
            netmask: "255.255.255.0".into(),
            gateway: Some("10.0.0.1".into()),
            dns: vec!["10.0.0.53".into(), "1.1.1.1".into()],
            hostname: Some("pi-21.lab".into()),
        }
    }

    #[test]
    fn good_networks_pass() {
        assert_eq!(check_network(&net()), Ok(()));
        let bare = StaticNetwork {
            gateway: None,
            dns: vec![],
            hostname: None,
            ..net()
        };
        assert_eq!(check_network(&bare), Ok(()));
    }

    #[test]
    fn anything_that_could_reach_the_kernel_command_line_is_refused() {
        type Change = Box<dyn Fn(&mut StaticNetwork)>;
        let cases: Vec<Change> = vec![
            Box::new(|n| n.ip = "10.0.0.21 init=/bin/sh".into()),
            Box::new(|n| n.ip = "fe80::1".into()),
            Box::new(|n| n.netmask = "24".into()),
            Box::new(|n| n.gateway = Some("10.0.0.1:x".into())),
            Box::new(|n| n.dns = vec!["10.0.0.53\n".into()]),
            Box::new(|n| n.hostname = Some("pi\ninit=/bin/sh".into())),
            Box::new(|n| n.hostname = Some("pi:eth1".into())),
            Box::new(|n| n.hostname = Some("-pi".into())),
            Box::new(|n| n.hostname = Some("a..b".into())),
            Box::new(|n| n.hostname = Some("a".repeat(254))),
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut n = net();
            change(&mut n);
            assert!(check_network(&n).is_err(), "case {i}: {n:?}");
        }
    }
}
