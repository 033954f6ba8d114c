//! The fleet's configuration: one TOML file (`deploy/config.example.toml` documents every key)
//! plus environment overrides `RAPID__SECTION__KEY` (for example `RAPID__AMQP__URL`).
//!
//! Parsed into types once at start-up with unknown keys rejected, so a misspelt option fails
//! loudly at boot instead of silently taking a default. The scheduler and the worker read the
//! same file; each section type lives with the binary that owns it, and the sections both need
//! (broker, state, storage) live here.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("configuration {}: {message} (every key is described in CONFIG.md)", path.display())]
pub struct ConfigError {
    path: PathBuf,
    message: String,
}

/// Reads `path` and applies `RAPID__…` environment overrides on top.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let error = |message: String| ConfigError { path: path.to_path_buf(), message };
    if !path.exists() {
        return Err(error("no such file; start from deploy/config.example.toml".into()));
    }
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(config::Environment::with_prefix("RAPID").prefix_separator("__").separator("__").try_parsing(true))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| error(e.to_string()))
}

/// RabbitMQ.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (`%2f` is the default vhost).
    pub url: String,
    /// Prefix of every queue name, so several fleets can share one broker.
    #[serde(default = "default_prefix")]
    pub queue_prefix: String,
}

/// Redis, the source of truth for request and job state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// How long a finished request (and its jobs) stays readable before Redis drops it.
    #[serde(default = "default_ttl_secs")]
    pub finished_ttl_secs: u64,
}

/// An S3-compatible object store (AWS, MinIO, Garage, s3s-fs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; leave out for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted stores need.
    #[serde(default)]
    pub path_style: bool,
    pub access_key: String,
    pub secret_key: String,
    /// Create the bucket at start-up when it does not exist.
    #[serde(default)]
    pub create_bucket: bool,
    /// How long presigned download URLs stay valid.
    #[serde(default = "default_presign_secs")]
    pub presign_expiry_secs: u64,
}

fn default_prefix() -> String {
    "rapid".into()
}
fn default_presign_secs() -> u64 {
    3600
}
fn default_ttl_secs() -> u64 {
    86_400
}
