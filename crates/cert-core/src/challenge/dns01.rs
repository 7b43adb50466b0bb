//! DNS-01: TXT records through a pluggable DNS provider.

use std::time::Duration;

use async_trait::async_trait;

use super::http::http_request;
use crate::BoxError;

/// The TXT record name of a DNS-01 challenge for `name` (a wildcard's `*.` is dropped),
/// fully qualified with a trailing dot.
pub fn dns01_record_name(name: &str) -> String {
    let base = name
        .strip_prefix("*.")
        .unwrap_or(name)
        .trim_end_matches('.');
    format!("_acme-challenge.{base}.")
}

/// Sets and clears the TXT records of DNS-01 challenges.
#[async_trait]
pub trait DnsProvider: Send + Sync + 'static {
    /// Adds TXT `value` at `record` (fully qualified, see [`dns01_record_name`]).
    async fn set_txt(&self, record: &str, value: &str) -> Result<(), BoxError>;

    /// Removes TXT `value` from `record`.
    async fn clear_txt(&self, record: &str, value: &str) -> Result<(), BoxError>;

    /// Waits until the record set by [`set_txt`](DnsProvider::set_txt) is visible to the
    /// CA. The default waits [`propagation_delay`](DnsProvider::propagation_delay).
    async fn wait_for_propagation(&self, record: &str, value: &str) -> Result<(), BoxError> {
        let _ = (record, value);
        tokio::time::sleep(self.propagation_delay()).await;
        Ok(())
    }

    /// How long records take to propagate. Default none.
    fn propagation_delay(&self) -> Duration {
        Duration::ZERO
    }
}

/// A [`DnsProvider`] for pebble-challtestsrv's management API (`/set-txt`, `/clear-txt`),
/// for tests against the Pebble test CA.
#[derive(Debug, Clone)]
pub struct ChallTestSrvDns {
    management_url: String,
    timeout: Duration,
}

impl ChallTestSrvDns {
    /// A provider talking to the management API at `management_url`
    /// (`http://127.0.0.1:8055`).
    pub fn new(management_url: impl Into<String>) -> Self {
        ChallTestSrvDns {
            management_url: management_url.into().trim_end_matches('/').to_owned(),
            timeout: Duration::from_secs(10),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(), BoxError> {
        let url = format!("{}{path}", self.management_url);
        let body = serde_json::to_vec(&body)?;
        let response = http_request("POST", &url, Some(&body), self.timeout).await?;
        if (200..300).contains(&response.status) {
            Ok(())
        } else {
            Err(format!("{url} answered {}", response.status).into())
        }
    }
}

#[async_trait]
impl DnsProvider for ChallTestSrvDns {
    async fn set_txt(&self, record: &str, value: &str) -> Result<(), BoxError> {
        self.post(
            "/set-txt",
            serde_json::json!({ "host": record, "value": value }),
        )
        .await
    }

    async fn clear_txt(&self, record: &str, _value: &str) -> Result<(), BoxError> {
        self.post("/clear-txt", serde_json::json!({ "host": record }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names() {
        assert_eq!(
            dns01_record_name("*.example.com"),
            "_acme-challenge.example.com."
        );
        assert_eq!(
            dns01_record_name("a.example."),
            "_acme-challenge.a.example."
        );
    }
}
