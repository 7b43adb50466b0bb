//! Certificate records: a bundle (chain, key and metadata) as the commit point, and the
//! three per-part copies beside it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{BUNDLE, CertificateId, Layout, load_part, put, secret_text, text};
use crate::certificate::{CertificateMeta, StoredCertificate, leaf_info};
use crate::{Error, Lease, Result, Storage, keys};

/// The `format` of a certificate bundle written by this version.
pub const CERTIFICATE_FORMAT: &str = "certstore-certificate/1";

/// A certificate record that loads: the certificate, its servable form, and its layout.
#[derive(Clone)]
pub struct LoadedCertificate {
    /// The chain, key and metadata.
    pub stored: StoredCertificate,
    /// The rustls form, built once while checking that key and chain belong together.
    pub certified: Arc<CertifiedKey>,
    /// Where it was read from.
    pub layout: Layout,
}

impl fmt::Debug for LoadedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCertificate")
            .field("stored", &self.stored)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// What a present record holds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RecordState {
    /// A complete, consistent record.
    Valid(Box<LoadedCertificate>),
    /// A record that is there but cannot be used, with the reason. The engine re-issues
    /// the name; `certstore rm` removes it.
    Broken {
        /// Why it cannot be used.
        reason: String,
    },
}

impl RecordState {
    /// The certificate, when the record is valid.
    pub fn valid(self) -> Option<LoadedCertificate> {
        match self {
            RecordState::Valid(loaded) => Some(*loaded),
            RecordState::Broken { .. } => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CertificateBundle {
    format: String,
    meta: CertificateMeta,
    chain_pem: String,
    #[serde(with = "secret_text")]
    key_pem: Zeroizing<String>,
}

/// The bytes of a certificate's bundle value. Secret: it holds the private key.
fn encode_certificate(stored: &StoredCertificate) -> Result<Zeroizing<Vec<u8>>> {
    let bundle = CertificateBundle {
        format: CERTIFICATE_FORMAT.to_owned(),
        meta: stored.meta.clone(),
        chain_pem: stored.chain_pem.clone(),
        key_pem: stored.key_pem.clone(),
    };
    serde_json::to_vec(&bundle)
        .map(Zeroizing::new)
        .map_err(|err| Error::backend("json", err))
}

/// Checks that a certificate's parts belong together: the key matches the leaf and the
/// metadata describes that leaf. Returns the servable form.
fn check(stored: &StoredCertificate) -> std::result::Result<Arc<CertifiedKey>, String> {
    let certified = stored.certified_key().map_err(|err| err.to_string())?;
    let leaf = certified
        .cert
        .first()
        .ok_or_else(|| "the chain holds no certificate".to_owned())
        .and_then(|leaf| leaf_info(leaf).map_err(|err| err.to_string()))?;
    if leaf.serial != stored.meta.serial {
        return Err(format!(
            "the metadata describes serial {}, the certificate is serial {}",
            stored.meta.serial, leaf.serial
        ));
    }
    Ok(certified)
}

/// Loads the certificate record `id`: `None` when nothing loadable is there (no bundle
/// and no metadata), else its [`RecordState`]. Fails only when storage cannot be read.
pub async fn load_certificate(
    storage: &dyn Storage,
    id: &CertificateId,
) -> Result<Option<RecordState>> {
    let bundle_key = id.bundle_key();
    match load_part(storage, &bundle_key).await? {
        Err(reason) => return Ok(Some(RecordState::Broken { reason })),
        Ok(Some(bytes)) => return Ok(Some(decode_bundle(&bundle_key, &Zeroizing::new(bytes)))),
        Ok(None) => {}
    }
    load_parts(storage, id).await
}

fn decode_bundle(key: &str, bytes: &[u8]) -> RecordState {
    let bundle: CertificateBundle = match serde_json::from_slice(bytes) {
        Ok(bundle) => bundle,
        Err(err) => {
            return RecordState::Broken {
                reason: format!("{key} does not decode: {err}"),
            };
        }
    };
    if bundle.format != CERTIFICATE_FORMAT {
        return RecordState::Broken {
            reason: format!("{key} has the unknown format {:?}", bundle.format),
        };
    }
    let stored = StoredCertificate {
        chain_pem: bundle.chain_pem,
        key_pem: bundle.key_pem,
        meta: bundle.meta,
    };
    match check(&stored) {
        Ok(certified) => RecordState::Valid(Box::new(LoadedCertificate {
            stored,
            certified,
            layout: Layout::Bundle,
        })),
        Err(reason) => RecordState::Broken {
            reason: format!("{key}: {reason}"),
        },
    }
}

/// The layout written before bundles: metadata, chain and key as three values, written key
/// first and metadata last. A writer of that layout may be running on another node right
/// now, so a mismatch is read again a few times before it counts as broken.
async fn load_parts(storage: &dyn Storage, id: &CertificateId) -> Result<Option<RecordState>> {
    let meta_key = id.meta_key();
    let mut reason = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
        }
        let meta_bytes = match load_part(storage, &meta_key).await? {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(why) => return Ok(Some(RecordState::Broken { reason: why })),
        };
        let meta: CertificateMeta = match serde_json::from_slice(&meta_bytes) {
            Ok(meta) => meta,
            Err(err) => {
                reason = format!("{meta_key} does not decode: {err}");
                continue;
            }
        };
        let chain = load_part(storage, &id.chain_key()).await?;
        let key = load_part(storage, &id.key_key()).await?;
        let (chain, key) = match (chain, key) {
            (Ok(Some(chain)), Ok(Some(key))) => (chain, Zeroizing::new(key)),
            (Err(why), _) | (_, Err(why)) => return Ok(Some(RecordState::Broken { reason: why })),
            (Ok(None), _) => {
                reason = format!("{} is missing", id.chain_key());
                continue;
            }
            (_, Ok(None)) => {
                reason = format!("{} is missing", id.key_key());
                continue;
            }
        };
        let chain_pem = match text(&id.chain_key(), chain) {
            Ok(text) => text,
            Err(why) => return Ok(Some(RecordState::Broken { reason: why })),
        };
        let key_pem = match text(&id.key_key(), key.to_vec()) {
            Ok(text) => Zeroizing::new(text),
            Err(why) => return Ok(Some(RecordState::Broken { reason: why })),
        };
        let stored = StoredCertificate {
            chain_pem,
            key_pem,
            meta,
        };
        match check(&stored) {
            Ok(certified) => {
                return Ok(Some(RecordState::Valid(Box::new(LoadedCertificate {
                    stored,
                    certified,
                    layout: Layout::Parts,
                }))));
            }
            Err(why) => {
                reason = format!("certificate, key and metadata do not belong together: {why}");
            }
        }
    }
    Ok(Some(RecordState::Broken { reason }))
}

/// Saves `stored` as the record of `server_name` under its issuer (`stored.meta.issuer`):
/// the bundle first (the commit point), then the copies. With `lease`, every write is
/// fenced by it ([`Storage::store_fenced`]): once the lease is lost nothing more is
/// written and [`Error::LockLost`] is returned; when that happens after the bundle, the
/// new record stands and only copies are stale.
pub async fn save_certificate(
    storage: &dyn Storage,
    server_name: &str,
    stored: &StoredCertificate,
    lease: Option<&Lease>,
) -> Result<CertificateId> {
    let id = CertificateId::new(&stored.meta.issuer, server_name);
    let bundle = encode_certificate(stored)?;
    put(storage, &id.bundle_key(), &bundle, lease).await?;
    write_copies(storage, &id, stored, lease).await?;
    Ok(id)
}

/// Writes the per-part copies of a record from `stored` (the bundle's content).
pub async fn write_copies(
    storage: &dyn Storage,
    id: &CertificateId,
    stored: &StoredCertificate,
    lease: Option<&Lease>,
) -> Result<()> {
    put(storage, &id.key_key(), stored.key_pem.as_bytes(), lease).await?;
    put(storage, &id.chain_key(), stored.chain_pem.as_bytes(), lease).await?;
    let meta = serde_json::to_vec(&stored.meta).map_err(|err| Error::backend("json", err))?;
    put(storage, &id.meta_key(), &meta, lease).await
}

/// Whether the copies beside a bundle hold exactly what the bundle holds. `false` after a
/// save was interrupted between the bundle and the copies, or after hand edits.
pub async fn copies_current(
    storage: &dyn Storage,
    id: &CertificateId,
    stored: &StoredCertificate,
) -> Result<bool> {
    let chain = load_part(storage, &id.chain_key()).await?;
    let key = load_part(storage, &id.key_key())
        .await?
        .map(|k| k.map(Zeroizing::new));
    let meta = load_part(storage, &id.meta_key()).await?;
    let meta_matches = matches!(&meta, Ok(Some(bytes))
        if serde_json::from_slice::<CertificateMeta>(bytes).is_ok_and(|m| m == stored.meta));
    Ok(meta_matches
        && matches!(&chain, Ok(Some(c)) if c.as_slice() == stored.chain_pem.as_bytes())
        && matches!(&key, Ok(Some(k)) if k.as_slice() == stored.key_pem.as_bytes()))
}

/// Removes the record `id`: the copies first, the bundle last, then anything else left
/// below its prefix. A crash in the middle leaves either the whole record (bundle present)
/// or nothing that loads as a certificate. `Ok(false)` when there was nothing to remove.
pub async fn remove_certificate(
    storage: &dyn Storage,
    id: &CertificateId,
    lease: Option<&Lease>,
) -> Result<bool> {
    let mut removed = false;
    for key in [
        id.meta_key(),
        id.chain_key(),
        id.key_key(),
        id.bundle_key(),
        id.prefix(),
    ] {
        let result = match lease {
            Some(lease) => storage.delete_fenced(&key, lease).await,
            None => storage.delete(&key).await,
        };
        match result {
            Ok(()) => removed = true,
            Err(Error::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}

/// One certificate directory found by [`scan_certificates`], with the values present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CertificateEntry {
    /// Where the record lives.
    pub id: CertificateId,
    /// Whether the bundle is present.
    pub has_bundle: bool,
    /// Whether the chain copy is present.
    pub has_chain: bool,
    /// Whether the key copy is present.
    pub has_key: bool,
    /// Whether the metadata copy is present.
    pub has_meta: bool,
}

/// Every certificate directory below `certificates/`, sorted by name, then issuer.
pub async fn scan_certificates(storage: &dyn Storage) -> Result<Vec<CertificateEntry>> {
    let mut found: BTreeMap<(String, String), CertificateEntry> = BTreeMap::new();
    for key in storage.list(keys::CERTIFICATES, true).await? {
        let mut parts = key.splitn(4, '/');
        let (Some(_), Some(issuer), Some(name), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let entry = found
            .entry((name.to_owned(), issuer.to_owned()))
            .or_insert_with(|| CertificateEntry {
                id: CertificateId::from_segments(issuer, name),
                has_bundle: false,
                has_chain: false,
                has_key: false,
                has_meta: false,
            });
        match file
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            Some(BUNDLE) => entry.has_bundle = true,
            Some("crt") => entry.has_chain = true,
            Some("key") => entry.has_key = true,
            Some("json") => entry.has_meta = true,
            _ => {}
        }
    }
    Ok(found.into_values().collect())
}
