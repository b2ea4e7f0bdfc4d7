//! Proxy DHCP for network-booting Pis: the dnsmasq configuration snippet
//! `bakery-server print-dnsmasq-config` prints (bakery does not implement DHCP itself).
//!
//! dnsmasq runs in proxy mode for one subnet: the site's DHCP server keeps handing out
//! addresses, dnsmasq only adds the PXE answer a Pi's bootloader waits for (the menu text
//! `Raspberry Pi Boot`) and names bakery as the TFTP server. It answers no DNS (`port=0`) and
//! serves no TFTP of its own (`enable-tftp` is left out). The same lines as the BOSH release's
//! `dnsmasq.conf` template.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Args;
use thiserror::Error;

/// Why no snippet can be printed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DnsmasqError {
    /// The subnet is not an IPv4 CIDR.
    #[error("invalid subnet {value:?}: {reason}")]
    Subnet {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No TFTP server address given and none can be derived.
    #[error(
        "no tftp server address: give --tftp-server <ipv4> (the address Pis reach bakery's tftp server at), or a specific ipv4 --tftp-listen"
    )]
    NoTftpServer,
    /// The TFTP server address is not IPv4 (the Pi bootloaders speak DHCPv4 only).
    #[error("tftp server {0} is not an ipv4 address: Pis network-boot over ipv4 only")]
    NotIpv4(IpAddr),
}

/// The flags of `print-dnsmasq-config`.
#[derive(Debug, Clone, Args)]
pub struct DnsmasqArgs {
    /// The Pis' IPv4 subnet in CIDR notation, e.g. 10.0.0.0/24.
    #[arg(long)]
    pub subnet: String,
    /// The address Pis reach bakery's TFTP server at [default: the --tftp-listen address when
    /// it is a specific IPv4 address].
    #[arg(long)]
    pub tftp_server: Option<IpAddr>,
}

/// A proxy-DHCP setup: the Pis' subnet and bakery's TFTP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDhcp {
    /// The subnet's network address (host bits cleared).
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// The address of bakery's TFTP server.
    pub tftp_server: Ipv4Addr,
}

impl ProxyDhcp {
    /// From the flags; `tftp_listen` (the serve flag) gives the TFTP server address when
    /// `--tftp-server` is absent and it names a specific IPv4 address.
    pub fn from_args(
        args: &DnsmasqArgs,
        tftp_listen: Option<SocketAddr>,
    ) -> Result<ProxyDhcp, DnsmasqError> {
        let (network, prefix) = parse_subnet(&args.subnet)?;
        let server = match (args.tftp_server, tftp_listen) {
            (Some(ip), _) => ip,
            (None, Some(addr)) if !addr.ip().is_unspecified() => addr.ip(),
            (None, _) => return Err(DnsmasqError::NoTftpServer),
        };
        let IpAddr::V4(tftp_server) = server else {
            return Err(DnsmasqError::NotIpv4(server));
        };
        Ok(ProxyDhcp {
            network,
            prefix,
            tftp_server,
        })
    }

    /// The netmask of the subnet.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix))
    }

    /// The dnsmasq configuration snippet.
    pub fn render(&self) -> String {
        let ProxyDhcp {
            network,
            prefix,
            tftp_server,
        } = self;
        let netmask = self.netmask();
        format!(
            "# dnsmasq as proxy DHCP for Raspberry Pi network boot, for bakery.
# Printed by `bakery-server print-dnsmasq-config --subnet {network}/{prefix}`.
# It hands out no addresses (the site's DHCP server does), answers no DNS (port=0) and
# runs no TFTP server of its own (no enable-tftp): Pis are sent to bakery's TFTP server.
port=0
dhcp-range={network},proxy,{netmask}
pxe-service=0,\"Raspberry Pi Boot\",bootcode,{tftp_server}
dhcp-option-force=66,{tftp_server}
log-dhcp
"
        )
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// Parses `a.b.c.d/n` into its network address (host bits cleared) and prefix length.
pub fn parse_subnet(value: &str) -> Result<(Ipv4Addr, u8), DnsmasqError> {
    let bad = |reason| DnsmasqError::Subnet {
        value: value.to_owned(),
        reason,
    };
    let (addr, prefix) = value
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("expected CIDR notation such as 10.0.0.0/24"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| bad("the address part is not an ip address"))?;
    let IpAddr::V4(addr) = addr else {
        return Err(bad("only ipv4 subnets can serve Pis (DHCPv4)"));
    };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| bad("the prefix length must be a number from 0 to 32"))?;
    Ok((Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(subnet: &str, tftp: Option<&str>) -> DnsmasqArgs {
        DnsmasqArgs {
            subnet: subnet.to_owned(),
            tftp_server: tftp.map(|t| t.parse().unwrap()),
        }
    }

    #[test]
    fn subnets_parse_to_their_network() {
        assert_eq!(
            parse_subnet("10.1.2.0/24").unwrap(),
            (Ipv4Addr::new(10, 1, 2, 0), 24)
        );
        assert_eq!(
            parse_subnet("192.168.7.77/20").unwrap(),
            (Ipv4Addr::new(192, 168, 0, 0), 20)
        );
        assert_eq!(
            parse_subnet("10.9.8.7/32").unwrap(),
            (Ipv4Addr::new(10, 9, 8, 7), 32)
        );
        assert_eq!(
            parse_subnet("10.9.8.7/0").unwrap(),
            (Ipv4Addr::UNSPECIFIED, 0)
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/24",
            "fd00::/64",
            "x/24",
            "10.0.0.0/",
        ] {
            let err = parse_subnet(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn snippet_is_proxy_dhcp_pointing_at_bakery() {
        let dhcp = ProxyDhcp::from_args(&args("10.1.2.0/23", Some("10.1.2.5")), None).unwrap();
        let text = dhcp.render();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "port=0",
                "dhcp-range=10.1.2.0,proxy,255.255.254.0",
                "pxe-service=0,\"Raspberry Pi Boot\",bootcode,10.1.2.5",
                "dhcp-option-force=66,10.1.2.5",
                "log-dhcp",
            ]
        );
        assert!(!lines.iter().any(|l| l.contains("tftp-root")), "{text}");
    }

    #[test]
    fn tftp_server_comes_from_the_flag_or_a_specific_listen_address() {
        let listen = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let from = |tftp, l| ProxyDhcp::from_args(&args("10.0.0.0/24", tftp), l);
        assert_eq!(
            from(None, listen("10.0.0.2:69")).unwrap().tftp_server,
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert_eq!(
            from(Some("10.0.0.3"), listen("10.0.0.2:69"))
                .unwrap()
                .tftp_server,
            Ipv4Addr::new(10, 0, 0, 3)
        );
        assert_eq!(
            from(None, listen("0.0.0.0:69")),
            Err(DnsmasqError::NoTftpServer)
        );
        assert_eq!(from(None, None), Err(DnsmasqError::NoTftpServer));
        assert!(matches!(
            from(Some("fd00::2"), None),
            Err(DnsmasqError::NotIpv4(_))
        ));
    }

    /// The real dnsmasq accepts the snippet (`dnsmasq --test`); skipped loudly without it.
    #[test]
    fn dnsmasq_accepts_the_snippet() {
        let dnsmasq = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|p| p.exists());
        let Some(dnsmasq) = dnsmasq else {
            eprintln!(
                "SKIPPED dnsmasq_accepts_the_snippet: dnsmasq is not installed (apt-get install dnsmasq-base)"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bakery-dnsmasq.conf");
        let dhcp = ProxyDhcp::from_args(&args("10.1.2.0/24", Some("10.1.2.5")), None).unwrap();
        std::fs::write(&file, dhcp.render()).unwrap();
        let check = || {
            std::process::Command::new(dnsmasq)
                .arg("--test")
                .arg("-C")
                .arg(&file)
                .output()
                .unwrap()
        };
        let out = check();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dnsmasq --test refused it: {said}");
        assert!(said.contains("syntax check OK"), "{said}");

        // And the check is real: dnsmasq refuses a broken line.
        std::fs::write(
            &file,
            "dhcp-range=10.1.2.0,proxy,255.255.255.0\npxe-servce=0\n",
        )
        .unwrap();
        assert!(!check().status.success());
    }
}
