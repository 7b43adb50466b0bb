//! [`Fixture`]: how a case reaches the store under test.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use cert_core::{LockToken, Locker, Store};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::Capabilities;

/// Opens an instance of the store under test for a namespace.
///
/// Calling it twice with the same namespace must give two independent instances (own
/// connections, own handles) over the same data and locks; different namespaces must not
/// see each other's data. Build one from a closure with [`opener`].
pub type Opener = Arc<dyn Fn(String) -> BoxFuture<'static, Arc<dyn Store>> + Send + Sync>;

/// Wraps `open`, a closure from a namespace to a future of a store, as an [`Opener`].
///
/// ```
/// use cert_conformance::opener;
/// use cert_core::MemoryStorage;
///
/// let open = opener(|_ns: String| async move { MemoryStorage::new() });
/// # drop(open);
/// ```
pub fn opener<F, Fut, S>(open: F) -> Opener
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send + 'static,
    S: Store,
{
    Arc::new(
        move |namespace: String| -> BoxFuture<'static, Arc<dyn Store>> {
            let opening = open(namespace);
            Box::pin(async move { Arc::new(opening.await) as Arc<dyn Store> })
        },
    )
}

/// What one case runs against: the opener, the case's namespace and the backend's
/// [`Capabilities`].
///
/// The suite writes and deletes data inside the namespace; give each case a namespace of
/// its own ([`Fixture::new`] picks a random one).
pub struct Fixture {
    opener: Opener,
    namespace: String,
    capabilities: Capabilities,
    test_name: Option<String>,
    main: OnceCell<Arc<dyn Store>>,
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("namespace", &self.namespace)
            .field("capabilities", &self.capabilities)
            .field("test_name", &self.test_name)
            .finish_non_exhaustive()
    }
}

impl Fixture {
    /// A fixture with a fresh random namespace (see [`random_namespace`]).
    pub fn new(opener: Opener, capabilities: Capabilities) -> Self {
        Self::with_namespace(opener, random_namespace(), capabilities)
    }

    /// A fixture over an explicit `namespace`.
    pub fn with_namespace(
        opener: Opener,
        namespace: impl Into<String>,
        capabilities: Capabilities,
    ) -> Self {
        Fixture {
            opener,
            namespace: namespace.into(),
            capabilities,
            test_name: None,
            main: OnceCell::new(),
        }
    }

    /// Names the test running this fixture exactly as the test harness (libtest) knows it,
    /// for example `conformance_suite::cross_process_lock`. The cross-process case needs it
    /// to re-run that one test in child processes.
    pub fn with_test_name(mut self, test_name: impl Into<String>) -> Self {
        self.test_name = Some(test_name.into());
        self
    }

    /// The namespace this fixture's stores are opened with.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What the backend supports.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The test harness's name for the running test, if known.
    pub fn test_name(&self) -> Option<&str> {
        self.test_name.as_deref()
    }

    /// The main instance of the store, opened on first use and shared by later calls.
    pub async fn store(&self) -> Arc<dyn Store> {
        Arc::clone(
            self.main
                .get_or_init(|| (self.opener)(self.namespace.clone()))
                .await,
        )
    }

    /// The main instance as a [`Locker`], for [`cert_core::lock`] and friends.
    pub async fn locker(&self) -> Arc<dyn Locker> {
        self.store().await
    }

    /// A second, independent instance over the same data (a fresh call to the opener).
    pub async fn open_another(&self) -> Arc<dyn Store> {
        (self.opener)(self.namespace.clone()).await
    }

    /// Deletes everything the suite left in the namespace (best effort).
    pub async fn cleanup(&self) {
        let store = self.store().await;
        if let Ok(top) = store.list("", false).await {
            for key in top {
                let _ = store.delete(&key).await;
            }
        }
    }
}

/// A fresh namespace: `cc_` and 16 random hex digits, so only `[a-z0-9_]`.
pub fn random_namespace() -> String {
    let token = LockToken::generate();
    let hex = token.as_str();
    format!("cc_{}", hex.get(..16).unwrap_or(hex))
}
