//! The logging service: times the call and logs it when its status is known.

use crate::errors::Code;
use crate::transport::Body;
use crate::wrapper::{CallInfo, ClientCallInfo, Outcome, on_status};
use futures_util::future::BoxFuture;
use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::Service;

/// Logs each call that passes through it; see [`super`].
#[derive(Debug, Clone)]
pub struct Logging<S> {
    inner: S,
}

impl<S> Logging<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Logging { inner }
    }
}

fn log(service: &str, endpoint: &str, outcome: &Outcome, started: Instant) {
    let micros = started.elapsed().as_micros() as u64;
    let code = outcome.code();
    let message = outcome.error().map_or("", |e| e.detail.as_str());
    match code {
        Code::Ok => tracing::debug!(service, endpoint, status = ?code, micros, "call ok"),
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
            tracing::error!(service, endpoint, status = ?code, error = message, micros, "call failed")
        }
        _ => {
            tracing::warn!(service, endpoint, status = ?code, error = message, micros, "call failed")
        }
    }
}

impl<S, E> Service<http::Request<Body>> for Logging<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = E>,
    S::Future: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = E;
    type Future = BoxFuture<'static, Result<http::Response<Body>, E>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let extensions = request.extensions();
        let (service, endpoint): (Arc<str>, Cow<'static, str>) = match (
            extensions.get::<CallInfo>(),
            extensions.get::<ClientCallInfo>(),
        ) {
            (Some(info), _) => (info.service_arc().clone(), Cow::Borrowed(info.endpoint())),
            (None, Some(info)) => (info.service_arc().clone(), info.endpoint_cow().clone()),
            (None, None) => (Arc::from(""), Cow::Owned(request.uri().path().to_owned())),
        };
        let fut = self.inner.call(request);
        Box::pin(async move {
            match fut.await {
                Ok(response) => Ok(on_status(response, move |outcome| {
                    log(&service, &endpoint, outcome, started)
                })),
                Err(err) => {
                    let outcome =
                        Outcome::failed(crate::Error::unavailable(&*service, err.to_string()));
                    log(&service, &endpoint, &outcome, started);
                    Err(err)
                }
            }
        })
    }
}
