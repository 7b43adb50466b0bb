//! Fetching one name: a single request per cold name shared by every handshake that
//! waits for it, run in a task of its own within [`HttpSourceConfig::timeout`]; the
//! response checked and given its lifetime; stale-if-error after a failure.
//!
//! [`HttpSourceConfig::timeout`]: super::HttpSourceConfig::timeout

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cert_core::CertificateError;
use cert_core::rustls::sign::CertifiedKey;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use zeroize::Zeroizing;

use super::entry::{Entry, State};
use super::warm::WarmCopy;
use super::{HttpSource, Inner, SourceEvent};
use crate::SourceError;
use crate::backend::freshness;
use crate::bundle::{Validated, covers, validate_pem};

/// The shortest time an entry is kept, so the handshake that fetched it is served even
/// when the backend says `max-age=0`.
const MIN_TTL: Duration = Duration::from_secs(1);

/// One fetch in flight, shared by every caller waiting for the same name.
pub(super) type Fetch = Shared<BoxFuture<'static, Result<Option<Arc<CertifiedKey>>, SourceError>>>;

/// Where a fetched certificate came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Backend,
    Storage,
}

enum Fetched {
    Cert {
        validated: Validated,
        pem: Zeroizing<String>,
        expires: SystemTime,
        origin: Origin,
    },
    Negative,
}

/// A failed fetch, with the expired warm copy found on the way, if any.
struct Failure {
    error: SourceError,
    stale: Option<WarmCopy>,
}

impl From<SourceError> for Failure {
    fn from(error: SourceError) -> Self {
        Failure { error, stale: None }
    }
}

impl HttpSource {
    /// The fetch for `name` in flight, or a new one in a task of its own.
    pub(super) fn start_fetch(&self, name: &str) -> Result<Fetch, SourceError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| SourceError::Config("a Tokio runtime is required".into()))?;
        let mut inflight = self.inner.inflight.lock();
        if let Some(fetch) = inflight.get(name) {
            return Ok(fetch.clone());
        }
        // A fetch that just finished published its entry before leaving `inflight`.
        if let State::Fresh(cert) = self.inner.state(name, SystemTime::now()) {
            return Ok(futures::future::ready(Ok(cert)).boxed().shared());
        }
        let task = runtime.spawn(Arc::clone(&self.inner).run_fetch(name.to_owned()));
        let fetch = async move { task.await.unwrap_or(Err(SourceError::Aborted)) }
            .boxed()
            .shared();
        inflight.insert(name.into(), fetch.clone());
        Ok(fetch)
    }
}

impl Inner {
    async fn run_fetch(
        self: Arc<Self>,
        name: String,
    ) -> Result<Option<Arc<CertifiedKey>>, SourceError> {
        let timeout = self.config.timeout;
        let result = match tokio::time::timeout(timeout, self.fetch(&name)).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::Timeout(timeout).into()),
        };
        let now = SystemTime::now();
        let mut inflight = self.inflight.lock();
        let answer = match result {
            Ok(Fetched::Cert {
                validated,
                pem,
                expires,
                origin,
            }) => {
                let cert = Arc::clone(&validated.certified);
                self.put(
                    &mut self.entries.write(),
                    &name,
                    Entry::positive(&validated, expires),
                    now,
                );
                match origin {
                    Origin::Backend => {
                        self.emit(SourceEvent::Fetched {
                            name: name.clone(),
                            expires,
                        });
                        self.persist(&name, pem, expires);
                    }
                    Origin::Storage => self.emit(SourceEvent::Loaded {
                        name: name.clone(),
                        expires,
                    }),
                }
                Ok(Some(cert))
            }
            Ok(Fetched::Negative) => {
                let until = now + self.config.negative_ttl;
                self.put(
                    &mut self.entries.write(),
                    &name,
                    Entry::negative(until),
                    now,
                );
                self.emit(SourceEvent::NotFound {
                    name: name.clone(),
                    until,
                });
                self.forget_warm(&name);
                Ok(None)
            }
            Err(Failure { error, stale }) => {
                self.emit(SourceEvent::Failed {
                    name: name.clone(),
                    error: error.to_string(),
                });
                match self.serve_stale(&name, stale, &error, now) {
                    Some(cert) => Ok(Some(cert)),
                    None => Err(error),
                }
            }
        };
        inflight.remove(name.as_str());
        answer
    }

    /// After a failed fetch: the expired certificate to keep serving, when stale-if-error
    /// allows it (the one in memory, else the expired warm copy found in storage).
    fn serve_stale(
        &self,
        name: &str,
        warm: Option<WarmCopy>,
        error: &SourceError,
        now: SystemTime,
    ) -> Option<Arc<CertifiedKey>> {
        let grace = self.config.stale_if_error?;
        let mut entries = self.entries.write();
        if entries.get(name).is_none_or(|e| e.cert.is_none()) {
            let warm = warm?;
            self.put(
                &mut entries,
                name,
                Entry::positive(&warm.validated, warm.expires),
                now,
            );
        }
        let entry = entries.get_mut(name)?;
        let cert = entry.cert.clone()?;
        let until = (entry.expires + grace).min(entry.not_after);
        if now >= until {
            return None;
        }
        entry.serve_until = until;
        entry.retry_at = now + self.config.stale_retry;
        drop(entries);
        tracing::warn!(name, error = %error, "serving an expired certificate while the backend fails");
        self.emit(SourceEvent::ServingStale {
            name: name.to_owned(),
            error: error.to_string(),
            until,
        });
        Some(cert)
    }

    /// The warm copy if fresh, else the backend's answer.
    async fn fetch(&self, name: &str) -> Result<Fetched, Failure> {
        let mut stale = None;
        if let Some(copy) = self.load_warm(name).await {
            if copy.expires > SystemTime::now() {
                return Ok(Fetched::Cert {
                    validated: copy.validated,
                    pem: copy.pem,
                    expires: copy.expires,
                    origin: Origin::Storage,
                });
            }
            stale = Some(copy);
        }
        self.fetch_backend(name)
            .await
            .map_err(|error| Failure { error, stale })
    }

    async fn fetch_backend(&self, name: &str) -> Result<Fetched, SourceError> {
        let answer = self.backend.get(name).await?;
        match answer.status {
            200 => {
                let text = std::str::from_utf8(&answer.body).map_err(|_| {
                    SourceError::Bundle(CertificateError::Chain("the body is not PEM text".into()))
                })?;
                let pem = Zeroizing::new(text.to_owned());
                let validated = validate_pem(&pem, &pem)?;
                if !covers(&validated.names, name) {
                    return Err(SourceError::NameMismatch { name: name.into() });
                }
                let now = SystemTime::now();
                if validated.not_after <= now {
                    return Err(SourceError::Expired { name: name.into() });
                }
                let ttl = self
                    .config
                    .ttl
                    .or_else(|| answer.cache_control.as_deref().and_then(freshness))
                    .unwrap_or(self.config.default_ttl)
                    .max(MIN_TTL);
                let expires = now
                    .checked_add(ttl)
                    .unwrap_or(validated.not_after)
                    .min(validated.not_after);
                Ok(Fetched::Cert {
                    validated,
                    pem,
                    expires,
                    origin: Origin::Backend,
                })
            }
            204 => Ok(Fetched::Negative),
            status => Err(SourceError::Status { status }),
        }
    }
}
