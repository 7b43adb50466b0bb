//! [`RedisStorage`] and its [`Storage`] implementation.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use cert_core::{Error, KeyInfo, Lease, Result, Storage, validate_key, validate_value};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ConnectionAddr, TlsCertificates};

use crate::config::RedisConfig;
use crate::error::{BACKEND, bounded};
use crate::index::lex_range;
use crate::names::Names;
use crate::{record, scripts};

/// A [`Storage`] and [`Locker`](cert_core::Locker) on one Redis server.
///
/// Cheap to clone: clones share one multiplexed connection, which reconnects by itself
/// after the server restarts or the network fails. Every request is bounded by the
/// configured response timeout and fails with a retryable
/// [`Error::Unavailable`] when the server cannot be reached.
///
/// See the [crate documentation](crate) for the data layout.
#[derive(Clone)]
pub struct RedisStorage {
    pub(crate) conn: ConnectionManager,
    pub(crate) names: Names,
    pub(crate) timeout: Duration,
    /// Replicas that must acknowledge lock writes, and how long to wait for them.
    pub(crate) replica_wait: (u32, Duration),
    server: ServerInfo,
}

/// What `Debug` shows of the server: never the password.
#[derive(Clone)]
struct ServerInfo {
    addr: String,
    tls: bool,
    db: i64,
    username: Option<String>,
    has_password: bool,
}

impl RedisStorage {
    /// Connects to the server at `url` and keeps data under `namespace` (see
    /// [`RedisConfig`] for the URL's form and the defaults). A `?namespace=` in the URL
    /// applies when `namespace` is [`DEFAULT_NAMESPACE`](crate::DEFAULT_NAMESPACE); one
    /// that differs from another `namespace` is an error, never silently ignored.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        RedisConfig::new(url)
            .with_namespace(namespace)
            .connect()
            .await
    }

    /// Connects as `config` says, in its
    /// [namespace in effect](RedisConfig::effective_namespace) (the URL's `?namespace=`
    /// counts), and checks the server answers (and accepts the credentials) with a `PING`.
    ///
    /// Fails with [`Error::Unavailable`] when the server cannot be reached within the
    /// timeouts, [`Error::Backend`] for a malformed URL, a bad namespace or refused
    /// credentials. Must be called inside a Tokio runtime.
    pub async fn from_config(config: RedisConfig) -> Result<Self> {
        let names = Names::new(&config.effective_namespace()?)?;
        let client = match &config.root_certificates_pem {
            Some(pem) => Client::build_with_tls(
                config.url.as_str(),
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(config.url.as_str()),
        }
        .map_err(|err| Error::backend(BACKEND, err))?;
        let info = client.get_connection_info();
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        let server = ServerInfo {
            addr: info.addr().to_string(),
            tls,
            db: info.redis_settings().db(),
            username: info.redis_settings().username().map(str::to_owned),
            has_password: info.redis_settings().password().is_some(),
        };
        if tls {
            ensure_crypto_provider();
        }
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connection_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|err| Error::backend(BACKEND, err))?;
        let storage = RedisStorage {
            conn,
            names,
            timeout: config.response_timeout,
            replica_wait: config.replica_wait()?,
            server,
        };
        let mut conn = storage.conn.clone();
        bounded(
            storage.timeout,
            redis::cmd("PING").query_async::<()>(&mut conn),
        )
        .await?;
        Ok(storage)
    }

    /// The namespace this storage keeps its keys in.
    pub fn namespace(&self) -> &str {
        &self.names.namespace
    }

    /// The bound on each request.
    pub fn response_timeout(&self) -> Duration {
        self.timeout
    }
}

/// The Redis client builds its TLS configuration from rustls' process-wide crypto
/// provider. When none is installed yet, install aws-lc-rs (the provider rustls would
/// choose from its own features, and the only one this workspace uses), so that building
/// the configuration cannot fail when several providers are compiled in.
fn ensure_crypto_provider() {
    use cert_core::rustls::crypto::{CryptoProvider, aws_lc_rs};
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is installed.
        let _ = aws_lc_rs::default_provider().install_default();
    }
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStorage")
            .field("addr", &self.server.addr)
            .field("tls", &self.server.tls)
            .field("db", &self.server.db)
            .field("username", &self.server.username)
            .field(
                "password",
                &if self.server.has_password {
                    Some("<redacted>")
                } else {
                    None
                },
            )
            .field("namespace", &self.names.namespace)
            .field("response_timeout", &self.timeout)
            .finish()
    }
}

#[async_trait]
impl Storage for RedisStorage {
    async fn store(&self, key: &str, value: &[u8]) -> Result<()> {
        validate_key(key)?;
        validate_value(key, value.len())?;
        let now = SystemTime::now();
        let mut conn = self.conn.clone();
        // One round trip whether the key is new or not, and atomic: the bytes, their
        // modification time and the index entry change together in one transaction.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.names.value(key))
            .arg(record::encode(value, now).as_ref())
            .ignore()
            .cmd("HSET")
            .arg(&self.names.modified)
            .arg(key)
            .arg(record::nanos(now))
            .ignore()
            .cmd("ZADD")
            .arg(&self.names.index)
            .arg(0)
            .arg(key)
            .ignore();
        bounded(self.timeout, pipe.query_async::<()>(&mut conn)).await
    }

    async fn load(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let mut conn = self.conn.clone();
        let found: Option<Vec<u8>> = bounded(
            self.timeout,
            redis::cmd("GET")
                .arg(self.names.value(key))
                .query_async(&mut conn),
        )
        .await?;
        match found {
            Some(found) => Ok(record::decode(found)),
            None => Err(Error::not_found(key)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_all(key, None).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let (min, max) = lex_range(key);
        let mut conn = self.conn.clone();
        let (terminal, below): (bool, Vec<Vec<u8>>) = bounded(
            self.timeout,
            redis::pipe()
                .cmd("EXISTS")
                .arg(self.names.value(key))
                .cmd("ZRANGEBYLEX")
                .arg(&self.names.index)
                .arg(min)
                .arg(max)
                .arg("LIMIT")
                .arg(0)
                .arg(1)
                .query_async(&mut conn),
        )
        .await?;
        Ok(terminal || !below.is_empty())
    }

    async fn list(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        self.list_index(prefix, recursive).await
    }

    async fn stat(&self, key: &str) -> Result<KeyInfo> {
        validate_key(key)?;
        let (min, max) = lex_range(key);
        let mut conn = self.conn.clone();
        let mut call = scripts::STAT.prepare_invoke();
        call.key(self.names.value(key))
            .key(&self.names.index)
            .key(&self.names.modified)
            .arg(key)
            .arg(min)
            .arg(max)
            .arg(&self.names.value_prefix)
            .arg(record::HEADER_LEN - 1);
        let found: Option<(u8, Vec<u8>, u64, Option<String>)> =
            bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        let Some((terminal, head, len, modified)) = found else {
            return Err(Error::not_found(key));
        };
        let info = record::describe(&head, len, modified.as_deref());
        Ok(if terminal == 1 {
            KeyInfo::terminal(key, info.size, info.modified)
        } else {
            KeyInfo::prefix(key, info.modified)
        })
    }

    /// The local deadline check first (it costs no round trip), then one script that
    /// compares the lock's token with the lease's and stores only on a match: the
    /// server's `PX` expiry decides, so a lease that ran out or was taken over is refused
    /// even when this process's clock says otherwise.
    async fn store_fenced(&self, key: &str, value: &[u8], lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        validate_key(key)?;
        validate_key(lease.name())?;
        validate_value(key, value.len())?;
        let now = SystemTime::now();
        let mut conn = self.conn.clone();
        let mut call = scripts::STORE_FENCED.prepare_invoke();
        call.key(self.names.value(key))
            .key(&self.names.index)
            .key(&self.names.modified)
            .key(self.names.lock(lease.name()))
            .arg(record::encode(value, now).as_ref())
            .arg(key)
            .arg(record::nanos(now))
            .arg(lease.token().as_str());
        let stored: Option<i64> = bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        match stored {
            Some(_) => Ok(()),
            None => Err(Error::LockLost {
                name: lease.name().to_owned(),
            }),
        }
    }

    /// The local deadline check, then the delete's batches, each a script that checks the
    /// lock's token first. A prefix with more keys below it than one batch holds is
    /// removed in several steps; a lease lost between two of them stops the delete there
    /// with [`Error::LockLost`], and what the earlier batches removed stays removed.
    async fn delete_fenced(&self, key: &str, lease: &Lease) -> Result<()> {
        lease.check_fence()?;
        self.delete_all(key, Some(lease)).await
    }
}
