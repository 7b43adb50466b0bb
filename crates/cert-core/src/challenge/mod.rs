//! ACME challenges that any node of a cluster can answer.
//!
//! Before the CA is told to validate, the challenge data (an HTTP-01 key authorization,
//! the inputs of a TLS-ALPN-01 certificate) is written to the shared storage under
//! [`crate::keys::http01_token`] and
//! [`crate::keys::tls_alpn01`], and removed afterwards. Whichever node
//! the load balancer sends the validator to finds it there: [`Http01Handler`] answers
//! `/.well-known/acme-challenge/{token}`, and the [`CertResolver`](crate::CertResolver)
//! answers `acme-tls/1` handshakes once [`Challenges::prepare_tls_alpn01`] has loaded the
//! certificate (see [`accept_lazy_hello`](crate::resolver::accept_lazy_hello)). DNS-01
//! goes through a [`DnsProvider`].
//!
//! ```
//! use std::sync::Arc;
//! use cert_core::MemoryStorage;
//! use cert_core::challenge::{Challenges, Http01Handler};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cert_core::Result<()> {
//! let storage = Arc::new(MemoryStorage::new());
//! let node_a = Challenges::new(storage.clone());
//! let node_b = Challenges::new(storage);
//! node_a.present_http01("tok", "tok.thumbprint").await?;
//! let answer = Http01Handler::new(node_b).answer("/.well-known/acme-challenge/tok").await;
//! assert_eq!(answer.as_deref(), Some("tok.thumbprint"));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::{Error, StorageExt, Store, keys};

mod dns01;
mod http;
mod http01;
mod tls_alpn01;

pub use dns01::{ChallTestSrvDns, DnsProvider, dns01_record_name};
pub(crate) use http::check_roots_pem;
pub use http::{HttpClient, HttpResponse, http_request};
pub use http01::{HTTP01_PREFIX, Http01Handler};
pub use tls_alpn01::{ACME_TLS_ALPN, tls_alpn01_certificate};

/// The ACME challenge types certstore can solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChallengeType {
    /// A file served over plain HTTP on port 80.
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate served over TLS on port 443 with ALPN `acme-tls/1`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A TXT record under `_acme-challenge.<name>`; the only type for wildcards.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl ChallengeType {
    /// The type's name in ACME (`http-01`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeType::Http01 => "http-01",
            ChallengeType::TlsAlpn01 => "tls-alpn-01",
            ChallengeType::Dns01 => "dns-01",
        }
    }
}

impl fmt::Display for ChallengeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is stored for a TLS-ALPN-01 challenge: enough for any node to build the
/// certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TlsAlpnRecord {
    name: String,
    /// SHA-256 of the key authorization, lowercase hex.
    digest: String,
}

/// Challenge data of this node, backed by the cluster's storage. Cheap to share
/// (`Arc<Challenges>`).
pub struct Challenges {
    storage: Arc<dyn Store>,
    http01: Mutex<HashMap<String, String>>,
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for Challenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenges")
            .field("http01", &self.http01.lock().len())
            .field("tls_alpn01", &self.tls_alpn01.lock().len())
            .finish_non_exhaustive()
    }
}

impl Challenges {
    /// Challenge data over `storage`.
    pub fn new(storage: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Challenges {
            storage,
            http01: Mutex::new(HashMap::new()),
            tls_alpn01: Mutex::new(HashMap::new()),
        })
    }

    /// Publishes the key authorization of an HTTP-01 `token`: in memory and in storage.
    pub async fn present_http01(&self, token: &str, key_authorization: &str) -> Result<(), Error> {
        self.storage
            .store(&keys::http01_token(token), key_authorization.as_bytes())
            .await?;
        self.http01
            .lock()
            .insert(token.to_owned(), key_authorization.to_owned());
        Ok(())
    }

    /// Removes an HTTP-01 token from memory and storage.
    pub async fn clear_http01(&self, token: &str) -> Result<(), Error> {
        self.http01.lock().remove(token);
        match self.storage.delete(&keys::http01_token(token)).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The key authorization for an HTTP-01 `token`: from memory, else from storage.
    pub async fn http01_key_authorization(&self, token: &str) -> Option<String> {
        if token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return None;
        }
        if let Some(found) = self.http01.lock().get(token) {
            return Some(found.clone());
        }
        match self.storage.load_opt(&keys::http01_token(token)).await {
            Ok(Some(bytes)) => String::from_utf8(bytes).ok(),
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(error = %err, "loading an HTTP-01 token failed");
                None
            }
        }
    }

    /// Publishes a TLS-ALPN-01 challenge for `name` with the key authorization's SHA-256
    /// `digest`: the inputs in storage, the certificate in memory.
    pub async fn present_tls_alpn01(&self, name: &str, digest: &[u8]) -> Result<(), Error> {
        let key = keys::tls_alpn01(name);
        let certified = tls_alpn01_certificate(name, digest)
            .map_err(|err| Error::corrupt(key.clone(), std::io::Error::other(err)))?;
        let record = TlsAlpnRecord {
            name: name.to_owned(),
            digest: hex(digest),
        };
        self.storage.store_json(&key, &record).await?;
        self.tls_alpn01.lock().insert(name_key(name), certified);
        Ok(())
    }

    /// Removes a TLS-ALPN-01 challenge from memory and storage.
    pub async fn clear_tls_alpn01(&self, name: &str) -> Result<(), Error> {
        self.tls_alpn01.lock().remove(&name_key(name));
        match self.storage.delete(&keys::tls_alpn01(name)).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The TLS-ALPN-01 certificate for `name` held in memory (no I/O: for the resolver).
    pub fn tls_alpn01_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01.lock().get(&name_key(name)).cloned()
    }

    /// Makes the TLS-ALPN-01 certificate for `name` available to the resolver, building it
    /// from storage when another node placed the challenge. Returns whether one exists.
    pub async fn prepare_tls_alpn01(&self, name: &str) -> bool {
        let key = keys::tls_alpn01(name);
        let record: TlsAlpnRecord = match self.storage.load_opt(&key).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(_) => return false,
            },
            Ok(None) => {
                // Cleared elsewhere: forget any stale copy.
                self.tls_alpn01.lock().remove(&name_key(name));
                return false;
            }
            Err(err) => {
                tracing::warn!(error = %err, "loading a TLS-ALPN-01 challenge failed");
                return self.tls_alpn01_cert(name).is_some();
            }
        };
        if !record.name.eq_ignore_ascii_case(name) {
            return false;
        }
        let Some(digest) = unhex(&record.digest) else {
            return false;
        };
        match tls_alpn01_certificate(name, &digest) {
            Ok(certified) => {
                self.tls_alpn01.lock().insert(name_key(name), certified);
                true
            }
            Err(_) => false,
        }
    }
}

fn name_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStorage;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[tokio::test]
    async fn tls_alpn_challenge_is_built_by_another_node() {
        let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
        let a = Challenges::new(Arc::clone(&storage));
        let b = Challenges::new(storage);
        a.present_tls_alpn01("a.example", &[7u8; 32]).await.unwrap();
        assert!(b.tls_alpn01_cert("a.example").is_none());
        assert!(b.prepare_tls_alpn01("A.example").await);
        assert!(b.tls_alpn01_cert("a.example").is_some());
        a.clear_tls_alpn01("a.example").await.unwrap();
        assert!(!b.prepare_tls_alpn01("a.example").await);
        assert!(b.tls_alpn01_cert("a.example").is_none());
    }
}
