//! Seal and open throughput for 4 KiB values, and `Encrypted<MemoryStorage>` against
//! plain `MemoryStorage` for store and load of 4 KiB values in the same run, and
//! `Encrypted<RedisStorage>` against `RedisStorage` (a network backend) when
//! `CERTSTORE_TEST_REDIS_URL` names a server.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use cert_core::{MemoryStorage, Storage};
use cert_encrypted::{Encrypted, KeyRing, SecretKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const SIZE: usize = 4096;
const KEY: &str = "certificates/acme-v02/example.com/example.com.key";

fn ring() -> KeyRing {
    KeyRing::new(SecretKey::from_bytes([7; 32]))
}

fn value() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 251) as u8).collect()
}

fn secretbox(c: &mut Criterion) {
    let ring = ring();
    let value = value();
    let sealed = ring.seal(KEY, &value).unwrap();
    let mut group = c.benchmark_group("secretbox_4k");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("seal", |b| {
        b.iter(|| ring.seal(black_box(KEY), black_box(&value)).unwrap())
    });
    group.bench_function("open", |b| {
        b.iter(|| ring.open(black_box(KEY), black_box(&sealed)).unwrap())
    });
    group.bench_function("seal_open", |b| {
        b.iter(|| {
            let sealed = ring.seal(black_box(KEY), black_box(&value)).unwrap();
            ring.open(KEY, &sealed).unwrap()
        })
    });
    group.finish();
}

fn storage(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let value = value();
    let plain = MemoryStorage::new();
    let encrypted = Encrypted::new(MemoryStorage::new(), ring());
    rt.block_on(async {
        plain.store(KEY, &value).await.unwrap();
        encrypted.store(KEY, &value).await.unwrap();
    });

    let mut group = c.benchmark_group("storage_4k");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("memory/store", |b| {
        b.iter(|| rt.block_on(plain.store(KEY, black_box(&value))).unwrap())
    });
    group.bench_function("encrypted/store", |b| {
        b.iter(|| {
            rt.block_on(encrypted.store(KEY, black_box(&value)))
                .unwrap()
        })
    });
    group.bench_function("memory/load", |b| {
        b.iter(|| rt.block_on(plain.load(black_box(KEY))).unwrap())
    });
    group.bench_function("encrypted/load", |b| {
        b.iter(|| rt.block_on(encrypted.load(black_box(KEY))).unwrap())
    });
    group.finish();
}

/// The overhead that matters in production: sealing next to a network round trip.
fn network(c: &mut Criterion) {
    let Ok(url) = std::env::var("CERTSTORE_TEST_REDIS_URL") else {
        eprintln!("CERTSTORE_TEST_REDIS_URL is not set: skipping Encrypted<RedisStorage>");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ns = format!("bench_encrypted_{}", std::process::id());
    let plain = rt
        .block_on(cert_redis::RedisStorage::connect(
            &url,
            &format!("{ns}_plain"),
        ))
        .unwrap();
    let inner = rt
        .block_on(cert_redis::RedisStorage::connect(
            &url,
            &format!("{ns}_sealed"),
        ))
        .unwrap();
    let encrypted = Encrypted::new(inner, ring());
    let value = value();
    rt.block_on(async {
        plain.store(KEY, &value).await.unwrap();
        encrypted.store(KEY, &value).await.unwrap();
    });
    let mut group = c.benchmark_group("redis_4k");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("redis/store", |b| {
        b.iter(|| rt.block_on(plain.store(KEY, black_box(&value))).unwrap())
    });
    group.bench_function("encrypted_redis/store", |b| {
        b.iter(|| {
            rt.block_on(encrypted.store(KEY, black_box(&value)))
                .unwrap()
        })
    });
    group.bench_function("redis/load", |b| {
        b.iter(|| rt.block_on(plain.load(black_box(KEY))).unwrap())
    });
    group.bench_function("encrypted_redis/load", |b| {
        b.iter(|| rt.block_on(encrypted.load(black_box(KEY))).unwrap())
    });
    group.finish();
    rt.block_on(async {
        let _ = plain.delete("certificates").await;
        let _ = encrypted.delete("certificates").await;
    });
}

criterion_group!(benches, secretbox, storage, network);
criterion_main!(benches);
