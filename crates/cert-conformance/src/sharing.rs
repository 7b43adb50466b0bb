//! Cases about concurrent access and about several instances over the same data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::{Error, Store};

use crate::Fixture;
use crate::support::{assert_value, not_found, ok, preview};

const VALUE_LEN: usize = 64 * 1024;
const WRITERS: usize = 16;
const ROUNDS: usize = 4;
const READERS: usize = 4;

/// Checks that `value` is one whole value written by the writers: the right length and a
/// single fill byte that was written.
fn check_whole(value: &[u8], allowed: &BTreeSet<u8>, what: &str) {
    assert_eq!(
        value.len(),
        VALUE_LEN,
        "{what}: a read returned a torn value"
    );
    let first = value[0];
    assert!(
        allowed.contains(&first),
        "{what}: fill byte {first} was never written"
    );
    if let Some(pos) = value.iter().position(|b| *b != first) {
        panic!(
            "{what}: a read mixed two values: byte {} at offset {pos} in a value of {first}s ({})",
            value[pos],
            preview(&value[pos.saturating_sub(4)..])
        );
    }
}

/// 16 writers store 64 KiB values with distinct fill bytes to one key, half through a
/// second instance, while readers load it: every read is exactly one written value, never
/// a mix, and the final value is one of them.
pub async fn concurrent_writers_are_atomic(fixture: &Fixture) {
    let main = fixture.store().await;
    let other = fixture.open_another().await;
    let key = "race/value";
    // Fill 0 first so readers never see NotFound; writers use 1..=WRITERS*ROUNDS.
    ok(
        main.store(key, &vec![0u8; VALUE_LEN]).await,
        "initial store",
    );
    let allowed: Arc<BTreeSet<u8>> = Arc::new((0..=(WRITERS * ROUNDS) as u8).collect());
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));

    let mut readers = Vec::new();
    for r in 0..READERS {
        let store: Arc<dyn Store> = if r % 2 == 0 {
            Arc::clone(&main)
        } else {
            Arc::clone(&other)
        };
        let done = Arc::clone(&done);
        let reads = Arc::clone(&reads);
        let allowed = Arc::clone(&allowed);
        readers.push(tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                let value = ok(store.load(key).await, "concurrent load");
                check_whole(&value, &allowed, "concurrent load");
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store: Arc<dyn Store> = if w % 2 == 0 {
            Arc::clone(&main)
        } else {
            Arc::clone(&other)
        };
        writers.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let fill = (1 + w * ROUNDS + round) as u8;
                ok(
                    store.store(key, &vec![fill; VALUE_LEN]).await,
                    format_args!("concurrent store of fill {fill}"),
                );
            }
        }));
    }
    for writer in writers {
        if let Err(err) = writer.await {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        if let Err(err) = reader.await {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    assert!(reads.load(Ordering::Relaxed) > 0, "the readers never ran");
    let written: BTreeSet<u8> = (1..=(WRITERS * ROUNDS) as u8).collect();
    for store in [&main, &other] {
        let last = ok(store.load(key).await, "final load");
        check_whole(&last, &written, "final value");
    }
    assert_eq!(
        ok(main.list("race", true).await, "list race"),
        vec![key.to_owned()],
        "concurrent writes left extra keys"
    );
}

/// Two instances opened on the same namespace see each other's writes, overwrites,
/// listings and deletes.
pub async fn instances_share_data(fixture: &Fixture) {
    let a = fixture.store().await;
    let b = fixture.open_another().await;
    ok(a.store("shared/one", b"from a").await, "store through a");
    assert_value(b.load("shared/one").await, "shared/one", b"from a");
    assert!(ok(b.exists("shared").await, "exists through b"));
    ok(
        b.store("shared/one", b"from b").await,
        "overwrite through b",
    );
    ok(b.store("shared/two/deep", b"2").await, "store through b");
    assert_value(a.load("shared/one").await, "shared/one", b"from b");
    assert_eq!(
        ok(a.list("shared", true).await, "list through a"),
        vec!["shared/one".to_owned(), "shared/two/deep".to_owned()]
    );
    assert_eq!(
        ok(a.stat("shared/two/deep").await, "stat through a").size,
        1
    );
    ok(a.delete("shared/one").await, "delete through a");
    not_found(
        b.load("shared/one").await,
        "load through b after delete through a",
    );
    ok(b.delete("shared").await, "delete prefix through b");
    assert!(!ok(a.exists("shared").await, "exists through a"));
    match a.delete("shared").await {
        Err(Error::NotFound { .. }) => {}
        other => {
            panic!("delete of what the other instance deleted: expected NotFound, got {other:?}")
        }
    }
    let c = fixture.open_another().await;
    ok(
        c.store("third/key", b"3").await,
        "store through a third instance",
    );
    drop(c);
    assert_value(a.load("third/key").await, "third/key", b"3");
    assert_value(b.load("third/key").await, "third/key", b"3");
}

/// A lock held through one instance is held for the other, and released for both.
pub async fn instances_share_locks(fixture: &Fixture) {
    let a = fixture.store().await;
    let b = fixture.open_another().await;
    let ttl = fixture.capabilities().ttl(Duration::from_secs(10));
    let held = ok(
        a.try_acquire("shared-lock", ttl).await,
        "try_acquire through a",
    )
    .unwrap_or_else(|| panic!("a free lock was not taken"));
    assert!(
        ok(
            b.try_acquire("shared-lock", ttl).await,
            "try_acquire through b"
        )
        .is_none(),
        "the second instance took a lock the first holds"
    );
    let held = ok(a.refresh(&held, ttl).await, "refresh through a");
    assert!(
        ok(
            b.try_acquire("shared-lock", ttl).await,
            "try_acquire through b"
        )
        .is_none(),
        "the second instance took a refreshed lock"
    );
    ok(a.release(&held).await, "release through a");
    let taken = ok(
        b.try_acquire("shared-lock", ttl).await,
        "try_acquire through b",
    )
    .unwrap_or_else(|| panic!("the second instance could not take a released lock"));
    assert!(
        ok(
            a.try_acquire("shared-lock", ttl).await,
            "try_acquire through a"
        )
        .is_none(),
        "the first instance took a lock the second holds"
    );
    ok(b.release(&taken).await, "release through b");
    let again = ok(
        a.try_acquire("shared-lock", ttl).await,
        "try_acquire through a",
    )
    .unwrap_or_else(|| panic!("the lock was not free after release through b"));
    ok(a.release(&again).await, "release");
}
