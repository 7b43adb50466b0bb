//! The file backend against plain `std::fs` doing the same job, in the same run.
//!
//! Groups (baseline first): `load_4k` (`std::fs::read`), `exists` (`Path::exists`),
//! `list_1000` (`read_dir` + sort), `store_4k_durable` (temporary file + write + fsync +
//! rename, and the same plus a directory fsync), `lock_release_uncontended` (`flock` +
//! unlock of an open file).
#![allow(clippy::unwrap_used)]

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cert_core::Storage;
use cert_file::FileStorage;
use criterion::{Criterion, criterion_group, criterion_main};

const KEY: &str = "certificates/example.com/example.com.crt";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Times `iters` sequential awaits of `op` inside one `block_on`, so the runtime's entry
/// cost is not part of each call.
fn time_async<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(op().await);
        }
        start.elapsed()
    })
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path());
    let rt = runtime();
    rt.block_on(storage.store(KEY, &[7u8; 4096])).unwrap();
    let path = dir.path().join(KEY);
    let mut group = c.benchmark_group("load_4k");
    group.bench_function("std_fs_read", |b| {
        b.iter(|| black_box(fs::read(black_box(&path)).unwrap()))
    });
    group.bench_function("file_storage", |b| {
        b.iter_custom(|iters| time_async(&rt, iters, || async { storage.load(KEY).await.unwrap() }))
    });
    group.finish();
}

fn exists(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path());
    let rt = runtime();
    rt.block_on(storage.store(KEY, b"x")).unwrap();
    let path = dir.path().join(KEY);
    let mut group = c.benchmark_group("exists");
    group.bench_function("path_exists", |b| {
        b.iter(|| black_box(black_box(&path).exists()))
    });
    group.bench_function("file_storage", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async { storage.exists(KEY).await.unwrap() })
        })
    });
    group.finish();
}

fn list(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).with_durable_writes(false);
    let rt = runtime();
    for i in 0..1000 {
        rt.block_on(storage.store(&format!("certificates/name-{i:04}.example.com"), b"x"))
            .unwrap();
    }
    let path = dir.path().join("certificates");
    let mut group = c.benchmark_group("list_1000");
    group.bench_function("read_dir_sort", |b| {
        b.iter(|| {
            let mut names: Vec<String> = fs::read_dir(black_box(&path))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort_unstable();
            black_box(names)
        })
    });
    group.bench_function("file_storage", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async {
                let keys = storage.list("certificates", false).await.unwrap();
                assert_eq!(keys.len(), 1000);
                keys
            })
        })
    });
    group.finish();
}

fn std_atomic_write(dir: &Path, target: &Path, value: &[u8], sync_dir: bool) {
    let temp = dir.join(format!(".tmp-{:016x}", fastrand::u64(..)));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .unwrap();
    file.write_all(value).unwrap();
    file.sync_data().unwrap();
    drop(file);
    fs::rename(&temp, target).unwrap();
    if sync_dir {
        File::open(dir).unwrap().sync_all().unwrap();
    }
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path());
    let rt = runtime();
    let value = vec![42u8; 4096];
    rt.block_on(storage.store(KEY, &value)).unwrap();
    let parent = dir.path().join("certificates/example.com");
    let target = parent.join("baseline.crt");
    let mut group = c.benchmark_group("store_4k_durable");
    group.sample_size(30);
    group.bench_function("temp_fsync_rename", |b| {
        b.iter(|| std_atomic_write(&parent, &target, black_box(&value), false))
    });
    group.bench_function("temp_fsync_rename_fsync_dir", |b| {
        b.iter(|| std_atomic_write(&parent, &target, black_box(&value), true))
    });
    group.bench_function("file_storage", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async {
                storage.store(KEY, &value).await.unwrap()
            })
        })
    });
    group.finish();
}

fn lock_cycle(c: &mut Criterion) {
    use cert_core::Locker;
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path());
    let rt = runtime();
    let flock_file = File::create(dir.path().join("flock")).unwrap();
    let mut group = c.benchmark_group("lock_release_uncontended");
    group.bench_function("flock_unlock", |b| {
        b.iter(|| {
            flock_file.lock().unwrap();
            flock_file.unlock().unwrap();
        })
    });
    group.bench_function("file_storage", |b| {
        b.iter_custom(|iters| {
            time_async(&rt, iters, || async {
                let lease = storage
                    .try_acquire("issue/example.com", Duration::from_secs(30))
                    .await
                    .unwrap()
                    .unwrap();
                storage.release(&lease).await.unwrap();
            })
        })
    });
    group.finish();
}

criterion_group!(benches, load, exists, list, store, lock_cycle);
criterion_main!(benches);
