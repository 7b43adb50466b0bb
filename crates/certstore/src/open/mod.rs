//! [`open`]: a storage URL turned into a ready [`Store`].
//!
//! The options and environment variables are in `options`, the backends in `backends`
//! (Azure's credentials in `azure`), the key ring of `encrypted+` URLs in `keys`.

#[cfg(feature = "azure")]
mod azure;
mod backends;
#[cfg(feature = "encrypted")]
mod keys;
mod options;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use cert_core::Store;
use cert_core::metrics::Metered;

use crate::url::{Backend, StorageUrl, UrlError};

pub use options::{
    AZURE_CONNECTION_STRING_ENV, AZURE_KEY_ENV, AZURE_SAS_ENV, KEY_ENV, OpenOptions,
    PREVIOUS_KEYS_ENV,
};
/// The encrypted view of a storage opened from an `encrypted+` URL: `Encrypted<S>` wraps
/// the storage chosen at run time directly, since `Arc<dyn Store>` is itself a
/// `Storage + Locker` that forwards every method, fenced writes included.
#[cfg(feature = "encrypted")]
pub type EncryptedStore = cert_encrypted::Encrypted<Arc<dyn Store>>;

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

/// A storage opened from a URL.
#[non_exhaustive]
pub struct Opened {
    /// The storage (and locker), ready for the engine or the tools. Its operations are
    /// timed and counted ([`Metered`], labelled with the backend's name).
    pub store: Arc<dyn Store>,
    /// The URL, parsed.
    pub url: StorageUrl,
    /// A one-line description without secrets, for example
    /// `redis namespace "prod" at redis://:***@cache:6379/0`.
    pub description: String,
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
            .field("lock_listing", &self.store.lock_admin().is_some())
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
        Some(keys::key_ring(options)?)
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
    let plain = backends::open_plain(&url, options).await?;
    #[allow(unused_mut)] // only changed with the `encrypted` feature
    let mut opened = Opened {
        store: plain.store,
        description: plain.description,
        file_root: plain.file_root,
        url,
        #[cfg(feature = "encrypted")]
        encrypted: None,
    };
    #[cfg(feature = "encrypted")]
    if let Some(ring) = ring {
        let ids: Vec<String> = ring.ids().iter().map(ToString::to_string).collect();
        let encrypted = cert_encrypted::Encrypted::new(opened.store, ring)
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
    // Timed and counted as the engine sees it (through the encryption, if any).
    opened.store = Arc::new(Metered::new(opened.store, backend.name()));
    Ok(opened)
}
