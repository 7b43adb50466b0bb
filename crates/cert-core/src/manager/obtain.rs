//! Loading a name's certificate from storage, or obtaining one under the name's lock.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use super::{CertManager, Event, ManageError, NameState, Served, normalize_name};
use crate::certificate::StoredCertificate;
use crate::issuer::{IssueError, IssueRequest, Issuer};
use crate::record::{self, CertificateId, LoadedCertificate, RecordState};
use crate::{Error, Lease, LockGuard, Locker, StorageExt, keys, lock};

/// The part of a certificate's lifetime over which certificates issued together spread
/// their renewal moments.
const RENEWAL_SPREAD: f64 = 0.1;

/// The part of the lifetime over which the nodes of a fleet spread their own moment for
/// one certificate.
const RENEWAL_JITTER: f64 = 0.01;

/// A number in `[0, 1)` that depends only on `serial` (a CA's random serial number, in
/// hex): FNV-1a of its text, so every node computes the same one.
fn unit_interval(serial: &str) -> f64 {
    let hash = serial
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// What storage holds for a name, across every issuer's area.
pub(super) enum Found {
    /// Nothing.
    Absent,
    /// A usable certificate (the one that lives longest, when several issuers have one).
    Valid(Box<LoadedCertificate>),
    /// Only unusable records.
    Broken(String),
}

impl CertManager {
    /// Brings one name under management: serves what storage has, and obtains a
    /// certificate when there is none, it is due, or its record is unusable.
    pub(super) async fn manage_one(&self, name: &str, on_demand: bool) -> Result<(), ManageError> {
        let name = normalize_name(name)?;
        self.inner
            .names
            .lock()
            .entry(name.clone())
            .or_insert_with(|| NameState::new(on_demand));
        match self.load_stored(&name).await? {
            Found::Valid(loaded) => {
                let due = self.due(&loaded.stored).await;
                self.serve_stored(&name, &loaded, true).await;
                if !due {
                    return Ok(());
                }
            }
            Found::Broken(reason) => self.report_broken(&name, &reason),
            Found::Absent => {}
        }
        match self.obtain(&name).await {
            Ok(()) => Ok(()),
            Err(err) => {
                self.record_failure(&name, None, &err).await;
                // An older certificate, if loaded above, is still served.
                if self.inner.cache.get_exact(&name).is_some() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Serves a certificate loaded from storage (in the cache, with its renewal moment)
    /// and, when `announce`, emits [`Event::Loaded`].
    pub(super) async fn serve_stored(
        &self,
        name: &str,
        loaded: &LoadedCertificate,
        announce: bool,
    ) {
        self.install(name, &loaded.stored, Arc::clone(&loaded.certified));
        self.apply_window(name, &loaded.stored).await;
        if announce {
            self.emit(Event::Loaded {
                name: name.to_owned(),
            });
        }
    }

    pub(super) fn report_broken(&self, name: &str, reason: &str) {
        tracing::warn!(
            name,
            reason,
            "the stored certificate record is unusable; it will be issued again"
        );
        self.emit(Event::Broken {
            name: name.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Obtains (or renews) a certificate for `name` under its cluster lock.
    #[tracing::instrument(level = "debug", skip(self))]
    pub(super) async fn obtain(&self, name: &str) -> Result<(), ManageError> {
        if self.inner.issuers.is_empty() {
            return Err(ManageError::NoIssuer);
        }
        let locker: Arc<dyn Locker> = self.inner.storage.clone();
        let guard = lock(locker, &keys::issue_lock(name), &self.inner.config.lock).await?;
        let result = self.obtain_locked(name, &guard).await;
        if let Err(err) = guard.release().await {
            tracing::warn!(name, error = %err, "releasing the issuance lock failed");
        }
        result
    }

    async fn obtain_locked(&self, name: &str, guard: &LockGuard) -> Result<(), ManageError> {
        // Another node may have obtained or renewed it while this one waited.
        let served = self.certificate_meta(name);
        // The key of the certificate being replaced: an issuance key equal to it was
        // already used.
        let mut replaced_key = None;
        match self.load_stored(name).await? {
            Found::Valid(loaded) if !self.due(&loaded.stored).await => {
                let newer = served
                    .as_ref()
                    .is_none_or(|s| s.serial != loaded.stored.meta.serial);
                self.serve_stored(name, &loaded, newer).await;
                return Ok(());
            }
            Found::Valid(loaded) => replaced_key = Some(loaded.stored.key_pem.clone()),
            Found::Broken(reason) if served.is_some() => self.report_broken(name, &reason),
            _ => {}
        }
        // The fleet may be backing off this name after failures elsewhere.
        let shared = self.check_backoff(name).await?;
        let renewing = served.is_some();
        let mut last = None;
        for issuer in &self.inner.issuers {
            let issuer_id = issuer.id();
            self.emit(Event::Obtaining {
                name: name.to_owned(),
                issuer: issuer_id.clone(),
            });
            // The order is abandoned the moment the lease is lost: another node may hold
            // the lock by now and be ordering too.
            let issued = tokio::select! {
                biased;
                () = guard.lost() => None,
                issued = self.issue_with(issuer.as_ref(), name, replaced_key.as_ref().map(|k| k.as_str()), guard) => Some(issued),
            };
            let Some(issued) = issued else {
                return Err(self.abandon(name, "the order"));
            };
            match issued {
                Ok(stored) => {
                    let lease = guard.lease();
                    match record::save_certificate(
                        self.inner.storage.as_ref(),
                        name,
                        &stored,
                        Some(&lease),
                    )
                    .await
                    {
                        Ok(_) => {}
                        Err(Error::LockLost { .. }) => {
                            return Err(self.abandon(name, "saving the certificate"));
                        }
                        Err(err) => return Err(err.into()),
                    }
                    self.install(name, &stored, Self::certify(name, &stored)?);
                    self.apply_window(name, &stored).await;
                    if issuer.resumes_issuance() {
                        self.forget_issuance_key(&issuer_id, name, &lease).await;
                    }
                    if shared {
                        self.clear_backoff(name, &lease).await;
                    }
                    crate::metrics::certificate_stored(&issuer_id, renewing);
                    let event = if renewing {
                        Event::Renewed {
                            name: name.to_owned(),
                            issuer: issuer_id,
                        }
                    } else {
                        Event::Obtained {
                            name: name.to_owned(),
                            issuer: issuer_id,
                        }
                    };
                    self.emit(event);
                    return Ok(());
                }
                // Storing the issuance key was refused: the lease is gone.
                Err(IssueError::Storage(Error::LockLost { .. })) => {
                    return Err(self.abandon(name, "storing the issuance key"));
                }
                Err(err) => {
                    tracing::warn!(name, issuer = %issuer_id, error = %err, "issuer failed");
                    crate::metrics::certificate_failed(&issuer_id, err.kind());
                    self.emit(Event::Failed {
                        name: name.to_owned(),
                        issuer: Some(issuer_id),
                        error: err.to_string(),
                        retry_in: None,
                    });
                    last = Some(err);
                }
            }
        }
        Err(ManageError::Issue {
            name: name.to_owned(),
            last: last.unwrap_or(IssueError::Rejected {
                reason: "no issuer".into(),
            }),
        })
    }

    fn abandon(&self, name: &str, what: &str) -> ManageError {
        let reason = format!("the issuance lock was lost during {what}");
        tracing::warn!(name, reason, "abandoned; nothing was saved by this node");
        self.emit(Event::Abandoned {
            name: name.to_owned(),
            reason,
        });
        ManageError::LeaseLost {
            name: name.to_owned(),
        }
    }

    #[tracing::instrument(level = "debug", skip(self, issuer, replaced_key, guard), fields(issuer = %issuer.id()))]
    async fn issue_with(
        &self,
        issuer: &dyn Issuer,
        name: &str,
        replaced_key: Option<&str>,
        guard: &LockGuard,
    ) -> Result<StoredCertificate, IssueError> {
        let key_type = self.inner.config.key_type;
        let key = self.issuance_key(issuer, name, replaced_key, guard).await?;
        let names = vec![name.to_owned()];
        let params =
            rcgen::CertificateParams::new(names.clone()).map_err(|err| IssueError::Rejected {
                reason: format!("invalid name {name:?}: {err}"),
            })?;
        let csr = params
            .serialize_request(&key)
            .map_err(|err| IssueError::Rejected {
                reason: err.to_string(),
            })?;
        let public_key_pem = key.public_key_pem();
        let issued = issuer
            .issue(IssueRequest {
                names: &names,
                public_key_pem: &public_key_pem,
                csr_der: csr.der(),
            })
            .await?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        StoredCertificate::from_pem(&issued.chain_pem, &key_pem, &issuer.id(), Some(key_type))
            .map_err(|err| IssueError::Rejected {
                reason: format!("the issuer returned an unusable certificate: {err}"),
            })
    }

    /// The private key to ask `issuer` with. For an issuer that resumes issuance, the key
    /// of an earlier attempt for this name is reused while storage holds it (the issuer
    /// may have had a certificate signed for it that never got saved), unless it is the
    /// key of the certificate being replaced or of another key type; a new key is stored,
    /// fenced by the issuance lock, before the issuer is asked.
    ///
    /// A crash before the store leaves nothing; after it, the key waits for the next
    /// attempt, on any node; a lost lease refuses the store and nothing is asked.
    async fn issuance_key(
        &self,
        issuer: &dyn Issuer,
        name: &str,
        replaced_key: Option<&str>,
        guard: &LockGuard,
    ) -> Result<rcgen::KeyPair, IssueError> {
        let key_type = self.inner.config.key_type;
        let generate = || {
            key_type.generate().map_err(|err| IssueError::Rejected {
                reason: err.to_string(),
            })
        };
        if !issuer.resumes_issuance() {
            return generate();
        }
        let storage = self.inner.storage.as_ref();
        let pending = keys::pending_key(&issuer.id(), name);
        if let Some(bytes) = storage.load_opt(&pending).await? {
            let bytes = Zeroizing::new(bytes);
            let pem = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
            let reusable = replaced_key.is_none_or(|used| used != pem.as_str());
            match rcgen::KeyPair::from_pem(&pem) {
                Ok(key) if reusable && key_type.matches(&key) => {
                    tracing::debug!(name, "resuming with the key of an earlier attempt");
                    return Ok(key);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(name, error = %err, key = pending, "unusable issuance key; replacing it");
                }
            }
        }
        let key = generate()?;
        let pem = Zeroizing::new(key.serialize_pem());
        match storage
            .store_fenced(&pending, pem.as_bytes(), &guard.lease())
            .await
        {
            Ok(()) => Ok(key),
            Err(err) => Err(IssueError::Storage(err)),
        }
    }

    /// Removes the issuance key once its certificate is saved (best effort: a key left
    /// behind equals the saved certificate's, and is never used again).
    async fn forget_issuance_key(&self, issuer_id: &str, name: &str, lease: &Lease) {
        let pending = keys::pending_key(issuer_id, name);
        if let Err(err) = self.inner.storage.delete_fenced(&pending, lease).await {
            tracing::debug!(name, error = %err, "removing the issuance key failed");
        }
    }

    /// Loads the newest usable certificate for `name` from any issuer's area of storage.
    pub(super) async fn load_stored(&self, name: &str) -> Result<Found, Error> {
        let mut best: Option<Box<LoadedCertificate>> = None;
        let mut broken = None;
        for issuer in &self.inner.issuers {
            let id = CertificateId::new(&issuer.id(), name);
            match record::load_certificate(self.inner.storage.as_ref(), &id).await? {
                None => {}
                Some(RecordState::Broken { reason }) => broken = Some(reason),
                Some(RecordState::Valid(loaded))
                    if best
                        .as_ref()
                        .is_none_or(|b| loaded.stored.meta.not_after > b.stored.meta.not_after) =>
                {
                    best = Some(loaded);
                }
                Some(RecordState::Valid(_)) => {}
            }
        }
        Ok(match (best, broken) {
            (Some(loaded), _) => Found::Valid(loaded),
            (None, Some(reason)) => Found::Broken(reason),
            (None, None) => Found::Absent,
        })
    }

    /// The servable form of a certificate just issued.
    fn certify(name: &str, stored: &StoredCertificate) -> Result<Arc<CertifiedKey>, Error> {
        stored.certified_key().map_err(|err| {
            Error::corrupt(
                CertificateId::new(&stored.meta.issuer, name).bundle_key(),
                err,
            )
        })
    }

    fn install(&self, name: &str, stored: &StoredCertificate, certified: Arc<CertifiedKey>) {
        self.inner.cache.insert(name, certified);
        // Moved earlier by a part of the lifetime fixed per certificate (the same on every
        // node), so certificates issued together do not all come due together, and by a
        // small random part per node, so the fleet's nodes do not all try at once.
        let lifetime = stored.meta.lifetime();
        let spread = lifetime.mul_f64(RENEWAL_SPREAD * unit_interval(&stored.meta.serial));
        let jitter = lifetime.mul_f64(RENEWAL_JITTER * fastrand::f64());
        let renew_at = stored.meta.renew_at(self.inner.config.renew_ratio) - spread - jitter;
        let mut names = self.inner.names.lock();
        let state = names
            .entry(name.to_owned())
            .or_insert_with(|| NameState::new(false));
        state.served = Some(Served {
            meta: stored.meta.clone(),
            chain_pem: Arc::from(stored.chain_pem.as_str()),
            renew_at,
        });
        state.failures = 0;
        state.next_attempt = None;
    }

    /// The renewal window the certificate's issuer suggests (ACME renewal information).
    pub(super) async fn issuer_window(
        &self,
        meta: &crate::CertificateMeta,
        chain_pem: &str,
    ) -> Option<(SystemTime, SystemTime)> {
        let issuer = self.inner.issuers.iter().find(|i| i.id() == meta.issuer)?;
        issuer.renewal_window(meta, chain_pem).await
    }

    /// Whether a stored certificate is due: inside its issuer's suggested window when the
    /// issuer offers one, else past the lifetime ratio.
    pub(super) async fn due(&self, stored: &StoredCertificate) -> bool {
        match self.issuer_window(&stored.meta, &stored.chain_pem).await {
            Some((start, _)) => SystemTime::now() >= start,
            None => SystemTime::now() >= stored.meta.renew_at(self.inner.config.renew_ratio),
        }
    }

    /// Moves this node's renewal moment to a random point of the issuer's suggested
    /// window, when it offers one.
    async fn apply_window(&self, name: &str, stored: &StoredCertificate) {
        let Some((start, end)) = self.issuer_window(&stored.meta, &stored.chain_pem).await else {
            return;
        };
        let span = end.duration_since(start).unwrap_or_default();
        let at = start + span.mul_f64(fastrand::f64());
        if let Some(served) = self
            .inner
            .names
            .lock()
            .get_mut(name)
            .and_then(|state| state.served.as_mut())
            && served.meta.serial == stored.meta.serial
        {
            served.renew_at = at;
        }
    }
}
