//! Engine nodes sharing one storage, each with an ACME issuer pointed at Pebble.

use std::sync::Arc;
use std::time::Duration;

use cert_core::challenge::{ChallengeType, Challenges};
use cert_core::{
    AcmeConfig, AcmeIssuer, Cache, CertManager, Event, Issuer, LockOptions, ManagerConfig,
    RetryPolicy, Store,
};

use super::Pebble;

pub fn acme_config(pebble: &Pebble, types: &[ChallengeType]) -> AcmeConfig {
    AcmeConfig::new(pebble.directory())
        .with_email("ops@example.com")
        .agree_to_terms()
        .with_root_pem_file(pebble.listener_root())
        .with_challenge_types(types.iter().copied())
        .with_order_timeout(Duration::from_secs(30))
        .with_retries(2, Duration::from_millis(200))
}

pub fn manager_config() -> ManagerConfig {
    ManagerConfig::default()
        .with_retry(RetryPolicy::new(
            Duration::from_millis(200),
            Duration::from_millis(800),
        ))
        .with_lock(LockOptions::default().with_ttl(Duration::from_secs(30)))
}

/// One node: engine, challenge data, and its servers.
pub struct Node {
    pub manager: CertManager,
    pub challenges: Arc<Challenges>,
    pub issuer: Arc<AcmeIssuer>,
}

pub fn node(storage: &Arc<dyn Store>, pebble: &Pebble, types: &[ChallengeType]) -> Node {
    node_with(storage, pebble, acme_config(pebble, types))
}

/// One node whose ACME issuer has `config` (DNS-01 through Pebble's test DNS server).
pub fn node_with(storage: &Arc<dyn Store>, pebble: &Pebble, config: AcmeConfig) -> Node {
    let challenges = Challenges::new(Arc::clone(storage));
    let issuer = Arc::new(
        AcmeIssuer::new(Arc::clone(storage), Arc::clone(&challenges), config)
            .with_dns_provider(pebble.dns()),
    );
    let manager = CertManager::new(
        Arc::clone(storage),
        Arc::new(Cache::new(1000)),
        vec![Arc::clone(&issuer) as Arc<dyn Issuer>],
        manager_config(),
    );
    Node {
        manager,
        challenges,
        issuer,
    }
}

pub fn count_obtained(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> usize {
    let mut n = 0;
    while let Ok(event) = rx.try_recv() {
        if matches!(event, Event::Obtained { .. } | Event::Renewed { .. }) {
            n += 1;
        }
    }
    n
}
