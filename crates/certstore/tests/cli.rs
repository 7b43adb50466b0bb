//! The `certstore` command end to end: the built binary against real storages. This file:
//! importing, listing, showing and exporting certificates, bad input, and `clean`; the
//! other commands have files of their own (`migrate.rs`, `locks.rs`, `doctor.rs`, ...).
//!
//! File and SQLite storages need nothing; Redis, PostgreSQL, MySQL, S3 (moto) and Azure
//! (Azurite) tests read `CERTSTORE_TEST_*_URL` and are skipped loudly without them
//! (failed with `CERTSTORE_REQUIRE_SERVICES=1`). Every test works in its own directory,
//! namespace or prefix, so they run in parallel with each other and with other suites.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cert_core::{Locker, Storage};
use cert_file::FileStorage;
use common::{KEY_A, KEY_B, import, make_dated_cert, path, run, run_env};

#[tokio::test]
async fn import_ls_show_export_on_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    let (crt, key) = make_dated_cert(
        dir.path(),
        &["shop.example", "*.shop.example"],
        (2024, 2099),
    );
    run(&[
        "import",
        "--storage",
        &store,
        "--cert",
        &path(&crt),
        "--key",
        &path(&key),
    ])
    .ok();

    let ls = run(&["ls", "--storage", &store]).ok();
    let header = ls.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("TIME LEFT"),
        "{header}"
    );
    assert!(
        ls.stdout
            .contains("shop.example  imported  2099-01-01T00:00:00Z"),
        "{}",
        ls.stdout
    );
    let listed = run(&["ls", "--storage", &store, "--json"]).ok().json();
    assert_eq!(listed[0]["name"], "shop.example");
    assert_eq!(
        listed[0]["names"],
        serde_json::json!(["shop.example", "*.shop.example"])
    );
    assert!(listed[0]["days_left"].as_i64().unwrap() > 1000);
    let raw = run(&["ls", "--all", "--storage", &store, "certificates/imported"]).ok();
    assert_eq!(raw.stdout.lines().count(), 4, "{}", raw.stdout);
    assert!(
        raw.stdout
            .contains("certificates/imported/shop.example/shop.example.bundle"),
        "import writes the bundle: {}",
        raw.stdout
    );
    assert!(
        run(&["ls", "--storage", &store, "zzz"])
            .ok()
            .stdout
            .starts_with("no certificates")
    );

    let shown = run(&["show", "--storage", &store, "shop.example"]).ok();
    assert!(
        shown.stdout.contains("key type:   ECDSA P-256"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains("PRIVATE KEY"));
    let json = run(&["show", "--storage", &store, "shop.example", "--json"])
        .ok()
        .json();
    let der = cert_core::certificate::parse_chain(&std::fs::read_to_string(&crt).unwrap())
        .unwrap()
        .remove(0);
    let want: Vec<String> = {
        use sha2::Digest;
        sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    };
    assert_eq!(json[0]["sha256_fingerprint"], want.join(":"));
    assert!(json[0].get("private_key_pem").is_none());
    let revealed = run(&["show", "--storage", &store, "shop.example", "--reveal-key"]).ok();
    assert!(revealed.stdout.contains("PRIVATE KEY"));

    let out = dir.path().join("exported");
    run(&[
        "export",
        "--storage",
        &store,
        "shop.example",
        "--out",
        &path(&out),
    ])
    .ok();
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for (file, original) in [("shop.example.crt", &crt), ("shop.example.key", &key)] {
        let written = out.join(file);
        assert_eq!(
            std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read(&written).unwrap(),
            std::fs::read(original).unwrap()
        );
    }
    std::fs::write(out.join("shop.example.key"), b"keep me").unwrap();
    run(&[
        "export",
        "--storage",
        &store,
        "shop.example",
        "--out",
        &path(&out),
    ])
    .fails(2);
    assert_eq!(
        std::fs::read(out.join("shop.example.key")).unwrap(),
        b"keep me"
    );
    run(&[
        "export",
        "--storage",
        &store,
        "shop.example",
        "--out",
        &path(&out),
        "--force",
    ])
    .ok();
    assert_eq!(
        std::fs::read(out.join("shop.example.key")).unwrap(),
        std::fs::read(&key).unwrap()
    );
}

#[tokio::test]
async fn bad_input_is_one_line_with_the_documented_code_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = path(&store);

    let err = run(&["ls", "--storage", "ftp://admin:hunter2@files/x"]).fails(2);
    assert!(
        err.stderr.contains("unknown storage URL scheme"),
        "{}",
        err.stderr
    );
    assert!(!err.stderr.contains("hunter2"));

    let err = run(&["ls", "--storage", "redis://:hunter2@127.0.0.1:1/0"]).fails(1);
    assert!(err.stderr.contains("unavailable"), "{}", err.stderr);
    assert!(!err.stderr.contains("hunter2"), "{}", err.stderr);
    let err = run(&["doctor", "--storage", "postgres://u:hunter2@127.0.0.1:1/db"]).fails(1);
    assert!(
        err.stdout.contains("connect") && err.stdout.contains("FAIL"),
        "{}",
        err.stdout
    );
    assert!(!err.stdout.contains("hunter2") && !err.stderr.contains("hunter2"));

    run(&["show", "--storage", &s, "missing.example"]).fails(2);
    let out = dir.path().join("never");
    run(&[
        "export",
        "--storage",
        &s,
        "missing.example",
        "--out",
        &path(&out),
    ])
    .fails(2);
    assert!(!out.exists(), "a failed export creates nothing");

    let (crt, _) = make_dated_cert(dir.path(), &["one.example"], (2024, 2099));
    let (_, other_key) = make_dated_cert(dir.path(), &["two.example"], (2024, 2099));
    let err = run(&[
        "import",
        "--storage",
        &s,
        "--cert",
        &path(&crt),
        "--key",
        &path(&other_key),
    ])
    .fails(2);
    assert!(err.stderr.contains("does not match"), "{}", err.stderr);
    run(&[
        "import",
        "--storage",
        &s,
        "--cert",
        "/nonexistent.crt",
        "--key",
        &path(&other_key),
    ])
    .fails(2);
    assert!(!store.exists(), "failed imports write nothing");

    let encrypted = format!("encrypted+{s}");
    let err = run(&["ls", "--storage", &encrypted]).fails(2);
    assert!(err.stderr.contains("CERTSTORE_KEY"), "{}", err.stderr);
    let err = run_env(
        &[("CERTSTORE_KEY", "short")],
        &["ls", "--storage", &encrypted],
    )
    .fails(2);
    assert!(
        !err.stderr.contains("short"),
        "the key text is never echoed: {}",
        err.stderr
    );
    let (crt, key) = make_dated_cert(dir.path(), &["three.example"], (2024, 2099));
    import(&encrypted, &[("CERTSTORE_KEY", KEY_A)], &crt, &key);
    let err = run_env(
        &[("CERTSTORE_KEY", KEY_B)],
        &["ls", "--storage", &encrypted],
    )
    .fails(2);
    assert!(err.stderr.contains("cannot decrypt"), "{}", err.stderr);
    run_env(
        &[("CERTSTORE_KEY", KEY_A)],
        &["ls", "--storage", &encrypted],
    )
    .ok();

    let help = run(&["--help"]).ok();
    assert!(help.stdout.contains("Exit codes:"), "{}", help.stdout);
    assert_eq!(run(&["frobnicate"]).code, 2);
}

#[tokio::test]
async fn clean_removes_only_certificates_expired_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    for (name, years) in [("old.example", (2019, 2020)), ("new.example", (2024, 2099))] {
        let (crt, key) = make_dated_cert(dir.path(), &[name], years);
        import(&store, &[], &crt, &key);
    }
    let files = FileStorage::new(dir.path().join("store"));
    files
        .try_acquire("stale", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let dry = run(&["clean", "--dry-run", "--storage", &store]).ok();
    assert!(
        dry.stdout
            .contains("would remove certificates/imported/old.example"),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("new.example"));
    assert!(
        dry.stdout.contains("would remove expired lock stale"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        files
            .list("certificates/imported", false)
            .await
            .unwrap()
            .len(),
        2
    );

    let done = run(&["clean", "--storage", &store]).ok();
    assert!(
        done.stdout.contains("removed 1 certificates"),
        "{}",
        done.stdout
    );
    assert_eq!(
        files.list("certificates/imported", false).await.unwrap(),
        ["certificates/imported/new.example"]
    );
    let far = run(&["clean", "--grace", "100000d", "--storage", &store]).ok();
    assert!(
        far.stdout.contains("removed 0 certificates"),
        "{}",
        far.stdout
    );
    let bad = run(&["clean", "--grace", "soon", "--storage", &store]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("\"soon\""), "{}", bad.stderr);
}
