//! How an [`AzureStorage`] reaches its container: the constructors for each kind of
//! credential (token, SAS URL, account key, Azurite), the container URL, the prefix and
//! retry settings, and the blob client with its renewal of signatures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Url};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use cert_core::{Error, Result, validate_prefix};
use parking_lot::RwLock;

use crate::error::{BACKEND, RetryConfig, ServiceError};
use crate::sas::{self, AccountKey};
use crate::storage::{AzureStorage, Inner};

/// The Azurite emulator's well-known development account key (published by Microsoft).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Azurite emulator's well-known development account name.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// How long a signature made from an account key is valid; it is renewed at half-life.
const SAS_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How requests are authorized.
#[derive(Clone)]
pub(crate) enum Auth {
    Token(Arc<dyn TokenCredential>),
    Sas(String),
    Key(AccountKey),
}

impl Auth {
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Auth::Token(_) => "token credential",
            Auth::Sas(_) => "SAS token",
            Auth::Key(_) => "account key",
        }
    }
}

/// The container client in use and, for an account key, when to sign anew.
pub(crate) struct Client {
    pub(crate) container: BlobContainerClient,
    renew_at: Option<Instant>,
}

pub(crate) fn config_error(message: impl Into<String>) -> Error {
    Error::backend(BACKEND, ServiceError::new(message.into()))
}

fn parse_url(url: &str) -> Result<Url> {
    let parsed = Url::parse(url)
        .map_err(|err| config_error(format!("invalid URL {}: {err}", sas::redact(url))))?;
    if parsed.cannot_be_a_base() || !matches!(parsed.scheme(), "http" | "https") {
        return Err(config_error(format!(
            "not an http(s) URL: {}",
            sas::redact(url)
        )));
    }
    Ok(parsed)
}

fn container_url(account_url: &str, container: &str) -> Result<Url> {
    if container.is_empty() || container.contains('/') {
        return Err(config_error(format!(
            "invalid container name {container:?}"
        )));
    }
    let mut url = parse_url(account_url)?;
    url.set_query(None);
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{path}/{container}"));
    Ok(url)
}

pub(crate) fn client_options() -> BlobContainerClientOptions {
    BlobContainerClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        },
        ..BlobContainerClientOptions::default()
    }
}

fn make_client(container_url: &Url, container: &str, auth: &Auth) -> Result<Client> {
    let mut url = container_url.clone();
    let (credential, renew_at) = match auth {
        Auth::Token(credential) => (Some(Arc::clone(credential)), None),
        Auth::Sas(sas) => {
            url.set_query(Some(sas));
            (None, None)
        }
        Auth::Key(key) => {
            url.set_query(Some(&key.container_sas(
                container,
                url.scheme() == "https",
                SystemTime::now(),
                SAS_LIFETIME,
            )));
            (None, Some(Instant::now() + SAS_LIFETIME / 2))
        }
    };
    let container = BlobContainerClient::new(url, credential, Some(client_options()))
        .map_err(|err| config_error(format!("cannot build the blob client: {err}")))?;
    Ok(Client {
        container,
        renew_at,
    })
}

impl AzureStorage {
    fn build(container_url: Url, container: String, auth: Auth) -> Result<Self> {
        let client = make_client(&container_url, &container, &auth)?;
        Ok(AzureStorage {
            inner: Arc::new(Inner {
                container_url,
                container,
                auth,
                client: RwLock::new(Arc::new(client)),
            }),
            prefix: String::new(),
            retry: RetryConfig::default(),
        })
    }

    /// A storage in `container` of the account at `account_url`
    /// (`https://ACCOUNT.blob.core.windows.net`), authorized with an Entra ID token
    /// credential, for example `azure_identity::DeveloperToolsCredential` or a managed
    /// identity credential. The URL must use HTTPS.
    pub fn with_token_credential(
        account_url: &str,
        container: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self> {
        let url = container_url(account_url, container)?;
        Self::build(url, container.to_owned(), Auth::Token(credential))
    }

    /// A storage in the container named by a SAS URL
    /// (`https://ACCOUNT.blob.core.windows.net/CONTAINER?sv=...&sig=...`). The SAS needs
    /// read, add, create, write, delete and list permissions on the container.
    pub fn with_sas_url(container_sas_url: &str) -> Result<Self> {
        let mut url = parse_url(container_sas_url)?;
        let sas = url.query().unwrap_or_default().to_owned();
        if !sas.contains("sig=") {
            return Err(config_error("the SAS URL has no signature (sig=)"));
        }
        url.set_query(None);
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        let container = path.rsplit('/').next().unwrap_or_default().to_owned();
        if container.is_empty() {
            return Err(config_error("the SAS URL names no container"));
        }
        Self::build(url, container, Auth::Sas(sas))
    }

    /// A storage in `container` of the account at `account_url`, authorized with the
    /// account's name and (base64) key: requests carry a service SAS for the container
    /// signed from the key, renewed every 12 hours.
    pub fn with_account_key(
        account_url: &str,
        container: &str,
        account: &str,
        key_base64: &str,
    ) -> Result<Self> {
        let key =
            AccountKey::new(account, key_base64).map_err(|err| Error::backend(BACKEND, err))?;
        let url = container_url(account_url, container)?;
        Self::build(url, container.to_owned(), Auth::Key(key))
    }

    /// A storage in `container` of the Azurite emulator's development account, at
    /// `endpoint` (`http://127.0.0.1:10000/devstoreaccount1`).
    pub fn azurite(endpoint: &str, container: &str) -> Result<Self> {
        Self::with_account_key(endpoint, container, AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY)
    }

    /// The same storage with every key below `prefix` (a valid key, or `""`).
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        validate_prefix(prefix)?;
        self.prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(self)
    }

    /// The same storage with another retry policy.
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// The retry policy in use.
    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }

    /// The container URL with the SAS requests currently carry, for handing to other tools
    /// (`None` with a token credential). It contains a signature: treat it as a secret.
    pub fn signed_container_url(&self) -> Option<String> {
        let mut url = self.inner.container_url.clone();
        match &self.inner.auth {
            Auth::Token(_) => return None,
            Auth::Sas(sas) => url.set_query(Some(sas)),
            Auth::Key(key) => url.set_query(Some(&key.container_sas(
                &self.inner.container,
                url.scheme() == "https",
                SystemTime::now(),
                SAS_LIFETIME,
            ))),
        }
        Some(url.to_string())
    }

    pub(crate) fn credential(&self) -> &'static str {
        self.inner.auth.describe()
    }

    pub(crate) fn client(&self) -> Arc<Client> {
        let current = Arc::clone(&self.inner.client.read());
        match current.renew_at {
            Some(at) if Instant::now() >= at => {
                match make_client(
                    &self.inner.container_url,
                    &self.inner.container,
                    &self.inner.auth,
                ) {
                    Ok(fresh) => {
                        let fresh = Arc::new(fresh);
                        *self.inner.client.write() = Arc::clone(&fresh);
                        fresh
                    }
                    Err(_) => current,
                }
            }
            _ => current,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_hides_keys_and_signatures() {
        let s = AzureStorage::azurite("http://127.0.0.1:1/devstoreaccount1", "box").unwrap();
        let text = format!("{s:?}");
        assert!(text.contains("account key"), "{text}");
        assert!(!text.contains(&AZURITE_ACCOUNT_KEY[..20]), "{text}");
        assert!(!text.contains("sig="), "{text}");
        let sas =
            AzureStorage::with_sas_url("https://a.blob.core.windows.net/box?sv=1&sig=TOPSECRET")
                .unwrap();
        let text = format!("{sas:?}");
        assert!(!text.contains("TOPSECRET"), "{text}");
        assert!(text.contains("/box"), "{text}");
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(AzureStorage::with_sas_url("https://a.blob.core.windows.net/box").is_err());
        assert!(AzureStorage::with_sas_url("not a url").is_err());
        assert!(AzureStorage::azurite("http://127.0.0.1:1/x", "a/b").is_err());
        assert!(AzureStorage::with_account_key("http://h/x", "c", "a", "!!").is_err());
        let s = AzureStorage::azurite("http://127.0.0.1:1/devstoreaccount1", "box").unwrap();
        assert!(s.clone().with_prefix("a/").is_err());
        let s = s.with_prefix("a/b").unwrap();
        assert_eq!(s.data_name("k"), "a/b/k");
        assert_eq!(s.lock_name("l/m"), "a/b/.certstore-locks/l/m");
    }
}
