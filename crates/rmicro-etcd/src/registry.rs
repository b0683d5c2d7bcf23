//! The etcd registry: go-micro's layout, one key per node on a lease.

use crate::client::{EtcdClient, EtcdError, KeyValue, WatchEvent};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use rmicro::registry::{
    Action, Event, Node, Registry, RegistryError, Service, Watcher, merge_by_version,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Where go-micro's etcd registry keeps its records.
pub const DEFAULT_PREFIX: &str = "/micro/registry/";

/// A [`Registry`] on etcd, in go-micro's layout: each node is a key
/// `/micro/registry/<service>/<node-id>` whose value is the JSON of the service
/// holding just that node, attached to a lease of the registration TTL. A node that
/// stops refreshing disappears when its lease expires; `watch` is an etcd watch on
/// the prefix.
///
/// Must be created inside a tokio runtime; it connects lazily.
pub struct EtcdRegistry {
    client: EtcdClient,
    records: Records,
    /// Node key → its lease, so refreshes only keep the lease alive.
    leases: Mutex<HashMap<String, Lease>>,
}

impl EtcdRegistry {
    /// A registry on the etcd cluster at `addresses` (comma-separated `host:port`).
    pub fn new(addresses: &str) -> Result<Self, RegistryError> {
        let client = EtcdClient::new(addresses).map_err(|e| RegistryError::BadAddress {
            registry: "etcd".into(),
            address: crate::client::redacted(addresses),
            detail: e.to_string(),
        })?;
        Ok(Self::with_client(client))
    }

    /// A registry using an existing client.
    pub fn with_client(client: EtcdClient) -> Self {
        let records = Records {
            prefix: DEFAULT_PREFIX.to_owned(),
            registry: format!("etcd://{}", client.endpoints()),
        };
        EtcdRegistry {
            client,
            records,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps records under `prefix` instead of `/micro/registry/` (it gets a
    /// trailing `/` if missing) — e.g. to let test runs share one etcd.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.records.prefix = if prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        self
    }

    /// The etcd client underneath.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    fn service_prefix(&self, name: &str) -> String {
        format!("{}{}/", self.records.prefix, name.replace('/', "-"))
    }

    fn node_key(&self, service: &str, node: &str) -> String {
        format!("{}{}", self.service_prefix(service), node.replace('/', "-"))
    }

    fn failed(&self, operation: &'static str, err: EtcdError) -> RegistryError {
        RegistryError::Backend {
            registry: self.describe(),
            operation,
            detail: err.to_string(),
        }
    }

    fn remembered(&self, key: &str) -> Option<Lease> {
        rmicro::sync::lock(&self.leases).get(key).cloned()
    }

    fn remember(&self, key: String, lease: Lease) {
        rmicro::sync::lock(&self.leases).insert(key, lease);
    }

    fn forget(&self, key: &str) -> Option<Lease> {
        rmicro::sync::lock(&self.leases).remove(key)
    }

    async fn register_node(
        &self,
        service: &Service,
        node: &Node,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let key = self.node_key(&service.name, &node.id);
        let record = Service {
            nodes: vec![node.clone()],
            ..service.clone()
        };
        let value = serde_json::to_vec(&record).map_err(|e| RegistryError::Backend {
            registry: self.describe(),
            operation: "encode a record",
            detail: e.to_string(),
        })?;
        let previous = self.remembered(&key);
        if let Some(lease) = previous.as_ref().filter(|l| l.ttl == ttl) {
            let alive = self
                .client
                .keep_alive_once(lease.id)
                .await
                .map_err(|e| self.failed("refresh a lease", e))?;
            if alive.is_some() {
                if lease.value != value {
                    self.client
                        .put(&key, value.clone(), lease.id)
                        .await
                        .map_err(|e| self.failed("update a record", e))?;
                    self.remember(key, Lease { value, ..*lease });
                }
                return Ok(());
            }
            tracing::info!(%key, "lease expired (etcd was away longer than the TTL); registering again");
        }
        let id = self
            .client
            .grant(ttl)
            .await
            .map_err(|e| self.failed("grant a lease", e))?;
        self.client
            .put(&key, value.clone(), id)
            .await
            .map_err(|e| self.failed("write a record", e))?;
        self.remember(key, Lease { id, ttl, value });
        if let Some(old) = previous.filter(|old| old.id != id) {
            // The key has moved to the new lease; the old one holds nothing now.
            if let Err(err) = self.client.revoke(old.id).await {
                tracing::debug!(error = %err, "could not revoke a replaced lease; it will expire");
            }
        }
        Ok(())
    }
}

/// A lease this registry holds for one node key.
#[derive(Clone)]
struct Lease {
    id: i64,
    ttl: Duration,
    /// The record last written under it.
    value: Vec<u8>,
}

/// How records are laid out and read: the key prefix and go-micro's JSON. Owned by
/// the registry and cloned into watch streams.
#[derive(Clone)]
struct Records {
    prefix: String,
    registry: String,
}

impl Records {
    fn decode(&self, kv: &KeyValue) -> Result<Service, RegistryError> {
        serde_json::from_slice(&kv.value).map_err(|e| RegistryError::Corrupt {
            registry: self.registry.clone(),
            key: kv.key.clone(),
            detail: e.to_string(),
        })
    }

    /// Decodes records, skipping (and logging) unreadable ones so that one bad key
    /// written by someone else does not hide every service.
    fn decode_all(&self, kvs: &[KeyValue]) -> Vec<Service> {
        kvs.iter()
            .filter_map(|kv| match self.decode(kv) {
                Ok(service) => Some(service),
                Err(err) => {
                    tracing::warn!(error = %err, "skipping registry record");
                    None
                }
            })
            .collect()
    }

    /// Turns an etcd watch event into a registry event; `None` for keys that are
    /// not node records.
    fn event(&self, event: WatchEvent) -> Option<Event> {
        match event {
            WatchEvent::Put(kv) => {
                let service = match self.decode(&kv) {
                    Ok(service) => service,
                    Err(err) => {
                        tracing::warn!(error = %err, "skipping registry record");
                        return None;
                    }
                };
                let action = if kv.create_revision == kv.mod_revision {
                    Action::Create
                } else {
                    Action::Update
                };
                Some(Event { action, service })
            }
            WatchEvent::Delete { key, prev } => {
                if let Some(service) = prev.as_ref().and_then(|kv| self.decode(kv).ok()) {
                    return Some(Event {
                        action: Action::Delete,
                        service,
                    });
                }
                // No previous value (compacted): the key still names service and node.
                let rest = key.strip_prefix(&self.prefix)?;
                let (name, id) = rest.split_once('/')?;
                Some(Event {
                    action: Action::Delete,
                    service: Service {
                        name: name.to_owned(),
                        version: String::new(),
                        metadata: Default::default(),
                        endpoints: Vec::new(),
                        nodes: vec![Node {
                            id: id.to_owned(),
                            address: String::new(),
                            metadata: Default::default(),
                        }],
                    },
                })
            }
        }
    }
}

impl Registry for EtcdRegistry {
    fn describe(&self) -> String {
        self.records.registry.clone()
    }

    fn register(
        &self,
        service: &Service,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let service = service.clone();
        async move {
            for node in &service.nodes {
                self.register_node(&service, node, ttl).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn deregister(&self, service: &Service) -> BoxFuture<'_, Result<(), RegistryError>> {
        let service = service.clone();
        async move {
            for node in &service.nodes {
                let key = self.node_key(&service.name, &node.id);
                self.client
                    .delete(&key)
                    .await
                    .map_err(|e| self.failed("delete a record", e))?;
                if let Some(lease) = self.forget(&key) {
                    self.client
                        .revoke(lease.id)
                        .await
                        .map_err(|e| self.failed("revoke a lease", e))?;
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn get_service(&self, name: &str) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        let prefix = self.service_prefix(name);
        async move {
            let (kvs, _) = self
                .client
                .get_prefix(&prefix)
                .await
                .map_err(|e| self.failed("read a service", e))?;
            Ok(merge_by_version(self.records.decode_all(&kvs)))
        }
        .boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        async move {
            let (kvs, _) = self
                .client
                .get_prefix(&self.records.prefix)
                .await
                .map_err(|e| self.failed("list services", e))?;
            let mut by_name: std::collections::BTreeMap<String, Vec<Service>> = Default::default();
            for service in self.records.decode_all(&kvs) {
                by_name
                    .entry(service.name.clone())
                    .or_default()
                    .push(service);
            }
            Ok(by_name.into_values().flat_map(merge_by_version).collect())
        }
        .boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, RegistryError>> {
        let prefix = match service {
            Some(name) => self.service_prefix(name),
            None => self.records.prefix.clone(),
        };
        async move {
            let batches = self
                .client
                .watch_prefix(&prefix, 0)
                .await
                .map_err(|e| self.failed("watch", e))?;
            let records = self.records.clone();
            let events = batches.flat_map(move |batch| {
                let items: Vec<Result<Event, RegistryError>> = match batch {
                    Ok(events) => events
                        .into_iter()
                        .filter_map(|e| records.event(e))
                        .map(Ok)
                        .collect(),
                    Err(err) => vec![Err(RegistryError::Backend {
                        registry: records.registry.clone(),
                        operation: "watch",
                        detail: err.to_string(),
                    })],
                };
                futures_util::stream::iter(items)
            });
            Ok(Box::pin(events) as Watcher)
        }
        .boxed()
    }
}
