//! A local certificate authority whose root and intermediate live in the shared storage,
//! so every node of a cluster issues under the same root.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::{IssueError, IssueRequest, Issued, Issuer};
use crate::certificate::KeyType;
use crate::keys;
use crate::lock::{LockOptions, lock};
use crate::record::{self, CaRecord, CaState, Layout};
use crate::{Error, Locker, Storage, StorageExt, Store};

/// How the internal CA is set up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InternalIssuerConfig {
    /// The CA's name: its storage prefix (`ca/<name>/`) and its issuer identity.
    pub name: String,
    /// Validity of the root certificate. Default: 10 years.
    pub root_lifetime: Duration,
    /// Validity of the intermediate certificate. Default: 1 year.
    pub intermediate_lifetime: Duration,
    /// Validity of issued leaf certificates. Default: 24 hours.
    pub leaf_lifetime: Duration,
    /// Key type of the root and intermediate. Default: ECDSA P-256.
    pub ca_key_type: KeyType,
}

impl Default for InternalIssuerConfig {
    fn default() -> Self {
        InternalIssuerConfig {
            name: "local".to_owned(),
            root_lifetime: Duration::from_secs(10 * 365 * 86_400),
            intermediate_lifetime: Duration::from_secs(365 * 86_400),
            leaf_lifetime: Duration::from_secs(86_400),
            ca_key_type: KeyType::EcdsaP256,
        }
    }
}

impl InternalIssuerConfig {
    /// A configuration with this CA name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A configuration issuing leaves valid for `lifetime`.
    pub fn with_leaf_lifetime(mut self, lifetime: Duration) -> Self {
        self.leaf_lifetime = lifetime;
        self
    }
}

struct CaMaterial {
    root_pem: String,
    intermediate_pem: String,
    intermediate_key_pem: Zeroizing<String>,
    intermediate_not_after: i64,
}

/// A local CA for development, tests and internal services. The root and intermediate are
/// created once per storage under a cluster lock and kept in storage; leaves are short
/// lived. Clients trust [`root_pem`](InternalIssuer::root_pem).
pub struct InternalIssuer {
    storage: Arc<dyn Store>,
    config: InternalIssuerConfig,
    material: OnceCell<CaMaterial>,
}

impl std::fmt::Debug for InternalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalIssuer")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl InternalIssuer {
    /// An internal CA kept in `storage`.
    pub fn new(storage: Arc<dyn Store>, config: InternalIssuerConfig) -> Self {
        InternalIssuer {
            storage,
            config,
            material: OnceCell::new(),
        }
    }

    /// The storage key of the root certificate (PEM).
    pub fn root_key(&self) -> String {
        record::ca_root_key(&self.config.name)
    }

    /// The root certificate's PEM, creating the CA if it does not exist yet.
    pub async fn root_pem(&self) -> Result<String, IssueError> {
        Ok(self.material().await?.root_pem.clone())
    }

    /// The root certificate's PEM of the internal CA `ca_name` held in `storage`, for
    /// clients to trust, without creating a CA: `Ok(None)` when the storage holds none.
    /// Works on every backend (a file `ca/<name>/root.crt` exists only on file storage)
    /// and needs no [`InternalIssuer`] handle; the `certstore ca-root` command prints it.
    /// A CA that is stored but unusable is an [`Error::Corrupt`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use cert_core::{InternalIssuer, InternalIssuerConfig, MemoryStorage};
    ///
    /// let storage = Arc::new(MemoryStorage::new());
    /// assert_eq!(InternalIssuer::load_root(storage.as_ref(), "local").await?, None);
    /// let ca = InternalIssuer::new(storage.clone(), InternalIssuerConfig::default());
    /// let created = ca.root_pem().await?; // creates the CA
    /// assert_eq!(InternalIssuer::load_root(storage.as_ref(), "local").await?, Some(created));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load_root(storage: &dyn Storage, ca_name: &str) -> crate::Result<Option<String>> {
        match record::load_ca(storage, ca_name).await? {
            None => Ok(None),
            Some(CaState::Valid(record, _)) => Ok(Some(record.root_pem)),
            Some(CaState::Broken { reason }) => Err(Error::corrupt(
                record::ca_bundle_key(ca_name),
                unusable(ca_name, &reason),
            )),
        }
    }

    async fn material(&self) -> Result<&CaMaterial, IssueError> {
        self.material
            .get_or_try_init(|| self.load_or_create())
            .await
    }

    /// The CA from storage: `None` when there is none, an error when it is there but
    /// unusable (a new CA would change the root every client trusts, so it is never
    /// replaced silently).
    async fn load(&self) -> Result<Option<CaMaterial>, IssueError> {
        let name = &self.config.name;
        let (record, layout) = match record::load_ca(self.storage.as_ref(), name).await? {
            None => return Ok(None),
            Some(CaState::Valid(record, layout)) => (record, layout),
            Some(CaState::Broken { reason }) => {
                return Err(IssueError::Rejected {
                    reason: unusable(name, &reason),
                });
            }
        };
        // A save interrupted after the bundle leaves the root's copy missing: restore it,
        // it is the file users hand to their clients.
        if layout == Layout::Bundle
            && self.storage.load_opt(&self.root_key()).await?.as_deref()
                != Some(record.root_pem.as_bytes())
            && let Err(err) = self
                .storage
                .store(&self.root_key(), record.root_pem.as_bytes())
                .await
        {
            tracing::warn!(ca = %name, error = %err, "restoring the root certificate copy failed");
        }
        let chain = crate::certificate::parse_chain(&record.intermediate_pem)
            .map_err(|err| Error::corrupt(record::ca_bundle_key(name), err))?;
        let info = crate::certificate::leaf_info(&chain[0])
            .map_err(|err| Error::corrupt(record::ca_bundle_key(name), err))?;
        Ok(Some(CaMaterial {
            root_pem: record.root_pem,
            intermediate_pem: record.intermediate_pem,
            intermediate_key_pem: record.intermediate_key_pem,
            intermediate_not_after: info.not_after,
        }))
    }

    async fn load_or_create(&self) -> Result<CaMaterial, IssueError> {
        if let Some(material) = self.load().await? {
            return Ok(material);
        }
        let locker: Arc<dyn Locker> = self.storage.clone();
        let guard = lock(
            locker,
            &keys::ca_lock(&self.config.name),
            &LockOptions::default(),
        )
        .await?;
        // Another node may have created it while this one waited.
        let result = match self.load().await {
            Ok(Some(material)) => Ok(material),
            Ok(None) => self.create(&guard.lease()).await,
            Err(err) => Err(err),
        };
        let _ = guard.release().await;
        result
    }

    async fn create(&self, lease: &crate::Lease) -> Result<CaMaterial, IssueError> {
        let now = OffsetDateTime::now_utc();
        let rejected = |err: rcgen::Error| IssueError::Rejected {
            reason: format!("cannot create the internal CA: {err}"),
        };
        let root_key = self
            .config
            .ca_key_type
            .generate()
            .map_err(IssueError::temporary)?;
        let mut root_params = CertificateParams::default();
        root_params.distinguished_name = ca_name(&format!("{} Root CA", self.config.name));
        root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root_params.not_before = now - time::Duration::minutes(5);
        root_params.not_after = now + self.config.root_lifetime;
        root_params.serial_number = Some(random_serial());
        let root = root_params.self_signed(&root_key).map_err(rejected)?;
        let root_issuer = rcgen::Issuer::new(root_params, root_key);

        let inter_key = self
            .config
            .ca_key_type
            .generate()
            .map_err(IssueError::temporary)?;
        let mut inter_params = CertificateParams::default();
        inter_params.distinguished_name = ca_name(&format!("{} Intermediate CA", self.config.name));
        inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        inter_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        inter_params.not_before = now - time::Duration::minutes(5);
        let inter_lifetime = self
            .config
            .intermediate_lifetime
            .min(self.config.root_lifetime);
        inter_params.not_after = now + inter_lifetime;
        inter_params.serial_number = Some(random_serial());
        inter_params.use_authority_key_identifier_extension = true;
        let inter = inter_params
            .signed_by(&inter_key, &root_issuer)
            .map_err(rejected)?;

        let material = CaMaterial {
            root_pem: root.pem(),
            intermediate_pem: inter.pem(),
            intermediate_key_pem: Zeroizing::new(inter_key.serialize_pem()),
            intermediate_not_after: (now + inter_lifetime).unix_timestamp(),
        };
        // One bundle is the commit point: a crash leaves no CA or the whole CA.
        let record = CaRecord {
            root_pem: material.root_pem.clone(),
            intermediate_pem: material.intermediate_pem.clone(),
            intermediate_key_pem: material.intermediate_key_pem.clone(),
        };
        record::save_ca(
            self.storage.as_ref(),
            &self.config.name,
            &record,
            Some(lease),
        )
        .await?;
        tracing::info!(ca = %self.config.name, "created internal CA");
        Ok(material)
    }
}

/// Why a stored CA cannot be used, and what to do about it.
fn unusable(ca_name: &str, reason: &str) -> String {
    format!(
        "the internal CA {ca_name:?} in storage is unusable ({reason}); remove {} to create \
         a new CA",
        keys::ca_prefix(ca_name)
    )
}

fn ca_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "certstore");
    name.push(DnType::CommonName, common_name);
    name
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = crate::LockToken::generate()
            .as_str()
            .as_bytes()
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .unwrap_or_default();
    }
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

#[async_trait]
impl Issuer for InternalIssuer {
    fn id(&self) -> String {
        self.config.name.clone()
    }

    async fn issue(&self, request: IssueRequest<'_>) -> Result<Issued, IssueError> {
        let material = self.material().await?;
        let rejected = |reason: String| IssueError::Rejected { reason };
        if request.names.is_empty() {
            return Err(rejected("no names to issue for".into()));
        }
        let key = KeyPair::from_pem(&material.intermediate_key_pem)
            .map_err(|err| rejected(format!("internal CA key: {err}")))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&material.intermediate_pem, key)
            .map_err(|err| rejected(format!("internal CA certificate: {err}")))?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_pem(request.public_key_pem)
            .map_err(|err| rejected(format!("public key: {err}")))?;
        let mut params = CertificateParams::new(request.names.to_vec())
            .map_err(|err| rejected(format!("names: {err}")))?;
        let now = OffsetDateTime::now_utc();
        // Backdated a little for clocks running behind, but never by a noticeable part
        // of a short lifetime (the renewal window is a fraction of the validity period).
        let backdate = Duration::from_secs(60).min(self.config.leaf_lifetime / 10);
        params.not_before = now - backdate;
        let not_after = (now + self.config.leaf_lifetime).unix_timestamp();
        params.not_after =
            OffsetDateTime::from_unix_timestamp(not_after.min(material.intermediate_not_after))
                .map_err(|err| rejected(format!("validity: {err}")))?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, request.names[0].as_str());
        params.distinguished_name = dn;
        let leaf = params
            .signed_by(&public_key, &issuer)
            .map_err(|err| rejected(format!("signing: {err}")))?;
        Ok(Issued::new(format!(
            "{}{}",
            leaf.pem(),
            material.intermediate_pem
        )))
    }
}
