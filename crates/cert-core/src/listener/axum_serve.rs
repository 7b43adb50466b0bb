//! [`TlsListener`] as an `axum::serve` listener, and what handlers learn of a connection.

use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::TlsListener;

/// `axum::serve(listener, app)` serves HTTPS: each connection reaches axum once its
/// handshake is complete. The address is the client's; handlers get it, with the server
/// name, through `ConnectInfo<TlsConnectInfo>` (see [`TlsConnectInfo`]).
impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task lives as long as the listener: this is not reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// What a handler learns of its TLS connection through axum's `ConnectInfo`, with
/// `app.into_make_service_with_connect_info::<TlsConnectInfo>()`:
///
/// ```no_run
/// # async fn run(listener: cert_core::listener::TlsListener) -> std::io::Result<()> {
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use cert_core::listener::TlsConnectInfo;
///
/// let app = Router::new().route(
///     "/",
///     get(|ConnectInfo(tls): ConnectInfo<TlsConnectInfo>| async move {
///         format!("{} asked for {:?}", tls.remote_addr, tls.server_name)
///     }),
/// );
/// axum::serve(listener, app.into_make_service_with_connect_info::<TlsConnectInfo>()).await
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsConnectInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsConnectInfo {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        TlsConnectInfo {
            remote_addr: *stream.remote_addr(),
            server_name: stream.io().get_ref().1.server_name().map(str::to_owned),
        }
    }
}
