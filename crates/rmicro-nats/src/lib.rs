//! NATS for rmicro: a [`Broker`] on NATS JetStream (at-least-once: persisted,
//! acknowledged, redelivered) or on core NATS (at-most-once, in memory).
//!
//! JetStream mode (`--broker nats`): each topic has a stream `RMICRO_<topic>` (file
//! storage, messages kept 24 h) created on first use; `publish` returns after the
//! server's PubAck. A subscriber without a queue group gets its own ephemeral
//! consumer (every subscriber sees every new message); a queue group is a durable
//! consumer named after the group, shared by its members (each message to one
//! member), that keeps its position while no member runs. Messages are acknowledged
//! explicitly; a failed handler NAKs with backoff, a process that dies before
//! acking gets its messages redelivered after the ack wait (30 s by default), and
//! after `max_deliveries` the message goes to `<topic>.dlq`.
//!
//! Core mode (`--broker nats-core`): plain subjects and queue groups; redelivery on
//! handler error happens in the subscribing process; nothing survives a restart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rmicro::broker::BrokerError> {
//! use rmicro::broker::{Broker, Message};
//! let broker = rmicro_nats::NatsBroker::jetstream("nats://127.0.0.1:4222");
//! broker.publish("user.created", Message::new("hi")).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod consume;

use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use consume::{Handling, consume, consume_core};
use futures_util::future::BoxFuture;
use rmicro::broker::{
    Broker, BrokerAddress, BrokerError, Handler, Message, SubscribeOptions, Subscriber,
    dead_letter_topic, init_once, redact_str,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// The address used without `--broker-address`.
pub const DEFAULT_ADDRESS: &str = "nats://127.0.0.1:4222";

/// Which NATS delivery model a [`NatsBroker`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// JetStream: persisted, acknowledged, at-least-once.
    JetStream,
    /// Core NATS: in memory, at-most-once.
    Core,
}

struct Inner {
    address: String,
    mode: Mode,
    ack_wait: Duration,
    client: OnceCell<async_nats::Client>,
    /// The JetStream context on `client`, made once.
    jetstream: OnceCell<jetstream::Context>,
    streams: Mutex<HashSet<String>>,
}

/// A [`Broker`] on NATS. Cheap to clone; connects on first use and reconnects by
/// itself after the server restarts.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

/// A JetStream stream or consumer name for `text` (letters, digits, `-`, `_`).
pub fn stream_name(topic: &str) -> String {
    let clean: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("RMICRO_{clean}")
}

fn headers_of(message: &Message) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (key, value) in &message.headers {
        headers.insert(key.as_str(), value.as_str());
    }
    headers
}

fn message_of(headers: Option<&async_nats::HeaderMap>, payload: Bytes) -> Message {
    let mut message = Message::new(payload);
    if let Some(headers) = headers {
        for (key, values) in headers.iter() {
            if let Some(value) = values.first() {
                message
                    .headers
                    .insert(key.to_string(), value.as_str().to_owned());
            }
        }
    }
    message
}

impl NatsBroker {
    /// A JetStream broker for the server(s) at `address` (`nats://host:4222`,
    /// comma-separated for a cluster).
    pub fn jetstream(address: &str) -> Self {
        Self::new(address, Mode::JetStream)
    }

    /// A core-NATS broker (at-most-once).
    pub fn core(address: &str) -> Self {
        Self::new(address, Mode::Core)
    }

    fn new(address: &str, mode: Mode) -> Self {
        Self::with(address, mode, Duration::from_secs(30))
    }

    fn with(address: &str, mode: Mode, ack_wait: Duration) -> Self {
        NatsBroker {
            inner: Arc::new(Inner {
                address: address.to_owned(),
                mode,
                ack_wait,
                client: OnceCell::new(),
                jetstream: OnceCell::new(),
                streams: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// How long JetStream waits for an ack before redelivering (default 30 s);
    /// bounds how long a dead subscriber's messages wait.
    pub fn with_ack_wait(self, ack_wait: Duration) -> Self {
        Self::with(&self.inner.address, self.inner.mode, ack_wait)
    }

    fn failed(&self, operation: impl Into<String>, detail: impl std::fmt::Display) -> BrokerError {
        BrokerError::backend(self.describe(), operation, redact_str(&detail.to_string()))
    }

    async fn client(&self) -> Result<async_nats::Client, BrokerError> {
        let client = init_once(&self.inner.client, || async {
            let parsed = BrokerAddress::parse(&self.inner.address, "nats", 4222)?;
            let servers: Vec<async_nats::ServerAddr> = parsed
                .urls()
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| self.failed("parse the address", e))?;
            async_nats::ConnectOptions::new()
                .name("rmicro")
                .connection_timeout(Duration::from_secs(5))
                .connect(servers)
                .await
                .map_err(|e| self.failed("connect", e))
        })
        .await?;
        Ok(client.clone())
    }

    /// The JetStream context, made once (making one starts a task).
    async fn jetstream_context(&self) -> Result<&jetstream::Context, BrokerError> {
        init_once(&self.inner.jetstream, || async {
            Ok(jetstream::new(self.client().await?))
        })
        .await
    }

    /// Creates `topic`'s stream unless this broker already did.
    async fn ensure_stream(&self, topic: &str) -> Result<jetstream::stream::Stream, BrokerError> {
        if topic.contains(['*', '>', ' ']) || topic.is_empty() {
            return Err(BrokerError::BadName {
                broker: self.describe(),
                what: "topic",
                name: topic.to_owned(),
                detail: "use a plain subject without wildcards or spaces".into(),
            });
        }
        let js = self.jetstream_context().await?;
        let name = stream_name(topic);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![topic.to_owned()],
                storage: jetstream::stream::StorageType::File,
                max_age: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| self.failed(format!("create stream {name}"), e))?;
        rmicro::sync::lock(&self.inner.streams).insert(topic.to_owned());
        Ok(stream)
    }

    async fn publish_jetstream(&self, topic: &str, message: Message) -> Result<(), BrokerError> {
        let known = rmicro::sync::lock(&self.inner.streams).contains(topic);
        if !known {
            // Boxed: creating a stream is a large future, and inline it would make
            // every publish allocate and move it.
            Box::pin(self.ensure_stream(topic)).await?;
        }
        let js = self.jetstream_context().await?;
        let sent = if message.headers.is_empty() {
            js.publish(topic.to_owned(), message.body).await
        } else {
            js.publish_with_headers(topic.to_owned(), headers_of(&message), message.body)
                .await
        };
        let ack = sent.map_err(|e| self.failed(format!("publish to {topic}"), e))?;
        ack.await
            .map_err(|e| self.failed(format!("confirm a publish to {topic}"), e))?;
        Ok(())
    }

    async fn subscribe_jetstream(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> Result<Subscriber, BrokerError> {
        options.require_queue_if_durable(&self.describe(), "the JetStream consumer")?;
        let stream = self.ensure_stream(topic).await?;
        let durable = options.queue.as_deref().map(stream_name);
        let config = pull::Config {
            durable_name: durable.clone(),
            filter_subject: topic.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.inner.ack_wait,
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            // JetStream's default window; more in flight than handlers keeps them busy.
            max_ack_pending: i64::try_from((options.concurrency.max(1) * 4).max(1000))
                .unwrap_or(1000),
            inactive_threshold: if durable.is_some() {
                Duration::ZERO
            } else {
                Duration::from_secs(300)
            },
            ..Default::default()
        };
        let consumer: jetstream::consumer::Consumer<pull::Config> = match &durable {
            Some(name) => stream.get_or_create_consumer(name, config).await,
            None => stream.create_consumer(config).await,
        }
        .map_err(|e| self.failed(format!("create a consumer on {topic}"), e))?;
        let consumer_name = consumer.cached_info().name.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let handling = Arc::new(Handling {
            broker: self.clone(),
            topic: topic.to_owned(),
            handler,
            options: options.clone(),
        });
        let task = tokio::spawn(consume(handling, consumer, stop.clone()));
        let me = self.clone();
        let ephemeral = durable.is_none();
        Ok(Subscriber::new(topic, options, move || async move {
            stop.notify_one();
            let _ = task.await;
            if ephemeral {
                let _ = stream.delete_consumer(&consumer_name).await;
            }
            drop(me);
        }))
    }

    async fn subscribe_core(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> Result<Subscriber, BrokerError> {
        let client = self.client().await?;
        let subscription = match &options.queue {
            Some(queue) => {
                client
                    .queue_subscribe(topic.to_owned(), queue.clone())
                    .await
            }
            None => client.subscribe(topic.to_owned()).await,
        }
        .map_err(|e| self.failed(format!("subscribe to {topic}"), e))?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let handling = Arc::new(Handling {
            broker: self.clone(),
            topic: topic.to_owned(),
            handler,
            options: options.clone(),
        });
        let task = tokio::spawn(consume_core(handling, subscription, stop.clone()));
        Ok(Subscriber::new(topic, options, move || async move {
            stop.notify_one();
            let _ = task.await;
        }))
    }

    /// Deletes `topic`'s JetStream stream and every message in it (an admin
    /// operation, e.g. for tests); `Ok` if it did not exist.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), BrokerError> {
        let js = self.jetstream_context().await?;
        let name = stream_name(topic);
        match js.delete_stream(&name).await {
            Ok(_) => {}
            Err(err) if err.to_string().contains("not found") => {}
            Err(err) => return Err(self.failed(format!("delete stream {name}"), err)),
        }
        rmicro::sync::lock(&self.inner.streams).remove(topic);
        Ok(())
    }

    /// Publishes a dead letter; true once it is safely stored.
    async fn dead_letter(&self, topic: &str, dead: Message) -> bool {
        match self.publish(&dead_letter_topic(topic), dead).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%topic, error = %err, "cannot publish a dead letter; the message stays pending");
                false
            }
        }
    }
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The address without its password: credentials never reach a log.
        f.debug_struct("NatsBroker")
            .field("address", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Broker for NatsBroker {
    fn describe(&self) -> String {
        let mode = match self.inner.mode {
            Mode::JetStream => "jetstream",
            Mode::Core => "core",
        };
        let shown = match BrokerAddress::parse(&self.inner.address, "nats", 4222) {
            Ok(parsed) => parsed.redacted(),
            Err(_) => redact_str(&self.inner.address),
        };
        format!("nats-{mode}://{}", shown.replace("nats://", ""))
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move { self.client().await.map(drop) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(client) = self.inner.client.get() {
                client.flush().await.map_err(|e| self.failed("flush", e))?;
                client.drain().await.map_err(|e| self.failed("drain", e))?;
            }
            Ok(())
        })
    }

    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            match self.inner.mode {
                Mode::JetStream => self.publish_jetstream(&topic, message).await,
                Mode::Core => {
                    let client = self.client().await?;
                    client
                        .publish_with_headers(topic.clone(), headers_of(&message), message.body)
                        .await
                        .map_err(|e| self.failed(format!("publish to {topic}"), e))?;
                    // Core NATS confirms nothing; a flush at least puts it on the wire.
                    client.flush().await.map_err(|e| self.failed("flush", e))
                }
            }
        })
    }

    fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscriber, BrokerError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            match self.inner.mode {
                Mode::JetStream => self.subscribe_jetstream(&topic, handler, options).await,
                Mode::Core => self.subscribe_core(&topic, handler, options).await,
            }
        })
    }
}

/// Builds a broker from `--broker-address`:
/// `[nats://][user:pass@|token@]host[:4222][,nats://…][?ack_wait=30s]` (a bare
/// `host:port` works; see [`rmicro::broker::BrokerAddress`]).
pub fn from_address(address: Option<&str>, mode: Mode) -> Result<NatsBroker, BrokerError> {
    let mut parsed = BrokerAddress::parse(address.unwrap_or(DEFAULT_ADDRESS), "nats", 4222)?;
    let ack_wait = match parsed.take("ack_wait") {
        Some(value) => {
            rmicro::cmd::parse_duration(&value).map_err(|e| parsed.error("read the address", e))?
        }
        None => Duration::from_secs(30),
    };
    parsed.finish("ack_wait=DURATION")?;
    Ok(NatsBroker::with(&parsed.url(), mode, ack_wait))
}

/// `--broker nats` (JetStream) in any binary this crate is linked into; the address
/// defaults to [`DEFAULT_ADDRESS`] (see [`from_address`]).
#[linkme::distributed_slice(rmicro::broker::BROKERS)]
static JETSTREAM: (&str, rmicro::broker::Factory) = ("nats", |address| {
    Ok(Arc::new(from_address(address, Mode::JetStream)?))
});

/// `--broker nats-core` (core NATS, at-most-once).
#[linkme::distributed_slice(rmicro::broker::BROKERS)]
static CORE: (&str, rmicro::broker::Factory) = ("nats-core", |address| {
    Ok(Arc::new(from_address(address, Mode::Core)?))
});

#[cfg(test)]
mod tests {
    use super::consume::delivered;

    #[test]
    fn the_delivery_count_comes_from_either_reply_subject_form() {
        // <stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp>.<pending>
        assert_eq!(
            delivered(Some(
                "$JS.ACK.RMICRO_orders.workers.3.120.118.1700000000000000000.5"
            )),
            3
        );
        // <domain>.<account hash>.<stream>.<consumer>.<delivered>.… .<random>
        assert_eq!(
            delivered(Some(
                "$JS.ACK.hub.ACCHASH.RMICRO_orders.workers.7.120.118.1700000000000000000.5.xyz"
            )),
            7
        );
        assert_eq!(delivered(Some("_INBOX.abc")), 1);
        assert_eq!(delivered(Some("$JS.ACK.s.c.notanumber.1.1.1.0")), 1);
        assert_eq!(delivered(None), 1);
    }
}
