//! The accept loop: HTTP/2 connections (h2c or TLS) served by hyper within the
//! listener's [`ConnectionLimits`], with graceful shutdown that stops accepting,
//! lets in-flight calls finish, and gives up after a grace period.

use super::Body;
use super::activity::{Activity, Counted, drive_connection};
use super::limits::ConnectionLimits;
use super::preface::read_preface;
use super::tls::ReloadingAcceptor;
use crate::wrapper::{Peer, PeerIdentity};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The service of one connection: what the server's router is per connection.
pub(crate) trait ConnectionService:
    hyper::service::Service<
        http::Request<Incoming>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S> ConnectionService for S where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// Serves on `listener` until `shutdown` resolves, then drains for up to `grace`;
/// `service_for` makes the service of each connection from its [`Peer`] (known once
/// the TLS handshake is done). `in_flight` counts the calls being handled.
///
/// Returns `true` when every connection finished within the grace period; otherwise
/// the remaining connections are closed and a warning says how many calls were cut.
pub(crate) async fn serve<S, M>(
    listener: TcpListener,
    service_for: M,
    tls: Option<Arc<ReloadingAcceptor>>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    in_flight: Arc<AtomicUsize>,
) -> bool
where
    M: Fn(Peer) -> S + Clone + Send + 'static,
    S: ConnectionService,
{
    let connection = Arc::new(Connection {
        http2: limits.http2(),
        limits: limits.clone(),
        tls,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    let mut refused = Refused::default();
    loop {
        // Reap finished connections so the set only holds live ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Running out of file descriptors must not end the server: back off.
                    tracing::warn!(error = %err, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: the client fails fast and can pick another node.
            drop(stream);
            refused.count(limits.max_connections);
            continue;
        };
        // Small gRPC frames must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        limits.keep_alive(&stream);
        let connection = connection.clone();
        let service_for = service_for.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let _slot = slot;
            connection.run(stream, peer, service_for, stopping).await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if drained {
        return true;
    }
    let calls = in_flight.load(Ordering::Acquire);
    let open = connections.len();
    // Dropping a connection's task closes its socket and drops its calls' futures.
    connections.shutdown().await;
    tracing::warn!(
        ?grace,
        connections = open,
        calls,
        "grace period of {grace:?} over: closed {open} connection(s), cutting {calls} call(s) still running"
    );
    false
}

/// Counts connections refused for the limit, warning at most every 10 s.
#[derive(Default)]
struct Refused {
    since_warning: u64,
    warned: Option<Instant>,
}

impl Refused {
    fn count(&mut self, limit: usize) {
        self.since_warning += 1;
        if self
            .warned
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                refused = self.since_warning,
                limit,
                "connection limit reached: closed {} new connection(s) at once (--server-max-connections {limit})",
                self.since_warning
            );
            self.since_warning = 0;
            self.warned = Some(Instant::now());
        }
    }
}

/// What every connection of a listener shares.
struct Connection {
    http2: hyper::server::conn::http2::Builder<super::BoxingExecutor>,
    limits: ConnectionLimits,
    tls: Option<Arc<ReloadingAcceptor>>,
}

impl Connection {
    /// Handshakes (TLS, then the HTTP/2 preface) within the handshake timeout, then
    /// serves until the client closes, the connection idles out, or the server stops.
    async fn run<S, M>(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        service_for: M,
        stopping: watch::Receiver<bool>,
    ) where
        M: Fn(Peer) -> S,
        S: ConnectionService,
    {
        let timeout = self.limits.handshake_timeout;
        match &self.tls {
            None => match tokio::time::timeout(timeout, read_preface(stream)).await {
                Ok(Ok(io)) => {
                    let service = service_for(Peer::new(peer));
                    self.serve(io, peer, service, stopping).await;
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "connection refused"),
                Err(_) => handshake_timed_out(peer, timeout),
            },
            Some(acceptors) => {
                let acceptor = acceptors.current();
                let handshake = async {
                    let stream = acceptor
                        .accept(stream)
                        .await
                        .map_err(|err| format!("TLS handshake failed: {err}"))?;
                    read_preface(stream).await.map_err(|err| err.to_string())
                };
                match tokio::time::timeout(timeout, handshake).await {
                    Ok(Ok(io)) => {
                        let mut who = Peer::new(peer);
                        if let Some(identity) = io
                            .get_ref()
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|cert| PeerIdentity::from_der(cert))
                        {
                            who = who.with_identity(identity);
                        }
                        let service = service_for(who);
                        self.serve(io, peer, service, stopping).await;
                    }
                    // What an operator looks for when a client is turned away
                    // (unknown CA, expired or missing client certificate).
                    Ok(Err(err)) => {
                        tracing::info!(%peer, error = %err, "connection refused: {err}")
                    }
                    Err(_) => handshake_timed_out(peer, timeout),
                }
            }
        }
    }

    async fn serve<IO, S>(
        &self,
        io: IO,
        peer: SocketAddr,
        service: S,
        mut stopping: watch::Receiver<bool>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: ConnectionService,
    {
        let activity = Arc::new(Activity::default());
        let service = Counted {
            inner: service,
            activity: activity.clone(),
        };
        let conn = self.http2.serve_connection(TokioIo::new(io), service);
        let stop = async move {
            // The guard `wait_for` returns must not live across an await.
            let _ = stopping.wait_for(|stop| *stop).await.is_ok();
        };
        // After `stop`, the grace period bounds the wait (the server drops the task).
        drive_connection(conn, &activity, self.limits.idle_timeout, stop, peer).await;
    }
}

fn handshake_timed_out(peer: SocketAddr, timeout: Duration) {
    tracing::debug!(
        %peer,
        "closed a connection that did not finish its handshake (TLS and HTTP/2 preface) within {timeout:?}"
    );
}
