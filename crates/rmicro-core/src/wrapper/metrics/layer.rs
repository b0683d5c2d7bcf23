//! The metric families of one service, and the layers that fill them.

use super::MetricsService;
use crate::errors::Code;
use arc_swap::ArcSwap;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use prometheus::{IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Distinct endpoints (per target, on the client) before the rest count as `other`.
const MAX_ENDPOINTS: usize = 1000;

/// One service's metrics: its registry, and the families its layers fill.
///
/// Clones share the registry and the families.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    server: Arc<Side>,
    client: Arc<Side>,
    broker: Arc<super::broker::Families>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("service", &self.server.identity)
            .finish_non_exhaustive()
    }
}

/// The families of one side (handled calls, or calls made) and their handles by
/// target and endpoint.
pub(super) struct Side {
    identity: [String; 3],
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    request_size: HistogramVec,
    response_size: HistogramVec,
    client: bool,
    /// target → endpoint → handles (the server's target is "").
    handles: ArcSwap<ByTarget>,
    /// The endpoints reached [`MAX_ENDPOINTS`]: an unknown one is `other` at once.
    full: std::sync::atomic::AtomicBool,
}

/// A map by name, hashed with foldhash: looked up on every call, where SipHash
/// costs several times more. Its keys are bounded (the routes, at most
/// [`MAX_ENDPOINTS`] endpoints), so a flood of colliding names has nowhere to grow.
type ByName<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// Handles by target, then endpoint.
type ByTarget = ByName<ByName<Arc<Handles>>>;

/// The series of one endpoint, resolved once.
pub(super) struct Handles {
    labels: Vec<String>,
    duration: Histogram,
    in_flight: IntGauge,
    request_size: Histogram,
    response_size: Histogram,
    /// By gRPC code number, made on first use.
    codes: [OnceLock<IntCounter>; 17],
    requests: IntCounterVec,
}

impl Handles {
    /// A call started.
    pub(super) fn start(&self) {
        self.in_flight.inc();
    }

    /// A call ended with `code` after `seconds`, its messages `request_bytes` and
    /// `response_bytes` long in all (the payloads, without gRPC's framing).
    pub(super) fn finish(&self, code: Code, seconds: f64, sizes: Option<(u64, u64)>) {
        self.in_flight.dec();
        self.duration.observe(seconds);
        if let Some((request, response)) = sizes {
            self.request_size.observe(request as f64);
            self.response_size.observe(response as f64);
        }
        let index = usize::try_from(code.as_i32()).unwrap_or(2).min(16);
        let counter = self.codes[index].get_or_init(|| {
            let status = if code == Code::Ok {
                "success"
            } else {
                "failure"
            };
            let mut labels: Vec<&str> = self.labels.iter().map(String::as_str).collect();
            labels.extend([status, code.name()]);
            self.requests.with_label_values(&labels)
        });
        counter.inc();
    }
}

impl Side {
    fn new(
        registry: &Registry,
        identity: [String; 3],
        client: bool,
    ) -> Result<Self, prometheus::Error> {
        let (prefix, extra): (&str, &[&str]) = if client {
            ("micro_client_", &["micro_target"])
        } else {
            ("micro_", &[])
        };
        let mut labels = vec!["micro_name", "micro_version", "micro_id"];
        labels.extend_from_slice(extra);
        labels.push("micro_endpoint");
        let mut counted = labels.clone();
        counted.extend(["micro_status", "micro_code"]);
        let what = if client {
            "calls made"
        } else {
            "calls handled"
        };
        let requests = IntCounterVec::new(
            Opts::new(
                format!("{prefix}request_total"),
                format!("The {what}, by status."),
            ),
            &counted,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}request_duration_seconds"),
                format!("How long the {what} took, until their status."),
            ),
            &labels,
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                format!("{prefix}requests_in_flight"),
                format!("The {what} running now."),
            ),
            &labels,
        )?;
        // 64 B to 16 MB, by fours.
        let sizes = prometheus::exponential_buckets(64.0, 4.0, 10)?;
        let request_size = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}request_size_bytes"),
                format!("The request messages' bytes of the {what}, per call."),
            )
            .buckets(sizes.clone()),
            &labels,
        )?;
        let response_size = HistogramVec::new(
            HistogramOpts::new(
                format!("{prefix}response_size_bytes"),
                format!("The response messages' bytes of the {what}, per call."),
            )
            .buckets(sizes),
            &labels,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(request_size.clone()))?;
        registry.register(Box::new(response_size.clone()))?;
        Ok(Side {
            identity,
            requests,
            duration,
            in_flight,
            request_size,
            response_size,
            client,
            handles: ArcSwap::from_pointee(ByName::default()),
            full: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The handles of `endpoint` of `target`, made on first sight.
    pub(super) fn handles(self: &Arc<Self>, target: &str, endpoint: &str) -> Arc<Handles> {
        use std::sync::atomic::Ordering;
        {
            let loaded = self.handles.load();
            let endpoints = loaded.get(target);
            if let Some(found) = endpoints.and_then(|e| e.get(endpoint)) {
                return found.clone();
            }
            // Past the bound, an unknown endpoint is `other` with no new map.
            if self.full.load(Ordering::Relaxed)
                && let Some(other) = endpoints.and_then(|e| e.get("other"))
            {
                return other.clone();
            }
        }
        let mut made = None;
        self.handles.rcu(|current| {
            let mut next = ByTarget::clone(current);
            let total: usize = next.values().map(ByName::len).sum();
            if total >= MAX_ENDPOINTS {
                self.full.store(true, Ordering::Relaxed);
            }
            let endpoints = next.entry(target.into()).or_default();
            let key = if total >= MAX_ENDPOINTS && !endpoints.contains_key(endpoint) {
                "other"
            } else {
                endpoint
            };
            let handles = endpoints
                .entry(key.into())
                .or_insert_with(|| self.make(target, key))
                .clone();
            made = Some(handles);
            next
        });
        made.unwrap_or_else(|| self.make(target, endpoint))
    }

    fn make(self: &Arc<Self>, target: &str, endpoint: &str) -> Arc<Handles> {
        let mut labels: Vec<String> = self.identity.to_vec();
        if self.client {
            labels.push(target.to_owned());
        }
        labels.push(endpoint.to_owned());
        let values: Vec<&str> = labels.iter().map(String::as_str).collect();
        Arc::new(Handles {
            duration: self.duration.with_label_values(&values),
            in_flight: self.in_flight.with_label_values(&values),
            request_size: self.request_size.with_label_values(&values),
            response_size: self.response_size.with_label_values(&values),
            labels,
            codes: std::array::from_fn(|_| OnceLock::new()),
            requests: self.requests.clone(),
        })
    }
}

impl Metrics {
    /// The metrics of service `name` at `version`, node `id` (go-micro's
    /// `micro_name`, `micro_version`, `micro_id`), with the process's figures.
    pub fn new(name: &str, version: &str, id: &str) -> Self {
        let registry = Registry::new();
        let identity = [name.to_owned(), version.to_owned(), id.to_owned()];
        // The names and labels are fixed and valid, and the registry is new: it
        // cannot refuse them.
        #[allow(clippy::expect_used)]
        let side = |client| {
            Side::new(&registry, identity.clone(), client).expect("fixed, valid metric families")
        };
        let (server, client) = (Arc::new(side(false)), Arc::new(side(true)));
        #[allow(clippy::expect_used)]
        let broker = Arc::new(
            super::broker::Families::new(&registry, identity.clone())
                .expect("fixed, valid metric families"),
        );
        let info = IntGaugeVec::new(
            Opts::new(
                "micro_build_info",
                "The service's name, version and node; always 1.",
            ),
            &["micro_name", "micro_version", "micro_id", "rmicro_version"],
        );
        if let Ok(info) = info {
            info.with_label_values(&[name, version, id, env!("CARGO_PKG_VERSION")])
                .set(1);
            let _ = registry.register(Box::new(info));
        }
        match super::resilience::Resilience::new() {
            Ok(collector) => {
                let _ = registry.register(Box::new(collector));
            }
            Err(err) => tracing::warn!(error = %err, "metrics: no resilience figures"),
        }
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(process));
        }
        Metrics {
            registry,
            server: server.clone(),
            client,
            broker,
        }
    }

    /// The layer that counts handled calls (`wrap_handler`).
    pub fn server_layer(&self) -> MetricsLayer {
        MetricsLayer {
            side: self.server.clone(),
        }
    }

    /// The layer that counts calls made (`wrap_client`: once per logical call).
    pub fn client_layer(&self) -> MetricsLayer {
        MetricsLayer {
            side: self.client.clone(),
        }
    }

    /// Adds the tracing exporter's figures of service `name`
    /// (`micro_tracing_spans_exported_total`, `…_failed_total`, `…_dropped_total`).
    pub fn add_tracing(&self, name: &str, stats: Arc<crate::wrapper::trace::ExportStats>) {
        match super::spans::Spans::new(name, stats) {
            Ok(spans) => {
                if let Err(err) = self.registry.register(Box::new(spans)) {
                    tracing::warn!(error = %err, "metrics: no tracing figures");
                }
            }
            Err(err) => tracing::warn!(error = %err, "metrics: no tracing figures"),
        }
    }

    /// Counts publishes by topic (`wrap_publisher`):
    /// `micro_broker_published_total{micro_topic, micro_status}`.
    pub fn publisher(&self) -> impl crate::wrapper::PublisherWrapper {
        super::broker::publisher(self.broker.clone())
    }

    /// Counts deliveries by topic (`wrap_subscriber`):
    /// `micro_broker_consumed_total{micro_topic, micro_status}`,
    /// `micro_broker_redelivered_total`, `micro_broker_dead_lettered_total`.
    pub fn subscriber(&self) -> impl crate::wrapper::SubscriberWrapper {
        super::broker::subscriber(self.broker.clone())
    }

    /// The registry, to add the application's own metrics to the same page.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the OpenMetrics 1.0 text format.
    pub fn encode_openmetrics(&self) -> String {
        super::openmetrics::encode(&self.registry.gather())
    }

    /// Everything in Prometheus's text exposition format (what `/metrics` serves).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut text)
        {
            tracing::warn!(error = %err, "metrics: encoding failed");
        }
        text
    }
}

/// Counts and times calls into a [`Metrics`]' families; see the [module docs](super).
#[derive(Clone)]
pub struct MetricsLayer {
    pub(super) side: Arc<Side>,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("client", &self.side.client)
            .finish_non_exhaustive()
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService::new(inner, self.side.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_stop_at_the_bound_and_the_rest_count_as_other() {
        let metrics = Metrics::new("greeter", "1.0.0", "greeter-1");
        let side = &metrics.server;
        for i in 0..MAX_ENDPOINTS + 50 {
            let handles = side.handles("", &format!("Made.Up{i}"));
            handles.start();
            handles.finish(Code::NotFound, 0.001, None);
        }
        // Past the bound an unknown endpoint is `other` without a new map.
        let before = side.handles.load_full();
        let unknown = side.handles("", "Made.UpAgain");
        assert_eq!(unknown.labels.last().map(String::as_str), Some("other"));
        assert!(Arc::ptr_eq(&before, &side.handles.load_full()));
        // A known endpoint keeps its own series after the bound is reached.
        let known = side.handles("", "Made.Up0");
        known.start();
        known.finish(Code::Ok, 0.001, None);
        let page = metrics.encode();
        let series = page
            .lines()
            .filter(|l| l.starts_with("micro_requests_in_flight{"))
            .count();
        assert_eq!(series, MAX_ENDPOINTS + 1, "the bound, plus `other`");
        let other = page
            .lines()
            .find(|l| {
                l.starts_with("micro_request_total{")
                    && l.contains("micro_endpoint=\"other\"")
                    && l.contains("micro_code=\"NOT_FOUND\"")
            })
            .expect("the overflow counted as `other`");
        assert!(other.ends_with(" 50"), "{other}");
        assert!(page.contains(
            "micro_request_total{micro_code=\"OK\",micro_endpoint=\"Made.Up0\",micro_id=\"greeter-1\",micro_name=\"greeter\",micro_status=\"success\",micro_version=\"1.0.0\"} 1"
        ), "{page}");
    }
}
