//! A small HTTP/1.1 server for a service's side endpoints — the Hystrix stream,
//! Prometheus's `/metrics` — on a port of their own next to the gRPC one, as
//! hystrix-go's and client_golang's handlers are.

use crate::transport::Body;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Answers one request of a side endpoint.
pub(crate) type Handler =
    Arc<dyn Fn(&http::Request<hyper::body::Incoming>) -> http::Response<Body> + Send + Sync>;

/// A running side server; stops (and ends its connections) when dropped.
#[derive(Debug)]
pub(crate) struct SideServer {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl SideServer {
    /// Serves `handler` on `listener`; `what` names it in logs.
    pub(crate) fn serve(
        listener: tokio::net::TcpListener,
        what: &'static str,
        handler: Handler,
    ) -> std::io::Result<Self> {
        let address = listener.local_addr()?;
        let task = tokio::spawn(accept(listener, what, handler));
        Ok(SideServer { address, task })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for SideServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes connections until aborted; their connections end with it.
async fn accept(listener: tokio::net::TcpListener, what: &'static str, handler: Handler) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let handler = handler.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let response = handler(&request);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        // A reader that hangs up ends its connection; nothing to report.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                            .await;
                    });
                }
                Err(err) => {
                    // Out of file descriptors, most likely: back off, keep serving.
                    tracing::warn!(error = %err, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// A plain-text answer with `status`.
pub(crate) fn text(status: http::StatusCode, message: String) -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(bytes::Bytes::from(message)));
    *response.status_mut() = status;
    response
}

/// The answer to a request for anything but `GET path`, if it is one.
pub(crate) fn refuse_other<B>(
    request: &http::Request<B>,
    path: &str,
    what: &str,
) -> Option<http::Response<Body>> {
    if request.uri().path() != path {
        return Some(text(
            http::StatusCode::NOT_FOUND,
            format!(
                "no such path `{}`: {what} is at {path}\n",
                request.uri().path()
            ),
        ));
    }
    if request.method() != http::Method::GET {
        return Some(text(
            http::StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes GET\n"),
        ));
    }
    None
}
