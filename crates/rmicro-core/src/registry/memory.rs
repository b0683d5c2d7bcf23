//! An in-process registry: for tests and single-process apps.

use super::{Action, Event, Registry, RegistryError, Service, Watcher, merge_by_version};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// How often expired nodes are swept out (and their `Delete` events sent).
const SWEEP: Duration = Duration::from_millis(200);

struct Entry {
    /// The service holding just this node.
    record: Service,
    expires: Instant,
}

#[derive(Default)]
struct State {
    /// service name → node id → entry
    services: HashMap<String, HashMap<String, Entry>>,
    sweeper_started: bool,
}

/// Registry that lives in this process's memory. Nodes expire after their TTL.
#[derive(Clone)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryRegistry")
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// Splits a service record into one record per node.
pub(crate) fn per_node(service: &Service) -> impl Iterator<Item = Service> + '_ {
    service.nodes.iter().map(|node| Service {
        nodes: vec![node.clone()],
        ..service.clone()
    })
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MemoryRegistry {
            state: Arc::new(Mutex::new(State::default())),
            events: broadcast::channel(1024).0,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, RegistryError> {
        self.state.lock().map_err(|_| RegistryError::Backend {
            registry: "memory".into(),
            operation: "lock",
            detail: "a thread panicked while holding the registry".into(),
        })
    }

    /// Removes expired nodes, sending their `Delete` events.
    fn sweep(state: &mut State, events: &broadcast::Sender<Event>) {
        let now = Instant::now();
        for nodes in state.services.values_mut() {
            nodes.retain(|_, entry| {
                let live = entry.expires > now;
                if !live {
                    let _ = events.send(Event {
                        action: Action::Delete,
                        service: entry.record.clone(),
                    });
                }
                live
            });
        }
        state.services.retain(|_, nodes| !nodes.is_empty());
    }

    /// Starts the background sweep once, if a runtime is around; it ends with the registry.
    fn start_sweeper(&self, state: &mut State) {
        if state.sweeper_started || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        state.sweeper_started = true;
        let weak: Weak<Mutex<State>> = Arc::downgrade(&self.state);
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP).await;
                let Some(state) = weak.upgrade() else { return };
                {
                    let mut state = crate::sync::lock(&state);
                    Self::sweep(&mut state, &events);
                }
            }
        });
    }
}

impl Registry for MemoryRegistry {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn register(
        &self,
        service: &Service,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let result = self.lock().map(|mut state| {
            self.start_sweeper(&mut state);
            let expires = Instant::now() + ttl;
            let nodes = state.services.entry(service.name.clone()).or_default();
            for record in per_node(service) {
                let id = record.nodes[0].id.clone();
                let action = match nodes.get(&id) {
                    None => Some(Action::Create),
                    Some(old) if old.record != record => Some(Action::Update),
                    Some(_) => None,
                };
                if let Some(action) = action {
                    let _ = self.events.send(Event {
                        action,
                        service: record.clone(),
                    });
                }
                nodes.insert(id, Entry { record, expires });
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn deregister(&self, service: &Service) -> BoxFuture<'_, Result<(), RegistryError>> {
        let result = self.lock().map(|mut state| {
            if let Some(nodes) = state.services.get_mut(&service.name) {
                for node in &service.nodes {
                    if let Some(entry) = nodes.remove(&node.id) {
                        let _ = self.events.send(Event {
                            action: Action::Delete,
                            service: entry.record,
                        });
                    }
                }
            }
            state.services.retain(|_, nodes| !nodes.is_empty());
        });
        Box::pin(std::future::ready(result))
    }

    fn get_service(&self, name: &str) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        let result = self.lock().map(|mut state| {
            Self::sweep(&mut state, &self.events);
            state
                .services
                .get(name)
                .map(|nodes| merge_by_version(nodes.values().map(|e| e.record.clone())))
                .unwrap_or_default()
        });
        Box::pin(std::future::ready(result))
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        let result = self.lock().map(|mut state| {
            Self::sweep(&mut state, &self.events);
            let mut all: Vec<Service> = state
                .services
                .values()
                .flat_map(|nodes| merge_by_version(nodes.values().map(|e| e.record.clone())))
                .collect();
            all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
            all
        });
        Box::pin(std::future::ready(result))
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, RegistryError>> {
        let filter = service.map(str::to_owned);
        let rx = self.events.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |item| {
            let out = match item {
                Ok(event) if filter.as_ref().is_none_or(|f| *f == event.service.name) => {
                    Some(Ok(event))
                }
                Ok(_) => None,
                Err(lagged) => Some(Err(RegistryError::Backend {
                    registry: "memory".into(),
                    operation: "watch",
                    detail: format!("{lagged}; resync with get_service"),
                })),
            };
            std::future::ready(out)
        });
        Box::pin(std::future::ready(Ok(Box::pin(stream) as Watcher)))
    }
}
