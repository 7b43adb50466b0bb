//! On-demand TLS: certificates are issued during the first handshake for a name the
//! decision function allows, and kept in any storage the URL names.
//!
//! ```text
//! cargo run -p certstore --example on_demand -- 127.0.0.1:8443 ./.certstore
//! curl --cacert ./.certstore/ca/local/root.crt --resolve a.localhost:8443:127.0.0.1 https://a.localhost:8443/
//! ```
//!
//! It uses the internal CA so it runs anywhere; with an ACME issuer the same code issues
//! publicly trusted certificates for names that resolve to this host.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use certstore::{
    Cache, CertManager, InternalIssuer, InternalIssuerConfig, ListenerOptions, ManagerConfig,
    OnDemandConfig, TlsListener, server_config,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8443".to_owned());
    let url = args.next().unwrap_or_else(|| ".certstore".to_owned());
    let opened = certstore::open(&url, &certstore::OpenOptions::default()).await?;
    let ca = Arc::new(InternalIssuer::new(
        opened.store.clone(),
        InternalIssuerConfig::default(),
    ));
    let manager = CertManager::new(
        opened.store,
        Arc::new(Cache::new(10_000)),
        vec![ca.clone()],
        ManagerConfig::default(),
    );
    // Only names below localhost, at most 10 new names a minute.
    manager.enable_on_demand(
        OnDemandConfig::default()
            .with_decision(|name: String| async move { name.ends_with(".localhost") })
            .with_rate_limit(10, Duration::from_secs(60)),
    );
    manager.start();
    // The CA exists (and its root is in storage for clients) before the first handshake.
    ca.root_pem().await?;
    let mut config = server_config(Arc::new(manager.resolver()))?;
    // The answer below is HTTP/1.1: offer only that.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Between the ClientHello and the choice of certificate, the name is loaded or
    // obtained; the deadline leaves room for an issuance.
    let options = ListenerOptions::default()
        .with_handshake_timeout(Duration::from_secs(30))
        .with_prepare(move |hello| {
            let manager = manager.clone();
            async move { manager.prepare_handshake(hello.server_name).await }
        });
    let mut incoming = TlsListener::bind_with(&listen, config, options)
        .await?
        .incoming();
    println!("listening on {listen}, storage {}", opened.description);
    while let Some(mut tls) = incoming.next().await {
        tokio::spawn(async move {
            // Read the request (its first packet is enough here) before answering, so that
            // closing does not reset a connection with unread data.
            let mut request = [0u8; 4096];
            let _ = tls.read(&mut request).await;
            let body = "hello from an on-demand certificate\n";
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
    Ok(())
}
