//! The conformance suite through `Encrypted<S>` over every server backend: Redis,
//! PostgreSQL and MySQL/MariaDB (each skipped loudly when its `CERTSTORE_TEST_*_URL` is not
//! set) and SQLite (always). Plus a check, per backend, that what the server holds is an
//! envelope and never the plaintext.
#![allow(clippy::unwrap_used)]

use cert_core::{Storage, Store};
use cert_encrypted::{Encrypted, KeyRing, SecretKey};

fn ring() -> KeyRing {
    KeyRing::new(SecretKey::from_bytes([0x17; 32]))
}

const MARKER: &[u8] = b"-----BEGIN EC PRIVATE KEY----- encrypted-marker-51c2";

/// Stores a marker through `Encrypted` and checks the inner store holds only an envelope
/// that opens back to it.
async fn inner_holds_no_plaintext<S: Store>(storage: Encrypted<S>) {
    storage.store("secret/key.pem", MARKER).await.unwrap();
    let raw = storage.inner().load("secret/key.pem").await.unwrap();
    assert!(
        !raw.windows(MARKER.len()).any(|w| w == MARKER),
        "the server holds the plaintext"
    );
    assert_eq!(KeyRing::sealed_by(&raw), Some(storage.ring().current_id()));
    assert_eq!(storage.load("secret/key.pem").await.unwrap(), MARKER);
    assert_eq!(
        storage.stat("secret/key.pem").await.unwrap().size,
        MARKER.len() as u64
    );
    storage.delete("secret").await.unwrap();
}

mod redis {
    use cert_conformance::{Capabilities, conformance_tests};
    use cert_encrypted::Encrypted;
    use cert_redis::RedisStorage;

    const VAR: &str = "CERTSTORE_TEST_REDIS_URL";

    fn url() -> String {
        integration_tests::service_url(VAR).unwrap_or_default()
    }

    async fn open(ns: &str) -> Encrypted<RedisStorage> {
        Encrypted::new(
            RedisStorage::connect(&url(), ns).await.unwrap(),
            super::ring(),
        )
    }

    conformance_tests! {
        open: |ns: String| async move { open(&ns).await },
        capabilities: Capabilities::default(),
        enabled: || integration_tests::service_url(VAR).is_some(),
    }

    #[tokio::test]
    async fn server_holds_no_plaintext() {
        if integration_tests::service_url(VAR).is_none() {
            return;
        }
        super::inner_holds_no_plaintext(open(&integration_tests::unique_name("enc")).await).await;
    }
}

mod sql {
    use cert_encrypted::Encrypted;
    use cert_sql::{SqlConfig, SqlStorage};

    pub(crate) async fn open(url: &str, ns: &str) -> Encrypted<SqlStorage> {
        let config = SqlConfig::default().with_namespace(ns);
        let storage = SqlStorage::connect_with(url, config).await.unwrap();
        Encrypted::new(storage, super::ring())
    }

    pub(crate) fn sqlite_url(ns: &str) -> String {
        let dir = std::env::temp_dir().join("cert-encrypted-sqlite");
        std::fs::create_dir_all(&dir).unwrap();
        format!("sqlite://{}", dir.join(format!("{ns}.db")).display())
    }
}

mod postgres {
    use cert_conformance::{Capabilities, conformance_tests};

    const VAR: &str = "CERTSTORE_TEST_POSTGRES_URL";

    fn url() -> String {
        integration_tests::service_url(VAR).unwrap_or_default()
    }

    conformance_tests! {
        open: |ns: String| async move { super::sql::open(&url(), &ns).await },
        capabilities: Capabilities::default(),
        enabled: || integration_tests::service_url(VAR).is_some(),
    }

    #[tokio::test]
    async fn server_holds_no_plaintext() {
        let Some(url) = integration_tests::service_url(VAR) else {
            return;
        };
        let ns = integration_tests::unique_name("enc");
        super::inner_holds_no_plaintext(super::sql::open(&url, &ns).await).await;
    }
}

mod mysql {
    use cert_conformance::{Capabilities, conformance_tests};

    const VAR: &str = "CERTSTORE_TEST_MYSQL_URL";

    fn url() -> String {
        integration_tests::service_url(VAR).unwrap_or_default()
    }

    conformance_tests! {
        open: |ns: String| async move { super::sql::open(&url(), &ns).await },
        capabilities: Capabilities::default(),
        enabled: || integration_tests::service_url(VAR).is_some(),
    }

    #[tokio::test]
    async fn server_holds_no_plaintext() {
        let Some(url) = integration_tests::service_url(VAR) else {
            return;
        };
        let ns = integration_tests::unique_name("enc");
        super::inner_holds_no_plaintext(super::sql::open(&url, &ns).await).await;
    }
}

mod sqlite {
    use cert_conformance::{Capabilities, conformance_tests};

    conformance_tests! {
        open: |ns: String| async move { super::sql::open(&super::sql::sqlite_url(&ns), &ns).await },
        capabilities: Capabilities::default(),
    }

    #[tokio::test]
    async fn file_holds_no_plaintext() {
        let ns = integration_tests::unique_name("enc");
        super::inner_holds_no_plaintext(super::sql::open(&super::sql::sqlite_url(&ns), &ns).await)
            .await;
    }
}
