//! Consul KV as a config center, as the go-micro stack keeps database settings
//! under `micro/config`.

use crate::client::{ConsulClient, ConsulError, segment};
use base64::Engine;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use rmicro::config::ConfigError;
use rmicro::config::source::{Source, SourceEvent, parse_keys, path_key, tree_from_keys};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A config source on Consul's KV store: with prefix `micro/config`, the key
/// `micro/config/mysql` holding `{"host": "db"}` is `mysql.host`; values are JSON or
/// YAML. The watch is a blocking query on the prefix; after an error it re-reads.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let source = rmicro_consul::ConsulSource::new("127.0.0.1:8500", "/micro/config")?;
/// let config = rmicro::config::Config::builder().source(source).build().await?;
/// let host = config.get("mysql.host").string_or("localhost");
/// # let _ = host; Ok(()) }
/// ```
pub struct ConsulSource {
    client: ConsulClient,
    prefix: String,
    wait: Duration,
}

/// One entry of `GET /v1/kv/<prefix>?recurse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    key: String,
    value: Option<String>,
}

impl ConsulSource {
    /// A source reading keys under `prefix` from the agent at `address`.
    pub fn new(address: &str, prefix: &str) -> Result<Self, ConfigError> {
        let client = ConsulClient::new(address).map_err(|e| ConfigError::Source {
            source_name: format!("consul://{address}/{}", prefix.trim_matches('/')),
            detail: e.to_string(),
        })?;
        Ok(Self::with_client(client, prefix))
    }

    /// A source using an existing client.
    pub fn with_client(client: ConsulClient, prefix: &str) -> Self {
        ConsulSource {
            client,
            prefix: prefix.trim_matches('/').to_owned(),
            wait: crate::registry::DEFAULT_WAIT,
        }
    }

    /// How long each blocking query waits (default 30 s).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    fn failed(&self, err: impl std::fmt::Display) -> ConfigError {
        ConfigError::Source {
            source_name: self.name(),
            detail: err.to_string(),
        }
    }

    fn owns(&self, key: &str) -> bool {
        rmicro::config::source::is_under(&self.prefix, key)
    }

    /// Every key's raw text under the prefix, and the index it was read at.
    async fn read(
        &self,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(BTreeMap<String, String>, u64), ConfigError> {
        let path: String = format!(
            "/v1/kv/{}?recurse",
            self.prefix
                .split('/')
                .map(segment)
                .collect::<Vec<_>>()
                .join("/")
        );
        let reply = self
            .client
            .get_optional(&path, blocking)
            .await
            .map_err(|e: ConsulError| self.failed(e))?;
        let index = reply.index.unwrap_or(0);
        if !reply.found {
            return Ok((BTreeMap::new(), index));
        }
        let entries: Vec<KvEntry> = serde_json::from_slice(&reply.body)
            .map_err(|e| self.failed(format!("unreadable KV listing: {e}")))?;
        let mut raw = BTreeMap::new();
        for entry in entries {
            // Folders (`micro/config/`) carry no value.
            let Some(encoded) = entry.value else { continue };
            if !self.owns(entry.key.trim_end_matches('/')) {
                continue;
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| self.failed(format!("key `{}` is not base64: {e}", entry.key)))?;
            raw.insert(entry.key, String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok((raw, index))
    }

    /// Applies a fresh listing to the parsed values; returns the parse errors of
    /// the keys that changed.
    fn absorb(
        &self,
        seen: &mut BTreeMap<String, String>,
        good: &mut BTreeMap<String, Value>,
        raw: BTreeMap<String, String>,
    ) -> Vec<ConfigError> {
        let mut changes: Vec<(String, Option<String>)> = seen
            .keys()
            .filter(|k| !raw.contains_key(*k))
            .map(|k| (k.clone(), None))
            .collect();
        changes.extend(
            raw.iter()
                .filter(|(k, v)| seen.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
        *seen = raw;
        parse_keys(&self.name(), good, changes)
    }

    fn tree(&self, good: &BTreeMap<String, Value>) -> Value {
        tree_from_keys(&self.prefix, good.iter().map(|(k, v)| (k.as_str(), v)))
    }
}

impl Source for ConsulSource {
    fn name(&self) -> String {
        format!("consul://{}/{}", self.client.address(), self.prefix)
    }

    fn load(&self) -> BoxFuture<'_, Result<Value, ConfigError>> {
        Box::pin(async move {
            let (raw, _) = self.read(None).await?;
            let mut good = BTreeMap::new();
            for err in self.absorb(&mut BTreeMap::new(), &mut good, raw) {
                tracing::warn!(error = %err, "skipping an unreadable config key");
            }
            Ok(self.tree(&good))
        })
    }

    fn watch(self: Arc<Self>) -> Option<BoxStream<'static, SourceEvent>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            let mut good = BTreeMap::new();
            let mut index = 0u64;
            let mut backoff = Duration::from_millis(200);
            loop {
                let blocking = (index > 0).then_some((index, self.wait));
                let read = tokio::select! {
                    () = tx.closed() => return,
                    read = self.read(blocking) => read,
                };
                match read {
                    Ok((raw, next)) => {
                        backoff = Duration::from_millis(200);
                        // Consul's rule: an index that goes backwards means start over.
                        index = if next < index { 0 } else { next.max(1) };
                        let before = self.tree(&good);
                        for err in self.absorb(&mut seen, &mut good, raw) {
                            if tx.send(SourceEvent::Error(err)).await.is_err() {
                                return;
                            }
                        }
                        let after = self.tree(&good);
                        if (after != before || blocking.is_none())
                            && tx.send(SourceEvent::Tree(after)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(err) => {
                        // The last good values stay in force while Consul is away.
                        if tx.send(SourceEvent::Error(err)).await.is_err() {
                            return;
                        }
                        index = 0;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Some(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    fn set(&self, path: &str, value: &Value) -> BoxFuture<'_, Result<(), ConfigError>> {
        let key = path_key(&self.prefix, path);
        let body = value.to_string().into_bytes();
        Box::pin(async move {
            let path = format!(
                "/v1/kv/{}",
                key.split('/').map(segment).collect::<Vec<_>>().join("/")
            );
            self.client
                .put(&path, Some(body))
                .await
                .map(drop)
                .map_err(|e| self.failed(e))
        })
    }
}
