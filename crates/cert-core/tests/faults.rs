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

use cert_core::record::{self, CaState, CertificateId, RecordState};
use cert_core::rustls::client::WebPkiServerVerifier;
use cert_core::rustls::client::danger::ServerCertVerifier;
use cert_core::rustls::pki_types::{ServerName, UnixTime};
use cert_core::rustls::sign::CertifiedKey;
use cert_core::rustls::{self, RootCertStore};
use cert_core::testing::{CountingIssuer, FaultyStorage, self_signed_certificate};
use cert_core::{
    Cache, CertManager, Event, InternalIssuer, InternalIssuerConfig, Issuer, LockOptions,
    ManageError, ManagerConfig, MemoryStorage, RetryPolicy, StorageExt, Store, async_trait, keys,
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

/// A first issuance on a fresh store (the internal CA is created on the way), killed
/// after each of its writes in turn; a restarted node must then serve a sound certificate.
pub async fn obtain_after_every_write(backend: &dyn Backend) {
    // Count the writes once, on a healthy run.
    let store = backend.open().await;
    let (counter, storage) = faulty(&store);
    node(&storage, counted(&storage), config())
        .manage([NAME])
        .await
        .unwrap();
    let log = counter.written_keys();
    let total = log.len() as u64;
    let commit = commit_point(&log, &id().bundle_key());
    let ca_commit = commit_point(&log, &record::ca_bundle_key("local"));
    assert!(ca_commit < commit, "the CA is created first: {log:?}");
    drop(storage);
    backend.close(store).await;

    for k in 0..=total {
        let context = format!("obtain, killed after {k} of {total} writes");
        let store = backend.open().await;
        let (faults, storage) = faulty(&store);
        faults.fail_after_writes(k);
        let issuer = counted(&storage);
        let result = node(&storage, issuer.clone(), config())
            .manage([NAME])
            .await;
        assert_eq!(result.is_ok(), k == total, "{context}: {result:?}");

        let stored = stored_serial(store.as_ref(), &id(), &context).await;
        if k < commit {
            assert_eq!(stored, None, "{context}: nothing committed");
        } else {
            assert_eq!(
                stored.as_ref(),
                issuer.issued_serials().first(),
                "{context}"
            );
        }
        let ca = record::load_ca(store.as_ref(), "local").await.unwrap();
        match (&ca, k >= ca_commit) {
            (None, false) | (Some(CaState::Valid(..)), true) => {}
            other => panic!("{context}: unexpected CA state {other:?}"),
        }

        // Restart on the healed storage.
        faults.heal();
        let (fresh, fresh_issuer) = restarted(&store);
        fresh
            .manage([NAME])
            .await
            .unwrap_or_else(|err| panic!("{context}: {err:?}"));
        let (serial, certified) = served(&fresh, &context);
        if let Some(stored) = stored {
            assert_eq!(
                serial, stored,
                "{context}: the committed certificate is served"
            );
            assert_eq!(fresh_issuer.calls(), 0, "{context}: no second issuance");
        }
        let root = fresh_issuer_root(&store).await;
        assert_chains_to(&root, &certified, &context);
        assert_eq!(
            stored_serial(store.as_ref(), &id(), &context).await,
            Some(serial),
            "{context}: storage holds what is served"
        );
        drop((fresh, fresh_issuer, storage));
        backend.close(store).await;
    }
}

/// The root of the internal CA in `store`, as a restarted node reads it.
async fn fresh_issuer_root(store: &Arc<dyn Store>) -> String {
    internal(store).root_pem().await.unwrap()
}

/// A renewal of a certificate that is due, killed after each of its writes in turn: the
/// renewing node keeps serving, and a restarted node serves the old certificate or the new
/// one, never an error.
pub async fn renew_after_every_write(backend: &dyn Backend) {
    /// A store holding a certificate for `NAME`, and its serial.
    async fn with_certificate(backend: &dyn Backend) -> (Arc<dyn Store>, String) {
        let store = backend.open().await;
        let (first, _) = restarted(&store);
        first.manage([NAME]).await.unwrap();
        let (old, _) = served(&first, "before the renewal");
        (store, old)
    }

    let (store, _) = with_certificate(backend).await;
    let (counter, storage) = faulty(&store);
    let renewer = node(&storage, counted(&storage), renewing_config());
    let mut events = renewer.subscribe();
    renewer.manage([NAME]).await.unwrap();
    assert!(
        drain(&mut events)
            .iter()
            .any(|e| matches!(e, Event::Renewed { name, .. } if name == NAME)),
        "the certificate is due and renewed"
    );
    let log = counter.written_keys();
    let total = log.len() as u64;
    let commit = commit_point(&log, &id().bundle_key());
    drop((renewer, storage));
    backend.close(store).await;

    for k in 0..=total {
        let context = format!("renewal, killed after {k} of {total} writes");
        let (store, old) = with_certificate(backend).await;
        let (faults, storage) = faulty(&store);
        faults.fail_after_writes(k);
        let issuer = counted(&storage);
        let renewer = node(&storage, issuer.clone(), renewing_config());
        renewer
            .manage([NAME])
            .await
            .unwrap_or_else(|err| panic!("{context}: the old certificate is served: {err:?}"));
        let (serving, _) = served(&renewer, &context);
        let new = issuer.issued_serials();
        assert_eq!(new.len(), 1, "{context}: one renewal");
        assert!(serving == old || serving == new[0], "{context}");

        let stored = stored_serial(store.as_ref(), &id(), &context).await;
        let expected = if k < commit { &old } else { &new[0] };
        assert_eq!(stored.as_ref(), Some(expected), "{context}");

        faults.heal();
        let (fresh, fresh_issuer) = restarted(&store);
        fresh
            .manage([NAME])
            .await
            .unwrap_or_else(|err| panic!("{context}: {err:?}"));
        let (serial, _) = served(&fresh, &context);
        assert_eq!(
            &serial, expected,
            "{context}: the committed certificate is served"
        );
        assert_eq!(
            fresh_issuer.calls(),
            0,
            "{context}: not due on a normal node"
        );
        drop((fresh, fresh_issuer, renewer, storage));
        backend.close(store).await;
    }
}

/// `record::save_certificate` of an imported (self-signed) certificate killed after each
/// of its writes, over nothing and over an older record: loading gives the old record (or
/// none) or the new one, and only the copies may be stale.
pub async fn import_after_every_write(backend: &dyn Backend) {
    let id = CertificateId::new("imported", NAME);
    let certificate = || self_signed_certificate(&[NAME], "imported", LEAF).unwrap();
    for over_old in [false, true] {
        let mut total = None;
        let mut k = 0;
        while total.is_none_or(|total| k <= total) {
            let context = format!("import over an old record: {over_old}, killed after {k} writes");
            let store = backend.open().await;
            let old = if over_old {
                let old = certificate();
                record::save_certificate(store.as_ref(), NAME, &old, None)
                    .await
                    .unwrap();
                Some(old.meta.serial)
            } else {
                None
            };
            let (faults, storage) = faulty(&store);
            let new = certificate();
            if total.is_none() {
                // The first round is the healthy one that counts the writes.
                record::save_certificate(storage.as_ref(), NAME, &new, None)
                    .await
                    .unwrap();
                let log = faults.written_keys();
                assert_eq!(commit_point(&log, &id.bundle_key()), 1, "the bundle first");
                total = Some(log.len() as u64);
                drop(storage);
                backend.close(store).await;
                continue;
            }
            faults.fail_after_writes(k);
            let result = record::save_certificate(storage.as_ref(), NAME, &new, None).await;
            let complete = total == Some(k);
            assert_eq!(result.is_ok(), complete, "{context}: {result:?}");
            let stored = stored_serial(store.as_ref(), &id, &context).await;
            if k == 0 {
                assert_eq!(stored, old, "{context}: the old record stands");
            } else {
                assert_eq!(
                    stored,
                    Some(new.meta.serial.clone()),
                    "{context}: the new record"
                );
                let current = record::copies_current(store.as_ref(), &id, &new)
                    .await
                    .unwrap();
                assert_eq!(
                    current, complete,
                    "{context}: copies current only when complete"
                );
            }
            // The next save completes the record, copies included.
            faults.heal();
            record::save_certificate(storage.as_ref(), NAME, &new, None)
                .await
                .unwrap();
            assert!(
                record::copies_current(store.as_ref(), &id, &new)
                    .await
                    .unwrap()
            );
            drop(storage);
            backend.close(store).await;
            k += 1;
        }
    }
}

/// The internal CA's creation killed after each of its writes: a restarted issuer then
/// issues under a root that is the one committed, if any, and leaves chain to it.
pub async fn ca_creation_after_every_write(backend: &dyn Backend) {
    let store = backend.open().await;
    let (counter, storage) = faulty(&store);
    internal(&storage).root_pem().await.unwrap();
    let log = counter.written_keys();
    let total = log.len() as u64;
    assert_eq!(
        commit_point(&log, &record::ca_bundle_key("local")),
        1,
        "the bundle first"
    );
    drop(storage);
    backend.close(store).await;

    for k in 0..=total {
        let context = format!("CA creation, killed after {k} of {total} writes");
        let store = backend.open().await;
        let (faults, storage) = faulty(&store);
        faults.fail_after_writes(k);
        let result = internal(&storage).root_pem().await;
        assert_eq!(result.is_ok(), k == total, "{context}: {result:?}");
        let committed = match record::load_ca(store.as_ref(), "local").await.unwrap() {
            None => {
                assert_eq!(k, 0, "{context}: the CA was committed");
                None
            }
            Some(CaState::Valid(ca, _)) => {
                assert!(k > 0, "{context}: nothing was written");
                Some(ca.root_pem)
            }
            Some(other) => panic!("{context}: the CA record is unusable: {other:?}"),
        };

        faults.heal();
        let root = fresh_issuer_root(&store).await;
        if let Some(committed) = committed {
            assert_eq!(root, committed, "{context}: the committed CA is kept");
        }
        let root_copy = store.load(&record::ca_root_key("local")).await.unwrap();
        assert_eq!(
            root_copy,
            root.as_bytes(),
            "{context}: the root's copy is restored"
        );
        let (fresh, _) = restarted(&store);
        fresh
            .manage([NAME])
            .await
            .unwrap_or_else(|err| panic!("{context}: {err:?}"));
        let (_, certified) = served(&fresh, &context);
        assert_chains_to(&root, &certified, &context);
        drop((fresh, storage));
        backend.close(store).await;
    }
}

/// An ACME account is one value: its single store is atomic under a crash before it (no
/// account) and after it (the whole account).
pub async fn account_store_is_atomic(backend: &dyn Backend) {
    let key = keys::acme_account("https://acme.test/directory", "ops@faults.example");
    let value = br#"{"id":"https://acme.test/acct/1","credentials":{"key":"secret"}}"#;
    for k in 0..=1u64 {
        let store = backend.open().await;
        let (faults, storage) = faulty(&store);
        faults.fail_after_writes(k);
        let result = storage.store(&key, value).await;
        assert_eq!(
            result.is_ok(),
            k == 1,
            "killed after {k} writes: {result:?}"
        );
        let stored = store.load_opt(&key).await.unwrap();
        if k == 0 {
            assert_eq!(stored, None, "nothing written");
            assert!(matches!(result, Err(cert_core::Error::Unavailable { .. })));
        } else {
            assert_eq!(stored.as_deref(), Some(&value[..]), "the whole value");
        }
        // Whatever comes next is not written.
        assert!(storage.store(&key, b"{}").await.is_err());
        assert_eq!(store.load_opt(&key).await.unwrap(), stored);
        drop(storage);
        backend.close(store).await;
    }
}

/// The lock time to live of the node that loses its lease.
const SHORT_TTL: Duration = Duration::from_secs(1);

/// How a node loses its lease in [`lease_lost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Its CA takes longer than the lease to answer.
    Order,
    /// Its first write (the certificate's bundle) stalls for longer than the lease.
    Save,
}

/// Node A takes the name's lock with a short lease, then its lock refreshes stall and
/// either its issuer or its save stalls, so the lease is lost; node B, on the same
/// storage, waits for the lock and obtains the name. Exactly one certificate is stored,
/// both nodes serve it, A reports `Abandoned`, and no one ever sees a broken record.
pub async fn lease_lost(backend: &dyn Backend, stall: Stall) {
    let store = backend.open().await;
    let (faults, a_storage) = faulty(&store);
    let a_issuer = counted(&a_storage);
    let b_issuer = counted(&store);
    match stall {
        // The issuer never answers within the lease, and the lock refreshes stall past
        // the lease's deadline.
        Stall::Order => {
            a_issuer.set_delay(SHORT_TTL * 30);
            faults.stall_locks(SHORT_TTL * 30);
        }
        // The CA exists already, so A's first write is the certificate's bundle: the
        // store hangs there (lock refreshes included) for longer than the lease.
        Stall::Save => {
            fresh_issuer_root(&store).await;
            faults.stall_write(1, SHORT_TTL * 4);
        }
    }
    let a = node(
        &a_storage,
        a_issuer.clone(),
        config().with_lock(LockOptions::default().with_ttl(SHORT_TTL)),
    );
    let b = node(&store, b_issuer.clone(), config());

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_record(Arc::clone(&store), Arc::clone(&stop));
    let mut a_events = a.subscribe();
    let a_run = tokio::spawn({
        let a = a.clone();
        async move { a.manage([NAME]).await }
    });
    // A holds the lock once it starts ordering; B then has to wait for it.
    wait_for(&mut a_events, |e| matches!(e, Event::Obtaining { .. })).await;
    let b_run = tokio::spawn({
        let b = b.clone();
        async move { b.manage([NAME]).await }
    });
    let abandoned = wait_for(&mut a_events, |e| matches!(e, Event::Abandoned { .. })).await;
    let a_result = tokio::time::timeout(PATIENCE, a_run)
        .await
        .unwrap()
        .unwrap();
    let b_result = tokio::time::timeout(PATIENCE, b_run)
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let (broken, loads) = watcher.await.unwrap();

    let context = format!("lease lost during the {stall:?}");
    let Event::Abandoned { reason, .. } = &abandoned else {
        unreachable!()
    };
    let during = match stall {
        Stall::Order => "the order",
        Stall::Save => "saving",
    };
    assert!(reason.contains(during), "{context}: {reason}");
    match a_result {
        Err(failures) => assert!(
            matches!(failures.as_slice(), [(_, ManageError::LeaseLost { .. })]),
            "{context}: {failures:?}"
        ),
        Ok(()) => panic!("{context}: A gave up, it cannot succeed"),
    }
    b_result.unwrap_or_else(|err| panic!("{context}: B obtains: {err:?}"));
    assert!(
        broken.is_empty(),
        "{context}: broken records seen: {broken:?}"
    );
    assert!(loads > 0);

    // A's order, if it got one, was never stored; B's is the only certificate.
    let b_serials = b_issuer.issued_serials();
    assert_eq!(b_serials.len(), 1, "{context}: B issued once");
    let a_serials = a_issuer.issued_serials();
    match stall {
        Stall::Order => assert!(a_serials.is_empty(), "{context}: A's order was dropped"),
        Stall::Save => assert_eq!(a_serials.len(), 1, "{context}: A's certificate was issued"),
    }
    assert!(!a_serials.contains(&b_serials[0]));
    let entries = record::scan_certificates(store.as_ref()).await.unwrap();
    assert_eq!(entries.len(), 1, "{context}: one record: {entries:?}");
    let stored = stored_serial(store.as_ref(), &id(), &context).await;
    assert_eq!(
        stored.as_ref(),
        Some(&b_serials[0]),
        "{context}: B's certificate stored"
    );
    let (b_serial, _) = served(&b, &context);
    assert_eq!(b_serial, b_serials[0]);

    // A, healthy again, reloads and serves the same certificate without issuing.
    faults.heal();
    let calls = a_issuer.calls();
    a.manage([NAME])
        .await
        .unwrap_or_else(|err| panic!("{context}: A reloads: {err:?}"));
    let (a_serial, _) = served(&a, &context);
    assert_eq!(
        a_serial, b_serial,
        "{context}: one certificate served by both"
    );
    assert_eq!(
        a_issuer.calls(),
        calls,
        "{context}: A reloads without issuing"
    );
    drop((a, b, a_storage));
    backend.close(store).await;
}

/// A name whose issuer fails backs off across the fleet: a second node refuses to order
/// while the backoff runs (without calling its issuer), orders once it has passed, and a
/// success removes the shared state.
pub async fn backoff_is_shared(backend: &dyn Backend) {
    // Long enough that the second node always looks inside it (the shared state counts
    // whole seconds), short enough to wait out.
    let retry = RetryPolicy::new(Duration::from_secs(4), Duration::from_secs(8));
    let store = backend.open().await;
    let key = keys::backoff(NAME);
    assert_eq!(key, format!("maintenance/backoff/{NAME}.json"));

    let failing = counted(&store);
    failing.set_failing(true);
    let first = node(&store, failing.clone(), config().with_retry(retry));
    let failures = first.manage([NAME]).await.unwrap_err();
    assert!(
        matches!(failures.as_slice(), [(_, ManageError::Issue { .. })]),
        "{failures:?}"
    );
    assert_eq!(failing.calls(), 1);
    let state: serde_json::Value = store.load_json(&key).await.unwrap();
    assert_eq!(state["failures"], 1, "{state}");

    let working = counted(&store);
    let second = node(&store, working.clone(), config().with_retry(retry));
    let failures = second.manage([NAME]).await.unwrap_err();
    let retry_in = match failures.as_slice() {
        [
            (
                _,
                ManageError::BackingOff {
                    retry_in, failures, ..
                },
            ),
        ] => {
            assert_eq!(*failures, 1);
            *retry_in
        }
        other => panic!("the second node backs off: {other:?}"),
    };
    assert!(retry_in <= retry.initial, "{retry_in:?}");
    assert_eq!(working.calls(), 0, "nothing ordered while backing off");
    assert_eq!(failing.calls(), 1);

    // The shared state counts whole seconds: wait a second more than it says.
    tokio::time::sleep(retry_in + Duration::from_secs(1)).await;
    second
        .manage([NAME])
        .await
        .unwrap_or_else(|err| panic!("the backoff has passed: {err:?}"));
    assert_eq!(working.calls(), 1, "ordered once the backoff passed");
    served(&second, "after the backoff");
    assert_eq!(
        store.load_opt(&key).await.unwrap(),
        None,
        "the backoff state is removed"
    );
    drop((first, second));
    backend.close(store).await;
}

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

mod memory {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use cert_core::testing::FaultyStorage;
    use cert_core::{Error, LockOptions, Locker, MemoryStorage, Storage, StorageExt, lock};

    fault_tests!(Some(super::Memory));

    #[tokio::test]
    async fn the_wrapper_fails_after_k_writes_until_healed() {
        let storage = FaultyStorage::new(MemoryStorage::new());
        storage.fail_after_writes(2);
        storage.store("a", b"1").await.unwrap();
        storage.delete("a").await.unwrap();
        let lease = storage
            .try_acquire("l", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let refused = storage.store_fenced("b", b"2", &lease).await;
        assert!(
            matches!(refused, Err(Error::Unavailable { .. })),
            "{refused:?}"
        );
        assert!(storage.delete_fenced("a", &lease).await.is_err());
        assert!(storage.store("c", b"3").await.is_err());
        assert_eq!(storage.inner().load_opt("b").await.unwrap(), None);
        assert_eq!(storage.writes(), 2);
        assert_eq!(storage.refused_writes(), 3);
        assert_eq!(storage.written_keys(), vec!["a", "a"]);

        storage.heal();
        storage.store_fenced("b", b"2", &lease).await.unwrap();
        assert_eq!(storage.inner().load("b").await.unwrap(), b"2");
        assert_eq!(storage.writes(), 3);
        storage.release(&lease).await.unwrap();
    }

    #[tokio::test]
    async fn the_wrapper_stalls_the_nth_write() {
        let stall = Duration::from_millis(200);
        let storage = FaultyStorage::new(MemoryStorage::new());
        storage.stall_write(2, stall);
        storage.store("a", b"1").await.unwrap();
        let started = Instant::now();
        storage.store("b", b"2").await.unwrap();
        assert!(started.elapsed() >= stall, "the second write stalled");
        assert_eq!(storage.inner().load("b").await.unwrap(), b"2");
    }

    #[tokio::test]
    async fn a_stalled_write_hangs_lock_refreshes() {
        let storage = FaultyStorage::new(MemoryStorage::new());
        let options = LockOptions::default().with_ttl(Duration::from_millis(300));
        let held = lock(Arc::new(storage.clone()), "hung", &options)
            .await
            .unwrap();
        storage.stall_write(1, Duration::from_secs(3));
        let write = tokio::spawn({
            let storage = storage.clone();
            let lease = held.lease();
            async move { storage.store_fenced("k", b"v", &lease).await }
        });
        // The keep-alive's refreshes wait for the hung store, so the lease is lost.
        tokio::time::timeout(super::PATIENCE, held.lost())
            .await
            .expect("the lease is lost while the store hangs");
        let refused = tokio::time::timeout(super::PATIENCE, write)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(refused, Err(Error::LockLost { .. })),
            "the write outlived its lease: {refused:?}"
        );
        assert_eq!(storage.inner().load_opt("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn stalled_refreshes_lose_the_lease() {
        let storage = FaultyStorage::new(MemoryStorage::new());
        storage.stall_locks(Duration::from_secs(3600));
        let options = LockOptions::default().with_ttl(Duration::from_millis(300));
        let held = lock(Arc::new(storage.clone()), "stalled", &options)
            .await
            .unwrap();
        tokio::time::timeout(super::PATIENCE, held.lost())
            .await
            .expect("the lease is lost");
        assert!(held.is_lost());
        // Once it has run out, another holder takes the lock.
        let other = lock(
            Arc::clone(storage.inner()) as Arc<dyn Locker>,
            "stalled",
            &options.clone().with_timeout(super::PATIENCE),
        )
        .await
        .unwrap();
        assert!(!other.is_lost());
        other.release().await.unwrap();
    }
}
