//! Turning any tower layer into a link of rmicro's wrapper stacks: the layer's
//! service is boxed, and its errors (from `poll_ready` or the call) become gRPC
//! statuses, so the stack below and above it keeps one error type.

use super::CallInfo;
use super::error::error_from_wrapper;
use super::from_fn::{FromFn, FromFnLayer, NextFuture, SharedCall, WrapFn, WrapFns};
use crate::server::HandlerStack;
use crate::transport::Body;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{BoxError, Layer, Service};

/// One registered wrapper of a stack of `S`: a function wrapper (run in a chain
/// with its neighbours) or any other tower layer. Made by the builders' `wrap_*`
/// options; not something to build by hand.
#[doc(hidden)]
pub struct Wrap<S>(Kind<S>);

/// What a [`Wrap`] holds.
enum Kind<S> {
    /// [`super::from_fn`], or one of rmicro's own layers run as a link of the chain.
    Fn(Arc<WrapFn>),
    /// Any other layer, boxed.
    Tower(Arc<dyn Fn(S) -> S + Send + Sync>),
}

impl<S> Clone for Wrap<S> {
    fn clone(&self) -> Self {
        Wrap(match &self.0 {
            Kind::Fn(f) => Kind::Fn(f.clone()),
            Kind::Tower(t) => Kind::Tower(t.clone()),
        })
    }
}

impl<S> Wrap<S> {
    /// `layer` as a wrap: a function wrapper when it is one, else `tower`'s boxing.
    /// rmicro's own layers join the chain of function wrappers: [`super::from_fn`]
    /// and logging are functions; the breaker, rate limit, load shedding, metrics
    /// and endpoint timeouts are always ready and cheap to build, so they run built
    /// per call over the rest of the chain ([`super::from_fn::layer_fn`]) instead of
    /// as boxed tower services cloned per call.
    fn of<L: 'static>(layer: L, tower: impl FnOnce(L) -> Wrap<S>) -> Wrap<S> {
        let any = &layer as &dyn std::any::Any;
        if let Some(layer) = any.downcast_ref::<FromFnLayer>() {
            return Wrap(Kind::Fn(layer.wrap_fn()));
        }
        if let Some(layer) = any.downcast_ref::<super::logging::LoggingLayer>() {
            return Wrap(Kind::Fn(layer.wrap_fn()));
        }
        own::<super::breaker::BreakerLayer>(any)
            .or_else(|| own::<super::ratelimit::RateLimitLayer>(any))
            .or_else(|| own::<super::shed::LoadShedLayer>(any))
            .or_else(|| own::<super::metrics::MetricsLayer>(any))
            .or_else(|| own::<super::trace::TraceLayer>(any))
            .or_else(|| own::<super::timeout::EndpointTimeouts>(any))
            .map_or_else(|| tower(layer), |f| Wrap(Kind::Fn(f)))
    }
}

/// `any` as a link of the function chain, if it is the layer `L` of rmicro's own.
fn own<L>(any: &dyn std::any::Any) -> Option<Arc<WrapFn>>
where
    L: Layer<super::from_fn::OneShot> + Clone + Send + Sync + 'static,
    L::Service: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>,
    <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
{
    any.downcast_ref::<L>()
        .map(|layer| super::from_fn::layer_fn(layer.clone()))
}

/// One registered handler wrapper, applied when a server starts.
pub(crate) type HandlerWrap = Wrap<HandlerStack>;

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
        Wrap::of(self, |layer| {
            Wrap(Kind::Tower(Arc::new(move |inner| {
                HandlerStack::new(ErrorsAsStatus::new(layer.layer(inner)))
            })))
        })
    }
}

/// The stack client wrappers wrap, at both levels (`wrap_client`, `wrap_call`).
pub type ClientStack =
    tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// One registered client wrapper, applied when a client is built.
pub(crate) type ClientWrap = Wrap<ClientStack>;

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
        Wrap::of(self, |layer| {
            Wrap(Kind::Tower(Arc::new(move |inner| {
                let into: fn(_) -> BoxError = Into::into;
                ClientStack::new(tower::util::MapErr::new(layer.layer(inner), into))
            })))
        })
    }
}

/// Boxes a run of function wrappers over a stack as a link of that stack.
pub(crate) trait ChainLink: Sized {
    /// `chain` as one link.
    fn link(chain: FromFn<Self>) -> Self;
}

impl ChainLink for HandlerStack {
    fn link(chain: FromFn<Self>) -> Self {
        HandlerStack::new(ErrorsAsStatus::new(chain))
    }
}

impl ChainLink for ClientStack {
    fn link(chain: FromFn<Self>) -> Self {
        ClientStack::new(chain)
    }
}

/// Applies `wraps` around `inner`, the first registered outermost; each run of
/// consecutive function wrappers becomes one link.
pub(crate) fn apply<S: ChainLink>(inner: S, wraps: &[Wrap<S>]) -> S {
    let mut stack = inner;
    // Function wrappers met so far (innermost first), not yet linked.
    let mut run: Vec<Arc<WrapFn>> = Vec::new();
    let link = |run: &mut Vec<Arc<WrapFn>>, stack: S| {
        run.reverse();
        S::link(FromFn::new(run.drain(..).collect(), stack))
    };
    for wrap in wraps.iter().rev() {
        match &wrap.0 {
            Kind::Fn(f) => run.push(f.clone()),
            Kind::Tower(layer) => {
                if !run.is_empty() {
                    stack = link(&mut run, stack);
                }
                stack = layer(stack);
            }
        }
    }
    if !run.is_empty() {
        stack = link(&mut run, stack);
    }
    stack
}

/// A client stack with its wrappers. The bottom of each client stack is always
/// ready and called by reference, so when every wrapper is a function wrapper they
/// run as a chain straight over it (no stack to clone or make ready per call); with
/// no wrappers the call goes to it directly.
#[derive(Clone)]
pub(crate) enum ClientChain {
    /// No wrappers: calls go to the bottom, called by reference (nothing cloned
    /// per call, so one copy serves every thread).
    Direct(SharedCall),
    /// Function wrappers over the bottom, a copy per thread stripe.
    Fns(Arc<[FnsCopy]>),
    /// The bottom wrapped in wrappers of which some are tower layers.
    Stack(ClientStack),
}

impl ClientChain {
    /// `base` wrapped in `wraps`, the first registered outermost.
    pub(crate) fn new(base: SharedCall, wraps: &[ClientWrap]) -> Self {
        if wraps.is_empty() {
            return ClientChain::Direct(base);
        }
        match only_fns(wraps) {
            Some(fns) => ClientChain::Fns(
                (0..STRIPES)
                    .map(|_| FnsCopy {
                        fns: fns.iter().cloned().collect(),
                        base: {
                            let base = base.clone();
                            Arc::new(move |request| base(request))
                        },
                    })
                    .collect(),
            ),
            None => {
                let inner = ClientStack::new(tower::service_fn(move |request| base(request)));
                ClientChain::Stack(apply(inner, wraps))
            }
        }
    }

    /// Sends `request` through the wrappers, then the stack below.
    pub(crate) fn call(&self, request: http::Request<Body>) -> NextFuture {
        match self {
            ClientChain::Direct(base) => NextFuture::Boxed { fut: base(request) },
            ClientChain::Fns(copies) => {
                let FnsCopy { fns, base } = &copies[stripe() % copies.len()];
                super::Next::over_shared(fns.clone(), base.clone()).start(super::Call::new(request))
            }
            ClientChain::Stack(stack) => {
                let mut stack = stack.clone();
                NextFuture::Boxed {
                    fut: Box::pin(async move {
                        tower::ServiceExt::ready(&mut stack)
                            .await?
                            .call(request)
                            .await
                    }),
                }
            }
        }
    }
}

/// How many copies of a client's chain there are: calls on different threads clone
/// (and drop) a chain's `Arc`s once per wrapper, and one count that every core
/// changes costs each change a trip of its cache line between the cores (measured:
/// 4 no-op client wrappers cost 6.5 % more CPU per call with one copy).
const STRIPES: usize = 8;

/// One copy of a client's function chain: its own `Arc`s, so its own counts.
pub(crate) struct FnsCopy {
    fns: WrapFns,
    base: SharedCall,
}

/// This thread's stripe: threads numbered as they first call, so that the runtime's
/// workers get different copies.
fn stripe() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    STRIPE.try_with(|stripe| *stripe).unwrap_or(0)
}

/// The wrappers as one chain when every one is a function wrapper (the server then
/// runs them straight over its handlers, no stack to clone or make ready).
pub(crate) fn only_fns<S>(wraps: &[Wrap<S>]) -> Option<WrapFns> {
    wraps
        .iter()
        .map(|wrap| match &wrap.0 {
            Kind::Fn(f) => Some(f.clone()),
            Kind::Tower(_) => None,
        })
        .collect()
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
pub(crate) fn answer(err: BoxError, service: &str) -> http::Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::from_fn;
    use std::sync::Mutex;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn note(log: &Log, name: &'static str) -> ClientWrap {
        let log = log.clone();
        ClientLayer::into_wrap(from_fn(move |call, next| {
            log.lock().expect("test log").push(name);
            next.run(call)
        }))
    }

    /// A tower layer (not a function wrapper) that notes each call.
    #[derive(Clone)]
    struct Noting<S> {
        inner: S,
        log: Log,
    }

    impl<S: Service<http::Request<Body>>> Service<http::Request<Body>> for Noting<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: http::Request<Body>) -> S::Future {
            self.log.lock().expect("test log").push("tower");
            self.inner.call(request)
        }
    }

    #[tokio::test]
    async fn runs_of_function_wrappers_keep_their_place_around_tower_layers() {
        let log: Log = Arc::default();
        let tower_log = log.clone();
        let tower = ClientLayer::into_wrap(tower::layer::layer_fn(move |inner| Noting {
            inner,
            log: tower_log.clone(),
        }));
        let handler_log = log.clone();
        let innermost = ClientStack::new(tower::service_fn(move |_request| {
            handler_log.lock().expect("test log").push("handler");
            std::future::ready(Ok::<_, BoxError>(http::Response::new(Body::empty())))
        }));
        let wraps = [note(&log, "a"), tower, note(&log, "b"), note(&log, "c")];
        assert!(only_fns(&wraps).is_none());
        let mut stack = apply(innermost, &wraps);
        for _ in 0..2 {
            tower::ServiceExt::ready(&mut stack)
                .await
                .expect("ready")
                .call(http::Request::new(Body::empty()))
                .await
                .expect("answered");
        }
        let calls = log.lock().expect("test log").clone();
        let once = ["a", "tower", "b", "c", "handler"];
        assert_eq!(calls, [once, once].concat());
        assert_eq!(
            only_fns(&[note(&log, "x"), note(&log, "y")]).map(|f| f.len()),
            Some(2)
        );
    }
}
