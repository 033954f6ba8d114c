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
    /// `amqp://user:password@host:port/vhost` (`%2f` is the default vhost), or a list of the
    /// nodes of a cluster: a (re)connection tries them in turn, starting after the last one used.
    pub url: BrokerUrls,
    /// Prefix of every queue name, so several fleets can share one broker.
    #[serde(default = "default_prefix")]
    pub queue_prefix: String,
    /// `classic` (one node's queues, with message priorities) or `quorum` (replicated over a
    /// cluster's nodes; RabbitMQ before 4.0 has no priorities there, so interactive-first then
    /// comes from the dispatcher's lanes alone).
    #[serde(default)]
    pub queue_type: QueueType,
}

/// One broker URL or several, checked non-empty when the file loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "OneOrMany")]
pub struct BrokerUrls(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<OneOrMany> for BrokerUrls {
    type Error = String;

    fn try_from(value: OneOrMany) -> Result<Self, String> {
        let urls = match value {
            OneOrMany::One(url) => vec![url],
            OneOrMany::Many(urls) => urls,
        };
        if urls.is_empty() {
            return Err("amqp.url needs at least one URL".into());
        }
        Ok(Self(urls))
    }
}

/// The kind of RabbitMQ queue every queue of the fleet is declared as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct OnlyAmqp {
        amqp: AmqpConfig,
    }

    fn load_amqp(section: &str) -> Result<AmqpConfig, ConfigError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("[amqp]\n{section}\n")).unwrap();
        load::<OnlyAmqp>(file.path()).map(|loaded| loaded.amqp)
    }

    #[test]
    fn the_broker_is_one_url_or_a_list_of_nodes_and_classic_by_default() {
        let one = load_amqp(r#"url = "amqp://a/%2f""#).unwrap();
        assert_eq!((one.url.0, one.queue_type), (vec!["amqp://a/%2f".to_owned()], QueueType::Classic));
        let cluster = load_amqp(
            r#"url = ["amqp://a/%2f", "amqp://b/%2f"]
queue_type = "quorum""#,
        )
        .unwrap();
        assert_eq!((cluster.url.0.len(), cluster.queue_type), (2, QueueType::Quorum));
    }

    #[test]
    fn an_empty_node_list_or_an_unknown_queue_type_fails_at_load() {
        let error = load_amqp("url = []").unwrap_err().to_string();
        assert!(error.contains("at least one URL"), "{error}");
        let error = load_amqp("url = \"amqp://a\"\nqueue_type = \"mirrored\"").unwrap_err().to_string();
        assert!(error.contains("mirrored"), "{error}");
    }
}
