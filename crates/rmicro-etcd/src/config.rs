//! etcd as a config center: every key under a prefix is a config path.

use crate::client::{EtcdClient, WatchEvent};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use rmicro::config::ConfigError;
use rmicro::config::source::{Source, SourceEvent, parse_keys, path_key, tree_from_keys};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A config source on etcd: with prefix `/micro/config`, the key
/// `/micro/config/mysql` holding `{"host": "db"}` is `mysql.host`, and
/// `/micro/config/mysql/port` holding `3306` is `mysql.port`. Values are JSON or
/// YAML. The watch follows etcd from the revision it read, so no change is missed;
/// after a lost connection it re-reads and watches again.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let source = rmicro_etcd::EtcdSource::new("127.0.0.1:2379", "/micro/config")?;
/// let config = rmicro::config::Config::builder().source(source).build().await?;
/// let port = config.get("mysql.port").int_or(3306);
/// # let _ = port; Ok(()) }
/// ```
pub struct EtcdSource {
    client: EtcdClient,
    prefix: String,
}

impl EtcdSource {
    /// A source reading keys under `prefix` from the etcd at `addresses`.
    pub fn new(addresses: &str, prefix: &str) -> Result<Self, ConfigError> {
        let client = EtcdClient::new(addresses).map_err(|e| ConfigError::Source {
            source_name: format!("etcd://{}{prefix}", crate::client::redacted(addresses)),
            detail: e.to_string(),
        })?;
        Ok(Self::with_client(client, prefix))
    }

    /// A source using an existing client.
    pub fn with_client(client: EtcdClient, prefix: &str) -> Self {
        let prefix = format!("/{}", prefix.trim_matches('/'));
        EtcdSource { client, prefix }
    }

    fn failed(&self, err: impl std::fmt::Display) -> ConfigError {
        ConfigError::Source {
            source_name: self.name(),
            detail: err.to_string(),
        }
    }

    /// Whether `key` belongs to this source (the prefix itself or below it).
    fn owns(&self, key: &str) -> bool {
        rmicro::config::source::is_under(&self.prefix, key)
    }

    /// Reads every key; returns the good values, the read errors, and the revision.
    async fn read(
        &self,
        good: &mut BTreeMap<String, Value>,
    ) -> Result<(Vec<ConfigError>, i64), ConfigError> {
        let (kvs, revision) = self
            .client
            .get_prefix(&self.prefix)
            .await
            .map_err(|e| self.failed(e))?;
        let present: Vec<(String, Option<String>)> = kvs
            .into_iter()
            .filter(|kv| self.owns(&kv.key))
            .map(|kv| {
                (
                    kv.key,
                    Some(String::from_utf8_lossy(&kv.value).into_owned()),
                )
            })
            .collect();
        // Keys deleted while we were away.
        let keys: std::collections::BTreeSet<&String> = present.iter().map(|(k, _)| k).collect();
        let gone: Vec<(String, Option<String>)> = good
            .keys()
            .filter(|k| !keys.contains(k))
            .map(|k| (k.clone(), None))
            .collect();
        let errors = parse_keys(&self.name(), good, present.into_iter().chain(gone));
        Ok((errors, revision))
    }

    fn tree(&self, good: &BTreeMap<String, Value>) -> Value {
        tree_from_keys(&self.prefix, good.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Reads, then follows the watch until it breaks; returns why it broke.
    async fn session(
        &self,
        good: &mut BTreeMap<String, Value>,
        tx: &tokio::sync::mpsc::Sender<SourceEvent>,
    ) -> ConfigError {
        let revision = match self.read(good).await {
            Ok((errors, revision)) => {
                for err in errors {
                    if tx.send(SourceEvent::Error(err)).await.is_err() {
                        return self.failed("watcher dropped");
                    }
                }
                if tx.send(SourceEvent::Tree(self.tree(good))).await.is_err() {
                    return self.failed("watcher dropped");
                }
                revision
            }
            Err(err) => return err,
        };
        let mut batches = match self.client.watch_prefix(&self.prefix, revision + 1).await {
            Ok(batches) => batches,
            Err(err) => return self.failed(err),
        };
        while let Some(batch) = batches.next().await {
            let events = match batch {
                Ok(events) => events,
                Err(err) => return self.failed(format!("watch broke: {err}")),
            };
            let changes = events.into_iter().map(|event| match event {
                WatchEvent::Put(kv) => (
                    kv.key,
                    Some(String::from_utf8_lossy(&kv.value).into_owned()),
                ),
                WatchEvent::Delete { key, .. } => (key, None),
            });
            let changes: Vec<_> = changes.filter(|(k, _)| self.owns(k)).collect();
            if changes.is_empty() {
                continue;
            }
            for err in parse_keys(&self.name(), good, changes) {
                if tx.send(SourceEvent::Error(err)).await.is_err() {
                    return self.failed("watcher dropped");
                }
            }
            if tx.send(SourceEvent::Tree(self.tree(good))).await.is_err() {
                return self.failed("watcher dropped");
            }
        }
        self.failed("watch ended")
    }
}

impl Source for EtcdSource {
    fn name(&self) -> String {
        format!("etcd://{}{}", self.client.endpoints(), self.prefix)
    }

    fn load(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        Box::pin(async move {
            let mut good = BTreeMap::new();
            let (errors, _) = self.read(&mut good).await?;
            for err in errors {
                tracing::warn!(error = %err, "skipping an unreadable config key");
            }
            Ok(self.tree(&good))
        })
    }

    fn watch(self: Arc<Self>) -> Option<BoxStream<'static, SourceEvent>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut good = BTreeMap::new();
            let mut backoff = Duration::from_millis(200);
            loop {
                let started = tokio::time::Instant::now();
                let err = tokio::select! {
                    () = tx.closed() => return,
                    err = self.session(&mut good, &tx) => err,
                };
                if tx.is_closed() {
                    return;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(200);
                }
                // The last good values stay in force while etcd is away.
                let _ = tx.send(SourceEvent::Error(err)).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Some(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    fn set(&self, path: &str, value: &Value) -> BoxFuture<'_, Result<(), ConfigError>> {
        let key = path_key(&self.prefix, path);
        let text = value.to_string();
        Box::pin(async move {
            self.client
                .put(&key, text.into_bytes(), 0)
                .await
                .map(drop)
                .map_err(|e| self.failed(e))
        })
    }
}
