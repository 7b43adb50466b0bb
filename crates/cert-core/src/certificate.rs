//! Certificates as the engine keeps them: a PEM chain, a PKCS#8 private key and metadata,
//! and their conversion into the rustls type the handshake serves.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The kind of private key generated for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default: small, fast, universally supported).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519 (not accepted by every client or CA).
    Ed25519,
    /// RSA 2048 bits with SHA-256, for old clients.
    Rsa2048,
    /// RSA 4096 bits with SHA-256.
    Rsa4096,
}

impl KeyType {
    /// A fresh key pair of this type.
    pub fn generate(self) -> Result<rcgen::KeyPair, CertificateError> {
        let pair = match self {
            KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Ed25519 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyType::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyType::Rsa4096 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
            }
        };
        pair.map_err(|err| CertificateError::Key(err.to_string()))
    }

    /// Whether `key` is of this type (RSA keys of either size count as RSA).
    pub fn matches(self, key: &rcgen::KeyPair) -> bool {
        let algorithm = key.algorithm();
        match self {
            KeyType::EcdsaP256 => algorithm == &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => algorithm == &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => algorithm == &rcgen::PKCS_ED25519,
            KeyType::Rsa2048 | KeyType::Rsa4096 => algorithm == &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// Why a certificate or key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The chain holds no certificate, or one that does not parse.
    #[error("invalid certificate chain: {0}")]
    Chain(String),
    /// The private key does not parse or is of an unsupported type.
    #[error("invalid private key: {0}")]
    Key(String),
    /// The private key does not belong to the leaf certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
}

/// What the engine records next to each certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateMeta {
    /// The names the certificate covers (its subject alternative names).
    pub names: Vec<String>,
    /// The identity of the issuer that produced it.
    pub issuer: String,
    /// The key type.
    pub key_type: Option<KeyType>,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// When it was obtained, seconds since the Unix epoch.
    pub obtained_at: i64,
}

impl CertificateMeta {
    /// The validity period's length.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.not_after.saturating_sub(self.not_before).max(0) as u64)
    }

    /// End of validity.
    pub fn expires(&self) -> SystemTime {
        unix_to_system(self.not_after)
    }

    /// Whether the certificate has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        system_to_unix(now) >= self.not_after
    }

    /// When renewal should start: `ratio` of the lifetime before the end (a third by
    /// default); certificates living under ten days renew at half their life.
    pub fn renew_at(&self, ratio: f64) -> SystemTime {
        let lifetime = self.lifetime();
        let ratio = if lifetime < Duration::from_secs(10 * 86_400) {
            ratio.max(0.5)
        } else {
            ratio
        };
        self.expires() - lifetime.mul_f64(ratio.clamp(0.0, 1.0))
    }
}

/// A certificate chain with its private key and metadata.
#[derive(Clone)]
pub struct StoredCertificate {
    /// The PEM chain, leaf first.
    pub chain_pem: String,
    /// The PKCS#8 PEM private key (zeroized when dropped, never printed).
    pub key_pem: Zeroizing<String>,
    /// The metadata.
    pub meta: CertificateMeta,
}

impl fmt::Debug for StoredCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCertificate")
            .field("meta", &self.meta)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl StoredCertificate {
    /// Parses `chain_pem` and `key_pem`, checks that the key matches the leaf, and builds
    /// the metadata from the leaf.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        issuer: &str,
        key_type: Option<KeyType>,
    ) -> Result<Self, CertificateError> {
        let chain = parse_chain(chain_pem)?;
        let leaf = leaf_info(&chain[0])?;
        let stored = StoredCertificate {
            chain_pem: chain_pem.to_owned(),
            key_pem: Zeroizing::new(key_pem.to_owned()),
            meta: CertificateMeta {
                names: leaf.names,
                issuer: issuer.to_owned(),
                key_type,
                serial: leaf.serial,
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                obtained_at: system_to_unix(SystemTime::now()),
            },
        };
        stored.certified_key()?;
        Ok(stored)
    }

    /// The rustls form, ready to serve: the chain and a signing key from the aws-lc-rs
    /// provider. Fails when the key does not match the leaf.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertificateError> {
        certified_key_from_pem(&self.chain_pem, &self.key_pem)
    }
}

/// Builds a [`CertifiedKey`] from a PEM chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1), checking that they belong together.
pub fn certified_key_from_pem(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<CertifiedKey>, CertificateError> {
    let chain = parse_chain(chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|err| CertificateError::Key(err.to_string()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|err| match err {
        rustls::Error::InconsistentKeys(_) => CertificateError::KeyMismatch,
        other => CertificateError::Key(other.to_string()),
    })?;
    Ok(Arc::new(certified))
}

/// Parses a PEM chain into DER certificates; at least one.
pub fn parse_chain(chain_pem: &str) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| CertificateError::Chain(err.to_string()))?;
    if chain.is_empty() {
        return Err(CertificateError::Chain("no certificate in PEM".into()));
    }
    Ok(chain)
}

/// What the engine reads from a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// DNS names and IP addresses from the subject alternative names (the subject's common
    /// name when there are none).
    pub names: Vec<String>,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads names, serial and validity from a DER leaf certificate.
pub fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, CertificateError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|err| CertificateError::Chain(err.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    Ok(LeafInfo {
        names,
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Seconds since the Unix epoch (negative before it).
pub fn system_to_unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// The instant `secs` seconds after the Unix epoch.
pub fn unix_to_system(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str], key_type: KeyType) -> (String, String) {
        let key = key_type.generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn every_key_type_serves() {
        for key_type in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ] {
            let (chain, key) = self_signed(&["a.example", "*.b.example", "10.0.0.1"], key_type);
            let stored = StoredCertificate::from_pem(&chain, &key, "test", Some(key_type)).unwrap();
            assert_eq!(
                stored.meta.names,
                vec!["a.example", "*.b.example", "10.0.0.1"]
            );
            assert!(stored.meta.not_after > stored.meta.not_before);
            assert_eq!(stored.certified_key().unwrap().cert.len(), 1);
        }
    }

    #[test]
    fn mismatched_key_and_garbage_are_typed_errors() {
        let (chain, _) = self_signed(&["a.example"], KeyType::EcdsaP256);
        let (_, other_key) = self_signed(&["a.example"], KeyType::EcdsaP256);
        assert_eq!(
            StoredCertificate::from_pem(&chain, &other_key, "t", None).unwrap_err(),
            CertificateError::KeyMismatch
        );
        assert!(matches!(
            StoredCertificate::from_pem("junk", &other_key, "t", None),
            Err(CertificateError::Chain(_))
        ));
        assert!(matches!(
            certified_key_from_pem(&chain, "junk"),
            Err(CertificateError::Key(_))
        ));
    }

    #[test]
    fn debug_hides_the_key() {
        let (chain, key) = self_signed(&["a.example"], KeyType::EcdsaP256);
        let stored = StoredCertificate::from_pem(&chain, &key, "t", None).unwrap();
        let shown = format!("{stored:?}");
        assert!(!shown.contains("PRIVATE KEY"));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn renewal_window() {
        let meta = |days: i64| CertificateMeta {
            names: vec![],
            issuer: String::new(),
            key_type: None,
            serial: String::new(),
            not_before: 0,
            not_after: days * 86_400,
            obtained_at: 0,
        };
        let long = meta(90);
        assert_eq!(system_to_unix(long.renew_at(1.0 / 3.0)), 60 * 86_400);
        let short = meta(6);
        assert_eq!(system_to_unix(short.renew_at(1.0 / 3.0)), 3 * 86_400);
        assert!(long.is_expired_at(unix_to_system(90 * 86_400)));
        assert!(!long.is_expired_at(unix_to_system(89 * 86_400)));
    }
}
