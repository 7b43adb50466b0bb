//! Certificates that come from elsewhere than the engine's own issuers.
//!
//! - [`HttpSource`]: a server that does not own its certificates asks an HTTP backend for
//!   the PEM bundle of each server name and keeps it in memory for as long as the
//!   backend's `Cache-Control` says (or a fixed TTL), with negative entries for `204`,
//!   errors never remembered, one request per cold name however many handshakes wait, a
//!   fetch detached from the handshake, an optional warm copy in any
//!   [`Storage`](cert_core::Storage) and an optional stale-if-error grace. It is a
//!   [`CertSource`](cert_core::CertSource): one [`CertResolver`](cert_core::CertResolver)
//!   serves managed ACME certificates and sourced ones side by side.
//! - [`GeneratedStore`]: for intercepting proxies that mint a certificate per host, runs
//!   the costly generation once per host (once per fleet with a shared storage and its
//!   cluster lock) and keeps the result in a bounded cache.
//!
//! A proxy minting leaf certificates from a local CA:
//!
//! ```
//! use std::sync::Arc;
//! use cert_core::MemoryStorage;
//! use cert_source::{GeneratedStore, PemBundle};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ca_key = rcgen::KeyPair::generate()?;
//! let ca = rcgen::CertificateParams::new(Vec::<String>::new())?.self_signed(&ca_key)?;
//! let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), ca_key)?;
//!
//! let store = GeneratedStore::new(10_000).with_storage(Arc::new(MemoryStorage::new()));
//! for _ in 0..3 {
//!     let cert = store
//!         .fetch("intercepted.example", || async {
//!             let key = rcgen::KeyPair::generate()?;
//!             let leaf = rcgen::CertificateParams::new(vec!["intercepted.example".into()])?
//!                 .signed_by(&key, &issuer)?;
//!             Ok::<_, rcgen::Error>(PemBundle::new(leaf.pem(), key.serialize_pem()))
//!         })
//!         .await?;
//!     assert_eq!(cert.cert.len(), 1);
//! }
//! assert_eq!(store.generations(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! An HTTP source next to a [`CertManager`](cert_core::CertManager), in one TLS server:
//!
//! ```no_run
//! use std::sync::Arc;
//! use cert_core::{accept_lazy, server_config, CertManager};
//! use cert_source::{HttpSource, HttpSourceConfig};
//!
//! # async fn serve(manager: CertManager, listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
//! let source = HttpSource::new(
//!     HttpSourceConfig::new("https://certs.internal/get")
//!         .with_header("authorization", "Bearer secret")?,
//! )?;
//! // The manager's certificates first, then the backend's.
//! let resolver = Arc::new(manager.resolver().with_source(Arc::new(source)));
//! let config = Arc::new(server_config(resolver.clone())?);
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let (config, resolver, manager) = (config.clone(), resolver.clone(), manager.clone());
//!     tokio::spawn(async move {
//!         let tls = accept_lazy(tcp, config, |name| async move {
//!             manager.prepare_handshake(name.clone()).await;
//!             resolver.prepare(name.as_deref()).await;
//!         })
//!         .await;
//!         // ... serve `tls`
//! #       drop(tls);
//!     });
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod bundle;
mod error;
mod generated;
mod http;

pub use bundle::{PemBundle, Validated};
pub use error::{GenerateError, SourceError};
pub use generated::{GENERATED, GeneratedStore};
pub use http::{EntryInfo, HttpSource, HttpSourceConfig, SourceEvent};
