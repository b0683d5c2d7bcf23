//! Client channels: one multiplexed HTTP/2 connection per node, dialled lazily and
//! re-dialled after the peer goes away.

use super::ClientTls;
use futures_util::future::BoxFuture;
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{BoxError, Service};

/// A client channel to one node, boxed so that client wrappers can sit on top of it.
pub type Channel = tower::util::BoxCloneSyncService<
    http::Request<super::Body>,
    http::Response<super::Body>,
    TransportError,
>;

/// A call failed below gRPC: the connection, TLS or HTTP/2 broke.
///
/// (A concrete type rather than `BoxError`: tonic's client futures are only `Send`
/// for error types without a trait-object lifetime to infer.)
#[derive(Debug)]
pub struct TransportError(pub BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// How channels dial their nodes.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Longest time to establish the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// TLS settings; `None` dials plain h2c.
    pub tls: Option<ClientTls>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(3),
            tls: None,
        }
    }
}

/// The connection to a node could not be established, so no request reached it.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {address}: {source}")]
pub struct ConnectFailed {
    address: String,
    #[source]
    source: BoxError,
}

/// Dials with hyper's connector and marks failures as [`ConnectFailed`], so the client
/// knows a retry cannot run a handler twice.
#[derive(Clone)]
struct MarkingConnector {
    inner: HttpConnector,
}

impl Service<http::Uri> for MarkingConnector {
    type Response = <HttpConnector as Service<http::Uri>>::Response;
    type Error = ConnectFailed;
    type Future = BoxFuture<'static, Result<Self::Response, ConnectFailed>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|e| ConnectFailed {
            address: String::new(),
            source: e.into(),
        })
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let address = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let fut = self.inner.call(uri);
        Box::pin(async move {
            fut.await.map_err(|e| ConnectFailed {
                address,
                source: e.into(),
            })
        })
    }
}

/// An address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("`{address}` is not a dialable address (want host:port): {reason}")]
pub struct InvalidAddress {
    address: String,
    reason: String,
}

/// Makes a channel to `address` (`host:port`) that connects on first use.
///
/// Plain (h2c) channels are rmicro's own, on hyper's HTTP/2 client connection: a
/// call goes from its task straight to the connection's, where tonic's channel
/// passes it through a buffer task first and reads the `grpc-timeout` the client
/// already keeps with a timer of its own. TLS channels are tonic's.
pub fn connect_lazy(address: &str, options: &ChannelOptions) -> Result<Channel, InvalidAddress> {
    let invalid = |reason: String| InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    if options.tls.is_none() {
        let authority = http::uri::Authority::try_from(address)
            .ok()
            .filter(|a| a.port_u16().is_some())
            .ok_or_else(|| invalid("not a host:port".to_owned()))?;
        return Ok(Channel::new(Direct {
            shared: Arc::new(DirectShared {
                authority,
                connect_timeout: options.connect_timeout,
                slots: (0..super::shard::slots())
                    .map(|_| Slot {
                        state: super::shard::Padded(std::sync::Mutex::new(Dial::Idle)),
                    })
                    .collect(),
            }),
        }));
    }
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = &options.tls {
        endpoint = endpoint
            .tls_config(tls.tonic_config())
            .map_err(|e| invalid(e.to_string()))?;
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    let channel = endpoint.connect_with_connector_lazy(MarkingConnector { inner: http });
    let channel = tower::ServiceBuilder::new()
        .map_request(|r: http::Request<super::Body>| r.map(super::Body::into_engine))
        .map_response(|r: http::Response<tonic::body::Body>| r.map(super::Body::from_engine))
        .map_err(|e: tonic::transport::Error| TransportError(e.into()))
        .service(channel);
    Ok(Channel::new(channel))
}

/// A plain HTTP/2 channel on hyper's client connection, dialled on first use and
/// again once the connection has closed. Under [`Shards`](super::Shards) each
/// worker thread has a connection of its own (a slot), so its calls never leave
/// it; other threads share one more.
#[derive(Clone)]
struct Direct {
    shared: Arc<DirectShared>,
}

struct DirectShared {
    authority: http::uri::Authority,
    connect_timeout: Duration,
    /// A connection per worker of [`Shards`](super::Shards), and one for other
    /// threads (only that one when there are no workers).
    slots: Box<[Slot]>,
}

/// One connection to the node and its dial.
struct Slot {
    state: super::shard::Padded<std::sync::Mutex<Dial>>,
}

/// A dial that every call waiting for the connection shares: its handle, or
/// why it failed (each caller makes its own [`ConnectFailed`] of it).
type SharedDial =
    futures_util::future::Shared<BoxFuture<'static, Result<SendRequest<super::Body>, Arc<str>>>>;

/// Where a channel's connection stands.
enum Dial {
    /// None yet, or the last one closed or failed: the next call dials.
    Idle,
    /// Dialling: calls wait for this one attempt, and fail with it together
    /// (so they try another node at once, not one after another).
    Dialling(SharedDial),
    Open(SendRequest<super::Body>),
}

impl DirectShared {
    /// This thread's connection slot.
    fn slot(&self) -> &std::sync::Mutex<Dial> {
        &self.slots[super::shard::slot(self.slots.len())].state.0
    }

    /// The open connection's handle, if it is still open.
    fn open(&self) -> Option<SendRequest<super::Body>> {
        match &*crate::sync::lock(self.slot()) {
            Dial::Open(sender) if !sender.is_closed() => Some(sender.clone()),
            _ => None,
        }
    }

    /// The dial under way, or a new one.
    fn dial(self: &Arc<Self>) -> SharedDial {
        let index = super::shard::slot(self.slots.len());
        let mut state = crate::sync::lock(&self.slots[index].state.0);
        match &*state {
            Dial::Open(sender) if !sender.is_closed() => {
                let sender = sender.clone();
                let ready: BoxFuture<'static, _> = Box::pin(async move { Ok(sender) });
                return futures_util::FutureExt::shared(ready);
            }
            Dial::Dialling(dial) => return dial.clone(),
            _ => {}
        }
        let this = self.clone();
        let dial: BoxFuture<'static, _> = Box::pin(async move {
            let dialled = this.dial_now().await;
            let mut state = crate::sync::lock(&this.slots[index].state.0);
            match dialled {
                Ok(sender) => {
                    *state = Dial::Open(sender.clone());
                    Ok(sender)
                }
                Err(why) => {
                    *state = Dial::Idle;
                    Err(Arc::from(why.as_str()))
                }
            }
        });
        let dial = futures_util::FutureExt::shared(dial);
        *state = Dial::Dialling(dial.clone());
        dial
    }

    /// The failure of a dial that `why` describes, as a call reports it.
    fn failed(&self, why: &str) -> ConnectFailed {
        ConnectFailed {
            address: self.authority.to_string(),
            source: why.into(),
        }
    }

    /// Dials: TCP within the connect timeout, then the HTTP/2 handshake; the
    /// connection's task is spawned. The error says why, in words.
    async fn dial_now(&self) -> Result<SendRequest<super::Body>, String> {
        let host = self.authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = self.authority.port_u16().unwrap_or(80);
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| {
            format!(
                "tcp connect error: timed out after {:?}",
                self.connect_timeout
            )
        })?
        .map_err(|e| format!("tcp connect error: {e}"))?;
        // Small calls go out at once rather than waiting on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http2::Builder::new(super::BoxingExecutor)
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        let address = self.authority.to_string();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%address, error = %e, "client connection closed");
            }
        });
        Ok(sender)
    }
}

impl Service<http::Request<super::Body>> for Direct {
    type Response = http::Response<super::Body>;
    type Error = TransportError;
    type Future = BoxFuture<'static, Result<Self::Response, TransportError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // Each call waits for its connection itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<super::Body>) -> Self::Future {
        let shared = self.shared.clone();
        let open = shared.open();
        Box::pin(async move {
            let mut sender = match open {
                Some(sender) => sender,
                None => shared
                    .dial()
                    .await
                    .map_err(|why| TransportError(shared.failed(&why).into()))?,
            };
            let mut uri = std::mem::take(request.uri_mut()).into_parts();
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(shared.authority.clone());
            *request.uri_mut() =
                http::Uri::from_parts(uri).map_err(|e| TransportError(e.into()))?;
            *request.version_mut() = http::Version::HTTP_2;
            // A connection that closed since it was handed out took no request:
            // as safe to retry as one never made.
            sender
                .ready()
                .await
                .map_err(|e| TransportError(shared.failed(&e.to_string()).into()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| TransportError(e.into()))?;
            Ok(response.map(super::Body::new))
        })
    }
}

/// Whether a failed call certainly never reached a handler, so retrying it is safe even
/// when the call is not idempotent: the connection could not be made, the request was
/// cancelled before hyper sent it, the server refused the stream unprocessed, or the
/// server's GOAWAY (graceful shutdown) named a last stream below this one — HTTP/2
/// guarantees such streams were not processed.
pub fn is_safe_to_retry(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = source {
        if err.is::<ConnectFailed>() {
            return true;
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_canceled()
        {
            return true;
        }
        if let Some(h2) = err.downcast_ref::<h2::Error>()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote()))
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Ten calls at once on a fresh channel.
    async fn ten_calls(
        channel: &Channel,
    ) -> Vec<Result<http::Response<super::super::Body>, TransportError>> {
        let calls = (0..10).map(|_| {
            let mut channel = channel.clone();
            async move {
                let request = http::Request::post("/t.T/M")
                    .body(super::super::Body::empty())
                    .map_err(|e| TransportError(e.into()))?;
                channel.call(request).await
            }
        });
        futures_util::future::join_all(calls).await
    }

    /// An h2c server on a free port that answers 200 to anything, counting the
    /// connections it accepts.
    async fn counting_server() -> (
        std::net::SocketAddr,
        Arc<AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                        bytes::Bytes,
                    >::new(
                    )))
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(super::super::BoxingExecutor)
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        (address, accepted, server)
    }

    #[tokio::test]
    async fn calls_that_find_no_connection_share_one_dial() {
        let (address, accepted, server) = counting_server().await;
        let channel = connect_lazy(&address.to_string(), &ChannelOptions::default()).unwrap();
        for response in ten_calls(&channel).await {
            assert_eq!(response.expect("answered").status(), http::StatusCode::OK);
        }
        // One connection for all ten, not a dial each.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        server.abort();

        // Nothing listening: the ten fail together, each as a call that never
        // reached a server (safe to retry elsewhere), naming the address.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let channel = connect_lazy(&closed.to_string(), &ChannelOptions::default()).unwrap();
        for result in ten_calls(&channel).await {
            let err = result.expect_err("no server");
            assert!(is_safe_to_retry(&err), "{err}");
            let text = crate::transport::error_chain(&err);
            assert!(
                text.contains(&format!("cannot connect to {closed}")),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn each_shard_calls_on_a_connection_of_its_own() {
        let (address, accepted, server) = counting_server().await;
        let shards = super::super::Shards::start(2, "connect-test").unwrap();
        let channel = connect_lazy(&address.to_string(), &ChannelOptions::default()).unwrap();
        // Ten calls on each worker, the second round after the first has ended.
        for round in 0..2 {
            let mut done = Vec::new();
            for handle in shards.handles() {
                let channel = channel.clone();
                done.push(handle.spawn(async move {
                    ten_calls(&channel)
                        .await
                        .into_iter()
                        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == http::StatusCode::OK))
                        .count()
                }));
            }
            for answered in done {
                assert_eq!(answered.await.unwrap(), 10, "round {round}");
            }
        }
        // A connection per worker, kept across rounds.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A thread outside the workers has a connection of its own.
        assert!(ten_calls(&channel).await.iter().all(Result::is_ok));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        server.abort();
    }
}
