//! A faithful double of the Consul agent HTTP API endpoints rmicro uses, for tests
//! on machines where no Consul can run.
//!
//! It serves, with Consul's paths, JSON shapes, status codes and blocking-query
//! semantics (`index`, `wait`, `X-Consul-Index`):
//!
//! - `PUT /v1/agent/service/register` (validates the body as Consul does for the
//!   fields rmicro sends: name, port, `Meta` keys, TTL check durations; TTL checks
//!   start `critical` unless `Status` is given, and keep their status when the
//!   service is registered again),
//! - `PUT /v1/agent/service/deregister/<id>`, `PUT /v1/agent/check/pass/<id>`,
//! - `GET /v1/health/service/<name>[?passing]`, `GET /v1/catalog/services`,
//!   `GET /v1/health/state/any`,
//! - `GET`/`PUT`/`DELETE /v1/kv/<key>[?recurse]` (values base64 in JSON, as Consul).
//!
//! With [`DoubleOptions`] it serves HTTPS (client certificates verified when a
//! client CA is given) and enforces an ACL token as an agent with ACLs on and
//! `default_policy = "deny"` does (403 `ACL not found` for an unknown token, 403
//! `Permission denied` for none).
//!
//! TTL checks turn critical when not passed within their TTL, and services whose
//! check stays critical for `DeregisterCriticalServiceAfter` are removed. Unlike a
//! real agent (which reaps every 30 s and enforces a one-minute minimum), the
//! double applies both promptly, so tests stay short. [`ConsulDouble::stop`] and
//! [`ConsulDouble::resume`] simulate an agent outage; [`ConsulDouble::forget_all`]
//! an agent restart that lost its registrations.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::client::parse_go_duration;

const NODE: &str = "rmicro-double";
const MAX_BODY: usize = 512 * 1024;

struct ServiceEntry {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    body: Value,
    create_index: u64,
    modify_index: u64,
}

struct CheckEntry {
    id: String,
    name: String,
    service_id: String,
    service_name: String,
    status: String,
    output: String,
    ttl: Duration,
    deregister_after: Option<Duration>,
    last_update: Instant,
    critical_since: Option<Instant>,
    create_index: u64,
    modify_index: u64,
}

struct KvEntry {
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
}

#[derive(Default)]
struct State {
    index: u64,
    services: BTreeMap<String, ServiceEntry>,
    checks: BTreeMap<String, CheckEntry>,
    kv: BTreeMap<String, KvEntry>,
    requests: Vec<String>,
}

impl State {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn remove_service(&mut self, id: &str) -> bool {
        let existed = self.services.remove(id).is_some();
        self.checks.retain(|_, c| c.service_id != id);
        existed
    }

    /// Expires TTL checks and reaps services critical for too long; bumps the
    /// index if anything changed.
    fn sweep(&mut self) {
        let now = Instant::now();
        let next = self.index + 1;
        let mut changed = false;
        let mut reap = Vec::new();
        for check in self.checks.values_mut() {
            if check.status != "critical" && now.duration_since(check.last_update) > check.ttl {
                check.status = "critical".into();
                check.output = "TTL expired".into();
                check.critical_since = Some(now);
                check.modify_index = next;
                changed = true;
            }
            if let (Some(after), Some(since)) = (check.deregister_after, check.critical_since)
                && check.status == "critical"
                && now.duration_since(since) > after
            {
                reap.push(check.service_id.clone());
            }
        }
        for id in reap {
            changed |= self.remove_service(&id);
        }
        if changed {
            self.index = next;
        }
    }

    fn check_json(&self, check: &CheckEntry) -> Value {
        json!({
            "Node": NODE, "CheckID": check.id, "Name": check.name, "Status": check.status,
            "Notes": "", "Output": check.output, "ServiceID": check.service_id,
            "ServiceName": check.service_name, "ServiceTags": self.services
                .get(&check.service_id).map(|s| s.tags.clone()).unwrap_or_default(),
            "Type": "ttl", "CreateIndex": check.create_index, "ModifyIndex": check.modify_index,
        })
    }

    fn serf_check(&self) -> Value {
        json!({
            "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
            "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
            "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
            "CreateIndex": 1, "ModifyIndex": 1,
        })
    }
}

struct Inner {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
    /// The ACL token every request must carry, when ACLs are on.
    acl_token: Option<String>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        rmicro::sync::lock(&self.state)
    }

    /// Runs `change` on the state and wakes blocking queries if it bumped the index.
    fn mutate<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let (result, index) = {
            let mut state = self.lock();
            let before = state.index;
            let result = change(&mut state);
            (result, (state.index != before).then_some(state.index))
        };
        if let Some(index) = index {
            self.changed.send_replace(index);
        }
        result
    }
}

/// How a [`ConsulDouble`] is secured.
#[derive(Debug, Clone, Default)]
pub struct DoubleOptions {
    /// Serve HTTPS with this identity (and verify client certificates when it has
    /// a client CA), as an agent with `verify_incoming` does.
    pub tls: Option<rmicro::transport::ServerTls>,
    /// Turn ACLs on (`default_policy = "deny"`): every request needs this token.
    pub acl_token: Option<String>,
}

/// A running Consul double on a free loopback port. Stops when dropped.
pub struct ConsulDouble {
    inner: Arc<Inner>,
    address: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    tasks: JoinSet<()>,
}

impl ConsulDouble {
    /// Starts the double on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<ConsulDouble> {
        Self::start_with(DoubleOptions::default()).await
    }

    /// Starts the double with HTTPS and/or ACLs (see [`DoubleOptions`]).
    pub async fn start_with(options: DoubleOptions) -> std::io::Result<ConsulDouble> {
        let acceptor = match &options.tls {
            Some(tls) => Some(tokio_rustls::TlsAcceptor::from(
                tls.rustls_config(&[b"http/1.1"])
                    .map_err(std::io::Error::other)?,
            )),
            None => None,
        };
        let (changed, _) = tokio::sync::watch::channel(1);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                index: 1,
                ..Default::default()
            }),
            changed,
            acl_token: options.acl_token,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mut double = ConsulDouble {
            inner,
            address,
            acceptor,
            tasks: JoinSet::new(),
        };
        double.serve(listener);
        Ok(double)
    }

    fn serve(&mut self, listener: TcpListener) {
        let inner = self.inner.clone();
        let acceptor = self.acceptor.clone();
        self.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let inner = inner.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(inner, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match acceptor {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => http.serve_connection(TokioIo::new(tls), service).await,
                            Err(_) => return,
                        },
                    };
                });
                while connections.try_join_next().is_some() {}
            }
        });
        let inner = self.inner.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                inner.mutate(State::sweep);
            }
        });
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Closes the port and every connection, as a stopped agent would.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }

    /// Listens again on the same port with the same state.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.stop();
        while self.tasks.join_next().await.is_some() {}
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(err) if Instant::now() > deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// Forgets every service and check, as an agent restarted without its data.
    pub fn forget_all(&self) {
        self.inner.mutate(|state| {
            state.services.clear();
            state.checks.clear();
            state.bump();
        });
    }

    /// The body of the last registration of service `id`, as received.
    pub fn registration(&self, id: &str) -> Option<Value> {
        self.inner.lock().services.get(id).map(|s| s.body.clone())
    }

    /// The status of check `id` (`passing`, `critical`, …).
    pub fn check_status(&self, id: &str) -> Option<String> {
        self.inner.lock().checks.get(id).map(|c| c.status.clone())
    }

    /// How many requests so far had this `METHOD /path` (without the query).
    pub fn count(&self, request: &str) -> usize {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| *r == request)
            .count()
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Consul's answers with ACLs on and `default_policy = "deny"`: a request with no
/// token runs as the anonymous token, which may do nothing (403 `Permission
/// denied`); an unknown token is 403 `ACL not found`. The token comes in
/// `X-Consul-Token`, `Authorization: Bearer`, or `?token=`, as Consul reads it.
fn acl_refusal(
    expected: &str,
    req: &Request<Incoming>,
    query: &BTreeMap<String, String>,
) -> Option<Response<Full<Bytes>>> {
    let headers = req.headers();
    let given = headers
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
        })
        .or_else(|| query.get("token").cloned());
    match given {
        Some(token) if token == expected => None,
        Some(_) => Some(reply(StatusCode::FORBIDDEN, "ACL not found")),
        None => Some(reply(
            StatusCode::FORBIDDEN,
            "Permission denied: anonymous token lacks permission",
        )),
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn reply_json(index: u64, body: &Value) -> Response<Full<Bytes>> {
    let mut response = reply(StatusCode::OK, body.to_string());
    response.headers_mut().insert(
        "Content-Type",
        http::HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert("X-Consul-Index", http::HeaderValue::from(index));
    response
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

/// Waits as a blocking query does: until the index passes `index` or `wait` ends.
async fn block(inner: &Inner, query: &BTreeMap<String, String>) -> Result<(), String> {
    let Some(index) = query.get("index") else {
        return Ok(());
    };
    let index: u64 = index
        .parse()
        .map_err(|_| format!("Invalid index: \"{index}\""))?;
    let wait = match query.get("wait") {
        Some(w) => parse_go_duration(w).ok_or_else(|| format!("Invalid wait time: \"{w}\""))?,
        None => Duration::from_secs(300),
    }
    .min(Duration::from_secs(600));
    let mut changed = inner.changed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    while *changed.borrow_and_update() <= index {
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = percent_encoding::percent_decode_str(req.uri().path())
        .decode_utf8_lossy()
        .into_owned();
    let query = query(&req);
    inner.mutate(|s| s.requests.push(format!("{method} {path}")));
    if let Some(expected) = &inner.acl_token
        && let Some(refused) = acl_refusal(expected, &req, &query)
    {
        return refused;
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return reply(StatusCode::PAYLOAD_TOO_LARGE, err.to_string()),
    };
    if method == Method::GET
        && let Err(err) = block(&inner, &query).await
    {
        return reply(StatusCode::BAD_REQUEST, err);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(4, '/').collect();
    if method == Method::PUT
        && let Some(id) = path.strip_prefix("/v1/agent/service/deregister/")
    {
        return deregister(&inner, id);
    }
    if method == Method::PUT
        && let Some(id) = path.strip_prefix("/v1/agent/check/pass/")
    {
        return pass(&inner, id, query.get("note").cloned().unwrap_or_default());
    }
    match (&method, segments.as_slice()) {
        (&Method::PUT, ["v1", "agent", "service", "register"]) => register(&inner, &body),
        (&Method::GET, ["v1", "health", "service", name]) => {
            let passing = query.contains_key("passing");
            let state = inner.lock();
            let entries: Vec<Value> = state
                .services
                .values()
                .filter(|s| s.name == *name)
                .filter_map(|s| {
                    let checks: Vec<Value> = std::iter::once(state.serf_check())
                        .chain(
                            state
                                .checks
                                .values()
                                .filter(|c| c.service_id == s.id)
                                .map(|c| state.check_json(c)),
                        )
                        .collect();
                    if passing && checks.iter().any(|c| c["Status"] != "passing") {
                        return None;
                    }
                    Some(json!({
                        "Node": {"ID": "0b1e1b9e-0000-4000-8000-000000000001", "Node": NODE,
                                 "Address": "127.0.0.1", "Datacenter": "dc1",
                                 "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
                                 "Meta": {"consul-network-segment": ""}},
                        "Service": {"ID": s.id, "Service": s.name, "Tags": s.tags,
                                    "Address": s.address, "Meta": s.meta, "Port": s.port,
                                    "Weights": {"Passing": 1, "Warning": 1},
                                    "EnableTagOverride": false,
                                    "CreateIndex": s.create_index, "ModifyIndex": s.modify_index},
                        "Checks": checks,
                    }))
                })
                .collect();
            reply_json(state.index, &Value::Array(entries))
        }
        (&Method::GET, ["v1", "catalog", "services"]) => {
            let state = inner.lock();
            let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
            services.insert("consul".into(), Vec::new());
            for s in state.services.values() {
                let tags = services.entry(s.name.clone()).or_default();
                for tag in &s.tags {
                    if !tags.contains(tag) {
                        tags.push(tag.clone());
                    }
                }
            }
            reply_json(state.index, &json!(services))
        }
        (&Method::GET, ["v1", "health", "state", "any"]) => {
            let state = inner.lock();
            let checks: Vec<Value> = std::iter::once(state.serf_check())
                .chain(state.checks.values().map(|c| state.check_json(c)))
                .collect();
            reply_json(state.index, &Value::Array(checks))
        }
        (_, ["v1", "kv", ..]) => kv(&inner, &method, &path, &query, body),
        _ => reply(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn deregister(inner: &Inner, id: &str) -> Response<Full<Bytes>> {
    let existed = inner.mutate(|s| {
        let existed = s.remove_service(id);
        if existed {
            s.bump();
        }
        existed
    });
    if existed {
        reply(StatusCode::OK, "")
    } else {
        reply(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
        )
    }
}

fn pass(inner: &Inner, id: &str, note: String) -> Response<Full<Bytes>> {
    let known = inner.mutate(|s| {
        let next = s.index + 1;
        let Some(check) = s.checks.get_mut(id) else {
            return false;
        };
        check.last_update = Instant::now();
        check.output = note;
        if check.status != "passing" {
            check.status = "passing".into();
            check.critical_since = None;
            check.modify_index = next;
            s.index = next;
        }
        true
    });
    if known {
        reply(StatusCode::OK, "")
    } else {
        reply(StatusCode::NOT_FOUND, format!("Unknown check ID {id:?}"))
    }
}

fn bad(message: impl Into<Bytes>) -> Response<Full<Bytes>> {
    reply(StatusCode::BAD_REQUEST, message)
}

fn register(inner: &Inner, body: &[u8]) -> Response<Full<Bytes>> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(err) => return bad(format!("Request decode failed: {err}")),
    };
    let Some(object) = parsed.as_object() else {
        return bad("Request decode failed: expected a JSON object");
    };
    const KNOWN: &[&str] = &[
        "ID",
        "Name",
        "Tags",
        "Address",
        "TaggedAddresses",
        "Meta",
        "Port",
        "Kind",
        "Proxy",
        "Connect",
        "Check",
        "Checks",
        "EnableTagOverride",
        "Weights",
        "Namespace",
        "Partition",
        "SocketPath",
        "Locality",
    ];
    if let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return bad(format!(
            "Request decode failed: json: unknown field {unknown:?}"
        ));
    }
    let Some(name) = object
        .get("Name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return bad("Missing service name");
    };
    let id = object
        .get("ID")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
        .unwrap_or(name)
        .to_owned();
    let port = match object.get("Port") {
        None | Some(Value::Null) => 0,
        Some(p) => match p.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(p) => p,
            None => return bad("Request decode failed: Port must be a number from 0 to 65535"),
        },
    };
    let tags: Vec<String> = match object.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) if tags.iter().all(Value::is_string) => tags
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        Some(_) => return bad("Request decode failed: Tags must be a list of strings"),
    };
    let mut meta = BTreeMap::new();
    match object.get("Meta") {
        None | Some(Value::Null) => {}
        Some(Value::Object(pairs)) => {
            for (k, v) in pairs {
                let Some(v) = v.as_str() else {
                    return bad(format!(
                        "Request decode failed: Meta value of {k:?} must be a string"
                    ));
                };
                let valid_key = !k.is_empty()
                    && k.len() <= 128
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid_key {
                    return bad(format!(
                        "Invalid Service Meta: Key contains invalid characters: {k:?}"
                    ));
                }
                if k.starts_with("consul-") {
                    return bad(format!(
                        "Invalid Service Meta: Key prefix 'consul-' is reserved for internal use: {k:?}"
                    ));
                }
                if v.len() > 512 {
                    return bad(format!(
                        "Invalid Service Meta: Value is too long (limit: 512 characters): {k:?}"
                    ));
                }
                meta.insert(k.clone(), v.to_owned());
            }
        }
        Some(_) => return bad("Request decode failed: Meta must be an object"),
    }
    let check = match object.get("Check") {
        None | Some(Value::Null) => None,
        Some(Value::Object(check)) => {
            let Some(ttl) = check.get("TTL").and_then(Value::as_str) else {
                return bad("Invalid check: TTL must be > 0 for TTL checks");
            };
            let Some(ttl) = parse_go_duration(ttl).filter(|d| !d.is_zero()) else {
                return bad(format!(
                    "Request decode failed: time: invalid duration {ttl:?}"
                ));
            };
            let deregister_after = match check.get("DeregisterCriticalServiceAfter") {
                None | Some(Value::Null) => None,
                Some(Value::String(d)) => match parse_go_duration(d) {
                    Some(d) => Some(d),
                    None => {
                        return bad(format!(
                            "Request decode failed: time: invalid duration {d:?}"
                        ));
                    }
                },
                Some(_) => {
                    return bad(
                        "Request decode failed: DeregisterCriticalServiceAfter must be a duration string",
                    );
                }
            };
            let status = check
                .get("Status")
                .and_then(Value::as_str)
                .unwrap_or("critical");
            if !["passing", "warning", "critical"].contains(&status) {
                return bad(format!("Invalid check status: {status:?}"));
            }
            let check_id = check
                .get("CheckID")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("service:{id}"));
            let check_name = check
                .get("Name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("Service '{name}' check"));
            Some((
                check_id,
                check_name,
                ttl,
                deregister_after,
                status.to_owned(),
            ))
        }
        Some(_) => return bad("Request decode failed: Check must be an object"),
    };
    let address = object
        .get("Address")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = name.to_owned();
    inner.mutate(|state| {
        let index = state.bump();
        let create_index = state.services.get(&id).map_or(index, |s| s.create_index);
        // replace-existing-checks or not, rmicro registers one check per service.
        state.checks.retain(|_, c| c.service_id != id);
        if let Some((check_id, check_name, ttl, deregister_after, status)) = check {
            let critical = status == "critical";
            state.checks.insert(
                check_id.clone(),
                CheckEntry {
                    id: check_id,
                    name: check_name,
                    service_id: id.clone(),
                    service_name: name.clone(),
                    status,
                    output: String::new(),
                    ttl,
                    deregister_after,
                    last_update: Instant::now(),
                    critical_since: critical.then(Instant::now),
                    create_index: index,
                    modify_index: index,
                },
            );
        }
        state.services.insert(
            id.clone(),
            ServiceEntry {
                id,
                name,
                tags,
                address,
                port,
                meta,
                body: parsed.clone(),
                create_index,
                modify_index: index,
            },
        );
    });
    reply(StatusCode::OK, "")
}

fn kv(
    inner: &Inner,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    use base64::Engine;
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let key = path.trim_start_matches("/v1/kv/").to_owned();
    match *method {
        Method::GET => {
            let state = inner.lock();
            let recurse = query.contains_key("recurse");
            let entries: Vec<Value> = state
                .kv
                .iter()
                .filter(|(k, _)| if recurse { k.starts_with(&key) } else { **k == key })
                .map(|(k, e)| {
                    json!({"Key": k, "Value": if e.value.is_empty() { Value::Null } else { Value::String(b64(&e.value)) },
                           "Flags": e.flags, "LockIndex": 0,
                           "CreateIndex": e.create_index, "ModifyIndex": e.modify_index})
                })
                .collect();
            if entries.is_empty() {
                let mut response = reply(StatusCode::NOT_FOUND, "");
                response
                    .headers_mut()
                    .insert("X-Consul-Index", http::HeaderValue::from(state.index));
                return response;
            }
            reply_json(state.index, &Value::Array(entries))
        }
        Method::PUT => {
            if key.is_empty() {
                return bad("Missing key name");
            }
            let flags = query.get("flags").and_then(|f| f.parse().ok()).unwrap_or(0);
            inner.mutate(|state| {
                let index = state.bump();
                let create_index = state.kv.get(&key).map_or(index, |e| e.create_index);
                state.kv.insert(
                    key,
                    KvEntry {
                        value: body.to_vec(),
                        flags,
                        create_index,
                        modify_index: index,
                    },
                );
            });
            reply(StatusCode::OK, "true")
        }
        Method::DELETE => {
            let recurse = query.contains_key("recurse");
            inner.mutate(|state| {
                let before = state.kv.len();
                state.kv.retain(|k, _| {
                    if recurse {
                        !k.starts_with(&key)
                    } else {
                        *k != key
                    }
                });
                if state.kv.len() != before {
                    state.bump();
                }
            });
            reply(StatusCode::OK, "true")
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, ""),
    }
}
