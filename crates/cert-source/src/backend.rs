//! The HTTP exchange with a certificate backend: building the request, reading a bounded
//! response, and the freshness directives of `Cache-Control`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::SourceError;

/// What the backend answered.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) cache_control: Option<String>,
    pub(crate) body: Zeroizing<Vec<u8>>,
}

/// A client for one backend URL.
pub(crate) struct Backend {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    url: String,
    query_parameter: String,
    headers: HeaderMap,
    max_body: usize,
}

impl Backend {
    pub(crate) fn new(
        url: &str,
        query_parameter: &str,
        headers: HeaderMap,
        max_body: usize,
        roots: Option<&[CertificateDer<'static>]>,
        allow_plain_http: bool,
    ) -> Result<Self, SourceError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| SourceError::Config("the backend URL does not parse".into()))?;
        match uri.scheme_str() {
            Some("https") => {}
            // Loopback traffic never leaves the machine, so a local backend (a sidecar)
            // needs no TLS and no opt-in.
            Some("http") if uri.host().is_some_and(is_loopback) => {
                tracing::debug!("plain http:// certificate backend on loopback");
            }
            Some("http") if allow_plain_http => {
                tracing::warn!(
                    host = uri.host().unwrap_or_default(),
                    "plain http:// certificate backend: certificates and private keys travel unencrypted"
                );
            }
            Some("http") => {
                return Err(SourceError::Config(
                    "a plain http:// backend would send private keys unencrypted: use https://, \
                     or HttpSourceConfig::allow_plain_http() on a network private end to end"
                        .into(),
                ));
            }
            _ => {
                return Err(SourceError::Config(
                    "the backend URL must be http:// or https://".into(),
                ));
            }
        }
        if uri.authority().is_none_or(|a| a.as_str().contains('@')) {
            return Err(SourceError::Config(
                "the backend URL needs a host and no user information (send credentials in a header)"
                    .into(),
            ));
        }
        if url.contains('#') {
            return Err(SourceError::Config(
                "the backend URL must not have a fragment".into(),
            ));
        }
        if query_parameter.is_empty() {
            return Err(SourceError::Config(
                "the query parameter name is empty".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| SourceError::Config(err.to_string()))?;
        let tls = match roots {
            Some(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store
                        .add(root.clone())
                        .map_err(|err| SourceError::Config(format!("trusted root: {err}")))?;
                }
                builder.with_root_certificates(store)
            }
            None => builder
                .try_with_platform_verifier()
                .map_err(|err| SourceError::Config(format!("platform verifier: {err}")))?,
        }
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Backend {
            client,
            url: url.to_owned(),
            query_parameter: query_parameter.to_owned(),
            headers,
            max_body,
        })
    }

    /// The request URL for `server_name`.
    pub(crate) fn url_for(&self, server_name: &str) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}{}={}",
            self.url,
            percent_encode(&self.query_parameter),
            percent_encode(server_name)
        )
    }

    /// `GET <url>?<parameter>=<server_name>`, with the configured headers.
    pub(crate) async fn get(&self, server_name: &str) -> Result<Answer, SourceError> {
        let uri: Uri = self
            .url_for(server_name)
            .parse()
            .map_err(|_| SourceError::InvalidName(server_name.to_owned()))?;
        let mut request = Request::get(uri)
            .header(header::ACCEPT, "application/x-pem-file, */*")
            .body(Empty::<Bytes>::new())
            .map_err(SourceError::request)?;
        for (name, value) in &self.headers {
            request.headers_mut().append(name, value.clone());
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(SourceError::request)?;
        let status = response.status().as_u16();
        let cache_control = joined(response.headers(), &header::CACHE_CONTROL);
        let body = Limited::new(response.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    SourceError::TooLarge {
                        limit: self.max_body,
                    }
                } else {
                    SourceError::Request(Arc::from(err))
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            cache_control,
            body: Zeroizing::new(body.to_vec()),
        })
    }
}

/// Whether `host`, as a URL spells it, is this machine: `localhost` or a loopback address
/// (IPv6 in brackets or not).
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every value of header `name`, joined with commas.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The freshness lifetime a shared cache gives a response: `s-maxage`, else `max-age`.
pub(crate) fn freshness(cache_control: &str) -> Option<Duration> {
    let mut s_maxage = None;
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let Some((name, value)) = directive.split_once('=') else {
            continue;
        };
        let seconds = value.trim().trim_matches('"').parse::<u64>().ok();
        match name.trim().to_ascii_lowercase().as_str() {
            "s-maxage" => s_maxage = s_maxage.or(seconds),
            "max-age" => max_age = max_age.or(seconds),
            _ => {}
        }
    }
    s_maxage.or(max_age).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_max_age_wins() {
        let secs = |s: &str| freshness(s).map(|d| d.as_secs());
        assert_eq!(secs("public, max-age=60, s-maxage=300"), Some(300));
        assert_eq!(secs("max-age=60"), Some(60));
        assert_eq!(secs("Max-Age=\"90\""), Some(90));
        assert_eq!(secs("no-cache"), None);
        assert_eq!(secs("s-maxage=abc, max-age=5"), Some(5));
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.8.9.1",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1",
            "[::2]",
            "localhost.example.com",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(percent_encode("a.b-c_d~"), "a.b-c_d~");
        assert_eq!(percent_encode("a&b=c d"), "a%26b%3Dc%20d");
    }
}
