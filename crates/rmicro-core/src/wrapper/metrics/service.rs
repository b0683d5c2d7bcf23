//! The metrics' service: finds the call's series and starts its clock.

use super::MetricsFuture;
use super::future::Sizes;
use super::layer::Side;
use crate::wrapper::{CallInfo, ClientCallInfo};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// A service whose calls are counted and timed; see the [module docs](super).
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    side: Arc<Side>,
}

impl<S> MetricsService<S> {
    pub(super) fn new(inner: S, side: Arc<Side>) -> Self {
        MetricsService { inner, side }
    }
}

impl<S> std::fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<tower::BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Response = http::Response<crate::transport::Body>;
    type Error = tower::BoxError;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions();
        let (handles, sizes) = match (
            extensions.get::<ClientCallInfo>(),
            extensions.get::<CallInfo>(),
        ) {
            (Some(call), _) => (
                self.side.handles(call.service(), call.endpoint()),
                Some(Sizes::Sent(call.messages().clone())),
            ),
            (None, Some(info)) => (
                self.side.handles("", info.endpoint()),
                Some(Sizes::Received(info.messages().clone())),
            ),
            // A plain tonic stack: the path names the endpoint.
            (None, None) => {
                let path = request.uri().path();
                let target = path.trim_start_matches('/').split('/').next().unwrap_or("");
                (self.side.handles(target, path), None)
            }
        };
        handles.start();
        MetricsFuture::new(self.inner.call(request), handles, sizes)
    }
}
