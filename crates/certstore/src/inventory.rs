//! The certificates a storage holds, found by the engine's key layout
//! (`certificates/<issuer>/<name>/<name>.{crt,key,json}`), and what their leaves say.

use std::collections::BTreeMap;

use cert_core::certificate::{CertificateError, parse_chain};
use cert_core::{CertificateMeta, KeyType, Storage, StorageExt, keys};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// One certificate's place in storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Entry {
    /// The certificate's directory name: the server name made safe
    /// ([`keys::safe_name`]; `*.example.com` is `_.example.com`).
    pub name: String,
    /// The issuer segment ([`keys::issuer_key`]: `local`, `acme-v02.api.letsencrypt.org-directory`, ...).
    pub issuer: String,
    /// `certificates/<issuer>/<name>`.
    pub prefix: String,
    /// Whether the PEM chain (`<name>.crt`) is present.
    pub has_chain: bool,
    /// Whether the private key (`<name>.key`) is present.
    pub has_key: bool,
    /// Whether the metadata (`<name>.json`) is present.
    pub has_meta: bool,
}

impl Entry {
    /// The key of the PEM chain.
    pub fn chain_key(&self) -> String {
        format!("{}/{}.crt", self.prefix, self.name)
    }

    /// The key of the private key.
    pub fn key_key(&self) -> String {
        format!("{}/{}.key", self.prefix, self.name)
    }

    /// The key of the metadata.
    pub fn meta_key(&self) -> String {
        format!("{}/{}.json", self.prefix, self.name)
    }
}

/// Every certificate directory below `certificates/`, sorted by name then issuer.
pub async fn scan(storage: &dyn Storage) -> cert_core::Result<Vec<Entry>> {
    let mut found: BTreeMap<(String, String), Entry> = BTreeMap::new();
    for key in storage.list(keys::CERTIFICATES, true).await? {
        let mut parts = key.splitn(4, '/');
        let (Some(_), Some(issuer), Some(name), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let entry = found
            .entry((name.to_owned(), issuer.to_owned()))
            .or_insert_with(|| Entry {
                name: name.to_owned(),
                issuer: issuer.to_owned(),
                prefix: format!("{}/{issuer}/{name}", keys::CERTIFICATES),
                has_chain: false,
                has_key: false,
                has_meta: false,
            });
        match file.strip_prefix(name) {
            Some(".crt") => entry.has_chain = true,
            Some(".key") => entry.has_key = true,
            Some(".json") => entry.has_meta = true,
            _ => {}
        }
    }
    Ok(found.into_values().collect())
}

/// What a leaf certificate says, as `ls` and `show` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Details {
    /// The subject's distinguished name.
    pub subject: String,
    /// DNS names and IP addresses of the subject alternative names.
    pub names: Vec<String>,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The serial number, hex.
    pub serial: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The key type, for example `ECDSA P-256` or `RSA 2048`.
    pub key_type: String,
    /// SHA-256 of the leaf's DER, as colon-separated upper-case hex.
    pub sha256_fingerprint: String,
    /// How many certificates the chain holds, the leaf included.
    pub chain_length: usize,
}

impl Details {
    /// Whole days from `now` (seconds since the epoch) until the end of validity;
    /// negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Reads the leaf of a PEM chain.
pub fn inspect(chain_pem: &str) -> Result<Details, CertificateError> {
    let chain = parse_chain(chain_pem)?;
    let leaf = &chain[0];
    let info = cert_core::certificate::leaf_info(leaf)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|err| CertificateError::Chain(err.to_string()))?;
    let digest = Sha256::digest(leaf.as_ref());
    let fingerprint: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    Ok(Details {
        subject: cert.subject().to_string(),
        names: info.names,
        issuer: cert.issuer().to_string(),
        serial: info.serial,
        not_before: info.not_before,
        not_after: info.not_after,
        key_type: describe_key(&cert).0,
        sha256_fingerprint: fingerprint.join(":"),
        chain_length: chain.len(),
    })
}

/// The key type of a PEM chain's leaf, as the engine names it, when it is one of those.
pub fn key_type(chain_pem: &str) -> Option<KeyType> {
    let chain = parse_chain(chain_pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).ok()?;
    describe_key(&cert).1
}

fn describe_key(cert: &x509_parser::certificate::X509Certificate<'_>) -> (String, Option<KeyType>) {
    use x509_parser::public_key::PublicKey;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" {
        return ("Ed25519".to_owned(), Some(KeyType::Ed25519));
    }
    match spki.parsed() {
        Ok(PublicKey::EC(point)) => match point.key_size() {
            256 => ("ECDSA P-256".to_owned(), Some(KeyType::EcdsaP256)),
            384 => ("ECDSA P-384".to_owned(), Some(KeyType::EcdsaP384)),
            bits => (format!("ECDSA {bits} bits"), None),
        },
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            let kind = match bits {
                2048 => Some(KeyType::Rsa2048),
                4096 => Some(KeyType::Rsa4096),
                _ => None,
            };
            (format!("RSA {bits}"), kind)
        }
        _ => (
            format!("other ({})", spki.algorithm.algorithm.to_id_string()),
            None,
        ),
    }
}

/// A certificate found in storage with its leaf's details (or why they could not be
/// read).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Found {
    /// Where it is.
    pub entry: Entry,
    /// The stored metadata, when present and readable.
    pub meta: Option<CertificateMeta>,
    /// The leaf's details, or the reason they are missing.
    pub details: Result<Details, String>,
}

/// Loads the chain (and metadata) of `entry`. Storage failures (unreachable backend, a
/// value that does not decrypt) are errors; a missing or malformed chain is reported in
/// [`Found::details`].
pub async fn load(storage: &dyn Storage, entry: &Entry) -> cert_core::Result<Found> {
    let meta = match storage.load_opt(&entry.meta_key()).await? {
        Some(bytes) => serde_json::from_slice(&bytes).ok(),
        None => None,
    };
    let details = match storage.load_opt(&entry.chain_key()).await? {
        Some(bytes) => match std::str::from_utf8(&bytes) {
            Ok(pem) => inspect(pem).map_err(|err| err.to_string()),
            Err(_) => Err("the chain is not PEM text".to_owned()),
        },
        None => Err("no certificate chain stored".to_owned()),
    };
    Ok(Found {
        entry: entry.clone(),
        meta,
        details,
    })
}

/// RFC 3339 text of a Unix time, UTC, to the second.
pub fn format_time(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(at) => at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| secs.to_string()),
        Err(_) => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cert_core::MemoryStorage;

    fn self_signed(names: &[&str], key_type: KeyType) -> (String, String) {
        let key = key_type.generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn leaf_details_and_key_types() {
        for (kind, shown) in [
            (KeyType::EcdsaP256, "ECDSA P-256"),
            (KeyType::EcdsaP384, "ECDSA P-384"),
            (KeyType::Ed25519, "Ed25519"),
            (KeyType::Rsa2048, "RSA 2048"),
        ] {
            let (pem, _) = self_signed(&["a.example", "10.0.0.1"], kind);
            let details = inspect(&pem).unwrap();
            assert_eq!(details.key_type, shown);
            assert_eq!(key_type(&pem), Some(kind));
            assert_eq!(details.names, vec!["a.example", "10.0.0.1"]);
            assert_eq!(details.sha256_fingerprint.len(), 32 * 3 - 1);
            assert_eq!(details.chain_length, 1);
            assert!(details.not_after > details.not_before);
        }
        assert!(inspect("not pem").is_err());
    }

    #[tokio::test]
    async fn scan_groups_files_by_certificate() {
        let storage = MemoryStorage::new();
        for key in [
            "certificates/local/a.example/a.example.crt",
            "certificates/local/a.example/a.example.key",
            "certificates/local/a.example/a.example.json",
            "certificates/acme/a.example/a.example.crt",
            "certificates/local/b.example/b.example.key",
            "certificates/stray",
            "ca/local/root.pem",
        ] {
            storage.store(key, b"x").await.unwrap();
        }
        let found = scan(&storage).await.unwrap();
        let summary: Vec<(&str, &str, bool, bool, bool)> = found
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.issuer.as_str(),
                    e.has_chain,
                    e.has_key,
                    e.has_meta,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a.example", "acme", true, false, false),
                ("a.example", "local", true, true, true),
                ("b.example", "local", false, true, false),
            ]
        );
        assert_eq!(
            found[1].chain_key(),
            "certificates/local/a.example/a.example.crt"
        );
        let loaded = load(&storage, &found[1]).await.unwrap();
        assert!(
            loaded.details.is_err(),
            "garbage chain is reported, not fatal"
        );
    }

    #[test]
    fn times_and_days() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        let details = Details {
            subject: String::new(),
            names: vec![],
            issuer: String::new(),
            serial: String::new(),
            not_before: 0,
            not_after: 10 * 86_400,
            key_type: String::new(),
            sha256_fingerprint: String::new(),
            chain_length: 1,
        };
        assert_eq!(details.days_left(0), 10);
        assert_eq!(details.days_left(10 * 86_400 + 1), -1);
    }
}
