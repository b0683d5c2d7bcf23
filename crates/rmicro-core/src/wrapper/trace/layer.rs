//! The tracing layers: a SERVER span per handled call, a CLIENT span per logical
//! call made (its attempts as events), ended when the call's status is known.

use super::Tracer;
use super::conventions as attr;
use super::propagation::HeaderCarrier;
use crate::errors::{Code, Error};
use crate::transport::Body;
use crate::wrapper::{AttemptInfo, CallInfo, ClientCallInfo, MessageCounts, Outcome, on_status};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

/// The trace a handler runs in, in its request's extensions (read it with
/// [`crate::Context::get`]); calls the handler makes are its children.
#[derive(Debug, Clone)]
pub struct CurrentTrace(pub(crate) Context);

impl CurrentTrace {
    /// The OpenTelemetry context: the handler's span and the caller's baggage.
    pub fn context(&self) -> &Context {
        &self.0
    }
}

/// The call span of a logical client call, for its attempts.
#[derive(Debug, Clone)]
struct CallSpan(Context);

/// Which span a [`TraceLayer`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// SERVER spans for handled calls (`wrap_handler`).
    Server,
    /// CLIENT spans for logical calls (`wrap_client`).
    Client,
    /// Events on the CLIENT span for each attempt (`wrap_call`).
    Attempt,
}

/// Traces calls; made by [`Tracing`](super::Tracing)'s `server_layer`,
/// `client_layer` and `attempt_layer`.
#[derive(Clone)]
pub struct TraceLayer {
    pub(super) tracer: Arc<Tracer>,
    pub(super) side: Side,
}

impl std::fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceLayer")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> TraceService<S> {
        TraceService {
            inner,
            tracer: self.tracer.clone(),
            side: self.side,
        }
    }
}

/// A service whose calls are traced; see [`TraceLayer`].
#[derive(Clone)]
pub struct TraceService<S> {
    inner: S,
    tracer: Arc<Tracer>,
    side: Side,
}

impl<S> std::fmt::Debug for TraceService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceService")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

/// The parent of a call made now: the span attached to this thread (code using
/// OpenTelemetry directly), else the handler's, else none.
pub(crate) fn current_parent() -> Context {
    let current = Context::current();
    if current.has_active_span() {
        return current;
    }
    crate::Context::current()
        .and_then(|ctx| ctx.get::<CurrentTrace>().map(|t| t.0.clone()))
        .unwrap_or(current)
}

/// The span a request is traced in: the handler's (server) or the call's (client).
pub(crate) fn span_of(extensions: &http::Extensions) -> Option<Context> {
    extensions
        .get::<CurrentTrace>()
        .map(|t| t.0.clone())
        .or_else(|| extensions.get::<CallSpan>().map(|c| c.0.clone()))
}

/// `package.Service/Method` of a gRPC path, the span's name.
fn span_name(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

/// `package.Service/Method` of a gRPC path, and its two halves.
fn names(path: &str) -> (&str, &str, &str) {
    let name = span_name(path);
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    (name, service, method)
}

/// The attributes every RPC span starts with: the gRPC names, and go-micro's
/// service and `<service>.<endpoint>` when the call names them.
fn rpc_attributes(a: &mut super::otlp::Attributes, path: &str, micro: Option<(&str, &str)>) {
    let (_, service, method) = names(path);
    a.str(attr::RPC_SYSTEM, &["grpc"]);
    a.str(attr::RPC_SERVICE, &[service]);
    a.str(attr::RPC_METHOD, &[method]);
    if let Some((name, endpoint)) = micro {
        a.str(attr::MICRO_SERVICE, &[name]);
        a.str(attr::MICRO_ENDPOINT, &[name, ".", endpoint]);
    }
}

/// Splits `host:port` for `server.address` / `server.port`.
fn host_port(address: &str) -> Option<(String, i64)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for TraceService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<tower::BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        match self.side {
            Side::Attempt => {
                attempt(&request);
                TraceFuture {
                    inner: self.inner.call(request),
                    end: None,
                    attached: None,
                }
            }
            Side::Server => {
                let parent = self.tracer.extract_headers(request.headers());
                let extensions = request.extensions();
                let info = extensions.get::<CallInfo>();
                let path: &str = match info {
                    Some(info) => info.path(),
                    None => request.uri().path(),
                };
                let span_name: std::borrow::Cow<'static, str> = match info {
                    Some(info) => span_name(info.path()).into(),
                    None => span_name(path).to_owned().into(),
                };
                let (cx, recording) =
                    self.tracer
                        .start(span_name, SpanKind::Server, &parent, |a| {
                            rpc_attributes(a, path, info.map(|i| (i.service(), i.endpoint())));
                            if let Some(peer) = info.and_then(CallInfo::peer) {
                                let address = peer.address();
                                let ip = crate::transport::IpText::new(address.ip());
                                a.str(attr::CLIENT_ADDRESS, &[ip.as_str()]);
                                a.int(attr::CLIENT_PORT, i64::from(address.port()));
                                if let Some(identity) = peer.identity() {
                                    a.str(attr::MICRO_PEER_IDENTITY, &[&identity.subject]);
                                }
                            }
                        });
                let messages = info.map(|i| i.messages().clone());
                request.extensions_mut().insert(CurrentTrace(cx.clone()));
                TraceFuture {
                    inner: self.inner.call(request),
                    // An unsampled span has nothing to end.
                    end: recording.then(|| SpanEnd::new(cx.clone(), Side::Server, messages)),
                    attached: Some(cx),
                }
            }
            Side::Client => {
                let parent = current_parent();
                let extensions = request.extensions();
                let info = extensions.get::<ClientCallInfo>();
                let path = info.map_or_else(|| request.uri().path(), ClientCallInfo::path);
                let span_name = span_name(path).to_owned();
                let (cx, recording) =
                    self.tracer
                        .start(span_name, SpanKind::Client, &parent, |a| {
                            rpc_attributes(a, path, info.map(|i| (i.service(), i.endpoint())));
                        });
                let messages = info.map(|i| i.messages().clone());
                self.tracer
                    .propagator
                    .inject_context(&cx, &mut HeaderCarrier(request.headers_mut()));
                request.extensions_mut().insert(CallSpan(cx.clone()));
                TraceFuture {
                    inner: self.inner.call(request),
                    end: recording.then(|| SpanEnd::new(cx, Side::Client, messages)),
                    attached: None,
                }
            }
        }
    }
}

/// An attempt of a traced call: an event on the call's span, whose
/// `server.address` / `server.port` become the node tried last.
fn attempt<B>(request: &http::Request<B>) {
    let extensions = request.extensions();
    let (Some(CallSpan(cx)), Some(info)) = (
        extensions.get::<CallSpan>(),
        extensions.get::<AttemptInfo>(),
    ) else {
        return;
    };
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    let mut attributes = vec![KeyValue::new(attr::RPC_ATTEMPT, i64::from(info.attempt()))];
    if let Some((host, port)) = host_port(info.address()) {
        span.set_attribute(KeyValue::new(attr::SERVER_ADDRESS, host.clone()));
        span.set_attribute(KeyValue::new(attr::SERVER_PORT, port));
        attributes.push(KeyValue::new(attr::SERVER_ADDRESS, host));
        attributes.push(KeyValue::new(attr::SERVER_PORT, port));
    }
    if let Some(node) = info.node() {
        attributes.push(KeyValue::new(attr::MICRO_NODE, node.to_owned()));
    }
    span.add_event("attempt", attributes);
}

/// Ends a span once, with the call's status: at its last message, or as
/// CANCELLED when the call is dropped first.
pub(super) struct SpanEnd {
    cx: Context,
    side: Side,
    messages: Option<Arc<MessageCounts>>,
    done: bool,
}

impl SpanEnd {
    pub(super) fn new(cx: Context, side: Side, messages: Option<Arc<MessageCounts>>) -> Self {
        SpanEnd {
            cx,
            side,
            messages,
            done: false,
        }
    }

    pub(super) fn finish(&mut self, code: Code, error: Option<&Error>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let span = self.cx.span();
        // Everything the end adds in one call: each call on the span takes its lock.
        let mut attributes = Vec::with_capacity(5);
        attributes.push(KeyValue::new(
            attr::RPC_GRPC_STATUS_CODE,
            i64::from(code.as_i32()),
        ));
        if let Some(messages) = &self.messages {
            let (sent, received) = (messages.sent(), messages.received());
            attributes.push(KeyValue::new(attr::MICRO_MESSAGES_SENT, sent as i64));
            attributes.push(KeyValue::new(
                attr::MICRO_MESSAGES_RECEIVED,
                received as i64,
            ));
        }
        let failed = is_error(self.side, code);
        if failed && let Some(error) = error {
            attributes.push(KeyValue::new(attr::ERROR_TYPE, code.name()));
            attributes.push(KeyValue::new(attr::MICRO_ERROR_ID, error.id.clone()));
        }
        // A span that is not recording ignores them (only sampled spans get here).
        span.set_attributes(attributes);
        if failed {
            let detail = error.map_or_else(|| code.name().to_owned(), |e| e.detail.clone());
            span.set_status(Status::error(detail));
        }
        span.end();
    }
}

impl Drop for SpanEnd {
    fn drop(&mut self) {
        self.finish(Code::Cancelled, None);
    }
}

/// Whether `code` marks the span as an error (OpenTelemetry's gRPC rules: every
/// non-OK status on the client; on the server only the ones that mean the server
/// failed, not the caller's mistakes).
pub(super) fn is_error(side: Side, code: Code) -> bool {
    match side {
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
        Side::Client | Side::Attempt => code != Code::Ok,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`TraceService`].
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        end: Option<SpanEnd>,
        attached: Option<Context>,
    }
}

impl<F, E, ResBody> Future for TraceFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: Into<tower::BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tower::BoxError>,
{
    type Output = Result<http::Response<Body>, tower::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            // The handler's span is current while it runs.
            let _attached = this.attached.as_ref().map(|c| c.clone().attach());
            std::task::ready!(this.inner.poll(cx))
        };
        let end = this.end.take();
        Poll::Ready(match result {
            Ok(response) => {
                let response = response.map(Body::new);
                match end {
                    None => Ok(response),
                    Some(mut end) => Ok(on_status(response, move |outcome: &Outcome| {
                        end.finish(outcome.code(), outcome.error())
                    })),
                }
            }
            Err(err) => {
                let err: tower::BoxError = err.into();
                if let Some(mut end) = end {
                    let error = err.downcast_ref::<Error>();
                    end.finish(error.map_or(Code::Unavailable, Error::grpc_code), error);
                }
                Err(err)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_spans_fail_only_for_the_servers_own_faults() {
        for (code, server, client) in [
            (Code::Ok, false, false),
            (Code::InvalidArgument, false, true),
            (Code::NotFound, false, true),
            (Code::Cancelled, false, true),
            (Code::Unknown, true, true),
            (Code::DeadlineExceeded, true, true),
            (Code::Unimplemented, true, true),
            (Code::Internal, true, true),
            (Code::Unavailable, true, true),
            (Code::DataLoss, true, true),
        ] {
            assert_eq!(is_error(Side::Server, code), server, "{code:?}");
            assert_eq!(is_error(Side::Client, code), client, "{code:?}");
        }
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            host_port("127.0.0.1:50051"),
            Some(("127.0.0.1".into(), 50051))
        );
        assert_eq!(host_port("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(host_port("nohost"), None);
        assert_eq!(
            names("/greeter.v1.Greeter/SayHello"),
            (
                "greeter.v1.Greeter/SayHello",
                "greeter.v1.Greeter",
                "SayHello"
            )
        );
    }
}
