//! Consuming: one consumer loop per subscription, settling each delivery (ack,
//! requeue after a backoff, or dead-letter).

use futures_util::StreamExt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use rmicro::broker::{
    Broker, Delivery, Handler, InFlight, Outcome, SubscribeOptions, dead_letter_topic, process,
    redelivery_delay,
};
use std::sync::Arc;
use std::time::Duration;

use super::{RabbitBroker, message_of};

/// One subscription's consumer loop.
pub(super) struct Consume {
    pub(super) broker: RabbitBroker,
    pub(super) channel: Channel,
    pub(super) consumer: lapin::Consumer,
    pub(super) topic: String,
    pub(super) handler: Handler,
    pub(super) options: SubscribeOptions,
    pub(super) shared: bool,
}

impl Consume {
    pub(super) async fn run(mut self, stop: Arc<tokio::sync::Notify>) {
        let mut in_flight = InFlight::new(self.options.concurrency);
        // One waiter for the whole loop (a new one per message costs two locks).
        let stopped = stop.notified();
        tokio::pin!(stopped);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut stopped => break,
                () = in_flight.progress() => continue,
                next = self.consumer.next(), if in_flight.has_room() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => {
                    // Auto-recovery reconnects and replays the consumer.
                    if let Err(err) = self.channel.wait_for_recovery(err).await {
                        tracing::warn!(topic = %self.topic, error = %err, "RabbitMQ consumer lost; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
                None => break,
            };
            in_flight.push(settle(
                self.broker.clone(),
                self.topic.clone(),
                self.handler.clone(),
                self.options.clone(),
                self.shared,
                delivery,
            ));
        }
        in_flight.finish().await;
    }
}

/// Backs off, then gives the message back to its queue.
async fn requeue_later(delivery: &lapin::message::Delivery, attempt: u32) -> lapin::Result<bool> {
    tokio::time::sleep(redelivery_delay(attempt)).await;
    delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
}

/// Runs the handler on one delivery and acknowledges, requeues or dead-letters it.
pub(super) async fn settle(
    broker: RabbitBroker,
    topic: String,
    handler: Handler,
    options: SubscribeOptions,
    shared: bool,
    delivery: lapin::message::Delivery,
) {
    let (message, count) = message_of(&delivery);
    let mut attempt = count.map_or(if delivery.redelivered { 2 } else { 1 }, |c| c + 1);
    loop {
        let outcome = process(
            &handler,
            Delivery::new(topic.clone(), message.clone(), attempt),
            &options,
        )
        .await;
        let result = match outcome {
            Outcome::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
            Outcome::DeadLetter(dead) => {
                match broker.publish(&dead_letter_topic(&topic), dead).await {
                    Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
                    Err(err) => {
                        tracing::warn!(%topic, error = %err, "cannot publish a dead letter; requeueing");
                        requeue_later(&delivery, attempt).await
                    }
                }
            }
            // RabbitMQ counts the redelivery and may hand it to another member.
            Outcome::Retry(_) if shared => requeue_later(&delivery, attempt).await,
            Outcome::Retry(_) => {
                // An exclusive queue has no other member: retry here.
                tokio::time::sleep(redelivery_delay(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        if let Err(err) = result {
            tracing::warn!(%topic, error = %err, "cannot settle a delivery; RabbitMQ will redeliver it");
        }
        return;
    }
}
