//! `certstore serve`: the HTTPS demo.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cert_core::listener::{ListenerOptions, TlsListener};
use cert_core::tokio_rustls::server::TlsStream;
use cert_core::{
    Cache, CertManager, InternalIssuer, InternalIssuerConfig, Issuer, ManagerConfig, Store,
    server_config,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

use crate::output::{CliError, CliResult, random_suffix};
use crate::{Global, StorageArg};

/// Arguments of `certstore serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// A name to serve a certificate for (repeatable).
    #[arg(long = "domain", value_name = "NAME", default_values_t = ["localhost".to_string()])]
    domains: Vec<String>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    listen: SocketAddr,
    /// How long certificates from the internal CA are valid (`90s`, `30m`, `24h`, `7d`).
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_duration)]
    leaf_lifetime: Duration,
    /// How often the renewal task looks at the certificates.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    check_interval: Duration,
    /// The time to live of issuance locks: how long the fleet waits for a node that died
    /// holding one.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    lock_ttl: Duration,
    /// Serve metrics in Prometheus text format at http://ADDR/metrics, and a health check
    /// at /healthz (200 once every name has a certificate, 503 before).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

/// How long `serve` waits for its certificates before it starts answering; the rest
/// continues in the background.
const STARTUP_WAIT: Duration = Duration::from_secs(5);

/// A duration written as a number and a unit: `ms`, `s`, `m`, `h` or `d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let seconds = |factor: u64| {
        number
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))
    };
    let duration = match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3_600),
        "d" => seconds(86_400),
        other => Err(format!(
            "unknown unit {other:?} in {text:?} (ms, s, m, h or d)"
        )),
    }?;
    if duration.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(duration)
}

/// A copy of the root CA certificate for clients (`curl --cacert`), when the storage
/// holds none as a plain file. It lives in a new directory with a random name and mode
/// 0700 under the temporary directory, so no other user can plant a link where it is
/// written or swap the file a client then trusts; it is removed when dropped (the server
/// stopping on Ctrl-C or SIGTERM, or failing).
#[derive(Debug)]
struct RootCopy {
    dir: PathBuf,
    path: PathBuf,
}

impl RootCopy {
    /// Writes `pem` to `<base>/certstore-<random>/root.pem`.
    fn write(base: &Path, pem: &str) -> std::io::Result<Self> {
        let mut attempts = 0;
        let dir = loop {
            let dir = base.join(format!("certstore-{}", random_suffix()));
            // Not recursive: creating fails when anything is already there.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempts < 3 => {
                    attempts += 1;
                }
                Err(err) => return Err(err),
            }
        };
        let copy = RootCopy {
            path: dir.join("root.pem"),
            dir,
        };
        // From here a failure drops `copy`, which removes the directory again.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&copy.path)?;
        file.write_all(pem.as_bytes())?;
        Ok(copy)
    }
}

impl Drop for RootCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Runs the server until Ctrl-C or SIGTERM. It exits with an error only when it cannot listen: a
/// name that cannot be served now (a storage outage, an issuer failing) is logged and
/// left to the engine, which retries it with backoff while the other names are served.
pub async fn run(global: &Global, args: ServeArgs) -> CliResult {
    // Bind first: the one failure that ends the command, reported before any other work.
    let listen_error =
        |err: std::io::Error| CliError::usage(format!("cannot listen on {}: {err}", args.listen));
    let listener = TcpListener::bind(args.listen).await.map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let metrics = match args.metrics {
        Some(at) => {
            let bound = TcpListener::bind(at)
                .await
                .map_err(|err| CliError::usage(format!("cannot listen on {at}: {err}")))?;
            let handle = certstore::prometheus::install()
                .map_err(|err| CliError::failed(format!("cannot record metrics: {err}")))?;
            Some((bound, handle))
        }
        None => None,
    };

    // Both stop signals are caught from the start, so that stopping the server at any
    // moment still runs the clean-up (the root copy is removed by its destructor).
    let signal_error =
        |err: std::io::Error| CliError::failed(format!("cannot handle stop signals: {err}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;

    let opened = global.open(&args.storage.storage).await?;
    let storage: Arc<dyn Store> = Arc::clone(&opened.store);
    let ca = Arc::new(InternalIssuer::new(
        Arc::clone(&storage),
        InternalIssuerConfig::default().with_leaf_lifetime(args.leaf_lifetime),
    ));
    let issuers: Vec<Arc<dyn Issuer>> = vec![ca.clone()];
    let manager = CertManager::new(
        storage,
        Arc::new(Cache::new(10_000)),
        issuers,
        ManagerConfig::default()
            .with_check_interval(args.check_interval)
            .with_lock(cert_core::LockOptions::default().with_ttl(args.lock_ttl)),
    );
    // Certificates already in storage are served as soon as they are loaded; a name that
    // must be issued first may wait for a lock a dead node left behind (up to its time to
    // live). So the server waits a little, then answers while the rest goes on.
    let mut managing = tokio::spawn({
        let manager = manager.clone();
        let domains = args.domains.clone();
        async move {
            if let Err(failures) = manager.manage(&domains).await {
                for (name, err) in failures.iter() {
                    tracing::warn!(name, error = %err, "cannot serve this name yet; retrying in the background");
                }
            }
            manager.start();
        }
    });
    if tokio::time::timeout(STARTUP_WAIT, &mut managing)
        .await
        .is_err()
    {
        tracing::info!("still obtaining certificates; answering meanwhile");
    }
    let root_pem = match tokio::time::timeout(STARTUP_WAIT, ca.root_pem()).await {
        Ok(Ok(pem)) => Some(pem),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "the internal CA is not available yet; certificates are issued once it is");
            None
        }
        Err(_) => None,
    };

    let resolver = manager
        .resolver()
        .with_default(args.domains.first().cloned().unwrap_or_default());
    let mut config = server_config(Arc::new(resolver))
        .map_err(|err| CliError::failed(format!("TLS configuration: {err}")))?;
    // The demo answers HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Handshakes run concurrently, each with a deadline: a silent client holds up no one.
    let mut incoming = TlsListener::from_tcp(listener, config, ListenerOptions::default())
        .map_err(listen_error)?
        .incoming();

    let root_path = opened
        .file_root
        .as_ref()
        .filter(|_| !opened.url.is_encrypted())
        .map(|root| root.join(ca.root_key()));
    let mut root_copy = None;
    let root_shown = match (root_path, root_pem) {
        (Some(path), _) if path.exists() => path.display().to_string(),
        (_, Some(root_pem)) => match RootCopy::write(&std::env::temp_dir(), &root_pem) {
            Ok(copy) => {
                let shown = copy.path.display().to_string();
                root_copy = Some(copy);
                shown
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot write the root certificate to a temporary directory");
                "(not written)".to_owned()
            }
        },
        (_, None) => "(not available yet)".to_owned(),
    };
    let host = args.domains.first().map_or("localhost", String::as_str);
    println!("listening on {addr}");
    let mut exporter = None;
    if let Some((bound, handle)) = metrics {
        if let Ok(at) = bound.local_addr() {
            println!("metrics: http://{at}/metrics");
        }
        let manager = manager.clone();
        let names = args.domains.clone();
        let healthy = move || names.iter().all(|name| manager.cache().get(name).is_some());
        exporter = Some(tokio::spawn(certstore::prometheus::serve(
            bound, handle, healthy,
        )));
    }
    println!("root CA certificate: {root_shown}");
    println!(
        "try: curl --cacert {root_shown} https://{host}:{}/",
        addr.port()
    );

    let manager = Arc::new(manager);
    loop {
        tokio::select! {
            Some(tls) = incoming.next() => {
                let manager = Arc::clone(&manager);
                tokio::spawn(async move {
                    let peer = tls.get_ref().0.peer_addr().ok();
                    if let Err(err) = answer(tls, &manager).await {
                        tracing::debug!(?peer, error = %err, "connection ended");
                    }
                });
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    println!("shutting down");
    if let Some(exporter) = exporter {
        exporter.abort();
    }
    managing.abort();
    manager.stop();
    drop(root_copy);
    Ok(())
}

async fn answer(mut tls: TlsStream<TcpStream>, manager: &CertManager) -> std::io::Result<()> {
    let server_name = tls
        .get_ref()
        .1
        .server_name()
        .unwrap_or("(no server name)")
        .to_owned();
    // Read the request head (bounded).
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("request timed out"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 * 1024 {
            tls.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").await?;
            return tls.shutdown().await;
        }
    }
    let meta = manager.certificate_meta(&server_name).or_else(|| {
        manager
            .managed_names()
            .first()
            .and_then(|name| manager.certificate_meta(name))
    });
    let cert_line = match meta {
        Some(meta) => format!(
            "certificate for {} from issuer \"{}\", serial {}, valid until {} (unix time)",
            meta.names.join(", "),
            meta.issuer,
            meta.serial,
            meta.not_after
        ),
        None => "no certificate metadata".to_owned(),
    };
    let body = format!(
        "<!doctype html>\n<html><head><title>certstore</title></head><body>\n\
         <h1>Hello from certstore</h1>\n<p>Server name: {}</p>\n<p>{}</p>\n\
         <p>Served by process {}.</p>\n</body></html>\n",
        html_escape(&server_name),
        html_escape(&cert_line),
        std::process::id()
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_root_copy_is_private_unguessable_and_removed() {
        let base = tempfile::tempdir().unwrap();
        let copy = RootCopy::write(base.path(), "PEM").unwrap();
        let (dir, path) = (copy.dir.clone(), copy.path.clone());
        assert_eq!(dir.parent(), Some(base.path()));
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("certstore-") && name.len() > 30, "{name}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "PEM");
        let other = RootCopy::write(base.path(), "PEM").unwrap();
        assert_ne!(other.dir, dir, "each server gets its own directory");
        drop(copy);
        assert!(!dir.exists(), "dropping the copy removes it");
        assert!(other.path.exists());
    }

    #[test]
    fn durations_need_a_number_and_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("6s"), Ok(Duration::from_secs(6)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "10", "s", "1w", "0s", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
