//! The ACME account of an [`AcmeIssuer`]: loaded from storage or created once for the
//! whole cluster under the account lock, forgotten when the CA no longer knows it, and
//! used to revoke certificates.

use std::sync::Arc;
use std::time::Instant;

use instant_acme::{
    Account, AccountCredentials, ExternalAccountKey, NewAccount, RevocationReason,
    RevocationRequest,
};
use zeroize::Zeroizing;

use super::AcmeIssuer;
use super::error::map_acme_error;
use super::http::AcmeHttp;
use super::step::{Progress, Retry, Step};
use crate::issuer::IssueError;
use crate::lock::{LockOptions, lock};
use crate::{Locker, StorageExt, keys};

impl AcmeIssuer {
    fn account_key(&self) -> String {
        keys::acme_account(
            &self.config.directory_url,
            self.config.email.as_deref().unwrap_or(""),
        )
    }

    /// The HTTP client of this issuer, set up on first use.
    pub(super) fn http(&self) -> Result<AcmeHttp, IssueError> {
        if let Some(http) = self.http.get() {
            return Ok(http.clone());
        }
        let refused = |reason: String| IssueError::Rejected {
            reason: format!("cannot set up the ACME client: {reason}"),
        };
        let root = match &self.config.root_pem_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|err| refused(format!("reading {}: {err}", path.display())))?,
            ),
            None => None,
        };
        let http = AcmeHttp::new(root.as_deref()).map_err(refused)?;
        Ok(self.http.get_or_init(|| http).clone())
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, IssueError> {
        Ok(Account::builder_with_http(Box::new(self.http()?)))
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
    pub(super) async fn forget_account(&self, stale: &Account) -> Result<(), IssueError> {
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
        let credentials = || -> Result<AccountCredentials, IssueError> {
            serde_json::from_slice(&bytes)
                .map_err(|err| IssueError::Storage(crate::Error::corrupt(key, err)))
        };
        let mut progress = Progress::new(&[]);
        progress.step = Step::Account;
        let mut retry = Retry::until(Instant::now() + self.config.order_timeout);
        loop {
            match self.builder()?.from_credentials(credentials()?).await {
                Ok(account) => return Ok(Some(account)),
                Err(err) if retry.again(&err, &mut progress).await => {}
                Err(err) => return Err(map_acme_error(err)),
            }
        }
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
        let mut progress = Progress::new(&[]);
        progress.step = Step::Account;
        let mut retry = Retry::until(Instant::now() + self.config.order_timeout);
        let (account, credentials) = loop {
            let created = self
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
                .await;
            match created {
                Ok(created) => break created,
                Err(err) if retry.again(&err, &mut progress).await => {}
                Err(err) => return Err(map_acme_error(err)),
            }
        };
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
}
