//! A private PostgreSQL server stopped and restarted under a live `SqlStorage`: every
//! operation fails fast and retryably while it is down, and values and leases survive.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cert_core::{Error, Locker, Storage};
use cert_sql::SqlConfig;

use crate::open;

/// A PostgreSQL cluster of this test's own, run as the `postgres` user on a free port and
/// stopped (immediately) when dropped.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    const BIN: &str = "/usr/lib/postgresql/15/bin";

    /// `None` (after saying why) when PostgreSQL's binaries or root rights are missing.
    fn create() -> Option<Self> {
        let bin = PathBuf::from(Self::BIN);
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        if !bin.join("initdb").exists() || !bin.join("pg_ctl").exists() || !is_root {
            let why = format!(
                "the private PostgreSQL fault test needs {} and root (to run it as the \
                 postgres user)",
                Self::BIN
            );
            assert!(!integration_tests::services_required(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("certstore-pg-")
            .tempdir()
            .unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { bin, dir, port };
        pg.run(&format!(
            "{}/initdb -D {}/data -A trust -U postgres --no-sync > {}/initdb.log 2>&1",
            pg.bin.display(),
            pg.dir.path().display(),
            pg.dir.path().display()
        ));
        pg.start();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, script: &str) {
        let status = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", script])
            .status()
            .unwrap();
        assert!(status.success(), "failed: {script}");
    }

    fn pg_ctl(&self, args: &str) -> String {
        format!(
            "{}/pg_ctl -D {}/data -l {}/server.log {args}",
            self.bin.display(),
            self.dir.path().display(),
            self.dir.path().display()
        )
    }

    fn start(&self) {
        self.run(&self.pg_ctl(&format!(
            "-w -t 60 -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off' start",
            self.port,
            self.dir.path().display()
        )));
    }

    fn stop(&self) {
        self.run(&self.pg_ctl("-w -t 60 -m fast stop"));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args([
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                &self.pg_ctl("-w -m immediate stop"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: cert_core::Result<T>) {
    match result {
        Err(
            err @ Error::Unavailable {
                backend: "postgres",
                ..
            },
        ) => {
            assert!(err.is_retryable());
            assert!(
                std::error::Error::source(&err).is_some(),
                "{what}: no source"
            );
        }
        other => panic!("{what}: expected Unavailable from postgres, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_postgres_stopped_and_restarted() {
    let Some(pg) = tokio::task::spawn_blocking(PrivatePostgres::create)
        .await
        .unwrap()
    else {
        return;
    };
    let config = SqlConfig::default()
        .with_max_connections(4)
        .with_acquire_timeout(Duration::from_secs(2))
        .with_operation_timeout(Some(Duration::from_secs(5)));
    let storage = std::sync::Arc::new(open(&pg.url(), config).await);
    storage.store("before/stop", b"kept").await.unwrap();
    let lease = storage
        .try_acquire("held", Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();

    // A writer keeps going until the server disappears under it.
    let writer = {
        let storage = std::sync::Arc::clone(&storage);
        tokio::spawn(async move {
            for i in 0u64.. {
                if let Err(err) = storage.store(&format!("run/{i}"), b"x").await {
                    return (i, err);
                }
            }
            unreachable!()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| pg.stop());
    let stopped = Instant::now();
    let (written, err) = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the writer hung after the server stopped")
        .unwrap();
    assert!(written > 0, "nothing was written before the stop");
    assert_unavailable("store during the stop", Err::<(), _>(err));

    // Every operation fails fast and retryably while the server is down.
    // Each waits at most for the pool's acquire timeout (2 s) trying to reconnect.
    let limit = Duration::from_secs(6);
    for _ in 0..2 {
        let timed = Instant::now();
        assert_unavailable("load", storage.load("before/stop").await);
        assert!(
            timed.elapsed() < limit,
            "load failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable("store", storage.store("k", b"v").await);
        assert!(
            timed.elapsed() < limit,
            "store failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable("list", storage.list("run", true).await);
        assert!(
            timed.elapsed() < limit,
            "list failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable(
            "try_acquire",
            storage.try_acquire("l", Duration::from_secs(5)).await,
        );
        assert!(
            timed.elapsed() < limit,
            "try_acquire failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable(
            "refresh",
            storage.refresh(&lease, Duration::from_secs(600)).await,
        );
        assert!(
            timed.elapsed() < limit,
            "refresh failed after {:?}",
            timed.elapsed()
        );
    }
    eprintln!("server down for {:?}", stopped.elapsed());

    // The same value recovers once the server is back.
    tokio::task::block_in_place(|| pg.start());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match storage.load("before/stop").await {
            Ok(value) => {
                assert_eq!(value, b"kept");
                break;
            }
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no recovery after restart: {err:?}"),
        }
    }
    storage.store("after/restart", b"ok").await.unwrap();
    assert_eq!(storage.load("after/restart").await.unwrap(), b"ok");
    // The lease taken before the outage is still the holder's.
    let renewed = storage
        .refresh(&lease, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        storage
            .try_acquire("held", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none()
    );
    storage.release(&renewed).await.unwrap();
    assert!(
        storage
            .try_acquire("held", Duration::from_secs(5))
            .await
            .unwrap()
            .is_some()
    );
    // Every write reported as done is there; the one cut off may or may not have
    // committed before the server went away.
    let kept = storage.list("run", true).await.unwrap().len() as u64;
    assert!(
        kept == written || kept == written + 1,
        "{written} writes succeeded but {kept} are stored"
    );
}
