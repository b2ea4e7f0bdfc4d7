//! Renders the NFS exports from the inventory, for the kernel server (`/etc/exports` lines) or
//! nfs-ganesha (`EXPORT` blocks): each Pi's directories exported only to the address it was last
//! seen at, to nobody before that.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use thiserror::Error;

/// The export options used unless the operator sets `--export-options`.
pub const DEFAULT_EXPORT_OPTIONS: &str = "rw,sync,no_subtree_check,no_root_squash";

/// One directory a Pi mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// The disk's export number: given when it is first exported, kept while the disk exists,
    /// in `0..EXPORT_NUMBERS`; ganesha export ids derive from it.
    pub number: i64,
    /// Whether the directory is the Pi's root disk (else an attached disk holding `disk.img`).
    pub root: bool,
    /// The serial of the Pi the directory belongs to.
    pub serial: String,
    /// The directory.
    pub path: String,
    /// The Pi's last seen address, if known.
    pub address: Option<IpAddr>,
}

/// Who may mount a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportScope {
    /// Only the owning Pi's address; nothing is exported before that address is known.
    PiAddress,
    /// Any host (`*`), when the operator asks for it with `--export-to-any`.
    Any,
}

/// How a Pi's address is written: an IPv4 address seen on a dual-stack socket
/// (`::ffff:10.0.0.21`) as the IPv4 address the NFS server will see it connect from.
fn client(addr: IpAddr) -> String {
    addr.to_canonical().to_string()
}

fn quote_path(path: &str) -> String {
    if path.chars().any(|c| c.is_whitespace() || c == '"') {
        format!("\"{}\"", path.replace('"', "\\042"))
    } else {
        path.to_owned()
    }
}

/// The exports file for `entries` (sorted by path so the content is deterministic).
pub fn render(entries: &[ExportEntry], options: &str, scope: ExportScope) -> String {
    let mut sorted: Vec<&ExportEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = String::from("# managed by bakery: rewritten after every change, do not edit\n");
    for entry in sorted {
        let client = match (scope, entry.address) {
            (ExportScope::Any, _) => "*".to_owned(),
            (ExportScope::PiAddress, Some(addr)) => client(addr),
            (ExportScope::PiAddress, None) => continue,
        };
        let _ = writeln!(out, "{} {client}({options})", quote_path(&entry.path));
    }
    out
}

/// The first ganesha export id bakery uses unless `--ganesha-export-id-base` says otherwise
/// (ids below it stay free for the operator's own exports).
pub const DEFAULT_GANESHA_EXPORT_ID_BASE: u16 = 1000;

/// How many export numbers there are: one per ganesha export id from the default base up.
pub const EXPORT_NUMBERS: i64 = 65536 - DEFAULT_GANESHA_EXPORT_ID_BASE as i64;

/// Why ganesha exports could not be rendered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RenderError {
    /// A directory cannot be written into a ganesha config safely.
    #[error("cannot export {path:?} through nfs-ganesha: {reason}")]
    Path {
        /// The directory.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More directories than export ids above the base.
    #[error("{count} exports do not fit in the ganesha export ids {base}..=65535")]
    IdsExhausted {
        /// How many directories.
        count: usize,
        /// The first id bakery may use.
        base: u16,
    },
}

/// The ganesha `Export_Id` of every entry, in the order given.
///
/// An entry's id is `base + number mod (65536 - base)`: it depends only on the disk's own
/// export number, so it stays the same across bakery restarts and ganesha reloads. With the
/// default base every number has its own id; with a higher base two numbers can meet, and the
/// higher one then takes the next free id.
pub fn ganesha_export_ids(entries: &[ExportEntry], base: u16) -> Result<Vec<u16>, RenderError> {
    let base = base.max(1);
    let span = 65536 - i64::from(base);
    if entries.len() as i64 > span {
        return Err(RenderError::IdsExhausted {
            count: entries.len(),
            base,
        });
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].number);
    let mut taken = BTreeSet::new();
    let mut ids = vec![0u16; entries.len()];
    for i in order {
        let mut offset = entries[i].number.rem_euclid(span);
        while taken.contains(&offset) {
            offset = (offset + 1) % span;
        }
        taken.insert(offset);
        // offset < span = 65536 - base, so the sum fits in a u16.
        ids[i] = u16::try_from(i64::from(base) + offset).unwrap_or(u16::MAX);
    }
    Ok(ids)
}

fn ganesha_path(path: &str) -> Result<&str, RenderError> {
    let bad = |reason| RenderError::Path {
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') || path == "/" {
        return Err(bad("not an absolute directory below /"));
    }
    if path
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(bad("contains a quote, backslash or control character"));
    }
    Ok(path)
}

/// The nfs-ganesha `EXPORT` blocks for `entries` (sorted by path), meant to be `%include`d from
/// the operator's `ganesha.conf`.
///
/// Each directory is exported with `Access_Type = None` at the export level and read-write only
/// in a `CLIENT` block naming the Pi's address: an export-level `RW` would let every client in,
/// whatever the `CLIENT` blocks say. `Pseudo` (the NFSv4 path) is the directory itself, so NFSv3
/// and NFSv4 mounts name the same path. Squash is `No_Root_Squash` on both kinds of export: a
/// Pi's root filesystem needs root to own its files, and an attached disk's `disk.img` is
/// loop-mounted by the Pi's root. Client addresses stay unquoted: ganesha refuses a quoted
/// string where it expects a client.
pub fn render_ganesha(
    entries: &[ExportEntry],
    scope: ExportScope,
    id_base: u16,
) -> Result<String, RenderError> {
    let ids = ganesha_export_ids(entries, id_base)?;
    let mut sorted: Vec<(&ExportEntry, u16)> = entries.iter().zip(ids).collect();
    sorted.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    let mut out = String::from(
        "# managed by bakery: rewritten after every change, do not edit; %include it from ganesha.conf\n",
    );
    for (entry, id) in sorted {
        let client = match (scope, entry.address) {
            (ExportScope::Any, _) => "*".to_owned(),
            (ExportScope::PiAddress, Some(addr)) => client(addr),
            (ExportScope::PiAddress, None) => continue,
        };
        let path = ganesha_path(&entry.path)?;
        let kind = if entry.root {
            "root: its / (No_Root_Squash: the Pi's root owns its files)"
        } else {
            "disk: holds disk.img (No_Root_Squash: the Pi's root loop-mounts it)"
        };
        let _ = write!(
            out,
            "\n# pi {serial} {kind}\n\
             EXPORT {{\n\
             \tExport_Id = {id};\n\
             \tPath = \"{path}\";\n\
             \tPseudo = \"{path}\";\n\
             \tProtocols = 3, 4;\n\
             \tSecType = sys;\n\
             \tAccess_Type = None;\n\
             \tSquash = No_Root_Squash;\n\
             \tFSAL {{ Name = VFS; }}\n\
             \tCLIENT {{ Clients = {client}; Access_Type = RW; }}\n\
             }}\n",
            serial = entry.serial,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        number: i64,
        root: bool,
        serial: &str,
        path: &str,
        address: Option<&str>,
    ) -> ExportEntry {
        ExportEntry {
            number,
            root,
            serial: serial.into(),
            path: path.into(),
            address: address.map(|a| a.parse().unwrap()),
        }
    }

    fn sample() -> Vec<ExportEntry> {
        vec![
            entry(1, true, "bbbbbbbb", "/d/disks/2", Some("10.0.0.22")),
            entry(0, true, "aaaaaaaa", "/d/disks/1", None),
            entry(2, false, "bbbbbbbb", "/d/my disks/3", Some("fd00::7")),
        ]
    }

    #[test]
    fn exported_only_to_known_addresses() {
        let entries = sample();
        assert_eq!(
            render(&entries, DEFAULT_EXPORT_OPTIONS, ExportScope::PiAddress),
            "# managed by bakery: rewritten after every change, do not edit\n\
             /d/disks/2 10.0.0.22(rw,sync,no_subtree_check,no_root_squash)\n\
             \"/d/my disks/3\" fd00::7(rw,sync,no_subtree_check,no_root_squash)\n"
        );
        let any = render(&entries, "ro", ExportScope::Any);
        assert!(any.contains("/d/disks/1 *(ro)\n"), "{any}");
    }

    #[test]
    fn ganesha_blocks_grant_only_the_pis_address() {
        let text = render_ganesha(&sample(), ExportScope::PiAddress, 1000).unwrap();
        assert_eq!(
            text,
            "# managed by bakery: rewritten after every change, do not edit; %include it from ganesha.conf\n\
             \n\
             # pi bbbbbbbb root: its / (No_Root_Squash: the Pi's root owns its files)\n\
             EXPORT {\n\
             \tExport_Id = 1001;\n\
             \tPath = \"/d/disks/2\";\n\
             \tPseudo = \"/d/disks/2\";\n\
             \tProtocols = 3, 4;\n\
             \tSecType = sys;\n\
             \tAccess_Type = None;\n\
             \tSquash = No_Root_Squash;\n\
             \tFSAL { Name = VFS; }\n\
             \tCLIENT { Clients = 10.0.0.22; Access_Type = RW; }\n\
             }\n\
             \n\
             # pi bbbbbbbb disk: holds disk.img (No_Root_Squash: the Pi's root loop-mounts it)\n\
             EXPORT {\n\
             \tExport_Id = 1002;\n\
             \tPath = \"/d/my disks/3\";\n\
             \tPseudo = \"/d/my disks/3\";\n\
             \tProtocols = 3, 4;\n\
             \tSecType = sys;\n\
             \tAccess_Type = None;\n\
             \tSquash = No_Root_Squash;\n\
             \tFSAL { Name = VFS; }\n\
             \tCLIENT { Clients = fd00::7; Access_Type = RW; }\n\
             }\n"
        );
        // No export-level grant anywhere: every Access_Type outside a CLIENT block is None.
        for line in text.lines().filter(|l| l.contains("Access_Type")) {
            assert!(line.contains("CLIENT") || line.contains("None"), "{line}");
        }
        let any = render_ganesha(&sample(), ExportScope::Any, 1000).unwrap();
        assert!(any.contains("Path = \"/d/disks/1\""), "{any}");
        assert_eq!(any.matches("Clients = *;").count(), 3, "{any}");
    }

    #[test]
    fn ganesha_ids_depend_only_on_the_number() {
        let all = sample();
        let ids = ganesha_export_ids(&all, 1000).unwrap();
        assert_eq!(ids, vec![1001, 1000, 1002]);
        // Another disk going away does not move an id.
        let fewer = vec![all[2].clone()];
        assert_eq!(ganesha_export_ids(&fewer, 1000).unwrap(), vec![1002]);
        // With a higher base numbers wrap around the id range; a clash takes the next free
        // id, lower number first.
        let span = 65536 - 60000;
        let wrapped = vec![
            entry(span, false, "a", "/x", None),
            entry(0, false, "b", "/y", None),
            entry(span - 1, false, "c", "/z", None),
        ];
        assert_eq!(
            ganesha_export_ids(&wrapped, 60000).unwrap(),
            vec![60001, 60000, 65535]
        );
        let full: Vec<ExportEntry> = (0..3).map(|n| entry(n, false, "a", "/x", None)).collect();
        assert_eq!(
            ganesha_export_ids(&full, 65534),
            Err(RenderError::IdsExhausted {
                count: 3,
                base: 65534
            })
        );
    }

    #[test]
    fn v4_mapped_addresses_are_written_as_ipv4() {
        let entries = vec![entry(0, true, "a", "/d/disks/1", Some("::ffff:10.0.0.21"))];
        let kernel = render(&entries, "rw", ExportScope::PiAddress);
        assert!(kernel.contains("/d/disks/1 10.0.0.21(rw)\n"), "{kernel}");
        let ganesha = render_ganesha(&entries, ExportScope::PiAddress, 1000).unwrap();
        assert!(ganesha.contains("Clients = 10.0.0.21;"), "{ganesha}");
    }

    #[test]
    fn ganesha_refuses_paths_it_cannot_quote() {
        for path in ["/d/a\"b", "/d/a\\b", "/d/a\nb", "relative", "/"] {
            let entries = vec![entry(1, true, "a", path, Some("10.0.0.1"))];
            let err = render_ganesha(&entries, ExportScope::PiAddress, 1000).unwrap_err();
            assert!(matches!(err, RenderError::Path { .. }), "{path:?}: {err}");
        }
    }
}
