//! The key ring of an `encrypted+` URL: the current key from a key file or
//! [`KEY_ENV`], previous keys from [`PREVIOUS_KEYS_ENV`] and key files.

use super::options::KEY_FILE_INSECURE_ENV;
use super::{KEY_ENV, OpenError, OpenOptions, PREVIOUS_KEYS_ENV};

/// Whether key files open to their group or others are accepted: by the options, or by
/// [`KEY_FILE_INSECURE_ENV`] set to `1` (or `true`, `yes`).
fn open_key_files_allowed(options: &OpenOptions) -> bool {
    options.allow_open_key_file
        || std::env::var(KEY_FILE_INSECURE_ENV)
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Reads a key file, naming `what` (the current or a previous key) in errors.
fn key_from_file(
    path: &std::path::Path,
    allow_open: bool,
    what: &str,
) -> Result<cert_encrypted::SecretKey, OpenError> {
    use cert_encrypted::{KeyError, SecretKey};
    let read = if allow_open {
        SecretKey::from_file_allowing_open_mode(path)
    } else {
        SecretKey::from_file(path)
    };
    read.map_err(|err| {
        let hint = match err {
            KeyError::TooOpen { .. } => format!(
                " (or set {KEY_FILE_INSECURE_ENV}=1 to accept it, for a secret mount whose mode cannot be changed)"
            ),
            _ => String::new(),
        };
        OpenError::Key(format!("cannot use the {what} key file: {err}{hint}"))
    })
}

/// The error for an `encrypted+` URL opened without any key.
fn missing_key() -> OpenError {
    OpenError::Key(format!(
        "an encrypted+ storage needs a key: set {KEY_ENV} (base64 of 32 bytes) or give a key \
         file (`OpenOptions::key_file`)"
    ))
}

pub(super) fn key_ring(options: &OpenOptions) -> Result<cert_encrypted::KeyRing, OpenError> {
    use cert_encrypted::{KeyRing, SecretKey};
    let allow_open = open_key_files_allowed(options);
    let current = match &options.key_file {
        Some(path) => key_from_file(path, allow_open, "current")?,
        None => match std::env::var(KEY_ENV) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                SecretKey::from_base64(&text).map_err(|err| {
                    OpenError::Key(format!(
                        "{KEY_ENV} is not a usable key ({err}); make one with `head -c 32 /dev/urandom | base64`"
                    ))
                })?
            }
            Err(_) => return Err(missing_key()),
        },
    };
    let mut ring = KeyRing::new(current);
    if let Ok(text) = std::env::var(PREVIOUS_KEYS_ENV) {
        let text = zeroize::Zeroizing::new(text);
        for (n, part) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let key = SecretKey::from_base64(part).map_err(|err| {
                OpenError::Key(format!(
                    "key number {} of {PREVIOUS_KEYS_ENV} is not usable ({err})",
                    n + 1
                ))
            })?;
            ring = ring
                .with_previous(key)
                .map_err(|err| OpenError::Key(format!("{PREVIOUS_KEYS_ENV}: {err}")))?;
        }
    }
    for path in &options.previous_key_files {
        let key = key_from_file(path, allow_open, "previous")?;
        ring = ring
            .with_previous(key)
            .map_err(|err| OpenError::Key(format!("previous key file: {err}")))?;
    }
    Ok(ring)
}

#[cfg(all(test, feature = "encrypted", unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    /// The missing key error says where a key comes from, in the library's terms.
    #[test]
    fn missing_key_names_the_variable_and_the_option() {
        let text = missing_key().to_string();
        assert!(text.contains(KEY_ENV), "{text}");
        assert!(text.contains("OpenOptions::key_file"), "{text}");
        assert!(!text.contains("--"), "no command-line flag: {text}");
    }

    /// A key file readable by others is refused unless explicitly allowed.
    #[test]
    fn open_key_files_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{B64}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let options = OpenOptions::default().with_key_file(&path);
        // The environment override is read by `open_key_files_allowed`; this test
        // leaves the environment alone and uses the option.
        let err = key_from_file(&path, false, "current")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 644"), "{err}");
        assert!(err.contains(KEY_FILE_INSECURE_ENV), "{err}");
        assert!(!err.contains(B64), "{err}");
        if std::env::var_os(KEY_FILE_INSECURE_ENV).is_none() {
            assert!(key_ring(&options).is_err());
        }
        let ring = key_ring(&options.clone().with_allow_open_key_file(true)).unwrap();
        assert_eq!(ring.ids().len(), 1);
        let previous = OpenOptions::default()
            .with_allow_open_key_file(false)
            .with_previous_key_file(&path);
        let err = key_from_file(&previous.previous_key_files[0], false, "previous")
            .unwrap_err()
            .to_string();
        assert!(err.contains("previous key file"), "{err}");
    }
}
