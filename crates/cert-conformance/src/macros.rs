//! The one list of cases, and the macros built from it.

/// The list of every case with the contract rule it checks, in the order they are
/// documented. Invokes `$crate::$callback!` with `{ $args }` followed by `case: "rule",`
/// pairs; the test macro, [`CASES`](crate::CASES) and [`run_case`](crate::run_case) are
/// all generated from it, so they cannot drift.
#[doc(hidden)]
#[macro_export]
macro_rules! __cert_conformance_cases {
    ($callback:ident { $($args:tt)* }) => {
        $crate::$callback! {
            { $($args)* }
            // values
            round_trip: "a stored value loads back byte for byte, exists, and is described by `stat`",
            overwrite: "storing again replaces the value entirely, longer or shorter",
            empty_value: "an empty value is a value: it loads as empty, exists, is listed and has size 0",
            large_value: "a multi-MiB value round-trips intact",
            all_byte_values: "every byte value 0..=255 survives, in any order",
            too_large_value_refused: "a value over MAX_VALUE_LEN is refused with Error::TooLarge and nothing is written",
            missing_key_not_found: "`load`, `stat` and `delete` of a missing key are Error::NotFound; `exists` is false",
            exists_keys_and_prefixes: "`exists` is true for keys and every prefix above them, false for partial segments and after deletion",
            stat_key_and_prefix: "`stat` of a key reports its size, a recent time and is_terminal; of a prefix, not terminal and size 0",
            // listing and deleting
            list_children_and_recursive: "listing gives the direct children, or every key below when recursive, sorted bytewise",
            list_matches_whole_segments: "a prefix is matched by whole segments (`a` is not a prefix of `ab/c`)",
            list_root: "`\"\"` lists from the root",
            list_absent_prefix_is_empty: "listing a prefix nothing is stored under gives an empty list, not an error",
            special_characters_in_keys: "keys with characters special to SQL LIKE, globs, URLs or shells are handled literally",
            list_many_keys: "many keys under one prefix are listed completely and in order",
            delete_prefix_recursively: "deleting a prefix removes everything below it and nothing beside it",
            // key rules
            invalid_keys_rejected: "every invalid key is refused with Error::InvalidKey by every operation, and nothing is written",
            value_and_prefix_at_same_key: "a key that is a prefix of others never silently loses data",
            // concurrency and sharing
            concurrent_writers_are_atomic: "concurrent writes of one key are atomic: every read is exactly one written value",
            instances_share_data: "two instances opened on the same namespace see each other's writes",
            instances_share_locks: "a lock held through one instance is held for the other",
            // locks
            lock_names_apart_from_keys: "lock names live apart from storage keys",
            lock_mutual_exclusion: "a lock has at most one holder at a time",
            try_lock_while_held: "try_lock fails while the lock is held and succeeds after release",
            foreign_token_refused: "a lease with a foreign token cannot refresh or release the lock",
            expired_lease_refused: "an expired lease can be taken over, and the old lease can then neither refresh nor release",
            abandoned_lock_taken_over_by_one: "an abandoned lock is taken over after its time to live, not before, by exactly one waiter",
            keep_alive_holds_lock: "the guard returned by `lock` keeps the lock alive",
            cancelled_wait_leaves_nothing_held: "cancelling `lock` while it waits leaves nothing held",
            late_winner_gets_full_lease: "a lock won after a long wait gets a whole lease, counted from the win",
            clean_expired_locks_spares_live_ones: "cleaning expired locks never removes a live lease",
            lost_lock_noticed_within_ttl: "a guard whose refreshes fail notices within its time to live",
            takeover_timing_after_refreshes: "refreshes move the backend's expiry of a lock",
            cancelled_lock_on_free_lock_mid_attempt: "a `lock` call dropped mid-attempt leaves nothing held",
            clean_spares_lease_with_little_left: "cleaning spares a live lease even when little of it is left",
            modified_moves_forward_on_overwrite: "overwriting a value moves its modification time forward",
            // fenced writes
            fenced_write_while_held: "while a lease is held, fenced writes behave like plain ones",
            fenced_write_refused_after_takeover: "a lease taken over by another holder can no longer write",
            cross_process_lock: "a lock excludes holders in other OS processes opened on the same namespace",
        }
    };
}

/// Builds `CASES` and `run_case` from the case list.
#[doc(hidden)]
#[macro_export]
macro_rules! __cert_conformance_index {
    ({} $($case:ident: $rule:literal,)*) => {
        /// The name of every case, in the order the suite documents and runs them. Each is
        /// a `pub async fn` of this crate taking a [`Fixture`], and a test of that name in
        /// the module generated by [`conformance_tests!`].
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        /// Runs the case called `name` (one of [`CASES`]) against `fixture`. Returns
        /// `false`, without running anything, for an unknown name.
        ///
        /// # Panics
        ///
        /// When the store breaks the contract the case checks. The panic message names
        /// the case, the contract rule it checks and where `run_case` was called from,
        /// then gives the failure (a case's own panic, printed just before, points into
        /// this crate).
        #[track_caller]
        pub fn run_case<'a>(
            name: &'a str,
            fixture: &'a Fixture,
        ) -> impl ::std::future::Future<Output = bool> + 'a {
            let caller = ::std::panic::Location::caller();
            async move {
                match name {
                    $(stringify!($case) => {
                        $crate::__private::reporting(
                            stringify!($case),
                            $rule,
                            caller,
                            $case(fixture),
                        )
                        .await;
                        true
                    })*
                    _ => false,
                }
            }
        }
    };
}

/// Expands into the test functions, one per case.
#[doc(hidden)]
#[macro_export]
macro_rules! __cert_conformance_tests {
    ({} $($case:ident: $rule:literal,)*) => {
        /// The certstore conformance suite, one test per case.
        #[doc(hidden)]
        mod conformance_suite {
            $(
                #[test]
                fn $case() {
                    $crate::__private::run_test(
                        module_path!(),
                        stringify!($case),
                        super::__cert_conformance_open,
                        super::__cert_conformance_capabilities,
                        super::__cert_conformance_enabled,
                    );
                }
            )*
        }
    };
}

/// Expands into one test per conformance case for a backend.
///
/// Use it once at module level of a test file (it defines a module `conformance_suite`
/// and three functions whose names start with `__cert_conformance_`):
///
/// ```no_run
/// use std::collections::HashMap;
/// use std::sync::{LazyLock, Mutex};
///
/// use cert_conformance::{Capabilities, conformance_tests};
/// use cert_core::MemoryStorage;
///
/// // Opening the same namespace twice must reach the same data.
/// static STORES: LazyLock<Mutex<HashMap<String, MemoryStorage>>> = LazyLock::new(Default::default);
///
/// fn open_memory(ns: &str) -> MemoryStorage {
///     let mut stores = STORES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
///     stores.entry(ns.to_owned()).or_default().clone()
/// }
///
/// conformance_tests! {
///     open: |ns: String| async move { open_memory(&ns) },
///     capabilities: Capabilities::default().without_cross_process(),
///     enabled: || true,
/// }
/// # fn main() {}
/// ```
///
/// - `open` (required): a closure from the case's namespace (a fresh random string of
///   `[a-z0-9_]`) to a future of the store, any type implementing
///   [`Store`](cert_core::Store). Calling it again with the same namespace must open a
///   second, independent instance over the same data.
/// - `capabilities` (optional): a [`Capabilities`](crate::Capabilities); the default
///   expects a backend shared across processes.
/// - `enabled` (optional): a `fn() -> bool`; when it returns `false` every test prints
///   `SKIPPED` and passes (for example when a server's URL is not configured).
///
/// Each test runs its case on its own multi-threaded tokio runtime (4 workers), with a
/// fresh namespace, and deletes what it wrote when it passes. The tests are called
/// `conformance_suite::<case>`, so `cargo test conformance_suite::` runs the whole suite
/// and `cargo test conformance_suite::round_trip` one case.
///
/// The cross-process case re-runs the test binary as child processes, with the arguments
/// libtest and `cargo nextest` understand, to run the same test in each child.
#[macro_export]
macro_rules! conformance_tests {
    (
        open: $open:expr
        $(, capabilities: $capabilities:expr)?
        $(, enabled: $enabled:expr)?
        $(,)?
    ) => {
        #[doc(hidden)]
        fn __cert_conformance_open() -> $crate::Opener {
            $crate::opener($open)
        }

        #[doc(hidden)]
        fn __cert_conformance_capabilities() -> $crate::Capabilities {
            #[allow(unused_mut)]
            let mut capabilities = $crate::Capabilities::default();
            $(capabilities = $capabilities;)?
            capabilities
        }

        #[doc(hidden)]
        fn __cert_conformance_enabled() -> bool {
            let enabled = true;
            $(let enabled: fn() -> bool = $enabled; let enabled = enabled();)?
            enabled
        }

        $crate::__cert_conformance_cases! { __cert_conformance_tests {} }
    };
}
