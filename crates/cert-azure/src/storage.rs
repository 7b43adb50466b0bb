//! [`AzureStorage`] and its [`Storage`] implementation: one block blob per key.

use std::fmt;
use std::num::NonZero;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use azure_core::http::Url;
use azure_storage_blob::BlobClient;
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
};
use cert_core::{
    Error, KeyInfo, Result, Storage, is_below, list_from_keys, validate_key, validate_prefix,
    validate_value,
};
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;

use crate::config::{Auth, Client};
use crate::error::{Failure, RetryConfig};

/// One request for values this size or smaller (bigger than any accepted value).
const ONE_SHOT: usize = 16 * 1024 * 1024;

/// Deletions in flight at once when deleting a prefix.
const DELETE_CONCURRENCY: usize = 16;

/// A [`Storage`] and [`Locker`](cert_core::Locker) in an Azure Blob Storage container (see
/// the crate docs).
///
/// Cloning is cheap and clones share the client.
#[derive(Clone)]
pub struct AzureStorage {
    pub(crate) inner: Arc<Inner>,
    pub(crate) prefix: String,
    pub(crate) retry: RetryConfig,
}

pub(crate) struct Inner {
    /// The container URL without a query.
    pub(crate) container_url: Url,
    pub(crate) container: String,
    pub(crate) auth: Auth,
    pub(crate) client: RwLock<Arc<Client>>,
}

impl fmt::Debug for AzureStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStorage")
            .field("container_url", &self.inner.container_url.as_str())
            .field("prefix", &self.prefix)
            .field("credential", &self.inner.auth.describe())
            .field("retry", &self.retry)
            .finish()
    }
}

impl AzureStorage {
    pub(crate) fn blob(&self, name: &str) -> BlobClient {
        self.client().container.blob_client(name)
    }

    pub(crate) fn data_name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) fn fail(&self, key: &str, failure: Failure) -> Error {
        failure.into_error(key, self.credential())
    }

    async fn delete_blob(&self, name: &str, key: &str) -> Result<bool> {
        let blob = self.blob(name);
        match self.retry.run("delete", || blob.delete(None)).await {
            Ok(_) => Ok(true),
            Err(failure) if failure.status() == Some(404) => Ok(false),
            Err(failure) => Err(self.fail(key, failure)),
        }
    }
}

#[async_trait]
impl Storage for AzureStorage {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value.len())?;
        let blob = self.blob(&self.data_name(key));
        let body = azure_core::Bytes::copy_from_slice(value);
        self.retry
            .run("store", || {
                let options = BlobClientUploadOptions {
                    partition_size: NonZero::new(ONE_SHOT as u64),
                    ..Default::default()
                };
                blob.upload(body.clone().into(), Some(options))
            })
            .await
            .map(|_| ())
            .map_err(|failure| self.fail(key, failure))
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let blob = self.blob(&self.data_name(key));
        self.retry
            .run("load", || async {
                let options = BlobClientDownloadOptions {
                    partition_size: NonZero::new(ONE_SHOT),
                    ..Default::default()
                };
                let response = blob.download(Some(options)).await?;
                response.body.collect().await
            })
            .await
            .map(|bytes| bytes.to_vec())
            .map_err(|failure| self.fail(key, failure))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let below = self.keys_below(key, None).await?;
        let had_value = self.delete_blob(&self.data_name(key), key).await?;
        let deleted: Vec<bool> = futures::stream::iter(below)
            .map(|(k, _)| async move { self.delete_blob(&self.data_name(&k), &k).await })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect()
            .await?;
        if !had_value && !deleted.iter().any(|d| *d) {
            return Err(Error::not_found(key));
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let blob = self.blob(&self.data_name(key));
        match self.retry.run("exists", || blob.get_properties(None)).await {
            Ok(_) => Ok(true),
            Err(failure) if failure.status() == Some(404) => {
                Ok(!self.keys_below(key, Some(1)).await?.is_empty())
            }
            Err(failure) => Err(self.fail(key, failure)),
        }
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let keys: Vec<String> = if prefix.is_empty() {
            let skip = self.prefix.len();
            self.list_blobs(&self.prefix, None)
                .await?
                .into_iter()
                .filter_map(|(name, _)| {
                    let key = name.get(skip..)?.to_owned();
                    validate_key(&key).is_ok().then_some(key)
                })
                .collect()
        } else {
            self.keys_below(prefix, None)
                .await?
                .into_iter()
                .map(|(key, _)| key)
                .collect()
        };
        debug_assert!(keys.iter().all(|k| is_below(k, prefix)));
        Ok(list_from_keys(prefix, keys, recursive))
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        let blob = self.blob(&self.data_name(key));
        match self.retry.run("stat", || blob.get_properties(None)).await {
            Ok(response) => {
                let size = response.content_length().ok().flatten().unwrap_or(0);
                let modified = response
                    .last_modified()
                    .ok()
                    .flatten()
                    .map_or(SystemTime::UNIX_EPOCH, SystemTime::from);
                Ok(KeyInfo::terminal(key, size, modified))
            }
            Err(failure) if failure.status() == Some(404) => self
                .keys_below(key, None)
                .await?
                .into_iter()
                .map(|(_, modified)| modified)
                .max()
                .map(|newest| KeyInfo::prefix(key, newest))
                .ok_or_else(|| Error::not_found(key)),
            Err(failure) => Err(self.fail(key, failure)),
        }
    }
}
