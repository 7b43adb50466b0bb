//! [`open`]: a storage URL turned into a ready [`Store`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use cert_core::{KeyInfo, Lease, Locker, Result as CoreResult, Storage, Store};

#[allow(unused_imports)] // unused when every backend feature is off
use crate::url::{Backend, StorageUrl, Target, UrlError};
use cert_core::LockAdmin;

/// The environment variable holding the current encryption key (base64 of 32 bytes).
pub const KEY_ENV: &str = "CERTSTORE_KEY";

/// The environment variable holding previous encryption keys that still open values
/// (base64, separated by commas or white space), during a key rotation.
pub const PREVIOUS_KEYS_ENV: &str = "CERTSTORE_PREVIOUS_KEYS";

/// Set to `1` to accept key files that their group or others may read or write (see
/// [`OpenOptions::allow_open_key_file`]). Key files are otherwise refused in that state,
/// as ssh refuses such private keys.
pub(crate) const KEY_FILE_INSECURE_ENV: &str = "CERTSTORE_KEY_FILE_INSECURE";

/// The Azure connection string variable (`AccountName=...;AccountKey=...` or
/// `...;SharedAccessSignature=...`).
pub const AZURE_CONNECTION_STRING_ENV: &str = "AZURE_STORAGE_CONNECTION_STRING";
/// The Azure container SAS token variable (`sv=...&sig=...`).
pub const AZURE_SAS_ENV: &str = "AZURE_STORAGE_SAS_TOKEN";
/// The Azure account key variable (base64).
pub const AZURE_KEY_ENV: &str = "AZURE_STORAGE_KEY";

/// How [`open`] finds keys and what it may create.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// A file holding the current encryption key, used instead of [`KEY_ENV`]: base64
    /// text of 32 bytes, or 32 raw binary bytes (see `cert_encrypted::SecretKey::from_file`
    /// for how the two are told apart; a 32-character passphrase is refused). The file
    /// must not be readable or writable by its group or others unless
    /// [`allow_open_key_file`](OpenOptions::allow_open_key_file) is set.
    pub key_file: Option<PathBuf>,
    /// Files holding previous keys, added to those in [`PREVIOUS_KEYS_ENV`].
    pub previous_key_files: Vec<PathBuf>,
    /// Create the S3 bucket or Azure container when missing (other backends create what
    /// they need on first write).
    pub create: bool,
    /// Let `encrypted+` storages read values that were stored unencrypted (and re-key
    /// seal them); see `Encrypted::with_plaintext_migration`.
    pub plaintext_migration: bool,
    /// Accept key files that their group or others may read or write. Also turned on by
    /// the environment variable `CERTSTORE_KEY_FILE_INSECURE=1`, for secret mounts whose
    /// mode cannot be changed (prefer a mode of `0400`, such as Kubernetes'
    /// `defaultMode: 0400`).
    pub allow_open_key_file: bool,
}

impl OpenOptions {
    /// Uses this key file for the current key.
    pub fn with_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// Adds a previous key file.
    pub fn with_previous_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.previous_key_files.push(path.into());
        self
    }

    /// Creates a missing bucket or container.
    pub fn with_create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Accepts key files that their group or others may read or write.
    pub fn with_allow_open_key_file(mut self, on: bool) -> Self {
        self.allow_open_key_file = on;
        self
    }

    /// Accepts unencrypted values in an `encrypted+` storage.
    pub fn with_plaintext_migration(mut self, on: bool) -> Self {
        self.plaintext_migration = on;
        self
    }
}

/// Why [`open`] failed. Messages never contain secrets from the URL or keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL was refused.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The backend is not compiled into this build.
    #[error(
        "{url} needs the {backend} backend, which this build leaves out: enable the `{feature}` feature of the certstore crate"
    )]
    NotCompiled {
        /// The URL, redacted.
        url: String,
        /// The backend.
        backend: Backend,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// The encryption key is missing or unusable.
    #[error("{0}")]
    Key(String),
    /// Credentials or settings for the backend are missing or wrong.
    #[error("{url}: {reason}")]
    Config {
        /// The URL, redacted.
        url: String,
        /// What is missing.
        reason: String,
    },
    /// The backend refused the connection or setup.
    #[error("cannot open {url}: {source}")]
    Storage {
        /// The URL, redacted.
        url: String,
        /// What the backend reported.
        #[source]
        source: cert_core::Error,
    },
}

impl OpenError {
    /// Whether the caller's input is at fault (a bad URL, a missing key or credential),
    /// as opposed to a backend that failed (unreachable, refused).
    pub fn is_usage(&self) -> bool {
        !matches!(self, OpenError::Storage { .. })
    }
}

/// Any `Arc<dyn Store>` as a `Storage + Locker` value, so generic wrappers such as
/// `Encrypted<S>` can wrap a storage chosen at run time.
#[derive(Debug, Clone)]
pub struct SharedStore(pub Arc<dyn Store>);

#[async_trait]
impl Storage for SharedStore {
    async fn store(&self, key: &str, value: &[u8]) -> CoreResult<()> {
        self.0.store(key, value).await
    }
    async fn load(&self, key: &str) -> CoreResult<Vec<u8>> {
        self.0.load(key).await
    }
    async fn delete(&self, key: &str) -> CoreResult<()> {
        self.0.delete(key).await
    }
    async fn exists(&self, key: &str) -> CoreResult<bool> {
        self.0.exists(key).await
    }
    async fn list(&self, prefix: &str, recursive: bool) -> CoreResult<Vec<String>> {
        self.0.list(prefix, recursive).await
    }
    async fn stat(&self, key: &str) -> CoreResult<KeyInfo> {
        self.0.stat(key).await
    }
    // Fenced writes must reach the backend's own fence, not the trait's default.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> CoreResult<()> {
        self.0.store_fenced(key, value, lease).await
    }
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> CoreResult<()> {
        self.0.delete_fenced(key, lease).await
    }
}

#[async_trait]
impl Locker for SharedStore {
    async fn try_acquire(&self, name: &str, ttl: std::time::Duration) -> CoreResult<Option<Lease>> {
        self.0.try_acquire(name, ttl).await
    }
    async fn refresh(&self, lease: &Lease, ttl: std::time::Duration) -> CoreResult<Lease> {
        self.0.refresh(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> CoreResult<()> {
        self.0.release(lease).await
    }
    async fn clean_expired_locks(&self) -> CoreResult<usize> {
        self.0.clean_expired_locks().await
    }
}

/// The encrypted view of a storage opened from an `encrypted+` URL.
#[cfg(feature = "encrypted")]
pub type EncryptedStore = cert_encrypted::Encrypted<SharedStore>;

/// A storage opened from a URL.
#[non_exhaustive]
pub struct Opened {
    /// The storage (and locker), ready for the engine or the tools.
    pub store: Arc<dyn Store>,
    /// The URL, parsed.
    pub url: StorageUrl,
    /// A one-line description without secrets, for example
    /// `redis namespace "prod" at redis://:***@cache:6379/0`.
    pub description: String,
    /// Lock listing and forced release, where the backend offers them.
    pub locks: Option<Arc<dyn LockAdmin>>,
    /// The directory of a file storage.
    pub file_root: Option<PathBuf>,
    /// The encrypted view, for `encrypted+` URLs (re-keying, key checks).
    #[cfg(feature = "encrypted")]
    pub encrypted: Option<EncryptedStore>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("description", &self.description)
            .field("lock_listing", &self.locks.is_some())
            .finish_non_exhaustive()
    }
}

/// Parses `url` and opens the storage it names: connects where the backend connects
/// eagerly (Redis, SQL, which also create their tables), builds clients otherwise (S3
/// and Azure send no request until used, unless [`OpenOptions::create`] asks to create
/// the bucket or container).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// use cert_core::Storage;
/// let url = format!("file://{}", dir.path().display());
/// let opened = certstore::open(&url, &certstore::OpenOptions::default()).await?;
/// opened.store.store("hello", b"world").await?;
/// assert_eq!(opened.store.load("hello").await?, b"world");
/// # Ok(())
/// # }
/// ```
pub async fn open(url: &str, options: &OpenOptions) -> Result<Opened, OpenError> {
    let url = StorageUrl::parse(url)?;
    let backend = url.backend();
    if !backend.is_compiled() {
        return Err(OpenError::NotCompiled {
            url: url.redacted(),
            backend,
            feature: backend.feature(),
        });
    }
    #[cfg(feature = "encrypted")]
    let ring = if url.is_encrypted() {
        Some(key_ring(options)?)
    } else {
        None
    };
    #[cfg(not(feature = "encrypted"))]
    if url.is_encrypted() {
        return Err(OpenError::NotCompiled {
            url: url.redacted(),
            backend,
            feature: "encrypted",
        });
    }
    let plain = open_plain(&url, options).await?;
    #[allow(unused_mut)] // only changed with the `encrypted` feature
    let mut opened = Opened {
        store: plain.store,
        description: plain.description,
        locks: plain.locks,
        file_root: plain.file_root,
        url,
        #[cfg(feature = "encrypted")]
        encrypted: None,
    };
    #[cfg(feature = "encrypted")]
    if let Some(ring) = ring {
        let ids: Vec<String> = ring.ids().iter().map(ToString::to_string).collect();
        let encrypted = cert_encrypted::Encrypted::new(SharedStore(opened.store), ring)
            .with_plaintext_migration(options.plaintext_migration);
        opened.store = Arc::new(encrypted.clone());
        opened.description = format!(
            "encrypted (key {}) {}",
            ids.join(", previous "),
            opened.description
        );
        opened.encrypted = Some(encrypted);
    }
    if let Some(delay) = crate::drill::write_delay() {
        tracing::warn!(
            delay_ms = delay.as_millis() as u64,
            "{} is set: every write is slowed down",
            crate::drill::WRITE_DELAY_VAR
        );
        opened.store = Arc::new(crate::drill::SlowWrites::new(opened.store, delay));
    }
    Ok(opened)
}

struct Plain {
    store: Arc<dyn Store>,
    description: String,
    locks: Option<Arc<dyn LockAdmin>>,
    file_root: Option<PathBuf>,
}

impl Plain {
    #[allow(dead_code)] // unused when every backend feature is off
    fn new(store: Arc<dyn Store>, description: String) -> Self {
        Plain {
            store,
            description,
            locks: None,
            file_root: None,
        }
    }
}

#[allow(unused_variables)]
async fn open_plain(url: &StorageUrl, options: &OpenOptions) -> Result<Plain, OpenError> {
    let shown = url.redacted();
    let storage_error = |source: cert_core::Error| OpenError::Storage {
        url: shown.clone(),
        source,
    };
    match url.target() {
        #[cfg(feature = "file")]
        Target::File { path } => {
            let storage = cert_file::FileStorage::new(path);
            let mut plain = Plain::new(
                Arc::new(storage.clone()),
                format!("file storage in {}", path.display()),
            );
            plain.locks = Some(Arc::new(storage));
            plain.file_root = Some(path.clone());
            Ok(plain)
        }
        #[cfg(feature = "redis")]
        Target::Redis {
            url: redis_url,
            namespace,
        } => {
            let config = cert_redis::RedisConfig::new(redis_url.clone()).with_namespace(namespace);
            let storage = config.connect().await.map_err(storage_error)?;
            let mut plain = Plain::new(
                Arc::new(storage.clone()),
                format!(
                    "redis namespace {namespace:?} at {}",
                    crate::redact(redis_url)
                ),
            );
            plain.locks = Some(Arc::new(storage));
            Ok(plain)
        }
        #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
        Target::Sql {
            url: sql_url,
            namespace,
            table_prefix,
        } => {
            let mut config = cert_sql::SqlConfig::default().with_namespace(namespace);
            if let Some(prefix) = table_prefix {
                config = config.with_table_prefix(prefix);
            }
            let tables = format!("{}/{}", config.kv_table, config.lock_table);
            let storage = cert_sql::SqlStorage::connect_with(sql_url, config)
                .await
                .map_err(storage_error)?;
            let storage = Arc::new(storage);
            let mut plain = Plain::new(
                storage.clone(),
                format!(
                    "{} tables {tables} namespace {namespace:?} at {}",
                    url.backend(),
                    crate::redact(sql_url)
                ),
            );
            plain.locks = Some(storage);
            Ok(plain)
        }
        #[cfg(feature = "s3")]
        Target::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
        } => {
            let mut config = cert_s3::S3Config::new(bucket)
                .with_prefix(prefix)
                .with_path_style(*path_style);
            if let Some(endpoint) = endpoint {
                config = config.with_endpoint(endpoint);
            }
            if let Some(region) = region {
                config = config.with_region(region);
            }
            let storage = cert_s3::S3Storage::connect(config)
                .await
                .map_err(storage_error)?;
            if options.create {
                storage.ensure_bucket().await.map_err(storage_error)?;
            } else if matches!(storage.bucket_exists().await, Ok(false)) {
                // Otherwise every key would read as missing ("not found: ca/local/..."). A
                // check that fails (credentials allowed objects but not the bucket, say)
                // decides nothing: the first real request reports what is wrong.
                return Err(OpenError::Config {
                    url: shown.clone(),
                    reason: format!(
                        "the bucket {bucket:?} does not exist; create it, or pass --create"
                    ),
                });
            }
            let where_ = match endpoint {
                Some(endpoint) => format!(" at {}", crate::redact(endpoint)),
                None => String::new(),
            };
            let storage = Arc::new(storage);
            let mut plain = Plain::new(
                storage.clone(),
                format!("s3 bucket {bucket:?} prefix {prefix:?}{where_}"),
            );
            plain.locks = Some(storage);
            Ok(plain)
        }
        #[cfg(feature = "azure")]
        Target::Azure {
            account,
            container,
            prefix,
            endpoint,
        } => {
            let storage = azure(url, account, container, endpoint.as_deref())?
                .with_prefix(prefix)
                .map_err(storage_error)?;
            if options.create {
                storage
                    .create_container_if_missing()
                    .await
                    .map_err(storage_error)?;
            } else if matches!(storage.container_exists().await, Ok(false)) {
                // Otherwise every key would read as missing ("not found: ca/local/..."). A
                // check that fails (a SAS that may not read the container's properties)
                // decides nothing: the first real request reports what is wrong.
                return Err(OpenError::Config {
                    url: shown.clone(),
                    reason: format!(
                        "the container {container:?} does not exist; create it, or pass --create"
                    ),
                });
            }
            let storage = Arc::new(storage);
            let mut plain = Plain::new(
                storage.clone(),
                format!("azure container {container:?} of account {account:?} prefix {prefix:?}"),
            );
            plain.locks = Some(storage);
            Ok(plain)
        }
        #[allow(unreachable_patterns)]
        _ => Err(OpenError::NotCompiled {
            url: shown.clone(),
            backend: url.backend(),
            feature: url.backend().feature(),
        }),
    }
}

#[cfg(feature = "azure")]
fn azure(
    url: &StorageUrl,
    account: &str,
    container: &str,
    endpoint: Option<&str>,
) -> Result<cert_azure::AzureStorage, OpenError> {
    use zeroize::Zeroizing;
    let shown = url.redacted();
    let config = |reason: String| OpenError::Config {
        url: shown.clone(),
        reason,
    };
    let storage_error = |source: cert_core::Error| OpenError::Storage {
        url: shown.clone(),
        source,
    };
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Zeroizing::new)
    };
    let default_endpoint = || match endpoint {
        Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
        None if account == cert_azure::AZURITE_ACCOUNT => {
            format!("http://127.0.0.1:10000/{account}")
        }
        None => format!("https://{account}.blob.core.windows.net"),
    };
    if let Some(text) = env(AZURE_CONNECTION_STRING_ENV) {
        let parts = parse_connection_string(&text);
        let get = |name: &str| {
            parts
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if let Some(name) = get("AccountName")
            && name != account
        {
            return Err(config(format!(
                "{AZURE_CONNECTION_STRING_ENV} is for account {name:?}, not {account:?}"
            )));
        }
        let endpoint = match (endpoint, get("BlobEndpoint")) {
            (Some(endpoint), _) => endpoint.trim_end_matches('/').to_owned(),
            (None, Some(blob)) => blob.trim_end_matches('/').to_owned(),
            (None, None) => {
                let protocol = get("DefaultEndpointsProtocol").unwrap_or("https");
                let suffix = get("EndpointSuffix").unwrap_or("core.windows.net");
                format!("{protocol}://{account}.blob.{suffix}")
            }
        };
        if let Some(key) = get("AccountKey") {
            return cert_azure::AzureStorage::with_account_key(&endpoint, container, account, key)
                .map_err(storage_error);
        }
        if let Some(sas) = get("SharedAccessSignature") {
            let sas_url = Zeroizing::new(format!(
                "{endpoint}/{container}?{}",
                sas.trim_start_matches('?')
            ));
            return cert_azure::AzureStorage::with_sas_url(&sas_url).map_err(storage_error);
        }
        return Err(config(format!(
            "{AZURE_CONNECTION_STRING_ENV} has neither AccountKey nor SharedAccessSignature"
        )));
    }
    let endpoint = default_endpoint();
    if let Some(sas) = env(AZURE_SAS_ENV) {
        let sas_url = Zeroizing::new(format!(
            "{endpoint}/{container}?{}",
            sas.trim().trim_start_matches('?')
        ));
        return cert_azure::AzureStorage::with_sas_url(&sas_url).map_err(storage_error);
    }
    if let Some(key) = env(AZURE_KEY_ENV) {
        return cert_azure::AzureStorage::with_account_key(
            &endpoint,
            container,
            account,
            key.trim(),
        )
        .map_err(storage_error);
    }
    if account == cert_azure::AZURITE_ACCOUNT {
        return cert_azure::AzureStorage::azurite(&endpoint, container).map_err(storage_error);
    }
    Err(config(format!(
        "no Azure credentials: set {AZURE_CONNECTION_STRING_ENV}, {AZURE_SAS_ENV} or {AZURE_KEY_ENV}"
    )))
}

/// `Name=value;Name=value` pairs of an Azure connection string (values may contain `=`).
#[cfg(feature = "azure")]
fn parse_connection_string(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Whether key files open to their group or others are accepted: by the options, or by
/// [`KEY_FILE_INSECURE_ENV`] set to `1` (or `true`, `yes`).
#[cfg(feature = "encrypted")]
fn open_key_files_allowed(options: &OpenOptions) -> bool {
    options.allow_open_key_file
        || std::env::var(KEY_FILE_INSECURE_ENV)
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Reads a key file, naming `what` (the current or a previous key) in errors.
#[cfg(feature = "encrypted")]
fn key_from_file(
    path: &std::path::Path,
    allow_open: bool,
    what: &str,
) -> Result<cert_encrypted::SecretKey, OpenError> {
    use cert_encrypted::{KeyError, SecretKey};
    let read = if allow_open {
        SecretKey::from_file_allowing_open_mode(path)
    } else {
        SecretKey::from_file(path)
    };
    read.map_err(|err| {
        let hint = match err {
            KeyError::TooOpen { .. } => format!(
                " (or set {KEY_FILE_INSECURE_ENV}=1 to accept it, for a secret mount whose mode cannot be changed)"
            ),
            _ => String::new(),
        };
        OpenError::Key(format!("cannot use the {what} key file: {err}{hint}"))
    })
}

#[cfg(feature = "encrypted")]
fn key_ring(options: &OpenOptions) -> Result<cert_encrypted::KeyRing, OpenError> {
    use cert_encrypted::{KeyRing, SecretKey};
    let allow_open = open_key_files_allowed(options);
    let current = match &options.key_file {
        Some(path) => key_from_file(path, allow_open, "current")?,
        None => match std::env::var(KEY_ENV) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                SecretKey::from_base64(&text).map_err(|err| {
                    OpenError::Key(format!(
                        "{KEY_ENV} is not a usable key ({err}); make one with `head -c 32 /dev/urandom | base64`"
                    ))
                })?
            }
            Err(_) => {
                return Err(OpenError::Key(format!(
                    "an encrypted+ storage needs a key: set {KEY_ENV} (base64 of 32 bytes) or pass --key-file"
                )));
            }
        },
    };
    let mut ring = KeyRing::new(current);
    if let Ok(text) = std::env::var(PREVIOUS_KEYS_ENV) {
        let text = zeroize::Zeroizing::new(text);
        for (n, part) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let key = SecretKey::from_base64(part).map_err(|err| {
                OpenError::Key(format!(
                    "key number {} of {PREVIOUS_KEYS_ENV} is not usable ({err})",
                    n + 1
                ))
            })?;
            ring = ring
                .with_previous(key)
                .map_err(|err| OpenError::Key(format!("{PREVIOUS_KEYS_ENV}: {err}")))?;
        }
    }
    for path in &options.previous_key_files {
        let key = key_from_file(path, allow_open, "previous")?;
        ring = ring
            .with_previous(key)
            .map_err(|err| OpenError::Key(format!("previous key file: {err}")))?;
    }
    Ok(ring)
}

#[cfg(all(test, feature = "encrypted", unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    /// The old code opened with a key file readable by everyone.
    #[test]
    fn open_key_files_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{B64}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let options = OpenOptions::default().with_key_file(&path);
        // The environment override is read by `open_key_files_allowed`; this test
        // leaves the environment alone and uses the option.
        let err = key_from_file(&path, false, "current")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 644"), "{err}");
        assert!(err.contains(KEY_FILE_INSECURE_ENV), "{err}");
        assert!(!err.contains(B64), "{err}");
        if std::env::var_os(KEY_FILE_INSECURE_ENV).is_none() {
            assert!(key_ring(&options).is_err());
        }
        let ring = key_ring(&options.clone().with_allow_open_key_file(true)).unwrap();
        assert_eq!(ring.ids().len(), 1);
        let previous = OpenOptions::default()
            .with_allow_open_key_file(false)
            .with_previous_key_file(&path);
        let err = key_from_file(&previous.previous_key_files[0], false, "previous")
            .unwrap_err()
            .to_string();
        assert!(err.contains("previous key file"), "{err}");
    }
}
