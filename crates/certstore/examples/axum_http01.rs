//! An axum HTTPS server whose certificate comes from an ACME CA by HTTP-01, kept in any
//! storage URL so that every instance behind a load balancer shares the account, the
//! challenge answers and the certificate.
//!
//! ```text
//! cargo run -p certstore --example axum_http01 -- example.com ops@example.com [STORAGE-URL]
//! ```
//!
//! It needs a real domain whose DNS points at this host, with ports 80 and 443 reachable
//! from the internet: the CA connects to port 80 to validate. It uses Let's Encrypt's
//! staging directory (certificates browsers do not trust) unless `CERTSTORE_ACME_DIRECTORY`
//! names another, for example `https://acme-v02.api.letsencrypt.org/directory`.
#![allow(missing_docs)]

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use cert_core::challenge::{ChallengeType, Challenges, Http01Handler};
use cert_core::issuer::LETS_ENCRYPT_STAGING;
use certstore::{
    AcmeConfig, AcmeIssuer, Cache, CertManager, Issuer, ManagerConfig, TlsListener, server_config,
};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(domain), Some(email)) = (args.next(), args.next()) else {
        eprintln!("usage: axum_http01 DOMAIN EMAIL [STORAGE-URL]");
        std::process::exit(2);
    };
    let url = args.next().unwrap_or_else(|| ".certstore".to_owned());
    let directory =
        std::env::var("CERTSTORE_ACME_DIRECTORY").unwrap_or_else(|_| LETS_ENCRYPT_STAGING.into());

    let opened = certstore::open(&url, &certstore::OpenOptions::default()).await?;
    let challenges = Challenges::new(opened.store.clone());
    let issuer = AcmeIssuer::new(
        opened.store.clone(),
        Arc::clone(&challenges),
        AcmeConfig::new(directory)
            .with_email(email)
            .agree_to_terms()
            .with_challenge_types([ChallengeType::Http01]),
    );
    let manager = CertManager::new(
        opened.store,
        Arc::new(Cache::new(1_000)),
        vec![Arc::new(issuer) as Arc<dyn Issuer>],
        ManagerConfig::default(),
    );

    // Port 80: challenge answers (from whichever instance placed the order, through the
    // shared storage); everything else is redirected to HTTPS.
    let http = Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(to_https)
        .with_state(Http01Handler::new(challenges));
    let plain = TcpListener::bind("0.0.0.0:80").await?;
    tokio::spawn(async move { axum::serve(plain, http).await });

    // Obtained once for the whole fleet (or loaded when another instance already has it),
    // then renewed in the background. A failure is an error naming the domain and why.
    manager.manage([domain.as_str()]).await?;
    manager.start();

    let mut config = server_config(Arc::new(manager.resolver()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let app = Router::new().route("/", get(|| async { "hello over HTTPS\n" }));
    // Each handshake runs in a task of its own with a deadline: a slow client holds up no
    // one.
    let listener = TlsListener::bind("0.0.0.0:443", config).await?;
    println!(
        "serving https://{domain}/ from storage {}",
        opened.description
    );
    axum::serve(listener, app).await?;
    Ok(())
}

async fn challenge(State(handler): State<Http01Handler>, uri: Uri) -> Response {
    match handler.answer(uri.path()).await {
        Some(key_authorization) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn to_https(headers: axum::http::HeaderMap, uri: Uri) -> Response {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let host = host.split(':').next().unwrap_or(host);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Redirect::permanent(&format!("https://{host}{path}")).into_response()
}
