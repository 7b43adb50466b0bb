//! Handshake-path lookups: `Cache::get` against a bare `HashMap<String, Arc<_>>` in the same
//! run, for 1k and 100k names, exact and wildcard.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use cert_core::Cache;
use cert_core::rustls::sign::CertifiedKey;
use cert_core::testing::dummy_certified_key;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Names in a shuffled order, so consecutive lookups touch unrelated memory.
fn names(count: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..count)
        .map(|i| format!("host-{i}.customer-{}.example.com", i % 977))
        .collect();
    fastrand::seed(7);
    fastrand::shuffle(&mut names);
    names
}

fn exact(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_exact");
    for count in [1_000usize, 100_000] {
        let names = names(count);
        let cert = dummy_certified_key(1);
        let mut map: HashMap<String, Arc<CertifiedKey>> = HashMap::new();
        let cache = Cache::new(count);
        for name in &names {
            map.insert(name.clone(), Arc::clone(&cert));
            cache.insert(name, Arc::clone(&cert));
        }
        let mut i = 0;
        group.bench_function(BenchmarkId::new("hashmap_baseline", count), |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                black_box(map.get(black_box(names[i].as_str())).cloned())
            })
        });
        let mut i = 0;
        group.bench_function(BenchmarkId::new("cache", count), |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                black_box(cache.get(black_box(names[i].as_str())))
            })
        });
    }
    group.finish();
}

fn wildcard(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup_wildcard");
    let count = 100_000usize;
    let parents = names(count);
    let cert = dummy_certified_key(2);
    let mut map: HashMap<String, Arc<CertifiedKey>> = HashMap::new();
    let cache = Cache::new(count);
    for parent in &parents {
        map.insert(format!("*.{parent}"), Arc::clone(&cert));
        cache.insert(&format!("*.{parent}"), Arc::clone(&cert));
    }
    // What a handshake asks for, and (for the baseline only) the wildcard key precomputed,
    // so the baseline pays no formatting.
    let queries: Vec<(String, String)> = parents
        .iter()
        .map(|p| (format!("www.{p}"), format!("*.{p}")))
        .collect();
    let mut i = 0;
    group.bench_function(BenchmarkId::new("hashmap_baseline", count), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            let (name, wild) = &queries[i];
            black_box(
                map.get(black_box(name.as_str()))
                    .or_else(|| map.get(black_box(wild.as_str())))
                    .cloned(),
            )
        })
    });
    let mut i = 0;
    group.bench_function(BenchmarkId::new("cache", count), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(cache.get(black_box(queries[i].0.as_str())))
        })
    });
    group.finish();
}

criterion_group!(benches, exact, wildcard);
criterion_main!(benches);
