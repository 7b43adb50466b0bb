//! Suite `warm`: a node starting with many certificates already in storage.
//! `CertManager::manage` of every name loads each certificate (metadata, chain, key),
//! checks they belong together and fills the cache. Timed for 1k and 10k names on the
//! memory, file, SQLite, Redis and PostgreSQL backends, as the manager runs it
//! (`concurrency` names at a time, the default 16) against the baseline of the same call
//! with a concurrency of 1 (a sequential load loop), each on a fresh manager and cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cert_core::{Cache, CertManager, InternalIssuer, ManagerConfig, MemoryStorage, Store, keys};
use serde::Serialize;

use crate::stats::{median, ratio};
use crate::{BoxResult, Options, fixtures};

/// One backend at one size.
#[derive(Debug, Serialize)]
pub struct WarmResult {
    /// The backend.
    pub backend: String,
    /// Certificates loaded.
    pub names: usize,
    /// Median milliseconds, the sequential baseline (concurrency 1).
    pub sequential_ms: f64,
    /// Median milliseconds, `manage` as configured by default (concurrency 16).
    pub parallel_ms: f64,
    /// Median of the per-repeat ratios parallel / sequential (below 1: loads overlap).
    pub ratio: f64,
    /// Microseconds per certificate, parallel.
    pub parallel_us_per_cert: f64,
    /// Microseconds per certificate, sequential.
    pub sequential_us_per_cert: f64,
}

/// The suite's results.
#[derive(Debug, Serialize)]
pub struct WarmResults {
    /// Every backend and size.
    pub runs: Vec<WarmResult>,
    /// Backends skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Loads `names` into a fresh manager with `concurrency`; returns the time taken.
async fn warm_once(
    storage: &Arc<dyn Store>,
    names: &[String],
    concurrency: usize,
) -> BoxResult<Duration> {
    let issuer = Arc::new(InternalIssuer::new(
        Arc::clone(storage),
        fixtures::issuer_config(),
    ));
    let mut config = ManagerConfig::default();
    config.concurrency = concurrency;
    let manager = CertManager::new(
        Arc::clone(storage),
        Arc::new(Cache::new(names.len())),
        vec![issuer],
        config,
    );
    let started = Instant::now();
    manager
        .manage(names)
        .await
        .map_err(|failures| format!("warm start failed: {failures}"))?;
    let took = started.elapsed();
    if manager.cache().len() != names.len() {
        return Err(format!(
            "warm start cached {} of {} names",
            manager.cache().len(),
            names.len()
        )
        .into());
    }
    Ok(took)
}

async fn measure(
    backend: &str,
    storage: Arc<dyn Store>,
    source: &MemoryStorage,
    names: &[String],
    options: &Options,
) -> BoxResult<WarmResult> {
    let copied = fixtures::copy(
        source,
        storage.as_ref(),
        &[keys::CERTIFICATES, keys::CA],
        32,
    )
    .await?;
    eprintln!("warm {backend}: {copied} keys in storage");
    // One untimed pass warms connection pools and the server's caches.
    warm_once(&storage, names, 16).await?;
    let mut sequential = Vec::new();
    let mut parallel = Vec::new();
    let mut ratios = Vec::new();
    for repeat in 0..options.repeats {
        let (s, p) = if repeat % 2 == 0 {
            let s = warm_once(&storage, names, 1).await?;
            (s, warm_once(&storage, names, 16).await?)
        } else {
            let p = warm_once(&storage, names, 16).await?;
            (warm_once(&storage, names, 1).await?, p)
        };
        let (s, p) = (s.as_secs_f64() * 1e3, p.as_secs_f64() * 1e3);
        sequential.push(s);
        parallel.push(p);
        ratios.push(ratio(p, s));
    }
    let n = names.len() as f64;
    let result = WarmResult {
        backend: backend.to_owned(),
        names: names.len(),
        sequential_ms: median(&sequential),
        parallel_ms: median(&parallel),
        ratio: median(&ratios),
        parallel_us_per_cert: median(&parallel) * 1e3 / n,
        sequential_us_per_cert: median(&sequential) * 1e3 / n,
    };
    eprintln!(
        "warm {backend} {:>6} names: sequential {:.0} ms, parallel {:.0} ms ({:.1} us/cert), ratio {:.2}",
        result.names,
        result.sequential_ms,
        result.parallel_ms,
        result.parallel_us_per_cert,
        result.ratio
    );
    Ok(result)
}

/// A backend to measure: its name and a storage holding nothing yet, or why it is
/// skipped.
type Backend = (String, Result<(Arc<dyn Store>, Cleanup), String>);

/// What to remove once a backend is measured.
enum Cleanup {
    Nothing,
    Prefixes(Arc<dyn Store>),
    Dir(#[allow(dead_code)] tempfile::TempDir),
}

async fn backends() -> BoxResult<Vec<Backend>> {
    let mut out: Vec<Backend> = Vec::new();
    out.push((
        "memory".into(),
        Ok((Arc::new(MemoryStorage::new()), Cleanup::Nothing)),
    ));
    let dir = tempfile::tempdir()?;
    out.push((
        "file".into(),
        Ok((
            Arc::new(cert_file::FileStorage::new(dir.path().join("store"))),
            Cleanup::Dir(dir),
        )),
    ));
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("certstore.db").display());
    let sqlite = cert_sql::SqlStorage::connect(&url).await?;
    out.push(("sqlite".into(), Ok((Arc::new(sqlite), Cleanup::Dir(dir)))));
    match std::env::var("CERTSTORE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let redis =
                cert_redis::RedisStorage::connect(&url, &fixtures::unique_namespace("warm"))
                    .await?;
            let redis: Arc<dyn Store> = Arc::new(redis);
            out.push((
                "redis".into(),
                Ok((Arc::clone(&redis), Cleanup::Prefixes(redis))),
            ));
        }
        _ => out.push(("redis".into(), Err("CERTSTORE_TEST_REDIS_URL unset".into()))),
    }
    match std::env::var("CERTSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let config =
                cert_sql::SqlConfig::default().with_namespace(fixtures::unique_namespace("warm"));
            let postgres = cert_sql::SqlStorage::connect_with(&url, config).await?;
            let postgres: Arc<dyn Store> = Arc::new(postgres);
            out.push((
                "postgres".into(),
                Ok((Arc::clone(&postgres), Cleanup::Prefixes(postgres))),
            ));
        }
        _ => out.push((
            "postgres".into(),
            Err("CERTSTORE_TEST_POSTGRES_URL unset".into()),
        )),
    }
    Ok(out)
}

/// Runs the suite.
pub async fn run(options: &Options) -> BoxResult<WarmResults> {
    let sizes: &[usize] = if options.quick {
        &[100, 1_000]
    } else {
        &[1_000, 10_000]
    };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let all_names = fixtures::names(largest);
    let started = Instant::now();
    let source = fixtures::issue_into_memory(&all_names).await?;
    eprintln!(
        "warm: issued {largest} certificates in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for (backend, storage) in backends().await? {
        let (storage, cleanup) = match storage {
            Ok(found) => found,
            Err(why) => {
                eprintln!("warm {backend}: skipped ({why})");
                skipped.push((backend, why));
                continue;
            }
        };
        for &size in sizes {
            runs.push(
                measure(
                    &backend,
                    Arc::clone(&storage),
                    &source,
                    &all_names[..size],
                    options,
                )
                .await?,
            );
        }
        if let Cleanup::Prefixes(storage) = &cleanup {
            for prefix in [keys::CERTIFICATES, keys::CA] {
                let _ = storage.delete(prefix).await;
            }
        }
        drop(cleanup);
    }
    Ok(WarmResults { runs, skipped })
}
