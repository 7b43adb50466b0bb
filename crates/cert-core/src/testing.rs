//! Small helpers for tests and benchmarks of code that handles certificates.

use std::sync::Arc;

use rustls::SignatureAlgorithm;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};

/// A signing key that offers no signature scheme, so it can never complete a handshake.
#[derive(Debug)]
struct InertKey;

impl SigningKey for InertKey {
    fn choose_scheme(&self, _offered: &[rustls::SignatureScheme]) -> Option<Box<dyn Signer>> {
        None
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

/// A [`CertifiedKey`] whose only "certificate" is the single byte `tag`, with a key that
/// cannot sign: enough to tell entries apart in cache tests and benchmarks.
pub fn dummy_certified_key(tag: u8) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(vec![tag])],
        Arc::new(InertKey),
    ))
}

/// An issuer for tests that wraps another: counts the issuance calls and fails them while
/// told to (with a temporary error, as a CA outage would).
pub struct CountingIssuer {
    inner: Arc<dyn crate::Issuer>,
    calls: std::sync::atomic::AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

impl CountingIssuer {
    /// Wrapping `inner`.
    pub fn new(inner: Arc<dyn crate::Issuer>) -> Arc<CountingIssuer> {
        Arc::new(CountingIssuer {
            inner,
            calls: Default::default(),
            failing: Default::default(),
        })
    }

    /// The issuance calls so far, failed ones included.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Fails every issuance from now on (`true`) or forwards again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for CountingIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingIssuer")
            .field("issuer", &self.inner.id())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl crate::Issuer for CountingIssuer {
    fn id(&self) -> String {
        self.inner.id()
    }

    async fn issue(
        &self,
        request: crate::IssueRequest<'_>,
    ) -> Result<crate::Issued, crate::IssueError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::IssueError::temporary(std::io::Error::other(
                "the issuer is failing on purpose",
            )));
        }
        self.inner.issue(request).await
    }
}
