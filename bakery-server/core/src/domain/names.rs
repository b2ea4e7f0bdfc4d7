//! Validation of every name that comes from outside: bakeform names, Pi config file names,
//! Pi serials, disk and snapshot ids and boot-file paths.

use thiserror::Error;

/// The longest bakeform name accepted.
pub const MAX_BAKEFORM_NAME: usize = 64;
/// The longest file name accepted (the usual file-system limit).
pub const MAX_FILE_NAME: usize = 255;

/// Why a name from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// A bakeform name breaks the rules.
    #[error(
        "invalid bakeform name {0:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
    )]
    Bakeform(String),
    /// A file name breaks the rules.
    #[error(
        "invalid file name {0:?}: must be a single path component without '/', '\\', NUL, '.' or '..'"
    )]
    File(String),
    /// A serial is not 8 lowercase hex digits.
    #[error("invalid pi serial {0:?}: expected 8 lowercase hex digits")]
    Serial(String),
    /// A disk id is not a UUID.
    #[error("invalid disk id {0:?}: expected a uuid")]
    DiskId(String),
    /// A snapshot id is not a UUID.
    #[error("invalid snapshot id {0:?}: expected a uuid")]
    SnapshotId(String),
    /// A boot-file path has a component that breaks the rules.
    #[error("invalid boot file path {0:?}")]
    BootPath(String),
    /// Not one of cloud-init's NoCloud files.
    #[error(
        "invalid cloud-init file {0:?}: expected meta-data, user-data, vendor-data or network-config"
    )]
    CloudInitFile(String),
}

/// Checks a bakeform name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn validate_bakeform_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BAKEFORM_NAME
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NameError::Bakeform(name.to_owned()))
    }
}

fn is_plain_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
}

/// Checks a Pi config file name: one path component, no `/`, `\`, NUL, not `.` or `..`.
pub fn validate_file_name(name: &str) -> Result<(), NameError> {
    if is_plain_component(name) {
        Ok(())
    } else {
        Err(NameError::File(name.to_owned()))
    }
}

/// Whether `s` is a Pi serial: exactly 8 lowercase hex digits.
pub fn is_serial(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a Pi serial: exactly 8 lowercase hex digits.
pub fn validate_serial(serial: &str) -> Result<(), NameError> {
    if is_serial(serial) {
        Ok(())
    } else {
        Err(NameError::Serial(serial.to_owned()))
    }
}

/// Whether `id` is a UUID in its hyphenated lowercase form (the only form bakery makes).
fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|uuid| uuid.hyphenated().to_string() == id)
}

/// Checks a disk id: a UUID in its hyphenated lowercase form (the only form bakery makes).
pub fn validate_disk_id(id: &str) -> Result<(), NameError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(NameError::DiskId(id.to_owned()))
    }
}

/// Checks a snapshot id: a UUID in its hyphenated lowercase form, like disk ids.
pub fn validate_snapshot_id(id: &str) -> Result<(), NameError> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(NameError::SnapshotId(id.to_owned()))
    }
}

/// Splits a boot-file path into its components, refusing empty, absolute, `.`/`..`, NUL and
/// backslash components. Repeated slashes are refused too: Pis never send them.
pub fn boot_path_components(path: &str) -> Result<Vec<&str>, NameError> {
    let bad = || NameError::BootPath(path.to_owned());
    if path.is_empty() || path.starts_with('/') {
        return Err(bad());
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().all(|p| is_plain_component(p)) {
        Ok(parts)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bakeform_names() {
        for good in ["raspbian", "os-2024.11_lite", "A1"] {
            assert!(validate_bakeform_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a\0b", "a b", "ü", &long,
        ] {
            assert!(validate_bakeform_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names() {
        assert!(validate_file_name("settings.json").is_ok());
        assert!(validate_file_name(".hidden").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/etc",
            "a\\b",
            "a\0",
            &"x".repeat(256),
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serials() {
        assert!(validate_serial("1a2b3c4d").is_ok());
        for bad in ["1A2B3C4D", "1a2b3c4", "1a2b3c4d5", "1a2b3c4g", "../x", ""] {
            assert!(validate_serial(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disk_ids() {
        assert!(validate_disk_id("67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        assert!(validate_disk_id("67E55044-10B1-426F-9247-BB680E5FE0C8").is_err());
        assert!(validate_disk_id("67e5504410b1426f9247bb680e5fe0c8").is_err());
        assert!(validate_disk_id("..").is_err());
        assert!(validate_snapshot_id("67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        for bad in ["../x", "", "67e55044-10b1-426f-9247-bb680e5fe0c8.img"] {
            assert!(validate_snapshot_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boot_paths() {
        assert_eq!(
            boot_path_components("overlays/x.dtbo").unwrap(),
            vec!["overlays", "x.dtbo"]
        );
        for bad in [
            "",
            "/start.elf",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "./a",
        ] {
            assert!(boot_path_components(bad).is_err(), "{bad:?}");
        }
    }
}
