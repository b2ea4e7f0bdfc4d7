//! Disk rules: sizes, what may be attached, detached, resized and deleted.

use thiserror::Error;

/// The largest disk accepted, in MiB (16 TiB, ext4's file size limit).
pub const MAX_DISK_MIB: i64 = 16 * 1024 * 1024;

/// A disk operation the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DiskRuleError {
    /// The size is not positive.
    #[error("disk size must be a positive number of MiB, got {0}")]
    NotPositive(i64),
    /// The size is absurdly large.
    #[error("disk size {0} MiB is larger than the maximum of {MAX_DISK_MIB} MiB")]
    TooLarge(i64),
    /// A resize would shrink the disk.
    #[error("disk {id} can only grow: it has {current} MiB, asked for {requested} MiB")]
    Shrink {
        /// The disk.
        id: String,
        /// Its size now.
        current: i64,
        /// The size asked for.
        requested: i64,
    },
}

/// Checks the size of a new disk, in MiB.
pub fn check_new_size(size: i64) -> Result<(), DiskRuleError> {
    if size <= 0 {
        Err(DiskRuleError::NotPositive(size))
    } else if size > MAX_DISK_MIB {
        Err(DiskRuleError::TooLarge(size))
    } else {
        Ok(())
    }
}

/// Checks a resize of disk `id` from `current` to `requested` MiB.
pub fn check_resize(id: &str, current: i64, requested: i64) -> Result<(), DiskRuleError> {
    check_new_size(requested)?;
    if requested < current {
        return Err(DiskRuleError::Shrink {
            id: id.to_owned(),
            current,
            requested,
        });
    }
    Ok(())
}

/// Bytes in `mib` MiB (sizes are checked first, so this cannot overflow).
pub fn mib_to_bytes(mib: i64) -> u64 {
    u64::try_from(mib).unwrap_or(0) * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert!(check_new_size(1).is_ok());
        assert_eq!(check_new_size(0), Err(DiskRuleError::NotPositive(0)));
        assert_eq!(check_new_size(-5), Err(DiskRuleError::NotPositive(-5)));
        assert!(check_new_size(MAX_DISK_MIB + 1).is_err());
        assert!(check_resize("d", 10, 10).is_ok());
        assert!(check_resize("d", 10, 20).is_ok());
        assert_eq!(
            check_resize("d", 10, 5).unwrap_err().to_string(),
            "disk d can only grow: it has 10 MiB, asked for 5 MiB"
        );
        assert_eq!(mib_to_bytes(2), 2 * 1024 * 1024);
    }
}
