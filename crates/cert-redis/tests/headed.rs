//! A namespace written by a release that kept every value behind a 20-byte header (the
//! fixture `tests/fixtures/headed-namespace.txt`, captured from such a release's
//! `certstore serve` on Redis: the internal CA, a certificate record and its copies) is
//! read by this release, value by value and as certificate records, and each value is
//! rewritten as plain bytes on its next store. Against the server named by
//! `CERTSTORE_TEST_REDIS_URL` (skipped loudly when unset, failing under
//! `CERTSTORE_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used)]

mod common;

use common::url;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert_core::Storage;
use cert_core::record::{self, RecordState};
use cert_redis::RedisStorage;
use redis::AsyncCommands;

const FIXTURE: &str = include_str!("fixtures/headed-namespace.txt");

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The fixture: storage key -> the Redis string the earlier release stored for it.
fn fixture() -> BTreeMap<String, Vec<u8>> {
    FIXTURE
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, hex) = line.split_once('\t').unwrap();
            (key.to_owned(), unhex(hex))
        })
        .collect()
}

/// What the header of a headed string says: (modified, size).
fn header(stored: &[u8]) -> (SystemTime, u64) {
    assert_eq!(&stored[..4], b"cs1\0", "the fixture holds headed strings");
    let number = |at: usize| u64::from_be_bytes(stored[at..at + 8].try_into().unwrap());
    (UNIX_EPOCH + Duration::from_nanos(number(4)), number(12))
}

#[tokio::test]
async fn a_namespace_of_headed_values_is_read_and_rewritten_plain() {
    let Some(url) = url() else { return };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let ns = format!("headed_{}_{nanos}", std::process::id());
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let strings = fixture();
    assert!(strings.len() >= 6, "fixture too small: {}", strings.len());
    for (key, stored) in &strings {
        let _: () = conn.set(format!("{{{ns}}}:v:{key}"), stored).await.unwrap();
        let _: () = conn.zadd(format!("{{{ns}}}:index"), key, 0).await.unwrap();
    }
    let storage = RedisStorage::connect(&url, &ns).await.unwrap();

    // Every value reads as the bytes after its header, with the header's time and size.
    let listed = storage.list("", true).await.unwrap();
    assert_eq!(listed, strings.keys().cloned().collect::<Vec<_>>());
    for (key, stored) in &strings {
        let (modified, size) = header(stored);
        assert_eq!(storage.load(key).await.unwrap(), &stored[20..], "{key}");
        let info = storage.stat(key).await.unwrap();
        assert_eq!((info.size, info.modified), (size, modified), "{key}");
    }

    // The certificate records are valid.
    let entries = record::scan_certificates(&storage).await.unwrap();
    assert!(!entries.is_empty());
    for entry in &entries {
        let state = record::load_certificate(&storage, &entry.id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(state, RecordState::Valid(_)),
            "{:?} is not valid",
            entry.id
        );
    }

    // A store rewrites one value plain; the others stay as they were and still read.
    let bundle = strings
        .keys()
        .find(|key| record::is_bundle_key(key))
        .unwrap()
        .clone();
    let value = strings[&bundle][20..].to_vec();
    let before = SystemTime::now();
    storage.store(&bundle, &value).await.unwrap();
    let raw: Vec<u8> = conn.get(format!("{{{ns}}}:v:{bundle}")).await.unwrap();
    assert_eq!(raw, value, "stored plain: the exact bytes");
    assert!(storage.stat(&bundle).await.unwrap().modified >= before);
    for (key, stored) in strings.iter().filter(|(key, _)| **key != bundle) {
        let raw: Vec<u8> = conn.get(format!("{{{ns}}}:v:{key}")).await.unwrap();
        assert_eq!(&raw, stored, "{key} untouched");
        assert_eq!(storage.load(key).await.unwrap(), &stored[20..]);
    }
    for entry in &entries {
        let state = record::load_certificate(&storage, &entry.id).await.unwrap();
        assert!(matches!(state, Some(RecordState::Valid(_))));
    }

    storage.delete("ca").await.unwrap();
    storage.delete("certificates").await.unwrap();
    let _ = storage.delete("maintenance").await;
    let _: () = conn.del(format!("{{{ns}}}:index")).await.unwrap();
    let _: () = conn.del(format!("{{{ns}}}:modified")).await.unwrap();
}
