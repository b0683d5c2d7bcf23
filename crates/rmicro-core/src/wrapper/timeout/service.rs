//! The per-endpoint timeout service: starts the call under its endpoint's limit.

use super::future::EndpointTimeoutFuture;
use super::layer::Limits;
use crate::wrapper::CallInfo;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{BoxError, Service};

/// A service whose calls are cut at their endpoint's limit; see the [module docs](super).
#[derive(Clone)]
pub struct EndpointTimeoutService<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> EndpointTimeoutService<S> {
    pub(super) fn new(inner: S, limits: Arc<Limits>) -> Self {
        EndpointTimeoutService { inner, limits }
    }
}

impl<S> std::fmt::Debug for EndpointTimeoutService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointTimeoutService")
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for EndpointTimeoutService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<crate::transport::Body>;
    type Error = BoxError;
    type Future = EndpointTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let limit = request.extensions().get::<CallInfo>().and_then(|info| {
            self.limits.of(info.endpoint()).map(|limit| {
                (
                    limit,
                    info.service_arc().clone(),
                    info.endpoint().to_owned(),
                )
            })
        });
        EndpointTimeoutFuture::new(self.inner.call(request), limit)
    }
}
