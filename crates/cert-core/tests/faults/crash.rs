//! A node killed after every single write: of a first issuance, a renewal, an import, the
//! internal CA's creation and an ACME account's creation. A restarted node must find the
//! old record or the new one, never a broken one.

use std::sync::Arc;

use cert_core::record::{self, CaState, CertificateId};
use cert_core::testing::self_signed_certificate;
use cert_core::{Event, StorageExt, Store, keys};

use super::{
    Backend, LEAF, NAME, assert_chains_to, commit_point, config, counted, drain, faulty,
    fresh_issuer_root, id, internal, node, renewing_config, restarted, served, stored_serial,
};

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
