//! The selector: client-side load balancing over the nodes the registry knows.
//!
//! For each service name the selector keeps a cache of nodes, loaded once with
//! `get_service` and then kept current by `watch`, so a call never waits on the
//! registry — and calls keep working from the cache while the registry is down. Each
//! call picks one node by the [`Strategy`], among the nodes that pass the call's
//! filters (version, metadata) and are not marked down. A node whose connection fails
//! is marked down with exponential backoff (1 s, 2 s, … 30 s) and the client retries
//! on another node, within the client's retry rules.

mod cache;
pub(crate) mod hash;

pub use cache::NodeInfo;

use crate::registry::SharedRegistry;
use cache::{NodeCache, NodeState};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

/// How a node is picked among the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Uniformly at random (the default, as in go-micro).
    #[default]
    Random,
    /// Each node in turn.
    RoundRobin,
    /// Power of two choices: of two random nodes, the one with fewer calls in flight.
    LeastOutstanding,
    /// Consistent hashing on the call's hash key: a key sticks to a node, and only about
    /// 1/N of the keys move when a node joins or leaves. Random for calls without a key.
    Hash,
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.replace('-', "_").as_str() {
            "random" => Ok(Strategy::Random),
            "round_robin" | "roundrobin" => Ok(Strategy::RoundRobin),
            "least_outstanding" | "p2c" => Ok(Strategy::LeastOutstanding),
            "hash" | "consistent_hash" => Ok(Strategy::Hash),
            other => Err(format!(
                "unknown selector `{other}`: use random, round_robin, least_outstanding or hash"
            )),
        }
    }
}

/// What one call asks of the selector.
#[derive(Debug, Clone, Default)]
pub struct SelectOptions {
    /// Only nodes of this version.
    pub version: Option<String>,
    /// Only nodes whose metadata has all these pairs.
    pub metadata: Vec<(String, String)>,
    /// The key for [`Strategy::Hash`].
    pub hash_key: Option<String>,
    /// Node ids already tried by this call.
    pub exclude: Vec<Arc<str>>,
}

/// Why no node could be picked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SelectError {
    /// The registry could not be asked and nothing is cached.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The registry has no (matching) node.
    #[error("service `{service}` has no {what}nodes in registry `{registry}`")]
    NoNodes {
        /// The service.
        service: String,
        /// `"matching "` when filters excluded every node, else empty.
        what: &'static str,
        /// Which registry.
        registry: String,
    },
}

/// A picked node; counts as one call in flight on it until dropped.
#[derive(Debug)]
pub struct Selected {
    node: Arc<NodeState>,
}

impl Selected {
    fn new(node: Arc<NodeState>) -> Self {
        node.in_flight.fetch_add(1, Ordering::AcqRel);
        Selected { node }
    }

    /// The address to dial.
    pub fn address(&self) -> &Arc<str> {
        &self.node.address
    }

    /// The node's id.
    pub fn id(&self) -> &Arc<str> {
        &self.node.id
    }

    /// The connection to this node failed: skip it for a while.
    pub fn mark_down(&self) {
        self.node.mark_down();
    }

    /// A call on this node succeeded: clear any backoff.
    pub fn mark_up(&self) {
        self.node.mark_up();
    }
}

impl Drop for Selected {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Picks nodes for calls by service name; one per client, shared by its clones.
///
/// Each service called gets a node cache that follows the registry with a watch.
/// The caches are bounded: when a new name would pass
/// [`max_services`](Self::with_limits) caches, those unused for `idle` are dropped
/// (their watches end), then the least recently used — so a gateway forwarding to
/// thousands of distinct names keeps a bounded number of watches.
pub struct Selector {
    registry: SharedRegistry,
    strategy: Strategy,
    caches: RwLock<HashMap<String, Arc<NodeCache>>>,
    max_services: usize,
    idle: std::time::Duration,
}

/// Default bound on the services a selector caches.
pub const DEFAULT_MAX_SERVICES: usize = 1024;

/// Default time after which an unused service cache may be dropped.
pub const DEFAULT_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selector")
            .field("registry", &self.registry.describe())
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl Selector {
    /// A selector over `registry` using `strategy`.
    pub fn new(registry: SharedRegistry, strategy: Strategy) -> Self {
        Selector {
            registry,
            strategy,
            caches: RwLock::new(HashMap::new()),
            max_services: DEFAULT_MAX_SERVICES,
            idle: DEFAULT_IDLE,
        }
    }

    /// The same selector caching at most `max_services` services (at least 1),
    /// dropping caches unused for `idle` first when it must make room.
    pub fn with_limits(mut self, max_services: usize, idle: std::time::Duration) -> Self {
        self.max_services = max_services.max(1);
        self.idle = idle;
        self
    }

    /// The registry it reads.
    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    /// The strategy it uses.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Whether `service` has a node cache now.
    pub fn is_cached(&self, service: &str) -> bool {
        crate::sync::read(&self.caches).contains_key(service)
    }

    /// How many services have a node cache (each follows the registry with a watch).
    pub fn cached_services(&self) -> usize {
        crate::sync::read(&self.caches).len()
    }

    fn cache(&self, service: &str) -> Arc<NodeCache> {
        if let Some(cache) = crate::sync::read(&self.caches).get(service) {
            cache.touch();
            return cache.clone();
        }
        let mut caches = crate::sync::write(&self.caches);
        if let Some(cache) = caches.get(service) {
            return cache.clone();
        }
        if caches.len() >= self.max_services {
            self.make_room(&mut caches);
        }
        let cache = Arc::new(NodeCache::new(service, self.registry.clone()));
        caches.insert(service.to_owned(), cache.clone());
        cache
    }

    /// Drops the caches idle for longer than `idle`, then the least recently used
    /// until there is room for one more. A dropped cache's watch ends with it.
    fn make_room(&self, caches: &mut HashMap<String, Arc<NodeCache>>) {
        caches.retain(|_, cache| cache.idle_for() < self.idle);
        while caches.len() >= self.max_services {
            let oldest = caches
                .iter()
                .max_by_key(|(_, cache)| cache.idle_for())
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => {
                    caches.remove(&name);
                }
                None => break,
            }
        }
    }

    /// The nodes currently cached for `service` (loading them on first use).
    pub async fn nodes(&self, service: &str) -> Result<Vec<NodeInfo>, SelectError> {
        let cache = self.cache(service);
        cache.ready().await?;
        Ok(cache.snapshot().nodes.iter().map(|n| n.info()).collect())
    }

    /// Picks a node of `service` for one call.
    pub async fn select(
        &self,
        service: &str,
        options: &SelectOptions,
    ) -> Result<Selected, SelectError> {
        let cache = self.cache(service);
        cache.ready().await?;
        let snapshot = cache.snapshot();
        let matches = |n: &&Arc<NodeState>| {
            options.version.as_ref().is_none_or(|v| *v == n.version)
                && options
                    .metadata
                    .iter()
                    .all(|(k, v)| n.metadata.get(k).is_some_and(|x| x == v))
                && !options.exclude.iter().any(|id| *id == n.id)
        };
        let mut candidates: Vec<usize> = Vec::with_capacity(snapshot.nodes.len());
        let mut down: Vec<usize> = Vec::new();
        for (i, node) in snapshot.nodes.iter().enumerate() {
            if matches(&node) {
                if node.is_down() {
                    down.push(i);
                } else {
                    candidates.push(i);
                }
            }
        }
        // Every matching node is backing off: try one anyway rather than fail outright.
        if candidates.is_empty() {
            candidates = down;
        }
        if candidates.is_empty() {
            let filtered = options.version.is_some()
                || !options.metadata.is_empty()
                || !options.exclude.is_empty();
            return Err(SelectError::NoNodes {
                service: service.to_owned(),
                what: if filtered && !snapshot.nodes.is_empty() {
                    "matching "
                } else {
                    ""
                },
                registry: self.registry.describe(),
            });
        }
        let pick = match (self.strategy, &options.hash_key) {
            (Strategy::RoundRobin, _) => candidates[cache.next_round_robin() % candidates.len()],
            (Strategy::LeastOutstanding, _) if candidates.len() > 1 => {
                let a = hash::random_below(candidates.len());
                let mut b = hash::random_below(candidates.len() - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                let load = |i: usize| snapshot.nodes[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
            (Strategy::Hash, Some(key)) => snapshot
                .ring
                .lookup(key, |i| candidates.contains(&i))
                .unwrap_or(candidates[0]),
            _ => candidates[hash::random_below(candidates.len())],
        };
        Ok(Selected::new(snapshot.nodes[pick].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::testing::record;
    use crate::registry::{MemoryRegistry, Registry};
    use std::time::Duration;

    async fn three_nodes(strategy: Strategy) -> (Arc<MemoryRegistry>, Selector) {
        let registry = Arc::new(MemoryRegistry::new());
        for (i, version) in [(1, "1.0.0"), (2, "1.0.0"), (3, "2.0.0")] {
            let svc = record(
                "greeter",
                version,
                &format!("greeter-{i}"),
                &format!("127.0.0.1:{i}"),
            );
            registry
                .register(&svc, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let selector = Selector::new(registry.clone(), strategy);
        (registry, selector)
    }

    async fn counts(
        selector: &Selector,
        calls: usize,
        options: &SelectOptions,
    ) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..calls {
            let picked = selector.select("greeter", options).await.unwrap();
            *counts.entry(picked.address().to_string()).or_default() += 1;
        }
        counts
    }

    async fn wait_for_nodes(selector: &Selector, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while selector.nodes("greeter").await.unwrap().len() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never reached {n} nodes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn round_robin_spreads_evenly() {
        let (_registry, selector) = three_nodes(Strategy::RoundRobin).await;
        let counts = counts(&selector, 3000, &SelectOptions::default()).await;
        assert_eq!(counts.len(), 3);
        for (node, n) in counts {
            assert!((990..=1010).contains(&n), "{node} got {n}");
        }
    }

    #[tokio::test]
    async fn random_passes_a_chi_square_test() {
        let (_registry, selector) = three_nodes(Strategy::Random).await;
        let counts = counts(&selector, 3000, &SelectOptions::default()).await;
        let chi2: f64 = counts
            .values()
            .map(|&n| (n as f64 - 1000.0).powi(2) / 1000.0)
            .sum();
        // 2 degrees of freedom, p = 0.001.
        assert!(chi2 < 13.82, "chi-square {chi2} for {counts:?}");
    }

    #[tokio::test]
    async fn least_outstanding_avoids_the_busy_node() {
        let (_registry, selector) = three_nodes(Strategy::LeastOutstanding).await;
        // Load node 1 by excluding the others.
        let only_one = SelectOptions {
            exclude: vec![Arc::from("greeter-2"), Arc::from("greeter-3")],
            ..SelectOptions::default()
        };
        let mut busy = Vec::new();
        for _ in 0..50 {
            busy.push(selector.select("greeter", &only_one).await.unwrap());
        }
        assert!(busy.iter().all(|s| &**s.address() == "127.0.0.1:1"));
        let counts = counts(&selector, 300, &SelectOptions::default()).await;
        assert_eq!(counts.get("127.0.0.1:1"), None, "{counts:?}");
        drop(busy);
        let info = selector.nodes("greeter").await.unwrap();
        assert!(info.iter().all(|n| n.in_flight == 0), "{info:?}");
    }

    #[tokio::test]
    async fn hash_is_sticky_and_moves_few_keys_when_a_node_leaves() {
        let (registry, selector) = three_nodes(Strategy::Hash).await;
        let key_options = |k: usize| SelectOptions {
            hash_key: Some(format!("user-{k}")),
            ..SelectOptions::default()
        };
        let mut before = Vec::new();
        for k in 0..3000 {
            let a = selector.select("greeter", &key_options(k)).await.unwrap();
            let b = selector.select("greeter", &key_options(k)).await.unwrap();
            assert_eq!(a.address(), b.address(), "key {k} is not sticky");
            before.push(a.address().clone());
        }
        let leaving = record("greeter", "2.0.0", "greeter-3", "127.0.0.1:3");
        registry.deregister(&leaving).await.unwrap();
        wait_for_nodes(&selector, 2).await;
        let mut moved = 0;
        for (k, old) in before.iter().enumerate() {
            let now = selector.select("greeter", &key_options(k)).await.unwrap();
            if now.address() != old {
                moved += 1;
                assert_eq!(&**old, "127.0.0.1:3", "a key of a staying node moved");
            }
        }
        let share = moved as f64 / 3000.0;
        assert!((0.2..0.47).contains(&share), "{share} of keys moved");
    }

    #[tokio::test]
    async fn filters_by_version_and_metadata() {
        let (_registry, selector) = three_nodes(Strategy::Random).await;
        let v2 = SelectOptions {
            version: Some("2.0.0".into()),
            ..SelectOptions::default()
        };
        assert_eq!(counts(&selector, 50, &v2).await.len(), 1);
        let meta = SelectOptions {
            metadata: vec![("transport".into(), "grpc".into())],
            ..SelectOptions::default()
        };
        assert_eq!(counts(&selector, 200, &meta).await.len(), 3);
        let none = SelectOptions {
            version: Some("9".into()),
            ..SelectOptions::default()
        };
        let err = selector.select("greeter", &none).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("has no matching nodes in registry `memory`"),
            "{err}"
        );
        let err = selector
            .select("nobody", &SelectOptions::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("service `nobody` has no nodes"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nodes_marked_down_are_skipped_while_others_are_up() {
        let (_registry, selector) = three_nodes(Strategy::RoundRobin).await;
        for _ in 0..3 {
            let s = selector
                .select("greeter", &SelectOptions::default())
                .await
                .unwrap();
            if &**s.address() == "127.0.0.1:2" {
                s.mark_down();
            }
        }
        let counts = counts(&selector, 100, &SelectOptions::default()).await;
        assert_eq!(counts.get("127.0.0.1:2"), None, "{counts:?}");
        assert!(
            selector
                .nodes("greeter")
                .await
                .unwrap()
                .iter()
                .any(|n| n.down)
        );
    }

    #[tokio::test]
    async fn the_cache_follows_the_registry() {
        let (registry, selector) = three_nodes(Strategy::Random).await;
        wait_for_nodes(&selector, 3).await;
        let newcomer = record("greeter", "1.0.0", "greeter-4", "127.0.0.1:4");
        registry
            .register(&newcomer, Duration::from_secs(60))
            .await
            .unwrap();
        wait_for_nodes(&selector, 4).await;
        registry.deregister(&newcomer).await.unwrap();
        wait_for_nodes(&selector, 3).await;
    }
}
