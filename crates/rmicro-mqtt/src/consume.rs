//! Consuming: one connection per subscription, read without pause, its handlers
//! run up to the subscription's concurrency, each message settled (acknowledged, or
//! left for redelivery when its dead letter cannot be published).

use rmicro::broker::{Broker, Handler, InFlight, SubscribeOptions, dead_letter_topic};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{MqttBroker, message_of};

/// What one subscription's connection and its handler runs share.
pub(super) struct Subscription {
    pub(super) broker: MqttBroker,
    pub(super) client: AsyncClient,
    pub(super) filter: String,
    pub(super) topic: String,
    pub(super) handler: Handler,
    pub(super) options: SubscribeOptions,
}

/// Handles one message and acknowledges it; a dead letter that cannot be published
/// leaves it unacknowledged, so the server sends it again on reconnect.
pub(super) async fn settle(subscription: Arc<Subscription>, publish: Publish) {
    let Subscription {
        broker,
        client,
        topic,
        handler,
        options,
        ..
    } = &*subscription;
    let message = message_of(&publish);
    if let Some(dead) = rmicro::broker::handle_with_retries(handler, topic, message, options).await
        && let Err(err) = broker.publish(&dead_letter_topic(topic), dead).await
    {
        tracing::warn!(%topic, error = %err, "cannot publish a dead letter");
        return;
    }
    if let Err(err) = client.ack(&publish).await {
        tracing::warn!(%topic, error = %err, "cannot acknowledge");
    }
}

/// Drives one subscription's connection — it never stops reading, so
/// acknowledgements and keep-alives go out — and runs the handlers, up to the
/// subscription's concurrency at once; messages beyond that wait their turn (the
/// server's in-flight window bounds them).
pub(super) async fn subscribe_events(
    subscription: Subscription,
    mut events: EventLoop,
    early: Vec<Publish>,
    stop: Arc<tokio::sync::Notify>,
) {
    let subscription = Arc::new(subscription);
    let Subscription {
        client,
        filter,
        topic,
        options,
        ..
    } = &*subscription;
    let mut in_flight = InFlight::new(options.concurrency);
    let mut waiting: VecDeque<Publish> = early.into();
    // One waiter for the whole loop (a new one per message costs two locks).
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        while in_flight.has_room()
            && let Some(publish) = waiting.pop_front()
        {
            in_flight.push(settle(Arc::clone(&subscription), publish));
        }
        let event = tokio::select! {
            biased;
            () = &mut stopped => break,
            () = in_flight.progress() => continue,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack)))
                if !ack.session_present || options.queue.is_some() =>
            {
                // A new session (or one the server forgot): subscribe again. A
                // shared subscription subscribes again even in a resumed session:
                // Mosquitto restores it from its database inactive, delivering
                // nothing until the member subscribes anew.
                if !ack.session_present && (options.durable || options.queue.is_some()) {
                    tracing::warn!(
                        %topic,
                        "the MQTT server lost this subscription's persistent session (is its persistence writable?); messages published while it was away are lost"
                    );
                }
                if let Err(err) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                    tracing::warn!(%topic, error = %err, "cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => waiting.push_back(publish),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(%topic, error = %err, "MQTT subscriber connection lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // Let the handlers finish, still driving the connection so their
    // acknowledgements go out.
    while !in_flight.is_empty() {
        tokio::select! {
            () = in_flight.progress() => {}
            event = events.poll() => {
                if event.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    let _ = client.disconnect().await;
    // Let the DISCONNECT go out.
    let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
}
