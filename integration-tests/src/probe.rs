//! Protocol-level readiness checks: each speaks just enough of a server's protocol to know
//! that the real server (not a bare port forward, not another kind of server) answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

/// The kinds of servers the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// PostgreSQL: answers an SSLRequest with `S` or `N`.
    Postgres,
    /// MySQL / MariaDB: greets with a protocol-10 handshake packet.
    Mysql,
    /// Redis: answers `PING` with `+PONG`.
    Redis,
    /// Any HTTP server (S3 servers, Azurite): answers a request with a status line.
    Http,
}

fn connect(addr: &str) -> Option<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().ok()?.collect();
    let stream = addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, TIMEOUT).ok())?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(TIMEOUT)).ok()?;
    Some(stream)
}

/// Reads until `want` bytes arrived or the peer stops sending.
fn read_some(stream: &mut impl Read, want: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while buf.len() < want {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

/// Whether a `protocol` server answers at `addr` (`host:port`).
pub fn ready(protocol: Protocol, addr: &str) -> bool {
    let Some(mut stream) = connect(addr) else {
        return false;
    };
    match protocol {
        Protocol::Postgres => {
            // Length 8, then the SSLRequest code 80877103.
            let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
            // Exactly one byte: a MySQL greeting could start with either letter.
            stream.write_all(&request).is_ok()
                && matches!(read_some(&mut stream, 1).as_slice(), b"S" | b"N")
        }
        Protocol::Mysql => {
            // A 3-byte length, sequence number 0, then protocol version 10.
            let greeting = read_some(&mut stream, 5);
            greeting.len() >= 5 && greeting[3] == 0 && greeting[4] == 10
        }
        Protocol::Redis => {
            stream.write_all(b"PING\r\n").is_ok() && read_some(&mut stream, 5).starts_with(b"+PONG")
        }
        Protocol::Http => {
            let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).is_ok()
                && read_some(&mut stream, 9).starts_with(b"HTTP/1.")
        }
    }
}

/// Whether a Docker engine answers `GET /_ping` at `docker_host` (a `DOCKER_HOST` value:
/// `unix:///path` or `tcp://host:port`; `None` means the default
/// `unix:///var/run/docker.sock`). A Docker client without an engine is not enough.
pub fn docker_engine(docker_host: Option<&str>) -> bool {
    let host = docker_host.unwrap_or("unix:///var/run/docker.sock");
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let answer = if let Some(path) = host.strip_prefix("unix://") {
        ping_unix(path, request)
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        connect(addr).and_then(|mut stream| {
            stream.write_all(request).ok()?;
            Some(read_some(&mut stream, 4096))
        })
    } else {
        None
    };
    answer.is_some_and(|bytes| {
        let text = String::from_utf8_lossy(&bytes);
        let ok_status = text
            .lines()
            .next()
            .is_some_and(|status| status.split(' ').nth(1) == Some("200"));
        ok_status && text.trim_end().ends_with("OK")
    })
}

#[cfg(unix)]
fn ping_unix(path: &str, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.write_all(request).ok()?;
    Some(read_some(&mut stream, 4096))
}

#[cfg(not(unix))]
fn ping_unix(_path: &str, _request: &[u8]) -> Option<Vec<u8>> {
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `host:port` of the server a `CERTSTORE_TEST_*` URL names.
    fn address(var: &str) -> Option<String> {
        let url = crate::service_url(var)?;
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        Some(host_port.to_owned())
    }

    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[test]
    fn each_probe_recognises_its_server_and_only_it() {
        let servers = [
            (Protocol::Postgres, "CERTSTORE_TEST_POSTGRES_URL"),
            (Protocol::Mysql, "CERTSTORE_TEST_MYSQL_URL"),
            (Protocol::Redis, "CERTSTORE_TEST_REDIS_URL"),
            (Protocol::Http, "CERTSTORE_TEST_S3_URL"),
        ];
        let mut found = Vec::new();
        for (protocol, var) in servers {
            let Some(addr) = address(var) else { return };
            assert!(ready(protocol, &addr), "{protocol:?} at {addr}");
            found.push((protocol, addr));
        }
        for (protocol, _) in &found {
            for (other, addr) in &found {
                if protocol != other {
                    assert!(!ready(*protocol, addr), "{protocol:?} probe at {other:?}");
                }
            }
        }
    }

    #[test]
    fn nothing_listening_is_not_ready() {
        let addr = closed_port();
        for protocol in [
            Protocol::Postgres,
            Protocol::Mysql,
            Protocol::Redis,
            Protocol::Http,
        ] {
            assert!(!ready(protocol, &addr));
        }
    }

    /// A fake engine on a Unix socket answering one request with `answer`.
    #[cfg(unix)]
    fn fake_engine(answer: &'static str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let _ = read_some(&mut stream, 16);
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (dir, format!("unix://{}", path.display()))
    }

    #[cfg(unix)]
    #[test]
    fn docker_engine_is_detected_by_its_ping() {
        let (_dir, host) = fake_engine("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK");
        assert!(docker_engine(Some(&host)));
        let (_dir, host) = fake_engine("HTTP/1.0 500 Internal Server Error\r\n\r\nnope");
        assert!(!docker_engine(Some(&host)));
        assert!(!docker_engine(Some("unix:///nonexistent/docker.sock")));
        assert!(!docker_engine(Some(&format!("tcp://{}", closed_port()))));
        assert!(!docker_engine(Some("ssh://somewhere")));
    }
}
