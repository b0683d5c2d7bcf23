//! Client channels: one multiplexed HTTP/2 connection per node, dialled lazily and
//! re-dialled after the peer goes away.

use super::ClientTls;
use futures_util::future::BoxFuture;
use hyper_util::client::legacy::connect::HttpConnector;
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
pub fn connect_lazy(address: &str, options: &ChannelOptions) -> Result<Channel, InvalidAddress> {
    let invalid = |reason: String| InvalidAddress {
        address: address.to_owned(),
        reason,
    };
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
