//! The contracts at the heart of certstore: how certificates, keys, ACME accounts,
//! challenge tokens and locks are stored and shared by a fleet of TLS servers.
//!
//! - [`Storage`]: an async key-value store every node shares (file system, S3, Azure
//!   Blob, SQL, Redis, or your own).
//! - [`Locker`]: leases for mutual exclusion across the fleet; [`lock`] waits for one and
//!   keeps it alive.
//! - [`Cache`]: the in-memory map the TLS handshake reads certificates from.
//! - [`MemoryStorage`]: both traits in memory, for tests and one process.
//! - [`metrics`]: numbers for dashboards and alerts through the `metrics` facade, and
//!   [`Metered`](metrics::Metered), the storage wrapper that times every operation.
//! - `listener` (cargo feature `listener`; `axum` adds `axum::serve` support): a TLS
//!   listener that completes handshakes concurrently, with a deadline.
//!
//! ```
//! use std::sync::Arc;
//! use cert_core::{lock, LockOptions, Locker, MemoryStorage, Storage, StorageExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cert_core::Result<()> {
//! let storage = Arc::new(MemoryStorage::new());
//! let guard = lock(storage.clone() as Arc<dyn Locker>, "issue/example.com", &LockOptions::default()).await?;
//! if storage.load_opt("certificates/local/example.com/example.com.crt").await?.is_none() {
//!     storage.store("certificates/local/example.com/example.com.crt", b"PEM").await?;
//! }
//! guard.release().await?;
//! assert_eq!(storage.list("certificates", true).await?.len(), 1);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backoff;
mod cache;
pub mod certificate;
pub mod challenge;
mod compose;
mod error;
pub mod issuer;
pub mod keys;
#[cfg(feature = "listener")]
pub mod listener;
mod lock;
mod lock_admin;
pub mod manager;
mod memory;
pub mod metrics;
pub mod record;
mod refusals;
pub mod resolver;
mod storage;
pub mod testing;

pub use cache::Cache;
pub use certificate::{CertificateError, CertificateMeta, KeyType, StoredCertificate};
pub use compose::{Layer, Store};
pub use error::{BoxError, Error, KeyProblem, Result};
pub use issuer::{
    AcmeConfig, AcmeIssuer, InternalIssuer, InternalIssuerConfig, IssueError, IssueRequest, Issued,
    Issuer,
};
pub use lock::{Lease, LockGuard, LockOptions, LockToken, Locker, lock, try_lock};
pub use lock_admin::{LockAdmin, LockInfo};
pub use manager::{
    CertManager, Event, ManageError, ManageFailures, ManagerConfig, OnDemandConfig, RetryPolicy,
};
pub use memory::MemoryStorage;
pub use resolver::{
    CertResolver, CertSource, HelloInfo, accept_lazy, accept_lazy_hello, server_config,
};
pub use storage::{
    KeyInfo, MAX_KEY_LEN, MAX_SEGMENT_LEN, MAX_VALUE_LEN, RESERVED_PREFIX, Storage, StorageExt,
    is_below, list_from_keys, range_end, range_start, validate_key, validate_prefix,
    validate_value,
};

pub use async_trait::async_trait;
pub use rustls;
pub use tokio_rustls;
