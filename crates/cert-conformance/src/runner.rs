//! Running one case as a test: the runtime, the namespace, skipping and cleaning up, and
//! what a failure says.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::time::Duration;

use futures::FutureExt;

use crate::{Capabilities, Fixture, Opener, run_case};

/// The environment variable that tells a child process of the cross-process case which
/// namespace to open: its value is `child:<namespace>`.
pub const CHILD_ENV: &str = "CERTSTORE_CONFORMANCE_CHILD";

/// The namespace this process must use when it was started as a child of the
/// cross-process case.
pub(crate) fn child_namespace() -> Option<String> {
    let value = std::env::var(CHILD_ENV).ok()?;
    value.strip_prefix("child:").map(str::to_owned)
}

/// The name libtest gives the test function `case` in the module `module_path`
/// (as printed by `module_path!()`: the crate name comes first and is not part of it).
pub fn test_name(module_path: &str, case: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{case}"),
        None => case.to_owned(),
    }
}

/// Runs `run`, the future of the case `case` checking `rule`; when it panics, panics again
/// with a message naming the case, the rule and `caller` (where the suite was run from),
/// followed by the case's own message.
pub async fn reporting(
    case: &str,
    rule: &str,
    caller: &'static Location<'static>,
    run: impl Future<Output = ()>,
) {
    if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
        panic!("{}", failure(case, rule, caller, panic_text(&*panic)));
    }
}

/// What a failed case says.
fn failure(case: &str, rule: &str, caller: &Location<'_>, cause: &str) -> String {
    format!(
        "conformance case `{case}` failed (the suite was run from {caller})\n  \
         contract: {rule}\n  failure: {cause}"
    )
}

/// The message of a panic's payload.
fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.as_str()
    } else {
        "a panic without a message"
    }
}

/// Runs the case `case` as the body of a test: what
/// [`conformance_tests!`](crate::conformance_tests) expands to. Failures name the caller's
/// location (the macro's invocation).
///
/// # Panics
///
/// When the case fails, runs longer than
/// [`Capabilities::case_timeout`], or the runtime cannot be built.
#[track_caller]
pub fn run_test(
    module_path: &str,
    case: &str,
    open: fn() -> Opener,
    capabilities: fn() -> Capabilities,
    enabled: fn() -> bool,
) {
    let caller = Location::caller();
    let name = test_name(module_path, case);
    if !enabled() {
        eprintln!("SKIPPED {name}: the backend is not enabled here");
        return;
    }
    let capabilities = capabilities();
    let child = child_namespace();
    let fixture = match &child {
        Some(namespace) => Fixture::with_namespace(open(), namespace.clone(), capabilities),
        None => Fixture::new(open(), capabilities),
    }
    .with_test_name(name.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("{name} (run from {caller}): cannot build a tokio runtime: {err}"),
    };
    let timeout = fixture.capabilities().case_timeout;
    // Called here, not inside the async block, so it sees this function's caller.
    let running = run_case(case, &fixture);
    runtime.block_on(async {
        match tokio::time::timeout(timeout, running).await {
            Ok(true) => {}
            Ok(false) => {
                panic!("{name} (run from {caller}): no conformance case is called {case:?}")
            }
            Err(_) => panic!(
                "{name} (run from {caller}): still running after {timeout:?} (namespace {})",
                fixture.namespace()
            ),
        }
        // A child shares its namespace with its parent, which cleans up.
        if child.is_none() {
            fixture.cleanup().await;
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CASES, random_namespace};

    #[test]
    fn failures_name_the_case_the_rule_and_the_caller() {
        let caller = Location::caller();
        let text = failure(
            "round_trip",
            "a stored value loads back",
            caller,
            "load: boom",
        );
        assert!(text.contains("`round_trip`"), "{text}");
        assert!(
            text.contains("contract: a stored value loads back"),
            "{text}"
        );
        assert!(
            text.contains(&format!("{}:{}", file!(), caller.line())),
            "{text}"
        );
        assert!(text.ends_with("failure: load: boom"), "{text}");
        let owned: Box<dyn Any + Send> = Box::new(String::from("owned"));
        assert_eq!(panic_text(&*owned), "owned");
        let fixed: Box<dyn Any + Send> = Box::new("fixed");
        assert_eq!(panic_text(&*fixed), "fixed");
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(panic_text(&*other), "a panic without a message");
    }

    #[test]
    fn test_names_drop_the_crate() {
        assert_eq!(
            test_name("memory::conformance_suite", "round_trip"),
            "conformance_suite::round_trip"
        );
        assert_eq!(
            test_name("cert_file::tests::conformance_suite", "cross_process_lock"),
            "tests::conformance_suite::cross_process_lock"
        );
        assert_eq!(test_name("memory", "x"), "x");
    }

    #[test]
    fn namespaces_are_fresh_and_plain() {
        let a = random_namespace();
        let b = random_namespace();
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
            "{a}"
        );
        assert!(cert_core::validate_key(&a).is_ok());
    }

    #[test]
    fn cases_are_unique_and_defaults_match_the_docs() {
        let mut names = CASES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CASES.len());
        assert!(CASES.contains(&"cross_process_lock"));
        let caps = Capabilities::default();
        assert!(caps.cross_process);
        assert_eq!(caps.list_keys, 10_000);
        assert_eq!(caps.large_value, 4 * 1024 * 1024);
        assert_eq!(caps.min_lock_ttl, Duration::from_millis(200));
        assert_eq!(caps.lock_expiry_slack, Duration::ZERO);
        assert_eq!((caps.processes, caps.cycles), (4, 100));
        assert!(!caps.without_cross_process().cross_process);
    }
}
