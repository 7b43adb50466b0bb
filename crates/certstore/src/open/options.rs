//! [`OpenOptions`] and the environment variables that [`open`](fn@crate::open) reads.

use std::path::PathBuf;

/// The environment variable holding the current encryption key (base64 of 32 bytes).
pub const KEY_ENV: &str = "CERTSTORE_KEY";

/// The environment variable holding previous encryption keys that still open values
/// (base64, separated by commas or white space), during a key rotation.
pub const PREVIOUS_KEYS_ENV: &str = "CERTSTORE_PREVIOUS_KEYS";

/// Set to `1` to accept key files that their group or others may read or write (see
/// [`OpenOptions::allow_open_key_file`]). Key files are otherwise refused in that state,
/// as ssh refuses such private keys.
#[cfg(feature = "encrypted")]
pub(crate) const KEY_FILE_INSECURE_ENV: &str = "CERTSTORE_KEY_FILE_INSECURE";

/// The Azure connection string variable (`AccountName=...;AccountKey=...` or
/// `...;SharedAccessSignature=...`).
pub const AZURE_CONNECTION_STRING_ENV: &str = "AZURE_STORAGE_CONNECTION_STRING";
/// The Azure container SAS token variable (`sv=...&sig=...`).
pub const AZURE_SAS_ENV: &str = "AZURE_STORAGE_SAS_TOKEN";
/// The Azure account key variable (base64).
pub const AZURE_KEY_ENV: &str = "AZURE_STORAGE_KEY";

/// How [`open`](fn@crate::open) finds keys and what it may create.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// A file holding the current encryption key, used instead of [`KEY_ENV`]: base64
    /// text of 32 bytes, or 32 raw binary bytes (see `cert_encrypted::SecretKey::from_file`
    /// for how the two are told apart; a 32-character passphrase is refused). The file
    /// must not be readable or writable by its group or others unless
    /// [`allow_open_key_file`](OpenOptions::allow_open_key_file) is set.
    pub key_file: Option<PathBuf>,
    /// Files holding previous keys, added to those in [`PREVIOUS_KEYS_ENV`].
    pub previous_key_files: Vec<PathBuf>,
    /// Create the S3 bucket or Azure container when missing (other backends create what
    /// they need on first write).
    pub create: bool,
    /// Let `encrypted+` storages read values that were stored unencrypted (and re-key
    /// seal them); see `Encrypted::with_plaintext_migration`.
    pub plaintext_migration: bool,
    /// Accept key files that their group or others may read or write. Also turned on by
    /// the environment variable `CERTSTORE_KEY_FILE_INSECURE=1`, for secret mounts whose
    /// mode cannot be changed (prefer a mode of `0400`, such as Kubernetes'
    /// `defaultMode: 0400`).
    pub allow_open_key_file: bool,
}

impl OpenOptions {
    /// Uses this key file for the current key.
    pub fn with_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// Adds a previous key file.
    pub fn with_previous_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.previous_key_files.push(path.into());
        self
    }

    /// Creates a missing bucket or container.
    pub fn with_create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Accepts key files that their group or others may read or write.
    pub fn with_allow_open_key_file(mut self, on: bool) -> Self {
        self.allow_open_key_file = on;
        self
    }

    /// Accepts unencrypted values in an `encrypted+` storage.
    pub fn with_plaintext_migration(mut self, on: bool) -> Self {
        self.plaintext_migration = on;
        self
    }
}
