//! `certstore show`: one certificate's names, issuer, validity, key type, serial and
//! fingerprint, and where its record is stored.

use cert_core::record::Layout;
use certstore::inventory::{self, Found};
use serde_json::json;

use super::records::{find, unreadable};
use crate::output::{CliResult, now_unix, print_json, printable, time_left};
use crate::{Global, StorageArg};

/// Arguments of `certstore show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The server name (`example.com`, `*.example.com`).
    name: String,
    /// Only the certificate from this issuer segment (as `ls` prints it).
    #[arg(long)]
    issuer: Option<String>,
    /// Also print the private key (PEM). It is a secret: mind where the output goes.
    #[arg(long)]
    reveal_key: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &Global, args: ShowArgs) -> CliResult {
    let (opened, found) = find(
        global,
        &args.storage.storage,
        &args.name,
        args.issuer.as_deref(),
    )
    .await?;
    if found.iter().all(|f| f.valid().is_none()) {
        return Err(unreadable(&args.name, &found));
    }
    let now = now_unix();
    let key_of = |f: &Found| {
        f.valid()
            .filter(|_| args.reveal_key)
            .map(|(certificate, _)| certificate.stored.key_pem.clone())
    };
    if args.json {
        let items: Vec<serde_json::Value> = found
            .iter()
            .map(|f| {
                let id = &f.entry.id;
                let mut value = match f.valid() {
                    Some((certificate, d)) => json!({
                        "name": id.name,
                        "issuer_segment": id.issuer,
                        "broken": false,
                        "layout": certificate.layout,
                        "subject": d.subject,
                        "names": d.names,
                        "issuer": d.issuer,
                        "serial": d.serial,
                        "not_before": inventory::format_time(d.not_before),
                        "not_after": inventory::format_time(d.not_after),
                        "days_left": d.days_left(now),
                        "key_type": d.key_type,
                        "sha256_fingerprint": d.sha256_fingerprint,
                        "chain_length": d.chain_length,
                    }),
                    None => json!({
                        "name": id.name,
                        "issuer_segment": id.issuer,
                        "broken": true,
                        "reason": f.broken(),
                    }),
                };
                value["storage"] = json!(opened.url.redacted());
                value["keys"] = json!({
                    "bundle": f.entry.has_bundle.then(|| id.bundle_key()),
                    "chain": f.entry.has_chain.then(|| id.chain_key()),
                    "private_key": f.entry.has_key.then(|| id.key_key()),
                    "metadata": f.entry.has_meta.then(|| id.meta_key()),
                });
                if let Some(pem) = key_of(f) {
                    value["private_key_pem"] = json!(pem.as_str());
                }
                value
            })
            .collect();
        return print_json(&json!(items));
    }
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let id = &f.entry.id;
        let mut rows: Vec<(&str, String)> = Vec::new();
        match f.valid() {
            Some((certificate, d)) => {
                rows.push(("subject", d.subject.clone()));
                rows.push(("names", d.names.join(", ")));
                rows.push(("issuer", d.issuer.clone()));
                rows.push(("not before", inventory::format_time(d.not_before)));
                rows.push((
                    "not after",
                    if d.not_after > now {
                        format!(
                            "{} ({} left)",
                            inventory::format_time(d.not_after),
                            time_left(d.not_after, now)
                        )
                    } else {
                        format!("{} (expired)", inventory::format_time(d.not_after))
                    },
                ));
                rows.push(("key type", d.key_type.clone()));
                rows.push(("serial", d.serial.clone()));
                rows.push(("sha-256", d.sha256_fingerprint.clone()));
                rows.push(("chain", format!("{} certificate(s)", d.chain_length)));
                rows.push(("layout", layout_name(certificate.layout).to_owned()));
            }
            None => rows.push((
                "BROKEN",
                format!("{} ({id})", f.broken().unwrap_or_default()),
            )),
        }
        rows.push(("stored in", opened.description.clone()));
        rows.push(("record", id.prefix()));
        for (label, value) in rows {
            println!("{:<12}{}", format!("{label}:"), printable(&value));
        }
        if let Some(pem) = key_of(f) {
            for line in pem.lines() {
                println!("{}", printable(line));
            }
        }
    }
    Ok(())
}

/// How a record was stored, as `ls --json` and `show` print it.
fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Bundle => "bundle",
        Layout::Parts => "parts (older release; a bundle is added at the next save)",
        _ => "unknown",
    }
}
