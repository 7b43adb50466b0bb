//! The doctor's check of certificate records: every record loads, and the copies beside
//! each bundle hold what the bundle holds.

use cert_core::record::{self, Layout};
use certstore::inventory;

use super::{Check, Status, check};

/// Every certificate record: one failure per broken record (with the reason), one warning
/// per bundle whose copies hold something else, else one line that all is well.
pub(super) async fn certificates(opened: &certstore::Opened, checks: &mut Vec<Check>) {
    const NAME: &str = "certificates";
    let store = opened.store.as_ref();
    let entries = match inventory::scan(store).await {
        Ok(entries) => entries,
        Err(err) => {
            checks.push(check(NAME, Status::Fail, err.to_string(), ""));
            return;
        }
    };
    let (mut old_layout, mut problems) = (0, 0);
    for entry in &entries {
        let found = match inventory::load(store, entry).await {
            Ok(found) => found,
            Err(err) => {
                checks.push(check(
                    NAME,
                    Status::Fail,
                    format!("{}: {err}", entry.id),
                    "",
                ));
                problems += 1;
                continue;
            }
        };
        let id = &entry.id;
        let Some((certificate, _)) = found.valid() else {
            problems += 1;
            checks.push(check(
                NAME,
                Status::Fail,
                format!("{id} is broken: {}", found.broken().unwrap_or_default()),
                format!(
                    "a server managing the name issues it again; or remove it with \
                     `certstore rm {} --issuer {}`",
                    id.name, id.issuer
                ),
            ));
            continue;
        };
        if certificate.layout != Layout::Bundle {
            old_layout += 1;
            continue;
        }
        match record::copies_current(store, id, &certificate.stored).await {
            Ok(true) => {}
            Ok(false) => {
                problems += 1;
                checks.push(check(
                    NAME,
                    Status::Warn,
                    format!(
                        "{id}: the copies beside {} are stale (servers use the bundle)",
                        id.bundle_key()
                    ),
                    "the next renewal rewrites them; tools reading the .crt/.key copies see an older certificate until then",
                ));
            }
            Err(err) => {
                problems += 1;
                checks.push(check(NAME, Status::Fail, format!("{id}: {err}"), ""));
            }
        }
    }
    if problems == 0 {
        let mut detail = format!("{} records load", entries.len());
        if old_layout > 0 {
            detail.push_str(&format!(
                ", {old_layout} in the layout of older releases (a bundle is added at the next save)"
            ));
        }
        checks.push(check(NAME, Status::Pass, detail, ""));
    }
}
