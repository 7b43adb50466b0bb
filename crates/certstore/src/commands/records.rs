//! What the certificate commands share: the records stored for a name, read through
//! [`cert_core::record`] (which owns their layout), a wrong key told from broken records,
//! and a name's issuance lock.

use std::sync::Arc;
use std::time::Duration;

use cert_core::record;
use cert_core::{LockGuard, LockOptions, Locker, keys};
use certstore::inventory::{self, Found};

use crate::Global;
use crate::output::{CliError, CliResult};

/// How long a command waits for a name's issuance lock, held by a node obtaining or
/// renewing that name (an ACME order can take a while).
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The certificates stored for `name` (one per issuer segment): usable ones first, the
/// one valid longest first, broken ones last. A usage error when there is none.
pub(super) async fn find(
    global: &Global,
    storage: &str,
    name: &str,
    issuer: Option<&str>,
) -> CliResult<(certstore::Opened, Vec<Found>)> {
    let opened = global.open(storage).await?;
    let safe = keys::safe_name(name);
    let entries = inventory::scan(opened.store.as_ref())
        .await
        .map_err(|err| CliError::storage("cannot list certificates", &err))?;
    let mut found = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.id.name == safe && issuer.is_none_or(|i| e.id.issuer == i))
    {
        found.push(
            inventory::load(opened.store.as_ref(), entry)
                .await
                .map_err(|err| CliError::storage("cannot read the certificate", &err))?,
        );
    }
    if found.is_empty() {
        return Err(CliError::usage(format!(
            "no certificate for {name} in {}; see what is stored with `certstore ls`",
            opened.url
        )));
    }
    check_key(&opened, &found).await?;
    found.sort_by_key(|f| std::cmp::Reverse(f.valid().map_or(i64::MIN, |(_, d)| d.not_after)));
    Ok((opened, found))
}

/// On an encrypted storage where no record opens and the first one's value does not
/// decrypt, the key is wrong rather than the records: that is the error (with its hint),
/// not a list of broken records.
pub(super) async fn check_key(opened: &certstore::Opened, found: &[Found]) -> CliResult {
    if !opened.url.is_encrypted() || found.iter().any(|f| f.valid().is_some()) {
        return Ok(());
    }
    let Some(first) = found.first() else {
        return Ok(());
    };
    let id = &first.entry.id;
    let key = if first.entry.has_bundle {
        id.bundle_key()
    } else {
        id.meta_key()
    };
    match opened.store.load(&key).await {
        Err(err @ cert_core::Error::Corrupt { .. }) => {
            Err(CliError::storage("cannot read certificates", &err))
        }
        _ => Ok(()),
    }
}

/// The error for a name whose every record is broken: each reason, and what to do.
pub(super) fn unreadable(name: &str, found: &[Found]) -> CliError {
    let reasons: Vec<String> = found
        .iter()
        .filter_map(|f| f.broken().map(|reason| format!("{}: {reason}", f.entry.id)))
        .collect();
    CliError::failed(format!(
        "the certificate for {name} cannot be read: {}; a server managing the name issues it \
         again, or remove it with `certstore rm {name}`",
        reasons.join("; ")
    ))
}

/// Waits (up to [`LOCK_WAIT`]) for the issuance lock of the record name `name`.
pub(super) async fn record_lock(
    opened: &certstore::Opened,
    id: &record::CertificateId,
) -> CliResult<LockGuard> {
    lock_named(opened, &id.issue_lock(), &id.name).await
}

pub(super) async fn issue_lock(opened: &certstore::Opened, name: &str) -> CliResult<LockGuard> {
    lock_named(opened, &keys::issue_lock(name), name).await
}

async fn lock_named(
    opened: &certstore::Opened,
    lock_name: &str,
    name: &str,
) -> CliResult<LockGuard> {
    let locker: Arc<dyn Locker> = opened.store.clone();
    let options = LockOptions::default().with_timeout(LOCK_WAIT);
    cert_core::lock(locker, lock_name, &options)
        .await
        .map_err(|err| match err {
            cert_core::Error::LockTimeout { .. } => CliError::failed(format!(
                "a node has been obtaining or renewing {name} for over {}s (it holds the \
                 name's lock); try again later",
                LOCK_WAIT.as_secs()
            )),
            err => CliError::storage("cannot take the name's lock", &err),
        })
}
