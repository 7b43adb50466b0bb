//! Mapping the Redis client's errors into [`cert_core::Error`].

use std::future::Future;
use std::time::Duration;

use cert_core::{Error, Result};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The backend name carried by every error of this crate.
pub(crate) const BACKEND: &str = "redis";

/// `Unavailable` (retryable) for failures of the connection or a server that is loading,
/// failing over or busy; `Backend` for everything else. The client's error stays the
/// source.
pub(crate) fn map_error(err: RedisError) -> Error {
    if is_unavailable(&err) {
        Error::unavailable(BACKEND, err)
    } else {
        Error::backend(BACKEND, err)
    }
}

fn is_unavailable(err: &RedisError) -> bool {
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
    {
        return true;
    }
    match err.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => true,
        // A long-running script blocks the server; it answers again once it ends.
        _ => err.code() == Some("BUSY"),
    }
}

/// Runs one request, bounded by `timeout`: a request still pending by then fails with
/// `Unavailable` (a dead or unreachable server never hangs the caller).
pub(crate) async fn bounded<T>(
    timeout: Duration,
    request: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result.map_err(map_error),
        Err(_) => Err(Error::unavailable(
            BACKEND,
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_retryable() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(map_error(refused).is_retryable());
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(map_error(reset).is_retryable());
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(map_error(timeout).is_retryable());
    }

    #[test]
    fn other_failures_are_backend_errors_with_source() {
        let err = RedisError::from((ErrorKind::UnexpectedReturnType, "bad type"));
        let mapped = map_error(err);
        assert!(matches!(
            mapped,
            Error::Backend {
                backend: "redis",
                ..
            }
        ));
        assert!(std::error::Error::source(&mapped).is_some());
    }

    #[tokio::test]
    async fn a_pending_request_times_out_as_unavailable() {
        let started = std::time::Instant::now();
        let result: Result<()> = bounded(
            Duration::from_millis(50),
            std::future::pending::<redis::RedisResult<()>>(),
        )
        .await;
        assert!(matches!(
            result,
            Err(Error::Unavailable {
                backend: "redis",
                ..
            })
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
