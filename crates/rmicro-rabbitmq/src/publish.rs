//! Publishing: one connection with a confirm-mode channel (reconnected when it is
//! gone for good), persistent messages to the topic exchange, each confirmed.

use crate::RabbitBroker;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::tcp::AMQPUriTcpExt;
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
    /// Opens a connection: plain, or TLS through the rustls configuration of the
    /// broker's [`LinkTls`](rmicro::transport::LinkTls) (lapin's own TLS would
    /// read the files once and trust no root without a CA file).
    async fn open(&self, properties: ConnectionProperties) -> lapin::Result<Connection> {
        let Some(tls) = &self.inner.tls else {
            return Connection::connect(&self.inner.uri, properties).await;
        };
        let mut uri: lapin::uri::AMQPUri = self
            .inner
            .uri
            .parse()
            .map_err(|e: String| lapin::Error::from(std::io::Error::other(e)))?;
        // The TCP connection is made plain; TLS is ours, on top of it.
        uri.scheme = lapin::uri::AMQPScheme::AMQP;
        let (host, port) = (uri.authority.host.clone(), uri.authority.port);
        let server_name = tls
            .settings
            .server_name_for(&host)
            .map_err(|e| lapin::Error::from(std::io::Error::other(e)))?;
        // lapin retries a failed connection (16 times, backing off, with
        // auto-recovery on): a certificate refused would hang the first connect for
        // minutes. One handshake first, up to the server's first AMQP bytes (a TLS
        // 1.3 server refuses a client certificate only then), fails it at once.
        preflight(&tls.config, server_name.clone(), &host, port).await?;
        let connector = lapin::tcp::RustlsConnector::from(tls.config.clone());
        let domain = match &server_name {
            rustls::pki_types::ServerName::DnsName(name) => name.as_ref().to_owned(),
            _ => host,
        };
        let runtime = lapin::runtime::default_runtime()?;
        Connection::connector(
            uri,
            runtime,
            async move |uri, runtime| {
                let plain = uri
                    .connect_with_config_async(lapin::tcp::TLSConfig::default(), &runtime)
                    .await?;
                Ok(plain.into_rustls(&connector, &domain).await?)
            },
            properties,
        )
        .await
    }

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
            tokio::time::timeout(Duration::from_secs(5), self.open(properties))
                .await
                .map_err(|_| self.failed("connect", "no answer within 5 s"))?
                .map_err(|e| {
                    let detail = rmicro::transport::error_chain(&e);
                    let explained = self.inner.tls.as_ref().and_then(|tls| {
                        tls.settings
                            .explain_observed(&tls.handshakes, &format!("{detail} {e:?}"))
                    });
                    match explained {
                        Some(sentence) => self.failed("connect", format!("{sentence} ({detail})")),
                        None => self.failed("connect", detail),
                    }
                })?,
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

/// Makes one TLS connection to `host:port`, sends the AMQP 0-9-1 protocol header
/// and waits for the server's first byte: what the server thinks of our
/// certificate (and we of its) is known after this, without lapin's retries.
async fn preflight(
    config: &Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
    host: &str,
    port: u16,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(server_name, tcp)
        .await?;
    tls.write_all(b"AMQP\x00\x00\x09\x01").await?;
    tls.flush().await?;
    let mut first = [0u8; 1];
    match tls.read(&mut first).await? {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the TLS connection before speaking AMQP",
        )),
        _ => Ok(()),
    }
}
