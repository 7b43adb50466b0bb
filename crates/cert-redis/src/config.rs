//! [`RedisConfig`]: where the server is, which namespace to use and how long to wait.

use std::fmt;
use std::time::Duration;

use cert_core::Result;

use crate::RedisStorage;

/// The namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "certstore";

/// The default bound on one command's round trip, reconnection included.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default bound on opening one connection.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach Redis and where to keep data there.
///
/// The URL carries the address, the database, the credentials and TLS:
/// `redis://[user][:password@]host[:port][/db]`, or `rediss://...` for TLS (rustls with the
/// system's root certificates, or the ones given to
/// [`with_root_certificates_pem`](RedisConfig::with_root_certificates_pem)).
///
/// The URL may also name the namespace, `?namespace=prod`. The namespace in effect is
/// the one given with [`with_namespace`](RedisConfig::with_namespace) (or to
/// [`RedisStorage::connect`]), else the URL's, else [`DEFAULT_NAMESPACE`]. Naming two
/// different namespaces (one in the URL, another, not the default, given here) is an
/// error when connecting, never a silent choice; so is naming the URL's twice.
///
/// `Debug` never prints the password or the certificates.
///
/// ```
/// use std::time::Duration;
/// use cert_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://:s3cret@127.0.0.1:6379/0")
///     .with_namespace("prod")
///     .with_response_timeout(Duration::from_secs(2));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server's URL, credentials included.
    pub url: String,
    /// The namespace isolating this storage's keys from others on the same server: every
    /// Redis key starts with `{namespace}:`.
    pub namespace: String,
    /// The longest a single command may take, waiting for a reconnection included; past it
    /// the call fails with [`Error::Unavailable`](cert_core::Error::Unavailable).
    pub response_timeout: Duration,
    /// The longest opening one connection may take.
    pub connection_timeout: Duration,
    /// PEM root certificates to trust for `rediss://` instead of the system's.
    pub root_certificates_pem: Option<Vec<u8>>,
    /// How many replicas must acknowledge a lock acquisition or refresh (`WAIT`) before it
    /// counts; `0` (the default) does not wait. See the crate docs for what this does and
    /// does not guarantee.
    pub wait_replicas: u32,
    /// How long `WAIT` may wait for [`wait_replicas`](RedisConfig::wait_replicas)
    /// acknowledgements. Default 100 ms.
    pub wait_timeout: Duration,
}

/// The default bound on waiting for replicas to acknowledge a lock write.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(100);

impl RedisConfig {
    /// A configuration for the server at `url`, in the [`DEFAULT_NAMESPACE`], with the
    /// default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            root_certificates_pem: None,
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
        }
    }

    /// The same configuration requiring `replicas` replicas to acknowledge each lock
    /// acquisition and refresh within `timeout` (`0` replicas turns waiting off). An
    /// acquisition or refresh that gets fewer acknowledgements fails with
    /// [`Error::Unavailable`](cert_core::Error::Unavailable) and holds nothing.
    ///
    /// The URL can say the same with `?wait_replicas=N&wait_timeout_ms=M`; values set
    /// here win over the URL's.
    pub fn with_wait_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_replicas = replicas;
        self.wait_timeout = timeout;
        self
    }

    /// The replica acknowledgement settings in effect: those set with
    /// [`with_wait_replicas`](RedisConfig::with_wait_replicas), else the URL's
    /// `wait_replicas` and `wait_timeout_ms` query parameters, else no waiting.
    pub(crate) fn replica_wait(&self) -> Result<(u32, Duration)> {
        let mut replicas = self.wait_replicas;
        let mut timeout = self.wait_timeout;
        let explicit = replicas != 0 || timeout != DEFAULT_WAIT_TIMEOUT;
        if explicit {
            return Ok((replicas, timeout));
        }
        let Some(url) = redis::parse_redis_url(&self.url) else {
            // Not a URL the client reads with query parameters (it reports its own error).
            return Ok((replicas, timeout));
        };
        for (name, value) in url.query_pairs() {
            let invalid = || {
                cert_core::Error::backend(
                    crate::error::BACKEND,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "invalid {name}={value:?} in the Redis URL: expected a whole number"
                        ),
                    ),
                )
            };
            match name.as_ref() {
                "wait_replicas" => replicas = value.parse().map_err(|_| invalid())?,
                "wait_timeout_ms" => {
                    timeout = Duration::from_millis(value.parse().map_err(|_| invalid())?);
                }
                _ => {}
            }
        }
        Ok((replicas, timeout))
    }

    /// The namespace in effect (see the type's docs): the configured one, else the URL's
    /// `namespace` query parameter, else [`DEFAULT_NAMESPACE`]. Fails when the URL names
    /// the namespace twice, or names one that differs from a configured one other than
    /// the default.
    pub fn effective_namespace(&self) -> Result<String> {
        let from_url = url_namespace(&self.url)?;
        let configured = self.namespace.as_str();
        match from_url {
            None => Ok(configured.to_owned()),
            Some(from_url) if configured == DEFAULT_NAMESPACE || configured == from_url => {
                Ok(from_url)
            }
            Some(from_url) => Err(invalid_input(format!(
                "the Redis URL names namespace {from_url:?} but the namespace given is \
                 {configured:?}: name it in one place, or the same in both"
            ))),
        }
    }

    /// The same configuration in `namespace` (not empty, without `{` or `}`). A URL that
    /// also names a namespace must name the same one (see the type's docs).
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The same configuration with this bound on each command.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The same configuration with this bound on opening a connection.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// The same configuration trusting these PEM root certificates for `rediss://` (for a
    /// server whose certificate comes from a private CA).
    pub fn with_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates_pem = Some(pem.into());
        self
    }

    /// Connects in the [namespace in effect](RedisConfig::effective_namespace): see
    /// [`RedisStorage::from_config`].
    pub async fn connect(mut self) -> Result<RedisStorage> {
        self.namespace = self.effective_namespace()?;
        RedisStorage::from_config(self).await
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field(
                "root_certificates_pem",
                &self.root_certificates_pem.as_ref().map(|_| "<set>"),
            )
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// A configuration error about the URL or the namespace.
fn invalid_input(message: String) -> cert_core::Error {
    cert_core::Error::backend(
        crate::error::BACKEND,
        std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    )
}

/// The URL's `namespace` query parameter, if it has one (a URL the client cannot read
/// has none here: connecting reports its own error).
fn url_namespace(url: &str) -> Result<Option<String>> {
    let Some(url) = redis::parse_redis_url(url) else {
        return Ok(None);
    };
    let mut found: Option<String> = None;
    for (name, value) in url.query_pairs() {
        if name != "namespace" {
            continue;
        }
        if let Some(first) = &found {
            return Err(invalid_input(format!(
                "the Redis URL names the namespace twice ({first:?} and {value:?})"
            )));
        }
        found = Some(value.into_owned());
    }
    Ok(found)
}

/// `url` with any password (and any query string, which may carry one) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => (&url[..at + 3], &url[at + 3..]),
        None => return "***".to_owned(),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = match userinfo.split_once(':') {
                Some((user, _)) => user,
                // A lone user-info part may be a password: hide it too.
                None => "",
            };
            format!("{user}:***@{}", &authority[at + 1..])
        }
        None => authority.to_owned(),
    };
    let path = match tail.find(['?', '#']) {
        Some(at) => format!("{}?***", &tail[..at]),
        None => tail.to_owned(),
    };
    format!("{scheme}{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let cases = [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
            ("rediss://user:pw@h", "rediss://user:***@h"),
            ("redis://pw@h/0", "redis://:***@h/0"),
            ("redis://u:p@ss@h/0", "redis://u:***@h/0"),
            (
                "redis+unix:///tmp/r.sock?pass=pw",
                "redis+unix:///tmp/r.sock?***",
            ),
            ("garbage pw", "***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let config = RedisConfig::new("redis://user:hunter2@h/0").with_root_certificates_pem("PEM");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("PEM\""), "{shown}");
        assert!(shown.contains("user:***@h/0"), "{shown}");
    }

    #[test]
    fn builders_set_fields() {
        let config = RedisConfig::new("redis://h")
            .with_namespace("ns")
            .with_response_timeout(Duration::from_millis(300))
            .with_connection_timeout(Duration::from_millis(200));
        assert_eq!(config.namespace, "ns");
        assert_eq!(config.response_timeout, Duration::from_millis(300));
        assert_eq!(config.connection_timeout, Duration::from_millis(200));
        assert_eq!(RedisConfig::new("redis://h").namespace, DEFAULT_NAMESPACE);
    }

    #[test]
    fn namespace_from_builder_or_url_never_both_differing() {
        let ns = |config: RedisConfig| config.effective_namespace().ok();
        assert_eq!(
            ns(RedisConfig::new("redis://h/0")).as_deref(),
            Some(DEFAULT_NAMESPACE)
        );
        assert_eq!(
            ns(RedisConfig::new("redis://h/0?namespace=prod")).as_deref(),
            Some("prod")
        );
        assert_eq!(
            ns(RedisConfig::new("redis://h/0").with_namespace("app")).as_deref(),
            Some("app")
        );
        assert_eq!(
            ns(RedisConfig::new("redis://h/0?namespace=prod").with_namespace("prod")).as_deref(),
            Some("prod")
        );
        // The default given explicitly cannot be told from none given: the URL's applies.
        assert_eq!(
            ns(RedisConfig::new("redis://h/0?namespace=prod").with_namespace(DEFAULT_NAMESPACE))
                .as_deref(),
            Some("prod")
        );
        assert_eq!(
            ns(RedisConfig::new(
                "redis://:pw@h/0?protocol=resp3&namespace=a%20b"
            ))
            .as_deref(),
            Some("a b")
        );
        let conflict = RedisConfig::new("redis://:pw@h/0?namespace=prod")
            .with_namespace("staging")
            .effective_namespace()
            .unwrap_err()
            .to_string();
        assert!(conflict.contains("\"prod\""), "{conflict}");
        assert!(conflict.contains("\"staging\""), "{conflict}");
        assert!(!conflict.contains("pw"), "{conflict}");
        let twice = RedisConfig::new("redis://h/0?namespace=a&namespace=b").effective_namespace();
        assert!(twice.is_err());
    }

    #[test]
    fn replica_wait_from_builder_or_url() {
        let wait = |config: RedisConfig| config.replica_wait().ok();
        assert_eq!(
            wait(RedisConfig::new("redis://h/0")),
            Some((0, DEFAULT_WAIT_TIMEOUT))
        );
        assert_eq!(
            wait(RedisConfig::new(
                "redis://h/0?wait_replicas=2&wait_timeout_ms=250"
            )),
            Some((2, Duration::from_millis(250)))
        );
        assert_eq!(
            wait(
                RedisConfig::new("redis://h/0?wait_replicas=2")
                    .with_wait_replicas(1, Duration::from_millis(50))
            ),
            Some((1, Duration::from_millis(50)))
        );
        assert_eq!(
            wait(RedisConfig::new("redis://h/0?wait_replicas=two")),
            None
        );
    }
}
