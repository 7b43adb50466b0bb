//! `certstore locks` and `certstore unlock` end to end: held locks listed with their holder
//! and expiry, and removed by force, on a file storage and on every reachable server
//! backend (`CERTSTORE_TEST_*_URL`, see `cli.rs`).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cert_core::Locker;
use cert_file::FileStorage;
use common::{path, run};
use integration_tests::{service_url, unique_name};

#[tokio::test]
async fn locks_are_listed_and_forcibly_released() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let files = FileStorage::new(&root);
    let lease = files
        .try_acquire("issue/stuck.example", Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    let store = path(&root);
    let listed = run(&["locks", "--json", "--storage", &store]).ok().json();
    assert_eq!(listed[0]["name"], "issue/stuck.example");
    assert_eq!(listed[0]["token"], lease.token().as_str());
    assert!(listed[0]["expires_in_seconds"].as_f64().unwrap() > 500.0);
    let table = run(&["locks", "--storage", &store]).ok();
    assert!(
        table.stdout.contains("issue/stuck.example"),
        "{}",
        table.stdout
    );

    assert_eq!(
        run(&["unlock", "--storage", &store, "issue/stuck.example"]).code,
        2
    );
    let refused = run(&[
        "unlock",
        "--force",
        "--storage",
        &store,
        "issue/stuck.example",
    ])
    .fails(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    files
        .refresh(&lease, Duration::from_secs(600))
        .await
        .unwrap();

    run(&[
        "unlock",
        "--force",
        "--yes",
        "--storage",
        &store,
        "issue/stuck.example",
    ])
    .ok();
    assert!(matches!(
        files.refresh(&lease, Duration::from_secs(600)).await,
        Err(cert_core::Error::LockLost { .. })
    ));
    run(&[
        "unlock",
        "--force",
        "--yes",
        "--storage",
        &store,
        "issue/stuck.example",
    ])
    .fails(2);
    let empty = run(&["locks", "--json", "--storage", &store]).ok().json();
    assert_eq!(empty, serde_json::json!([]));
}

#[tokio::test]
async fn locks_on_server_backends() {
    let mut urls = Vec::new();
    let ns = unique_name("cli_locks");
    if let Some(url) = service_url("CERTSTORE_TEST_REDIS_URL") {
        urls.push(format!("{}?namespace={ns}", url.trim_end_matches('/')));
    }
    for var in ["CERTSTORE_TEST_POSTGRES_URL", "CERTSTORE_TEST_MYSQL_URL"] {
        if let Some(url) = service_url(var) {
            let sep = if url.contains('?') { '&' } else { '?' };
            urls.push(format!("{url}{sep}namespace={ns}"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    urls.push(format!(
        "sqlite://{}?namespace={ns}",
        path(&dir.path().join("l.db"))
    ));
    let mut stores = Vec::new();
    for url in urls {
        let opened = certstore::open(&url, &certstore::OpenOptions::default())
            .await
            .unwrap();
        stores.push((url, opened.store));
    }
    // S3: the test process has no AWS credentials in its environment; the command gets
    // them from `command()`.
    if let Some(endpoint) = service_url("CERTSTORE_TEST_S3_URL") {
        let config = cert_s3::S3Config::new("certstore-cli")
            .with_prefix(&ns)
            .with_region("us-east-1")
            .with_endpoint(&endpoint)
            .with_path_style(true)
            .with_static_credentials("certstore", "certstore-secret", None);
        let s3 = cert_s3::S3Storage::connect(config).await.unwrap();
        s3.ensure_bucket().await.unwrap();
        let url =
            format!("s3://certstore-cli/{ns}?endpoint={endpoint}&region=us-east-1&path_style=true");
        stores.push((url, Arc::new(s3) as Arc<dyn cert_core::Store>));
    }
    // Azure reveals neither the lease ID nor the time left: only that the lock is leased.
    let mut azure = None;
    if let Some(endpoint) = service_url("CERTSTORE_TEST_AZURE_URL") {
        let storage = cert_azure::AzureStorage::azurite(&endpoint, "certstore-cli")
            .unwrap()
            .with_prefix(&ns)
            .unwrap();
        storage.create_container_if_missing().await.unwrap();
        azure = Some((
            format!("azblob://devstoreaccount1/certstore-cli/{ns}?endpoint={endpoint}"),
            Arc::new(storage) as Arc<dyn cert_core::Store>,
        ));
    }
    let opaque = azure.as_ref().map(|(url, _)| url.clone());
    stores.extend(azure);
    for (url, store) in stores {
        let lease = store
            .try_acquire("issue/x.example", Duration::from_secs(300))
            .await
            .unwrap()
            .unwrap();
        let listed = run(&["locks", "--json", "--storage", &url]).ok().json();
        assert_eq!(listed.as_array().unwrap().len(), 1, "{url}: {listed}");
        assert_eq!(listed[0]["name"], "issue/x.example", "{url}");
        if opaque.as_deref() != Some(url.as_str()) {
            assert_eq!(listed[0]["token"], lease.token().as_str(), "{url}");
            let left = listed[0]["expires_in_seconds"].as_f64().unwrap();
            // S3 judges expiry from one-second HTTP dates: up to a second later.
            assert!(left > 200.0 && left <= 301.0, "{url}: {left}");
        }
        run(&[
            "unlock",
            "--force",
            "--yes",
            "--storage",
            &url,
            "issue/x.example",
        ])
        .ok();
        // The holder finds out at its next refresh. (Azure still lets it release a lease
        // that was broken, which frees nothing more.)
        assert!(
            store
                .refresh(&lease, Duration::from_secs(300))
                .await
                .is_err(),
            "{url}"
        );
        if opaque.as_deref() != Some(url.as_str()) {
            assert!(store.release(&lease).await.is_err(), "{url}");
        }
        assert!(
            store
                .try_acquire("issue/x.example", Duration::from_secs(5))
                .await
                .unwrap()
                .is_some(),
            "{url}"
        );
    }
}

/// Lock administration is reached through the opened store, whatever wraps the backend
/// (encryption, metrics), and is absent where the backend has none.
#[tokio::test]
async fn lock_administration_comes_through_every_storage_layer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let files = FileStorage::new(&root);
    files
        .try_acquire("issue/held.example", Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, common::KEY_A).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let options = certstore::OpenOptions::default().with_key_file(&key);
    for url in [path(&root), format!("encrypted+file://{}", path(&root))] {
        let opened = certstore::open(&url, &options).await.unwrap();
        let admin = opened
            .store
            .lock_admin()
            .expect("a file storage lists its locks");
        let names: Vec<String> = admin
            .list_locks()
            .await
            .unwrap()
            .into_iter()
            .map(|lock| lock.name)
            .collect();
        assert_eq!(names, vec!["issue/held.example"], "{url}");
    }
    let memory: Arc<dyn cert_core::Store> = Arc::new(cert_core::MemoryStorage::new());
    assert!(memory.lock_admin().is_none());
}
