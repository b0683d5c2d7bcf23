//! The service: a named, versioned server plus the client it uses, configured by
//! the builder, then by flags and environment.

use crate::client::{Client, ClientOptions};
use crate::cmd::Flags;
use crate::registry::{Node, Registration, RegistryError, SharedRegistry};
use crate::selector::{Selector, Strategy};
use crate::server::{RunningServer, ServerError, ServerOptions, ServiceHandler, build_router};
use crate::transport::{ClientTls, ServerTls};
use crate::wrapper::stack::HandlerWrap;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a service could not be built from its flags.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The command line or environment was invalid (or `--help` was asked for).
    #[error("{0}")]
    Flags(#[from] clap::Error),
    /// A TLS file could not be read.
    #[error(transparent)]
    Tls(#[from] crate::transport::TlsError),
    /// The registry named by the flags cannot be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A config source named by the flags cannot be built.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The broker named by the flags cannot be built.
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    /// `--hystrix-stream-address` cannot be served.
    #[error("cannot serve the Hystrix stream on `{address}`: {reason}")]
    HystrixStream {
        /// The address asked for.
        address: String,
        /// Why not.
        reason: String,
    },
    /// `--log-file` cannot be opened.
    #[error("cannot log to `{}`: {reason}", path.display())]
    LogFile {
        /// The file asked for.
        path: std::path::PathBuf,
        /// Why not.
        reason: String,
    },
    /// Tracing's flags or environment are wrong, or its exporter cannot start.
    #[error("tracing: {reason}")]
    Tracing {
        /// Why, as a sentence.
        reason: String,
    },
    /// `--health-check` asked the node and got this answer: not a failure to
    /// build, the binary's whole job this time ([`BuildError::exit`] exits 0
    /// when it serves, 1 otherwise).
    #[error("{answer}")]
    HealthCheck {
        /// Whether the node reported SERVING.
        serving: bool,
        /// What it said, as a sentence.
        answer: String,
    },
    /// `--metrics-address` cannot be served.
    #[error("cannot serve the metrics on `{address}`: {reason}")]
    Metrics {
        /// The address asked for.
        address: String,
        /// Why not.
        reason: String,
    },
}

impl BuildError {
    /// Prints the error (or the help text) and exits with clap's code: 0 for `--help`,
    /// 2 for bad flags. For `main` functions that want go-micro's behaviour.
    pub fn exit(self) -> ! {
        match self {
            BuildError::Flags(e) => e.exit(),
            BuildError::HealthCheck { serving, answer } => {
                if serving {
                    println!("{answer}");
                    std::process::exit(0)
                }
                eprintln!("{answer}");
                std::process::exit(1)
            }
            BuildError::Tls(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
            BuildError::Registry(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
            BuildError::Config(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
            e @ (BuildError::Broker(_)
            | BuildError::HystrixStream { .. }
            | BuildError::Metrics { .. }
            | BuildError::Tracing { .. }
            | BuildError::LogFile { .. }) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// How an application's own flags join the standard ones: added to the command,
/// then read back from what it parsed.
#[derive(Clone, Copy)]
struct AppFlagsParser {
    augment: fn(clap::Command) -> clap::Command,
    parse: fn(&clap::ArgMatches) -> Result<AppFlags, clap::Error>,
}

/// An application's parsed flags, by type.
type AppFlags = Arc<dyn std::any::Any + Send + Sync>;

/// Configures a [`Service`]; every setter is a default that flags and env override.
pub struct ServiceBuilder {
    name: String,
    version: String,
    server: ServerOptions,
    client: ClientOptions,
    args: Option<Vec<OsString>>,
    log_level: String,
    log_format: String,
    /// Whether `build()` installs rmicro's global log subscriber.
    install_logging: bool,
    app_flags: Option<AppFlagsParser>,
    registry: Option<SharedRegistry>,
    registry_flags: Option<(String, Option<String>)>,
    register_ttl: Duration,
    register_interval: Duration,
    strategy: Strategy,
    metadata: BTreeMap<String, String>,
    config_defaults: serde_json::Value,
    config_flags: Flags,
    broker: Option<crate::broker::SharedBroker>,
    handlers: Vec<Arc<dyn ServiceHandler>>,
    handler_wrappers: Vec<HandlerWrap>,
    subscriber_wrappers: Vec<Arc<dyn crate::wrapper::SubscriberWrapper>>,
    publisher_wrappers: Vec<Arc<dyn crate::wrapper::PublisherWrapper>>,
    /// Calls in flight beyond which the server refuses at once.
    max_concurrent: Option<usize>,
    /// This node's id (made when the flags are read).
    node_id: String,
    /// The metrics `--metrics-address` asked for.
    metrics: Option<crate::wrapper::metrics::Metrics>,
    /// The tracing `--tracing-endpoint` (or OpenTelemetry's environment) asked for.
    tracing: Option<crate::wrapper::trace::Tracing>,
    /// The `--auth-*` flags, and where among the handler wrappers their layer goes.
    #[cfg(feature = "auth")]
    auth: Option<(crate::wrapper::auth::AuthFlags, usize)>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("server", &self.server)
            .field("client", &self.client)
            .field("handlers", &self.handlers.len())
            .field("handler_wrappers", &self.handler_wrappers.len())
            .field("subscriber_wrappers", &self.subscriber_wrappers.len())
            .field("publisher_wrappers", &self.publisher_wrappers.len())
            .finish_non_exhaustive()
    }
}

impl ServiceBuilder {
    /// Adds a gRPC service (a generated `*Server`) to serve.
    pub fn handle(mut self, handler: impl ServiceHandler) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Wraps every handler in `layer`, any tower layer over HTTP-level gRPC calls;
    /// the first registered is the outermost.
    ///
    /// The server drives the stack as tower requires (`poll_ready`, then `call`,
    /// on a clone per call), so `tower::limit::ConcurrencyLimitLayer` queues calls
    /// until a permit is free (or the caller's deadline passes: `DEADLINE_EXCEEDED`).
    /// A layer's error becomes a gRPC status ([`crate::wrapper::error_from_wrapper`]):
    /// `Elapsed` → `DEADLINE_EXCEEDED`, `Overloaded` → `RESOURCE_EXHAUSTED`, ….
    /// Layers whose service is not `Clone` (`RateLimitLayer`) go behind
    /// `tower::buffer::BufferLayer`. Health and reflection are not wrapped.
    ///
    /// ```
    /// # extern crate rmicro_core as rmicro;
    /// let service = rmicro::Service::builder("greeter")
    ///     .args(["greeter"])
    ///     .wrap_handler(tower::limit::ConcurrencyLimitLayer::new(64))
    ///     .wrap_handler(rmicro::wrapper::logging::LoggingLayer::new())
    ///     .build()
    ///     .expect("valid flags");
    /// ```
    pub fn wrap_handler(mut self, layer: impl crate::wrapper::HandlerLayer) -> Self {
        self.handler_wrappers.push(layer.into_wrap());
        self
    }

    /// Wraps each logical call this service's client makes, once per call, above
    /// node selection and retries; the first registered is the outermost.
    pub fn wrap_client(mut self, layer: impl crate::client::ClientLayer) -> Self {
        self.client = self.client.wrap_client(layer);
        self
    }

    /// Wraps each attempt of this service's calls, after the node is picked; the
    /// first registered is the outermost.
    pub fn wrap_call(mut self, layer: impl crate::client::ClientLayer) -> Self {
        self.client = self.client.wrap_call(layer);
        self
    }

    /// Wraps the handler of every subscription the service makes (through
    /// [`Service::subscribe`] and friends, or [`Service::broker`]), once per
    /// delivery; the first registered is the outermost. See
    /// [`crate::wrapper::subscriber_fn`].
    pub fn wrap_subscriber(mut self, wrapper: impl crate::wrapper::SubscriberWrapper) -> Self {
        self.subscriber_wrappers.push(Arc::new(wrapper));
        self
    }

    /// Wraps every publish through the service's broker (the client's `publish*`
    /// and [`Service::broker`]); the first registered is the outermost. See
    /// [`crate::wrapper::publisher_fn`].
    pub fn wrap_publisher(mut self, wrapper: impl crate::wrapper::PublisherWrapper) -> Self {
        self.publisher_wrappers.push(Arc::new(wrapper));
        self
    }

    /// The broker the service publishes and subscribes through (`--broker` overrides;
    /// default: the embedded `http` broker over the service's registry).
    pub fn broker(mut self, broker: crate::broker::SharedBroker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// In-code configuration defaults, the lowest layer of [`Service::config`].
    pub fn config_defaults(mut self, tree: serde_json::Value) -> Self {
        self.config_defaults = tree;
        self
    }

    /// Where the service registers and its client finds others (`--registry` overrides).
    pub fn registry(mut self, registry: SharedRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// How long a registration lives without a refresh (`--register-ttl`).
    pub fn register_ttl(mut self, ttl: Duration) -> Self {
        self.register_ttl = ttl;
        self
    }

    /// How often the registration is refreshed (`--register-interval`).
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.register_interval = interval;
        self
    }

    /// How the client picks nodes (`--selector`).
    pub fn selector(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Adds service metadata to the registry record.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The service's version (`--server-version` overrides).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Where to listen (`--server-address` overrides).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.server.address = address.into();
        self
    }

    /// The address others should dial (`--server-advertise` overrides).
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.server.advertise = Some(address.into());
        self
    }

    /// Largest message accepted or sent.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.server.max_message_size = bytes;
        self
    }

    /// Refuses calls beyond `max` in flight at once with `RESOURCE_EXHAUSTED`
    /// instead of queuing them ([`crate::wrapper::shed`]); `--server-max-concurrent`
    /// overrides it.
    pub fn server_max_concurrent(mut self, max: usize) -> Self {
        self.max_concurrent = Some(max);
        self
    }

    /// How long shutdown waits for in-flight calls.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.server.grace_period = grace;
        self
    }

    /// Whether server reflection is served (on by default; off hides the server's
    /// services and messages from whoever connects); `--server-reflection` overrides.
    pub fn reflection(mut self, on: bool) -> Self {
        self.server.reflection = on;
        self
    }

    /// What the listener lets its clients hold (connections, streams, header
    /// bytes, handshake and idle time); the `--server-max-connections`,
    /// `--server-idle-timeout`, … flags override single limits.
    pub fn connection_limits(mut self, limits: crate::transport::ConnectionLimits) -> Self {
        self.server.limits = limits;
        self
    }

    /// Serves TLS with this identity.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.server.tls = Some(tls);
        self
    }

    /// Default timeout of this service's outgoing calls.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.client.request_timeout = timeout;
        self
    }

    /// Default retries of this service's outgoing calls.
    pub fn retries(mut self, retries: u32) -> Self {
        self.client.retries = retries;
        self
    }

    /// How many retries all of this service's outgoing calls may make together
    /// (default: 20 % of the last 10 s's calls, at least 10 a second).
    pub fn retry_budget(mut self, budget: crate::client::RetryBudget) -> Self {
        self.client.retry_budget = budget;
        self
    }

    /// Routes calls for `service` to `address`.
    pub fn route(mut self, service: impl Into<String>, address: impl Into<String>) -> Self {
        self.client.routes.insert(service.into(), address.into());
        self
    }

    /// Parses these arguments instead of the process's (the first is the program name).
    pub fn args<I, T>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds the application's own flags (a `clap::Args` type) next to the standard
    /// ones, as go-micro's `micro.Flags`: `--help` lists both, and the parsed values
    /// are read back with [`Service::app_flags`].
    ///
    /// ```
    /// # extern crate rmicro_core as rmicro;
    /// #[derive(clap::Args, Debug)]
    /// struct UserFlags {
    ///     /// Where the users live.
    ///     #[arg(long, env = "USER_DSN", default_value = "sqlite://users.db")]
    ///     dsn: String,
    /// }
    /// let service = rmicro::Service::builder("user")
    ///     .app_flags::<UserFlags>()
    ///     .args(["user", "--dsn", "mysql://db/users", "--server-address", "127.0.0.1:0"])
    ///     .build()
    ///     .expect("valid flags");
    /// assert_eq!(service.app_flags::<UserFlags>().unwrap().dsn, "mysql://db/users");
    /// ```
    pub fn app_flags<T>(mut self) -> Self
    where
        T: clap::Args + clap::FromArgMatches + Send + Sync + 'static,
    {
        self.app_flags = Some(AppFlagsParser {
            augment: T::augment_args,
            parse: |matches| Ok(Arc::new(T::from_arg_matches(matches)?) as AppFlags),
        });
        self
    }

    /// Whether `build()` installs rmicro's log subscriber (text or JSON on stderr,
    /// `--log-level`, `--log-format`); default yes. An application that sets up
    /// `tracing` itself passes `false` (a subscriber installed before `build()` is
    /// kept either way). It should then install one, even one that drops
    /// everything (`tracing::subscriber::NoSubscriber`): when any crate of the
    /// build turns on `tracing`'s `log` feature (sqlx does, so every service with
    /// `rmicro::db`), a process with no subscriber sends every span hyper, h2 and
    /// tonic open down the `log` crate's path — thousands of instructions per call.
    pub fn install_logging(mut self, install: bool) -> Self {
        self.install_logging = install;
        self
    }

    /// Reads flags and `MICRO_*` variables, sets up logging, and builds the service.
    pub fn build(mut self) -> Result<Service, BuildError> {
        let mut command = <Flags as clap::CommandFactory>::command();
        if let Some(app) = &self.app_flags {
            command = (app.augment)(command);
        }
        let matches = match self.args.take() {
            Some(args) => command.try_get_matches_from(args)?,
            None => command.try_get_matches()?,
        };
        let flags = <Flags as clap::FromArgMatches>::from_arg_matches(&matches)?;
        if flags.health_check {
            let address = flags
                .server_address
                .as_deref()
                .unwrap_or(&self.server.address);
            let (serving, answer) = crate::server::health::probe(address);
            return Err(BuildError::HealthCheck { serving, answer });
        }
        let app_flags = self
            .app_flags
            .map(|app| (app.parse)(&matches))
            .transpose()?;
        self.apply(flags)?;
        if self.install_logging {
            let flags = &self.config_flags;
            let file = flags.log_file.as_deref().map(|path| {
                let defaults = crate::logging::Rotation::default();
                let rotation = crate::logging::Rotation {
                    max_size_mb: flags.log_max_size.unwrap_or(defaults.max_size_mb),
                    max_backups: flags.log_max_backups.unwrap_or(defaults.max_backups),
                    max_age_days: flags.log_max_age.unwrap_or(defaults.max_age_days),
                    compress: flags.log_compress,
                    local_time: flags.log_local_time,
                };
                (path, rotation)
            });
            crate::logging::init(
                &self.log_level,
                &self.log_format,
                &crate::logging::Identity {
                    name: self.name.clone(),
                    version: self.version.clone(),
                    node: self.node_id.clone(),
                },
                file,
            )
            .map_err(|e| BuildError::LogFile {
                path: flags.log_file.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        }
        let config = crate::config::Config::builder()
            .defaults(std::mem::take(&mut self.config_defaults))
            .flags(&self.config_flags)?
            .start();
        let registry = match (self.registry_flags.take(), self.registry.take()) {
            (Some((name, address)), _) => crate::registry::from_flags(&name, address.as_deref())?,
            (None, Some(registry)) => registry,
            (None, None) => crate::registry::from_flags("local", None)?,
        };
        let broker_address = self.config_flags.broker_address.as_deref();
        let broker = match (&self.config_flags.broker, self.broker.take()) {
            (Some(name), _) => {
                crate::broker::from_flags_with_registry(name, broker_address, &registry)?
            }
            (None, Some(broker)) => broker,
            (None, None) => {
                crate::broker::from_flags_with_registry("http", broker_address, &registry)?
            }
        };
        let broker = crate::wrapper::broker::WrappedBroker::wrap(
            broker,
            std::mem::take(&mut self.subscriber_wrappers),
            std::mem::take(&mut self.publisher_wrappers),
        );
        self.client.broker = Some(broker.clone());
        self.client.from_service = Some(self.name.clone());
        let selector = Arc::new(Selector::new(registry.clone(), self.strategy));
        let client = Client::with_selector(self.client, selector);
        let hystrix_stream = match self.config_flags.hystrix_stream_address.as_deref() {
            Some(address) => Some(serve_hystrix_stream(address)?),
            None => None,
        };
        let metrics_server = match (&self.config_flags.metrics_address, &self.metrics) {
            (Some(address), Some(metrics)) => Some(serve_metrics(address, metrics.clone())?),
            _ => None,
        };
        Ok(Service {
            inner: Arc::new(ServiceInner {
                name: self.name,
                version: self.version,
                client,
                server: self.server,
                registry,
                register_ttl: self.register_ttl,
                register_interval: self.register_interval,
                metadata: self.metadata,
                config,
                broker,
                subscriptions: Mutex::new(Vec::new()),
                handlers: Mutex::new(self.handlers),
                app_flags,
                wrappers: self.handler_wrappers,
                #[cfg(feature = "auth")]
                auth: self.auth,
                started: std::sync::atomic::AtomicBool::new(false),
                hystrix_stream,
                node_id: self.node_id,
                metrics: self.metrics,
                metrics_server,
                tracing: self.tracing,
                health: crate::server::Health::default(),
            }),
        })
    }

    fn apply(&mut self, flags: Flags) -> Result<(), BuildError> {
        let breaker = flags.breaker_settings();
        self.config_flags = flags.clone();
        self.server.limits = flags
            .connection
            .connection_limits(std::mem::take(&mut self.server.limits));
        if let Some(on) = flags.server_reflection {
            self.server.reflection = on;
        }
        if let Some(name) = flags.server_name {
            self.name = name;
        }
        self.server.name = self.name.clone();
        if let Some(v) = flags.server_version {
            self.version = v;
        }
        if let Some(a) = flags.server_address {
            self.server.address = a;
        }
        if let Some(a) = flags.server_advertise {
            self.server.advertise = Some(a);
        }
        if let Some(m) = flags.server_max_message_size {
            self.server.max_message_size = m;
            self.client.max_message_size = m;
        }
        if let Some(g) = flags.server_grace_period {
            self.server.grace_period = g;
        }
        if let (Some(cert), Some(key)) = (flags.server_tls_cert, flags.server_tls_key) {
            let mut tls = ServerTls::from_files(&cert, &key)?;
            if let Some(ca) = flags.tls_client_ca_file {
                tls = tls
                    .client_auth(flags.tls_client_auth.unwrap_or_default())
                    .with_client_ca_file(&ca)?;
            }
            self.server.tls = Some(tls);
        }
        if let Some(t) = flags.client_request_timeout {
            self.client.request_timeout = t;
        }
        if let Some(r) = flags.client_retries {
            self.client.retries = r;
        }
        if let Some(percent) = flags.client_retry_budget {
            self.client.retry_budget = self.client.retry_budget.percent(percent);
        }
        if let Some(n) = flags.client_retry_min_per_second {
            self.client.retry_budget = self.client.retry_budget.min_per_second(n);
        }
        if let Some(ca) = flags.client_tls_ca {
            self.client.channel.tls = Some(ClientTls::default().with_ca_file(&ca)?);
        }
        if let (Some(cert), Some(key)) = (flags.client_tls_cert, flags.client_tls_key) {
            let tls = self.client.channel.tls.take().unwrap_or_default();
            self.client.channel.tls = Some(tls.with_identity_files(&cert, &key)?);
        }
        self.client.routes.extend(flags.client_routes);
        self.node_id = format!("{}-{}", self.name, uuid::Uuid::new_v4());
        let all = self.config_flags.clone();
        self.start_tracing(&all)?;
        // Outside the other flags' wrappers (it counts their refusals), inside the
        // code's.
        if flags.metrics_address.is_some() {
            use crate::wrapper::HandlerLayer as _;
            let metrics =
                crate::wrapper::metrics::Metrics::new(&self.name, &self.version, &self.node_id);
            self.handler_wrappers
                .push(metrics.server_layer().into_wrap());
            self.client = std::mem::take(&mut self.client).wrap_client(metrics.client_layer());
            if let Some(tracing) = &self.tracing {
                metrics.add_tracing(&self.name, tracing.stats().clone());
            }
            self.subscriber_wrappers
                .push(Arc::new(metrics.subscriber()));
            self.publisher_wrappers.push(Arc::new(metrics.publisher()));
            self.metrics = Some(metrics);
        }
        // Inside tracing and metrics (they see its refusals), outside the limits (a
        // caller without a valid token takes no share of them).
        #[cfg(feature = "auth")]
        if flags.auth.is_set() {
            self.auth = Some((flags.auth.clone(), self.handler_wrappers.len()));
        }
        // Inside the wrappers the code registered, so they see the refusals.
        if let Some(max) = flags.server_max_concurrent.or(self.max_concurrent) {
            use crate::wrapper::HandlerLayer as _;
            self.handler_wrappers
                .push(crate::wrapper::shed::LoadShedLayer::max_concurrent(max).into_wrap());
        }
        if !flags.server_endpoint_timeouts.is_empty() {
            use crate::wrapper::HandlerLayer as _;
            let timeouts = flags.server_endpoint_timeouts.iter().fold(
                crate::wrapper::timeout::EndpointTimeouts::new(),
                |timeouts, (endpoint, limit)| timeouts.endpoint(endpoint.clone(), *limit),
            );
            self.handler_wrappers.push(timeouts.into_wrap());
        }
        if let Some(n) = flags.ratelimit_server {
            use crate::wrapper::HandlerLayer as _;
            self.handler_wrappers
                .push(crate::wrapper::ratelimit::RateLimit::per_second(n).into_wrap());
        }
        if let Some(n) = flags.ratelimit_client {
            self.client = std::mem::take(&mut self.client)
                .wrap_client(crate::wrapper::ratelimit::RateLimit::per_second(n));
        }
        if let Some(settings) = breaker {
            // Inside the wrappers the code registered: they see its refusals.
            self.client = std::mem::take(&mut self.client)
                .wrap_client(crate::wrapper::breaker::BreakerLayer::new(settings));
        }
        if flags.registry.is_some() || flags.registry_address.is_some() {
            let name = flags.registry.unwrap_or_else(|| "local".into());
            self.registry_flags = Some((name, flags.registry_address));
        }
        if let Some(ttl) = flags.register_ttl {
            self.register_ttl = ttl;
        }
        if let Some(interval) = flags.register_interval {
            self.register_interval = interval;
        }
        if let Some(strategy) = flags.selector {
            self.strategy = strategy;
        }
        if let Some(l) = flags.log_level {
            self.log_level = l;
        }
        if let Some(f) = flags.log_format {
            self.log_format = f;
        }
        Ok(())
    }
}

impl ServiceBuilder {
    /// Starts tracing when the flags or OpenTelemetry's environment ask for it: its
    /// layers go outside every other wrapper, so a span covers all they do and
    /// their log lines carry its ids.
    fn start_tracing(&mut self, flags: &Flags) -> Result<(), BuildError> {
        use crate::wrapper::trace::{Tracing, TracingConfig};
        let failed = |reason: String| BuildError::Tracing { reason };
        let Some(config) =
            TracingConfig::from_settings(&flags.tracing, |name| std::env::var(name).ok())
                .map_err(failed)?
        else {
            return Ok(());
        };
        let broker = flags.broker.as_deref().unwrap_or("http");
        let tracing = Tracing::start(&config, &self.name, &self.version, &self.node_id, broker)
            .map_err(failed)?;
        {
            use crate::wrapper::HandlerLayer as _;
            self.handler_wrappers
                .insert(0, tracing.server_layer().into_wrap());
        }
        self.client
            .wrap_outermost(tracing.client_layer(), tracing.attempt_layer());
        self.subscriber_wrappers
            .insert(0, Arc::new(tracing.subscriber()));
        self.publisher_wrappers
            .insert(0, Arc::new(tracing.publisher()));
        tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, sampler = ?config.sampler, "tracing to {}", config.endpoint);
        self.tracing = Some(tracing);
        Ok(())
    }
}

/// Binds `address` now (so a taken port fails the build with a sentence), for a side
/// endpoint served on the runtime `build()` runs in; errors are reasons.
fn bind_side(address: &str) -> Result<tokio::net::TcpListener, String> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("no tokio runtime: build the service inside one (#[tokio::main])".into());
    }
    let listener = std::net::TcpListener::bind(address).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())
}

/// Serves the Hystrix stream on `address`.
fn serve_hystrix_stream(
    address: &str,
) -> Result<crate::wrapper::breaker::HystrixStream, BuildError> {
    let failed = |reason: String| BuildError::HystrixStream {
        address: address.to_owned(),
        reason,
    };
    let listener = bind_side(address).map_err(failed)?;
    let stream = crate::wrapper::breaker::HystrixStream::serve(listener)
        .map_err(|e| failed(e.to_string()))?;
    tracing::info!(address = %stream.local_addr(), "Hystrix stream at http://{}{}", stream.local_addr(), crate::wrapper::breaker::stream::PATH);
    Ok(stream)
}

/// Serves `metrics` to Prometheus on `address`.
fn serve_metrics(
    address: &str,
    metrics: crate::wrapper::metrics::Metrics,
) -> Result<crate::wrapper::metrics::MetricsServer, BuildError> {
    let failed = |reason: String| BuildError::Metrics {
        address: address.to_owned(),
        reason,
    };
    let listener = bind_side(address).map_err(failed)?;
    let server = crate::wrapper::metrics::MetricsServer::serve(listener, metrics)
        .map_err(|e| failed(e.to_string()))?;
    tracing::info!(address = %server.local_addr(), "Prometheus metrics at http://{}{}", server.local_addr(), crate::wrapper::metrics::PATH);
    Ok(server)
}

/// A microservice: handlers served over gRPC, a client for calling others, wrappers
/// around both. Cheap to clone.
///
/// ```no_run
/// # extern crate rmicro_core as rmicro;
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let service = rmicro::Service::builder("greeter").version("1.0.0").build()?;
/// // in a real service: `.handle(GreeterServer::new(MyGreeter))` before `.build()`
/// service.run().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Service {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    name: String,
    version: String,
    client: Client,
    server: ServerOptions,
    registry: SharedRegistry,
    register_ttl: Duration,
    register_interval: Duration,
    metadata: BTreeMap<String, String>,
    config: crate::config::Config,
    broker: crate::broker::SharedBroker,
    subscriptions: Mutex<Vec<(crate::registry::Endpoint, crate::broker::Subscriber)>>,
    handlers: Mutex<Vec<Arc<dyn ServiceHandler>>>,
    /// Fixed when the service is built: nothing can drop or reorder them.
    wrappers: Vec<HandlerWrap>,
    /// The `--auth-*` flags, and where among `wrappers` their layer goes: made when
    /// the server starts (a JWKS URL is read then).
    #[cfg(feature = "auth")]
    auth: Option<(crate::wrapper::auth::AuthFlags, usize)>,
    app_flags: Option<AppFlags>,
    /// Set by the first `start()`: the handlers are fixed from then on.
    started: std::sync::atomic::AtomicBool,
    /// The Hystrix event stream, when `--hystrix-stream-address` asked for it.
    hystrix_stream: Option<crate::wrapper::breaker::HystrixStream>,
    /// This node's id in the registry (`<name>-<uuid>`), fixed when built.
    node_id: String,
    /// The service's metrics, when `--metrics-address` asked for them.
    metrics: Option<crate::wrapper::metrics::Metrics>,
    /// Where they are served.
    metrics_server: Option<crate::wrapper::metrics::MetricsServer>,
    /// The service's tracing, when asked for.
    tracing: Option<crate::wrapper::trace::Tracing>,
    /// What the service itself says of its health.
    health: crate::server::Health,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts configuring a service called `name`.
    pub fn builder(name: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder {
            name: name.into(),
            version: "latest".into(),
            server: ServerOptions {
                address: "0.0.0.0:0".into(),
                ..ServerOptions::default()
            },
            client: ClientOptions::default(),
            args: None,
            log_level: "info".into(),
            log_format: String::new(),
            install_logging: true,
            app_flags: None,
            registry: None,
            registry_flags: None,
            register_ttl: Duration::from_secs(60),
            register_interval: Duration::from_secs(30),
            strategy: Strategy::default(),
            metadata: BTreeMap::new(),
            config_defaults: serde_json::Value::Object(Default::default()),
            config_flags: Flags::default(),
            broker: None,
            handlers: Vec::new(),
            handler_wrappers: Vec::new(),
            max_concurrent: None,
            node_id: String::new(),
            metrics: None,
            tracing: None,
            #[cfg(feature = "auth")]
            auth: None,
            subscriber_wrappers: Vec::new(),
            publisher_wrappers: Vec::new(),
        }
    }

    /// The service's configuration: in-code defaults < `--config-file` < `MICRO_*`
    /// environment < `--config-set` < `--config-source` centers, kept up to date.
    /// `start()` and `run()` wait until every source has loaded once; code that
    /// reads it before should `await` [`Config::ready`](crate::config::Config::ready).
    pub fn config(&self) -> &crate::config::Config {
        &self.inner.config
    }

    /// The registry the service registers in and finds others through.
    pub fn registry(&self) -> &SharedRegistry {
        &self.inner.registry
    }

    /// The registry record for a server at `address` serving `handlers`.
    fn record(
        &self,
        address: &str,
        handlers: &[Arc<dyn ServiceHandler>],
    ) -> crate::registry::Service {
        let inner = &self.inner;
        let metadata: BTreeMap<String, String> = [
            ("transport", "grpc".to_owned()),
            ("protocol", "grpc".to_owned()),
            ("server", "rmicro".to_owned()),
            ("registry", inner.registry.describe()),
            ("tls", inner.server.tls.is_some().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut metadata = metadata;
        // Where a dashboard (`rmicro web`) finds this node's numbers and circuits.
        if let Some(bound) = self.metrics_addr() {
            metadata.insert("metrics".into(), side_url(bound, address, "/metrics"));
        }
        if let Some(bound) = self.hystrix_stream_addr() {
            metadata.insert(
                "hystrix".into(),
                side_url(bound, address, crate::wrapper::breaker::stream::PATH),
            );
        }
        crate::registry::Service {
            name: inner.name.clone(),
            version: inner.version.clone(),
            metadata: inner.metadata.clone(),
            endpoints: handlers
                .iter()
                .flat_map(|h| (h.descriptor().endpoints)())
                .chain(
                    crate::sync::lock(&inner.subscriptions)
                        .iter()
                        .map(|(e, _)| e.clone())
                        .collect::<Vec<_>>(),
                )
                .collect(),
            nodes: vec![Node {
                id: inner.node_id.clone(),
                address: address.to_owned(),
                metadata,
            }],
        }
    }

    /// The broker the service publishes and subscribes through.
    pub fn broker(&self) -> &crate::broker::SharedBroker {
        &self.inner.broker
    }

    /// Subscribes `handler` to protobuf events of type `M` on `topic` (default
    /// options: every message to this subscriber, auto ack, 5 deliveries).
    /// A message that does not decode as `M` fails like a handler error and ends in
    /// `<topic>.dlq`.
    pub async fn subscribe<M, F, Fut>(
        &self,
        topic: &str,
        handler: F,
    ) -> Result<(), crate::broker::BrokerError>
    where
        M: prost::Message + Default + Send + 'static,
        F: Fn(crate::broker::typed::Event<M>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), crate::Error>> + Send + 'static,
    {
        self.subscribe_with(topic, crate::broker::SubscribeOptions::default(), handler)
            .await
    }

    /// Like [`subscribe`](Self::subscribe) with options (queue group, durability,
    /// concurrency, manual ack, max deliveries).
    pub async fn subscribe_with<M, F, Fut>(
        &self,
        topic: &str,
        options: crate::broker::SubscribeOptions,
        handler: F,
    ) -> Result<(), crate::broker::BrokerError>
    where
        M: prost::Message + Default + Send + 'static,
        F: Fn(crate::broker::typed::Event<M>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), crate::Error>> + Send + 'static,
    {
        self.subscribe_decoded(
            topic,
            options,
            crate::broker::typed::decode_proto::<M>,
            handler,
        )
        .await
    }

    /// Subscribes `handler` to JSON events of type `T` on `topic`.
    pub async fn subscribe_json<T, F, Fut>(
        &self,
        topic: &str,
        options: crate::broker::SubscribeOptions,
        handler: F,
    ) -> Result<(), crate::broker::BrokerError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(crate::broker::typed::Event<T>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), crate::Error>> + Send + 'static,
    {
        self.subscribe_decoded(
            topic,
            options,
            crate::broker::typed::decode_json::<T>,
            handler,
        )
        .await
    }

    /// Subscribes `handler` to events that `decode` turns into `T`.
    async fn subscribe_decoded<T, F, Fut>(
        &self,
        topic: &str,
        options: crate::broker::SubscribeOptions,
        decode: fn(&crate::broker::Message) -> Result<T, crate::Error>,
        handler: F,
    ) -> Result<(), crate::broker::BrokerError>
    where
        T: Send + 'static,
        F: Fn(crate::broker::typed::Event<T>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), crate::Error>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let raw = crate::broker::handler(move |delivery: crate::broker::Delivery| {
            let handler = handler.clone();
            async move {
                let message = decode(&delivery.message)?;
                handler(crate::broker::typed::Event::new(message, delivery)).await
            }
        });
        self.subscribe_raw(topic, options, std::any::type_name::<T>(), raw)
            .await
    }

    /// Subscribes a raw handler; the subscription is listed in the service's
    /// registry record (endpoint metadata `topic`, `subscriber: "true"`, as
    /// go-micro) from the next registration on, and ended by
    /// [`unsubscribe_all`](Self::unsubscribe_all) or when `run()` shuts down.
    pub async fn subscribe_raw(
        &self,
        topic: &str,
        options: crate::broker::SubscribeOptions,
        kind: &str,
        handler: crate::broker::Handler,
    ) -> Result<(), crate::broker::BrokerError> {
        let mut metadata: BTreeMap<String, String> = [
            ("topic".to_owned(), topic.to_owned()),
            ("subscriber".to_owned(), "true".to_owned()),
        ]
        .into();
        if let Some(queue) = &options.queue {
            metadata.insert("queue".into(), queue.clone());
        }
        let short = kind.rsplit("::").next().unwrap_or(kind).to_owned();
        let endpoint = crate::registry::Endpoint {
            name: format!("Subscriber.{topic}"),
            request: Some(crate::registry::Value::new(short.clone(), short, vec![])),
            response: None,
            metadata,
        };
        let subscriber = self.inner.broker.subscribe(topic, handler, options).await?;
        crate::sync::lock(&self.inner.subscriptions).push((endpoint, subscriber));
        Ok(())
    }

    /// Ends every subscription made through this service; in-flight messages finish.
    pub async fn unsubscribe_all(&self) {
        let subs = std::mem::take(&mut *crate::sync::lock(&self.inner.subscriptions));
        for (_, subscriber) in subs {
            subscriber.unsubscribe().await;
        }
    }

    /// The application's own flags, parsed by `build()` (see
    /// [`ServiceBuilder::app_flags`]); `None` for another type.
    pub fn app_flags<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner.app_flags.as_ref()?.downcast_ref::<T>()
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The service's version.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The server settings after flags were applied.
    pub fn server_options(&self) -> &ServerOptions {
        &self.inner.server
    }

    /// Adds a gRPC service (a generated `*Server`) to serve, for handlers that need
    /// the built service (its client, its config). Only before the first
    /// [`start`](Self::start): a running server's routes are fixed, so a later call
    /// is refused with [`ServerError::AlreadyStarted`] rather than silently ignored.
    pub fn handle(&self, handler: impl ServiceHandler) -> Result<(), ServerError> {
        let mut handlers = crate::sync::lock(&self.inner.handlers);
        if self
            .inner
            .started
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(ServerError::AlreadyStarted {
                service: self.inner.name.clone(),
                handler: handler.descriptor().name,
            });
        }
        handlers.push(Arc::new(handler));
        Ok(())
    }

    /// Where the Hystrix event stream listens (`--hystrix-stream-address`).
    pub fn hystrix_stream_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner
            .hystrix_stream
            .as_ref()
            .map(crate::wrapper::breaker::HystrixStream::local_addr)
    }

    /// Where `GET /metrics` is served, when `--metrics-address` asked for it.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner
            .metrics_server
            .as_ref()
            .map(crate::wrapper::metrics::MetricsServer::local_addr)
    }

    /// The service's tracing, when `--tracing-endpoint` or OpenTelemetry's
    /// environment asked for it: its provider makes the application's own spans.
    pub fn tracing(&self) -> Option<&crate::wrapper::trace::Tracing> {
        self.inner.tracing.as_ref()
    }

    /// The service's metrics, when `--metrics-address` asked for them: add the
    /// application's own to [`registry`](crate::wrapper::metrics::Metrics::registry).
    pub fn metrics(&self) -> Option<&crate::wrapper::metrics::Metrics> {
        self.inner.metrics.as_ref()
    }

    /// This node's id in the registry (`<name>-<uuid>`).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The service's say in its gRPC health: [`Health::set_serving`](crate::server::Health::set_serving)`(false)`
    /// makes every node it starts report `NOT_SERVING` (a dependency is down)
    /// until set back; set before or after `start()`.
    pub fn health(&self) -> crate::server::Health {
        self.inner.health.clone()
    }

    /// The client this service calls others with.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The handler wrappers a server starts with: the built ones, and the
    /// `--auth-*` flags' layer made now (a JWKS URL is read at this point).
    async fn handler_wrappers(&self) -> Result<std::borrow::Cow<'_, [HandlerWrap]>, ServerError> {
        #[cfg(feature = "auth")]
        if let Some((flags, at)) = &self.inner.auth {
            use crate::wrapper::HandlerLayer as _;
            let layer = flags
                .layer()
                .await
                .map_err(|e| ServerError::Auth(e.to_string()))?;
            let Some(layer) = layer else {
                return Err(ServerError::Auth(
                    "auth: the --auth-* flags name no key to verify tokens with".into(),
                ));
            };
            let mut wrappers = self.inner.wrappers.clone();
            wrappers.insert((*at).min(wrappers.len()), layer.into_wrap());
            return Ok(std::borrow::Cow::Owned(wrappers));
        }
        Ok(std::borrow::Cow::Borrowed(&self.inner.wrappers))
    }

    /// Binds and starts serving in the background; returns the running server.
    pub async fn start(&self) -> Result<RunningServer, ServerError> {
        let handlers: Vec<Arc<dyn ServiceHandler>> = {
            let handlers = crate::sync::lock(&self.inner.handlers);
            self.inner
                .started
                .store(true, std::sync::atomic::Ordering::Release);
            handlers.clone()
        };
        if handlers.is_empty() {
            return Err(ServerError::NoHandlers(self.inner.name.clone()));
        }
        self.inner.config.ready().await?;
        let services = handlers.iter().map(|h| h.descriptor().name).collect();
        let wrappers = self.handler_wrappers().await?;
        let (router, health) = build_router(&self.inner.server, &handlers, &wrappers).await?;
        let mut running = RunningServer::start(
            &self.inner.server,
            router,
            health,
            services,
            &self.inner.health,
        )
        .await?;
        let record = self.record(running.advertise(), &handlers);
        match Registration::start(
            self.inner.registry.clone(),
            record,
            self.inner.register_ttl,
            self.inner.register_interval,
        )
        .await
        {
            Ok(registration) => running.attach(registration),
            Err(err) => {
                running.stop().await;
                return Err(err.into());
            }
        }
        tracing::info!(
            service = %self.inner.name,
            version = %self.inner.version,
            tls = self.inner.server.tls.is_some(),
            registry = %self.inner.registry.describe(),
            "Server [grpc] Listening on {}",
            running.advertise()
        );
        Ok(running)
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<(), ServerError> {
        let running = self.start().await?;
        shutdown_signal().await;
        // Stop taking events first; events being handled finish.
        self.unsubscribe_all().await;
        tracing::info!(service = %self.inner.name, in_flight = running.in_flight(), "shutting down: draining in-flight calls");
        let grace = self.inner.server.grace_period;
        if running.stop().await {
            tracing::info!(service = %self.inner.name, "stopped");
        } else {
            tracing::warn!(service = %self.inner.name, ?grace, "grace period over: closed remaining calls");
        }
        if let Some(tracing) = &self.inner.tracing
            && !tracing.flush(grace.max(Duration::from_secs(1))).await
        {
            tracing::warn!(service = %self.inner.name, "tracing: spans still queued after the grace period were lost");
        }
        crate::logging::flush(Duration::from_secs(5));
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: what a service waits for before it
/// deregisters and drains; a binary with a loop of its own (`rmicro api`) waits
/// on it too.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// The URL of a side server (metrics, Hystrix stream) bound at `bound`, as others
/// reach it: a wildcard bind (`0.0.0.0`, `[::]`) takes the host of the node's
/// registered `node_address`.
fn side_url(bound: std::net::SocketAddr, node_address: &str, path: &str) -> String {
    let host = if bound.ip().is_unspecified() {
        node_address
            .rsplit_once(':')
            .map_or(node_address, |(host, _)| host)
            .to_owned()
    } else {
        match bound.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        }
    };
    format!("http://{host}:{}{path}", bound.port())
}

#[cfg(test)]
mod tests {
    use super::side_url;

    #[test]
    fn side_urls_name_a_host_others_can_reach() {
        let wildcard = "0.0.0.0:9093".parse().unwrap();
        assert_eq!(
            side_url(wildcard, "10.0.0.7:50051", "/metrics"),
            "http://10.0.0.7:9093/metrics"
        );
        let v6 = "[::1]:9092".parse().unwrap();
        assert_eq!(
            side_url(v6, "[::1]:50051", "/hystrix.stream"),
            "http://[::1]:9092/hystrix.stream"
        );
        let pinned = "127.0.0.1:9093".parse().unwrap();
        assert_eq!(
            side_url(pinned, "node.example:50051", "/metrics"),
            "http://127.0.0.1:9093/metrics"
        );
    }
}
