//! `certstore migrate` and `certstore rekey` end to end: copies between backends that keep
//! every key and byte, interrupted copies resumed, and an encrypting migration followed by
//! a key rotation.
//!
//! Redis and PostgreSQL are read from `CERTSTORE_TEST_*_URL` (see `cli.rs`); the rest uses
//! files and SQLite.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cert_core::Storage;
use cert_file::FileStorage;
use common::{KEY_A, KEY_B, import, make_dated_cert, path, run, run_env};
use integration_tests::{service_url, unique_name};

/// Every key and value of a storage.
async fn dump(storage: &dyn Storage) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in storage.list("", true).await.unwrap() {
        let value = storage.load(&key).await.unwrap();
        out.insert(key, value);
    }
    out
}

/// A file storage holding two certificates and awkward values: binary, empty, large,
/// and keys with spaces and non-ASCII text.
async fn seeded(dir: &Path) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let root = dir.join("source");
    let certs = dir.join("pem");
    std::fs::create_dir_all(&certs).unwrap();
    let storage = path(&root);
    for names in [&["a.example", "www.a.example"][..], &["b.example"][..]] {
        let (crt, key) = make_dated_cert(&certs, names, (2024, 2099));
        import(&storage, &[], &crt, &key);
    }
    let files = FileStorage::new(&root);
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let large: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    files
        .store("acme/accounts/binary.bin", &binary)
        .await
        .unwrap();
    files.store("acme/accounts/empty", b"").await.unwrap();
    files.store("misc/large value", &large).await.unwrap();
    files
        .store("misc/ünïcødé/日本", b"\xff\x00\xfe")
        .await
        .unwrap();
    let all = dump(&files).await;
    // Each certificate is a bundle and its three copies.
    assert_eq!(all.len(), 8 + 4);
    (root, all)
}

async fn migrate_ok(from: &str, to: &str) -> String {
    run(&["migrate", "--quiet", from, to]).ok().stdout
}

#[tokio::test]
async fn migrate_file_to_redis_to_postgres_and_back_preserves_every_byte() {
    let (Some(redis), Some(postgres)) = (
        service_url("CERTSTORE_TEST_REDIS_URL"),
        service_url("CERTSTORE_TEST_POSTGRES_URL"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (source, original) = seeded(dir.path()).await;
    let ns = unique_name("cli_migrate");
    let redis = format!("{}?namespace={ns}", redis.trim_end_matches('/'));
    let sep = if postgres.contains('?') { '&' } else { '?' };
    let postgres = format!("{postgres}{sep}namespace={ns}");
    let back = dir.path().join("back");

    let out = migrate_ok(&path(&source), &redis).await;
    assert!(
        out.starts_with("copied 12, skipped 0 identical, 0 failed, of 12 keys"),
        "{out}"
    );
    let out = migrate_ok(&redis, &postgres).await;
    assert!(out.starts_with("copied 12,"), "{out}");
    let out = migrate_ok(&postgres, &path(&back)).await;
    assert!(out.starts_with("copied 12,"), "{out}");

    let restored = dump(&FileStorage::new(&back)).await;
    assert_eq!(
        restored, original,
        "every key and byte survives the round trip"
    );
    let shown = run(&["show", "--storage", &postgres, "a.example", "--json"])
        .ok()
        .json();
    assert_eq!(
        shown[0]["names"],
        serde_json::json!(["a.example", "www.a.example"])
    );
    let doctor = run(&["doctor", "--json", "--storage", &redis]).ok().json();
    assert_eq!(doctor["ok"], true, "{doctor}");
}

#[tokio::test]
async fn an_interrupted_migration_resumes_skipping_identical_values() {
    let dir = tempfile::tempdir().unwrap();
    let (source, original) = seeded(dir.path()).await;
    let db = format!("sqlite://{}", path(&dir.path().join("copy.db")));
    let from = path(&source);

    let dry = run(&["migrate", "--dry-run", &from, &db]).ok();
    assert!(dry.stdout.starts_with("would copy 12,"), "{}", dry.stdout);
    let ls = run(&["ls", "--all", "--storage", &db]).ok();
    assert!(
        ls.stdout.is_empty(),
        "a dry run writes nothing: {}",
        ls.stdout
    );

    // The first run stops after the certificates (8 keys) ...
    let out = run(&["migrate", "--prefix", "certificates", &from, &db]).ok();
    assert!(
        out.stdout.starts_with("copied 8, skipped 0"),
        "{}",
        out.stdout
    );
    // ... the second finds them identical and copies only the rest.
    let out = migrate_ok(&from, &db).await;
    assert!(
        out.starts_with("copied 4, skipped 8 identical, 0 failed, of 12 keys"),
        "{out}"
    );
    // A changed source value is copied again; the rest is skipped.
    FileStorage::new(&source)
        .store("misc/large value", b"new")
        .await
        .unwrap();
    let out = migrate_ok(&from, &db).await;
    assert!(out.starts_with("copied 1, skipped 11"), "{out}");

    let back = dir.path().join("back");
    migrate_ok(&db, &path(&back)).await;
    let mut want = original;
    want.insert("misc/large value".into(), b"new".to_vec());
    assert_eq!(dump(&FileStorage::new(&back)).await, want);

    run(&["migrate", &from, &from]).fails(2);
}

#[tokio::test]
async fn encrypting_migration_and_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (source, original) = seeded(dir.path()).await;
    let db = dir.path().join("sealed.db");
    let sealed = format!("encrypted+sqlite://{}?namespace=n", path(&db));
    let a = [("CERTSTORE_KEY", KEY_A)];
    run_env(&a, &["migrate", &path(&source), &sealed]).ok();
    let raw = std::fs::read(&db).unwrap();
    assert!(
        !raw.windows(11).any(|w| w == b"PRIVATE KEY"),
        "the database holds no plaintext key"
    );
    let ls = run_env(&a, &["ls", "--json", "--storage", &sealed])
        .ok()
        .json();
    assert_eq!(ls.as_array().unwrap().len(), 2);

    // Rotate: B becomes current, A stays readable until everything is re-sealed.
    let key_file = dir.path().join("b.key");
    std::fs::write(&key_file, KEY_B).unwrap();
    // Key files must be private to their owner.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rotating = [("CERTSTORE_PREVIOUS_KEYS", KEY_A)];
    let doctor = run_env(
        &rotating,
        &[
            "doctor",
            "--json",
            "--key-file",
            &path(&key_file),
            "--storage",
            &sealed,
        ],
    )
    .ok()
    .json();
    let enc = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "encryption")
        .unwrap()
        .clone();
    assert_eq!(enc["status"], "warn", "{enc}");
    let out = run_env(
        &rotating,
        &[
            "rekey",
            "--quiet",
            "--key-file",
            &path(&key_file),
            "--storage",
            &sealed,
        ],
    )
    .ok();
    assert!(out.stdout.starts_with("re-sealed 12,"), "{}", out.stdout);
    let out = run_env(
        &rotating,
        &[
            "rekey",
            "--key-file",
            &path(&key_file),
            "--storage",
            &sealed,
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("already under the current key 12"),
        "{}",
        out.stdout
    );

    // B alone now opens everything; A alone no longer does.
    let b = [("CERTSTORE_KEY", KEY_B)];
    let doctor = run_env(&b, &["doctor", "--json", "--storage", &sealed])
        .ok()
        .json();
    assert_eq!(doctor["ok"], true, "{doctor}");
    run_env(&a, &["ls", "--storage", &sealed]).fails(2);
    let back = dir.path().join("back");
    run_env(&b, &["migrate", "--decrypt", &sealed, &path(&back)]).ok();
    assert_eq!(dump(&FileStorage::new(&back)).await, original);
    run(&["rekey", "--storage", &path(&source)]).fails(2);
}
