//! The auth service: decides each call before its handler runs.

use super::AuthFuture;
use super::layer::Verifier;
use crate::wrapper::CallInfo;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{BoxError, Service};

/// A service whose calls are verified first; see the [module docs](super).
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

impl<S> AuthService<S> {
    pub(super) fn new(inner: S, verifier: Arc<Verifier>) -> Self {
        AuthService { inner, verifier }
    }
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<crate::transport::Body>;
    type Error = BoxError;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // The resource: `service.Endpoint`, or the gRPC path on a plain tonic server.
        let info = request.extensions().get::<CallInfo>();
        let resource = match info {
            Some(info) => format!("{}.{}", info.service(), info.endpoint()),
            None => request
                .uri()
                .path()
                .trim_start_matches('/')
                .replace('/', "."),
        };
        let peer = info.and_then(CallInfo::peer).and_then(|p| p.identity());
        match self.verifier.verify(request.headers(), peer, &resource) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                AuthFuture::called(self.inner.call(request))
            }
            Err(error) => AuthFuture::refused(error),
        }
    }
}
