//! `named_enum!`: a fieldless wire enum whose variants' names are written once, and
//! [`UnknownName`], the refusal of a string that names none of them.
//!
//! Each variant is declared with the name it has on the wire, in the database, in the CLI
//! and in logs (`Fridge = "fridge"`); the serde name, `as_str`, `Display`, `FromStr` and the
//! list `ALL` are all made from that one declaration, so they cannot disagree and `ALL`
//! cannot miss a variant.

/// A string that names no variant of a `named_enum!` enum (`PiState`, `PiModel`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected {expected}")]
pub struct UnknownName {
    /// What was parsed (`pi state`, `pi model`, ...).
    pub what: &'static str,
    /// The string given.
    pub value: String,
    /// The names accepted (`fridge, preparing, baked or unbaking`).
    pub expected: String,
}

impl UnknownName {
    /// The refusal of `value` as a `what`, listing `names`.
    pub fn new(what: &'static str, value: &str, names: &[&str]) -> UnknownName {
        let expected = match names {
            [] => String::new(),
            [only] => (*only).to_owned(),
            [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        };
        UnknownName {
            what,
            value: value.to_owned(),
            expected,
        }
    }
}

/// Defines a fieldless enum whose variants are given with their names:
///
/// ```ignore
/// named_enum! {
///     /// docs, derives (Serialize and Deserialize among them), other attributes
///     pub enum PiState ("pi state") {
///         /// docs and attributes of the variant
///         Fridge = "fridge",
///     }
/// }
/// ```
///
/// Each variant gets `#[serde(rename = ...)]` with its name (taken as a `tt`, not a
/// `literal`: utoipa's derive reads only a bare string token there, and would otherwise
/// document the Rust names, as `openapi`'s test caught); the enum gets `ALL` (every
/// variant, in order), `as_str`, `Display` and `FromStr` (refusing with [`UnknownName`]).
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $text:tt,
            )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $(
                $(#[$variant_meta])*
                #[serde(rename = $text)]
                $variant,
            )+
        }

        impl $name {
            /// Every variant, in the order declared.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The name used on the wire, in the database, the CLI and logs; `from_str` is
            /// its inverse.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::named::UnknownName;

            /// Parses the names `as_str` gives, and nothing else.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::named::UnknownName::new($what, s, &[$($text),+]))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::UnknownName;

    #[test]
    fn the_expected_names_read_as_a_list() {
        let err = |names: &[&str]| UnknownName::new("thing", "x", names).to_string();
        assert_eq!(err(&["a"]), "unknown thing \"x\": expected a");
        assert_eq!(err(&["a", "b"]), "unknown thing \"x\": expected a or b");
        assert_eq!(
            err(&["a", "b", "c"]),
            "unknown thing \"x\": expected a, b or c"
        );
    }
}
