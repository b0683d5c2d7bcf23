//! Publish/subscribe: the [`Broker`] trait, delivery semantics shared by every
//! backend, and the in-process [`MemoryBroker`].
//!
//! A message is `{headers, body}`. Without a queue group every subscriber of a topic
//! gets every message; within a queue group exactly one member gets each. A handler
//! that returns an error gets the message again (up to
//! [`SubscribeOptions::max_deliveries`], 5 by default); after the last attempt the
//! message goes to the dead-letter topic `<topic>.dlq` with the error in the
//! `Micro-Error` header. Backends that persist (NATS JetStream, RabbitMQ durable
//! queues, Redis Streams, MQTT persistent sessions) also redeliver what a process
//! took but never acknowledged because it died. The typed layer on top
//! ([`crate::Service::subscribe`], [`crate::Client::publish`]) encodes events with a
//! codec and fills the standard headers.

mod address;
pub(crate) mod http;
mod in_flight;
mod memory;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod typed;

pub use address::{BrokerAddress, redact_str};
pub use http::HttpBroker;
/// The registry name prefix under which the embedded HTTP broker records each
/// subscription (`rmicro.broker.<topic>`, a node per subscriber, its queue group in
/// node metadata `queue`).
pub use http::SERVICE_PREFIX as HTTP_BROKER_PREFIX;
pub use in_flight::InFlight;
pub use memory::MemoryBroker;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Header: the body's content type (`application/protobuf`, `application/json`).
pub const CONTENT_TYPE: &str = "Content-Type";
/// Header: the topic the message was published to.
pub const TOPIC: &str = "Micro-Topic";
/// Header: a unique id of the message.
pub const MESSAGE_ID: &str = "Micro-Id";
/// Header: when it was published, RFC 3339.
pub const TIMESTAMP: &str = "Micro-Timestamp";
/// Header: the publishing service.
pub const FROM_SERVICE: &str = "Micro-From-Service";
/// Header: W3C trace context of the publisher.
pub const TRACEPARENT: &str = "traceparent";
/// Header on dead letters: the last handler error.
pub const ERROR: &str = "Micro-Error";
/// Header on dead letters: the topic the message failed on.
pub const ORIGINAL_TOPIC: &str = "Micro-Original-Topic";
/// Header on dead letters: how many times it was delivered.
pub const DELIVERIES: &str = "Micro-Deliveries";

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A message: headers and an opaque body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Headers (content type, id, timestamp, sender, trace context, …).
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub body: Bytes,
}

impl Message {
    /// A message with `body` and no headers.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            headers: BTreeMap::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

/// How a subscription behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Queue group: each message goes to one member of the group. `None`: every
    /// subscriber gets every message.
    pub queue: Option<String>,
    /// Keep the subscription's position while no member runs (where the backend can).
    pub durable: bool,
    /// Acknowledge when the handler returns `Ok` (default). When false, the handler
    /// must call [`Delivery::ack`]; returning without it redelivers the message.
    pub auto_ack: bool,
    /// How many messages one subscriber handles at once (default 1). The server
    /// backends run these on the subscription's own task ([`InFlight`]): they
    /// overlap while waiting on I/O; heavy CPU work belongs in `spawn_blocking`.
    pub concurrency: usize,
    /// Attempts before a failing message goes to `<topic>.dlq` (default 5).
    pub max_deliveries: u32,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            queue: None,
            durable: false,
            auto_ack: true,
            concurrency: 1,
            max_deliveries: 5,
        }
    }
}

impl SubscribeOptions {
    /// Joins queue group `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Makes the subscription durable.
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }

    /// Leaves acknowledging to the handler ([`Delivery::ack`]).
    pub fn manual_ack(mut self) -> Self {
        self.auto_ack = false;
        self
    }

    /// Handles up to `n` messages at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Fails for a durable subscription without a queue group, on backends where
    /// the group names the durable state (`names`: "the consumer group", …).
    pub fn require_queue_if_durable(&self, broker: &str, names: &str) -> Result<(), BrokerError> {
        if self.durable && self.queue.is_none() {
            return Err(BrokerError::BadName {
                broker: broker.to_owned(),
                what: "queue",
                name: String::new(),
                detail: format!("a durable subscription needs a queue group: it names {names}"),
            });
        }
        Ok(())
    }

    /// Dead-letters a message after `n` failed deliveries.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }
}

/// One delivery of a message to a handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic it came from.
    pub topic: String,
    /// The message.
    pub message: Message,
    /// 1 for the first delivery, 2 for the first redelivery, …
    pub attempt: u32,
    acked: Arc<AtomicBool>,
    /// Whether a failure now sends the message to the dead-letter topic (set when
    /// the subscription's handler is run).
    last: bool,
}

impl Delivery {
    /// A delivery of `message` on `topic`, attempt number `attempt` (from 1).
    pub fn new(topic: impl Into<String>, message: Message, attempt: u32) -> Self {
        Delivery {
            topic: topic.into(),
            message,
            attempt: attempt.max(1),
            acked: Arc::new(AtomicBool::new(false)),
            last: false,
        }
    }

    /// Whether this is the last delivery the subscription allows
    /// ([`SubscribeOptions::max_deliveries`]): if it fails, the message goes to
    /// the dead-letter topic instead of coming again.
    pub fn is_last(&self) -> bool {
        self.last
    }

    /// Acknowledges the message (needed with [`SubscribeOptions::manual_ack`]).
    pub fn ack(&self) {
        self.acked.store(true, Ordering::Release);
    }

    /// Whether [`ack`](Self::ack) was called.
    pub fn is_acked(&self) -> bool {
        self.acked.load(Ordering::Acquire)
    }
}

/// What a handler receives and returns, boxed so any async closure fits.
pub type Handler =
    Arc<dyn Fn(Delivery) -> BoxFuture<'static, Result<(), crate::Error>> + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::broker::{handler, Delivery};
/// let h = handler(|delivery: Delivery| async move {
///     println!("{} bytes on {}", delivery.message.body.len(), delivery.topic);
///     Ok(())
/// });
/// # let _ = h;
/// ```
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), crate::Error>> + Send + 'static,
{
    Arc::new(move |delivery| Box::pin(f(delivery)))
}

/// What became of a delivery, for the backend to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: acknowledge.
    Ack,
    /// Failed (or not acknowledged); deliver again.
    Retry(String),
    /// Failed its last allowed attempt: publish this to `<topic>.dlq`, then
    /// acknowledge the original.
    DeadLetter(Message),
}

/// The value in `cell`, made by `init` on first use (one caller makes it; a failed
/// attempt leaves the cell empty for the next). For backends' lazily opened
/// connections: the already-made case is a plain read, and `init` — connecting,
/// often a large future — is boxed, so every publish does not carry it.
pub async fn init_once<T, E, F, Fut>(cell: &tokio::sync::OnceCell<T>, init: F) -> Result<&T, E>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    Box::pin(cell.get_or_try_init(init)).await
}

/// Runs `handler` on `delivery` and decides what the backend must do, the same for
/// every backend. A handler that panics counts as a failure.
pub async fn process(
    handler: &Handler,
    mut delivery: Delivery,
    options: &SubscribeOptions,
) -> Outcome {
    let attempt = delivery.attempt;
    let topic = delivery.topic.clone();
    // Only a last attempt can need the message afterwards (as the dead letter).
    let last = attempt >= options.max_deliveries;
    delivery.last = last;
    let message = last.then(|| delivery.message.clone());
    let acked = delivery.acked.clone();
    let run = std::panic::AssertUnwindSafe(handler(delivery));
    let result = match futures_util::FutureExt::catch_unwind(run).await {
        Ok(result) => result,
        Err(_) => Err(crate::Error::internal(
            "rmicro.broker",
            format!("the handler for `{topic}` panicked"),
        )),
    };
    let error = match result {
        Ok(()) if options.auto_ack || acked.load(Ordering::Acquire) => return Outcome::Ack,
        Ok(()) => "the handler returned without acknowledging (manual ack)".to_owned(),
        Err(err) => err.detail.clone(),
    };
    if let Some(mut dead) = message {
        dead.headers.insert(ERROR.into(), error);
        dead.headers.insert(ORIGINAL_TOPIC.into(), topic);
        dead.headers.insert(DELIVERIES.into(), attempt.to_string());
        Outcome::DeadLetter(dead)
    } else {
        tracing::debug!(%topic, attempt, %error, "delivery failed; it will be redelivered");
        Outcome::Retry(error)
    }
}

/// Runs `handler` on `message` until it succeeds or fails its last allowed attempt,
/// retrying in this process with backoff — for backends (or subscriptions) that
/// cannot give a message back to the server. Returns the dead letter to publish
/// when the last attempt failed, `None` when the message was handled.
pub async fn handle_with_retries(
    handler: &Handler,
    topic: &str,
    message: Message,
    options: &SubscribeOptions,
) -> Option<Message> {
    let mut attempt = 1;
    loop {
        let delivery = Delivery::new(topic, message.clone(), attempt);
        match process(handler, delivery, options).await {
            Outcome::Ack => return None,
            Outcome::DeadLetter(dead) => return Some(dead),
            Outcome::Retry(_) => {
                tokio::time::sleep(redelivery_delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}

/// How long to wait before redelivering attempt `attempt` (from 1): 100 ms doubling
/// to at most 5 s.
pub fn redelivery_delay(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(6);
    (Duration::from_millis(100) * 2u32.pow(exp)).min(Duration::from_secs(5))
}

/// Why a broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The backend could not be reached or refused the operation.
    #[error("broker `{broker}` failed to {operation}: {detail}")]
    Backend {
        /// Which broker (`nats://…`, `memory`).
        broker: String,
        /// What was attempted.
        operation: String,
        /// What went wrong.
        detail: String,
    },
    /// A topic or queue name the backend cannot use.
    #[error("broker `{broker}`: bad {what} `{name}`: {detail}")]
    BadName {
        /// Which broker.
        broker: String,
        /// `topic` or `queue`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        detail: String,
    },
    /// `--broker` named an implementation this program does not have.
    #[error("unknown broker `{name}`: this program knows http, {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names known.
        known: String,
    },
    /// No broker was configured where one is needed.
    #[error("no broker: give the service one with `.broker(..)` or `--broker NAME`")]
    Missing,
}

impl BrokerError {
    /// A [`BrokerError::Backend`] of `broker` (its description) failing `operation`.
    pub fn backend(
        broker: impl Into<String>,
        operation: impl Into<String>,
        detail: impl std::fmt::Display,
    ) -> Self {
        BrokerError::Backend {
            broker: broker.into(),
            operation: operation.into(),
            detail: detail.to_string(),
        }
    }
}

/// A live subscription; dropping it does not end it — call
/// [`unsubscribe`](Subscriber::unsubscribe).
pub struct Subscriber {
    topic: String,
    options: SubscribeOptions,
    stop: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("options", &self.options)
            .finish()
    }
}

impl Subscriber {
    /// A subscription to `topic` that `stop` ends (for backends).
    pub fn new<F, Fut>(topic: impl Into<String>, options: SubscribeOptions, stop: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        Subscriber {
            topic: topic.into(),
            options,
            stop: Some(Box::new(move || Box::pin(stop()))),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The options it was made with.
    pub fn options(&self) -> &SubscribeOptions {
        &self.options
    }

    /// Stops receiving; messages being handled finish first.
    pub async fn unsubscribe(mut self) {
        if let Some(stop) = self.stop.take() {
            stop().await;
        }
    }
}

/// Publish/subscribe on some message system.
pub trait Broker: Send + Sync + 'static {
    /// A short description: `memory`, `nats://127.0.0.1:4222`, ….
    fn describe(&self) -> String;

    /// Connects (publish and subscribe connect on first use too).
    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Closes connections; subscriptions end.
    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Publishes `message` on `topic`; returns once the backend confirmed it where
    /// the backend confirms.
    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Subscribes `handler` to `topic`.
    fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscriber, BrokerError>>;
}

/// A shared broker.
pub type SharedBroker = Arc<dyn Broker>;

impl std::fmt::Debug for dyn Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({})", self.describe())
    }
}

/// Builds a broker from an optional `--broker-address`.
pub type Factory = fn(Option<&str>) -> Result<SharedBroker, BrokerError>;

/// The brokers adapter crates add for `--broker NAME`, collected by the linker (see
/// [`static@crate::registry::REGISTRIES`]).
#[linkme::distributed_slice]
pub static BROKERS: [(&'static str, Factory)];

static PLUGINS: crate::plugins::Plugins<Factory> = crate::plugins::Plugins::new(
    || {
        vec![("memory", |_| {
            Ok(Arc::new(MemoryBroker::new()) as SharedBroker)
        })]
    },
    || BROKERS.static_slice(),
);

/// Makes `--broker NAME` build its broker with `factory`, for a broker of the
/// application's own (adapter crates add theirs to [`static@BROKERS`]).
pub fn install(name: &str, factory: Factory) {
    PLUGINS.install(name, factory);
}

/// The broker names `--broker` accepts in this process.
pub fn names() -> Vec<String> {
    PLUGINS.names()
}

/// Builds the broker `--broker NAME --broker-address ADDR` names, where the
/// embedded `http` broker (the default, also for an empty name) finds subscribers
/// through `registry`.
pub fn from_flags_with_registry(
    name: &str,
    address: Option<&str>,
    registry: &crate::registry::SharedRegistry,
) -> Result<SharedBroker, BrokerError> {
    match name {
        "" | "http" => Ok(Arc::new(HttpBroker::new(
            registry.clone(),
            address.filter(|a| !a.is_empty()),
        ))),
        other => from_flags(other, address),
    }
}

/// Builds the broker `--broker NAME --broker-address ADDR` names.
pub fn from_flags(name: &str, address: Option<&str>) -> Result<SharedBroker, BrokerError> {
    match PLUGINS.get(name) {
        Some(factory) => factory(address.filter(|a| !a.is_empty())),
        None => Err(BrokerError::Unknown {
            name: name.to_owned(),
            known: names().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing() -> Handler {
        handler(|_d| async { Err(crate::Error::internal("t", "boom")) })
    }

    #[tokio::test]
    async fn failures_retry_then_dead_letter_with_the_error() {
        let options = SubscribeOptions::default().max_deliveries(3);
        let d = |attempt| Delivery::new("orders", Message::new("x"), attempt);
        assert_eq!(
            process(&failing(), d(2), &options).await,
            Outcome::Retry("boom".into())
        );
        let Outcome::DeadLetter(dead) = process(&failing(), d(3), &options).await else {
            panic!("the third failure is the last");
        };
        assert_eq!(dead.headers[ERROR], "boom");
        assert_eq!(dead.headers[ORIGINAL_TOPIC], "orders");
        assert_eq!(dead.headers[DELIVERIES], "3");
        assert_eq!(dead.body, "x");
    }

    #[tokio::test]
    async fn manual_ack_and_panics() {
        let options = SubscribeOptions::default().manual_ack();
        let forgets = handler(|_d| async { Ok(()) });
        let acks = handler(|d: Delivery| async move {
            d.ack();
            Ok(())
        });
        let d = || Delivery::new("t", Message::new("x"), 1);
        assert!(matches!(
            process(&forgets, d(), &options).await,
            Outcome::Retry(_)
        ));
        assert_eq!(process(&acks, d(), &options).await, Outcome::Ack);
        let panics = handler(|_d| async { panic!("handler bug") });
        let outcome = process(&panics, d(), &SubscribeOptions::default()).await;
        assert!(matches!(outcome, Outcome::Retry(e) if e.contains("panicked")));
    }

    #[test]
    fn unknown_brokers_say_what_exists() {
        let err = from_flags("kafka", None).err().unwrap();
        assert!(err.to_string().contains("unknown broker `kafka`"), "{err}");
        assert!(err.to_string().contains("memory"), "{err}");
        assert_eq!(redelivery_delay(1), Duration::from_millis(100));
        assert_eq!(redelivery_delay(30), Duration::from_secs(5));
    }
}
