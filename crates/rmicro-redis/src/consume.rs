//! Consuming: reading a topic's stream through a consumer group, handling entries,
//! claiming what a dead consumer left, and acknowledging in batches.

use super::{RedisBroker, message_of};
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimReply, StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply,
};
use rmicro::broker::{
    Broker, Delivery, Handler, InFlight, Outcome, SubscribeOptions, dead_letter_topic, process,
    redelivery_delay,
};
use std::sync::Arc;
use std::time::Duration;

/// One subscription's view: where to read and how to settle messages (shared by
/// its handler tasks behind an `Arc`).
pub(super) struct Reader {
    pub(super) broker: RedisBroker,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) consumer: String,
    pub(super) handler: Handler,
    pub(super) options: SubscribeOptions,
    /// Handled entry ids, acknowledged in batches by [`acknowledge`].
    pub(super) acks: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Reader {
    /// How many times `id` was delivered (1 if Redis no longer knows).
    async fn deliveries(&self, connection: &mut ConnectionManager, id: &str) -> u32 {
        let reply: redis::RedisResult<StreamPendingCountReply> = redis::cmd("XPENDING")
            .arg(&self.topic)
            .arg(&self.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(connection)
            .await;
        reply
            .ok()
            .and_then(|r| r.ids.into_iter().next())
            .map(|p| u32::try_from(p.times_delivered).unwrap_or(u32::MAX))
            .unwrap_or(1)
    }

    /// Queues `id` for the next batched `XACK`.
    fn ack(&self, id: String) {
        // If the acknowledger is gone the message stays pending and is claimed again.
        let _ = self.acks.send(id);
    }

    /// Handles one entry until it is acknowledged, dead-lettered, or left pending
    /// (connection trouble) for `XAUTOCLAIM`.
    async fn handle(self: Arc<Self>, entry: StreamId, mut attempt: u32) {
        let StreamId {
            mut id,
            map: mut fields,
            ..
        } = entry;
        loop {
            let message = message_of(std::mem::take(&mut fields));
            let delivery = Delivery::new(self.topic.clone(), message, attempt);
            match process(&self.handler, delivery, &self.options).await {
                Outcome::Ack => return self.ack(id),
                Outcome::DeadLetter(dead) => {
                    match self
                        .broker
                        .publish(&dead_letter_topic(&self.topic), dead)
                        .await
                    {
                        Ok(()) => return self.ack(id),
                        Err(err) => {
                            tracing::warn!(topic = %self.topic, error = %err, "cannot publish a dead letter; the message stays pending");
                            return;
                        }
                    }
                }
                Outcome::Retry(_) => {
                    tokio::time::sleep(redelivery_delay(attempt)).await;
                    let Ok(mut connection) = self.broker.shared().await else {
                        return;
                    };
                    // XCLAIM to ourselves counts the redelivery in Redis.
                    let claimed: redis::RedisResult<StreamClaimReply> = redis::cmd("XCLAIM")
                        .arg(&self.topic)
                        .arg(&self.group)
                        .arg(&self.consumer)
                        .arg(0)
                        .arg(&id)
                        .query_async(&mut connection)
                        .await;
                    match claimed.map(|r| r.ids.into_iter().next()) {
                        Ok(Some(again)) => {
                            (id, fields) = (again.id, again.map);
                            attempt = self.deliveries(&mut connection, &id).await;
                        }
                        // Gone (trimmed or acknowledged elsewhere) or Redis away:
                        // XAUTOCLAIM takes it up later if it is still pending.
                        _ => return,
                    }
                }
            }
        }
    }
}

/// Sends the queued acknowledgements of one subscription, as many per `XACK` as
/// have gathered, until the subscription ends and every queued one is sent.
pub(super) async fn acknowledge(
    broker: RedisBroker,
    topic: String,
    group: String,
    mut ids: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut batch = Vec::new();
    while ids.recv_many(&mut batch, 512).await > 0 {
        let Ok(mut connection) = broker.shared().await else {
            batch.clear();
            continue;
        };
        let mut command = redis::cmd("XACK");
        command.arg(&topic).arg(&group);
        for id in batch.drain(..) {
            command.arg(id);
        }
        if let Err(err) = command.query_async::<i64>(&mut connection).await {
            tracing::warn!(%topic, error = %err, "cannot XACK; the messages will be delivered again");
        }
    }
}

/// Reads new messages and claims abandoned ones for one subscription until stopped.
pub(super) async fn consume(reader: Arc<Reader>, stop: Arc<tokio::sync::Notify>) {
    let mut in_flight = InFlight::new(reader.options.concurrency);
    // The blocking connection and the client generation it was made with.
    let mut blocking: Option<(u64, ConnectionManager)> = None;
    let mut last_claim = tokio::time::Instant::now();
    let mut claim_cursor = "0-0".to_owned();
    // One waiter for the whole loop (a new one per handler run costs two locks).
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        // Rotated TLS files: a new connection with them.
        if blocking
            .as_ref()
            .is_some_and(|(made, _)| *made != reader.broker.generation())
        {
            blocking = None;
        }
        let connection = match &mut blocking {
            Some((_, connection)) => connection,
            None => match reader.broker.manager(true).await {
                Ok((connection, made)) => &mut blocking.insert((made, connection)).1,
                Err(err) => {
                    tracing::warn!(topic = %reader.topic, error = %err, "cannot reach Redis; retrying");
                    tokio::select! {
                        () = &mut stopped => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let mut batch: Vec<(StreamId, u32)> = Vec::new();
        // Take over messages a dead (or stuck) member left pending too long.
        if last_claim.elapsed() >= reader.broker.inner.ack_wait / 2 {
            last_claim = tokio::time::Instant::now();
            let claimed: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
                .arg(&reader.topic)
                .arg(&reader.group)
                .arg(&reader.consumer)
                .arg(u64::try_from(reader.broker.inner.ack_wait.as_millis()).unwrap_or(u64::MAX))
                .arg(&claim_cursor)
                .arg("COUNT")
                .arg(32)
                .query_async(connection)
                .await;
            if let Ok(reply) = claimed {
                claim_cursor = reply.next_stream_id.clone();
                for entry in reply.claimed {
                    let attempt = reader.deliveries(connection, &entry.id).await;
                    batch.push((entry, attempt));
                }
            }
        }
        // A full batch each time; handler slots pace the work (read entries wait for one).
        let free = reader.options.concurrency.max(32);
        let mut read_command = redis::cmd("XREADGROUP");
        read_command
            .arg("GROUP")
            .arg(&reader.group)
            .arg(&reader.consumer)
            .arg("COUNT")
            .arg(free)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(&reader.topic)
            .arg(">");
        // Handlers go on while the read waits.
        let result = {
            let read = read_command.query_async::<Option<StreamReadReply>>(connection);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    biased;
                    () = &mut stopped => break None,
                    () = in_flight.progress() => {}
                    result = &mut read => break Some(result),
                }
            }
        };
        let Some(result) = result else { break };
        match result {
            Ok(Some(reply)) => {
                for key in reply.keys {
                    batch.extend(key.ids.into_iter().map(|entry| (entry, 1)));
                }
            }
            Ok(None) => {}
            Err(err) if err.to_string().contains("NOGROUP") => {
                // Redis restarted without its data: recreate the group and go on.
                if let Err(err) = reader
                    .broker
                    .ensure_group(connection, &reader.topic, &reader.group)
                    .await
                {
                    tracing::warn!(topic = %reader.topic, error = %err, "cannot recreate the consumer group");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Err(err) => {
                tracing::debug!(topic = %reader.topic, error = %err, "XREADGROUP failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        for (entry, attempt) in batch {
            in_flight
                .push_when_room(Arc::clone(&reader).handle(entry, attempt))
                .await;
        }
    }
    in_flight.finish().await;
}
