//! Turning any tower layer into a link of rmicro's wrapper stacks: the layer's
//! service is boxed, and its errors (from `poll_ready` or the call) become gRPC
//! statuses, so the stack below and above it keeps one error type.

use super::CallInfo;
use super::error::error_from_wrapper;
use crate::server::HandlerStack;
use crate::transport::Body;
use futures_util::future::BoxFuture;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{BoxError, Layer, Service};

/// One registered handler wrapper, applied when a server starts.
pub(crate) type HandlerWrap = Arc<dyn Fn(HandlerStack) -> HandlerStack + Send + Sync>;

/// Wraps `layer` so that it takes and returns a [`HandlerStack`].
pub(crate) fn handler_wrap<L>(layer: L) -> HandlerWrap
where
    L: Layer<HandlerStack> + Send + Sync + 'static,
    L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError> + Send + 'static,
    <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
{
    Arc::new(move |inner| HandlerStack::new(ErrorsAsStatus::new(layer.layer(inner))))
}

/// A wrapper's service whose errors are answered as gRPC statuses.
pub(crate) struct ErrorsAsStatus<S> {
    inner: S,
    /// `poll_ready` failed: the next call is answered with this error.
    not_ready: Option<BoxError>,
}

impl<S> ErrorsAsStatus<S> {
    pub(crate) fn new(inner: S) -> Self {
        ErrorsAsStatus {
            inner,
            not_ready: None,
        }
    }
}

impl<S: Clone> Clone for ErrorsAsStatus<S> {
    fn clone(&self) -> Self {
        ErrorsAsStatus::new(self.inner.clone())
    }
}

/// The gRPC response for a wrapper's error on a call to `info`'s service.
fn answer(err: BoxError, info: Option<&CallInfo>) -> http::Response<Body> {
    let service = info.map(CallInfo::service).unwrap_or("rmicro.server");
    let err = error_from_wrapper(err, service);
    tracing::debug!(error = %err, "a handler wrapper refused the call");
    err.to_status().into_http()
}

impl<S> Service<http::Request<Body>> for ErrorsAsStatus<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(err)) => {
                self.not_ready = Some(err.into());
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Some(err) = self.not_ready.take() {
            let response = answer(err, request.extensions().get::<CallInfo>());
            return Box::pin(std::future::ready(Ok(response)));
        }
        let info = request.extensions().get::<CallInfo>().cloned();
        let fut = self.inner.call(request);
        Box::pin(async move {
            match fut.await {
                Ok(response) => Ok(response),
                Err(err) => Ok(answer(err.into(), info.as_ref())),
            }
        })
    }
}
