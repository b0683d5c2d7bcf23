//! The logging future: the inner call's future, then the response with its status
//! observed (a stream's status arrives with its last message).

use super::service::{CallName, log};
use crate::transport::Body;
use crate::wrapper::{Outcome, on_status};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

pin_project_lite::pin_project! {
    /// The future of [`Logging`](super::Logging).
    pub struct LoggingFuture<F> {
        #[pin]
        inner: F,
        name: Option<CallName>,
        started: Instant,
    }
}

impl<F> LoggingFuture<F> {
    pub(crate) fn new(inner: F, name: CallName, started: Instant) -> Self {
        LoggingFuture {
            inner,
            name: Some(name),
            started,
        }
    }
}

impl<F, E, ResBody> Future for LoggingFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: std::fmt::Display,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let started = *this.started;
        Poll::Ready(match this.name.take() {
            Some(name) => finish(result, name, started),
            None => result.map(|r| r.map(Body::new)),
        })
    }
}

/// Logs how the call `name` that began at `started` ended: now for a failure to
/// answer, when its status is known for a response (a stream's, after its last
/// message).
pub(crate) fn finish<ResBody, E>(
    result: Result<http::Response<ResBody>, E>,
    name: CallName,
    started: Instant,
) -> Result<http::Response<Body>, E>
where
    E: std::fmt::Display,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    match result {
        Ok(response) => Ok(on_status(response.map(Body::new), move |outcome| {
            log(&name, outcome, started)
        })),
        Err(err) => {
            let outcome =
                Outcome::failed(crate::Error::unavailable(name.service(), err.to_string()));
            log(&name, &outcome, started);
            Err(err)
        }
    }
}
