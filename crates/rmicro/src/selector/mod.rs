//! The selector: client-side load balancing over the nodes the registry knows.
//!
//! For each service name the selector keeps a [`cache`] of nodes, loaded once with
//! `get_service` and then kept current by `watch`, so a call never waits on the
//! registry — and calls keep working from the cache while the registry is down. Each
//! call picks one node by the [`Strategy`], among the nodes that pass the call's
//! filters (version, metadata) and are not marked down. A node whose connection fails
//! is marked down with exponential backoff (1 s, 2 s, … 30 s) and the client retries
//! on another node, within the client's retry rules.

mod cache;
mod hash;

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
pub struct Selector {
    registry: SharedRegistry,
    strategy: Strategy,
    caches: RwLock<HashMap<String, Arc<NodeCache>>>,
}

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
        }
    }

    /// The registry it reads.
    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    /// The strategy it uses.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    fn cache(&self, service: &str) -> Arc<NodeCache> {
        if let Ok(caches) = self.caches.read()
            && let Some(cache) = caches.get(service)
        {
            return cache.clone();
        }
        let mut caches = match self.caches.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        caches
            .entry(service.to_owned())
            .or_insert_with(|| Arc::new(NodeCache::new(service, self.registry.clone())))
            .clone()
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
