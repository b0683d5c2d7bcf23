//! Wrappers that are a function: `from_fn(|call, next| async move { next.run(call).await })`.
//!
//! The function gets the call ([`Call`]: its description, metadata, peer, and the
//! request it can change) and the rest of the stack ([`Next`]); it may answer itself
//! or pass the call on. An `Err` holding an [`Error`](crate::Error) is answered as
//! that error's gRPC status (with rmicro's `micro-error-bin` trailer, so an rmicro
//! caller gets the same `id`, `code` and `detail`); other errors pass up the stack
//! unchanged (on a client, [`NotSent`](super::NotSent) and transport errors drive
//! the retries). The result is a
//! tower layer like any other, so it sits in `wrap_handler`, `wrap_call` or a plain
//! tonic stack.

use super::{AttemptInfo, CallInfo, ClientCallInfo, Peer};
use crate::metadata::Metadata;
use crate::transport::Body;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

/// A layer that runs `f` around every call; see the [`wrapper`](crate::wrapper) docs.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::wrapper::from_fn;
/// let service = rmicro::Service::builder("greeter")
///     .args(["greeter"])
///     .wrap_handler(from_fn(|call, next| async move {
///         if call.metadata().get("x-api-key").is_none() {
///             return Err(rmicro::Error::unauthorized("greeter", "send an x-api-key").into());
///         }
///         next.run(call).await
///     }))
///     .build()
///     .expect("valid flags");
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFnLayer<F>
where
    F: Fn(Call, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static,
{
    FromFnLayer { f }
}

/// The layer [`from_fn`] returns.
#[derive(Clone)]
pub struct FromFnLayer<F> {
    f: F,
}

impl<F> std::fmt::Debug for FromFnLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromFnLayer")
            .field("f", &std::any::type_name::<F>())
            .finish()
    }
}

impl<S, F: Clone> Layer<S> for FromFnLayer<F> {
    type Service = FromFn<F, S>;

    fn layer(&self, inner: S) -> FromFn<F, S> {
        FromFn {
            f: self.f.clone(),
            inner,
        }
    }
}

/// The service a [`FromFnLayer`] builds.
#[derive(Clone)]
pub struct FromFn<F, S> {
    f: F,
    inner: S,
}

impl<F, S> std::fmt::Debug for FromFn<F, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromFn")
            .field("f", &std::any::type_name::<F>())
            .finish_non_exhaustive()
    }
}

/// A call as a function wrapper sees it: the HTTP request plus what rmicro knows.
#[derive(Debug)]
pub struct Call {
    request: http::Request<Body>,
}

impl Call {
    /// Wraps a request (for testing a wrapper function by hand).
    pub fn new(request: http::Request<Body>) -> Self {
        Call { request }
    }

    /// The server-side description, on handler wrappers.
    pub fn info(&self) -> Option<&CallInfo> {
        self.request.extensions().get::<CallInfo>()
    }

    /// The client-side description, on client wrappers.
    pub fn client_info(&self) -> Option<&ClientCallInfo> {
        self.request.extensions().get::<ClientCallInfo>()
    }

    /// The service called (the server's own name on handler wrappers, the target
    /// on client wrappers); empty when the request carries no description.
    pub fn service(&self) -> &str {
        match (self.info(), self.client_info()) {
            (Some(info), _) => info.service(),
            (None, Some(info)) => info.service(),
            (None, None) => "",
        }
    }

    /// go-micro endpoint name (`Greeter.SayHello`); the path when unknown.
    pub fn endpoint(&self) -> &str {
        match (self.info(), self.client_info()) {
            (Some(info), _) => info.endpoint(),
            (None, Some(info)) => info.endpoint(),
            (None, None) => self.request.uri().path(),
        }
    }

    /// The gRPC path (`/greeter.v1.Greeter/SayHello`).
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// On `wrap_call` wrappers, the attempt: node, address, attempt number.
    pub fn attempt(&self) -> Option<&AttemptInfo> {
        self.request.extensions().get::<AttemptInfo>()
    }

    /// On the server, who sent the call.
    pub fn peer(&self) -> Option<&Peer> {
        self.info().and_then(CallInfo::peer)
    }

    /// When the caller stops waiting (server side).
    pub fn deadline(&self) -> Option<Instant> {
        self.info().and_then(CallInfo::deadline)
    }

    /// The call's metadata (a copy of its application headers).
    pub fn metadata(&self) -> Metadata {
        Metadata::from_headers(self.request.headers().clone())
    }

    /// Puts a typed value in the request's extensions; on the server the handler
    /// reads it with [`Context::get`](crate::Context::get).
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.request.extensions_mut().insert(value);
    }

    /// The HTTP request.
    pub fn request(&self) -> &http::Request<Body> {
        &self.request
    }

    /// The HTTP request, to change headers or extensions.
    pub fn request_mut(&mut self) -> &mut http::Request<Body> {
        &mut self.request
    }

    /// The HTTP request, taken out.
    pub fn into_request(self) -> http::Request<Body> {
        self.request
    }
}

type Reply = Result<http::Response<Body>, BoxError>;

/// The rest of the stack below a function wrapper, ready to take the call.
pub struct Next {
    call: Box<dyn FnOnce(http::Request<Body>) -> BoxFuture<'static, Reply> + Send>,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

impl Next {
    /// A `next` that answers with `f` (for testing a wrapper function by hand).
    pub fn from_fn<G, Fut>(f: G) -> Next
    where
        G: FnOnce(http::Request<Body>) -> Fut + Send + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        Next {
            call: Box::new(move |request| Box::pin(f(request))),
        }
    }

    /// Passes the call on and returns what the stack below answered.
    pub async fn run(self, call: Call) -> Reply {
        (self.call)(call.request).await
    }
}

/// Takes requests and gives responses with any body of bytes, so the same wrapper runs
/// on an rmicro stack (bodies are already [`Body`]: nothing is converted) and on a plain
/// tonic server.
impl<F, Fut, S, ReqBody, ResBody> Service<http::Request<ReqBody>> for FromFn<F, S>
where
    F: Fn(Call, Next) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
    ReqBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Reply>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let request = request.map(Body::new);
        // The ready service goes to `next`; a fresh clone waits for the next call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let next = Next {
            call: Box::new(move |request| {
                let fut = inner.call(request);
                Box::pin(async move {
                    fut.await
                        .map(|response| response.map(Body::new))
                        .map_err(Into::into)
                })
            }),
        };
        let fut = (self.f)(Call { request }, next);
        Box::pin(async move {
            match fut.await {
                // A wrapper's own verdict is answered as its gRPC status, so it reaches
                // the caller on any server (tonic resets a stream whose layer fails).
                Err(err) if err.is::<crate::Error>() => match err.downcast::<crate::Error>() {
                    Ok(err) => Ok(err.to_status().into_http()),
                    Err(err) => Err(err),
                },
                other => other,
            }
        })
    }
}
