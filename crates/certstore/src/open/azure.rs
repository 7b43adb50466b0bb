//! Azure Blob Storage credentials for an `azblob://` URL: a connection string, a SAS
//! token or an account key from the environment, or Azurite's development account.

use super::{AZURE_CONNECTION_STRING_ENV, AZURE_KEY_ENV, AZURE_SAS_ENV, OpenError};
use crate::url::StorageUrl;

pub(super) fn azure(
    url: &StorageUrl,
    account: &str,
    container: &str,
    endpoint: Option<&str>,
) -> Result<cert_azure::AzureStorage, OpenError> {
    use zeroize::Zeroizing;
    let shown = url.redacted();
    let config = |reason: String| OpenError::Config {
        url: shown.clone(),
        reason,
    };
    let storage_error = |source: cert_core::Error| OpenError::Storage {
        url: shown.clone(),
        source,
    };
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Zeroizing::new)
    };
    let default_endpoint = || match endpoint {
        Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
        None if account == cert_azure::AZURITE_ACCOUNT => {
            format!("http://127.0.0.1:10000/{account}")
        }
        None => format!("https://{account}.blob.core.windows.net"),
    };
    if let Some(text) = env(AZURE_CONNECTION_STRING_ENV) {
        let parts = parse_connection_string(&text);
        let get = |name: &str| {
            parts
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if let Some(name) = get("AccountName")
            && name != account
        {
            return Err(config(format!(
                "{AZURE_CONNECTION_STRING_ENV} is for account {name:?}, not {account:?}"
            )));
        }
        let endpoint = match (endpoint, get("BlobEndpoint")) {
            (Some(endpoint), _) => endpoint.trim_end_matches('/').to_owned(),
            (None, Some(blob)) => blob.trim_end_matches('/').to_owned(),
            (None, None) => {
                let protocol = get("DefaultEndpointsProtocol").unwrap_or("https");
                let suffix = get("EndpointSuffix").unwrap_or("core.windows.net");
                format!("{protocol}://{account}.blob.{suffix}")
            }
        };
        if let Some(key) = get("AccountKey") {
            return cert_azure::AzureStorage::with_account_key(&endpoint, container, account, key)
                .map_err(storage_error);
        }
        if let Some(sas) = get("SharedAccessSignature") {
            let sas_url = Zeroizing::new(format!(
                "{endpoint}/{container}?{}",
                sas.trim_start_matches('?')
            ));
            return cert_azure::AzureStorage::with_sas_url(&sas_url).map_err(storage_error);
        }
        return Err(config(format!(
            "{AZURE_CONNECTION_STRING_ENV} has neither AccountKey nor SharedAccessSignature"
        )));
    }
    let endpoint = default_endpoint();
    if let Some(sas) = env(AZURE_SAS_ENV) {
        let sas_url = Zeroizing::new(format!(
            "{endpoint}/{container}?{}",
            sas.trim().trim_start_matches('?')
        ));
        return cert_azure::AzureStorage::with_sas_url(&sas_url).map_err(storage_error);
    }
    if let Some(key) = env(AZURE_KEY_ENV) {
        return cert_azure::AzureStorage::with_account_key(
            &endpoint,
            container,
            account,
            key.trim(),
        )
        .map_err(storage_error);
    }
    if account == cert_azure::AZURITE_ACCOUNT {
        return cert_azure::AzureStorage::azurite(&endpoint, container).map_err(storage_error);
    }
    Err(config(format!(
        "no Azure credentials: set {AZURE_CONNECTION_STRING_ENV}, {AZURE_SAS_ENV} or {AZURE_KEY_ENV}"
    )))
}

/// `Name=value;Name=value` pairs of an Azure connection string (values may contain `=`).
fn parse_connection_string(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}
