//! Helpers shared by the greeter's integration tests.
#![allow(dead_code)]

use greeter::proto::{GreeterClient, GreeterServer};
use rmicro::server::RunningServer;
use std::sync::Arc;
use std::time::Duration;

/// Starts the real greeter on a free loopback port.
pub async fn start_greeter() -> (rmicro::Service, RunningServer) {
    start_with(greeter::Greeter, |b| b).await
}

/// Starts a service named `greeter` serving `handler`, with extra builder settings.
pub async fn start_with<H: greeter::proto::Greeter>(
    handler: H,
    configure: impl FnOnce(rmicro::ServiceBuilder) -> rmicro::ServiceBuilder,
) -> (rmicro::Service, RunningServer) {
    let builder = rmicro::Service::builder("greeter")
        .version("1.0.0")
        .address("127.0.0.1:0")
        .grace_period(Duration::from_secs(2))
        .args(["greeter", "--log-level", "warn"])
        .registry(Arc::new(rmicro::registry::MemoryRegistry::new()));
    let service = configure(builder.handle(GreeterServer::new(handler)))
        .build()
        .expect("valid test flags");
    let server = service.start().await.expect("server starts");
    (service, server)
}

/// A typed client for the greeter at `server`.
pub fn client_for(server: &RunningServer) -> GreeterClient {
    GreeterClient::new(
        "greeter",
        rmicro::Client::default().with_route("greeter", server.local_addr().to_string()),
    )
}

/// A plain tonic channel to `server` (for stock gRPC clients such as health).
pub async fn tonic_channel(server: &RunningServer) -> tonic::transport::Channel {
    tonic_channel_at(server.local_addr()).await
}

/// A plain tonic channel to the server at `address`.
pub async fn tonic_channel_at(address: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("the server accepts connections")
}

/// Waits until `cond` holds, checking every 10 ms, failing after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[allow(unused_imports)] // each test binary uses some of them
pub use rmicro::testing::{curl, in_ci, listening_address, python, read_until, repo_root, require};

/// Kills a child process when the test ends, however it ends.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client wrapper (`wrap_call`) for tests: counts how many times it was applied
/// (how many stacks were built), the calls through it, and the calls per dialled
/// address (from the attempt's [`rmicro::wrapper::AttemptInfo`]).
#[derive(Clone, Default)]
pub struct Tap {
    /// Stacks built with this layer.
    pub applied: Arc<std::sync::atomic::AtomicUsize>,
    /// Calls that passed.
    pub calls: Arc<std::sync::atomic::AtomicUsize>,
    /// Calls per node address.
    pub per_address: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl<S> tower::Layer<S> for Tap {
    type Service = Tapped<S>;

    fn layer(&self, inner: S) -> Tapped<S> {
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Tapped {
            inner,
            tap: self.clone(),
        }
    }
}

/// The service [`Tap`] wraps around a stack.
#[derive(Clone)]
pub struct Tapped<S> {
    inner: S,
    tap: Tap,
}

impl<S, B> tower::Service<http::Request<B>> for Tapped<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> S::Future {
        self.tap
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(info) = request.extensions().get::<rmicro::wrapper::AttemptInfo>() {
            *self
                .tap
                .per_address
                .lock()
                .unwrap()
                .entry(info.address().to_string())
                .or_default() += 1;
        }
        self.inner.call(request)
    }
}

/// A fresh local-registry directory for processes to meet in: its path, the
/// registry, and the flags that point a service at it.
pub fn local_cluster(
    tag: &str,
) -> (
    std::path::PathBuf,
    Arc<dyn rmicro::registry::Registry>,
    [std::ffi::OsString; 4],
) {
    let dir = std::env::temp_dir().join(format!("rmicro-{tag}-{}", uuid_like()));
    let registry: Arc<dyn rmicro::registry::Registry> = Arc::new(
        rmicro::registry::LocalRegistry::new(&dir).poll_interval(Duration::from_millis(50)),
    );
    let flags = [
        "--registry".into(),
        "local".into(),
        "--registry-address".into(),
        dir.clone().into_os_string(),
    ];
    (dir, registry, flags)
}

/// Waits (up to 30 s) until `registry` lists `n` greeter nodes that serve `SayHello`.
pub async fn wait_for_nodes(registry: &dyn rmicro::registry::Registry, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = registry.get_service("greeter").await.unwrap_or_default();
        if found.iter().map(|s| s.nodes.len()).sum::<usize>() == n {
            let ep: Vec<&str> = found[0].endpoints.iter().map(|e| e.name.as_str()).collect();
            assert!(ep.contains(&"Greeter.SayHello"), "{ep:?}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} greeters never registered: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A name part unique to this call (a random hash), for temporary paths.
pub fn uuid_like() -> String {
    use std::hash::{BuildHasher, RandomState};
    format!("{:x}", RandomState::new().hash_one(std::process::id()))
}

/// Every PromQL query of the Grafana dashboard in `deploy/observability`, with
/// Grafana's variables filled in as Grafana would (`$__rate_interval` → `1m`, the
/// `$service` variable → all services).
pub fn dashboard_queries() -> Vec<String> {
    let path = repo_root().join("deploy/observability/grafana/dashboards/rmicro.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard is in the repository");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| {
            target["expr"]
                .as_str()
                .expect("every target has a PromQL expr")
                .replace("$__rate_interval", "1m")
                .replace("$service", ".*")
        })
        .collect()
}
