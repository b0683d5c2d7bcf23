//! The fleet as the dashboard knows it, kept current by three tasks: one follows
//! the registry's watch (and re-reads everything every half minute, in case a
//! watch missed something), one asks every node's gRPC health, and the scraper
//! and Hystrix readers ([`crate::scrape`], [`crate::hystrix`]) add numbers and
//! circuits. Each change bumps a version that the pages' event streams wait on.

use crate::BROKER_PREFIX;
use futures_util::StreamExt;
use rmicro::client::{CallOptions, HealthAnswer, HealthStatus};
use rmicro::registry::{Service, SharedRegistry};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How many nodes are asked (or scraped) at once: a large fleet is read in waves.
pub(crate) const AT_ONCE: usize = 64;

/// How often everything is read again from the registry, watch or not.
const RESYNC: Duration = Duration::from_secs(30);

/// One point of a service's numbers: a scrape interval's rate, errors and latency.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// When it was taken (milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// Calls handled per second over the interval, all nodes together.
    pub rps: f64,
    /// Of those, the percentage that failed.
    pub error_pct: f64,
    /// Median latency, milliseconds (none when no call was handled).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
}

/// A circuit breaker as its Hystrix stream last reported it.
#[derive(Debug, Clone)]
pub(crate) struct Circuit {
    /// The service it guards calls to (Hystrix's `group`).
    pub group: String,
    /// Whether it refuses calls now.
    pub open: bool,
    /// Failed calls in its rolling window, percent.
    pub error_pct: f64,
    /// Calls in its rolling window.
    pub requests: u64,
    /// The stream it came from.
    pub source: String,
    /// When it was last reported.
    pub updated: Instant,
    /// `(at_ms, open, error_pct)`, oldest first, within the history window.
    pub history: VecDeque<(u64, bool, f64)>,
}

/// What is known of the fleet.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Registry records by service name (a record per version).
    pub services: BTreeMap<String, Vec<Service>>,
    /// The last health answer of each node, by node id.
    pub health: HashMap<String, HealthAnswer>,
    /// Each service's numbers, oldest first.
    pub numbers: HashMap<String, VecDeque<Sample>>,
    /// Circuits by command name (`greeter.Greeter.SayHello`).
    pub circuits: BTreeMap<String, Circuit>,
}

/// The fleet's state, shared by the tasks that keep it and the pages that show it.
#[derive(Debug)]
pub(crate) struct Fleet {
    state: RwLock<State>,
    version: tokio::sync::watch::Sender<u64>,
    /// Bumped only when the services or their nodes change.
    members: tokio::sync::watch::Sender<u64>,
    history: Duration,
}

impl Fleet {
    /// An empty fleet whose charts reach `history` back.
    pub(crate) fn new(history: Duration) -> Fleet {
        Fleet {
            state: RwLock::new(State::default()),
            version: tokio::sync::watch::Sender::new(0),
            members: tokio::sync::watch::Sender::new(0),
            history,
        }
    }

    /// Reads the state.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&state)
    }

    /// Changes the state; when `f` says it changed something, the pages hear of it
    /// (and the caller: the answer is `f`'s).
    pub(crate) fn update(&self, f: impl FnOnce(&mut State) -> bool) -> bool {
        let changed = {
            let mut state = self
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut state)
        };
        if changed {
            self.version.send_modify(|v| *v = v.wrapping_add(1));
        }
        changed
    }

    /// A receiver that wakes at each change.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A receiver that wakes when services or nodes come, change or go, not at
    /// health answers, numbers or circuits (which the tasks that poll nodes make
    /// themselves, and must not wake them).
    pub(crate) fn member_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.members.subscribe()
    }

    /// How far back the charts reach.
    pub(crate) fn history(&self) -> Duration {
        self.history
    }

    /// The addresses of every node that speaks gRPC (not the HTTP broker's
    /// subscriber records), with their ids.
    pub(crate) fn grpc_nodes(&self) -> Vec<(String, String)> {
        self.read(|state| {
            state
                .services
                .iter()
                .filter(|(name, _)| !name.starts_with(BROKER_PREFIX))
                .flat_map(|(_, records)| records.iter().flat_map(|r| r.nodes.iter()))
                .filter(|node| {
                    node.metadata
                        .get("transport")
                        .is_none_or(|transport| transport == "grpc")
                })
                .map(|node| (node.id.clone(), node.address.clone()))
                .collect()
        })
    }

    /// The value of node metadata `key` (an URL) of every node, by service.
    pub(crate) fn node_urls(&self, key: &str) -> Vec<(String, String)> {
        self.read(|state| {
            state
                .services
                .iter()
                .flat_map(|(name, records)| {
                    records
                        .iter()
                        .flat_map(|r| r.nodes.iter())
                        .filter_map(|node| node.metadata.get(key))
                        .map(|url| (name.clone(), url.clone()))
                })
                .collect()
        })
    }

    /// Puts `records` as what the registry holds of `name` (none: it is gone).
    fn set_service(&self, name: &str, records: Vec<Service>) {
        let changed = self.update(|state| {
            let records: Vec<Service> = records
                .into_iter()
                .filter(|r| !r.nodes.is_empty())
                .collect();
            if records.is_empty() {
                let gone = state.services.remove(name);
                if let Some(gone) = &gone {
                    for node in gone.iter().flat_map(|r| r.nodes.iter()) {
                        state.health.remove(&node.id);
                    }
                    state.numbers.remove(name);
                }
                gone.is_some()
            } else if state.services.get(name) == Some(&records) {
                false
            } else {
                // The nodes that left take their health answers with them.
                if let Some(before) = state.services.get(name) {
                    let staying: std::collections::HashSet<&str> = records
                        .iter()
                        .flat_map(|r| r.nodes.iter().map(|n| n.id.as_str()))
                        .collect();
                    let left: Vec<String> = before
                        .iter()
                        .flat_map(|r| r.nodes.iter())
                        .filter(|n| !staying.contains(n.id.as_str()))
                        .map(|n| n.id.clone())
                        .collect();
                    for id in left {
                        state.health.remove(&id);
                    }
                }
                state.services.insert(name.to_owned(), records);
                true
            }
        });
        if changed {
            self.members.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// Reads every service from the registry and puts them in the fleet, dropping
/// those no longer there.
async fn resync(fleet: &Fleet, registry: &SharedRegistry) -> Result<(), String> {
    let listed = registry.list_services().await.map_err(|e| e.to_string())?;
    let mut names: Vec<String> = listed.into_iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    let known: Vec<String> = fleet.read(|s| s.services.keys().cloned().collect());
    for name in &names {
        let records = registry
            .get_service(name)
            .await
            .map_err(|e| e.to_string())?;
        fleet.set_service(name, records);
    }
    for gone in known.iter().filter(|k| !names.contains(k)) {
        fleet.set_service(gone, Vec::new());
    }
    Ok(())
}

/// Follows the registry for as long as the dashboard runs.
pub(crate) async fn follow_registry(fleet: std::sync::Arc<Fleet>, registry: SharedRegistry) {
    let mut failing = false;
    loop {
        // Subscribe first, then read: a change between the two is seen twice, not lost.
        let watcher = registry.watch(None).await;
        if let Err(err) = resync(&fleet, &registry).await {
            if !failing {
                tracing::warn!(registry = %registry.describe(), error = %err, "rmicro web cannot read the registry; retrying");
            }
            failing = true;
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        failing = false;
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(err) => {
                tracing::warn!(error = %err, "rmicro web cannot watch the registry; reading it every second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut resync_at = tokio::time::Instant::now() + RESYNC;
        loop {
            tokio::select! {
                event = watcher.next() => match event {
                    Some(Ok(event)) => {
                        let name = event.service.name;
                        match registry.get_service(&name).await {
                            Ok(records) => fleet.set_service(&name, records),
                            Err(err) => {
                                tracing::debug!(service = %name, error = %err, "re-reading a changed service failed");
                                break;
                            }
                        }
                    }
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "the registry watch broke; watching again");
                        break;
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(resync_at) => {
                    if resync(&fleet, &registry).await.is_err() {
                        break;
                    }
                    resync_at = tokio::time::Instant::now() + RESYNC;
                }
            }
        }
    }
}

/// Asks every gRPC node for its health every `interval`.
pub(crate) async fn poll_health(fleet: std::sync::Arc<Fleet>, interval: Duration) {
    let client = rmicro::Client::new(rmicro::client::ClientOptions::default());
    // An answer within the interval, so rounds never pile up.
    let timeout = interval.clamp(Duration::from_millis(200), Duration::from_secs(3));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = fleet.member_changes();
    loop {
        // A new node is asked at once, not at the next tick.
        tokio::select! {
            _ = ticks.tick() => {}
            Ok(()) = changes.changed() => {
                let nodes = fleet.grpc_nodes();
                let unknown = fleet.read(|s| nodes.iter().any(|(id, _)| !s.health.contains_key(id)));
                if !unknown {
                    continue;
                }
            }
        }
        let nodes = fleet.grpc_nodes();
        let checks = nodes.into_iter().map(|(id, address)| {
            let client = &client;
            async move {
                let options = CallOptions::new().timeout(timeout).retries(0);
                (id, client.check_health(&address, "", options).await)
            }
        });
        let answers: Vec<_> = futures_util::stream::iter(checks)
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        fleet.update(|state| {
            let mut changed = false;
            for (id, answer) in answers {
                let still_there = state
                    .services
                    .values()
                    .flatten()
                    .any(|r| r.nodes.iter().any(|n| n.id == id));
                if !still_there {
                    continue;
                }
                if state.health.get(&id) != Some(&answer) {
                    // Only the status shows; a new wording of the same failure is no change.
                    changed |= state.health.get(&id).map(|a| a.status) != Some(answer.status);
                    state.health.insert(id, answer);
                }
            }
            changed
        });
    }
}

/// The health of node `id` as the pages show it.
pub(crate) fn health_of<'a>(state: &'a State, id: &str) -> (HealthStatus, Option<&'a str>) {
    match state.health.get(id) {
        Some(answer) => (answer.status, Some(answer.detail.as_str())),
        None => (HealthStatus::Unknown, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_that_leave_take_their_health_along() {
        let fleet = Fleet::new(Duration::from_secs(60));
        let record = |ids: &[&str]| {
            let mut service =
                rmicro::registry::testing::record("greeter", "1.0.0", ids[0], "127.0.0.1:1");
            for id in &ids[1..] {
                let mut node = service.nodes[0].clone();
                node.id = (*id).to_owned();
                service.nodes.push(node);
            }
            vec![service]
        };
        fleet.set_service("greeter", record(&["a", "b"]));
        let serving = HealthAnswer {
            status: HealthStatus::Serving,
            detail: String::new(),
        };
        let mut members = fleet.member_changes();
        members.mark_unchanged();
        fleet.update(|s| {
            s.health.insert("a".into(), serving.clone());
            s.health.insert("b".into(), serving.clone());
            true
        });
        assert!(
            !members.has_changed().unwrap(),
            "health answers are not a change of members"
        );
        fleet.set_service("greeter", record(&["a"]));
        assert!(members.has_changed().unwrap(), "a node left");
        members.mark_unchanged();
        fleet.set_service("greeter", record(&["a"]));
        assert!(!members.has_changed().unwrap(), "the same records again");
        fleet.read(|s| {
            assert!(s.health.contains_key("a"));
            assert!(!s.health.contains_key("b"));
        });
        fleet.set_service("greeter", Vec::new());
        fleet.read(|s| {
            assert!(s.services.is_empty());
            assert!(s.health.is_empty());
        });
    }
}
