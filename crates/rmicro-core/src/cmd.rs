//! Standard flags and environment variables of every service (go-micro's `cmd`).
//!
//! Each flag has an environment variable (`--server-address` ↔ `MICRO_SERVER_ADDRESS`);
//! a flag on the command line wins over the variable, which wins over what the code
//! set with the builder. `--help` lists them all.

use clap::Parser;
use std::time::Duration;

/// The flags every rmicro service accepts.
#[derive(Debug, Clone, Default, Parser)]
#[command(about = "An rmicro service", disable_version_flag = true)]
// Not the struct's name: an application's own `Flags` must not clash with it.
#[group(id = "rmicro-flags")]
pub struct Flags {
    /// Name the service is known by.
    #[arg(long, env = "MICRO_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
    /// Version the service reports.
    #[arg(long, env = "MICRO_SERVER_VERSION", value_name = "VERSION")]
    pub server_version: Option<String>,
    /// Address to listen on; port 0 picks a free port [default: 0.0.0.0:0].
    #[arg(long, env = "MICRO_SERVER_ADDRESS", value_name = "HOST:PORT")]
    pub server_address: Option<String>,
    /// Ask the node listening on --server-address (0.0.0.0 meaning this host)
    /// whether it serves, by gRPC health, print the answer and exit: 0 when
    /// SERVING, 1 otherwise. For Docker's HEALTHCHECK; nothing is started.
    #[arg(long)]
    pub health_check: bool,
    /// Address others should dial [default: the bound address].
    #[arg(long, env = "MICRO_SERVER_ADVERTISE", value_name = "HOST:PORT")]
    pub server_advertise: Option<String>,
    /// Largest message accepted or sent, in bytes [default: 4194304].
    #[arg(long, env = "MICRO_SERVER_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub server_max_message_size: Option<usize>,
    /// How long shutdown waits for in-flight calls [default: 30s].
    #[arg(long, env = "MICRO_SERVER_GRACE_PERIOD", value_name = "DURATION", value_parser = parse_duration)]
    pub server_grace_period: Option<Duration>,
    /// PEM certificate chain; with --server-tls-key, serve TLS.
    #[arg(
        long,
        env = "MICRO_SERVER_TLS_CERT",
        visible_alias = "tls-cert-file",
        value_name = "FILE",
        requires = "server_tls_key"
    )]
    pub server_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --server-tls-cert.
    #[arg(
        long,
        env = "MICRO_SERVER_TLS_KEY",
        visible_alias = "tls-key-file",
        value_name = "FILE",
        requires = "server_tls_cert"
    )]
    pub server_tls_key: Option<std::path::PathBuf>,
    /// Verify client certificates against this PEM CA (mutual TLS; needs
    /// --server-tls-cert). The certificate's subject and SANs become the call's
    /// peer identity. Reloaded when the file changes, as the server's own are.
    #[arg(
        long = "tls-client-ca-file",
        visible_alias = "server-tls-client-ca",
        env = "MICRO_TLS_CLIENT_CA_FILE",
        value_name = "FILE",
        requires = "server_tls_cert"
    )]
    pub tls_client_ca_file: Option<std::path::PathBuf>,
    /// With --tls-client-ca-file: whether every client must present a certificate
    /// (`required`) or may come without one (`optional`) [default: required].
    #[arg(
        long = "tls-client-auth",
        env = "MICRO_TLS_CLIENT_AUTH",
        value_name = "MODE",
        value_enum,
        requires = "tls_client_ca_file"
    )]
    pub tls_client_auth: Option<crate::transport::ClientAuth>,
    /// Serve gRPC server reflection (`--server-reflection=false` hides the
    /// server's services and messages from anyone who connects) [default: true].
    #[arg(long, env = "MICRO_SERVER_REFLECTION", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub server_reflection: Option<bool>,
    /// What the listener lets its clients hold (`--server-max-connections`, …).
    #[command(flatten)]
    pub connection: ConnectionFlags,
    /// Default timeout of calls this service makes [default: 5s].
    #[arg(long, env = "MICRO_CLIENT_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub client_request_timeout: Option<Duration>,
    /// Default retries of calls this service makes, where safe [default: 1].
    #[arg(long, env = "MICRO_CLIENT_RETRIES", value_name = "N")]
    pub client_retries: Option<u32>,
    /// Retries all calls together may make, in percent of the calls of the last
    /// 10 s (`0` for none beyond the reserve) [default: 20].
    #[arg(long, env = "MICRO_CLIENT_RETRY_BUDGET", value_name = "PERCENT", value_parser = parse_percent)]
    pub client_retry_budget: Option<f64>,
    /// Retries a second allowed whatever the budget's share [default: 10].
    #[arg(long, env = "MICRO_CLIENT_RETRY_MIN_PER_SECOND", value_name = "N")]
    pub client_retry_min_per_second: Option<u32>,
    /// Dial TLS, trusting this PEM CA certificate.
    #[arg(long, env = "MICRO_CLIENT_TLS_CA", value_name = "FILE")]
    pub client_tls_ca: Option<std::path::PathBuf>,
    /// Present this PEM certificate chain to servers that verify client
    /// certificates (mutual TLS); with --client-tls-key.
    #[arg(
        long,
        env = "MICRO_CLIENT_TLS_CERT",
        value_name = "FILE",
        requires = "client_tls_key"
    )]
    pub client_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-tls-cert.
    #[arg(
        long,
        env = "MICRO_CLIENT_TLS_KEY",
        value_name = "FILE",
        requires = "client_tls_cert"
    )]
    pub client_tls_key: Option<std::path::PathBuf>,
    /// Static route for a service name, `name=host:port`; repeatable.
    #[arg(long = "client-route", env = "MICRO_CLIENT_ROUTES", value_name = "NAME=HOST:PORT", value_delimiter = ',', value_parser = parse_route)]
    pub client_routes: Vec<(String, String)>,
    /// Registry: `local` (default; every process on this host), `memory`, or an
    /// adapter's name (`etcd`, `consul`, `mdns`).
    #[arg(long, env = "MICRO_REGISTRY", value_name = "NAME")]
    pub registry: Option<String>,
    /// Where the registry is: a directory for `local`, `host:port` for servers.
    #[arg(long, env = "MICRO_REGISTRY_ADDRESS", value_name = "ADDRESS")]
    pub registry_address: Option<String>,
    /// Broker: `http` (default: embedded, across the processes sharing the registry),
    /// `memory`, or an adapter's name (`nats`, `nats-core`, `rabbitmq`, `redis`, `mqtt`).
    #[arg(long, env = "MICRO_BROKER", value_name = "NAME")]
    pub broker: Option<String>,
    /// Where the broker is (`nats://host:4222`, `amqp://…`, `redis://…`,
    /// `mqtt://host:1883`; for `http` the address to listen on, default `127.0.0.1:0`).
    #[arg(long, env = "MICRO_BROKER_ADDRESS", value_name = "ADDRESS")]
    pub broker_address: Option<String>,
    /// How long a registration lives without being refreshed [default: 60s].
    #[arg(long, env = "MICRO_REGISTER_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub register_ttl: Option<Duration>,
    /// How often the service refreshes its registration [default: 30s].
    #[arg(long, env = "MICRO_REGISTER_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub register_interval: Option<Duration>,
    /// How calls pick a node: random, round_robin, least_outstanding, hash [default: random].
    #[arg(long, env = "MICRO_SELECTOR", value_name = "STRATEGY")]
    pub selector: Option<crate::selector::Strategy>,
    /// Wrap every client call in a Hystrix circuit breaker, one circuit per
    /// `service.endpoint` (hystrix-go's defaults; the `--breaker-*` flags change them).
    #[arg(long, env = "MICRO_BREAKER")]
    pub breaker: bool,
    /// Breaker: how long a call may take before it counts as a timeout [default: 1s]
    /// (implies --breaker).
    #[arg(long, env = "MICRO_BREAKER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub breaker_timeout: Option<Duration>,
    /// Breaker: calls of one endpoint in flight at once [default: 10] (implies --breaker).
    #[arg(long, env = "MICRO_BREAKER_MAX_CONCURRENT", value_name = "N")]
    pub breaker_max_concurrent: Option<u32>,
    /// Breaker: calls in the 10 s window before it may open [default: 20] (implies --breaker).
    #[arg(long, env = "MICRO_BREAKER_VOLUME", value_name = "N")]
    pub breaker_volume: Option<u32>,
    /// Breaker: how long an open circuit waits before a trial call [default: 5s]
    /// (implies --breaker).
    #[arg(long, env = "MICRO_BREAKER_SLEEP_WINDOW", value_name = "DURATION", value_parser = parse_duration)]
    pub breaker_sleep_window: Option<Duration>,
    /// Breaker: error percentage that opens the circuit [default: 50] (implies --breaker).
    #[arg(long, env = "MICRO_BREAKER_ERROR_PERCENT", value_name = "PERCENT", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub breaker_error_percent: Option<u32>,
    /// Refuse calls beyond N in flight at once with RESOURCE_EXHAUSTED instead of
    /// queuing them (health and reflection are never refused).
    #[arg(long, env = "MICRO_SERVER_MAX_CONCURRENT", value_name = "N")]
    pub server_max_concurrent: Option<usize>,
    /// Cut a handler of ENDPOINT (`Greeter.SayHello`) that runs longer than DURATION,
    /// answering DEADLINE_EXCEEDED; repeatable, or comma-separated.
    #[arg(long = "server-endpoint-timeout", env = "MICRO_SERVER_ENDPOINT_TIMEOUTS", value_name = "ENDPOINT=DURATION", value_delimiter = ',', value_parser = parse_endpoint_timeout)]
    pub server_endpoint_timeouts: Vec<(String, Duration)>,
    /// Limit the calls this service serves to N per second, all endpoints together
    /// (a token bucket; beyond it, `RESOURCE_EXHAUSTED`), as go-micro's
    /// `ratelimit.NewHandlerWrapper(N)`.
    #[arg(long, env = "MICRO_RATELIMIT_SERVER", value_name = "N")]
    pub ratelimit_server: Option<u32>,
    /// Limit the calls this service makes to N per second, all together.
    #[arg(long, env = "MICRO_RATELIMIT_CLIENT", value_name = "N")]
    pub ratelimit_client: Option<u32>,
    /// Serve the Hystrix dashboard's event stream (`GET /hystrix.stream`, SSE) of
    /// this process's circuit breakers on HOST:PORT, e.g. `127.0.0.1:9092`.
    #[arg(long, env = "MICRO_HYSTRIX_STREAM_ADDRESS", value_name = "HOST:PORT")]
    pub hystrix_stream_address: Option<String>,
    /// Count and time every call handled and made, and serve them to Prometheus at
    /// `GET /metrics` on HOST:PORT (go-micro's `micro_request_total`, …), e.g.
    /// `127.0.0.1:9093`.
    #[arg(long, env = "MICRO_METRICS_ADDRESS", value_name = "HOST:PORT")]
    pub metrics_address: Option<String>,
    /// The `--auth-*` flags: verify the bearer token of every call this service
    /// serves (health stays public unless `--auth-protect-health`). With the `auth`
    /// feature.
    #[cfg(feature = "auth")]
    #[command(flatten)]
    pub auth: crate::wrapper::auth::AuthFlags,
    /// The tracing flags: `--tracing-endpoint`, `--tracing-protocol`,
    /// `--tracing-sampler`, `--tracing-ratio`.
    #[command(flatten)]
    pub tracing: crate::wrapper::trace::TracingFlags,
    /// Log level or filter (`debug`, `info`, `rmicro=debug,warn`) [default: info].
    #[arg(long, env = "MICRO_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: `text`, `pretty` (the default on a terminal), `json` (one object a
    /// line), or `ecs` (Elastic Common Schema lines, for ELK) [default: text].
    #[arg(long, env = "MICRO_LOG_FORMAT", value_name = "FORMAT", value_parser = ["text", "pretty", "json", "ecs"])]
    pub log_format: Option<String>,
    /// Write the log to this file instead of stderr, rotated as lumberjack does.
    #[arg(long, env = "MICRO_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<std::path::PathBuf>,
    /// Megabytes the log file may reach before it is rotated [default: 100].
    #[arg(
        long,
        env = "MICRO_LOG_MAX_SIZE",
        value_name = "MB",
        requires = "log_file"
    )]
    pub log_max_size: Option<u64>,
    /// Rotated log files kept, the newest (0: all) [default: 0].
    #[arg(
        long,
        env = "MICRO_LOG_MAX_BACKUPS",
        value_name = "N",
        requires = "log_file"
    )]
    pub log_max_backups: Option<usize>,
    /// Days a rotated log file is kept (0: forever) [default: 0].
    #[arg(
        long,
        env = "MICRO_LOG_MAX_AGE",
        value_name = "DAYS",
        requires = "log_file"
    )]
    pub log_max_age: Option<u64>,
    /// Gzip rotated log files.
    #[arg(long, env = "MICRO_LOG_COMPRESS", requires = "log_file")]
    pub log_compress: bool,
    /// Name rotated log files by local time instead of UTC.
    #[arg(long, env = "MICRO_LOG_LOCAL_TIME", requires = "log_file")]
    pub log_local_time: bool,
    /// A YAML, TOML or JSON file of configuration (above in-code defaults).
    #[arg(long, env = "MICRO_CONFIG_FILE", value_name = "FILE")]
    pub config_file: Option<std::path::PathBuf>,
    /// Prefix of the environment variables read as configuration [default: MICRO_].
    #[arg(long, env = "MICRO_CONFIG_ENV_PREFIX", value_name = "PREFIX")]
    pub config_env_prefix: Option<String>,
    /// A configuration value, `PATH=VALUE` (VALUE is JSON or a plain string); repeatable.
    #[arg(long = "config-set", value_name = "PATH=VALUE", value_parser = parse_config_pair)]
    pub config_set: Vec<(String, String)>,
    /// A config center, `etcd://HOST:PORT/PREFIX` or `consul://HOST:PORT/PREFIX`;
    /// repeatable, later wins.
    #[arg(
        long = "config-source",
        env = "MICRO_CONFIG_SOURCE",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub config_source: Vec<String>,
}

impl Flags {
    /// The circuit breaker the flags ask for: `--breaker` or any `--breaker-*` flag,
    /// over hystrix-go's defaults; `None` without them.
    pub fn breaker_settings(&self) -> Option<crate::wrapper::breaker::Settings> {
        let asked = self.breaker
            || self.breaker_timeout.is_some()
            || self.breaker_max_concurrent.is_some()
            || self.breaker_volume.is_some()
            || self.breaker_sleep_window.is_some()
            || self.breaker_error_percent.is_some();
        if !asked {
            return None;
        }
        let mut settings = crate::wrapper::breaker::Settings::default();
        if let Some(timeout) = self.breaker_timeout {
            settings.timeout = timeout;
        }
        if let Some(n) = self.breaker_max_concurrent {
            settings.max_concurrent_requests = n;
        }
        if let Some(n) = self.breaker_volume {
            settings.request_volume_threshold = n;
        }
        if let Some(window) = self.breaker_sleep_window {
            settings.sleep_window = window;
        }
        if let Some(percent) = self.breaker_error_percent {
            settings.error_percent_threshold = percent;
        }
        Some(settings)
    }
}

fn parse_config_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((path, value)) if !path.trim().is_empty() => {
            Ok((path.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("`{text}` is not PATH=VALUE, e.g. mysql.host=db")),
    }
}

/// The listener's connection limits as flags, shared by every service and the
/// API gateway (`rmicro api`); see [`crate::transport::ConnectionLimits`].
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "rmicro-connection-flags")]
pub struct ConnectionFlags {
    /// Connections open at once on the listener; one more is closed as soon as
    /// it is accepted [default: 10000].
    #[arg(long, env = "MICRO_SERVER_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub server_max_connections: Option<u64>,
    /// Time a new connection has to finish its TLS handshake and send the HTTP/2
    /// preface before it is closed [default: 10s].
    #[arg(long, env = "MICRO_SERVER_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub server_handshake_timeout: Option<Duration>,
    /// Close a connection with no call in flight for this long (GOAWAY first);
    /// `0` keeps idle connections [default: 5m].
    #[arg(long, env = "MICRO_SERVER_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub server_idle_timeout: Option<Duration>,
    /// Calls a client may have open at once on one connection (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS) [default: 200].
    #[arg(long, env = "MICRO_SERVER_MAX_CONCURRENT_STREAMS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub server_max_concurrent_streams: Option<u32>,
    /// Largest header list (metadata) of a request, in bytes (HTTP/2
    /// SETTINGS_MAX_HEADER_LIST_SIZE) [default: 16384].
    #[arg(long, env = "MICRO_SERVER_MAX_HEADER_LIST_SIZE", value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..))]
    pub server_max_header_list_size: Option<u32>,
    /// Streams a client may open and reset before the server takes them up
    /// (rapid reset, CVE-2023-44487); beyond it the connection is closed
    /// [default: 20].
    #[arg(long, env = "MICRO_SERVER_MAX_PENDING_RESETS", value_name = "N")]
    pub server_max_pending_resets: Option<usize>,
    /// Send an HTTP/2 PING on a connection silent for this long to find vanished
    /// peers; `0` never pings [default: off; TCP keepalive after 2h finds them].
    #[arg(long, env = "MICRO_SERVER_KEEPALIVE_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub server_keepalive_interval: Option<Duration>,
    /// How long a keepalive ping may go unanswered before the connection is
    /// closed [default: 20s].
    #[arg(long, env = "MICRO_SERVER_KEEPALIVE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub server_keepalive_timeout: Option<Duration>,
}

impl ConnectionFlags {
    /// `limits` with the `--server-*` connection flags that were given applied.
    pub fn connection_limits(
        &self,
        mut limits: crate::transport::ConnectionLimits,
    ) -> crate::transport::ConnectionLimits {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        if let Some(n) = self.server_max_connections {
            limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(t) = self.server_handshake_timeout {
            limits.handshake_timeout = t;
        }
        if let Some(t) = self.server_idle_timeout {
            limits.idle_timeout = nonzero(t);
        }
        if let Some(n) = self.server_max_concurrent_streams {
            limits.max_concurrent_streams = n;
        }
        if let Some(n) = self.server_max_header_list_size {
            limits.max_header_list_size = n;
        }
        if let Some(n) = self.server_max_pending_resets {
            limits.max_pending_resets = n;
        }
        if let Some(t) = self.server_keepalive_interval {
            limits.keepalive_interval = nonzero(t);
        }
        if let Some(t) = self.server_keepalive_timeout {
            limits.keepalive_timeout = t;
        }
        limits
    }
}

/// Parses `1h`, `2m`, `30s`, `250ms`, `10us`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 5s, 250ms, 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}`: use h, m, s, ms, us or ns"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}` is out of range: {e}"))
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let percent: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage (e.g. `20`)"))?;
    if percent.is_finite() && percent >= 0.0 {
        Ok(percent)
    } else {
        Err(format!("`{text}` is not a percentage of 0 or more"))
    }
}

fn parse_endpoint_timeout(text: &str) -> Result<(String, Duration), String> {
    let (endpoint, limit) = text.split_once('=').ok_or_else(|| {
        format!("`{text}` is not ENDPOINT=DURATION: write e.g. Greeter.SayHello=200ms")
    })?;
    Ok((endpoint.trim().to_owned(), parse_duration(limit)?))
}

fn parse_route(text: &str) -> Result<(String, String), String> {
    let (name, address) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not a route: write name=host:port"))?;
    Ok((name.trim().to_owned(), address.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flags_and_env_names_match_go_micro_style() {
        let flags = Flags::try_parse_from([
            "svc",
            "--server-address",
            "127.0.0.1:0",
            "--client-request-timeout",
            "2s",
            "--client-route",
            "greeter=127.0.0.1:9",
        ])
        .unwrap();
        assert_eq!(flags.server_address.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(flags.client_request_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            flags.client_routes,
            vec![("greeter".into(), "127.0.0.1:9".into())]
        );
        assert!(Flags::try_parse_from(["svc", "--client-retries", "many"]).is_err());
        assert!(Flags::try_parse_from(["svc", "--client-retry-budget", "-5"]).is_err());
        assert!(Flags::try_parse_from(["svc", "--client-retry-budget", "lots"]).is_err());
        let flags = Flags::try_parse_from(["svc", "--client-retry-budget", "5%"]).unwrap();
        assert_eq!(flags.client_retry_budget, Some(5.0));
    }

    #[test]
    fn endpoint_timeouts_parse_or_say_how_to_write_them() {
        let flags = Flags::try_parse_from([
            "svc",
            "--server-endpoint-timeout",
            "Greeter.SayHello=200ms,User.Login=2s",
        ])
        .unwrap();
        assert_eq!(
            flags.server_endpoint_timeouts,
            vec![
                ("Greeter.SayHello".into(), Duration::from_millis(200)),
                ("User.Login".into(), Duration::from_secs(2)),
            ]
        );
        let err = Flags::try_parse_from(["svc", "--server-endpoint-timeout", "200ms"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not ENDPOINT=DURATION"), "{err}");
    }

    #[test]
    fn breaker_flags_override_hystrix_defaults() {
        let flags = Flags::try_parse_from(["svc"]).unwrap();
        assert_eq!(flags.breaker_settings(), None);
        let flags = Flags::try_parse_from(["svc", "--breaker"]).unwrap();
        assert_eq!(
            flags.breaker_settings(),
            Some(crate::wrapper::breaker::Settings::default())
        );
        let flags = Flags::try_parse_from([
            "svc",
            "--breaker-timeout",
            "250ms",
            "--breaker-error-percent",
            "25",
        ])
        .unwrap();
        let settings = flags.breaker_settings().expect("implied by a breaker flag");
        assert_eq!(settings.timeout, Duration::from_millis(250));
        assert_eq!(settings.error_percent_threshold, 25);
        assert_eq!(settings.request_volume_threshold, 20);
        assert!(Flags::try_parse_from(["svc", "--breaker-error-percent", "120"]).is_err());
    }
}
