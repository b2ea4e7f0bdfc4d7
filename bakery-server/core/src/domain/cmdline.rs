//! Renders a Pi's `cmdline.txt`: the kernel command line that points it at its NFS root.

use bakery_client::StaticNetwork;

/// Kernel parameters bakery owns and removes from a bakeform's own command line.
const OWNED_KEYS: [&str; 7] = [
    "root",
    "rootfstype",
    "nfsroot",
    "nbdroot",
    "nbddev",
    "ip",
    "init",
];
/// Flags bakery appends itself (dropped from the bakeform's line so they are not doubled).
const OWNED_FLAGS: [&str; 3] = ["rw", "ro", "rootwait"];

/// What the command line of one Pi is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct CmdlineInput<'a> {
    /// The bakeform's own `cmdline.txt`.
    pub bakeform_cmdline: &'a str,
    /// The operator's template (`--cmdline-template`), overriding everything else.
    pub operator_template: Option<&'a str>,
    /// The address Pis mount NFS from.
    pub nfs_server: &'a str,
    /// The server path of the Pi's root directory.
    pub nfs_root: &'a str,
    /// The Pi's static network, if any (else DHCP).
    pub network: Option<&'a StaticNetwork>,
    /// The Pi's serial.
    pub serial: &'a str,
    /// Where the Pi fetches its cloud-init files (`{{nocloud_url}}`).
    pub nocloud_url: &'a str,
    /// For a Pi with an NBD root: the `nbdroot=` value (`<server>:<port>/<export>`).
    pub nbd_root: Option<&'a str>,
}

/// The value of the kernel's `ip=` parameter: `dhcp`, or the static form
/// `<ip>::<gw>:<mask>:<host>:eth0:off[:<dns0>[:<dns1>]]`.
pub fn ip_param(network: Option<&StaticNetwork>) -> String {
    let Some(net) = network else {
        return "dhcp".to_owned();
    };
    let mut value = format!(
        "{}::{}:{}:{}:eth0:off",
        net.ip,
        net.gateway.as_deref().unwrap_or(""),
        net.netmask,
        net.hostname.as_deref().unwrap_or("")
    );
    for dns in net.dns.iter().take(2) {
        value.push(':');
        value.push_str(dns);
    }
    value
}

fn has_go_template(cmdline: &str) -> bool {
    cmdline.contains(".NfsServer") || cmdline.contains(".NfsRoot")
}

/// Replaces `{{.Field}}` and `{{ .Field }}` with `value`.
fn fill_go_field(text: &str, field: &str, value: &str) -> String {
    text.replace(&format!("{{{{.{field}}}}}"), value)
        .replace(&format!("{{{{ .{field} }}}}"), value)
}

/// Renders the command line of one Pi.
///
/// 1. An operator template fills `{{nfs_server}}`, `{{nfs_root}}`, `{{ip}}`, `{{serial}}`,
///    `{{nocloud_url}}` (e.g. `ds=nocloud;s={{nocloud_url}}` for cloud-init) and
///    `{{root}}`: `root=/dev/nbd0 nbdroot=<server>:<port>/bakery` for a Pi with an NBD root,
///    `root=/dev/nfs nfsroot=<server>:<root>,vers=3,tcp` for the others; `{{nbd_root}}` is
///    the `nbdroot=` value alone (empty for an NFS root).
///
/// A Pi with an NBD root skips step 2 (a first-bakery template names an NFS root).
/// 2. Else a bakeform made for the first bakery (`{{.NfsServer}}`/`{{.NfsRoot}}` in its
///    `cmdline.txt`) gets those two fields filled (and its `ip=` replaced by a static network).
/// 3. Else the bakeform's parameters are kept, minus `root=`, `rootfstype=`, `nfsroot=`,
///    `ip=`, `init=`, `rw`, `ro` and `rootwait`, and bakery's NFS-root parameters are appended.
pub fn render(input: &CmdlineInput<'_>) -> String {
    let ip = ip_param(input.network);
    let line = if let Some(template) = input.operator_template {
        template
            .replace("{{nfs_server}}", input.nfs_server)
            .replace("{{nfs_root}}", input.nfs_root)
            .replace("{{ip}}", &ip)
            .replace("{{serial}}", input.serial)
            .replace("{{nocloud_url}}", input.nocloud_url)
            .replace("{{root}}", &root_params(input))
            .replace("{{nbd_root}}", input.nbd_root.unwrap_or(""))
            .trim()
            .to_owned()
    } else if input.nbd_root.is_none() && has_go_template(input.bakeform_cmdline) {
        let filled = fill_go_field(input.bakeform_cmdline, "NfsServer", input.nfs_server);
        let filled = fill_go_field(&filled, "NfsRoot", input.nfs_root);
        if input.network.is_some() {
            let mut params: Vec<String> = filled
                .split_whitespace()
                .filter(|p| !p.starts_with("ip="))
                .map(str::to_owned)
                .collect();
            params.push(format!("ip={ip}"));
            params.join(" ")
        } else {
            filled.trim().to_owned()
        }
    } else {
        let mut params: Vec<String> = input
            .bakeform_cmdline
            .split_whitespace()
            .filter(|p| {
                let key = p.split_once('=').map_or(*p, |(k, _)| k);
                !OWNED_KEYS.contains(&key) && !OWNED_FLAGS.contains(p)
            })
            .map(str::to_owned)
            .collect();
        params.push(root_params(input));
        params.push("rw".to_owned());
        params.push(format!("ip={ip}"));
        params.push("rootwait".to_owned());
        params.join(" ")
    };
    // One line, whatever a template or bakeform held: the firmware reads a single line.
    format!(
        "{}\n",
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// The root parameters bakery appends: an NBD root through initramfs-tools' nbd script
/// (package nbd-client in the Pi's initramfs), else the kernel's NFS root.
fn root_params(input: &CmdlineInput<'_>) -> String {
    match input.nbd_root {
        Some(nbd) => format!("root=/dev/nbd0 nbdroot={nbd}"),
        None => format!(
            "root=/dev/nfs nfsroot={}:{},vers=3,tcp",
            input.nfs_server, input.nfs_root
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(cmdline: &str) -> CmdlineInput<'_> {
        CmdlineInput {
            bakeform_cmdline: cmdline,
            operator_template: None,
            nfs_server: "10.0.0.2",
            nfs_root: "/srv/bakery/disks/abc",
            network: None,
            serial: "1a2b3c4d",
            nocloud_url: "http://10.0.0.2:8080/cloud-init/",
            nbd_root: None,
        }
    }

    #[test]
    fn an_nbd_root_replaces_the_nfs_root() {
        let nbd = CmdlineInput {
            nbd_root: Some("10.0.0.2:10809/bakery"),
            ..input("console=tty1 root=PARTUUID=abc rootfstype=ext4 nbdroot=x rootwait")
        };
        assert_eq!(
            render(&nbd),
            "console=tty1 root=/dev/nbd0 nbdroot=10.0.0.2:10809/bakery rw ip=dhcp rootwait\n"
        );
        let go = CmdlineInput {
            nbd_root: Some("10.0.0.2:10809/bakery"),
            ..input("root=/dev/nfs nfsroot={{.NfsServer}}:{{.NfsRoot}} rw")
        };
        assert!(!render(&go).contains("nfsroot"), "{}", render(&go));
        let template = "{{root}} nbd={{nbd_root}} ip={{ip}}";
        let line = render(&CmdlineInput {
            operator_template: Some(template),
            ..nbd
        });
        assert_eq!(
            line,
            "root=/dev/nbd0 nbdroot=10.0.0.2:10809/bakery nbd=10.0.0.2:10809/bakery ip=dhcp\n"
        );
        let nfs = render(&CmdlineInput {
            operator_template: Some(template),
            ..input("")
        });
        assert_eq!(
            nfs,
            "root=/dev/nfs nfsroot=10.0.0.2:/srv/bakery/disks/abc,vers=3,tcp nbd= ip=dhcp\n"
        );
    }

    #[test]
    fn the_template_renders_the_nocloud_url() {
        let template =
            "root=/dev/nfs nfsroot={{nfs_server}}:{{nfs_root}} ds=nocloud;s={{nocloud_url}}";
        let line = render(&CmdlineInput {
            operator_template: Some(template),
            ..input("")
        });
        assert_eq!(
            line,
            "root=/dev/nfs nfsroot=10.0.0.2:/srv/bakery/disks/abc ds=nocloud;s=http://10.0.0.2:8080/cloud-init/\n"
        );
    }

    #[test]
    fn stock_cmdline_is_rewritten() {
        let stock = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";
        assert_eq!(
            render(&input(stock)),
            "console=serial0,115200 console=tty1 fsck.repair=yes quiet root=/dev/nfs nfsroot=10.0.0.2:/srv/bakery/disks/abc,vers=3,tcp rw ip=dhcp rootwait\n"
        );
    }

    #[test]
    fn go_template_is_filled() {
        let old = "dwc_otg.lpm_enable=0 root=/dev/nfs nfsroot={{.NfsServer}}:{{ .NfsRoot }},vers=3 rw ip=dhcp\n";
        assert_eq!(
            render(&input(old)),
            "dwc_otg.lpm_enable=0 root=/dev/nfs nfsroot=10.0.0.2:/srv/bakery/disks/abc,vers=3 rw ip=dhcp\n"
        );
    }

    #[test]
    fn static_network_and_operator_template() {
        let net = StaticNetwork {
            ip: "10.0.0.21".into(),
            netmask: "255.255.255.0".into(),
            gateway: Some("10.0.0.1".into()),
            dns: vec!["10.0.0.53".into()],
            hostname: Some("pi21".into()),
        };
        let mut old = input("root=/dev/nfs nfsroot={{.NfsServer}}:{{.NfsRoot}} ip=dhcp rw");
        old.network = Some(&net);
        assert_eq!(
            render(&old),
            "root=/dev/nfs nfsroot=10.0.0.2:/srv/bakery/disks/abc rw ip=10.0.0.21::10.0.0.1:255.255.255.0:pi21:eth0:off:10.0.0.53\n"
        );
        let mut i = input("console=tty1 root=/dev/mmcblk0p2");
        i.network = Some(&net);
        assert!(
            render(&i).ends_with(
                "ip=10.0.0.21::10.0.0.1:255.255.255.0:pi21:eth0:off:10.0.0.53 rootwait\n"
            )
        );
        i.operator_template = Some("nfsroot={{nfs_server}}:{{nfs_root}} ip={{ip}} id={{serial}}\n");
        assert_eq!(
            render(&i),
            "nfsroot=10.0.0.2:/srv/bakery/disks/abc ip=10.0.0.21::10.0.0.1:255.255.255.0:pi21:eth0:off:10.0.0.53 id=1a2b3c4d\n"
        );
    }
}
