//! certstore's load and scaling benchmarks: what needs processes, sockets, real servers or
//! size sweeps, each figure a ratio against a baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p certstore-bench -- <suite> [--quick] [--repeats N]
//! ```
//!
//! Suites: `cache` (lookups for 1k/100k/1M names against a bare `HashMap`, and memory per
//! cached certificate), `warm` (loading 1k/10k stored certificates at start, parallel
//! against sequential, per backend), `storm` (1,000 concurrent TLS handshakes for one new
//! on-demand name), `backends` (p50/p99 per operation against the raw clients), `all`.
//! Results go to `benches/results/<suite>.json`; `benches/plot.sh` draws the scaling
//! figures. Servers come from `CERTSTORE_TEST_*_URL`; a suite skips (and records) what
//! is not configured. The micro-benchmarks stay in each crate's `benches/` (criterion):
//! `cargo bench -p cert-core`, `-p cert-redis`, and so on.

mod alloc;
mod backends;
mod cache;
mod fixtures;
mod report;
mod stats;
mod storm;
mod warm;

use clap::{Parser, ValueEnum};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// The error every suite returns.
pub type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    Cache,
    Warm,
    Storm,
    Backends,
    All,
}

/// certstore's load and scaling benchmarks (build with --release).
#[derive(Debug, Parser)]
#[command(name = "certstore-bench")]
struct Cli {
    /// The suite to run.
    #[arg(value_enum)]
    suite: Suite,
    /// Smaller sizes and fewer samples, for a quick check; results go to
    /// `<suite>-quick.json`.
    #[arg(long)]
    quick: bool,
    /// How many times each noisy figure is repeated (the median is reported); default 5,
    /// or 3 with `--quick`.
    #[arg(long)]
    repeats: Option<usize>,
}

/// What every suite is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reduced sizes.
    pub quick: bool,
    /// Repeats of noisy figures.
    pub repeats: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for meaningful figures");
    }
    let options = Options {
        quick: cli.quick,
        repeats: cli.repeats.unwrap_or(if cli.quick { 3 } else { 5 }).max(1),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.suite, &options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("benchmark failed: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(suite: Suite, options: &Options) -> BoxResult<()> {
    let suites: &[Suite] = match suite {
        Suite::All => &[Suite::Cache, Suite::Warm, Suite::Storm, Suite::Backends],
        _ => std::slice::from_ref(&suite),
    };
    for suite in suites {
        let machine = report::Machine::detect();
        let (q, r) = (options.quick, options.repeats);
        let path = match suite {
            Suite::Cache => report::write("cache", q, r, machine, cache::run(options).await?)?,
            Suite::Warm => report::write("warm", q, r, machine, warm::run(options).await?)?,
            Suite::Storm => report::write("storm", q, r, machine, storm::run(options).await?)?,
            Suite::Backends => {
                report::write("backends", q, r, machine, backends::run(options).await?)?
            }
            Suite::All => continue,
        };
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
