//! The backend a storage URL names, opened: a client built or connected, and what the
//! tools need besides the storage (a file storage's directory; lock listing is reached
//! through the store, `Locker::lock_admin`).

use std::path::PathBuf;
use std::sync::Arc;

use cert_core::Store;

use super::{OpenError, OpenOptions};
#[allow(unused_imports)] // unused when every backend feature is off
use crate::url::{StorageUrl, Target};

pub(super) struct Plain {
    pub(super) store: Arc<dyn Store>,
    pub(super) description: String,
    pub(super) file_root: Option<PathBuf>,
}

impl Plain {
    #[allow(dead_code)] // unused when every backend feature is off
    fn new(store: Arc<dyn Store>, description: String) -> Self {
        Plain {
            store,
            description,
            file_root: None,
        }
    }
}

#[allow(unused_variables)]
pub(super) async fn open_plain(
    url: &StorageUrl,
    options: &OpenOptions,
) -> Result<Plain, OpenError> {
    let shown = url.redacted();
    let storage_error = |source: cert_core::Error| OpenError::Storage {
        url: shown.clone(),
        source,
    };
    match url.target() {
        #[cfg(feature = "file")]
        Target::File { path } => {
            let storage = cert_file::FileStorage::new(path);
            let mut plain = Plain::new(
                Arc::new(storage),
                format!("file storage in {}", path.display()),
            );
            plain.file_root = Some(path.clone());
            Ok(plain)
        }
        #[cfg(feature = "redis")]
        Target::Redis {
            url: redis_url,
            namespace,
        } => {
            let config = cert_redis::RedisConfig::new(redis_url.clone()).with_namespace(namespace);
            let storage = config.connect().await.map_err(storage_error)?;
            Ok(Plain::new(
                Arc::new(storage),
                format!(
                    "redis namespace {namespace:?} at {}",
                    crate::redact(redis_url)
                ),
            ))
        }
        #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
        Target::Sql {
            url: sql_url,
            namespace,
            table_prefix,
        } => {
            let mut config = cert_sql::SqlConfig::default().with_namespace(namespace);
            if let Some(prefix) = table_prefix {
                config = config.with_table_prefix(prefix);
            }
            let tables = format!("{}/{}", config.kv_table, config.lock_table);
            let storage = cert_sql::SqlStorage::connect_with(sql_url, config)
                .await
                .map_err(storage_error)?;
            Ok(Plain::new(
                Arc::new(storage),
                format!(
                    "{} tables {tables} namespace {namespace:?} at {}",
                    url.backend(),
                    crate::redact(sql_url)
                ),
            ))
        }
        #[cfg(feature = "s3")]
        Target::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            path_style,
        } => {
            let mut config = cert_s3::S3Config::new(bucket)
                .with_prefix(prefix)
                .with_path_style(*path_style);
            if let Some(endpoint) = endpoint {
                config = config.with_endpoint(endpoint);
            }
            if let Some(region) = region {
                config = config.with_region(region);
            }
            let storage = cert_s3::S3Storage::connect(config)
                .await
                .map_err(storage_error)?;
            if options.create {
                storage.ensure_bucket().await.map_err(storage_error)?;
            } else if matches!(storage.bucket_exists().await, Ok(false)) {
                // Otherwise every key would read as missing ("not found: ca/local/..."). A
                // check that fails (credentials allowed objects but not the bucket, say)
                // decides nothing: the first real request reports what is wrong.
                return Err(OpenError::Config {
                    url: shown.clone(),
                    reason: format!(
                        "the bucket {bucket:?} does not exist; create it, or pass --create"
                    ),
                });
            }
            let where_ = match endpoint {
                Some(endpoint) => format!(" at {}", crate::redact(endpoint)),
                None => String::new(),
            };
            Ok(Plain::new(
                Arc::new(storage),
                format!("s3 bucket {bucket:?} prefix {prefix:?}{where_}"),
            ))
        }
        #[cfg(feature = "azure")]
        Target::Azure {
            account,
            container,
            prefix,
            endpoint,
        } => {
            let storage = super::azure::azure(url, account, container, endpoint.as_deref())?
                .with_prefix(prefix)
                .map_err(storage_error)?;
            if options.create {
                storage
                    .create_container_if_missing()
                    .await
                    .map_err(storage_error)?;
            } else if matches!(storage.container_exists().await, Ok(false)) {
                // Otherwise every key would read as missing ("not found: ca/local/..."). A
                // check that fails (a SAS that may not read the container's properties)
                // decides nothing: the first real request reports what is wrong.
                return Err(OpenError::Config {
                    url: shown.clone(),
                    reason: format!(
                        "the container {container:?} does not exist; create it, or pass --create"
                    ),
                });
            }
            Ok(Plain::new(
                Arc::new(storage),
                format!("azure container {container:?} of account {account:?} prefix {prefix:?}"),
            ))
        }
        #[allow(unreachable_patterns)]
        _ => Err(OpenError::NotCompiled {
            url: shown.clone(),
            backend: url.backend(),
            feature: url.backend().feature(),
        }),
    }
}
