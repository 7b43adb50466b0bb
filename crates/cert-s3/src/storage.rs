//! The [`Storage`] implementation: one object per key.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use cert_core::{
    Error, KeyInfo, Result, Storage, list_from_keys, validate_key, validate_prefix, validate_value,
};
use futures::{StreamExt, TryStreamExt, stream};

use crate::error::{Failure, Kind};
use crate::{S3Storage, message};

/// Most keys one `DeleteObjects` request may name.
const DELETE_BATCH: usize = 1000;
/// How many `DeleteObjects` requests run at once when deleting a large prefix.
const DELETE_CONCURRENCY: usize = 4;

pub(crate) fn system_time(time: Option<&DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// One page-by-page listing's result: object keys with their modification times, and
/// common prefixes (with their trailing `/`).
#[derive(Default)]
pub(crate) struct Listing {
    pub objects: Vec<(String, SystemTime)>,
    pub prefixes: Vec<String>,
}

impl S3Storage {
    /// `HeadObject`: the size and modification time of `object`, `None` when absent.
    pub(crate) async fn head(&self, object: &str) -> Result<Option<(u64, SystemTime)>, Failure> {
        let result = self
            .send(|client, bucket| client.head_object().bucket(bucket).key(object).send())
            .await;
        match result {
            Ok(out) => Ok(Some((
                u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
                system_time(out.last_modified()),
            ))),
            Err(failure) if failure.kind == Kind::NotFound => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// Lists the objects whose keys start with `dir` (which ends with `/`, or is `""`),
    /// following every page, or stopping after `limit` objects. With `delimiter`, only
    /// direct children: deeper keys come back as common prefixes. Anything the server
    /// returns that does not start with `dir` is dropped.
    pub(crate) async fn list_objects(
        &self,
        dir: &str,
        delimiter: bool,
        limit: Option<usize>,
    ) -> Result<Listing, Failure> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .send(|client, bucket| {
                    let mut request = client
                        .list_objects_v2()
                        .bucket(bucket)
                        .prefix(dir)
                        .set_continuation_token(token.clone());
                    if delimiter {
                        request = request.delimiter("/");
                    }
                    if let Some(limit) = limit {
                        request = request.max_keys(i32::try_from(limit).unwrap_or(1000));
                    }
                    request.send()
                })
                .await?;
            for object in page.contents() {
                if let Some(key) = object.key()
                    && key.starts_with(dir)
                    && key.len() > dir.len()
                {
                    listing
                        .objects
                        .push((key.to_owned(), system_time(object.last_modified())));
                }
            }
            for prefix in page.common_prefixes() {
                if let Some(p) = prefix.prefix()
                    && p.starts_with(dir)
                    && p.len() > dir.len()
                {
                    listing.prefixes.push(p.to_owned());
                }
            }
            if limit.is_some_and(|limit| listing.objects.len() + listing.prefixes.len() >= limit) {
                break;
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) && !next.is_empty() => {
                    token = Some(next.to_owned());
                }
                _ => break,
            }
        }
        Ok(listing)
    }

    /// The storage key of `object`, when it lies below the prefix.
    fn storage_key<'a>(&self, object: &'a str) -> Option<&'a str> {
        object.strip_prefix(self.inner.root.as_str())
    }

    /// The directory (`…/`) holding everything below storage key `key` (`""` = root).
    fn dir_of(&self, key: &str) -> String {
        if key.is_empty() {
            self.inner.root.clone()
        } else {
            format!("{}{key}/", self.inner.root)
        }
    }

    /// The modification time of the first object below `key`, if any exists.
    async fn first_below(&self, key: &str) -> Result<Option<SystemTime>, Failure> {
        let listing = self.list_objects(&self.dir_of(key), false, Some(1)).await?;
        Ok(listing.objects.first().map(|(_, modified)| *modified))
    }

    async fn delete_batch(&self, batch: &[String]) -> Result<()> {
        let objects = batch
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| Error::backend(crate::error::BACKEND, err))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|err| Error::backend(crate::error::BACKEND, err))?;
        let out = self
            .send(|client, bucket| {
                client
                    .delete_objects()
                    .bucket(bucket)
                    .delete(delete.clone())
                    .send()
            })
            .await
            .map_err(|failure| self.error(failure, batch.first().map_or("", String::as_str)))?;
        if let Some(failed) = out.errors().first() {
            return Err(message(format!(
                "deleting {} failed: {} {}",
                failed.key().unwrap_or_default(),
                failed.code().unwrap_or_default(),
                failed.message().unwrap_or_default()
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value.len())?;
        let object = self.object_key(key);
        self.send(|client, bucket| {
            client
                .put_object()
                .bucket(bucket)
                .key(&object)
                .body(ByteStream::from(value.to_vec()))
                .send()
        })
        .await
        .map_err(|failure| self.error(failure, key))?;
        Ok(())
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        self.get_object(&self.object_key(key), false)
            .await
            .map(|fetched| fetched.bytes)
            .map_err(|failure| self.error(failure, key))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let object = self.object_key(key);
        let dir = self.dir_of(key);
        let (head, below) = tokio::join!(self.head(&object), self.list_objects(&dir, false, None));
        let head = head.map_err(|failure| self.error(failure, key))?;
        let below = below.map_err(|failure| self.error(failure, key))?;
        let mut doomed: Vec<String> = below
            .objects
            .into_iter()
            .map(|(object, _)| object)
            .filter(|object| object.starts_with(&dir))
            .collect();
        if head.is_some() {
            doomed.push(object);
        }
        match doomed.len() {
            0 => Err(Error::not_found(key)),
            1 => {
                let only = doomed[0].as_str();
                self.send(|client, bucket| client.delete_object().bucket(bucket).key(only).send())
                    .await
                    .map_err(|failure| self.error(failure, key))?;
                Ok(())
            }
            _ => {
                let batches: Vec<_> = doomed
                    .chunks(DELETE_BATCH)
                    .map(|batch| self.delete_batch(batch))
                    .collect();
                stream::iter(batches)
                    .buffer_unordered(DELETE_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await?;
                Ok(())
            }
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        if self
            .head(&self.object_key(key))
            .await
            .map_err(|failure| self.error(failure, key))?
            .is_some()
        {
            return Ok(true);
        }
        Ok(self
            .first_below(key)
            .await
            .map_err(|failure| self.error(failure, key))?
            .is_some())
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let listing = self
            .list_objects(&self.dir_of(prefix), !recursive, None)
            .await
            .map_err(|failure| self.error(failure, prefix))?;
        let objects = listing.objects.iter().map(|(object, _)| object.as_str());
        let prefixes = listing
            .prefixes
            .iter()
            .map(|p| p.strip_suffix('/').unwrap_or(p));
        let keys = objects
            .chain(prefixes)
            .filter_map(|object| self.storage_key(object))
            // Objects written by something else under names no key can have (and this
            // backend's own lock objects) are not keys.
            .filter(|key| validate_key(key).is_ok());
        Ok(list_from_keys(prefix, keys, recursive))
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        if let Some((size, modified)) = self
            .head(&self.object_key(key))
            .await
            .map_err(|failure| self.error(failure, key))?
        {
            return Ok(KeyInfo::terminal(key, size, modified));
        }
        match self
            .first_below(key)
            .await
            .map_err(|failure| self.error(failure, key))?
        {
            Some(modified) => Ok(KeyInfo::prefix(key, modified)),
            None => Err(Error::not_found(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::S3Config;

    fn storage(prefix: &str) -> S3Storage {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        S3Storage::with_client(client, &S3Config::new("b").with_prefix(prefix))
            .unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn object_keys_and_dirs() {
        let s = storage("p/q");
        assert_eq!(s.object_key("a/b"), "p/q/a/b");
        assert_eq!(s.dir_of(""), "p/q/");
        assert_eq!(s.dir_of("a"), "p/q/a/");
        assert_eq!(s.lock_key("n/m"), "p/q/.certstore-locks/n/m");
        assert_eq!(s.storage_key("p/q/a/b"), Some("a/b"));
        assert_eq!(s.storage_key("p/qa/b"), None);
        let root = storage("");
        assert_eq!(root.object_key("a"), "a");
        assert_eq!(root.dir_of(""), "");
        assert_eq!(root.storage_key("x/y"), Some("x/y"));
        assert_eq!(root.prefix(), "");
        assert_eq!(s.prefix(), "p/q");
    }

    #[test]
    fn a_bad_prefix_is_refused() {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .build(),
        );
        for prefix in ["/a", "a/", "a//b", "../x"] {
            assert!(matches!(
                S3Storage::with_client(client.clone(), &S3Config::new("b").with_prefix(prefix)),
                Err(Error::InvalidKey { .. })
            ));
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let config = S3Config::new("bucket").with_static_credentials(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI",
            Some("sessiontoken123".into()),
        );
        let text = format!("{config:?}");
        assert!(text.contains("AKIDEXAMPLE"));
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert!(!text.contains("sessiontoken123"), "{text}");
        let s = format!("{:?}", storage("p"));
        assert!(s.contains("bucket") && s.contains("\"p\""), "{s}");
    }
}
