//! The route table: every service in the registry, the methods its descriptors
//! name, and the HTTP paths that reach them, kept current from the registry watch.

use crate::resolver;
use prost_reflect::MessageDescriptor;
use rmicro::registry;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a route was found, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    /// go-micro's path rule (`/greeter/say-hello` → `greeter`, `Greeter.SayHello`).
    MicroPath,
    /// The gRPC path with a JSON body (`POST /greeter.v1.Greeter/SayHello`).
    GrpcPath,
    /// A `google.api.http` annotation (`GET /v1/greeter/hello/{name}`).
    HttpAnnotation,
}

/// One route, as `--print-routes` prints it and `GET /routes` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The HTTP method (`POST`; `*` for any).
    pub method: String,
    /// The HTTP path.
    pub path: String,
    /// The service's registry name.
    pub service: String,
    /// The endpoint, `Service.Method` as go-micro names it.
    pub endpoint: String,
    /// The gRPC path called (`/greeter.v1.Greeter/SayHello`).
    pub grpc_path: String,
    /// Which rule made the route.
    pub rule: RouteKind,
    /// `unary`, `server-streaming`, `client-streaming` or `bidi-streaming`.
    pub kind: &'static str,
    /// The handler that serves it (`rpc`).
    pub handler: &'static str,
}

/// A method of a service, from its descriptors or, failing those, its registry
/// record.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    /// `Greeter.SayHello`.
    pub(crate) endpoint: String,
    /// `/greeter.v1.Greeter/SayHello`, or `/Greeter/SayHello` (rmicro's short
    /// path) when only the registry record is known.
    pub(crate) grpc_path: String,
    /// The request and reply types, when the descriptors are known; without
    /// them the call goes out with rmicro's JSON codec.
    pub(crate) types: Option<(MessageDescriptor, MessageDescriptor)>,
    /// Which of the two take the direct JSON path ([`crate::direct`]).
    pub(crate) plain: Plain,
    pub(crate) client_streaming: bool,
    pub(crate) server_streaming: bool,
    /// Its `google.api.http` bindings.
    pub(crate) bindings: Vec<Arc<crate::http_rule::Binding>>,
}

/// Whether a method's request and reply are plain messages, which JSON
/// reaches and leaves straight by the descriptor ([`crate::direct::is_plain`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Plain {
    pub(crate) request: bool,
    pub(crate) reply: bool,
}

impl Method {
    /// The gRPC kind, as routes show it.
    pub(crate) fn kind(&self) -> &'static str {
        match (self.client_streaming, self.server_streaming) {
            (false, false) => "unary",
            (false, true) => "server-streaming",
            (true, false) => "client-streaming",
            (true, true) => "bidi-streaming",
        }
    }
}

/// One service: its registry records and its methods.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) records: Vec<registry::Service>,
    pub(crate) methods: Vec<Arc<Method>>,
    /// Why the descriptors could not be had, if they could not.
    pub(crate) descriptors_error: Option<String>,
}

impl Entry {
    /// The entry of `name` from its records and, when reflection answered, its
    /// descriptors.
    pub(crate) fn new(
        name: &str,
        records: Vec<registry::Service>,
        pool: Result<prost_reflect::DescriptorPool, rmicro::Error>,
    ) -> Entry {
        let (methods, descriptors_error) = match pool {
            Ok(pool) => (methods_of(&pool), None),
            Err(e) => (methods_of_records(&records), Some(e.detail)),
        };
        Entry {
            name: name.to_owned(),
            records,
            methods,
            descriptors_error,
        }
    }

    /// Whether any record has a node to call.
    pub(crate) fn has_nodes(&self) -> bool {
        self.records.iter().any(|r| !r.nodes.is_empty())
    }

    /// The method go-micro's `Receiver.Method` names: the receiver is the gRPC
    /// service's short name (`Greeter`), case-insensitively as go-micro's rule
    /// capitalises path segments.
    pub(crate) fn by_endpoint(&self, endpoint: &str) -> Option<&Arc<Method>> {
        self.methods
            .iter()
            .find(|m| m.endpoint == endpoint)
            .or_else(|| {
                self.methods
                    .iter()
                    .find(|m| m.endpoint.eq_ignore_ascii_case(endpoint))
            })
    }
}

/// Every method of every application service in `pool`.
fn methods_of(pool: &prost_reflect::DescriptorPool) -> Vec<Arc<Method>> {
    let mut methods = Vec::new();
    for service in pool.services() {
        if crate::reflection::is_infrastructure(service.full_name()) {
            continue;
        }
        for method in service.methods() {
            methods.push(Arc::new(Method {
                endpoint: format!("{}.{}", service.name(), method.name()),
                grpc_path: format!("/{}/{}", service.full_name(), method.name()),
                types: Some((method.input(), method.output())),
                plain: Plain {
                    request: crate::direct::is_plain(&method.input()),
                    reply: crate::direct::is_plain(&method.output()),
                },
                client_streaming: method.is_client_streaming(),
                server_streaming: method.is_server_streaming(),
                bindings: crate::http_rule::bindings(&method)
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            }));
        }
    }
    methods
}

/// The methods a registry record lists (go-micro's `Service.Method` names), for a
/// server that does not answer reflection; rmicro servers take their short paths.
fn methods_of_records(records: &[registry::Service]) -> Vec<Arc<Method>> {
    let mut seen = BTreeMap::new();
    for endpoint in records.iter().flat_map(|r| &r.endpoints) {
        // Subscribers are listed as endpoints too; they are not callable.
        if endpoint.metadata.contains_key("subscriber") {
            continue;
        }
        let Some((service, method)) = endpoint.name.rsplit_once('.') else {
            continue;
        };
        let stream = endpoint.metadata.get("stream").is_some_and(|s| s == "true");
        seen.entry(endpoint.name.clone()).or_insert_with(|| {
            Arc::new(Method {
                endpoint: endpoint.name.clone(),
                grpc_path: format!("/{service}/{method}"),
                types: None,
                plain: Plain::default(),
                // The record says only "stream": treat it as server streaming, the
                // kind HTTP can carry.
                client_streaming: false,
                server_streaming: stream,
                bindings: Vec::new(),
            })
        });
    }
    seen.into_values().collect()
}

/// Every service the gateway knows, and the gRPC service names that reach them.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) services: BTreeMap<String, Arc<Entry>>,
    /// `greeter.v1.Greeter` → the registry name serving it.
    pub(crate) by_grpc: HashMap<String, String>,
    /// This table's number, unique in the process: what a cache of routes found in
    /// it is kept under (see [`RouteCache`]).
    pub(crate) id: u64,
}

/// The numbers tables are given; 0 is never one.
static TABLES: AtomicU64 = AtomicU64::new(1);

impl Default for Table {
    fn default() -> Self {
        Table {
            services: BTreeMap::new(),
            by_grpc: HashMap::new(),
            id: TABLES.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Table {
    /// The table with `entry` in place of its service's old one.
    pub(crate) fn with(&self, entry: Entry) -> Table {
        let mut next = self.without(&entry.name);
        for method in &entry.methods {
            if let Some(grpc_service) = grpc_service(&method.grpc_path) {
                next.by_grpc
                    .entry(grpc_service.to_owned())
                    .or_insert_with(|| entry.name.clone());
            }
        }
        next.services.insert(entry.name.clone(), Arc::new(entry));
        next
    }

    /// The table without service `name`.
    pub(crate) fn without(&self, name: &str) -> Table {
        let mut services = self.services.clone();
        services.remove(name);
        let mut by_grpc = self.by_grpc.clone();
        by_grpc.retain(|_, service| service != name);
        Table {
            services,
            by_grpc,
            ..Table::default()
        }
    }

    /// The method a gRPC path (`/greeter.v1.Greeter/SayHello`) names, and its
    /// service.
    pub(crate) fn by_grpc_path(&self, path: &str) -> Option<(&Arc<Entry>, &Arc<Method>)> {
        let grpc_service = grpc_service(path)?;
        let entry = self.services.get(self.by_grpc.get(grpc_service)?)?;
        let method = entry.methods.iter().find(|m| m.grpc_path == path)?;
        Some((entry, method))
    }

    /// The annotated binding that matches `verb` and `path` best (most literal
    /// segments), with its variables; or, when only another verb's binding
    /// matches the path, that verb.
    pub(crate) fn by_annotation(&self, verb: &str, path: &str) -> AnnotationMatch<'_> {
        let mut best: Option<(usize, Matched<'_>)> = None;
        let mut other_verb = None;
        for entry in self.services.values() {
            for method in &entry.methods {
                for binding in &method.bindings {
                    let Some(values) = binding.template.matches(path) else {
                        continue;
                    };
                    if !binding.verb.eq_ignore_ascii_case(verb) {
                        other_verb.get_or_insert(binding.verb.as_str());
                        continue;
                    }
                    let score = binding.template.literals();
                    if best.as_ref().is_none_or(|(b, _)| score > *b) {
                        best = Some((
                            score,
                            Matched {
                                entry,
                                method,
                                binding,
                                values,
                            },
                        ));
                    }
                }
            }
        }
        match (best, other_verb) {
            (Some((_, matched)), _) => AnnotationMatch::Found(matched),
            (None, Some(verb)) => AnnotationMatch::OtherVerb(verb),
            (None, None) => AnnotationMatch::None,
        }
    }

    /// Every route, in precedence order within each service.
    pub(crate) fn routes(&self, namespace: &str, handler: &'static str) -> Vec<Route> {
        let mut routes = Vec::new();
        for entry in self.services.values() {
            for method in &entry.methods {
                for binding in &method.bindings {
                    routes.push(Route {
                        method: binding.verb.clone(),
                        path: binding.template.text.clone(),
                        service: entry.name.clone(),
                        endpoint: method.endpoint.clone(),
                        grpc_path: method.grpc_path.clone(),
                        rule: RouteKind::HttpAnnotation,
                        kind: method.kind(),
                        handler,
                    });
                }
                let route = |path: String, rule| Route {
                    method: "POST".to_owned(),
                    path,
                    service: entry.name.clone(),
                    endpoint: method.endpoint.clone(),
                    grpc_path: method.grpc_path.clone(),
                    rule,
                    kind: method.kind(),
                    handler,
                };
                if let Some(path) = resolver::path_for(&entry.name, &method.endpoint, namespace) {
                    routes.push(Route {
                        method: "*".to_owned(),
                        ..route(path, RouteKind::MicroPath)
                    });
                }
                // The short path of a record-only method is not a gRPC path anyone
                // outside rmicro would write; the full one is always a route.
                if method.types.is_some() {
                    routes.push(route(method.grpc_path.clone(), RouteKind::GrpcPath));
                }
            }
        }
        routes
    }
}

/// A request matched to an annotated binding.
#[derive(Debug)]
pub(crate) struct Matched<'a> {
    pub(crate) entry: &'a Arc<Entry>,
    pub(crate) method: &'a Arc<Method>,
    pub(crate) binding: &'a Arc<crate::http_rule::Binding>,
    /// The path variables' field paths and values.
    pub(crate) values: Vec<(String, String)>,
}

/// What the annotations say about a request.
#[derive(Debug)]
pub(crate) enum AnnotationMatch<'a> {
    Found(Matched<'a>),
    /// The path matches a binding of this verb only.
    OtherVerb(&'a str),
    None,
}

/// `greeter.v1.Greeter` of `/greeter.v1.Greeter/SayHello`.
fn grpc_service(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

/// A thread's memory of where paths lead in one table: `(verb, path)` → what
/// [`Table::by_annotation`], go-micro's rule and the gRPC path found there, so that
/// a path asked again is one hash lookup instead of a scan of every binding and
/// the rule's string work. Kept per thread (no lock, no shared counter), for the
/// table of one number: a new table (a registry change) empties it. Only routes
/// found are kept; a miss goes the whole way, since it may read the registry.
pub(crate) struct RouteCache<T> {
    table: u64,
    routes: HashMap<String, Vec<(http::Method, T)>>,
}

impl<T: Clone> RouteCache<T> {
    /// The most paths a thread remembers; past that it starts again (paths with
    /// ids in them would otherwise grow it without end).
    pub(crate) const CAPACITY: usize = 1024;

    /// An empty cache.
    pub(crate) fn new() -> Self {
        RouteCache {
            table: 0,
            routes: HashMap::new(),
        }
    }

    /// What `verb` `path` was found to lead to in table `table`.
    pub(crate) fn get(&self, table: u64, verb: &http::Method, path: &str) -> Option<T> {
        if self.table != table {
            return None;
        }
        self.routes
            .get(path)?
            .iter()
            .find(|(v, _)| v == verb)
            .map(|(_, found)| found.clone())
    }

    /// Remembers where `verb` `path` leads in table `table`.
    pub(crate) fn put(&mut self, table: u64, verb: &http::Method, path: &str, found: T) {
        if table < self.table {
            // Found in a table older than the one this cache holds routes of
            // (tables are numbered in order): it would never be asked for again.
            return;
        }
        if self.table != table || self.routes.len() >= Self::CAPACITY {
            self.routes.clear();
            self.table = table;
        }
        let verbs = self.routes.entry(path.to_owned()).or_default();
        verbs.retain(|(v, _)| v != verb);
        verbs.push((verb.clone(), found));
    }

    /// How many paths are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method as Verb;

    #[test]
    fn a_cached_route_is_found_again_for_its_verb_and_table_only() {
        let mut cache = RouteCache::new();
        assert_eq!(cache.get(7, &Verb::POST, "/greeter/say-hello"), None::<u32>);
        cache.put(7, &Verb::POST, "/greeter/say-hello", 1);
        cache.put(7, &Verb::GET, "/greeter/say-hello", 2);
        assert_eq!(cache.get(7, &Verb::POST, "/greeter/say-hello"), Some(1));
        assert_eq!(cache.get(7, &Verb::GET, "/greeter/say-hello"), Some(2));
        assert_eq!(cache.get(7, &Verb::PUT, "/greeter/say-hello"), None);
        assert_eq!(cache.get(7, &Verb::POST, "/greeter/say-hell"), None);
        // Put again: replaced, not kept twice.
        cache.put(7, &Verb::POST, "/greeter/say-hello", 3);
        assert_eq!(cache.get(7, &Verb::POST, "/greeter/say-hello"), Some(3));
        assert_eq!(cache.len(), 1);
        // Another table (the registry changed): nothing from the old one.
        assert_eq!(cache.get(8, &Verb::POST, "/greeter/say-hello"), None);
        cache.put(8, &Verb::POST, "/other", 4);
        assert_eq!(cache.len(), 1, "the old table's routes are dropped");
        assert_eq!(cache.get(7, &Verb::POST, "/greeter/say-hello"), None);
        assert_eq!(cache.get(8, &Verb::POST, "/other"), Some(4));
        // A route found in an older table (replaced during the search) is not
        // kept, and does not empty the newer table's routes.
        cache.put(7, &Verb::POST, "/stale", 5);
        assert_eq!(cache.get(8, &Verb::POST, "/other"), Some(4));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_starts_again_instead_of_growing() {
        let mut cache = RouteCache::new();
        let capacity = RouteCache::<usize>::CAPACITY;
        for i in 0..capacity {
            cache.put(1, &Verb::GET, &format!("/users/{i}"), i);
        }
        assert_eq!(cache.len(), capacity);
        assert_eq!(cache.get(1, &Verb::GET, "/users/5"), Some(5));
        cache.put(1, &Verb::GET, "/users/new", 0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(1, &Verb::GET, "/users/5"), None);
        assert_eq!(cache.get(1, &Verb::GET, "/users/new"), Some(0));
    }

    #[test]
    fn every_table_has_its_own_number() {
        let first = Table::default();
        let second = first.without("nothing");
        let third = Table::default();
        assert_ne!(first.id, second.id);
        assert_ne!(second.id, third.id);
        assert_ne!(first.id, 0);
    }
}
