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
        if let Some(key) = crate::commands::rekey::plaintext_key(err) {
            return CliError::usage(format!(
                "{what}: {key} holds a value stored without encryption; {}",
                crate::commands::rekey::SEAL_PLAINTEXT_HINT
            ));
        }
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
            OpenError::Key(message) if message.contains("needs a key") => {
                "; on the command line, --key-file FILE names a key file"
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

/// `text` made safe to print on a terminal: control characters (C0, DEL, C1) and the
/// invisible characters that reorder or hide text (bidirectional overrides and isolates,
/// zero-width characters) are written as Rust escapes such as `\u{1b}`.
///
/// Certificate subjects and names, storage keys and lock tokens come from whoever wrote
/// the storage or the certificate: printed raw, an escape sequence in them could move the
/// cursor, rewrite earlier lines or change the terminal's title. Every human printer
/// passes such text through here; JSON output is escaped by its encoder instead.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let hidden = matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        );
        if c.is_control() || hidden {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Aligned columns with a header line, two spaces apart. Every cell goes through
/// [`printable`].
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let rows = rows.as_slice();
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

/// How long until `not_after` (seconds since the epoch) from `now`: whole days (`89 days`),
/// hours under two days (`23h`), since a fresh one-day certificate is not "0 days" from
/// expiry; `expired` once past.
pub fn time_left(not_after: i64, now: i64) -> String {
    let left = not_after.saturating_sub(now);
    if left <= 0 {
        "expired".to_owned()
    } else if left < 2 * 86_400 {
        format!("{}h", left / 3600)
    } else {
        format!("{} days", left / 86_400)
    }
}

/// 32 random hex digits for file and directory names others must not guess. The
/// standard library's hasher keys are random per process; hashing the time and a counter
/// with fresh ones gives unpredictable names without a random number crate.
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut halves = [0u64; 2];
    for half in &mut halves {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(count);
        hasher.write_u32(std::process::id());
        *half = hasher.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

/// The current time, seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    cert_core::certificate::system_to_unix(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_terminal_controls_only() {
        assert_eq!(printable("shop.example"), "shop.example");
        assert_eq!(printable("ünïcødé 日本"), "ünïcødé 日本");
        assert_eq!(
            printable("a\u{1b}]0;owned\u{7}b\nc\u{9b}d\u{7f}"),
            "a\\u{1b}]0;owned\\u{7}b\\u{a}c\\u{9b}d\\u{7f}"
        );
        assert_eq!(printable("evil\u{202e}moc.x"), "evil\\u{202e}moc.x");
        let shown = table(&["NAME"], &[vec!["x\u{1b}[2Jy".to_owned()]]);
        assert_eq!(shown, "NAME\nx\\u{1b}[2Jy\n");
    }

    #[test]
    fn random_suffixes_differ() {
        let (a, b) = (random_suffix(), random_suffix());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn time_left_shows_hours_under_two_days() {
        let now = 1_000_000;
        assert_eq!(time_left(now + 86_400, now), "24h");
        assert_eq!(time_left(now + 86_400 - 1, now), "23h");
        assert_eq!(time_left(now + 2 * 86_400 - 1, now), "47h");
        assert_eq!(time_left(now + 2 * 86_400, now), "2 days");
        assert_eq!(time_left(now + 90 * 86_400 + 5, now), "90 days");
        assert_eq!(time_left(now, now), "expired");
        assert_eq!(time_left(now - 10, now), "expired");
    }
}
