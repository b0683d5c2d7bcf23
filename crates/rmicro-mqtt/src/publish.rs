//! Publishing: one persistent-session connection whose QoS 1 publishes are matched
//! to their PUBACKs by packet id, resent right after a server restart when no
//! subscription matched yet.

use crate::MqttBroker;
use rmicro::broker::{BrokerError, Message, init_once};
use rmicro::sync::lock;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long after the publishing connection is re-established a publish that no
/// subscription matched is sent again: Mosquitto restores shared subscriptions
/// (queue groups) from its database inactive, matching nothing until their members
/// come back and subscribe, so right after a server restart "no matching
/// subscribers" usually means "not yet".
const RESUBSCRIBE_GRACE: Duration = Duration::from_secs(5);

/// How the server answered one publish.
enum Acked {
    /// A subscription matched (or the server does not say).
    Delivered,
    /// PUBACK reason "no matching subscribers": the server dropped the message.
    NoSubscriber,
}

/// Where a publish waits for its PUBACK.
type Waiter = oneshot::Sender<Result<Acked, String>>;

/// Publishes waiting for their packet id, oldest first.
type Waiters = Arc<Mutex<VecDeque<Waiter>>>;

/// The publishing connection: publishes are matched to their PUBACKs by packet id.
pub(crate) struct Publisher {
    pub(crate) client: AsyncClient,
    /// Waiting publishes, in the order they were handed to the event loop.
    queued: Waiters,
    /// Held while queueing a waiter and sending its request, so both orders agree.
    sending: tokio::sync::Mutex<()>,
    /// When the connection was last re-established after a loss.
    reconnected: Arc<Mutex<Option<tokio::time::Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Whether the connection came back less than [`RESUBSCRIBE_GRACE`] ago.
    fn recently_reconnected(&self) -> bool {
        lock(&self.reconnected).is_some_and(|at| at.elapsed() < RESUBSCRIBE_GRACE)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttBroker {
    pub(crate) async fn publisher(&self) -> Result<&Publisher, BrokerError> {
        init_once(&self.inner.publisher, || async {
            // A persistent session: publishes in flight when the connection
            // breaks are sent again with their packet ids.
            let options = self.options(format!("{}-pub", self.inner.client_id), true);
            let (client, mut events) = AsyncClient::new(options, 1024);
            // Connect now, so a wrong address fails here with a sentence.
            match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(self.connect_failed(&err)),
                Err(_) => return Err(self.failed("connect", "no answer within 5 s")),
            }
            let queued: Waiters = Arc::default();
            let reconnected = Arc::default();
            let task = tokio::spawn(publish_events(
                events,
                queued.clone(),
                Arc::clone(&reconnected),
            ));
            Ok(Publisher {
                client,
                queued,
                sending: tokio::sync::Mutex::new(()),
                reconnected,
                task,
            })
        })
        .await
    }

    /// Sends one QoS 1 publish and waits for its PUBACK.
    async fn publish_once(
        &self,
        publisher: &Publisher,
        topic: &str,
        body: bytes::Bytes,
        properties: PublishProperties,
    ) -> Result<Acked, BrokerError> {
        let failed =
            |detail: &dyn std::fmt::Display| self.failed(format!("publish to {topic}"), detail);
        let (tx, rx) = oneshot::channel();
        {
            // Queue the waiter and send the request under one lock, so the event
            // loop's packet ids come in the order of the waiters.
            let _sending = publisher.sending.lock().await;
            lock(&publisher.queued).push_back(tx);
            publisher
                .client
                .publish_with_properties(topic, QoS::AtLeastOnce, false, body, properties)
                .await
                .map_err(|e| failed(&e))?;
        }
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Ok(acked))) => Ok(acked),
            Ok(Ok(Err(detail))) => Err(failed(&detail)),
            Ok(Err(_)) => Err(failed(&"connection closed")),
            Err(_) => Err(failed(&"no PUBACK within 10 s")),
        }
    }

    /// Publishes `message` on `topic` and waits for the server's PUBACK.
    pub(crate) async fn publish_message(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<(), BrokerError> {
        let publisher = self.publisher().await?;
        let properties = PublishProperties {
            user_properties: message
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            content_type: message.headers.get(rmicro::broker::CONTENT_TYPE).cloned(),
            ..Default::default()
        };
        loop {
            match self
                .publish_once(publisher, topic, message.body.clone(), properties.clone())
                .await?
            {
                Acked::NoSubscriber if publisher.recently_reconnected() => {
                    // Right after a server restart: the queue groups' members
                    // may not have subscribed again yet. Send it again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Acked::Delivered | Acked::NoSubscriber => return Ok(()),
            }
        }
    }
}

/// Drives the publishing connection: matches each outgoing publish to its PUBACK.
async fn publish_events(
    mut events: EventLoop,
    queued: Waiters,
    reconnected: Arc<Mutex<Option<tokio::time::Instant>>>,
) {
    let mut sent: HashMap<u16, Waiter> = HashMap::new();
    // Packet ids in flight when a connection broke: the (persistent) session resends
    // them after reconnecting, and their PUBACKs must not confirm anything else.
    let mut stale: std::collections::HashSet<u16> = std::collections::HashSet::new();
    loop {
        match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if stale.contains(&pkid) || sent.contains_key(&pkid) {
                    continue; // a resend, not a new publish
                }
                if let Some(waiter) = lock(&queued).pop_front() {
                    sent.insert(pkid, waiter);
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // The first CONNACK was read before this task started: this is a
                // reconnection.
                *lock(&reconnected) = Some(tokio::time::Instant::now());
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if stale.remove(&ack.pkid) {
                    continue;
                }
                if let Some(waiter) = sent.remove(&ack.pkid) {
                    let result = match ack.reason {
                        PubAckReason::Success => Ok(Acked::Delivered),
                        PubAckReason::NoMatchingSubscribers => Ok(Acked::NoSubscriber),
                        other => Err(format!("the server refused: {other:?}")),
                    };
                    let _ = waiter.send(result);
                }
            }
            Ok(_) => {}
            Err(err) => {
                // Unconfirmed publishes fail (their callers may retry; the session
                // may still deliver them: at least once, never "confirmed" wrongly).
                for (pkid, waiter) in sent.drain() {
                    stale.insert(pkid);
                    let _ = waiter.send(Err(format!("connection lost before the PUBACK: {err}")));
                }
                tracing::debug!(error = %err, "MQTT publisher connection lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
