//! Your first HTTPS server: axum on `https://localhost:8443/` with a certificate from the
//! internal CA, kept in any storage (`CERTSTORE_STORAGE`, default `./.certstore`). No
//! domain, no open port, no ACME account.
//!
//! ```text
//! cargo run -p certstore --example first_https
//! cargo run -p certstore -- ca-root > root.pem
//! curl --cacert root.pem https://localhost:8443/
//! ```
//!
//! `LISTEN=127.0.0.1:0` picks a free port; `CERTSTORE_STORAGE=redis://...` shares the
//! certificate with every other server on that storage.
#![allow(missing_docs)]

use std::sync::Arc;

use axum::{Router, routing::get};
use certstore::{Cache, CertManager, InternalIssuer, TlsListener, server_config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("CERTSTORE_STORAGE").unwrap_or_else(|_| ".certstore".into());
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8443".into());
    let store = certstore::open(&url, &Default::default()).await?.store;
    let ca = InternalIssuer::new(store.clone(), Default::default());
    let cache = Arc::new(Cache::new(100));
    let manager = CertManager::new(store, cache, vec![Arc::new(ca)], Default::default());
    manager.manage(["localhost"]).await?; // issued once, then loaded from storage
    manager.start(); // renews in the background
    let listener = TlsListener::bind(addr, server_config(Arc::new(manager.resolver()))?).await?;
    let port = listener.local_addr()?.port();
    println!("https://localhost:{port}/ (the root CA: `certstore ca-root`)");
    let app = Router::new().route("/", get(|| async { "Hello over HTTPS\n" }));
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! `main` runs in a child process (this test binary, told to run only
    //! `tests::example_main`) with the storage and address in its environment; the test
    //! then fetches the page over TLS, trusting only the root stored by the example.
    #![allow(clippy::unwrap_used)]

    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    use certstore::rustls::pki_types::ServerName;
    use certstore::rustls::{self, RootCertStore};
    use certstore::tokio_rustls::TlsConnector;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    #[ignore = "the example's main, run as a child process by `serves_https_on_localhost`"]
    fn example_main() {
        main().unwrap();
    }

    /// Kills the child when the test ends, however it ends.
    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn serves_https_on_localhost() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("store").display().to_string();
        let mut child = Running(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "tests::example_main",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "-q",
                ])
                .env("CERTSTORE_STORAGE", &url)
                .env("LISTEN", "127.0.0.1:0")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let stdout = BufReader::new(child.0.stdout.take().unwrap());
        let line = stdout
            .lines()
            .map(Result::unwrap)
            .find_map(|line| {
                let at = line.find("https://localhost:")?;
                Some(line[at + "https://localhost:".len()..].to_owned())
            })
            .expect("the example printed its address");
        let port: u16 = line.split('/').next().unwrap().parse().unwrap();

        let store = certstore::open(&url, &Default::default())
            .await
            .unwrap()
            .store;
        let root = InternalIssuer::load_root(store.as_ref(), "local")
            .await
            .unwrap()
            .expect("the example created the internal CA");
        let page = fetch(port, &root).await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.ends_with("Hello over HTTPS\n"), "{page}");
    }

    /// `GET /` from `localhost:port`, trusting only `root_pem`.
    async fn fetch(port: u16, root_pem: &str) -> String {
        let mut roots = RootCertStore::empty();
        for cert in certstore::cert_core::certificate::parse_chain(root_pem).unwrap() {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut page = Vec::new();
        let _ = tls.read_to_end(&mut page).await;
        String::from_utf8(page).unwrap()
    }
}
