//! The Hystrix dashboard's event stream: `GET /hystrix.stream` as Server-Sent
//! Events, in the format of Netflix's `hystrix-metrics-event-stream` (and
//! hystrix-go's `StreamHandler`), so the Hystrix dashboard and Turbine read it.
//!
//! Every second, for each circuit of every breaker alive in the process, one
//! `data:` event of `"type": "HystrixCommand"` (health, the `rollingCount*` family
//! over the 10 s window, latency percentiles, the `propertyValue_*` settings) and one
//! of `"type": "HystrixThreadPool"`; a `ping:` line when there is no circuit yet.
//! Each listener's events are made while it reads them, so a listener that goes
//! away costs nothing.

use super::Settings;
use super::layer::{CircuitStatus, live_circuits};
use crate::transport::Body;
use crate::transport::side::{SideServer, refuse_other};
use bytes::Bytes;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The path the dashboard reads.
pub const PATH: &str = "/hystrix.stream";

/// How often each listener gets the circuits' figures (Hystrix: every second).
const INTERVAL: Duration = Duration::from_secs(1);

/// A running Hystrix event stream server; stops when dropped.
#[derive(Debug)]
pub struct HystrixStream {
    server: SideServer,
}

impl HystrixStream {
    /// Binds `address` (`127.0.0.1:9092`; port 0 picks one) and serves the stream.
    pub async fn bind(address: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        Self::serve(listener)
    }

    /// Serves the stream on `listener`.
    pub fn serve(listener: tokio::net::TcpListener) -> std::io::Result<Self> {
        let server = SideServer::serve(listener, "hystrix stream", Arc::new(respond))?;
        Ok(HystrixStream { server })
    }

    /// The address the stream listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

fn respond<B>(request: &http::Request<B>) -> http::Response<Body> {
    if let Some(refused) = refuse_other(request, PATH, "the Hystrix stream") {
        return refused;
    }
    let events =
        futures_util::stream::unfold(tokio::time::interval(INTERVAL), |mut interval| async move {
            interval.tick().await;
            let frame = http_body::Frame::data(payload());
            Some((Ok::<_, Infallible>(frame), interval))
        });
    let mut response = http::Response::new(Body::new(http_body_util::StreamBody::new(events)));
    let headers = response.headers_mut();
    for (name, value) in [
        (
            http::header::CONTENT_TYPE,
            "text/event-stream;charset=UTF-8",
        ),
        (
            http::header::CACHE_CONTROL,
            "no-cache, no-store, max-age=0, must-revalidate",
        ),
        (http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    response
}

/// One second's events: a command and a thread-pool event per circuit, or a ping.
fn payload() -> Bytes {
    let circuits = live_circuits(tokio::time::Instant::now());
    if circuits.is_empty() {
        return Bytes::from_static(b"ping: \n\n");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = String::new();
    for (status, settings) in &circuits {
        for event in [
            command(status, settings, now_ms),
            thread_pool(status, settings),
        ] {
            out.push_str("data: ");
            out.push_str(&event.to_string());
            out.push_str("\n\n");
        }
    }
    Bytes::from(out)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The group of a command: its service (`greeter` of `greeter.Greeter.SayHello`).
fn group(name: &str) -> &str {
    // The endpoint is the last two segments (`Greeter.SayHello`).
    let mut dots = name.rmatch_indices('.').map(|(i, _)| i);
    match (dots.next(), dots.next()) {
        (Some(_), Some(i)) => &name[..i],
        _ => name,
    }
}

/// A `HystrixCommand` event: the fields the dashboard and Turbine read.
fn command(status: &CircuitStatus, settings: &Settings, now_ms: u64) -> serde_json::Value {
    let latency: serde_json::Map<String, serde_json::Value> = status
        .latency_percentiles_ms
        .iter()
        .map(|(p, ms)| {
            let key = if p.fract() == 0.0 {
                format!("{p:.0}")
            } else {
                format!("{p}")
            };
            (key, serde_json::Value::from(*ms))
        })
        .collect();
    let mut event = serde_json::json!({
        "type": "HystrixCommand",
        "name": status.name,
        "group": group(&status.name),
        "currentTime": now_ms,
        "reportingHosts": 1,
        "isCircuitBreakerOpen": status.open,
        "errorPercentage": status.error_percentage,
        "errorCount": status.requests - status.successes,
        "requestCount": status.requests,
        "rollingCountCollapsedRequests": 0,
        "rollingCountEmit": 0,
        "rollingCountExceptionsThrown": 0,
        "rollingCountFailure": status.failures,
        "rollingCountFallbackEmit": 0,
        "rollingCountFallbackFailure": status.fallback_failures,
        "rollingCountFallbackMissing": 0,
        "rollingCountFallbackRejection": 0,
        "rollingCountFallbackSuccess": status.fallback_successes,
        "rollingCountResponsesFromCache": 0,
        "rollingCountSemaphoreRejected": status.rejected,
        "rollingCountShortCircuited": status.short_circuited,
        "rollingCountSuccess": status.successes,
        "rollingCountThreadPoolRejected": 0,
        "rollingCountTimeout": status.timeouts,
        "rollingCountBadRequests": 0,
        "rollingMaxConcurrentExecutionCount": status.max_in_flight,
        "currentConcurrentExecutionCount": status.in_flight,
        "latencyExecute_mean": status.latency_mean_ms,
        "latencyExecute": latency,
        "latencyTotal_mean": status.latency_mean_ms,
        "latencyTotal": latency,
    });
    // Two halves: one `json!` this long passes the macro's recursion limit.
    let properties = serde_json::json!({
        "propertyValue_circuitBreakerRequestVolumeThreshold": settings.request_volume_threshold,
        "propertyValue_circuitBreakerSleepWindowInMilliseconds": millis(settings.sleep_window),
        "propertyValue_circuitBreakerErrorThresholdPercentage": settings.error_percent_threshold,
        "propertyValue_circuitBreakerForceOpen": false,
        "propertyValue_circuitBreakerForceClosed": false,
        "propertyValue_circuitBreakerEnabled": true,
        // Calls are not run on threads: the concurrency limit is a semaphore.
        "propertyValue_executionIsolationStrategy": "SEMAPHORE",
        "propertyValue_executionIsolationThreadTimeoutInMilliseconds": millis(settings.timeout),
        "propertyValue_executionTimeoutInMilliseconds": millis(settings.timeout),
        "propertyValue_executionIsolationThreadInterruptOnTimeout": true,
        "propertyValue_executionIsolationThreadPoolKeyOverride": null,
        "propertyValue_executionIsolationSemaphoreMaxConcurrentRequests": settings.max_concurrent_requests,
        "propertyValue_fallbackIsolationSemaphoreMaxConcurrentRequests": settings.max_concurrent_requests,
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds": 10_000,
        "propertyValue_requestCacheEnabled": false,
        "propertyValue_requestLogEnabled": false,
    });
    if let (Some(event), serde_json::Value::Object(properties)) =
        (event.as_object_mut(), properties)
    {
        event.extend(properties);
    }
    event
}

/// A `HystrixThreadPool` event for the same circuit (hystrix-go sends one per
/// circuit; the pool is the circuit's concurrency limit).
fn thread_pool(status: &CircuitStatus, settings: &Settings) -> serde_json::Value {
    serde_json::json!({
        "type": "HystrixThreadPool",
        "name": status.name,
        "currentTime": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        "reportingHosts": 1,
        "currentActiveCount": status.in_flight,
        "currentCompletedTaskCount": status.successes + status.failures + status.timeouts,
        "currentCorePoolSize": settings.max_concurrent_requests,
        "currentLargestPoolSize": status.max_in_flight,
        "currentMaximumPoolSize": settings.max_concurrent_requests,
        "currentPoolSize": settings.max_concurrent_requests,
        "currentQueueSize": 0,
        "currentTaskCount": status.in_flight,
        "rollingCountThreadsExecuted": status.successes + status.failures + status.timeouts,
        "rollingMaxActiveThreads": status.max_in_flight,
        "rollingCountCommandRejections": status.rejected,
        "propertyValue_queueSizeRejectionThreshold": 0,
        "propertyValue_metricsRollingStatisticalWindowInMilliseconds": 10_000,
    })
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn a_commands_group_is_its_service() {
        assert_eq!(group("greeter.Greeter.SayHello"), "greeter");
        assert_eq!(group("go.micro.srv.user.User.Login"), "go.micro.srv.user");
        assert_eq!(group("odd"), "odd");
    }
}
