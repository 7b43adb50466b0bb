//! An [`Issuer`] for any RFC 8555 ACME CA (Let's Encrypt, ZeroSSL, Pebble, ...), built on
//! `instant-acme`, whose account and challenges live in the cluster's storage.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use instant_acme::Account;

use self::error::OrderError;
use super::{IssueError, IssueRequest, Issued, Issuer};
use crate::Store;
use crate::certificate::CertificateMeta;
use crate::challenge::{ChallengeType, Challenges, DnsProvider};

mod account;
mod ari;
mod authorize;
mod config;
mod error;
mod http;
mod order;
mod step;

pub use self::config::{
    AcmeConfig, ExternalAccountBinding, LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING,
};

/// Obtains certificates from an ACME CA. The account is created once per directory and
/// contact and shared by the cluster through storage; challenges are answered by any
/// node through [`Challenges`].
pub struct AcmeIssuer {
    storage: Arc<dyn Store>,
    config: AcmeConfig,
    challenges: Arc<Challenges>,
    dns: Option<Arc<dyn DnsProvider>>,
    account: tokio::sync::Mutex<Option<Account>>,
    http: std::sync::OnceLock<http::AcmeHttp>,
    /// Renewal windows known to be current, so a renewal pass reads storage only for
    /// those due for a refresh.
    windows: ari::Windows,
}

impl fmt::Debug for AcmeIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeIssuer")
            .field("directory_url", &self.config.directory_url)
            .field("challenge_types", &self.config.challenge_types)
            .field("dns", &self.dns.is_some())
            .field(
                "account_loaded",
                &self.account.try_lock().map(|a| a.is_some()).ok(),
            )
            .finish_non_exhaustive()
    }
}

impl AcmeIssuer {
    /// An issuer using `storage` for its account and `challenges` to publish challenge
    /// data (share the same [`Challenges`] with the HTTP-01 handler and the resolver).
    pub fn new(storage: Arc<dyn Store>, challenges: Arc<Challenges>, config: AcmeConfig) -> Self {
        AcmeIssuer {
            storage,
            config,
            challenges,
            dns: None,
            account: tokio::sync::Mutex::new(None),
            http: std::sync::OnceLock::new(),
            windows: ari::Windows::default(),
        }
    }

    /// Solving DNS-01 challenges (and so wildcard names) through `provider`.
    pub fn with_dns_provider(mut self, provider: Arc<dyn DnsProvider>) -> Self {
        self.dns = Some(provider);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AcmeConfig {
        &self.config
    }

    /// The challenge data this issuer publishes.
    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    /// The chain of the usable certificate record stored for `name` under this issuer.
    async fn stored_chain(&self, name: &str) -> Result<Option<String>, crate::Error> {
        let id = crate::record::CertificateId::new(&self.id(), name);
        Ok(crate::record::load_certificate(self.storage.as_ref(), &id)
            .await?
            .and_then(crate::record::RecordState::valid)
            .map(|loaded| loaded.stored.chain_pem))
    }
}

#[async_trait]
impl Issuer for AcmeIssuer {
    fn id(&self) -> String {
        self.config.directory_url.clone()
    }

    async fn issue(&self, request: IssueRequest<'_>) -> Result<Issued, IssueError> {
        let mut account = self.account().await?;
        let replaces = match (self.config.renewal_info, request.names.first()) {
            (true, Some(name)) => self.stored_cert_id(name).await,
            _ => None,
        };
        let mut excluded: Vec<ChallengeType> = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match self
                .order_once(&account, &request, &excluded, replaces.clone())
                .await
            {
                Ok(chain) => return Ok(Issued::new(chain)),
                Err(OrderError::AccountGone(err)) => {
                    if attempt >= self.config.attempts.max(1) {
                        return Err(err);
                    }
                    tracing::info!(error = %err, "the CA does not know the account; creating another");
                    self.forget_account(&account).await?;
                    account = self.account().await?;
                    continue;
                }
                Err(OrderError::Challenge(ty, err)) => {
                    excluded.push(ty);
                    let wildcard = request.names.iter().any(|n| n.starts_with("*."));
                    if !self.challenge_order(wildcard, &excluded).is_empty() {
                        tracing::info!(challenge = %ty, error = %err, "challenge failed; trying another type");
                        continue;
                    }
                    err
                }
                Err(OrderError::Other(err)) => err,
            };
            if !err.is_retryable() || attempt >= self.config.attempts.max(1) {
                return Err(err);
            }
            let pause = self
                .config
                .retry_delay
                .saturating_mul(1 << (attempt - 1).min(10));
            let pause = match &err {
                IssueError::Temporary {
                    retry_after: Some(after),
                    ..
                } => {
                    if *after > self.config.order_timeout {
                        // Longer than worth waiting here: the engine retries later.
                        return Err(err);
                    }
                    (*after).max(pause)
                }
                _ => pause,
            };
            tracing::debug!(error = %err, ?pause, "ACME issuance failed; retrying");
            tokio::time::sleep(pause).await;
            excluded.clear();
        }
    }

    fn resumes_issuance(&self) -> bool {
        true
    }

    async fn renewal_window(
        &self,
        _meta: &CertificateMeta,
        chain_pem: &str,
    ) -> Option<(SystemTime, SystemTime)> {
        self.ari_window(chain_pem).await
    }
}
