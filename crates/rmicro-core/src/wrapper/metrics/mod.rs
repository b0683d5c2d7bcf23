//! Prometheus metrics with go-micro's names: `--metrics-address 127.0.0.1:9093`.
//!
//! The seed's `prometheus.NewHandlerWrapper()` counts every handled call in
//! `micro_request_total{micro_name, micro_version, micro_id, micro_endpoint,
//! micro_status="success"|"failure"}` and times it in `micro_request_duration_seconds`
//! (a histogram with client_golang's default buckets, 5 ms to 10 s). rmicro keeps
//! those names and labels, so a go-micro user's Grafana queries keep working, and adds
//! what they lacked: the gRPC code (`micro_code="UNAVAILABLE"`), the calls in flight
//! (`micro_requests_in_flight`), the messages' sizes per call
//! (`micro_request_size_bytes`, `micro_response_size_bytes`), the same for the calls a service makes
//! (`micro_client_request_total`, `micro_client_request_duration_seconds`,
//! `micro_client_requests_in_flight`, with the callee in `micro_target`), the process's
//! CPU, memory, open files and start time (`process_*`), `micro_build_info`, and the
//! resilience wrappers' figures, read at scrape time: each circuit breaker's state
//! (`micro_breaker_open{command}`), calls by outcome
//! (`micro_breaker_calls_total{command, event="success"|"failure"|"timeout"|"rejected"|"short_circuited"}`)
//! and calls in flight, and the calls rate limits and load shedding refused
//! (`micro_ratelimit_rejected_total{limit, scope}`, `micro_shed_rejected_total{max}`,
//! `micro_shed_in_flight{max}`).
//!
//! A call is counted when its status is known: for a stream, after its last message;
//! a call its caller abandons counts as `CANCELLED`. Endpoint labels are bounded
//! (after 1,000 distinct ones, further ones count as `other`), so a caller sending
//! made-up names cannot grow the series without limit.
//!
//! `--metrics-address` (`MICRO_METRICS_ADDRESS`) wraps the service's handlers and
//! calls and serves `GET /metrics` in Prometheus's text format (OpenMetrics 1.0 when
//! the scraper's `Accept` asks for `application/openmetrics-text`); [`Metrics`] does the
//! same from code, and its layers are plain tower layers (laid out as tower's:
//! `layer.rs`, `service.rs`, `future.rs`), so they also wrap a tonic server or channel.
//!
//! ```
//! # extern crate rmicro_core as rmicro;
//! use rmicro::wrapper::metrics::Metrics;
//! let metrics = Metrics::new("greeter", "1.0.0", "greeter-1");
//! let service = rmicro::Service::builder("greeter")
//!     .args(["greeter"])
//!     .wrap_handler(metrics.server_layer())
//!     .wrap_client(metrics.client_layer())
//!     .build()
//!     .expect("valid flags");
//! assert!(metrics.encode().contains("micro_build_info"));
//! ```

mod broker;
mod future;
mod layer;
mod openmetrics;
mod resilience;
mod service;
mod spans;

pub use future::MetricsFuture;
pub use layer::{Metrics, MetricsLayer};
pub use service::MetricsService;

/// The path Prometheus scrapes.
pub const PATH: &str = "/metrics";

/// What Prometheus's text exposition format is served as.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running `/metrics` endpoint; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    server: crate::transport::side::SideServer,
}

impl MetricsServer {
    /// Serves `metrics` at `GET /metrics` on `listener`.
    pub fn serve(listener: tokio::net::TcpListener, metrics: Metrics) -> std::io::Result<Self> {
        let handler = move |request: &http::Request<hyper::body::Incoming>| {
            if let Some(refused) =
                crate::transport::side::refuse_other(request, PATH, "Prometheus's page")
            {
                return refused;
            }
            let (page, content_type) =
                if openmetrics::wanted(request.headers().get(http::header::ACCEPT)) {
                    (metrics.encode_openmetrics(), openmetrics::CONTENT_TYPE)
                } else {
                    (metrics.encode(), CONTENT_TYPE)
                };
            let mut response =
                http::Response::new(crate::transport::Body::from(bytes::Bytes::from(page)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            response
        };
        let server = crate::transport::side::SideServer::serve(
            listener,
            "metrics endpoint",
            std::sync::Arc::new(handler),
        )?;
        Ok(MetricsServer { server })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }
}
