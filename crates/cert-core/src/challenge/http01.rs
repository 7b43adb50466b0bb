//! Answering HTTP-01 challenges, from any framework or a tiny built-in listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Challenges;

/// The path prefix of HTTP-01 challenge requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Answers `GET /.well-known/acme-challenge/{token}` from memory, then storage.
#[derive(Debug, Clone)]
pub struct Http01Handler {
    challenges: Arc<Challenges>,
}

impl Http01Handler {
    /// A handler over `challenges`.
    pub fn new(challenges: Arc<Challenges>) -> Self {
        Http01Handler { challenges }
    }

    /// The response body for a request `path` (query ignored), or `None` when the path is
    /// not a challenge this cluster knows: answer 404 then (or pass the request on).
    pub async fn answer(&self, path: &str) -> Option<String> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.challenges.http01_key_authorization(token).await
    }

    /// Serves challenges on `listener` with a minimal HTTP/1.1 server (one request per
    /// connection; everything but a known challenge gets 404) until the task is aborted.
    pub fn serve(self, listener: TcpListener) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let handler = self.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        handler.serve_connection(stream),
                    )
                    .await;
                });
            }
        })
    }

    async fn serve_connection(&self, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || buf.len() > 16 * 1024 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf);
        let mut parts = head.lines().next().unwrap_or("").split(' ');
        let method = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        let answer = if method == "GET" || method == "HEAD" {
            self.answer(path).await
        } else {
            None
        };
        let response = match answer {
            Some(body) => {
                let body = if method == "HEAD" { "" } else { body.as_str() };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_owned(),
        };
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}
