//! The embedded cross-process broker (go-micro's HTTP broker idea): no server to
//! run. Each subscription is a node of the service `rmicro.broker.<topic>` in the
//! registry, at the address of a small HTTP/2 listener in the subscribing process;
//! a publisher looks the topic's subscribers up and delivers to each plain
//! subscriber and to one member of each queue group.

use super::{
    Broker, BrokerError, Handler, Message, SubscribeOptions, Subscriber, dead_letter_topic,
    handle_with_retries,
};
use crate::registry::{Node, Registration, Service, SharedRegistry};
use crate::sync::lock;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The registry name prefix of subscriptions: `rmicro.broker.<topic>`.
pub const SERVICE_PREFIX: &str = "rmicro.broker.";
const PATH: &str = "/rmicro.broker/deliver";
const SUBSCRIBER_HEADER: &str = "x-micro-subscriber";
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// How long a publisher reuses a topic's subscriber list.
const LOOKUP_TTL: Duration = Duration::from_secs(1);

/// A message on the wire between processes.
#[derive(Serialize, Deserialize)]
struct Envelope {
    headers: BTreeMap<String, String>,
    #[serde(with = "body64")]
    body: Vec<u8>,
}

/// A message as the HTTP broker sends it to another process.
pub(crate) fn encode_envelope(message: Message) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        headers: message.headers,
        body: message.body.to_vec(),
    })
}

/// A message as another process's HTTP broker sent it (untrusted bytes).
pub(crate) fn decode_envelope(body: &[u8]) -> Result<Message, serde_json::Error> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    Ok(Message {
        headers: envelope.headers,
        body: Bytes::from(envelope.body),
    })
}

mod body64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(body))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

struct Listener {
    address: String,
    task: tokio::task::JoinHandle<()>,
}

struct Inner {
    registry: SharedRegistry,
    bind: String,
    listener: tokio::sync::OnceCell<Listener>,
    /// Subscription id → where its deliveries go.
    inboxes: Mutex<HashMap<String, mpsc::Sender<Message>>>,
    lookups: Mutex<HashMap<String, (Instant, Vec<Node>)>>,
    turn: AtomicUsize,
    client: Client,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.task.abort();
        }
    }
}

/// The embedded cross-process [`Broker`]: works across the processes that share a
/// registry (every process on a host with the default local registry, or across
/// hosts with etcd/Consul and a reachable `--broker-address`). Nothing is
/// persisted: a message goes to the subscribers that exist when it is published;
/// a handler error is retried in the subscribing process, then dead-lettered.
#[derive(Clone)]
pub struct HttpBroker {
    inner: Arc<Inner>,
}

impl HttpBroker {
    /// A broker finding subscribers through `registry`; subscriptions listen on
    /// `bind` (default `127.0.0.1:0`; use a routable `host:0` across hosts).
    pub fn new(registry: SharedRegistry, bind: Option<&str>) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        HttpBroker {
            inner: Arc::new(Inner {
                registry,
                bind: bind.unwrap_or("127.0.0.1:0").to_owned(),
                listener: tokio::sync::OnceCell::new(),
                inboxes: Mutex::new(HashMap::new()),
                lookups: Mutex::new(HashMap::new()),
                turn: AtomicUsize::new(0),
                client,
            }),
        }
    }

    fn failed(&self, operation: impl Into<String>, detail: impl std::fmt::Display) -> BrokerError {
        BrokerError::backend(self.describe(), operation, detail)
    }

    /// Starts this process's listener on first use; returns its address.
    async fn listener(&self) -> Result<String, BrokerError> {
        let weak = Arc::downgrade(&self.inner);
        let listener = self
            .inner
            .listener
            .get_or_try_init(|| async {
                let socket = tokio::net::TcpListener::bind(&self.inner.bind)
                    .await
                    .map_err(|e| self.failed(format!("listen on {}", self.inner.bind), e))?;
                let local = socket
                    .local_addr()
                    .map_err(|e| self.failed("read the listen address", e))?;
                let address = if local.ip().is_unspecified() {
                    format!("127.0.0.1:{}", local.port())
                } else {
                    local.to_string()
                };
                let task = tokio::spawn(serve(socket, weak));
                Ok::<_, BrokerError>(Listener { address, task })
            })
            .await?;
        Ok(listener.address.clone())
    }

    /// The subscribers of `topic`, from the registry, reused for a second.
    async fn subscribers(&self, topic: &str) -> Result<Vec<Node>, BrokerError> {
        if let Some((at, nodes)) = lock(&self.inner.lookups).get(topic)
            && at.elapsed() < LOOKUP_TTL
        {
            return Ok(nodes.clone());
        }
        let services = self
            .inner
            .registry
            .get_service(&format!("{SERVICE_PREFIX}{topic}"))
            .await
            .map_err(|e| self.failed(format!("look up subscribers of {topic}"), e))?;
        let nodes: Vec<Node> = services.into_iter().flat_map(|s| s.nodes).collect();
        lock(&self.inner.lookups).insert(topic.to_owned(), (Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// Hands `message` to one subscriber; true when it accepted it.
    async fn deliver(&self, node: &Node, topic: &str, body: &Bytes) -> Result<(), String> {
        let request = http::Request::post(format!("http://{}{PATH}", node.address))
            .header(SUBSCRIBER_HEADER, &node.id)
            .header(super::TOPIC, topic)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let response =
            tokio::time::timeout(Duration::from_secs(5), self.inner.client.request(request))
                .await
                .map_err(|_| "no answer within 5 s".to_owned())?
                .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

/// Accepts deliveries for this process's subscriptions.
async fn serve(socket: tokio::net::TcpListener, inner: std::sync::Weak<Inner>) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(accept(inner, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: http::StatusCode, text: &str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

async fn accept(
    inner: std::sync::Weak<Inner>,
    req: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    use http::StatusCode;
    if req.method() != http::Method::POST || req.uri().path() != PATH {
        return reply(StatusCode::NOT_FOUND, "not an rmicro broker endpoint");
    }
    let Some(inner) = inner.upgrade() else {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "broker closed");
    };
    let id = req
        .headers()
        .get(SUBSCRIBER_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Some(inbox) = lock(&inner.inboxes).get(&id).cloned() else {
        return reply(StatusCode::NOT_FOUND, "no such subscription here");
    };
    let body = match Limited::new(req.into_body(), MAX_MESSAGE).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return reply(StatusCode::PAYLOAD_TOO_LARGE, &err.to_string()),
    };
    let message = match decode_envelope(&body) {
        Ok(message) => message,
        Err(err) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &format!("malformed delivery: {err}"),
            );
        }
    };
    match inbox.try_send(message) {
        Ok(()) => reply(StatusCode::OK, ""),
        Err(mpsc::error::TrySendError::Full(_)) => {
            reply(StatusCode::SERVICE_UNAVAILABLE, "subscriber busy")
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            reply(StatusCode::NOT_FOUND, "subscription ended")
        }
    }
}

impl Broker for HttpBroker {
    fn describe(&self) -> String {
        format!("http+{}", self.inner.registry.describe())
    }

    fn connect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async { Ok(()) })
    }

    fn publish(&self, topic: &str, message: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let nodes = self.subscribers(&topic).await?;
            let body = Bytes::from(
                encode_envelope(message).map_err(|e| self.failed("encode a delivery", e))?,
            );
            let mut groups: BTreeMap<String, Vec<&Node>> = BTreeMap::new();
            let mut plain = Vec::new();
            for node in &nodes {
                match node.metadata.get("queue").filter(|q| !q.is_empty()) {
                    Some(queue) => groups.entry(queue.clone()).or_default().push(node),
                    None => plain.push(node),
                }
            }
            let mut failures = Vec::new();
            let mut delivered = 0;
            for node in plain {
                match self.deliver(node, &topic, &body).await {
                    Ok(()) => delivered += 1,
                    Err(err) => failures.push(format!("{}: {err}", node.address)),
                }
            }
            for (queue, members) in groups {
                // Start at the next member in turn; fall over to the others.
                let start = self.inner.turn.fetch_add(1, Ordering::Relaxed);
                let mut taken = false;
                for i in 0..members.len() {
                    let node = members[(start + i) % members.len()];
                    match self.deliver(node, &topic, &body).await {
                        Ok(()) => {
                            taken = true;
                            break;
                        }
                        Err(err) => failures.push(format!("{} ({queue}): {err}", node.address)),
                    }
                }
                delivered += usize::from(taken);
            }
            if !failures.is_empty() {
                // A departed subscriber may still be listed: look again next time.
                lock(&self.inner.lookups).remove(&topic);
                tracing::debug!(%topic, ?failures, "some subscribers did not take the message");
                if delivered == 0 {
                    return Err(self.failed(format!("deliver on {topic}"), failures.join("; ")));
                }
            }
            Ok(())
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
            let address = self.listener().await?;
            let id = format!("{SERVICE_PREFIX}{topic}-{}", uuid::Uuid::new_v4());
            let (tx, rx) = mpsc::channel::<Message>(1024);
            lock(&self.inner.inboxes).insert(id.clone(), tx);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let mut workers = Vec::new();
            for _ in 0..options.concurrency.max(1) {
                let (rx, me, topic, handler, options) = (
                    rx.clone(),
                    self.clone(),
                    topic.clone(),
                    handler.clone(),
                    options.clone(),
                );
                workers.push(tokio::spawn(async move {
                    loop {
                        let message = rx.lock().await.recv().await;
                        let Some(message) = message else { return };
                        if let Some(dead) =
                            handle_with_retries(&handler, &topic, message, &options).await
                            && let Err(err) = me.publish(&dead_letter_topic(&topic), dead).await
                        {
                            tracing::warn!(%topic, error = %err, "cannot deliver a dead letter");
                        }
                    }
                }));
            }
            let mut metadata: BTreeMap<String, String> = [
                ("broker".to_owned(), "http".to_owned()),
                ("topic".to_owned(), topic.clone()),
            ]
            .into();
            if let Some(queue) = &options.queue {
                metadata.insert("queue".into(), queue.clone());
            }
            let record = Service {
                name: format!("{SERVICE_PREFIX}{topic}"),
                version: "1".into(),
                metadata: BTreeMap::new(),
                endpoints: Vec::new(),
                nodes: vec![Node {
                    id: id.clone(),
                    address,
                    metadata,
                }],
            };
            let registration = Registration::start(
                self.inner.registry.clone(),
                record,
                Duration::from_secs(60),
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| self.failed(format!("register a subscriber of {topic}"), e))?;
            let me = self.clone();
            Ok(Subscriber::new(topic, options, move || async move {
                // Leave the registry first, then stop taking deliveries, then finish.
                registration.stop().await;
                lock(&me.inner.inboxes).remove(&id);
                for worker in workers {
                    let _ = worker.await;
                }
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;

    #[tokio::test(flavor = "multi_thread")]
    async fn http_broker_conforms() {
        let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
        let broker = HttpBroker::new(registry, None);
        super::super::testing::fan_out_and_queue_group(&broker, "").await;
        super::super::testing::redelivery_then_dead_letter(&broker, "").await;
        super::super::testing::malformed_payload_is_dead_lettered(&broker, "").await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_process_publishes_to_another_and_departed_subscribers_are_skipped() {
        let registry: SharedRegistry = Arc::new(MemoryRegistry::new());
        let publisher = HttpBroker::new(registry.clone(), None);
        let subscriber = HttpBroker::new(registry.clone(), None);
        let count = Arc::new(AtomicUsize::new(0));
        let sub = subscriber
            .subscribe(
                "t",
                super::super::testing::counting(&count),
                SubscribeOptions::default(),
            )
            .await
            .unwrap();
        publisher.publish("t", Message::new("a")).await.unwrap();
        super::super::testing::wait_until("delivered across brokers", || {
            count.load(Ordering::SeqCst) == 1
        })
        .await;
        sub.unsubscribe().await;
        let records = registry.get_service("rmicro.broker.t").await.unwrap();
        assert!(records.is_empty(), "the subscription left the registry");
        // Nobody subscribed: the message has nowhere to go, which is not an error.
        tokio::time::sleep(LOOKUP_TTL).await;
        publisher.publish("t", Message::new("b")).await.unwrap();
        // A malformed delivery is refused with a status, not a crash.
        let address = subscriber.listener().await.unwrap();
        let request = http::Request::post(format!("http://{address}{PATH}"))
            .header(SUBSCRIBER_HEADER, "nobody")
            .body(Full::new(Bytes::from_static(b"{oops")))
            .unwrap();
        let response = subscriber.inner.client.request(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
    }
}
