//! `AzureStorage` against the raw `azure_storage_blob` client doing the same requests, on
//! the Azurite (or account) named by `CERTSTORE_TEST_AZURE_URL`; skipped when it is unset.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::num::NonZero;

use azure_core::http::{ClientOptions, RetryOptions, Url};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use cert_azure::AzureStorage;
use cert_core::Storage;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;

const CONTAINER: &str = "certstore-bench";

/// A raw container client with the same SAS the storage signs.
fn raw_client(storage: &AzureStorage) -> BlobContainerClient {
    let url = Url::parse(&storage.signed_container_url().unwrap()).unwrap();
    let options = BlobContainerClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        },
        ..BlobContainerClientOptions::default()
    };
    BlobContainerClient::new(url, None, Some(options)).unwrap()
}

fn bench(c: &mut Criterion) {
    let Ok(url) = std::env::var("CERTSTORE_TEST_AZURE_URL") else {
        eprintln!("SKIPPED: CERTSTORE_TEST_AZURE_URL is not set");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = AzureStorage::azurite(&url, CONTAINER)
        .unwrap()
        .with_prefix("bench")
        .unwrap();
    rt.block_on(storage.create_container_if_missing()).unwrap();
    let raw = raw_client(&storage);
    let value = vec![7u8; 4096];
    rt.block_on(async {
        for i in 0..100 {
            storage.store(&format!("list/k{i:03}"), b"v").await.unwrap();
        }
    });

    let mut group = c.benchmark_group("store_4k");
    group.bench_function("cert_azure", |b| {
        b.to_async(&rt)
            .iter(|| async { storage.store("one/key", black_box(&value)).await.unwrap() })
    });
    group.bench_function("raw_client", |b| {
        b.to_async(&rt).iter(|| async {
            let options = BlobClientUploadOptions {
                partition_size: NonZero::new(16 << 20),
                ..Default::default()
            };
            raw.blob_client("bench/one/key")
                .upload(
                    azure_core::Bytes::copy_from_slice(&value).into(),
                    Some(options),
                )
                .await
                .unwrap();
        })
    });
    group.finish();

    let mut group = c.benchmark_group("load_4k");
    group.bench_function("cert_azure", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(storage.load("one/key").await.unwrap()) })
    });
    group.bench_function("raw_client", |b| {
        b.to_async(&rt).iter(|| async {
            let options = BlobClientDownloadOptions {
                partition_size: NonZero::new(16 << 20),
                ..Default::default()
            };
            let response = raw
                .blob_client("bench/one/key")
                .download(Some(options))
                .await
                .unwrap();
            black_box(response.body.collect().await.unwrap().to_vec())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("list_100");
    group.bench_function("cert_azure", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(storage.list("list", true).await.unwrap()) })
    });
    group.bench_function("raw_client", |b| {
        b.to_async(&rt).iter(|| async {
            let options = BlobContainerClientListBlobsOptions {
                prefix: Some("bench/list/".into()),
                maxresults: Some(5000),
                ..Default::default()
            };
            let mut pages = raw.list_blobs(Some(options)).unwrap().into_pages();
            let page = pages.next().await.unwrap().unwrap().into_model().unwrap();
            let names: Vec<String> = page.blob_items.into_iter().filter_map(|b| b.name).collect();
            black_box(names)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
