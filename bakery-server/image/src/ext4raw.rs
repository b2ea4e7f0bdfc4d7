//! A small read-only reader of the raw ext2/3/4 structures that ext4-view 1.0 keeps private.
//!
//! ext4-view validates and opens the file system, but exposes neither inode numbers (needed
//! to recreate hardlinks), link counts, device major/minor numbers nor extended attributes,
//! and re-resolves paths for every open. This module reads, straight from the partition:
//! the superblock fields it needs, the group descriptor table (incl. `meta_bg` and 64-bit
//! descriptors), raw inodes by number, directory blocks (linear and htree, which leaves
//! its leaves readable linearly), the extent tree and the old block maps, and in-inode and
//! block extended attributes. Layouts follow the kernel's ext4 documentation
//! (Documentation/filesystems/ext4). Everything is bounds-checked: corrupt input gives an
//! error, never a panic or an endless loop.
//!
//! Inline data (`inline_data` feature, inodes flagged `EXT4_INLINE_DATA_FL`, see the kernel's
//! fs/ext4/inline.c) is read for regular files, symlinks and directories: the first 60 bytes
//! live in `i_block`, the rest in the value of the in-inode xattr `system.data` (never shown
//! as an attribute). An inline directory keeps its parent's inode number in the first 4
//! bytes of `i_block`, then entries in the other 56, then more entries in `system.data`; it
//! has no `.` and `..` entries. An inode claiming more bytes than its inline area holds is
//! an error naming both sizes.
//!
//! Not supported (rejected with a clear error): unrecovered journals (`needs_recovery`),
//! encryption, casefolding, `dirdata`, compression and xattr values stored in separate
//! inodes (`ea_inode`).

use std::collections::HashSet;
use std::fmt;

use crate::region::Region;

/// Why a raw structure could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawError(pub(crate) String);

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, RawError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(RawError(msg.into()))
}

fn u16le(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32le(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;

/// Inode flag: the inode uses an extent tree.
const EXTENTS_FL: u32 = 0x8_0000;
/// Inode flag: i_blocks counts file system blocks, not 512-byte sectors.
const HUGE_FILE_FL: u32 = 0x4_0000;
/// Inode flag: the data lives inside the inode.
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// Bytes of inline data held by `i_block`; the rest lives in the `system.data` xattr.
const INLINE_IBLOCK: usize = 60;
/// Name index of the `system.` xattr namespace.
const XATTR_INDEX_SYSTEM: u8 = 7;

const XATTR_MAGIC: u32 = 0xEA02_0000;
const EXTENT_MAGIC: u16 = 0xF30A;
const MAX_EXTENT_DEPTH: u16 = 5;

/// The root directory's inode number.
pub(crate) const ROOT_INO: u32 = 2;

/// The type of an inode, from the top bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// A timestamp: seconds since the epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Time {
    /// Seconds since 1970-01-01 UTC (may be negative).
    pub(crate) sec: i64,
    /// Nanoseconds, 0..1e9.
    pub(crate) nsec: u32,
}

/// The fields of one raw inode that an extraction needs.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    /// Inode number.
    pub(crate) ino: u32,
    /// Full mode: type bits and permission bits.
    pub(crate) mode: u16,
    /// Owner user id (32-bit).
    pub(crate) uid: u32,
    /// Owner group id (32-bit).
    pub(crate) gid: u32,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Number of hard links.
    pub(crate) links: u16,
    /// Last access time.
    pub(crate) atime: Time,
    /// Last modification time.
    pub(crate) mtime: Time,
    /// Inode flags.
    pub(crate) flags: u32,
    /// The 60-byte i_block area (extent root, block map, fast symlink or device number).
    pub(crate) block: [u8; 60],
    /// Block number of the external xattr block, 0 if none.
    pub(crate) file_acl: u64,
    /// Blocks in use, in 512-byte units.
    pub(crate) sectors: u64,
    /// The in-inode extended attribute area (after i_extra_isize), possibly empty.
    pub(crate) xattr_area: Vec<u8>,
}

impl Inode {
    /// The inode's type, or an error for an invalid type field.
    pub(crate) fn kind(&self) -> Result<Kind> {
        Ok(match self.mode & 0xF000 {
            0x8000 => Kind::File,
            0x4000 => Kind::Dir,
            0xA000 => Kind::Symlink,
            0x2000 => Kind::CharDev,
            0x6000 => Kind::BlockDev,
            0x1000 => Kind::Fifo,
            0xC000 => Kind::Socket,
            other => {
                return err(format!(
                    "inode {} has invalid type bits {other:#o}",
                    self.ino
                ));
            }
        })
    }

    /// Permission bits incl. setuid, setgid and sticky.
    pub(crate) fn perm(&self) -> u32 {
        u32::from(self.mode & 0o7777)
    }

    /// Device (major, minor) of a character or block device inode.
    pub(crate) fn rdev(&self) -> (u32, u32) {
        let old = u32le(&self.block, 0);
        if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let new = u32le(&self.block, 4);
            ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
        }
    }

    /// Whether the inode keeps its data inline (in `i_block` and the `system.data` xattr)
    /// rather than in blocks: read it with [`RawFs::inline_data`], not [`RawFs::runs`].
    pub(crate) fn has_inline_data(&self) -> bool {
        self.flags & INLINE_DATA_FL != 0
    }
}

/// One mapped run of a file: `len` blocks at file block `logical` stored at `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// First file block.
    pub(crate) logical: u64,
    /// First file system block.
    pub(crate) physical: u64,
    /// Number of blocks.
    pub(crate) len: u64,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    /// Inode number it points to.
    pub(crate) ino: u32,
    /// Raw name bytes.
    pub(crate) name: Vec<u8>,
}

/// One extended attribute, with its full name (`user.foo`) and value in the host's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Xattr {
    /// Full attribute name incl. namespace prefix.
    pub(crate) name: Vec<u8>,
    /// Value (POSIX ACLs already converted to the Linux xattr format).
    pub(crate) value: Vec<u8>,
}

/// An ext2/3/4 file system inside a partition.
#[derive(Debug)]
pub(crate) struct RawFs<'f> {
    part: Region<'f>,
    block_size: u64,
    blocks_count: u64,
    inodes_count: u32,
    inodes_per_group: u32,
    inode_size: u64,
    huge_files: bool,
    inline_data: bool,
    inode_tables: Vec<u64>,
}

impl<'f> RawFs<'f> {
    /// Reads the superblock and group descriptors of the file system in `part`.
    pub(crate) fn open(part: Region<'f>) -> Result<Self> {
        let mut sb = [0u8; 1024];
        part.read_exact_at(SUPERBLOCK_OFFSET, &mut sb)
            .or_else(|e| err(format!("cannot read the superblock: {e}")))?;
        if u16le(&sb, 0x38) != EXT4_MAGIC {
            return err("no ext2/3/4 superblock magic (0xEF53) at byte 1080");
        }
        let incompat = u32le(&sb, 0x60);
        let ro_compat = u32le(&sb, 0x64);
        for (bit, what) in [
            (
                INCOMPAT_RECOVER,
                "the journal needs recovery (not cleanly unmounted; run e2fsck on it)",
            ),
            (INCOMPAT_JOURNAL_DEV, "it is an external journal device"),
            (INCOMPAT_COMPRESSION, "it uses compression"),
            (INCOMPAT_DIRDATA, "it uses dirdata"),
            (INCOMPAT_ENCRYPT, "it uses encryption"),
            (INCOMPAT_CASEFOLD, "it uses casefolding"),
        ] {
            if incompat & bit != 0 {
                return err(format!("unsupported file system: {what}"));
            }
        }
        if incompat & INCOMPAT_FILETYPE == 0 {
            return err("unsupported file system: directory entries carry no file type");
        }
        let log = u32le(&sb, 0x18);
        if log > 6 {
            return err(format!("invalid block size 2^(10+{log})"));
        }
        let block_size = 1024u64 << log;
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count = u64::from(u32le(&sb, 0x4))
            | if is64 {
                u64::from(u32le(&sb, 0x150)) << 32
            } else {
                0
            };
        let inodes_count = u32le(&sb, 0x0);
        let blocks_per_group = u64::from(u32le(&sb, 0x20));
        let inodes_per_group = u32le(&sb, 0x28);
        let first_data_block = u64::from(u32le(&sb, 0x14));
        let rev = u32le(&sb, 0x4C);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(u16le(&sb, 0x58))
        };
        if blocks_per_group == 0 || inodes_per_group == 0 || inodes_count == 0 {
            return err("superblock has zero blocks or inodes per group");
        }
        // Each group's block and inode bitmaps are one block each.
        if blocks_per_group > 8 * block_size || u64::from(inodes_per_group) > 8 * block_size {
            return err(format!(
                "superblock claims {blocks_per_group} blocks and {inodes_per_group} inodes per group, more than one bitmap block holds"
            ));
        }
        if !(128..=block_size).contains(&inode_size) || !inode_size.is_power_of_two() {
            return err(format!("invalid inode size {inode_size}"));
        }
        if blocks_count.saturating_mul(block_size) > part.len() {
            return err(format!(
                "file system claims {} bytes but the partition has {}",
                blocks_count.saturating_mul(block_size),
                part.len()
            ));
        }
        let groups = blocks_count
            .saturating_sub(first_data_block)
            .div_ceil(blocks_per_group);
        let groups_by_inodes = u64::from(inodes_count.div_ceil(inodes_per_group));
        let groups = groups.max(groups_by_inodes);
        if groups > 1 << 24 {
            return err(format!("implausible number of block groups {groups}"));
        }
        let desc_size = if is64 {
            u64::from(u16le(&sb, 0xFE))
        } else {
            32
        };
        if !(32..=block_size).contains(&desc_size) {
            return err(format!("invalid group descriptor size {desc_size}"));
        }
        let per_block = block_size / desc_size;
        let meta_bg = incompat & INCOMPAT_META_BG != 0;
        let first_meta_bg = u64::from(u32le(&sb, 0x104));
        let sparse = ro_compat & RO_COMPAT_SPARSE_SUPER != 0;
        let has_super =
            |g: u64| !sparse || g <= 1 || [3u64, 5, 7].iter().any(|&b| is_power_of(g, b));

        let mut inode_tables = Vec::with_capacity(usize::try_from(groups).unwrap_or(0));
        let mut block = vec![0u8; usize::try_from(block_size).unwrap_or(4096)];
        let mut loaded = u64::MAX;
        for g in 0..groups {
            let desc_block_index = g / per_block;
            let desc_block = if meta_bg && desc_block_index >= first_meta_bg {
                let first_group = desc_block_index * per_block;
                first_data_block
                    + first_group * blocks_per_group
                    + u64::from(has_super(first_group))
            } else {
                first_data_block + 1 + desc_block_index
            };
            if desc_block != loaded {
                part.read_exact_at(desc_block * block_size, &mut block)
                    .or_else(|e| {
                        err(format!(
                            "cannot read group descriptors at block {desc_block}: {e}"
                        ))
                    })?;
                loaded = desc_block;
            }
            let off = usize::try_from((g % per_block) * desc_size).unwrap_or(0);
            let lo = u64::from(u32le(&block, off + 0x8));
            let hi = if is64 && desc_size >= 64 {
                u64::from(u32le(&block, off + 0x28))
            } else {
                0
            };
            let table = lo | (hi << 32);
            if table == 0 || table >= blocks_count {
                return err(format!(
                    "group {g} has its inode table at invalid block {table}"
                ));
            }
            inode_tables.push(table);
        }
        Ok(RawFs {
            part,
            block_size,
            blocks_count,
            inodes_count,
            inodes_per_group,
            inode_size,
            huge_files: ro_compat & RO_COMPAT_HUGE_FILE != 0,
            inline_data: incompat & INCOMPAT_INLINE_DATA != 0,
            inode_tables,
        })
    }

    /// The file system block size in bytes.
    pub(crate) fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The partition this file system lives in.
    pub(crate) fn part(&self) -> &Region<'f> {
        &self.part
    }

    /// Reads inode number `ino`.
    pub(crate) fn inode(&self, ino: u32) -> Result<Inode> {
        if ino == 0 || ino > self.inodes_count {
            return err(format!(
                "inode number {ino} out of range 1..={}",
                self.inodes_count
            ));
        }
        let group = (ino - 1) / self.inodes_per_group;
        let index = u64::from((ino - 1) % self.inodes_per_group);
        let table = self
            .inode_tables
            .get(usize::try_from(group).unwrap_or(usize::MAX))
            .copied()
            .ok_or_else(|| RawError(format!("inode {ino} lies in missing group {group}")))?;
        let mut raw = vec![0u8; usize::try_from(self.inode_size).unwrap_or(256)];
        self.part
            .read_exact_at(table * self.block_size + index * self.inode_size, &mut raw)
            .or_else(|e| err(format!("cannot read inode {ino}: {e}")))?;
        Ok(parse_inode(ino, &raw, self.huge_files))
    }

    /// The mapped runs of an inode's data, sorted by file block. Holes are absent.
    /// An inode with inline data has no blocks: asking for its runs is an error.
    pub(crate) fn runs(&self, inode: &Inode) -> Result<Vec<Run>> {
        if inode.has_inline_data() {
            return err(format!(
                "inode {} keeps its data inline, not in blocks",
                inode.ino
            ));
        }
        let mut runs = Vec::new();
        // Every tree block is a distinct block of the file system: more reads than that
        // means a crafted loop.
        let mut budget = self.blocks_count;
        if inode.flags & EXTENTS_FL != 0 {
            self.extent_node(
                inode.ino,
                &inode.block,
                MAX_EXTENT_DEPTH + 1,
                &mut runs,
                &mut budget,
            )?;
        } else {
            self.block_map(inode, &mut runs, &mut budget)?;
        }
        runs.sort_by_key(|r| r.logical);
        let file_blocks = inode.size.div_ceil(self.block_size);
        for r in &runs {
            if r.physical
                .checked_add(r.len)
                .is_none_or(|end| end > self.blocks_count)
            {
                return err(format!(
                    "inode {} maps blocks past the file system end",
                    inode.ino
                ));
            }
        }
        // Blocks mapped past the size (preallocation) are not data.
        runs.retain(|r| r.logical < file_blocks);
        if let Some(last) = runs.last_mut() {
            last.len = last.len.min(file_blocks - last.logical);
        }
        Ok(runs)
    }

    fn extent_node(
        &self,
        ino: u32,
        node: &[u8],
        depth_left: u16,
        runs: &mut Vec<Run>,
        budget: &mut u64,
    ) -> Result<()> {
        if u16le(node, 0) != EXTENT_MAGIC {
            return err(format!("inode {ino} has a bad extent header"));
        }
        let entries = usize::from(u16le(node, 2));
        let depth = u16le(node, 6);
        if depth >= depth_left || 12 + entries * 12 > node.len() {
            return err(format!("inode {ino} has a corrupt extent tree"));
        }
        for i in 0..entries {
            let e = &node[12 + i * 12..24 + i * 12];
            if depth == 0 {
                let raw_len = u16le(e, 4);
                // Lengths above 32768 mark unwritten (preallocated) extents: they read as zeros.
                if raw_len > 32768 {
                    continue;
                }
                let physical = u64::from(u32le(e, 8)) | (u64::from(u16le(e, 6)) << 32);
                runs.push(Run {
                    logical: u64::from(u32le(e, 0)),
                    physical,
                    len: u64::from(raw_len),
                });
            } else {
                let child = u64::from(u32le(e, 4)) | (u64::from(u16le(e, 8)) << 32);
                *budget = budget
                    .checked_sub(1)
                    .ok_or_else(|| RawError(format!("inode {ino} has a looping extent tree")))?;
                let block = self.block(ino, child)?;
                self.extent_node(ino, &block, depth, runs, budget)?;
            }
        }
        Ok(())
    }

    fn block(&self, ino: u32, block: u64) -> Result<Vec<u8>> {
        if block == 0 || block >= self.blocks_count {
            return err(format!("inode {ino} points at invalid block {block}"));
        }
        let mut buf = vec![0u8; usize::try_from(self.block_size).unwrap_or(4096)];
        self.part
            .read_exact_at(block * self.block_size, &mut buf)
            .or_else(|e| err(format!("cannot read block {block} of inode {ino}: {e}")))?;
        Ok(buf)
    }

    fn block_map(&self, inode: &Inode, runs: &mut Vec<Run>, budget: &mut u64) -> Result<()> {
        let file_blocks = inode.size.div_ceil(self.block_size);
        let per = self.block_size / 4;
        let mut push = |logical: u64, physical: u64| {
            if physical == 0 {
                return;
            }
            match runs.last_mut() {
                Some(r) if r.logical + r.len == logical && r.physical + r.len == physical => {
                    r.len += 1
                }
                _ => runs.push(Run {
                    logical,
                    physical,
                    len: 1,
                }),
            }
        };
        for i in 0..12u64 {
            push(
                i,
                u64::from(u32le(&inode.block, usize::try_from(i * 4).unwrap_or(0))),
            );
        }
        let mut logical = 12u64;
        for level in 1..=3u32 {
            let top = u64::from(u32le(&inode.block, 48 + 4 * (level as usize - 1)));
            let span = per.pow(level);
            if logical >= file_blocks {
                break;
            }
            if top != 0 {
                let mut walk = MapWalk {
                    ino: inode.ino,
                    file_blocks,
                    budget: &mut *budget,
                    push: &mut push,
                };
                self.indirect(&mut walk, top, level, logical)?;
            }
            logical += span;
        }
        Ok(())
    }

    fn indirect(&self, w: &mut MapWalk<'_>, block: u64, level: u32, first: u64) -> Result<()> {
        let (ino, file_blocks) = (w.ino, w.file_blocks);
        *w.budget = w
            .budget
            .checked_sub(1)
            .ok_or_else(|| RawError(format!("inode {ino} has a looping block map")))?;
        let data = self.block(ino, block)?;
        let per = self.block_size / 4;
        let span = per.pow(level - 1);
        for i in 0..per {
            let logical = first + i * span;
            if logical >= file_blocks {
                break;
            }
            let ptr = u64::from(u32le(&data, usize::try_from(i * 4).unwrap_or(0)));
            if ptr == 0 {
                continue;
            }
            if level == 1 {
                (w.push)(logical, ptr);
            } else {
                self.indirect(w, ptr, level - 1, logical)?;
            }
        }
        Ok(())
    }

    /// The two parts of an inline-data inode: its 60-byte `i_block` and the value of its
    /// in-inode `system.data` xattr (empty when absent, as e2fsprogs reads it).
    fn inline_areas<'i>(&self, inode: &'i Inode) -> Result<(&'i [u8], Vec<u8>)> {
        if !self.inline_data {
            return err(format!(
                "inode {} is flagged as inline data but the file system lacks the inline_data feature",
                inode.ino
            ));
        }
        let mut rest = None;
        let area = &inode.xattr_area;
        if u32le(area, 0) == XATTR_MAGIC {
            walk_xattr_entries(inode.ino, area, 4, 4, &mut |index, name, value| {
                if index == XATTR_INDEX_SYSTEM && name == b"data" && rest.is_none() {
                    rest = Some(value.to_vec());
                }
                Ok(())
            })?;
        }
        Ok((&inode.block[..], rest.unwrap_or_default()))
    }

    /// The data of an inline-data regular file or symlink: exactly `size` bytes, the first 60
    /// from `i_block`, the rest from `system.data`. An inode whose size exceeds what the two
    /// hold is an error naming both.
    pub(crate) fn inline_data(&self, inode: &Inode) -> Result<Vec<u8>> {
        if !inode.has_inline_data() {
            return err(format!("inode {} keeps no inline data", inode.ino));
        }
        let (head, rest) = self.inline_areas(inode)?;
        let capacity = (INLINE_IBLOCK + rest.len()) as u64;
        if inode.size > capacity {
            return err(format!(
                "inode {} claims {} bytes of inline data but holds only {capacity} ({INLINE_IBLOCK} in the inode, {} in system.data)",
                inode.ino,
                inode.size,
                rest.len()
            ));
        }
        let size = usize::try_from(inode.size).unwrap_or(0);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&head[..size.min(INLINE_IBLOCK)]);
        out.extend_from_slice(&rest[..size.saturating_sub(INLINE_IBLOCK)]);
        Ok(out)
    }

    /// Reads an inode's whole data (for directories and long symlinks), zero-filling holes.
    pub(crate) fn read_all(&self, inode: &Inode, limit: u64) -> Result<Vec<u8>> {
        if inode.size > limit {
            return err(format!(
                "inode {} is {} bytes, more than the {limit} expected",
                inode.ino, inode.size
            ));
        }
        if inode.has_inline_data() {
            return self.inline_data(inode);
        }
        let size = usize::try_from(inode.size).unwrap_or(0);
        let mut out = vec![0u8; size];
        for r in self.runs(inode)? {
            let start = r.logical * self.block_size;
            let end = ((r.logical + r.len) * self.block_size).min(inode.size);
            if start >= end {
                continue;
            }
            let (s, e) = (
                usize::try_from(start).unwrap_or(0),
                usize::try_from(end).unwrap_or(0),
            );
            self.part
                .read_exact_at(r.physical * self.block_size, &mut out[s..e])
                .or_else(|e| err(format!("cannot read data of inode {}: {e}", inode.ino)))?;
        }
        Ok(out)
    }

    /// The entries of directory `dir`, without `.` and `..`. Reads one block at a time.
    pub(crate) fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        if dir.has_inline_data() {
            let (head, rest) = self.inline_areas(dir)?;
            let parent = u32le(head, 0);
            if parent == 0 || parent > self.inodes_count {
                return err(format!(
                    "inline directory inode {} names invalid parent inode {parent}",
                    dir.ino
                ));
            }
            self.parse_dir_block(dir.ino, None, &head[4..], &mut out)?;
            self.parse_dir_block(dir.ino, None, &rest, &mut out)?;
            return Ok(out);
        }
        let bs = usize::try_from(self.block_size).unwrap_or(4096);
        let mut block = vec![0u8; bs];
        for run in self.runs(dir)? {
            for i in 0..run.len {
                let b = run.logical + i;
                self.part
                    .read_exact_at((run.physical + i) * self.block_size, &mut block)
                    .or_else(|e| {
                        err(format!(
                            "cannot read block {b} of directory inode {}: {e}",
                            dir.ino
                        ))
                    })?;
                self.parse_dir_block(dir.ino, Some(b), &block, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Parses the entries tiling `block`: directory block number `b`, or (None) one of the
    /// two areas of an inline directory.
    fn parse_dir_block(
        &self,
        dir_ino: u32,
        b: Option<u64>,
        block: &[u8],
        out: &mut Vec<DirEntry>,
    ) -> Result<()> {
        let mut off = 0usize;
        while off + 8 <= block.len() {
            let ino = u32le(block, off);
            let rec_len = usize::from(u16le(block, off + 4));
            let name_len = usize::from(block[off + 6]);
            // A rec_len of 0 in a full 64 KiB block means 65536.
            let rec_len = if rec_len == 0 && block.len() == 65536 && off == 0 {
                65536
            } else {
                rec_len
            };
            if rec_len < 8 || off + rec_len > block.len() || (ino != 0 && 8 + name_len > rec_len) {
                let place = match b {
                    Some(b) => format!("block {b}"),
                    None => "its inline data".to_owned(),
                };
                return err(format!(
                    "directory inode {dir_ino} has a corrupt entry in {place} at offset {off}"
                ));
            }
            if ino != 0 {
                let name = &block[off + 8..off + 8 + name_len];
                if name != b"." && name != b".." {
                    if ino > self.inodes_count {
                        return err(format!(
                            "directory inode {dir_ino} names invalid inode {ino}"
                        ));
                    }
                    out.push(DirEntry {
                        ino,
                        name: name.to_vec(),
                    });
                }
            }
            off += rec_len;
        }
        Ok(())
    }

    /// The target of a symlink inode.
    pub(crate) fn symlink_target(&self, inode: &Inode) -> Result<Vec<u8>> {
        if inode.size > 4095 {
            return err(format!(
                "symlink inode {} is {} bytes long",
                inode.ino, inode.size
            ));
        }
        let xattr_blocks = if inode.file_acl != 0 {
            self.block_size / 512
        } else {
            0
        };
        if inode.has_inline_data() {
            return self.inline_data(inode);
        }
        let len = usize::try_from(inode.size).unwrap_or(0);
        if inode.flags & EXTENTS_FL == 0 && inode.sectors <= xattr_blocks {
            if len > 60 {
                return err(format!(
                    "fast symlink inode {} claims {len} bytes",
                    inode.ino
                ));
            }
            return Ok(inode.block[..len].to_vec());
        }
        self.read_all(inode, 4095)
    }

    /// The extended attributes of an inode (in-inode first, then the xattr block).
    pub(crate) fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        let area = &inode.xattr_area;
        if u32le(area, 0) == XATTR_MAGIC {
            parse_xattr_entries(inode.ino, area, 4, 4, &mut out)?;
        }
        if inode.file_acl != 0 {
            let block = self.block(inode.ino, inode.file_acl)?;
            if u32le(&block, 0) != XATTR_MAGIC {
                return err(format!(
                    "inode {} has an xattr block without magic",
                    inode.ino
                ));
            }
            parse_xattr_entries(inode.ino, &block, 32, 0, &mut out)?;
        }
        Ok(out)
    }
}

/// State of one walk over an old-style (ext2/3) block map.
struct MapWalk<'p> {
    ino: u32,
    file_blocks: u64,
    budget: &'p mut u64,
    push: &'p mut dyn FnMut(u64, u64),
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n % base == 0 {
        n /= base;
    }
    n == 1
}

fn time(sec: u32, extra: Option<u32>) -> Time {
    let base = i64::from(sec as i32);
    match extra {
        Some(x) => Time {
            sec: base + (i64::from(x & 3) << 32),
            nsec: (x >> 2).min(999_999_999),
        },
        None => Time { sec: base, nsec: 0 },
    }
}

fn parse_inode(ino: u32, raw: &[u8], huge_files: bool) -> Inode {
    let extra_isize = if raw.len() > 128 {
        usize::from(u16le(raw, 0x80))
    } else {
        0
    };
    let has_extra = |field_end: usize| raw.len() > 128 && 128 + extra_isize >= field_end;
    let flags = u32le(raw, 0x20);
    let blocks_lo = u64::from(u32le(raw, 0x1C));
    let blocks_hi = u64::from(u16le(raw, 0x74));
    let mut sectors = blocks_lo | (blocks_hi << 32);
    if huge_files && flags & HUGE_FILE_FL != 0 {
        // Counted in file system blocks; callers only compare against small numbers.
        sectors = sectors.saturating_mul(8);
    }
    let mut block = [0u8; 60];
    block.copy_from_slice(&raw[0x28..0x28 + 60]);
    let xattr_start = (128 + extra_isize).min(raw.len());
    Inode {
        ino,
        mode: u16le(raw, 0),
        uid: u32::from(u16le(raw, 0x2)) | (u32::from(u16le(raw, 0x78)) << 16),
        gid: u32::from(u16le(raw, 0x18)) | (u32::from(u16le(raw, 0x7A)) << 16),
        size: u64::from(u32le(raw, 0x4)) | (u64::from(u32le(raw, 0x6C)) << 32),
        links: u16le(raw, 0x1A),
        atime: time(u32le(raw, 0x8), has_extra(0x90).then(|| u32le(raw, 0x8C))),
        mtime: time(u32le(raw, 0x10), has_extra(0x8C).then(|| u32le(raw, 0x88))),
        flags,
        block,
        file_acl: u64::from(u32le(raw, 0x68)) | (u64::from(u16le(raw, 0x76)) << 32),
        sectors,
        xattr_area: raw[xattr_start..].to_vec(),
    }
}

/// What [`walk_xattr_entries`] calls per entry: name index, name (without prefix), value.
type XattrVisitor<'v> = dyn FnMut(u8, &[u8], &[u8]) -> Result<()> + 'v;

/// Calls `visit(name_index, name, value)` for each xattr entry starting at `first`; values
/// sit at `value_base + e_value_offs`. Every offset is bounds-checked.
fn walk_xattr_entries(
    ino: u32,
    buf: &[u8],
    first: usize,
    value_base: usize,
    visit: &mut XattrVisitor<'_>,
) -> Result<()> {
    let bad = |what: &str| {
        RawError(format!(
            "inode {ino} has a corrupt extended attribute ({what})"
        ))
    };
    let mut off = first;
    while off + 4 <= buf.len() && u32le(buf, off) != 0 {
        if off + 16 > buf.len() {
            return Err(bad("entry header past the end"));
        }
        let name_len = usize::from(buf[off]);
        let index = buf[off + 1];
        let value_offs = usize::from(u16le(buf, off + 2));
        let value_inum = u32le(buf, off + 4);
        let value_size = usize::try_from(u32le(buf, off + 8)).unwrap_or(usize::MAX);
        let name = buf
            .get(off + 16..off + 16 + name_len)
            .ok_or_else(|| bad("name past the end"))?;
        off = (off + 16 + name_len + 3) & !3;
        if value_inum != 0 {
            return err(format!(
                "inode {ino} keeps an xattr value in inode {value_inum} (ea_inode, unsupported)"
            ));
        }
        let start = value_base + value_offs;
        let value = buf
            .get(start..start.saturating_add(value_size))
            .ok_or_else(|| bad("value past the end"))?;
        visit(index, name, value)?;
    }
    Ok(())
}

/// Parses xattr entries starting at `first`; values sit at `value_base + e_value_offs`.
/// `system.data` (the inline-data area) is not an attribute and is left out.
fn parse_xattr_entries(
    ino: u32,
    buf: &[u8],
    first: usize,
    value_base: usize,
    out: &mut Vec<Xattr>,
) -> Result<()> {
    let mut seen = HashSet::new();
    walk_xattr_entries(ino, buf, first, value_base, &mut |index, name, value| {
        let prefix: &[u8] = match index {
            1 => b"user.",
            2 => b"system.posix_acl_access",
            3 => b"system.posix_acl_default",
            4 => b"trusted.",
            6 => b"security.",
            XATTR_INDEX_SYSTEM => b"system.",
            8 => b"system.richacl",
            _ => {
                return err(format!(
                    "inode {ino} has a corrupt extended attribute (unknown name index {index})"
                ));
            }
        };
        let mut full = prefix.to_vec();
        full.extend_from_slice(name);
        if full == b"system.data" {
            return Ok(());
        }
        let value = if index == 2 || index == 3 {
            acl_to_xattr(ino, value)?
        } else {
            value.to_vec()
        };
        if seen.insert(full.clone()) {
            out.push(Xattr { name: full, value });
        }
        Ok(())
    })
}

/// Converts an ext4 on-disk POSIX ACL (version 1, short entries for the owner/group/mask/
/// other tags) to the Linux `system.posix_acl_*` xattr format (version 2, 8-byte entries).
fn acl_to_xattr(ino: u32, disk: &[u8]) -> Result<Vec<u8>> {
    if u32le(disk, 0) != 1 {
        return err(format!(
            "inode {ino} has an ACL of unknown version {}",
            u32le(disk, 0)
        ));
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut off = 4;
    while off < disk.len() {
        if off + 4 > disk.len() {
            return err(format!("inode {ino} has a truncated ACL"));
        }
        let tag = u16le(disk, off);
        let perm = u16le(disk, off + 2);
        let id = match tag {
            // ACL_USER and ACL_GROUP carry an id.
            0x02 | 0x08 => {
                if off + 8 > disk.len() {
                    return err(format!("inode {ino} has a truncated ACL"));
                }
                let id = u32le(disk, off + 4);
                off += 8;
                id
            }
            0x01 | 0x04 | 0x10 | 0x20 => {
                off += 4;
                u32::MAX
            }
            other => {
                return err(format!(
                    "inode {ino} has an ACL entry with unknown tag {other:#x}"
                ));
            }
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_decode_both_encodings() {
        let mut ino = parse_inode(5, &[0u8; 256], false);
        ino.block[0..4].copy_from_slice(&((8u32 << 8) | 1).to_le_bytes());
        assert_eq!(ino.rdev(), (8, 1));
        ino.block[0..4].copy_from_slice(&0u32.to_le_bytes());
        // major 259, minor 300: new encoding (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
        let new = (300u32 & 0xff) | (259 << 8) | ((300 & !0xff) << 12);
        ino.block[4..8].copy_from_slice(&new.to_le_bytes());
        assert_eq!(ino.rdev(), (259, 300));
    }

    #[test]
    fn timestamps_use_epoch_bits_and_nanoseconds() {
        assert_eq!(
            time(5, Some((7 << 2) | 1)),
            Time {
                sec: 5 + (1 << 32),
                nsec: 7
            }
        );
        assert_eq!(time(u32::MAX, Some(0)), Time { sec: -1, nsec: 0 });
        assert_eq!(time(u32::MAX, None), Time { sec: -1, nsec: 0 });
    }

    #[test]
    fn acl_conversion_widens_short_entries() {
        let mut disk = 1u32.to_le_bytes().to_vec();
        disk.extend_from_slice(&[0x01, 0, 6, 0]); // USER_OBJ rw-
        disk.extend_from_slice(&[0x02, 0, 4, 0, 0xe8, 0x03, 0, 0]); // USER 1000 r--
        disk.extend_from_slice(&[0x20, 0, 0, 0]); // OTHER ---
        let x = acl_to_xattr(9, &disk).unwrap();
        assert_eq!(x.len(), 4 + 3 * 8);
        assert_eq!(u32le(&x, 0), 2);
        assert_eq!(u32le(&x, 8), u32::MAX);
        assert_eq!(u32le(&x, 16), 1000);
        assert!(acl_to_xattr(9, &disk[..disk.len() - 2]).is_err());
        assert!(acl_to_xattr(9, &[2, 0, 0, 0]).is_err());
    }

    #[test]
    fn xattr_entries_parse_and_reject_overruns() {
        let mut area = XATTR_MAGIC.to_le_bytes().to_vec();
        // one entry: name "k" in user. namespace, value "v1" at offset 32 from entry start
        let mut entry = vec![1u8, 1];
        entry.extend_from_slice(&32u16.to_le_bytes());
        entry.extend_from_slice(&0u32.to_le_bytes());
        entry.extend_from_slice(&2u32.to_le_bytes());
        entry.extend_from_slice(&0u32.to_le_bytes());
        entry.push(b'k');
        area.extend_from_slice(&entry);
        area.resize(4 + 20, 0); // padding + 4 zero bytes end marker
        area.resize(4 + 32, 0);
        area.extend_from_slice(b"v1");
        let mut out = Vec::new();
        parse_xattr_entries(3, &area, 4, 4, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Xattr {
                name: b"user.k".to_vec(),
                value: b"v1".to_vec()
            }]
        );
        let mut out = Vec::new();
        assert!(parse_xattr_entries(3, &area[..area.len() - 1], 4, 4, &mut out).is_err());
    }

    #[test]
    fn sparse_super_groups() {
        let f = |g: u64| g <= 1 || [3u64, 5, 7].iter().any(|&b| is_power_of(g, b));
        let with: Vec<u64> = (0..60).filter(|&g| f(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    /// Builds an ext4 image file with `mkfs.ext4 -d` and the given options from a staged tree
    /// with big, sparse, small and empty files, long and short symlinks, hardlinks and a
    /// directory large enough to be an htree after `e2fsck -D`.
    fn build_fs(dir: &std::path::Path, opts: &[&str]) -> std::path::PathBuf {
        stage_tree(&dir.join("stage"));
        mkfs(dir, &dir.join("stage"), opts)
    }

    /// Stages the tree `build_fs` formats, once.
    fn stage_tree(stage: &std::path::Path) {
        use std::fs;
        use std::os::unix::fs::symlink;
        if !stage.exists() {
            fs::create_dir_all(stage.join("a/b/c")).unwrap();
            fs::write(stage.join("a/small"), b"small file").unwrap();
            fs::write(stage.join("a/empty"), b"").unwrap();
            let big: Vec<u8> = (0..5_000_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
                .collect();
            fs::write(stage.join("a/b/big"), big).unwrap();
            let f = fs::File::create(stage.join("a/sparse")).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"tail", 9_000_000).unwrap();
            symlink("small", stage.join("a/short-link")).unwrap();
            symlink("x/".repeat(100), stage.join("a/long-link")).unwrap();
            fs::hard_link(stage.join("a/small"), stage.join("a/b/c/hard")).unwrap();
            fs::create_dir(stage.join("many")).unwrap();
            for i in 0..3000 {
                fs::write(
                    stage
                        .join("many")
                        .join(format!("entry-with-a-longish-name-{i:05}")),
                    i.to_string(),
                )
                .unwrap();
            }
        }
    }

    /// Formats a 64 MiB image in `dir` with `mkfs.ext4 -d stage` and `opts`, then lets
    /// `e2fsck -D` index the large directories.
    fn mkfs(dir: &std::path::Path, stage: &std::path::Path, opts: &[&str]) -> std::path::PathBuf {
        use std::fs;
        let img = dir.join(format!(
            "fs{}.ext4",
            opts.join("").replace([' ', '^', ','], "_")
        ));
        let f = fs::File::create(&img).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .args(opts)
            .arg("-d")
            .arg(stage)
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mkfs {opts:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = std::process::Command::new("e2fsck")
            .args(["-f", "-y", "-D"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.code().unwrap_or(8) < 4,
            "e2fsck: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        img
    }

    /// Walks the file system with the raw reader and checks it against the staged tree
    /// (types, modes, owners, sizes, mtimes, symlink targets, contents, hardlinks) and, where
    /// ext4-view can open the file system, against ext4-view (also names per directory).
    fn cross_check(img: &std::path::Path, stage: &std::path::Path) -> (usize, bool) {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(img).unwrap();
        let len = file.metadata().unwrap().len();
        let raw = RawFs::open(Region::new(&file, 0, len)).unwrap();
        let view = ext4_view::Ext4::load(Box::new(std::fs::read(img).unwrap())).ok();
        let mut checked = 0;
        let mut htree_seen = false;
        let mut stack = vec![(String::from("/"), raw.inode(ROOT_INO).unwrap())];
        let mut by_ino: std::collections::HashMap<u32, Vec<String>> = Default::default();
        while let Some((path, dir)) = stack.pop() {
            htree_seen |= dir.flags & 0x1000 != 0;
            let mut raw_names: Vec<Vec<u8>> = Vec::new();
            for e in raw.read_dir(&dir).unwrap() {
                raw_names.push(e.name.clone());
                let child = format!("{}{}", path, String::from_utf8(e.name.clone()).unwrap());
                let inode = raw.inode(e.ino).unwrap();
                let kind = inode.kind().unwrap();
                if child != "/lost+found" {
                    let st = std::fs::symlink_metadata(stage.join(child.trim_start_matches('/')))
                        .unwrap();
                    assert_eq!(inode.perm(), st.mode() & 0o7777, "{child} mode vs stage");
                    assert_eq!(
                        u32::from(inode.mode) & 0o170000,
                        st.mode() & 0o170000,
                        "{child} type vs stage"
                    );
                    assert_eq!(
                        (inode.uid, inode.gid),
                        (st.uid(), st.gid()),
                        "{child} owner vs stage"
                    );
                    assert_eq!(inode.mtime.sec, st.mtime(), "{child} mtime vs stage");
                    if kind != Kind::Dir {
                        assert_eq!(inode.size, st.len(), "{child} size vs stage");
                    }
                }
                if let Some(view) = &view {
                    let md = view.symlink_metadata(child.as_str()).unwrap();
                    assert_eq!(inode.perm(), u32::from(md.mode()) & 0o7777, "{child} mode");
                    let ft = md.file_type();
                    assert_eq!(
                        (ft.is_dir(), ft.is_symlink(), ft.is_regular_file()),
                        (kind == Kind::Dir, kind == Kind::Symlink, kind == Kind::File),
                        "{child} type"
                    );
                    assert_eq!(
                        (inode.uid, inode.gid),
                        (md.uid(), md.gid()),
                        "{child} owner"
                    );
                    assert_eq!(inode.size, md.len(), "{child} size");
                    assert_eq!(inode.mtime.sec, md.modified().seconds(), "{child} mtime");
                    assert_eq!(
                        inode.mtime.nsec,
                        md.modified().nanoseconds(),
                        "{child} mtime ns"
                    );
                }
                match inode.kind().unwrap() {
                    Kind::Dir => stack.push((format!("{child}/"), inode)),
                    Kind::Symlink => {
                        let target = raw.symlink_target(&inode).unwrap();
                        let staged =
                            std::fs::read_link(stage.join(child.trim_start_matches('/'))).unwrap();
                        assert_eq!(
                            target,
                            staged.as_os_str().as_encoded_bytes(),
                            "{child} target"
                        );
                    }
                    Kind::File => {
                        let data = raw.read_all(&inode, 1 << 30).unwrap();
                        // Ground truth is the staged file (ext4-view 1.0 cannot read holes of
                        // block-mapped files).
                        let staged =
                            std::fs::read(stage.join(child.trim_start_matches('/'))).unwrap();
                        assert!(data == staged, "{child} content");
                        by_ino.entry(e.ino).or_default().push(child.clone());
                    }
                    _ => {}
                }
                checked += 1;
            }
            let Some(view) = &view else { continue };
            let mut view_names: Vec<Vec<u8>> = view
                .read_dir(path.as_str())
                .unwrap()
                .map(|e| e.unwrap().file_name().as_ref().to_vec())
                .filter(|n| n != b"." && n != b"..")
                .collect();
            raw_names.sort();
            view_names.sort();
            assert_eq!(raw_names, view_names, "entries of {path}");
        }
        let mut pairs: Vec<Vec<String>> =
            by_ino.values().filter(|v| v.len() > 1).cloned().collect();
        pairs.iter_mut().for_each(|p| p.sort());
        assert_eq!(
            pairs,
            vec![vec!["/a/b/c/hard".to_string(), "/a/small".to_string()]],
            "hardlinks share one inode"
        );
        for (ino, names) in &by_ino {
            assert_eq!(
                usize::from(raw.inode(*ino).unwrap().links),
                names.len(),
                "link count of {names:?}"
            );
        }
        (checked, htree_seen)
    }

    #[test]
    fn raw_reader_agrees_with_ext4_view_across_layouts() {
        let dir = tempfile::tempdir().unwrap();
        for opts in [
            &["-b", "4096"][..],
            &["-b", "1024"],
            &["-b", "4096", "-O", "^extents,^64bit"],
            &["-b", "1024", "-O", "^extents,^64bit"],
            &["-b", "4096", "-O", "meta_bg,^resize_inode", "-I", "128"],
            &["-b", "2048", "-O", "64bit,^metadata_csum"],
        ] {
            let img = build_fs(dir.path(), opts);
            let (checked, htree) = cross_check(&img, &dir.path().join("stage"));
            assert!(checked > 3000, "{opts:?}: only {checked} entries");
            assert!(htree, "{opts:?}: no htree directory was exercised");
        }
    }

    #[test]
    fn corrupt_superblocks_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let img = build_fs(dir.path(), &["-b", "4096"]);
        let good = std::fs::read(&img).unwrap();
        let file = std::fs::File::open(&img).unwrap();
        assert!(
            RawFs::open(Region::new(&file, 0, 1500)).is_err(),
            "partition shorter than the superblock"
        );
        // Flip single superblock fields to absurd values; each must give an error.
        for (off, val) in [
            (0x18usize, 40u32),
            (0x20, 0),
            (0x28, 0),
            (0x58, 3),
            (0x4, u32::MAX),
        ] {
            let mut bad = good[..2 << 20].to_vec();
            bad[1024 + off..1024 + off + 4].copy_from_slice(&val.to_le_bytes());
            let p = dir.path().join("bad.ext4");
            std::fs::write(&p, &bad).unwrap();
            let f = std::fs::File::open(&p).unwrap();
            let len = f.metadata().unwrap().len();
            assert!(
                RawFs::open(Region::new(&f, 0, len)).is_err(),
                "field {off:#x} = {val}"
            );
        }
        // Random bytes as inode table: reading inodes and directories fails cleanly.
        let mut noisy = good.clone();
        let f = std::fs::File::open(&img).unwrap();
        let raw = RawFs::open(Region::new(&f, 0, good.len() as u64)).unwrap();
        let table = raw.inode_tables[0] as usize * 4096;
        let noise = crate::sample::pseudo_random("inodes", 64 * 1024);
        noisy[table..table + noise.len()].copy_from_slice(&noise);
        let p = dir.path().join("noisy.ext4");
        std::fs::write(&p, &noisy).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let raw = RawFs::open(Region::new(&f, 0, noisy.len() as u64)).unwrap();
        for ino in 1..200 {
            if let Ok(inode) = raw.inode(ino) {
                let _ = raw.runs(&inode);
                let _ = raw.read_dir(&inode);
                let _ = raw.symlink_target(&inode);
                let _ = raw.xattrs(&inode);
            }
        }
    }

    /// Adds an `inline/` subtree to the stage of `build_fs`: files of 0 to 150 bytes, two
    /// small directories (one overflowing i_block into system.data), short and long symlinks.
    fn stage_inline(stage: &std::path::Path) {
        use std::fs;
        use std::os::unix::fs::symlink;
        let inline = stage.join("inline");
        fs::create_dir_all(inline.join("few/sub")).unwrap();
        fs::create_dir_all(inline.join("eight")).unwrap();
        for n in [0usize, 1, 59, 60, 61, 150] {
            let data = crate::sample::pseudo_random(&format!("inline{n}"), n);
            fs::write(inline.join(format!("f{n}")), data).unwrap();
        }
        fs::write(inline.join("few/a"), b"a").unwrap();
        for i in 0..8 {
            fs::write(inline.join(format!("eight/e{i}")), b"").unwrap();
        }
        symlink("f1", inline.join("short-link")).unwrap();
        symlink("z".repeat(100), inline.join("link-100")).unwrap();
    }

    #[test]
    fn inline_data_files_dirs_and_symlinks_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        stage_tree(&stage);
        stage_inline(&stage);
        for opts in [
            &["-b", "4096", "-I", "512", "-O", "inline_data"][..],
            &[
                "-b",
                "1024",
                "-I",
                "256",
                "-O",
                "inline_data,^metadata_csum",
            ],
        ] {
            let img = mkfs(dir.path(), &stage, opts);
            let (checked, htree) = cross_check(&img, &stage);
            assert!(checked > 3000, "{opts:?}: only {checked} entries");
            assert!(htree, "{opts:?}: no htree directory was exercised");
            // The reader really went through inline inodes of every kind.
            let file = std::fs::File::open(&img).unwrap();
            let len = file.metadata().unwrap().len();
            let raw = RawFs::open(Region::new(&file, 0, len)).unwrap();
            let lookup = |dir: &Inode, name: &str| {
                let e = raw
                    .read_dir(dir)
                    .unwrap()
                    .into_iter()
                    .find(|e| e.name == name.as_bytes())
                    .unwrap_or_else(|| panic!("{name} missing"));
                raw.inode(e.ino).unwrap()
            };
            let inline = lookup(&raw.inode(ROOT_INO).unwrap(), "inline");
            for (name, kind) in [
                ("f1", Kind::File),
                ("f60", Kind::File),
                ("f61", Kind::File),
                ("few", Kind::Dir),
                ("link-100", Kind::Symlink),
            ] {
                let inode = lookup(&inline, name);
                assert_eq!(inode.kind().unwrap(), kind, "{opts:?} {name}");
                assert!(inode.has_inline_data(), "{opts:?}: {name} is not inline");
                assert!(raw.runs(&inode).is_err(), "{opts:?}: {name} has no blocks");
                assert!(
                    raw.xattrs(&inode).unwrap().is_empty(),
                    "{opts:?}: system.data of {name} shown as an xattr"
                );
            }
            // libext2fs moves a full inline directory to a block ("eight"); only the kernel
            // grows one into system.data.
            assert!(!lookup(&inline, "eight").has_inline_data());
        }
    }

    #[test]
    fn inline_directory_entries_continue_in_system_data() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        stage_inline(&stage);
        let img = mkfs(dir.path(), &stage, &["-I", "512", "-O", "inline_data"]);
        let ino_of = |path: &str| -> u32 {
            let out = std::process::Command::new("debugfs")
                .arg("-R")
                .arg(format!("stat {path}"))
                .arg(&img)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let f1 = ino_of("/inline/f1");
        // What the kernel's ext4_update_inline_dir leaves: one more entry ("extra", file
        // type 1) as the whole value of system.data, i_size 60 + its length.
        let mut dirent = f1.to_le_bytes().to_vec();
        dirent.extend_from_slice(&20u16.to_le_bytes());
        dirent.extend_from_slice(&[5, 1]);
        dirent.extend_from_slice(b"extra\0\0\0\0\0\0\0");
        let value = dir.path().join("dirent");
        std::fs::write(&value, &dirent).unwrap();
        let out = std::process::Command::new("debugfs")
            .arg("-w")
            .arg("-R")
            .arg(format!(
                "ea_set -f {} /inline/few system.data",
                value.display()
            ))
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success());
        let out = std::process::Command::new("debugfs")
            .args(["-w", "-R", "sif /inline/few size 80"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success());

        let file = std::fs::File::open(&img).unwrap();
        let len = file.metadata().unwrap().len();
        let raw = RawFs::open(Region::new(&file, 0, len)).unwrap();
        let few = raw.inode(ino_of("/inline/few")).unwrap();
        assert!(few.has_inline_data());
        let mut names: Vec<(Vec<u8>, u32)> = raw
            .read_dir(&few)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.ino))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                (b"a".to_vec(), ino_of("/inline/few/a")),
                (b"extra".to_vec(), f1),
                (b"sub".to_vec(), ino_of("/inline/few/sub")),
            ]
        );
        assert!(raw.xattrs(&few).unwrap().is_empty());
    }

    #[test]
    fn corrupt_inline_sizes_and_dirs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        stage_inline(&stage);
        let img = mkfs(dir.path(), &stage, &["-I", "512", "-O", "inline_data"]);
        let file = std::fs::File::open(&img).unwrap();
        let len = file.metadata().unwrap().len();
        let raw = RawFs::open(Region::new(&file, 0, len)).unwrap();
        let root = raw.inode(ROOT_INO).unwrap();
        let find = |dir: &Inode, name: &str| {
            let e = raw.read_dir(dir).unwrap();
            let e = e.iter().find(|e| e.name == name.as_bytes()).unwrap();
            raw.inode(e.ino).unwrap()
        };
        let inline = find(&root, "inline");
        let mut f61 = find(&inline, "f61");
        assert_eq!(raw.inline_data(&f61).unwrap().len(), 61);
        f61.size = 62;
        let e = raw.inline_data(&f61).unwrap_err().0;
        assert!(
            e.contains("claims 62 bytes of inline data but holds only 61 (60 in the inode, 1 in system.data)"),
            "{e}"
        );
        assert!(raw.read_all(&f61, 1 << 20).is_err());
        let mut f1 = find(&inline, "f1");
        f1.flags &= !INLINE_DATA_FL;
        assert!(raw.inline_data(&f1).is_err(), "not inline any more");

        let mut few = find(&inline, "few");
        // A dirent whose rec_len runs past the 56 bytes after the parent number.
        few.block[4 + 4..4 + 6].copy_from_slice(&200u16.to_le_bytes());
        let e = raw.read_dir(&few).unwrap_err().0;
        assert!(e.contains("corrupt entry in its inline data"), "{e}");
        let mut few = find(&inline, "few");
        few.block[..4].copy_from_slice(&0u32.to_le_bytes());
        let e = raw.read_dir(&few).unwrap_err().0;
        assert!(e.contains("invalid parent inode 0"), "{e}");
        // A system.data value offset past the in-inode area.
        let mut f61 = find(&inline, "f61");
        let first = 4;
        f61.xattr_area[first + 2..first + 4].copy_from_slice(&0xfff0u16.to_le_bytes());
        let e = raw.inline_data(&f61).unwrap_err().0;
        assert!(e.contains("corrupt extended attribute"), "{e}");
        // An inline flag on a file system without the feature.
        let plain = RawFs {
            inline_data: false,
            ..RawFs::open(Region::new(&file, 0, len)).unwrap()
        };
        let e = plain.inline_data(&find(&inline, "f1")).unwrap_err().0;
        assert!(e.contains("lacks the inline_data feature"), "{e}");
    }
}
