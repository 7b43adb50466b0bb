//! ACME Renewal Information (RFC 9773) end to end: Pebble behind a small HTTPS endpoint
//! that adds renewal information to its directory. The CA's suggested window sets when a
//! certificate is renewed, and a renewal order names the certificate it replaces.
#![allow(clippy::unwrap_used, missing_docs)]

mod pebble;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cert_core::challenge::ChallengeType;
use cert_core::{Cache, Event, Issuer, MemoryStorage, Store, server_config};
use pebble::*;

/// RFC 3339 for a unix time (UTC).
fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A small HTTPS endpoint in front of Pebble (which has no renewal information): its
/// directory is Pebble's plus `renewalInfo` pointing here, and it answers renewal-info
/// requests with a fixed window, counting them per certificate. It is addressed as
/// `localhost` (Pebble as `127.0.0.1`): TLS clients keep resumption tickets per server
/// name, not per port, and offering Pebble's ticket here would confuse the handshake.
struct AriServer {
    port: u16,
    hits: Arc<ari_hits::Hits>,
    _task: tokio::task::JoinHandle<()>,
}

mod ari_hits {
    /// Renewal-info requests seen, by certificate identifier, and the payloads of the
    /// new-order requests intercepted.
    #[derive(Default)]
    pub struct Hits(
        pub std::sync::Mutex<Vec<String>>,
        pub std::sync::Mutex<Vec<serde_json::Value>>,
    );
}

/// The JSON payload of a flattened JWS request body.
fn jws_payload(body: &[u8]) -> serde_json::Value {
    use base64::Engine;
    let jws: serde_json::Value = serde_json::from_slice(body).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

impl AriServer {
    async fn start(pebble: &Pebble, window: (i64, i64)) -> AriServer {
        AriServer::start_with(pebble, window, false).await
    }

    /// With `intercept_orders`, the directory sends new orders here: their payloads are
    /// recorded and refused with a `malformed` problem.
    async fn start_with(pebble: &Pebble, window: (i64, i64), intercept_orders: bool) -> AriServer {
        let listener = bind(free_port()).await;
        let port = listener.local_addr().unwrap().port();
        let mut directory: serde_json::Value =
            serde_json::from_str(&pebble.get(pebble.port, "/dir").await).unwrap();
        directory["renewalInfo"] = format!("https://localhost:{port}/renewal-info").into();
        if intercept_orders {
            directory["newOrder"] = format!("https://localhost:{port}/new-order").into();
        }
        let directory = directory.to_string();
        let info = format!(
            "{{\"suggestedWindow\": {{\"start\": \"{}\", \"end\": \"{}\"}}}}",
            rfc3339(window.0),
            rfc3339(window.1)
        );
        let dir = pebble.dir.path();
        let chain = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
        let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
        let cache = Arc::new(Cache::new(10));
        cache.insert(
            "localhost",
            cert_core::certificate::certified_key_from_pem(&chain, &key).unwrap(),
        );
        let resolver = cert_core::CertResolver::new(cache).with_default("localhost");
        let mut config = server_config(Arc::new(resolver)).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = cert_core::tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let hits = Arc::new(ari_hits::Hits::default());
        let seen = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (directory, info, seen) = (directory.clone(), info.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 2048];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length").then_some(value)
                        })
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + length {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let (status, extra, body) = if path == "/dir" {
                        ("200 OK", String::new(), directory)
                    } else if let Some(id) = path.strip_prefix("/renewal-info/") {
                        seen.0.lock().unwrap().push(id.to_owned());
                        ("200 OK", "Retry-After: 3600\r\n".to_owned(), info)
                    } else if path == "/new-order" {
                        seen.1
                            .lock()
                            .unwrap()
                            .push(jws_payload(&buf[end..end + length]));
                        (
                            "400 Bad Request",
                            String::new(),
                            r#"{"type": "urn:ietf:params:acme:error:malformed", "detail": "refused by the test"}"#.to_owned(),
                        )
                    } else {
                        ("404 Not Found", String::new(), String::new())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        AriServer {
            port,
            hits,
            _task: task,
        }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.0.lock().unwrap().clone()
    }

    fn orders(&self) -> Vec<serde_json::Value> {
        self.hits.1.lock().unwrap().clone()
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
}

/// The CA's suggested window (ARI) sets the renewal moment, is fetched by one node and
/// shared through storage, and makes a certificate due that its lifetime says is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_info_window_drives_renewal() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());

    // First a window in the future: the renewal moment lands inside it.
    let now = now_unix();
    let future = (now + 10_000, now + 20_000);
    let ari = AriServer::start(&pebble, future).await;
    // A node whose issuer reaches Pebble through the renewal-info endpoint on `port`.
    let at = |port: u16| {
        let mut config = acme_config(&pebble, &[ChallengeType::Http01]);
        config.directory_url = format!("https://localhost:{port}/dir");
        node_with(&storage, &pebble, config)
    };
    let Node {
        manager: a,
        challenges: a_challenges,
        ..
    } = at(ari.port);
    let _http = serve_http(bind(pebble.http_port).await, vec![a_challenges]);
    let name = "ari.example.com";
    a.manage([name]).await.unwrap();
    let moment = a.renewal_moment(name).unwrap();

    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    assert!(
        (future.0..=future.1).contains(&unix(moment)),
        "{moment:?} {:?}",
        ari.hits()
    );
    assert_eq!(ari.hits().len(), 1);

    // A second node loads the certificate and uses the stored window: no second fetch.
    let b = at(ari.port).manager;
    let mut rx = b.subscribe();
    b.manage([name]).await.unwrap();
    assert!((future.0..=future.1).contains(&unix(b.renewal_moment(name).unwrap())));
    assert_eq!(ari.hits().len(), 1, "the window is shared through storage");
    assert_eq!(count_obtained(&mut rx), 0, "not due yet");

    // A window that has started (for example after a mass revocation) makes the
    // certificate due at once, long before its lifetime would. (Another directory URL,
    // so another issuer area of the same storage; the HTTP-01 server answers from it.)
    let past = (now - 120, now - 60);
    let ari2 = AriServer::start(&pebble, past).await;
    let c = at(ari2.port).manager;
    let mut rx = c.subscribe();
    c.manage([name]).await.unwrap();
    assert_eq!(count_obtained(&mut rx), 1);
    let first = c.certificate_meta(name).unwrap();
    c.renew_due().await;
    let events: Vec<Event> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::Renewed { .. })),
        "{events:?}"
    );
    assert_ne!(c.certificate_meta(name).unwrap().serial, first.serial);
}

/// Renewal passes take the window from memory until the CA's refresh time: a steady
/// pass reads no renewal information from storage, however many names, and a second
/// node reads it once, then no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_renewal_passes_read_no_renewal_information() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let recorder = Arc::new(Recorder::default());
    let storage: Arc<dyn Store> = recorder.clone();
    let now = now_unix();
    let ari = AriServer::start(&pebble, (now + 10_000, now + 20_000)).await;
    let at = || {
        let mut config = acme_config(&pebble, &[ChallengeType::Http01]);
        config.directory_url = format!("https://localhost:{}/dir", ari.port);
        node_with(&storage, &pebble, config)
    };
    let a = at();
    let _http = serve_http(bind(pebble.http_port).await, vec![a.challenges.clone()]);
    let names = ["steady-1.example.com", "steady-2.example.com"];
    a.manager.manage(names).await.unwrap();
    assert_eq!(ari.hits().len(), 2, "one request per certificate");
    let reads = || recorder.renewal_info_reads.load(Ordering::SeqCst);
    let after_issuance = reads();
    for _ in 0..3 {
        a.manager.renew_due().await;
    }
    assert_eq!(reads(), after_issuance, "passes read nothing");

    let b = at().manager;
    b.manage(names).await.unwrap();
    let after_load = reads();
    assert!(after_load <= after_issuance + 2, "{after_load}");
    for _ in 0..3 {
        b.renew_due().await;
    }
    assert_eq!(reads(), after_load, "the second node's passes read nothing");
    assert_eq!(
        ari.hits().len(),
        2,
        "the windows are shared, never asked again"
    );
}

/// A renewal order names the certificate it replaces (RFC 9773 `replaces`, the same
/// identifier the renewal-info request used); a CA that refuses it gets the order again
/// without it, and the old certificate stays in service when the renewal fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_orders_name_the_certificate_they_replace() {
    let Some(pebble) = Pebble::start().await else {
        return;
    };
    let storage: Arc<dyn Store> = Arc::new(MemoryStorage::new());
    let name = "replaces.example.com";
    let first = node(&storage, &pebble, &[ChallengeType::Http01]);
    let _http = serve_http(
        bind(pebble.http_port).await,
        vec![Arc::clone(&first.challenges)],
    );
    first.manager.manage([name]).await.unwrap();
    let served = first.manager.certificate_meta(name).unwrap();

    // A directory whose renewal window has started and whose new orders are intercepted;
    // the certificate is moved into that directory's area so it is renewed, not obtained.
    let now = now_unix();
    let ari = AriServer::start_with(&pebble, (now - 120, now - 60), true).await;
    let mut config = acme_config(&pebble, &[ChallengeType::Http01]);
    config.directory_url = format!("https://localhost:{}/dir", ari.port);
    let from = cert_core::record::CertificateId::new(&first.issuer.id(), name);
    let mut moved = cert_core::record::load_certificate(storage.as_ref(), &from)
        .await
        .unwrap()
        .and_then(cert_core::record::RecordState::valid)
        .unwrap()
        .stored;
    moved.meta.issuer = config.directory_url.clone();
    cert_core::record::save_certificate(storage.as_ref(), name, &moved, None)
        .await
        .unwrap();
    let second = node_with(&storage, &pebble, config).manager;
    second.manage([name]).await.unwrap();
    second.renew_due().await;

    let hits = ari.hits();
    assert!(!hits.is_empty(), "renewal info was fetched");
    let orders = ari.orders();
    assert!(orders.len() >= 2, "{orders:?}");
    assert_eq!(
        orders[0]["replaces"].as_str(),
        Some(hits[0].as_str()),
        "the renewal order names the certificate it replaces: {orders:?}"
    );
    assert_eq!(orders[0]["identifiers"][0]["value"], name);
    assert!(
        orders[1].get("replaces").is_none(),
        "the retry orders plainly: {orders:?}"
    );
    assert_eq!(second.certificate_meta(name).unwrap().serial, served.serial);
    assert!(
        second.cache().get(name).is_some(),
        "the old certificate is still served"
    );
}
