//! Errors with exit codes, tables, and the shared pieces of every command.

use std::fmt;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use certstore::{OpenError, OpenOptions, Opened};

/// Exit code: the operation failed (a backend error, a copy that did not verify, a failed
/// check).
pub const FAILED: u8 = 1;
/// Exit code: bad usage or input (unknown URL scheme, wrong key, missing certificate).
pub const USAGE: u8 = 2;

/// A command's failure: one line for the operator, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: USAGE,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            code: FAILED,
            message: message.into(),
        }
    }

    /// A storage error met while doing `what`, with a hint.
    pub fn storage(what: &str, err: &cert_core::Error) -> Self {
        #[cfg(feature = "encrypted")]
        if let cert_core::Error::Corrupt { key, source } = err
            && let Some(open) = source.downcast_ref::<cert_encrypted::OpenError>()
        {
            return CliError::usage(format!(
                "{what}: cannot decrypt {key}: {open}; check {} (and {} during a key rotation)",
                certstore::KEY_ENV,
                certstore::PREVIOUS_KEYS_ENV
            ));
        }
        match err {
            cert_core::Error::InvalidKey { .. } => CliError::usage(format!("{what}: {err}")),
            cert_core::Error::Unavailable { .. } => CliError::failed(format!(
                "{what}: {err}; check that the storage server is running and reachable"
            )),
            _ => CliError::failed(format!("{what}: {err}")),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<OpenError> for CliError {
    fn from(err: OpenError) -> Self {
        let code = if err.is_usage() { USAGE } else { FAILED };
        let hint = match &err {
            OpenError::Storage { source, .. } if source.is_retryable() => {
                "; check that the server is running and reachable"
            }
            _ => "",
        };
        CliError {
            code,
            message: format!("{err}{hint}"),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// Secrets of every URL opened so far, scrubbed from the final error message in case a
/// client library repeated one.
fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// `text` with every known secret replaced by `***`.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_owned();
    if let Ok(secrets) = secrets().lock() {
        for secret in secrets.iter() {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// Opens a storage URL, remembering its secrets for [`scrub`].
pub async fn open(url: &str, options: &OpenOptions) -> CliResult<Opened> {
    if let Ok(parsed) = certstore::StorageUrl::parse(url)
        && let Ok(mut known) = secrets().lock()
    {
        known.extend(parsed.secrets());
    }
    Ok(certstore::open(url, options).await?)
}

/// Aligned columns with a header line, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &serde_json::Value) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|err| CliError::failed(format!("cannot encode JSON: {err}")))?;
    println!("{text}");
    Ok(())
}

/// Asks `question` on the terminal and succeeds only on a yes. Without a terminal on
/// standard input nobody can answer, so it refuses with `refusal` (which names `--yes`).
pub fn confirm(question: &str, refusal: &str) -> CliResult {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(refusal));
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::usage("not confirmed; nothing removed"))
    }
}

/// A progress bar on standard error (drawn only on a terminal, never with `quiet`).
pub fn progress_bar(quiet: bool, message: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} keys ({eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

/// A duration like `90s`, `15m`, `12h`, `30d` or `2w`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30d, 12h, 15m or 90s"))?;
    let seconds = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h, d or w"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    ))
}

/// A short human form of a duration: `3d 4h`, `12m 5s`, `800ms`.
pub fn human(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

pub fn now_unix() -> i64 {
    cert_core::certificate::system_to_unix(std::time::SystemTime::now())
}
