//! The TLS and HTTP-01 front ends that answer Pebble's validations round robin across the
//! nodes, and TLS clients that trust a given root.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cert_core::challenge::{ACME_TLS_ALPN, Challenges, Http01Handler};
use cert_core::rustls::pki_types::ServerName;
use cert_core::rustls::{self, RootCertStore};
use cert_core::tokio_rustls::TlsConnector;
use cert_core::{CertManager, server_config};
use tokio::net::TcpListener;

pub fn connector(roots: RootCertStore) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Serves TLS for `managers` (round robin per connection) on `listener`, with TLS-ALPN-01
/// answered from storage and on-demand certificates.
pub fn serve_tls(
    listener: TcpListener,
    nodes: Vec<(CertManager, Arc<Challenges>)>,
) -> tokio::task::JoinHandle<()> {
    let configs: Vec<_> = nodes
        .iter()
        .map(|(manager, challenges)| {
            let resolver = manager.resolver().with_challenges(Arc::clone(challenges));
            let mut config = server_config(Arc::new(resolver)).unwrap();
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
            Arc::new(config)
        })
        .collect();
    let counter = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let i = counter.fetch_add(1, Ordering::SeqCst) % nodes.len();
            let (manager, challenges) = nodes[i].clone();
            let config = Arc::clone(&configs[i]);
            tokio::spawn(async move {
                let accepted = cert_core::accept_lazy_hello(stream, config, |hello| async move {
                    if hello.is_acme_tls_alpn() {
                        if let Some(name) = &hello.server_name {
                            challenges.prepare_tls_alpn01(name).await;
                        }
                    } else {
                        manager.prepare_handshake(hello.server_name).await;
                    }
                })
                .await;
                if let Ok(mut tls) = accepted {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

/// Serves HTTP-01 for `nodes` round robin on `listener`.
pub fn serve_http(
    listener: TcpListener,
    nodes: Vec<Arc<Challenges>>,
) -> tokio::task::JoinHandle<()> {
    let hits = Arc::new(AtomicUsize::new(0));
    let listeners: Vec<_> = nodes
        .iter()
        .map(|challenges| {
            let handler = Http01Handler::new(Arc::clone(challenges));
            let inner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            inner.set_nonblocking(true).unwrap();
            let addr = inner.local_addr().unwrap();
            handler.serve(TcpListener::from_std(inner).unwrap());
            addr
        })
        .collect();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let addr = listeners[hits.fetch_add(1, Ordering::SeqCst) % listeners.len()];
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                }
            });
        }
    })
}

pub async fn bind(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port)).await.unwrap()
}

/// Connects to `port` with SNI `name`, trusting `roots`; returns the first bytes.
pub async fn handshake(port: u16, name: &str, roots: RootCertStore) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector(roots)
        .connect(ServerName::try_from(name.to_owned()).unwrap(), stream)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
