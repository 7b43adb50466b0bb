//! Against a private `redis-server` these tests start and kill: a dead server gives
//! `Unavailable` within the response timeout (no hang, no panic), and the same
//! `RedisStorage` value works again once the server is back on the same port; a store is
//! one command on the server, new key or not, and survives an emptied script cache.
//!
//! Skipped loudly when `redis-server` is not on `PATH`, unless
//! `CERTSTORE_REQUIRE_SERVICES=1`, where that is a failure.
#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cert_core::{Error, Locker, Storage};
use cert_redis::{RedisConfig, RedisStorage};
use redis::AsyncCommands;

/// A `redis-server` child process, killed when dropped.
struct Server {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(binary: PathBuf, port: u16) -> Self {
        let mut server = Server {
            binary,
            port,
            child: None,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A free port in 6300..6400, away from the shared server on 6379.
fn free_port() -> u16 {
    let offset = u16::try_from(std::process::id() % 100).unwrap_or(0);
    (0..100)
        .map(|i| 6300 + (offset + i) % 100)
        .filter(|port| *port != 6379)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .unwrap()
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: cert_core::Result<T>) {
    match result {
        Err(
            err @ Error::Unavailable {
                backend: "redis", ..
            },
        ) => assert!(err.is_retryable()),
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// The `redis-server` binary, or `None` (with a loud skip) when it is not on `PATH`.
fn redis_server_or_skip() -> Option<PathBuf> {
    let found = find_redis_server();
    if found.is_none() {
        let required = std::env::var("CERTSTORE_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "redis-server is not on PATH and CERTSTORE_REQUIRE_SERVICES=1"
        );
        eprintln!("SKIPPED: redis-server is not on PATH");
    }
    found
}

/// `calls` of each command in the server's `INFO commandstats`, by lower-case name.
async fn command_calls(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_one_transaction_and_a_delete_survives_a_script_flush() {
    let Some(binary) = redis_server_or_skip() else {
        return;
    };
    let server = Server::start(binary, free_port());
    let storage = RedisStorage::connect(&server.url(), "one_trip")
        .await
        .unwrap();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    storage.store("warm/up", b"x").await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut raw)
        .await
        .unwrap();
    for i in 0..10 {
        storage.store(&format!("new/k{i}"), b"first").await.unwrap();
    }
    for i in 0..10 {
        storage
            .store(&format!("new/k{i}"), b"second")
            .await
            .unwrap();
    }
    let mut calls = command_calls(&mut raw).await;
    // The stats include this connection's own commands: only the storage's count. Each
    // store, new key or overwrite, is one transaction (sent in one write, answered in one
    // reply): `MULTI`, the three writes, `EXEC`.
    calls.retain(|(name, _)| name != "info" && name != "config|resetstat");
    calls.sort();
    assert_eq!(
        calls,
        [
            ("exec".to_owned(), 20),
            ("hset".to_owned(), 20),
            ("multi".to_owned(), 20),
            ("set".to_owned(), 20),
            ("zadd".to_owned(), 20)
        ]
    );

    // An emptied script cache (as after a restart, or `SCRIPT FLUSH`): a delete loads its
    // script again by itself.
    storage.store("new/k10", b"to delete").await.unwrap();
    storage.delete("new/k9").await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .unwrap();
    storage.delete("new/k10").await.unwrap();
    storage.store("new/k0", b"third").await.unwrap();
    assert_eq!(storage.load("new/k0").await.unwrap(), b"third");
    assert_eq!(storage.load("new/k8").await.unwrap(), b"second");
    let listed = storage.list("new", true).await.unwrap();
    assert_eq!(listed.len(), 9);
    assert!(!listed.iter().any(|k| k == "new/k10" || k == "new/k9"));
    let indexed: i64 = raw.zcard("{one_trip}:index").await.unwrap();
    assert_eq!(indexed, 10, "every stored key is indexed exactly once");
    let timed: i64 = raw.hlen("{one_trip}:modified").await.unwrap();
    assert_eq!(timed, 10, "every stored key has one time field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_restart() {
    let Some(binary) = redis_server_or_skip() else {
        return;
    };
    let mut server = Server::start(binary, free_port());
    let timeout = Duration::from_millis(800);
    let storage = RedisConfig::new(server.url())
        .with_namespace("fault")
        .with_response_timeout(timeout)
        .connect()
        .await
        .unwrap();
    storage.store("a/b", b"before").await.unwrap();
    assert_eq!(storage.load("a/b").await.unwrap(), b"before");

    server.kill();
    // Every kind of call fails as retryable, each within the timeout (plus scheduling slack).
    let bound = timeout + Duration::from_secs(2);
    for round in 0..3 {
        let started = Instant::now();
        assert_unavailable("store", storage.store("a/b", b"during").await);
        assert_unavailable("load", storage.load("a/b").await);
        assert_unavailable("list", storage.list("a", true).await);
        assert_unavailable("stat", storage.stat("a/b").await);
        assert_unavailable("exists", storage.exists("a").await);
        assert_unavailable("delete", storage.delete("a").await);
        assert_unavailable(
            "try_acquire",
            storage.try_acquire("l", Duration::from_secs(5)).await,
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed < bound * 7,
            "round {round}: seven failing calls took {elapsed:?}"
        );
    }
    // A connection attempt to a dead server is refused too.
    let started = Instant::now();
    assert_unavailable(
        "connect",
        RedisConfig::new(server.url())
            .with_response_timeout(timeout)
            .connect()
            .await,
    );
    assert!(started.elapsed() < bound);

    server.restart();
    // The same value reconnects by itself: it may take a call or two to notice.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match storage.store("a/b", b"after").await {
            Ok(()) => break,
            Err(err) => {
                assert!(err.is_retryable(), "{err:?}");
                assert!(Instant::now() < deadline, "no reconnection: {err:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(storage.load("a/b").await.unwrap(), b"after");
    assert_eq!(storage.list("a", true).await.unwrap(), ["a/b"]);
    let lease = storage
        .try_acquire("l", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    storage.release(&lease).await.unwrap();
    let clone: RedisStorage = storage.clone();
    clone.delete("a").await.unwrap();
    assert!(!storage.exists("a").await.unwrap());
}
