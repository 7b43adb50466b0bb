//! Records: the things the engine keeps that need several values, each written with one
//! commit point so that a crash at any moment leaves the old record or the new one.
//!
//! A single [`Storage::store`] is atomic on every backend; several are not. So a
//! certificate (chain, private key, metadata) and the internal CA (root, intermediate and
//! its key) are each kept as one **bundle** value, the record itself, and the familiar
//! per-part values beside it as **copies** for people and tools:
//!
//! ```text
//! certificates/<issuer>/<name>/<name>.bundle   the record: JSON {format, meta, chain_pem, key_pem}
//! certificates/<issuer>/<name>/<name>.crt      copy: PEM chain, leaf first
//! certificates/<issuer>/<name>/<name>.key      copy: PEM private key
//! certificates/<issuer>/<name>/<name>.json     copy: metadata
//! ca/<ca>/ca.bundle                            the record: JSON {format, root_pem, intermediate_pem, intermediate_key_pem}
//! ca/<ca>/root.crt, intermediate.crt, intermediate.key   copies
//! ```
//!
//! What a crash (`kill -9`) or a lost lease leaves, at every step of [`save_certificate`]:
//! - before the bundle is stored: the old record, untouched (old copies too);
//! - after the bundle, before or between the copies: the new record; some copies still
//!   hold the old certificate. Readers use the bundle only, so they serve the new one;
//!   `doctor` reports the stale copies and the next save rewrites them.
//!
//! Stores written before bundles existed hold only the three copies; they still load
//! (checked to belong together), and the next save adds the bundle. [`remove_certificate`]
//! deletes the copies first and the bundle last, so a crash in the middle leaves the
//! record whole or leaves nothing that loads.
//!
//! A record that is present but unusable (a value that does not decode, a key that does
//! not match its certificate, a value that fails to decrypt) loads as
//! [`RecordState::Broken`] with the reason, never as an error: one bad record must not
//! stop a server. Errors are kept for storage that cannot be read at all.

use std::fmt;

use serde::Serialize;

use crate::{Error, Lease, Result, Storage, StorageExt, keys};

mod ca;
mod certificate;
mod clean;

pub use ca::{
    CA_FORMAT, CaRecord, CaState, ca_bundle_key, ca_root_key, load_ca, save_ca, write_ca_copies,
};
pub use certificate::{
    CERTIFICATE_FORMAT, CertificateEntry, LoadedCertificate, RecordState, copies_current,
    load_certificate, remove_certificate, save_certificate, scan_certificates, write_copies,
};
pub use clean::{Expiry, expired_before, remove_expired};

/// The suffix of a certificate's bundle value.
pub(crate) const BUNDLE: &str = "bundle";

/// Where one certificate record lives: an issuer segment and a name segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CertificateId {
    /// The issuer segment ([`keys::issuer_key`] of the issuer's identity).
    pub issuer: String,
    /// The name segment ([`keys::safe_name`] of the server name).
    pub name: String,
}

impl CertificateId {
    /// The record of `server_name` issued by the issuer whose identity is `issuer_id`.
    pub fn new(issuer_id: &str, server_name: &str) -> Self {
        CertificateId {
            issuer: keys::issuer_key(issuer_id),
            name: keys::safe_name(server_name),
        }
    }

    /// The record at these segments, as found in storage (see [`scan_certificates`]).
    pub fn from_segments(issuer: impl Into<String>, name: impl Into<String>) -> Self {
        CertificateId {
            issuer: issuer.into(),
            name: name.into(),
        }
    }

    /// `certificates/<issuer>/<name>`: every value of the record lives below it.
    pub fn prefix(&self) -> String {
        format!("{}/{}/{}", keys::CERTIFICATES, self.issuer, self.name)
    }

    /// The name of the issuance lock that guards this record (the engine's
    /// [`keys::issue_lock`] for its server name).
    pub fn issue_lock(&self) -> String {
        keys::issue_lock_of_segment(&self.name)
    }

    /// The bundle: the record itself.
    pub fn bundle_key(&self) -> String {
        self.part(BUNDLE)
    }

    /// The copy of the PEM chain.
    pub fn chain_key(&self) -> String {
        self.part("crt")
    }

    /// The copy of the private key.
    pub fn key_key(&self) -> String {
        self.part("key")
    }

    /// The copy of the metadata.
    pub fn meta_key(&self) -> String {
        self.part("json")
    }

    fn part(&self, suffix: &str) -> String {
        format!("{}/{}.{suffix}", self.prefix(), self.name)
    }

    /// The record a storage key belongs to: `Some` for any key below
    /// `certificates/<issuer>/<name>/`, `None` for every other key. Tools that work key by
    /// key (re-keying, copying) use it to treat a record's values together.
    pub fn of_key(key: &str) -> Option<Self> {
        let mut parts = key.splitn(4, '/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(keys::CERTIFICATES), Some(issuer), Some(name), Some(rest))
                if !issuer.is_empty() && !name.is_empty() && !rest.is_empty() =>
            {
                Some(Self::from_segments(issuer, name))
            }
            _ => None,
        }
    }
}

/// Whether `key` is the commit point of a record: a certificate's bundle or an internal
/// CA's bundle. A copy of a storage that writes these before any other value keeps every
/// record whole at every moment (the copies beside a bundle are only copies).
pub fn is_bundle_key(key: &str) -> bool {
    if let Some(id) = CertificateId::of_key(key) {
        return key == id.bundle_key();
    }
    let mut parts = key.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(keys::CA), Some(ca), Some(_), None) => key == ca_bundle_key(ca),
        _ => false,
    }
}

impl fmt::Display for CertificateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.issuer)
    }
}

/// How a record was found in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Layout {
    /// A bundle value (written by this version).
    Bundle,
    /// Only the three per-part values (written before bundles existed).
    Parts,
}

/// Serde for secret text: written as a plain string, read into a buffer that is zeroized
/// when dropped (the string serde allocates is moved into it, not copied).
pub(crate) mod secret_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(
        value: &Zeroizing<String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Zeroizing<String>, D::Error> {
        String::deserialize(deserializer).map(Zeroizing::new)
    }
}

/// Like [`StorageExt::load_opt`], but a value that cannot be read back as written (it
/// fails to decrypt or authenticate, say) is `Err(reason)` instead of an error.
pub(crate) async fn load_part(
    storage: &dyn Storage,
    key: &str,
) -> Result<std::result::Result<Option<Vec<u8>>, String>> {
    match storage.load_opt(key).await {
        Ok(value) => Ok(Ok(value)),
        // One value's damage (it fails to decrypt, it is too large to read back) belongs
        // to its record; the storage itself is still fine.
        Err(err @ (Error::Corrupt { .. } | Error::TooLarge { .. })) => Ok(Err(err.to_string())),
        Err(err) => Err(err),
    }
}

pub(crate) fn text(key: &str, bytes: Vec<u8>) -> std::result::Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("{key} is not UTF-8 text"))
}

/// Stores one value, fenced by `lease` when given.
pub(crate) async fn put(
    storage: &dyn Storage,
    key: &str,
    value: &[u8],
    lease: Option<&Lease>,
) -> Result<()> {
    match lease {
        Some(lease) => storage.store_fenced(key, value, lease).await,
        None => storage.store(key, value).await,
    }
}
