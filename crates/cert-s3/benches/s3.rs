//! S3Storage against the raw SDK client doing the same requests, in the same run, on the
//! server named by `CERTSTORE_TEST_S3_URL` (skipped when it is not set).
#![allow(clippy::unwrap_used, missing_docs)]

use aws_sdk_s3::primitives::ByteStream;
use cert_core::Storage;
use cert_s3::{S3Config, S3Storage};
use criterion::{Criterion, criterion_group, criterion_main};

const BUCKET: &str = "certstore-bench";
const LIST_KEYS: usize = 100;

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("CERTSTORE_TEST_S3_URL") else {
        eprintln!("SKIPPED: CERTSTORE_TEST_S3_URL is not set");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = format!("bench{}", std::process::id());
    let storage = runtime.block_on(async {
        let config = S3Config::new(BUCKET)
            .with_prefix(&prefix)
            .with_region("us-east-1")
            .with_endpoint(&url)
            .with_path_style(true)
            .with_static_credentials("certstore", "certstore-secret", None);
        let storage = S3Storage::connect(config).await.unwrap();
        storage.ensure_bucket().await.unwrap();
        storage
    });
    // The same client (same connection pool and settings) for the baseline.
    let client = storage.client().clone();
    let value = vec![7u8; 4096];
    let raw_key = format!("{prefix}/raw/value");

    let mut group = c.benchmark_group("s3_store_4k");
    group.bench_function("raw_put_object", |b| {
        b.iter(|| {
            runtime.block_on(async {
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(&raw_key)
                    .body(ByteStream::from(value.clone()))
                    .send()
                    .await
                    .unwrap();
            })
        })
    });
    group.bench_function("s3storage_store", |b| {
        b.iter(|| runtime.block_on(async { storage.store("ours/value", &value).await.unwrap() }))
    });
    group.finish();

    let mut group = c.benchmark_group("s3_load_4k");
    group.bench_function("raw_get_object", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let out = client
                    .get_object()
                    .bucket(BUCKET)
                    .key(&raw_key)
                    .send()
                    .await
                    .unwrap();
                out.body.collect().await.unwrap().into_bytes().to_vec()
            })
        })
    });
    group.bench_function("s3storage_load", |b| {
        b.iter(|| runtime.block_on(async { storage.load("ours/value").await.unwrap() }))
    });
    group.finish();

    runtime.block_on(async {
        for i in 0..LIST_KEYS {
            storage.store(&format!("list/k{i:04}"), b"v").await.unwrap();
        }
    });
    let list_prefix = format!("{prefix}/list/");
    let mut group = c.benchmark_group("s3_list_100");
    group.bench_function("raw_list_objects_v2", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut keys = Vec::new();
                let mut token = None;
                loop {
                    let out = client
                        .list_objects_v2()
                        .bucket(BUCKET)
                        .prefix(&list_prefix)
                        .set_continuation_token(token)
                        .send()
                        .await
                        .unwrap();
                    keys.extend(
                        out.contents()
                            .iter()
                            .filter_map(|o| o.key().map(str::to_owned)),
                    );
                    match out.next_continuation_token() {
                        Some(next) if out.is_truncated() == Some(true) => {
                            token = Some(next.to_owned())
                        }
                        _ => break,
                    }
                }
                keys.sort_unstable();
                assert_eq!(keys.len(), LIST_KEYS);
                keys
            })
        })
    });
    group.bench_function("s3storage_list", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let keys = storage.list("list", true).await.unwrap();
                assert_eq!(keys.len(), LIST_KEYS);
                keys
            })
        })
    });
    group.finish();

    runtime.block_on(async {
        let _ = storage.delete("list").await;
        let _ = storage.delete("ours").await;
        let _ = storage.delete("raw").await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
