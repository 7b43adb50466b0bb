//! How failures of the blob service are classified, retried and mapped to
//! [`cert_core::Error`], with signatures kept out of every message.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use azure_core::error::ErrorKind;
use cert_core::Error;
use cert_core::backoff::Backoff;

use crate::sas::redact;

pub(crate) const BACKEND: &str = "azure";

/// A failure of one request, with what the callers need to decide on its meaning.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The service answered with an unexpected status.
    Status {
        status: u16,
        code: Option<String>,
        error: ServiceError,
    },
    /// Anything else, already mapped (transient failures as `Unavailable`).
    Mapped(Error),
}

impl Failure {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            Failure::Mapped(_) => None,
        }
    }

    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Failure::Status { code, .. } => code.as_deref(),
            Failure::Mapped(_) => None,
        }
    }

    /// The error for a request about `key`: 404 is `NotFound`, 401/403 say which
    /// credential was refused, the rest is a `Backend` error.
    pub(crate) fn into_error(self, key: &str, credential: &'static str) -> Error {
        match self {
            Failure::Mapped(err) => err,
            Failure::Status { status: 404, .. } => Error::not_found(key),
            Failure::Status {
                status: status @ (401 | 403),
                error,
                ..
            } => Error::backend(
                BACKEND,
                AuthError {
                    credential,
                    status,
                    source: error,
                },
            ),
            Failure::Status { error, .. } => Error::backend(BACKEND, error),
        }
    }
}

/// The service (or the transport) refused or failed a request. The message is the
/// client library's error chain with any `sig=` value replaced, so it can be logged.
#[derive(Debug)]
pub struct ServiceError {
    message: String,
}

impl ServiceError {
    pub(crate) fn new(message: impl AsRef<str>) -> Self {
        ServiceError {
            message: redact(message.as_ref()),
        }
    }

    fn from_azure(err: &azure_core::Error) -> Self {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        ServiceError::new(message)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {}

/// The service refused the credential (HTTP 401 or 403).
#[derive(Debug, thiserror::Error)]
#[error(
    "authorization failed (HTTP {status}) with the {credential}; check that it is valid, not expired and allowed on this container"
)]
pub struct AuthError {
    credential: &'static str,
    status: u16,
    #[source]
    source: ServiceError,
}

/// Whether a failure may go away when retried.
fn classify(err: azure_core::Error) -> (bool, Failure) {
    match err.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            let transient = matches!(status, 408 | 429 | 500 | 502 | 503 | 504);
            let failure = Failure::Status {
                status,
                code: error_code.clone(),
                error: ServiceError::from_azure(&err),
            };
            (transient, failure)
        }
        ErrorKind::Connection | ErrorKind::Io => (
            true,
            Failure::Mapped(Error::unavailable(BACKEND, ServiceError::from_azure(&err))),
        ),
        ErrorKind::Credential => (
            false,
            Failure::Mapped(Error::backend(
                BACKEND,
                ServiceError::new(format!(
                    "getting a token from the token credential failed: {}",
                    ServiceError::from_azure(&err)
                )),
            )),
        ),
        _ => (
            false,
            Failure::Mapped(Error::backend(BACKEND, ServiceError::from_azure(&err))),
        ),
    }
}

/// How requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// How many times one operation is tried in all. Default 5.
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each one. Default 100 ms.
    pub first_backoff: Duration,
    /// The longest pause between two attempts. Default 2 s.
    pub max_backoff: Duration,
    /// How long one request may take before it counts as a transient failure. Default
    /// 30 s.
    pub request_timeout: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryConfig {
    /// Tries each operation `attempts` times in all (at least once).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Pauses `first` after the first failure, doubling up to `max`.
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// Gives up on one request after `timeout`.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The longest time an operation can take before it fails with `Unavailable`.
    pub fn bound(&self) -> Duration {
        let backoff = Backoff::new(self.first_backoff, self.max_backoff, self.attempts);
        self.request_timeout.saturating_mul(backoff.attempts) + backoff.total_pause()
    }

    /// Runs `request` until it succeeds, fails for good, or the attempts run out; a
    /// transient failure at the end becomes `Unavailable`.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = azure_core::Result<T>>,
    {
        let mut attempts =
            Backoff::new(self.first_backoff, self.max_backoff, self.attempts).attempts();
        loop {
            let (transient, failure) =
                match tokio::time::timeout(self.request_timeout, request()).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(err)) => classify(err),
                    Err(_) => (
                        true,
                        Failure::Mapped(Error::unavailable(
                            BACKEND,
                            ServiceError::new(format!(
                                "{what}: no answer within {:?}",
                                self.request_timeout
                            )),
                        )),
                    ),
                };
            if !transient {
                return Err(failure);
            }
            let attempt = attempts.attempt();
            let Some(pause) = attempts.next_pause() else {
                let err = match failure {
                    Failure::Status { error, .. } => Error::unavailable(BACKEND, error),
                    Failure::Mapped(Error::Unavailable { source, .. }) => Error::Unavailable {
                        backend: BACKEND,
                        source,
                    },
                    Failure::Mapped(other) => other,
                };
                return Err(Failure::Mapped(err));
            };
            tracing::debug!(what, attempt, "transient azure failure; retrying");
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn transient_failures_are_retried_then_unavailable() {
        let config = RetryConfig::default()
            .with_attempts(3)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(2));
        let mut calls = 0;
        let result: Result<(), Failure> = config
            .run("test", || {
                calls += 1;
                async {
                    Err(azure_core::Error::with_message(
                        ErrorKind::Connection,
                        "refused",
                    ))
                }
            })
            .await;
        assert_eq!(calls, 3);
        match result {
            Err(Failure::Mapped(Error::Unavailable { backend, .. })) => {
                assert_eq!(backend, "azure")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let config =
            RetryConfig::default().with_backoff(Duration::from_millis(1), Duration::from_millis(1));
        let mut calls = 0;
        let result: Result<(), Failure> = config
            .run("test", || {
                calls += 1;
                async {
                    Err(azure_core::Error::with_message(
                        ErrorKind::DataConversion,
                        "bad xml",
                    ))
                }
            })
            .await;
        assert_eq!(calls, 1);
        assert!(matches!(
            result,
            Err(Failure::Mapped(Error::Backend { .. }))
        ));
        let mut calls = 0;
        let ok: Result<u8, Failure> = config
            .run("test", || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 2 {
                        Err(azure_core::Error::with_message(ErrorKind::Io, "reset"))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await;
        assert_eq!(ok.unwrap(), 7);
    }

    #[test]
    fn bound_adds_timeouts_and_pauses() {
        let config = RetryConfig::default()
            .with_attempts(3)
            .with_backoff(Duration::from_millis(100), Duration::from_millis(150))
            .with_request_timeout(Duration::from_secs(1));
        assert_eq!(config.bound(), Duration::from_millis(3000 + 100 + 150));
    }

    #[test]
    fn auth_errors_name_the_credential_not_the_secret() {
        let failure = Failure::Status {
            status: 403,
            code: Some("AuthenticationFailed".into()),
            error: ServiceError::new("GET http://x/c/k?sv=1&sig=SECRET failed"),
        };
        let err = failure.into_error("k", "SAS token");
        let text = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(text.contains("SAS token"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!err.is_retryable());
    }
}
