//! The per-endpoint timeout future: the handler, or `DEADLINE_EXCEEDED` when its
//! limit passes first.

use crate::errors::Error;
use crate::transport::Body;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::BoxError;

pin_project_lite::pin_project! {
    /// The future of [`EndpointTimeoutService`](super::EndpointTimeoutService).
    pub struct EndpointTimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        // The limit, the service and the endpoint, for the error.
        limit: Option<(Duration, Arc<str>, String)>,
    }
}

impl<F> EndpointTimeoutFuture<F> {
    pub(super) fn new(inner: F, limit: Option<(Duration, Arc<str>, String)>) -> Self {
        EndpointTimeoutFuture {
            inner,
            timer: limit.as_ref().map(|(d, _, _)| tokio::time::sleep(*d)),
            limit,
        }
    }
}

impl<F, E, ResBody> Future for EndpointTimeoutFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map(|r| r.map(Body::new)).map_err(Into::into));
        }
        if let Some(timer) = this.timer.as_pin_mut()
            && timer.poll(cx).is_ready()
            && let Some((limit, service, endpoint)) = this.limit.take()
        {
            let error = Error::timeout(
                &*service,
                format!("`{service}` cut {endpoint} after its server timeout of {limit:?}"),
            );
            return Poll::Ready(Ok(crate::wrapper::error::refusal(error)));
        }
        Poll::Pending
    }
}
