//! Where results go: one JSON file per suite under `benches/results/`, with the machine
//! they were measured on.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// The CPU model from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Total memory in MiB, from `/proc/meminfo`.
    pub memory_mib: u64,
    /// The operating system, from `/etc/os-release` and the kernel release.
    pub os: String,
    /// The 1-minute load average when the suite started (other work on the machine).
    pub load_average: String,
}

impl Machine {
    /// Reads the machine's description; unknown parts are empty.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_default();
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|line| {
                line.strip_prefix("MemTotal:").and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
            })
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        let pretty = read("/etc/os-release")
            .lines()
            .find_map(|line| {
                line.strip_prefix("PRETTY_NAME=")
                    .map(|name| name.trim_matches('"').to_owned())
            })
            .unwrap_or_default();
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let load_average = read("/proc/loadavg")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_mib,
            os: format!("{pretty}, Linux {kernel}"),
            load_average,
        }
    }
}

/// One suite's results as written to disk.
#[derive(Debug, Serialize)]
pub struct Report<T: Serialize> {
    /// The suite's name.
    pub suite: &'static str,
    /// Whether the reduced `--quick` sizes were used.
    pub quick: bool,
    /// How many times each noisy figure was repeated (medians are reported).
    pub repeats: usize,
    /// Seconds since the Unix epoch when the suite finished.
    pub finished_at: u64,
    /// The machine.
    pub machine: Machine,
    /// The suite's own results.
    pub results: T,
}

/// The results directory: `benches/results/` of this package.
pub fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}

/// Writes `results` of `suite` to `benches/results/<suite>.json` (or
/// `<suite>-quick.json`) and returns the path.
pub fn write<T: Serialize>(
    suite: &'static str,
    quick: bool,
    repeats: usize,
    machine: Machine,
    results: T,
) -> std::io::Result<PathBuf> {
    let report = Report {
        suite,
        quick,
        repeats,
        finished_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine,
        results,
    };
    let dir = results_dir();
    std::fs::create_dir_all(&dir)?;
    let file = if quick {
        format!("{suite}-quick.json")
    } else {
        format!("{suite}.json")
    };
    let path = dir.join(file);
    let json = serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}
