//! The HTTP client the ACME issuer talks to its CA with: HTTPS over rustls (the system's
//! roots, or the root the configuration names), a deadline on every request, and the
//! `Retry-After` of the latest response for each URL remembered, so the order poll loop
//! can honour it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use hyper::header::RETRY_AFTER;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use instant_acme::{BodyWrapper, BytesResponse};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How long one request may take, connection included: a CA that does not answer is
/// retried at the step, rather than holding the order until its deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The most URLs whose `Retry-After` is remembered at once.
const MAX_REMEMBERED: usize = 1024;

/// An `instant_acme::HttpClient`; clones share the connection pool and the remembered
/// `Retry-After` values.
#[derive(Clone)]
pub(super) struct AcmeHttp {
    client: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: Arc<Mutex<HashMap<String, SystemTime>>>,
}

impl AcmeHttp {
    /// A client trusting the system's roots, or only the root in `root_pem` when given.
    pub(super) fn new(root_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        match root_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|err| format!("unreadable root: {err}"))?;
                    roots
                        .add(cert)
                        .map_err(|err| format!("unusable root: {err}"))?;
                }
                if roots.is_empty() {
                    return Err("the root file holds no certificate".into());
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(AcmeHttp {
            client,
            retry_after: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The moment the latest response for `url` asked the client to wait until, if it
    /// did and that moment is still ahead.
    pub(super) fn retry_after(&self, url: &str) -> Option<SystemTime> {
        let at = self.retry_after.lock().remove(url)?;
        (at > SystemTime::now()).then_some(at)
    }

    fn remember(&self, url: String, at: Option<SystemTime>) {
        let mut map = self.retry_after.lock();
        match at {
            Some(at) => {
                if map.len() >= MAX_REMEMBERED {
                    let now = SystemTime::now();
                    map.retain(|_, at| *at > now);
                    if map.len() >= MAX_REMEMBERED {
                        map.clear();
                    }
                }
                map.insert(url, at);
            }
            None => {
                map.remove(&url);
            }
        }
    }
}

impl instant_acme::HttpClient for AcmeHttp {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let url = req.uri().to_string();
        let this = self.clone();
        let sent = self.client.request(req);
        Box::pin(async move {
            let started = std::time::Instant::now();
            let answered = tokio::time::timeout(REQUEST_TIMEOUT, sent).await;
            let status = match &answered {
                Ok(Ok(response)) => Some(response.status().as_u16()),
                _ => None,
            };
            crate::metrics::acme_request(status, started.elapsed());
            let response = match answered {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => return Err(instant_acme::Error::Other(Box::new(err))),
                Err(_) => {
                    return Err(instant_acme::Error::Other(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer from the CA within {REQUEST_TIMEOUT:?}"),
                    ))));
                }
            };
            let at = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            this.remember(url, at);
            Ok(BytesResponse::from(response))
        })
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return SystemTime::now().checked_add(Duration::from_secs(seconds.min(86_400)));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format).ok()?;
    let unix = at.assume_utc().unix_timestamp();
    Some(crate::certificate::unix_to_system(unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let soon = parse_retry_after("3").unwrap();
        let wait = soon.duration_since(SystemTime::now()).unwrap();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(3));
        let date = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(crate::certificate::system_to_unix(date), 1_445_412_480);
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let err = AcmeHttp::new(Some(b"not a certificate")).err().unwrap();
        assert!(err.contains("no certificate"), "{err}");
    }
}
