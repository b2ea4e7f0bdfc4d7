//! Finds the partitions of an image: MBR via mbrman (primary and logical), GPT when the MBR
//! is a protective one.
//!
//! A GPT is read as the UEFI specification (5.3.2) says it must be checked: signature, the
//! header's own LBA, the header CRC32 (over `HeaderSize` bytes with the CRC field zeroed) and
//! the partition entry array CRC32 (over all `NumberOfPartitionEntries` entries). When the
//! primary GPT at sector 1 fails any of these, the backup GPT header at the last sector of
//! the image (with its own entry array) is used instead, as partitioning tools do; when
//! both fail the image is rejected with an error naming each failure (for a CRC: expected
//! and found value in hex). Sectors are 512 bytes.

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

/// Largest partition entry array read (the usual one is 128 entries of 128 bytes, 16 KiB).
const MAX_GPT_ARRAY: u64 = 4 << 20;

/// The partitions of a GPT: from the primary header at sector 1 when its header and entry
/// array CRC32s match, else from the backup header at the last sector of the image (as
/// `sfdisk` and `gdisk` fall back to it). The error names both failures.
fn gpt_partitions(whole: &Region<'_>) -> Result<Vec<Part>, String> {
    let primary_err = match gpt_at(whole, 1) {
        Ok(parts) => return Ok(parts),
        Err(e) => e,
    };
    let last = whole.len() / SECTOR - 1;
    match gpt_at(whole, last) {
        Ok(parts) => {
            tracing::warn!(reason = %primary_err, backup_sector = last, "primary GPT is damaged; using the backup GPT");
            Ok(parts)
        }
        Err(backup_err) => Err(format!(
            "primary GPT (sector 1): {primary_err}; backup GPT (sector {last}): {backup_err}"
        )),
    }
}

/// Reads and verifies (signature, own LBA, header CRC32, entry array CRC32) the GPT header
/// at sector `lba` and returns its used partitions.
fn gpt_at(whole: &Region<'_>, lba: u64) -> Result<Vec<Part>, String> {
    let mut sector = [0u8; SECTOR as usize];
    whole
        .read_exact_at(lba * SECTOR, &mut sector)
        .map_err(|e| format!("cannot read the GPT header: {e}"))?;
    if &sector[..8] != b"EFI PART" {
        return Err("no GPT header signature (EFI PART)".into());
    }
    let header_size = u32le(&sector, 12);
    if !(92..=512).contains(&header_size) {
        return Err(format!("GPT header size {header_size} is invalid"));
    }
    let mut header = sector[..header_size as usize].to_vec();
    let stored = u32le(&header, 16);
    header[16..20].fill(0);
    let computed = crc32fast::hash(&header);
    if stored != computed {
        return Err(format!(
            "GPT header CRC32 mismatch: expected {stored:#010x}, found {computed:#010x}"
        ));
    }
    let my_lba = u64le(&header, 24);
    if my_lba != lba {
        return Err(format!(
            "GPT header at sector {lba} says it lies at sector {my_lba}"
        ));
    }
    let entries_lba = u64le(&header, 72);
    let count = u64::from(u32le(&header, 80));
    let size = u64::from(u32le(&header, 84));
    if !(128..=4096).contains(&size) || !size.is_power_of_two() {
        return Err(format!("GPT entry size {size} is invalid"));
    }
    let array_len = count * size;
    if array_len > MAX_GPT_ARRAY {
        return Err(format!(
            "GPT partition entry array of {count} entries of {size} bytes is implausibly large"
        ));
    }
    let mut table = vec![0u8; usize::try_from(array_len).map_err(|e| e.to_string())?];
    whole
        .read_exact_at(entries_lba.saturating_mul(SECTOR), &mut table)
        .map_err(|e| {
            format!("cannot read the GPT partition entries at sector {entries_lba}: {e}")
        })?;
    let stored = u32le(&header, 88);
    let computed = crc32fast::hash(&table);
    if stored != computed {
        return Err(format!(
            "GPT partition entry array CRC32 mismatch: expected {stored:#010x}, found {computed:#010x}"
        ));
    }
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
