//! cloud-init NoCloud data per Pi: the files a Pi's cloud-init fetches from
//! `<nocloud url><file>` and the `meta-data` a Pi gets when its operator set none.

use super::names::NameError;

/// Longest file an operator may set (user-data with a few SSH keys and a join token is a few
/// KiB; cloud-init itself refuses nothing, but bakery keeps these in SQLite).
pub const MAX_FILE_BYTES: usize = 256 << 10;

pub use bakery_client::CloudInitFile;

/// Parses a NoCloud file name from a URL, refusing any other name as a [`NameError`].
pub fn parse_file(name: &str) -> Result<CloudInitFile, NameError> {
    name.parse()
        .map_err(|_| NameError::CloudInitFile(name.to_owned()))
}

/// What a baked Pi gets for `file` when its operator set none: `meta-data` names the
/// instance (`root` is the id of the Pi's root disk, new with every bake, so cloud-init runs
/// again after a re-bake) and the host; `user-data` and `vendor-data` are empty (an empty
/// file is valid); `network-config` has no default (cloud-init's own fallback: DHCP on the
/// first interface).
pub fn default_for(file: CloudInitFile, serial: &str, root: &str) -> Option<String> {
    match file {
        CloudInitFile::MetaData => Some(format!(
            "instance-id: bakery-{serial}-{root}\nlocal-hostname: pi-{serial}\n"
        )),
        CloudInitFile::UserData | CloudInitFile::VendorData => Some(String::new()),
        CloudInitFile::NetworkConfig => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways_and_others_are_refused() {
        for file in CloudInitFile::ALL {
            assert_eq!(parse_file(file.as_str()).unwrap(), file);
        }
        for bad in ["", "meta_data", "../meta-data", "user-data/", "USER-DATA"] {
            assert_eq!(
                parse_file(bad),
                Err(NameError::CloudInitFile(bad.to_owned()))
            );
        }
    }

    #[test]
    fn default_meta_data_changes_with_each_bake() {
        let a = default_for(CloudInitFile::MetaData, "1a2b3c4d", "r1").unwrap();
        let b = default_for(CloudInitFile::MetaData, "1a2b3c4d", "r2").unwrap();
        assert_ne!(a, b);
        assert!(a.contains("local-hostname: pi-1a2b3c4d\n"), "{a}");
        assert_eq!(
            default_for(CloudInitFile::NetworkConfig, "1a2b3c4d", "r1"),
            None
        );
    }
}
