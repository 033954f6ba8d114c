//! S3 through `aws-sdk-s3`, configured by hand rather than through `aws-config`: the fleet takes
//! endpoint, region, path style and keys from its own configuration, never from the AWS
//! environment chain, so a worker cannot silently write to another account's bucket.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{Object, StorageError};
use crate::config::S3Config;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    pub async fn connect(config: &S3Config) -> Result<Self, StorageError> {
        let credentials = Credentials::new(&config.access_key, &config.secret_key, None, None, "rapid-config");
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.path_style);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let store = Self { client: Client::from_conf(builder.build()), bucket: config.bucket.clone() };
        if config.create_bucket {
            store.ensure_bucket().await?;
        }
        Ok(store)
    }

    async fn ensure_bucket(&self) -> Result<(), StorageError> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            // Another worker may have created it between the two calls.
            Err(_) if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() => Ok(()),
            Err(e) => Err(error("create-bucket", &self.bucket, e)),
        }
    }

    pub(super) async fn put(&self, object: Object<'_>) -> Result<(), StorageError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object.key)
            .content_type(object.content_type)
            .body(ByteStream::from(object.bytes.to_vec()));
        for (name, value) in object.metadata {
            request = request.metadata(*name, value);
        }
        request.send().await.map_err(|e| error("put", object.key, e))?;
        Ok(())
    }

    pub(super) async fn presigned_get(&self, key: &str, expiry: Duration) -> Result<String, StorageError> {
        let presigning = PresigningConfig::expires_in(expiry).map_err(|e| error("presign", key, e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(|e| error("presign", key, e))?;
        Ok(request.uri().to_owned())
    }

    /// Can the bucket be reached (for `/readyz`)?
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| error("head-bucket", &self.bucket, e))?;
        Ok(())
    }
}

fn error(operation: &'static str, key: &str, e: impl std::error::Error) -> StorageError {
    // The SDK's Display is terse ("service error"); the source chain says what happened.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    StorageError::S3 { operation, key: key.to_owned(), message }
}
