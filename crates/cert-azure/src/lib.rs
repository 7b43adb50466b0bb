//! Azure Blob storage and locks for certstore.
//!
//! [`AzureStorage`] keeps every key as a block blob in one container, below an optional
//! prefix, and implements both [`Storage`](cert_core::Storage) and
//! [`Locker`](cert_core::Locker).
//!
//! # Client library
//!
//! It is built on Microsoft's maintained official crates `azure_storage_blob` and
//! `azure_core` (1.x), not on the older unofficial `azure_storage_blobs`, whose README
//! says it will not be updated. HTTP goes through reqwest with rustls (aws-lc-rs); no
//! OpenSSL. The client library's own retry policy is turned off: this crate retries
//! transient failures itself (see [`RetryConfig`]) so the total time is bounded, then
//! reports [`Error::Unavailable`](cert_core::Error::Unavailable) with backend `"azure"`.
//!
//! # Credentials
//!
//! - an Entra ID [`TokenCredential`] (for example one from the `azure_identity` crate):
//!   [`AzureStorage::with_token_credential`], for production over HTTPS;
//! - a SAS URL for the container: [`AzureStorage::with_sas_url`];
//! - an account name and key: [`AzureStorage::with_account_key`] signs a service SAS for
//!   the container from the key (HMAC-SHA256 over the string-to-sign the Azure Storage
//!   documentation gives) and renews it before it expires;
//! - [`AzureStorage::azurite`]: the emulator's well-known development account.
//!
//! `Debug` shows the container URL and the kind of credential, never a key or a SAS
//! token, and error messages have signatures replaced.
//!
//! # Keys and listing
//!
//! A key `a/b` is the blob `PREFIX/a/b`. Blob names are flat, so a key may hold a value and
//! be a prefix of other keys at the same time; nothing is lost either way. Listing pages
//! through the flat names below the prefix and groups direct children itself.
//!
//! # Locks
//!
//! A lock is a **blob lease** on the empty blob `PREFIX/.certstore-locks/NAME` (created on
//! first use; names under `.certstore` are never valid keys, so locks never show up among
//! keys). The lease ID is the lock token. The blob service enforces expiry with its own
//! clock and lets exactly one of several racing acquirers take a free or expired lease;
//! only a request carrying the lease ID can renew or release it.
//!
//! Leases last 15 to 60 seconds: a time to live below 15 s is raised to 15 s and one above
//! 60 s is lowered to 60 s; the returned [`Lease`](cert_core::Lease) reports the duration
//! actually granted (whole seconds), and `refresh` renews for that same duration (the
//! service renews a lease for the duration it was acquired with). A crashed holder's lock
//! is therefore taken over at most 15 to 60 s after its last renewal.
//!
//! # Fenced writes
//!
//! `store_fenced` and `delete_fenced` keep the default of [`Storage`](cert_core::Storage):
//! the lease's local deadline is checked, with its fence margin (a fifth of the time to
//! live, 50 ms to 10 s), right before the plain write is sent. A blob lease guards writes
//! to its own blob only, and the lock is a lease on a separate blob, so the service cannot
//! refuse a value's write on behalf of the lock. The window that remains: a request that
//! stalls after the check for longer than the margin (a paused process, a slow network,
//! this crate's retries) can land after the lease expired and another node took the lock
//! over. With leases of 15 to 60 s the margin is 3 to 10 s.
//!
//! # Example
//!
//! ```no_run
//! use cert_azure::AzureStorage;
//! use cert_core::Storage;
//!
//! # async fn run() -> cert_core::Result<()> {
//! let storage = AzureStorage::azurite("http://127.0.0.1:10000/devstoreaccount1", "certs")?
//!     .with_prefix("cluster-a")?;
//! storage.create_container_if_missing().await?;
//! storage.store("certificates/example.com.crt", b"PEM").await?;
//! assert_eq!(storage.load("certificates/example.com.crt").await?, b"PEM");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod config;
mod container;
mod error;
mod listing;
mod lock;
mod sas;
mod storage;

pub use azure_core::credentials::TokenCredential;
pub use config::{AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY};
pub use error::{AuthError, RetryConfig, ServiceError};
pub use lock::{MAX_LEASE, MIN_LEASE, lease_duration};
pub use storage::AzureStorage;
