//! A lease lost in the middle of an order or of a save: the node that lost it abandons its
//! work, and the node that takes the lock over obtains the only certificate stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cert_core::record;
use cert_core::{Event, LockOptions, ManageError};

use super::{
    Backend, NAME, PATIENCE, config, counted, faulty, fresh_issuer_root, id, node, served,
    stored_serial, wait_for, watch_record,
};

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
