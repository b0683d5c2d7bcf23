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

use super::pool::PooledBox;
use super::{AttemptInfo, CallInfo, ClientCallInfo, Peer};
use crate::metadata::Metadata;
use crate::transport::Body;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
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
pub fn from_fn<F, Fut>(f: F) -> FromFnLayer
where
    F: Fn(Call, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static,
{
    FromFnLayer {
        f: Arc::new(move |call, next| WrapFuture::new(Verdict { fut: f(call, next) })),
    }
}

pin_project_lite::pin_project! {
    /// A function wrapper's future, its own verdict answered as a status ([`verdict`]).
    struct Verdict<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future<Output = Reply>> Future for Verdict<F> {
    type Output = Reply;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut reply = self.project().fut.poll(cx);
        // Changed in place: a reply is large, and moving it through a function per
        // wrapper per call was a measured share of a wrapper's cost.
        if let Poll::Ready(reply) = &mut reply {
            verdict(reply);
        }
        reply
    }
}

/// A function wrapper's future, its type erased: in a block of the per-thread pool
/// ([`super::pool`]), not a fresh allocation per call.
pub(crate) type WrapFuture = super::pool::PooledFuture<Reply>;

/// A function wrapper with its types erased, as stacks hold it.
pub(crate) type WrapFn = dyn Fn(Call, Next) -> WrapFuture + Send + Sync;

/// A run of function wrappers, outermost first.
pub(crate) type WrapFns = Arc<[Arc<WrapFn>]>;

/// A wrapper's own verdict is answered as its gRPC status, so it reaches the caller on
/// any server (tonic resets a stream whose layer fails); other errors pass up.
fn verdict(reply: &mut Reply) {
    if let Err(err) = reply
        && let Some(err) = err.downcast_ref::<crate::Error>()
    {
        *reply = Ok(err.to_status().into_http());
    }
}

/// The layer [`from_fn`] returns.
///
/// On rmicro's stacks, consecutive function wrappers run as one chain called by
/// index: no clone of the stack below and no allocation per wrapper beyond its own
/// future. Elsewhere (a plain tonic server) it is an ordinary tower layer.
#[derive(Clone)]
pub struct FromFnLayer {
    f: Arc<WrapFn>,
}

impl FromFnLayer {
    pub(crate) fn wrap_fn(&self) -> Arc<WrapFn> {
        self.f.clone()
    }
}

impl std::fmt::Debug for FromFnLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromFnLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for FromFnLayer {
    type Service = FromFn<S>;

    fn layer(&self, inner: S) -> FromFn<S> {
        FromFn::new(Arc::from([self.f.clone()]), inner)
    }
}

/// The service a [`FromFnLayer`] builds: one function wrapper, or a run of them,
/// over `S`.
#[derive(Clone)]
pub struct FromFn<S> {
    fns: WrapFns,
    inner: S,
}

impl<S> FromFn<S> {
    pub(crate) fn new(fns: WrapFns, inner: S) -> Self {
        FromFn { fns, inner }
    }
}

impl<S> std::fmt::Debug for FromFn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromFn")
            .field("wrappers", &self.fns.len())
            .finish_non_exhaustive()
    }
}

/// A call as a function wrapper sees it: the HTTP request plus what rmicro knows.
///
/// The request sits behind a pointer (a block of a per-thread pool), so handing the
/// call to the next wrapper moves eight bytes, not a request of a few hundred.
#[derive(Debug)]
pub struct Call {
    request: PooledBox<http::Request<Body>>,
}

impl Call {
    /// Wraps a request (for testing a wrapper function by hand).
    pub fn new(request: http::Request<Body>) -> Self {
        Call {
            request: PooledBox::new(request),
        }
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
        self.request.into_inner()
    }
}

type Reply = Result<http::Response<Body>, BoxError>;

/// What runs after the last function wrapper of a chain.
enum Tail {
    /// The server's handlers: always ready, called by reference.
    Dispatch(crate::server::router::Dispatch),
    /// Anything else, already made ready.
    Boxed(Box<dyn FnOnce(http::Request<Body>) -> BoxFuture<'static, Reply> + Send>),
    /// A service that is always ready and called by reference (the client's).
    Shared(SharedCall),
}

/// A service that is always ready and is called by reference: the bottom of each of
/// the client's two stacks (selection and retries; the attempt on its channel).
pub(crate) type SharedCall =
    Arc<dyn Fn(http::Request<Body>) -> BoxFuture<'static, Reply> + Send + Sync>;

/// The rest of the stack below a function wrapper, ready to take the call.
pub struct Next {
    fns: WrapFns,
    index: usize,
    tail: Tail,
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("wrappers_left", &self.fns.len().saturating_sub(self.index))
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// What [`Next`] returns: the next wrapper's (boxed) future, or the handlers'.
    #[project = NextProj]
    pub(crate) enum NextFuture {
        Boxed { fut: BoxFuture<'static, Reply> },
        Wrapper { fut: WrapFuture },
        Dispatch { #[pin] fut: crate::server::router::DispatchFuture },
    }
}

impl Future for NextFuture {
    type Output = Reply;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match self.project() {
            NextProj::Boxed { fut } => fut.as_mut().poll(cx),
            NextProj::Wrapper { fut } => std::pin::Pin::new(fut).poll(cx),
            NextProj::Dispatch { fut } => match fut.poll(cx) {
                Poll::Ready(Ok(response)) => Poll::Ready(Ok(response)),
                Poll::Pending => Poll::Pending,
            },
        }
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
            fns: Arc::from([]),
            index: 0,
            tail: Tail::Boxed(Box::new(move |request| Box::pin(f(request)))),
        }
    }

    /// The chain `fns` over the server's handlers.
    pub(crate) fn over_dispatch(fns: WrapFns, dispatch: crate::server::router::Dispatch) -> Next {
        Next {
            fns,
            index: 0,
            tail: Tail::Dispatch(dispatch),
        }
    }

    /// The chain `fns` over `base`, a service that is always ready.
    pub(crate) fn over_shared(fns: WrapFns, base: SharedCall) -> Next {
        Next {
            fns,
            index: 0,
            tail: Tail::Shared(base),
        }
    }

    /// Passes the call on; the future answers with what the stack below answered.
    ///
    /// The next wrapper starts at once, as a tower service's `call` does; the
    /// future only waits for its answer (so it is small, whatever the stack below).
    pub fn run(self, call: Call) -> impl Future<Output = Reply> + Send + 'static {
        self.start(call)
    }

    /// Runs the next wrapper (or the tail) on `call`.
    pub(crate) fn start(self, call: Call) -> NextFuture {
        let Next { fns, index, tail } = self;
        match fns.get(index) {
            Some(f) => {
                let next = Next {
                    fns: fns.clone(),
                    index: index + 1,
                    tail,
                };
                NextFuture::Wrapper { fut: f(call, next) }
            }
            None => match tail {
                Tail::Dispatch(dispatch) => NextFuture::Dispatch {
                    fut: dispatch.run_pooled(call.request),
                },
                Tail::Boxed(f) => NextFuture::Boxed {
                    fut: f(call.into_request()),
                },
                Tail::Shared(base) => NextFuture::Boxed {
                    fut: base(call.into_request()),
                },
            },
        }
    }
}

/// The rest of a chain as a tower service that takes one call, so that rmicro's own
/// tower layers (breaker, rate limit, load shedding, endpoint timeouts) run as links
/// of a function chain: their service is built per call over it (an `Arc` clone),
/// with one allocation for its future and no clone of the stack below.
///
/// Its clones are spent (a layer that moves the ready service into its future and
/// keeps a clone, as tower's contract has it, never calls the clone again).
pub(crate) struct OneShot(Option<Next>);

impl Clone for OneShot {
    fn clone(&self) -> Self {
        OneShot(None)
    }
}

impl Service<http::Request<Body>> for OneShot {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = NextFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> NextFuture {
        match self.0.take() {
            Some(next) => next.start(Call::new(request)),
            None => NextFuture::Boxed {
                fut: Box::pin(std::future::ready(Err(BoxError::from(
                    "a wrapper called the rest of its chain twice for one call",
                )))),
            },
        }
    }
}

/// `layer` as a link of a function chain (see [`OneShot`]).
pub(crate) fn layer_fn<L>(layer: L) -> Arc<WrapFn>
where
    L: Layer<OneShot> + Send + Sync + 'static,
    L::Service: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>,
    <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
{
    Arc::new(move |call: Call, next: Next| {
        let mut service = layer.layer(OneShot(Some(next)));
        WrapFuture::new(service.call(call.into_request()))
    })
}

/// Takes requests and gives responses with any body of bytes, so the same wrapper runs
/// on an rmicro stack (bodies are already [`Body`]: nothing is converted) and on a plain
/// tonic server.
impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for FromFn<S>
where
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
        // The ready service goes to the end of the chain; a fresh clone waits for the
        // next call. One clone per call for the whole run of wrappers.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let next = Next {
            fns: self.fns.clone(),
            index: 0,
            tail: Tail::Boxed(Box::new(move |request| {
                let fut = inner.call(request);
                Box::pin(async move {
                    fut.await
                        .map(|response| response.map(Body::new))
                        .map_err(Into::into)
                })
            })),
        };
        match next.start(Call::new(request)) {
            NextFuture::Boxed { fut } => fut,
            other => Box::pin(other),
        }
    }
}
