//! The logging service: notes what the call is and when it started; its future logs
//! it once the status is known.

use super::LoggingFuture;
use crate::errors::Code;
use crate::transport::Body;
use crate::wrapper::{CallInfo, ClientCallInfo, Outcome};
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

/// Which call a log line is about.
pub(crate) struct CallName {
    service: Arc<str>,
    endpoint: Cow<'static, str>,
    /// The call's span, when a tracing layer outside this one made one.
    trace: Option<opentelemetry::Context>,
}

impl CallName {
    pub(crate) fn of<B>(request: &http::Request<B>) -> Self {
        let extensions = request.extensions();
        let (service, endpoint) = match (
            extensions.get::<CallInfo>(),
            extensions.get::<ClientCallInfo>(),
        ) {
            (Some(info), _) => (info.service_arc().clone(), Cow::Borrowed(info.endpoint())),
            (None, Some(info)) => (info.service_arc().clone(), info.endpoint_cow().clone()),
            (None, None) => (Arc::from(""), Cow::Owned(request.uri().path().to_owned())),
        };
        let trace = crate::wrapper::trace::span_of(extensions);
        CallName {
            service,
            endpoint,
            trace,
        }
    }

    /// The ids of the call's span, when it was traced.
    fn ids(
        &self,
    ) -> Option<(
        crate::wrapper::trace::Hex<16>,
        crate::wrapper::trace::Hex<8>,
    )> {
        self.trace.as_ref().and_then(crate::wrapper::trace::hex_ids)
    }

    pub(crate) fn service(&self) -> &str {
        &self.service
    }
}

pub(crate) fn log(name: &CallName, outcome: &Outcome, started: Instant) {
    let (service, endpoint) = (&*name.service, &*name.endpoint);
    // Fields are evaluated only when the line is enabled: a success at INFO costs
    // no clock read.
    let micros = || started.elapsed().as_micros() as u64;
    let code = outcome.code();
    let message = outcome.error().map_or("", |e| e.detail.as_str());
    // Recorded only when traced (a `None` field is left out of the line), and
    // formatted only when the line is enabled.
    let trace_id = || name.ids().map(|(trace, _)| tracing::field::display(trace));
    let span_id = || name.ids().map(|(_, span)| tracing::field::display(span));
    match code {
        Code::Ok => {
            tracing::debug!(service, endpoint, status = ?code, micros = micros(), trace_id = trace_id(), span_id = span_id(), "call ok")
        }
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
            tracing::error!(service, endpoint, status = ?code, error = message, micros = micros(), trace_id = trace_id(), span_id = span_id(), "call failed")
        }
        _ => {
            tracing::warn!(service, endpoint, status = ?code, error = message, micros = micros(), trace_id = trace_id(), span_id = span_id(), "call failed")
        }
    }
}

/// Generic over both bodies, so the layer runs on a plain tonic server too; the
/// response comes out as rmicro's [`Body`] (free when it already is one, or tonic's).
impl<S, E, ReqBody, ResBody> Service<http::Request<ReqBody>> for Logging<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>, Error = E>,
    E: std::fmt::Display,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = E;
    type Future = LoggingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let name = CallName::of(&request);
        LoggingFuture::new(self.inner.call(request), name, Instant::now())
    }
}
