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
