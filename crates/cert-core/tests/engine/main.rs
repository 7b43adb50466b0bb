//! The certificate engine on shared in-memory storage: obtaining, loading on restart,
//! renewal, pick-up by another node, issuer fallback, backoff, a three-node cluster,
//! real TLS handshakes against the resolver, stored records and on-demand names. This
//! file holds the helpers the test modules share.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use cert_core::{
    CertManager, Event, InternalIssuer, InternalIssuerConfig, Issuer, LockOptions, ManagerConfig,
    RetryPolicy, Store,
};

mod lifecycle;
mod on_demand;
mod records;
mod resume;
mod serving;

fn internal(storage: &Arc<dyn Store>, leaf: Duration) -> Arc<InternalIssuer> {
    Arc::new(InternalIssuer::new(
        Arc::clone(storage),
        InternalIssuerConfig::default().with_leaf_lifetime(leaf),
    ))
}

fn config() -> ManagerConfig {
    ManagerConfig::default()
        .with_retry(RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_millis(400),
        ))
        .with_lock(LockOptions::default().with_ttl(Duration::from_secs(5)))
}

fn manager(storage: &Arc<dyn Store>, issuers: Vec<Arc<dyn Issuer>>) -> CertManager {
    CertManager::new(
        Arc::clone(storage),
        Arc::new(cert_core::Cache::new(1000)),
        issuers,
        config(),
    )
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    events
}

fn serial(manager: &CertManager, name: &str) -> String {
    manager.certificate_meta(name).unwrap().serial
}
