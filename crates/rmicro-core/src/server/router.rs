//! Routes each HTTP/2 request to the handler of its gRPC path, through the handler
//! wrappers, picking the codec from `content-type`.

use super::dispatch::{CallEnv, InFlightGuard};
use super::handler::{MethodDescriptor, ServiceHandler};
use crate::codec::{Format, JsonTranscoder, MapFrames, json_to_proto, proto_to_json};
use crate::transport::{Body, parse_grpc_timeout};
use crate::wrapper::{CallInfo, Peer};
use futures_util::future::BoxFuture;
use http::HeaderValue;
use hyper::body::Incoming;
use prost_reflect::MessageDescriptor;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tonic::Status;
use tower::Service;

/// A boxed HTTP-level gRPC service: what handler wrappers wrap.
pub type HandlerStack =
    tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Where one gRPC path goes.
pub(crate) struct Route {
    pub(crate) handler: Arc<dyn ServiceHandler>,
    pub(crate) index: usize,
    pub(crate) method: &'static MethodDescriptor,
    /// Request and reply descriptors, for the JSON codec.
    json: Option<(MessageDescriptor, MessageDescriptor)>,
}

/// The routing table of a server, shared by all its connections.
pub(crate) struct Routes {
    pub(crate) name: Arc<str>,
    /// By gRPC path, and by the short path `/Greeter/SayHello` that dynamic calls use.
    routes: HashMap<String, Arc<Route>>,
    /// gRPC service names we serve, to tell an unknown method from an unknown service.
    services: HashSet<String>,
    /// Health and reflection: served directly, outside the wrappers.
    builtin: HashMap<String, HandlerStack>,
    pub(crate) max_message_size: usize,
    pub(crate) in_flight: Arc<AtomicUsize>,
}

impl Routes {
    pub(crate) fn new(
        name: &str,
        handlers: &[Arc<dyn ServiceHandler>],
        builtin: HashMap<String, HandlerStack>,
        max_message_size: usize,
    ) -> Self {
        let mut json = JsonTranscoder::new();
        for h in handlers {
            if let Err(err) = json.add_file_descriptor_set(h.descriptor().file_descriptor_set) {
                tracing::warn!(service = h.descriptor().name, error = %err, "JSON codec disabled for this service");
            }
        }
        let mut routes = HashMap::new();
        let mut services: HashSet<String> = builtin.keys().cloned().collect();
        let mut short_names: HashMap<&str, usize> = HashMap::new();
        for h in handlers {
            *short_names.entry(h.descriptor().short_name).or_default() += 1;
        }
        for h in handlers {
            let desc = h.descriptor();
            services.insert(desc.name.to_owned());
            for (index, method) in desc.methods.iter().enumerate() {
                let json = json
                    .method(desc.name, method.name)
                    .map(|m| (m.input(), m.output()));
                let route = Arc::new(Route {
                    handler: h.clone(),
                    index,
                    method,
                    json,
                });
                // A short name shared by two packages would be ambiguous: no alias.
                if short_names.get(desc.short_name) == Some(&1) {
                    services.insert(desc.short_name.to_owned());
                    routes.insert(
                        format!("/{}/{}", desc.short_name, method.name),
                        route.clone(),
                    );
                }
                routes.insert(method.path.to_owned(), route);
            }
        }
        Routes {
            name: Arc::from(name),
            routes,
            services,
            builtin,
            max_message_size,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Which handler a request goes to, carried in its [`CallInfo`].
#[derive(Clone)]
pub(crate) struct RouteTarget(pub(crate) Arc<Route>);

impl std::fmt::Debug for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RouteTarget")
            .field(&self.0.method.path)
            .finish()
    }
}

/// The innermost service: runs the handler named by the request's [`RouteTarget`].
///
/// Each connection has its own (see [`Router::for_connection`]): the calls clone it
/// and its service name, and counts shared by every connection would bounce between
/// the cores that serve them.
#[derive(Clone)]
pub(crate) struct Dispatch(Arc<DispatchShared>);

/// What a [`Dispatch`] holds.
pub(crate) struct DispatchShared {
    pub(crate) routes: Arc<Routes>,
    /// The service's name: a copy of `routes.name`, this connection's own.
    pub(crate) name: Arc<str>,
}

impl Dispatch {
    /// The handlers of `routes`, with a name of their own.
    pub(crate) fn new(routes: Arc<Routes>) -> Dispatch {
        let name = Arc::from(&*routes.name);
        Dispatch(Arc::new(DispatchShared { routes, name }))
    }
}

impl std::ops::Deref for Dispatch {
    type Target = DispatchShared;

    fn deref(&self) -> &DispatchShared {
        &self.0
    }
}

/// What [`Dispatch`] returns: the handler's future, or an answer already made (one
/// allocation per call: the handler's).
pub(crate) enum DispatchFuture {
    Call {
        fut: BoxFuture<'static, http::Response<Body>>,
    },
    /// Answered without a handler (a rare error); boxed, so that the future every
    /// call carries (and every function wrapper's future holds) stays two words.
    Ready {
        response: Option<Box<http::Response<Body>>>,
    },
}

impl DispatchFuture {
    fn ready(response: http::Response<Body>) -> Self {
        DispatchFuture::Ready {
            response: Some(Box::new(response)),
        }
    }
}

impl std::future::Future for DispatchFuture {
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            DispatchFuture::Call { fut } => fut.as_mut().poll(cx).map(Ok),
            DispatchFuture::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(*response)),
                None => Poll::Ready(Ok(Status::internal("polled after completion").into_http())),
            },
        }
    }
}

/// What [`Router`] returns to hyper: without wrappers, the dispatch itself (no box
/// of its own); through wrappers or to a builtin service, a boxed future.
#[allow(
    clippy::large_enum_variant,
    reason = "hyper moves the future once, into the call's task; a box would be taken on the connection's thread"
)]
pub(crate) enum RouterFuture {
    Direct {
        fut: DispatchFuture,
        json_output: Option<MessageDescriptor>,
        max: usize,
    },
    /// Through a chain of function wrappers (no box beyond the wrappers' own).
    Chain {
        fut: ChainState,
        service: Arc<str>,
        json_output: Option<MessageDescriptor>,
        max: usize,
    },
    Boxed {
        fut: BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
    },
}

/// A chain of function wrappers as the router returns it: started when hyper first
/// polls it, in the call's own task, so that the wrappers' futures and the call are
/// made, used and freed by the thread that runs the call (not made by the
/// connection's task, perhaps on another core, and freed by the call's).
#[allow(
    clippy::large_enum_variant,
    reason = "the request waits inline on purpose: boxing it here would take the block on the connection's thread"
)]
pub(crate) enum ChainState {
    /// Not polled yet: the chain and the request it will start with.
    Ready(crate::wrapper::Next, http::Request<Body>),
    /// Started, in the call's task.
    Running(crate::wrapper::from_fn::NextFuture),
    /// Answered (or between the two states above, for an instant).
    Done,
}

impl RouterFuture {
    fn ready(response: http::Response<Body>) -> Self {
        RouterFuture::Direct {
            fut: DispatchFuture::ready(response),
            json_output: None,
            max: 0,
        }
    }
}

impl std::future::Future for RouterFuture {
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            RouterFuture::Direct {
                fut,
                json_output,
                max,
            } => match std::pin::Pin::new(fut).poll(cx) {
                Poll::Ready(Ok(response)) => {
                    Poll::Ready(Ok(finish_response(response, json_output.take(), *max)))
                }
                Poll::Pending => Poll::Pending,
            },
            RouterFuture::Chain {
                fut,
                service,
                json_output,
                max,
            } => {
                if let ChainState::Ready(..) = fut
                    && let ChainState::Ready(next, request) =
                        std::mem::replace(fut, ChainState::Done)
                {
                    *fut = ChainState::Running(next.start(crate::wrapper::Call::new(request)));
                }
                let ChainState::Running(running) = fut else {
                    return Poll::Ready(
                        Ok(Status::internal("polled after completion").into_http()),
                    );
                };
                let answer = std::task::ready!(std::pin::Pin::new(running).poll(cx));
                *fut = ChainState::Done;
                let response = match answer {
                    Ok(response) => response,
                    Err(err) => crate::wrapper::stack::answer(err, service),
                };
                Poll::Ready(Ok(finish_response(response, json_output.take(), *max)))
            }
            RouterFuture::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

impl Service<http::Request<Body>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.run(request)
    }
}

impl Dispatch {
    /// Runs the handler (no readiness to wait for, no state to change).
    pub(crate) fn run(&self, request: http::Request<Body>) -> DispatchFuture {
        let mut request = request;
        match self.prepare(&mut request) {
            Ok((route, env)) => DispatchFuture::Call {
                fut: route.handler.call(route.index, env, request),
            },
            Err(answer) => answer,
        }
    }

    /// Runs the handler on a request a function wrapper's call held (taken out of
    /// its block only for the handler).
    pub(crate) fn run_pooled(
        &self,
        request: crate::wrapper::pool::PooledBox<http::Request<Body>>,
    ) -> DispatchFuture {
        let mut request = request;
        match self.prepare(&mut request) {
            Ok((route, env)) => DispatchFuture::Call {
                fut: route.handler.call(route.index, env, request.into_inner()),
            },
            Err(answer) => answer,
        }
    }

    /// The route and the handler's environment, taken from the request's
    /// [`CallInfo`]; the answer to give when it is missing.
    fn prepare(
        &self,
        request: &mut http::Request<Body>,
    ) -> Result<(Arc<Route>, CallEnv), DispatchFuture> {
        // Taken, not cloned: the route is needed only here, and its count is shared.
        let Some((RouteTarget(route), info)) = request
            .extensions_mut()
            .get_mut::<CallInfo>()
            .and_then(|info| Some((info.route.take()?, &*info)))
        else {
            let status = Status::internal(
                "a handler wrapper removed the call's CallInfo, or passed the call on twice",
            );
            return Err(DispatchFuture::ready(status.into_http()));
        };
        let env = CallEnv {
            service: self.name.clone(),
            endpoint: route.method.endpoint,
            deadline: info.deadline(),
            max_message_size: self.routes.max_message_size,
            in_flight: InFlightGuard::enter(&self.routes.in_flight),
            messages: info.messages().clone(),
        };
        Ok((route, env))
    }
}

/// The service hyper calls for every request of one connection.
///
/// tower's contract is `poll_ready`, then `call`, on the same service: each call
/// drives its own clone of the wrapper stack (as axum does), so a concurrency limit
/// holds a permit per call and calls wait for it concurrently.
#[derive(Clone)]
pub(crate) struct Router {
    pub(crate) routes: Arc<Routes>,
    /// The handlers, for servers without wrappers.
    pub(crate) dispatch: Dispatch,
    /// The user's handler wrappers when all are function wrappers: run as a chain
    /// over `dispatch`.
    pub(crate) fns: Option<crate::wrapper::from_fn::WrapFns>,
    /// Dispatch wrapped in the user's handler wrappers, when some are tower layers.
    pub(crate) stack: Option<HandlerStack>,
    /// The other end of this router's connection.
    pub(crate) peer: Option<Arc<Peer>>,
}

/// A trailers-only gRPC error response.
fn error_response(status: Status) -> http::Response<Body> {
    status.into_http()
}

impl Router {
    /// The router of one connection from `peer`.
    pub(crate) fn for_connection(&self, peer: Peer) -> Router {
        let mut router = self.clone();
        router.peer = Some(Arc::new(peer));
        router.dispatch = Dispatch::new(self.routes.clone());
        // The chain's own copy for this connection: each call and each wrapper of it
        // clones the chain's `Arc`, and a count shared by every connection would
        // bounce between the cores serving them (measured: 4 no-op wrappers cost
        // 7.5 % more CPU per call with one shared count, for 3 % more instructions).
        router.fns = self.fns.as_ref().map(|fns| fns.iter().cloned().collect());
        router
    }

    fn unknown_path(&self, path: &str) -> Status {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let service = parts.next().unwrap_or_default();
        let method = parts.next().unwrap_or_default();
        if self.routes.services.contains(service) {
            Status::unimplemented(format!("unknown method `{method}` of service `{service}`"))
        } else {
            Status::unimplemented(format!(
                "unknown service `{service}`: this server ({}) serves {}",
                self.routes.name,
                {
                    let mut names: Vec<_> =
                        self.routes.services.iter().map(String::as_str).collect();
                    names.sort_unstable();
                    names.join(", ")
                }
            ))
        }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = RouterFuture;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let ready = RouterFuture::ready;
        let path = request.uri().path();
        let Some(route) = self.routes.routes.get(path).cloned() else {
            if let Some(builtin) = self
                .routes
                .builtin
                .get(path.split('/').nth(1).unwrap_or_default())
            {
                return RouterFuture::Boxed {
                    fut: Box::pin(builtin.clone().call(request.map(Body::new))),
                };
            }
            return ready(error_response(self.unknown_path(path)));
        };
        let format = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| Format::from_content_type(v.as_bytes()));
        let Some(format) = format else {
            // gRPC over HTTP/2: a non-gRPC content-type gets 415.
            let mut response = http::Response::new(Body::default());
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return ready(response);
        };
        let deadline = request
            .headers()
            .get(crate::transport::headers::GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|d| Instant::now() + d);
        let json = match (format, &route.json) {
            (Format::Proto, _) => None,
            (Format::Json, Some(descs)) => Some(descs.clone()),
            (Format::Json, None) => {
                return ready(error_response(Status::unimplemented(format!(
                    "`{}` has no descriptor for the JSON codec; call it with application/grpc",
                    route.method.path
                ))));
            }
        };
        let max = self.routes.max_message_size;
        let (mut parts, body) = request.into_parts();
        let body = match &json {
            None => Body::new(body),
            Some((input, _)) => {
                let input = input.clone();
                parts.headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static(Format::Proto.content_type()),
                );
                Body::new(MapFrames::new(body, max, move |m: bytes::Bytes| {
                    json_to_proto(&input, &m).map_err(codec_status)
                }))
            }
        };
        let mut info = CallInfo::new(
            self.dispatch.name.clone(),
            route.method.endpoint,
            route.method.path,
        )
        .with_format(format)
        .with_optional_deadline(deadline)
        .with_shared_peer(self.peer.clone());
        info.route = Some(RouteTarget(route));
        parts.extensions.insert(info);
        let request = http::Request::from_parts(parts, body);
        let json_output = json.map(|(_, output)| output);
        if let Some(fns) = &self.fns {
            let next = crate::wrapper::Next::over_dispatch(fns.clone(), self.dispatch.clone());
            return RouterFuture::Chain {
                fut: ChainState::Ready(next, request),
                service: self.dispatch.name.clone(),
                json_output,
                max,
            };
        }
        let Some(mut stack) = self.stack.clone() else {
            return RouterFuture::Direct {
                fut: self.dispatch.run(request),
                json_output,
                max,
            };
        };
        // tower's contract: a service is called only once `poll_ready` said yes.
        let service = self.dispatch.name.clone();
        RouterFuture::Boxed {
            fut: Box::pin(async move {
                // Waits for readiness, then starts the call (the call's future is returned,
                // not awaited, so the deadline bounds only the wait).
                #[allow(clippy::async_yields_async)]
                let start = async {
                    let _ = tower::ServiceExt::ready(&mut stack).await;
                    stack.call(request)
                };
                let started = match deadline {
                    Some(at) => tokio::time::timeout_at(at, start).await.ok(),
                    None => Some(start.await),
                };
                let Some(call) = started else {
                    let err = crate::Error::timeout(
                        &*service,
                        format!(
                            "`{service}` could not take the call before its deadline: \
                         a handler wrapper (a concurrency or rate limit) stayed full"
                        ),
                    );
                    return Ok(finish_response(err.to_status().into_http(), None, max));
                };
                let Ok(response) = call.await;
                Ok(finish_response(response, json_output, max))
            }),
        }
    }
}

/// A codec failure as the caller sees it: the code and message only, so the caller
/// names the error after the service it called.
fn codec_status(err: crate::Error) -> Status {
    Status::new(err.grpc_code().to_tonic(), err.detail)
}

/// Fixes up a handler's response: gRPC's code for oversized messages, and the JSON
/// codec's transcoding and content-type.
fn finish_response(
    mut response: http::Response<Body>,
    json_output: Option<MessageDescriptor>,
    max: usize,
) -> http::Response<Body> {
    use crate::transport::headers::{GRPC_MESSAGE, GRPC_STATUS};
    let headers = response.headers_mut();
    if headers.get(GRPC_STATUS).map(|v| v.as_bytes()) == Some(b"11")
        && let Some(message) = headers.get(GRPC_MESSAGE).and_then(|m| m.to_str().ok())
        && message.contains("message%20length%20too%20large")
    {
        headers.insert(GRPC_STATUS, HeaderValue::from_static("8"));
    }
    let Some(output) = json_output else {
        return response;
    };
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(Format::Json.content_type()),
    );
    // The reply may be up to 3x its protobuf size as JSON; allow for it.
    response.map(|body| {
        Body::new(MapFrames::new(
            body,
            max.saturating_mul(3),
            move |m: bytes::Bytes| proto_to_json(&output, &m).map_err(codec_status),
        ))
    })
}
