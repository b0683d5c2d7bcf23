//! The gateway's own Prometheus families, on the same `/metrics` page as the
//! client's `micro_client_*`: every HTTP request answered, by method and status,
//! and how long it took — refusals (429), unknown routes (404) and preflights
//! included, which no call counts.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// `micro_api_requests_total{http_method, http_status}` and
/// `micro_api_request_duration_seconds{http_method}`.
#[derive(Clone)]
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    /// Registers the families in `registry` (the service's metrics page).
    pub(crate) fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "micro_api_requests_total",
                "HTTP requests the API gateway answered, by method and status.",
            ),
            &["http_method", "http_status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "micro_api_request_duration_seconds",
                "How long the API gateway took to answer an HTTP request (until its head).",
            ),
            &["http_method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(HttpMetrics { requests, duration })
    }

    /// Counts one answer.
    pub(crate) fn observe(&self, method: &http::Method, status: http::StatusCode, seconds: f64) {
        // Label values stay bounded: a made-up method is `other`.
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::PATCH => "PATCH",
            http::Method::DELETE => "DELETE",
            http::Method::OPTIONS => "OPTIONS",
            http::Method::HEAD => "HEAD",
            _ => "other",
        };
        let mut code = itoa::Buffer::new();
        self.requests
            .with_label_values(&[method, code.format(status.as_u16())])
            .inc();
        self.duration.with_label_values(&[method]).observe(seconds);
    }
}
