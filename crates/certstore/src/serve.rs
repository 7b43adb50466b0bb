//! `certstore serve`: the HTTPS demo.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cert_core::tokio_rustls::TlsAcceptor;
use cert_core::{
    Cache, CertManager, InternalIssuer, InternalIssuerConfig, Issuer, ManagerConfig, Store,
    server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::output::{CliError, CliResult};
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
}

/// Runs the server until Ctrl-C.
pub async fn run(global: &Global, args: ServeArgs) -> CliResult {
    let opened = global.open(&args.storage.storage).await?;
    let storage: Arc<dyn Store> = Arc::clone(&opened.store);
    let ca = Arc::new(InternalIssuer::new(
        Arc::clone(&storage),
        InternalIssuerConfig::default(),
    ));
    let root_pem = ca
        .root_pem()
        .await
        .map_err(|err| CliError::failed(format!("cannot obtain certificates: {err}")))?;
    let issuers: Vec<Arc<dyn Issuer>> = vec![ca.clone()];
    let manager = CertManager::new(
        storage,
        Arc::new(Cache::new(10_000)),
        issuers,
        ManagerConfig::default().with_check_interval(Duration::from_secs(60)),
    );
    if let Err(failures) = manager.manage(&args.domains).await {
        let text: Vec<String> = failures
            .iter()
            .map(|(name, err)| format!("{name}: {err}"))
            .collect();
        return Err(CliError::failed(format!(
            "cannot obtain certificates: {}",
            text.join("; ")
        )));
    }
    manager.start();

    let resolver = manager
        .resolver()
        .with_default(args.domains.first().cloned().unwrap_or_default());
    let mut config = server_config(Arc::new(resolver))
        .map_err(|err| CliError::failed(format!("TLS configuration: {err}")))?;
    // The demo answers HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listen_error =
        |err: std::io::Error| CliError::usage(format!("cannot listen on {}: {err}", args.listen));
    let listener = TcpListener::bind(args.listen).await.map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let root_path = opened
        .file_root
        .as_ref()
        .filter(|_| !opened.url.is_encrypted())
        .map(|root| root.join(ca.root_key()));
    let root_shown = match root_path {
        Some(path) if path.exists() => path.display().to_string(),
        _ => {
            let fallback =
                std::env::temp_dir().join(format!("certstore-root-{}.pem", std::process::id()));
            std::fs::write(&fallback, &root_pem).map_err(|err| {
                CliError::failed(format!("cannot write {}: {err}", fallback.display()))
            })?;
            fallback.display().to_string()
        }
    };
    let host = args.domains.first().map_or("localhost", String::as_str);
    println!("listening on {addr}");
    println!("root CA certificate: {root_shown}");
    println!(
        "try: curl --cacert {root_shown} https://{host}:{}/",
        addr.port()
    );

    let manager = Arc::new(manager);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let manager = Arc::clone(&manager);
                tokio::spawn(async move {
                    if let Err(err) = answer(acceptor, tcp, &manager).await {
                        tracing::debug!(%peer, error = %err, "connection ended");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => {
                println!("shutting down");
                manager.stop();
                return Ok(());
            }
        }
    }
}

async fn answer(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    manager: &CertManager,
) -> std::io::Result<()> {
    let mut tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
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
