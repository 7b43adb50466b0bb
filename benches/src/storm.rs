//! Suite `storm`: 1,000 clients open real TLS connections over loopback at once, all for
//! one server name nobody has a certificate for yet. The server accepts with
//! `accept_lazy` and `CertManager::prepare_handshake`, on-demand TLS allowing every name,
//! the internal CA issuing. Counted: issuances, storage loads, stores and lock attempts,
//! successful handshakes; timed: each client's connect + handshake + first bytes read.
//!
//! The baseline is the same storm once the name is cached (a warm storm), on the same
//! server in the same run: the cold storm's extra latency is what waiting for the one
//! issuance costs.
//!
//! Clients and server share one Tokio runtime (two worker threads on this machine), so
//! the latencies include the clients' own TLS work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cert_core::rustls::pki_types::ServerName;
use cert_core::rustls::{self, RootCertStore};
use cert_core::tokio_rustls::TlsConnector;
use cert_core::{
    Cache, CertManager, InternalIssuer, Issuer, ManagerConfig, MemoryStorage, OnDemandConfig,
    Store, accept_lazy, certificate, server_config,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fixtures::{Counted, CountedIssuer, Counts};
use crate::stats::{Latency, median, millis, ratio};
use crate::{BoxResult, Options, fixtures};

/// What one storm did.
#[derive(Debug, Clone, Serialize)]
pub struct StormRound {
    /// Concurrent clients.
    pub clients: usize,
    /// Certificates the issuer issued during the cold storm.
    pub issuances: usize,
    /// Storage `load` calls during the cold storm.
    pub storage_loads: usize,
    /// Storage `store` calls during the cold storm.
    pub storage_stores: usize,
    /// Lock attempts during the cold storm.
    pub lock_attempts: usize,
    /// Cold-storm handshakes that completed.
    pub cold_ok: usize,
    /// Warm-storm handshakes that completed.
    pub warm_ok: usize,
    /// Cold storm latency in milliseconds.
    pub cold_ms: Latency,
    /// Warm storm (baseline) latency in milliseconds.
    pub warm_ms: Latency,
    /// Wall time of the whole cold storm, milliseconds.
    pub cold_wall_ms: f64,
    /// Wall time of the whole warm storm, milliseconds.
    pub warm_wall_ms: f64,
}

/// The suite's results: every round and the medians over rounds.
#[derive(Debug, Serialize)]
pub struct StormResults {
    /// Every round.
    pub rounds: Vec<StormRound>,
    /// Median cold p50 over rounds, ms.
    pub cold_p50_ms: f64,
    /// Median cold p99 over rounds, ms.
    pub cold_p99_ms: f64,
    /// Median warm p50 over rounds, ms.
    pub warm_p50_ms: f64,
    /// Median warm p99 over rounds, ms.
    pub warm_p99_ms: f64,
    /// Median over rounds of cold p50 / warm p50.
    pub p50_ratio: f64,
    /// Median over rounds of cold p99 / warm p99.
    pub p99_ratio: f64,
    /// Most issuances in any round (the goal is 1).
    pub max_issuances: usize,
    /// Successful handshakes over all attempted, cold storms.
    pub success_rate: f64,
}

/// Runs `clients` handshakes for `name` at once; returns the latencies (ms) of those that
/// completed.
async fn storm(
    addr: SocketAddr,
    connector: &TlsConnector,
    name: &str,
    clients: usize,
) -> BoxResult<Vec<f64>> {
    let server_name = ServerName::try_from(name.to_owned())?;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let connector = connector.clone();
        let server_name = server_name.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let work = async {
                let tcp = TcpStream::connect(addr).await?;
                let mut tls = connector.connect(server_name, tcp).await?;
                let mut reply = [0u8; 2];
                tls.read_exact(&mut reply).await?;
                if &reply != b"ok" {
                    return Err(std::io::Error::other("unexpected reply"));
                }
                Ok::<_, std::io::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(120), work).await {
                Ok(Ok(())) => Some(millis(started.elapsed())),
                _ => None,
            }
        }));
    }
    let mut latencies = Vec::with_capacity(clients);
    for task in tasks {
        if let Some(ms) = task.await? {
            latencies.push(ms);
        }
    }
    Ok(latencies)
}

async fn round(index: usize, clients: usize) -> BoxResult<StormRound> {
    let counted = Arc::new(Counted::new(MemoryStorage::new()));
    let counts: Arc<Counts> = Arc::clone(&counted.counts);
    let storage: Arc<dyn Store> = counted;
    let internal = InternalIssuer::new(Arc::clone(&storage), fixtures::issuer_config());
    // The CA exists before the storm, as on any server that issued before.
    let root_pem = internal.root_pem().await?;
    let issuer = Arc::new(CountedIssuer::new(internal));
    let issued = Arc::clone(&issuer.issued);
    let issuers: Vec<Arc<dyn Issuer>> = vec![issuer];
    let manager = CertManager::new(
        storage,
        Arc::new(Cache::new(1_000)),
        issuers,
        ManagerConfig::default(),
    );
    manager.enable_on_demand(OnDemandConfig::default().with_decision(|_| async { true }));

    let config = Arc::new(server_config(Arc::new(manager.resolver()))?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_manager = manager.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let manager = server_manager.clone();
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let accepted = accept_lazy(stream, config, |name| async move {
                    manager.prepare_handshake(name).await;
                })
                .await;
                if let Ok(mut tls) = accepted {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });

    let mut roots = RootCertStore::empty();
    for der in certificate::parse_chain(&root_pem)? {
        roots.add(der)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client_config));

    let name = format!("storm-{index}.example.com");
    let loads_before = Counts::get(&counts.loads);
    let stores_before = Counts::get(&counts.stores);
    let locks_before = Counts::get(&counts.lock_attempts);
    let started = Instant::now();
    let cold = storm(addr, &connector, &name, clients).await?;
    let cold_wall = millis(started.elapsed());
    let issuances = issued.load(Ordering::Relaxed);
    let storage_loads = Counts::get(&counts.loads) - loads_before;
    let storage_stores = Counts::get(&counts.stores) - stores_before;
    let lock_attempts = Counts::get(&counts.lock_attempts) - locks_before;

    let started = Instant::now();
    let warm = storm(addr, &connector, &name, clients).await?;
    let warm_wall = millis(started.elapsed());
    server.abort();

    let result = StormRound {
        clients,
        issuances,
        storage_loads,
        storage_stores,
        lock_attempts,
        cold_ok: cold.len(),
        warm_ok: warm.len(),
        cold_ms: Latency::of(&cold),
        warm_ms: Latency::of(&warm),
        cold_wall_ms: cold_wall,
        warm_wall_ms: warm_wall,
    };
    eprintln!(
        "storm {index}: {}/{} cold ok, {} issuance(s), {} loads, {} stores, {} lock attempts; cold p50 {:.1} ms p99 {:.1} ms; warm p50 {:.1} ms p99 {:.1} ms",
        result.cold_ok,
        clients,
        result.issuances,
        result.storage_loads,
        result.storage_stores,
        result.lock_attempts,
        result.cold_ms.p50,
        result.cold_ms.p99,
        result.warm_ms.p50,
        result.warm_ms.p99
    );
    Ok(result)
}

/// Runs the suite.
pub async fn run(options: &Options) -> BoxResult<StormResults> {
    let clients = 1_000;
    let mut rounds = Vec::new();
    for index in 0..options.repeats {
        rounds.push(round(index, clients).await?);
    }
    let pick = |f: &dyn Fn(&StormRound) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let attempted = (rounds.len() * clients) as f64;
    let succeeded: usize = rounds.iter().map(|r| r.cold_ok).sum();
    Ok(StormResults {
        cold_p50_ms: pick(&|r| r.cold_ms.p50),
        cold_p99_ms: pick(&|r| r.cold_ms.p99),
        warm_p50_ms: pick(&|r| r.warm_ms.p50),
        warm_p99_ms: pick(&|r| r.warm_ms.p99),
        p50_ratio: pick(&|r| ratio(r.cold_ms.p50, r.warm_ms.p50)),
        p99_ratio: pick(&|r| ratio(r.cold_ms.p99, r.warm_ms.p99)),
        max_issuances: rounds.iter().map(|r| r.issuances).max().unwrap_or(0),
        success_rate: if attempted > 0.0 {
            succeeded as f64 / attempted
        } else {
            0.0
        },
        rounds,
    })
}
