//! [`S3Config`]: where the bucket is and how to reach it.

use std::fmt;
use std::time::Duration;

/// Where S3 credentials come from.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum S3Credentials {
    /// The standard AWS chain: environment variables, shared config and credentials
    /// files, web identity, ECS container and EC2 instance metadata (the default).
    #[default]
    DefaultChain,
    /// An access key given explicitly.
    Static {
        /// The access key id (not secret; named in authentication errors).
        access_key_id: String,
        /// The secret access key (never printed).
        secret_access_key: String,
        /// An optional session token (never printed).
        session_token: Option<String>,
    },
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Credentials::DefaultChain => f.write_str("DefaultChain"),
            S3Credentials::Static {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field(
                    "session_token",
                    &session_token.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}

impl S3Credentials {
    /// Describes the credentials for error messages, without any secret.
    pub(crate) fn describe(&self) -> String {
        match self {
            S3Credentials::DefaultChain => "credentials from the default AWS chain \
                 (environment, profile files, web identity, container or instance metadata)"
                .to_owned(),
            S3Credentials::Static { access_key_id, .. } => {
                format!("the explicitly configured access key id {access_key_id:?}")
            }
        }
    }
}

/// How to reach a bucket: name, key prefix, region, endpoint, addressing style,
/// credentials, retries and timeouts.
///
/// ```
/// use std::time::Duration;
/// use cert_s3::S3Config;
///
/// let config = S3Config::new("my-certs")
///     .with_prefix("prod")
///     .with_endpoint("http://127.0.0.1:9000")
///     .with_path_style(true)
///     .with_static_credentials("AKIDEXAMPLE", "secret", None)
///     .with_retries(5, Duration::from_millis(50), Duration::from_secs(2));
/// assert!(!format!("{config:?}").contains("secret\""));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct S3Config {
    /// The bucket's name.
    pub bucket: String,
    /// A key prefix (`""` for the whole bucket): every object lives below `prefix/`.
    pub prefix: String,
    /// The region; `None` asks the default AWS region chain, then uses `us-east-1`.
    pub region: Option<String>,
    /// A custom endpoint for S3-compatible stores (MinIO, Ceph, R2, Backblaze B2, Spaces),
    /// for example `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted stores need.
    pub path_style: bool,
    /// Where credentials come from.
    pub credentials: S3Credentials,
    /// How many times one request is tried in all when the service is throttling or
    /// unreachable (at least 1). Default 4.
    pub max_attempts: u32,
    /// First pause between tries; doubles each time, with jitter. Default 50 ms.
    pub initial_backoff: Duration,
    /// Longest pause between tries. Default 1 s.
    pub max_backoff: Duration,
    /// How long to wait for a TCP (and TLS) connection. Default 3 s.
    pub connect_timeout: Duration,
    /// How long one try of one request may take in all. Default 30 s.
    pub attempt_timeout: Duration,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("credentials", &self.credentials)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

impl S3Config {
    /// A configuration for `bucket`, with no prefix, AWS defaults for region, endpoint
    /// and credentials.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            region: None,
            endpoint: None,
            path_style: false,
            credentials: S3Credentials::DefaultChain,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(30),
        }
    }

    /// Keeps every object below `prefix/` (a valid key, or `""` for the whole bucket).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Uses this region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends requests to this endpoint instead of AWS.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Path-style (`true`) or virtual-hosted (`false`) addressing.
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.path_style = path_style;
        self
    }

    /// Uses this access key instead of the default chain.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.credentials = S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        };
        self
    }

    /// Tries each request up to `max_attempts` times on throttling and network errors,
    /// pausing from `initial_backoff` up to `max_backoff` between tries.
    pub fn with_retries(
        mut self,
        max_attempts: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.initial_backoff = initial_backoff;
        self.max_backoff = max_backoff.max(initial_backoff);
        self
    }

    /// Sets the connection timeout and the timeout of one try of one request.
    pub fn with_timeouts(mut self, connect: Duration, attempt: Duration) -> Self {
        self.connect_timeout = connect;
        self.attempt_timeout = attempt;
        self
    }
}
