//! The load-shedding service: counts a call in, or refuses it.

use super::future::{LoadShedFuture, Permit};
use super::layer::Limit;
use crate::errors::Error;
use crate::wrapper::CallInfo;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tower::{BoxError, Service};

/// A service that refuses calls beyond its limit in flight; see the [module docs](super).
#[derive(Clone)]
pub struct LoadShedService<S> {
    inner: S,
    limit: Arc<Limit>,
}

impl<S> LoadShedService<S> {
    pub(super) fn new(inner: S, limit: Arc<Limit>) -> Self {
        LoadShedService { inner, limit }
    }
}

impl<S> std::fmt::Debug for LoadShedService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedService")
            .field("max", &self.limit.max)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadShedService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<crate::transport::Body>;
    type Error = BoxError;
    type Future = LoadShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let before = self.limit.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit::new(self.limit.clone());
        if before >= self.limit.max {
            drop(permit);
            self.limit
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let service = request
                .extensions()
                .get::<CallInfo>()
                .map_or("rmicro.server", CallInfo::service);
            return LoadShedFuture::refused(Error::too_many_requests(
                service,
                format!(
                    "`{service}` is at its limit of {} calls in flight \
                     (--server-max-concurrent); try again later or another node",
                    self.limit.max
                ),
            ));
        }
        LoadShedFuture::calling(self.inner.call(request), permit)
    }
}
