//! The client: typed and dynamic calls to services by name, with timeouts, retries,
//! metadata and deadline propagation.
//!
//! Generated clients (`GreeterClient`) are thin: each method builds a call on
//! [`Client`] that can be adjusted before it is awaited:
//!
//! ```ignore
//! let reply = greeter.say_hello(req).timeout(Duration::from_secs(1)).metadata("x-user", "ann").await?;
//! ```
//!
//! A service name resolves to an address through static routes (the discovery issue
//! adds the registry and selector); `.address(..)` overrides it per call. Each address
//! gets one multiplexed HTTP/2 connection, dialled on first use, shared by all calls,
//! and re-dialled after the peer goes away.
//!
//! **Retries** (default 1) happen only where they cannot run a handler twice: the
//! connection could not be made, or the request was refused before it was sent. A call
//! marked `.idempotent()` is also retried on `UNAVAILABLE`, `ABORTED`, `INTERNAL` and
//! `UNKNOWN`. Streaming calls whose requests are streams are never retried.
//!
//! **Deadlines**: the timeout (default 5 s) is sent as `grpc-timeout`; inside a handler,
//! a call inherits what is left of the incoming call's deadline if that is sooner.

mod call;
mod stream;

pub use call::{CallOptions, ClientStreamCall, ServerStreamCall, StreamingCall, UnaryCall};
pub use stream::ResponseStream;

use crate::errors::Error;
use crate::selector::{SelectError, SelectOptions, Selected, Selector};
use crate::transport::{Channel, ChannelOptions, ClientTls, connect_lazy};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
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
    /// Largest message sent or accepted, in bytes.
    pub max_message_size: usize,
    /// How connections are dialled.
    pub channel: ChannelOptions,
    /// Static routes: service name → address, until a registry resolves names.
    pub routes: HashMap<String, String>,
    /// Where [`Client::publish`] sends events.
    pub broker: Option<crate::broker::SharedBroker>,
    /// The service publishing (the `Micro-From-Service` header).
    pub from_service: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retries: 1,
            max_message_size: 4 * 1024 * 1024,
            channel: ChannelOptions::default(),
            routes: HashMap::new(),
            broker: None,
            from_service: None,
        }
    }
}

/// A layer applied to each new channel: client wrappers.
type ClientLayer = Arc<dyn Fn(Channel) -> Channel + Send + Sync>;

/// Makes calls to services. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    options: ClientOptions,
    selector: Option<Arc<Selector>>,
    layers: RwLock<Vec<ClientLayer>>,
    channels: RwLock<HashMap<String, Channel>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.options)
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
        Client {
            inner: Arc::new(ClientInner {
                options,
                selector,
                layers: RwLock::new(Vec::new()),
                channels: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The selector this client resolves names with, if it has a registry.
    pub fn selector(&self) -> Option<&Arc<Selector>> {
        self.inner.selector.as_ref()
    }

    /// A client like this one but with other options (same selector and wrappers).
    fn derive(&self, options: ClientOptions) -> Self {
        let client = Self::build(options, self.inner.selector.clone());
        if let (Ok(mut mine), Ok(theirs)) = (client.inner.layers.write(), self.inner.layers.read())
        {
            mine.clone_from(&theirs);
        }
        client
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// A client that resolves `service` to `address`, sharing this client's settings.
    pub fn with_route(&self, service: impl Into<String>, address: impl Into<String>) -> Self {
        let mut options = self.inner.options.clone();
        options.routes.insert(service.into(), address.into());
        let client = Client::new(options);
        if let (Ok(mut mine), Ok(theirs)) = (client.inner.layers.write(), self.inner.layers.read())
        {
            mine.clone_from(&theirs);
        }
        client
    }

    /// A client that publishes through `broker`.
    pub fn with_broker(&self, broker: crate::broker::SharedBroker) -> Self {
        let mut options = self.inner.options.clone();
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
        let options = &self.inner.options;
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
        let mut options = self.inner.options.clone();
        options.channel.tls = Some(tls);
        self.derive(options)
    }

    /// Adds a wrapper around every call; the first added is the outermost.
    /// Applies to connections dialled after this call.
    pub fn wrap<L>(&self, layer: L)
    where
        L: tower::Layer<ClientStack> + Send + Sync + 'static,
        L::Service: tower::Service<
                http::Request<crate::transport::Body>,
                Response = http::Response<crate::transport::Body>,
                Error = crate::transport::TransportError,
            > + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<http::Request<crate::transport::Body>>>::Future:
            Send + 'static,
    {
        let apply: ClientLayer = Arc::new(move |ch: Channel| Channel::new(layer.layer(ch)));
        if let Ok(mut layers) = self.inner.layers.write() {
            layers.push(apply);
        }
    }

    /// Where a call to `service` goes: the per-call address, a static route, a node
    /// picked by the selector, or the name itself when it is a `host:port`.
    pub(crate) async fn resolve(
        &self,
        service: &str,
        address: Option<&str>,
        select: &SelectOptions,
    ) -> Result<(Arc<str>, Option<Selected>), Error> {
        if let Some(address) = address {
            return Ok((Arc::from(address), None));
        }
        if let Some(address) = self.inner.options.routes.get(service) {
            return Ok((Arc::from(address.as_str()), None));
        }
        if let Some(selector) = &self.inner.selector {
            return match selector.select(service, select).await {
                Ok(selected) => Ok((selected.address().clone(), Some(selected))),
                Err(SelectError::NoNodes { .. }) if service.contains(':') => {
                    Ok((Arc::from(service), None))
                }
                Err(err) => Err(Error::unavailable(CLIENT_ID, err.to_string())),
            };
        }
        if service.contains(':') {
            return Ok((Arc::from(service), None));
        }
        Err(Error::new(
            CLIENT_ID,
            503,
            format!(
                "service `{service}` has no known address: give the call an `.address(..)`, \
                 route it with `client.with_route(\"{service}\", \"host:port\")`, or use a registry"
            ),
        ))
    }

    /// Forgets the channel to `address` (its node is unreachable), so channels of
    /// departed nodes do not pile up; a later call dials afresh.
    pub(crate) fn evict(&self, address: &str) {
        if let Ok(mut channels) = self.inner.channels.write() {
            channels.remove(address);
        }
    }

    /// How many channels are cached (one per address called).
    pub fn cached_channels(&self) -> usize {
        self.inner.channels.read().map(|c| c.len()).unwrap_or(0)
    }

    /// The shared channel to `address`, dialled lazily on first use.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, Error> {
        if let Ok(channels) = self.inner.channels.read()
            && let Some(channel) = channels.get(address)
        {
            return Ok(channel.clone());
        }
        let raw = connect_lazy(address, &self.inner.options.channel)
            .map_err(|e| Error::bad_request(CLIENT_ID, e.to_string()))?;
        let layers = self
            .inner
            .layers
            .read()
            .map(|l| l.clone())
            .unwrap_or_default();
        // First added = outermost, so wrap from the last one inwards.
        let channel = layers.iter().rev().fold(raw, |ch, layer| layer(ch));
        let mut channels = self
            .inner
            .channels
            .write()
            .map_err(|_| Error::internal(CLIENT_ID, "channel cache poisoned"))?;
        Ok(channels
            .entry(address.to_owned())
            .or_insert(channel)
            .clone())
    }
}

/// The service type client wrappers wrap: a channel to one node.
pub type ClientStack = Channel;
