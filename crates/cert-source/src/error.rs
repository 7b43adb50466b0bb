//! The errors of this crate.

use std::sync::Arc;
use std::time::Duration;

use cert_core::CertificateError;

/// Why a sourced certificate could not be had.
///
/// Cheap to clone: one failed fetch is handed to every caller that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The server name is empty, too long, or holds characters no host name has.
    #[error("invalid server name {0:?}")]
    InvalidName(String),
    /// The source's configuration is unusable (bad URL, header, or TLS roots).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The backend could not be reached, or the exchange broke off.
    #[error("certificate backend request failed: {0}")]
    Request(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// The backend answered with a status other than 200 or 204.
    #[error("certificate backend answered with status {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// The backend did not answer in time.
    #[error("certificate backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The response body is larger than the configured limit.
    #[error("certificate backend response is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The bundle does not hold a usable chain and matching private key.
    #[error("invalid certificate bundle: {0}")]
    Bundle(#[from] CertificateError),
    /// The leaf certificate's names do not cover the server name.
    #[error("the certificate does not cover {name}")]
    NameMismatch {
        /// The server name asked for.
        name: String,
    },
    /// The leaf certificate has expired.
    #[error("the certificate for {name} has expired")]
    Expired {
        /// The server name asked for.
        name: String,
    },
    /// Reading the warm copy from storage failed.
    #[error("storage: {0}")]
    Storage(Arc<cert_core::Error>),
    /// The fetch task ended without an answer (its runtime shut down).
    #[error("the fetch task ended without an answer")]
    Aborted,
}

impl SourceError {
    pub(crate) fn request(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        SourceError::Request(Arc::new(err))
    }
}

/// Why [`GeneratedStore::fetch`](crate::GeneratedStore::fetch) failed; `E` is the
/// generator's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError<E> {
    /// The host name is empty, too long, or holds characters no host name has.
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
    /// The generator failed.
    #[error("generating a certificate failed: {0}")]
    Generate(#[source] E),
    /// The generator's output (or the stored copy) is not a usable chain and key.
    #[error("invalid generated certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The shared storage or its lock failed.
    #[error("storage: {0}")]
    Storage(#[from] cert_core::Error),
}
