//! Publishing: one connection with a confirm-mode channel (reconnected when it is
//! gone for good), persistent messages to the topic exchange, each confirmed.

use crate::RabbitBroker;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use rmicro::broker::{BrokerError, Message};
use std::sync::Arc;
use std::time::Duration;

fn headers_of(message: &Message) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in &message.headers {
        table.insert(
            ShortString::from(key.as_str()),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    table
}

impl RabbitBroker {
    /// The connection and the confirm-mode publishing channel; reconnects when the
    /// connection is gone for good.
    pub(crate) async fn publishing(&self) -> Result<(Arc<Connection>, Channel), BrokerError> {
        let mut link = self.inner.link.lock().await;
        if let Some((connection, channel)) = link.as_ref()
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok((connection.clone(), channel.clone()));
        }
        let properties = ConnectionProperties::default()
            .with_connection_name("rmicro".into())
            .enable_auto_recover();
        let connection = Arc::new(
            tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&self.inner.uri, properties),
            )
            .await
            .map_err(|_| self.failed("connect", "no answer within 5 s"))?
            .map_err(|e| self.failed("connect", e))?,
        );
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.failed("open a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.failed("enable publisher confirms", e))?;
        channel
            .exchange_declare(
                self.inner.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.failed(format!("declare exchange {}", self.inner.exchange), e))?;
        *link = Some((connection.clone(), channel.clone()));
        Ok((connection, channel))
    }

    pub(crate) async fn forget_connection(&self) {
        *self.inner.link.lock().await = None;
    }

    pub(crate) async fn publish_once(
        &self,
        topic: &str,
        message: &Message,
    ) -> Result<(), BrokerError> {
        let (_, channel) = self.publishing().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers_of(message));
        let confirm = channel
            .basic_publish(
                self.inner.exchange.as_str().into(),
                topic.into(),
                BasicPublishOptions::default(),
                &message.body,
                properties,
            )
            .await
            .map_err(|e| self.failed(format!("publish to {topic}"), e))?;
        let confirmation = tokio::time::timeout(Duration::from_secs(10), confirm)
            .await
            .map_err(|_| {
                self.failed(
                    format!("confirm a publish to {topic}"),
                    "no confirm within 10 s",
                )
            })?
            .map_err(|e| self.failed(format!("confirm a publish to {topic}"), e))?;
        if confirmation.is_ack() {
            Ok(())
        } else {
            Err(self.failed(format!("publish to {topic}"), "the broker refused (nack)"))
        }
    }
}
