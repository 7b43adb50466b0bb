//! Unit tests of [`migrate`](super::migrate): copying, verifying, resuming, ordering and locks.

use super::*;
use cert_core::{MemoryStorage, Storage};

#[tokio::test]
async fn copies_verifies_and_resumes() {
    let from = MemoryStorage::new();
    let to = MemoryStorage::new();
    for n in 0..20 {
        from.store(&format!("k/{n:02}"), &[n; 3]).await.unwrap();
    }
    let (src, dst): (Arc<dyn Store>, Arc<dyn Store>) =
        (Arc::new(from.clone()), Arc::new(to.clone()));

    let dry = migrate(
        src.clone(),
        dst.clone(),
        &MigrateOptions::default().with_dry_run(true),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((dry.total, dry.copied, dry.skipped), (20, 20, 0));
    assert!(to.is_empty(), "a dry run writes nothing");

    to.store("k/03", &[3; 3]).await.unwrap();
    to.store("k/04", b"stale").await.unwrap();
    let mut calls = 0;
    let report = migrate(src.clone(), dst.clone(), &MigrateOptions::default(), |_| {
        calls += 1
    })
    .await
    .unwrap();
    assert_eq!((report.copied, report.skipped), (19, 1));
    assert!(report.failed.is_empty());
    assert_eq!(calls, 21);
    assert_eq!(to.load("k/04").await.unwrap(), vec![4; 3]);

    let again = migrate(src.clone(), dst.clone(), &MigrateOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((again.copied, again.skipped), (0, 20));
}

#[tokio::test]
async fn bundles_are_written_before_any_other_value() {
    let from = MemoryStorage::new();
    for name in ["a.example", "b.example"] {
        let stored = cert_core::testing::self_signed_certificate(
            &[name],
            "local",
            Duration::from_secs(86_400),
        )
        .unwrap();
        record::save_certificate(&from, name, &stored, None)
            .await
            .unwrap();
    }
    from.store("acme/account.json", b"{}").await.unwrap();
    let to = cert_core::testing::FaultyStorage::new(MemoryStorage::new());
    let report = migrate(
        Arc::new(from),
        Arc::new(to.clone()),
        &MigrateOptions::default().with_concurrency(4),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.copied, 9);
    let written = to.written_keys();
    assert_eq!(written.len(), 9);
    assert!(
        written[..2].iter().all(|key| record::is_bundle_key(key)),
        "{written:?}"
    );
    assert!(!written[2..].iter().any(|key| record::is_bundle_key(key)));
}

#[tokio::test]
async fn a_second_migration_is_refused_while_one_holds_the_lock() {
    let from = MemoryStorage::new();
    from.store("a", b"1").await.unwrap();
    let src: Arc<dyn Store> = Arc::new(from.clone());
    let held = try_lock(src.clone(), MIGRATE_LOCK, &LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    let err = migrate(
        src.clone(),
        Arc::new(MemoryStorage::new()),
        &MigrateOptions::default(),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_wait_for_the_clean_lock_is_reported_once() {
    let from = MemoryStorage::new();
    from.store("a", b"1").await.unwrap();
    let src: Arc<dyn Store> = Arc::new(from);
    let held = try_lock(src.clone(), keys::CLEAN_LOCK, &LockOptions::default())
        .await
        .unwrap()
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let running = tokio::spawn({
        let (src, seen) = (src.clone(), seen.clone());
        async move {
            migrate(
                src,
                Arc::new(MemoryStorage::new()),
                &MigrateOptions::default(),
                move |p| seen.lock().unwrap().push(p.waiting_for.clone()),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing said before a second"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some(keys::CLEAN_LOCK.to_owned())]
    );
    held.release().await.unwrap();
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.copied, 1);
    let seen = seen.lock().unwrap();
    let waits = seen.iter().filter(|w| w.is_some()).count();
    assert_eq!(waits, 1, "{seen:?}");
    assert!(seen.last().unwrap().is_none());
}
