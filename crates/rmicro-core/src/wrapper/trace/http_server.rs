//! SERVER spans for HTTP requests, for an HTTP front of rmicro services (the API
//! gateway, a service's own HTTP handler): the caller's trace is joined from the
//! request's headers (W3C, Jaeger), the calls made while the request is served
//! are children of its span, and the span ends with the HTTP status, following
//! the OpenTelemetry HTTP semantic conventions (v1.27.0): named
//! `{method} {route}`, with `http.request.method`, `url.path`, `url.scheme`,
//! `http.route`, `http.response.status_code`, `client.address`, and an error
//! status only for 5xx answers (a 4xx is the client's mistake).

use super::Tracer;
use super::conventions as attr;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use std::future::Future;
use std::sync::Arc;

/// The span of one HTTP request being served; made by
/// [`Tracing::http_server_span`](super::Tracing::http_server_span). Ends when
/// [`finish`](HttpSpan::finish)ed, or as a request the client gave up on when
/// dropped first.
pub struct HttpSpan {
    cx: Context,
    method: String,
    recording: bool,
    ended: bool,
}

impl std::fmt::Debug for HttpSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpan")
            .field("method", &self.method)
            .field("recording", &self.recording)
            .finish_non_exhaustive()
    }
}

impl HttpSpan {
    pub(super) fn start(
        tracer: &Arc<Tracer>,
        method: &str,
        path: &str,
        scheme: &str,
        headers: &http::HeaderMap,
        peer: std::net::SocketAddr,
    ) -> Self {
        let parent = tracer.extract_headers(headers);
        let (cx, recording) = tracer.start(method.to_owned(), SpanKind::Server, &parent, |a| {
            a.str(HTTP_REQUEST_METHOD, &[method]);
            a.str(URL_PATH, &[path]);
            a.str(URL_SCHEME, &[scheme]);
            a.str(
                attr::CLIENT_ADDRESS,
                &[&crate::transport::ip_text(peer.ip())],
            );
            a.int(attr::CLIENT_PORT, i64::from(peer.port()));
            if let Some(agent) = headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
            {
                a.str(USER_AGENT_ORIGINAL, &[agent]);
            }
        });
        HttpSpan {
            cx,
            method: method.to_owned(),
            recording,
            ended: false,
        }
    }

    /// The OpenTelemetry context of the span (and the caller's baggage).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// The trace and span ids, as W3C writes them (32 and 16 hex digits), for a
    /// log line (`trace.id`, `span.id` in ECS).
    pub fn ids(&self) -> Option<(String, String)> {
        super::ids(&self.cx)
    }

    /// Runs `work` with this span current: the rmicro calls it makes are the
    /// span's children.
    pub fn in_span<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        work.with_context(self.cx.clone())
    }

    /// Names the route the request took (a template such as
    /// `/v1/users/{id}`, never the raw path with its ids), and the rmicro
    /// service and endpoint it reached (`micro.service`, `micro.endpoint` as
    /// go-micro names them).
    pub fn set_route(&self, route: &str, service: &str, endpoint: &str) {
        if !self.recording {
            return;
        }
        let span = self.cx.span();
        span.update_name(format!("{} {route}", self.method));
        let mut micro = String::with_capacity(service.len() + endpoint.len() + 1);
        micro.push_str(service);
        micro.push('.');
        micro.push_str(endpoint);
        span.set_attributes([
            KeyValue::new(HTTP_ROUTE, route.to_owned()),
            KeyValue::new(attr::MICRO_SERVICE, service.to_owned()),
            KeyValue::new(attr::MICRO_ENDPOINT, micro),
        ]);
    }

    /// Ends the span with the answer's HTTP status; a 5xx marks it an error
    /// with `detail` as its message.
    pub fn finish(mut self, status: u16, detail: Option<&str>) {
        self.end(Some(status), detail);
    }

    fn end(&mut self, status: Option<u16>, detail: Option<&str>) {
        if std::mem::replace(&mut self.ended, true) || !self.recording {
            return;
        }
        let span = self.cx.span();
        match status {
            Some(status) => {
                let mut attributes =
                    vec![KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status))];
                if status >= 500 {
                    attributes.push(KeyValue::new(attr::ERROR_TYPE, status.to_string()));
                    span.set_attributes(attributes);
                    span.set_status(Status::error(
                        detail.map_or_else(|| format!("HTTP {status}"), str::to_owned),
                    ));
                } else {
                    span.set_attributes(attributes);
                }
            }
            // The client went away before the answer: not the server's failure.
            None => span.set_attribute(KeyValue::new(attr::ERROR_TYPE, "cancelled")),
        }
        span.end();
    }
}

impl Drop for HttpSpan {
    fn drop(&mut self) {
        self.end(None, None);
    }
}

/// `http.request.method`.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// `http.response.status_code`.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// `http.route`: the matched route's template.
pub const HTTP_ROUTE: &str = "http.route";
/// `url.path`.
pub const URL_PATH: &str = "url.path";
/// `url.scheme`: `http` or `https`.
pub const URL_SCHEME: &str = "url.scheme";
/// `user_agent.original`.
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
