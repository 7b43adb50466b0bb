//! Azure Blob storage and locks for certstore.
//!
//! [`AzureStorage`] keeps every key as a block blob in one container, below an optional
//! prefix, and implements both [`Storage`] and [`Locker`].
//!
//! # Client library
//!
//! It is built on Microsoft's maintained official crates `azure_storage_blob` and
//! `azure_core` (1.x), not on the older unofficial `azure_storage_blobs`, whose README
//! says it will not be updated. HTTP goes through reqwest with rustls (aws-lc-rs); no
//! OpenSSL. The client library's own retry policy is turned off: this crate retries
//! transient failures itself (see [`RetryConfig`]) so the total time is bounded, then
//! reports [`Error::Unavailable`] with backend `"azure"`.
//!
//! # Credentials
//!
//! - an Entra ID [`TokenCredential`] (for example one from the `azure_identity` crate):
//!   [`AzureStorage::with_token_credential`], for production over HTTPS;
//! - a SAS URL for the container: [`AzureStorage::with_sas_url`];
//! - an account name and key: [`AzureStorage::with_account_key`] signs a service SAS for
//!   the container from the key (HMAC-SHA256 over the string-to-sign the Azure Storage
//!   documentation gives) and renews it before it expires;
//! - [`AzureStorage::azurite`]: the emulator's well-known development account.
//!
//! `Debug` shows the container URL and the kind of credential, never a key or a SAS
//! token, and error messages have signatures replaced.
//!
//! # Keys and listing
//!
//! A key `a/b` is the blob `PREFIX/a/b`. Blob names are flat, so a key may hold a value and
//! be a prefix of other keys at the same time; nothing is lost either way. Listing pages
//! through the flat names below the prefix and groups direct children itself.
//!
//! # Locks
//!
//! A lock is a **blob lease** on the empty blob `PREFIX/.certstore-locks/NAME` (created on
//! first use; names under `.certstore` are never valid keys, so locks never show up among
//! keys). The lease ID is the lock token. The blob service enforces expiry with its own
//! clock and lets exactly one of several racing acquirers take a free or expired lease;
//! only a request carrying the lease ID can renew or release it.
//!
//! Leases last 15 to 60 seconds: a time to live below 15 s is raised to 15 s and one above
//! 60 s is lowered to 60 s; the returned [`Lease`] reports the duration actually granted
//! (whole seconds), and `refresh` renews for that same duration (the service renews a
//! lease for the duration it was acquired with). A crashed holder's lock is therefore
//! taken over at most 15 to 60 s after its last renewal.
//!
//! # Fenced writes
//!
//! `store_fenced` and `delete_fenced` keep the default of [`Storage`]: the lease's local
//! deadline is checked, with its fence margin (a fifth of the time to live, 50 ms to
//! 10 s), right before the plain write is sent. A blob lease guards writes to its own
//! blob only, and the lock is a lease on a separate blob, so the service cannot refuse a
//! value's write on behalf of the lock. The window that remains: a request that stalls
//! after the check for longer than the margin (a paused process, a slow network, this
//! crate's retries) can land after the lease expired and another node took the lock
//! over. With leases of 15 to 60 s the margin is 3 to 10 s.
//!
//! # Example
//!
//! ```no_run
//! use cert_azure::AzureStorage;
//! use cert_core::Storage;
//!
//! # async fn run() -> cert_core::Result<()> {
//! let storage = AzureStorage::azurite("http://127.0.0.1:10000/devstoreaccount1", "certs")?
//!     .with_prefix("cluster-a")?;
//! storage.create_container_if_missing().await?;
//! storage.store("certificates/example.com.crt", b"PEM").await?;
//! assert_eq!(storage.load("certificates/example.com.crt").await?, b"PEM");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod sas;

use std::fmt;
use std::num::NonZero;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use azure_core::http::{ClientOptions, RetryOptions, Url};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientBreakLeaseOptions, BlobClientDownloadOptions,
    BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
    BlobContainerClientListBlobsOptions, LeaseState,
};
use azure_storage_blob::{BlobClient, BlobContainerClient, BlobContainerClientOptions};
use cert_core::{
    Error, KeyInfo, Lease, LockAdmin, LockInfo, LockToken, Locker, Result, Storage, is_below,
    list_from_keys, validate_key, validate_prefix, validate_value,
};
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;

pub use azure_core::credentials::TokenCredential;
pub use error::{AuthError, RetryConfig, ServiceError};

use error::{BACKEND, Failure};
use sas::AccountKey;

/// The Azurite emulator's well-known development account key (published by Microsoft).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Azurite emulator's well-known development account name.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// The shortest lease the blob service grants.
pub const MIN_LEASE: Duration = Duration::from_secs(15);

/// The longest finite lease the blob service grants.
pub const MAX_LEASE: Duration = Duration::from_secs(60);

/// Where lock blobs live, below the prefix.
const LOCKS: &str = ".certstore-locks";

/// One blob of a listing.
struct Listed {
    name: String,
    modified: SystemTime,
    lease: Option<LeaseState>,
}

/// How long a signature made from an account key is valid; it is renewed at half-life.
const SAS_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One request for values this size or smaller (bigger than any accepted value).
const ONE_SHOT: usize = 16 * 1024 * 1024;

/// Deletions in flight at once when deleting a prefix.
const DELETE_CONCURRENCY: usize = 16;

/// How requests are authorized.
#[derive(Clone)]
enum Auth {
    Token(Arc<dyn TokenCredential>),
    Sas(String),
    Key(AccountKey),
}

impl Auth {
    fn describe(&self) -> &'static str {
        match self {
            Auth::Token(_) => "token credential",
            Auth::Sas(_) => "SAS token",
            Auth::Key(_) => "account key",
        }
    }
}

/// The container client in use and, for an account key, when to sign anew.
struct Client {
    container: BlobContainerClient,
    renew_at: Option<Instant>,
}

/// A [`Storage`] and [`Locker`] in an Azure Blob Storage container (see the crate docs).
///
/// Cloning is cheap and clones share the client.
#[derive(Clone)]
pub struct AzureStorage {
    inner: Arc<Inner>,
    prefix: String,
    retry: RetryConfig,
}

struct Inner {
    /// The container URL without a query.
    container_url: Url,
    container: String,
    auth: Auth,
    client: RwLock<Arc<Client>>,
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

fn config_error(message: impl Into<String>) -> Error {
    Error::backend(BACKEND, ServiceError::new(message.into()))
}

fn parse_url(url: &str) -> Result<Url> {
    let parsed = Url::parse(url)
        .map_err(|err| config_error(format!("invalid URL {}: {err}", sas::redact(url))))?;
    if parsed.cannot_be_a_base() || !matches!(parsed.scheme(), "http" | "https") {
        return Err(config_error(format!(
            "not an http(s) URL: {}",
            sas::redact(url)
        )));
    }
    Ok(parsed)
}

fn container_url(account_url: &str, container: &str) -> Result<Url> {
    if container.is_empty() || container.contains('/') {
        return Err(config_error(format!(
            "invalid container name {container:?}"
        )));
    }
    let mut url = parse_url(account_url)?;
    url.set_query(None);
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{path}/{container}"));
    Ok(url)
}

fn client_options() -> BlobContainerClientOptions {
    BlobContainerClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        },
        ..BlobContainerClientOptions::default()
    }
}

impl AzureStorage {
    fn build(container_url: Url, container: String, auth: Auth) -> Result<Self> {
        let client = make_client(&container_url, &container, &auth)?;
        Ok(AzureStorage {
            inner: Arc::new(Inner {
                container_url,
                container,
                auth,
                client: RwLock::new(Arc::new(client)),
            }),
            prefix: String::new(),
            retry: RetryConfig::default(),
        })
    }

    /// A storage in `container` of the account at `account_url`
    /// (`https://ACCOUNT.blob.core.windows.net`), authorized with an Entra ID token
    /// credential, for example `azure_identity::DeveloperToolsCredential` or a managed
    /// identity credential. The URL must use HTTPS.
    pub fn with_token_credential(
        account_url: &str,
        container: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self> {
        let url = container_url(account_url, container)?;
        Self::build(url, container.to_owned(), Auth::Token(credential))
    }

    /// A storage in the container named by a SAS URL
    /// (`https://ACCOUNT.blob.core.windows.net/CONTAINER?sv=...&sig=...`). The SAS needs
    /// read, add, create, write, delete and list permissions on the container.
    pub fn with_sas_url(container_sas_url: &str) -> Result<Self> {
        let mut url = parse_url(container_sas_url)?;
        let sas = url.query().unwrap_or_default().to_owned();
        if !sas.contains("sig=") {
            return Err(config_error("the SAS URL has no signature (sig=)"));
        }
        url.set_query(None);
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        let container = path.rsplit('/').next().unwrap_or_default().to_owned();
        if container.is_empty() {
            return Err(config_error("the SAS URL names no container"));
        }
        Self::build(url, container, Auth::Sas(sas))
    }

    /// A storage in `container` of the account at `account_url`, authorized with the
    /// account's name and (base64) key: requests carry a service SAS for the container
    /// signed from the key, renewed every 12 hours.
    pub fn with_account_key(
        account_url: &str,
        container: &str,
        account: &str,
        key_base64: &str,
    ) -> Result<Self> {
        let key =
            AccountKey::new(account, key_base64).map_err(|err| Error::backend(BACKEND, err))?;
        let url = container_url(account_url, container)?;
        Self::build(url, container.to_owned(), Auth::Key(key))
    }

    /// A storage in `container` of the Azurite emulator's development account, at
    /// `endpoint` (`http://127.0.0.1:10000/devstoreaccount1`).
    pub fn azurite(endpoint: &str, container: &str) -> Result<Self> {
        Self::with_account_key(endpoint, container, AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY)
    }

    /// The same storage with every key below `prefix` (a valid key, or `""`).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        validate_prefix(prefix)?;
        self.prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(self)
    }

    /// The same storage with another retry policy.
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// The retry policy in use.
    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }

    /// Creates the container if it does not exist. With an account key this signs an
    /// account SAS for the one request; with a container SAS it needs a SAS allowed to
    /// create containers.
    pub async fn create_container_if_missing(&self) -> Result<()> {
        match self.account_signed_container()? {
            Some(container) => self.create_with(&container).await,
            None => self.create_with(&self.client().container).await,
        }
    }

    /// With an account key, a client for the container whose requests carry an account
    /// SAS (good for one hour): what container-level requests need, which a container SAS
    /// may not allow. `None` with other credentials.
    fn account_signed_container(&self) -> Result<Option<BlobContainerClient>> {
        let Auth::Key(key) = &self.inner.auth else {
            return Ok(None);
        };
        let mut url = self.inner.container_url.clone();
        url.set_query(Some(&key.account_sas(
            url.scheme() == "https",
            SystemTime::now(),
            Duration::from_secs(3600),
        )));
        BlobContainerClient::new(url, None, Some(client_options()))
            .map(Some)
            .map_err(|err| config_error(err.to_string()))
    }

    async fn create_with(&self, container: &BlobContainerClient) -> Result<()> {
        match self
            .retry
            .run("create container", || container.create(None))
            .await
        {
            Ok(_) => Ok(()),
            Err(failure) if failure.status() == Some(409) => Ok(()),
            Err(failure) => Err(failure.into_error(&self.inner.container, self.credential())),
        }
    }

    /// Whether the container exists: a request for its properties. A missing container
    /// otherwise shows up as missing keys, so tools check it first.
    pub async fn container_exists(&self) -> Result<bool> {
        // A container SAS may not read the container's own properties: with the account
        // key, the one request is signed with an account SAS, as for creating it.
        match self.account_signed_container()? {
            Some(container) => self.exists_with(&container).await,
            None => self.exists_with(&self.client().container).await,
        }
    }

    async fn exists_with(&self, container: &BlobContainerClient) -> Result<bool> {
        match self
            .retry
            .run("container properties", || container.get_properties(None))
            .await
        {
            Ok(_) => Ok(true),
            Err(failure) if failure.status() == Some(404) => Ok(false),
            Err(failure) => Err(failure.into_error(&self.inner.container, self.credential())),
        }
    }

    /// The container URL with the SAS requests currently carry, for handing to other tools
    /// (`None` with a token credential). It contains a signature: treat it as a secret.
    pub fn signed_container_url(&self) -> Option<String> {
        let mut url = self.inner.container_url.clone();
        match &self.inner.auth {
            Auth::Token(_) => return None,
            Auth::Sas(sas) => url.set_query(Some(sas)),
            Auth::Key(key) => url.set_query(Some(&key.container_sas(
                &self.inner.container,
                url.scheme() == "https",
                SystemTime::now(),
                SAS_LIFETIME,
            ))),
        }
        Some(url.to_string())
    }

    fn credential(&self) -> &'static str {
        self.inner.auth.describe()
    }

    fn client(&self) -> Arc<Client> {
        let current = Arc::clone(&self.inner.client.read());
        match current.renew_at {
            Some(at) if Instant::now() >= at => {
                match make_client(
                    &self.inner.container_url,
                    &self.inner.container,
                    &self.inner.auth,
                ) {
                    Ok(fresh) => {
                        let fresh = Arc::new(fresh);
                        *self.inner.client.write() = Arc::clone(&fresh);
                        fresh
                    }
                    Err(_) => current,
                }
            }
            _ => current,
        }
    }

    fn blob(&self, name: &str) -> BlobClient {
        self.client().container.blob_client(name)
    }

    fn data_name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock_name(&self, name: &str) -> String {
        format!("{}{LOCKS}/{name}", self.prefix)
    }

    fn fail(&self, key: &str, failure: Failure) -> Error {
        failure.into_error(key, self.credential())
    }

    /// Every blob below `blob_prefix` (which ends with `/`, or is the storage's own prefix),
    /// with its last-modified time, page by page.
    async fn list_blobs(
        &self,
        blob_prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, SystemTime)>> {
        let items = self.list_items(blob_prefix, limit).await?;
        Ok(items
            .into_iter()
            .map(|item| (item.name, item.modified))
            .collect())
    }

    /// [`list_blobs`](Self::list_blobs) with each blob's lease state.
    async fn list_items(&self, blob_prefix: &str, limit: Option<usize>) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        let client = self.client();
        let container = &client.container;
        loop {
            let page_size = limit.map_or(5000, |l| l.clamp(1, 5000)) as i32;
            let page = self
                .retry
                .run("list", || {
                    let options = BlobContainerClientListBlobsOptions {
                        prefix: if blob_prefix.is_empty() {
                            None
                        } else {
                            Some(blob_prefix.to_owned())
                        },
                        marker: marker.clone(),
                        maxresults: Some(page_size),
                        ..Default::default()
                    };
                    async move {
                        let mut pages = container.list_blobs(Some(options))?.into_pages();
                        match pages.next().await {
                            Some(page) => page?.into_model().map(Some),
                            None => Ok(None),
                        }
                    }
                })
                .await
                .map_err(|failure| self.fail(blob_prefix, failure))?;
            let Some(page) = page else { break };
            for item in page.blob_items {
                let Some(name) = item.name else { continue };
                if !name.starts_with(blob_prefix) {
                    continue; // never anything outside the prefix
                }
                let (modified, lease) = item
                    .properties
                    .map_or((None, None), |p| (p.last_modified, p.lease_state));
                out.push(Listed {
                    name,
                    modified: modified.map_or(SystemTime::UNIX_EPOCH, SystemTime::from),
                    lease,
                });
            }
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            match page.next_marker {
                Some(next) if !next.is_empty() => marker = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The keys (not blob names) below `key` by whole segments, with their times.
    async fn keys_below(
        &self,
        key: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, SystemTime)>> {
        let blob_prefix = format!("{}{key}/", self.prefix);
        let skip = self.prefix.len();
        Ok(self
            .list_blobs(&blob_prefix, limit)
            .await?
            .into_iter()
            .filter_map(|(name, modified)| {
                let key = name.get(skip..)?.to_owned();
                validate_key(&key).is_ok().then_some((key, modified))
            })
            .collect())
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

fn make_client(container_url: &Url, container: &str, auth: &Auth) -> Result<Client> {
    let mut url = container_url.clone();
    let (credential, renew_at) = match auth {
        Auth::Token(credential) => (Some(Arc::clone(credential)), None),
        Auth::Sas(sas) => {
            url.set_query(Some(sas));
            (None, None)
        }
        Auth::Key(key) => {
            url.set_query(Some(&key.container_sas(
                container,
                url.scheme() == "https",
                SystemTime::now(),
                SAS_LIFETIME,
            )));
            (None, Some(Instant::now() + SAS_LIFETIME / 2))
        }
    };
    let container = BlobContainerClient::new(url, credential, Some(client_options()))
        .map_err(|err| config_error(format!("cannot build the blob client: {err}")))?;
    Ok(Client {
        container,
        renew_at,
    })
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

/// The lease duration granted for a requested time to live: 15 to 60 whole seconds.
pub fn lease_duration(ttl: Duration) -> Duration {
    Duration::from_secs(ttl.as_secs()).clamp(MIN_LEASE, MAX_LEASE)
}

/// A lock token as a lease ID: tokens are 32 hex digits, lease IDs GUIDs. `None` for a
/// token that cannot be a lease ID of ours.
fn lease_id(token: &LockToken) -> Option<String> {
    let t = token.as_str();
    let hex: String = t.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn lock_lost(name: &str) -> Error {
    Error::LockLost {
        name: name.to_owned(),
    }
}

#[async_trait]
impl Locker for AzureStorage {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        validate_key(name)?;
        let duration = lease_duration(ttl);
        let token = LockToken::generate();
        let Some(id) = lease_id(&token) else {
            return Err(config_error("generated lock token is not a lease ID"));
        };
        let blob = self.blob(&self.lock_name(name));
        // The lock blob may not exist yet: create it and try again.
        for _ in 0..3 {
            let started = Instant::now();
            let acquired = self
                .retry
                .run("acquire lease", || {
                    let options = BlobClientAcquireLeaseOptions {
                        proposed_lease_id: Some(id.clone()),
                        ..Default::default()
                    };
                    blob.acquire_lease(duration.as_secs() as i32, Some(options))
                })
                .await;
            match acquired {
                Ok(_) => {
                    return Ok(Some(Lease::new(
                        name,
                        LockToken::from_string(id),
                        duration,
                        started,
                    )));
                }
                Err(failure) if failure.status() == Some(409) => return Ok(None),
                Err(failure) if failure.status() == Some(404) => {
                    if failure.code() == Some("ContainerNotFound") {
                        return Err(self.fail(name, failure));
                    }
                    let created = self
                        .retry
                        .run("create lock blob", || {
                            let options = BlobClientUploadOptions::default().if_not_exists();
                            blob.upload(azure_core::Bytes::new().into(), Some(options))
                        })
                        .await;
                    match created {
                        Ok(_) => {}
                        // Someone else created it (409), or it is leased right now (412).
                        Err(f) if matches!(f.status(), Some(409 | 412)) => {}
                        Err(f) => return Err(self.fail(name, f)),
                    }
                }
                Err(failure) => return Err(self.fail(name, failure)),
            }
        }
        Ok(None)
    }

    async fn refresh(&self, lease: &Lease, _ttl: Duration) -> Result<Lease> {
        validate_key(lease.name())?;
        let Some(id) = lease_id(lease.token()) else {
            return Err(lock_lost(lease.name()));
        };
        if lease.is_expired() {
            return Err(lock_lost(lease.name()));
        }
        let blob = self.blob(&self.lock_name(lease.name()));
        let started = Instant::now();
        match self
            .retry
            .run("renew lease", || blob.renew_lease(id.clone(), None))
            .await
        {
            Ok(_) => Ok(lease.renewed(lease.ttl(), started)),
            Err(failure) if matches!(failure.status(), Some(400 | 404 | 409 | 412)) => {
                Err(lock_lost(lease.name()))
            }
            Err(failure) => Err(self.fail(lease.name(), failure)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        validate_key(lease.name())?;
        let Some(id) = lease_id(lease.token()) else {
            return Err(lock_lost(lease.name()));
        };
        if lease.is_expired() {
            return Err(lock_lost(lease.name()));
        }
        let blob = self.blob(&self.lock_name(lease.name()));
        let tries = std::sync::atomic::AtomicU32::new(0);
        match self
            .retry
            .run("release lease", || {
                tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                blob.release_lease(id.clone(), None)
            })
            .await
        {
            Ok(_) => Ok(()),
            // A retry found no lease at all: an earlier try released it and its answer was
            // lost (the lease was live when the release was sent, so nobody else held it).
            // Releasing is not idempotent, so without this a slow answer under load would
            // turn a clean release into LockLost.
            Err(failure)
                if tries.load(std::sync::atomic::Ordering::Relaxed) > 1
                    && failure.status() == Some(409)
                    && failure.code() == Some("LeaseNotPresentWithLeaseOperation") =>
            {
                Ok(())
            }
            Err(failure) if matches!(failure.status(), Some(400 | 404 | 409 | 412)) => {
                Err(lock_lost(lease.name()))
            }
            Err(failure) => Err(self.fail(lease.name(), failure)),
        }
    }
}

/// Operator access to the lock blobs. The service never reveals a lease's ID, so a listed
/// lock shows no holder token and no time left, only whether it is leased; a forced
/// release breaks the lease at once.
#[async_trait]
impl LockAdmin for AzureStorage {
    async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let dir = format!("{}{LOCKS}/", self.prefix);
        let mut locks: Vec<LockInfo> = self
            .list_items(&dir, None)
            .await?
            .into_iter()
            .filter_map(|item| {
                let name = item.name.strip_prefix(&dir)?.to_owned();
                match item.lease? {
                    LeaseState::Leased | LeaseState::Breaking => {
                        Some(LockInfo::new(name, "(lease ID not readable)"))
                    }
                    LeaseState::Expired | LeaseState::Broken => {
                        Some(LockInfo::new(name, "(lease ended)").with_expires_in(Duration::ZERO))
                    }
                    _ => None, // never leased, or released
                }
            })
            .collect();
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(locks)
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        validate_key(name)?;
        let blob = self.blob(&self.lock_name(name));
        match self
            .retry
            .run("break lease", || {
                let options = BlobClientBreakLeaseOptions {
                    break_period: Some(0),
                    ..Default::default()
                };
                blob.break_lease(Some(options))
            })
            .await
        {
            Ok(_) => Ok(true),
            // No lock blob, or no lease on it.
            Err(failure) if matches!(failure.status(), Some(404 | 409)) => Ok(false),
            Err(failure) => Err(self.fail(name, failure)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lease_durations_are_clamped() {
        assert_eq!(lease_duration(Duration::from_millis(200)), MIN_LEASE);
        assert_eq!(
            lease_duration(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            lease_duration(Duration::from_millis(20_900)),
            Duration::from_secs(20)
        );
        assert_eq!(lease_duration(Duration::from_secs(3600)), MAX_LEASE);
    }

    #[test]
    fn tokens_become_lease_ids() {
        let token = LockToken::from_string("0123456789abcdef0123456789ABCDEF");
        let id = lease_id(&token).unwrap();
        assert_eq!(id, "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(lease_id(&LockToken::from_string(id.clone())).unwrap(), id);
        assert!(lease_id(&LockToken::from_string("nope")).is_none());
        assert!(lease_id(&LockToken::generate()).is_some());
    }

    #[test]
    fn debug_hides_keys_and_signatures() {
        let s = AzureStorage::azurite("http://127.0.0.1:1/devstoreaccount1", "box").unwrap();
        let text = format!("{s:?}");
        assert!(text.contains("account key"), "{text}");
        assert!(!text.contains(&AZURITE_ACCOUNT_KEY[..20]), "{text}");
        assert!(!text.contains("sig="), "{text}");
        let sas =
            AzureStorage::with_sas_url("https://a.blob.core.windows.net/box?sv=1&sig=TOPSECRET")
                .unwrap();
        let text = format!("{sas:?}");
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert!(text.contains("/box"), "{text}");
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(AzureStorage::with_sas_url("https://a.blob.core.windows.net/box").is_err());
        assert!(AzureStorage::with_sas_url("not a url").is_err());
        assert!(AzureStorage::azurite("http://127.0.0.1:1/x", "a/b").is_err());
        assert!(AzureStorage::with_account_key("http://h/x", "c", "a", "!!").is_err());
        let s = AzureStorage::azurite("http://127.0.0.1:1/devstoreaccount1", "box").unwrap();
        assert!(s.clone().with_prefix("a/").is_err());
        let s = s.with_prefix("a/b").unwrap();
        assert_eq!(s.data_name("k"), "a/b/k");
        assert_eq!(s.lock_name("l/m"), "a/b/.certstore-locks/l/m");
    }
}
