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
use crate::{Error, Locker, StorageExt, Store};

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
        format!("{}/root.crt", keys::ca_prefix(&self.config.name))
    }

    /// The root certificate's PEM, creating the CA if it does not exist yet.
    pub async fn root_pem(&self) -> Result<String, IssueError> {
        Ok(self.material().await?.root_pem.clone())
    }

    async fn material(&self) -> Result<&CaMaterial, IssueError> {
        self.material
            .get_or_try_init(|| self.load_or_create())
            .await
    }

    async fn load(&self) -> Result<Option<CaMaterial>, Error> {
        let prefix = keys::ca_prefix(&self.config.name);
        let Some(root) = self.storage.load_opt(&format!("{prefix}/root.crt")).await? else {
            return Ok(None);
        };
        let inter = self
            .storage
            .load(&format!("{prefix}/intermediate.crt"))
            .await?;
        let inter_key = Zeroizing::new(
            self.storage
                .load(&format!("{prefix}/intermediate.key"))
                .await?,
        );
        let text = |key: &str, bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|err| Error::corrupt(key, err))
        };
        let intermediate_pem = text("intermediate.crt", &inter)?;
        let chain = crate::certificate::parse_chain(&intermediate_pem)
            .map_err(|err| Error::corrupt(format!("{prefix}/intermediate.crt"), err))?;
        let info = crate::certificate::leaf_info(&chain[0])
            .map_err(|err| Error::corrupt(format!("{prefix}/intermediate.crt"), err))?;
        Ok(Some(CaMaterial {
            root_pem: text("root.crt", &root)?,
            intermediate_pem,
            intermediate_key_pem: Zeroizing::new(text("intermediate.key", &inter_key)?),
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
            Ok(None) => self.create().await,
            Err(err) => Err(err.into()),
        };
        let _ = guard.release().await;
        result
    }

    async fn create(&self) -> Result<CaMaterial, IssueError> {
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
        let prefix = keys::ca_prefix(&self.config.name);
        // The intermediate first: a reader that finds the root finds the rest.
        self.storage
            .store(
                &format!("{prefix}/intermediate.key"),
                material.intermediate_key_pem.as_bytes(),
            )
            .await?;
        self.storage
            .store(
                &format!("{prefix}/intermediate.crt"),
                material.intermediate_pem.as_bytes(),
            )
            .await?;
        self.storage
            .store(&format!("{prefix}/root.crt"), material.root_pem.as_bytes())
            .await?;
        tracing::info!(ca = %self.config.name, "created internal CA");
        Ok(material)
    }
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
