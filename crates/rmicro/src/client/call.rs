//! Calls under construction: options set by chaining, sent by `.await`.

use super::{CLIENT_ID, Client, ResponseStream};
use crate::codec::{DecodeReply, Format, PreEncoded};
use crate::context::Context;
use crate::errors::Error;
use crate::metadata::Metadata;
use crate::selector::{SelectOptions, Selected};
use crate::transport::{Channel, is_safe_to_retry};
use crate::wrapper::ClientCallInfo;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use http::uri::PathAndQuery;
use std::borrow::Cow;
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;

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

macro_rules! call_options {
    () => {
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
    };
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

/// A call ready to go out: its channel and deadline.
struct Prepared {
    channel: Channel,
    address: Arc<str>,
    /// The node the selector picked (counts as in flight until dropped).
    node: Option<Selected>,
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

    /// The call's deadline and how long that is from now.
    fn deadline(&self) -> (Instant, Duration) {
        let defaults = &self.client.inner.options;
        let mut timeout = self.options.timeout.unwrap_or(defaults.request_timeout);
        // Inside a handler, never outlive the incoming call.
        if let Some(remaining) = Context::current().and_then(|c| c.remaining()) {
            timeout = timeout.min(remaining);
        }
        (Instant::now() + timeout, timeout)
    }

    async fn prepare(&self) -> Result<Prepared, Error> {
        let (deadline, timeout) = self.deadline();
        self.prepare_until(deadline, timeout, &self.options.select)
            .await
    }

    /// Picks where the next attempt goes, honouring the call's deadline.
    async fn prepare_until(
        &self,
        deadline: Instant,
        timeout: Duration,
        select: &SelectOptions,
    ) -> Result<Prepared, Error> {
        if let Some(invalid) = &self.options.invalid {
            return Err(Error::bad_request(CLIENT_ID, invalid.clone()));
        }
        let resolve = self
            .client
            .resolve(&self.service, self.options.address.as_deref(), select);
        let (address, node) =
            tokio::time::timeout_at(deadline, resolve)
                .await
                .map_err(|_| {
                    Error::timeout(
                        CLIENT_ID,
                        format!("finding a node of `{}` timed out", self.service),
                    )
                })??;
        let channel = self.client.channel(&address)?;
        Ok(Prepared {
            channel,
            address,
            node,
            deadline,
            timeout,
        })
    }

    fn request<T>(&self, message: T, prepared: &Prepared) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if !self.options.metadata.is_empty() {
            let mut headers = http::HeaderMap::new();
            self.options.metadata.write_to(&mut headers);
            *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        }
        request.set_timeout(prepared.deadline.saturating_duration_since(Instant::now()));
        let extensions = request.extensions_mut();
        extensions.insert(ClientCallInfo {
            service: self.service.clone(),
            endpoint: self.endpoint.clone(),
            address: prepared.address.clone(),
        });
        if self.format != Format::Proto {
            extensions.insert(self.format);
        }
        request
    }

    fn grpc(&self, prepared: &Prepared) -> tonic::client::Grpc<Channel> {
        let max = self.client.inner.options.max_message_size;
        tonic::client::Grpc::new(prepared.channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    fn timed_out(&self, prepared: &Prepared) -> Error {
        Error::timeout(
            CLIENT_ID,
            format!(
                "call to `{}` {} timed out after {:?}",
                self.service, self.endpoint, prepared.timeout
            ),
        )
    }

    /// The error for a failed attempt. tonic's own timer cancels a call at the same
    /// deadline as ours; report that as the timeout it is.
    fn failed(&self, status: &tonic::Status, prepared: &Prepared) -> Error {
        if status.code() == Code::Cancelled && Instant::now() >= prepared.deadline {
            return self.timed_out(prepared);
        }
        Error::from_status(status, CLIENT_ID)
    }

    fn should_retry(&self, status: &tonic::Status) -> bool {
        is_safe_to_retry(status)
            || (self.options.idempotent
                && matches!(
                    status.code(),
                    Code::Unavailable | Code::Aborted | Code::Internal | Code::Unknown
                ))
    }

    /// Sends one request message as `A` does, retrying where safe.
    async fn with_retries<A: Attempt>(&self, message: Bytes) -> Result<A::Reply, Error> {
        let mut prepared = self.prepare().await?;
        let retries = self
            .options
            .retries
            .unwrap_or(self.client.inner.options.retries);
        let mut attempt = 0u32;
        let mut select = self.options.select.clone();
        loop {
            let mut grpc = self.grpc(&prepared);
            let request = self.request(message.clone(), &prepared);
            let sent = async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::from_error(Box::new(e)))?;
                A::send(grpc, request, self.path.clone()).await
            };
            let status = match tokio::time::timeout_at(prepared.deadline, sent).await {
                Err(_) => return Err(self.timed_out(&prepared)),
                Ok(Ok(reply)) => {
                    if let Some(node) = &prepared.node {
                        node.mark_up();
                    }
                    return Ok(reply);
                }
                Ok(Err(status)) => status,
            };
            let unreachable = is_safe_to_retry(&status);
            if let Some(node) = &prepared.node {
                if unreachable {
                    node.mark_down();
                    self.client.evict(&prepared.address);
                }
                // The next attempt goes to another node when there is one.
                select.exclude.push(node.id().clone());
            }
            if attempt >= retries || !self.should_retry(&status) {
                return Err(self.failed(&status, &prepared));
            }
            // A refused connection is retried at once (the channel re-dials); further
            // attempts back off 100 ms, 200 ms, 400 ms, … within the deadline.
            if attempt > 0 {
                let backoff = Duration::from_millis(100) * 2u32.saturating_pow(attempt - 1);
                tokio::time::sleep_until((Instant::now() + backoff).min(prepared.deadline)).await;
            }
            attempt += 1;
            tracing::debug!(service = %self.service, endpoint = %self.endpoint, attempt, error = %status.message(), "retrying call");
            if prepared.node.is_some() {
                let (deadline, timeout) = (prepared.deadline, prepared.timeout);
                prepared = match self.prepare_until(deadline, timeout, &select).await {
                    Ok(next) => next,
                    // Every node was tried: go round again from the full set.
                    Err(_) => {
                        select.exclude.clear();
                        self.prepare_until(deadline, timeout, &select).await?
                    }
                };
            }
        }
    }
}

/// One attempt of a call whose request is a single message.
trait Attempt {
    type Reply;
    fn send(
        grpc: tonic::client::Grpc<Channel>,
        request: tonic::Request<Bytes>,
        path: PathAndQuery,
    ) -> impl Future<Output = Result<Self::Reply, tonic::Status>> + Send;
}

impl<Resp: DecodeReply> Attempt for UnaryCall<Resp> {
    type Reply = Resp;
    async fn send(
        mut grpc: tonic::client::Grpc<Channel>,
        request: tonic::Request<Bytes>,
        path: PathAndQuery,
    ) -> Result<Resp, tonic::Status> {
        grpc.unary(request, path, PreEncoded::<Resp>::default())
            .await
            .map(tonic::Response::into_inner)
    }
}

impl<Resp: DecodeReply> Attempt for ServerStreamCall<Resp> {
    type Reply = tonic::Streaming<Resp>;
    async fn send(
        mut grpc: tonic::client::Grpc<Channel>,
        request: tonic::Request<Bytes>,
        path: PathAndQuery,
    ) -> Result<tonic::Streaming<Resp>, tonic::Status> {
        grpc.server_streaming(request, path, PreEncoded::<Resp>::default())
            .await
            .map(tonic::Response::into_inner)
    }
}

/// A unary call: one request, one reply. Await it to send.
pub struct UnaryCall<Resp> {
    target: Target,
    message: Bytes,
    _reply: PhantomData<fn() -> Resp>,
}

impl<Resp> UnaryCall<Resp> {
    call_options!();
}

impl<Resp: DecodeReply> IntoFuture for UnaryCall<Resp> {
    type Output = Result<Resp, Error>;
    type IntoFuture = BoxFuture<'static, Result<Resp, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.target.with_retries::<Self>(self.message).await })
    }
}

/// A call with one request and a stream of replies. Await it for the stream.
pub struct ServerStreamCall<Resp> {
    target: Target,
    message: Bytes,
    _reply: PhantomData<fn() -> Resp>,
}

impl<Resp> ServerStreamCall<Resp> {
    call_options!();
}

impl<Resp: DecodeReply> IntoFuture for ServerStreamCall<Resp> {
    type Output = Result<ResponseStream<Resp>, Error>;
    type IntoFuture = BoxFuture<'static, Result<ResponseStream<Resp>, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let service = self.target.service.clone();
            // The stream keeps the call's deadline.
            let (deadline, _) = self.target.deadline();
            let stream = self.target.with_retries::<Self>(self.message).await?;
            Ok(ResponseStream::new(stream, Some(deadline), service))
        })
    }
}

/// Encodes each message of a request stream.
fn encode_stream<Req: prost::Message + 'static>(
    requests: impl Stream<Item = Req> + Send + 'static,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures_util::StreamExt::map(requests, |m| Bytes::from(m.encode_to_vec()))
}

/// A boxed stream of encoded request messages.
type RequestBytes = std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Runs a call whose request is a stream (never retried: the stream is consumed).
async fn open_stream(
    target: &Target,
    requests: RequestBytes,
) -> Result<
    (
        tonic::client::Grpc<Channel>,
        tonic::Request<RequestBytes>,
        Prepared,
    ),
    Error,
> {
    let prepared = target.prepare().await?;
    let mut grpc = target.grpc(&prepared);
    let request = target.request(requests, &prepared);
    match tokio::time::timeout_at(prepared.deadline, grpc.ready()).await {
        Err(_) => Err(target.timed_out(&prepared)),
        Ok(Err(e)) => Err(Error::from_status(
            &tonic::Status::from_error(Box::new(e)),
            CLIENT_ID,
        )),
        Ok(Ok(())) => Ok((grpc, request, prepared)),
    }
}

/// A call with a stream of requests and one reply. Await it to send.
pub struct ClientStreamCall<Resp> {
    target: Target,
    requests: RequestBytes,
    _reply: PhantomData<fn() -> Resp>,
}

impl<Resp> ClientStreamCall<Resp> {
    call_options!();
}

impl<Resp: DecodeReply> IntoFuture for ClientStreamCall<Resp> {
    type Output = Result<Resp, Error>;
    type IntoFuture = BoxFuture<'static, Result<Resp, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let target = self.target;
            let (mut grpc, request, prepared) = open_stream(&target, self.requests).await?;
            let call =
                grpc.client_streaming(request, target.path.clone(), PreEncoded::<Resp>::default());
            match tokio::time::timeout_at(prepared.deadline, call).await {
                Err(_) => Err(target.timed_out(&prepared)),
                Ok(result) => result
                    .map(tonic::Response::into_inner)
                    .map_err(|s| target.failed(&s, &prepared)),
            }
        })
    }
}

/// A call where both sides stream. Await it for the reply stream.
pub struct StreamingCall<Resp> {
    target: Target,
    requests: RequestBytes,
    _reply: PhantomData<fn() -> Resp>,
}

impl<Resp> StreamingCall<Resp> {
    call_options!();
}

impl<Resp: DecodeReply> IntoFuture for StreamingCall<Resp> {
    type Output = Result<ResponseStream<Resp>, Error>;
    type IntoFuture = BoxFuture<'static, Result<ResponseStream<Resp>, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let target = self.target;
            let (mut grpc, request, prepared) = open_stream(&target, self.requests).await?;
            let call = grpc.streaming(request, target.path.clone(), PreEncoded::<Resp>::default());
            match tokio::time::timeout_at(prepared.deadline, call).await {
                Err(_) => Err(target.timed_out(&prepared)),
                Ok(result) => result
                    .map(|r| {
                        ResponseStream::new(
                            r.into_inner(),
                            Some(prepared.deadline),
                            target.service.clone(),
                        )
                    })
                    .map_err(|s| target.failed(&s, &prepared)),
            }
        })
    }
}

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
    /// A unary call to `path`; generated clients call this.
    pub fn unary<Req: prost::Message, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        request: &Req,
    ) -> UnaryCall<Resp> {
        UnaryCall {
            target: Target::new(
                self,
                service,
                PathAndQuery::from_static(path),
                Cow::Borrowed(endpoint),
            ),
            message: Bytes::from(request.encode_to_vec()),
            _reply: PhantomData,
        }
    }

    /// A server-streaming call to `path`; generated clients call this.
    pub fn server_streaming<Req: prost::Message, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        request: &Req,
    ) -> ServerStreamCall<Resp> {
        ServerStreamCall {
            target: Target::new(
                self,
                service,
                PathAndQuery::from_static(path),
                Cow::Borrowed(endpoint),
            ),
            message: Bytes::from(request.encode_to_vec()),
            _reply: PhantomData,
        }
    }

    /// A client-streaming call to `path`; generated clients call this.
    pub fn client_streaming<Req: prost::Message + 'static, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        requests: impl Stream<Item = Req> + Send + 'static,
    ) -> ClientStreamCall<Resp> {
        ClientStreamCall {
            target: Target::new(
                self,
                service,
                PathAndQuery::from_static(path),
                Cow::Borrowed(endpoint),
            ),
            requests: Box::pin(encode_stream(requests)),
            _reply: PhantomData,
        }
    }

    /// A bidirectional streaming call to `path`; generated clients call this.
    pub fn streaming<Req: prost::Message + 'static, Resp>(
        &self,
        service: &str,
        path: &'static str,
        endpoint: &'static str,
        requests: impl Stream<Item = Req> + Send + 'static,
    ) -> StreamingCall<Resp> {
        StreamingCall {
            target: Target::new(
                self,
                service,
                PathAndQuery::from_static(path),
                Cow::Borrowed(endpoint),
            ),
            requests: Box::pin(encode_stream(requests)),
            _reply: PhantomData,
        }
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
        let reply: crate::codec::RawMessage = UnaryCall {
            target,
            message: Bytes::copy_from_slice(json.as_bytes()),
            _reply: PhantomData,
        }
        .await?;
        serde_json::from_slice(&reply.0).map_err(|e| {
            Error::internal(
                CLIENT_ID,
                format!("reply from `{service}` {endpoint} is not JSON: {e}"),
            )
        })
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
