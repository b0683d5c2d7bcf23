//! The client: typed and dynamic calls to services by name, with timeouts, retries,
//! metadata and deadline propagation.
//!
//! Generated clients (`GreeterClient`) are thin: each method builds a call on
//! [`Client`] that can be adjusted before it is awaited:
//!
//! ```no_run
//! # extern crate rmicro_core as rmicro;
//! # async fn call() -> Result<(), rmicro::Error> {
//! use std::time::Duration;
//! // The messages `rmicro-build` generates from the proto:
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct HelloRequest { #[prost(string, tag = "1")] name: String }
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct HelloReply { #[prost(string, tag = "1")] message: String }
//!
//! let client = rmicro::Client::default();
//! // What a generated `greeter.say_hello(req)` sends:
//! let request = HelloRequest { name: "ann".into() };
//! let reply: HelloReply = client
//!     .unary("greeter", "/greeter.v1.Greeter/SayHello", "Greeter.SayHello", &request)
//!     .timeout(Duration::from_secs(1))
//!     .metadata("x-user", "ann")
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! A service name resolves to an address through `.address(..)` per call, a static
//! route, or the selector over the registry; a `host:port` name is dialled as it is.
//! Each address gets one multiplexed HTTP/2 connection, dialled on first use, shared
//! by all calls, and re-dialled after the peer goes away.
//!
//! **Wrappers** sit at two levels, go-micro's names: [`ClientOptions::wrap_client`]
//! wraps each logical call once, above node selection and retries (it sees the
//! target, endpoint, deadline and metadata, and at the end the final status and the
//! number of attempts: [`crate::wrapper::ClientCallInfo`]); [`ClientOptions::wrap_call`]
//! wraps each attempt (it also sees the node and address picked and the attempt
//! number: [`crate::wrapper::AttemptInfo`]). A `wrap_call` wrapper that fails with
//! [`crate::wrapper::NotSent`] makes the client try another node within its retry
//! rules. Both stacks are built once per client, so wrapper state lives as long as
//! the client.
//!
//! **Retries** (default 1) happen only where they cannot run a handler twice: the
//! connection could not be made, or the request was refused before it was sent. A call
//! marked `.idempotent()` is also retried on `UNAVAILABLE`, `ABORTED`, `INTERNAL` and
//! `UNKNOWN`. Streaming calls whose requests are streams are never retried. All
//! calls of a client share a [`RetryBudget`] (20 % of recent calls, at least 10 a
//! second), so a failing backend is not hit by a retry storm; retries wait a
//! [`Backoff`] (exponential, full jitter, or the server's `grpc-retry-pushback-ms`).
//!
//! **Deadlines**: the timeout (default 5 s) is sent as `grpc-timeout`; inside a handler,
//! a call inherits what is left of the incoming call's deadline if that is sooner.

mod attempt;
mod budget;
mod call;
mod health;
mod resolve;
mod retry;
mod stream;
mod unary;

pub use crate::wrapper::stack::{ClientLayer, ClientStack};
pub use budget::{Backoff, RetryBudget};
pub use call::{
    Answer, Answering, Call, CallOptions, ClientStreamCall, OneReply, OneReplyWithMetadata, Reply,
    ReplyStream, ServerStreamCall, StreamingCall, UnaryCall,
};
pub use health::{HealthAnswer, HealthStatus};
pub use stream::ResponseStream;

use crate::errors::Error;
use crate::selector::Selector;
use crate::transport::{ChannelOptions, ClientTls};
use crate::wrapper::stack::{ClientChain, ClientWrap};
use resolve::Resolver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The `id` of errors the client itself produces.
pub const CLIENT_ID: &str = "rmicro.client";

/// Settings of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Default per-call timeout.
    pub request_timeout: Duration,
    /// Default number of retries (attempts = retries + 1).
    pub retries: u32,
    /// How many retries all calls together may make ([`RetryBudget`]).
    pub retry_budget: RetryBudget,
    /// How long to wait before a retry ([`Backoff`]).
    pub backoff: Backoff,
    /// Largest message sent or accepted, in bytes.
    pub max_message_size: usize,
    /// How connections are dialled.
    pub channel: ChannelOptions,
    /// Static routes: service name → address; other names go to the selector.
    pub routes: HashMap<String, String>,
    /// Where [`Client::publish`] sends events.
    pub broker: Option<crate::broker::SharedBroker>,
    /// The service publishing (the `Micro-From-Service` header).
    pub from_service: Option<String>,
    /// Client wrappers, set with [`wrap_client`](Self::wrap_client) and
    /// [`wrap_call`](Self::wrap_call).
    pub wrappers: ClientWrappers,
}

/// The client wrappers of a [`ClientOptions`], in registration order.
#[derive(Clone, Default)]
pub struct ClientWrappers {
    client: Vec<ClientWrap>,
    call: Vec<ClientWrap>,
}

impl std::fmt::Debug for ClientWrappers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientWrappers")
            .field("client", &self.client.len())
            .field("call", &self.call.len())
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retries: 1,
            retry_budget: RetryBudget::default(),
            backoff: Backoff::default(),
            max_message_size: 4 * 1024 * 1024,
            channel: ChannelOptions::default(),
            routes: HashMap::new(),
            broker: None,
            from_service: None,
            wrappers: ClientWrappers::default(),
        }
    }
}

impl ClientOptions {
    /// Wraps each logical call once, above node selection and retries; the first
    /// registered is the outermost. Any tower layer over HTTP-level gRPC calls.
    pub fn wrap_client(mut self, layer: impl ClientLayer) -> Self {
        self.wrappers.client.push(layer.into_wrap());
        self
    }

    /// Puts `call` outside every call wrapper and `attempt` outside every attempt
    /// wrapper (tracing: its spans cover what the others do).
    pub(crate) fn wrap_outermost(&mut self, call: impl ClientLayer, attempt: impl ClientLayer) {
        self.wrappers.client.insert(0, call.into_wrap());
        self.wrappers.call.insert(0, attempt.into_wrap());
    }

    /// Wraps each attempt of a call (after the node is picked); the first registered
    /// is the outermost. Fail with [`crate::wrapper::NotSent`] to have the client
    /// try another node.
    pub fn wrap_call(mut self, layer: impl ClientLayer) -> Self {
        self.wrappers.call.push(layer.into_wrap());
        self
    }
}

/// Makes calls to services. Cheap to clone; clones share connections and wrappers.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    resolver: Arc<Resolver>,
    /// `wrap_client` wrappers around selection, retries and the `wrap_call` stack.
    stack: ClientChain,
    /// The service this client calls for ([`ClientOptions::from_service`]).
    caller: Option<Arc<str>>,
    /// The retry budget, shared with the clients derived from this one.
    budget: Arc<budget::Budget>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.resolver.options)
            .finish_non_exhaustive()
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientOptions::default())
    }
}

impl Client {
    /// A client with the given options, resolving names through static routes only.
    pub fn new(options: ClientOptions) -> Self {
        Self::build(options, None)
    }

    /// A client that finds services through `selector` (and its registry).
    pub fn with_selector(options: ClientOptions, selector: Arc<Selector>) -> Self {
        Self::build(options, Some(selector))
    }

    fn build(options: ClientOptions, selector: Option<Arc<Selector>>) -> Self {
        let budget = Arc::new(budget::Budget::new(options.retry_budget));
        Self::build_sharing(options, selector, budget)
    }

    fn build_sharing(
        options: ClientOptions,
        selector: Option<Arc<Selector>>,
        budget: Arc<budget::Budget>,
    ) -> Self {
        let wrappers = options.wrappers.clone();
        let caller = options.from_service.as_deref().map(Arc::from);
        let resolver = Arc::new(Resolver::new(options, selector));
        let attempt = ClientChain::new(attempt::to_channel(), &wrappers.call);
        let retrying = retry::retrying(resolver.clone(), attempt, budget.clone());
        let stack = ClientChain::new(retrying, &wrappers.client);
        Client {
            inner: Arc::new(ClientInner {
                resolver,
                stack,
                caller,
                budget,
            }),
        }
    }

    /// The selector this client resolves names with, if it has a registry.
    pub fn selector(&self) -> Option<&Arc<Selector>> {
        self.inner.resolver.selector.as_ref()
    }

    /// A client like this one but with other options (same selector, wrappers and
    /// retry budget).
    fn derive(&self, options: ClientOptions) -> Self {
        Self::build_sharing(
            options,
            self.inner.resolver.selector.clone(),
            self.inner.budget.clone(),
        )
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.resolver.options
    }

    /// A client that resolves `service` to `address` and every other name as this
    /// one does (same selector, settings and wrappers).
    pub fn with_route(&self, service: impl Into<String>, address: impl Into<String>) -> Self {
        let mut options = self.options().clone();
        options.routes.insert(service.into(), address.into());
        self.derive(options)
    }

    /// A client that publishes through `broker`.
    pub fn with_broker(&self, broker: crate::broker::SharedBroker) -> Self {
        let mut options = self.options().clone();
        options.broker = Some(broker);
        self.derive(options)
    }

    /// Publishes a protobuf event on `topic` with the standard headers; returns once
    /// the broker confirmed it (where the broker confirms).
    pub async fn publish<M: prost::Message>(&self, topic: &str, event: &M) -> Result<(), Error> {
        self.publish_message(topic, crate::broker::typed::encode_proto(event))
            .await
    }

    /// Publishes a JSON event on `topic` with the standard headers.
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &T,
    ) -> Result<(), Error> {
        self.publish_message(topic, crate::broker::typed::encode_json(event)?)
            .await
    }

    /// Publishes a raw message, adding the standard headers it lacks.
    pub async fn publish_message(
        &self,
        topic: &str,
        message: crate::broker::Message,
    ) -> Result<(), Error> {
        let options = self.options();
        let broker = options.broker.as_ref().ok_or_else(|| {
            Error::internal(
                "rmicro.client",
                crate::broker::BrokerError::Missing.to_string(),
            )
        })?;
        let message = crate::broker::typed::stamp(message, topic, options.from_service.as_deref());
        broker
            .publish(topic, message)
            .await
            .map_err(|e| Error::new("rmicro.client", 503, e.to_string()))
    }

    /// A client that dials over TLS.
    pub fn with_tls(&self, tls: ClientTls) -> Self {
        let mut options = self.options().clone();
        options.channel.tls = Some(tls);
        self.derive(options)
    }

    /// How many channels are cached (one per address called).
    pub fn cached_channels(&self) -> usize {
        self.inner.resolver.cached_channels()
    }
}
