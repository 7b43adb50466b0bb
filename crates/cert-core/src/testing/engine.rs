//! The engine's test helpers: a dummy certified key, an issuer that counts, fails and
//! stalls on command, and a self-signed certificate maker.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

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

/// An issuer for tests that wraps another: counts the issuance calls, fails them while
/// told to (with a temporary error, as a CA outage would), can be slowed down, and
/// remembers the serial of every certificate it handed out.
pub struct CountingIssuer {
    inner: Arc<dyn crate::Issuer>,
    calls: std::sync::atomic::AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
    delay: Mutex<Duration>,
    issued: Mutex<Vec<String>>,
}

impl CountingIssuer {
    /// Wrapping `inner`.
    pub fn new(inner: Arc<dyn crate::Issuer>) -> Arc<CountingIssuer> {
        Arc::new(CountingIssuer {
            inner,
            calls: Default::default(),
            failing: Default::default(),
            delay: Mutex::new(Duration::ZERO),
            issued: Mutex::new(Vec::new()),
        })
    }

    /// Makes every issuance from now on wait `delay` before it starts (a slow CA);
    /// `Duration::ZERO` removes the delay. The wait ends early when the caller drops the
    /// issuance, as the engine does when it abandons an order.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock() = delay;
    }

    /// The serials (hex, as in [`CertificateMeta::serial`](crate::CertificateMeta)) of
    /// the certificates issued so far, in order.
    pub fn issued_serials(&self) -> Vec<String> {
        self.issued.lock().clone()
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
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::IssueError::temporary(std::io::Error::other(
                "the issuer is failing on purpose",
            )));
        }
        let issued = self.inner.issue(request).await?;
        let serial = crate::certificate::parse_chain(&issued.chain_pem)
            .ok()
            .and_then(|chain| crate::certificate::leaf_info(&chain[0]).ok())
            .map(|leaf| leaf.serial);
        if let Some(serial) = serial {
            self.issued.lock().push(serial);
        }
        Ok(issued)
    }
}

/// A self-signed certificate for `names` with a fresh ECDSA P-256 key, valid from an hour
/// ago for `lifetime`, as [`StoredCertificate`](crate::StoredCertificate) under the
/// issuer segment `issuer`: what `certstore import` stores for a certificate made
/// elsewhere.
pub fn self_signed_certificate(
    names: &[&str],
    issuer: &str,
    lifetime: Duration,
) -> Result<crate::StoredCertificate, crate::CertificateError> {
    let key = crate::KeyType::EcdsaP256.generate()?;
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let invalid = |err: rcgen::Error| crate::CertificateError::Chain(err.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(invalid)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + lifetime;
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|err| crate::CertificateError::Key(err.to_string()))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key).map_err(invalid)?;
    crate::StoredCertificate::from_pem(
        &cert.pem(),
        &key.serialize_pem(),
        issuer,
        Some(crate::KeyType::EcdsaP256),
    )
}
