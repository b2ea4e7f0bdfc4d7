//! Finds the partitions of an image: MBR via mbrman (primary and logical), GPT when the MBR
//! is a protective one. GPT header and entry CRCs are not verified.

use std::fs::File;
use std::path::Path;

use crate::error::ImageError;
use crate::region::Region;

const SECTOR: u64 = 512;
const GPT_PROTECTIVE: u8 = 0xEE;

/// One partition of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    /// 1-based partition number as Linux counts it (`p1`, `p2` …).
    pub(crate) index: usize,
    /// Byte offset in the image.
    pub(crate) start: u64,
    /// Length in bytes.
    pub(crate) len: u64,
}

impl Part {
    /// The partition's bytes as a window of `file`.
    pub(crate) fn region<'f>(&self, file: &'f File) -> Region<'f> {
        Region::new(file, self.start, self.len)
    }
}

/// The used partitions of the image in `file` (`len` bytes long), in table order.
/// Each partition is checked to lie inside the file.
pub(crate) fn partitions(file: &File, path: &Path, len: u64) -> Result<Vec<Part>, ImageError> {
    let no_table = |reason: String| ImageError::NoPartitionTable {
        path: path.to_owned(),
        reason,
    };
    if len == 0 {
        return Err(ImageError::EmptyImage {
            path: path.to_owned(),
        });
    }
    let whole = Region::new(file, 0, len);
    let mut mbr0 = [0u8; 512];
    whole.read_exact_at(0, &mut mbr0).map_err(|_| {
        no_table(format!(
            "the file has only {len} bytes, less than one 512-byte sector"
        ))
    })?;
    if mbr0[510..512] != [0x55, 0xAA] {
        return Err(no_table("no MBR boot signature (55 AA) at byte 510".into()));
    }
    // A used entry starting at sector 0 would overlap the table itself; refusing it here also
    // keeps mbrman from panicking on a table whose used entries all start there (found by
    // the `image` fuzz target).
    for i in 0..4 {
        let entry = &mbr0[446 + 16 * i..446 + 16 * (i + 1)];
        let start = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
        if entry[4] != 0 && start == 0 {
            return Err(no_table(format!(
                "partition {} starts at sector 0, over the partition table",
                i + 1
            )));
        }
    }
    let mut reader = Region::new(file, 0, len);
    let mbr = mbrman::MBR::read_from(&mut reader, 512)
        .map_err(|e| no_table(format!("invalid MBR: {e}")))?;
    let mut parts = Vec::new();
    if mbr.iter().any(|(_, p)| p.sys == GPT_PROTECTIVE) {
        parts = gpt_partitions(&whole).map_err(no_table)?;
    } else {
        for (i, p) in mbr.iter() {
            if p.is_used() && !p.is_extended() {
                parts.push(Part {
                    index: i,
                    start: u64::from(p.starting_lba) * SECTOR,
                    len: u64::from(p.sectors) * SECTOR,
                });
            }
        }
        for (n, l) in mbr.logical_partitions.iter().enumerate() {
            let p = &l.partition;
            if p.is_used() {
                parts.push(Part {
                    index: 5 + n,
                    start: u64::from(p.starting_lba) * SECTOR,
                    len: u64::from(p.sectors) * SECTOR,
                });
            }
        }
    }
    if parts.is_empty() {
        return Err(no_table("the partition table lists no partitions".into()));
    }
    for p in &parts {
        if p.len == 0 || p.start == 0 {
            return Err(ImageError::MissingPartition {
                index: p.index,
                path: path.to_owned(),
                reason: format!(
                    "the entry is invalid (start byte {}, {} bytes)",
                    p.start, p.len
                ),
            });
        }
        let end = p.start.saturating_add(p.len);
        if end > len {
            return Err(ImageError::Truncated {
                index: p.index,
                end,
                len,
            });
        }
    }
    Ok(parts)
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from(u32le(b, o)) | (u64::from(u32le(b, o + 4)) << 32)
}

fn gpt_partitions(whole: &Region<'_>) -> Result<Vec<Part>, String> {
    let mut hdr = [0u8; 92];
    whole
        .read_exact_at(SECTOR, &mut hdr)
        .map_err(|e| format!("cannot read the GPT header: {e}"))?;
    if &hdr[..8] != b"EFI PART" {
        return Err("protective MBR but no GPT header (EFI PART) at sector 1".into());
    }
    let entries_lba = u64le(&hdr, 72);
    let count = u32le(&hdr, 80).min(256);
    let size = u64::from(u32le(&hdr, 84));
    if !(128..=4096).contains(&size) {
        return Err(format!("GPT entry size {size} is invalid"));
    }
    let mut table = vec![0u8; usize::try_from(u64::from(count) * size).map_err(|e| e.to_string())?];
    whole
        .read_exact_at(entries_lba.saturating_mul(SECTOR), &mut table)
        .map_err(|e| format!("cannot read the GPT entries: {e}"))?;
    let mut parts = Vec::new();
    for (i, e) in table
        .chunks(usize::try_from(size).unwrap_or(128))
        .enumerate()
    {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (u64le(e, 32), u64le(e, 40));
        if last < first {
            return Err(format!("GPT entry {} ends before it starts", i + 1));
        }
        parts.push(Part {
            index: i + 1,
            start: first.saturating_mul(SECTOR),
            len: (last - first + 1).saturating_mul(SECTOR),
        });
    }
    Ok(parts)
}
