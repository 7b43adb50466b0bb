//! A storage seen two ways: through certstore (a storage URL) and through the backend's own
//! client, which reads and writes the documented layout without any certstore code. Also
//! finding those clients, and the hex that carries bytes through their text output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use integration_tests::{REQUIRE_SERVICES, services_required};

/// One namespace (prefix, database) of a backend, as certstore and the native client see it.
pub trait Native {
    /// The certstore storage URL of the namespace.
    fn url(&self) -> String;
    /// Writes `values` (storage key, bytes), in order, with the native client only.
    fn put(&self, values: &[(String, Vec<u8>)]);
    /// Every value of the namespace, as the native client reads it: storage keys (names
    /// relative to the namespace or prefix, backend files such as lock objects included)
    /// and their bytes.
    fn dump(&self) -> BTreeMap<String, Vec<u8>>;
    /// Removes everything the namespace holds.
    fn clear(&self);
}

/// The command-line client named by the variable `var` (written by the services scripts),
/// else the first of `commands` found on the `PATH`. `None`, after saying why, when there
/// is none; a failure instead when servers are required.
pub fn client(var: &str, commands: &[&str]) -> Option<PathBuf> {
    let found = match std::env::var(var) {
        Ok(path) if !path.trim().is_empty() => Some(PathBuf::from(path)),
        _ => commands.iter().find_map(|command| on_path(command)),
    };
    if found.is_none() {
        missing(&format!(
            "{var} is not set and none of {commands:?} is on the PATH"
        ));
    }
    found
}

/// A Python interpreter that imports `module`: the one named by the variable `var`, else
/// `python3` from the `PATH`. `None` or a failure as for [`client`].
pub fn python(var: &str, module: &str) -> Option<PathBuf> {
    let candidate = match std::env::var(var) {
        Ok(path) if !path.trim().is_empty() => Some(PathBuf::from(path)),
        _ => on_path("python3"),
    };
    let usable = candidate.filter(|python| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if usable.is_none() {
        missing(&format!(
            "no Python with `{module}`: set {var} (integration-tests/services/start.sh does)"
        ));
    }
    usable
}

fn on_path(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
}

fn missing(why: &str) {
    assert!(!services_required(), "{why} and {REQUIRE_SERVICES}=1");
    eprintln!("SKIPPED: {why}");
}

/// Runs `command` with `input` on its standard input; its standard output, which must
/// come with success.
pub fn run_client(command: &mut Command, input: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex text, either case.
pub fn from_hex(text: &str) -> Vec<u8> {
    let text = text.trim();
    assert!(text.len().is_multiple_of(2), "odd hex: {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|_| panic!("{text:?}")))
        .collect()
}
