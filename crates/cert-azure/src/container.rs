//! Requests about the container itself: creating it and checking that it exists, signed
//! with an account SAS when an account key is at hand.

use std::time::{Duration, SystemTime};

use azure_storage_blob::BlobContainerClient;
use cert_core::Result;

use crate::config::{Auth, client_options, config_error};
use crate::storage::AzureStorage;

impl AzureStorage {
    /// Creates the container if it does not exist. With an account key this signs an
    /// account SAS for the one request; with a container SAS it needs a SAS allowed to
    /// create containers.
    pub async fn create_container_if_missing(&self) -> Result<()> {
        match self.account_signed_container()? {
            Some(container) => self.create_with(&container).await,
            None => self.create_with(&self.client().container).await,
        }
    }

    /// With an account key, a client for the container whose requests carry an account
    /// SAS (good for one hour): what container-level requests need, which a container SAS
    /// may not allow. `None` with other credentials.
    fn account_signed_container(&self) -> Result<Option<BlobContainerClient>> {
        let Auth::Key(key) = &self.inner.auth else {
            return Ok(None);
        };
        let mut url = self.inner.container_url.clone();
        url.set_query(Some(&key.account_sas(
            url.scheme() == "https",
            SystemTime::now(),
            Duration::from_secs(3600),
        )));
        BlobContainerClient::new(url, None, Some(client_options()))
            .map(Some)
            .map_err(|err| config_error(err.to_string()))
    }

    async fn create_with(&self, container: &BlobContainerClient) -> Result<()> {
        match self
            .retry
            .run("create container", || container.create(None))
            .await
        {
            Ok(_) => Ok(()),
            Err(failure) if failure.status() == Some(409) => Ok(()),
            Err(failure) => Err(failure.into_error(&self.inner.container, self.credential())),
        }
    }

    /// Whether the container exists: a request for its properties. A missing container
    /// otherwise shows up as missing keys, so tools check it first.
    pub async fn container_exists(&self) -> Result<bool> {
        // A container SAS may not read the container's own properties: with the account
        // key, the one request is signed with an account SAS, as for creating it.
        match self.account_signed_container()? {
            Some(container) => self.exists_with(&container).await,
            None => self.exists_with(&self.client().container).await,
        }
    }

    async fn exists_with(&self, container: &BlobContainerClient) -> Result<bool> {
        match self
            .retry
            .run("container properties", || container.get_properties(None))
            .await
        {
            Ok(_) => Ok(true),
            Err(failure) if failure.status() == Some(404) => Ok(false),
            Err(failure) => Err(failure.into_error(&self.inner.container, self.credential())),
        }
    }
}
