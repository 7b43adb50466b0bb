//! Redis storage and locks for certstore.
//!
//! [`RedisStorage`] implements [`Storage`](cert_core::Storage) and
//! [`Locker`](cert_core::Locker) on one Redis (or Valkey) server, so every node of a
//! fleet that points at the same server and namespace shares certificates, keys, ACME
//! accounts and locks.
//!
//! ```
//! use cert_core::{Storage, StorageExt};
//! use cert_redis::RedisStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cert_core::Result<()> {
//! // Runs against the server named by CERTSTORE_TEST_REDIS_URL, when there is one.
//! let Ok(url) = std::env::var("CERTSTORE_TEST_REDIS_URL") else { return Ok(()) };
//! let storage = RedisStorage::connect(&url, "doc_example").await?;
//! storage.store("certificates/example.com/example.com.crt", b"PEM").await?;
//! assert!(storage.exists("certificates/example.com").await?);
//! assert_eq!(
//!     storage.list("certificates", true).await?,
//!     ["certificates/example.com/example.com.crt"]
//! );
//! storage.delete("certificates").await?;
//! assert_eq!(storage.load_opt("certificates/example.com/example.com.crt").await?, None);
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting
//!
//! [`RedisConfig`] takes a URL — `redis://[user][:password@]host[:port][/db]`, or
//! `rediss://` for TLS through rustls (aws-lc-rs) with the system's root certificates or
//! [your own](RedisConfig::with_root_certificates_pem) — a namespace, and timeouts. One
//! multiplexed connection serves every clone of a storage and is re-established in the
//! background when the server restarts or the network fails; no call hangs: each request
//! is bounded by the [response timeout](RedisConfig::with_response_timeout) (5 s by
//! default). Failures to reach the server are
//! [`Error::Unavailable`](cert_core::Error::Unavailable) (retryable); other server errors
//! are [`Error::Backend`](cert_core::Error::Backend), with the client's error as source.
//! `Debug` never shows the password.
//!
//! The Redis client builds TLS configurations from rustls' process-wide crypto provider;
//! for a `rediss://` URL, when no provider is installed yet, this crate installs
//! aws-lc-rs (what rustls itself would pick) so the connection cannot fail for lack of one.
//!
//! # Data layout
//!
//! Every Redis key of a storage starts with the namespace in braces, `{ns}:`:
//!
//! | Redis key | type | holds |
//! |---|---|---|
//! | `{ns}:v:<key>` | string | the value's exact bytes: `redis-cli GET` returns the PEM as stored |
//! | `{ns}:modified` | hash | field `<key>`: the value's modification time, nanoseconds since the Unix epoch, in decimal |
//! | `{ns}:index` | sorted set | every key holding a value, all with score 0, so they sort bytewise |
//! | `{ns}:lock:<name>` | string | the token of the lease holding lock `<name>`, expiring with it |
//!
//! - `store` is one round trip whether the key is new or not: one `MULTI`/`EXEC`
//!   transaction sets the bytes, the time field and the index entry at once. So a reader
//!   never sees new bytes with an old time, every stored key is in the index, and the index
//!   lists no key without a value (`delete` removes all three in one script). A value's
//!   size is its string's length.
//! - `load` is one `GET`; `stat` one script reading the string's length, first bytes and
//!   time field.
//! - A value set by hand (`SET {ns}:v:<key>`) loads as it is; it is listed once its key is
//!   in the index (`ZADD {ns}:index 0 <key>`), and its modification time is the Unix epoch
//!   until its time field is set (`HSET {ns}:modified <key> <nanoseconds>`).
//! - Releases before this layout kept each value behind a 20-byte header in its string
//!   (`cs1`, a zero byte, the modification time in nanoseconds since the Unix epoch and the
//!   size, both big-endian `u64`). Such values are still read, header and value apart, and
//!   are written in the plain layout on their next store. A string is taken for a headed
//!   value only when it starts with `cs1`, a zero byte, and its size field equals its length
//!   minus 20; a value whose own bytes pass that test (crafted bytes only: no PEM, JSON or
//!   envelope does) is stored inside such a header, so it reads back whole. Nodes of those
//!   releases cannot read plain values: upgrade every node of a fleet before the first
//!   store by an upgraded one, or expect them to treat new records as broken and issue
//!   again.
//! - `list` and the prefix checks of `exists` and `stat` read the index by lexicographic
//!   range (`ZRANGEBYLEX` over [`range_start`](cert_core::range_start) ..
//!   [`range_end`](cert_core::range_end)), in pages of 5,000; `KEYS` and `SCAN` are never
//!   used, so listing costs the same however many other keys the server holds. A prefix's
//!   modification time is that of the first key below it.
//! - `delete` of a prefix removes the keys below it in atomic batches of 1,000 (record and
//!   index entry together), so a huge subtree never blocks the server for long; a key
//!   stored below the prefix while the batches run may survive.
//! - A key may hold a value and be a prefix of other keys at the same time; the two never
//!   interfere.
//! - Locks: `SET {ns}:lock:<name> <token> NX PX <ttl>` takes a lock; refresh and release
//!   run a script that `PEXPIRE`s or `DEL`s the lock only while it still holds the
//!   caller's token. Expiry is decided by the Redis server's clock, so clock skew between
//!   nodes cannot break exclusion.
//! - Fenced writes (`store_fenced`, `delete_fenced`) first check the lease's local
//!   deadline, then run the store or delete script prefixed by a check that
//!   `{ns}:lock:<name>` still holds the lease's token: the check and the write are one
//!   script, and an expired lock is gone from the server, so a write from a lease that
//!   ran out or was taken over is refused with
//!   [`Error::LockLost`](cert_core::Error::LockLost) however late it arrives. A fenced
//!   delete of a large prefix checks the lock again in each batch.
//!
//! # Replicas and failover
//!
//! Redis replicates asynchronously: a lock taken on the primary can be lost when the
//! primary fails before a replica copied it, and a replica promoted then lets a second
//! node take the same lock. [`RedisConfig::with_wait_replicas`] (or
//! `?wait_replicas=N&wait_timeout_ms=M` in the URL) narrows that window: after each lock
//! acquisition and refresh the storage sends `WAIT N M`, and unless at least `N` replicas
//! acknowledged within `M` milliseconds, an acquisition releases the lock again and
//! fails with [`Error::Unavailable`](cert_core::Error::Unavailable) (retryable, so
//! [`cert_core::lock`] keeps trying), and a refresh fails the same way (the keep-alive
//! retries it until the lease runs out).
//!
//! What it guarantees: a lock write that was acknowledged survives a failover to one of
//! the replicas that acknowledged it. What it does not: Redis does not become a consensus
//! system. A failover to a replica that missed the write (one that lagged, was not among
//! the `N`, or was promoted by hand) still forgets the lock, and then two nodes can hold
//! it at once; `WAIT` also cannot undo a write that reached too few replicas before the
//! primary failed. That is why work done under a lock is fenced: fenced writes check the
//! lease on the server itself, so the node whose lease the server no longer knows cannot
//! overwrite what the new holder wrote.
//!
//! `WAIT` applies to the connection, which every clone of a storage shares: while it
//! waits, the storage's other requests queue behind it, at most for the wait timeout.
//! With `N = 0` (the default) nothing waits.
//!
//! # Redis Cluster
//!
//! Not supported: the storage connects to a single server (a standalone Redis, or the
//! primary of a replicated set behind one address). The layout is ready for it: the
//! scripts and the index need every key of a namespace in one hash slot, and the `{ns}`
//! hash tag at the start of every key puts them there. Some scripts reach records whose
//! names they compute from the index, which Redis Cluster tolerates only because all
//! of them share that slot. A namespace therefore lives on one node; spread load over a
//! cluster with several namespaces.
//!
//! Redis persistence is the server's business: with `--save ''` and no AOF, a restart
//! loses everything, certificates included. Use a persistent configuration in production.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod config;
mod error;
mod index;
mod lock;
mod names;
mod record;
mod scripts;
mod storage;

pub use config::{
    DEFAULT_CONNECTION_TIMEOUT, DEFAULT_NAMESPACE, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_WAIT_TIMEOUT,
    RedisConfig,
};
pub use storage::RedisStorage;
