//! A small HTTP client for management and policy endpoints (DNS test servers, on-demand
//! "ask" URLs): hyper's HTTP/1.1 client over rustls with the aws-lc-rs provider, for
//! `http://` and `https://` URLs.
//!
//! Servers are verified against the operating system's root store (the same
//! `rustls-native-certs` roots `instant-acme` already loads, so no second root bundle is
//! compiled in), plus any extra roots given as PEM: a private CA for an internal policy
//! service, or a test CA.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The largest response body read; these endpoints answer a status and a few bytes.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A response: status code and body.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body, de-chunked when sent chunked.
    pub body: Vec<u8>,
}

/// An HTTP(S) client; cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client trusting the operating system's roots and, when given, every certificate
    /// of `extra_roots_pem`. Fails when `extra_roots_pem` holds no usable certificate.
    pub fn new(extra_roots_pem: Option<&str>) -> std::io::Result<Self> {
        Self::build(extra_roots_pem, true)
    }

    /// A client that opens one connection per request: for the process-wide client of
    /// [`http_request`], whose pooled connections would otherwise outlive the runtime
    /// that opened them.
    fn unpooled() -> std::io::Result<Self> {
        Self::build(None, false)
    }

    fn build(extra_roots_pem: Option<&str>, pooled: bool) -> std::io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            // Some platform certificates were unreadable; the others still verify.
            tracing::debug!(
                errors = native.errors.len(),
                "some system roots could not be loaded"
            );
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_roots_pem {
            for root in parse_roots(pem)? {
                roots.add(root).map_err(|err| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("unusable extra root: {err}"),
                    )
                })?;
            }
        }
        // One crypto provider everywhere: aws-lc-rs, named explicitly rather than taken
        // from a process default another crate may have installed.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let mut builder = Client::builder(TokioExecutor::new());
        if pooled {
            builder
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(30));
        } else {
            builder.pool_max_idle_per_host(0);
        }
        Ok(HttpClient {
            client: builder.build(connector),
        })
    }

    /// Sends `method url` with an optional JSON `body` and waits up to `timeout` for the
    /// whole response.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> std::io::Result<HttpResponse> {
        let request = build_request(method, url, body)?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| std::io::Error::other(error_chain(&err)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?
                .to_bytes();
            Ok(HttpResponse {
                status,
                body: body.to_vec(),
            })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP request timed out")
        })?
    }
}

/// Sends `method url` with an optional JSON `body` and waits up to `timeout` for the whole
/// response, verifying `https://` servers against the operating system's roots.
pub async fn http_request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    static DEFAULT: OnceLock<Result<HttpClient, String>> = OnceLock::new();
    let client = DEFAULT
        .get_or_init(|| HttpClient::unpooled().map_err(|err| err.to_string()))
        .as_ref()
        .map_err(|err| std::io::Error::other(err.clone()))?;
    client.request(method, url, body, timeout).await
}

/// Every certificate of `pem`; at least one.
fn parse_roots(pem: &str) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let roots = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(format!("extra roots: {err}")))?;
    if roots.is_empty() {
        return Err(invalid("extra roots: no certificate in the PEM".into()));
    }
    Ok(roots)
}

/// Checks that `pem` holds at least one certificate usable as a root.
pub(crate) fn check_roots_pem(pem: &str) -> std::io::Result<()> {
    let mut store = rustls::RootCertStore::empty();
    for root in parse_roots(pem)? {
        store.add(root).map_err(|err| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unusable extra root: {err}"),
            )
        })?;
    }
    Ok(())
}

fn build_request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> std::io::Result<Request<Full<Bytes>>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    let uri: Uri = url.parse().map_err(|_| invalid("invalid URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid("only http:// and https:// URLs are supported"));
    }
    // Credentials in the URL would be sent to whoever the host resolves to, in clear when
    // the scheme is http: refuse them, as before.
    if uri.authority().is_none_or(|a| a.as_str().contains('@')) {
        return Err(invalid("invalid URL"));
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| invalid("invalid method"))?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, "*/*");
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    request
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(|err| invalid(&err.to_string()))
}

/// The error and its causes on one line: hyper's own message ("client error (Connect)")
/// says little without them.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP/1.1 server answering `response` and handing back the request head
    /// and body it read.
    async fn serve_once(response: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                let n = stream.read(&mut chunk).await.unwrap();
                raw.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&raw);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            stream.write_all(response).await.unwrap();
            String::from_utf8_lossy(&raw).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn posts_json_and_reads_a_chunked_answer() {
        let (url, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let response = http_request(
            "POST",
            &format!("{url}/set-txt?x=1"),
            Some(b"{\"a\":1}"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"abcde");
        let seen = server.await.unwrap();
        assert!(seen.starts_with("POST /set-txt?x=1 HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("content-type: application/json"), "{seen}");
        assert!(seen.ends_with("{\"a\":1}"), "{seen}");
    }

    #[tokio::test]
    async fn refuses_other_schemes_and_credentials() {
        for url in [
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "nonsense",
        ] {
            let err = http_request("GET", url, None, Duration::from_secs(1))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{url}");
        }
    }

    #[test]
    fn extra_roots_must_hold_a_certificate() {
        assert!(HttpClient::new(Some("not a pem")).is_err());
        assert!(check_roots_pem("").is_err());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(check_roots_pem(&cert.pem()).is_ok());
        assert!(HttpClient::new(Some(&cert.pem())).is_ok());
    }
}
