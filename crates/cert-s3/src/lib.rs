//! S3 (and S3-compatible) storage and locks for certstore.
//!
//! [`S3Storage`] keeps every value as one object of a bucket, below an optional key
//! prefix, and implements both [`Storage`](cert_core::Storage) and
//! [`Locker`](cert_core::Locker), so a fleet of servers can share certificates and
//! coordinate issuance through one bucket. It works with AWS S3 and with S3-compatible
//! stores that honour conditional writes (MinIO, Ceph RGW, Cloudflare R2 and others):
//! set an endpoint and path-style addressing for those.
//!
//! ```no_run
//! use cert_core::{Storage, StorageExt};
//! use cert_s3::{S3Config, S3Storage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cert_core::Result<()> {
//! let config = S3Config::new("my-certificates")
//!     .with_prefix("production")
//!     .with_region("eu-west-1");
//! let storage = S3Storage::connect(config).await?;
//! storage.store("certificates/example.com.crt", b"PEM").await?;
//! assert!(storage.load_opt("certificates/example.com.crt").await?.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! The value of key `a/b` is the object `<prefix>/a/b`. Locks are objects below
//! `<prefix>/.certstore-locks/`, a segment no storage key may start with, so listing and
//! deleting never see them. S3 allows an object `a` and objects below `a/` at the same
//! time, and so does this backend: storing a value where keys exist below (or below a
//! value) loses nothing.
//!
//! # Locks
//!
//! A lock is a small JSON object (holder token, time to live, and a random per-write
//! nonce so every write has a new ETag) taken with conditional writes:
//!
//! - **acquire**: `PutObject` with `If-None-Match: *`; exactly one writer can create it.
//! - **taken?**: the lock object is read; it has expired when the server's `Date` header
//!   of that very response is at least `Last-Modified + 1 s + ttl`. Both times come from
//!   the server's clock, so clock skew between nodes cannot break exclusion; the extra
//!   second covers the one-second resolution of HTTP dates, so a takeover happens between
//!   `ttl` and `ttl + 2 s` after the last write (the local clock is used only when a
//!   server sends no `Date` header, which HTTP/1.1 requires it to).
//! - **takeover** of an expired lock: `PutObject` with `If-Match` on the ETag just read,
//!   so of several waiters that all saw it expired, exactly one wins.
//! - **refresh**: `PutObject` with `If-Match` on the ETag the holder wrote last;
//!   **release**: `DeleteObject` with `If-Match` on it. Both fail with
//!   [`LockLost`](cert_core::Error::LockLost) once someone else has written the lock; a
//!   lease already past its local deadline is refused without a request, so a release
//!   never deletes a lock object it can no longer vouch for. When the ETag does not match
//!   but the object still carries the lease's token (a refresh the server applied whose
//!   answer was lost to a client timeout), the holder reads the current ETag and tries
//!   once more with it: the token, not the ETag, says who holds the lock.
//!
//! A holder's local deadline counts from just before its write was sent, so it always
//! ends before any other node can judge the lease expired.
//!
//! Locking is only safe on a server that honours conditional writes. Before its first
//! lock operation each [`S3Storage`] probes the bucket (two `If-None-Match: *` writes of
//! one probe object, the second must fail with 412; then an `If-Match` write with a wrong
//! ETag, which must fail too, and an `If-Match` delete with a wrong ETag, which must fail
//! as well, since releases rely on it) and refuses to lock, with a clear error, on a
//! server that ignores any of them.
//!
//! # Fenced writes
//!
//! `store_fenced` and `delete_fenced` keep the default of
//! [`Storage`](cert_core::Storage): the lease's local deadline is checked, with its fence
//! margin (a fifth of the time to live, 50 ms to 10 s), right before the plain write is
//! sent. S3 has no write conditioned on *another* object (the lock), so the check and
//! the write cannot be one step. The window that remains: a request that stalls after the
//! check for longer than the margin (a paused process, a slow network, the SDK's own
//! retries) can land after the lease expired and another node took the lock over.
//! Give work under a lock a time to live well above the longest request you expect.
//!
//! # Errors and retries
//!
//! Throttling (429, 503, `SlowDown`), server errors, timeouts and connection failures
//! are retried inside the backend with jittered exponential backoff, up to
//! [`S3Config::max_attempts`] tries, then reported as
//! [`Unavailable`](cert_core::Error::Unavailable). Authentication failures are not
//! retried; their message names the credentials used (the access key id or the
//! default chain), never a secret.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod config;
mod error;
mod lock;
mod lock_object;
mod probe;
mod request;
mod storage;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use cert_core::{Error, LockToken, Result, validate_prefix};
use parking_lot::Mutex;
use tokio::sync::OnceCell;

pub use config::{S3Config, S3Credentials};

use crate::error::{BACKEND, Message, RetryPolicy};

/// The first segment of lock objects, below the prefix.
const LOCK_DIR: &str = ".certstore-locks";
/// The first segment of the conditional-write probe objects, below the prefix.
const PROBE_DIR: &str = ".certstore-probe";

/// A [`Storage`](cert_core::Storage) and [`Locker`](cert_core::Locker) over one S3
/// bucket (see the [crate docs](crate) for layout, locks and retries).
///
/// Cheap to clone: clones share the client and the lock bookkeeping.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    /// `""`, or the configured prefix followed by `/`.
    root: String,
    region: String,
    endpoint: Option<String>,
    credentials: String,
    retry: RetryPolicy,
    /// The outcome of the conditional-write probe: `true` when honoured.
    conditional: OnceCell<bool>,
    /// For each lock this instance holds: the token and the ETag it last wrote.
    held: Mutex<HashMap<String, (LockToken, String)>>,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.root.trim_end_matches('/'))
            .field("region", &self.inner.region)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// Builds a client from `config` (asking the default AWS chains for what it leaves
    /// open) and returns a storage over its bucket. Sends no request.
    pub async fn connect(config: S3Config) -> Result<Self> {
        validate_prefix(&config.prefix)?;
        let region = match &config.region {
            Some(region) => region.clone(),
            None => aws_config::default_provider::region::DefaultRegionChain::builder()
                .build()
                .region()
                .await
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".to_owned()),
        };
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .force_path_style(config.path_style)
            // Retries happen in this crate, where conditional writes are handled with care.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_attempt_timeout(config.attempt_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        builder = match &config.credentials {
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => builder.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "certstore-static",
            )),
            S3Credentials::DefaultChain => builder.credentials_provider(
                aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .region(Region::new(region.clone()))
                    .build()
                    .await,
            ),
        };
        let client = Client::from_conf(builder.build());
        Ok(Self::build(
            client,
            &config,
            region,
            config.credentials.describe(),
        ))
    }

    /// A storage over `config.bucket` and `config.prefix` using a client configured
    /// elsewhere (its own retry settings then add to this crate's; consider disabling
    /// them). The client's region, endpoint and credentials are used as they are.
    pub fn with_client(client: Client, config: &S3Config) -> Result<Self> {
        validate_prefix(&config.prefix)?;
        let region = client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        Ok(Self::build(
            client,
            config,
            region,
            "the credentials of the given client".to_owned(),
        ))
    }

    fn build(client: Client, config: &S3Config, region: String, credentials: String) -> Self {
        let root = if config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", config.prefix)
        };
        S3Storage {
            inner: Arc::new(Inner {
                client,
                bucket: config.bucket.clone(),
                root,
                region,
                endpoint: config.endpoint.clone(),
                credentials,
                retry: RetryPolicy {
                    max_attempts: config.max_attempts.max(1),
                    initial_backoff: config.initial_backoff,
                    max_backoff: config.max_backoff.max(config.initial_backoff),
                },
                conditional: OnceCell::new(),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The key prefix (`""` for the whole bucket).
    pub fn prefix(&self) -> &str {
        self.inner.root.trim_end_matches('/')
    }

    /// The underlying SDK client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether the bucket exists (and the credentials may see it): a `HeadBucket` request.
    /// A missing bucket otherwise shows up as missing keys, so tools check it first.
    pub async fn bucket_exists(&self) -> Result<bool> {
        let inner = &self.inner;
        let result = self
            .send(|client, bucket| client.head_bucket().bucket(bucket).send())
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(failure) => match failure.into_error(&inner.bucket, &inner.credentials) {
                Error::NotFound { .. } => Ok(false),
                err => Err(err),
            },
        }
    }

    /// Creates the bucket unless it already exists and belongs to the caller. Meant for
    /// tests and first-time setup; production buckets are usually created elsewhere.
    pub async fn ensure_bucket(&self) -> Result<()> {
        let inner = &self.inner;
        let result = inner
            .retry
            .run(|| async {
                let mut request = inner.client.create_bucket().bucket(&inner.bucket);
                if !inner.region.is_empty() && inner.region != "us-east-1" {
                    request = request.create_bucket_configuration(
                        aws_sdk_s3::types::CreateBucketConfiguration::builder()
                            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                                inner.region.as_str(),
                            ))
                            .build(),
                    );
                }
                match request.send().await {
                    Ok(_) => Ok(()),
                    Err(err) => {
                        if let Some(service) = err.as_service_error()
                            && service.is_bucket_already_owned_by_you()
                        {
                            return Ok(());
                        }
                        Err(error::classify(err))
                    }
                }
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(failure) => Err(failure.into_error(&inner.bucket, &inner.credentials)),
        }
    }

    /// The object key of storage key `key`.
    fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.root)
    }

    /// The object key of lock `name`.
    fn lock_key(&self, name: &str) -> String {
        format!("{}{LOCK_DIR}/{name}", self.inner.root)
    }

    fn error(&self, failure: error::Failure, key: &str) -> Error {
        failure.into_error(key, &self.inner.credentials)
    }
}

/// A backend error with a message of this crate's.
fn message(text: impl Into<String>) -> Error {
    Error::backend(BACKEND, Message(text.into()))
}
