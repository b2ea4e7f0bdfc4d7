//! Hardware inventory rules: which board a boot-path request reveals, what a label may be,
//! and whether a Pi meets a bake's constraints.

use bakery_client::{Labels, PiModel};
use thiserror::Error;

/// Most labels one Pi carries.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// A label set that cannot be stored.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LabelError {
    /// More than [`MAX_LABELS`].
    #[error("{count} labels, at most {MAX_LABELS} allowed")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A key that is empty, too long or has a character outside `A-Za-z0-9._/-`.
    #[error("invalid label key {0:?}: 1 to 63 of A-Z a-z 0-9 . _ / -")]
    Key(String),
    /// A value that is too long or has a character outside `A-Za-z0-9._:-`.
    #[error("invalid value {value:?} of label {key:?}: at most 63 of A-Z a-z 0-9 . _ : -")]
    Value {
        /// The label.
        key: String,
        /// The value.
        value: String,
    },
}

/// How old a Pi's last-seen time may grow before a boot-file request writes a new one.
pub const LAST_SEEN_GRANULARITY_MS: i64 = 60_000;

/// Whether a last-seen time `at` is old enough at `now` (both unix ms) to be written again.
pub fn seen_is_stale(at: i64, now: i64) -> bool {
    now - at >= LAST_SEEN_GRANULARITY_MS
}

/// The model a request for `path` (inside the Pi's `<serial>/` directory) reveals, if only
/// one model asks for it: `start4*.elf` a Pi 4, `start.elf`/`start_x.elf`/`start_cd.elf`/
/// `start_db.elf` a Pi 3 (a Pi 4 asks for the `start4` ones), `kernel_2712.img` or a
/// `bcm2712*.dtb` a Pi 5. `config.txt` and the kernels other boards share tell nothing.
pub fn model_from_request(path: &str) -> Option<PiModel> {
    let base = path.rsplit('/').next().unwrap_or(path);
    if base.starts_with("start4") && base.ends_with(".elf") {
        return Some(PiModel::Pi4);
    }
    if matches!(
        base,
        "start.elf" | "start_x.elf" | "start_cd.elf" | "start_db.elf"
    ) {
        return Some(PiModel::Pi3);
    }
    if base == "kernel_2712.img" || (base.starts_with("bcm2712") && base.ends_with(".dtb")) {
        return Some(PiModel::Pi5);
    }
    None
}

/// Checks a label set an operator wants to store.
pub fn check_labels(labels: &Labels) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: labels.len(),
        });
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
        if !key_ok {
            return Err(LabelError::Key(key.clone()));
        }
        let value_ok = value.len() <= MAX_LABEL_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !value_ok {
            return Err(LabelError::Value {
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// What a bake asks of the Pi it gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// The model, if any.
    pub model: Option<PiModel>,
    /// Labels the Pi must carry with these values.
    pub labels: Labels,
}

impl Constraints {
    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        self.model.is_none() && self.labels.is_empty()
    }

    /// Whether a Pi of `model` with `labels` meets them (a Pi of unknown model meets no
    /// model constraint).
    pub fn admit(&self, model: Option<PiModel>, labels: &Labels) -> bool {
        self.model.is_none_or(|want| model == Some(want))
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}

impl std::fmt::Display for Constraints {
    /// `model pi4, labels rack=a,poe=yes`: how the constraints are named in errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(model) = self.model {
            parts.push(format!("model {model}"));
        }
        if !self.labels.is_empty() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.push(format!("labels {}", labels.join(",")));
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_files_only_one_model_asks_for_name_it() {
        assert_eq!(model_from_request("start4.elf"), Some(PiModel::Pi4));
        assert_eq!(model_from_request("start4x.elf"), Some(PiModel::Pi4));
        assert_eq!(model_from_request("start.elf"), Some(PiModel::Pi3));
        assert_eq!(model_from_request("start_x.elf"), Some(PiModel::Pi3));
        assert_eq!(model_from_request("kernel_2712.img"), Some(PiModel::Pi5));
        assert_eq!(
            model_from_request("bcm2712-rpi-5-b.dtb"),
            Some(PiModel::Pi5)
        );
        for shared in [
            "config.txt",
            "cmdline.txt",
            "kernel8.img",
            "fixup4.dat",
            "bcm2711-rpi-4-b.dtb",
            "overlays/start4.txt",
            "pieeprom.sig",
        ] {
            assert_eq!(model_from_request(shared), None, "{shared}");
        }
    }

    #[test]
    fn labels_are_checked_key_and_value() {
        assert_eq!(
            check_labels(&labels(&[("rack", "a"), ("poe/port", "7")])),
            Ok(())
        );
        assert_eq!(check_labels(&labels(&[("empty-value", "")])), Ok(()));
        assert_eq!(
            check_labels(&labels(&[("", "a")])),
            Err(LabelError::Key(String::new()))
        );
        assert_eq!(
            check_labels(&labels(&[("rack a", "a")])),
            Err(LabelError::Key("rack a".into()))
        );
        let long = "x".repeat(64);
        assert!(matches!(
            check_labels(&labels(&[("rack", long.as_str())])),
            Err(LabelError::Value { .. })
        ));
        assert!(matches!(
            check_labels(&labels(&[("rack", "a=b")])),
            Err(LabelError::Value { .. })
        ));
        let many: Labels = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(check_labels(&many), Err(LabelError::TooMany { count: 33 }));
    }

    #[test]
    fn constraints_admit_only_matching_pis_and_name_themselves() {
        let none = Constraints::default();
        assert!(none.is_empty() && none.admit(None, &Labels::new()));
        let want = Constraints {
            model: Some(PiModel::Pi4),
            labels: labels(&[("rack", "a")]),
        };
        assert!(want.admit(Some(PiModel::Pi4), &labels(&[("rack", "a"), ("x", "y")])));
        assert!(!want.admit(None, &labels(&[("rack", "a")])));
        assert!(!want.admit(Some(PiModel::Pi5), &labels(&[("rack", "a")])));
        assert!(!want.admit(Some(PiModel::Pi4), &labels(&[("rack", "b")])));
        assert!(!want.admit(Some(PiModel::Pi4), &Labels::new()));
        assert_eq!(want.to_string(), "model pi4, labels rack=a");
    }
}
