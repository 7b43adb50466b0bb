//! Sending requests to the bucket: `send` builds a request anew for each try, classifies
//! its errors and retries the transient ones; `get_object` reads an object whole within
//! each try.

use std::future::Future;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::DateTime;
use parking_lot::Mutex;

use crate::S3Storage;
use crate::error::{Failure, Kind, classify};

/// What one `GetObject` read: the whole body and the headers callers use.
pub(crate) struct Fetched {
    pub(crate) bytes: Vec<u8>,
    pub(crate) etag: Option<String>,
    /// `Last-Modified`.
    pub(crate) modified: Option<DateTime>,
    /// The `Date` header (the server's clock), when it was asked for.
    pub(crate) date: Option<String>,
}

/// Keeps the `Date` header of a response: the server's clock.
#[derive(Debug)]
struct DateCapture(Arc<Mutex<Option<String>>>);

impl Intercept for DateCapture {
    fn name(&self) -> &'static str {
        "certstore-date-capture"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), cert_core::BoxError> {
        *self.0.lock() = context.response().headers().get("date").map(str::to_owned);
        Ok(())
    }
}

impl S3Storage {
    /// Sends the request `request` builds from the client and the bucket's name, building
    /// it anew for each try; a failure is classified, and a transient one retried under
    /// the storage's retry policy.
    pub(crate) async fn send<T, E, F, Fut>(&self, request: F) -> Result<T, Failure>
    where
        F: Fn(&Client, &str) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        inner
            .retry
            .run(|| {
                let sent = request(&inner.client, inner.bucket.as_str());
                async move { sent.await.map_err(classify) }
            })
            .await
    }

    /// `GetObject` of `object`, its body read within the same try, so a body cut short is
    /// retried like a failed request. With `server_date`, the response's `Date` header is
    /// kept too.
    pub(crate) async fn get_object(
        &self,
        object: &str,
        server_date: bool,
    ) -> Result<Fetched, Failure> {
        let inner = &self.inner;
        inner
            .retry
            .run(|| async move {
                let request = inner.client.get_object().bucket(&inner.bucket).key(object);
                let date = Arc::new(Mutex::new(None::<String>));
                let out = if server_date {
                    let seen = Arc::clone(&date);
                    request
                        .customize()
                        .interceptor(DateCapture(seen))
                        .send()
                        .await
                } else {
                    request.send().await
                }
                .map_err(classify)?;
                let etag = out.e_tag().map(str::to_owned);
                let modified = out.last_modified().copied();
                let bytes = out.body.collect().await.map_err(|err| Failure {
                    kind: Kind::Transient,
                    source: Box::new(err),
                    retried: false,
                })?;
                let date = date.lock().take();
                Ok(Fetched {
                    bytes: bytes.into_bytes().to_vec(),
                    etag,
                    modified,
                    date,
                })
            })
            .await
    }
}
