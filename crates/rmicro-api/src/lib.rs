//! `rmicro api`: an HTTP/JSON gateway in front of every service in the registry,
//! rmicro's own and stock gRPC servers alike (go-micro's `micro api`).
//!
//! A request is routed, in this order of precedence, by
//!
//! 1. the `google.api.http` annotations in the service's descriptors (as
//!    grpc-gateway and kratos read them): `GET /v1/greeter/hello/{name}`, with
//!    `{field}` and `{field=pattern/**}` variables, `body: "*"` or a field,
//!    `response_body`, and the remaining fields from the query;
//! 2. go-micro's path rule ([`resolver`]): `/greeter/say-hello` → service
//!    `greeter`, endpoint `Greeter.SayHello`; `/foo/bar/baz` → `foo`, `Bar.Baz`;
//!    with `--namespace` put in front of the service name;
//! 3. the gRPC path with a JSON body, always: `POST /greeter.v1.Greeter/SayHello`.
//!
//! Every route is listed by `rmicro api --print-routes` and served as JSON at
//! `GET /routes`; `GET /openapi.json` describes them as an OpenAPI 3 document,
//! schemas from the messages' descriptors. The `rpc` handler (the default) turns the JSON body, the query
//! parameters (dotted names for nested fields, repeated for lists) into the
//! request by the proto3 JSON mapping and answers the reply as JSON; an empty
//! reply type is `204`; a server-streaming endpoint answers newline-delimited JSON
//! (`application/x-ndjson`), one reply a line, a failure after the first reply as a
//! last line `{"error": {...}}`. The `api` handler sends the whole request as
//! go-micro's `go.api.Request`; the `http` handler proxies it to a node of the
//! service the path rule names. The `event` handler publishes the body to topic
//! `<namespace>.<first segment>` through the broker and answers `202`.
//!
//! The descriptors that transcoding needs come from each service's server
//! reflection (v1, then v1alpha), asked of one of its nodes, cached per service
//! and asked again when its registry record changes. A service that does not
//! answer reflection is still callable by the endpoints of its registry record,
//! through rmicro's JSON codec.
//!
//! Errors are go-micro's JSON, `{"id","code","detail","status"}`, with an HTTP
//! status from the gRPC code (INVALID_ARGUMENT/FAILED_PRECONDITION/OUT_OF_RANGE →
//! 400, UNAUTHENTICATED → 401, PERMISSION_DENIED → 403, NOT_FOUND → 404,
//! ALREADY_EXISTS/ABORTED → 409, RESOURCE_EXHAUSTED → 429, CANCELLED → 499,
//! UNIMPLEMENTED → 501, UNAVAILABLE → 503, DEADLINE_EXCEEDED → 504, else 500); an
//! unknown route is a 404 naming what was tried, a service with no nodes a 503, a
//! body over the limit a 413, malformed JSON or a wrong field type a 400 naming the
//! field.
//!
//! Client-streaming and bidirectional methods (any method, in fact) are called
//! over a WebSocket: a `GET` of the route with `Upgrade: websocket`, each message
//! one request or reply as JSON, `EOF` ending the requests (the conventions in
//! full: the README's "API gateway").
//!
//! [`Gateway::serve_tls`] serves HTTPS (HTTP/2 or HTTP/1.1 by ALPN). With
//! [`Options::tracing`] each request is a SERVER span joined to the caller's
//! trace and the parent of the call it makes; with [`Options::metrics`] every
//! answer is counted (`micro_api_requests_total`) beside the client's calls.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = rmicro::registry::from_flags("local", None)?;
//! let gateway = rmicro_api::Gateway::new(rmicro_api::Options::default(), registry);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway.serve(listener).await?;
//! # Ok(()) }
//! ```

mod direct;
mod go_api;
mod http_rule;
mod metrics;
mod openapi;
mod reflection;
pub mod resolver;
mod table;
mod transcode;
mod websocket;

pub use websocket::STREAM_TIMEOUT;

/// Entry points for the fuzz targets in `fuzz/`; not for applications.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `template` as a `google.api.http` path template and matches `path`
    /// against it: the number of variables bound, or `None`.
    pub fn path_template(template: &str, path: &str) -> Option<usize> {
        let template = crate::http_rule::Template::parse(template).ok()?;
        let _ = template.literals();
        template.matches(path).map(|vars| vars.len())
    }
}

pub use table::{Route, RouteKind};

/// The protobuf encoding of the JSON request `json` for `endpoint` (`Service.Method`
/// or `package.Service.Method`) of `service`, from the descriptors its server
/// reflection gives (the proto3 JSON mapping): what `rmicro bench` sends, so the
/// server it loads does the work a real client's calls make it do.
///
/// ```no_run
/// # async fn demo(client: rmicro::Client) -> Result<(), rmicro::Error> {
/// let options = rmicro::CallOptions::new().address("127.0.0.1:50051");
/// let bytes = rmicro_api::encode_request(&client, "greeter", "Greeter.SayHello", r#"{"name":"ann"}"#, &options).await?;
/// assert!(!bytes.is_empty());
/// # Ok(()) }
/// ```
pub async fn encode_request(
    client: &rmicro::Client,
    service: &str,
    endpoint: &str,
    json: &str,
    options: &rmicro::CallOptions,
) -> Result<Bytes, rmicro::Error> {
    let pool = reflection::fetch(client, service, options).await?;
    let (service_name, method_name) = endpoint
        .rsplit_once('.')
        .ok_or_else(|| transcode::bad_request(format!("`{endpoint}` is not Service.Method")))?;
    let method = pool
        .services()
        .filter(|s| s.full_name() == service_name || s.name() == service_name)
        .find_map(|s| s.methods().find(|m| m.name() == method_name))
        .ok_or_else(|| {
            rmicro::Error::not_found(
                ID,
                format!("`{service}` does not serve `{endpoint}` (by its server reflection)"),
            )
        })?;
    let input = method.input();
    transcode::encode_body(&input, json.as_bytes(), direct::is_plain(&input))
}

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header};
use http_body_util::BodyExt as _;
use rmicro::transport::Body;
use rmicro::{CallOptions, Client, Error};
use std::sync::Arc;
use std::time::Duration;
use table::{Entry, Method, Table};

/// How often the whole route table is read again from the registry, besides
/// following its watch.
const RECONCILE: Duration = Duration::from_secs(30);

/// micro v3's CORS methods.
pub const CORS_METHODS: &str = "POST, PATCH, GET, OPTIONS, PUT, DELETE";

/// micro v3's CORS headers.
pub const CORS_HEADERS: &str = "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization, Micro-Namespace";

/// The `http` handler's client.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// The id of errors the gateway itself raises.
const ID: &str = "rmicro.api";

/// What answers a routed request (`--handler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// JSON in, JSON out, through the endpoint's descriptors (the default).
    Rpc,
    /// The body published to topic `<namespace>.<first segment>`; `202`.
    Event,
    /// The whole HTTP request as go-micro's `go.api.Request`, the reply
    /// `go.api.Response` as the HTTP response.
    Api,
    /// A reverse proxy: the request as it came to a node of the service the
    /// path rule names (its registered address), the answer as it comes back.
    Http,
}

impl Handler {
    /// The handler named `name` (`rpc`, `event`).
    pub fn parse(name: &str) -> Result<Handler, String> {
        match name {
            "rpc" => Ok(Handler::Rpc),
            "event" => Ok(Handler::Event),
            "api" => Ok(Handler::Api),
            "http" | "proxy" => Ok(Handler::Http),
            other => Err(format!(
                "unknown handler `{other}` (known: rpc, api, http, event)"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Handler::Rpc => "rpc",
            Handler::Event => "event",
            Handler::Api => "api",
            Handler::Http => "http",
        }
    }
}

/// How the gateway routes and limits requests.
#[derive(Debug, Clone)]
pub struct Options {
    /// Put in front of service names the path rule finds (`go.micro.api`); empty
    /// for none.
    pub namespace: String,
    /// What answers routed requests.
    pub handler: Handler,
    /// Bodies larger than this are refused with 413 (4 MiB).
    pub max_body_size: usize,
    /// How long a call may take unless the request says (`Timeout`, `Grpc-Timeout`).
    pub timeout: Duration,
    /// Answer CORS preflights and echo the origin (on, as in micro v3).
    pub cors: bool,
    /// The origins CORS allows (`https://app.example.com`); empty for any, the
    /// origin echoed as micro v3 does.
    pub cors_origins: Vec<String>,
    /// `Access-Control-Allow-Methods` of a preflight (micro v3's list by default).
    pub cors_methods: String,
    /// `Access-Control-Allow-Headers` of a preflight (micro v3's list by default).
    pub cors_headers: String,
    /// Log a line per request at INFO (method, path, service, endpoint, status,
    /// duration, request id); off by default, as a line per call costs.
    pub access_log: bool,
    /// Requests each client may make (`--ratelimit`): the limit's scope says
    /// whose bucket a request takes from — [`Scope::PerPeer`] the client's IP,
    /// [`Scope::PerMetadata`] a header's value (`x-api-key`), [`Scope::Global`]
    /// one for all, [`Scope::PerEndpoint`] one per path. A request over it is a
    /// 429 with `Retry-After`, before any service is called. None by default.
    ///
    /// [`Scope::PerPeer`]: rmicro::wrapper::ratelimit::Scope::PerPeer
    /// [`Scope::PerMetadata`]: rmicro::wrapper::ratelimit::Scope::PerMetadata
    /// [`Scope::Global`]: rmicro::wrapper::ratelimit::Scope::Global
    /// [`Scope::PerEndpoint`]: rmicro::wrapper::ratelimit::Scope::PerEndpoint
    pub ratelimit: Option<rmicro::wrapper::ratelimit::RateLimitLayer>,
    /// Tracing (`--tracing-endpoint`): a SERVER span per HTTP request, joined to
    /// the caller's trace from its `traceparent`/`uber-trace-id` headers, the
    /// calls it makes its children (the client [`Gateway::new`] makes carries the
    /// CLIENT spans). None by default.
    pub tracing: Option<rmicro::wrapper::trace::Tracing>,
    /// Metrics (`--metrics-address`): the client's `micro_client_*` families for
    /// the calls made, and `micro_api_requests_total` /
    /// `micro_api_request_duration_seconds` for the HTTP requests answered.
    /// None by default.
    pub metrics: Option<rmicro::wrapper::metrics::Metrics>,
    /// Auth (`--auth-*`, [`rmicro::wrapper::auth::AuthFlags`]): every request is
    /// checked against the same keys and rules a service's `AuthLayer` applies,
    /// before anything is called, for the resource it names — `service.Endpoint`
    /// (`greeter.Greeter.SayHello`) for the rpc, api and http handlers and
    /// WebSockets, the topic for the event handler. No token or a bad one is 401,
    /// a missing scope 403, each with the reason as JSON. None by default.
    pub auth: Option<rmicro::wrapper::auth::AuthLayer>,
    /// What the listener lets its clients hold (the `--server-max-connections`,
    /// `--server-handshake-timeout`, … flags every service has): connections at
    /// once (one more is closed at once), the time to finish the TLS handshake and
    /// send the first bytes of a request, and for HTTP/2 the streams per
    /// connection, header list size and rapid resets. HTTP/1 requests must send
    /// their headers within the handshake timeout too.
    pub limits: rmicro::transport::ConnectionLimits,
    /// Threads that serve connections (`--threads`), each a single-threaded
    /// runtime with connections of its own to the services, so a request and the
    /// call it makes stay on one core ([`rmicro::transport::Shards`]); accepted
    /// connections are dealt to them in turn. 0 (the default) serves them on the
    /// runtime that runs [`Gateway::serve`].
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: String::new(),
            handler: Handler::Rpc,
            max_body_size: 4 << 20,
            timeout: Duration::from_secs(5),
            cors: true,
            cors_origins: Vec::new(),
            cors_methods: CORS_METHODS.to_owned(),
            cors_headers: CORS_HEADERS.to_owned(),
            access_log: false,
            ratelimit: None,
            tracing: None,
            metrics: None,
            auth: None,
            limits: rmicro::transport::ConnectionLimits::default(),
            threads: 0,
        }
    }
}

/// The gateway: routes HTTP requests to the services in a registry. Clones share
/// the route table.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    options: Options,
    registry: rmicro::registry::SharedRegistry,
    client: Client,
    broker: Option<rmicro::broker::SharedBroker>,
    /// The `http` handler's client (HTTP/1.1, pooled connections).
    http: HttpClient,
    /// The routes, read without a lock by every request.
    table: arc_swap::ArcSwap<Table>,
    /// One change of the table at a time.
    changing: std::sync::Mutex<()>,
    /// One reflection round at a time.
    loading: tokio::sync::Mutex<()>,
    /// When the whole registry was last read.
    refreshed: std::sync::Mutex<Option<std::time::Instant>>,
    /// The HTTP families on the metrics page, when there is one.
    http_metrics: Option<metrics::HttpMetrics>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("options", &self.inner.options)
            .field("registry", &self.inner.registry.describe())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `registry`, calling through a client that selects nodes in
    /// it.
    pub fn new(options: Options, registry: rmicro::registry::SharedRegistry) -> Gateway {
        let selector = Arc::new(rmicro::selector::Selector::new(
            registry.clone(),
            rmicro::selector::Strategy::Random,
        ));
        let mut client_options = rmicro::client::ClientOptions::default();
        if let Some(tracing) = &options.tracing {
            client_options = client_options
                .wrap_client(tracing.client_layer())
                .wrap_call(tracing.attempt_layer());
        }
        if let Some(metrics) = &options.metrics {
            client_options = client_options.wrap_client(metrics.client_layer());
        }
        let client = Client::with_selector(client_options, selector);
        Gateway::with_client(options, registry, client)
    }

    /// A gateway calling through `client` (its wrappers, TLS and selector).
    pub fn with_client(
        options: Options,
        registry: rmicro::registry::SharedRegistry,
        client: Client,
    ) -> Gateway {
        let http_metrics = options.metrics.as_ref().and_then(|m| {
            metrics::HttpMetrics::register(m.registry())
                .inspect_err(|e| tracing::warn!(error = %e, "the gateway's HTTP metrics are not on the metrics page"))
                .ok()
        });
        Gateway {
            inner: Arc::new(Inner {
                options,
                registry,
                client,
                broker: None,
                http: http_client(),
                table: arc_swap::ArcSwap::from_pointee(Table::default()),
                changing: std::sync::Mutex::new(()),
                loading: tokio::sync::Mutex::new(()),
                refreshed: std::sync::Mutex::new(None),
                http_metrics,
            }),
        }
    }

    /// A gateway like this one (its options, registry, client and the routes it
    /// knows now) publishing `event` requests to `broker`; clones of this one are
    /// unchanged.
    pub fn with_broker(self, broker: rmicro::broker::SharedBroker) -> Gateway {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.broker = Some(broker);
                inner
            }
            Err(shared) => Inner {
                options: shared.options.clone(),
                registry: shared.registry.clone(),
                client: shared.client.clone(),
                broker: Some(broker),
                http: shared.http.clone(),
                table: arc_swap::ArcSwap::new(shared.table.load_full()),
                changing: std::sync::Mutex::new(()),
                loading: tokio::sync::Mutex::new(()),
                refreshed: std::sync::Mutex::new(None),
                http_metrics: shared.http_metrics.clone(),
            },
        };
        Gateway {
            inner: Arc::new(inner),
        }
    }

    /// Reads every service in the registry and its descriptors.
    pub async fn refresh(&self) -> Result<(), rmicro::registry::RegistryError> {
        *rmicro::sync::lock(&self.inner.refreshed) = Some(std::time::Instant::now());
        let services = self.inner.registry.list_services().await?;
        let mut names: Vec<String> = services.into_iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        let known: Vec<String> = self.table().services.keys().cloned().collect();
        for gone in known.iter().filter(|k| !names.contains(k)) {
            self.replace(|t| t.without(gone));
        }
        for name in names {
            self.load(&name).await?;
        }
        Ok(())
    }

    /// The routes of every service the gateway knows now.
    pub fn routes(&self) -> Vec<Route> {
        self.table().routes(
            &self.inner.options.namespace,
            self.inner.options.handler.name(),
        )
    }

    /// Serves HTTP/1.1 and HTTP/2 (h2c) on `listener` until the task is dropped,
    /// following the registry's changes.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        self.serve_with(listener, None).await
    }

    /// Serves HTTPS on `listener` with `tls`'s certificate: HTTP/2 or HTTP/1.1 as
    /// the client's ALPN asks (`--tls-cert-file`/`--tls-key-file`); certificate
    /// files are read again when they change (new connections get the new one).
    /// Fails at once when the certificate and key do not make a server identity.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: &rmicro::transport::ServerTls,
    ) -> std::io::Result<()> {
        // Certificates from files are read again when they change: new connections
        // get the new one, open ones keep theirs.
        let tls = rmicro::transport::ReloadingAcceptor::start(tls, &[b"h2", b"http/1.1"])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.serve_with(listener, Some(Arc::new(tls))).await
    }

    async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<Arc<rmicro::transport::ReloadingAcceptor>>,
    ) -> std::io::Result<()> {
        // Before the first channel is made (reading descriptors makes some), so
        // that channels keep a connection per worker.
        let shards = match self.inner.options.threads {
            0 => None,
            n => Some(rmicro::transport::Shards::start(n, "rmicro-api")?),
        };
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "the registry could not be read; routes load as it answers");
        }
        let follower = tokio::spawn(self.clone().follow());
        let _stop_following = AbortOnDrop(follower);
        let limits = self.inner.options.limits.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let mut refused_since_warning = 0u64;
        let mut warned: Option<std::time::Instant> = None;
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            // Closed at once: the client fails fast.
                            drop(socket);
                            refused_since_warning += 1;
                            if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                                tracing::warn!(
                                    refused = refused_since_warning,
                                    "rmicro api: connection limit reached: closed {refused_since_warning} new connection(s) at once (--server-max-connections {})",
                                    limits.max_connections
                                );
                                refused_since_warning = 0;
                                warned = Some(std::time::Instant::now());
                            }
                            continue;
                        };
                        let gateway = self.clone();
                        let tls = tls.as_ref().map(|tls| tls.current());
                        let handshake = limits.handshake_timeout;
                        match &shards {
                            None => {
                                connections.spawn(gateway.accepted(socket, peer, tls, handshake, slot));
                            }
                            // Handed to a worker: the socket joins its runtime there.
                            Some(shards) => match socket.into_std() {
                                Ok(socket) => {
                                    connections.spawn_on(async move {
                                        match tokio::net::TcpStream::from_std(socket) {
                                            Ok(socket) => gateway.accepted(socket, peer, tls, handshake, slot).await,
                                            Err(e) => tracing::debug!(%peer, error = %e, "a connection could not join its worker"),
                                        }
                                    }, shards.next());
                                }
                                Err(e) => tracing::debug!(%peer, error = %e, "a connection could not leave the accepting runtime"),
                            },
                        }
                    }
                    Err(err) => {
                        // Out of file descriptors, most likely: back off, keep serving.
                        tracing::warn!(error = %err, "rmicro api: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next() => {}
            }
        }
    }

    /// A connection just accepted: TLS (if served) and the first bytes of a
    /// request within the handshake timeout, then served; `slot` is its place
    /// under `--server-max-connections`, held until it closes.
    async fn accepted(
        self,
        socket: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
        handshake: Duration,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let _slot = slot;
        // TLS and the first bytes of a request within the handshake timeout: a
        // slowloris holds nothing longer.
        let started = tokio::time::Instant::now();
        match tls {
            None => self.first_request(socket, peer, "http", handshake).await,
            Some(acceptor) => {
                let stream = match tokio::time::timeout(handshake, acceptor.accept(socket)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
                let left = handshake.saturating_sub(started.elapsed());
                self.first_request(stream, peer, "https", left).await;
            }
        }
    }

    /// Serves `io` once the first bytes of a request arrive within `within`
    /// (they say HTTP/1.1 or HTTP/2); closes it otherwise.
    async fn first_request<IO>(
        self,
        io: IO,
        peer: std::net::SocketAddr,
        scheme: &'static str,
        within: Duration,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match tokio::time::timeout(within, rmicro::transport::sniff_http(io)).await {
            Ok(Ok((io, _))) => self.connection(io, peer, scheme).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended before a request"),
            Err(_) => tracing::debug!(
                %peer,
                "closed a connection that sent no request within {within:?}"
            ),
        }
    }

    /// Serves one connection (HTTP/1.1 or HTTP/2, as the client speaks) until
    /// the client hangs up, within the listener's limits.
    async fn connection<IO>(self, io: IO, peer: std::net::SocketAddr, scheme: &'static str)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.inner.options.limits.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = self.clone();
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(request, peer, scheme).await) }
        });
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_list_size)
            .max_pending_accept_reset_streams(limits.max_pending_resets)
            .max_local_error_reset_streams(limits.max_error_resets)
            .keep_alive_interval(limits.keepalive_interval)
            .keep_alive_timeout(limits.keepalive_timeout);
        // Calls counted, so a connection with none open and none started for
        // `--server-idle-timeout` is told to go away (HTTP/2 GOAWAY, or HTTP/1.1
        // closed between requests). An upgraded connection (WebSocket) has left
        // hyper by then and is not cut.
        let activity = Arc::new(rmicro::interop::hyper::Activity::default());
        let service = rmicro::interop::hyper::Counted::new(service, activity.clone());
        let conn =
            builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
        rmicro::interop::hyper::drive_connection(
            conn,
            &activity,
            limits.idle_timeout,
            std::future::pending(),
            peer,
        )
        .await;
    }

    /// Follows the registry: each change reloads the service it names, and every
    /// [`RECONCILE`] the whole table is read again (a change the watch missed — a
    /// node that came and went between two polls — does not stay wrong).
    async fn follow(self) {
        use futures_util::StreamExt as _;
        let mut reconcile = tokio::time::interval(RECONCILE);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        loop {
            match self.inner.registry.watch(None).await {
                Ok(mut events) => loop {
                    tokio::select! {
                        event = events.next() => match event {
                            Some(Ok(event)) => {
                                tracing::debug!(service = %event.service.name, action = ?event.action, "registry change");
                                if let Err(e) = self.load(&event.service.name).await {
                                    tracing::warn!(service = %event.service.name, error = %e, "cannot reload a service's routes");
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "the registry watch failed; watching again");
                                break;
                            }
                            None => break,
                        },
                        _ = reconcile.tick() => {
                            if let Err(e) = self.refresh().await {
                                tracing::warn!(error = %e, "cannot read the registry");
                            }
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot watch the registry; trying again"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Whatever changed while the watch was down.
            let _ = self.refresh().await;
        }
    }

    /// Whether the last full read of the registry is more than a second old.
    fn refresh_is_due(&self) -> bool {
        rmicro::sync::lock(&self.inner.refreshed)
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
    }

    fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        self.inner.table.load()
    }

    fn replace(&self, change: impl FnOnce(&Table) -> Table) {
        let _one_at_a_time = rmicro::sync::lock(&self.inner.changing);
        let next = change(&self.inner.table.load());
        self.inner.table.store(Arc::new(next));
    }

    /// Reads service `name`'s records and (when they changed) its descriptors; a
    /// service with no records leaves the table. Returns its entry, if it has one.
    async fn load(
        &self,
        name: &str,
    ) -> Result<Option<Arc<Entry>>, rmicro::registry::RegistryError> {
        let _one_at_a_time = self.inner.loading.lock().await;
        let records = self.inner.registry.get_service(name).await?;
        if records.iter().all(|r| r.nodes.is_empty()) {
            self.replace(|t| t.without(name));
            return Ok(None);
        }
        // Descriptors asked of the same servers still hold: only the nodes change.
        let still_valid = self.table().services.get(name).cloned().filter(|entry| {
            entry.descriptors_error.is_none() && same_services(&entry.records, &records)
        });
        let entry = if let Some(known) = still_valid {
            Entry {
                records,
                ..Entry::clone(&known)
            }
        } else {
            let options = CallOptions::new().timeout(self.inner.options.timeout);
            let pool = reflection::fetch(&self.inner.client, name, &options).await;
            if let Err(e) = &pool {
                tracing::info!(service = name, error = %e.detail, "no descriptors by reflection; calling by the registry's endpoints with the JSON codec");
            }
            Entry::new(name, records, pool)
        };
        self.replace(|t| t.with(entry));
        Ok(self.table().services.get(name).cloned())
    }

    /// Answers one HTTP request.
    async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
        scheme: &'static str,
    ) -> http::Response<Body> {
        let started = std::time::Instant::now();
        let (mut parts, body) = request.into_parts();
        let upgrade = if websocket::is_upgrade(&parts.headers) {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let request_id = parts
            .headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let origin = parts.headers.get(header::ORIGIN).cloned();
        let span = self.inner.options.tracing.as_ref().map(|t| {
            t.http_server_span(
                parts.method.as_str(),
                parts.uri.path(),
                scheme,
                &parts.headers,
                peer,
            )
        });
        let (mut response, routed, failure) = match self.refusal(&parts, peer) {
            Some(refused) => (refused, None, None),
            None => {
                // Where the request went, for the span and the access log only.
                let describe = span.is_some() || self.inner.options.access_log;
                let answer = self.route_and_call(&parts, body, &request_id, upgrade, describe);
                let answer = match &span {
                    Some(span) => span.in_span(answer).await,
                    None => answer.await,
                };
                match answer {
                    Ok((response, routed)) => (response, routed, None),
                    Err(e) => (error_response(&e), None, Some(e)),
                }
            }
        };
        let ids = span.as_ref().and_then(|s| s.ids());
        if let Some(span) = span {
            if let Some(to) = &routed {
                span.set_route(&to.route, &to.service, &to.endpoint);
            }
            span.finish(
                response.status().as_u16(),
                failure.as_ref().map(|e| e.detail.as_str()),
            );
        }
        if let Some(metrics) = &self.inner.http_metrics {
            metrics.observe(
                &parts.method,
                response.status(),
                started.elapsed().as_secs_f64(),
            );
        }
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert(X_REQUEST_ID, value);
        }
        if self.inner.options.cors
            && let Some(origin) = origin
            && origin_allowed(&self.inner.options.cors_origins, &origin)
        {
            cors_headers(headers, origin);
        }
        if !self.inner.options.access_log {
            return response;
        }
        let RoutedTo {
            service,
            endpoint,
            route,
        } = routed.unwrap_or_default();
        let (trace_id, span_id) = ids.unzip();
        tracing::info!(
            http.request.method = %parts.method,
            url.path = parts.uri.path(),
            http.route = (!route.is_empty()).then_some(route.as_str()),
            client.address = %peer.ip(),
            service,
            endpoint,
            http.response.status_code = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            http.request.id = request_id,
            trace_id,
            span_id,
            "request"
        );
        response
    }

    /// Takes a token of `--ratelimit` for the request from its client's bucket;
    /// `Some` when refused: the 429 to answer, `Retry-After` saying when to come
    /// back.
    fn refusal(
        &self,
        parts: &http::request::Parts,
        peer: std::net::SocketAddr,
    ) -> Option<http::Response<Body>> {
        use rmicro::wrapper::ratelimit::Scope;
        let Some(limit) = &self.inner.options.ratelimit else {
            return None;
        };
        if is_preflight(parts, &self.inner.options) {
            // A browser's question before the request: the request is what counts.
            return None;
        }
        let ip;
        let key = match limit.scope_of() {
            Scope::Global => None,
            Scope::PerEndpoint => Some(parts.uri.path()),
            Scope::PerPeer => {
                ip = rmicro::transport::ip_text(peer.ip());
                Some(ip.as_str())
            }
            Scope::PerMetadata(name) => Some(
                parts
                    .headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
            ),
        };
        let wait = match limit.admit(key) {
            Ok(()) => return None,
            Err(wait) => wait,
        };
        // Whose bucket ran dry, said only for a refusal.
        let whose = match (limit.scope_of(), key) {
            (Scope::Global, _) | (_, None) => String::new(),
            (Scope::PerEndpoint, Some(path)) => format!(" for {path}"),
            (Scope::PerPeer, Some(ip)) => format!(" per client {ip}"),
            (Scope::PerMetadata(name), Some("")) => format!(" for requests without {name}"),
            (Scope::PerMetadata(name), Some(value)) => format!(" per {name} {value}"),
        };
        let error = Error::too_many_requests(
            ID,
            format!(
                "too many requests: limit {}{whose} (--ratelimit)",
                limit.rate()
            ),
        );
        let mut response = error_response(&error);
        // Whole seconds, rounded up: a client that waits that long finds a token.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        Some(response)
    }

    /// Routes a request and calls what it names; the routed service and endpoint
    /// ride along for the span and the access log when `describe` asks for them.
    async fn route_and_call(
        &self,
        parts: &http::request::Parts,
        body: hyper::body::Incoming,
        request_id: &str,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        describe: bool,
    ) -> Result<(http::Response<Body>, Option<RoutedTo>), Error> {
        let path = parts.uri.path();
        if is_preflight(parts, &self.inner.options) {
            return Ok((preflight(&self.inner.options), None));
        }
        if path == "/openapi.json" && parts.method == HttpMethod::GET {
            let document = openapi::document(
                &self.table(),
                &self.inner.options.namespace,
                self.inner.options.handler.name(),
            );
            let json = serde_json::to_vec_pretty(&document)
                .map_err(|e| Error::internal(ID, e.to_string()))?;
            return Ok((json_response(StatusCode::OK, json), None));
        }
        if path == "/routes" && parts.method == HttpMethod::GET {
            let json = serde_json::to_vec_pretty(&self.routes())
                .map_err(|e| Error::internal(ID, e.to_string()))?;
            return Ok((json_response(StatusCode::OK, json), None));
        }
        if let Some(upgrade) = upgrade {
            return self.websocket(parts, request_id, upgrade).await;
        }
        let body = read_body(body, self.inner.options.max_body_size).await?;
        if self.inner.options.handler == Handler::Event {
            return self
                .publish(path, &parts.headers, body)
                .await
                .map(|r| (r, None));
        }
        if self.inner.options.handler == Handler::Http {
            return self.proxy(parts, body).await;
        }
        let Routed {
            entry,
            method,
            binding,
        } = self.find(&parts.method, path).await?;
        self.authorize(&parts.headers, &entry.name, &method.endpoint)?;
        if !entry.has_nodes() {
            return Err(Error::unavailable(
                ID,
                format!("service `{}` has no nodes in the registry", entry.name),
            ));
        }
        if method.client_streaming {
            return Err(Error::new(
                ID,
                501,
                format!(
                    "`{}` streams its requests: call it over a WebSocket (a GET with `Upgrade: websocket`)",
                    method.endpoint
                ),
            ));
        }
        let options = self.call_options(
            &parts.headers,
            request_id,
            request_timeout(&parts.headers)?.unwrap_or(self.inner.options.timeout),
        );
        let routed = describe.then(|| RoutedTo::of(&entry, &method, binding.as_ref(), path));
        if self.inner.options.handler == Handler::Api {
            use prost::Message as _;
            let request = go_api::request(parts, &body).encode_to_vec();
            let reply = self
                .inner
                .client
                .unary_bytes(
                    &entry.name,
                    &method.grpc_path,
                    &method.endpoint,
                    request.into(),
                )?
                .options(options)
                .await?;
            let reply = go_api::Response::decode(reply.0).map_err(|e| {
                Error::new(
                    ID,
                    502,
                    format!(
                        "`{}` did not answer a go.api.Response: {e}",
                        method.endpoint
                    ),
                )
            })?;
            return Ok((go_api::response(reply), routed));
        }
        let response = self
            .call(
                &entry.name,
                &method,
                binding,
                parts.uri.query(),
                body,
                options,
            )
            .await?;
        Ok((response, routed))
    }

    /// The service and method a request names: a `google.api.http` binding, then
    /// go-micro's rule, then the gRPC path. A service the table does not know yet
    /// is read from the registry at once.
    async fn find(&self, verb: &HttpMethod, path: &str) -> Result<Routed, Error> {
        let table = self.table().id;
        if let Some(routed) = ROUTES.with_borrow(|routes| routes.get(table, verb, path)) {
            return Ok(routed);
        }
        let routed = self.find_in_table(verb.as_str(), path).await?;
        // Kept under the number of the table read before the search: if the table
        // changed meanwhile (a registry event, or the search's own load), the route
        // may be one the new table no longer has, and it is simply never found
        // again under the old number; the next request looks afresh.
        ROUTES.with_borrow_mut(|routes| routes.put(table, verb, path, routed.clone()));
        Ok(routed)
    }

    /// [`Gateway::find`] without the thread's cache.
    async fn find_in_table(&self, verb: &str, path: &str) -> Result<Routed, Error> {
        let registry_error =
            |e: rmicro::registry::RegistryError| Error::unavailable(ID, e.to_string());
        let mut tried = Vec::new();
        match self.table().by_annotation(verb, path) {
            table::AnnotationMatch::Found(found) => {
                return Ok(Routed {
                    entry: found.entry.clone(),
                    method: found.method.clone(),
                    binding: Some((found.binding.clone(), found.values)),
                });
            }
            table::AnnotationMatch::OtherVerb(other) => {
                tried.push(format!(
                    "an HTTP binding matches the path for {other}, not {verb}"
                ));
            }
            table::AnnotationMatch::None => {}
        }
        if let Some(resolved) = resolver::resolve(path, &self.inner.options.namespace) {
            let known = self.table().services.get(&resolved.service).cloned();
            let entry = match known {
                Some(entry) => Some(entry),
                None => self.load(&resolved.service).await.map_err(registry_error)?,
            };
            match entry {
                Some(entry) => {
                    if let Some(method) = entry.by_endpoint(&resolved.endpoint) {
                        let method = method.clone();
                        return Ok(Routed {
                            entry,
                            method,
                            binding: None,
                        });
                    }
                    tried.push(format!(
                        "service `{}` has no endpoint `{}`",
                        resolved.service, resolved.endpoint
                    ));
                }
                None => tried.push(format!(
                    "no service `{}` in the registry (for endpoint `{}`)",
                    resolved.service, resolved.endpoint
                )),
            }
        }
        let by_grpc_path = |table: &Table| {
            table.by_grpc_path(path).map(|(entry, method)| Routed {
                entry: entry.clone(),
                method: method.clone(),
                binding: None,
            })
        };
        if let Some(routed) = by_grpc_path(&self.table()) {
            return Ok(routed);
        }
        if path.trim_start_matches('/').contains('.') {
            // Perhaps a service that registered since the table was read: read
            // the registry again, but not more than once a second, however many
            // unknown gRPC paths arrive.
            if self.refresh_is_due() {
                let _ = self.refresh().await;
            }
            if let Some(routed) = by_grpc_path(&self.table()) {
                return Ok(routed);
            }
            tried.push("no service in the registry serves that gRPC path".to_owned());
        }
        if tried.is_empty() {
            tried.push("it is neither a go-micro path nor a gRPC path".to_owned());
        }
        Err(Error::not_found(
            ID,
            format!("no route for `{path}`: {}", tried.join("; ")),
        ))
    }

    /// The call's options: its deadline and the metadata the headers carry.
    fn call_options(
        &self,
        headers: &HeaderMap,
        request_id: &str,
        timeout: Duration,
    ) -> CallOptions {
        let mut options = CallOptions::new().timeout(timeout);
        for (name, value) in headers {
            let name = name.as_str();
            let Ok(value) = value.to_str() else { continue };
            if let Some(key) = name.strip_prefix("grpc-metadata-") {
                if !rmicro::metadata::is_reserved(key) {
                    options = options.metadata(key, value);
                }
            } else if forwarded(name) {
                options = options.metadata(name, value);
            }
        }
        options.metadata("x-request-id", request_id)
    }

    /// Checks the request's token against `--auth-*`'s rules for
    /// `service.endpoint`; the 401/403 to answer when it does not pass.
    fn authorize(&self, headers: &HeaderMap, service: &str, endpoint: &str) -> Result<(), Error> {
        match &self.inner.options.auth {
            Some(auth) => auth
                .verify(headers, &format!("{service}.{endpoint}"))
                .map(drop),
            None => Ok(()),
        }
    }

    /// Answers a WebSocket upgrade of a route with `101` and bridges the
    /// connection to a streaming call of the method it names (see
    /// [`websocket`]); only the `rpc` handler streams.
    async fn websocket(
        &self,
        parts: &http::request::Parts,
        request_id: &str,
        upgrade: hyper::upgrade::OnUpgrade,
    ) -> Result<(http::Response<Body>, Option<RoutedTo>), Error> {
        let path = parts.uri.path();
        if self.inner.options.handler != Handler::Rpc {
            return Err(transcode::bad_request(format!(
                "WebSocket streams need the rpc handler, not `{}`",
                self.inner.options.handler.name()
            )));
        }
        // A browser upgrades with GET; a stream's route is usually a POST one.
        let routed = match self.find(&parts.method, path).await {
            Ok(routed) => routed,
            Err(first) => self
                .find(&HttpMethod::POST, path)
                .await
                .map_err(|_| first)?,
        };
        self.authorize(&parts.headers, &routed.entry.name, &routed.method.endpoint)?;
        if !routed.entry.has_nodes() {
            return Err(Error::unavailable(
                ID,
                format!(
                    "service `{}` has no nodes in the registry",
                    routed.entry.name
                ),
            ));
        }
        let response = websocket::accept(&parts.headers)?;
        let options = self.call_options(
            &parts.headers,
            request_id,
            // A stream outlives `--timeout`: only the request's own deadline, else
            // the stream limit.
            request_timeout(&parts.headers)?.unwrap_or(STREAM_TIMEOUT),
        );
        let to = RoutedTo::of(&routed.entry, &routed.method, routed.binding.as_ref(), path);
        // The stream's call is a child of this request's span, as any call is.
        tokio::spawn(rmicro::wrapper::trace::in_current_trace(websocket::bridge(
            upgrade,
            self.inner.client.clone(),
            routed.entry.name.clone(),
            routed.method.clone(),
            options,
            self.inner.options.max_body_size,
        )));
        Ok((response, Some(to)))
    }

    /// Calls `method` with the request the body, the path's variables (of an
    /// HTTP binding) and the query make.
    async fn call(
        &self,
        service: &str,
        method: &Method,
        binding: Option<BoundTo>,
        query: Option<&str>,
        body: Bytes,
        options: CallOptions,
    ) -> Result<http::Response<Body>, Error> {
        let client = &self.inner.client;
        let Some((input, output)) = &method.types else {
            // No descriptors: rmicro's JSON codec carries the body as it is.
            if query.is_some_and(|q| !q.is_empty()) {
                return Err(transcode::bad_request(format!(
                    "`{service}` gave no descriptors (server reflection), so query parameters cannot be mapped; send the fields in the body"
                )));
            }
            let text = std::str::from_utf8(&body)
                .map_err(|_| transcode::bad_request("the request body is not UTF-8".to_owned()))?;
            let text = if text.trim().is_empty() { "{}" } else { text };
            let reply = client
                .call_json(service, &method.endpoint, text, options)
                .await?;
            let json =
                serde_json::to_vec(&reply).map_err(|e| Error::internal(ID, e.to_string()))?;
            return Ok(json_response(StatusCode::OK, json));
        };
        let (body_rule, response_body, variables) = match binding {
            Some((binding, values)) => {
                (binding.body.clone(), binding.response_body.clone(), values)
            }
            // go-micro's rule and gRPC paths: the body is the request.
            None => ("*".to_owned(), String::new(), Vec::new()),
        };
        let query = query.unwrap_or_default();
        let request = if body_rule == "*" && variables.is_empty() && query.is_empty() {
            // The common case: the body is the whole request.
            transcode::encode_body(input, &body, method.plain.request)?
        } else {
            build_request(input, &body_rule, &variables, query, &body)?
        };
        if method.server_streaming {
            let replies = client
                .server_streaming_bytes(service, &method.grpc_path, &method.endpoint, request)?
                .options(options)
                .await?;
            let headers = replies.headers().clone();
            let mut response = ndjson(replies, output.clone(), response_body, method.plain.reply);
            metadata_headers(response.headers_mut(), "grpc-metadata-", &headers);
            return Ok(response);
        }
        let reply = client
            .unary_bytes(service, &method.grpc_path, &method.endpoint, request)?
            .options(options)
            .with_metadata()
            .await?;
        let mut response = if response_body.is_empty() && transcode::is_empty(output) {
            let mut response = http::Response::new(Body::from(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        } else {
            json_response(
                StatusCode::OK,
                transcode::reply_json(
                    output,
                    &reply.message.0,
                    &response_body,
                    method.plain.reply,
                )?,
            )
        };
        metadata_headers(response.headers_mut(), "grpc-metadata-", &reply.headers);
        metadata_headers(response.headers_mut(), "grpc-trailer-", &reply.trailers);
        Ok(response)
    }

    /// The `http` handler: the request to a node of the service go-micro's rule
    /// names, picked at random, as it came (hop-by-hop headers aside).
    async fn proxy(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<(http::Response<Body>, Option<RoutedTo>), Error> {
        let path = parts.uri.path();
        let resolved = resolver::resolve(path, &self.inner.options.namespace).ok_or_else(|| {
            Error::not_found(
                ID,
                format!("no route for `{path}`: it is not a go-micro path"),
            )
        })?;
        self.authorize(&parts.headers, &resolved.service, &resolved.endpoint)?;
        // The client's selector picks the node, as for calls: its strategy, its
        // node cache fed by the registry's watch, nodes marked down skipped.
        let selector = self.inner.client.selector().ok_or_else(|| {
            Error::unavailable(
                ID,
                "the http handler needs a client that selects nodes".to_owned(),
            )
        })?;
        let node = match selector
            .select(
                &resolved.service,
                &rmicro::selector::SelectOptions::default(),
            )
            .await
        {
            Ok(node) => node,
            Err(rmicro::selector::SelectError::NoNodes { .. }) => {
                return Err(Error::not_found(
                    ID,
                    format!(
                        "no route for `{path}`: no service `{}` in the registry",
                        resolved.service
                    ),
                ));
            }
            Err(e) => return Err(Error::unavailable(ID, e.to_string())),
        };
        let target = format!(
            "http://{}{}",
            node.address(),
            parts.uri.path_and_query().map_or(path, |p| p.as_str())
        );
        let mut request = http::Request::builder()
            .method(parts.method.clone())
            .uri(&target)
            .body(http_body_util::Full::new(body))
            .map_err(|e| transcode::bad_request(format!("cannot forward to `{target}`: {e}")))?;
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name.as_str()) {
                request.headers_mut().append(name.clone(), value.clone());
            }
        }
        let timeout = request_timeout(&parts.headers)?.unwrap_or(self.inner.options.timeout);
        let response = tokio::time::timeout(timeout, self.inner.http.request(request))
            .await
            .map_err(|_| {
                Error::new(
                    ID,
                    504,
                    format!("`{}` did not answer within {timeout:?}", node.address()),
                )
            })?
            .map_err(|e| {
                node.mark_down();
                Error::unavailable(ID, format!("cannot reach `{}`: {e}", node.address()))
            })?;
        let (mut head, incoming) = response.into_parts();
        let connection_only: Vec<http::HeaderName> = head
            .headers
            .keys()
            .filter(|n| is_hop_by_hop(n.as_str()))
            .cloned()
            .collect();
        for name in connection_only {
            head.headers.remove(name);
        }
        let routed = Some(RoutedTo {
            service: resolved.service,
            endpoint: String::new(),
            route: path.to_owned(),
        });
        Ok((
            http::Response::from_parts(head, Body::new(incoming)),
            routed,
        ))
    }

    /// The `event` handler: the body to `<namespace>.<first segment>`.
    async fn publish(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<http::Response<Body>, Error> {
        let Some(broker) = &self.inner.broker else {
            return Err(Error::unavailable(
                ID,
                "the event handler has no broker".to_owned(),
            ));
        };
        let segment = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                transcode::bad_request("an event needs a topic: POST /<topic>".to_owned())
            })?;
        let namespace = self.inner.options.namespace.trim_end_matches('.');
        let topic = if namespace.is_empty() {
            segment.to_owned()
        } else {
            format!("{namespace}.{segment}")
        };
        if let Some(auth) = &self.inner.options.auth {
            auth.verify(headers, &topic)?;
        }
        let mut message = rmicro::broker::Message::new(body);
        for (name, value) in headers {
            if forwarded(name.as_str())
                && let Ok(value) = value.to_str()
            {
                message
                    .headers
                    .insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        broker
            .publish(&topic, message)
            .await
            .map_err(|e| Error::unavailable(ID, format!("cannot publish to `{topic}`: {e}")))?;
        let mut response = json_response(
            StatusCode::ACCEPTED,
            serde_json::to_vec(&serde_json::json!({ "topic": topic }))
                .map_err(|e| Error::internal(ID, e.to_string()))?,
        );
        *response.status_mut() = StatusCode::ACCEPTED;
        Ok(response)
    }
}

/// The request message of an HTTP request: the body (as the binding says), then
/// the path's variables, then the query's parameters.
fn build_request(
    input: &prost_reflect::MessageDescriptor,
    body_rule: &str,
    variables: &[(String, String)],
    query: &str,
    body: &[u8],
) -> Result<Bytes, Error> {
    let mut object = match body_rule {
        "*" => transcode::body_object(body)?,
        // No body in the binding: what is sent is not read.
        "" => serde_json::Map::new(),
        field => transcode::body_field(input, field, body)?,
    };
    // Path variables win over the body.
    for (name, value) in variables {
        transcode::set_text(&mut object, input, name, value)?;
    }
    // The query fills the rest; with `body: "*"` an annotation takes none.
    if variables.is_empty() || body_rule != "*" {
        for (name, value) in form_urlencoded(query) {
            transcode::set_text(&mut object, input, &name, &value)?;
        }
    }
    transcode::encode(input, object)
}

/// The HTTP binding a request matched, and its path variables (field path,
/// value).
type BoundTo = (Arc<http_rule::Binding>, Vec<(String, String)>);

/// What a request reached, for its span and the access log.
#[derive(Debug, Default)]
struct RoutedTo {
    service: String,
    endpoint: String,
    /// The route's template (`/v1/greeter/hello/{name}`) or, for go-micro's rule
    /// and gRPC paths, the path.
    route: String,
}

impl RoutedTo {
    /// What a request for `path` reached through `method` of `entry`.
    fn of(entry: &Entry, method: &Method, binding: Option<&BoundTo>, path: &str) -> RoutedTo {
        RoutedTo {
            service: entry.name.clone(),
            endpoint: method.endpoint.clone(),
            // The template, not the path with its ids: a span name and a label
            // stay few. go-micro's rule and gRPC paths name one endpoint each.
            route: binding.map_or_else(|| path.to_owned(), |(b, _)| b.template.text.clone()),
        }
    }
}

/// The request id's header, made once (a name given as text is parsed per use).
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Where a request goes: the service, the method, and the HTTP binding (with
/// its path variables) that matched, if one did.
#[derive(Clone)]
struct Routed {
    entry: Arc<Entry>,
    method: Arc<Method>,
    binding: Option<BoundTo>,
}

thread_local! {
    /// Where paths led in the table of the last request this thread routed.
    static ROUTES: std::cell::RefCell<table::RouteCache<Routed>> =
        std::cell::RefCell::new(table::RouteCache::new());
}

/// Whether two sets of records describe the same servers (versions and
/// endpoints), so the descriptors asked of them still hold.
fn same_services(a: &[rmicro::registry::Service], b: &[rmicro::registry::Service]) -> bool {
    let shape = |records: &[rmicro::registry::Service]| {
        let mut shape: Vec<_> = records
            .iter()
            .map(|r| (r.version.clone(), r.endpoints.clone()))
            .collect();
        shape.sort_by(|x, y| x.0.cmp(&y.0));
        shape
    };
    shape(a) == shape(b)
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
async fn read_body(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, Error> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::new(
            ID,
            413,
            format!("the request body is over the limit of {limit} bytes (--max-body-size)"),
        )),
        Err(e) => Err(transcode::bad_request(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// The deadline a request asks for: `Grpc-Timeout` (gRPC's `5S`, `100m`) or
/// `Timeout` (`5s`, `250ms`, or seconds).
fn request_timeout(headers: &HeaderMap) -> Result<Option<Duration>, Error> {
    // Names made once: a name given as text is parsed again on every lookup.
    const GRPC_TIMEOUT: header::HeaderName = header::HeaderName::from_static("grpc-timeout");
    const TIMEOUT: header::HeaderName = header::HeaderName::from_static("timeout");
    if let Some(value) = headers.get(GRPC_TIMEOUT) {
        return value
            .to_str()
            .ok()
            .and_then(rmicro::transport::parse_grpc_timeout)
            .map(Some)
            .ok_or_else(|| {
                transcode::bad_request(
                    "`Grpc-Timeout` is not a gRPC timeout (`5S`, `100m`)".to_owned(),
                )
            });
    }
    if let Some(value) = headers.get(TIMEOUT) {
        let text = value.to_str().unwrap_or_default();
        return rmicro::cmd::parse_duration(text)
            .map(Some)
            .map_err(|e| transcode::bad_request(format!("`Timeout`: {e}")));
    }
    Ok(None)
}

/// Whether an HTTP header travels on as call metadata: all but the connection's
/// own, those gRPC reserves, and those the gateway itself reads.
fn forwarded(name: &str) -> bool {
    !rmicro::metadata::is_reserved(name)
        && !matches!(
            name,
            "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "trailer"
                | "accept-encoding"
                | "http2-settings"
                | "timeout"
                | "x-request-id"
                | "origin"
                | "access-control-request-method"
                | "access-control-request-headers"
        )
}

/// The metadata a server answered, as response headers named as grpc-gateway
/// names them: `Grpc-Metadata-<key>` for its headers, `Grpc-Trailer-<key>` for
/// its trailers. The transport's own (`date`) stays behind.
fn metadata_headers(headers: &mut HeaderMap, prefix: &str, metadata: &rmicro::metadata::Metadata) {
    for (key, value) in metadata.iter() {
        if key == "date" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(format!("{prefix}{key}").as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// The query's `name=value` pairs, decoded.
fn form_urlencoded(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

/// `%xx` and `+` decoded; invalid escapes kept as they are.
fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether a request is a CORS preflight the gateway answers itself.
fn is_preflight(parts: &http::request::Parts, options: &Options) -> bool {
    parts.method == HttpMethod::OPTIONS
        && options.cors
        && parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a CORS preflight: what may be sent, without calling anyone (the
/// origin is added, when allowed, as for any answer).
fn preflight(options: &Options) -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, &options.cors_methods),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, &options.cors_headers),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Whether CORS lets `origin` in: any when the list is empty.
fn origin_allowed(allowed: &[String], origin: &HeaderValue) -> bool {
    allowed.is_empty()
        || origin.to_str().is_ok_and(|o| {
            allowed
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
        })
}

/// The origin echoed, as micro v3 does.
fn cors_headers(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn json_response(status: StatusCode, json: Vec<u8>) -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The HTTP status of an error: the table in the module docs.
fn http_status(error: &Error) -> StatusCode {
    let code = match error.code {
        // rmicro spells a gRPC DEADLINE_EXCEEDED 408 and FAILED_PRECONDITION 412;
        // at the HTTP edge they are 504 and 400, as grpc-gateway answers.
        408 => 504,
        412 => 400,
        code => code,
    };
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error as go-micro's JSON, `{"id","code","detail","status"}`.
fn error_response(error: &Error) -> http::Response<Body> {
    let json = serde_json::to_vec(&error_json(error)).unwrap_or_default();
    json_response(http_status(error), json)
}

/// An error as go-micro's JSON: `{"id", "code", "detail", "status"}`, the code
/// and status those of the HTTP status it maps to.
fn error_json(error: &Error) -> serde_json::Value {
    let status = http_status(error);
    serde_json::json!({
        "id": error.id,
        "code": status.as_u16(),
        "detail": error.detail,
        "status": status.canonical_reason().unwrap_or(&error.status),
    })
}

/// A server stream as newline-delimited JSON, each reply a line as it arrives.
fn ndjson(
    replies: rmicro::client::ResponseStream<rmicro::codec::RawMessage>,
    output: prost_reflect::MessageDescriptor,
    response_body: String,
    plain: bool,
) -> http::Response<Body> {
    use futures_util::StreamExt as _;
    let lines = replies.scan(false, move |failed, reply| {
        if *failed {
            return std::future::ready(None);
        }
        let line = match reply
            .and_then(|r| transcode::reply_json(&output, &r.0, &response_body, plain))
        {
            Ok(mut json) => {
                json.push(b'\n');
                json
            }
            Err(e) => {
                *failed = true;
                let mut json = serde_json::to_vec(&serde_json::json!({ "error": error_json(&e) }))
                    .unwrap_or_default();
                json.push(b'\n');
                json
            }
        };
        std::future::ready(Some(Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(Bytes::from(line)),
        )))
    });
    let mut response = http::Response::new(Body::new(http_body_util::StreamBody::new(lines)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broker_can_be_given_to_a_gateway_already_shared() {
        let registry: rmicro::registry::SharedRegistry =
            Arc::new(rmicro::registry::MemoryRegistry::new());
        let gateway = Gateway::new(Options::default(), registry);
        let shared = gateway.clone();
        let broker: rmicro::broker::SharedBroker = Arc::new(rmicro::broker::MemoryBroker::new());
        let with = shared.with_broker(broker);
        assert!(with.inner.broker.is_some());
        assert!(gateway.inner.broker.is_none());
    }

    #[test]
    fn grpc_codes_map_to_http_statuses_as_the_table_says() {
        use rmicro::Code;
        for (code, status) in [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ] {
            let error = Error::from_grpc(code, "x", None, "svc");
            assert_eq!(http_status(&error).as_u16(), status, "{code:?}");
        }
        // An rmicro error's own code wins.
        assert_eq!(http_status(&Error::new("svc", 418, "teapot")).as_u16(), 418);
        assert_eq!(http_status(&Error::new("svc", 200, "odd")).as_u16(), 500);
    }

    #[test]
    fn queries_decode_and_headers_forward_but_hop_by_hop_ones() {
        assert_eq!(
            form_urlencoded("name=a+b&x=%C3%A9&flag&=v"),
            vec![
                ("name".into(), "a b".into()),
                ("x".into(), "é".into()),
                ("flag".into(), "".into()),
                ("".into(), "v".into())
            ]
        );
        assert!(forwarded("authorization"));
        assert!(forwarded("x-user"));
        for name in ["host", "connection", "content-length", "grpc-timeout", "te"] {
            assert!(!forwarded(name), "{name}");
        }
    }

    #[test]
    fn timeouts_from_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_timeout(&headers).unwrap(), None);
        headers.insert("timeout", HeaderValue::from_static("250ms"));
        assert_eq!(
            request_timeout(&headers).unwrap(),
            Some(Duration::from_millis(250))
        );
        headers.insert("grpc-timeout", HeaderValue::from_static("2S"));
        assert_eq!(
            request_timeout(&headers).unwrap(),
            Some(Duration::from_secs(2))
        );
        headers.insert("grpc-timeout", HeaderValue::from_static("soon"));
        assert_eq!(request_timeout(&headers).unwrap_err().code, 400);
    }
}
