//! `certstore import`: a certificate and key from PEM files, checked (the files, the name,
//! what the record already holds) and stored under the name's issuance lock.

use std::io::Read;
use std::path::{Path, PathBuf};

use cert_core::record::{self, CertificateId, RecordState};
use cert_core::{StoredCertificate, keys};
use certstore::inventory;

use super::records::issue_lock;
use crate::output::{CliError, CliResult, printable};
use crate::{Global, StorageArg};

/// The most `import` reads of one file: a PEM chain or key is a few KiB, so anything
/// bigger is a mistake (`--key /dev/zero`, a disk image) and is refused after reading
/// this much, not after filling memory.
const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// The most certificates `import` accepts in one chain: real chains hold two to four.
const MAX_CHAIN_LENGTH: usize = 100;

/// Arguments of `certstore import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The PEM certificate chain, leaf first.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// The PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The server name to store it under (default: the certificate's first name). The
    /// certificate must cover it: one of its names, or a wildcard matching it.
    #[arg(long)]
    name: Option<String>,
    /// The issuer segment to store it under. The engine serves a stored certificate
    /// from the issuers it is configured with, so use `local` to have `certstore serve`
    /// pick it up.
    #[arg(long, default_value = "imported")]
    issuer: String,
    /// Replace a different certificate (or an unreadable record) already stored for the
    /// name.
    #[arg(long)]
    force: bool,
}

/// Reads a PEM file of at most [`MAX_INPUT_BYTES`], through a bounded reader so that a
/// device or a huge file fails fast. The bytes are wiped once read (a key file).
fn read_pem(path: &Path) -> CliResult<zeroize::Zeroizing<String>> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|err| CliError::usage(format!("cannot read {shown}: {err}")))?;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| CliError::usage(format!("cannot read {shown}: {err}")))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::usage(format!(
            "{shown} is larger than 1 MiB: not a PEM certificate chain or key"
        )));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::usage(format!("{shown} is not PEM text")))?;
    Ok(zeroize::Zeroizing::new(text.to_owned()))
}

/// Checks what `--cert` holds beyond what parsing checks: no private key (the chain is
/// stored as given, and copied where keys are not expected), at most
/// [`MAX_CHAIN_LENGTH`] certificates.
fn check_chain_file(path: &Path, pem: &str) -> CliResult {
    let labels = pem
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-----BEGIN "))
        .map(|rest| rest.trim_end_matches('-').trim());
    let mut certificates = 0;
    for label in labels {
        if label.contains("PRIVATE KEY") {
            return Err(CliError::usage(format!(
                "{} holds a private key; pass only certificates with --cert and the key with \
                 --key",
                path.display()
            )));
        }
        if label == "CERTIFICATE" {
            certificates += 1;
        }
    }
    if certificates > MAX_CHAIN_LENGTH {
        return Err(CliError::usage(format!(
            "{} holds {certificates} certificates; a chain holds at most {MAX_CHAIN_LENGTH}",
            path.display()
        )));
    }
    Ok(())
}

/// Whether a certificate naming `names` is valid for `name`: one of them equal to it
/// (ignoring case and a final dot), or a wildcard `*.suffix` matching exactly one label
/// before `suffix`, as TLS clients match them (RFC 6125).
fn covers(names: &[String], name: &str) -> bool {
    let normal = |text: &str| text.trim_end_matches('.').to_ascii_lowercase();
    let name = normal(name);
    names.iter().any(|candidate| {
        let candidate = normal(candidate);
        if candidate == name {
            return true;
        }
        match (candidate.strip_prefix("*."), name.split_once('.')) {
            (Some(suffix), Some((label, rest))) => {
                !label.is_empty() && !label.contains('*') && rest == suffix
            }
            _ => false,
        }
    })
}

/// The DER of a PEM chain's leaf.
fn leaf_der(chain_pem: &str) -> Option<Vec<u8>> {
    cert_core::certificate::parse_chain(chain_pem)
        .ok()?
        .first()
        .map(|leaf| leaf.as_ref().to_vec())
}

pub async fn run(global: &Global, args: ImportArgs) -> CliResult {
    let chain = read_pem(&args.cert)?;
    check_chain_file(&args.cert, &chain)?;
    let key = read_pem(&args.key)?;
    let key_type = inventory::key_type(&chain);
    let issuer = keys::issuer_key(&args.issuer);
    let stored = StoredCertificate::from_pem(&chain, &key, &issuer, key_type)
        .map_err(|err| CliError::usage(format!("cannot import: {err}")))?;
    let name = match args.name {
        Some(name) if covers(&stored.meta.names, &name) => name,
        Some(name) => {
            return Err(CliError::usage(format!(
                "the certificate is not valid for {name} (it names {}); pass one of its \
                 names with --name",
                stored.meta.names.join(", ")
            )));
        }
        None => stored
            .meta
            .names
            .first()
            .cloned()
            .ok_or_else(|| CliError::usage("the certificate names no server; pass --name"))?,
    };
    let opened = global.open(&args.storage.storage).await?;
    // Under the name's issuance lock, like the engine, and fenced by it: the bundle (the
    // commit point) first, then the copies.
    let guard = issue_lock(&opened, &name).await?;
    let saved = match replaceable(&opened, &name, &stored, args.force).await {
        Ok(()) => {
            let lease = guard.lease();
            record::save_certificate(opened.store.as_ref(), &name, &stored, Some(&lease))
                .await
                .map_err(|err| CliError::storage("cannot store the certificate", &err))
        }
        Err(err) => Err(err),
    };
    let _ = guard.release().await;
    let id = saved?;
    println!(
        "imported {} ({}) as {}",
        printable(&name),
        printable(&stored.meta.names.join(", ")),
        printable(&id.prefix())
    );
    Ok(())
}

/// Refuses (without `force`) to overwrite what is stored for `name` under the new
/// certificate's issuer segment, unless it is the same certificate (the same leaf):
/// another certificate or a record that cannot be read is replaced only on purpose.
async fn replaceable(
    opened: &certstore::Opened,
    name: &str,
    stored: &StoredCertificate,
    force: bool,
) -> CliResult {
    if force {
        return Ok(());
    }
    // The record `save_certificate` writes, named by `cert_core::record`.
    let id = CertificateId::new(&stored.meta.issuer, name);
    let existing = record::load_certificate(opened.store.as_ref(), &id)
        .await
        .map_err(|err| CliError::storage("cannot read the stored certificate", &err))?;
    match existing {
        None => Ok(()),
        Some(RecordState::Valid(loaded))
            if leaf_der(&loaded.stored.chain_pem).is_some()
                && leaf_der(&loaded.stored.chain_pem) == leaf_der(&stored.chain_pem) =>
        {
            Ok(())
        }
        Some(RecordState::Valid(loaded)) => Err(CliError::usage(format!(
            "{} already holds a different certificate for {name} (serial {}, valid until \
             {}); pass --force to replace it",
            id.prefix(),
            loaded.stored.meta.serial,
            inventory::format_time(loaded.stored.meta.not_after)
        ))),
        Some(RecordState::Broken { reason }) => Err(CliError::usage(format!(
            "{} holds a record that cannot be read ({reason}); pass --force to replace it",
            id.prefix()
        ))),
        Some(_) => Err(CliError::usage(format!(
            "{} holds a record this version does not know; pass --force to replace it",
            id.prefix()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_covered_by_an_exact_name_or_a_one_label_wildcard() {
        let names = vec!["shop.example".to_owned(), "*.Shop.Example".to_owned()];
        for yes in [
            "shop.example",
            "SHOP.example.",
            "www.shop.example",
            "*.shop.example",
        ] {
            assert!(covers(&names, yes), "{yes}");
        }
        for no in [
            "example",
            "other.example",
            "a.b.shop.example",
            ".shop.example",
            "xshop.example",
        ] {
            assert!(!covers(&names, no), "{no}");
        }
        assert!(covers(&["10.0.0.1".to_owned()], "10.0.0.1"));
        assert!(!covers(&["*.example".to_owned()], "*.example.org"));
    }

    #[test]
    fn a_chain_file_holds_certificates_only_and_not_too_many() {
        let path = Path::new("chain.pem");
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        check_chain_file(path, &cert.repeat(MAX_CHAIN_LENGTH)).unwrap();
        let err = check_chain_file(path, &cert.repeat(MAX_CHAIN_LENGTH + 1)).unwrap_err();
        assert!(err.message.contains("101 certificates"), "{err}");
        for label in [
            "PRIVATE KEY",
            "EC PRIVATE KEY",
            "RSA PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
        ] {
            let pem = format!("{cert}-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
            let err = check_chain_file(path, &pem).unwrap_err();
            assert_eq!(err.code, crate::output::USAGE);
            assert!(err.message.contains("holds a private key"), "{err}");
        }
    }

    #[test]
    fn inputs_are_read_up_to_a_mebibyte() {
        let dir = tempfile::tempdir().unwrap();
        let fits = dir.path().join("fits");
        std::fs::write(&fits, vec![b'a'; MAX_INPUT_BYTES as usize]).unwrap();
        assert_eq!(read_pem(&fits).unwrap().len(), MAX_INPUT_BYTES as usize);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_INPUT_BYTES as usize + 1]).unwrap();
        assert!(
            read_pem(&big)
                .unwrap_err()
                .message
                .contains("larger than 1 MiB")
        );
        let err = read_pem(Path::new("/dev/zero")).unwrap_err();
        assert!(err.message.contains("larger than 1 MiB"), "{err}");
    }
}
