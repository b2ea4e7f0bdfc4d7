//! Aligned plain-text tables and the table views of the API's types.

use crate::types::{
    Bakeform, BakeformMap, Disk, DiskList, PiInfo, PiMap, PiState, PiStatus, Snapshot, SnapshotList,
};

/// Renders rows under a header, each column padded to its widest cell, two spaces apart.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.push_str(&" ".repeat(width - cell.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Key/value lines, keys padded to the widest.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

fn dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

/// The lifecycle word of a Pi: its `state`, or the contract status in words.
pub fn pi_state(pi: &PiInfo) -> &'static str {
    match pi.state {
        Some(state) => state.as_str(),
        None => match pi.status {
            PiStatus::NotInUse => PiState::Fridge.as_str(),
            PiStatus::InUse => PiState::Baked.as_str(),
            PiStatus::Preparing => PiState::Preparing.as_str(),
        },
    }
}

fn pi_row(pi: &PiInfo) -> Vec<String> {
    vec![
        pi.id.clone(),
        pi_state(pi).to_owned(),
        dash(pi.power_state.map(|p| p.as_str())),
        dash(pi.model.map(|m| m.as_str())),
        dash(pi.source_bakeform.as_ref().map(|b| b.name.as_str())),
        root_kind(pi).to_owned(),
        dash(pi.address.as_deref()),
        pi.disks.len().to_string(),
    ]
}

/// How the Pi's root reaches it: the server's `rootKind`, else `nfs` for a Pi in the oven of
/// a server that does not say (the first one has NFS roots only), `-` in the fridge.
fn root_kind(pi: &PiInfo) -> &'static str {
    match pi.root_kind {
        Some(kind) => kind.as_str(),
        None if pi.status != PiStatus::NotInUse => "nfs",
        None => "-",
    }
}

const PI_HEADER: [&str; 8] = [
    "ID", "STATE", "POWER", "MODEL", "BAKEFORM", "ROOT", "ADDRESS", "DISKS",
];

/// `pi list`: one row per Pi.
pub fn pis(pis: &PiMap) -> String {
    let rows: Vec<Vec<String>> = pis.values().map(pi_row).collect();
    render(&PI_HEADER, &rows)
}

/// `pi bake`: the one Pi as a row.
pub fn pi_line(pi: &PiInfo) -> String {
    render(&PI_HEADER, &[pi_row(pi)])
}

/// The power state and since when: `on since 2026-01-02 03:04:05 UTC`, `-` when never known.
fn power(pi: &PiInfo) -> String {
    match (pi.power_state, pi.power_state_at) {
        (Some(state), Some(at)) => format!("{state} since {} UTC", super::events::utc(at)),
        (Some(state), None) => state.to_string(),
        (None, _) => "-".to_owned(),
    }
}

/// `pi power-status`: the Pi and its power state.
pub fn power_line(pi: &PiInfo) -> String {
    format!("{}  {}\n", pi.id, power(pi))
}

/// `pi show`: the Pi's fields, then its disks.
pub fn pi_detail(pi: &PiInfo) -> String {
    let mut fields = vec![
        ("id", pi.id.clone()),
        ("state", pi_state(pi).to_owned()),
        ("power", power(pi)),
        ("model", dash(pi.model.map(|m| m.as_str()))),
        (
            "bakeform",
            dash(pi.source_bakeform.as_ref().map(|b| b.name.as_str())),
        ),
        ("root", root_kind(pi).to_owned()),
        ("address", dash(pi.address.as_deref())),
    ];
    if let Some(network) = &pi.network {
        let mut text = format!("{}/{}", network.ip, network.netmask);
        if let Some(gateway) = &network.gateway {
            text.push_str(&format!(" via {gateway}"));
        }
        if let Some(hostname) = &network.hostname {
            text.push_str(&format!(" ({hostname})"));
        }
        fields.push(("network", text));
    }
    if !pi.labels.is_empty() {
        let labels: Vec<String> = pi.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.push(("labels", labels.join(" ")));
    }
    if let Some(error) = &pi.last_error {
        fields.push(("last error", error.clone()));
    }
    if let Some(first) = pi.first_seen {
        fields.push(("first seen", format!("{} UTC", super::events::utc(first))));
    }
    if let Some(last) = pi.last_seen {
        fields.push(("last seen", format!("{} UTC", super::events::utc(last))));
    }
    fields.push((
        "last boot",
        pi.last_boot
            .as_ref()
            .map_or_else(|| "-".to_owned(), boot_summary),
    ));
    for (key, value) in &pi.metadata {
        fields.push(("metadata", format!("{key}={value}")));
    }
    let mut out = render_fields(&fields);
    if !pi.disks.is_empty() {
        out.push('\n');
        out.push_str(&disk_table(pi.disks.iter()));
    }
    out
}

/// A boot summary on one line: when, how long, what was sent, what failed.
pub fn boot_summary(boot: &crate::types::BootSummary) -> String {
    let mut text = format!(
        "{} UTC, {} ms, {} files, {} bytes",
        super::events::utc(boot.started),
        boot.finished - boot.started,
        boot.files,
        boot.bytes
    );
    if boot.failed > 0 {
        text.push_str(&format!(", {} failed", boot.failed));
    }
    text
}

const DISK_HEADER: [&str; 6] = [
    "ID",
    "SIZE_MIB",
    "ATTACHED_TO",
    "EPHEMERAL",
    "NFS",
    "LOCATION",
];

fn disk_row(disk: &Disk) -> Vec<String> {
    vec![
        disk.id.clone(),
        disk.size.to_string(),
        dash(disk.attached_to.as_deref()),
        if disk.ephemeral { "yes" } else { "no" }.to_owned(),
        disk.nfs_address.clone(),
        disk.location.clone(),
    ]
}

fn disk_table<'a>(disks: impl Iterator<Item = &'a Disk>) -> String {
    let rows: Vec<Vec<String>> = disks.map(disk_row).collect();
    render(&DISK_HEADER, &rows)
}

/// `disk list`.
pub fn disks(list: &DiskList) -> String {
    disk_table(list.disks.values())
}

/// `disk create`: the one disk as a row.
pub fn disk_line(disk: &Disk) -> String {
    disk_table(std::iter::once(disk))
}

const SNAPSHOT_HEADER: [&str; 5] = ["ID", "DISK", "SIZE_MIB", "CREATED", "METADATA"];

fn snapshot_row(snapshot: &Snapshot) -> Vec<String> {
    let metadata = snapshot
        .metadata
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    vec![
        snapshot.id.clone(),
        snapshot.disk.clone(),
        snapshot.size.to_string(),
        super::events::utc(snapshot.created_at),
        if metadata.is_empty() {
            "-".to_owned()
        } else {
            metadata
        },
    ]
}

/// `disk snapshots`.
pub fn snapshots(list: &SnapshotList) -> String {
    let rows: Vec<Vec<String>> = list.snapshots.iter().map(snapshot_row).collect();
    render(&SNAPSHOT_HEADER, &rows)
}

/// `disk snapshot`, `snapshot show`: the one snapshot as a row.
pub fn snapshot_line(snapshot: &Snapshot) -> String {
    render(&SNAPSHOT_HEADER, &[snapshot_row(snapshot)])
}

const BAKEFORM_HEADER: [&str; 4] = ["NAME", "STATE", "LOCATION", "ERROR"];

fn bakeform_row(form: &Bakeform) -> Vec<String> {
    vec![
        form.name.clone(),
        form.state
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "-".into()),
        form.location.clone(),
        dash(form.error.as_deref()),
    ]
}

/// `bakeform list`.
pub fn bakeforms(forms: &BakeformMap) -> String {
    let rows: Vec<Vec<String>> = forms.values().map(bakeform_row).collect();
    render(&BAKEFORM_HEADER, &rows)
}

/// `bakeform upload`: the one bakeform as a row.
pub fn bakeform_line(form: &Bakeform) -> String {
    render(&BAKEFORM_HEADER, &[bakeform_row(form)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_lines_trimmed() {
        let text = render(
            &["ID", "STATE"],
            &[
                vec!["1a2b3c4d".into(), "baked".into()],
                vec!["x".into(), "".into()],
            ],
        );
        assert_eq!(text, "ID        STATE\n1a2b3c4d  baked\nx\n");
    }

    #[test]
    fn fields_are_aligned() {
        let text = render_fields(&[("id", "a".into()), ("address", "b".into())]);
        assert_eq!(text, "id       a\naddress  b\n");
    }
}
