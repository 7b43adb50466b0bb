//! The accepting task and the handshake tasks it spawns.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{Accepted, ListenerOptions, Prepare};
use crate::resolver::accept_lazy_hello;

/// The pause after an accept error that is not about one connection (too many open
/// files, say), so a failing socket does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// Starts accepting on `tcp`; the task ends once every receiver of `ready` is gone.
pub(super) fn spawn(
    tcp: TcpListener,
    config: Arc<ServerConfig>,
    options: ListenerOptions,
    ready: mpsc::Sender<Accepted>,
) {
    let handshake = Arc::new(Handshake {
        acceptor: TlsAcceptor::from(Arc::clone(&config)),
        config,
        timeout: options.handshake_timeout,
        prepare: options.prepare,
    });
    let slots = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    tokio::spawn(accept_loop(tcp, handshake, slots, ready));
}

/// Takes a handshake slot, accepts one TCP connection and hands it to a task of its own,
/// so the loop is back at `accept` at once whatever the client does.
async fn accept_loop(
    tcp: TcpListener,
    handshake: Arc<Handshake>,
    slots: Arc<Semaphore>,
    ready: mpsc::Sender<Accepted>,
) {
    loop {
        let slot = tokio::select! {
            () = ready.closed() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(Arc::clone(&handshake).run(stream, peer, slot, ready.clone()));
            }
            Err(err) => pause_after(err).await,
        }
    }
}

/// Waits after an accept error unless it only concerned the connection being accepted.
async fn pause_after(err: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        tracing::debug!(error = %err, "a connection ended before it was accepted");
        return;
    }
    tracing::warn!(error = %err, "accepting a TCP connection failed; retrying");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// What every handshake task shares.
struct Handshake {
    acceptor: TlsAcceptor,
    config: Arc<ServerConfig>,
    timeout: Duration,
    prepare: Option<Prepare>,
}

impl Handshake {
    /// Completes the handshake within the deadline and hands the connection over; a
    /// failure drops the connection (closing it) and is logged. The slot is held until
    /// the connection is handed over, so it also bounds connections waiting for `accept`.
    async fn run(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        ready: mpsc::Sender<Accepted>,
    ) {
        match tokio::time::timeout(self.timeout, self.complete(stream)).await {
            Ok(Ok(tls)) => {
                // An error here means the listener is gone: the connection is dropped.
                let _ = ready.send((tls, peer)).await;
            }
            Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
            Err(_) => {
                tracing::debug!(%peer, timeout = ?self.timeout, "TLS handshake timed out");
            }
        }
        drop(slot);
    }

    async fn complete(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        match &self.prepare {
            None => self.acceptor.accept(stream).await,
            Some(prepare) => {
                accept_lazy_hello(stream, Arc::clone(&self.config), |hello| prepare(hello)).await
            }
        }
    }
}
