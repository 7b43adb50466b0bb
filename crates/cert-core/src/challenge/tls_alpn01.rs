//! TLS-ALPN-01 challenge certificates (RFC 8737).

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A self-signed certificate for `name` carrying the `acmeIdentifier` extension with the
/// SHA-256 `digest` of the key authorization, under a fresh ECDSA P-256 key.
pub fn tls_alpn01_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|err| err.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|err| err.to_string())?;
    let cert = params.self_signed(&key).map_err(|err| err.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // The critical acmeIdentifier extension is unknown to certificate parsers: no
    // consistency check, the key is the one just generated.
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| err.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}
