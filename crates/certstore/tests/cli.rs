//! The `certstore` command end to end: the built binary against real storages.
//!
//! File and SQLite storages need nothing; Redis, PostgreSQL, MySQL, S3 (moto) and Azure
//! (Azurite) tests read `CERTSTORE_TEST_*_URL` and are skipped loudly without them
//! (failed with `CERTSTORE_REQUIRE_SERVICES=1`). Every test works in its own directory,
//! namespace or prefix, so they run in parallel with each other and with other suites.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cert_core::{Locker, Storage};
use cert_file::FileStorage;
use integration_tests::{service_url, unique_name};

/// Two fixed test keys (base64 of 32 bytes).
const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// A failure with `code`, reported as exactly one `error:` line.
    fn fails(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", self.stderr);
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("{err}: {}", self.stdout))
    }
}

fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certstore"));
    for var in [
        "CERTSTORE_STORAGE",
        "CERTSTORE_KEY",
        "CERTSTORE_PREVIOUS_KEYS",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "certstore")
        .env("AWS_SECRET_ACCESS_KEY", "certstore-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run_env(env: &[(&str, &str)], args: &[&str]) -> Run {
    let out: Output = command(env).args(args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Run {
    run_env(&[], args)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A self-signed certificate for `names`, valid from `from` to `until` (years), written
/// as `<dir>/<first>.crt` and `.key`.
fn make_cert(dir: &Path, names: &[&str], years: (i32, i32)) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let crt = dir.join(format!("{}.crt", names[0].replace('*', "_")));
    let pem_key = dir.join(format!("{}.key", names[0].replace('*', "_")));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem_key, key.serialize_pem()).unwrap();
    (crt, pem_key)
}

fn import(storage: &str, env: &[(&str, &str)], cert: &Path, key: &Path) {
    run_env(
        env,
        &[
            "import",
            "--storage",
            storage,
            "--cert",
            &path(cert),
            "--key",
            &path(key),
        ],
    )
    .ok();
}

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
        let (crt, key) = make_cert(&certs, names, (2024, 2099));
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

#[tokio::test]
async fn import_ls_show_export_on_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    let (crt, key) = make_cert(
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

    let (crt, _) = make_cert(dir.path(), &["one.example"], (2024, 2099));
    let (_, other_key) = make_cert(dir.path(), &["two.example"], (2024, 2099));
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
    let (crt, key) = make_cert(dir.path(), &["three.example"], (2024, 2099));
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

#[tokio::test]
async fn clean_removes_only_certificates_expired_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    for (name, years) in [("old.example", (2019, 2020)), ("new.example", (2024, 2099))] {
        let (crt, key) = make_cert(dir.path(), &[name], years);
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

#[tokio::test]
async fn doctor_passes_on_every_reachable_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ns = unique_name("cli_doctor");
    let mut urls = vec![
        path(&dir.path().join("files")),
        format!("sqlite://{}?namespace={ns}", path(&dir.path().join("d.db"))),
    ];
    if let Some(url) = service_url("CERTSTORE_TEST_REDIS_URL") {
        urls.push(format!("{}?namespace={ns}", url.trim_end_matches('/')));
    }
    for var in ["CERTSTORE_TEST_POSTGRES_URL", "CERTSTORE_TEST_MYSQL_URL"] {
        if let Some(url) = service_url(var) {
            let sep = if url.contains('?') { '&' } else { '?' };
            urls.push(format!("{url}{sep}namespace={ns}"));
        }
    }
    if let Some(url) = service_url("CERTSTORE_TEST_S3_URL") {
        urls.push(format!(
            "s3://certstore-cli/{ns}?endpoint={url}&region=us-east-1&path_style=true"
        ));
    }
    if let Some(url) = service_url("CERTSTORE_TEST_AZURE_URL") {
        urls.push(format!(
            "azblob://devstoreaccount1/certstore-cli/{ns}?endpoint={url}"
        ));
    }
    for url in &urls {
        let doctor = run(&["doctor", "--create", "--json", "--storage", url])
            .ok()
            .json();
        assert_eq!(doctor["ok"], true, "{url}: {doctor}");
        let names: Vec<&str> = doctor["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        for want in [
            "connect",
            "list",
            "round trip",
            "clock skew",
            "lock",
            "encryption",
        ] {
            assert!(names.contains(&want), "{url}: {names:?}");
        }
    }
    let (crt, key) = make_cert(dir.path(), &["cloud.example"], (2024, 2099));
    for url in urls.iter().skip(2) {
        import(url, &[], &crt, &key);
        let shown = run(&["show", "--json", "--storage", url, "cloud.example"])
            .ok()
            .json();
        assert_eq!(
            shown[0]["names"],
            serde_json::json!(["cloud.example"]),
            "{url}"
        );
    }
}
