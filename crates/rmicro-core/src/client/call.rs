//! Calls under construction: options set by chaining, sent by `.await`.

use super::retry::CallPlan;
use super::{CLIENT_ID, Client, ResponseStream, unary};
use crate::codec::{DecodeReply, FRAME_HEADER, Format, ReplyDecoder, encode_framed, frame};
use crate::context::Context;
use crate::errors::Error;
use crate::metadata::Metadata;
use crate::selector::SelectOptions;
use crate::transport::Body;
use crate::wrapper::{ClientCallInfo, NotSent};
use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use http::uri::PathAndQuery;
use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Per-call settings; each overrides the client's default.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    retries: Option<u32>,
    address: Option<String>,
    metadata: Metadata,
    idempotent: bool,
    invalid: Option<String>,
    select: SelectOptions,
}

impl CallOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to wait for the reply (the whole call, retries included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many times to retry where retrying is safe.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Dial this address instead of resolving the service name.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Sends `key: value` as metadata. An invalid key or value fails the call.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        if let Err(err) = self.metadata.insert(key, value) {
            self.invalid = Some(err.to_string());
        }
        self
    }

    /// Declares that running the handler twice is harmless, allowing retries on
    /// `UNAVAILABLE`, `ABORTED`, `INTERNAL` and `UNKNOWN` too.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Only call nodes of this version of the service.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.select.version = Some(version.into());
        self
    }

    /// Only call nodes whose registry metadata has `key: value`.
    pub fn node_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.select.metadata.push((key.into(), value.into()));
        self
    }

    /// The key for the `hash` selector: calls with the same key go to the same node.
    pub fn hash_key(mut self, key: impl Into<String>) -> Self {
        self.select.hash_key = Some(key.into());
        self
    }
}

/// Where a call goes and how.
struct Target {
    client: Client,
    service: Arc<str>,
    path: PathAndQuery,
    endpoint: Cow<'static, str>,
    format: Format,
    options: CallOptions,
}

/// A call on its way: what wrappers are told about it and when it gives up.
struct Started {
    info: ClientCallInfo,
    deadline: Instant,
    timeout: Duration,
}

impl Target {
    fn new(
        client: &Client,
        service: &str,
        path: PathAndQuery,
        endpoint: Cow<'static, str>,
    ) -> Self {
        Target {
            client: client.clone(),
            service: Arc::from(service),
            path,
            endpoint,
            format: Format::Proto,
            options: CallOptions::default(),
        }
    }

    /// Starts the call's clock: its deadline, and how long that is from now.
    fn start(&self) -> Started {
        let defaults = self.client.options();
        let mut timeout = self.options.timeout.unwrap_or(defaults.request_timeout);
        // Inside a handler, never outlive the incoming call.
        if let Some(remaining) = Context::current().and_then(|c| c.remaining()) {
            timeout = timeout.min(remaining);
        }
        let deadline = Instant::now() + timeout;
        let info = ClientCallInfo::new(
            self.service.clone(),
            self.endpoint.clone(),
            self.path.as_str(),
            deadline,
        )
        .with_caller(self.client.inner.caller.clone());
        Started {
            info,
            deadline,
            timeout,
        }
    }

    /// Sends the call through the client's stacks (wrappers, selection, retries);
    /// `replay` is the framed request for retries (`None` for request streams).
    async fn send(
        &self,
        body: Body,
        replay: Option<Bytes>,
        started: &Started,
        mut timer: Pin<&mut Sleep>,
    ) -> Result<http::Response<Body>, Error> {
        if let Some(invalid) = &self.options.invalid {
            return Err(Error::bad_request(CLIENT_ID, invalid.clone()));
        }
        let defaults = self.client.options();
        let plan = CallPlan {
            retries: self.options.retries.unwrap_or(defaults.retries),
            idempotent: self.options.idempotent,
            address: self.options.address.as_deref().map(Arc::from),
            select: self.options.select.clone(),
            deadline: started.deadline,
            replay,
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from(self.path.clone());
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(self.format.content_type()),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        self.options.metadata.write_to(headers);
        let extensions = request.extensions_mut();
        extensions.insert(started.info.clone());
        extensions.insert(Arc::new(plan));
        let sent = self.client.inner.stack.call(request);
        // Read after the wrappers started the call: a breaker's shorter timeout
        // rides on the call's timer instead of a second one.
        let deadline = started.info.accept_deadline();
        if deadline != started.deadline {
            timer.as_mut().reset(deadline);
        }
        let result = before(timer.as_mut(), sent).await;
        if deadline != started.deadline {
            timer.as_mut().reset(started.deadline);
        }
        match result {
            None => Err(match started.info.accepted_cut() {
                Some(timeout) => self.cut_by_breaker(started, timeout),
                None => self.timed_out(started),
            }),
            Some(Ok(response)) => Ok(response),
            Some(Err(err)) => Err(self.error_from(err, started)),
        }
    }

    /// The caller's error for what the client stack failed with.
    fn error_from(&self, err: tower::BoxError, started: &Started) -> Error {
        let err = match err.downcast::<Error>() {
            Ok(err) => return *err,
            Err(err) => err,
        };
        // A TLS channel's own timer (tonic's) or the server's ends a call at the
        // same deadline as ours; report that as the timeout it is.
        if Instant::now() >= started.deadline {
            return self.timed_out(started);
        }
        let mut text = crate::transport::error_chain(&*err);
        if let Some(hint) = crate::transport::tls::explain(&text) {
            text.push_str(" — ");
            text.push_str(hint);
        }
        if err.is::<NotSent>() {
            return Error::unavailable(
                CLIENT_ID,
                format!(
                    "no node of `{}` took the call {}: {text}",
                    self.service, self.endpoint
                ),
            );
        }
        Error::unavailable(
            CLIENT_ID,
            format!(
                "call to `{}` {} failed: {text}",
                self.service, self.endpoint
            ),
        )
    }

    /// Opens the reply stream; an error answered before any reply comes back at once.
    fn replies<D: DecodeReply>(
        &self,
        response: http::Response<Body>,
        started: &Started,
    ) -> Result<tonic::Streaming<D>, Error> {
        let decoder = ReplyDecoder::<D>::counting(started.info.messages().clone());
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            if status.code() != tonic::Code::Ok {
                return Err(self.failed(&status, started));
            }
            return Ok(tonic::Streaming::new_empty(decoder, response.into_body()));
        }
        let code = response.status();
        Ok(tonic::Streaming::new_response(
            decoder,
            response.into_body(),
            code,
            None,
            Some(self.client.options().max_message_size),
        ))
    }

    /// Reads the one reply of a unary or client-streaming call and the trailers
    /// that ended it, under the call's `timer`.
    async fn one_reply<D: DecodeReply>(
        &self,
        response: http::Response<Body>,
        started: &Started,
        timer: Pin<&mut Sleep>,
    ) -> Result<unary::OneMessage<D>, Error> {
        if let Some(status) = tonic::Status::from_header_map(response.headers()) {
            // A trailers-only response: an error, or OK with no reply at all.
            if status.code() != tonic::Code::Ok {
                return Err(self.failed(&status, started));
            }
            return Err(self.failed(
                &tonic::Status::internal("the server sent no reply message"),
                started,
            ));
        }
        let max = self.client.options().max_message_size;
        let read = unary::read_one::<D>(response, max, started.info.messages());
        match before(timer, read).await {
            None => Err(self.timed_out(started)),
            Some(result) => result.map_err(|status| self.failed(&status, started)),
        }
    }

    /// The breaker's timeout, which the client's timer kept for it, passed first.
    fn cut_by_breaker(&self, started: &Started, timeout: Duration) -> Error {
        let id = started.info.caller().unwrap_or(CLIENT_ID);
        Error::timeout(
            id,
            crate::wrapper::breaker::timeout_detail(
                &format!("{}.{}", self.service, self.endpoint),
                timeout,
            ),
        )
    }

    fn timed_out(&self, started: &Started) -> Error {
        Error::timeout(
            CLIENT_ID,
            format!(
                "call to `{}` {} timed out after {:?}",
                self.service, self.endpoint, started.timeout
            ),
        )
    }

    /// The error for a failed reply. The server's own timer cancels a call at the
    /// same deadline as ours; report that as the timeout it is.
    fn failed(&self, status: &tonic::Status, started: &Started) -> Error {
        if status.code() == tonic::Code::Cancelled && Instant::now() >= started.deadline {
            return self.timed_out(started);
        }
        Error::from_status(status, CLIENT_ID)
    }

    /// Checks a framed request against the client's message size limit.
    fn check_size(&self, framed: &Bytes) -> Result<(), Error> {
        let max = self.client.options().max_message_size;
        let len = framed.len().saturating_sub(FRAME_HEADER);
        if len > max {
            return Err(Error::too_many_requests(
                CLIENT_ID,
                format!(
                    "request to `{}` {} is {len} bytes, over the limit of {max} bytes",
                    self.service, self.endpoint
                ),
            ));
        }
        Ok(())
    }

    /// Sends a single framed request message and returns the response head.
    async fn send_one(
        &self,
        framed: Bytes,
        started: &Started,
        timer: Pin<&mut Sleep>,
    ) -> Result<http::Response<Body>, Error> {
        self.check_size(&framed)?;
        started
            .info
            .messages()
            .record_sent(framed.len().saturating_sub(FRAME_HEADER));
        let body = Body::new(http_body_util::Full::new(framed.clone()));
        self.send(body, Some(framed), started, timer).await
    }

    /// Sends a stream of encoded request messages (never retried).
    async fn send_stream(
        &self,
        requests: RequestBytes,
        started: &Started,
        timer: Pin<&mut Sleep>,
    ) -> Result<http::Response<Body>, Error> {
        let messages = started.info.messages().clone();
        let frames = futures_util::StreamExt::map(requests, move |message: Bytes| {
            messages.record_sent(message.len());
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(frame(&message)))
        });
        let body = Body::new(http_body_util::StreamBody::new(frames));
        self.send(body, None, started, timer).await
    }
}

/// What a call sends: one gRPC-framed message, or a stream of encoded messages.
enum Outgoing {
    One(Bytes),
    Stream(RequestBytes),
}

/// A call built by a generated client, sent by `.await`: where it goes, what it
/// sends, and what it answers (`A`: one reply, or a stream of them). The four gRPC
/// kinds are its aliases: [`UnaryCall`], [`ClientStreamCall`], [`ServerStreamCall`],
/// [`StreamingCall`]. Options chain before the `.await`.
pub struct Call<A> {
    target: Target,
    request: Outgoing,
    _answer: PhantomData<fn() -> A>,
}

impl<A> Call<A> {
    /// How long to wait for the reply (the whole call, retries included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.target.options = self.target.options.timeout(timeout);
        self
    }

    /// How many times to retry where retrying is safe.
    pub fn retries(mut self, retries: u32) -> Self {
        self.target.options = self.target.options.retries(retries);
        self
    }

    /// Dial this address instead of resolving the service name.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.target.options = self.target.options.address(address);
        self
    }

    /// Sends `key: value` as metadata. An invalid key or value fails the call.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.target.options = self.target.options.metadata(key, value);
        self
    }

    /// Declares the call safe to run twice; see [`CallOptions::idempotent`].
    pub fn idempotent(mut self) -> Self {
        self.target.options = self.target.options.idempotent();
        self
    }

    /// Only call nodes of this version of the service.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.target.options = self.target.options.version(version);
        self
    }

    /// The key for the `hash` selector: calls with the same key go to the same node.
    pub fn hash_key(mut self, key: impl Into<String>) -> Self {
        self.target.options = self.target.options.hash_key(key);
        self
    }

    /// Replaces all options at once.
    pub fn options(mut self, options: CallOptions) -> Self {
        self.target.options = options;
        self
    }

    fn new(target: Target, request: Outgoing) -> Self {
        Call {
            target,
            request,
            _answer: PhantomData,
        }
    }
}

/// A call with one request and one reply.
pub type UnaryCall<Resp> = Call<OneReply<Resp>>;
/// A call with a stream of requests and one reply.
pub type ClientStreamCall<Resp> = Call<OneReply<Resp>>;
/// A call with one request and a stream of replies.
pub type ServerStreamCall<Resp> = Call<ReplyStream<Resp>>;
/// A call where both sides stream.
pub type StreamingCall<Resp> = Call<ReplyStream<Resp>>;

/// A call's response on its way back, for [`Answer`] to read, and the call's
/// timer (one per call: it covers sending and the reply).
#[doc(hidden)]
pub struct Answering<'a> {
    target: Target,
    response: http::Response<Body>,
    started: Started,
    timer: Pin<&'a mut Sleep>,
}

/// How a [`Call`] reads what comes back: [`OneReply`] or [`ReplyStream`].
pub trait Answer {
    /// What awaiting the call gives.
    type Output: Send;

    /// Reads the answer from the response.
    #[doc(hidden)]
    fn answer(answering: Answering<'_>)
    -> impl Future<Output = Result<Self::Output, Error>> + Send;
}

/// A [`Call`] answered by one reply of type `Resp`.
pub struct OneReply<Resp>(PhantomData<fn() -> Resp>);

/// A [`Call`] answered by a stream of replies of type `Resp`.
pub struct ReplyStream<Resp>(PhantomData<fn() -> Resp>);

/// A [`Call`] answered by one reply of type `Resp` with the metadata the server
/// sent around it: see [`Call::with_metadata`].
pub struct OneReplyWithMetadata<Resp>(PhantomData<fn() -> Resp>);

/// A reply and the metadata the server sent with it: its response headers and
/// the trailers after the reply (gRPC's initial and trailing metadata).
#[derive(Debug, Clone)]
pub struct Reply<Resp> {
    /// The reply message.
    pub message: Resp,
    /// The application keys of the response headers.
    pub headers: Metadata,
    /// The application keys of the trailers (`grpc-status` and the like left out).
    pub trailers: Metadata,
}

impl<Resp: DecodeReply> Answer for OneReplyWithMetadata<Resp> {
    type Output = Reply<Resp>;

    async fn answer(answering: Answering<'_>) -> Result<Reply<Resp>, Error> {
        let Answering {
            target,
            response,
            started,
            timer,
        } = answering;
        let headers = Metadata::from_headers(response.headers().clone());
        let reply = target.one_reply(response, &started, timer).await?;
        Ok(Reply {
            message: reply.message,
            headers,
            trailers: Metadata::from_headers(reply.trailers.unwrap_or_default()),
        })
    }
}

impl<Resp> Call<OneReply<Resp>> {
    /// The call answering its reply together with the server's response headers
    /// and trailers ([`Reply`]), for a caller that passes them on (a gateway's
    /// response headers) or reads what a server says beside its reply.
    pub fn with_metadata(self) -> Call<OneReplyWithMetadata<Resp>> {
        Call {
            target: self.target,
            request: self.request,
            _answer: PhantomData,
        }
    }
}

impl<Resp: DecodeReply> Answer for OneReply<Resp> {
    type Output = Resp;

    async fn answer(answering: Answering<'_>) -> Result<Resp, Error> {
        let Answering {
            target,
            response,
            started,
            timer,
        } = answering;
        Ok(target.one_reply(response, &started, timer).await?.message)
    }
}

impl<Resp: DecodeReply> Answer for ReplyStream<Resp> {
    type Output = ResponseStream<Resp>;

    async fn answer(answering: Answering<'_>) -> Result<ResponseStream<Resp>, Error> {
        let Answering {
            target,
            response,
            started,
            ..
        } = answering;
        let headers = Metadata::from_headers(response.headers().clone());
        let replies = target.replies::<Resp>(response, &started)?;
        // The stream keeps the call's deadline.
        Ok(
            ResponseStream::new(replies, Some(started.deadline), target.service.clone())
                .with_headers(headers),
        )
    }
}

impl<A: Answer + 'static> IntoFuture for Call<A> {
    type Output = Result<A::Output, Error>;
    type IntoFuture = BoxFuture<'static, Result<A::Output, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Call {
                target, request, ..
            } = self;
            let started = target.start();
            // Registered with the runtime only if a poll finds the call waiting.
            let mut timer = std::pin::pin!(tokio::time::sleep_until(started.deadline));
            let response = match request {
                Outgoing::One(message) => {
                    target.send_one(message, &started, timer.as_mut()).await?
                }
                Outgoing::Stream(requests) => {
                    target
                        .send_stream(requests, &started, timer.as_mut())
                        .await?
                }
            };
            A::answer(Answering {
                target,
                response,
                started,
                timer,
            })
            .await
        })
    }
}

/// Runs `work` until `timer` fires: `None` when the timer came first. The timer
/// is polled only while the work waits, so a call that completes at once never
/// registers it.
async fn before<F: Future>(mut timer: Pin<&mut Sleep>, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Encodes each message of a request stream.
fn encode_stream<Req: prost::Message + 'static>(
    requests: impl Stream<Item = Req> + Send + 'static,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures_util::StreamExt::map(requests, |m| Bytes::from(m.encode_to_vec()))
}

/// A boxed stream of encoded request messages.
type RequestBytes = std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Splits `Service.Method` (or `package.Service.Method`) into a gRPC path.
///
/// A short name (`Greeter.SayHello`) becomes `/Greeter/SayHello`, which rmicro servers
/// route to the one service of that short name.
fn endpoint_path(endpoint: &str) -> Result<PathAndQuery, Error> {
    let (service, method) = endpoint.rsplit_once('.').ok_or_else(|| {
        Error::bad_request(
            CLIENT_ID,
            format!("endpoint `{endpoint}` is not of the form `Service.Method`"),
        )
    })?;
    PathAndQuery::try_from(format!("/{service}/{method}")).map_err(|_| {
        Error::bad_request(
            CLIENT_ID,
            format!("endpoint `{endpoint}` has characters a gRPC path cannot hold"),
        )
    })
}

impl Client {
    /// Where a generated client's call to `path` of `service` goes.
    fn target(&self, service: &str, path: &'static str, endpoint: &'static str) -> Target {
        Target::new(
            self,
            service,
            PathAndQuery::from_static(path),
            Cow::Borrowed(endpoint),
        )
    }

    /// A unary call to `path`; generated clients call this.
    pub fn unary<Req: prost::Message, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        request: &Req,
    ) -> UnaryCall<Resp> {
        Call::new(
            self.target(service, path, endpoint),
            Outgoing::One(encode_framed(request)),
        )
    }

    /// A server-streaming call to `path`; generated clients call this.
    pub fn server_streaming<Req: prost::Message, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        request: &Req,
    ) -> ServerStreamCall<Resp> {
        Call::new(
            self.target(service, path, endpoint),
            Outgoing::One(encode_framed(request)),
        )
    }

    /// A client-streaming call to `path`; generated clients call this.
    pub fn client_streaming<Req: prost::Message + 'static, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        requests: impl Stream<Item = Req> + Send + 'static,
    ) -> ClientStreamCall<Resp> {
        Call::new(
            self.target(service, path, endpoint),
            Outgoing::Stream(Box::pin(encode_stream(requests))),
        )
    }

    /// A bidirectional streaming call to `path`; generated clients call this.
    pub fn streaming<Req: prost::Message + 'static, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        requests: impl Stream<Item = Req> + Send + 'static,
    ) -> StreamingCall<Resp> {
        Call::new(
            self.target(service, path, endpoint),
            Outgoing::Stream(Box::pin(encode_stream(requests))),
        )
    }

    /// A unary call to `path` (`/package.Service/Method`) with an encoded protobuf
    /// request, its reply left encoded: for gateways and proxies, which hold
    /// descriptors rather than generated types. `endpoint` (`Service.Method`) names
    /// the call to wrappers and metrics. A path that is not a gRPC path is a
    /// `400` error.
    pub fn unary_bytes(
        &self,
        service: &str,
        path: &str,
        endpoint: &str,
        request: Bytes,
    ) -> Result<UnaryCall<crate::codec::RawMessage>, Error> {
        Ok(Call::new(
            self.dynamic_target(service, path, endpoint)?,
            Outgoing::One(frame(&request)),
        ))
    }

    /// A server-streaming call to `path` with an encoded request, each reply left
    /// encoded; see [`Client::unary_bytes`].
    pub fn server_streaming_bytes(
        &self,
        service: &str,
        path: &str,
        endpoint: &str,
        request: Bytes,
    ) -> Result<ServerStreamCall<crate::codec::RawMessage>, Error> {
        Ok(Call::new(
            self.dynamic_target(service, path, endpoint)?,
            Outgoing::One(frame(&request)),
        ))
    }

    /// A streaming call to `path` whose requests are already encoded, each reply
    /// left encoded: any kind of method (gRPC's wire does not tell them apart), for
    /// gateways bridging a stream of their own (a WebSocket); see
    /// [`Client::unary_bytes`]. The call is never retried: its requests are spent.
    pub fn streaming_bytes(
        &self,
        service: &str,
        path: &str,
        endpoint: &str,
        requests: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<StreamingCall<crate::codec::RawMessage>, Error> {
        Ok(Call::new(
            self.dynamic_target(service, path, endpoint)?,
            Outgoing::Stream(Box::pin(requests)),
        ))
    }

    /// A call to a path known only at run time.
    fn dynamic_target(&self, service: &str, path: &str, endpoint: &str) -> Result<Target, Error> {
        let path = PathAndQuery::try_from(path)
            .ok()
            .filter(|p| p.query().is_none() && p.path().starts_with('/'))
            .ok_or_else(|| Error::bad_request(CLIENT_ID, format!("`{path}` is not a gRPC path")))?;
        Ok(Target::new(
            self,
            service,
            path,
            Cow::Owned(endpoint.to_owned()),
        ))
    }

    /// A dynamic unary call with a JSON request, no generated types needed: go-micro's
    /// `micro call greeter Greeter.SayHello '{"name": "ann"}'`.
    ///
    /// `endpoint` is `Service.Method`, or `package.Service.Method` for servers that are
    /// not rmicro. The request goes out with the `application/grpc+json` codec and the
    /// reply comes back as JSON.
    pub async fn call_json(
        &self,
        service: &str,
        endpoint: &str,
        json: &str,
        options: CallOptions,
    ) -> Result<serde_json::Value, Error> {
        let reply = self.unary_json(service, endpoint, json, options)?.await?;
        serde_json::from_slice(&reply.0).map_err(|e| {
            Error::internal(
                CLIENT_ID,
                format!("reply from `{service}` {endpoint} is not JSON: {e}"),
            )
        })
    }

    /// A dynamic unary call with a JSON request whose reply stays the JSON bytes
    /// the server sent (no parsing: a load generator's call); see
    /// [`Client::call_json`].
    pub fn unary_json(
        &self,
        service: &str,
        endpoint: &str,
        json: &str,
        options: CallOptions,
    ) -> Result<UnaryCall<crate::codec::RawMessage>, Error> {
        let target = self.json_target(service, endpoint, json, options)?;
        Ok(Call::new(target, Outgoing::One(frame(json.as_bytes()))))
    }

    /// A dynamic server-streaming call with a JSON request: each reply comes back
    /// as the JSON bytes of one message (`grpcurl`'s and `rmicro stream`'s use).
    /// `endpoint` as for [`Client::call_json`]; the call's deadline covers the
    /// whole stream.
    ///
    /// ```no_run
    /// # extern crate rmicro_core as rmicro;
    /// # async fn demo(client: rmicro::Client) -> Result<(), rmicro::Error> {
    /// let options = rmicro::client::CallOptions::new();
    /// let mut replies = client
    ///     .stream_json("greeter", "Greeter.SayHelloStream", r#"{"name":"ann","count":3}"#, options)?
    ///     .await?;
    /// while let Some(reply) = replies.message().await? {
    ///     println!("{}", String::from_utf8_lossy(&reply.0));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream_json(
        &self,
        service: &str,
        endpoint: &str,
        json: &str,
        options: CallOptions,
    ) -> Result<ServerStreamCall<crate::codec::RawMessage>, Error> {
        let target = self.json_target(service, endpoint, json, options)?;
        Ok(Call::new(target, Outgoing::One(frame(json.as_bytes()))))
    }

    /// The target of a JSON call to `endpoint`, after checking `json` is JSON.
    fn json_target(
        &self,
        service: &str,
        endpoint: &str,
        json: &str,
        options: CallOptions,
    ) -> Result<Target, Error> {
        serde_json::from_str::<serde_json::Value>(json).map_err(|e| {
            Error::bad_request(
                CLIENT_ID,
                format!("request for {endpoint} is not valid JSON: {e}"),
            )
        })?;
        let mut target = Target::new(
            self,
            service,
            endpoint_path(endpoint)?,
            Cow::Owned(endpoint.to_owned()),
        );
        target.format = Format::Json;
        target.options = options;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_become_paths() {
        assert_eq!(
            endpoint_path("Greeter.SayHello").unwrap().as_str(),
            "/Greeter/SayHello"
        );
        assert_eq!(
            endpoint_path("greeter.v1.Greeter.SayHello")
                .unwrap()
                .as_str(),
            "/greeter.v1.Greeter/SayHello"
        );
        assert_eq!(endpoint_path("SayHello").unwrap_err().code, 400);
    }
}
