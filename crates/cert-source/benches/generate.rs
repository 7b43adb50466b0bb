//! Load test of the generate-once store, the way an intercepting proxy meets it: many
//! concurrent requests (default 1,000) for a small set of hosts (default 10), each
//! certificate costly to make (a fresh ECDSA P-256 key and a leaf signed by a local CA).
//!
//! Three modes run in the same process, one after another, each from a cold start:
//!
//! - `no store`: every request generates its own certificate (the baseline);
//! - `store`: a [`GeneratedStore`] in memory;
//! - `store + storage`: the same over a shared storage with cluster locks.
//!
//! Requests arrive all at once; a request's latency runs from its arrival to a usable
//! certificate, waiting for a worker thread included. Printed per mode: success rate (requests that got a usable certificate within the
//! deadline), mean and p99 latency, and the number of generations; then the ratios against
//! the baseline. Tune with `REQUESTS`, `HOSTS`, `ROUNDS` and `DEADLINE_MS`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cert_core::MemoryStorage;
use cert_source::{GeneratedStore, PemBundle};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A local CA minting leaf certificates, counting what it mints.
struct LocalCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    minted: AtomicU64,
}

impl LocalCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        LocalCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
            minted: AtomicU64::new(0),
        }
    }

    fn mint(&self, host: &str) -> Result<PemBundle, rcgen::Error> {
        self.minted.fetch_add(1, Ordering::Relaxed);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let leaf =
            rcgen::CertificateParams::new(vec![host.to_owned()])?.signed_by(&key, &self.issuer)?;
        Ok(PemBundle::new(leaf.pem(), key.serialize_pem()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    NoStore,
    Store,
    StoreWithStorage,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::NoStore => "no store",
            Mode::Store => "store",
            Mode::StoreWithStorage => "store + storage",
        }
    }
}

struct Outcome {
    latencies: Vec<Duration>,
    successes: u64,
    requests: u64,
    generations: u64,
}

async fn round(mode: Mode, requests: u64, hosts: u64, deadline: Duration) -> Outcome {
    let ca = Arc::new(LocalCa::new());
    let store = Arc::new(match mode {
        Mode::StoreWithStorage => {
            GeneratedStore::new(10_000).with_storage(Arc::new(MemoryStorage::new()))
        }
        _ => GeneratedStore::new(10_000),
    });
    let mut tasks = Vec::with_capacity(requests as usize);
    for i in 0..requests {
        let (ca, store) = (ca.clone(), store.clone());
        let host = format!("host{}.example", i % hosts);
        // Latency counts from the request's arrival, waiting for a worker included.
        let began = Instant::now();
        tasks.push(tokio::spawn(async move {
            let work = async {
                match mode {
                    Mode::NoStore => {
                        let bundle = ca.mint(&host).ok()?;
                        bundle.validate().ok().map(|v| v.certified)
                    }
                    _ => store
                        .fetch(&host, || {
                            let ca = ca.clone();
                            let host = host.clone();
                            async move { ca.mint(&host) }
                        })
                        .await
                        .ok(),
                }
            };
            let ok = matches!(tokio::time::timeout(deadline, work).await, Ok(Some(_)));
            (ok, began.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(requests as usize);
    let mut successes = 0;
    for task in tasks {
        let (ok, latency) = task.await.unwrap();
        successes += u64::from(ok);
        latencies.push(latency);
    }
    Outcome {
        latencies,
        successes,
        requests,
        generations: ca.minted.load(Ordering::Relaxed),
    }
}

struct Summary {
    success_rate: f64,
    mean: Duration,
    p99: Duration,
    generations_per_round: f64,
}

fn summarize(outcomes: &[Outcome]) -> Summary {
    let mut all: Vec<Duration> = outcomes.iter().flat_map(|o| o.latencies.clone()).collect();
    all.sort();
    let requests: u64 = outcomes.iter().map(|o| o.requests).sum();
    let successes: u64 = outcomes.iter().map(|o| o.successes).sum();
    let total: Duration = all.iter().sum();
    let p99_index = ((all.len() as f64) * 0.99).ceil() as usize;
    Summary {
        success_rate: successes as f64 / requests.max(1) as f64,
        mean: total / u32::try_from(all.len().max(1)).unwrap_or(u32::MAX),
        p99: all
            .get(p99_index.saturating_sub(1))
            .copied()
            .unwrap_or_default(),
        generations_per_round: outcomes.iter().map(|o| o.generations).sum::<u64>() as f64
            / outcomes.len().max(1) as f64,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs a quick smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let requests = env("REQUESTS", if quick { 100 } else { 1000 });
    let hosts = env("HOSTS", 10);
    let rounds = env("ROUNDS", if quick { 1 } else { 5 });
    let deadline = Duration::from_millis(env("DEADLINE_MS", 10_000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    println!(
        "generate-once store: {requests} concurrent requests over {hosts} hosts, {rounds} rounds, \
         deadline {deadline:?}, {} worker threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let modes = [Mode::NoStore, Mode::Store, Mode::StoreWithStorage];
    let mut summaries = Vec::new();
    for mode in modes {
        let outcomes: Vec<Outcome> = (0..rounds)
            .map(|_| runtime.block_on(round(mode, requests, hosts, deadline)))
            .collect();
        summaries.push(summarize(&outcomes));
    }
    println!(
        "{:<16} {:>9} {:>12} {:>12} {:>12}",
        "mode", "success", "mean", "p99", "generations"
    );
    for (mode, s) in modes.iter().zip(&summaries) {
        println!(
            "{:<16} {:>8.1}% {:>12.3?} {:>12.3?} {:>12.1}",
            mode.label(),
            s.success_rate * 100.0,
            s.mean,
            s.p99,
            s.generations_per_round
        );
    }
    let base = &summaries[0];
    for (mode, s) in modes.iter().zip(&summaries).skip(1) {
        println!(
            "{} vs no store: mean latency x{:.3}, p99 latency x{:.3}, generations x{:.4}",
            mode.label(),
            s.mean.as_secs_f64() / base.mean.as_secs_f64().max(f64::MIN_POSITIVE),
            s.p99.as_secs_f64() / base.p99.as_secs_f64().max(f64::MIN_POSITIVE),
            s.generations_per_round / base.generations_per_round.max(1.0)
        );
    }
    if summaries
        .iter()
        .skip(1)
        .any(|s| s.generations_per_round > hosts as f64)
    {
        eprintln!("a store generated a host more than once");
        std::process::exit(1);
    }
}
