//! An [`Issuer`] for any RFC 8555 ACME CA (Let's Encrypt, ZeroSSL, Pebble, ...), built on
//! `instant-acme`, whose account and challenges live in the cluster's storage.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy as AcmeRetry, RevocationReason,
    RevocationRequest,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{IssueError, IssueRequest, Issued, Issuer};
use crate::certificate::{CertificateMeta, system_to_unix, unix_to_system};
use crate::challenge::{ChallengeType, Challenges, DnsProvider, dns01_record_name};
use crate::lock::{LockOptions, lock, try_lock};
use crate::{Locker, StorageExt, Store, keys};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// External Account Binding credentials some CAs require (RFC 8555 section 7.3.4).
#[derive(Clone)]
pub struct ExternalAccountBinding {
    /// The key identifier the CA gave.
    pub kid: String,
    /// The MAC key the CA gave (decoded bytes).
    pub hmac_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("kid", &self.kid)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// How an [`AcmeIssuer`] works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcmeConfig {
    /// The CA's directory URL. Default Let's Encrypt production.
    pub directory_url: String,
    /// A contact email address for the account (without `mailto:`).
    pub email: Option<String>,
    /// Whether the CA's terms of service are agreed to. Default false: most CAs refuse
    /// new accounts without it.
    pub agree_terms: bool,
    /// External Account Binding, for CAs that require it.
    pub external_account: Option<ExternalAccountBinding>,
    /// A PEM file with the root the CA's own HTTPS endpoint is trusted by, instead of the
    /// platform's roots (test CAs such as Pebble).
    pub root_pem_file: Option<PathBuf>,
    /// The certificate profile to ask for, when the CA offers profiles.
    pub profile: Option<String>,
    /// The challenge types to use, in order of preference. Default HTTP-01, TLS-ALPN-01,
    /// then DNS-01 (used only with a DNS provider).
    pub challenge_types: Vec<ChallengeType>,
    /// How long to wait for authorizations and for the certificate. Default 90 s.
    pub order_timeout: Duration,
    /// Attempts per [`Issuer::issue`] call on temporary failures. Default 3.
    pub attempts: u32,
    /// Pause before the second attempt (doubling). Default 2 s.
    pub retry_delay: Duration,
    /// Whether to use ACME Renewal Information (RFC 9773) when the CA offers it.
    /// Default true.
    pub renewal_info: bool,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory_url: LETS_ENCRYPT_PRODUCTION.to_owned(),
            email: None,
            agree_terms: false,
            external_account: None,
            root_pem_file: None,
            profile: None,
            challenge_types: vec![
                ChallengeType::Http01,
                ChallengeType::TlsAlpn01,
                ChallengeType::Dns01,
            ],
            order_timeout: Duration::from_secs(90),
            attempts: 3,
            retry_delay: Duration::from_secs(2),
            renewal_info: true,
        }
    }
}

impl AcmeConfig {
    /// A configuration for the CA at `directory_url`.
    pub fn new(directory_url: impl Into<String>) -> Self {
        AcmeConfig {
            directory_url: directory_url.into(),
            ..AcmeConfig::default()
        }
    }

    /// With this contact email.
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Agreeing to the CA's terms of service.
    pub fn agree_to_terms(mut self) -> Self {
        self.agree_terms = true;
        self
    }

    /// With External Account Binding credentials.
    pub fn with_external_account(mut self, kid: impl Into<String>, hmac_key: Vec<u8>) -> Self {
        self.external_account = Some(ExternalAccountBinding {
            kid: kid.into(),
            hmac_key: Zeroizing::new(hmac_key),
        });
        self
    }

    /// Trusting the CA's HTTPS endpoint by the root in this PEM file.
    pub fn with_root_pem_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_pem_file = Some(path.into());
        self
    }

    /// Asking for this certificate profile.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Using these challenge types, in this order.
    pub fn with_challenge_types(mut self, types: impl IntoIterator<Item = ChallengeType>) -> Self {
        self.challenge_types = types.into_iter().collect();
        self
    }

    /// Waiting this long for validation and the certificate.
    pub fn with_order_timeout(mut self, timeout: Duration) -> Self {
        self.order_timeout = timeout;
        self
    }

    /// With this many attempts per issuance and this first pause between them.
    pub fn with_retries(mut self, attempts: u32, delay: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.retry_delay = delay;
        self
    }
}

/// The renewal window of one certificate as the CA suggested it, shared in storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredWindow {
    start: i64,
    end: i64,
    /// When to ask the CA again (unix seconds).
    refresh_at: i64,
}

/// Obtains certificates from an ACME CA. The account is created once per directory and
/// contact and shared by the cluster through storage; challenges are answered by any
/// node through [`Challenges`].
pub struct AcmeIssuer {
    storage: Arc<dyn Store>,
    config: AcmeConfig,
    challenges: Arc<Challenges>,
    dns: Option<Arc<dyn DnsProvider>>,
    account: tokio::sync::Mutex<Option<Account>>,
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

/// Why one order failed, inside the issuer.
enum OrderError {
    /// Validation of a challenge of this type failed: another type may succeed.
    Challenge(ChallengeType, IssueError),
    /// The CA does not know the account (any more).
    AccountGone(IssueError),
    Other(IssueError),
}

impl From<IssueError> for OrderError {
    fn from(err: IssueError) -> Self {
        OrderError::Other(err)
    }
}

impl From<crate::Error> for OrderError {
    fn from(err: crate::Error) -> Self {
        OrderError::Other(IssueError::Storage(err))
    }
}

impl From<instant_acme::Error> for OrderError {
    fn from(err: instant_acme::Error) -> Self {
        let gone =
            matches!(&err, instant_acme::Error::Api(p) if problem_kind(p) == "accountDoesNotExist");
        let mapped = map_acme_error(err);
        if gone {
            OrderError::AccountGone(mapped)
        } else {
            OrderError::Other(mapped)
        }
    }
}

/// What one challenge placed, to clean up afterwards.
enum Placed {
    Http01(String),
    TlsAlpn01(String),
    Dns01 { record: String, value: String },
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

    fn account_key(&self) -> String {
        keys::acme_account(
            &self.config.directory_url,
            self.config.email.as_deref().unwrap_or(""),
        )
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, IssueError> {
        match &self.config.root_pem_file {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        }
        .map_err(|err| IssueError::Rejected {
            reason: format!("cannot set up the ACME client: {err}"),
        })
    }

    /// The account: loaded from storage, or created once for the whole cluster under the
    /// account lock.
    pub async fn account(&self) -> Result<Account, IssueError> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let key = self.account_key();
        let account = match self.load_account(&key).await? {
            Some(account) => account,
            None => {
                let locker: Arc<dyn Locker> = self.storage.clone();
                let guard = lock(
                    locker,
                    &keys::account_lock(&self.config.directory_url),
                    &LockOptions::default(),
                )
                .await?;
                let result = async {
                    if let Some(account) = self.load_account(&key).await? {
                        return Ok(account);
                    }
                    self.create_account(&key, &guard.lease()).await
                }
                .await;
                if let Err(err) = guard.release().await {
                    tracing::warn!(error = %err, "releasing the account lock failed");
                }
                result?
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Forgets an account the CA no longer knows (a test CA restarted, an account
    /// deactivated elsewhere): removes its stored credentials unless another node already
    /// replaced them, so the next issuance creates a new one.
    async fn forget_account(&self, stale: &Account) -> Result<(), IssueError> {
        let mut slot = self.account.lock().await;
        if slot.as_ref().is_some_and(|a| a.id() == stale.id()) {
            *slot = None;
        }
        let key = self.account_key();
        let locker: Arc<dyn Locker> = self.storage.clone();
        let guard = lock(
            locker,
            &keys::account_lock(&self.config.directory_url),
            &LockOptions::default(),
        )
        .await?;
        let result = async {
            if let Some(bytes) = self.storage.load_opt(&key).await? {
                let bytes = Zeroizing::new(bytes);
                let stored_id = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|id| id.as_str().map(str::to_owned)));
                if stored_id.as_deref() == Some(stale.id()) {
                    match self.storage.delete_fenced(&key, &guard.lease()).await {
                        Ok(()) | Err(crate::Error::NotFound { .. }) => {}
                        Err(err) => return Err(IssueError::Storage(err)),
                    }
                }
            }
            Ok(())
        }
        .await;
        let _ = guard.release().await;
        result
    }

    async fn load_account(&self, key: &str) -> Result<Option<Account>, IssueError> {
        let Some(bytes) = self.storage.load_opt(key).await? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        let credentials: AccountCredentials = serde_json::from_slice(&bytes)
            .map_err(|err| IssueError::Storage(crate::Error::corrupt(key, err)))?;
        let account = self
            .builder()?
            .from_credentials(credentials)
            .await
            .map_err(map_acme_error)?;
        Ok(Some(account))
    }

    /// Creates an account at the CA and stores its credentials (one value, so a crash
    /// leaves none or all of them), fenced by the account lock's `lease`: a node that
    /// stalled past its lease never overwrites an account another node created meanwhile.
    async fn create_account(&self, key: &str, lease: &crate::Lease) -> Result<Account, IssueError> {
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = self
            .config
            .external_account
            .as_ref()
            .map(|eab| ExternalAccountKey::new(eab.kid.clone(), &eab.hmac_key));
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: self.config.agree_terms,
                    only_return_existing: false,
                },
                self.config.directory_url.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(map_acme_error)?;
        let json = Zeroizing::new(serde_json::to_vec(&credentials).map_err(|err| {
            IssueError::Rejected {
                reason: format!("cannot serialize the account: {err}"),
            }
        })?);
        self.storage.store_fenced(key, &json, lease).await?;
        tracing::info!(directory = %self.config.directory_url, "created an ACME account");
        Ok(account)
    }

    /// Revokes a certificate (PEM chain, leaf first) issued by this CA, with an optional
    /// RFC 5280 reason code (0 unspecified, 1 key compromise, 4 superseded, 5 cessation of
    /// operation, ...).
    pub async fn revoke(&self, chain_pem: &str, reason: Option<u8>) -> Result<(), IssueError> {
        let chain =
            crate::certificate::parse_chain(chain_pem).map_err(|err| IssueError::Rejected {
                reason: err.to_string(),
            })?;
        let reason = match reason {
            None => None,
            Some(0) => Some(RevocationReason::Unspecified),
            Some(1) => Some(RevocationReason::KeyCompromise),
            Some(3) => Some(RevocationReason::AffiliationChanged),
            Some(4) => Some(RevocationReason::Superseded),
            Some(5) => Some(RevocationReason::CessationOfOperation),
            Some(9) => Some(RevocationReason::PrivilegeWithdrawn),
            Some(other) => {
                return Err(IssueError::Rejected {
                    reason: format!("revocation reason {other} is not allowed"),
                });
            }
        };
        let account = self.account().await?;
        account
            .revoke(&RevocationRequest {
                certificate: &chain[0],
                reason,
            })
            .await
            .map_err(map_acme_error)
    }

    /// Revokes the certificate stored for `name` under this issuer.
    pub async fn revoke_managed(&self, name: &str, reason: Option<u8>) -> Result<(), IssueError> {
        let chain = self
            .stored_chain(name)
            .await?
            .ok_or_else(|| IssueError::Rejected {
                reason: format!("no usable certificate stored for {name}"),
            })?;
        self.revoke(&chain, reason).await
    }

    /// The ARI identifier of the certificate currently stored for `name`, if any.
    async fn stored_cert_id(&self, name: &str) -> Option<CertificateIdentifier<'static>> {
        let chain = self.stored_chain(name).await.ok()??;
        cert_id(&chain)
    }

    /// The chain of the usable certificate record stored for `name` under this issuer.
    async fn stored_chain(&self, name: &str) -> Result<Option<String>, crate::Error> {
        let id = crate::record::CertificateId::new(&self.id(), name);
        Ok(crate::record::load_certificate(self.storage.as_ref(), &id)
            .await?
            .and_then(crate::record::RecordState::valid)
            .map(|loaded| loaded.stored.chain_pem))
    }

    fn challenge_order(&self, wildcard: bool, excluded: &[ChallengeType]) -> Vec<ChallengeType> {
        self.config
            .challenge_types
            .iter()
            .copied()
            .filter(|t| !excluded.contains(t))
            .filter(|t| *t != ChallengeType::Dns01 || self.dns.is_some())
            .filter(|t| !wildcard || *t == ChallengeType::Dns01)
            .collect()
    }

    async fn place(
        &self,
        ty: ChallengeType,
        domain: &str,
        token: &str,
        key_authorization: &instant_acme::KeyAuthorization,
    ) -> Result<Placed, IssueError> {
        match ty {
            ChallengeType::Http01 => {
                self.challenges
                    .present_http01(token, key_authorization.as_str())
                    .await?;
                Ok(Placed::Http01(token.to_owned()))
            }
            ChallengeType::TlsAlpn01 => {
                self.challenges
                    .present_tls_alpn01(domain, key_authorization.digest().as_ref())
                    .await?;
                Ok(Placed::TlsAlpn01(domain.to_owned()))
            }
            ChallengeType::Dns01 => {
                let dns = self.dns.as_ref().ok_or_else(|| IssueError::Rejected {
                    reason: "DNS-01 needs a DNS provider".into(),
                })?;
                let record = dns01_record_name(domain);
                let value = key_authorization.dns_value();
                dns.set_txt(&record, &value)
                    .await
                    .map_err(IssueError::temporary)?;
                let placed = Placed::Dns01 { record, value };
                if let Placed::Dns01 { record, value } = &placed
                    && let Err(err) = dns.wait_for_propagation(record, value).await
                {
                    self.clean(std::slice::from_ref(&placed)).await;
                    return Err(IssueError::temporary(err));
                }
                Ok(placed)
            }
        }
    }

    async fn clean(&self, placed: &[Placed]) {
        for item in placed {
            let result = match item {
                Placed::Http01(token) => self
                    .challenges
                    .clear_http01(token)
                    .await
                    .map_err(Into::into),
                Placed::TlsAlpn01(name) => self
                    .challenges
                    .clear_tls_alpn01(name)
                    .await
                    .map_err(Into::into),
                Placed::Dns01 { record, value } => match &self.dns {
                    Some(dns) => dns.clear_txt(record, value).await,
                    None => Ok(()),
                },
            };
            if let Err(err) = result {
                tracing::warn!(error = %err, "removing challenge data failed");
            }
        }
    }

    async fn order_once(
        &self,
        account: &Account,
        request: &IssueRequest<'_>,
        excluded: &[ChallengeType],
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<String, OrderError> {
        let identifiers: Vec<Identifier> = request
            .names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Identifier::Ip(ip),
                Err(_) => Identifier::Dns(name.clone()),
            })
            .collect();
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(profile) = &self.config.profile {
            new_order = new_order.profile(profile);
        }
        let mut order = match replaces {
            Some(id) => match account.new_order(&new_order.replaces(id)).await {
                Ok(order) => order,
                Err(err) => {
                    // The CA may not support ARI or refuse this replacement: order plainly.
                    tracing::debug!(error = %err, "ordering with `replaces` failed; ordering without");
                    let mut plain = NewOrder::new(&identifiers);
                    if let Some(profile) = &self.config.profile {
                        plain = plain.profile(profile);
                    }
                    account.new_order(&plain).await?
                }
            },
            None => account.new_order(&new_order).await?,
        };

        let mut placed = Vec::new();
        let mut used = Vec::new();
        let result = self
            .solve(&mut order, excluded, &mut placed, &mut used)
            .await;
        let result = match result {
            Ok(()) => self.wait_ready(&mut order, &used).await,
            Err(err) => Err(err),
        };
        self.clean(&placed).await;
        result?;
        order.finalize_csr(request.csr_der).await?;
        let chain = order
            .poll_certificate(&self.poll_policy())
            .await
            .map_err(map_acme_error)?;
        Ok(chain)
    }

    fn poll_policy(&self) -> AcmeRetry {
        AcmeRetry::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(self.config.order_timeout)
    }

    async fn solve(
        &self,
        order: &mut instant_acme::Order,
        excluded: &[ChallengeType],
        placed: &mut Vec<Placed>,
        used: &mut Vec<ChallengeType>,
    ) -> Result<(), OrderError> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(OrderError::Other(IssueError::Rejected {
                        reason: format!("authorization is {other:?}"),
                    }));
                }
            }
            let identifier = authz.identifier();
            let wildcard = identifier.wildcard;
            let domain = match identifier.identifier {
                Identifier::Dns(d) => d.clone(),
                Identifier::Ip(ip) => ip.to_string(),
                other => {
                    return Err(OrderError::Other(IssueError::Rejected {
                        reason: format!("unsupported identifier {other:?}"),
                    }));
                }
            };
            let offered: Vec<ChallengeType> = authz
                .challenges
                .iter()
                .filter_map(|c| from_acme_type(&c.r#type))
                .collect();
            let Some(ty) = self
                .challenge_order(wildcard, excluded)
                .into_iter()
                .find(|t| offered.contains(t))
            else {
                return Err(OrderError::Other(IssueError::Rejected {
                    reason: format!("no usable challenge type for {domain} (offered {offered:?})"),
                }));
            };
            let Some(mut challenge) = authz.challenge(to_acme_type(ty)) else {
                continue;
            };
            let key_authorization = challenge.key_authorization();
            let token = challenge.token.clone();
            // Stored before the CA is told, so any node can answer.
            let item = self
                .place(ty, &domain, &token, &key_authorization)
                .await
                .map_err(|err| OrderError::Challenge(ty, err))?;
            placed.push(item);
            used.push(ty);
            challenge.set_ready().await?;
        }
        Ok(())
    }

    async fn wait_ready(
        &self,
        order: &mut instant_acme::Order,
        used: &[ChallengeType],
    ) -> Result<(), OrderError> {
        let status = order.poll_ready(&self.poll_policy()).await;
        let failed_type = used.first().copied();
        match status {
            Ok(OrderStatus::Ready) => Ok(()),
            Ok(status) => {
                let detail = order
                    .state()
                    .error
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| format!("order is {status:?}"));
                Err(validation_failure(failed_type, detail))
            }
            Err(instant_acme::Error::Api(problem)) if is_validation_problem(&problem) => {
                Err(validation_failure(failed_type, problem.to_string()))
            }
            Err(err) => Err(OrderError::Other(map_acme_error(err))),
        }
    }

    async fn ari_window(&self, chain_pem: &str) -> Option<(SystemTime, SystemTime)> {
        if !self.config.renewal_info {
            return None;
        }
        let id = cert_id(chain_pem)?;
        let key = format!(
            "{}/{}/renewal-info/{}",
            keys::ACME,
            keys::issuer_key(&self.config.directory_url),
            keys::safe_segment(&id.to_string())
        );
        let now = system_to_unix(SystemTime::now());
        let stored: Option<StoredWindow> = match self.storage.load_opt(&key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            _ => None,
        };
        if let Some(window) = &stored
            && window.refresh_at > now
        {
            return Some(window_times(window));
        }
        // One node asks the CA; the others keep what is stored meanwhile.
        let locker: Arc<dyn Locker> = self.storage.clone();
        let guard = match try_lock(
            locker,
            &format!("ari/{}", keys::safe_segment(&id.to_string())),
            &LockOptions::default(),
        )
        .await
        {
            Ok(Some(guard)) => guard,
            _ => return stored.as_ref().map(window_times),
        };
        let result = async {
            let account = self.account().await.ok()?;
            let (info, retry) = match account.renewal_info(&id).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::debug!(error = %err, "renewal information unavailable");
                    return stored.as_ref().map(window_times);
                }
            };
            let retry = retry.clamp(Duration::from_secs(60), Duration::from_secs(86_400));
            let window = StoredWindow {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
                refresh_at: now.saturating_add(i64::try_from(retry.as_secs()).unwrap_or(86_400)),
            };
            let lease = guard.lease();
            let stored = match serde_json::to_vec(&window) {
                Ok(bytes) => self.storage.store_fenced(&key, &bytes, &lease).await,
                Err(err) => Err(crate::Error::backend("json", err)),
            };
            if let Err(err) = stored {
                tracing::warn!(error = %err, "storing renewal information failed");
            }
            Some(window_times(&window))
        }
        .await;
        let _ = guard.release().await;
        result
    }
}

fn window_times(window: &StoredWindow) -> (SystemTime, SystemTime) {
    let start = unix_to_system(window.start);
    (start, unix_to_system(window.end.max(window.start)))
}

/// The ARI identifier (authority key identifier and serial) of a chain's leaf.
fn cert_id(chain_pem: &str) -> Option<CertificateIdentifier<'static>> {
    use x509_parser::extensions::ParsedExtension;
    let chain = crate::certificate::parse_chain(chain_pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })?;
    let serial = cert.tbs_certificate.raw_serial();
    Some(
        CertificateIdentifier::new(
            rustls::pki_types::Der::from_slice(aki),
            rustls::pki_types::Der::from_slice(serial),
        )
        .into_owned(),
    )
}

fn validation_failure(ty: Option<ChallengeType>, detail: String) -> OrderError {
    let err = IssueError::Temporary {
        source: format!("validation failed: {detail}").into(),
        retry_after: None,
    };
    match ty {
        Some(ty) => OrderError::Challenge(ty, err),
        None => OrderError::Other(err),
    }
}

fn problem_kind(problem: &instant_acme::Problem) -> &str {
    problem
        .r#type
        .as_deref()
        .and_then(|t| t.rsplit(':').next())
        .unwrap_or("")
}

fn is_validation_problem(problem: &instant_acme::Problem) -> bool {
    matches!(
        problem_kind(problem),
        "connection" | "dns" | "incorrectResponse" | "tls" | "unauthorized" | "caa"
    ) || problem.subproblems.iter().any(|s| {
        s.r#type.as_deref().is_some_and(|t| {
            t.ends_with(":connection")
                || t.ends_with(":incorrectResponse")
                || t.ends_with(":dns")
                || t.ends_with(":tls")
        })
    })
}

/// Maps an ACME failure to what the engine does with it.
fn map_acme_error(err: instant_acme::Error) -> IssueError {
    match err {
        instant_acme::Error::Api(problem) => {
            let kind = problem_kind(&problem).to_owned();
            match kind.as_str() {
                "rejectedIdentifier"
                | "unauthorized"
                | "malformed"
                | "unsupportedIdentifier"
                | "caa"
                | "invalidContact"
                | "unsupportedContact"
                | "externalAccountRequired"
                | "userActionRequired"
                | "badCSR"
                | "badSignatureAlgorithm"
                | "accountDoesNotExist"
                | "badRevocationReason"
                | "alreadyRevoked" => IssueError::Rejected {
                    reason: problem.to_string(),
                },
                "rateLimited" => IssueError::Temporary {
                    retry_after: Some(rate_limit_delay(problem.detail.as_deref())),
                    source: Box::new(problem),
                },
                _ => IssueError::temporary(problem),
            }
        }
        instant_acme::Error::Unsupported(what) => IssueError::Rejected {
            reason: format!("the CA does not support {what}"),
        },
        instant_acme::Error::KeyRejected | instant_acme::Error::Crypto => IssueError::Rejected {
            reason: err.to_string(),
        },
        other => IssueError::temporary(other),
    }
}

/// The pause a rate-limit problem asks for: "retry after 2025-01-02 03:04:05 UTC" when
/// the CA says so, else an hour.
fn rate_limit_delay(detail: Option<&str>) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(3600);
    let Some(detail) = detail else { return DEFAULT };
    let Some(pos) = detail.find("retry after ") else {
        return DEFAULT;
    };
    let text = &detail[pos + "retry after ".len()..];
    let stamp: String = text.chars().take(19).collect();
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    match time::PrimitiveDateTime::parse(&stamp, &format) {
        Ok(at) => {
            let at = at.assume_utc().unix_timestamp();
            let now = system_to_unix(SystemTime::now());
            Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1))
        }
        Err(_) => DEFAULT,
    }
}

fn from_acme_type(ty: &instant_acme::ChallengeType) -> Option<ChallengeType> {
    match ty {
        instant_acme::ChallengeType::Http01 => Some(ChallengeType::Http01),
        instant_acme::ChallengeType::TlsAlpn01 => Some(ChallengeType::TlsAlpn01),
        instant_acme::ChallengeType::Dns01 => Some(ChallengeType::Dns01),
        _ => None,
    }
}

fn to_acme_type(ty: ChallengeType) -> instant_acme::ChallengeType {
    match ty {
        ChallengeType::Http01 => instant_acme::ChallengeType::Http01,
        ChallengeType::TlsAlpn01 => instant_acme::ChallengeType::TlsAlpn01,
        ChallengeType::Dns01 => instant_acme::ChallengeType::Dns01,
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

    async fn renewal_window(
        &self,
        _meta: &CertificateMeta,
        chain_pem: &str,
    ) -> Option<(SystemTime, SystemTime)> {
        self.ari_window(chain_pem).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_classified() {
        let problem = |kind: &str| instant_acme::Problem {
            r#type: Some(format!("urn:ietf:params:acme:error:{kind}")),
            detail: Some("retry after 2999-01-01 00:00:00 UTC: too many".into()),
            status: Some(400),
            subproblems: Vec::new(),
        };
        for kind in ["rejectedIdentifier", "unauthorized", "malformed"] {
            let err = map_acme_error(instant_acme::Error::Api(problem(kind)));
            assert!(!err.is_retryable(), "{kind}");
        }
        match map_acme_error(instant_acme::Error::Api(problem("rateLimited"))) {
            IssueError::Temporary {
                retry_after: Some(after),
                ..
            } => assert!(after > Duration::from_secs(86_400)),
            other => panic!("{other:?}"),
        }
        assert!(map_acme_error(instant_acme::Error::Api(problem("serverInternal"))).is_retryable());
        assert_eq!(rate_limit_delay(None), Duration::from_secs(3600));
    }

    #[test]
    fn eab_key_is_not_shown() {
        let config =
            AcmeConfig::new("https://ca/dir").with_external_account("kid", b"secret-mac".to_vec());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("secret-mac") && !shown.contains("115, 101"),
            "{shown}"
        );
    }
}
