//! Where finished images go: an S3-compatible bucket in the fleet, a local folder in standalone
//! mode. Keys are deterministic per job (`{tenant}/{request}/{job}-{i}.{ext}`), so a redelivered
//! job overwrites its own objects instead of adding a second set.

mod local;
mod s3;

use std::path::Path;
use std::time::Duration;

pub use self::local::LocalStore;
pub use self::s3::S3Store;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "S3 {operation} of {key}: {message} (check the `s3` section of the configuration and that the store is up)"
    )]
    S3 { operation: &'static str, key: String, message: String },
    #[error("writing {path}: {source}")]
    Local { path: String, source: std::io::Error },
}

/// One object to store: the encoded image and the metadata every image carries.
pub struct Object<'a> {
    pub key: &'a str,
    pub bytes: &'a [u8],
    pub content_type: &'a str,
    /// `model`, `seed`, `prompt-sha256`, `ai-generated`…
    pub metadata: &'a [(&'a str, String)],
}

/// An object as a listing names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

#[derive(Clone)]
pub enum ObjectStore {
    S3(S3Store),
    Local(LocalStore),
}

impl ObjectStore {
    pub async fn put(&self, object: Object<'_>) -> Result<(), StorageError> {
        match self {
            Self::S3(s) => s.put(object).await,
            Self::Local(s) => s.put(object).await,
        }
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        match self {
            Self::S3(s) => s.list(prefix).await,
            Self::Local(s) => s.list(prefix).await,
        }
    }

    /// Stores the file at `path` under `key`, streamed (files such as TensorRT engines run to
    /// gigabytes).
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        match self {
            Self::S3(s) => s.put_file(key, path).await,
            Self::Local(s) => s.put_file(key, path).await,
        }
    }

    /// Writes the object `key` to `path`, streamed into a temporary file beside it and renamed
    /// into place: `path` never holds half an object.
    pub async fn get_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        match self {
            Self::S3(s) => s.get_file(key, path).await,
            Self::Local(s) => s.get_file(key, path).await,
        }
    }

    /// A URL a client can download the object from without credentials, valid for `expiry`.
    pub async fn download_url(&self, key: &str, expiry: Duration) -> Result<String, StorageError> {
        match self {
            Self::S3(s) => s.presigned_get(key, expiry).await,
            Self::Local(s) => Ok(s.file_url(key)),
        }
    }
}

/// The object key of image `index` of a job (DESIGN.md, "Storage").
pub fn image_key(tenant: &str, request_id: &str, job_id: &str, index: usize, extension: &str) -> String {
    format!("{tenant}/{request_id}/{job_id}-{index}.{extension}")
}
