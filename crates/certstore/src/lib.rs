//! Storage URLs and tools for certstore.
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
//! use cert_core::{Cache, CertManager, InternalIssuer, InternalIssuerConfig, ManagerConfig};
//!
//! let url = format!("{}/certs", dir.path().display()); // or redis://..., s3://..., ...
//! let opened = certstore::open(&url, &certstore::OpenOptions::default()).await?;
//! println!("using {}", opened.description);
//! let ca = Arc::new(InternalIssuer::new(opened.store.clone(), InternalIssuerConfig::default()));
//! let manager = CertManager::new(opened.store, Arc::new(Cache::new(100)), vec![ca], ManagerConfig::default());
//! manager.manage(["localhost"]).await.map_err(|e| format!("{e:?}"))?;
//! # Ok(())
//! # }
//! ```
//!
//! See [`StorageUrl`] for every URL form, [`redact`] for printing URLs safely, and the
//! `certstore` command (this crate's binary) for operating a storage: listing,
//! exporting and importing certificates, migrating between backends, re-keying,
//! listing and clearing locks, cleaning and checking.
//!
//! Each backend sits behind a cargo feature (`file`, `redis`, `postgres`, `mysql`,
//! `sqlite`, `s3`, `azure`, `encrypted`), all on by default; the `cli` feature builds
//! the command. A library user compiles only what it names:
//! `certstore = { version = "0.1", default-features = false, features = ["redis"] }`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod drill;
pub mod inventory;
pub mod migrate;
mod open;
mod redact;
mod url;

pub use cert_core::{LockAdmin, LockInfo};
#[cfg(feature = "encrypted")]
pub use open::EncryptedStore;
pub use open::{
    AZURE_CONNECTION_STRING_ENV, AZURE_KEY_ENV, AZURE_SAS_ENV, KEY_ENV, OpenError, OpenOptions,
    Opened, PREVIOUS_KEYS_ENV, open,
};
pub use redact::redact;
pub use url::{Backend, StorageUrl, Target, UrlError};
