//! The fault scenarios of `crates/cert-core/tests/faults.rs` (a node killed after every
//! write of an issuance, a renewal, an import, the CA's and an account's creation; a lease
//! lost mid-order and mid-save; fleet-wide backoff) on the file system, Redis and
//! PostgreSQL, each store in a fresh directory or namespace; and a re-keying of encrypted
//! storage killed after every write, on those backends and in memory. The scenarios'
//! in-memory runs come along with the included file.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use cert_core::record::{self, CertificateId, RecordState};
use cert_core::testing::{FaultyStorage, self_signed_certificate};
use cert_core::{Storage, Store, async_trait, keys};
use cert_encrypted::{Encrypted, KeyRing, SecretKey};
use cert_sql::sqlx::postgres::{PgPool, PgPoolOptions};
use cert_sql::{SqlConfig, SqlStorage};

#[macro_use]
#[path = "../../crates/cert-core/tests/faults.rs"]
mod scenarios;

use scenarios::*;

/// File stores, each in a temporary directory of its own (removed with the backend).
#[derive(Default)]
struct File(std::sync::Mutex<Vec<tempfile::TempDir>>);

#[async_trait]
impl Backend for File {
    async fn open(&self) -> Arc<dyn Store> {
        let dir = tempfile::tempdir().unwrap();
        let storage = cert_file::FileStorage::new(dir.path());
        self.0.lock().unwrap().push(dir);
        Arc::new(storage)
    }
}

/// Redis stores, each in a namespace of its own.
struct Redis(String);

fn redis() -> Option<Redis> {
    integration_tests::service_url("CERTSTORE_TEST_REDIS_URL").map(Redis)
}

#[async_trait]
impl Backend for Redis {
    async fn open(&self) -> Arc<dyn Store> {
        let ns = integration_tests::unique_name("faults");
        match cert_redis::RedisStorage::connect(&self.0, &ns).await {
            Ok(storage) => Arc::new(storage),
            Err(err) => panic!("cannot open Redis at {}: {err:?}", self.0),
        }
    }
}

/// PostgreSQL stores sharing one pool, each in a namespace of its own.
struct Postgres(PgPool);

/// The tables of these tests.
const TABLES: &str = "certstore_faults";

async fn postgres() -> Option<Postgres> {
    let url = integration_tests::service_url("CERTSTORE_TEST_POSTGRES_URL")?;
    match PgPoolOptions::new().max_connections(8).connect(&url).await {
        Ok(pool) => Some(Postgres(pool)),
        Err(err) => panic!("cannot open {url}: {err:?}"),
    }
}

#[async_trait]
impl Backend for Postgres {
    async fn open(&self) -> Arc<dyn Store> {
        let config = SqlConfig::default()
            .with_table_prefix(TABLES)
            .with_namespace(integration_tests::unique_name("faults"));
        match SqlStorage::from_postgres_pool(self.0.clone(), config).await {
            Ok(storage) => Arc::new(storage),
            Err(err) => panic!("cannot open the PostgreSQL tables: {err:?}"),
        }
    }
}

/// Values sealed under an old key, re-sealed under a new one by `rekey` killed after each
/// of its writes: every value still opens under one of the two keys, the certificate
/// record still loads, and a second run finishes the rest.
async fn rekey_after_every_write(backend: &dyn Backend) {
    let old = SecretKey::generate().unwrap();
    let new = SecretKey::generate().unwrap();
    let rotated_ring = || {
        KeyRing::new(new.clone())
            .with_previous(old.clone())
            .unwrap()
    };
    let id = CertificateId::new("imported", NAME);
    let account = keys::acme_account("https://acme.test/directory", "ops@faults.example");

    let mut total = None;
    let mut k = 0;
    while total.is_none_or(|total| k <= total) {
        let context = format!("rekey killed after {k} writes");
        let store = backend.open().await;
        let faults = FaultyStorage::from_arc(Arc::clone(&store));
        // Seed: a certificate record and an account, sealed by the old key.
        let sealed_old = Encrypted::new(faults.clone(), KeyRing::new(old.clone()));
        let certificate = self_signed_certificate(&[NAME], "imported", LEAF).unwrap();
        record::save_certificate(&sealed_old, NAME, &certificate, None)
            .await
            .unwrap();
        sealed_old
            .store(&account, b"{\"account\":1}")
            .await
            .unwrap();
        // The values, not the key-check entries the encrypted view keeps beside them.
        let keys = sealed_old.list("", true).await.unwrap();
        let mut plain = Vec::new();
        for key in &keys {
            plain.push(sealed_old.load(key).await.unwrap());
        }
        let rotated = Encrypted::new(faults.clone(), rotated_ring());
        // The new key's check value is written once, before any re-sealing: not one of
        // the writes counted below.
        rotated.verify_keys().await.unwrap();
        let seeded = faults.writes();

        let Some(total_writes) = total else {
            // The first round is the healthy one that counts the writes.
            let done = rotated.rekey("", |_| {}).await.unwrap();
            assert_eq!(done.resealed, keys.len(), "every value re-sealed");
            total = Some((faults.writes() - seeded) as u64);
            backend.close(store).await;
            continue;
        };
        faults.fail_after_writes(k);
        let result = rotated.rekey("", |_| {}).await;
        assert_eq!(result.is_ok(), k == total_writes, "{context}: {result:?}");

        let mut by_new = 0;
        for (key, plain) in keys.iter().zip(&plain) {
            let raw = store.load(key).await.unwrap();
            let by = KeyRing::sealed_by(&raw);
            assert!(
                by == Some(new.id()) || by == Some(old.id()),
                "{context}: {key} is sealed by a known key"
            );
            by_new += usize::from(by == Some(new.id()));
            assert_eq!(&rotated.load(key).await.unwrap(), plain, "{context}: {key}");
        }
        assert_eq!(by_new as u64, k, "{context}: one value re-sealed per write");
        match record::load_certificate(&rotated, &id).await.unwrap() {
            Some(RecordState::Valid(loaded)) => {
                assert_eq!(loaded.stored.meta.serial, certificate.meta.serial);
            }
            other => panic!("{context}: the record loads: {other:?}"),
        }

        // A second run finishes what the first left.
        faults.heal();
        let done = rotated.rekey("", |_| {}).await.unwrap();
        assert_eq!(done.already_current as u64, k, "{context}");
        assert_eq!(
            done.resealed + done.already_current,
            keys.len(),
            "{context}"
        );
        let only_new = Encrypted::new(
            FaultyStorage::from_arc(Arc::clone(&store)),
            KeyRing::new(new.clone()),
        );
        for (key, plain) in keys.iter().zip(&plain) {
            assert_eq!(
                &only_new.load(key).await.unwrap(),
                plain,
                "{context}: {key}"
            );
        }
        backend.close(store).await;
        k += 1;
    }
}

/// The rekey test on `$backend`, like [`fault_tests!`].
macro_rules! rekey_test {
    ($backend:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rekey_survives_a_crash_after_every_write() {
            if let Some(backend) = $backend {
                super::rekey_after_every_write(&backend).await;
            }
        }
    };
}

mod memory {
    rekey_test!(Some(super::Memory));
}

mod file {
    fault_tests!(Some(super::File::default()));
    rekey_test!(Some(super::File::default()));
}

mod redis {
    fault_tests!(super::redis());
    rekey_test!(super::redis());
}

mod postgres {
    fault_tests!(super::postgres().await);
    rekey_test!(super::postgres().await);
}
