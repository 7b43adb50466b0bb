//! The conformance suite every certstore backend runs: one `pub async fn` per behaviour
//! of the [`Storage`](cert_core::Storage) and [`Locker`](cert_core::Locker) contracts,
//! and the [`conformance_tests!`] macro that turns them into one named test each.
//!
//! **The suite writes and deletes data.** Every case works inside the namespace it is
//! given (the macro picks a fresh random one per test) and deletes everything it can see
//! there when it passes; point it only at a server, database, bucket or directory meant
//! for tests.
//!
//! A backend's test file needs one macro call (see [`conformance_tests!`]):
//!
//! ```text
//! conformance_tests! {
//!     open: |ns: String| async move { MyStore::connect(&url, &ns).await.unwrap() },
//!     capabilities: Capabilities::default().with_lock_expiry_slack(Duration::from_millis(50)),
//!     enabled: || std::env::var("MY_STORE_URL").is_ok(),
//! }
//! ```
//!
//! The cases are ordinary functions taking a [`Fixture`], so a custom backend can also run
//! them, all or some, from its own code. Here every case runs on
//! [`MemoryStorage`](cert_core::MemoryStorage), whose clones share data, so one clone per
//! namespace stands for "the same data, opened again":
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! use cert_conformance::{CASES, Capabilities, Fixture, opener, run_case};
//! use cert_core::MemoryStorage;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 4)]
//! # async fn main() {
//! let stores: Arc<Mutex<HashMap<String, MemoryStorage>>> = Arc::default();
//! let open = opener(move |ns: String| {
//!     let store = stores.lock().unwrap().entry(ns).or_default().clone();
//!     async move { store }
//! });
//! let capabilities = Capabilities::default().without_cross_process().with_list_keys(500);
//! for case in CASES {
//!     let fixture = Fixture::new(open.clone(), capabilities.clone());
//!     assert!(run_case(case, &fixture).await);
//!     fixture.cleanup().await;
//! }
//! # }
//! ```
//!
//! Capabilities describe what the backend can do (shared across processes or not, the
//! shortest lock time to live it accepts, how late it may notice an expired lease,
//! whether its fenced writes check the lock on the server) and
//! how big the suite's data is; see [`Capabilities`]. A backend that keeps its data in one
//! process's memory must say so with
//! [`without_cross_process`](Capabilities::without_cross_process): the cross-process lock
//! case re-runs the test binary, and its child processes would see none of the data (the
//! case fails saying so).
//!
//! A case that finds the contract broken panics, as any failing test does. Through
//! [`conformance_tests!`] or [`run_case`], the panic message names the case, the contract
//! rule it checks and where the suite was run from (the macro's invocation, or the call
//! to `run_case`), followed by the case's own message:
//!
//! ```text
//! conformance case `instances_share_data` failed (the suite was run from tests/my_store.rs:12:1)
//!   contract: two instances opened on the same namespace see each other's writes
//!   failure: load "shared/one": unexpected error NotFound { key: "shared/one" } (not found: shared/one)
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod capabilities;
mod fencing;
mod fixture;
mod keys;
mod listing;
mod locks;
mod macros;
mod process;
mod runner;
mod sharing;
mod support;
mod values;

pub use capabilities::Capabilities;
pub use fencing::{fenced_write_refused_after_takeover, fenced_write_while_held};
pub use fixture::{Fixture, Opener, opener, random_namespace};
pub use keys::{invalid_keys, invalid_keys_rejected, value_and_prefix_at_same_key};
pub use listing::{
    delete_prefix_recursively, list_absent_prefix_is_empty, list_children_and_recursive,
    list_many_keys, list_matches_whole_segments, list_root, special_characters_in_keys,
};
pub use locks::{
    abandoned_lock_taken_over_by_one, cancelled_lock_on_free_lock_mid_attempt,
    cancelled_wait_leaves_nothing_held, clean_expired_locks_spares_live_ones,
    clean_spares_lease_with_little_left, expired_lease_refused, foreign_token_refused,
    keep_alive_holds_lock, late_winner_gets_full_lease, lock_mutual_exclusion,
    lock_names_apart_from_keys, lost_lock_noticed_within_ttl, measure_lock_latency,
    takeover_timing_after_refreshes, try_lock_while_held,
};
pub use process::cross_process_lock;
pub use runner::{CHILD_ENV, test_name};
pub use sharing::{concurrent_writers_are_atomic, instances_share_data, instances_share_locks};
pub use values::{
    all_byte_values, empty_value, exists_keys_and_prefixes, large_value, missing_key_not_found,
    modified_moves_forward_on_overwrite, overwrite, round_trip, stat_key_and_prefix,
    too_large_value_refused,
};

__cert_conformance_cases! { __cert_conformance_index {} }

/// Implementation details of [`conformance_tests!`]; not a stable interface.
#[doc(hidden)]
pub mod __private {
    pub use crate::runner::{reporting, run_test};
}
