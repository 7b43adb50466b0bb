//! Listing blobs below a name prefix, page by page, and turning blob names back into
//! keys.

use std::time::SystemTime;

use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, LeaseState};
use cert_core::{Result, validate_key};
use futures::StreamExt;

use crate::storage::AzureStorage;

/// One blob of a listing.
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) modified: SystemTime,
    pub(crate) lease: Option<LeaseState>,
}

impl AzureStorage {
    /// Every blob below `blob_prefix` (which ends with `/`, or is the storage's own prefix),
    /// with its last-modified time, page by page.
    pub(crate) async fn list_blobs(
        &self,
        blob_prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, SystemTime)>> {
        let items = self.list_items(blob_prefix, limit).await?;
        Ok(items
            .into_iter()
            .map(|item| (item.name, item.modified))
            .collect())
    }

    /// [`list_blobs`](Self::list_blobs) with each blob's lease state.
    pub(crate) async fn list_items(
        &self,
        blob_prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        let client = self.client();
        let container = &client.container;
        loop {
            let page_size = limit.map_or(5000, |l| l.clamp(1, 5000)) as i32;
            let page = self
                .retry
                .run("list", || {
                    let options = BlobContainerClientListBlobsOptions {
                        prefix: if blob_prefix.is_empty() {
                            None
                        } else {
                            Some(blob_prefix.to_owned())
                        },
                        marker: marker.clone(),
                        maxresults: Some(page_size),
                        ..Default::default()
                    };
                    async move {
                        let mut pages = container.list_blobs(Some(options))?.into_pages();
                        match pages.next().await {
                            Some(page) => page?.into_model().map(Some),
                            None => Ok(None),
                        }
                    }
                })
                .await
                .map_err(|failure| self.fail(blob_prefix, failure))?;
            let Some(page) = page else { break };
            for item in page.blob_items {
                let Some(name) = item.name else { continue };
                if !name.starts_with(blob_prefix) {
                    continue; // never anything outside the prefix
                }
                let (modified, lease) = item
                    .properties
                    .map_or((None, None), |p| (p.last_modified, p.lease_state));
                out.push(Listed {
                    name,
                    modified: modified.map_or(SystemTime::UNIX_EPOCH, SystemTime::from),
                    lease,
                });
            }
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            match page.next_marker {
                Some(next) if !next.is_empty() => marker = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The keys (not blob names) below `key` by whole segments, with their times.
    pub(crate) async fn keys_below(
        &self,
        key: &str,
        limit: Option<usize>,
    ) -> Result<Vec<(String, SystemTime)>> {
        let blob_prefix = format!("{}{key}/", self.prefix);
        let skip = self.prefix.len();
        Ok(self
            .list_blobs(&blob_prefix, limit)
            .await?
            .into_iter()
            .filter_map(|(name, modified)| {
                let key = name.get(skip..)?.to_owned();
                validate_key(&key).is_ok().then_some((key, modified))
            })
            .collect())
    }
}
