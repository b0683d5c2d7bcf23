//! Turning any tower layer into a link of rmicro's wrapper stacks: the layer's
//! service is boxed, and its errors (from `poll_ready` or the call) become gRPC
//! statuses, so the stack below and above it keeps one error type.

use super::CallInfo;
use super::error::error_from_wrapper;
use crate::server::HandlerStack;
use crate::transport::Body;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{BoxError, Layer, Service};

/// One registered handler wrapper, applied when a server starts.
pub(crate) type HandlerWrap = Arc<dyn Fn(HandlerStack) -> HandlerStack + Send + Sync>;

/// A tower layer over `S` whose service is an HTTP-level gRPC service that a stack
/// can hold: `Clone + Send + Sync`, failing with anything that becomes a `BoxError`.
pub trait StackLayer<S>: Layer<S, Service = Self::Wrapped> + Send + Sync + 'static {
    /// The layer's service.
    type Wrapped: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error: Into<BoxError> + Send + 'static,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static;
}

impl<S, L> StackLayer<S> for L
where
    L: Layer<S> + Send + Sync + 'static,
    L::Service: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error: Into<BoxError> + Send + 'static,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    type Wrapped = L::Service;
}

/// A tower layer that can wrap handlers: its service takes and returns HTTP-level
/// gRPC calls, is `Clone + Send + Sync`, and fails with anything that converts into
/// a `BoxError` (answered as a gRPC status). Implemented for every such layer.
pub trait HandlerLayer: Send + Sync + 'static {
    /// Boxes the layer for the server's stack.
    #[doc(hidden)]
    fn into_wrap(self) -> HandlerWrap;
}

impl<L: StackLayer<HandlerStack>> HandlerLayer for L {
    fn into_wrap(self) -> HandlerWrap {
        Arc::new(move |inner| HandlerStack::new(ErrorsAsStatus::new(self.layer(inner))))
    }
}

/// The stack client wrappers wrap, at both levels (`wrap_client`, `wrap_call`).
pub type ClientStack =
    tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// One registered client wrapper, applied when a client is built.
pub(crate) type ClientWrap = Arc<dyn Fn(ClientStack) -> ClientStack + Send + Sync>;

/// A tower layer that can wrap client calls (`wrap_client`, `wrap_call`): its
/// service takes and returns HTTP-level gRPC calls, is `Clone + Send + Sync`, and
/// fails with anything that converts into a `BoxError`. Implemented for every such
/// layer.
pub trait ClientLayer: Send + Sync + 'static {
    /// Boxes the layer for the client's stacks.
    #[doc(hidden)]
    fn into_wrap(self) -> ClientWrap;
}

impl<L: StackLayer<ClientStack>> ClientLayer for L {
    fn into_wrap(self) -> ClientWrap {
        Arc::new(move |inner| {
            let into: fn(_) -> BoxError = Into::into;
            ClientStack::new(tower::util::MapErr::new(self.layer(inner), into))
        })
    }
}

/// Applies `wraps` around `inner`, the first registered outermost.
pub(crate) fn apply<S>(inner: S, wraps: &[Arc<dyn Fn(S) -> S + Send + Sync>]) -> S {
    wraps.iter().rev().fold(inner, |s, wrap| wrap(s))
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

/// The gRPC response for a wrapper's error on a call to `service`.
fn answer(err: BoxError, service: &str) -> http::Response<Body> {
    let err = error_from_wrapper(err, service);
    tracing::debug!(error = %err, "a handler wrapper refused the call");
    err.to_status().into_http()
}

fn service_of(request: &http::Request<Body>) -> Arc<str> {
    match request.extensions().get::<CallInfo>() {
        Some(info) => info.service_arc().clone(),
        None => Arc::from("rmicro.server"),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ErrorsAsStatus`]: the wrapper's, with its error answered.
    #[project = AnswerProj]
    pub(crate) enum Answer<F> {
        Call { #[pin] fut: F, service: Arc<str> },
        Ready { response: Option<http::Response<Body>> },
    }
}

impl<F, E> std::future::Future for Answer<F>
where
    F: std::future::Future<Output = Result<http::Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Call { fut, service } => match fut.poll(cx) {
                Poll::Ready(Ok(response)) => Poll::Ready(Ok(response)),
                Poll::Ready(Err(err)) => Poll::Ready(Ok(answer(err.into(), service))),
                Poll::Pending => Poll::Pending,
            },
            AnswerProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Ready(Ok(answer("polled after completion".into(), ""))),
            },
        }
    }
}

impl<S> Service<http::Request<Body>> for ErrorsAsStatus<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer<S::Future>;

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
        let service = service_of(&request);
        if let Some(err) = self.not_ready.take() {
            return Answer::Ready {
                response: Some(answer(err, &service)),
            };
        }
        Answer::Call {
            fut: self.inner.call(request),
            service,
        }
    }
}
