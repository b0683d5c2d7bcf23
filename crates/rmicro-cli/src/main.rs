//! `rmicro`: call services and check their health from the shell.
//!
//! ```text
//! rmicro call greeter Greeter.SayHello '{"name": "ann"}' --address 127.0.0.1:50051
//! rmicro health --address 127.0.0.1:50051 [greeter.v1.Greeter]
//! rmicro services                       # every service in the registry
//! rmicro describe greeter [--output json]
//! rmicro call greeter Greeter.SayHello '{"name": "ann"}'   # found through the registry
//! rmicro config get mysql --config-source etcd://127.0.0.1:2379/micro/config
//! rmicro config set mysql.port 3306 --config-source consul://127.0.0.1:8500/micro/config
//! rmicro config watch mysql --config-source etcd://127.0.0.1:2379/micro/config
//! rmicro publish user.created '{"id": 1}' --broker nats --broker-address nats://127.0.0.1:4222
//! rmicro subscribe user.created --queue mailers --broker nats   # a JSON line per message
//! rmicro api --address :8080            # HTTP/JSON gateway to every service in the registry
//! rmicro api --print-routes             # the routes it would serve, then exit
//! rmicro web --address :8082            # the dashboard: services, health, numbers, a call form
//! ```
//!
//! Every command honours `--registry NAME --registry-address ADDR` (env
//! `MICRO_REGISTRY`, `MICRO_REGISTRY_ADDRESS`); the default is the local registry.
//!
//! Exit codes: 0 success, 1 the call failed (the error's detail is printed), 2 bad usage.

use clap::{Parser, Subcommand};
use rmicro::{CallOptions, Client, Error};
mod bench;
mod new;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "rmicro",
    version,
    about = "The rmicro command line",
    after_help = "Exit codes: 0 the work was done; 1 it failed (a call refused, a node not serving, a \
                  service unknown, a server unreachable) with `error: <sentence>` on stderr; 2 the \
                  command line is wrong (for `rmicro new`, also a name or option it cannot use)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Registry: `local` (default), `memory`, `etcd`, `consul` or `mdns`.
    #[arg(long, global = true, env = "MICRO_REGISTRY", default_value = "local")]
    registry: String,
    /// Where the registry is (a directory for `local`, `host:port` for etcd and consul, interface IPs for mdns).
    #[arg(long, global = true, env = "MICRO_REGISTRY_ADDRESS")]
    registry_address: Option<String>,
}

#[derive(clap::Args)]
struct Target {
    /// Address of the service (`host:port`); until a registry is configured, required
    /// unless the service name is itself an address.
    #[arg(long, env = "MICRO_CLIENT_ADDRESS")]
    address: Option<String>,
    /// How long to wait for the reply.
    #[arg(long, default_value = "5s", value_parser = rmicro::cmd::parse_duration)]
    timeout: Duration,
    /// Metadata to send, `key=value`; repeatable.
    #[arg(long = "metadata", short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
}

/// What `call` and `stream` call.
#[derive(clap::Args)]
struct Invocation {
    /// The service (`greeter`).
    service: String,
    /// The endpoint, `Service.Method` (`Greeter.SayHello`) or fully qualified
    /// (`greeter.v1.Greeter.SayHello`).
    endpoint: String,
    /// The request as JSON.
    #[arg(default_value = "{}")]
    request: String,
    /// `text` (each reply indented; `call`'s default) or `json` (each reply on one
    /// line; `stream`'s default).
    #[arg(long, value_parser = ["text", "json"])]
    output: Option<String>,
    #[command(flatten)]
    target: Target,
}

/// A reply as `output` asks: indented (`text`) or on one line (`json`); a reply
/// that is not JSON as its text.
fn reply_text(reply: &[u8], output: &str) -> String {
    match serde_json::from_slice::<serde_json::Value>(reply) {
        Ok(value) if output == "text" => {
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        }
        Ok(value) => value.to_string(),
        Err(_) => String::from_utf8_lossy(reply).into_owned(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Call an endpoint with a JSON request and print the JSON reply.
    Call(Invocation),
    /// Call a server-streaming endpoint with a JSON request and print each reply as
    /// a line of JSON as it arrives (`--timeout` covers the whole stream).
    Stream(Invocation),
    /// Load an endpoint as ghz does and report throughput, latency percentiles, a
    /// histogram and the status distribution (`--output json` for CI).
    Bench(Box<bench::BenchFlags>),
    /// Print a shell completion script: `rmicro completions bash > /etc/bash_completion.d/rmicro`,
    /// `rmicro completions zsh > "${fpath[1]}/_rmicro"`, `rmicro completions fish >
    /// ~/.config/fish/completions/rmicro.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// List the services in the registry.
    Services,
    /// Show a service's versions, nodes and endpoints.
    Describe {
        /// The service (`greeter`).
        service: String,
        /// `text` (default) or `json` (the registry records).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
    /// Read, write or follow configuration in files and config centers.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Publish a JSON message on a topic.
    Publish {
        /// The topic (`user.created`).
        topic: String,
        /// The message body as JSON.
        body: String,
        /// A header to send, `key=value`; repeatable.
        #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
        headers: Vec<String>,
        #[command(flatten)]
        broker: BrokerFlags,
    },
    /// Print each message on a topic as a line of JSON as it arrives (until Ctrl-C).
    Subscribe {
        /// The topic (`user.created`).
        topic: String,
        /// Join this queue group (each message to one member).
        #[arg(long)]
        queue: Option<String>,
        #[command(flatten)]
        broker: BrokerFlags,
    },
    /// Serve an HTTP/JSON gateway in front of every service in the registry.
    Api(Box<ApiFlags>),
    /// Serve the dashboard: services, nodes and their health, live numbers,
    /// circuits, topics, and a call form per endpoint (default `:8082`).
    Web(Box<WebFlags>),
    /// Make a new service project in ./NAME (go-micro's `micro new`): proto, domain
    /// model/repository/service, handler, subscriber, config, tests, Dockerfile.
    New(new::NewFlags),
    /// Check gRPC health (`grpc.health.v1`) of every node of SERVICE in the registry,
    /// a line each; exit 0 only if all are SERVING. With `--address`, check that one
    /// server, SERVICE then naming the gRPC service inside it (`greeter.v1.Greeter`;
    /// empty for the whole server).
    Health {
        /// The service in the registry (`greeter`); with `--address`, the gRPC
        /// service to check at that address.
        #[arg(default_value = "")]
        grpc_service: String,
        /// The gRPC service each node is asked about (empty: the whole server).
        #[arg(long = "grpc-service", default_value = "")]
        node_service: String,
        /// `text` (a line per node) or `json` (an array of `{id, address, version,
        /// status, detail}`).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
struct ApiFlags {
    /// Where to listen, `HOST:PORT` (`:8080` for every interface).
    #[arg(
        long = "address",
        id = "api_address",
        env = "MICRO_API_ADDRESS",
        default_value = ":8080"
    )]
    address: String,
    /// What answers requests: `rpc` (JSON to the endpoint and back), `api` (the whole
    /// request as go-micro's `go.api.Request`, the reply a `go.api.Response`), `http`
    /// (alias `proxy`: a reverse proxy to a node of the service), or `event`
    /// (the body published to `<namespace>.<first path segment>`, 202).
    #[arg(long, env = "MICRO_API_HANDLER", default_value = "rpc", value_parser = ["rpc", "api", "http", "proxy", "event"])]
    handler: String,
    /// Put in front of the service names go-micro's path rule finds (`go.micro.api`).
    #[arg(long, env = "MICRO_API_NAMESPACE", default_value = "")]
    namespace: String,
    /// Refuse request bodies over this many bytes with 413.
    #[arg(long, env = "MICRO_API_MAX_BODY_SIZE", default_value_t = 4 << 20)]
    max_body_size: usize,
    /// How long a call may take, unless the request's `Timeout` or `Grpc-Timeout` says.
    #[arg(long, env = "MICRO_API_TIMEOUT", default_value = "5s", value_parser = rmicro::cmd::parse_duration)]
    timeout: Duration,
    /// Answer CORS preflights and echo the request's origin (`--enable-cors=false` to stop).
    #[arg(long, env = "MICRO_API_ENABLE_CORS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    enable_cors: bool,
    /// Origins CORS allows, comma-separated (default: any, the origin echoed).
    #[arg(long, env = "MICRO_API_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    cors_allowed_origins: Vec<String>,
    /// `Access-Control-Allow-Methods` of preflights.
    #[arg(long, env = "MICRO_API_CORS_ALLOWED_METHODS", default_value = rmicro_api::CORS_METHODS)]
    cors_allowed_methods: String,
    /// `Access-Control-Allow-Headers` of preflights.
    #[arg(long, env = "MICRO_API_CORS_ALLOWED_HEADERS", default_value = rmicro_api::CORS_HEADERS)]
    cors_allowed_headers: String,
    /// Log a line per request (method, path, service, endpoint, status, duration,
    /// request id) at INFO; `--log-format ecs` writes them as ECS.
    #[arg(long, env = "MICRO_API_ACCESS_LOG")]
    access_log: bool,
    /// Requests per second each client may make; over it, 429 with `Retry-After`.
    #[arg(long, env = "MICRO_API_RATELIMIT", value_name = "N")]
    ratelimit: Option<u32>,
    /// Whose bucket a request takes from: `ip` (the client's address), `header:NAME`
    /// (a header's value, e.g. `header:x-api-key`) or `global` (one for all).
    #[arg(long, env = "MICRO_API_RATELIMIT_KEY", default_value = "ip", value_parser = parse_ratelimit_key, requires = "ratelimit")]
    ratelimit_key: rmicro::wrapper::ratelimit::Scope,
    /// Requests a client may make at once after a quiet spell (default: a tenth of
    /// a second's worth, at least one).
    #[arg(
        long,
        env = "MICRO_API_RATELIMIT_BURST",
        value_name = "N",
        requires = "ratelimit"
    )]
    ratelimit_burst: Option<u32>,
    #[command(flatten)]
    auth: rmicro::wrapper::auth::AuthFlags,
    #[command(flatten)]
    connection: rmicro::cmd::ConnectionFlags,
    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key-file`.
    /// HTTP/2 and HTTP/1.1 are offered by ALPN.
    #[arg(
        long,
        env = "MICRO_API_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    tls_cert_file: Option<std::path::PathBuf>,
    /// The private key (PEM) of `--tls-cert-file`.
    #[arg(
        long,
        env = "MICRO_API_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    tls_key_file: Option<std::path::PathBuf>,
    /// Verify HTTPS clients' certificates against this PEM CA (mutual TLS; needs
    /// `--tls-cert-file`). Reloaded when the file changes, as the certificate is.
    #[arg(
        long,
        env = "MICRO_API_TLS_CLIENT_CA_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    tls_client_ca_file: Option<std::path::PathBuf>,
    /// With `--tls-client-ca-file`: whether every client must present a
    /// certificate (`required`) or may come without one (`optional`) [default: required].
    #[arg(
        long,
        env = "MICRO_API_TLS_CLIENT_AUTH",
        value_name = "MODE",
        value_enum,
        requires = "tls_client_ca_file"
    )]
    tls_client_auth: Option<rmicro::transport::ClientAuth>,
    /// Count and time every request answered and call made, and serve them to
    /// Prometheus at `GET /metrics` on HOST:PORT (`micro_api_requests_total`,
    /// `micro_client_request_total`, …).
    #[arg(long, env = "MICRO_METRICS_ADDRESS", value_name = "HOST:PORT")]
    metrics_address: Option<String>,
    #[command(flatten)]
    tracing: rmicro::wrapper::trace::TracingFlags,
    /// Threads that serve connections, each with its own connections to the
    /// services so a request and its call stay on one core (0: one per core).
    #[arg(long, env = "MICRO_API_THREADS", default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Print the routes of the services in the registry (a table, or JSON with
    /// `--output json`) and exit.
    #[arg(long)]
    print_routes: bool,
    /// `text` or `json`, for --print-routes.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    #[command(flatten)]
    log: LogFlags,
    #[command(flatten)]
    broker: BrokerFlags,
}

/// `--log-level` and `--log-format` of the long-running commands (`api`, `web`).
#[derive(clap::Args)]
struct LogFlags {
    /// Log level or filter (`info`, `rmicro_api=debug,warn`).
    #[arg(long, env = "MICRO_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: `text`, `pretty` (the default on a terminal), `json` or `ecs`.
    #[arg(long, env = "MICRO_LOG_FORMAT", default_value = "", value_parser = ["", "text", "pretty", "json", "ecs"])]
    log_format: String,
}

impl LogFlags {
    /// Installs the process's log as `name` says, unless one is installed already.
    fn install(&self, name: &str) {
        let _ = rmicro::logging::install(
            &self.log_level,
            &self.log_format,
            name,
            env!("CARGO_PKG_VERSION"),
        );
    }
}

#[derive(clap::Args)]
struct WebFlags {
    /// Where to listen, `HOST:PORT` (`:8082` for every interface).
    #[arg(
        long = "address",
        id = "web_address",
        env = "MICRO_WEB_ADDRESS",
        default_value = ":8082"
    )]
    address: String,
    /// How often every node's gRPC health is asked.
    #[arg(long, env = "MICRO_WEB_HEALTH_INTERVAL", default_value = "2s", value_parser = rmicro::cmd::parse_duration)]
    health_interval: Duration,
    /// How often nodes' `/metrics` (node metadata `metrics`) are read.
    #[arg(long, env = "MICRO_WEB_SCRAPE_INTERVAL", default_value = "5s", value_parser = rmicro::cmd::parse_duration)]
    scrape_interval: Duration,
    /// How far back the charts reach.
    #[arg(long, env = "MICRO_WEB_HISTORY", default_value = "10m", value_parser = rmicro::cmd::parse_duration)]
    history: Duration,
    /// A Hystrix stream to show the circuits of (`http://host:9092/hystrix.stream`),
    /// besides those nodes advertise; repeatable.
    #[arg(
        long = "hystrix-stream",
        env = "MICRO_WEB_HYSTRIX_STREAMS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    hystrix_streams: Vec<String>,
    /// How long a call from the call form may take.
    #[arg(long, env = "MICRO_WEB_CALL_TIMEOUT", default_value = "10s", value_parser = rmicro::cmd::parse_duration)]
    call_timeout: Duration,
    /// Ask for HTTP basic auth, `USER:PASSWORD`.
    #[arg(long, env = "MICRO_WEB_BASIC_AUTH", value_name = "USER:PASSWORD")]
    basic_auth: Option<String>,
    #[command(flatten)]
    auth: rmicro::wrapper::auth::AuthFlags,
    #[command(flatten)]
    log: LogFlags,
    /// The broker the topics page's publish form sends through.
    #[command(flatten)]
    broker: BrokerFlags,
}

async fn web(flags: WebFlags, registry: rmicro::registry::SharedRegistry) -> Result<(), Error> {
    let bad = |detail: String| Error::bad_request("rmicro.cli", detail);
    flags.log.install("rmicro-web");
    let mut access = rmicro_web::Access::open();
    if let Some(pair) = &flags.basic_auth {
        access = access
            .basic_from(pair)
            .map_err(|e| bad(format!("--basic-auth: {e}")))?;
    }
    if let Some(tokens) = flags.auth.layer().await.map_err(|e| bad(e.to_string()))? {
        access = access.tokens(tokens);
    }
    for url in &flags.hystrix_streams {
        let uri: Result<http::Uri, _> = url.parse();
        if !uri.is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some()) {
            return Err(bad(format!(
                "--hystrix-stream `{url}` is not an http:// URL (http://host:9092/hystrix.stream)"
            )));
        }
    }
    let options = rmicro_web::Options {
        health_interval: flags.health_interval,
        scrape_interval: flags.scrape_interval,
        history: flags.history,
        hystrix_streams: flags.hystrix_streams.clone(),
        call_timeout: flags.call_timeout,
        access,
        broker: Some(flags.broker.build(&registry)?),
    };
    let dashboard =
        rmicro_web::Dashboard::start(options, registry.clone()).map_err(|e| bad(e.to_string()))?;
    let address = listen_address(&flags.address);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| bad(format!("cannot listen on `{address}`: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
    // Tests and scripts read the port from this line.
    println!(
        "rmicro web listening on http://{bound} (registry {})",
        registry.describe()
    );
    tokio::select! {
        served = dashboard.serve(listener) => served
            .map_err(|e| Error::unavailable("rmicro.cli", format!("the dashboard stopped: {e}"))),
        () = rmicro::server::shutdown_signal() => Ok(()),
    }
}

/// `ip`, `header:NAME` or `global`: whose bucket a gateway request takes from.
fn parse_ratelimit_key(text: &str) -> Result<rmicro::wrapper::ratelimit::Scope, String> {
    use rmicro::wrapper::ratelimit::Scope;
    match text {
        "ip" => Ok(Scope::PerPeer),
        "global" => Ok(Scope::Global),
        _ => match text.strip_prefix("header:") {
            Some(name)
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Scope::PerMetadata(name.to_ascii_lowercase()))
            }
            Some(name) => Err(format!("`{name}` is not an HTTP header name")),
            None => Err(format!(
                "`{text}` is not a rate-limit key: use `ip`, `header:NAME` or `global`"
            )),
        },
    }
}

/// `:8080` → `0.0.0.0:8080`, as go-micro reads its addresses.
fn listen_address(address: &str) -> String {
    match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_owned(),
    }
}

async fn api(flags: ApiFlags, registry: rmicro::registry::SharedRegistry) -> Result<(), Error> {
    let bad = |detail: String| Error::bad_request("rmicro.cli", detail);
    flags.log.install("rmicro-api");
    let node = format!("rmicro-api-{}", uuid::Uuid::new_v4());
    // `--print-routes` only reads the registry: no exporter, no metrics page.
    let settings = if flags.print_routes {
        None
    } else {
        rmicro::wrapper::trace::TracingConfig::from_settings(&flags.tracing, |name| {
            std::env::var(name).ok()
        })
        .map_err(bad)?
    };
    let tracing = match settings {
        Some(config) => Some(
            rmicro::wrapper::trace::Tracing::start(
                &config,
                "rmicro-api",
                env!("CARGO_PKG_VERSION"),
                &node,
                &flags.broker.name,
            )
            .map_err(|e| bad(format!("tracing: {e}")))?,
        ),
        None => None,
    };
    let metrics = flags
        .metrics_address
        .as_ref()
        .filter(|_| !flags.print_routes)
        .map(|_| {
            let metrics = rmicro::wrapper::metrics::Metrics::new(
                "rmicro-api",
                env!("CARGO_PKG_VERSION"),
                &node,
            );
            if let Some(tracing) = &tracing {
                metrics.add_tracing("rmicro-api", tracing.stats().clone());
            }
            metrics
        });
    let options = rmicro_api::Options {
        namespace: flags.namespace.clone(),
        handler: rmicro_api::Handler::parse(&flags.handler).map_err(bad)?,
        max_body_size: flags.max_body_size,
        timeout: flags.timeout,
        cors: flags.enable_cors,
        cors_origins: flags.cors_allowed_origins.clone(),
        cors_methods: flags.cors_allowed_methods.clone(),
        cors_headers: flags.cors_allowed_headers.clone(),
        access_log: flags.access_log,
        ratelimit: flags.ratelimit.map(|n| {
            let limit = rmicro::wrapper::ratelimit::RateLimit::per_second(n)
                .scope(flags.ratelimit_key.clone());
            match flags.ratelimit_burst {
                Some(burst) => limit.burst(burst),
                None => limit,
            }
        }),
        tracing: tracing.clone(),
        metrics: metrics.clone(),
        auth: flags.auth.layer().await.map_err(|e| bad(e.to_string()))?,
        limits: flags
            .connection
            .connection_limits(rmicro::transport::ConnectionLimits::default()),
        threads: match flags.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
    };
    let mut gateway = rmicro_api::Gateway::new(options, registry.clone());
    if options_need_broker(&flags) {
        gateway = gateway.with_broker(flags.broker.build(&registry)?);
    }
    if flags.print_routes {
        gateway
            .refresh()
            .await
            .map_err(|e| Error::unavailable("rmicro.cli", e.to_string()))?;
        let routes = gateway.routes();
        if flags.output == "json" {
            let json = serde_json::to_string_pretty(&routes)
                .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
            println!("{json}");
        } else {
            for r in &routes {
                println!(
                    "{:<6} {:<40} {} {}  ({}, {}, {:?})",
                    r.method, r.path, r.service, r.endpoint, r.grpc_path, r.kind, r.rule
                );
            }
        }
        return Ok(());
    }
    // A bad certificate is found before the port is taken.
    let tls = match (&flags.tls_cert_file, &flags.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = rmicro::transport::ServerTls::from_files(cert, key)
                .and_then(|tls| tls.rustls_config(&[]).map(|_| tls))
                .map_err(|e| bad(format!("--tls-cert-file/--tls-key-file: {e}")))?;
            Some(match &flags.tls_client_ca_file {
                Some(ca) => tls
                    .client_auth(flags.tls_client_auth.unwrap_or_default())
                    .with_client_ca_file(ca)
                    .map_err(|e| bad(format!("--tls-client-ca-file: {e}")))?,
                None => tls,
            })
        }
        _ => None,
    };
    let address = listen_address(&flags.address);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| bad(format!("cannot listen on `{address}`: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
    let _metrics_server = match (&flags.metrics_address, metrics) {
        (Some(address), Some(metrics)) => {
            let address = listen_address(address);
            let listener = tokio::net::TcpListener::bind(&address).await.map_err(|e| {
                bad(format!(
                    "--metrics-address: cannot listen on `{address}`: {e}"
                ))
            })?;
            let server = rmicro::wrapper::metrics::MetricsServer::serve(listener, metrics)
                .map_err(|e| bad(format!("--metrics-address: {e}")))?;
            // Tests and scripts read the port from this line.
            println!("metrics at http://{}/metrics", server.local_addr());
            Some(server)
        }
        _ => None,
    };
    // Tests and scripts read the port from this line.
    println!(
        "rmicro api listening on {bound}{} (registry {})",
        if tls.is_some() { " (TLS)" } else { "" },
        registry.describe()
    );
    let served = async {
        match &tls {
            Some(tls) => gateway.serve_tls(listener, tls).await,
            None => gateway.serve(listener).await,
        }
    };
    let served = tokio::select! {
        served = served => served,
        () = rmicro::server::shutdown_signal() => Ok(()),
    };
    // What is queued goes out before the process does.
    if let Some(tracing) = &tracing
        && !tracing.flush(Duration::from_secs(5)).await
    {
        tracing::warn!("tracing: spans still queued after 5 s were lost");
    }
    rmicro::logging::flush(Duration::from_secs(5));
    served.map_err(|e| Error::unavailable("rmicro.cli", format!("the gateway stopped: {e}")))
}

/// The event handler publishes; the others never touch the broker.
fn options_need_broker(flags: &ApiFlags) -> bool {
    flags.handler == "event"
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the merged value at PATH as JSON (`""` for everything).
    Get {
        /// A dotted path, e.g. `mysql` or `mysql.port`.
        path: String,
        /// Print secrets as they are: values under keys such as `pwd`,
        /// `password`, `secret`, `token`, and URL passwords, otherwise shown `***`.
        #[arg(long)]
        show_secrets: bool,
        #[command(flatten)]
        sources: ConfigSources,
    },
    /// Write a JSON value at PATH in the (one) config center given.
    Set {
        /// A dotted path, e.g. `mysql.port`.
        path: String,
        /// The value as JSON: `3306`, `'"db"'`, `'{"host": "db"}'`.
        value: String,
        #[command(flatten)]
        sources: ConfigSources,
    },
    /// Print the value at PATH as a line of JSON now and after every change.
    Watch {
        /// A dotted path, e.g. `mysql`.
        path: String,
        /// Print secrets as they are (see `config get --show-secrets`).
        #[arg(long)]
        show_secrets: bool,
        #[command(flatten)]
        sources: ConfigSources,
    },
}

#[derive(clap::Args)]
struct BrokerFlags {
    /// The broker: `http` (embedded, across the processes sharing the registry;
    /// default), `nats`, `nats-core`, `redis`, `rabbitmq`, `mqtt`, or `memory`.
    #[arg(long = "broker", env = "MICRO_BROKER", default_value = "http")]
    name: String,
    /// Where it is (`nats://127.0.0.1:4222`, `redis://127.0.0.1:6379`,
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`, `mqtt://127.0.0.1:1883`).
    #[arg(long = "broker-address", env = "MICRO_BROKER_ADDRESS")]
    address: Option<String>,
}

impl BrokerFlags {
    fn build(
        &self,
        registry: &rmicro::registry::SharedRegistry,
    ) -> Result<rmicro::broker::SharedBroker, Error> {
        rmicro::broker::from_flags_with_registry(&self.name, self.address.as_deref(), registry)
            .map_err(|e| Error::bad_request("rmicro.cli", e.to_string()))
    }
}

/// A message body as one line of JSON: the body itself if it is JSON, else its
/// content type and base64.
fn json_line(message: &rmicro::broker::Message) -> String {
    use base64::Engine;
    match serde_json::from_slice::<serde_json::Value>(&message.body) {
        Ok(json) => json.to_string(),
        Err(_) => serde_json::json!({
            "content_type": message.headers.get(rmicro::broker::CONTENT_TYPE),
            "base64": base64::engine::general_purpose::STANDARD.encode(&message.body),
        })
        .to_string(),
    }
}

async fn publish(
    topic: &str,
    body: &str,
    headers: &[String],
    flags: &BrokerFlags,
    registry: &rmicro::registry::SharedRegistry,
) -> Result<(), Error> {
    let json: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        Error::bad_request(
            "rmicro.cli",
            format!("the message `{body}` is not JSON: {e}"),
        )
    })?;
    let mut message = rmicro::broker::typed::encode_json(&json)?;
    for pair in headers {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            Error::bad_request("rmicro.cli", format!("header `{pair}` is not key=value"))
        })?;
        message = message.header(key, value);
    }
    let options = rmicro::client::ClientOptions {
        from_service: Some("rmicro.cli".into()),
        ..Default::default()
    };
    Client::new(options)
        .with_broker(flags.build(registry)?)
        .publish_message(topic, message)
        .await
}

async fn subscribe(
    topic: &str,
    queue: Option<String>,
    flags: &BrokerFlags,
    registry: &rmicro::registry::SharedRegistry,
) -> Result<(), Error> {
    let broker = flags.build(registry)?;
    let mut options = rmicro::broker::SubscribeOptions::default();
    if let Some(queue) = queue {
        options = options.queue(queue);
    }
    let printer = rmicro::broker::handler(|delivery: rmicro::broker::Delivery| async move {
        println!("{}", json_line(&delivery.message));
        Ok(())
    });
    let subscriber = broker
        .subscribe(topic, printer, options)
        .await
        .map_err(|e| Error::unavailable("rmicro.cli", e.to_string()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    subscriber.unsubscribe().await;
    Ok(())
}

#[derive(clap::Args)]
struct ConfigSources {
    /// A config center, `etcd://HOST:PORT/PREFIX` or `consul://HOST:PORT/PREFIX`;
    /// repeatable, later wins.
    #[arg(
        long = "config-source",
        env = "MICRO_CONFIG_SOURCE",
        value_delimiter = ','
    )]
    sources: Vec<String>,
    /// A YAML, TOML or JSON file, below the centers.
    #[arg(long = "config-file", env = "MICRO_CONFIG_FILE")]
    file: Option<std::path::PathBuf>,
}

impl ConfigSources {
    fn builder(&self) -> Result<rmicro::config::ConfigBuilder, Error> {
        let bad = |e: rmicro::config::ConfigError| Error::bad_request("rmicro.cli", e.to_string());
        let mut builder = rmicro::config::Config::builder();
        if let Some(file) = &self.file {
            builder = builder.source(rmicro::config::source::File::new(file).map_err(bad)?);
        }
        for url in &self.sources {
            builder = builder.shared_source(rmicro::config::source::from_url(url).map_err(bad)?);
        }
        Ok(builder)
    }
}

async fn config(action: ConfigAction) -> Result<(), Error> {
    use futures_util::StreamExt;
    let unavailable =
        |e: rmicro::config::ConfigError| Error::unavailable("rmicro.cli", e.to_string());
    match action {
        ConfigAction::Get {
            path,
            show_secrets,
            sources,
        } => {
            let config = sources.builder()?.build().await.map_err(unavailable)?;
            let value = config.get(&path);
            match value.raw() {
                Some(json) if value.exists() => {
                    if show_secrets {
                        println!("{json}");
                    } else {
                        println!("{}", rmicro::config::redacted(&path, json));
                    }
                    Ok(())
                }
                _ => Err(Error::not_found(
                    "rmicro.cli",
                    format!(
                        "config path `{path}` is not set in any source ({})",
                        config.sources().join(", ")
                    ),
                )),
            }
        }
        ConfigAction::Set {
            path,
            value,
            sources,
        } => {
            let [url] = sources.sources.as_slice() else {
                return Err(Error::bad_request(
                    "rmicro.cli",
                    "`config set` writes to exactly one --config-source",
                ));
            };
            let json: serde_json::Value = serde_json::from_str(&value).map_err(|e| {
                Error::bad_request(
                    "rmicro.cli",
                    format!("`{value}` is not JSON ({e}); quote strings: '\"db\"'"),
                )
            })?;
            let source = rmicro::config::source::from_url(url)
                .map_err(|e| Error::bad_request("rmicro.cli", e.to_string()))?;
            source.set(&path, &json).await.map_err(unavailable)
        }
        ConfigAction::Watch {
            path,
            show_secrets,
            sources,
        } => {
            let config = sources.builder()?.build().await.map_err(unavailable)?;
            let mut values = config.watch::<serde_json::Value>(&path);
            while let Some(item) = values.next().await {
                match item {
                    Ok(value) if show_secrets => println!("{value}"),
                    Ok(value) => println!("{}", rmicro::config::redacted(&path, &value)),
                    Err(err) => eprintln!("error: {err}"),
                }
            }
            Ok(())
        }
    }
}

fn options(target: &Target) -> Result<CallOptions, Error> {
    let mut options = CallOptions::new().timeout(target.timeout);
    if let Some(address) = &target.address {
        options = options.address(address);
    }
    for pair in &target.metadata {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            Error::bad_request("rmicro.cli", format!("metadata `{pair}` is not key=value"))
        })?;
        options = options.metadata(key, value);
    }
    Ok(options)
}

/// `message` as an indented tree: `label  Type`, then each field a level deeper.
fn field_tree(label: &str, message: &rmicro::registry::Value, depth: usize) -> String {
    let mut out = format!("{}{label}  {}\n", "  ".repeat(depth), message.kind);
    for field in &message.values {
        out.push_str(&field_tree(&field.name, field, depth + 1));
    }
    out
}

fn fields(values: &[rmicro::registry::Value]) -> String {
    values
        .iter()
        .map(|v| format!("{} {}", v.name, v.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run(cli: Cli) -> Result<(), Error> {
    let registry = rmicro::registry::from_flags(&cli.registry, cli.registry_address.as_deref())
        .map_err(|e| Error::bad_request("rmicro.cli", e.to_string()))?;
    let unavailable =
        |e: rmicro::registry::RegistryError| Error::unavailable("rmicro.cli", e.to_string());
    let selector = std::sync::Arc::new(rmicro::selector::Selector::new(
        registry.clone(),
        rmicro::selector::Strategy::Random,
    ));
    let client = Client::with_selector(rmicro::client::ClientOptions::default(), selector.clone());
    match cli.command {
        Command::Config { action } => config(action).await,
        Command::Api(flags) => api(*flags, registry.clone()).await,
        Command::Web(flags) => web(*flags, registry.clone()).await,
        // Handled before the runtime's work begins, in `main`.
        Command::New(flags) => Err(Error::internal(
            "rmicro.cli",
            format!("`rmicro new {}` is handled in main", flags.name),
        )),
        Command::Completions { .. } => Err(Error::internal(
            "rmicro.cli",
            "`rmicro completions` is handled in main",
        )),
        Command::Publish {
            topic,
            body,
            headers,
            broker,
        } => publish(&topic, &body, &headers, &broker, &registry).await,
        Command::Subscribe {
            topic,
            queue,
            broker,
        } => subscribe(&topic, queue, &broker, &registry).await,
        Command::Services => {
            let mut names: Vec<String> = registry
                .list_services()
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            names.dedup();
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
        Command::Describe { service, output } => {
            let records = registry.get_service(&service).await.map_err(unavailable)?;
            if records.is_empty() {
                return Err(Error::not_found(
                    "rmicro.cli",
                    format!(
                        "service `{service}` is not in registry `{}`",
                        registry.describe()
                    ),
                ));
            }
            if output == "json" {
                let json = serde_json::to_string_pretty(&records)
                    .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
                println!("{json}");
                return Ok(());
            }
            for record in &records {
                println!("service  {}\nversion  {}", record.name, record.version);
                for node in &record.nodes {
                    println!("node     {}  {}", node.id, node.address);
                }
                for ep in &record.endpoints {
                    let stream = ep.metadata.get("stream").is_some_and(|s| s == "true");
                    let req = ep
                        .request
                        .as_ref()
                        .map(|v| format!("{}{{{}}}", v.kind, fields(&v.values)));
                    let rsp = ep
                        .response
                        .as_ref()
                        .map(|v| format!("{}{{{}}}", v.kind, fields(&v.values)));
                    println!(
                        "endpoint {}({}) -> {}{}",
                        ep.name,
                        req.unwrap_or_default(),
                        rsp.unwrap_or_default(),
                        if stream { "  [stream]" } else { "" }
                    );
                    // The field trees, nested messages indented under their field.
                    for (side, message) in [("request", &ep.request), ("response", &ep.response)] {
                        if let Some(message) = message {
                            print!("{}", field_tree(side, message, 1));
                        }
                    }
                }
                println!();
            }
            Ok(())
        }
        Command::Call(Invocation {
            service,
            endpoint,
            request,
            output,
            target,
        }) => {
            let reply = client
                .unary_json(&service, &endpoint, &request, options(&target)?)?
                .await?;
            println!(
                "{}",
                reply_text(&reply.0, output.as_deref().unwrap_or("text"))
            );
            Ok(())
        }
        Command::Bench(flags) => {
            // Each client has its own connection to each server.
            let clients = (0..flags.connections)
                .map(|_| {
                    Client::with_selector(
                        rmicro::client::ClientOptions::default(),
                        selector.clone(),
                    )
                })
                .collect();
            bench::run(*flags, clients, &registry).await
        }
        Command::Stream(Invocation {
            service,
            endpoint,
            request,
            output,
            target,
        }) => {
            use std::io::Write;
            let output = output.as_deref().unwrap_or("json");
            let mut replies = client
                .stream_json(&service, &endpoint, &request, options(&target)?)?
                .await?;
            let mut stdout = std::io::stdout().lock();
            let mut first = true;
            while let Some(reply) = replies.message().await? {
                // `json`: one line per reply, however the server spaced its JSON;
                // `text`: each indented, a blank line between.
                if output == "text" && !first {
                    let _ = writeln!(stdout);
                }
                first = false;
                let _ = writeln!(stdout, "{}", reply_text(&reply.0, output));
                let _ = stdout.flush();
            }
            Ok(())
        }
        Command::Health {
            grpc_service,
            node_service,
            output,
            target,
        } if target.address.is_none() => {
            fleet_health(
                &client,
                &registry,
                &grpc_service,
                &node_service,
                &output,
                &target,
            )
            .await
        }
        Command::Health {
            grpc_service,
            target,
            ..
        } => {
            use rmicro::client::HealthStatus;
            let address = target.address.clone().unwrap_or_default();
            let answer = client
                .check_health(&address, &grpc_service, options(&target)?)
                .await;
            match answer.status {
                HealthStatus::Serving => {
                    println!("{}", answer.status);
                    Ok(())
                }
                HealthStatus::Unreachable => Err(Error::unavailable("rmicro.cli", answer.detail)),
                status => {
                    println!("{status}");
                    Err(Error::unavailable(
                        "rmicro.cli",
                        format!("`{grpc_service}` is {status}"),
                    ))
                }
            }
        }
    }
}

/// What one node said to a health check.
struct NodeHealth {
    id: String,
    address: String,
    version: String,
    /// `SERVING`, `NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN` or `UNREACHABLE`.
    status: String,
    /// Why, when it does not serve.
    detail: String,
}

/// Asks `grpc.health.v1.Health/Check` of every node of `service` at once.
async fn fleet_health(
    client: &Client,
    registry: &rmicro::registry::SharedRegistry,
    service: &str,
    grpc_service: &str,
    output: &str,
    target: &Target,
) -> Result<(), Error> {
    if service.is_empty() {
        return Err(Error::bad_request(
            "rmicro.cli",
            "name the service whose nodes to check (`rmicro health greeter`), or give --address",
        ));
    }
    let records = registry
        .get_service(service)
        .await
        .map_err(|e| Error::unavailable("rmicro.cli", e.to_string()))?;
    let nodes: Vec<(String, String, String)> = records
        .iter()
        .flat_map(|r| {
            r.nodes
                .iter()
                .map(|n| (n.id.clone(), n.address.clone(), r.version.clone()))
        })
        .collect();
    if nodes.is_empty() {
        return Err(Error::not_found(
            "rmicro.cli",
            format!(
                "service `{service}` has no nodes in registry `{}`",
                registry.describe()
            ),
        ));
    }
    let checks = nodes.into_iter().map(|(id, address, version)| async move {
        let answer = client
            .check_health(&address, grpc_service, options(target)?)
            .await;
        Ok::<_, Error>(NodeHealth {
            id,
            address,
            version,
            status: answer.status.as_str().to_owned(),
            detail: answer.detail,
        })
    });
    let results = futures_util::future::try_join_all(checks).await?;
    if output == "json" {
        let json: Vec<serde_json::Value> = results
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id, "address": n.address, "version": n.version,
                    "status": n.status, "detail": n.detail,
                })
            })
            .collect();
        let json = serde_json::to_string_pretty(&json)
            .map_err(|e| Error::internal("rmicro.cli", e.to_string()))?;
        println!("{json}");
    } else {
        for node in &results {
            let detail = if node.detail.is_empty() {
                String::new()
            } else {
                format!("  ({})", node.detail)
            };
            println!(
                "{}  {}  {}  {}{detail}",
                node.id, node.address, node.version, node.status
            );
        }
    }
    let sick = results.iter().filter(|n| n.status != "SERVING").count();
    if sick == 0 {
        Ok(())
    } else {
        Err(Error::unavailable(
            "rmicro.cli",
            format!(
                "{sick} of {} nodes of `{service}` do not serve",
                results.len()
            ),
        ))
    }
}

/// mimalloc for the whole binary: per-thread free lists without glibc's bin
/// bookkeeping, for the many small blocks a proxied call makes and frees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "rmicro", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Command::New(flags) = &cli.command {
        let mut flags = flags.clone();
        flags.registry = cli.registry.clone();
        return new_project(&flags);
    }
    if !matches!(cli.command, Command::Api(_) | Command::Web(_)) {
        // `api` and `web` install their own log (`--log-level`). The other
        // commands log nothing, as before, but through a subscriber that says so
        // up front: with none at all, every span the HTTP/2 stack opens takes the
        // `log` crate's path (sqlx turns it on for the whole build), ~5k
        // instructions per call that `rmicro bench` would add to its own cost.
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "error: {} ({} {}, from {})",
                err.detail, err.code, err.status, err.id
            );
            ExitCode::FAILURE
        }
    }
}

/// `rmicro new`: makes the project in the current directory and says how to run it.
fn new_project(flags: &new::NewFlags) -> ExitCode {
    match new::generate(flags, Path::new(".")) {
        Ok(root) => {
            println!("made {} (the {} service)", root.display(), flags.name);
            println!("  cd {} && cargo test && make run", flags.name);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        // clap's own checks (unique names, valid defaults), which otherwise run
        // only when a debug build parses the subcommand.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
