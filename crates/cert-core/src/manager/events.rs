//! What a [`CertManager`](super::CertManager) reports: events and errors.

use std::time::Duration;

use crate::Error;
use crate::issuer::IssueError;

/// What the manager reports to subscribers ([`CertManager::subscribe`](super::CertManager::subscribe)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Starting to obtain a certificate for `name` from `issuer`.
    Obtaining {
        /// The server name.
        name: String,
        /// The issuer's identity.
        issuer: String,
    },
    /// A first certificate for `name` was obtained and stored.
    Obtained {
        /// The server name.
        name: String,
        /// The issuer's identity.
        issuer: String,
    },
    /// A replacement certificate for `name` was obtained and stored.
    Renewed {
        /// The server name.
        name: String,
        /// The issuer's identity.
        issuer: String,
    },
    /// A certificate for `name` was loaded from storage into the cache (at start, or
    /// because another node had obtained or renewed it).
    Loaded {
        /// The server name.
        name: String,
    },
    /// Obtaining or renewing failed; the next attempt is in `retry_in` (if any).
    Failed {
        /// The server name.
        name: String,
        /// The issuer's identity, when one failed.
        issuer: Option<String>,
        /// What went wrong.
        error: String,
        /// When the next attempt is due.
        retry_in: Option<Duration>,
    },
    /// `name` is no longer served or renewed by this node (see
    /// [`CertManager::unmanage`](super::CertManager::unmanage)).
    Evicted {
        /// The server name.
        name: String,
    },
    /// The stored record of `name` is unusable (a value that does not decode, a key that
    /// does not match its certificate, a value that fails to decrypt). The certificate in
    /// memory, if any, keeps being served and the name is issued again under its lock.
    Broken {
        /// The server name.
        name: String,
        /// Why the record cannot be used.
        reason: String,
    },
    /// Work on `name` was abandoned because the issuance lock's lease was lost (a storage
    /// stall or a pause longer than its time to live): nothing was saved, and the name is
    /// retried later with backoff.
    Abandoned {
        /// The server name.
        name: String,
        /// What was under way.
        reason: String,
    },
    /// An expired certificate was removed from storage by cleaning.
    Cleaned {
        /// The storage prefix removed.
        prefix: String,
    },
}

/// Why a name could not be managed.
///
/// The messages do not repeat the name: [`ManageFailures`], events and logs carry it
/// beside the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The shared storage or its locks failed.
    #[error("storage: {0}")]
    Storage(#[from] Error),
    /// Every issuer failed; the last failure is kept.
    #[error("no issuer could issue a certificate: {last}")]
    Issue {
        /// The server name.
        name: String,
        /// The last issuer's failure.
        #[source]
        last: IssueError,
    },
    /// The manager has no issuer.
    #[error("no issuer configured")]
    NoIssuer,
    /// The name is not a valid server name, or one too long to be stored.
    #[error("invalid server name {0:?}")]
    InvalidName(String),
    /// Attempts for the name are backing off after failures (seen by this node or, through
    /// storage, by another one); nothing was tried.
    #[error("backing off after {failures} failed attempts; next attempt in {}s", retry_in.as_secs())]
    BackingOff {
        /// The server name.
        name: String,
        /// The consecutive failures so far.
        failures: u32,
        /// When the next attempt is due.
        retry_in: Duration,
    },
    /// The issuance lock's lease was lost while the name was being worked on; nothing was
    /// saved.
    #[error("the issuance lock was lost; the work was abandoned")]
    LeaseLost {
        /// The server name.
        name: String,
    },
}

impl ManageError {
    /// The variant as a short lower-case word (`storage`, `issuer`, `no_issuer`,
    /// `invalid_name`, `backing_off`, `lease_lost`): a label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ManageError::Storage(_) => "storage",
            ManageError::Issue { .. } => "issuer",
            ManageError::NoIssuer => "no_issuer",
            ManageError::InvalidName(_) => "invalid_name",
            ManageError::BackingOff { .. } => "backing_off",
            ManageError::LeaseLost { .. } => "lease_lost",
        }
    }
}

/// The names [`CertManager::manage`](super::CertManager::manage) could not bring into
/// service, each with its cause, in the order they failed.
///
/// An `std::error::Error` whose message lists every name with its cause
/// (`2 names could not be managed: a.example: no issuer configured; b.example: ...`), so
/// `manage(..).await?` works in any function returning `Result<_, Box<dyn Error>>` (or
/// `anyhow::Result`). Its [`source`](std::error::Error::source) is the first failure.
/// The failures stay typed: it reads as a slice of `(name, error)` pairs, and
/// [`into_inner`](ManageFailures::into_inner) gives them up.
///
/// ```
/// use std::sync::Arc;
/// use cert_core::{Cache, CertManager, ManageError, ManagerConfig, MemoryStorage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A manager without issuers can serve nothing it has not stored already.
/// let manager = CertManager::new(
///     Arc::new(MemoryStorage::new()),
///     Arc::new(Cache::new(10)),
///     vec![],
///     ManagerConfig::default(),
/// );
/// let failures = manager.manage(["a.example"]).await.unwrap_err();
/// assert_eq!(failures.to_string(), "1 name could not be managed: a.example: no issuer configured");
/// for (name, err) in failures.iter() {
///     assert!(matches!(err, ManageError::NoIssuer), "{name}");
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct ManageFailures(Vec<(String, ManageError)>);

impl ManageFailures {
    pub(super) fn new(failures: Vec<(String, ManageError)>) -> Self {
        ManageFailures(failures)
    }

    /// The failures, as `(name, error)` pairs.
    pub fn as_slice(&self) -> &[(String, ManageError)] {
        &self.0
    }

    /// The failures, as `(name, error)` pairs.
    pub fn into_inner(self) -> Vec<(String, ManageError)> {
        self.0
    }
}

impl std::ops::Deref for ManageFailures {
    type Target = [(String, ManageError)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl IntoIterator for ManageFailures {
    type Item = (String, ManageError);
    type IntoIter = std::vec::IntoIter<(String, ManageError)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::fmt::Display for ManageFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} name{} could not be managed",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for (i, (name, err)) in self.0.iter().enumerate() {
            write!(f, "{} {name}: {err}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

impl std::error::Error for ManageFailures {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .first()
            .map(|(_, err)| err as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `anyhow::Error` and `Box<dyn Error + Send + Sync>` need from an error type.
    fn assert_boxable<E: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn failures_name_each_name_once_with_its_cause() {
        assert_boxable::<ManageFailures>();
        let failures = ManageFailures::new(vec![
            (
                "a.example".into(),
                ManageError::BackingOff {
                    name: "a.example".into(),
                    failures: 3,
                    retry_in: Duration::from_secs(30),
                },
            ),
            (
                "b.example".into(),
                ManageError::LeaseLost {
                    name: "b.example".into(),
                },
            ),
        ]);
        assert_eq!(
            failures.to_string(),
            "2 names could not be managed: a.example: backing off after 3 failed attempts; \
             next attempt in 30s; b.example: the issuance lock was lost; the work was abandoned"
        );
        let source = std::error::Error::source(&failures).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("backing off after 3 failed attempts; next attempt in 30s")
        );
        assert!(matches!(
            failures.as_slice(),
            [
                (_, ManageError::BackingOff { failures: 3, .. }),
                (_, ManageError::LeaseLost { .. })
            ]
        ));
        let names: Vec<String> = failures.into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["a.example", "b.example"]);
    }
}
