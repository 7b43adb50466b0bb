//! Suite `backends`: per-operation latency (p50 and p99) of each network or database
//! backend against its raw client doing the same job on the same server, in the same
//! run, for what the crates' criterion benchmarks do not cover: percentiles (criterion
//! reports means), the Redis store of a new key next to the two-round-trip path it
//! replaced, and lock acquire + release on the SQL backends.
//!
//! Every sample times one call. Calls alternate ours / raw, so both sides see the same
//! machine load and server state.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::{Latency, micros, ratio};
use crate::{BoxResult, Options};

mod redis;
mod sql;

use self::redis::redis_suite;
use self::sql::{postgres_suite, sqlite_suite};

/// One operation of one backend, ours against the raw client.
#[derive(Debug, Serialize)]
pub struct OpResult {
    /// The backend.
    pub backend: String,
    /// The operation.
    pub op: String,
    /// What the raw side does.
    pub baseline: String,
    /// Samples per side.
    pub samples: usize,
    /// Our latency, microseconds.
    pub ours_us: Latency,
    /// The raw client's latency, microseconds.
    pub raw_us: Latency,
    /// ours p50 / raw p50.
    pub p50_ratio: f64,
    /// ours p99 / raw p99.
    pub p99_ratio: f64,
}

/// The suite's results.
#[derive(Debug, Serialize)]
pub struct BackendResults {
    /// Every operation measured.
    pub ops: Vec<OpResult>,
    /// Backends skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

const VALUE_LEN: usize = 4096;
const LIST_KEYS: usize = 100;

/// Times `samples` calls of `ours` and of `raw`, alternating (index `i` passed to both),
/// after `samples / 10` untimed calls of each.
async fn pair<A, FA, B, FB>(
    backend: &str,
    op: &str,
    baseline: &str,
    samples: usize,
    mut ours: A,
    mut raw: B,
) -> BoxResult<OpResult>
where
    A: FnMut(usize) -> FA,
    FA: Future<Output = BoxResult<()>>,
    B: FnMut(usize) -> FB,
    FB: Future<Output = BoxResult<()>>,
{
    let warmup = samples / 10;
    let mut ours_us = Vec::with_capacity(samples);
    let mut raw_us = Vec::with_capacity(samples);
    for i in 0..warmup + samples {
        let first_ours = i % 2 == 0;
        let mut time_ours = Duration::ZERO;
        let mut time_raw = Duration::ZERO;
        for side in 0..2 {
            if (side == 0) == first_ours {
                let started = Instant::now();
                ours(i).await?;
                time_ours = started.elapsed();
            } else {
                let started = Instant::now();
                raw(i).await?;
                time_raw = started.elapsed();
            }
        }
        if i >= warmup {
            ours_us.push(micros(time_ours));
            raw_us.push(micros(time_raw));
        }
    }
    let (ours_us, raw_us) = (Latency::of(&ours_us), Latency::of(&raw_us));
    let result = OpResult {
        backend: backend.to_owned(),
        op: op.to_owned(),
        baseline: baseline.to_owned(),
        samples,
        p50_ratio: ratio(ours_us.p50, raw_us.p50),
        p99_ratio: ratio(ours_us.p99, raw_us.p99),
        ours_us,
        raw_us,
    };
    eprintln!(
        "{backend:>8} {op:<24} ours p50 {:>7.1} us p99 {:>7.1} us | raw p50 {:>7.1} us p99 {:>7.1} us | {:.2}x / {:.2}x",
        result.ours_us.p50,
        result.ours_us.p99,
        result.raw_us.p50,
        result.raw_us.p99,
        result.p50_ratio,
        result.p99_ratio
    );
    Ok(result)
}

fn check_len(got: usize, want: usize) -> BoxResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want}, got {got}").into())
    }
}

/// Runs the suite.
pub async fn run(options: &Options) -> BoxResult<BackendResults> {
    let samples = if options.quick { 300 } else { 3_000 };
    let mut ops = Vec::new();
    let mut skipped = Vec::new();
    match std::env::var("CERTSTORE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => redis_suite(&url, samples, &mut ops).await?,
        _ => skipped.push(("redis".into(), "CERTSTORE_TEST_REDIS_URL unset".into())),
    }
    match std::env::var("CERTSTORE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => postgres_suite(&url, samples, &mut ops).await?,
        _ => skipped.push((
            "postgres".into(),
            "CERTSTORE_TEST_POSTGRES_URL unset".into(),
        )),
    }
    sqlite_suite(samples, &mut ops).await?;
    Ok(BackendResults { ops, skipped })
}
