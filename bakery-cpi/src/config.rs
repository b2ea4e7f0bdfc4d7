//! The CPI's configuration: the JSON file the CPI job renders, overridden by the request context.
//!
//! ```json
//! {"url": "http://10.0.0.2:8080/api/v1", "token": "secret", "ca_cert": "-----BEGIN CERTIFICATE-----...",
//!  "agent": {"mbus": "nats://nats:pw@10.0.0.3:4222",
//!            "blobstore": {"provider": "dav", "options": {"endpoint": "http://10.0.0.3:25250"}},
//!            "ntp": ["0.pool.ntp.org"]},
//!  "default_ephemeral_disk_mib": 10240, "bake_timeout_seconds": 900}
//! ```
//!
//! The director merges a CPI config's properties into every request's `context`; every context
//! key except `director_uuid`, `request_id` and `vm` replaces the file's key of the same name,
//! so the CPI works from the context alone when it carries `url`. No environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest config file the CPI reads.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Ephemeral disk size when neither cloud properties nor config say (MiB).
pub const DEFAULT_EPHEMERAL_DISK_MIB: i64 = 10 * 1024;

/// How long create_vm waits for a bake when the config does not say.
pub const DEFAULT_BAKE_TIMEOUT_SECONDS: u64 = 900;

/// Context keys the director sets itself; they never override the configuration.
const DIRECTOR_CONTEXT_KEYS: [&str; 3] = ["director_uuid", "request_id", "vm"];

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read cpi config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is too large to be a config file.
    #[error("cpi config {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The config file is not a JSON config.
    #[error("cpi config {path} is invalid: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The config merged with the request context is invalid.
    #[error("cpi config merged with the request context is invalid: {0}")]
    Context(String),
    /// No bakery URL in the file or the context.
    #[error("no bakery url: set \"url\" in the cpi config or the cpi config properties")]
    MissingUrl,
    /// No agent mbus URL: the agent on a Pi could not reach the director.
    #[error("no agent mbus: set \"agent\": {{\"mbus\": ...}} in the cpi config")]
    MissingMbus,
    /// A number that must be positive is not.
    #[error("{key} must be greater than 0, got {value}")]
    NotPositive {
        /// The key.
        key: &'static str,
        /// The value found.
        value: i64,
    },
    /// The bakery client cannot be built from the URL.
    #[error("cannot use bakery url {url:?}: {reason}")]
    Client {
        /// The URL.
        url: String,
        /// Why not.
        reason: String,
    },
}

/// The blobstore the agent uses (agent settings `blobstore`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blobstore {
    /// e.g. `dav`, `s3`, `local`.
    pub provider: String,
    /// Provider options, passed to the agent unchanged.
    #[serde(default)]
    pub options: Map<String, Value>,
}

/// The agent options the CPI writes into every Pi's settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentOptions {
    /// The message bus URL the agent connects to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbus: Option<String>,
    /// The blobstore the agent uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobstore: Option<Blobstore>,
    /// NTP servers.
    #[serde(default)]
    pub ntp: Vec<String>,
}

/// The CPI configuration (every field optional here; [`Config`] accessors say what is needed).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Config {
    /// The bakery API base URL, ending in `/api/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bearer token for the bakery API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PEM of the CA that signed bakery's HTTPS certificate (for an `https` url with a
    /// certificate of the operator's own CA); the system's roots stay trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Agent options written into the settings on every Pi.
    #[serde(default)]
    pub agent: AgentOptions,
    /// Ephemeral disk size when a VM's cloud properties do not give `ephemeral_disk` (MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ephemeral_disk_mib: Option<i64>,
    /// How long create_vm waits for a Pi to be baked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_timeout_seconds: Option<u64>,
}

impl Config {
    /// Read a config file (JSON).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        if metadata.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(read_error)?;
        serde_json::from_slice(&bytes).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// This config with every context key (except the director's own) put over it.
    pub fn with_context(&self, context: &Map<String, Value>) -> Result<Config, ConfigError> {
        let Value::Object(mut merged) =
            serde_json::to_value(self).map_err(|e| ConfigError::Context(e.to_string()))?
        else {
            return Err(ConfigError::Context("config is not an object".into()));
        };
        for (key, value) in context {
            if !DIRECTOR_CONTEXT_KEYS.contains(&key.as_str()) {
                merged.insert(key.clone(), value.clone());
            }
        }
        serde_json::from_value(Value::Object(merged))
            .map_err(|e| ConfigError::Context(e.to_string()))
    }

    /// The bakery URL.
    pub fn url(&self) -> Result<&str, ConfigError> {
        match self.url.as_deref() {
            Some(url) if !url.trim().is_empty() => Ok(url),
            _ => Err(ConfigError::MissingUrl),
        }
    }

    /// The agent's mbus URL.
    pub fn mbus(&self) -> Result<&str, ConfigError> {
        match self.agent.mbus.as_deref() {
            Some(mbus) if !mbus.trim().is_empty() => Ok(mbus),
            _ => Err(ConfigError::MissingMbus),
        }
    }

    /// The default ephemeral disk size in MiB.
    pub fn default_ephemeral_disk_mib(&self) -> Result<i64, ConfigError> {
        match self.default_ephemeral_disk_mib {
            None => Ok(DEFAULT_EPHEMERAL_DISK_MIB),
            Some(value) if value > 0 => Ok(value),
            Some(value) => Err(ConfigError::NotPositive {
                key: "default_ephemeral_disk_mib",
                value,
            }),
        }
    }

    /// How long create_vm waits for a bake.
    pub fn bake_timeout(&self) -> Duration {
        Duration::from_secs(
            self.bake_timeout_seconds
                .unwrap_or(DEFAULT_BAKE_TIMEOUT_SECONDS),
        )
    }

    /// A blocking bakery client for this config.
    pub fn client(&self) -> Result<bakery_client::blocking::Client, ConfigError> {
        let url = self.url()?;
        let mut builder = bakery_client::ClientBuilder::new(url);
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        if let Some(pem) = self.ca_cert.as_ref().filter(|p| !p.trim().is_empty()) {
            builder = builder.ca_cert(pem.as_bytes().to_vec());
        }
        bakery_client::blocking::Client::from_builder(builder).map_err(|e| ConfigError::Client {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test values are objects"),
        }
    }

    #[test]
    fn context_overrides_file_keys_but_not_with_director_keys() {
        let file = Config {
            url: Some("http://file/api/v1".into()),
            token: Some("file-token".into()),
            bake_timeout_seconds: Some(5),
            ..Config::default()
        };
        let merged = file
            .with_context(&map(json!({
                "director_uuid": "d", "request_id": "r", "vm": {"stemcell": {"api_version": 2}},
                "url": "http://ctx/api/v1",
                "agent": {"mbus": "nats://ctx"}
            })))
            .expect("merges");
        assert_eq!(merged.url().expect("url"), "http://ctx/api/v1");
        assert_eq!(merged.token.as_deref(), Some("file-token"));
        assert_eq!(merged.ca_cert, None);
        assert_eq!(merged.mbus().expect("mbus"), "nats://ctx");
        assert_eq!(merged.bake_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn context_alone_is_enough_and_missing_url_is_named() {
        let merged = Config::default()
            .with_context(&map(json!({"director_uuid": "d"})))
            .expect("merges");
        assert!(matches!(merged.url(), Err(ConfigError::MissingUrl)));
        let merged = Config::default()
            .with_context(&map(json!({"url": "http://ctx/api/v1"})))
            .expect("merges");
        assert_eq!(merged.url().expect("url"), "http://ctx/api/v1");
        assert_eq!(
            merged.default_ephemeral_disk_mib().expect("default"),
            DEFAULT_EPHEMERAL_DISK_MIB
        );
    }

    #[test]
    fn wrong_types_in_context_are_an_error() {
        let err = Config::default()
            .with_context(&map(json!({"bake_timeout_seconds": "soon"})))
            .unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cpi.json");
        std::fs::write(&path, "{not json").expect("write");
        let err = Config::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("cpi.json"), "{err}");
        let err = Config::from_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
    }
}

#[cfg(test)]
mod ca_cert_tests {
    use super::*;

    #[test]
    fn a_ca_cert_that_is_not_pem_is_a_client_error() {
        let config = Config {
            url: Some("https://127.0.0.1:1/api/v1".into()),
            ca_cert: Some("not a certificate".into()),
            ..Config::default()
        };
        let err = config.client().unwrap_err().to_string();
        assert!(err.contains("invalid ca certificate"), "{err}");
        let blank = Config {
            ca_cert: Some("  ".into()),
            ..config
        };
        assert!(blank.client().is_ok());
    }
}
