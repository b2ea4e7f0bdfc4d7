//! Renders the NFS exports file from the inventory: each Pi's directories exported only to
//! the address it was last seen at.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The export options used unless the operator sets `--export-options`.
pub const DEFAULT_EXPORT_OPTIONS: &str = "rw,sync,no_subtree_check,no_root_squash";

/// One directory a Pi mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
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
            (ExportScope::PiAddress, Some(addr)) => addr.to_string(),
            (ExportScope::PiAddress, None) => continue,
        };
        let _ = writeln!(out, "{} {client}({options})", quote_path(&entry.path));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_only_to_known_addresses() {
        let entries = vec![
            ExportEntry {
                serial: "bbbbbbbb".into(),
                path: "/d/disks/2".into(),
                address: Some("10.0.0.22".parse().unwrap()),
            },
            ExportEntry {
                serial: "aaaaaaaa".into(),
                path: "/d/disks/1".into(),
                address: None,
            },
            ExportEntry {
                serial: "bbbbbbbb".into(),
                path: "/d/my disks/3".into(),
                address: Some("fd00::7".parse().unwrap()),
            },
        ];
        assert_eq!(
            render(&entries, DEFAULT_EXPORT_OPTIONS, ExportScope::PiAddress),
            "# managed by bakery: rewritten after every change, do not edit\n\
             /d/disks/2 10.0.0.22(rw,sync,no_subtree_check,no_root_squash)\n\
             \"/d/my disks/3\" fd00::7(rw,sync,no_subtree_check,no_root_squash)\n"
        );
        let any = render(&entries, "ro", ExportScope::Any);
        assert!(any.contains("/d/disks/1 *(ro)\n"), "{any}");
    }
}
