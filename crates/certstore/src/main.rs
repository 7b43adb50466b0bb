//! The `certstore` command: an HTTPS demo server and the tools to operate a certificate
//! storage shared by a fleet of TLS servers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use certstore::{OpenOptions, Opened};
use clap::{Parser, Subcommand};

use crate::output::{CliResult, printable, scrub};

const AFTER_HELP: &str = "\
Storage URLs (--storage, or the CERTSTORE_STORAGE environment variable):
  ./dir or file:///var/lib/certstore      a directory
  redis://[:password@]host:6379/0?namespace=prod   (rediss:// for TLS)
  postgres://user:password@host/db?namespace=prod&table_prefix=tls
  mysql://... mariadb://... sqlite:///var/lib/certstore.db
  s3://bucket/prefix?region=eu-west-1 (&endpoint=http://host:9000&path_style=true)
  azblob://account/container/prefix (&endpoint=... for Azurite)
  encrypted+<any of the above>            values sealed with CERTSTORE_KEY or --key-file

Exit codes:
  0  success
  1  the operation failed (storage unreachable, a copy did not verify, a check failed)
  2  bad usage or input (unknown URL scheme, missing or wrong key, missing certificate)
Errors are printed as one line on standard error (bad arguments: with the usage);
a failed command writes nothing.";

#[derive(Debug, Parser)]
#[command(
    name = "certstore",
    version,
    about = "Shared certificate storage for fleets of TLS servers",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// File holding the encryption key (32 raw bytes or base64) for encrypted+ URLs,
    /// instead of the CERTSTORE_KEY environment variable.
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// File holding a previous key that still opens values during a rotation
    /// (repeatable; CERTSTORE_PREVIOUS_KEYS holds more, base64, comma separated).
    #[arg(long, global = true, value_name = "FILE")]
    previous_key_file: Vec<PathBuf>,
    /// Create the S3 bucket or Azure container if it does not exist.
    #[arg(long, global = true)]
    create: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
}

/// The storage a command works on.
#[derive(Debug, clap::Args)]
struct StorageArg {
    /// The storage URL (see below).
    #[arg(
        long,
        short,
        env = "CERTSTORE_STORAGE",
        default_value = ".certstore",
        value_name = "URL",
        hide_env_values = true
    )]
    storage: String,
}

/// Settings every command shares.
struct Global {
    options: OpenOptions,
    quiet: bool,
}

impl Global {
    async fn open(&self, url: &str) -> CliResult<Opened> {
        output::open(url, &self.options).await
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an HTTPS server with certificates from the internal CA, kept in shared storage.
    Serve(commands::serve::ServeArgs),
    /// Print (or write to a file) the internal CA's root certificate, for clients to trust.
    CaRoot(commands::ca_root::CaRootArgs),
    /// List certificates: name, issuer, end of validity, time left.
    Ls(commands::ls::LsArgs),
    /// Show one certificate: names, issuer, validity, key type, serial, fingerprint.
    Show(commands::show::ShowArgs),
    /// Write a certificate and its key to files (mode 0600, directory 0700).
    Export(commands::export::ExportArgs),
    /// Store a certificate and key from PEM files.
    Import(commands::import::ImportArgs),
    /// Remove one certificate (a broken one, say), under its name's lock.
    Rm(commands::rm::RmArgs),
    /// Copy every key from one storage to another, verified and resumable.
    Migrate(commands::migrate::MigrateArgs),
    /// Re-seal every value of an encrypted storage under the current key.
    Rekey(commands::rekey::RekeyArgs),
    /// List held locks with their holder token, age and expiry.
    Locks(commands::locks::LocksArgs),
    /// Remove a lock whatever its holder (for a holder known to be gone).
    Unlock(commands::locks::UnlockArgs),
    /// Remove certificates expired past a grace period, and expired locks.
    Clean(commands::clean::CleanArgs),
    /// Check connectivity, permissions, a round trip, locks, clock skew and the key.
    Doctor(commands::doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                err.exit();
            }
            // Clap's whole message: its first line alone often does not say what is
            // missing (`unlock` without `--force` names the flag on the next line).
            // Arguments can hold a storage URL: scrub whatever secrets are known.
            let text = scrub(&err.render().to_string());
            eprintln!("{}", text.trim_end());
            return ExitCode::from(output::USAGE);
        }
    };
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a pipe they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(output::FAILED);
        }
    };
    let mut options = OpenOptions::default().with_create(cli.create);
    if let Some(path) = cli.key_file {
        options = options.with_key_file(path);
    }
    for path in cli.previous_key_file {
        options = options.with_previous_key_file(path);
    }
    let global = Global {
        options,
        quiet: cli.quiet,
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => commands::serve::run(&global, args).await,
            Command::CaRoot(args) => commands::ca_root::run(&global, args).await,
            Command::Ls(args) => commands::ls::run(&global, args).await,
            Command::Show(args) => commands::show::run(&global, args).await,
            Command::Export(args) => commands::export::run(&global, args).await,
            Command::Import(args) => commands::import::run(&global, args).await,
            Command::Rm(args) => commands::rm::run(&global, args).await,
            Command::Migrate(args) => commands::migrate::run(&global, args).await,
            Command::Rekey(args) => commands::rekey::run(&global, args).await,
            Command::Locks(args) => commands::locks::list(&global, args).await,
            Command::Unlock(args) => commands::locks::unlock(&global, args).await,
            Command::Clean(args) => commands::clean::run(&global, args).await,
            Command::Doctor(args) => commands::doctor::run(&global, args).await,
        }
    });
    // Background tasks (lock keep-alives, connection managers) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = printable(&scrub(&err.message).replace('\n', " "));
            eprintln!("error: {message}");
            ExitCode::from(err.code)
        }
    }
}
