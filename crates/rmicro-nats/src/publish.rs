//! Publishing: JetStream streams made on first use, publishes confirmed by the
//! server's PubAck (core NATS: flushed), dead letters, and the mapping between
//! rmicro messages and NATS headers.

use crate::NatsBroker;
use async_nats::jetstream;
use bytes::Bytes;
use rmicro::broker::{Broker, BrokerError, Message, dead_letter_topic};
use std::time::Duration;

/// A JetStream stream or consumer name for `text` (letters, digits, `-`, `_`).
pub fn stream_name(topic: &str) -> String {
    let clean: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("RMICRO_{clean}")
}

pub(crate) fn headers_of(message: &Message) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (key, value) in &message.headers {
        headers.insert(key.as_str(), value.as_str());
    }
    headers
}

pub(crate) fn message_of(headers: Option<&async_nats::HeaderMap>, payload: Bytes) -> Message {
    let mut message = Message::new(payload);
    if let Some(headers) = headers {
        for (key, values) in headers.iter() {
            if let Some(value) = values.first() {
                message
                    .headers
                    .insert(key.to_string(), value.as_str().to_owned());
            }
        }
    }
    message
}

impl NatsBroker {
    /// Creates `topic`'s stream unless this broker already did.
    pub(crate) async fn ensure_stream(
        &self,
        topic: &str,
    ) -> Result<jetstream::stream::Stream, BrokerError> {
        if topic.contains(['*', '>', ' ']) || topic.is_empty() {
            return Err(BrokerError::BadName {
                broker: self.describe(),
                what: "topic",
                name: topic.to_owned(),
                detail: "use a plain subject without wildcards or spaces".into(),
            });
        }
        let js = self.jetstream_context().await?;
        let name = stream_name(topic);
        let created = js
            .get_or_create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![topic.to_owned()],
                storage: jetstream::stream::StorageType::File,
                max_age: Duration::from_secs(24 * 3600),
                ..Default::default()
            })
            .await;
        let stream = match created {
            Ok(stream) => stream,
            // Another process created it at the same moment (the server refuses the
            // second with "subjects overlap with an existing stream"): use theirs.
            Err(err) => match js.get_stream(&name).await {
                Ok(stream) => stream,
                Err(_) => return Err(self.failed(format!("create stream {name}"), err)),
            },
        };
        rmicro::sync::lock(&self.inner.streams).insert(topic.to_owned());
        Ok(stream)
    }

    pub(crate) async fn publish_jetstream(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<(), BrokerError> {
        let known = rmicro::sync::lock(&self.inner.streams).contains(topic);
        if !known {
            // Boxed: creating a stream is a large future, and inline it would make
            // every publish allocate and move it.
            Box::pin(self.ensure_stream(topic)).await?;
        }
        let js = self.jetstream_context().await?;
        let sent = if message.headers.is_empty() {
            js.publish(topic.to_owned(), message.body).await
        } else {
            js.publish_with_headers(topic.to_owned(), headers_of(&message), message.body)
                .await
        };
        let ack = sent.map_err(|e| self.failed(format!("publish to {topic}"), e))?;
        ack.await
            .map_err(|e| self.failed(format!("confirm a publish to {topic}"), e))?;
        Ok(())
    }

    pub(crate) async fn publish_core(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<(), BrokerError> {
        let client = self.client().await?;
        client
            .publish_with_headers(topic.to_owned(), headers_of(&message), message.body)
            .await
            .map_err(|e| self.failed(format!("publish to {topic}"), e))?;
        // Core NATS confirms nothing; a flush at least puts it on the wire.
        client.flush().await.map_err(|e| self.failed("flush", e))
    }

    /// Deletes `topic`'s JetStream stream and every message in it (an admin
    /// operation, e.g. for tests); `Ok` if it did not exist.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), BrokerError> {
        let js = self.jetstream_context().await?;
        let name = stream_name(topic);
        match js.delete_stream(&name).await {
            Ok(_) => {}
            Err(err) if err.to_string().contains("not found") => {}
            Err(err) => return Err(self.failed(format!("delete stream {name}"), err)),
        }
        rmicro::sync::lock(&self.inner.streams).remove(topic);
        Ok(())
    }

    /// Publishes a dead letter; true once it is safely stored.
    pub(crate) async fn dead_letter(&self, topic: &str, dead: Message) -> bool {
        match self.publish(&dead_letter_topic(topic), dead).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%topic, error = %err, "cannot publish a dead letter; the message stays pending");
                false
            }
        }
    }
}
