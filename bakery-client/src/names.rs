//! The rules for the names in bakery's API: Pi serials, bakeform names, disk and snapshot
//! ids, Pi config file names, and the error that names a refused one.
//!
//! They live here, beside the wire types, so that the server (whose checked newtypes
//! `Serial`, `BakeformName`, `DiskId` and `SnapshotId` are made by these rules) and the
//! `bakery` command line (which refuses a bad name before any request) cannot disagree.

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

/// Whether `name` is a bakeform name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn is_bakeform_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_BAKEFORM_NAME
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `name` is one plain path component: not empty, at most [`MAX_FILE_NAME`] bytes,
/// not `.` or `..`, without `/`, `\\` or NUL.
pub fn is_plain_component(name: &str) -> bool {
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

/// Whether `id` is a UUID in its hyphenated lowercase form (the only form bakery makes).
pub fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|uuid| uuid.hyphenated().to_string() == id)
}

/// A command-line argument that must be a Pi serial, returned as given when it is one.
pub fn serial(arg: &str) -> Result<String, NameError> {
    checked(arg, is_serial, NameError::Serial)
}

/// A command-line argument that must be a bakeform name, returned as given when it is one.
pub fn bakeform_name(arg: &str) -> Result<String, NameError> {
    checked(arg, is_bakeform_name, NameError::Bakeform)
}

/// A command-line argument that must be a disk id, returned as given when it is one.
pub fn disk_id(arg: &str) -> Result<String, NameError> {
    checked(arg, is_uuid, NameError::DiskId)
}

/// A command-line argument that must be a snapshot id, returned as given when it is one.
pub fn snapshot_id(arg: &str) -> Result<String, NameError> {
    checked(arg, is_uuid, NameError::SnapshotId)
}

fn checked(
    arg: &str,
    rule: fn(&str) -> bool,
    refused: fn(String) -> NameError,
) -> Result<String, NameError> {
    if rule(arg) {
        Ok(arg.to_owned())
    } else {
        Err(refused(arg.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bakeform_names() {
        for good in ["raspbian", "os-2024.11_lite", "A1"] {
            assert!(is_bakeform_name(good), "{good:?}");
        }
        let long = "a".repeat(65);
        for bad in [
            "", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a\0b", "a b", "ü", &long,
        ] {
            assert_eq!(bakeform_name(bad), Err(NameError::Bakeform(bad.to_owned())));
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
        assert_eq!(serial("1a2b3c4d").as_deref(), Ok("1a2b3c4d"));
        for bad in ["1A2B3C4D", "1a2b3c4", "1a2b3c4d5", "1a2b3c4g", "../x", ""] {
            assert_eq!(serial(bad), Err(NameError::Serial(bad.to_owned())));
        }
    }

    #[test]
    fn ids_are_lowercase_hyphenated_uuids() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(disk_id(id).as_deref(), Ok(id));
        assert_eq!(snapshot_id(id).as_deref(), Ok(id));
        for bad in [
            "67E55044-10B1-426F-9247-BB680E5FE0C8",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "67e55044-10b1-426f-9247-bb680e5fe0c8.img",
            "..",
            "",
        ] {
            assert_eq!(disk_id(bad), Err(NameError::DiskId(bad.to_owned())));
            assert_eq!(snapshot_id(bad), Err(NameError::SnapshotId(bad.to_owned())));
        }
    }

    #[test]
    fn refusals_name_the_input() {
        assert_eq!(
            serial("../x").unwrap_err().to_string(),
            "invalid pi serial \"../x\": expected 8 lowercase hex digits"
        );
        assert_eq!(
            disk_id("x").unwrap_err().to_string(),
            "invalid disk id \"x\": expected a uuid"
        );
    }
}
