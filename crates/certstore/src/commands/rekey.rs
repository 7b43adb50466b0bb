//! `certstore rekey`: every value of an encrypted storage re-sealed under the current key.

use crate::output::{CliError, CliResult};
use crate::{Global, StorageArg};

/// Arguments of `certstore rekey`.
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Only the values below this storage prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Also seal values stored unencrypted (moving a plain storage to encryption).
    #[arg(long)]
    seal_plaintext: bool,
}

#[cfg(feature = "encrypted")]
pub async fn run(global: &Global, args: RekeyArgs) -> CliResult {
    let mut options = global.options.clone();
    options.plaintext_migration = args.seal_plaintext;
    let opened = crate::output::open(&args.storage.storage, &options).await?;
    let Some(encrypted) = &opened.encrypted else {
        return Err(CliError::usage(format!(
            "rekey needs an encrypted storage: use encrypted+{}",
            opened.url
        )));
    };
    let bar = crate::output::progress_bar(global.quiet, "re-sealing");
    let report = encrypted
        .rekey(args.prefix.trim_end_matches('/'), |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        })
        .await;
    bar.finish_and_clear();
    let report = report.map_err(|err| rekey_failure(&err))?;
    println!(
        "re-sealed {}, already under the current key {}, vanished {}, of {} values; \
         every value now opens with the current key alone",
        report.resealed, report.already_current, report.vanished, report.total
    );
    Ok(())
}

/// What to run when values of an encrypted storage turn out to be plaintext.
#[cfg(feature = "encrypted")]
pub(crate) const SEAL_PLAINTEXT_HINT: &str =
    "seal the plaintext values with `certstore rekey --seal-plaintext` (same storage and key)";

/// The storage key of a value that is plaintext where an envelope was expected: a value
/// stored without encryption, read through an `encrypted+` storage.
#[cfg(feature = "encrypted")]
pub(crate) fn plaintext_key(err: &cert_core::Error) -> Option<&str> {
    match err {
        cert_core::Error::Corrupt { key, source }
            if matches!(
                source.downcast_ref(),
                Some(cert_encrypted::OpenError::NotAnEnvelope)
            ) =>
        {
            Some(key)
        }
        _ => None,
    }
}

/// Why re-keying stopped, with what to do: plaintext values need `--seal-plaintext`.
#[cfg(feature = "encrypted")]
fn rekey_failure(err: &cert_core::Error) -> CliError {
    match plaintext_key(err) {
        Some(key) => CliError::usage(format!(
            "re-keying stopped: {key} holds a value stored without encryption; \
             {SEAL_PLAINTEXT_HINT}"
        )),
        None => CliError::storage("re-keying stopped", err),
    }
}

#[cfg(not(feature = "encrypted"))]
pub async fn run(_global: &Global, _args: RekeyArgs) -> CliResult {
    Err(CliError::usage(
        "this build has no encryption support (the `encrypted` feature)",
    ))
}

#[cfg(all(test, feature = "encrypted"))]
mod tests {
    use cert_core::Error;
    use cert_encrypted::OpenError;

    use super::*;
    use crate::output::{FAILED, USAGE};

    #[test]
    fn plaintext_values_are_told_to_be_sealed() {
        let plain = rekey_failure(&Error::corrupt(
            "acme/account.json",
            OpenError::NotAnEnvelope,
        ));
        assert_eq!(plain.code, USAGE);
        assert!(plain.message.contains("acme/account.json"), "{plain}");
        assert!(
            plain.message.contains("certstore rekey --seal-plaintext"),
            "{plain}"
        );
        assert!(!plain.message.contains("CERTSTORE_KEY"), "{plain}");
    }

    #[test]
    fn other_failures_keep_their_hints() {
        let tampered = OpenError::Tampered {
            key_id: cert_encrypted::SecretKey::from_bytes([7; 32]).id(),
        };
        let wrong_key = rekey_failure(&Error::corrupt("a", tampered));
        assert!(wrong_key.message.contains("CERTSTORE_KEY"), "{wrong_key}");
        assert!(
            !wrong_key.message.contains("--seal-plaintext"),
            "{wrong_key}"
        );
        let down = rekey_failure(&Error::unavailable("redis", std::io::Error::other("down")));
        assert_eq!(down.code, FAILED);
        assert!(plaintext_key(&Error::corrupt("a", std::io::Error::other("x"))).is_none());
    }
}
