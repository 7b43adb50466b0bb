//! [`AcmeConfig`]: how an ACME issuer reaches its CA (directory, contact, External Account
//! Binding, profile, challenge types, timeouts and retries), and Let's Encrypt's
//! directories.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::challenge::ChallengeType;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// External Account Binding credentials some CAs require (RFC 8555 section 7.3.4).
#[derive(Clone)]
pub struct ExternalAccountBinding {
    /// The key identifier the CA gave.
    pub kid: String,
    /// The MAC key the CA gave (decoded bytes).
    pub hmac_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("kid", &self.kid)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// How an [`AcmeIssuer`](super::AcmeIssuer) works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcmeConfig {
    /// The CA's directory URL. Default Let's Encrypt production.
    pub directory_url: String,
    /// A contact email address for the account (without `mailto:`).
    pub email: Option<String>,
    /// Whether the CA's terms of service are agreed to. Default false: most CAs refuse
    /// new accounts without it.
    pub agree_terms: bool,
    /// External Account Binding, for CAs that require it.
    pub external_account: Option<ExternalAccountBinding>,
    /// A PEM file with the root the CA's own HTTPS endpoint is trusted by, instead of the
    /// platform's roots (test CAs such as Pebble).
    pub root_pem_file: Option<PathBuf>,
    /// The certificate profile to ask for, when the CA offers profiles.
    pub profile: Option<String>,
    /// The challenge types to use, in order of preference. Default HTTP-01, TLS-ALPN-01,
    /// then DNS-01 (used only with a DNS provider).
    pub challenge_types: Vec<ChallengeType>,
    /// How long to wait for authorizations and for the certificate. Default 90 s.
    pub order_timeout: Duration,
    /// Attempts per [`Issuer::issue`](crate::issuer::Issuer::issue) call on temporary
    /// failures. Default 3.
    pub attempts: u32,
    /// Pause before the second attempt (doubling). Default 2 s.
    pub retry_delay: Duration,
    /// Whether to use ACME Renewal Information (RFC 9773) when the CA offers it.
    /// Default true.
    pub renewal_info: bool,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory_url: LETS_ENCRYPT_PRODUCTION.to_owned(),
            email: None,
            agree_terms: false,
            external_account: None,
            root_pem_file: None,
            profile: None,
            challenge_types: vec![
                ChallengeType::Http01,
                ChallengeType::TlsAlpn01,
                ChallengeType::Dns01,
            ],
            order_timeout: Duration::from_secs(90),
            attempts: 3,
            retry_delay: Duration::from_secs(2),
            renewal_info: true,
        }
    }
}

impl AcmeConfig {
    /// A configuration for the CA at `directory_url`.
    pub fn new(directory_url: impl Into<String>) -> Self {
        AcmeConfig {
            directory_url: directory_url.into(),
            ..AcmeConfig::default()
        }
    }

    /// With this contact email.
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Agreeing to the CA's terms of service.
    pub fn agree_to_terms(mut self) -> Self {
        self.agree_terms = true;
        self
    }

    /// With External Account Binding credentials.
    pub fn with_external_account(mut self, kid: impl Into<String>, hmac_key: Vec<u8>) -> Self {
        self.external_account = Some(ExternalAccountBinding {
            kid: kid.into(),
            hmac_key: Zeroizing::new(hmac_key),
        });
        self
    }

    /// Trusting the CA's HTTPS endpoint by the root in this PEM file.
    pub fn with_root_pem_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_pem_file = Some(path.into());
        self
    }

    /// Asking for this certificate profile.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Using these challenge types, in this order.
    pub fn with_challenge_types(mut self, types: impl IntoIterator<Item = ChallengeType>) -> Self {
        self.challenge_types = types.into_iter().collect();
        self
    }

    /// Waiting this long for validation and the certificate.
    pub fn with_order_timeout(mut self, timeout: Duration) -> Self {
        self.order_timeout = timeout;
        self
    }

    /// With this many attempts per issuance and this first pause between them.
    pub fn with_retries(mut self, attempts: u32, delay: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.retry_delay = delay;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_key_is_not_shown() {
        let config =
            AcmeConfig::new("https://ca/dir").with_external_account("kid", b"secret-mac".to_vec());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("secret-mac") && !shown.contains("115, 101"),
            "{shown}"
        );
    }
}
