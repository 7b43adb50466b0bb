//! The certificates a storage holds, found and loaded through [`cert_core::record`] (the
//! one owner of the key layout), and what their leaves say.

use cert_core::certificate::{CertificateError, parse_chain};
use cert_core::record::{self, CertificateEntry, LoadedCertificate, RecordState};
use cert_core::{KeyType, Storage};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Every certificate directory below `certificates/`, sorted by name then issuer
/// ([`record::scan_certificates`]).
pub async fn scan(storage: &dyn Storage) -> cert_core::Result<Vec<CertificateEntry>> {
    record::scan_certificates(storage).await
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

/// A certificate record found in storage: usable, with its leaf's details, or broken.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Record {
    /// A complete, consistent record.
    Valid {
        /// The chain, key and metadata, all from the same record.
        certificate: Box<LoadedCertificate>,
        /// What its leaf says.
        details: Details,
    },
    /// A record that cannot be used: a value that does not decode or decrypt, parts that
    /// do not belong together, or copies without a bundle and without a complete set.
    Broken {
        /// Why it cannot be used.
        reason: String,
    },
}

/// A certificate directory and what its record holds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Found {
    /// Where it is and which values are present.
    pub entry: CertificateEntry,
    /// The record.
    pub record: Record,
}

impl Found {
    /// The certificate and its details, when the record is usable.
    pub fn valid(&self) -> Option<(&LoadedCertificate, &Details)> {
        match &self.record {
            Record::Valid {
                certificate,
                details,
            } => Some((certificate, details)),
            Record::Broken { .. } => None,
        }
    }

    /// Why the record cannot be used, when it is broken.
    pub fn broken(&self) -> Option<&str> {
        match &self.record {
            Record::Broken { reason } => Some(reason),
            Record::Valid { .. } => None,
        }
    }
}

/// Loads the record of `entry` ([`record::load_certificate`]). Only storage that cannot be
/// read is an error; an unusable record is [`Record::Broken`] with the reason.
pub async fn load(storage: &dyn Storage, entry: &CertificateEntry) -> cert_core::Result<Found> {
    let record = match record::load_certificate(storage, &entry.id).await? {
        Some(RecordState::Valid(certificate)) => match inspect(&certificate.stored.chain_pem) {
            Ok(details) => Record::Valid {
                certificate,
                details,
            },
            Err(err) => Record::Broken {
                reason: format!("the leaf certificate cannot be read: {err}"),
            },
        },
        Some(RecordState::Broken { reason }) => Record::Broken { reason },
        // A state this version does not know cannot be used by it either.
        Some(_) => Record::Broken {
            reason: "the record is in a state this version does not know".to_owned(),
        },
        None => Record::Broken {
            reason: incomplete(entry),
        },
    };
    Ok(Found {
        entry: entry.clone(),
        record,
    })
}

/// Why a directory with neither a bundle nor metadata holds no record.
fn incomplete(entry: &CertificateEntry) -> String {
    let present: Vec<&str> = [
        (entry.has_chain, "the chain"),
        (entry.has_key, "the private key"),
    ]
    .into_iter()
    .filter_map(|(has, what)| has.then_some(what))
    .collect();
    if present.is_empty() {
        "incomplete: none of the record's values is present".to_owned()
    } else {
        format!(
            "incomplete: no bundle and no metadata, only {}",
            present.join(" and ")
        )
    }
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
    async fn records_load_valid_broken_or_incomplete() {
        let storage = MemoryStorage::new();
        let stored = cert_core::testing::self_signed_certificate(
            &["a.example"],
            "local",
            std::time::Duration::from_secs(86_400),
        )
        .unwrap();
        record::save_certificate(&storage, "a.example", &stored, None)
            .await
            .unwrap();
        for key in [
            "certificates/local/b.example/b.example.key",
            "certificates/local/c.example/c.example.bundle",
            "certificates/stray",
        ] {
            storage.store(key, b"x").await.unwrap();
        }
        let found = scan(&storage).await.unwrap();
        let names: Vec<&str> = found.iter().map(|e| e.id.name.as_str()).collect();
        assert_eq!(names, ["a.example", "b.example", "c.example"]);

        let valid = load(&storage, &found[0]).await.unwrap();
        let (certificate, details) = valid.valid().unwrap();
        assert_eq!(certificate.stored.meta.serial, details.serial);
        assert_eq!(certificate.layout, record::Layout::Bundle);

        let incomplete = load(&storage, &found[1]).await.unwrap();
        assert!(
            incomplete
                .broken()
                .unwrap()
                .contains("only the private key"),
            "{incomplete:?}"
        );
        let garbage = load(&storage, &found[2]).await.unwrap();
        assert!(
            garbage.broken().unwrap().contains("does not decode"),
            "{garbage:?}"
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
