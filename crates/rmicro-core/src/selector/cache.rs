//! The node cache of one service: loaded from the registry once, then kept current
//! by a watch, and read without locks on every call.

use super::SelectError;
use super::hash::Ring;
use crate::registry::{Action, Event, Service, SharedRegistry};
use arc_swap::ArcSwap;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Longest a failing node is skipped.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// A node as the cache keeps it, with its load and health.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) id: Arc<str>,
    pub(crate) address: Arc<str>,
    pub(crate) version: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) in_flight: AtomicUsize,
    failures: AtomicU32,
    down_until_ms: AtomicU64,
}

/// A cached node, as reported by [`super::Selector::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Version of the service it runs.
    pub version: String,
    /// Calls in flight on it from this client.
    pub in_flight: usize,
    /// Whether it is backing off after failures.
    pub down: bool,
}

impl NodeState {
    fn new(service: &Service, node: &crate::registry::Node) -> Self {
        NodeState {
            id: Arc::from(node.id.as_str()),
            address: Arc::from(node.address.as_str()),
            version: service.version.clone(),
            metadata: node.metadata.clone(),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            down_until_ms: AtomicU64::new(0),
        }
    }

    fn same_as(&self, other: &NodeState) -> bool {
        self.id == other.id
            && self.address == other.address
            && self.version == other.version
            && self.metadata == other.metadata
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    pub(crate) fn mark_down(&self) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel).min(10);
        let backoff = (Duration::from_secs(1) * 2u32.pow(failures)).min(MAX_BACKOFF);
        self.down_until_ms
            .store(now_ms() + backoff.as_millis() as u64, Ordering::Release);
    }

    pub(crate) fn mark_up(&self) {
        // Read first: the common case (no failures) then writes nothing.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Release);
            self.down_until_ms.store(0, Ordering::Release);
        }
    }

    pub(crate) fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id.to_string(),
            address: self.address.to_string(),
            version: self.version.clone(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            down: self.is_down(),
        }
    }
}

/// The nodes of a service at one moment, with their hash ring.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) nodes: Vec<Arc<NodeState>>,
    pub(crate) ring: Ring,
}

impl Snapshot {
    fn build(nodes: Vec<Arc<NodeState>>) -> Self {
        let ring = Ring::new(nodes.iter().map(|n| &*n.id));
        Snapshot { nodes, ring }
    }
}

/// One service's nodes, shared by all calls to it.
pub(crate) struct NodeCache {
    name: String,
    registry: SharedRegistry,
    snapshot: ArcSwap<Snapshot>,
    loaded: AtomicBool,
    load_lock: tokio::sync::Mutex<()>,
    round_robin: AtomicUsize,
    watch: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// When a call last used the cache (ms since the process's epoch).
    last_used_ms: AtomicU64,
}

impl Drop for NodeCache {
    fn drop(&mut self) {
        if let Some(task) = crate::sync::lock(&self.watch).take() {
            task.abort();
        }
    }
}

impl NodeCache {
    pub(crate) fn new(name: &str, registry: SharedRegistry) -> Self {
        NodeCache {
            name: name.to_owned(),
            registry,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            loaded: AtomicBool::new(false),
            load_lock: tokio::sync::Mutex::new(()),
            round_robin: AtomicUsize::new(0),
            watch: std::sync::Mutex::new(None),
            last_used_ms: AtomicU64::new(now_ms()),
        }
    }

    /// Notes a use; cheap enough for every call (one relaxed store).
    pub(crate) fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since a call last used the cache.
    pub(crate) fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_used_ms.load(Ordering::Relaxed)))
    }

    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    pub(crate) fn next_round_robin(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }

    /// Loads the nodes on first use and starts the watch; later calls return at once.
    pub(crate) async fn ready(self: &Arc<Self>) -> Result<(), SelectError> {
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.load_lock.lock().await;
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let services = self.registry.get_service(&self.name).await?;
        self.replace(&services);
        let task = tokio::spawn(watch_loop(
            Arc::downgrade(self),
            self.registry.clone(),
            self.name.clone(),
        ));
        *crate::sync::lock(&self.watch) = Some(task);
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Replaces the node set, keeping the load counters of nodes that stay.
    fn replace(&self, services: &[Service]) {
        let old = self.snapshot.load();
        let mut nodes: Vec<Arc<NodeState>> = Vec::new();
        for service in services {
            for node in &service.nodes {
                let fresh = NodeState::new(service, node);
                let kept = old.nodes.iter().find(|n| n.same_as(&fresh)).cloned();
                nodes.push(kept.unwrap_or_else(|| Arc::new(fresh)));
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|a, b| a.id == b.id);
        self.snapshot.store(Arc::new(Snapshot::build(nodes)));
    }

    /// Applies one watch event.
    fn apply(&self, event: &Event) {
        let old = self.snapshot.load();
        let mut nodes: Vec<Arc<NodeState>> = old
            .nodes
            .iter()
            .filter(|n| !event.service.nodes.iter().any(|e| *n.id == *e.id))
            .cloned()
            .collect();
        if event.action != Action::Delete {
            for node in &event.service.nodes {
                let fresh = NodeState::new(&event.service, node);
                let kept = old.nodes.iter().find(|n| n.same_as(&fresh)).cloned();
                nodes.push(kept.unwrap_or_else(|| Arc::new(fresh)));
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        self.snapshot.store(Arc::new(Snapshot::build(nodes)));
    }
}

/// Follows the registry's changes for one service until the cache is dropped. When
/// the watch breaks (registry down, restarted) it keeps the cached nodes, retries
/// with backoff, and resyncs with `get_service` once it is back.
async fn watch_loop(cache: Weak<NodeCache>, registry: SharedRegistry, name: String) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match registry.watch(Some(&name)).await {
            Ok(mut events) => {
                // Whatever changed while we were not watching.
                match registry.get_service(&name).await {
                    Ok(services) => match cache.upgrade() {
                        Some(cache) => cache.replace(&services),
                        None => return,
                    },
                    Err(err) => tracing::debug!(service = %name, error = %err, "resync failed"),
                }
                backoff = Duration::from_millis(500);
                while let Some(event) = events.next().await {
                    let Some(cache) = cache.upgrade() else { return };
                    match event {
                        Ok(event) => cache.apply(&event),
                        Err(err) => {
                            tracing::warn!(service = %name, error = %err, "registry watch broke; serving calls from the cache");
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(service = %name, error = %err, "cannot watch the registry; serving calls from the cache");
            }
        }
        if cache.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
