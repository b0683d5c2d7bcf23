//! RabbitMQ for rmicro: a [`Broker`] on a topic exchange with publisher confirms.
//!
//! Every topic is a routing key on the durable topic exchange `rmicro` (override
//! with `?exchange=` in the address). `publish` sends persistent messages and
//! returns after the broker's confirm. A subscriber without a queue group gets an
//! exclusive, auto-deleted queue bound to the topic (every subscriber sees every
//! message; a failed handler is retried in the subscribing process); a queue group
//! is a durable quorum queue `rmicro.<group>.<topic>` shared by its members (each
//! message to one member): a failed handler NACKs with requeue after a backoff,
//! RabbitMQ counts deliveries (`x-delivery-count`), and a member that dies leaves
//! its unacknowledged messages to the others. After `max_deliveries` a message goes
//! to `<topic>.dlq`. The connection recovers by itself (lapin's auto-recovery).

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod consume;
mod publish;

use consume::Consume;
use futures_util::future::BoxFuture;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use rmicro::broker::{
    Broker, BrokerAddress, BrokerError, Handler, Message, SubscribeOptions, Subscriber, redact_str,
};
use rmicro::transport::{LINK_TLS_OPTIONS, LinkTls};
use std::sync::Arc;

/// The address used without `--broker-address`.
pub const DEFAULT_ADDRESS: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A broker's TLS: its settings, the rustls configuration made from them once (it
/// follows the files by itself), and what its handshakes saw.
struct Tls {
    settings: LinkTls,
    config: Arc<rustls::ClientConfig>,
    handshakes: rmicro::transport::Handshakes,
}

struct Inner {
    /// TLS settings (`amqps://` or the `tls_*` options) and the rustls
    /// configuration made from them once (it follows the files by itself).
    tls: Option<Tls>,
    /// The URI to connect with, credentials included: never shown.
    uri: String,
    /// The URI without its password, for `describe()` and errors.
    shown: String,
    exchange: String,
    /// The connection and the publishing channel (in confirm mode).
    link: tokio::sync::Mutex<Option<(Arc<Connection>, Channel)>>,
}

/// A [`Broker`] on RabbitMQ. Cheap to clone; connects on first use.
#[derive(Clone)]
pub struct RabbitBroker {
    inner: Arc<Inner>,
}

fn text_of(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The message and the delivery count RabbitMQ reports (`x-delivery-count`, set by
/// quorum queues on redeliveries).
fn message_of(delivery: &lapin::message::Delivery) -> (Message, Option<u32>) {
    let mut message = Message::new(delivery.data.clone());
    let mut count = None;
    if let Some(headers) = delivery.properties.headers() {
        for (key, value) in headers {
            if key.as_str() == "x-delivery-count" {
                count = text_of(value).and_then(|t| t.parse().ok());
            } else if let Some(text) = text_of(value) {
                message.headers.insert(key.as_str().to_owned(), text);
            }
        }
    }
    (message, count)
}

impl RabbitBroker {
    /// A broker for `address`:
    /// `[amqp://|amqps://][user:pass@]host[:5672|:5671][/vhost][?exchange=name]` (a
    /// bare `host:port` works; see [`rmicro::broker::BrokerAddress`]). TLS:
    /// `amqps://` and the options `tls_ca=FILE`, `tls_cert=FILE`, `tls_key=FILE`,
    /// `tls_server_name=NAME` ([`LinkTls::from_options`]).
    pub fn new(address: &str) -> Result<Self, BrokerError> {
        let secure = address.trim_start().starts_with("amqps://");
        let mut parsed = BrokerAddress::parse(address, "amqp", if secure { 5671 } else { 5672 })?;
        let exchange = parsed
            .take("exchange")
            .unwrap_or_else(|| "rmicro".to_owned());
        if exchange.is_empty() {
            return Err(parsed.error("read the address", "`exchange=` needs a name"));
        }
        let tls = LinkTls::from_options(|key| parsed.take(key))
            .map_err(|e| parsed.error("read the address", e))?;
        let tls = match (tls, secure) {
            (Some(tls), _) => Some(tls),
            (None, true) => Some(LinkTls::new()),
            (None, false) => None,
        };
        parsed.finish(&format!("exchange=NAME, {LINK_TLS_OPTIONS}"))?;
        let tls = match tls {
            Some(tls) => {
                let (config, handshakes) = tls
                    .observed_client_config(&[])
                    .map_err(|e| parsed.error("read the TLS files", e))?;
                Some(Tls {
                    settings: tls,
                    config: Arc::new(config),
                    handshakes,
                })
            }
            None => None,
        };
        Ok(RabbitBroker {
            inner: Arc::new(Inner {
                tls,
                uri: parsed.url(),
                shown: parsed.redacted(),
                exchange,
                link: tokio::sync::Mutex::new(None),
            }),
        })
    }

    fn failed(&self, operation: impl Into<String>, detail: impl std::fmt::Display) -> BrokerError {
        BrokerError::backend(self.describe(), operation, redact_str(&detail.to_string()))
    }

    /// Opens a channel on the (shared) connection, connecting first if needed.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let connection = self.connection().await?;
        connection
            .create_channel()
            .await
            .map_err(|e| self.failed("open a channel", e))
    }

    async fn connection(&self) -> Result<Arc<Connection>, BrokerError> {
        Ok(self.publishing().await?.0)
    }

    /// Deletes the quorum queue of `queue` on `topic` (an admin operation, e.g. for tests).
    pub async fn delete_queue(&self, topic: &str, queue: &str) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        channel
            .queue_delete(
                queue_name(queue, topic).as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await
            .map(drop)
            .map_err(|e| self.failed("delete a queue", e))
    }
}

/// The durable queue of group `queue` on `topic`.
pub fn queue_name(queue: &str, topic: &str) -> String {
    format!("rmicro.{queue}.{topic}")
}

impl std::fmt::Debug for RabbitBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The address without its password: credentials never reach a log.
        f.debug_struct("RabbitBroker")
            .field("address", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Broker for RabbitBroker {
    fn describe(&self) -> String {
        self.inner.shown.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move { self.publishing().await.map(drop) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some((connection, _)) = self.inner.link.lock().await.take() {
                connection
                    .close(200, "bye".into())
                    .await
                    .map_err(|e| self.failed("close", e))?;
            }
            Ok(())
        })
    }

    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            match self.publish_once(&topic, &message).await {
                Ok(()) => Ok(()),
                Err(err) => {
                    // The connection may be gone for good; the next call reconnects.
                    self.forget_connection().await;
                    Err(err)
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
            options.require_queue_if_durable(&self.describe(), "the durable queue")?;
            // Declares the exchange too.
            self.publishing().await?;
            let channel = self.channel().await?;
            let prefetch = u16::try_from(options.concurrency.max(1)).unwrap_or(u16::MAX);
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| self.failed("set the prefetch", e))?;
            let (name, declare, arguments) = match &options.queue {
                Some(queue) => {
                    let mut arguments = FieldTable::default();
                    arguments.insert(
                        "x-queue-type".into(),
                        AMQPValue::LongString("quorum".into()),
                    );
                    (
                        queue_name(queue, &topic),
                        QueueDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        arguments,
                    )
                }
                None => (
                    String::new(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                ),
            };
            let queue = channel
                .queue_declare(name.as_str().into(), declare, arguments)
                .await
                .map_err(|e| self.failed(format!("declare queue for {topic}"), e))?;
            channel
                .queue_bind(
                    queue.name().clone(),
                    self.inner.exchange.as_str().into(),
                    topic.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.failed(format!("bind to {topic}"), e))?;
            let tag = format!("rmicro-{}", uuid::Uuid::new_v4());
            let consumer = channel
                .basic_consume(
                    queue.name().clone(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.failed(format!("consume from {topic}"), e))?;
            let stop = Arc::new(tokio::sync::Notify::new());
            let consume = Consume {
                broker: self.clone(),
                channel: channel.clone(),
                consumer,
                topic: topic.clone(),
                handler,
                options: options.clone(),
                shared: options.queue.is_some(),
            };
            let task = tokio::spawn(consume.run(stop.clone()));
            Ok(Subscriber::new(topic, options, move || async move {
                let _ = channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
                stop.notify_one();
                let _ = task.await;
                let _ = channel.close(200, "unsubscribed".into()).await;
            }))
        })
    }
}

/// `--broker rabbitmq` in any binary this crate is linked into; the address defaults
/// to [`DEFAULT_ADDRESS`].
#[linkme::distributed_slice(rmicro::broker::BROKERS)]
static BROKER: (&str, rmicro::broker::Factory) = ("rabbitmq", |address| {
    Ok(Arc::new(RabbitBroker::new(
        address.unwrap_or(DEFAULT_ADDRESS),
    )?))
});

#[cfg(any(test, feature = "testing"))]
pub mod testing;
