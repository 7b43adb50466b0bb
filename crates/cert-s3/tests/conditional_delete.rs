//! The conditional-write probe against a small in-process S3 stand-in: a server that
//! honours conditional PUTs but deletes whatever the `If-Match` header says must be
//! refused, and the same server honouring conditional DELETEs too must be accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cert_core::{Error, Locker};
use cert_s3::{S3Config, S3Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the stand-in server keeps: object path to ETag, the request lines seen, and
/// a counter for fresh ETags.
#[derive(Default)]
struct State {
    objects: HashMap<String, String>,
    seen: Vec<String>,
    writes: u64,
}

/// Starts the stand-in; `honour_delete` decides whether DELETE checks `If-Match`.
async fn fake_s3(honour_delete: bool) -> (String, Arc<Mutex<State>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state: Arc<Mutex<State>> = Arc::default();
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, Arc::clone(&shared), honour_delete));
        }
    });
    (format!("http://{address}"), state)
}

/// Serves one connection: requests are read by `Content-Length`, answered in order.
async fn serve(mut socket: TcpStream, state: Arc<Mutex<State>>, honour_delete: bool) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let header = |name: &str| {
            head.lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_owned())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + length);
        let line = head.lines().next().unwrap_or_default().to_owned();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        let (status, etag) = {
            let mut state = state.lock().unwrap();
            state.seen.push(line);
            let current = state.objects.get(&path).cloned();
            let if_match = header("if-match");
            let if_none_match = header("if-none-match");
            match method.as_str() {
                "PUT" => {
                    let refused = (if_none_match.as_deref() == Some("*") && current.is_some())
                        || if_match
                            .as_ref()
                            .is_some_and(|want| current.as_ref() != Some(want));
                    if refused {
                        (412, None)
                    } else {
                        state.writes += 1;
                        let etag = format!("\"etag{}\"", state.writes);
                        state.objects.insert(path, etag.clone());
                        (200, Some(etag))
                    }
                }
                "DELETE" => {
                    let refused = honour_delete
                        && if_match
                            .as_ref()
                            .is_some_and(|want| current.as_ref() != Some(want));
                    if refused {
                        (412, None)
                    } else {
                        state.objects.remove(&path);
                        (204, None)
                    }
                }
                _ => (501, None),
            }
        };
        let response = match (status, etag) {
            (412, _) => {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error>\
                            <Code>PreconditionFailed</Code>\
                            <Message>At least one of the pre-conditions you specified did not hold</Message>\
                            </Error>";
                format!(
                    "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            (200, Some(etag)) => {
                format!("HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: 0\r\n\r\n")
            }
            (204, _) => "HTTP/1.1 204 No Content\r\n\r\n".to_owned(),
            _ => "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn storage(endpoint: &str) -> S3Storage {
    let config = S3Config::new("bucket")
        .with_prefix("p")
        .with_region("us-east-1")
        .with_endpoint(endpoint)
        .with_path_style(true)
        .with_static_credentials("id", "secret", None)
        .with_retries(1, Duration::from_millis(10), Duration::from_millis(10));
    S3Storage::connect(config).await.unwrap()
}

/// Conditional PUTs honoured, conditional DELETEs ignored: locking is refused with an
/// error naming the problem, and no lock object is ever written.
#[tokio::test]
async fn server_ignoring_conditional_delete_is_refused() {
    let (endpoint, state) = fake_s3(false).await;
    let storage = storage(&endpoint).await;
    for _ in 0..2 {
        match storage
            .try_acquire("issue/example.com", Duration::from_secs(10))
            .await
        {
            Err(err @ Error::Backend { backend: "s3", .. }) => {
                let text = err.to_string();
                assert!(
                    text.contains("conditional writes") && text.contains("DELETE"),
                    "unclear error: {text}"
                );
            }
            other => panic!("expected locking to be refused, got {other:?}"),
        }
    }
    let state = state.lock().unwrap();
    assert!(
        state
            .seen
            .iter()
            .any(|line| line.starts_with("DELETE") && line.contains(".certstore-probe")),
        "the probe never tried a conditional DELETE: {:?}",
        state.seen
    );
    assert!(
        !state
            .seen
            .iter()
            .any(|line| line.contains(".certstore-locks")),
        "a lock object was written although locking is refused: {:?}",
        state.seen
    );
}

/// The same server honouring `If-Match` on DELETE passes the probe: the stand-in is
/// faithful enough that the refusal above is about the DELETE alone.
#[tokio::test]
async fn server_honouring_conditional_delete_is_accepted() {
    let (endpoint, state) = fake_s3(true).await;
    let storage = storage(&endpoint).await;
    let lease = storage
        .try_acquire("issue/example.com", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("a free lock");
    assert_eq!(state.lock().unwrap().objects.len(), 1, "one lock object");
    storage.release(&lease).await.unwrap();
    assert!(state.lock().unwrap().objects.is_empty());
}
