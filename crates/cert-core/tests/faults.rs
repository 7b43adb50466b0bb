//! Faults the engine must survive, on any backend: a process killed after every single
//! write of a first issuance, a renewal, an import, the internal CA's creation and an
//! account's creation; a lease lost in the middle of an order or of a save; failures
//! backing off across the fleet.
//!
//! The scenarios are functions over a [`Backend`] that opens fresh, isolated stores; the
//! [`fault_tests!`] macro turns them into one test each. This file runs them on
//! [`MemoryStorage`]; `integration-tests/tests/faults.rs` includes it and runs them on the
//! file system, Redis and PostgreSQL as well.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cert_core::record::{self, CertificateId, RecordState};
use cert_core::rustls::client::WebPkiServerVerifier;
use cert_core::rustls::client::danger::ServerCertVerifier;
use cert_core::rustls::pki_types::{ServerName, UnixTime};
use cert_core::rustls::sign::CertifiedKey;
use cert_core::rustls::{self, RootCertStore};
use cert_core::testing::{CountingIssuer, FaultyStorage};
use cert_core::{
    Cache, CertManager, Event, InternalIssuer, InternalIssuerConfig, Issuer, LockOptions,
    ManagerConfig, MemoryStorage, RetryPolicy, Store, async_trait,
};
use tokio::sync::broadcast;

/// The server name every scenario works on.
pub const NAME: &str = "faults.example";

/// Leaf lifetime: long enough that a fresh node with the default renewal ratio never finds
/// the certificate due (it renews at half-life), whatever the machine's load.
pub const LEAF: Duration = Duration::from_secs(3600);

/// Upper bound for anything a scenario waits on; only reached when something hangs.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Fresh, isolated stores of one backend.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new, empty store no other call of `open` shares.
    async fn open(&self) -> Arc<dyn Store>;

    /// Called once a scenario is done with `store`: removes what it holds (shared servers
    /// keep nothing from a passing run).
    async fn close(&self, store: Arc<dyn Store>) {
        wipe(store.as_ref()).await;
    }
}

/// Deletes every key of `store`.
pub async fn wipe(store: &dyn Store) {
    for prefix in store.list("", false).await.unwrap() {
        match store.delete(&prefix).await {
            Ok(()) | Err(cert_core::Error::NotFound { .. }) => {}
            Err(err) => panic!("cannot delete {prefix}: {err}"),
        }
    }
}

/// In-memory stores.
pub struct Memory;

#[async_trait]
impl Backend for Memory {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(MemoryStorage::new())
    }
}

/// `store` behind a fault-injecting wrapper, and the wrapper as a store.
fn faulty(store: &Arc<dyn Store>) -> (FaultyStorage<dyn Store>, Arc<dyn Store>) {
    let faulty = FaultyStorage::from_arc(Arc::clone(store));
    let as_store: Arc<dyn Store> = Arc::new(faulty.clone());
    (faulty, as_store)
}

fn internal(storage: &Arc<dyn Store>) -> Arc<InternalIssuer> {
    Arc::new(InternalIssuer::new(
        Arc::clone(storage),
        InternalIssuerConfig::default().with_leaf_lifetime(LEAF),
    ))
}

/// An internal issuer on `storage`, counted.
fn counted(storage: &Arc<dyn Store>) -> Arc<CountingIssuer> {
    CountingIssuer::new(internal(storage))
}

fn config() -> ManagerConfig {
    ManagerConfig::default()
        .with_retry(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_millis(400),
        ))
        .with_lock(LockOptions::default().with_ttl(Duration::from_secs(10)))
}

/// A configuration under which every certificate is due for renewal at once.
fn renewing_config() -> ManagerConfig {
    let mut config = config();
    config.renew_ratio = 1.0;
    config
}

fn node(storage: &Arc<dyn Store>, issuer: Arc<dyn Issuer>, config: ManagerConfig) -> CertManager {
    CertManager::new(
        Arc::clone(storage),
        Arc::new(Cache::new(100)),
        vec![issuer],
        config,
    )
}

/// A restarted node: a new manager with a new internal issuer on `storage`, healthy.
fn restarted(storage: &Arc<dyn Store>) -> (CertManager, Arc<CountingIssuer>) {
    let issuer = counted(storage);
    (node(storage, issuer.clone(), config()), issuer)
}

fn id() -> CertificateId {
    CertificateId::new("local", NAME)
}

/// The serial of the certificate record of `NAME`, asserting that it is never broken.
async fn stored_serial(store: &dyn Store, id: &CertificateId, context: &str) -> Option<String> {
    match record::load_certificate(store, id).await.unwrap() {
        None => None,
        Some(RecordState::Valid(loaded)) => Some(loaded.stored.meta.serial.clone()),
        Some(RecordState::Broken { reason }) => panic!("{context}: the record is broken: {reason}"),
        Some(other) => panic!("{context}: unexpected record state {other:?}"),
    }
}

/// What `manager` serves for `NAME`: asserts that the key and chain belong together and
/// that the leaf covers the name, and returns the serial.
fn served(manager: &CertManager, context: &str) -> (String, Arc<CertifiedKey>) {
    let certified = manager
        .cache()
        .get(NAME)
        .unwrap_or_else(|| panic!("{context}: nothing served for {NAME}"));
    certified
        .keys_match()
        .unwrap_or_else(|err| panic!("{context}: the served key and chain differ: {err}"));
    let leaf = cert_core::certificate::leaf_info(&certified.cert[0]).unwrap();
    assert!(
        leaf.names.iter().any(|n| n == NAME),
        "{context}: the served leaf covers {:?}",
        leaf.names
    );
    let meta = manager.certificate_meta(NAME).unwrap();
    assert_eq!(
        meta.serial, leaf.serial,
        "{context}: metadata and leaf agree"
    );
    (leaf.serial, certified)
}

/// Asserts that `certified` chains up to `root_pem` for `NAME`.
fn assert_chains_to(root_pem: &str, certified: &CertifiedKey, context: &str) {
    let mut roots = RootCertStore::empty();
    for der in cert_core::certificate::parse_chain(root_pem).unwrap() {
        roots.add(der).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let name = ServerName::try_from(NAME.to_owned()).unwrap();
    verifier
        .verify_server_cert(
            &certified.cert[0],
            &certified.cert[1..],
            &name,
            &[],
            UnixTime::now(),
        )
        .unwrap_or_else(|err| panic!("{context}: the leaf does not chain to the root: {err}"));
}

/// How many writes of `log` it takes to store `key` (its 1-based position).
fn commit_point(log: &[String], key: &str) -> u64 {
    let at = log
        .iter()
        .position(|k| k == key)
        .unwrap_or_else(|| panic!("{key} is never written: {log:?}"));
    at as u64 + 1
}

fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

/// Waits for the first event `wanted` accepts.
async fn wait_for(rx: &mut broadcast::Receiver<Event>, wanted: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the event stream closed"),
            }
        }
    })
    .await
    .expect("the awaited event never came")
}

/// Loads the record of `NAME` over and over until told to stop; returns the reasons of
/// any broken state seen, and how many loads ran.
fn watch_record(
    store: Arc<dyn Store>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    tokio::spawn(async move {
        let mut broken = Vec::new();
        let mut loads = 0;
        loop {
            // One more load after the stop, so the final state is always looked at.
            let last = stop.load(Ordering::SeqCst);
            if let Ok(Some(RecordState::Broken { reason })) =
                record::load_certificate(store.as_ref(), &id()).await
            {
                broken.push(reason);
            }
            loads += 1;
            if last {
                return (broken, loads);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// The root of the internal CA in `store`, as a restarted node reads it.
async fn fresh_issuer_root(store: &Arc<dyn Store>) -> String {
    internal(store).root_pem().await.unwrap()
}

#[path = "faults/backoff.rs"]
mod backoff;
#[path = "faults/crash.rs"]
mod crash;
#[path = "faults/lease.rs"]
mod lease;

pub use backoff::backoff_is_shared;
pub use crash::{
    account_store_is_atomic, ca_creation_after_every_write, import_after_every_write,
    obtain_after_every_write, renew_after_every_write,
};
pub use lease::{Stall, lease_lost};

/// One test per scenario on the backend `$backend` (an expression giving
/// `Option<impl Backend>`; `None` skips, as a missing server does). Invoke it in a child
/// module of the module holding the scenarios.
macro_rules! fault_tests {
    ($backend:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn obtain_survives_a_crash_after_every_write() {
            if let Some(backend) = $backend {
                super::obtain_after_every_write(&backend).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn renewal_survives_a_crash_after_every_write() {
            if let Some(backend) = $backend {
                super::renew_after_every_write(&backend).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn import_survives_a_crash_after_every_write() {
            if let Some(backend) = $backend {
                super::import_after_every_write(&backend).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ca_creation_survives_a_crash_after_every_write() {
            if let Some(backend) = $backend {
                super::ca_creation_after_every_write(&backend).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn account_store_is_atomic() {
            if let Some(backend) = $backend {
                super::account_store_is_atomic(&backend).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lease_lost_during_the_order_is_abandoned() {
            if let Some(backend) = $backend {
                super::lease_lost(&backend, super::Stall::Order).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lease_lost_during_the_save_is_fenced() {
            if let Some(backend) = $backend {
                super::lease_lost(&backend, super::Stall::Save).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn backoff_is_shared_by_the_fleet() {
            if let Some(backend) = $backend {
                super::backoff_is_shared(&backend).await;
            }
        }
    };
}

#[path = "faults/memory.rs"]
mod memory;
