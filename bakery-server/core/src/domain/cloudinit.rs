//! cloud-init NoCloud data per Pi: the files a Pi's cloud-init fetches from
//! `<nocloud url><file>` and the `meta-data` a Pi gets when its operator set none.

use std::fmt;

use super::names::NameError;

/// Longest file an operator may set (user-data with a few SSH keys and a join token is a few
/// KiB; cloud-init itself refuses nothing, but bakery keeps these in SQLite).
pub const MAX_FILE_BYTES: usize = 256 << 10;

/// One of the NoCloud files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudInitFile {
    /// `meta-data`: instance id, hostname.
    MetaData,
    /// `user-data`: the operator's cloud-config or script.
    UserData,
    /// `vendor-data`: the site's defaults, merged under user-data.
    VendorData,
    /// `network-config`: a network configuration (version 1 or 2).
    NetworkConfig,
}

impl CloudInitFile {
    /// Every file, in the order cloud-init's NoCloud reads them.
    pub const ALL: [CloudInitFile; 4] = [
        CloudInitFile::MetaData,
        CloudInitFile::UserData,
        CloudInitFile::VendorData,
        CloudInitFile::NetworkConfig,
    ];

    /// The file's name in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudInitFile::MetaData => "meta-data",
            CloudInitFile::UserData => "user-data",
            CloudInitFile::VendorData => "vendor-data",
            CloudInitFile::NetworkConfig => "network-config",
        }
    }

    /// Parses a file name from a URL.
    pub fn parse(name: &str) -> Result<CloudInitFile, NameError> {
        CloudInitFile::ALL
            .into_iter()
            .find(|f| f.as_str() == name)
            .ok_or_else(|| NameError::CloudInitFile(name.to_owned()))
    }

    /// What a baked Pi gets for this file when its operator set none: `meta-data` names the
    /// instance (`root` is the id of the Pi's root disk, new with every bake, so cloud-init
    /// runs again after a re-bake) and the host; `user-data` and `vendor-data` are empty (an
    /// empty file is valid); `network-config` has no default (cloud-init's own fallback: DHCP
    /// on the first interface).
    pub fn default_for(self, serial: &str, root: &str) -> Option<String> {
        match self {
            CloudInitFile::MetaData => Some(format!(
                "instance-id: bakery-{serial}-{root}\nlocal-hostname: pi-{serial}\n"
            )),
            CloudInitFile::UserData | CloudInitFile::VendorData => Some(String::new()),
            CloudInitFile::NetworkConfig => None,
        }
    }
}

impl fmt::Display for CloudInitFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways_and_others_are_refused() {
        for file in CloudInitFile::ALL {
            assert_eq!(CloudInitFile::parse(file.as_str()).unwrap(), file);
        }
        for bad in ["", "meta_data", "../meta-data", "user-data/", "USER-DATA"] {
            assert!(CloudInitFile::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_meta_data_changes_with_each_bake() {
        let a = CloudInitFile::MetaData
            .default_for("1a2b3c4d", "r1")
            .unwrap();
        let b = CloudInitFile::MetaData
            .default_for("1a2b3c4d", "r2")
            .unwrap();
        assert_ne!(a, b);
        assert!(a.contains("local-hostname: pi-1a2b3c4d\n"), "{a}");
        assert_eq!(
            CloudInitFile::NetworkConfig.default_for("1a2b3c4d", "r1"),
            None
        );
    }
}
