//! Distributed tracing with OpenTelemetry, exported over OTLP to Jaeger (≥ 1.35),
//! an OpenTelemetry Collector or any OTLP backend: `--tracing-endpoint
//! http://127.0.0.1:4317`.
//!
//! Spans follow the OpenTelemetry semantic conventions v1.27.0 for RPC and
//! messaging ([`conventions`]):
//!
//! - a SERVER span per handled call and a CLIENT span per logical call made (its
//!   attempts are `attempt` events on it, each naming the node tried), named
//!   `greeter.v1.Greeter/SayHello`, with `rpc.system=grpc`, `rpc.service`,
//!   `rpc.method`, `rpc.grpc.status_code`, `server.address`/`server.port` (client)
//!   or `client.address`/`client.port` (server), plus go-micro's `micro.service`
//!   and `micro.endpoint` (`greeter.Greeter.SayHello`, the operation name of
//!   go-micro's opentracing wrapper) so Jaeger searches written for go-micro keep
//!   working. A client span is an error for any non-OK status; a server span only
//!   for the statuses that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
//!   UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS). A stream's span lasts until
//!   its status and records the messages sent and received;
//! - a PRODUCER span per publish (`publish user.created`) and a CONSUMER span per
//!   delivery (`process user.created`, a child of the publisher's span), with
//!   `messaging.system`, `messaging.destination.name`, `messaging.operation.type`.
//!
//! The trace travels in W3C `traceparent`/`tracestate`/`baggage` and Jaeger's
//! `uber-trace-id`/`uberctx-*` ([`propagation`]), in gRPC metadata and in broker
//! message headers; a handler's calls and publishes are children of its span with
//! no code in the handler. A malformed header starts a new trace; it is never an
//! error.
//!
//! rmicro's spans are its own `opentelemetry::trace::Span`s (a handler adds to
//! its span through OpenTelemetry's API as usual), encoded to OTLP by the thread
//! that ends them into a bounded queue; the application's own spans, from
//! [`Tracing::provider`], go through the same queue. A thread of its own exports
//! the queue in batches: a call never waits for the exporter, and when the queue
//! is full spans are dropped and counted (`micro_tracing_spans_dropped_total` on
//! `/metrics`). Stopping the service flushes what is queued within its grace
//! period.
//!
//! Configured by the standard OpenTelemetry environment (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_PROPAGATORS`, `OTEL_BSP_*`, `OTEL_SDK_DISABLED`)
//! and by flags, which win: `--tracing-endpoint`, `--tracing-protocol`,
//! `--tracing-sampler`, `--tracing-ratio`. The resource names `service.name`,
//! `service.version` and `service.instance.id` (the registry node id).
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::trace::TracingConfig;
//! let config = TracingConfig::from_settings(
//!     &rmicro::wrapper::trace::TracingFlags {
//!         endpoint: Some("http://127.0.0.1:4318".into()),
//!         ratio: Some(0.01),
//!         ..Default::default()
//!     },
//!     |_| None,
//! )
//! .expect("valid settings")
//! .expect("an endpoint: tracing is on");
//! assert_eq!(config.endpoint, "http://127.0.0.1:4318/v1/traces");
//! assert_eq!(config.sampler, rmicro::wrapper::trace::SamplerChoice::ParentBasedRatio(0.01));
//! ```

pub mod conventions;
mod export;
pub mod http_server;
mod layer;
mod messaging;
mod otlp;
pub mod propagation;
mod span;

pub use export::{BatchSettings, ExportStats};
pub use http_server::HttpSpan;
pub use layer::{CurrentTrace, TraceFuture, TraceLayer, TraceService};

use export::QueueProcessor;
use layer::Side;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanProcessor};
use std::sync::Arc;
use std::time::Duration;

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

/// Which traces are recorded (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio`: this fraction of traces, by trace id.
    Ratio(f64),
    /// `parentbased_always_on` (the default): as the caller decided, else on.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`: as the caller decided, else off.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: as the caller decided, else the fraction.
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    /// The sampler named `name` (OpenTelemetry's names), with `ratio` for the
    /// ratio samplers (default 1.0).
    pub fn parse(name: &str, ratio: Option<f64>) -> Result<Self, String> {
        let ratio = ratio.unwrap_or(1.0);
        Ok(match name {
            "always_on" => SamplerChoice::AlwaysOn,
            "always_off" => SamplerChoice::AlwaysOff,
            "traceidratio" => SamplerChoice::Ratio(ratio),
            "parentbased_always_on" => SamplerChoice::ParentBasedAlwaysOn,
            "parentbased_always_off" => SamplerChoice::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => SamplerChoice::ParentBasedRatio(ratio),
            other => {
                return Err(format!(
                    "unknown sampler `{other}` (known: always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
                ));
            }
        })
    }

    fn sampler(self) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerChoice::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerChoice::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// The tracing flags as given (each `None` when absent); the environment fills
/// the rest in [`TracingConfig::from_settings`]. Every service has them (see
/// [`crate::cmd::Flags`]); an HTTP front such as `rmicro api` flattens them into
/// its own command line.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "rmicro-tracing-flags")]
pub struct TracingFlags {
    /// Trace every call handled and made, every publish and delivery, with
    /// OpenTelemetry, exported over OTLP to this collector (Jaeger ≥ 1.35 takes it
    /// as is): `http://127.0.0.1:4317` (gRPC) or `http://127.0.0.1:4318` (HTTP).
    /// Without it, `OTEL_EXPORTER_OTLP_ENDPOINT` turns tracing on.
    #[arg(
        long = "tracing-endpoint",
        id = "tracing_endpoint",
        env = "MICRO_TRACING_ENDPOINT",
        value_name = "URL"
    )]
    pub endpoint: Option<String>,
    /// OTLP transport: `grpc` or `http/protobuf` [default: `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else http/protobuf on port 4318 and grpc otherwise].
    #[arg(long = "tracing-protocol", id = "tracing_protocol", env = "MICRO_TRACING_PROTOCOL", value_name = "PROTOCOL", value_parser = ["grpc", "http/protobuf"])]
    pub protocol: Option<String>,
    /// Which traces are recorded, by OpenTelemetry's names: `parentbased_always_on`
    /// (the default), `parentbased_traceidratio`, `traceidratio`, `always_on`,
    /// `always_off`, `parentbased_always_off` [default: `OTEL_TRACES_SAMPLER`].
    #[arg(
        long = "tracing-sampler",
        id = "tracing_sampler",
        env = "MICRO_TRACING_SAMPLER",
        value_name = "SAMPLER"
    )]
    pub sampler: Option<String>,
    /// The fraction of new traces recorded, 0.0 to 1.0 (alone, it means
    /// `parentbased_traceidratio`) [default: `OTEL_TRACES_SAMPLER_ARG`, else 1.0].
    #[arg(
        long = "tracing-ratio",
        id = "tracing_ratio",
        env = "MICRO_TRACING_RATIO",
        value_name = "RATIO"
    )]
    pub ratio: Option<f64>,
}

/// Everything tracing needs to start.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// Where spans go: for gRPC the collector's URL, for HTTP the full
    /// `…/v1/traces` URL.
    pub endpoint: String,
    /// gRPC or HTTP/protobuf.
    pub protocol: Protocol,
    /// Which traces are recorded.
    pub sampler: SamplerChoice,
    /// Which propagation formats are read and written.
    pub formats: propagation::Formats,
    /// Batching and export timeouts.
    pub batch: BatchSettings,
    /// `OTEL_SERVICE_NAME`, which wins over the service's name.
    pub service_name: Option<String>,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`: an API key).
    pub headers: http::HeaderMap,
}

impl TracingConfig {
    /// Exports to `endpoint` with the defaults (gRPC unless the port is 4318,
    /// parent-based always-on sampling, every propagation format).
    pub fn new(endpoint: &str) -> Result<Self, String> {
        TracingConfig::from_settings(
            &TracingFlags {
                endpoint: Some(endpoint.to_owned()),
                ..TracingFlags::default()
            },
            |_| None,
        )?
        .ok_or_else(|| "no endpoint".to_owned())
    }

    /// The configuration from `flags`, then the OpenTelemetry environment read
    /// through `env`; `None` when tracing is off (no endpoint anywhere, or
    /// `OTEL_SDK_DISABLED=true` / `OTEL_TRACES_EXPORTER=none` without a flag).
    /// A value that does not parse is an error naming the setting.
    pub fn from_settings(
        flags: &TracingFlags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let flagged = flags.endpoint.is_some();
        if !flagged
            && (env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
                || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none"))
        {
            return Ok(None);
        }
        // A per-signal endpoint is used as is; a base endpoint gets the signal's path.
        let (endpoint, exact) = match (
            &flags.endpoint,
            env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(flag), _, _) => (flag.clone(), false),
            (None, Some(traces), _) => (traces, true),
            (None, None, Some(base)) => (base, false),
            (None, None, None) => return Ok(None),
        };
        let uri: http::Uri = endpoint
            .trim()
            .parse()
            .map_err(|e| format!("tracing endpoint `{endpoint}` is not a URL: {e}"))?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(format!(
                "tracing endpoint `{endpoint}` needs a scheme and a host (http://127.0.0.1:4317)"
            ));
        }
        let protocol = match flags
            .protocol
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
            .map(str::trim)
        {
            Some("grpc") => Protocol::Grpc,
            Some("http/protobuf" | "http") => Protocol::HttpProtobuf,
            Some("http/json") => {
                return Err(
                    "tracing protocol `http/json` is not supported: use `grpc` or `http/protobuf`"
                        .into(),
                );
            }
            Some(other) => {
                return Err(format!(
                    "unknown tracing protocol `{other}` (known: grpc, http/protobuf)"
                ));
            }
            // Unsaid: the collector's well-known HTTP port means HTTP.
            None if uri.port_u16() == Some(4318) => Protocol::HttpProtobuf,
            None => Protocol::Grpc,
        };
        let endpoint = match protocol {
            Protocol::HttpProtobuf if !exact => {
                format!("{}/v1/traces", endpoint.trim().trim_end_matches('/'))
            }
            _ => endpoint.trim().to_owned(),
        };
        let ratio = match (flags.ratio, env("OTEL_TRACES_SAMPLER_ARG")) {
            (Some(r), _) => Some(r),
            (None, Some(arg)) => Some(
                arg.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("OTEL_TRACES_SAMPLER_ARG `{arg}` is not a number"))?,
            ),
            (None, None) => None,
        };
        if let Some(r) = ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!("tracing ratio {r} is not between 0 and 1"));
        }
        let sampler = match (
            flags.sampler.clone().or_else(|| env("OTEL_TRACES_SAMPLER")),
            ratio,
        ) {
            (Some(name), ratio) => SamplerChoice::parse(name.trim(), ratio)?,
            // A ratio alone means "this fraction of new traces".
            (None, Some(r)) => SamplerChoice::ParentBasedRatio(r),
            (None, None) => SamplerChoice::ParentBasedAlwaysOn,
        };
        let formats = match env("OTEL_PROPAGATORS") {
            Some(list) => {
                propagation::Formats::parse(&list).map_err(|e| format!("OTEL_PROPAGATORS: {e}"))?
            }
            None => propagation::Formats::default(),
        };
        let mut batch = BatchSettings::default();
        let number = |name: &str| -> Result<Option<u64>, String> {
            env(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("{name} `{v}` is not a whole number"))
                })
                .transpose()
        };
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE")? {
            batch.max_queue = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            batch.max_batch = usize::try_from(n).unwrap_or(usize::MAX).max(1);
        }
        batch.max_batch = batch.max_batch.min(batch.max_queue);
        if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY")? {
            batch.delay = Duration::from_millis(ms);
        }
        if let Some(ms) = number("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")?
            .or(number("OTEL_EXPORTER_OTLP_TIMEOUT")?)
            .or(number("OTEL_BSP_EXPORT_TIMEOUT")?)
        {
            batch.timeout = Duration::from_millis(ms.max(1));
        }
        let headers = match env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            Some(list) => otlp::parse_headers(&list)?,
            None => http::HeaderMap::new(),
        };
        Ok(Some(TracingConfig {
            endpoint,
            protocol,
            sampler,
            formats,
            batch,
            service_name: env("OTEL_SERVICE_NAME"),
            headers,
        }))
    }
}

/// What the layers share: the sampler, the propagator and where spans go.
pub(crate) struct Tracer {
    /// Where rmicro's spans go when they end.
    spool: Arc<export::Spool>,
    /// The configured sampler, asked before any span is made.
    sampler: Sampler,
    pub(crate) propagator: opentelemetry::propagation::TextMapCompositePropagator,
    messaging_system: String,
}

impl Tracer {
    /// Starts a span of `kind` named `name` under `parent`, in a context of its
    /// own, and says whether it is recorded. The sampler is asked first: a span it
    /// drops is only ids in a context (the trace goes on, unsampled, to the calls
    /// it makes), with no span object, no attributes and nothing to end.
    pub(crate) fn start(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: opentelemetry::trace::SpanKind,
        parent: &opentelemetry::Context,
        attributes: impl FnOnce(&mut otlp::Attributes),
    ) -> (opentelemetry::Context, bool) {
        use opentelemetry::trace::{SpanContext, TraceFlags};
        use opentelemetry_sdk::trace::{IdGenerator as _, SamplingDecision, ShouldSample as _};
        let name = name.into();
        let ids = opentelemetry_sdk::trace::RandomIdGenerator::default();
        let parent_span = parent.span();
        let psc = parent_span.span_context();
        let (trace_id, parent_id) = if psc.is_valid() {
            (psc.trace_id(), Some((psc.span_id(), psc.is_remote())))
        } else {
            (ids.new_trace_id(), None)
        };
        let decision = self
            .sampler
            .should_sample(Some(parent), trace_id, &name, &kind, &[], &[]);
        let flags = match decision.decision {
            SamplingDecision::Drop => {
                let sc = SpanContext::new(
                    trace_id,
                    ids.new_span_id(),
                    TraceFlags::default(),
                    false,
                    decision.trace_state,
                );
                return (parent.with_remote_span_context(sc), false);
            }
            SamplingDecision::RecordOnly => TraceFlags::default(),
            SamplingDecision::RecordAndSample => TraceFlags::SAMPLED,
        };
        let context = SpanContext::new(
            trace_id,
            ids.new_span_id(),
            flags,
            false,
            decision.trace_state,
        );
        // rmicro's RPC spans take 250 to 350 bytes: no growing on the way.
        let mut encoded = otlp::Attributes::with_capacity(512);
        attributes(&mut encoded);
        encoded.extend(decision.attributes);
        let span =
            span::RecordedSpan::start(self.spool.clone(), context, parent_id, name, kind, encoded);
        (parent.with_span(span), true)
    }

    /// The caller's trace from gRPC metadata (an empty context when there is none).
    pub(crate) fn extract_headers(&self, headers: &http::HeaderMap) -> opentelemetry::Context {
        use opentelemetry::propagation::TextMapPropagator as _;
        if !propagation::carries_trace(headers) {
            return opentelemetry::Context::new();
        }
        self.propagator.extract(&propagation::HeaderReader(headers))
    }
}

/// The span processor, shared with the handle that flushes it.
#[derive(Debug, Clone)]
struct Shared(Arc<QueueProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

/// One service's tracing: its tracer provider, exporter, and the layers and
/// broker wrappers that make its spans. Clones share them.
#[derive(Clone)]
pub struct Tracing {
    tracer: Arc<Tracer>,
    provider: SdkTracerProvider,
    processor: Arc<QueueProcessor>,
    stats: Arc<ExportStats>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Starts exporting for service `name` at `version`, node `id` (the resource's
    /// `service.name`, `service.version`, `service.instance.id`); `messaging` is the
    /// broker's name for messaging spans. An exporter that cannot be built is the
    /// error, as a sentence.
    pub fn start(
        config: &TracingConfig,
        name: &str,
        version: &str,
        id: &str,
        messaging: &str,
    ) -> Result<Self, String> {
        let mut resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", name.to_owned()),
                KeyValue::new("service.version", version.to_owned()),
                KeyValue::new("service.instance.id", id.to_owned()),
            ])
            .with_detectors(&[
                Box::new(opentelemetry_sdk::resource::EnvResourceDetector::new()),
                Box::new(opentelemetry_sdk::resource::TelemetryResourceDetector),
            ]);
        if let Some(service) = &config.service_name {
            resource = resource.with_service_name(service.clone());
        }
        let resource = resource.build();
        let (endpoint, protocol, headers) = (
            config.endpoint.clone(),
            config.protocol,
            config.headers.clone(),
        );
        let own = InstrumentationScope::builder("rmicro")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let (processor, stats) = QueueProcessor::start(config.batch, &resource, &own, move || {
            otlp::OtlpExporter::new(protocol, &endpoint, headers)
        })?;
        let processor = Arc::new(processor);
        let spool = processor.spool().clone();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Shared(processor.clone()))
            .with_sampler(config.sampler.sampler())
            .with_resource(resource)
            .build();
        Ok(Tracing {
            tracer: Arc::new(Tracer {
                spool,
                sampler: config.sampler.sampler(),
                propagator: config.formats.propagator(),
                messaging_system: messaging.to_owned(),
            }),
            provider,
            processor,
            stats,
        })
    }

    /// SERVER spans for handled calls (`wrap_handler`).
    pub fn server_layer(&self) -> TraceLayer {
        self.layer(Side::Server)
    }

    /// CLIENT spans for logical calls (`wrap_client`).
    pub fn client_layer(&self) -> TraceLayer {
        self.layer(Side::Client)
    }

    /// `attempt` events on the CLIENT span, one per attempt (`wrap_call`).
    pub fn attempt_layer(&self) -> TraceLayer {
        self.layer(Side::Attempt)
    }

    fn layer(&self, side: Side) -> TraceLayer {
        TraceLayer {
            tracer: self.tracer.clone(),
            side,
        }
    }

    /// PRODUCER spans for publishes, the trace put in the message's headers
    /// (`wrap_publisher`).
    pub fn publisher(&self) -> impl crate::wrapper::PublisherWrapper {
        messaging::publisher(self.tracer.clone())
    }

    /// CONSUMER spans for deliveries, children of the publisher's span, current
    /// while the subscriber's handler runs (`wrap_subscriber`).
    pub fn subscriber(&self) -> impl crate::wrapper::SubscriberWrapper {
        messaging::subscriber(self.tracer.clone())
    }

    /// A SERVER span for an HTTP request being served (an HTTP front such as the
    /// API gateway): joins the caller's trace from `headers`; see [`http_server`].
    pub fn http_server_span(
        &self,
        method: &str,
        path: &str,
        scheme: &str,
        headers: &http::HeaderMap,
        peer: std::net::SocketAddr,
    ) -> HttpSpan {
        HttpSpan::start(&self.tracer, method, path, scheme, headers, peer)
    }

    /// The provider, to make the application's own spans with the same resource
    /// and exporter.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// What the exporter did (spans exported, failed, dropped).
    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Exports everything queued, waiting `within` at most; false if that was not
    /// long enough (the collector is slow or gone).
    pub async fn flush(&self, within: Duration) -> bool {
        self.processor.flush(within).await
    }
}

/// `work` carrying the trace current now (a handler's span, or one attached with
/// OpenTelemetry's API, such as an HTTP request's [`HttpSpan`]): the calls it
/// makes are that span's children, even when it runs in a task of its own
/// (`tokio::spawn(in_current_trace(work))`).
pub fn in_current_trace<F: std::future::Future>(
    work: F,
) -> impl std::future::Future<Output = F::Output> {
    use opentelemetry::trace::FutureExt as _;
    work.with_context(layer::current_parent())
}

/// The trace and span ids of the span current on this task (a handler's, or one
/// attached with OpenTelemetry's API), for log lines; `None` outside any span.
pub fn current_ids() -> Option<(String, String)> {
    ids(&layer::current_parent())
}

/// The trace and span ids of `cx`'s span, if it has a valid one.
pub(crate) fn ids(cx: &opentelemetry::Context) -> Option<(String, String)> {
    hex_ids(cx).map(|(trace, span)| (trace.to_string(), span.to_string()))
}

/// [`ids`] as values that write themselves (a log line's fields), not strings.
pub(crate) fn hex_ids(cx: &opentelemetry::Context) -> Option<(Hex<16>, Hex<8>)> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (Hex(sc.trace_id().to_bytes()), Hex(sc.span_id().to_bytes())))
}

/// An id's bytes written as lower-case hex, as W3C and OTLP/JSON show them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hex<const N: usize>(pub(crate) [u8; N]);

impl<const N: usize> std::fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        let text = &mut text[..2 * N.min(32)];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(text).unwrap_or_default())
    }
}

pub(crate) use layer::span_of;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(flags: TracingFlags, env: &[(&str, &str)]) -> Result<Option<TracingConfig>, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TracingConfig::from_settings(&flags, move |k| env.get(k).cloned())
    }

    /// rmicro samples before making a span, by the trace id the span then gets, so
    /// a `traceidratio` service downstream decides the same for the same trace;
    /// an unsampled parent's children stay unsampled under the parent-based samplers.
    #[tokio::test]
    async fn sampling_decides_by_the_spans_own_trace_id() {
        use opentelemetry::trace::{SpanKind, TraceContextExt as _};
        use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample as _};
        let mut config = TracingConfig::new("http://127.0.0.1:9").unwrap();
        config.sampler = SamplerChoice::Ratio(0.5);
        let tracing = Tracing::start(&config, "s", "1", "s-1", "memory").unwrap();
        let rule = Sampler::TraceIdRatioBased(0.5);
        let (mut kept, mut dropped) = (0, 0);
        for _ in 0..400 {
            let root = opentelemetry::Context::new();
            let (cx, recording) = tracing.tracer.start("op", SpanKind::Server, &root, |_| {});
            let span = cx.span();
            let sc = span.span_context();
            assert!(sc.is_valid());
            assert_eq!(sc.is_sampled(), recording);
            let again = rule.should_sample(None, sc.trace_id(), "op", &SpanKind::Server, &[], &[]);
            assert_eq!(
                again.decision == SamplingDecision::RecordAndSample,
                recording
            );
            if recording {
                kept += 1;
            } else {
                dropped += 1;
            }
        }
        assert!(
            kept > 120 && dropped > 120,
            "kept {kept}, dropped {dropped}"
        );

        let mut config = TracingConfig::new("http://127.0.0.1:9").unwrap();
        config.sampler = SamplerChoice::ParentBasedRatio(1.0);
        let tracing = Tracing::start(&config, "s", "1", "s-1", "memory").unwrap();
        let unsampled = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from(5_u128),
            opentelemetry::trace::SpanId::from(6_u64),
            opentelemetry::trace::TraceFlags::default(),
            true,
            Default::default(),
        );
        let parent = opentelemetry::Context::new().with_remote_span_context(unsampled);
        let (cx, recording) = tracing
            .tracer
            .start("child", SpanKind::Client, &parent, |_| {});
        assert!(!recording, "the caller's decision holds");
        assert_eq!(
            cx.span().span_context().trace_id(),
            opentelemetry::trace::TraceId::from(5_u128)
        );
        let (_, recording) = tracing.tracer.start(
            "root",
            SpanKind::Server,
            &opentelemetry::Context::new(),
            |_| {},
        );
        assert!(recording, "a new trace at ratio 1.0 is kept");
    }

    #[test]
    fn ids_are_written_as_opentelemetry_writes_them() {
        use opentelemetry::trace::{SpanId, TraceId};
        for (trace, span) in [
            (1u128, 1u64),
            (u128::MAX, u64::MAX),
            (
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa_0ba9_02b7,
            ),
        ] {
            let (t, s) = (TraceId::from(trace), SpanId::from(span));
            assert_eq!(Hex(t.to_bytes()).to_string(), t.to_string());
            assert_eq!(Hex(s.to_bytes()).to_string(), s.to_string());
        }
    }

    #[test]
    fn no_endpoint_anywhere_means_no_tracing() {
        assert!(config(TracingFlags::default(), &[]).unwrap().is_none());
        assert!(
            config(
                TracingFlags::default(),
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_SDK_DISABLED", "true")
                ]
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn the_environment_configures_and_flags_win() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_SERVICE_NAME", "renamed"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ];
        let from_env = config(TracingFlags::default(), &env).unwrap().unwrap();
        assert_eq!(from_env.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(from_env.protocol, Protocol::HttpProtobuf);
        assert_eq!(from_env.sampler, SamplerChoice::Ratio(0.25));
        assert_eq!(from_env.service_name.as_deref(), Some("renamed"));
        assert_eq!(from_env.batch.delay, Duration::from_millis(100));
        let flags = TracingFlags {
            endpoint: Some("http://127.0.0.1:4317".into()),
            protocol: Some("grpc".into()),
            sampler: Some("parentbased_traceidratio".into()),
            ratio: Some(0.5),
        };
        let flagged = config(flags, &env).unwrap().unwrap();
        assert_eq!(flagged.endpoint, "http://127.0.0.1:4317");
        assert_eq!(flagged.protocol, Protocol::Grpc);
        assert_eq!(flagged.sampler, SamplerChoice::ParentBasedRatio(0.5));
        // A per-signal endpoint is taken as it is.
        let exact = config(
            TracingFlags::default(),
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/custom"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(exact.endpoint, "http://c:9999/custom");
    }

    #[test]
    fn bad_settings_are_sentences_naming_them() {
        let endpoint = || TracingFlags {
            endpoint: Some("http://c:4317".into()),
            ..TracingFlags::default()
        };
        type Case = (
            TracingFlags,
            &'static [(&'static str, &'static str)],
            &'static str,
        );
        let cases: [Case; 6] = [
            (
                TracingFlags {
                    endpoint: Some("not a url".into()),
                    ..Default::default()
                },
                &[],
                "not a URL",
            ),
            (
                TracingFlags {
                    endpoint: Some("collector:4317".into()),
                    ..Default::default()
                },
                &[],
                "needs a scheme",
            ),
            (
                TracingFlags {
                    sampler: Some("sometimes".into()),
                    ..endpoint()
                },
                &[],
                "unknown sampler `sometimes`",
            ),
            (
                TracingFlags {
                    ratio: Some(2.0),
                    ..endpoint()
                },
                &[],
                "not between 0 and 1",
            ),
            (
                endpoint(),
                &[("OTEL_TRACES_SAMPLER_ARG", "half")],
                "OTEL_TRACES_SAMPLER_ARG `half`",
            ),
            (
                endpoint(),
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "http/json",
            ),
        ];
        for (flags, env, want) in cases {
            let err = config(flags, env).unwrap_err();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
    }
}
