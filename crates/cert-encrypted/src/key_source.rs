//! Secret keys from outside the program: base64 text, an environment variable, or a key
//! file (base64 text or 32 raw bytes) that only its owner may read or write.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use zeroize::Zeroizing;

use crate::key::{KEY_LEN, KeyError};
use crate::secret_key::SecretKey;

impl SecretKey {
    /// A key from base64 text (standard or URL-safe alphabet, padding optional,
    /// surrounding whitespace ignored) of exactly 32 bytes. Generate one with
    /// `head -c 32 /dev/urandom | base64`.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let mut buf = Zeroizing::new([0u8; 64]);
        let len = STANDARD_PAD_INDIFFERENT
            .decode_slice(text, &mut buf[..])
            .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode_slice(text, &mut buf[..]))
            .map_err(|_| KeyError::InvalidBase64)?;
        if len != KEY_LEN {
            return Err(KeyError::InvalidBase64);
        }
        Ok(Self::from_slice_unchecked(&buf[..KEY_LEN]))
    }

    /// A key from the base64 text in environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|source| KeyError::Env {
            var: var.to_owned(),
            source,
        })?);
        Self::from_base64(&text)
    }

    /// A key from a file, refusing a file that its group or others may read or write
    /// ([`KeyError::TooOpen`], as ssh does for private keys; Unix only).
    ///
    /// The file holds one of two formats, told apart without guessing:
    ///
    /// - **text** (valid UTF-8 without control characters other than white space):
    ///   base64 of exactly 32 bytes, as in `CERTSTORE_KEY` (surrounding white space, such
    ///   as a trailing newline, ignored). Other text is refused; in particular 32
    ///   characters of text are refused as a passphrase
    ///   ([`KeyError::LooksLikePassphrase`]) rather than taken as key bytes;
    /// - **binary** (anything else): exactly 32 raw bytes, as written by
    ///   `head -c 32 /dev/urandom > key`. A random key that happens to read as such text
    ///   (far fewer than one in a billion) is refused: write it in base64.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::read_file(path.as_ref(), false)
    }

    /// [`from_file`](SecretKey::from_file) without the permission check, for files
    /// whose permissions the operator cannot tighten (some secret mounts) and has decided
    /// to accept.
    pub fn from_file_allowing_open_mode(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::read_file(path.as_ref(), true)
    }

    fn read_file(path: &Path, allow_open_mode: bool) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        // The mode of the file opened, not of the path: it cannot be swapped in between.
        #[cfg(unix)]
        if !allow_open_mode {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = allow_open_mode;
        let mut content = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut file, &mut content).map_err(io)?;
        Self::from_file_content(&content).map_err(|source| KeyError::File {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The key in a key file's content (see [`from_file`](SecretKey::from_file)).
    fn from_file_content(content: &[u8]) -> Result<Self, KeyError> {
        let text = std::str::from_utf8(content)
            .ok()
            .filter(|text| !text.chars().any(|c| c.is_control() && !c.is_whitespace()));
        match text {
            Some(text) if text.trim().len() == KEY_LEN => Err(KeyError::LooksLikePassphrase),
            Some(text) => Self::from_base64(text),
            None if content.len() == KEY_LEN => Ok(Self::from_slice_unchecked(content)),
            None => Err(KeyError::WrongLength { len: content.len() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn counting() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn sources_agree() {
        let raw = SecretKey::from_bytes(counting());
        assert_eq!(SecretKey::from_base64(B64).unwrap(), raw);
        assert_eq!(
            SecretKey::from_base64(&format!("  {}\n", B64.trim_end_matches('='))).unwrap(),
            raw
        );
        assert_eq!(SecretKey::from_slice(&counting()).unwrap(), raw);
        assert_eq!(&*raw.to_base64(), B64);

        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        std::fs::write(&text, format!("{B64}\n")).unwrap();
        private(&text);
        assert_eq!(SecretKey::from_file(&text).unwrap(), raw);
        let bin = dir.path().join("bin");
        let binary: [u8; 32] = std::array::from_fn(|i| 0x80 | i as u8);
        std::fs::write(&bin, binary).unwrap();
        private(&bin);
        assert_eq!(
            SecretKey::from_file(&bin).unwrap(),
            SecretKey::from_bytes(binary)
        );
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "short").unwrap();
        private(&bad);
        assert!(matches!(
            SecretKey::from_file(&bad),
            Err(KeyError::File { .. })
        ));
        assert!(matches!(
            SecretKey::from_file(dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
        assert!(matches!(
            SecretKey::from_env("CERT_ENCRYPTED_SURELY_UNSET_VARIABLE"),
            Err(KeyError::Env { .. })
        ));
    }

    /// Makes a test file private, as key files must be.
    fn private(path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = path;
    }

    /// A 32-character passphrase is 32 bytes long, like a raw key: it is refused, never
    /// taken as key bytes.
    #[test]
    fn a_passphrase_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        for text in [
            "correct horse battery staple 123",
            "correct horse battery staple 123\n",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(text.trim().len(), 32);
            std::fs::write(&file, text).unwrap();
            private(&file);
            let err = SecretKey::from_file(&file).unwrap_err();
            assert!(
                matches!(&err, KeyError::File { source, .. } if matches!(**source, KeyError::LooksLikePassphrase)),
                "{err:?}"
            );
            assert!(err.to_string().contains("passphrase"), "{err}");
            assert!(!err.to_string().contains(text.trim()), "{err}");
        }
        // Binary of another length, and text that is not base64, are refused too.
        std::fs::write(&file, [0xFFu8; 31]).unwrap();
        assert!(SecretKey::from_file(&file).is_err());
        std::fs::write(&file, "not a key at all, just some words here").unwrap();
        assert!(SecretKey::from_file(&file).is_err());
    }

    /// A key file that others can read is refused unless explicitly allowed.
    #[cfg(unix)]
    #[test]
    fn an_open_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, format!("{B64}\n")).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = SecretKey::from_file(&file).unwrap_err();
            assert!(
                matches!(err, KeyError::TooOpen { mode: m, .. } if m == mode),
                "{mode:o}: {err:?}"
            );
            let shown = err.to_string();
            assert!(shown.contains(&format!("mode {mode:03o}")), "{shown}");
            assert!(shown.contains("chmod 600"), "{shown}");
            assert!(!shown.contains(B64), "{shown}");
            // Accepted when the caller chose to.
            assert_eq!(
                SecretKey::from_file_allowing_open_mode(&file).unwrap(),
                SecretKey::from_bytes(counting())
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(SecretKey::from_file(&file).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            SecretKey::from_slice(&[1; 31]),
            Err(KeyError::WrongLength { len: 31 })
        ));
        for text in ["", "not base64!", "AAEC", &format!("{B64}AAAA")] {
            assert!(
                matches!(SecretKey::from_base64(text), Err(KeyError::InvalidBase64)),
                "{text:?}"
            );
        }
    }
}
