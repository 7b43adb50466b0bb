//! certstore as one dependency: the certificate engine, storage URLs, every backend (by
//! cargo feature), `Encrypted<S>`, and a TLS listener for axum, hyper and others.
//!
//! One string picks the backend a fleet shares — a directory, Redis, PostgreSQL,
//! MySQL/MariaDB, SQLite, S3 or Azure Blob Storage, optionally sealed with
//! `encrypted+` — and [`open`] turns it into an `Arc<dyn Store>` ready for the
//! certificate engine:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! use std::sync::Arc;
//! use certstore::{Cache, CertManager, InternalIssuer, InternalIssuerConfig, ManagerConfig};
//!
//! let url = format!("{}/certs", dir.path().display()); // or redis://..., s3://..., ...
//! let opened = certstore::open(&url, &certstore::OpenOptions::default()).await?;
//! println!("using {}", opened.description);
//! let ca = Arc::new(InternalIssuer::new(opened.store.clone(), InternalIssuerConfig::default()));
//! let manager = CertManager::new(opened.store.clone(), Arc::new(Cache::new(100)), vec![ca], ManagerConfig::default());
//! manager.manage(["localhost"]).await?;
//! // The root clients trust, from any storage:
//! let root = InternalIssuer::load_root(opened.store.as_ref(), "local").await?;
//! assert!(root.is_some_and(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----")));
//! # Ok(())
//! # }
//! ```
//!
//! What this crate gathers:
//!
//! - the engine: [`cert_core`] whole, and its everyday types here ([`CertManager`],
//!   [`InternalIssuer`], [`AcmeIssuer`], [`Cache`], [`server_config`], ...);
//! - storage URLs: [`open`], [`StorageUrl`] for every URL form, [`redact`] for printing
//!   URLs safely;
//! - the backends, each behind its cargo feature: `FileStorage` (`file`),
//!   `RedisStorage` (`redis`), `SqlStorage` (`postgres`, `mysql`, `sqlite`), `S3Storage`
//!   (`s3`), `AzureStorage` (`azure`), and `Encrypted<S>` (`encrypted`), with their crates
//!   re-exported (`certstore::cert_redis`, ...);
//! - `TlsListener` (feature `listener`; `axum` makes it an `axum::serve` listener);
//! - metrics: every storage [`open`] returns is timed and counted, and the engine records
//!   its own numbers through the `metrics` facade ([`cert_core::metrics`]); `prometheus`
//!   (feature `prometheus`) serves them in Prometheus text format.
//!
//! Every feature is on by default, including `cli`, the `certstore` command (this crate's
//! binary: serving a demo, listing, exporting and importing certificates, migrating
//! between backends, re-keying, locks, cleaning and checking). A program compiles only
//! what it names, without the command's dependencies:
//! `certstore = { version = "0.1", default-features = false, features = ["redis", "axum"] }`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod drill;
pub mod inventory;
pub mod migrate;
mod open;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod redact;
mod url;

pub use cert_core;
#[cfg(feature = "listener")]
pub use cert_core::listener::{self, Incoming, ListenerOptions, TlsListener};
pub use cert_core::{
    AcmeConfig, AcmeIssuer, Cache, CertManager, CertResolver, Event, InternalIssuer,
    InternalIssuerConfig, Issuer, LockAdmin, LockInfo, Locker, ManageFailures, ManagerConfig,
    OnDemandConfig, Storage, Store, rustls, server_config, tokio_rustls,
};

#[cfg(feature = "azure")]
pub use cert_azure::{self, AzureStorage};
#[cfg(feature = "encrypted")]
pub use cert_encrypted::{self, Encrypted, KeyRing, SecretKey};
#[cfg(feature = "file")]
pub use cert_file::{self, FileStorage};
#[cfg(feature = "redis")]
pub use cert_redis::{self, RedisStorage};
#[cfg(feature = "s3")]
pub use cert_s3::{self, S3Storage};
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use cert_sql::{self, SqlStorage};
#[cfg(feature = "encrypted")]
pub use open::EncryptedStore;
pub use open::{
    AZURE_CONNECTION_STRING_ENV, AZURE_KEY_ENV, AZURE_SAS_ENV, KEY_ENV, OpenError, OpenOptions,
    Opened, PREVIOUS_KEYS_ENV, open,
};
pub use redact::redact;
pub use url::{Backend, StorageUrl, Target, UrlError};

/// The README's Rust snippets, compiled (and those without `no_run`, run) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme {}
