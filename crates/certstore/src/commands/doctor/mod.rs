//! `certstore doctor`: checks a storage end to end, its certificate records included.
//!
//! One module per family of checks: `round_trip` (a value stored, read back and deleted,
//! and the clock skew it shows), `lock`, `permissions`, `tls` (database connections),
//! `encryption` and `certificates`.

mod certificates;
mod encryption;
mod lock;
mod permissions;
mod round_trip;
mod tls;

use serde_json::json;

use crate::Global;
use crate::StorageArg;
use crate::output::{CliError, CliResult, FAILED, print_json, table};

/// Arguments of `certstore doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    hint: String,
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    hint: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        detail: crate::output::scrub(&detail.into()),
        hint: hint.into(),
    }
}

pub async fn run(global: &Global, args: DoctorArgs) -> CliResult {
    let mut checks = Vec::new();
    let opened = match global.open(&args.storage.storage).await {
        Ok(opened) => {
            checks.push(check(
                "connect",
                Status::Pass,
                opened.description.clone(),
                "",
            ));
            Some(opened)
        }
        Err(err) => {
            let hint = if err.code == FAILED {
                "start the server or fix its address, then run doctor again"
            } else {
                "fix the storage URL, credentials or key"
            };
            checks.push(check("connect", Status::Fail, err.message.clone(), hint));
            None
        }
    };
    if let Some(opened) = &opened {
        run_checks(opened, &mut checks).await;
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if args.json {
        let items: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| json!({"check": c.name, "status": c.status.name().to_ascii_lowercase(), "detail": c.detail, "hint": c.hint}))
            .collect();
        print_json(&json!({"ok": failed == 0, "checks": items}))?;
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                let detail = if c.hint.is_empty() {
                    c.detail.clone()
                } else {
                    format!("{}; hint: {}", c.detail, c.hint)
                };
                vec![c.name.to_owned(), c.status.name().to_owned(), detail]
            })
            .collect();
        print!("{}", table(&["CHECK", "RESULT", "DETAIL"], &rows));
    }
    if failed > 0 {
        return Err(CliError::failed(format!("{failed} checks failed")));
    }
    Ok(())
}

async fn run_checks(opened: &certstore::Opened, checks: &mut Vec<Check>) {
    let store = &opened.store;
    match store.list("", false).await {
        Ok(top) => checks.push(check(
            "list",
            Status::Pass,
            format!("{} top-level entries", top.len()),
            "",
        )),
        Err(err) => checks.push(check(
            "list",
            Status::Fail,
            err.to_string(),
            "check read and list permissions of the credentials",
        )),
    }
    if let Some(root) = &opened.file_root {
        checks.push(permissions::file_permissions(root));
    }
    if let Some(tls) = tls::database_tls(&opened.url) {
        checks.push(tls);
    }
    #[cfg(feature = "sqlite")]
    if let certstore::Target::Sql { url, .. } = opened.url.target()
        && opened.url.backend() == certstore::Backend::Sqlite
        && let Some(files) = cert_sql::sqlite_database_files(url)
    {
        checks.push(permissions::sqlite_permissions(&files));
    }

    round_trip::round_trip(opened, checks).await;
    checks.push(lock::lock_round_trip(opened).await);
    checks.push(encryption::encryption(opened).await);
    certificates::certificates(opened, checks).await;
}
