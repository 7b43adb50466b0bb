//! Classifying S3 client errors and retrying the transient ones.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use cert_core::backoff::Backoff;
use cert_core::{BoxError, Error};

pub(crate) const BACKEND: &str = "s3";

/// What kind of failure a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 404, `NoSuchKey`, `NotFound`.
    NotFound,
    /// 412 (a condition did not hold) or 409 `ConditionalRequestConflict` (a concurrent
    /// conditional write won).
    Precondition,
    /// Throttling, 5xx, timeouts, connection failures: worth retrying.
    Transient,
    /// 401/403 and credential errors: never retried.
    Auth,
    /// Anything else.
    Other,
}

/// One failed request, classified, with its source kept.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: Kind,
    pub source: BoxError,
    /// Whether an earlier try of the same request may have reached the server.
    pub retried: bool,
}

/// The error of a request the service answered with something this crate refuses to
/// accept, or a probe that found conditional writes unsupported.
#[derive(Debug)]
pub(crate) struct Message(pub String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl From<Message> for Failure {
    fn from(message: Message) -> Self {
        Failure {
            kind: Kind::Other,
            source: Box::new(message),
            retried: false,
        }
    }
}

/// An authentication failure: names the credentials, never a secret.
#[derive(Debug)]
struct AuthError {
    credentials: String,
    code: String,
    source: BoxError,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "S3 refused {} ({}): check the access key, its secret and its permissions",
            self.credentials, self.code
        )
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

const THROTTLING_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
];

const AUTH_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AuthorizationHeaderMalformed",
];

/// Classifies an SDK error by HTTP status and error code.
pub(crate) fn classify<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or_default();
            if status == 404 || code == "NoSuchKey" || code == "NotFound" {
                Kind::NotFound
            } else if status == 412
                || code == "PreconditionFailed"
                || code == "ConditionalRequestConflict"
            {
                Kind::Precondition
            } else if status == 401 || status == 403 || AUTH_CODES.contains(&code) {
                Kind::Auth
            } else if status == 429 || status >= 500 || THROTTLING_CODES.contains(&code) {
                Kind::Transient
            } else if status == 409 && code.is_empty() {
                // A 409 without a code in answer to a conditional write.
                Kind::Precondition
            } else {
                Kind::Other
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Kind::Transient
        }
        _ => Kind::Other,
    };
    Failure {
        kind,
        source: Box::new(SdkFailure(Box::new(err))),
        retried: false,
    }
}

/// A client error whose `Display` shows the whole chain (the SDK's own is terse), with
/// the original kept as the source.
#[derive(Debug)]
struct SdkFailure(BoxError);

impl fmt::Display for SdkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", aws_sdk_s3::error::DisplayErrorContext(&*self.0))
    }
}

impl std::error::Error for SdkFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Failure {
    /// Converts into the error callers see: `NotFound` for `key`, `Unavailable` when the
    /// service stayed unreachable, an authentication error naming `credentials`.
    pub(crate) fn into_error(self, key: &str, credentials: &str) -> Error {
        match self.kind {
            Kind::NotFound => Error::not_found(key),
            Kind::Transient => Error::unavailable(BACKEND, self.source),
            Kind::Auth => {
                let code = self
                    .source
                    .to_string()
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .find(|word| AUTH_CODES.contains(word))
                    .unwrap_or("access denied")
                    .to_owned();
                Error::backend(
                    BACKEND,
                    AuthError {
                        credentials: credentials.to_owned(),
                        code,
                        source: self.source,
                    },
                )
            }
            Kind::Precondition | Kind::Other => Error::backend(BACKEND, self.source),
        }
    }
}

/// How requests are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails with a non-transient error, or has been tried
    /// `max_attempts` times, pausing with jittered exponential backoff in between.
    pub(crate) async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempts =
            Backoff::new(self.initial_backoff, self.max_backoff, self.max_attempts).attempts();
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(mut failure) => {
                    let attempt = attempts.attempt();
                    failure.retried = attempt > 1;
                    if failure.kind != Kind::Transient {
                        return Err(failure);
                    }
                    let Some(pause) = attempts.next_pause() else {
                        return Err(failure);
                    };
                    tracing::debug!(attempt, error = %failure.source, "s3 request failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn failure(kind: Kind) -> Failure {
        Failure {
            kind,
            source: Box::new(Message("boom".into())),
            retried: false,
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_up_to_the_bound() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Failure> = policy(3)
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(failure(Kind::Transient)) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let failure = result.err().map(|f| (f.kind, f.retried));
        assert_eq!(failure, Some((Kind::Transient, true)));
        assert!(matches!(
            self::failure(Kind::Transient).into_error("k", "creds"),
            Error::Unavailable { backend: "s3", .. }
        ));
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        for kind in [Kind::Auth, Kind::NotFound, Kind::Precondition, Kind::Other] {
            let calls = AtomicU32::new(0);
            let result: Result<(), Failure> = policy(5)
                .run(|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move { Err(failure(kind)) }
                })
                .await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{kind:?}");
            assert!(result.is_err());
        }
    }

    #[tokio::test]
    async fn a_success_after_a_failure_is_returned() {
        let calls = AtomicU32::new(0);
        let result = policy(4)
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(failure(Kind::Transient))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.ok(), Some(1));
    }

    #[test]
    fn auth_errors_name_the_credentials_not_the_secret() {
        let err = Failure {
            kind: Kind::Auth,
            source: Box::new(Message("InvalidAccessKeyId: unknown key".into())),
            retried: false,
        }
        .into_error("k", "the explicitly configured access key id \"AKID\"");
        let text = err.to_string();
        assert!(text.contains("AKID"), "{text}");
        assert!(text.contains("InvalidAccessKeyId"), "{text}");
        assert!(matches!(err, Error::Backend { backend: "s3", .. }));
        assert!(matches!(
            failure(Kind::NotFound).into_error("a/b", ""),
            Error::NotFound { key } if key == "a/b"
        ));
    }
}
