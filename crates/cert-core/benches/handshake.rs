//! Full TLS handshakes in memory: the engine's resolver (100,000 names cached) against a
//! rustls configuration with one static certificate, in the same run, and the resolver
//! again with the Prometheus recorder taking the metrics it records on every handshake
//! (against the same resolver with no recorder). Both sides verify and sign exactly as
//! over a socket; only the transport is a byte buffer.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use cert_core::rustls::pki_types::{PrivateKeyDer, ServerName, pem::PemObject};
use cert_core::rustls::{self, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use cert_core::testing::dummy_certified_key;
use cert_core::{Cache, CertResolver, certificate, server_config};
use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;

fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).unwrap();
            server.process_new_packets().unwrap();
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
            client.process_new_packets().unwrap();
        }
    }
}

fn handshakes(c: &mut Criterion) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // A CA and a leaf for bench.example.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["bench.example".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let chain_pem = leaf.pem();
    let key_pem = leaf_key.serialize_pem();

    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    let static_config = Arc::new(
        ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                certificate::parse_chain(&chain_pem).unwrap(),
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    );

    let cache = Arc::new(Cache::new(100_001));
    for i in 0..100_000 {
        cache.insert(&format!("host-{i}.example"), dummy_certified_key(1));
    }
    cache.insert(
        "bench.example",
        certificate::certified_key_from_pem(&chain_pem, &key_pem).unwrap(),
    );
    let resolver_config =
        Arc::new(server_config(Arc::new(CertResolver::new(Arc::clone(&cache)))).unwrap());

    let name = ServerName::try_from("bench.example").unwrap();
    let handshake = |config: &Arc<ServerConfig>| {
        let mut client = ClientConnection::new(Arc::clone(&client_config), name.clone()).unwrap();
        let mut server = ServerConnection::new(Arc::clone(config)).unwrap();
        pump(&mut client, &mut server);
    };
    let mut group = c.benchmark_group("full_handshake");
    for (label, config) in [
        ("static_single_cert_baseline", &static_config),
        ("cache_resolver_100k_names", &resolver_config),
    ] {
        group.bench_function(label, |b| b.iter(|| handshake(config)));
    }
    // The handshakes run on this thread, so a recorder local to it sees every number the
    // resolver records.
    let recorder = PrometheusBuilder::new().build_recorder();
    group.bench_function("cache_resolver_100k_names_metrics_on", |b| {
        metrics::with_local_recorder(&recorder, || b.iter(|| handshake(&resolver_config)))
    });
    let scraped = recorder.handle().render();
    assert!(
        scraped.contains("certstore_cache_hits_total"),
        "the recorder saw the handshakes: {scraped}"
    );
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
