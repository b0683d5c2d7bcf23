//! Runs one decoded call against a handler; the generated server code calls these.
//!
//! Each function decodes the request with tonic's gRPC machinery, builds the
//! [`Context`], runs the handler as the current context and within the deadline, and
//! turns its result (or [`Error`]) into a gRPC response.

use super::request::Request;
use super::stream::{HandlerStream, RequestStream, ResponseSender};
use crate::context::Context;
use crate::errors::Error;
use crate::metadata::Metadata;
use crate::transport::Body;
use crate::wrapper::MessageCounts;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;
use tonic::Status;
use tonic::server::Grpc;
use tonic_prost::ProstCodec;

/// Counts a call as in flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<AtomicUsize>);

impl InFlightGuard {
    pub(crate) fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(counter.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a dispatch needs to know about the call besides the request itself.
///
/// Built by the server's router; generated code only passes it on.
#[derive(Debug)]
pub struct CallEnv {
    pub(crate) service: Arc<str>,
    pub(crate) endpoint: &'static str,
    pub(crate) deadline: Option<Instant>,
    pub(crate) max_message_size: usize,
    pub(crate) in_flight: InFlightGuard,
    pub(crate) messages: Arc<MessageCounts>,
}

impl CallEnv {
    fn grpc<Resp, Req>(&self) -> Grpc<ProstCodec<Resp, Req>>
    where
        Resp: prost::Message + Send + 'static,
        Req: prost::Message + Default + Send + 'static,
    {
        Grpc::new(ProstCodec::default())
            .apply_max_message_size_config(Some(self.max_message_size), Some(self.max_message_size))
    }

    fn context(
        &self,
        metadata: tonic::metadata::MetadataMap,
        extensions: http::Extensions,
    ) -> Arc<Context> {
        Arc::new(Context {
            service: self.service.clone(),
            endpoint: std::borrow::Cow::Borrowed(self.endpoint),
            metadata: Metadata::from_headers(metadata.into_headers()),
            deadline: self.deadline,
            extensions,
        })
    }
}

/// tonic reports an oversized message as OUT_OF_RANGE; gRPC says RESOURCE_EXHAUSTED.
pub(crate) fn map_transport_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large")
    {
        return Status::resource_exhausted(status.message().to_owned());
    }
    status
}

/// Runs `fut` as the current context, cancelling it at the deadline.
async fn run_unary<Resp: prost::Message>(
    ctx: Arc<Context>,
    deadline: Option<Instant>,
    limit: usize,
    messages: Arc<MessageCounts>,
    fut: impl Future<Output = Result<Resp, Error>>,
) -> Result<tonic::Response<Resp>, Status> {
    let endpoint = ctx.endpoint.clone();
    let scoped = Context::scope(ctx, fut);
    let result = match deadline {
        Some(at) => tokio::time::timeout_at(at, scoped)
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(
                    "rmicro.server",
                    "the call ran past its deadline",
                ))
            }),
        None => scoped.await,
    };
    let reply = result.map_err(|e| e.to_status())?;
    let size = reply.encoded_len();
    if size > limit {
        // Refused here, as gRPC says (RESOURCE_EXHAUSTED, before any byte is
        // sent), rather than failing half-way through encoding it.
        return Err(Status::resource_exhausted(format!(
            "the reply of {endpoint} is {size} bytes, over the server's limit of {limit} (--server-max-message-size)"
        )));
    }
    messages.record_sent(size);
    Ok(tonic::Response::new(reply))
}

/// Adapts a one-shot closure to tonic's service traits.
struct Once<F> {
    f: Option<F>,
    env: CallEnv,
}

impl<F> Once<F> {
    fn take(&mut self) -> Result<F, Status> {
        self.f
            .take()
            .ok_or_else(|| Status::internal("handler called twice for one request"))
    }
}

impl<Req, Resp, F, Fut> tonic::server::UnaryService<Req> for Once<F>
where
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    Req: prost::Message,
    Resp: prost::Message + Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<'static, Result<tonic::Response<Resp>, Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let f = match self.take() {
            Ok(f) => f,
            Err(status) => return Box::pin(std::future::ready(Err(status))),
        };
        let (metadata, extensions, message) = request.into_parts();
        self.env.messages.record_received(message.encoded_len());
        let ctx = self.env.context(metadata, extensions);
        let fut = f(Request::with_context(ctx.clone(), message));
        Box::pin(run_unary(
            ctx,
            self.env.deadline,
            self.env.max_message_size,
            self.env.messages.clone(),
            fut,
        ))
    }
}

/// Handles a unary call.
pub async fn unary<Req, Resp, F, Fut>(
    env: CallEnv,
    request: http::Request<Body>,
    handler: F,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Request<Req>) -> Fut + Send,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    let mut grpc = env.grpc::<Resp, Req>();
    let messages = env.messages.clone();
    let response = grpc
        .unary(
            Once {
                f: Some(handler),
                env,
            },
            request.map(Body::into_engine),
        )
        .await;
    // A reply was made (only an OK result within the size limit is counted), so
    // encoding it cannot fail: the status is OK before the body is sent.
    let settled = messages.sent() == 1;
    response.map(|body| {
        let body = Body::from_engine(body);
        if settled { body.settled_ok() } else { body }
    })
}

/// Handles a call where the client streams and the server answers once.
pub async fn client_streaming<Req, Resp, F, Fut>(
    env: CallEnv,
    request: http::Request<Body>,
    handler: F,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Request<RequestStream<Req>>) -> Fut + Send,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    let mut grpc = env.grpc::<Resp, Req>();
    let service = env.service.clone();
    let messages = env.messages.clone();
    let adapter = move |r: Request<tonic::Streaming<Req>>| {
        let (ctx, stream) = r.into_parts();
        handler(Request::with_context(
            ctx,
            RequestStream::new(stream, service, messages),
        ))
    };
    grpc.client_streaming(
        Once {
            f: Some(adapter),
            env,
        },
        request.map(Body::into_engine),
    )
    .await
    .map(Body::from_engine)
}

impl<Req, Resp, F, Fut> tonic::server::ClientStreamingService<Req> for Once<F>
where
    F: FnOnce(Request<tonic::Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<'static, Result<tonic::Response<Resp>, Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Req>>) -> Self::Future {
        let f = match self.take() {
            Ok(f) => f,
            Err(status) => return Box::pin(std::future::ready(Err(status))),
        };
        let (metadata, extensions, stream) = request.into_parts();
        let ctx = self.env.context(metadata, extensions);
        let fut = f(Request::with_context(ctx.clone(), stream));
        Box::pin(run_unary(
            ctx,
            self.env.deadline,
            self.env.max_message_size,
            self.env.messages.clone(),
            fut,
        ))
    }
}

/// Adapts a one-shot streaming closure (server- or bidi-streaming) to tonic.
struct OnceStreaming<F, Resp> {
    f: Option<F>,
    env: Option<CallEnv>,
    _reply: std::marker::PhantomData<fn() -> Resp>,
}

/// Starts a streaming handler: the response stream drives it.
fn start_streaming<M, Resp, F, Fut>(
    f: Option<F>,
    env: Option<CallEnv>,
    request: tonic::Request<M>,
) -> Result<tonic::Response<HandlerStream<Resp>>, Status>
where
    F: FnOnce(Request<M>, ResponseSender<Resp>) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
    Resp: Send + 'static,
{
    let (Some(f), Some(env)) = (f, env) else {
        return Err(Status::internal("handler called twice for one request"));
    };
    let (metadata, extensions, message) = request.into_parts();
    let ctx = env.context(metadata, extensions);
    let deadline = env.deadline;
    let stream = HandlerStream::new(
        move |tx| Context::scope(ctx.clone(), f(Request::with_context(ctx, message), tx)),
        deadline,
        env.in_flight,
        env.messages,
    );
    Ok(tonic::Response::new(stream))
}

impl<Req, Resp, F, Fut> tonic::server::ServerStreamingService<Req> for OnceStreaming<F, Resp>
where
    F: FnOnce(Request<Req>, ResponseSender<Resp>) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type ResponseStream = HandlerStream<Resp>;
    type Future = std::future::Ready<Result<tonic::Response<HandlerStream<Resp>>, Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        std::future::ready(start_streaming(self.f.take(), self.env.take(), request))
    }
}

impl<Req, Resp, F, Fut> tonic::server::StreamingService<Req> for OnceStreaming<F, Resp>
where
    F: FnOnce(Request<tonic::Streaming<Req>>, ResponseSender<Resp>) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type ResponseStream = HandlerStream<Resp>;
    type Future = std::future::Ready<Result<tonic::Response<HandlerStream<Resp>>, Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Req>>) -> Self::Future {
        std::future::ready(start_streaming(self.f.take(), self.env.take(), request))
    }
}

/// Handles a call where the server streams its replies.
pub async fn server_streaming<Req, Resp, F, Fut>(
    env: CallEnv,
    request: http::Request<Body>,
    handler: F,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Request<Req>, ResponseSender<Resp>) -> Fut + Send,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut grpc = env.grpc::<Resp, Req>();
    let messages = env.messages.clone();
    let adapter = move |r: Request<Req>, tx: ResponseSender<Resp>| {
        messages.record_received(r.message().encoded_len());
        handler(r, tx)
    };
    let service = OnceStreaming {
        f: Some(adapter),
        env: Some(env),
        _reply: std::marker::PhantomData,
    };
    grpc.server_streaming(service, request.map(Body::into_engine))
        .await
        .map(Body::from_engine)
}

/// Handles a call where both sides stream.
pub async fn streaming<Req, Resp, F, Fut>(
    env: CallEnv,
    request: http::Request<Body>,
    handler: F,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Request<RequestStream<Req>>, ResponseSender<Resp>) -> Fut + Send,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut grpc = env.grpc::<Resp, Req>();
    let service_name = env.service.clone();
    let messages = env.messages.clone();
    let adapter = move |r: Request<tonic::Streaming<Req>>, tx: ResponseSender<Resp>| {
        let (ctx, stream) = r.into_parts();
        handler(
            Request::with_context(ctx, RequestStream::new(stream, service_name, messages)),
            tx,
        )
    };
    let service = OnceStreaming {
        f: Some(adapter),
        env: Some(env),
        _reply: std::marker::PhantomData,
    };
    grpc.streaming(service, request.map(Body::into_engine))
        .await
        .map(Body::from_engine)
}

/// Answers a method index the generated code does not know (a codegen mismatch).
pub async fn unknown_method(service: &str, method: usize) -> http::Response<Body> {
    Status::unimplemented(format!("service `{service}` has no method #{method}")).into_http()
}
