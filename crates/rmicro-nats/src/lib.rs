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

mod address;
mod consume;
mod publish;

pub use address::{DEFAULT_ADDRESS, from_address};
pub use publish::stream_name;

use async_nats::jetstream::{self, consumer::pull};
use consume::{Handling, consume, consume_core};
use futures_util::future::BoxFuture;
use rmicro::broker::{
    Broker, BrokerAddress, BrokerError, Handler, Message, SubscribeOptions, Subscriber, init_once,
    redact_str,
};
use rmicro::transport::LinkTls;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Which NATS delivery model a [`NatsBroker`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// JetStream: persisted, acknowledged, at-least-once.
    JetStream,
    /// Core NATS: in memory, at-most-once.
    Core,
}

/// How a [`NatsBroker`] connects: what `from_address` and the `with_*` methods set.
#[derive(Clone)]
struct Settings {
    address: String,
    mode: Mode,
    ack_wait: Duration,
    tls: Option<LinkTls>,
    credentials: Option<PathBuf>,
}

struct Inner {
    settings: Settings,
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
        Self::with(Settings {
            address: address.to_owned(),
            mode,
            ack_wait: Duration::from_secs(30),
            tls: None,
            credentials: None,
        })
    }

    fn with(settings: Settings) -> Self {
        NatsBroker {
            inner: Arc::new(Inner {
                settings,
                client: OnceCell::new(),
                jetstream: OnceCell::new(),
                streams: Mutex::new(HashSet::new()),
            }),
        }
    }

    fn changed(&self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.inner.settings.clone();
        change(&mut settings);
        Self::with(settings)
    }

    /// How long JetStream waits for an ack before redelivering (default 30 s);
    /// bounds how long a dead subscriber's messages wait.
    pub fn with_ack_wait(self, ack_wait: Duration) -> Self {
        self.changed(|s| s.ack_wait = ack_wait)
    }

    /// Speaks TLS to the servers (required, whatever the URL scheme), trusting the
    /// CA and presenting the client certificate `tls` names; the files are read
    /// again when they change, for the next (re)connection.
    pub fn with_tls(self, tls: LinkTls) -> Self {
        self.changed(|s| s.tls = Some(tls))
    }

    /// Authenticates with a NATS credentials file (a user JWT and its NKey seed, as
    /// `nsc` writes them), read when connecting.
    pub fn with_credentials_file(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.changed(|s| s.credentials = Some(path))
    }

    fn failed(&self, operation: impl Into<String>, detail: impl std::fmt::Display) -> BrokerError {
        BrokerError::backend(self.describe(), operation, redact_str(&detail.to_string()))
    }

    /// A failed connection, with the TLS cause in a sentence when there is one.
    fn connect_failed(&self, err: &(dyn std::error::Error + 'static)) -> BrokerError {
        let tls = self.inner.settings.tls.as_ref();
        self.failed("connect", rmicro::transport::link_failure(tls, err))
    }

    async fn client(&self) -> Result<async_nats::Client, BrokerError> {
        let client = init_once(&self.inner.client, || async {
            let settings = &self.inner.settings;
            let parsed = BrokerAddress::parse(&settings.address, "nats", 4222)?;
            // async-nats ignores credentials in server URLs: they are given apart,
            // and kept out of the URLs it dials and logs.
            let servers: Vec<async_nats::ServerAddr> = parsed
                .without_credentials()
                .urls()
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| self.failed("parse the address", e))?;
            let mut options = async_nats::ConnectOptions::new()
                .name("rmicro")
                .connection_timeout(Duration::from_secs(5));
            match (parsed.user(), parsed.password()) {
                (Some(user), Some(password)) => {
                    options = options.user_and_password(user.to_owned(), password.to_owned());
                }
                (Some(token), None) => options = options.token(token.to_owned()),
                (None, _) => {}
            }
            if let Some(tls) = &settings.tls {
                let config = tls
                    .client_config(&[])
                    .map_err(|e| self.failed("read the TLS files", e))?;
                options = options.require_tls(true).tls_client_config(config);
            }
            if let Some(path) = &settings.credentials {
                options = options.credentials_file(path).await.map_err(|e| {
                    self.failed(
                        "read the credentials file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
            }
            options
                .connect(servers)
                .await
                .map_err(|e| self.connect_failed(&e))
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
            ack_wait: self.inner.settings.ack_wait,
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
        let mode = match self.inner.settings.mode {
            Mode::JetStream => "jetstream",
            Mode::Core => "core",
        };
        let shown = match BrokerAddress::parse(&self.inner.settings.address, "nats", 4222) {
            Ok(parsed) => parsed.redacted(),
            Err(_) => redact_str(&self.inner.settings.address),
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
            match self.inner.settings.mode {
                Mode::JetStream => self.publish_jetstream(&topic, message).await,
                Mode::Core => self.publish_core(&topic, message).await,
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
            match self.inner.settings.mode {
                Mode::JetStream => self.subscribe_jetstream(&topic, handler, options).await,
                Mode::Core => self.subscribe_core(&topic, handler, options).await,
            }
        })
    }
}

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
