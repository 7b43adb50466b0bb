//! Behaviour specific to the SQL backend, on SQLite (no server needed): listing across
//! pages, values and prefixes at one key, namespaces, and locks judged by the database.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use cert_core::{Error, Locker, Storage};
use cert_sql::{Dialect, SqlConfig, SqlStorage};

async fn open(dir: &tempfile::TempDir, config: SqlConfig) -> SqlStorage {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    SqlStorage::connect_with(&url, config).await.unwrap()
}

#[tokio::test]
async fn listing_pages_through_many_keys_and_sub_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, SqlConfig::default()).await;
    assert_eq!(s.dialect(), Dialect::Sqlite);
    // 3 sub-prefixes of 1500 keys each: more than one page each, so the non-recursive
    // listing must skip over every sub-prefix, and the recursive one page through.
    let mut want = Vec::new();
    for group in ["a", "b", "c"] {
        for i in 0..1500 {
            let key = format!("p/{group}/k{i:04}");
            s.store(&key, b"v").await.unwrap();
            want.push(key);
        }
    }
    s.store("p/b-x", b"v").await.unwrap();
    s.store("p/z", b"v").await.unwrap();
    s.store("p0", b"outside").await.unwrap();
    s.store("p-", b"outside").await.unwrap();
    assert_eq!(
        s.list("p", false).await.unwrap(),
        ["p/a", "p/b", "p/b-x", "p/c", "p/z"]
    );
    want.push("p/b-x".into());
    want.push("p/z".into());
    want.sort();
    assert_eq!(s.list("p", true).await.unwrap(), want);
    assert_eq!(s.list("", false).await.unwrap(), ["p", "p-", "p0"]);
    assert_eq!(s.list("", true).await.unwrap().len(), want.len() + 2);
    s.delete("p/b").await.unwrap();
    assert_eq!(s.list("p", true).await.unwrap().len(), 3002);
    assert!(s.exists("p0").await.unwrap());
}

#[tokio::test]
async fn value_and_prefix_coexist_and_stat_reports_both() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, SqlConfig::default()).await;
    let before = SystemTime::now() - Duration::from_secs(1);
    s.store("a", b"12345").await.unwrap();
    s.store("a/b", b"x").await.unwrap();
    assert_eq!(s.load("a").await.unwrap(), b"12345");
    let info = s.stat("a").await.unwrap();
    assert!(info.is_terminal);
    assert_eq!(info.size, 5);
    assert!(info.modified >= before && info.modified <= SystemTime::now());
    s.store("c/d", b"x").await.unwrap();
    let prefix = s.stat("c").await.unwrap();
    assert!(!prefix.is_terminal);
    assert!(prefix.modified >= before);
    assert!(matches!(s.load("c").await, Err(Error::NotFound { .. })));
    assert_eq!(s.list("", false).await.unwrap(), ["a", "c"]);
    s.delete("a").await.unwrap();
    assert!(!s.exists("a").await.unwrap());
    assert!(matches!(s.delete("a").await, Err(Error::NotFound { .. })));
    assert!(matches!(
        s.store("k", &vec![0; cert_core::MAX_VALUE_LEN + 1]).await,
        Err(Error::TooLarge { .. })
    ));
}

#[tokio::test]
async fn namespaces_share_tables_but_not_data_or_locks() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, SqlConfig::default().with_namespace("a")).await;
    let b = open(&dir, SqlConfig::default().with_namespace("b")).await;
    a.store("k", b"a").await.unwrap();
    assert!(matches!(b.load("k").await, Err(Error::NotFound { .. })));
    let ttl = Duration::from_secs(60);
    let lease = a.try_acquire("l", ttl).await.unwrap().unwrap();
    assert!(b.try_acquire("l", ttl).await.unwrap().is_some());
    assert!(a.try_acquire("l", ttl).await.unwrap().is_none());
    // Another namespace cannot release it, even with the right token.
    assert!(matches!(
        b.release(&lease).await,
        Err(Error::LockLost { .. })
    ));
    a.release(&lease).await.unwrap();
    assert!(matches!(
        a.release(&lease).await,
        Err(Error::LockLost { .. })
    ));
}

#[tokio::test]
async fn expired_leases_are_taken_over_and_cannot_be_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, SqlConfig::default()).await;
    let old = s
        .try_acquire("l", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.try_acquire("l", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(matches!(
        s.refresh(&old, Duration::from_secs(60)).await,
        Err(Error::LockLost { .. })
    ));
    let new = s
        .try_acquire("l", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new.token(), old.token());
    assert!(matches!(s.release(&old).await, Err(Error::LockLost { .. })));
    let renewed = s.refresh(&new, Duration::from_secs(60)).await.unwrap();
    s.release(&renewed).await.unwrap();
}

#[tokio::test]
async fn migrating_again_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, SqlConfig::default().with_table_prefix("t")).await;
    s.store("k", b"v").await.unwrap();
    s.migrate().await.unwrap();
    let again = open(&dir, SqlConfig::default().with_table_prefix("t")).await;
    assert_eq!(again.load("k").await.unwrap(), b"v");
    let debug = format!("{again:?}");
    assert!(
        debug.contains("t_kv") && debug.contains("Sqlite"),
        "{debug}"
    );
    let unmigrated = open(
        &dir,
        SqlConfig::default()
            .with_table_prefix("none")
            .with_migrate(false),
    )
    .await;
    assert!(matches!(
        unmigrated.load("k").await,
        Err(Error::Backend {
            backend: "sqlite",
            ..
        })
    ));
}
