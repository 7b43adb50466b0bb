//! A TLS listener: accepts TCP connections and completes their TLS handshakes
//! concurrently, each in a task of its own with a deadline, so a slow or silent client
//! never holds up the others. Completed connections come out of
//! [`TlsListener::accept`], the [`TlsListener::incoming`] stream (for hyper and anything
//! that takes a stream of connections) or, with the `axum` feature, `axum::serve`.
//!
//! A handshake that fails or runs past [`ListenerOptions::handshake_timeout`] closes its
//! connection and is logged at debug level; it never ends the listener.
//!
//! ```no_run
//! # async fn run(manager: cert_core::CertManager) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cert_core::listener::TlsListener;
//!
//! let config = cert_core::server_config(Arc::new(manager.resolver()))?;
//! let mut listener = TlsListener::bind("127.0.0.1:8443", config).await?;
//! while let Some((tls, peer)) = listener.accept().await {
//!     // `tls` is a `TlsStream<TcpStream>` whose handshake is complete.
//! #   let _ = (tls, peer);
//! }
//! # Ok(())
//! # }
//! ```

mod accept;
#[cfg(feature = "axum")]
mod axum_serve;

#[cfg(feature = "axum")]
pub use axum_serve::TlsConnectInfo;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::resolver::HelloInfo;

/// A connection whose handshake is complete, with the client's address.
type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// A step run between the ClientHello and the rest of the handshake.
type Prepare = Arc<dyn Fn(HelloInfo) -> BoxFuture<'static, ()> + Send + Sync>;

/// How many completed connections wait for [`TlsListener::accept`] before handshake tasks
/// wait to hand theirs over.
const READY_QUEUE: usize = 64;

/// How a [`TlsListener`] runs handshakes.
#[derive(Clone)]
#[non_exhaustive]
pub struct ListenerOptions {
    /// How long a client has to complete its handshake, counted from the TCP accept;
    /// past it the connection is closed. It includes the preparation step
    /// ([`with_prepare`](ListenerOptions::with_prepare)): raise it when that step can
    /// obtain a certificate on demand. Default: 10 s.
    pub handshake_timeout: Duration,
    /// At most this many connections are in their handshake or waiting to be accepted at
    /// once; past it, new TCP connections wait in the kernel's backlog. It bounds the
    /// memory and tasks silent clients can hold. Default: 1024.
    pub max_handshakes: usize,
    prepare: Option<Prepare>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            prepare: None,
        }
    }
}

impl fmt::Debug for ListenerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerOptions")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_handshakes", &self.max_handshakes)
            .field("prepare", &self.prepare.is_some())
            .finish()
    }
}

impl ListenerOptions {
    /// Options with this handshake deadline.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Options allowing at most `max` connections in their handshake at once (at least 1).
    pub fn with_max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// Runs `prepare` with the ClientHello's server name and ALPN protocols before the
    /// handshake goes on, as [`accept_lazy_hello`](crate::accept_lazy_hello) does: the
    /// place for I/O the certificate resolver must not do, such as
    /// [`CertManager::prepare_handshake`](crate::CertManager::prepare_handshake) for
    /// on-demand certificates.
    pub fn with_prepare<F, Fut>(mut self, prepare: F) -> Self
    where
        F: Fn(HelloInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.prepare = Some(Arc::new(move |hello| Box::pin(prepare(hello))));
        self
    }
}

/// A TCP listener that hands out connections once their TLS handshake is complete.
///
/// Handshakes run in spawned tasks, so creating one needs a Tokio runtime. Dropping the
/// listener (or its [`Incoming`] stream) stops accepting and closes the socket.
pub struct TlsListener {
    ready: mpsc::Receiver<Accepted>,
    local_addr: SocketAddr,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Listens on `addr` (port 0 picks a free port) with `config` and the default
    /// [`ListenerOptions`]. `config` is typically [`server_config`](crate::server_config)
    /// over a [`CertManager`](crate::CertManager)'s resolver.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: impl Into<Arc<ServerConfig>>,
    ) -> io::Result<TlsListener> {
        TlsListener::bind_with(addr, config, ListenerOptions::default()).await
    }

    /// Listens on `addr` with `config` and `options`.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        config: impl Into<Arc<ServerConfig>>,
        options: ListenerOptions,
    ) -> io::Result<TlsListener> {
        let tcp = TcpListener::bind(addr).await?;
        TlsListener::from_tcp(tcp, config, options)
    }

    /// Accepts on a TCP listener bound elsewhere (a socket passed in by a service
    /// manager, say).
    pub fn from_tcp(
        tcp: TcpListener,
        config: impl Into<Arc<ServerConfig>>,
        options: ListenerOptions,
    ) -> io::Result<TlsListener> {
        let local_addr = tcp.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        accept::spawn(tcp, config.into(), options, ready_tx);
        Ok(TlsListener { ready, local_addr })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// The next connection whose handshake is complete, and the client's address. `None`
    /// only if the accepting task has ended, which it does not while the listener lives.
    pub async fn accept(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.ready.recv().await
    }

    /// The connections as a [`Stream`], for servers that take one (hyper's accept
    /// loops, `tonic`, ...). The client's address is `tls.get_ref().0.peer_addr()`.
    pub fn incoming(self) -> Incoming {
        Incoming {
            ready: self.ready,
            local_addr: self.local_addr,
        }
    }
}

/// The connections of a [`TlsListener`] whose handshake is complete, from
/// [`TlsListener::incoming`].
pub struct Incoming {
    ready: mpsc::Receiver<Accepted>,
    local_addr: SocketAddr,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Stream for Incoming {
    type Item = TlsStream<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.ready
            .poll_recv(cx)
            .map(|next| next.map(|(tls, _)| tls))
    }
}
