//! Issuers turn a request for names into a certificate chain: the internal CA here, ACME
//! CAs, or your own.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

mod acme;
mod internal;

pub use acme::{
    AcmeConfig, AcmeIssuer, ExternalAccountBinding, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING,
};
pub use internal::{InternalIssuer, InternalIssuerConfig};

/// What an issuer is asked for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct IssueRequest<'a> {
    /// The names to cover; the first is the primary one.
    pub names: &'a [String],
    /// The certificate's public key, as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub public_key_pem: &'a str,
    /// A PKCS#10 certificate signing request for `names`, signed by the private key, DER.
    pub csr_der: &'a [u8],
}

/// An issued certificate chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Issued {
    /// The PEM chain, leaf first.
    pub chain_pem: String,
}

impl Issued {
    /// A chain, leaf first, in PEM.
    pub fn new(chain_pem: impl Into<String>) -> Self {
        Issued {
            chain_pem: chain_pem.into(),
        }
    }
}

/// Why an issuer could not issue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// Retrying cannot help (the CA refused the names, the account is not authorized, ...).
    #[error("issuance refused: {reason}")]
    Rejected {
        /// The issuer's explanation.
        reason: String,
    },
    /// A failure worth retrying later, after `retry_after` when the issuer said so.
    #[error("issuance failed: {source}")]
    Temporary {
        /// What failed.
        #[source]
        source: crate::BoxError,
        /// How long the issuer asked to wait.
        retry_after: Option<Duration>,
    },
    /// The shared storage failed.
    #[error(transparent)]
    Storage(#[from] crate::Error),
}

impl IssueError {
    /// The variant as a short lower-case word (`rejected`, `temporary`, `storage`): a
    /// label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IssueError::Rejected { .. } => "rejected",
            IssueError::Temporary { .. } => "temporary",
            IssueError::Storage(_) => "storage",
        }
    }

    /// A temporary failure with no requested delay.
    pub fn temporary(source: impl Into<crate::BoxError>) -> Self {
        IssueError::Temporary {
            source: source.into(),
            retry_after: None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            IssueError::Rejected { .. } => false,
            IssueError::Temporary { .. } => true,
            IssueError::Storage(err) => err.is_retryable(),
        }
    }
}

/// Something that issues certificates. Object safe: the engine holds `Arc<dyn Issuer>`.
#[async_trait]
pub trait Issuer: Send + Sync + 'static {
    /// A stable identity (an ACME directory URL, a local CA's name) that selects where this
    /// issuer's certificates live in storage.
    fn id(&self) -> String;

    /// Issues a certificate for `request`.
    async fn issue(&self, request: IssueRequest<'_>) -> Result<Issued, IssueError>;

    /// Whether an issuance that failed part way may be finished by a later call for the
    /// same names and the same key (an ACME order the CA accepted, resumed by its URL).
    /// When true, the engine keeps the private key of an issuance in storage until its
    /// certificate is saved, and asks again with that key, from any node. The default is
    /// false: every call starts afresh with a new key.
    fn resumes_issuance(&self) -> bool {
        false
    }

    /// The renewal window the issuer suggests for a certificate it issued (for ACME, the
    /// CA's renewal information, RFC 9773), or `None` to let the engine decide from the
    /// certificate's lifetime. The default is `None`.
    async fn renewal_window(
        &self,
        meta: &crate::CertificateMeta,
        chain_pem: &str,
    ) -> Option<(SystemTime, SystemTime)> {
        let _ = (meta, chain_pem);
        None
    }
}
