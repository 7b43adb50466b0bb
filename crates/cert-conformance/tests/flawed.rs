//! The suite must catch broken backends: each test here runs a case against
//! [`MemoryStorage`] with one deliberate flaw and expects the case to fail.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use cert_conformance::{Capabilities, Fixture, opener, run_case};
use cert_core::{
    Error, KeyInfo, Lease, LockToken, Locker, MemoryStorage, Result, Storage, async_trait,
    validate_key,
};
use futures::FutureExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    UnsortedList,
    AcceptsInvalidKeys,
    DeleteMissingIsOk,
    PrefixMatchedByString,
    TornWrites,
    ReleaseIgnoresToken,
    AlwaysAcquires,
    NeverExpires,
    LeaseFromLongAgo,
    LocksAreKeys,
    StaleExists,
}

#[derive(Debug, Clone)]
struct Flawed {
    inner: MemoryStorage,
    flaw: Flaw,
    leases: Arc<Mutex<HashMap<String, Lease>>>,
    opened: Instant,
}

static STORES: LazyLock<Mutex<HashMap<String, Flawed>>> = LazyLock::new(Default::default);

fn open(ns: &str, flaw: Flaw) -> Flawed {
    STORES
        .lock()
        .unwrap()
        .entry(ns.to_owned())
        .or_insert_with(|| Flawed {
            inner: MemoryStorage::new(),
            flaw,
            leases: Arc::default(),
            opened: Instant::now(),
        })
        .clone()
}

#[async_trait]
impl Storage for Flawed {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        match self.flaw {
            Flaw::AcceptsInvalidKeys if validate_key(key).is_err() => Ok(()),
            Flaw::TornWrites if value.len() > 1 => {
                let mut half = value.to_vec();
                let len = half.len();
                half[len / 2..].fill(0xEE);
                self.inner.store(key, &half).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.inner.store(key, value).await
            }
            _ => self.inner.store(key, value).await,
        }
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.load(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(key).await {
            Err(Error::NotFound { .. }) if self.flaw == Flaw::DeleteMissingIsOk => Ok(()),
            other => other,
        }
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        if self.flaw == Flaw::StaleExists && !key.contains('/') {
            // Like an empty directory left behind.
            return Ok(true);
        }
        self.inner.exists(key).await
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        match self.flaw {
            Flaw::UnsortedList => {
                let mut keys = self.inner.list(prefix, recursive).await?;
                keys.reverse();
                Ok(keys)
            }
            Flaw::PrefixMatchedByString if recursive => {
                let all = self.inner.list("", true).await?;
                Ok(all.into_iter().filter(|k| k.starts_with(prefix)).collect())
            }
            _ => self.inner.list(prefix, recursive).await,
        }
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        self.inner.stat(key).await
    }
}

#[async_trait]
impl Locker for Flawed {
    async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<Lease>> {
        let ttl = match self.flaw {
            Flaw::NeverExpires => Duration::from_secs(3600),
            _ => ttl,
        };
        if self.flaw == Flaw::LocksAreKeys {
            self.inner.store(&format!("locks/{name}"), b"held").await?;
        }
        let taken = self.inner.try_acquire(name, ttl).await?;
        let taken = match (taken, self.flaw) {
            (None, Flaw::AlwaysAcquires) => {
                Some(Lease::new(name, LockToken::generate(), ttl, Instant::now()))
            }
            (Some(lease), Flaw::LeaseFromLongAgo) => {
                Some(Lease::new(name, lease.token().clone(), ttl, self.opened))
            }
            (taken, _) => taken,
        };
        if let Some(lease) = &taken {
            self.leases
                .lock()
                .unwrap()
                .insert(name.to_owned(), lease.clone());
        }
        Ok(taken)
    }

    async fn refresh(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        match self.inner.refresh(lease, ttl).await {
            Err(Error::LockLost { .. }) if self.flaw == Flaw::AlwaysAcquires => {
                Ok(lease.renewed(ttl, Instant::now()))
            }
            other => other,
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        if self.flaw == Flaw::ReleaseIgnoresToken {
            let current = self.leases.lock().unwrap().get(lease.name()).cloned();
            if let Some(current) = current {
                return self.inner.release(&current).await;
            }
        }
        match self.inner.release(lease).await {
            Err(Error::LockLost { .. }) if self.flaw == Flaw::AlwaysAcquires => Ok(()),
            other => other,
        }
    }
}

/// Runs `case` on a store with `flaw`; returns whether the case passed.
async fn passes(flaw: Flaw, case: &str) -> bool {
    let open = opener(move |ns: String| {
        let store = open(&ns, flaw);
        async move { store }
    });
    let caps = Capabilities::default()
        .without_cross_process()
        .with_list_keys(200)
        .with_case_timeout(Duration::from_secs(60));
    let fixture = Fixture::new(open, caps);
    let run = AssertUnwindSafe(run_case(case, &fixture)).catch_unwind();
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(known)) => {
            assert!(known, "no case is called {case}");
            true
        }
        Ok(Err(_panic)) => false,
        Err(_) => false,
    }
}

async fn check(flaw: Flaw, cases: &[&str]) {
    for case in cases {
        assert!(
            passes(Flaw::None, case).await,
            "{case} fails on the correct store"
        );
        assert!(
            !passes(flaw, case).await,
            "{case} did not notice the flaw {flaw:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_unsorted_lists() {
    check(
        Flaw::UnsortedList,
        &[
            "list_children_and_recursive",
            "list_root",
            "list_many_keys",
            "special_characters_in_keys",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_accepted_invalid_keys() {
    check(Flaw::AcceptsInvalidKeys, &["invalid_keys_rejected"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_delete_of_missing_key_succeeding() {
    check(
        Flaw::DeleteMissingIsOk,
        &["missing_key_not_found", "delete_prefix_recursively"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_prefixes_matched_by_string() {
    check(
        Flaw::PrefixMatchedByString,
        &["list_matches_whole_segments", "list_many_keys"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_torn_writes() {
    check(Flaw::TornWrites, &["concurrent_writers_are_atomic"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_release_by_foreign_token() {
    check(Flaw::ReleaseIgnoresToken, &["foreign_token_refused"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_broken_exclusion() {
    check(
        Flaw::AlwaysAcquires,
        &[
            "lock_mutual_exclusion",
            "try_lock_while_held",
            "instances_share_locks",
            "keep_alive_holds_lock",
            "abandoned_lock_taken_over_by_one",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_leases_that_never_expire() {
    check(
        Flaw::NeverExpires,
        &["expired_lease_refused", "abandoned_lock_taken_over_by_one"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_leases_counted_from_the_start_of_waiting() {
    check(Flaw::LeaseFromLongAgo, &["late_winner_gets_full_lease"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_locks_stored_as_keys() {
    check(Flaw::LocksAreKeys, &["lock_names_apart_from_keys"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catches_prefixes_left_behind() {
    check(Flaw::StaleExists, &["exists_keys_and_prefixes"]).await;
}
