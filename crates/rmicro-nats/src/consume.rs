//! Consuming: JetStream pull consumers and core subscriptions, each message
//! handled, then acknowledged, NAKed with backoff, or dead-lettered.

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use rmicro::broker::{
    Delivery, Handler, InFlight, Outcome, SubscribeOptions, process, redelivery_delay,
};
use std::sync::Arc;
use std::time::Duration;

use crate::NatsBroker;
use crate::publish::message_of;

/// What one subscription's handler tasks share.
pub(super) struct Handling {
    pub(super) broker: NatsBroker,
    pub(super) topic: String,
    pub(super) handler: Handler,
    pub(super) options: SubscribeOptions,
}

/// How many times JetStream has delivered a message, read from its `$JS.ACK.`
/// reply subject (both forms of ADR-15: `<stream>.<consumer>.<delivered>.…`, and
/// with `<domain>.<account hash>.` in front) without parsing the rest; 1 when the
/// subject does not say.
pub(super) fn delivered(reply: Option<&str>) -> u32 {
    let Some(tokens) = reply.and_then(|reply| reply.strip_prefix("$JS.ACK.")) else {
        return 1;
    };
    let index = if tokens.split('.').count() >= 9 { 4 } else { 2 };
    tokens
        .split('.')
        .nth(index)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

impl Handling {
    /// Handles one JetStream message and acknowledges it, asks for it again later,
    /// or dead-letters it.
    pub(super) async fn settle(self: Arc<Self>, message: jetstream::Message) {
        let topic = &self.topic;
        let attempt = delivered(message.reply.as_ref().map(|r| r.as_str()));
        let delivery = Delivery::new(
            topic.clone(),
            message_of(message.headers.as_ref(), message.payload.clone()),
            attempt,
        );
        let ack = match process(&self.handler, delivery, &self.options).await {
            Outcome::Ack => AckKind::Ack,
            Outcome::Retry(_) => AckKind::Nak(Some(redelivery_delay(attempt))),
            Outcome::DeadLetter(dead) => {
                if self.broker.dead_letter(topic, dead).await {
                    AckKind::Ack
                } else {
                    AckKind::Nak(Some(redelivery_delay(attempt)))
                }
            }
        };
        if let Err(err) = message.ack_with(ack).await {
            tracing::warn!(%topic, error = %err, "cannot acknowledge; JetStream will redeliver");
        }
    }

    /// Handles one core-NATS message, retrying in this process, then dead-lettering.
    pub(super) async fn settle_core(self: Arc<Self>, message: async_nats::Message) {
        let body = message_of(message.headers.as_ref(), message.payload);
        if let Some(dead) =
            rmicro::broker::handle_with_retries(&self.handler, &self.topic, body, &self.options)
                .await
        {
            self.broker.dead_letter(&self.topic, dead).await;
        }
    }
}

/// Pulls messages for one subscription, handling up to `concurrency` at once, until
/// unsubscribed; re-pulls after connection trouble.
pub(super) async fn consume(
    handling: Arc<Handling>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    stop: Arc<tokio::sync::Notify>,
) {
    let Handling { topic, options, .. } = &*handling;
    let mut in_flight = InFlight::new(options.concurrency);
    // One waiter for the whole loop (a new one per message costs two locks).
    let stopped = stop.notified();
    tokio::pin!(stopped);
    'outer: loop {
        let mut messages = tokio::select! {
            () = &mut stopped => break 'outer,
            messages = consumer.messages() => match messages {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(%topic, error = %err, "cannot pull from JetStream; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        loop {
            let next = tokio::select! {
                biased;
                () = &mut stopped => break 'outer,
                () = in_flight.progress() => continue,
                next = messages.next(), if in_flight.has_room() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    tracing::debug!(%topic, error = %err, "JetStream pull interrupted; pulling again");
                    continue 'outer;
                }
                None => continue 'outer,
            };
            in_flight.push(Arc::clone(&handling).settle(message));
        }
    }
    // Let the messages being handled finish and be acknowledged.
    in_flight.finish().await;
}

/// Core NATS: handles messages as they come; retries a failed one in-process.
pub(super) async fn consume_core(
    handling: Arc<Handling>,
    mut subscription: async_nats::Subscriber,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut in_flight = InFlight::new(handling.options.concurrency);
    // One waiter for the whole loop (a new one per message costs two locks).
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let next = tokio::select! {
            biased;
            () = &mut stopped => break,
            () = in_flight.progress() => continue,
            next = subscription.next(), if in_flight.has_room() => next,
        };
        let Some(message) = next else { break };
        in_flight.push(Arc::clone(&handling).settle_core(message));
    }
    let _ = subscription.unsubscribe().await;
    in_flight.finish().await;
}
