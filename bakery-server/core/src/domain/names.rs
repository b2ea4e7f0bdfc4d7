//! Names that come from outside, checked: Pi serials, bakeform names, disk and snapshot ids
//! (as newtypes) and boot-file paths; the rules themselves are the API's, in
//! `bakery_client::names`, shared with the `bakery` command line.
//!
//! Serials, bakeform names, disk ids and snapshot ids are checked once, where they enter
//! (an HTTP path or body, a boot path over TFTP or HTTP, a database row), into the newtypes [`Serial`],
//! [`BakeformName`], [`DiskId`] and [`SnapshotId`]; `Layout` and the store take only those,
//! so a path join can never be given an unchecked name.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use bakery_client::names::{
    MAX_BAKEFORM_NAME, MAX_FILE_NAME, NameError, is_bakeform_name, is_plain_component, is_serial,
    is_uuid, validate_file_name,
};

/// Defines a name newtype: a `String` that passed `$check`, made only by a checked parse
/// (or, for ids, by a fresh UUID), refused with `NameError::$error`.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:expr, $error:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `s`, refusing it with the [`NameError`] that names it.
            pub fn parse(s: &str) -> Result<$name, NameError> {
                if $check(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(NameError::$error(s.to_owned()))
                }
            }

            /// The name as checked.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<$name, NameError> {
                $name::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;

            fn try_from(s: &str) -> Result<$name, NameError> {
                $name::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(s: String) -> Result<$name, NameError> {
                if $check(&s) {
                    Ok($name(s))
                } else {
                    Err(NameError::$error(s))
                }
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                std::path::Path::new(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

checked_name!(
    /// A Pi's serial, checked: exactly 8 lowercase hex digits (so it is one plain path
    /// component, the directory a Pi asks for over TFTP).
    Serial,
    is_serial,
    Serial
);

checked_name!(
    /// A bakeform's name, checked: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`
    /// (so it is one plain path component, never `.`, `..` or hidden).
    BakeformName,
    is_bakeform_name,
    Bakeform
);

checked_name!(
    /// A disk's id, checked: a UUID in its hyphenated lowercase form, the only form bakery
    /// makes (so it is one plain path component).
    DiskId,
    is_uuid,
    DiskId
);

checked_name!(
    /// A snapshot's id, checked: a UUID in its hyphenated lowercase form, like disk ids.
    SnapshotId,
    is_uuid,
    SnapshotId
);

impl DiskId {
    /// A new random id (checked by construction: bakery's own form of a UUID).
    pub fn random() -> DiskId {
        DiskId(uuid::Uuid::new_v4().hyphenated().to_string())
    }
}

impl SnapshotId {
    /// A new random id (checked by construction: bakery's own form of a UUID).
    pub fn random() -> SnapshotId {
        SnapshotId(uuid::Uuid::new_v4().hyphenated().to_string())
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
            assert_eq!(BakeformName::parse(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(65);
        for bad in [
            "", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a\0b", "a b", "ü", &long,
        ] {
            assert_eq!(
                BakeformName::parse(bad),
                Err(NameError::Bakeform(bad.to_owned()))
            );
        }
    }

    #[test]
    fn serials() {
        assert_eq!(Serial::parse("1a2b3c4d").unwrap(), "1a2b3c4d");
        for bad in ["1A2B3C4D", "1a2b3c4", "1a2b3c4d5", "1a2b3c4g", "../x", ""] {
            assert_eq!(Serial::parse(bad), Err(NameError::Serial(bad.to_owned())));
        }
    }

    #[test]
    fn disk_ids() {
        assert!(DiskId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        assert!(DiskId::parse("67E55044-10B1-426F-9247-BB680E5FE0C8").is_err());
        assert!(DiskId::parse("67e5504410b1426f9247bb680e5fe0c8").is_err());
        assert_eq!(DiskId::parse(".."), Err(NameError::DiskId("..".into())));
        assert!(SnapshotId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        for bad in ["../x", "", "67e55044-10b1-426f-9247-bb680e5fe0c8.img"] {
            assert!(SnapshotId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_name_the_input() {
        assert_eq!(
            Serial::parse("../x").unwrap_err().to_string(),
            "invalid pi serial \"../x\": expected 8 lowercase hex digits"
        );
        assert_eq!(
            "a/b".parse::<BakeformName>().unwrap_err().to_string(),
            "invalid bakeform name \"a/b\": use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        );
        assert_eq!(
            DiskId::try_from("x").unwrap_err().to_string(),
            "invalid disk id \"x\": expected a uuid"
        );
        assert_eq!(
            SnapshotId::try_from(String::from("x"))
                .unwrap_err()
                .to_string(),
            "invalid snapshot id \"x\": expected a uuid"
        );
    }

    #[test]
    fn names_show_and_compare_as_their_string() {
        let serial = Serial::parse("1a2b3c4d").unwrap();
        assert_eq!(serial.to_string(), "1a2b3c4d");
        assert_eq!(AsRef::<str>::as_ref(&serial), "1a2b3c4d");
        assert_eq!(String::from(serial.clone()), "1a2b3c4d");
        assert!(serial == *"1a2b3c4d" && "1a2b3c4d" == serial);
        let set: std::collections::HashSet<Serial> = [serial].into();
        assert!(set.contains("1a2b3c4d"));
    }

    #[test]
    fn names_serialize_as_strings_and_deserialize_checked() {
        let name = BakeformName::parse("raspbian").unwrap();
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, "\"raspbian\"");
        assert_eq!(serde_json::from_str::<BakeformName>(&json).unwrap(), name);
        let err = serde_json::from_str::<BakeformName>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("invalid bakeform name"), "{err}");
        let id = DiskId::random();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<DiskId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<Serial>("\"1A2B3C4D\"").is_err());
        assert!(serde_json::from_str::<SnapshotId>("\"..\"").is_err());
    }

    #[test]
    fn random_ids_are_valid() {
        for _ in 0..8 {
            assert!(DiskId::parse(DiskId::random().as_str()).is_ok());
            assert!(SnapshotId::parse(SnapshotId::random().as_str()).is_ok());
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
