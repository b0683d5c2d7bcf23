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

/// How many times a publish that found no stream makes sure of the stream and
/// tries again before it fails (pauses 10, 20, 40, 80 ms: 150 ms in all).
const STREAM_RETRIES: usize = 4;

/// Why one JetStream publish attempt did not go through.
enum Unsent {
    /// The server had no stream bound to the subject ("no responders").
    NoStream,
    /// Anything else: final.
    Failed(BrokerError),
}

impl From<BrokerError> for Unsent {
    fn from(err: BrokerError) -> Self {
        Unsent::Failed(err)
    }
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
        // A stream that another process is still setting up (the server lists it
        // before its subject is bound) or that an operator deleted answers "no
        // responders": make sure it exists and publish again, a few times, briefly.
        let mut pause = Duration::from_millis(10);
        for attempt in 0..=STREAM_RETRIES {
            match self.publish_jetstream_once(topic, &message).await {
                Ok(()) => return Ok(()),
                Err(Unsent::Failed(err)) => return Err(err),
                Err(Unsent::NoStream) if attempt < STREAM_RETRIES => {
                    rmicro::sync::lock(&self.inner.streams).remove(topic);
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                }
                Err(Unsent::NoStream) => break,
            }
        }
        Err(self.failed(
            format!("confirm a publish to {topic}"),
            format!(
                "no stream took it: stream {} is missing or not bound to the subject after {} attempts",
                stream_name(topic),
                STREAM_RETRIES + 1
            ),
        ))
    }

    async fn publish_jetstream_once(&self, topic: &str, message: &Message) -> Result<(), Unsent> {
        let known = rmicro::sync::lock(&self.inner.streams).contains(topic);
        if !known {
            // Boxed: creating a stream is a large future, and inline it would make
            // every publish allocate and move it.
            Box::pin(self.ensure_stream(topic)).await?;
        }
        let js = self.jetstream_context().await?;
        // Bytes and the header map are cheap to clone (reference-counted body).
        let sent = if message.headers.is_empty() {
            js.publish(topic.to_owned(), message.body.clone()).await
        } else {
            js.publish_with_headers(topic.to_owned(), headers_of(message), message.body.clone())
                .await
        };
        let ack = sent.map_err(|e| self.unsent(format!("publish to {topic}"), e))?;
        ack.await
            .map_err(|e| self.unsent(format!("confirm a publish to {topic}"), e))?;
        Ok(())
    }

    fn unsent(&self, operation: String, err: jetstream::context::PublishError) -> Unsent {
        if err.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
            Unsent::NoStream
        } else {
            Unsent::Failed(self.failed(operation, err))
        }
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
