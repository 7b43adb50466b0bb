//! Issuance that can be resumed: the private key of an unfinished issuance waits in
//! storage and every later attempt, on any node, asks with it, so a certificate the issuer
//! signed for it is never wasted; once its certificate is saved the key is removed, and a
//! key equal to the saved certificate's is never used again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cert_core::issuer::{IssueError, IssueRequest, Issued};
use cert_core::record::{CertificateId, load_certificate};
use cert_core::{InternalIssuer, Issuer, MemoryStorage, Storage, Store, async_trait};

use super::{internal, manager};

/// The internal CA behind an issuer that resumes issuance, failing its first `fail`
/// calls and recording the public key of every call.
#[derive(Debug)]
struct Flaky {
    inner: Arc<InternalIssuer>,
    fail: AtomicUsize,
    asked: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Issuer for Flaky {
    fn id(&self) -> String {
        self.inner.id()
    }

    async fn issue(&self, request: IssueRequest<'_>) -> Result<Issued, IssueError> {
        self.asked
            .lock()
            .unwrap()
            .push(request.public_key_pem.to_owned());
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(IssueError::temporary("the CA is away"));
        }
        self.inner.issue(request).await
    }

    fn resumes_issuance(&self) -> bool {
        true
    }
}

/// The private key of the certificate record stored for `name` by `issuer`.
async fn stored_key(storage: &dyn Storage, issuer: &str, name: &str) -> String {
    let loaded = load_certificate(storage, &CertificateId::new(issuer, name))
        .await
        .unwrap()
        .and_then(|state| state.valid())
        .unwrap();
    loaded.stored.key_pem.to_string()
}

#[tokio::test]
async fn an_unfinished_issuance_is_asked_again_with_its_key_from_any_node() {
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let flaky = Arc::new(Flaky {
        inner: internal(&storage, Duration::from_secs(3)),
        fail: AtomicUsize::new(1),
        asked: std::sync::Mutex::new(Vec::new()),
    });
    let first = manager(&storage, vec![flaky.clone() as Arc<dyn Issuer>]);
    let name = "resume.example";
    assert!(first.manage([name]).await.is_err());
    let pending = cert_core::keys::pending_key(&flaky.id(), name);
    let kept = String::from_utf8(storage.load(&pending).await.unwrap()).unwrap();

    // Another node; the fleet backs the name off for a moment after the failure.
    let second = manager(&storage, vec![flaky.clone() as Arc<dyn Issuer>]);
    let mut result = second.manage([name]).await;
    for _ in 0..40 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = second.manage([name]).await;
    }
    result.unwrap();
    let asked = flaky.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "one failed call, one that succeeded");
    assert_eq!(
        asked[0], asked[1],
        "the second call asked with the first key"
    );
    assert_eq!(stored_key(storage.as_ref(), &flaky.id(), name).await, kept);
    assert!(
        !storage.exists(&pending).await.unwrap(),
        "the key is removed once its certificate is saved"
    );

    // A crash between the save and the removal leaves the saved certificate's key
    // behind: the renewal does not use it again.
    storage.store(&pending, kept.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.renew_due().await;
    let asked = flaky.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 3, "renewed once");
    assert_ne!(asked[2], asked[0], "a fresh key for the renewal");
    assert_ne!(stored_key(storage.as_ref(), &flaky.id(), name).await, kept);
}
