//! Failures back off across the fleet: the state lives in storage, so every node sees it.

use std::time::Duration;

use cert_core::{ManageError, RetryPolicy, StorageExt, keys};

use super::{Backend, NAME, config, counted, node, served};

/// A name whose issuer fails backs off across the fleet: a second node refuses to order
/// while the backoff runs (without calling its issuer), orders once it has passed, and a
/// success removes the shared state.
pub async fn backoff_is_shared(backend: &dyn Backend) {
    // Long enough that the second node always looks inside it (the shared state counts
    // whole seconds), short enough to wait out.
    let retry = RetryPolicy::new(Duration::from_secs(4), Duration::from_secs(8));
    let store = backend.open().await;
    let key = keys::backoff(NAME);
    assert_eq!(key, format!("maintenance/backoff/{NAME}.json"));

    let failing = counted(&store);
    failing.set_failing(true);
    let first = node(&store, failing.clone(), config().with_retry(retry));
    let failures = first.manage([NAME]).await.unwrap_err();
    assert!(
        matches!(failures.as_slice(), [(_, ManageError::Issue { .. })]),
        "{failures:?}"
    );
    assert_eq!(failing.calls(), 1);
    let state: serde_json::Value = store.load_json(&key).await.unwrap();
    assert_eq!(state["failures"], 1, "{state}");

    let working = counted(&store);
    let second = node(&store, working.clone(), config().with_retry(retry));
    let failures = second.manage([NAME]).await.unwrap_err();
    let retry_in = match failures.as_slice() {
        [
            (
                _,
                ManageError::BackingOff {
                    retry_in, failures, ..
                },
            ),
        ] => {
            assert_eq!(*failures, 1);
            *retry_in
        }
        other => panic!("the second node backs off: {other:?}"),
    };
    assert!(retry_in <= retry.initial, "{retry_in:?}");
    assert_eq!(working.calls(), 0, "nothing ordered while backing off");
    assert_eq!(failing.calls(), 1);

    // The shared state counts whole seconds: wait a second more than it says.
    tokio::time::sleep(retry_in + Duration::from_secs(1)).await;
    second
        .manage([NAME])
        .await
        .unwrap_or_else(|err| panic!("the backoff has passed: {err:?}"));
    assert_eq!(working.calls(), 1, "ordered once the backoff passed");
    served(&second, "after the backoff");
    assert_eq!(
        store.load_opt(&key).await.unwrap(),
        None,
        "the backoff state is removed"
    );
    drop((first, second));
    backend.close(store).await;
}
