//! The contracts at the heart of certstore: how certificates, keys, ACME accounts,
//! challenge tokens and locks are stored and shared by a fleet of TLS servers.
//!
//! - [`Storage`]: an async key-value store every node shares (file system, S3, Azure
//!   Blob, SQL, Redis, or your own).
//! - [`Locker`]: leases for mutual exclusion across the fleet; [`lock`] waits for one and
//!   keeps it alive.
//! - [`MemoryStorage`]: both traits in memory, for tests and one process.
//! - [`metrics`]: numbers for dashboards and alerts through the `metrics` facade, and
//!   [`Metered`](metrics::Metered), the storage wrapper that times every operation.
//!
//! The certificate engine (cargo feature `engine`, on by default) is built on them:
//! `CertManager` obtains, stores, loads and renews certificates for a set of names across
//! the fleet, from the `Issuer`s it is given (`InternalIssuer`, a local CA, and
//! `AcmeIssuer`, ACME with HTTP-01, TLS-ALPN-01 and DNS-01 challenges any node answers);
//! `Cache` is the in-memory map the TLS handshake reads, and `CertResolver` the rustls
//! resolver serving from it; `record` keeps each certificate as one record with a single
//! commit point. A storage backend needs none of it: it depends on this crate with
//! `default-features = false`, and compiles neither ACME, nor certificate generation, nor
//! an HTTP client.
//!
//! `listener` (cargo feature `listener`; `axum` adds `axum::serve` support) is a TLS
//! listener that completes handshakes concurrently, with a deadline.
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
#[cfg(feature = "engine")]
mod cache;
#[cfg(feature = "engine")]
pub mod certificate;
#[cfg(feature = "engine")]
pub mod challenge;
mod compose;
mod error;
#[cfg(feature = "engine")]
pub mod issuer;
pub mod keys;
#[cfg(feature = "listener")]
pub mod listener;
mod lock;
mod lock_admin;
#[cfg(feature = "engine")]
pub mod manager;
mod memory;
pub mod metrics;
#[cfg(feature = "engine")]
pub mod record;
#[cfg(feature = "engine")]
mod refusals;
#[cfg(feature = "engine")]
pub mod resolver;
mod storage;
pub mod testing;

#[cfg(feature = "engine")]
pub use cache::Cache;
#[cfg(feature = "engine")]
pub use certificate::{CertificateError, CertificateMeta, KeyType, StoredCertificate};
pub use compose::{Layer, Store};
pub use error::{BoxError, Error, KeyProblem, Result};
#[cfg(feature = "engine")]
pub use issuer::{
    AcmeConfig, AcmeIssuer, InternalIssuer, InternalIssuerConfig, IssueError, IssueRequest, Issued,
    Issuer,
};
pub use lock::{Lease, LockGuard, LockOptions, LockToken, Locker, lock, try_lock};
pub use lock_admin::{LockAdmin, LockInfo};
#[cfg(feature = "engine")]
pub use manager::{
    CertManager, Event, ManageError, ManageFailures, ManagerConfig, OnDemandConfig, RetryPolicy,
};
pub use memory::MemoryStorage;
#[cfg(feature = "engine")]
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
#[cfg(feature = "engine")]
pub use tokio_rustls;
