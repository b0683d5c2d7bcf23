//! Redis Streams for rmicro: a [`Broker`] with consumer groups and
//! acknowledgements (at-least-once).
//!
//! A topic is a stream; `publish` is `XADD` (the body in field `body`, each header
//! in a field `h:<name>`) and returns with the entry's id. A subscriber without a
//! queue group reads through a consumer group of its own (every subscriber sees
//! every new message; the group is destroyed on unsubscribe); a queue group is a
//! consumer group of that name whose members are consumers (each message to one
//! member). Reading is `XREADGROUP`; a handled message is `XACK`ed; a failed one
//! stays pending and is claimed again (`XCLAIM`, which counts deliveries) after a
//! backoff; a member that dies leaves its messages pending, and the others take
//! them over with `XAUTOCLAIM` once idle for the ack wait (30 s, `?ack_wait=` in the
//! address). After `max_deliveries` a message goes to `<topic>.dlq`.
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always` a
//! confirmed `XADD` survives a restart; without persistence it does not.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod consume;

use consume::{Reader, acknowledge, consume};
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rmicro::broker::{
    Broker, BrokerAddress, BrokerError, Handler, Message, SubscribeOptions, Subscriber, redact_str,
};
use rmicro::transport::{LINK_TLS_OPTIONS, LinkTls};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The address used without `--broker-address`.
pub const DEFAULT_ADDRESS: &str = "redis://127.0.0.1:6379";

const BODY: &str = "body";
const HEADER_PREFIX: &str = "h:";

/// The client new connections are made with, and the TLS files it was built from.
struct Current {
    client: redis::Client,
    stamp: Option<rmicro::transport::TlsFilesStamp>,
    /// Counts rebuilds: a connection of an older generation is replaced.
    generation: u64,
    /// When the files were last looked at.
    checked: std::time::Instant,
}

/// A redis-rs client for `url`, with the certificates of `tls` read now (redis-rs
/// takes them as bytes).
fn build_client(url: &str, tls: Option<&LinkTls>) -> Result<redis::Client, String> {
    let Some(tls) = tls else {
        return redis::Client::open(url).map_err(|e| e.to_string());
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read TLS file {}: {e}", path.display()))
    };
    let certificates = redis::TlsCertificates {
        client_tls: match tls.identity_files() {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            None => None,
        },
        root_cert: tls.ca_file().map(read).transpose()?,
    };
    redis::Client::build_with_tls(url, certificates).map_err(|e| e.to_string())
}

struct Inner {
    /// The address without its password, for `describe()` and errors.
    address: String,
    /// The URL to connect with, credentials included: never shown.
    url: String,
    current: std::sync::Mutex<Current>,
    /// TLS settings, for explaining failed handshakes.
    tls: Option<LinkTls>,
    ack_wait: Duration,
    /// The shared connection and the client generation it was made with.
    shared: std::sync::Mutex<Option<(u64, ConnectionManager)>>,
}

/// A [`Broker`] on Redis Streams. Cheap to clone; reconnects by itself.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

fn field_bytes(value: redis::Value) -> Option<Vec<u8>> {
    match value {
        redis::Value::BulkString(bytes) => Some(bytes),
        redis::Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// Reads a stream entry's fields back into a message (moving, not copying, them).
fn message_of(fields: HashMap<String, redis::Value>) -> Message {
    let mut message = Message::default();
    for (field, value) in fields {
        if field == BODY {
            message.body = field_bytes(value).unwrap_or_default().into();
        } else if let Some(name) = field.strip_prefix(HEADER_PREFIX)
            && let Some(bytes) = field_bytes(value)
        {
            let value = String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            message.headers.insert(name.to_owned(), value);
        }
    }
    message
}

impl RedisBroker {
    /// A broker for the Redis at `address`:
    /// `[redis://|rediss://][user:pass@]host[:6379][/db][?ack_wait=30s]` (a bare
    /// `host:port` works; see [`rmicro::broker::BrokerAddress`]); `user` is an ACL
    /// user, a password alone is `:pass@`. TLS: `rediss://` or the options
    /// `tls_ca=FILE`, `tls_cert=FILE`, `tls_key=FILE` ([`LinkTls::from_options`]),
    /// read when the broker is made and again when they change (redis-rs takes
    /// certificates as bytes: the broker makes a new client then, and replaces its
    /// connections by new ones; calls in flight finish on the old).
    pub fn new(address: &str) -> Result<Self, BrokerError> {
        let mut parsed = BrokerAddress::parse(address, "redis", 6379)?;
        let ack_wait = match parsed.take("ack_wait") {
            Some(value) => rmicro::cmd::parse_duration(&value)
                .map_err(|e| parsed.error("read the address", e))?,
            None => Duration::from_secs(30),
        };
        let tls = LinkTls::from_options(|key| parsed.take(key))
            .map_err(|e| parsed.error("read the address", e))?;
        parsed.finish(&format!("ack_wait=DURATION, {LINK_TLS_OPTIONS}"))?;
        if tls.as_ref().is_some_and(|tls| tls.server_name().is_some()) {
            return Err(parsed.error(
                "read the address",
                "Redis verifies the host of the address: dial the name in the server's \
                 certificate instead of giving tls_server_name",
            ));
        }
        let mut url = parsed.url();
        // TLS options on a `redis://` address mean TLS: `rediss://`.
        if tls.is_some()
            && let Some(rest) = url.strip_prefix("redis://")
        {
            url = format!("rediss://{rest}");
        }
        let client =
            build_client(&url, tls.as_ref()).map_err(|e| parsed.error("read the address", e))?;
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                address: parsed.redacted(),
                current: std::sync::Mutex::new(Current {
                    client,
                    stamp: tls.as_ref().map(LinkTls::files_stamp),
                    generation: 0,
                    checked: std::time::Instant::now(),
                }),
                url,
                tls,
                ack_wait,
                shared: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The client for new connections and its generation: rebuilt (the next
    /// generation) when the TLS files changed, looked at most every
    /// [`ServerTls::reload_every`](rmicro::transport::ServerTls::reload_every).
    fn current(&self) -> (redis::Client, u64) {
        let mut current = rmicro::sync::lock(&self.inner.current);
        if let Some(tls) = &self.inner.tls
            && current.checked.elapsed() >= rmicro::transport::ServerTls::reload_every()
        {
            current.checked = std::time::Instant::now();
            let stamp = tls.files_stamp();
            if current.stamp.as_ref() != Some(&stamp) {
                current.stamp = Some(stamp);
                match build_client(&self.inner.url, Some(tls)) {
                    Ok(client) => {
                        current.client = client;
                        current.generation += 1;
                        tracing::info!(broker = %self.inner.address, "TLS files reloaded: new connections use them");
                    }
                    Err(err) => tracing::warn!(
                        broker = %self.inner.address,
                        error = %err,
                        "TLS files changed but cannot be used ({err}); still using the previous ones"
                    ),
                }
            }
        }
        (current.client.clone(), current.generation)
    }

    /// The generation of [`RedisBroker::current`]'s client: connections of an
    /// older one are replaced.
    fn generation(&self) -> u64 {
        self.current().1
    }

    fn failed(&self, operation: impl Into<String>, detail: impl std::fmt::Display) -> BrokerError {
        BrokerError::backend(self.describe(), operation, redact_str(&detail.to_string()))
    }

    /// A connection manager; `block` ones have no response timeout (for `BLOCK`).
    async fn manager(&self, block: bool) -> Result<(ConnectionManager, u64), BrokerError> {
        let (client, generation) = self.current();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2)
            .set_response_timeout(if block {
                None
            } else {
                Some(Duration::from_secs(5))
            });
        let manager = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| {
                let tls = self.inner.tls.as_ref();
                self.failed("connect", rmicro::transport::link_failure(tls, &e))
            })?;
        Ok((manager, generation))
    }

    /// The shared connection (for publishing and acknowledging), made again when
    /// the TLS files changed; calls already on the old one finish on it.
    async fn shared(&self) -> Result<ConnectionManager, BrokerError> {
        let generation = self.generation();
        if let Some((made, manager)) = rmicro::sync::lock(&self.inner.shared).as_ref()
            && *made == generation
        {
            return Ok(manager.clone());
        }
        let (manager, made) = self.manager(false).await?;
        *rmicro::sync::lock(&self.inner.shared) = Some((made, manager.clone()));
        Ok(manager)
    }

    /// Creates `group` on `topic` (and the stream) unless it exists; new groups start
    /// at new messages.
    async fn ensure_group(
        &self,
        connection: &mut ConnectionManager,
        topic: &str,
        group: &str,
    ) -> Result<(), BrokerError> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(topic)
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(connection)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(err) if err.to_string().contains("BUSYGROUP") => Ok(()),
            Err(err) => Err(self.failed(format!("create group {group} on {topic}"), err)),
        }
    }

    /// Deletes `topic`'s stream (an admin operation, e.g. for tests).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), BrokerError> {
        let mut connection = self.shared().await?;
        redis::cmd("DEL")
            .arg(topic)
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| self.failed(format!("delete {topic}"), e))
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The address without its password: credentials never reach a log.
        f.debug_struct("RedisBroker")
            .field("address", &self.describe())
            .finish_non_exhaustive()
    }
}

impl Broker for RedisBroker {
    fn describe(&self) -> String {
        self.inner.address.clone()
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut connection = self.shared().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
                .map_err(|e| self.failed("ping", e))
        })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let mut connection = self.shared().await?;
            let mut command = redis::cmd("XADD");
            command
                .arg(&topic)
                .arg("*")
                .arg(BODY)
                .arg(message.body.as_ref());
            for (key, value) in &message.headers {
                command.arg(format!("{HEADER_PREFIX}{key}")).arg(value);
            }
            command
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
                .map_err(|e| self.failed(format!("XADD to {topic}"), e))
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
            options.require_queue_if_durable(&self.describe(), "the consumer group")?;
            let ephemeral = options.queue.is_none();
            let id = uuid::Uuid::new_v4();
            let group = options
                .queue
                .clone()
                .unwrap_or_else(|| format!("rmicro-{id}"));
            let mut connection = self.shared().await?;
            self.ensure_group(&mut connection, &topic, &group).await?;
            let (acks, ack_queue) = tokio::sync::mpsc::unbounded_channel();
            let acknowledger = tokio::spawn(acknowledge(
                self.clone(),
                topic.clone(),
                group.clone(),
                ack_queue,
            ));
            let reader = Arc::new(Reader {
                broker: self.clone(),
                topic: topic.clone(),
                group: group.clone(),
                consumer: format!("rmicro-{id}"),
                handler,
                options: options.clone(),
                acks,
            });
            let stop = Arc::new(tokio::sync::Notify::new());
            let stop_handle = stop.clone();
            let task = tokio::spawn(async move {
                consume(reader, stop).await;
                // Every reader clone is gone: send the last acknowledgements.
                let _ = acknowledger.await;
            });
            let stop = stop_handle;
            let (me, stop_topic) = (self.clone(), topic.clone());
            Ok(Subscriber::new(topic, options, move || async move {
                stop.notify_one();
                let _ = task.await;
                if ephemeral && let Ok(mut connection) = me.shared().await {
                    let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
                        .arg("DESTROY")
                        .arg(&stop_topic)
                        .arg(&group)
                        .query_async(&mut connection)
                        .await;
                }
            }))
        })
    }
}

/// `--broker redis` in any binary this crate is linked into; the address defaults
/// to [`DEFAULT_ADDRESS`].
#[linkme::distributed_slice(rmicro::broker::BROKERS)]
static BROKER: (&str, rmicro::broker::Factory) = ("redis", |address| {
    Ok(Arc::new(RedisBroker::new(
        address.unwrap_or(DEFAULT_ADDRESS),
    )?))
});

#[cfg(any(test, feature = "testing"))]
pub mod testing;
