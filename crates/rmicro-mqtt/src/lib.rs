//! MQTT for rmicro: a [`Broker`] on MQTT 5 (Mosquitto, EMQX, HiveMQ, …).
//!
//! Messages go at QoS 1 with the headers as MQTT 5 user properties; `publish`
//! returns after the server's PUBACK. A subscriber without a queue group subscribes
//! to the topic; a queue group is an MQTT 5 shared subscription
//! `$share/<group>/<topic>` (each message to one member). Subscribers acknowledge
//! manually, after the handler: a failed handler is retried in the subscribing
//! process (MQTT has no negative acknowledgement) and after `max_deliveries` the
//! message goes to `<topic>.dlq`. Queue-group and durable subscribers use
//! persistent sessions (`clean_start = false`, one hour): what the server sent but
//! never got acknowledged is sent again when the same client id connects again —
//! give each member a stable id with `?client_id=` in the address.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod consume;
mod publish;

use consume::{Subscription, subscribe_events};
use futures_util::future::BoxFuture;
use rmicro::broker::{
    Broker, BrokerAddress, BrokerError, Handler, Message, SubscribeOptions, Subscriber, redact_str,
};
use rmicro::transport::{LINK_TLS_OPTIONS, LinkTls};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The address used without `--broker-address`.
pub const DEFAULT_ADDRESS: &str = "mqtt://127.0.0.1:1883";

struct Inner {
    host: String,
    port: u16,
    /// User and password, when the address has them: never shown.
    credentials: Option<(String, String)>,
    /// TLS settings (`mqtts://`, `ssl://` or the `tls_*` options) and the rustls
    /// configuration made from them once (it follows the files by itself).
    tls: Option<(LinkTls, Arc<rustls::ClientConfig>)>,
    /// The address without its password, for `describe()` and errors.
    shown: String,
    client_id: String,
    publisher: OnceCell<publish::Publisher>,
    subscriptions: std::sync::atomic::AtomicU32,
}

/// A [`Broker`] on MQTT 5. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct MqttBroker {
    inner: Arc<Inner>,
}

fn message_of(publish: &Publish) -> Message {
    let mut message = Message::new(publish.payload.clone());
    if let Some(properties) = &publish.properties {
        for (key, value) in &properties.user_properties {
            message.headers.insert(key.clone(), value.clone());
        }
        if let Some(kind) = &properties.content_type {
            message
                .headers
                .entry(rmicro::broker::CONTENT_TYPE.into())
                .or_insert_with(|| kind.clone());
        }
    }
    message
}

impl MqttBroker {
    /// A broker for `address`: `[mqtt://|mqtts://][user:pass@]host[:1883|:8883][?client_id=ID]`
    /// (a bare `host:port` works; see [`rmicro::broker::BrokerAddress`]). TLS:
    /// `mqtts://` (or `ssl://`) and the options `tls_ca=FILE`, `tls_cert=FILE`,
    /// `tls_key=FILE`, `tls_server_name=NAME` ([`LinkTls::from_options`]).
    pub fn new(address: &str) -> Result<Self, BrokerError> {
        let secure = ["mqtts://", "ssl://"]
            .iter()
            .any(|scheme| address.trim_start().starts_with(scheme));
        let default_port = if secure { 8883 } else { 1883 };
        let mut parsed = BrokerAddress::parse(address, "mqtt", default_port)?;
        let client_id = match parsed.take("client_id") {
            Some(id) if id.is_empty() => {
                return Err(parsed.error("read the address", "`client_id=` needs an id"));
            }
            Some(id) => id,
            None => format!("rmicro-{}", uuid::Uuid::new_v4().simple()),
        };
        let tls = LinkTls::from_options(|key| parsed.take(key))
            .map_err(|e| parsed.error("read the address", e))?;
        let tls = match (tls, parsed.scheme()) {
            (Some(tls), _) => Some(tls),
            (None, "mqtts" | "ssl") => Some(LinkTls::new()),
            (None, _) => None,
        };
        parsed.finish(&format!("client_id=ID, {LINK_TLS_OPTIONS}"))?;
        let tls = match tls {
            Some(tls) => {
                let config = tls
                    .client_config(&[])
                    .map_err(|e| parsed.error("read the TLS files", e))?;
                Some((tls, Arc::new(config)))
            }
            None => None,
        };
        let [(host, port)] = parsed.hosts() else {
            return Err(parsed.error("read the address", "MQTT takes one server"));
        };
        let credentials = parsed.user().map(|user| {
            (
                user.to_owned(),
                parsed.password().unwrap_or_default().to_owned(),
            )
        });
        Ok(MqttBroker {
            inner: Arc::new(Inner {
                host: host.clone(),
                port: *port,
                credentials,
                tls,
                shown: parsed.redacted(),
                client_id,
                publisher: OnceCell::new(),
                subscriptions: std::sync::atomic::AtomicU32::new(0),
            }),
        })
    }

    fn failed(&self, operation: impl Into<String>, detail: impl std::fmt::Display) -> BrokerError {
        BrokerError::backend(self.describe(), operation, redact_str(&detail.to_string()))
    }

    /// A failed connection, with the TLS cause in a sentence when there is one.
    fn connect_failed(&self, err: &(dyn std::error::Error + 'static)) -> BrokerError {
        let tls = self.inner.tls.as_ref().map(|(tls, _)| tls);
        self.failed("connect", rmicro::transport::link_failure(tls, err))
    }

    fn options(&self, client_id: String, persistent: bool) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.inner.host.clone(), self.inner.port);
        if let Some((user, password)) = &self.inner.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some((_, config)) = &self.inner.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                config.clone(),
            )));
        }
        options.set_keep_alive(Duration::from_secs(10));
        options.set_clean_start(!persistent);
        if persistent {
            options.set_session_expiry_interval(Some(3600));
        }
        options
    }
}

impl std::fmt::Debug for MqttBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The address without its password: credentials never reach a log.
        f.debug_struct("MqttBroker")
            .field("address", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Broker for MqttBroker {
    fn describe(&self) -> String {
        self.inner.shown.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move { self.publisher().await.map(drop) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if let Some(publisher) = self.inner.publisher.get() {
                publisher
                    .client
                    .disconnect()
                    .await
                    .map_err(|e| self.failed("disconnect", e))?;
            }
            Ok(())
        })
    }

    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.publish_message(&topic, message).await })
    }

    fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscriber, BrokerError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            if topic.contains(['+', '#']) || topic.is_empty() {
                return Err(BrokerError::BadName {
                    broker: self.describe(),
                    what: "topic",
                    name: topic,
                    detail: "use a plain topic without MQTT wildcards".into(),
                });
            }
            let n = self
                .inner
                .subscriptions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let persistent = options.queue.is_some() || options.durable;
            let mut mqtt = self.options(format!("{}-sub{n}", self.inner.client_id), persistent);
            mqtt.set_manual_acks(true);
            let (client, mut events) = AsyncClient::new(mqtt, 256);
            let filter = match &options.queue {
                Some(queue) => format!("$share/{queue}/{topic}"),
                None => topic.clone(),
            };
            // Connect and subscribe before returning, so no message published after
            // this returns is missed.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            client
                .subscribe(filter.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| self.failed(format!("subscribe to {topic}"), e))?;
            // A resumed session may get its unacknowledged messages before the SUBACK.
            let mut early = Vec::new();
            loop {
                match tokio::time::timeout_at(deadline, events.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
                    Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => early.push(publish),
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Err(self.failed(format!("subscribe to {topic}"), err)),
                    Err(_) => {
                        return Err(
                            self.failed(format!("subscribe to {topic}"), "no SUBACK within 5 s")
                        );
                    }
                }
            }
            let stop = Arc::new(tokio::sync::Notify::new());
            let subscription = Subscription {
                broker: self.clone(),
                client,
                filter,
                topic: topic.clone(),
                handler,
                options: options.clone(),
            };
            let task = tokio::spawn(subscribe_events(subscription, events, early, stop.clone()));
            Ok(Subscriber::new(topic, options, move || async move {
                stop.notify_one();
                let _ = task.await;
            }))
        })
    }
}

/// `--broker mqtt` in any binary this crate is linked into; the address defaults
/// to [`DEFAULT_ADDRESS`].
#[linkme::distributed_slice(rmicro::broker::BROKERS)]
static BROKER: (&str, rmicro::broker::Factory) = ("mqtt", |address| {
    Ok(Arc::new(MqttBroker::new(
        address.unwrap_or(DEFAULT_ADDRESS),
    )?))
});

#[cfg(any(test, feature = "testing"))]
pub mod testing;
