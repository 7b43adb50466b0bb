//! [`SourceEvent`]: what an [`HttpSource`](super::HttpSource) reports to its subscribers.

use std::time::SystemTime;

use cert_core::metrics::names;

use super::Inner;

/// What an [`HttpSource`](super::HttpSource) reports to subscribers
/// ([`HttpSource::subscribe`](super::HttpSource::subscribe)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceEvent {
    /// The backend sent a certificate for `name`, kept until `expires`.
    Fetched {
        /// The server name.
        name: String,
        /// When the entry expires.
        expires: SystemTime,
    },
    /// The backend has no certificate for `name` (`204`); it is not asked again until
    /// `until`.
    NotFound {
        /// The server name.
        name: String,
        /// When the negative entry expires.
        until: SystemTime,
    },
    /// The warm copy of `name` was loaded from storage, with its original expiry.
    Loaded {
        /// The server name.
        name: String,
        /// When the entry expires.
        expires: SystemTime,
    },
    /// The warm copy of `name` was written to storage.
    Persisted {
        /// The server name.
        name: String,
    },
    /// Fetching `name` failed; nothing was remembered.
    Failed {
        /// The server name.
        name: String,
        /// What went wrong.
        error: String,
    },
    /// Fetching `name` failed and its expired certificate is served instead, until
    /// `until` at the latest.
    ServingStale {
        /// The server name.
        name: String,
        /// What went wrong.
        error: String,
        /// The last moment the stale certificate may be served.
        until: SystemTime,
    },
    /// Reading or writing the warm copy of `name` failed (the fetch itself went on).
    StorageFailed {
        /// The server name.
        name: String,
        /// What went wrong.
        error: String,
    },
}

impl Inner {
    /// Sends `event` to subscribers and counts it in the metrics.
    pub(super) fn emit(&self, event: SourceEvent) {
        let outcome = match &event {
            SourceEvent::Fetched { .. } => Some("fetched"),
            SourceEvent::Loaded { .. } => Some("warm"),
            SourceEvent::NotFound { .. } => {
                metrics::counter!(names::SOURCE_NEGATIVE_ENTRIES).increment(1);
                Some("not_found")
            }
            SourceEvent::Failed { .. } => Some("failed"),
            _ => None,
        };
        if let Some(outcome) = outcome {
            metrics::counter!(names::SOURCE_FETCHES, "outcome" => outcome).increment(1);
        }
        let _ = self.events.send(event);
    }
}
