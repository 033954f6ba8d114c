//! S3 through `aws-sdk-s3`, configured by hand rather than through `aws-config`: the fleet takes
//! endpoint, region, path style and keys from its own configuration, never from the AWS
//! environment chain, so a worker cannot silently write to another account's bucket.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{Listed, Object, StorageError};
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

    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StorageError> {
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("list", prefix, e))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    listed.push(Listed { key: key.to_owned(), size: object.size().unwrap_or(0).max(0) as u64 });
                }
            }
        }
        Ok(listed)
    }

    pub(super) async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let body = ByteStream::from_path(path).await.map_err(|e| error("put", key, e))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| error("put", key, e))?;
        Ok(())
    }

    pub(super) async fn get_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let object =
            self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| error("get", key, e))?;
        let mut body = object.body.into_async_read();
        let local = |e: std::io::Error| StorageError::Local { path: path.display().to_string(), source: e };
        let folder = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(folder).await.map_err(local)?;
        let staged = tempfile::NamedTempFile::new_in(folder).map_err(local)?;
        let mut file = tokio::fs::File::from_std(staged.reopen().map_err(local)?);
        tokio::io::copy(&mut body, &mut file).await.map_err(local)?;
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(local)?;
        staged.persist(path).map_err(|e| local(e.error))?;
        Ok(())
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
