//! The Consul registry: agent service registration with a TTL check, go-micro's
//! tag encoding, health queries for passing nodes, blocking queries for watch.

use crate::client::{ConsulClient, ConsulError, go_duration, segment};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rmicro::registry::{
    Endpoint, Node, Registry, RegistryError, Service, Watcher, compact, merge_by_version,
    watch_snapshots,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one blocking query waits for a change before asking again.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A [`Registry`] on a Consul agent, compatible with go-micro's Consul registry.
///
/// Each node is an agent service (`ID` = node id, `Name` = service name, `Address`
/// and `Port` from the node's address) with a TTL check `service:<id>`, registered
/// `passing`, that every registration refresh passes; Consul deregisters the node when the check has been
/// critical for `DeregisterCriticalServiceAfter` (go-micro's value: TTL + 5 s, at
/// least 1 min 5 s). The version, endpoints and node metadata travel in tags as
/// go-micro writes them — `v-`, `e-`, `t-` followed by hex(zlib(JSON)) — and node
/// metadata with valid keys also in `Meta`; service metadata goes in an `m-` tag
/// (an rmicro addition that go-micro ignores). Lookups ask for passing nodes only;
/// `watch` uses blocking queries.
pub struct ConsulRegistry {
    client: ConsulClient,
    wait: Duration,
    deregister_after: Option<Duration>,
    /// Node id → the registration body last sent, so refreshes only pass the check.
    registered: Mutex<HashMap<String, Vec<u8>>>,
}

impl ConsulRegistry {
    /// A registry on the agent at `address` (`host:port`).
    pub fn new(address: &str) -> Result<Self, RegistryError> {
        let client = ConsulClient::new(address).map_err(|e| RegistryError::BadAddress {
            registry: "consul".into(),
            address: address.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(Self::with_client(client))
    }

    /// A registry using an existing client.
    pub fn with_client(client: ConsulClient) -> Self {
        ConsulRegistry {
            client,
            wait: DEFAULT_WAIT,
            deregister_after: None,
            registered: Mutex::new(HashMap::new()),
        }
    }

    /// How long each blocking query of a watch waits (default [`DEFAULT_WAIT`]).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Sets `DeregisterCriticalServiceAfter` instead of go-micro's TTL + 5 s (at
    /// least 1 min 5 s). Consul itself enforces a minimum of one minute.
    pub fn deregister_critical_after(mut self, after: Duration) -> Self {
        self.deregister_after = Some(after);
        self
    }

    /// The Consul client underneath.
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }

    fn failed(&self, operation: &'static str, err: ConsulError) -> RegistryError {
        RegistryError::Backend {
            registry: self.describe(),
            operation,
            detail: err.to_string(),
        }
    }

    fn registration(&self, service: &Service, node: &Node, ttl: Duration) -> Registration {
        let (host, port) = split_address(&node.address);
        let deregister_after = self.deregister_after.unwrap_or_else(|| {
            let splay = Duration::from_secs(5);
            (ttl + splay).max(Duration::from_secs(60) + splay)
        });
        Registration {
            id: node.id.clone(),
            name: service.name.clone(),
            tags: encode_tags(service, node),
            address: host,
            port,
            meta: node
                .metadata
                .iter()
                .filter(|(k, v)| valid_meta(k, v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            check: TtlCheck {
                check_id: check_id(&node.id),
                name: format!("service {} TTL", service.name),
                ttl: go_duration(ttl),
                deregister_critical_service_after: go_duration(deregister_after),
                status: "passing",
            },
        }
    }

    async fn register_node(
        &self,
        service: &Service,
        node: &Node,
        ttl: Duration,
    ) -> Result<(), RegistryError> {
        let registration = self.registration(service, node, ttl);
        let body = serde_json::to_vec(&registration).map_err(|e| RegistryError::Backend {
            registry: self.describe(),
            operation: "encode a registration",
            detail: e.to_string(),
        })?;
        let known = self
            .registered
            .lock()
            .ok()
            .and_then(|r| r.get(&node.id).cloned());
        if known.as_deref() == Some(body.as_slice()) {
            match self.pass(&node.id).await {
                Ok(()) => return Ok(()),
                // The agent forgot the service (restarted, or deregistered it after
                // its check was critical too long): register it again.
                Err(err) if matches!(err.status(), Some(404 | 500)) => {
                    tracing::info!(node = %node.id, error = %err, "Consul no longer knows this node; registering again");
                }
                Err(err) => return Err(self.failed("pass a TTL check", err)),
            }
        }
        self.client
            .put(
                "/v1/agent/service/register?replace-existing-checks=true",
                Some(body.clone()),
            )
            .await
            .map_err(|e| self.failed("register a service", e))?;
        rmicro::sync::lock(&self.registered).insert(node.id.clone(), body);
        Ok(())
    }

    async fn pass(&self, node_id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/check/pass/{}", segment(&check_id(node_id)));
        self.client.put(&path, None).await.map(drop)
    }
}

/// The id of a node's TTL check, Consul's default for a service's check.
fn check_id(node_id: &str) -> String {
    format!("service:{node_id}")
}

/// Consul accepts `Meta` keys of letters, digits, `-` and `_` (up to 128), values up
/// to 512 bytes; other pairs still travel in `t-` tags.
fn valid_meta(key: &str, value: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && value.len() <= 512
        && !key.starts_with("consul-")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits `host:port` (or `[v6]:port`) for Consul's `Address` and `Port`.
fn split_address(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
            ),
            Err(_) => (address.to_owned(), 0),
        },
        None => (address.to_owned(), 0),
    }
}

fn join_address(host: &str, port: u16) -> String {
    if port == 0 {
        host.to_owned()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// go-micro's tags for one node: `t-` per metadata pair, `e-` per endpoint, `v-`
/// for the version; plus `m-` with the service metadata.
pub fn encode_tags(service: &Service, node: &Node) -> Vec<String> {
    let mut tags: Vec<String> = node
        .metadata
        .iter()
        .map(|(k, v)| {
            let pair: BTreeMap<&str, &str> = [(k.as_str(), v.as_str())].into();
            format!("t-{}", compact::encode(&json(&pair)))
        })
        .collect();
    tags.extend(
        service
            .endpoints
            .iter()
            .map(|e| format!("e-{}", compact::encode(&json(e)))),
    );
    tags.push(format!("v-{}", compact::encode(service.version.as_bytes())));
    if !service.metadata.is_empty() {
        tags.push(format!("m-{}", compact::encode(&json(&service.metadata))));
    }
    tags
}

/// Serializes a record to JSON (serde_json cannot fail on these types).
fn json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The services of a `GET /v1/health/service/<name>` body.
pub(crate) fn decode_health(body: &[u8]) -> Result<Vec<Service>, serde_json::Error> {
    let entries: Vec<HealthEntry> = serde_json::from_slice(body)?;
    Ok(entries.into_iter().map(decode_entry).collect())
}

/// Reads a service record back from a health entry's tags, as go-micro does
/// (including its older `t=`/`e=`/`v=` plain-JSON tags).
fn decode_entry(entry: HealthEntry) -> Service {
    let mut version = String::new();
    let mut metadata = BTreeMap::new();
    let mut node_metadata: BTreeMap<String, String> = entry.service.meta.unwrap_or_default();
    let mut endpoints = Vec::new();
    for tag in entry.service.tags.unwrap_or_default() {
        let (kind, payload) = match tag.split_at_checked(2) {
            Some((kind @ ("t-" | "e-" | "v-" | "m-"), rest)) => {
                (kind.as_bytes()[0], compact::decode(rest))
            }
            Some((kind @ ("t=" | "e=" | "v="), rest)) => {
                (kind.as_bytes()[0], Some(rest.as_bytes().to_vec()))
            }
            _ => continue,
        };
        let Some(payload) = payload else { continue };
        match kind {
            b'v' => version = String::from_utf8_lossy(&payload).into_owned(),
            b't' => {
                if let Ok(pairs) = serde_json::from_slice::<BTreeMap<String, String>>(&payload) {
                    node_metadata.extend(pairs);
                }
            }
            b'e' => {
                if let Ok(endpoint) = serde_json::from_slice::<Endpoint>(&payload) {
                    endpoints.push(endpoint);
                }
            }
            _ => {
                if let Ok(pairs) = serde_json::from_slice::<BTreeMap<String, String>>(&payload) {
                    metadata = pairs;
                }
            }
        }
    }
    let host = if entry.service.address.is_empty() {
        entry.node.address
    } else {
        entry.service.address
    };
    Service {
        name: entry.service.service,
        version,
        metadata,
        endpoints,
        nodes: vec![Node {
            id: entry.service.id,
            address: join_address(&host, entry.service.port),
            metadata: node_metadata,
        }],
    }
}

/// The body of `PUT /v1/agent/service/register`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Registration {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    check: TtlCheck,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TtlCheck {
    #[serde(rename = "CheckID")]
    check_id: String,
    name: String,
    #[serde(rename = "TTL")]
    ttl: String,
    deregister_critical_service_after: String,
    /// `passing`, so the node is visible at once and a re-registration (new
    /// address) never shows it critical in between.
    status: &'static str,
}

/// One element of `GET /v1/health/service/<name>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: HealthNode,
    service: HealthService,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthNode {
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

/// What lookups and watches need, cloned into watch tasks.
#[derive(Clone)]
struct Reader {
    client: ConsulClient,
    registry: String,
}

impl Reader {
    fn failed(&self, operation: &'static str, err: ConsulError) -> RegistryError {
        RegistryError::Backend {
            registry: self.registry.clone(),
            operation,
            detail: err.to_string(),
        }
    }

    fn corrupt(&self, key: &str, err: serde_json::Error) -> RegistryError {
        RegistryError::Corrupt {
            registry: self.registry.clone(),
            key: key.to_owned(),
            detail: err.to_string(),
        }
    }

    /// The passing nodes of `name`, one record per node, and the index they are at.
    async fn nodes(
        &self,
        name: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(Vec<Service>, u64), RegistryError> {
        let path = format!("/v1/health/service/{}?passing=1", segment(name));
        let reply = self
            .client
            .get(&path, blocking)
            .await
            .map_err(|e| self.failed("read a service", e))?;
        let services = decode_health(&reply.body).map_err(|e| self.corrupt(&path, e))?;
        Ok((services, reply.index.unwrap_or(0)))
    }

    /// Every service name with its tags, and the index.
    async fn catalog(
        &self,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(BTreeMap<String, Vec<String>>, u64), RegistryError> {
        let path = "/v1/catalog/services";
        let reply = self
            .client
            .get(path, blocking)
            .await
            .map_err(|e| self.failed("list services", e))?;
        let services: BTreeMap<String, Option<Vec<String>>> =
            serde_json::from_slice(&reply.body).map_err(|e| self.corrupt(path, e))?;
        Ok((
            services
                .into_iter()
                .filter(|(name, _)| name != "consul")
                .map(|(name, tags)| (name, tags.unwrap_or_default()))
                .collect(),
            reply.index.unwrap_or(0),
        ))
    }

    /// The passing nodes of every service.
    async fn all_nodes(&self) -> Result<Vec<Service>, RegistryError> {
        let (names, _) = self.catalog(None).await?;
        let mut all = Vec::new();
        for name in names.keys() {
            all.extend(self.nodes(name, None).await?.0);
        }
        Ok(all)
    }

    /// The index of any health change (`/v1/health/state/any`), blocking.
    async fn health_index(&self, blocking: Option<(u64, Duration)>) -> Result<u64, RegistryError> {
        let reply = self
            .client
            .get("/v1/health/state/any", blocking)
            .await
            .map_err(|e| self.failed("watch health", e))?;
        Ok(reply.index.unwrap_or(0))
    }
}

impl ConsulRegistry {
    fn reader(&self) -> Reader {
        Reader {
            client: self.client.clone(),
            registry: self.describe(),
        }
    }
}

/// Successive snapshots from blocking queries: each waits until Consul's index
/// moves past the last one (or the wait ends), then yields the passing nodes.
fn blocking_snapshots(
    reader: Reader,
    service: Option<String>,
    wait: Duration,
    index: u64,
) -> impl futures_util::Stream<Item = Result<Vec<Service>, RegistryError>> + Send + 'static {
    futures_util::stream::unfold(Some(index), move |index| {
        let (reader, service) = (reader.clone(), service.clone());
        async move {
            let index = index?;
            let step = async {
                match &service {
                    Some(name) => reader.nodes(name, Some((index, wait))).await,
                    None => {
                        let next = reader.health_index(Some((index, wait))).await?;
                        Ok((reader.all_nodes().await?, next))
                    }
                }
            };
            match step.await {
                // Consul's rule: an index that goes backwards means start over.
                Ok((current, next)) => {
                    Some((Ok(current), Some(if next < index { 0 } else { next })))
                }
                Err(err) => Some((Err(err), None)),
            }
        }
    })
}

impl Registry for ConsulRegistry {
    fn describe(&self) -> String {
        format!("consul://{}", self.client.address())
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
                rmicro::sync::lock(&self.registered).remove(&node.id);
                let path = format!("/v1/agent/service/deregister/{}", segment(&node.id));
                match self.client.put(&path, None).await {
                    Ok(_) => {}
                    // Already gone: what deregistering wanted.
                    Err(err) if err.status() == Some(404) => {}
                    Err(err) => return Err(self.failed("deregister a service", err)),
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn get_service(&self, name: &str) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        let name = name.to_owned();
        async move {
            let (records, _) = self.reader().nodes(&name, None).await?;
            Ok(merge_by_version(records))
        }
        .boxed()
    }

    fn list_services(&self) -> BoxFuture<'_, Result<Vec<Service>, RegistryError>> {
        async move {
            let (names, _) = self.reader().catalog(None).await?;
            let mut services = Vec::new();
            for (name, tags) in names {
                let mut versions: Vec<String> = tags
                    .iter()
                    .filter_map(|t| t.strip_prefix("v-"))
                    .filter_map(compact::decode)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .collect();
                versions.sort();
                versions.dedup();
                if versions.is_empty() {
                    versions.push(String::new());
                }
                services.extend(versions.into_iter().map(|version| Service {
                    name: name.clone(),
                    version,
                    ..Default::default()
                }));
            }
            Ok(services)
        }
        .boxed()
    }

    fn watch(&self, service: Option<&str>) -> BoxFuture<'_, Result<Watcher, RegistryError>> {
        let service = service.map(str::to_owned);
        let reader = self.reader();
        let wait = self.wait;
        async move {
            let (initial, index) = match &service {
                Some(name) => reader.nodes(name, None).await?,
                None => {
                    let index = reader.health_index(None).await?;
                    (reader.all_nodes().await?, index)
                }
            };
            Ok(watch_snapshots(
                initial,
                blocking_snapshots(reader, service, wait, index),
            ))
        }
        .boxed()
    }
}

/// Makes a shared registry from an address (for `--registry consul`).
pub(crate) fn shared(address: &str) -> Result<rmicro::registry::SharedRegistry, RegistryError> {
    Ok(Arc::new(ConsulRegistry::new(address)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmicro::registry::testing::record;

    #[test]
    fn tags_round_trip_like_go_micro() {
        let mut service = record("greeter", "1.2.3", "greeter-1", "127.0.0.1:9000");
        service.nodes[0]
            .metadata
            .insert("dotted.key".into(), "x".into());
        let node = service.nodes[0].clone();
        let tags = encode_tags(&service, &node);
        assert!(tags.iter().any(|t| t.starts_with("v-")));
        assert_eq!(tags.iter().filter(|t| t.starts_with("t-")).count(), 2);
        assert_eq!(tags.iter().filter(|t| t.starts_with("e-")).count(), 1);
        let entry = HealthEntry {
            node: HealthNode {
                address: "10.0.0.1".into(),
            },
            service: HealthService {
                id: node.id.clone(),
                service: "greeter".into(),
                tags: Some(tags),
                address: "127.0.0.1".into(),
                port: 9000,
                meta: None,
            },
        };
        assert_eq!(decode_entry(entry), service);
    }

    #[test]
    fn reads_go_micros_older_plain_tags_and_node_address() {
        let entry = HealthEntry {
            node: HealthNode {
                address: "10.0.0.1".into(),
            },
            service: HealthService {
                id: "old-1".into(),
                service: "old".into(),
                tags: Some(vec![
                    "v=0.9".into(),
                    r#"t={"region":"eu"}"#.into(),
                    "unrelated".into(),
                    "e-zz".into(),
                ]),
                address: String::new(),
                port: 8080,
                meta: Some([("protocol".to_owned(), "grpc".to_owned())].into()),
            },
        };
        let service = decode_entry(entry);
        assert_eq!(service.version, "0.9");
        assert_eq!(service.nodes[0].address, "10.0.0.1:8080");
        assert_eq!(service.nodes[0].metadata["region"], "eu");
        assert_eq!(service.nodes[0].metadata["protocol"], "grpc");
        assert!(service.endpoints.is_empty(), "a broken e- tag is skipped");
    }

    #[test]
    fn addresses_split_and_join() {
        assert_eq!(split_address("[::1]:80"), ("::1".into(), 80));
        assert_eq!(join_address("::1", 80), "[::1]:80");
        assert_eq!(split_address("10.0.0.1:9"), ("10.0.0.1".into(), 9));
        assert!(!valid_meta("dotted.key", "x"));
        assert!(valid_meta("transport", "grpc"));
    }
}
