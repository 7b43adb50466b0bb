//! The internal CA's record: a bundle (root, intermediate and its key) as the commit
//! point, and the per-part copies beside it.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{BUNDLE, Layout, load_part, put, secret_text, text};
use crate::certificate::certified_key_from_pem;
use crate::{Error, Lease, Result, Storage, keys};

/// The `format` of an internal CA bundle written by this version.
pub const CA_FORMAT: &str = "certstore-ca/1";

/// The internal CA's record: its root certificate and the intermediate that signs leaves.
/// The root's private key is not kept: the root only ever signs the intermediate, once.
#[derive(Clone, Serialize, Deserialize)]
pub struct CaRecord {
    /// The root certificate, PEM.
    pub root_pem: String,
    /// The intermediate certificate, PEM.
    pub intermediate_pem: String,
    /// The intermediate's private key, PEM (zeroized when dropped, never printed).
    #[serde(with = "secret_text")]
    pub intermediate_key_pem: Zeroizing<String>,
}

impl fmt::Debug for CaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaRecord")
            .field("intermediate_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct CaBundle {
    format: String,
    #[serde(flatten)]
    record: CaRecord,
}

/// The key of an internal CA's bundle.
pub fn ca_bundle_key(ca_name: &str) -> String {
    format!("{}/ca.{BUNDLE}", keys::ca_prefix(ca_name))
}

/// The key of an internal CA's root certificate copy (`ca/<ca>/root.crt`), the file users
/// hand to their clients.
pub fn ca_root_key(ca_name: &str) -> String {
    format!("{}/root.crt", keys::ca_prefix(ca_name))
}

fn ca_part(ca_name: &str, file: &str) -> String {
    format!("{}/{file}", keys::ca_prefix(ca_name))
}

impl CaRecord {
    /// Checks that the intermediate's key matches it and that the root parses.
    fn check(&self) -> std::result::Result<(), String> {
        certified_key_from_pem(&self.intermediate_pem, &self.intermediate_key_pem)
            .map_err(|err| format!("the intermediate and its key: {err}"))?;
        crate::certificate::parse_chain(&self.root_pem)
            .map_err(|err| format!("the root: {err}"))?;
        Ok(())
    }
}

/// What [`load_ca`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CaState {
    /// A usable CA, and how it was stored.
    Valid(CaRecord, Layout),
    /// A CA record that is there but unusable, with the reason.
    Broken {
        /// Why it cannot be used.
        reason: String,
    },
}

/// Loads the internal CA `ca_name`: the bundle, or the three values older versions wrote
/// (root last, so a root means the rest was written). `None` when there is no CA.
pub async fn load_ca(storage: &dyn Storage, ca_name: &str) -> Result<Option<CaState>> {
    let key = ca_bundle_key(ca_name);
    match load_part(storage, &key).await? {
        Err(reason) => return Ok(Some(CaState::Broken { reason })),
        Ok(Some(bytes)) => {
            let bytes = Zeroizing::new(bytes);
            let state = match serde_json::from_slice::<CaBundle>(&bytes) {
                Err(err) => CaState::Broken {
                    reason: format!("{key} does not decode: {err}"),
                },
                Ok(bundle) if bundle.format != CA_FORMAT => CaState::Broken {
                    reason: format!("{key} has the unknown format {:?}", bundle.format),
                },
                Ok(bundle) => match bundle.record.check() {
                    Ok(()) => CaState::Valid(bundle.record, Layout::Bundle),
                    Err(reason) => CaState::Broken {
                        reason: format!("{key}: {reason}"),
                    },
                },
            };
            return Ok(Some(state));
        }
        Ok(None) => {}
    }
    let root_key = ca_root_key(ca_name);
    let root = match load_part(storage, &root_key).await? {
        Ok(Some(root)) => root,
        Ok(None) => return Ok(None),
        Err(reason) => return Ok(Some(CaState::Broken { reason })),
    };
    let mut parts = Vec::with_capacity(2);
    for file in ["intermediate.crt", "intermediate.key"] {
        let key = ca_part(ca_name, file);
        match load_part(storage, &key).await? {
            Ok(Some(bytes)) => parts.push(Zeroizing::new(bytes)),
            Ok(None) => {
                return Ok(Some(CaState::Broken {
                    reason: format!("{key} is missing"),
                }));
            }
            Err(reason) => return Ok(Some(CaState::Broken { reason })),
        }
    }
    let decoded = (|| {
        Ok::<_, String>(CaRecord {
            root_pem: text(&root_key, root)?,
            intermediate_pem: text("intermediate.crt", parts[0].to_vec())?,
            intermediate_key_pem: Zeroizing::new(text("intermediate.key", parts[1].to_vec())?),
        })
    })();
    Ok(Some(match decoded.and_then(|r| r.check().map(|()| r)) {
        Ok(record) => CaState::Valid(record, Layout::Parts),
        Err(reason) => CaState::Broken { reason },
    }))
}

/// Saves the internal CA `ca_name`: the bundle first (the commit point), then the copies
/// (`intermediate.key`, `intermediate.crt`, and `root.crt` last). Fenced by `lease` when
/// given, as [`save_certificate`](super::save_certificate).
pub async fn save_ca(
    storage: &dyn Storage,
    ca_name: &str,
    record: &CaRecord,
    lease: Option<&Lease>,
) -> Result<()> {
    let bundle = CaBundle {
        format: CA_FORMAT.to_owned(),
        record: record.clone(),
    };
    let bytes =
        Zeroizing::new(serde_json::to_vec(&bundle).map_err(|err| Error::backend("json", err))?);
    put(storage, &ca_bundle_key(ca_name), &bytes, lease).await?;
    write_ca_copies(storage, ca_name, record, lease).await
}

/// Writes the per-part copies of a CA record.
pub async fn write_ca_copies(
    storage: &dyn Storage,
    ca_name: &str,
    record: &CaRecord,
    lease: Option<&Lease>,
) -> Result<()> {
    put(
        storage,
        &ca_part(ca_name, "intermediate.key"),
        record.intermediate_key_pem.as_bytes(),
        lease,
    )
    .await?;
    put(
        storage,
        &ca_part(ca_name, "intermediate.crt"),
        record.intermediate_pem.as_bytes(),
        lease,
    )
    .await?;
    put(
        storage,
        &ca_root_key(ca_name),
        record.root_pem.as_bytes(),
        lease,
    )
    .await
}
