//! The accept loop: HTTP/2 connections (h2c or TLS) served by hyper, with graceful
//! shutdown that stops accepting, lets in-flight calls finish, and gives up after a
//! grace period.

use super::Body;
use crate::wrapper::{Peer, PeerIdentity};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Serves on `listener` until `shutdown` resolves, then drains for up to `grace`;
/// `service_for` makes the service of each connection from its [`Peer`] (known once
/// the TLS handshake is done). `in_flight` counts the calls being handled.
///
/// Returns `true` when every connection finished within the grace period; otherwise
/// the remaining connections are closed and a warning says how many calls were cut.
pub(crate) async fn serve<S, M>(
    listener: TcpListener,
    service_for: M,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    in_flight: Arc<AtomicUsize>,
) -> bool
where
    M: Fn(Peer) -> S + Clone + Send + 'static,
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
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
        // Small gRPC frames must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let hyper_service = service_for(Peer::new(peer));
                let conn = http2.serve_connection(TokioIo::new(stream), hyper_service);
                let watched = graceful.watch(conn);
                connections.spawn(async move {
                    if let Err(err) = watched.await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let http2 = http2.clone();
                let watcher = graceful.watcher();
                let service_for = service_for.clone();
                connections.spawn(async move {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let mut who = Peer::new(peer);
                    if let Some(identity) = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| PeerIdentity::from_der(cert))
                    {
                        who = who.with_identity(identity);
                    }
                    let hyper_service = service_for(who);
                    let conn = http2.serve_connection(TokioIo::new(stream), hyper_service);
                    if let Err(err) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok()
    {
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
