//! The registry: where services announce their nodes and callers find them.
//!
//! A [`Registry`] stores records in go-micro's shape — a [`Service`] with its version,
//! metadata, [`Endpoint`]s (filled by codegen from the `.proto`) and [`Node`]s — and
//! serializes them as go-micro's JSON, so tools that read a go-micro registry read
//! ours. A service registers itself on start with a TTL, re-registers on an interval,
//! and deregisters first thing on shutdown; callers don't ask the registry per call:
//! the [`crate::selector`] keeps a cache fed by [`Registry::watch`].
//!
//! Implementations: [`MemoryRegistry`] (one process), [`LocalRegistry`] (the default:
//! every process on one host, no daemon, no multicast), and the adapter crates
//! (`rmicro-etcd`, `rmicro-consul`, …) for real clusters.

pub mod compact;
mod local;
mod memory;
mod registration;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use local::LocalRegistry;
pub use memory::MemoryRegistry;
pub(crate) use registration::Registration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Reads JSON `null` as the empty value: go-micro writes nil maps and slices
/// (`"metadata":null`, `"endpoints":null`) that way.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A field of a message, or a message itself: `{name, type, values}`, nested up to 3 levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Value {
    /// Field name (the message's name at the top level).
    pub name: String,
    /// Type name: a scalar (`string`, `int32`, …) or a message name (`HelloRequest`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Fields of a message type; empty for scalars.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub values: Vec<Value>,
}

impl Value {
    /// A value with the given name, type and fields.
    pub fn new(name: impl Into<String>, kind: impl Into<String>, values: Vec<Value>) -> Self {
        Value {
            name: name.into(),
            kind: kind.into(),
            values,
        }
    }
}

/// An endpoint of a service: `{name, request, response, metadata}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Endpoint {
    /// `Service.Method`, e.g. `Greeter.SayHello`.
    pub name: String,
    /// The request message.
    pub request: Option<Value>,
    /// The response message.
    pub response: Option<Value>,
    /// `stream: "true"|"false"` and, for subscribers, `topic` and `subscriber`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
}

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Node {
    /// `<service-name>-<uuid>`.
    pub id: String,
    /// `host:port` callers dial.
    pub address: String,
    /// `transport`, `server`, `registry`, `protocol`, … as in go-micro.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
}

/// A service as the registry knows it: one version of it and some of its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Service {
    /// The service name (`greeter`).
    pub name: String,
    /// Its version (`1.0.0`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// Free-form service metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// What it serves.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<Endpoint>,
    /// Where it runs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<Node>,
}

/// What happened to a service's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A node appeared.
    Create,
    /// A node's record changed (or was refreshed with different content).
    Update,
    /// A node left or expired.
    Delete,
}

/// A change seen by [`Registry::watch`]: the service with the node(s) concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The service, holding just the affected node(s).
    pub service: Service,
}

/// A stream of registry changes.
pub type Watcher = BoxStream<'static, Result<Event, RegistryError>>;

/// Why a registry operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry backend could not be reached or refused the operation.
    #[error("registry `{registry}` failed to {operation}: {detail}")]
    Backend {
        /// Which registry (`local:/tmp/...`, `etcd://...`).
        registry: String,
        /// What was attempted.
        operation: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A record could not be read back.
    #[error("registry `{registry}` holds an unreadable record `{key}`: {detail}")]
    Corrupt {
        /// Which registry.
        registry: String,
        /// The record's key or path.
        key: String,
        /// Parse error.
        detail: String,
    },
    /// `--registry` named an implementation that does not exist or is not installed.
    #[error("unknown registry `{name}`: this program knows {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names this program can build, comma-separated.
        known: String,
    },
    /// `--registry-address` could not be used by the chosen registry.
    #[error("registry `{registry}` cannot use address `{address}`: {detail}")]
    BadAddress {
        /// Which registry.
        registry: String,
        /// The address given.
        address: String,
        /// Why it is unusable.
        detail: String,
    },
}

/// Service discovery: register, deregister, look up, list and watch services.
///
/// Methods return boxed futures so that `Arc<dyn Registry>` works.
pub trait Registry: Send + Sync + 'static {
    /// A short description, e.g. `local:/tmp/rmicro-registry-0` or `etcd://10.0.0.5:2379`.
    fn describe(&self) -> String;

    /// Adds or refreshes `service`'s nodes; they expire after `ttl` unless refreshed.
    fn register(
        &self,
        service: &Service,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Removes `service`'s nodes.
    fn deregister(&self, service: &Service) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Every version of `name` with its live nodes; empty if none.
    fn get_service(&self, name: &str) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>>;

    /// Every service (versions listed separately; nodes may be omitted).
    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>>;

    /// Changes to `service` (or to every service when `None`), from now on.
    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, RegistryError>>;
}

/// A shared registry.
pub type SharedRegistry = Arc<dyn Registry>;

impl std::fmt::Debug for dyn Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({})", self.describe())
    }
}

/// Builds a registry from an optional `--registry-address`; adapter crates provide
/// one in [`static@REGISTRIES`], and [`install`] adds one at run time.
pub type Factory = fn(Option<&str>) -> Result<SharedRegistry, RegistryError>;

/// The registries adapter crates add for `--registry NAME`, collected by the linker:
/// an adapter crate in the build (e.g. `rmicro-etcd`, or the `rmicro` facade's `etcd`
/// feature) is selectable with no call at start-up. (Not compiled here: it names an
/// adapter's type; `rmicro-etcd` registers itself this way.)
///
/// ```ignore
/// #[linkme::distributed_slice(rmicro::registry::REGISTRIES)]
/// static ETCD: (&str, rmicro::registry::Factory) = ("etcd", |address| Ok(EtcdRegistry::shared(address)));
/// ```
#[linkme::distributed_slice]
pub static REGISTRIES: [(&'static str, Factory)];

static PLUGINS: crate::plugins::Plugins<Factory> = crate::plugins::Plugins::new(
    || {
        vec![
            ("memory", |_| {
                Ok(Arc::new(MemoryRegistry::new()) as SharedRegistry)
            }),
            ("local", |address| {
                Ok(Arc::new(match address {
                    Some(dir) if !dir.is_empty() => LocalRegistry::new(dir),
                    _ => LocalRegistry::default_location(),
                }) as SharedRegistry)
            }),
        ]
    },
    || REGISTRIES.static_slice(),
);

/// Makes `--registry NAME` build its registry with `factory` in this process.
///
/// For a registry of the application's own (adapter crates add theirs to
/// [`static@REGISTRIES`]); a later call for the same name replaces the earlier one.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::registry::{self, MemoryRegistry, SharedRegistry};
/// use std::sync::Arc;
///
/// registry::install("shared-memory", |_address| {
///     Ok(Arc::new(MemoryRegistry::new()) as SharedRegistry)
/// });
/// assert!(registry::from_flags("shared-memory", None).is_ok());
/// assert!(registry::names().contains(&"shared-memory".to_string()));
/// ```
pub fn install(name: &str, factory: Factory) {
    PLUGINS.install(name, factory);
}

/// The registry names `--registry` accepts in this process, sorted.
pub fn names() -> Vec<String> {
    PLUGINS.names()
}

/// Builds a registry from `--registry NAME --registry-address ADDR`.
///
/// Knows `memory` and `local` (the default, also for an empty name) and whatever
/// adapter crates added with [`install`].
pub fn from_flags(name: &str, address: Option<&str>) -> Result<SharedRegistry, RegistryError> {
    let name = if name.is_empty() { "local" } else { name };
    match PLUGINS.get(name) {
        Some(factory) => factory(address.filter(|a| !a.is_empty())),
        None => Err(RegistryError::Unknown {
            name: name.to_owned(),
            known: names().join(", "),
        }),
    }
}

/// The per-node records of a registry at one moment, for registries that re-read
/// their records (polling, blocking queries) and report the difference as watch
/// events.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use rmicro::registry::{Action, NodeRecords};
/// # fn record(name: &str, version: &str, id: &str, address: &str) -> rmicro::registry::Service {
/// #     let node = rmicro::registry::Node { id: id.into(), address: address.into(), ..Default::default() };
/// #     rmicro::registry::Service { name: name.into(), version: version.into(), nodes: vec![node], ..Default::default() }
/// # }
///
/// let a = record("greeter", "1.0.0", "greeter-a", "127.0.0.1:1");
/// let b = record("greeter", "1.0.0", "greeter-b", "127.0.0.1:2");
/// let mut known = NodeRecords::new([a.clone()]);
/// let events = known.update([b.clone()]);
/// assert_eq!(events.len(), 2);
/// assert_eq!((events[0].action, &events[0].service), (Action::Delete, &a));
/// assert_eq!((events[1].action, &events[1].service), (Action::Create, &b));
/// assert!(known.update([b]).is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct NodeRecords(BTreeMap<(String, String), Service>);

impl NodeRecords {
    /// Starts from `records` (split into one record per node).
    pub fn new(records: impl IntoIterator<Item = Service>) -> Self {
        NodeRecords(Self::index(records))
    }

    fn index(records: impl IntoIterator<Item = Service>) -> BTreeMap<(String, String), Service> {
        let mut map = BTreeMap::new();
        for record in records {
            for single in memory::per_node(&record) {
                let key = (single.name.clone(), single.nodes[0].id.clone());
                map.insert(key, single);
            }
        }
        map
    }

    /// Replaces the records with `current` and returns what changed: deletions and
    /// updates first, then creations, each in node-id order.
    pub fn update(&mut self, current: impl IntoIterator<Item = Service>) -> Vec<Event> {
        let current = Self::index(current);
        let mut events = Vec::new();
        for (key, old) in &self.0 {
            match current.get(key) {
                None => events.push(Event {
                    action: Action::Delete,
                    service: old.clone(),
                }),
                Some(new) if new != old => events.push(Event {
                    action: Action::Update,
                    service: new.clone(),
                }),
                Some(_) => {}
            }
        }
        for (key, new) in &current {
            if !self.0.contains_key(key) {
                events.push(Event {
                    action: Action::Create,
                    service: new.clone(),
                });
            }
        }
        self.0 = current;
        events
    }

    /// The records, one per node.
    pub fn records(&self) -> impl Iterator<Item = &Service> {
        self.0.values()
    }
}

/// A [`Watcher`] for registries that re-read their records (polling, blocking
/// queries): starting from `initial`, each snapshot `snapshots` yields is compared
/// with the previous one and the differences are sent as events. A snapshot error
/// is sent and ends the watch (callers such as the selector cache resync and watch
/// again). The re-reading stops when the watcher is dropped.
///
/// ```
/// # extern crate rmicro_core as rmicro;
/// use futures_util::StreamExt;
/// use rmicro::registry::{Action, watch_snapshots};
/// # fn record(name: &str, version: &str, id: &str, address: &str) -> rmicro::registry::Service {
/// #     let node = rmicro::registry::Node { id: id.into(), address: address.into(), ..Default::default() };
/// #     rmicro::registry::Service { name: name.into(), version: version.into(), nodes: vec![node], ..Default::default() }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let a = record("greeter", "1.0.0", "greeter-a", "127.0.0.1:1");
/// let snapshots = futures_util::stream::iter([Ok(vec![]), Ok(vec![a.clone()])]);
/// let mut watcher = watch_snapshots(vec![a.clone()], snapshots);
/// let event = watcher.next().await.unwrap().unwrap();
/// assert_eq!((event.action, event.service), (Action::Delete, a.clone()));
/// let event = watcher.next().await.unwrap().unwrap();
/// assert_eq!((event.action, event.service), (Action::Create, a));
/// assert!(watcher.next().await.is_none());
/// # }
/// ```
pub fn watch_snapshots<S>(initial: Vec<Service>, snapshots: S) -> Watcher
where
    S: futures_util::Stream<Item = Result<Vec<Service>, RegistryError>> + Send + 'static,
{
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let mut known = NodeRecords::new(initial);
        let mut snapshots = std::pin::pin!(snapshots);
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = snapshots.next() => next,
            };
            match next {
                None => return,
                Some(Ok(current)) => {
                    for event in known.update(current) {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(err)) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Merges records of one name into one [`Service`] per version, as `get_service`
/// returns them; node order is by id so results are stable.
pub fn merge_by_version(records: impl IntoIterator<Item = Service>) -> Vec<Service> {
    let mut by_version: BTreeMap<String, Service> = BTreeMap::new();
    for record in records {
        match by_version.get_mut(&record.version) {
            Some(existing) => {
                for node in record.nodes {
                    existing.nodes.retain(|n| n.id != node.id);
                    existing.nodes.push(node);
                }
            }
            None => {
                by_version.insert(record.version.clone(), record);
            }
        }
    }
    let mut services: Vec<Service> = by_version.into_values().collect();
    for s in &mut services {
        s.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    }
    services
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_registry_conforms() {
        testing::conformance(&MemoryRegistry::new(), "", Duration::from_millis(500)).await;
    }

    #[tokio::test]
    async fn local_registry_conforms() {
        let dir = std::env::temp_dir().join(format!("rmicro-local-{}", uuid::Uuid::new_v4()));
        let registry = LocalRegistry::new(&dir).poll_interval(Duration::from_millis(50));
        testing::conformance(&registry, "", Duration::from_millis(500)).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn local_registry_drops_nodes_of_dead_processes_at_once() {
        let dir = std::env::temp_dir().join(format!("rmicro-local-{}", uuid::Uuid::new_v4()));
        let registry = LocalRegistry::new(&dir);
        let svc = testing::record("dead", "1", "dead-1", "127.0.0.1:1");
        registry
            .register(&svc, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(registry.get_service("dead").await.unwrap().len(), 1);
        // Rewrite the record as if a process that no longer exists had written it.
        let path = dir.join("dead").join("dead-1.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        json["pid"] = serde_json::json!(u32::MAX - 1);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        assert!(registry.get_service("dead").await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn local_registry_skips_corrupt_records() {
        let dir = std::env::temp_dir().join(format!("rmicro-local-{}", uuid::Uuid::new_v4()));
        let registry = LocalRegistry::new(&dir);
        let svc = testing::record("svc", "1", "svc-1", "127.0.0.1:1");
        registry
            .register(&svc, Duration::from_secs(60))
            .await
            .unwrap();
        std::fs::write(dir.join("svc").join("broken.json"), b"{not json").unwrap();
        let got = registry.get_service("svc").await.unwrap();
        assert_eq!(got[0].nodes, svc.nodes);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_registry_names_say_what_exists() {
        let err = from_flags("zookeeper", None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown registry `zookeeper`"), "{text}");
        assert!(text.contains("local, memory"), "{text}");
    }

    #[test]
    fn serializes_like_go_micro() {
        let ep = Endpoint {
            name: "Greeter.SayHello".into(),
            request: Some(Value::new(
                "HelloRequest",
                "HelloRequest",
                vec![Value::new("name", "string", vec![])],
            )),
            response: None,
            metadata: [("stream".to_owned(), "false".to_owned())].into(),
        };
        let json = serde_json::to_value(&ep).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "Greeter.SayHello",
                "request": {"name": "HelloRequest", "type": "HelloRequest",
                            "values": [{"name": "name", "type": "string"}]},
                "response": null,
                "metadata": {"stream": "false"}
            })
        );
        let back: Endpoint = serde_json::from_value(json).unwrap();
        assert_eq!(back, ep);
    }

    #[test]
    fn reads_go_micro_nulls_as_empty() {
        let json = r#"{"name":"legacy","version":"latest","metadata":null,"endpoints":null,
            "nodes":[{"id":"legacy-1","address":"10.0.0.9:8080","metadata":null}]}"#;
        let service: Service = serde_json::from_str(json).unwrap();
        assert!(service.metadata.is_empty() && service.endpoints.is_empty());
        assert!(service.nodes[0].metadata.is_empty());
        let value: Value =
            serde_json::from_str(r#"{"name":"a","type":"string","values":null}"#).unwrap();
        assert!(value.values.is_empty());
    }
}
