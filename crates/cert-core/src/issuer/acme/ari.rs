//! ACME Renewal Information (RFC 9773): the renewal window the CA suggests for a
//! certificate, asked for by one node at a time and shared with the others in storage.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::CertificateIdentifier;
use serde::{Deserialize, Serialize};

use super::AcmeIssuer;
use crate::certificate::{system_to_unix, unix_to_system};
use crate::lock::{LockOptions, try_lock};
use crate::{Locker, StorageExt, keys};

/// The renewal window of one certificate as the CA suggested it, shared in storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredWindow {
    start: i64,
    end: i64,
    /// When to ask the CA again (unix seconds).
    refresh_at: i64,
}

impl AcmeIssuer {
    /// The ARI identifier of the certificate currently stored for `name`, if any.
    pub(super) async fn stored_cert_id(
        &self,
        name: &str,
    ) -> Option<CertificateIdentifier<'static>> {
        let chain = self.stored_chain(name).await.ok()??;
        cert_id(&chain)
    }

    pub(super) async fn ari_window(&self, chain_pem: &str) -> Option<(SystemTime, SystemTime)> {
        if !self.config.renewal_info {
            return None;
        }
        let id = cert_id(chain_pem)?;
        let key = format!(
            "{}/{}/renewal-info/{}",
            keys::ACME,
            keys::issuer_key(&self.config.directory_url),
            keys::safe_segment(&id.to_string())
        );
        let now = system_to_unix(SystemTime::now());
        let stored: Option<StoredWindow> = match self.storage.load_opt(&key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            _ => None,
        };
        if let Some(window) = &stored
            && window.refresh_at > now
        {
            return Some(window_times(window));
        }
        // One node asks the CA; the others keep what is stored meanwhile.
        let locker: Arc<dyn Locker> = self.storage.clone();
        let guard = match try_lock(
            locker,
            &format!("ari/{}", keys::safe_segment(&id.to_string())),
            &LockOptions::default(),
        )
        .await
        {
            Ok(Some(guard)) => guard,
            _ => return stored.as_ref().map(window_times),
        };
        let result = async {
            let account = self.account().await.ok()?;
            let (info, retry) = match account.renewal_info(&id).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::debug!(error = %err, "renewal information unavailable");
                    return stored.as_ref().map(window_times);
                }
            };
            let retry = retry.clamp(Duration::from_secs(60), Duration::from_secs(86_400));
            let window = StoredWindow {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
                refresh_at: now.saturating_add(i64::try_from(retry.as_secs()).unwrap_or(86_400)),
            };
            let lease = guard.lease();
            let stored = match serde_json::to_vec(&window) {
                Ok(bytes) => self.storage.store_fenced(&key, &bytes, &lease).await,
                Err(err) => Err(crate::Error::backend("json", err)),
            };
            if let Err(err) = stored {
                tracing::warn!(error = %err, "storing renewal information failed");
            }
            Some(window_times(&window))
        }
        .await;
        let _ = guard.release().await;
        result
    }
}

fn window_times(window: &StoredWindow) -> (SystemTime, SystemTime) {
    let start = unix_to_system(window.start);
    (start, unix_to_system(window.end.max(window.start)))
}

/// The ARI identifier (authority key identifier and serial) of a chain's leaf.
fn cert_id(chain_pem: &str) -> Option<CertificateIdentifier<'static>> {
    use x509_parser::extensions::ParsedExtension;
    let chain = crate::certificate::parse_chain(chain_pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })?;
    let serial = cert.tbs_certificate.raw_serial();
    Some(
        CertificateIdentifier::new(
            rustls::pki_types::Der::from_slice(aki),
            rustls::pki_types::Der::from_slice(serial),
        )
        .into_owned(),
    )
}
