//! [`LocalWaiters`]: waiters for a lock in this process, woken the moment a guard here
//! releases it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Wakes waiters in this process as soon as a guard here releases the same name, so local
/// contention does not wait out a backoff pause. Waiters elsewhere still poll.
pub(super) struct LocalWaiters {
    name: String,
    notify: Arc<Notify>,
}

static LOCAL_WAITERS: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl LocalWaiters {
    pub(super) fn register(name: &str) -> Self {
        let notify = Arc::clone(
            LOCAL_WAITERS
                .lock()
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Notify::new())),
        );
        LocalWaiters {
            name: name.to_owned(),
            notify,
        }
    }

    pub(super) async fn notified(&self) {
        self.notify.notified().await;
    }

    pub(super) fn wake(name: &str) {
        if let Some(notify) = LOCAL_WAITERS.lock().get(name) {
            notify.notify_waiters();
        }
    }
}

impl Drop for LocalWaiters {
    fn drop(&mut self) {
        let mut waiters = LOCAL_WAITERS.lock();
        // The map's reference and ours: nobody else is waiting on this name.
        if Arc::strong_count(&self.notify) <= 2 {
            waiters.remove(&self.name);
        }
    }
}
