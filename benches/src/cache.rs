//! Suite `cache`: handshake-path lookups in [`Cache`] against a bare
//! `HashMap<String, Arc<CertifiedKey>>` for 1k, 100k and 1M names, and the memory a cached
//! certificate costs beyond its DER bytes.
//!
//! Lookups walk every name in a shuffled order (so consecutive lookups touch unrelated
//! memory, as a busy server's do); each repeat times the map and the cache back to back,
//! alternating which goes first, and the ratio reported is the median of the per-repeat
//! ratios.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use cert_core::rustls::sign::CertifiedKey;
use cert_core::testing::dummy_certified_key;
use cert_core::{Cache, StoredCertificate};
use parking_lot::RwLock;
use serde::Serialize;

use crate::alloc::Snapshot;
use crate::stats::{median, ratio};
use crate::{BoxResult, Options, fixtures};

/// The lookup goal: at most this many times the bare map's time.
const GOAL: f64 = 1.5;

/// Lookup timing for one cache size.
#[derive(Debug, Serialize)]
pub struct LookupResult {
    /// Names in the cache (and the map).
    pub names: usize,
    /// Lookups per timed pass.
    pub lookups_per_pass: usize,
    /// Median nanoseconds per lookup, bare map.
    pub hashmap_ns: f64,
    /// Median nanoseconds per lookup, `Cache::get`.
    pub cache_ns: f64,
    /// Median nanoseconds per lookup, the same map behind a `parking_lot::RwLock` (read
    /// lock taken per lookup, as each of the cache's shards does): a reference that shows
    /// what the locking alone costs.
    pub locked_hashmap_ns: f64,
    /// Median of the per-repeat ratios cache / map.
    pub ratio: f64,
    /// Median of the per-repeat ratios locked map / map.
    pub locked_ratio: f64,
    /// Every repeat's ratio.
    pub ratios: Vec<f64>,
    /// The goal for the ratio.
    pub goal: f64,
    /// Whether the median ratio meets the goal.
    pub met: bool,
    /// Bytes per entry the cache holds beyond the certificate itself (slot, name, table
    /// share), counted by the global allocator.
    pub cache_bytes_per_entry: f64,
    /// The same for the bare map (key `String`, `Arc` pointer, table share).
    pub hashmap_bytes_per_entry: f64,
}

/// The memory a real certificate costs once turned into a servable `CertifiedKey`.
#[derive(Debug, Serialize)]
pub struct CertificateMemory {
    /// Distinct certificates measured (each with its own key).
    pub certificates: usize,
    /// Mean DER bytes per certificate chain (leaf and intermediate).
    pub der_bytes: f64,
    /// Mean bytes Rust code holds per `CertifiedKey` beyond the DER bytes (vectors,
    /// `Arc`s, the signing key's Rust side).
    pub rust_bytes_beyond_der: f64,
    /// Mean bytes aws-lc holds per signing key through `malloc` (includes `malloc`'s
    /// per-block overhead on the Rust allocations above).
    pub c_bytes: Option<f64>,
}

/// The suite's results.
#[derive(Debug, Serialize)]
pub struct CacheResults {
    /// One entry per cache size.
    pub lookups: Vec<LookupResult>,
    /// Per-certificate memory.
    pub certificate: CertificateMemory,
    /// Total bytes per cached certificate beyond its DER, at each size: cache entry plus
    /// the `CertifiedKey`'s Rust and C bytes.
    pub total_bytes_beyond_der: Vec<(usize, f64)>,
}

fn shuffled(count: usize) -> Vec<String> {
    let mut names = fixtures::names(count);
    fastrand_shuffle(&mut names, 7);
    names
}

/// A small deterministic shuffle (xorshift), so runs look the same.
fn fastrand_shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed.max(1);
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

fn time_map(map: &HashMap<String, Arc<CertifiedKey>>, queries: &[String], passes: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..passes {
        for query in queries {
            black_box(map.get(black_box(query.as_str())).cloned());
        }
    }
    started.elapsed().as_nanos() as f64 / (queries.len() * passes) as f64
}

fn time_locked(
    map: &RwLock<HashMap<String, Arc<CertifiedKey>>>,
    queries: &[String],
    passes: usize,
) -> f64 {
    let started = Instant::now();
    for _ in 0..passes {
        for query in queries {
            black_box(map.read().get(black_box(query.as_str())).cloned());
        }
    }
    started.elapsed().as_nanos() as f64 / (queries.len() * passes) as f64
}

fn time_cache(cache: &Cache, queries: &[String], passes: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..passes {
        for query in queries {
            black_box(cache.get(black_box(query.as_str())));
        }
    }
    started.elapsed().as_nanos() as f64 / (queries.len() * passes) as f64
}

fn lookups(count: usize, options: &Options) -> LookupResult {
    let names = shuffled(count);
    let cert = dummy_certified_key(1);

    let before = Snapshot::take();
    let mut map: HashMap<String, Arc<CertifiedKey>> = HashMap::new();
    for name in &names {
        map.insert(name.clone(), Arc::clone(&cert));
    }
    let hashmap_bytes = before.growth().rust as f64 / count as f64;

    let before = Snapshot::take();
    let cache = Cache::new(count);
    for name in &names {
        cache.insert(name, Arc::clone(&cert));
    }
    let cache_bytes = before.growth().rust as f64 / count as f64;
    assert_eq!(cache.len(), count, "the cache holds every name");

    // Query in another order than insertion; every query hits.
    let mut queries = names.clone();
    fastrand_shuffle(&mut queries, 11);
    let target = if options.quick { 1_000_000 } else { 4_000_000 };
    let passes = (target / count).max(1);
    // Warm both up once.
    time_map(&map, &queries, 1);
    time_cache(&cache, &queries, 1);
    let locked = RwLock::new(map);
    let map = &*locked.read();
    let mut map_ns = Vec::new();
    let mut cache_ns = Vec::new();
    let mut locked_ns = Vec::new();
    let mut ratios = Vec::new();
    let mut locked_ratios = Vec::new();
    for repeat in 0..options.repeats {
        let (m, c) = if repeat % 2 == 0 {
            let m = time_map(map, &queries, passes);
            (m, time_cache(&cache, &queries, passes))
        } else {
            let c = time_cache(&cache, &queries, passes);
            (time_map(map, &queries, passes), c)
        };
        // Read locks are shared: taking more while `map` is borrowed is fine.
        let l = time_locked(&locked, &queries, passes);
        map_ns.push(m);
        cache_ns.push(c);
        locked_ns.push(l);
        ratios.push(ratio(c, m));
        locked_ratios.push(ratio(l, m));
    }
    let ratio = median(&ratios);
    LookupResult {
        names: count,
        lookups_per_pass: queries.len() * passes,
        hashmap_ns: median(&map_ns),
        cache_ns: median(&cache_ns),
        locked_hashmap_ns: median(&locked_ns),
        ratio,
        locked_ratio: median(&locked_ratios),
        ratios,
        goal: GOAL,
        met: ratio <= GOAL,
        cache_bytes_per_entry: cache_bytes,
        hashmap_bytes_per_entry: hashmap_bytes,
    }
}

async fn certificate_memory(count: usize) -> BoxResult<CertificateMemory> {
    let names = fixtures::names(count);
    let storage = fixtures::issue_into_memory(&names).await?;
    let stored = fixtures::load_certificates(storage.as_ref(), &names).await?;
    let chains: Vec<_> = stored
        .iter()
        .map(|s| cert_core::certificate::parse_chain(&s.chain_pem))
        .collect::<Result<_, _>>()?;
    let der: usize = chains
        .iter()
        .flat_map(|chain| chain.iter().map(|c| c.as_ref().len()))
        .sum();
    drop(chains);
    let before = Snapshot::take();
    let keys: Vec<Arc<CertifiedKey>> = stored
        .iter()
        .map(StoredCertificate::certified_key)
        .collect::<Result<_, _>>()?;
    let growth = before.growth();
    let n = keys.len() as f64;
    // The vector of pointers holding them is the measurement's, not the certificates'.
    let holder = (keys.capacity() * std::mem::size_of::<Arc<CertifiedKey>>()) as f64;
    let rust = (growth.rust as f64 - holder) / n;
    drop(keys);
    Ok(CertificateMemory {
        certificates: count,
        der_bytes: der as f64 / n,
        rust_bytes_beyond_der: rust - der as f64 / n,
        c_bytes: growth.c.map(|c| c as f64 / n),
    })
}

/// Runs the suite.
pub async fn run(options: &Options) -> BoxResult<CacheResults> {
    let sizes: &[usize] = if options.quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let mut results = Vec::new();
    for &count in sizes {
        let result = lookups(count, options);
        eprintln!(
            "cache {count:>9} names: map {:.1} ns, cache {:.1} ns, ratio {:.2}x (goal <= {GOAL}x), locked map {:.2}x, {:.0} B/entry (map {:.0})",
            result.hashmap_ns,
            result.cache_ns,
            result.ratio,
            result.locked_ratio,
            result.cache_bytes_per_entry,
            result.hashmap_bytes_per_entry
        );
        results.push(result);
    }
    let certificate = certificate_memory(if options.quick { 200 } else { 2_000 }).await?;
    eprintln!(
        "certificate: {:.0} DER bytes, {:.0} Rust bytes beyond DER, {:?} C bytes",
        certificate.der_bytes, certificate.rust_bytes_beyond_der, certificate.c_bytes
    );
    let total = results
        .iter()
        .map(|r| {
            (
                r.names,
                r.cache_bytes_per_entry
                    + certificate.rust_bytes_beyond_der
                    + certificate.c_bytes.unwrap_or(0.0),
            )
        })
        .collect();
    Ok(CacheResults {
        lookups: results,
        certificate,
        total_bytes_beyond_der: total,
    })
}
