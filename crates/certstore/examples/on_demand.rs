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

use cert_core::{
    Cache, CertManager, InternalIssuer, InternalIssuerConfig, ManagerConfig, OnDemandConfig,
    accept_lazy, server_config,
};
use tokio::io::AsyncWriteExt;

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
    let manager = Arc::new(CertManager::new(
        opened.store,
        Arc::new(Cache::new(10_000)),
        vec![ca],
        ManagerConfig::default(),
    ));
    // Only names below localhost, at most 10 new names a minute.
    manager.enable_on_demand(
        OnDemandConfig::default()
            .with_decision(|name: String| async move { name.ends_with(".localhost") })
            .with_rate_limit(10, Duration::from_secs(60)),
    );
    manager.start();
    let config = Arc::new(server_config(Arc::new(manager.resolver()))?);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {listen}, storage {}", opened.description);
    loop {
        let (tcp, _) = listener.accept().await?;
        let (manager, config) = (Arc::clone(&manager), Arc::clone(&config));
        tokio::spawn(async move {
            let prepare = |name| async move { manager.prepare_handshake(name).await };
            if let Ok(mut tls) = accept_lazy(tcp, config, prepare).await {
                let body = "hello from an on-demand certificate\n";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
    }
}
